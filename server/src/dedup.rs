//! Idempotent appends on a shard this core owns: the append service asks here, before storing
//! a batch, whether its producer stamp makes it fresh, a duplicate or a refusal
//! ([`runnel_replicate::producers::ProducerTable`]), and tells here, after, where it went.
//!
//! Each local shard keeps one table ([`ProducerSlot`], in its [`LocalShard`]), built lazily:
//! the first stamped batch after the node started (or after [`ProducerSlot::reset`]) rebuilds
//! it from the tail of the shard's log ([`rebuild`]: the last `window_records` records, read
//! once; the batch headers carry the stamps). Shards that never see an idempotent producer
//! never build one, and reads and unstamped appends never wait for one. The table outlives the
//! log being closed for idleness: nothing changes a closed log.
//!
//! Why the tail of the log and not a snapshot: the table is by construction a function of the
//! last `window_records` records (older producers are expired), so reading them gives exactly
//! the table; no second file has to be kept consistent with the log, and the same function
//! serves a new sequencer after failover, over the log it adopted (`docs/replication.md`).
//! The cost is one sequential read of at most the window, once per shard per process start,
//! on the first idempotent append (measured in `dedup/tests.rs`).
//!
//! A replicated shard ([`Core::dedup_replicated`]) keeps its table on its sequencer's core for
//! one sequencing epoch: a new epoch forgets it, and the first stamped batch rebuilds it from
//! the log recovery adopted, up to its end, once this replica has written all of it (before,
//! stamped batches are refused with "recovering, retry"). Adopted entries may not be committed
//! yet (they commit with the epoch's first append), so the caller answers a duplicate only once
//! its offsets are committed.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;

use runnel_core::{Offset, ProducerStamp, ShardId};
use runnel_replicate::producers::{
    Admission, ProducerTable, ProducerTableConfig, SequenceError, StoredBatch,
};
use runnel_replicate::shard::Epoch;
use runnel_segment::log::ReadBound;
use runnel_segment::runtime::Event;
use runnel_segment::{DmaStorage, LogError, ShardLog};

use crate::core::Core;
use crate::local::LocalShard;
use crate::replicated::{ReplicationError, ShardHost};

#[cfg(test)]
mod tests;

/// Bytes one read of a rebuild asks for.
const REBUILD_READ_BYTES: usize = 4 << 20;

/// A shard's producer table, absent until its first stamped batch needs it.
#[derive(Default)]
pub struct ProducerSlot {
    state: RefCell<SlotState>,
    /// The state changed (a rebuild finished or failed).
    changed: Event,
    /// A replicated shard's: the sequencing epoch the table belongs to.
    epoch: Cell<Option<Epoch>>,
}

#[derive(Default)]
enum SlotState {
    /// Not built since the node started (or since a reset).
    #[default]
    Absent,
    /// Being rebuilt from the log: stamped batches wait.
    Loading,
    Ready(ProducerTable),
}

impl ProducerSlot {
    /// Forgets the table: the next stamped batch rebuilds it from the log. For whoever changes
    /// the log other than by appending (a suffix truncation in replication recovery).
    pub fn reset(&self) {
        let mut state = self.state.borrow_mut();
        if matches!(*state, SlotState::Ready(_)) {
            *state = SlotState::Absent;
        }
    }

    /// Producers remembered, if the table is built.
    pub fn producer_count(&self) -> Option<usize> {
        match &*self.state.borrow() {
            SlotState::Ready(table) => Some(table.producer_count()),
            _ => None,
        }
    }
}

/// The table of the log `log` holds from `from` on, in its order: [`ProducerTable::rebuild`]
/// over the log's batches, read with `bound`. Any holder of a shard's log calls this, the
/// append path after a start and the replicated path after adopting a log in recovery.
pub async fn rebuild(
    log: &ShardLog<DmaStorage>,
    config: ProducerTableConfig,
    bound: ReadBound,
) -> Result<ProducerTable, LogError> {
    let mut from = ProducerTable::rebuild_from(&config, log.start_offset(), log.next_offset());
    let mut table = ProducerTable::new(config);
    loop {
        let chunk = match log.read(from, REBUILD_READ_BYTES, bound).await {
            Ok(chunk) => chunk,
            // Retention or a trim moved the start while we read: carry on from there.
            Err(LogError::Trimmed { start, .. }) if start > from => {
                from = start;
                continue;
            }
            // A lost range holds no batch, so no producer's either.
            Err(LogError::LostRange { to, .. }) if to > from => {
                from = to;
                continue;
            }
            Err(error) => return Err(error),
        };
        if chunk.is_empty() {
            return Ok(table);
        }
        for batch in chunk.batches() {
            let header = batch.header();
            table.record(StoredBatch {
                producer: header.producer,
                record_count: header.record_count,
                base_offset: header.base_offset,
            });
        }
        assert!(
            chunk.next_offset() > from,
            "a read that returns batches moves on"
        );
        from = chunk.next_offset();
    }
}

/// What the append service does with a batch, by its producer stamp.
pub enum Dedup {
    /// Store it: then [`Pending::stored`] (dropping it unstored abandons it).
    Store(Pending),
    /// Stored before, at these offsets: answer with them, store nothing.
    Duplicate {
        /// The offset its first record got.
        base_offset: Offset,
        /// The offset its last record got.
        last_offset: Offset,
    },
}

/// A batch the table admitted, being stored.
pub struct Pending {
    local: Option<Rc<LocalShard>>,
    producer: ProducerStamp,
    record_count: u32,
    done: bool,
}

impl Pending {
    /// The batch was stored at `base_offset`: the table learns it (if there is one).
    pub fn stored(mut self, base_offset: Offset) {
        self.done = true;
        let Some(local) = &self.local else { return };
        if let SlotState::Ready(table) = &mut *local.producers.state.borrow_mut() {
            table.record(StoredBatch {
                producer: self.producer,
                record_count: self.record_count,
                base_offset,
            });
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.done || self.producer.producer_id == 0 {
            return;
        }
        if let Some(local) = &self.local {
            if let SlotState::Ready(table) = &mut *local.producers.state.borrow_mut() {
                table.abandon(self.producer.producer_id);
            }
        }
    }
}

/// Why a stamped batch could not be judged.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DedupError {
    /// The producer table refused the batch's sequence.
    #[error(transparent)]
    Sequence(#[from] SequenceError),
    /// The table could not be rebuilt from the log.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A replicated shard's table cannot be had yet (not its sequencer, or recovering).
    #[error(transparent)]
    Replication(#[from] ReplicationError),
}

impl Core {
    /// Judges a batch of `record_count` records stamped `producer` for `shard`, whose open log
    /// is `log`, before it is stored (see the module documentation).
    pub async fn dedup(
        &self,
        shard: ShardId,
        log: &ShardLog<DmaStorage>,
        producer: ProducerStamp,
        record_count: u32,
    ) -> Result<Dedup, DedupError> {
        let config = self.config.log.producer_table();
        self.judge(shard, producer, record_count, || {
            rebuild(log, config, ReadBound::Written)
        })
        .await
    }

    /// Judges a batch of `record_count` records stamped `producer` for the replicated shard
    /// `host` sequences on this core (see the module documentation): the table is the one of
    /// the current sequencing epoch, rebuilt from the adopted log once it is committed here.
    pub async fn dedup_replicated(
        &self,
        host: &ShardHost,
        producer: ProducerStamp,
        record_count: u32,
    ) -> Result<Dedup, DedupError> {
        let shard = host.shard();
        let (epoch, adopted_end) = host.sequencing()?;
        if let Some(local) = self.local_shard(shard) {
            let slot = &local.producers;
            if slot.epoch.get() != Some(epoch) {
                // Another epoch's table (or none): it may miss what recovery adopted.
                let mut state = slot.state.borrow_mut();
                if !matches!(*state, SlotState::Loading) {
                    *state = SlotState::Absent;
                    slot.epoch.set(Some(epoch));
                }
            }
        }
        let config = self.config.log.producer_table();
        self.judge(shard, producer, record_count, || async move {
            if host.log().written_offset().0 < adopted_end {
                // The adopted log is not all written here yet: a table built now could miss
                // a batch stored before the failover.
                return Err(DedupError::Replication(ReplicationError::Recovering {
                    shard,
                }));
            }
            let adopted = ReadBound::Below(Offset(adopted_end));
            Ok(rebuild(host.log(), config, adopted).await?)
        })
        .await
    }

    /// The table's answer for a batch, rebuilding the table with `load` first if it is absent
    /// (one rebuild at a time; other stamped batches wait for it).
    async fn judge<F, Fut, E>(
        &self,
        shard: ShardId,
        producer: ProducerStamp,
        record_count: u32,
        load: F,
    ) -> Result<Dedup, DedupError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<ProducerTable, E>>,
        DedupError: From<E>,
    {
        let local = self.local_shard(shard);
        let pending = |local| Pending {
            local,
            producer,
            record_count,
            done: false,
        };
        if producer.producer_id == 0 {
            return Ok(Dedup::Store(pending(local)));
        }
        let Some(local) = local else {
            // Served by this core (the caller holds its log) but not registered: cannot
            // happen while the caller holds the log; refuse rather than store unchecked.
            return Err(DedupError::Log(LogError::Closed));
        };
        loop {
            let changed = local.producers.changed.listen();
            let start_loading = {
                let mut state = local.producers.state.borrow_mut();
                match &mut *state {
                    SlotState::Ready(table) => {
                        return Ok(match table.admit(producer, record_count)? {
                            Admission::Duplicate {
                                base_offset,
                                last_offset,
                            } => Dedup::Duplicate {
                                base_offset,
                                last_offset,
                            },
                            Admission::Fresh | Admission::NotIdempotent => {
                                Dedup::Store(pending(Some(Rc::clone(&local))))
                            }
                        });
                    }
                    SlotState::Loading => false,
                    SlotState::Absent => {
                        *state = SlotState::Loading;
                        true
                    }
                }
            };
            if start_loading {
                let rebuilt = load().await;
                let failed = match rebuilt {
                    Ok(table) => {
                        tracing::debug!(core = self.index, %shard, producers = table.producer_count(), "producer table rebuilt");
                        *local.producers.state.borrow_mut() = SlotState::Ready(table);
                        None
                    }
                    Err(error) => {
                        *local.producers.state.borrow_mut() = SlotState::Absent;
                        Some(error)
                    }
                };
                local.producers.changed.notify();
                if let Some(error) = failed {
                    return Err(error.into());
                }
            } else {
                changed.await;
            }
        }
    }
}
