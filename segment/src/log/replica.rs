//! What a replica needs of its log (ARCHITECTURE.md §6): appending a batch at the offset and
//! epoch its sequencer gave it, truncating an uncommitted suffix when a new sequencer
//! recovers the shard, and a digest of the epochs of the batches from an offset on.
//!
//! Invariants: offsets stay dense (an append at another offset than the next is refused); a
//! truncation removes whole batches only, never below the start, and durably: the on-disk
//! steps are a redo record (`crate::truncate`), so a crash leaves the old log or the truncated
//! one. While a truncation runs appends wait, and reads wait or start again after it, so no
//! reader is ever handed a batch it removed. The durable, written and next offsets move back
//! to the cut together. A failed write or sync during a truncation poisons the log, as
//! anywhere else.

use std::rc::Rc;
use std::time::Instant;

use runnel_core::{
    BatchError, BatchHeader, BatchView, CheckedChunks, Epoch, Limits, Offset, RecordRef,
    BATCH_HEADER_LEN,
};

use super::{
    adopt_layout, align_up, needs_new_layout, open_tail_at, readable_end, within_log, Appended,
    Inner, ShardLog,
};
use crate::error::LogError;
use crate::format::{TruncationRecord, SEGMENT_DATA_START};
use crate::read::ChunkReader;
use crate::storage::{Storage, StorageFile};
use crate::truncate;

/// How much a walk over batch headers reads at once.
const HEADER_WALK_READ_BYTES: usize = 64 << 10;

/// One batch in a digest of the log ([`ShardLog::batch_epochs`]): where it is and which epoch
/// wrote it, without its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchEpoch {
    /// Offset of its first record.
    pub base_offset: Offset,
    /// Number of records.
    pub record_count: u32,
    /// The epoch stamped into it.
    pub epoch: Epoch,
}

impl BatchEpoch {
    /// The offset after its last record.
    pub fn next_offset(&self) -> Offset {
        Offset(self.base_offset.0 + u64::from(self.record_count))
    }
}

/// A suffix truncation asked for by [`ShardLog::truncate_from`].
pub(super) struct Truncation {
    /// The first offset to remove.
    cut: Offset,
    /// The flusher took it up.
    started: bool,
    /// What the flusher did, for the caller to take.
    outcome: Option<Result<(), LogError>>,
    /// The caller still waits for the outcome (it may have been dropped).
    waiting: bool,
}

impl<S: Storage> ShardLog<S> {
    /// Appends a batch at `offset` with `epoch`, as a replica does with what its sequencer
    /// sent: refused with [`LogError::NotNextOffset`] (nothing appended) unless `offset` is
    /// the log's next offset when the batch is taken. The bytes are stored as they are, with
    /// `offset` and `epoch` in the header (a batch the sequencer stamped already is stored byte
    /// for byte). Otherwise as [`Self::append`]: checked, then buffered; await
    /// [`Self::wait_durable`] before acknowledging an `fsync` write.
    pub async fn append_at(
        &self,
        offset: Offset,
        epoch: Epoch,
        batch: &[u8],
    ) -> Result<Appended, LogError> {
        self.append_view(BatchView::check(batch)?, epoch, Some(offset))
            .await
    }

    /// [`Self::append_at`] of a batch received in chunks, copied into the tail buffer and
    /// validated there as [`Self::append_chunks`] does.
    pub async fn append_chunks_at<C, E>(
        &self,
        offset: Offset,
        epoch: Epoch,
        batch: &CheckedChunks<'_, C>,
        limits: &Limits,
        check: impl FnMut(usize, RecordRef<'_>) -> Result<(), E>,
    ) -> Result<Appended, E>
    where
        C: AsRef<[u8]>,
        E: From<LogError> + From<BatchError>,
    {
        self.place_chunks(batch, epoch, Some(offset), limits, check)
            .await
    }

    /// Removes every record at and after `cut`, durably, for a replica whose suffix was never
    /// committed. `cut` must be the base offset of a batch, or the next offset (nothing to
    /// do); refused with [`LogError::Trimmed`] below the start,
    /// [`LogError::OffsetOutOfRange`] beyond the next offset and
    /// [`LogError::NotBatchBoundary`] inside a batch, with nothing changed.
    ///
    /// Everything appended before the call is written and synced first; appends made while
    /// the truncation runs wait and land after the cut. When it returns, the next, written and
    /// durable offsets are `cut`, reads and [`Self::wait_for`] see the new end, and a
    /// [`Self::wait_durable`] for a removed offset fails with
    /// [`LogError::OffsetOutOfRange`]. A crash at any instant reopens as the old log or the
    /// truncated one. A failed write or sync poisons the log. If this future is dropped, the
    /// truncation may still happen.
    pub async fn truncate_from(&self, cut: Offset) -> Result<(), LogError> {
        let _busy = self.begin_maintenance().await?;
        {
            let mut state = self.inner.state.borrow_mut();
            if let Some(cause) = &state.poisoned {
                return Err(LogError::Poisoned {
                    cause: cause.clone(),
                });
            }
            within_log(&state, cut)?;
            if cut == state.next_offset {
                return Ok(());
            }
            assert!(
                state.truncation.is_none(),
                "one truncation at a time (the maintenance lock)"
            );
            state.truncation = Some(Truncation {
                cut,
                started: false,
                outcome: None,
                waiting: true,
            });
        }
        self.inner.appended.notify();
        let waiter = TruncationWaiter { inner: &self.inner };
        loop {
            let changed = self.inner.truncated.listen();
            {
                let mut state = self.inner.state.borrow_mut();
                if state
                    .truncation
                    .as_ref()
                    .is_some_and(|t| t.outcome.is_some())
                {
                    let outcome = state.truncation.take().and_then(|t| t.outcome);
                    drop(state);
                    drop(waiter);
                    self.inner.room.notify();
                    return outcome.unwrap_or(Ok(()));
                }
                if let Some(cause) = &state.poisoned {
                    return Err(LogError::Poisoned {
                        cause: cause.clone(),
                    });
                }
            }
            changed.await;
        }
    }

    /// A digest of the log from the batch holding `from` to its end: offsets, record counts and
    /// epoch of at most `entries_max` batches, in order, read from the batch headers only (no
    /// records are returned or checked). What recovery compares between replicas. Waits until
    /// everything appended before the call is written; a caller continues from the last
    /// entry's [`BatchEpoch::next_offset`].
    pub async fn batch_epochs(
        &self,
        from: Offset,
        entries_max: usize,
    ) -> Result<Vec<BatchEpoch>, LogError> {
        let next = self.next_offset();
        if from > next {
            return Err(LogError::OffsetOutOfRange {
                requested: from,
                next,
            });
        }
        if next.0 > 0 {
            self.wait_for(Offset(next.0 - 1), super::ReadBound::Written)
                .await?;
        }
        loop {
            let generation = self.settled_truncations().await;
            let result = self.batch_epochs_once(from, entries_max).await;
            if self.inner.state.borrow().truncations == generation {
                return result;
            }
        }
    }

    async fn batch_epochs_once(
        &self,
        from: Offset,
        entries_max: usize,
    ) -> Result<Vec<BatchEpoch>, LogError> {
        let mut out = Vec::new();
        let mut from = from;
        while out.len() < entries_max {
            let (file, path, limit, mut pos, segment_next) = {
                let state = self.inner.state.borrow();
                if from < state.start {
                    return Err(LogError::Trimmed {
                        requested: from,
                        start: state.start,
                    });
                }
                if from >= state.written_offset {
                    break;
                }
                let Some((_, segment)) = state.segments.range(..=from).next_back() else {
                    break;
                };
                let is_active = state.segments.keys().next_back() == Some(&segment.base);
                let limit = readable_end(&state, segment);
                let pos = segment
                    .index
                    .entry_for_offset(from)
                    .map_or(SEGMENT_DATA_START, |e| e.position);
                let segment_next = if is_active {
                    state.written_offset
                } else {
                    segment.next_offset
                };
                (
                    Rc::clone(&segment.file),
                    segment.path.clone(),
                    limit,
                    pos,
                    segment_next,
                )
            };
            let mut reader = ChunkReader::new(&*file, HEADER_WALK_READ_BYTES);
            while pos + BATCH_HEADER_LEN as u64 <= limit && out.len() < entries_max {
                let header = read_header(&mut reader, &path, pos, limit, from).await?;
                if header.next_offset() > from {
                    if header.base_offset != from && !out.is_empty() {
                        return Err(corrupt(&path, pos, from, &header));
                    }
                    out.push(BatchEpoch {
                        base_offset: header.base_offset,
                        record_count: header.record_count,
                        epoch: header.epoch,
                    });
                    from = header.next_offset();
                }
                pos += u64::from(header.batch_len);
            }
            if from < segment_next && out.len() < entries_max {
                return Err(LogError::Corruption {
                    path,
                    position: pos,
                    offset: from,
                    reason: format!("the segment's batches end before offset {segment_next}"),
                });
            }
            from = from.max(segment_next);
        }
        Ok(out)
    }

    /// The truncation counter once no truncation is changing the log (even).
    pub(super) async fn settled_truncations(&self) -> u64 {
        loop {
            let changed = self.inner.truncated.listen();
            let generation = self.inner.state.borrow().truncations;
            if generation.is_multiple_of(2) || self.inner.state.borrow().poisoned.is_some() {
                return generation;
            }
            changed.await;
        }
    }
}

/// Takes the truncation out of the state when its caller stops waiting, however that happens,
/// so that appends go on: at once when the outcome is there, else when the flusher is done.
struct TruncationWaiter<'a, S: Storage> {
    inner: &'a Inner<S>,
}

impl<S: Storage> Drop for TruncationWaiter<'_, S> {
    fn drop(&mut self) {
        let mut state = self.inner.state.borrow_mut();
        let finished = match state.truncation.as_mut() {
            Some(truncation) => {
                truncation.waiting = false;
                truncation.outcome.is_some() || state.poisoned.is_some()
            }
            None => false,
        };
        if finished {
            state.truncation = None;
            drop(state);
            self.inner.room.notify();
        }
    }
}

/// The cut the flusher should make now: one was asked for and not yet started.
pub(super) fn truncation_due<S: Storage>(inner: &Inner<S>) -> Option<Offset> {
    let mut state = inner.state.borrow_mut();
    let truncation = state.truncation.as_mut()?;
    if truncation.started {
        return None;
    }
    truncation.started = true;
    Some(truncation.cut)
}

/// Where a cut lands: its segment, its file position there, and the largest record timestamp
/// of that segment's batches before it.
struct Cut {
    record: TruncationRecord,
    max_timestamp_ms: i64,
}

/// The flusher's truncation at `cut`. Everything appended was written and synced, no
/// reservation runs and appends wait. A refusal (`cut` not on a batch boundary, a header that
/// does not read) is handed to the caller with nothing changed; an error returned here is a
/// failed write or sync, which poisons the log.
pub(super) async fn truncate<S: Storage>(inner: &Inner<S>, cut: Offset) -> Result<(), LogError> {
    {
        let mut state = inner.state.borrow_mut();
        assert!(
            state.durable_offset == state.next_offset
                && state.written_offset == state.next_offset
                && state.tail.fill == state.tail.written
                && !state.reserving
                && state.zeroing.is_none(),
            "a truncation starts with everything written and synced, and nothing in flight"
        );
        state.truncations += 1;
    }
    inner.truncated.notify();
    let (outcome, fault) = match locate(inner, cut).await {
        Err(refusal) => (Err(refusal), None),
        Ok(located) => match cut_log(inner, located).await {
            Ok(()) => (Ok(()), None),
            Err(fault) => (Err(fault.clone()), Some(fault)),
        },
    };
    let mut state = inner.state.borrow_mut();
    state.truncations += 1;
    match state.truncation.as_mut() {
        Some(truncation) if truncation.waiting => truncation.outcome = Some(outcome),
        _ => state.truncation = None,
    }
    drop(state);
    inner.truncated.notify();
    inner.room.notify();
    inner.written.notify();
    inner.durable.notify();
    fault.map_or(Ok(()), Err)
}

/// Finds where `cut` lands: the segment with the greatest base at or below it, and the batch
/// there whose base offset is `cut` (or the segment's end), walking batch headers from the
/// nearest index entry.
async fn locate<S: Storage>(inner: &Inner<S>, cut: Offset) -> Result<Cut, LogError> {
    let (file, path, base, data_end, segment_next, entry) = {
        let state = inner.state.borrow();
        let Some((_, segment)) = state.segments.range(..=cut).next_back() else {
            return Err(LogError::Trimmed {
                requested: cut,
                start: state.start,
            });
        };
        (
            Rc::clone(&segment.file),
            segment.path.clone(),
            segment.base,
            segment.data_end,
            segment.next_offset,
            segment.index.entry_for_offset(cut),
        )
    };
    let (mut pos, mut max_timestamp_ms) = entry.map_or((SEGMENT_DATA_START, i64::MIN), |e| {
        (e.position, e.max_timestamp_before_ms)
    });
    let mut reader = ChunkReader::new(&*file, HEADER_WALK_READ_BYTES);
    let mut at = entry.map_or(base, |e| e.base_offset);
    while at < cut && pos < data_end {
        let header = read_header(&mut reader, &path, pos, data_end, at).await?;
        if header.base_offset != at {
            return Err(corrupt(&path, pos, at, &header));
        }
        if header.next_offset() > cut {
            return Err(LogError::NotBatchBoundary {
                requested: cut,
                batch_base: header.base_offset,
                batch_next: header.next_offset(),
            });
        }
        max_timestamp_ms = max_timestamp_ms.max(header.max_timestamp_ms);
        at = header.next_offset();
        pos += u64::from(header.batch_len);
    }
    if at != cut || (at == segment_next && pos != data_end) {
        return Err(LogError::Corruption {
            path,
            position: pos,
            offset: at,
            reason: format!("the batches do not reach offset {cut} where the index says"),
        });
    }
    Ok(Cut {
        record: TruncationRecord {
            cut,
            segment_base: base,
            position: pos,
        },
        max_timestamp_ms,
    })
}

async fn read_header<F: StorageFile>(
    reader: &mut ChunkReader<'_, F>,
    path: &std::path::Path,
    pos: u64,
    limit: u64,
    expected: Offset,
) -> Result<BatchHeader, LogError> {
    let head = reader
        .bytes(pos, BATCH_HEADER_LEN, limit)
        .await
        .map_err(|e| LogError::io("read segment", path, e))?;
    BatchHeader::decode(head).map_err(|e| LogError::Corruption {
        path: path.to_owned(),
        position: pos,
        offset: expected,
        reason: e.to_string(),
    })
}

fn corrupt(path: &std::path::Path, pos: u64, expected: Offset, header: &BatchHeader) -> LogError {
    LogError::Corruption {
        path: path.to_owned(),
        position: pos,
        offset: expected,
        reason: format!("batch has base offset {}", header.base_offset),
    }
}

/// Writes the truncation record, does the truncation on disk, and brings the state to the
/// truncated log: the cut segment is the active one, shortened, every later one gone, the
/// tail buffer rebuilt after the cut, and the next, written and durable offsets at the cut.
async fn cut_log<S: Storage>(inner: &Inner<S>, located: Cut) -> Result<(), LogError> {
    let Cut {
        record,
        max_timestamp_ms,
    } = located;
    truncate::write_record(&inner.storage, &inner.dir, &record).await?;
    let mut slots = truncate::complete(&inner.storage, &inner.dir, &record).await?;
    let mut segment = {
        let mut state = inner.state.borrow_mut();
        let later: Vec<Offset> = state
            .segments
            .range(record.segment_base..)
            .map(|(base, _)| *base)
            .collect();
        let mut cut_segment = None;
        for base in later {
            let removed = state.segments.remove(&base);
            if base == record.segment_base {
                cut_segment = removed;
            }
        }
        let base = record.segment_base;
        state.cache.forget(|segment| segment >= base);
        cut_segment.expect("the cut segment stays in the log until the truncation is done")
    };
    segment.data_end = record.position;
    segment.next_offset = record.cut;
    segment.max_timestamp_ms = max_timestamp_ms;
    segment.reserved_bytes = align_up(record.position);
    segment.index.truncate_at(record.position);
    // A sealed segment that is the last one again may carry another writer's torn-write
    // window or an older layout: as on open, appends then continue in a fresh segment.
    let mut fresh = None;
    if needs_new_layout(&segment, &inner.config) {
        slots = [None, None];
        fresh = adopt_layout(&inner.storage, &inner.dir, &mut segment, &inner.config).await?;
    }
    let (file, active_base, data_end) = {
        let mut state = inner.state.borrow_mut();
        state.segments.insert(segment.base, segment);
        if let Some(fresh) = fresh {
            state.segments.insert(fresh.base, fresh);
        }
        let active = state
            .segments
            .values()
            .next_back()
            .expect("a log always has an active segment");
        (Rc::clone(&active.file), active.base, active.data_end)
    };
    let tail = open_tail_at(&*file, data_end, &inner.config).await?;
    let mut state = inner.state.borrow_mut();
    state.tail = tail;
    state.next_offset = record.cut;
    state.written_offset = record.cut;
    state.durable_offset = record.cut;
    state.written_pos = data_end;
    state.durable_pos = data_end;
    state.checkpointed_offset = slots
        .iter()
        .flatten()
        .max_by_key(|c| c.sequence)
        .map_or(active_base, |c| c.offset);
    state.checkpoints = slots;
    state.zeroed_end = align_up(data_end);
    state.write_claimed_end = align_up(data_end);
    state.reserve_wanted = 0;
    state.writes_since_reservation = (0, 0);
    state.no_space = None;
    state.last_write_at = Instant::now();
    state.stats.truncations += 1;
    assert!(
        state.start <= state.next_offset,
        "a truncation never cuts below the start"
    );
    Ok(())
}
