//! The shard log: appends, group commit, reads, tailing, trim, retention, open and close.
//!
//! One background task per log (the *flusher*) does every write, fdatasync and segment roll.
//! Appends copy a batch into the aligned tail buffer and return its offsets at once; the
//! flusher swaps the buffer out, writes it from the last block boundary, syncs, and only then
//! advances the durable offset. Whatever arrives while a write + sync is in flight goes into the
//! next one: that is the group commit. A failed write or sync poisons the log for good.
//!
//! Each write also rewrites block 0 of the active segment with an *acknowledged-end
//! checkpoint*: the durable end before this write (covered by the same fdatasync), and after a
//! short idle time the flusher records the final durable end the same way. Recovery refuses to
//! treat damage below the checkpoint as a torn tail. Disk space is reserved in steps just ahead
//! of the writes and written with zeros before batches reach it, so a write's fdatasync commits
//! no file system metadata; a full disk refuses appends (an operating error) instead of
//! poisoning the log.
//!
//! The buffers written last stay in the log's batch cache (`cache.rs`), bounded per log and per
//! core: a read close behind the end (a tailing reader or consumer) is served from them, with
//! no disk I/O; everything else is read from the disk and checked as before.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use runnel_core::batch::stamp_header;
use runnel_core::{
    BatchError, BatchHeader, BatchView, CheckedChunks, Epoch, Limits, Offset, RecordRef,
    BATCH_ALIGNMENT, BATCH_HEADER_LEN,
};

use crate::cache::BatchCache;
use crate::config::{LogConfig, BLOCK_BYTES, RESERVE_STEP_BYTES_MIN, ZERO_AHEAD_WRITE_BYTES_MAX};
use crate::error::{is_no_space, LogError};
use crate::format::{
    encode_start, segment_file_name, AckedCheckpoint, ReservedFile, SegmentHeader,
    RESERVED_FILE_NAME, SEGMENT_DATA_START, SEGMENT_FORMAT_VERSION, START_FILE_NAME,
};
use crate::index::SparseIndex;
use crate::index_file::{self, index_file_name, SealedSegmentIndex};
use crate::read::{ChunkReader, ReadChunk};
use crate::recovery::recover;
use crate::runtime::Event;
use crate::runtime::{both, sleep, spawn, TaskHandle};
use crate::segment::Segment;
use crate::storage::{Storage, StorageFile, WriteBuffer};

mod replica;

pub use replica::BatchEpoch;

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset of its first record.
    pub base_offset: Offset,
    /// Offset of its last record.
    pub last_offset: Offset,
}

/// Counters of the log's I/O since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Group-commit writes issued.
    pub writes: u64,
    /// Bytes those writes carried (block-aligned, so partial blocks count again).
    pub bytes_written: u64,
    /// fdatasync calls that completed.
    pub syncs: u64,
    /// Acknowledged-end checkpoints written to block 0 (with a write or on their own).
    pub checkpoints: u64,
    /// Disk reservations (fallocate calls) made for the active segment.
    pub reservations: u64,
    /// Reads ([`ShardLog::read`] returning batches) served wholly from the batch cache, with
    /// no disk I/O.
    pub cache_hits: u64,
    /// Reads returning batches that read from the disk.
    pub cache_misses: u64,
    /// Bytes of batches the cache hits returned.
    pub cache_hit_bytes: u64,
    /// Disk reads (`read_at` calls) made by [`ShardLog::read`].
    pub disk_reads: u64,
    /// Bytes of zeros written over reserved space ahead of the batches.
    pub bytes_zeroed: u64,
    /// Suffix truncations done ([`ShardLog::truncate_from`]).
    pub truncations: u64,
    /// Offset reservations made durable ([`ShardLog::reserve_offsets_durably`]).
    pub offset_reservations: u64,
    /// Lost ranges this open found (offsets handed out before a crash and lost with it) and
    /// recorded in the log: 0 or 1.
    pub lost_ranges: u64,
    /// Offsets in those lost ranges.
    pub lost_offsets: u64,
}

/// The tail buffer's first capacity beyond the kept partial block (one block): it doubles from
/// there as appends need, up to `write_buffer_bytes`.
const TAIL_BYTES_MIN: u64 = BLOCK_BYTES as u64;

/// How long after a reservation failed for lack of space appends are refused without trying
/// again.
const NO_SPACE_RETRY_MS: u64 = 1000;

/// How far a read may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadBound {
    /// Only batches made durable by fdatasync.
    Durable,
    /// Batches written to the file, durable or not yet (for `memory` durability).
    Written,
    /// Batches below this offset (a committed offset decided by replication), and written.
    Below(Offset),
}

pub(crate) fn align_down(value: u64) -> u64 {
    value - value % BLOCK_BYTES as u64
}

pub(crate) fn align_up(value: u64) -> u64 {
    align_down(value + BLOCK_BYTES as u64 - 1)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The unflushed end of the active segment: a block-aligned buffer mapped at `file_pos`.
struct Tail<B> {
    buffer: B,
    /// File position of `buffer[0]`; block-aligned.
    file_pos: u64,
    /// Bytes of batches in the buffer.
    fill: usize,
    /// Bytes of the buffer already written to the file (the kept partial block).
    written: usize,
}

struct State<S: Storage> {
    segments: BTreeMap<Offset, Segment<S::File>>,
    tail: Tail<S::Buffer>,
    /// Offset the next append gets.
    next_offset: Offset,
    /// Batches below this offset are in the file.
    written_offset: Offset,
    /// File position in the active segment up to which batches are in the file.
    written_pos: u64,
    /// Batches below this offset are durable.
    durable_offset: Offset,
    /// File position in the active segment up to which batches are durable.
    durable_pos: u64,
    /// The checkpoint slots of the active segment's block 0 as last written (index = slot).
    checkpoints: [Option<AckedCheckpoint>; 2],
    /// The acknowledged end the newest written checkpoint records (the segment's base when
    /// none was written yet).
    checkpointed_offset: Offset,
    /// When the flusher last wrote batches.
    last_write_at: Instant,
    /// The last reservation failed for lack of space (cause, when): appends that need more
    /// space are refused until `NO_SPACE_RETRY_MS` later, when one of them tries again.
    no_space: Option<(String, Instant)>,
    /// Appends wait for the active segment to be reserved up to this position (0: none).
    reserve_wanted: u64,
    /// A reservation task (fallocate, then zeros ahead) is running.
    reserving: bool,
    /// The active segment's space from the end of its data up to here is written with zeros
    /// (not merely reserved: writes of batches there commit no metadata), or owed none (the
    /// writes were large when it was reserved).
    zeroed_end: u64,
    /// A write of zeros is in flight over this range of the active segment: no write of
    /// batches may touch it before that write returned.
    zeroing: Option<(u64, u64)>,
    /// End of the last write of batches issued into the active segment: zeros go only beyond.
    write_claimed_end: u64,
    /// Writes of batches, and their bytes, since the last reservation: whether the next one
    /// is written with zeros.
    writes_since_reservation: (u64, u64),
    /// Whether the last reservation was written with zeros (the next one decides again when
    /// writes were made since).
    zero_ahead: bool,
    /// The logical start: offsets below it are trimmed.
    start: Offset,
    /// A suffix truncation asked for and not yet taken back by its caller: appends wait.
    truncation: Option<replica::Truncation>,
    /// Counts the flusher's truncation steps: odd while one changes the files and the state
    /// (reads wait), even otherwise. A read that saw it change starts again.
    truncations: u64,
    poisoned: Option<String>,
    closed: bool,
    roll_requested: bool,
    maintenance_busy: bool,
    stats: LogStats,
    /// The last buffers written, for reads close behind the end.
    cache: BatchCache<S::Buffer>,
    /// Offsets below this may have been handed out: what the reservation file says (`None`:
    /// there is none).
    reserved_on_disk: Option<Offset>,
    /// Whether appends may be acknowledged before they are durable
    /// ([`ShardLog::reserve_offsets_durably`]): then no offset at or beyond
    /// `reserved_on_disk` is handed out.
    reserving_offsets_required: bool,
    /// A write of the reservation file is in flight.
    reserving_offsets: bool,
}

struct Inner<S: Storage> {
    storage: S,
    dir: PathBuf,
    config: LogConfig,
    state: RefCell<State<S>>,
    /// New batches in the tail buffer, a roll request, or close: wakes the flusher.
    appended: Event,
    /// Batches reached the file: wakes tailing readers.
    written: Event,
    /// Batches became durable, or the log was poisoned: wakes durability waiters.
    durable: Event,
    /// The tail buffer was swapped or a roll finished: wakes blocked appenders.
    room: Event,
    /// Trim or retention finished.
    maintenance: Event,
    /// A suffix truncation began or ended its changes, or the log was poisoned.
    truncated: Event,
    /// A reservation of offsets finished (or failed).
    offsets_reserved: Event,
}

/// A shard's durable log. Single-threaded: use it on the executor that opened it.
pub struct ShardLog<S: Storage> {
    inner: Rc<Inner<S>>,
    flusher: Option<TaskHandle<()>>,
}

enum Step {
    Done(Appended),
    Wait,
    /// Offsets up to (excluding) this one must be reserved durably first.
    Reserve(Offset),
}

/// One write + sync the flusher performs.
struct FlushJob<S: Storage> {
    file: Rc<S::File>,
    /// Base offset of the segment written.
    segment: Offset,
    buffer: S::Buffer,
    /// Bytes of batches at the buffer's start (the rest of it is padding to a block).
    filled: usize,
    /// Bytes of the buffer's allocation.
    capacity: usize,
    pos: u64,
    upto_offset: Offset,
    upto_pos: u64,
    /// Block 0 with a new checkpoint, written beside the batches when the durable end moved.
    checkpoint_block: Option<S::Buffer>,
}

impl<S: Storage> ShardLog<S> {
    /// Creates a new, empty log in `dir` (which must not hold one) and makes it durable — the
    /// directory, its first segment (one 4 KiB block) and the segment's directory entry — without
    /// opening it: no buffer, no flusher. [`Self::open`] opens it later without allocating
    /// anything. For callers that create a log where it will be opened, maybe by another core.
    pub async fn create(storage: &S, dir: &Path, config: &LogConfig) -> Result<(), LogError> {
        config.validate().map_err(LogError::InvalidConfig)?;
        storage
            .create_dir_all(dir)
            .await
            .map_err(|e| LogError::io("create directory", dir, e))?;
        create_segment(storage, dir, Offset(0), config).await?;
        Ok(())
    }

    /// Opens (recovering) or creates the log in `dir`.
    pub async fn open(
        storage: S,
        dir: impl Into<PathBuf>,
        config: LogConfig,
    ) -> Result<Self, LogError> {
        config.validate().map_err(LogError::InvalidConfig)?;
        let dir = dir.into();
        let recovered = recover(&storage, &dir, &config).await?;
        let reserved_on_disk = recovered.reserved;
        let start = recovered.start;
        let acked = recovered.acked;
        let mut segments: BTreeMap<Offset, Segment<S::File>> = recovered
            .segments
            .into_iter()
            .map(|s| (s.base, s))
            .collect();
        if segments.is_empty() {
            let segment = create_segment(&storage, &dir, start, &config).await?;
            segments.insert(segment.base, segment);
        }
        let active = segments
            .values_mut()
            .next_back()
            .ok_or_else(|| LogError::InvalidConfig("no active segment".into()))?;
        if recovered.dirty_tail {
            clean_torn_tail(active).await?;
        } else if !active.is_empty() {
            // What recovery found is made durable before a checkpoint can claim it: a process
            // crash can leave written batches that no fdatasync covered yet.
            active
                .file
                .sync()
                .await
                .map_err(|e| LogError::io("fdatasync segment", &active.path, e))?;
        }
        let mut acked = acked;
        if needs_new_layout(active, &config) {
            // The torn-write window and the layout are properties of the segment: a writer with
            // another buffer size, or a segment of an older layout, continues in a fresh
            // segment (or rewrites the header of an empty one).
            acked = None;
            if let Some(segment) = adopt_layout(&storage, &dir, active, &config).await? {
                segments.insert(segment.base, segment);
            }
        }
        let mut stats = LogStats::default();
        if let Some(lost) =
            record_lost_range(&storage, &dir, &mut segments, reserved_on_disk, &config).await?
        {
            acked = None;
            stats.lost_ranges = 1;
            stats.lost_offsets = lost;
        }
        let active = segments
            .values()
            .next_back()
            .ok_or_else(|| LogError::InvalidConfig("no active segment".into()))?;
        let tail = open_tail(active, &config).await?;
        let next_offset = active.next_offset;
        let written_pos = active.data_end;
        let active_base = active.base;
        let mut checkpoints = [None, None];
        if let Some(acked) = acked {
            if let Some(slot) = checkpoints.get_mut(acked.slot()) {
                *slot = Some(acked);
            }
        }
        let state = State {
            segments,
            tail,
            next_offset,
            written_offset: next_offset,
            written_pos,
            durable_offset: next_offset,
            durable_pos: written_pos,
            checkpoints,
            checkpointed_offset: acked.map_or(active_base, |a| a.offset),
            last_write_at: Instant::now(),
            no_space: None,
            reserve_wanted: 0,
            reserving: false,
            // What lies beyond the recovered data is zeros, but maybe only reserved: it is
            // written over again before batches reach it.
            zeroed_end: align_up(written_pos),
            zeroing: None,
            write_claimed_end: align_up(written_pos),
            writes_since_reservation: (0, 0),
            zero_ahead: true,
            start,
            truncation: None,
            truncations: 0,
            poisoned: None,
            closed: false,
            roll_requested: false,
            maintenance_busy: false,
            stats,
            cache: BatchCache::new(config.read_cache_bytes, config.read_cache_core_bytes),
            reserved_on_disk,
            reserving_offsets_required: false,
            reserving_offsets: false,
        };
        let inner = Rc::new(Inner {
            storage,
            dir,
            config,
            state: RefCell::new(state),
            appended: Event::default(),
            written: Event::default(),
            durable: Event::default(),
            room: Event::default(),
            maintenance: Event::default(),
            truncated: Event::default(),
            offsets_reserved: Event::default(),
        });
        let flusher = spawn(flusher(Rc::clone(&inner)));
        Ok(ShardLog {
            inner,
            flusher: Some(flusher),
        })
    }

    /// Appends one batch (its header CRC and payload CRC are checked; the base offset and
    /// `epoch` are stamped into the stored copy). Returns as soon as the batch is in the tail
    /// buffer — await [`Self::wait_durable`] before acknowledging an `fsync` write. Waits while
    /// the tail buffer is full (back-pressure) or a segment is rolling.
    pub async fn append(&self, batch: &[u8], epoch: Epoch) -> Result<Appended, LogError> {
        self.append_checked(BatchView::check(batch)?, epoch).await
    }

    /// [`Self::append`] of a batch already checked (a [`BatchView`] exists only for bytes whose
    /// header and payload CRCs were checked, by [`BatchView::check`] or the full ingress
    /// validation [`BatchView::validate_with`]): the bytes are not checked again, however
    /// long the append waits for room.
    pub async fn append_checked(
        &self,
        batch: BatchView<'_>,
        epoch: Epoch,
    ) -> Result<Appended, LogError> {
        self.append_view(batch, epoch, None).await
    }

    /// Appends a checked batch, at offset `at` when given (refused unless it is the next one).
    async fn append_view(
        &self,
        batch: BatchView<'_>,
        epoch: Epoch,
        at: Option<Offset>,
    ) -> Result<Appended, LogError> {
        loop {
            let room = self.inner.room.listen();
            match self.try_append(batch, epoch, at)? {
                Step::Done(appended) => return Ok(appended),
                Step::Wait => room.await,
                Step::Reserve(needed) => self.reserve_offsets_through(needed).await?,
            }
        }
    }

    /// [`Self::append_checked`] of a batch received in chunks: the log copies the chunks
    /// straight into its tail buffer (the batch's one copy on ingress) and validates them
    /// there ([`CheckedChunks::copy_into`]: the archive, each record against `limits` and
    /// `check`, the header's timestamps), before the batch is taken. If that refuses it, the
    /// place is zeroed, nothing is appended and no offset is used. `check` must not touch this
    /// log. Waits for room as [`Self::append`] does; the bytes are copied and validated once,
    /// when there is room.
    pub async fn append_chunks<C, E>(
        &self,
        batch: &CheckedChunks<'_, C>,
        epoch: Epoch,
        limits: &Limits,
        check: impl FnMut(usize, RecordRef<'_>) -> Result<(), E>,
    ) -> Result<Appended, E>
    where
        C: AsRef<[u8]>,
        E: From<LogError> + From<BatchError>,
    {
        self.place_chunks(batch, epoch, None, limits, check).await
    }

    /// [`Self::append_chunks`], at offset `at` when given (refused unless it is the next one).
    async fn place_chunks<C, E>(
        &self,
        batch: &CheckedChunks<'_, C>,
        epoch: Epoch,
        at: Option<Offset>,
        limits: &Limits,
        mut check: impl FnMut(usize, RecordRef<'_>) -> Result<(), E>,
    ) -> Result<Appended, E>
    where
        C: AsRef<[u8]>,
        E: From<LogError> + From<BatchError>,
    {
        loop {
            let room = self.inner.room.listen();
            let step = self.try_place(batch.len(), *batch.header(), epoch, at, |target| {
                batch.copy_into(target, limits, &mut check).map(|_| ())
            })?;
            match step {
                Step::Done(appended) => return Ok(appended),
                Step::Wait => room.await,
                Step::Reserve(needed) => self.reserve_offsets_through(needed).await?,
            }
        }
    }

    /// Appends and waits until the batch is durable.
    pub async fn append_durable(&self, batch: &[u8], epoch: Epoch) -> Result<Appended, LogError> {
        let appended = self.append(batch, epoch).await?;
        self.wait_durable(appended.last_offset).await?;
        Ok(appended)
    }

    fn try_append(
        &self,
        view: BatchView<'_>,
        epoch: Epoch,
        at: Option<Offset>,
    ) -> Result<Step, LogError> {
        let bytes = view.as_bytes();
        self.try_place(bytes.len(), *view.header(), epoch, at, |target| {
            target.copy_from_slice(bytes);
            Ok::<(), LogError>(())
        })
    }

    /// Takes a batch of `len` bytes whose checked header is `header` if there is room: `place`
    /// writes it into the tail buffer (and may refuse it), then its offsets are stamped.
    /// `place` runs at most once per call, and only when the batch is taken or refused. With
    /// `at`, the batch is refused unless `at` is the next offset when it would be taken.
    fn try_place<E: From<LogError>>(
        &self,
        len: usize,
        header: BatchHeader,
        epoch: Epoch,
        at: Option<Offset>,
        place: impl FnOnce(&mut [u8]) -> Result<(), E>,
    ) -> Result<Step, E> {
        let inner = &*self.inner;
        let mut guard = inner.state.borrow_mut();
        let state = &mut *guard;
        if let Some(cause) = &state.poisoned {
            return Err(E::from(LogError::Poisoned {
                cause: cause.clone(),
            }));
        }
        if state.closed {
            return Err(E::from(LogError::Closed));
        }
        assert_eq!(
            len, header.batch_len as usize,
            "a batch's length is the one its checked header gives"
        );
        let max = inner.config.batch_bytes_max();
        if len as u64 > max {
            return Err(E::from(LogError::BatchTooLarge {
                size: len as u64,
                max,
            }));
        }
        if state.roll_requested || state.truncation.is_some() {
            return Ok(Step::Wait);
        }
        let Some(active) = state.segments.values_mut().next_back() else {
            return Err(E::from(LogError::Closed));
        };
        let too_big = active.data_end + len as u64 > inner.config.segment_bytes_max;
        let too_old =
            now_ms().saturating_sub(active.created_ms) > inner.config.segment_age_max_ms as i64;
        if !active.is_empty() && (too_big || too_old) {
            state.roll_requested = true;
            inner.appended.notify();
            return Ok(Step::Wait);
        }
        let tail = &mut state.tail;
        if tail.fill + len > inner.config.write_buffer_bytes {
            return Ok(Step::Wait);
        }
        let capacity = tail.buffer.as_slice().len();
        if tail.fill + len > capacity {
            // The buffer starts small (an idle shard holds kilobytes, not `write_buffer_bytes`)
            // and doubles, up to `write_buffer_bytes`, as the traffic needs.
            let grown = (2 * capacity)
                .max(align_up((tail.fill + len) as u64) as usize)
                .min(inner.config.write_buffer_bytes);
            let mut buffer = active.file.alloc(grown);
            if let (Some(target), Some(filled)) = (
                buffer.as_mut_slice().get_mut(..tail.fill),
                tail.buffer.as_slice().get(..tail.fill),
            ) {
                target.copy_from_slice(filled);
            }
            tail.buffer = buffer;
        }
        // Space on disk is reserved before a batch is taken, so a full disk refuses this
        // append cleanly (no offset given, nothing buffered) instead of failing a write later.
        let end = align_up(tail.file_pos + (tail.fill + len) as u64);
        if inner.config.preallocate && end > active.reserved_bytes {
            if let Some((cause, at)) = &state.no_space {
                if at.elapsed() < Duration::from_millis(NO_SPACE_RETRY_MS) {
                    return Err(E::from(LogError::NoSpace {
                        path: active.path.clone(),
                        cause: cause.clone(),
                    }));
                }
            }
            state.reserve_wanted = state.reserve_wanted.max(end);
            inner.appended.notify();
            return Ok(Step::Wait);
        }
        if let Some(requested) = at.filter(|&at| at != state.next_offset) {
            return Err(E::from(LogError::NotNextOffset {
                requested,
                next: state.next_offset,
            }));
        }
        let needed = Offset(state.next_offset.0 + u64::from(header.record_count));
        if state.reserving_offsets_required && state.reserved_on_disk.is_none_or(|r| r < needed) {
            return Ok(Step::Reserve(needed));
        }
        let target = tail
            .buffer
            .as_mut_slice()
            .get_mut(tail.fill..tail.fill + len)
            .ok_or(LogError::BatchTooLarge {
                size: len as u64,
                max,
            })?;
        // Batches are multiples of 16 bytes from a block-aligned start: in place, the archive
        // is aligned as rkyv needs it (a validating `place` reads it there).
        assert!(
            (target.as_ptr() as usize).is_multiple_of(BATCH_ALIGNMENT),
            "a batch's place in the tail buffer is {BATCH_ALIGNMENT}-byte aligned"
        );
        if let Err(refused) = place(target) {
            // The flusher zeroes the buffer past `fill` before writing it; zeroing the
            // refused bytes here as well keeps that from being the only guard.
            target.fill(0);
            return Err(refused);
        }
        let header: BatchHeader =
            stamp_header(target, header, state.next_offset, epoch).map_err(LogError::from)?;
        assert!(
            !state.reserving_offsets_required
                || state.reserved_on_disk >= Some(header.next_offset()),
            "an offset that may be acknowledged before it is durable is reserved durably first"
        );
        let position = tail.file_pos + tail.fill as u64;
        active.note_batch(&header, position, inner.config.index_interval_bytes);
        tail.fill += len;
        state.next_offset = header.next_offset();
        inner.appended.notify();
        Ok(Step::Done(Appended {
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
        }))
    }

    /// Tells the log that its appends may be acknowledged before they are durable (`memory`
    /// durability): from now on, until it is closed, no offset is handed out before the
    /// reservation file (`reserved`, fdatasync'd) covers it, so that after a crash the offsets
    /// handed out and lost are known and never handed out again (they become a lost range, see
    /// [`LogError::LostRange`]). Reservations go `LogConfig::offset_reserve_step` offsets ahead:
    /// one file replacement per that many offsets. Idempotent; costs nothing until the next
    /// append.
    pub fn reserve_offsets_durably(&self) {
        self.inner.state.borrow_mut().reserving_offsets_required = true;
    }

    /// Makes the reservation cover every offset below `needed`: one reservation at a time;
    /// concurrent callers wait for it and look again.
    async fn reserve_offsets_through(&self, needed: Offset) -> Result<(), LogError> {
        let inner = &*self.inner;
        let end = loop {
            let changed = inner.offsets_reserved.listen();
            {
                let mut state = inner.state.borrow_mut();
                if let Some(cause) = &state.poisoned {
                    return Err(LogError::Poisoned {
                        cause: cause.clone(),
                    });
                }
                if state.reserved_on_disk.is_some_and(|r| r >= needed) {
                    return Ok(());
                }
                if !state.reserving_offsets {
                    state.reserving_offsets = true;
                    break Offset(
                        needed
                            .0
                            .max(state.next_offset.0)
                            .saturating_add(inner.config.offset_reserve_step),
                    );
                }
            }
            changed.await;
        };
        let result = write_reserved_file(&inner.storage, &inner.dir, end).await;
        {
            let mut state = inner.state.borrow_mut();
            state.reserving_offsets = false;
            if result.is_ok() {
                assert!(
                    state.reserved_on_disk.is_none_or(|r| r <= end),
                    "a reservation never shrinks while appends may use it"
                );
                state.reserved_on_disk = Some(end);
                state.stats.offset_reservations += 1;
            }
        }
        if let Err(error) = &result {
            // The file may or may not have been replaced: nothing is handed out beyond what is
            // known to be reserved, and the log stops, as for a failed fdatasync.
            poison(inner, format!("offset reservation failed: {error}"));
        }
        inner.offsets_reserved.notify();
        result
    }

    /// Waits until every batch up to and including `offset` is durable.
    pub async fn wait_durable(&self, offset: Offset) -> Result<(), LogError> {
        loop {
            let changed = self.inner.durable.listen();
            {
                let state = self.inner.state.borrow();
                if let Some(cause) = &state.poisoned {
                    return Err(LogError::Poisoned {
                        cause: cause.clone(),
                    });
                }
                if state.durable_offset > offset {
                    return Ok(());
                }
                if offset >= state.next_offset {
                    return Err(LogError::OffsetOutOfRange {
                        requested: offset,
                        next: state.next_offset,
                    });
                }
                if state.closed && self.flusher.is_none() {
                    return Err(LogError::Closed);
                }
            }
            changed.await;
        }
    }

    /// Waits until everything appended so far is durable (for a graceful stop while other
    /// tasks still hold the log).
    pub async fn sync_all(&self) -> Result<(), LogError> {
        let next = self.next_offset();
        if next.0 == 0 || self.durable_offset() >= next {
            return Ok(());
        }
        self.wait_durable(Offset(next.0 - 1)).await
    }

    /// Waits until a batch at or after `offset` can be read within `bound` (tailing).
    pub async fn wait_for(&self, offset: Offset, bound: ReadBound) -> Result<(), LogError> {
        loop {
            let changed = match bound {
                ReadBound::Durable => self.inner.durable.listen(),
                ReadBound::Written | ReadBound::Below(_) => self.inner.written.listen(),
            };
            {
                let state = self.inner.state.borrow();
                if let Some(cause) = &state.poisoned {
                    return Err(LogError::Poisoned {
                        cause: cause.clone(),
                    });
                }
                if state.closed {
                    return Err(LogError::Closed);
                }
                if offset < bound_offset(&state, bound) {
                    return Ok(());
                }
            }
            changed.await;
        }
    }

    /// Reads whole batches starting with the one holding `from`, up to about `max_bytes`
    /// (at least one batch), seeing no further than `bound`. An empty chunk means there is
    /// nothing at `from` yet. A read never returns batches a suffix truncation removed: one
    /// that overlaps a truncation is made again after it.
    pub async fn read(
        &self,
        from: Offset,
        max_bytes: usize,
        bound: ReadBound,
    ) -> Result<ReadChunk<S>, LogError> {
        loop {
            let generation = self.settled_truncations().await;
            let result = self.read_once(from, max_bytes, bound).await;
            if self.inner.state.borrow().truncations == generation {
                return result;
            }
        }
    }

    async fn read_once(
        &self,
        from: Offset,
        max_bytes: usize,
        bound: ReadBound,
    ) -> Result<ReadChunk<S>, LogError> {
        let (file, path, segment_base, mut pos, limit, bound) = {
            let state = self.inner.state.borrow();
            within_log(&state, from)?;
            within_lost_range(&state, from)?;
            let bound = bound_offset(&state, bound);
            if from >= bound {
                return Ok(ReadChunk::empty(from));
            }
            let Some((_, segment)) = state.segments.range(..=from).next_back() else {
                return Err(LogError::Trimmed {
                    requested: from,
                    start: state.start,
                });
            };
            let limit = readable_end(&state, segment);
            let pos = segment
                .index
                .position_for_offset(from)
                .unwrap_or(SEGMENT_DATA_START);
            (
                Rc::clone(&segment.file),
                segment.path.clone(),
                segment.base,
                pos,
                limit,
                bound,
            )
        };
        let read_ahead =
            max_bytes.max(BATCH_HEADER_LEN) + self.inner.config.index_interval_bytes as usize;
        let lookup = |pos: u64, end: u64| {
            let state = self.inner.state.borrow();
            let hit = state.cache.get(segment_base, pos, end)?;
            let file_pos = pos - hit.at as u64;
            let len = (hit.filled_end - file_pos) as usize;
            Some((file_pos, S::File::written_read(&hit.buffer, 0, len)))
        };
        let mut reader = ChunkReader::with_cache(&*file, read_ahead, &lookup);
        let io_error = |e| LogError::io("read segment", &path, e);
        let corrupt = |position: u64, offset: Offset, reason: String| LogError::Corruption {
            path: path.clone(),
            position,
            offset,
            reason,
        };
        // Skip the batches before the one holding `from`, reading headers only.
        let mut expected = None;
        loop {
            if pos + BATCH_HEADER_LEN as u64 > limit {
                return Ok(ReadChunk::empty(from));
            }
            let head = reader
                .bytes(pos, BATCH_HEADER_LEN, limit)
                .await
                .map_err(io_error)?;
            let header =
                BatchHeader::decode(head).map_err(|e| corrupt(pos, from, e.to_string()))?;
            if let Some(expected) = expected {
                if header.base_offset != expected {
                    return Err(corrupt(
                        pos,
                        expected,
                        format!("batch has base offset {}", header.base_offset),
                    ));
                }
            }
            if header.next_offset() > from {
                break;
            }
            expected = Some(header.next_offset());
            pos += u64::from(header.batch_len);
        }
        // Take whole batches from `pos` while they fit in `max_bytes` and lie below the bound.
        // A damaged batch ends the chunk after the sound batches before it (what is readable
        // stays readable); a read that starts at the damaged batch gets the error.
        let first_pos = pos;
        let mut next_offset = from;
        let mut batch_count = 0;
        while pos + BATCH_HEADER_LEN as u64 <= limit {
            // A chunk is one piece: batches served from a cached buffer end where it ends
            // (the next read continues in a newer one), rather than reading the disk.
            if batch_count > 0
                && reader.piece_from_cache()
                && !reader.covers(pos, pos + BATCH_HEADER_LEN as u64)
            {
                break;
            }
            let head = reader
                .bytes(pos, BATCH_HEADER_LEN, limit)
                .await
                .map_err(io_error)?;
            let header = match BatchHeader::decode(head) {
                Ok(header) => header,
                Err(_) if batch_count > 0 => break,
                Err(e) => return Err(corrupt(pos, next_offset, e.to_string())),
            };
            let len = u64::from(header.batch_len);
            if header.base_offset >= bound
                || (batch_count > 0 && pos + len - first_pos > max_bytes as u64)
            {
                break;
            }
            if batch_count > 0 && reader.piece_from_cache() && !reader.covers(pos, pos + len) {
                break;
            }
            let damage = if batch_count > 0 && header.base_offset != next_offset {
                Some(corrupt(
                    pos,
                    next_offset,
                    format!("batch has base offset {}", header.base_offset),
                ))
            } else if pos + len > limit {
                Some(corrupt(
                    pos,
                    header.base_offset,
                    "batch runs past the end of the segment's data".into(),
                ))
            } else {
                let cached = reader.piece_from_cache() && reader.covers(pos, pos + len);
                let bytes = reader
                    .bytes(pos, len as usize, limit)
                    .await
                    .map_err(io_error)?;
                if cached {
                    // Bytes of the log's own write buffer: checked when they were appended
                    // (the header decoded above was checked again), and never read back
                    // from the disk. Not checked a second time.
                    (bytes.len() as u64 != len).then(|| {
                        corrupt(pos, header.base_offset, "cached batch is cut short".into())
                    })
                } else {
                    BatchView::check(bytes)
                        .err()
                        .map(|e| corrupt(pos, header.base_offset, e.to_string()))
                }
            };
            match damage {
                Some(_) if batch_count > 0 => break,
                Some(error) => return Err(error),
                None => {}
            }
            next_offset = header.next_offset();
            batch_count += 1;
            pos += len;
        }
        if batch_count == 0 {
            self.count_read(&reader, 0, false);
            return Ok(ReadChunk::empty(from));
        }
        let (buffer, start, fresh) = match reader.take_if_covers(first_pos, pos) {
            // The very bytes checked above: not checked again.
            Some((buffer, start)) => (buffer, start, false),
            None => {
                let buffer = file
                    .read_at(first_pos, (pos - first_pos) as usize)
                    .await
                    .map_err(io_error)?;
                (buffer, 0, true)
            }
        };
        self.count_read(&reader, pos - first_pos, fresh);
        let chunk = ReadChunk {
            buffer: Some(buffer),
            start,
            end: start + (pos - first_pos) as usize,
            next_offset,
            batch_count,
        };
        // The bytes were checked through the reader's cache; a fresh read must check again.
        if fresh && chunk.batches().count() != batch_count {
            return Err(corrupt(
                first_pos,
                from,
                "batches changed between two reads".into(),
            ));
        }
        Ok(chunk)
    }

    /// Counts a read in the stats: a cache hit when it made no disk read (and returned
    /// batches), else a miss.
    fn count_read(&self, reader: &ChunkReader<'_, S::File>, bytes: u64, fresh: bool) {
        let disk_reads = reader.disk_reads() + u64::from(fresh);
        let stats = &mut self.inner.state.borrow_mut().stats;
        stats.disk_reads += disk_reads;
        if bytes > 0 && disk_reads == 0 {
            stats.cache_hits += 1;
            stats.cache_hit_bytes += bytes;
        } else if bytes > 0 {
            stats.cache_misses += 1;
        }
    }

    /// The offset of the first batch whose largest record timestamp is at least
    /// `timestamp_ms` (the next offset when there is none), for reads "from a time".
    pub async fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Offset, LogError> {
        let candidate = {
            let state = self.inner.state.borrow();
            let active_base = state.segments.keys().next_back().copied();
            state
                .segments
                .values()
                .find(|s| !s.is_empty() && s.max_timestamp_ms >= timestamp_ms)
                .map(|s| {
                    let limit = if Some(s.base) == active_base {
                        state.written_pos
                    } else {
                        s.data_end
                    };
                    let pos = s
                        .index
                        .position_for_timestamp(timestamp_ms)
                        .unwrap_or(SEGMENT_DATA_START);
                    (Rc::clone(&s.file), s.path.clone(), pos, limit)
                })
        };
        let Some((file, path, mut pos, limit)) = candidate else {
            return Ok(self.written_offset());
        };
        let mut reader = ChunkReader::new(&*file, 256 << 10);
        while pos + BATCH_HEADER_LEN as u64 <= limit {
            let head = reader
                .bytes(pos, BATCH_HEADER_LEN, limit)
                .await
                .map_err(|e| LogError::io("read segment", &path, e))?;
            let header = BatchHeader::decode(head).map_err(|e| LogError::Corruption {
                path: path.clone(),
                position: pos,
                offset: Offset(0),
                reason: e.to_string(),
            })?;
            if header.max_timestamp_ms >= timestamp_ms {
                return Ok(header.base_offset.max(self.start_offset()));
            }
            pos += u64::from(header.batch_len);
        }
        Ok(self.written_offset())
    }

    /// Moves the logical start to `new_start` (durably), deleting segments entirely below it.
    pub async fn trim(&self, new_start: Offset) -> Result<(), LogError> {
        let _busy = self.begin_maintenance().await?;
        {
            let state = self.inner.state.borrow();
            if new_start > state.next_offset {
                return Err(LogError::OffsetOutOfRange {
                    requested: new_start,
                    next: state.next_offset,
                });
            }
            if new_start <= state.start {
                return Ok(());
            }
        }
        write_start_file(&self.inner.storage, &self.inner.dir, new_start).await?;
        self.inner.state.borrow_mut().start = new_start;
        let doomed = {
            let state = self.inner.state.borrow();
            let active = state.segments.keys().next_back().copied();
            state
                .segments
                .values()
                .filter(|s| Some(s.base) != active && s.next_offset <= new_start)
                .map(|s| s.base)
                .collect::<Vec<_>>()
        };
        self.delete_segments(&doomed).await
    }

    /// When [`Self::enforce_retention`] would next delete a segment if nothing more were
    /// appended: it deletes one once `now_ms` is past the returned time (`i64::MIN`: at once,
    /// the log is over its size). `None` when it never would: no sealed segment, or no rule
    /// that a sealed segment can break. A caller that closes an idle log keeps this, and opens
    /// the log again for retention only when the time has come.
    pub fn retention_due_ms(&self) -> Option<i64> {
        let state = self.inner.state.borrow();
        let config = &self.inner.config;
        // Retention deletes oldest first and stops at the first segment it keeps: the oldest
        // sealed segment decides.
        let mut segments = state.segments.values();
        let oldest = segments.next()?;
        let successor = segments.next()?;
        let total: u64 = state.segments.values().map(|s| s.data_end).sum();
        if config.retention_bytes.is_some_and(|max| total > max) {
            return Some(i64::MIN);
        }
        let age = i64::try_from(config.retention_age_ms?).unwrap_or(i64::MAX);
        Some(
            oldest
                .max_timestamp_ms
                .max(successor.created_ms)
                .saturating_add(age),
        )
    }

    /// Deletes sealed segments past the retention age (by their newest record) or beyond the
    /// retention size (oldest first). Returns how many were deleted.
    pub async fn enforce_retention(&self, now_ms: i64) -> Result<usize, LogError> {
        let _busy = self.begin_maintenance().await?;
        let doomed = {
            let state = self.inner.state.borrow();
            let config = &self.inner.config;
            let mut total: u64 = state.segments.values().map(|s| s.data_end).sum();
            // Each sealed segment with its successor, created when it was sealed: every record
            // of the segment was appended before the successor's `created_ms`.
            let sealed = state.segments.values().zip(state.segments.values().skip(1));
            let mut doomed = Vec::new();
            for (segment, successor) in sealed {
                // Age by the later of the newest record timestamp and the sealing time, so
                // records stamped 0 or far in the past (producers set timestamps) are still
                // kept `retention_age_ms` after they were appended, not deleted at once.
                let newest_ms = segment.max_timestamp_ms.max(successor.created_ms);
                let too_old = config
                    .retention_age_ms
                    .is_some_and(|age| newest_ms < now_ms.saturating_sub(age as i64));
                let too_big = config.retention_bytes.is_some_and(|max| total > max);
                if !(too_old || too_big) {
                    break;
                }
                total -= segment.data_end;
                doomed.push(segment.base);
            }
            doomed
        };
        let count = doomed.len();
        self.delete_segments(&doomed).await?;
        Ok(count)
    }

    async fn delete_segments(&self, bases: &[Offset]) -> Result<(), LogError> {
        if bases.is_empty() {
            return Ok(());
        }
        let mut paths = Vec::new();
        let (start_before, start_after) = {
            let mut state = self.inner.state.borrow_mut();
            let start_before = state.start;
            for base in bases {
                if let Some(segment) = state.segments.remove(base) {
                    state.start = state.start.max(segment.next_offset);
                    paths.push((segment.base, segment.path));
                }
            }
            (start_before, state.start)
        };
        // The start is made durable before any file goes, so offsets below it are never
        // handed out again, whatever a crash leaves of the directory.
        if start_after > start_before {
            write_start_file(&self.inner.storage, &self.inner.dir, start_after).await?;
        }
        let storage = &self.inner.storage;
        for (base, path) in &paths {
            storage
                .remove(path)
                .await
                .map_err(|e| LogError::io("remove segment", path, e))?;
            let index = self.inner.dir.join(index_file_name(*base));
            match storage.remove(&index).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(LogError::io("remove index", &index, e)),
            }
        }
        storage
            .sync_dir(&self.inner.dir)
            .await
            .map_err(|e| LogError::io("sync directory", &self.inner.dir, e))
    }

    async fn begin_maintenance(&self) -> Result<MaintenanceGuard<'_, S>, LogError> {
        loop {
            let done = self.inner.maintenance.listen();
            {
                let mut state = self.inner.state.borrow_mut();
                if state.closed {
                    return Err(LogError::Closed);
                }
                if !state.maintenance_busy {
                    state.maintenance_busy = true;
                    return Ok(MaintenanceGuard { inner: &self.inner });
                }
            }
            done.await;
        }
    }

    /// Flushes what is buffered, stops the flusher and closes the log. Fails if the log was
    /// poisoned (what was not durable then is not durable now).
    pub async fn close(mut self) -> Result<(), LogError> {
        self.inner.state.borrow_mut().closed = true;
        self.inner.appended.notify();
        if let Some(flusher) = self.flusher.take() {
            flusher.join().await;
        }
        self.inner.durable.notify();
        self.inner.written.notify();
        self.inner.room.notify();
        self.inner.offsets_reserved.notify();
        let shrink = {
            let state = self.inner.state.borrow();
            // After a clean close everything handed out is durable: the reservation shrinks to
            // the end, so the next open records no lost range.
            match state.reserved_on_disk {
                Some(end) if state.poisoned.is_none() && end > state.durable_offset => {
                    assert_eq!(
                        state.durable_offset, state.next_offset,
                        "a log closes after everything was made durable"
                    );
                    Some(state.durable_offset)
                }
                _ => None,
            }
        };
        if let Some(end) = shrink {
            write_reserved_file(&self.inner.storage, &self.inner.dir, end).await?;
            self.inner.state.borrow_mut().reserved_on_disk = Some(end);
        }
        let mut state = self.inner.state.borrow_mut();
        state.cache.clear();
        match &state.poisoned {
            Some(cause) => Err(LogError::Poisoned {
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    /// The first offset still held.
    pub fn start_offset(&self) -> Offset {
        self.inner.state.borrow().start
    }

    /// The offset the next append gets.
    pub fn next_offset(&self) -> Offset {
        self.inner.state.borrow().next_offset
    }

    /// Batches below this offset are durable.
    pub fn durable_offset(&self) -> Offset {
        self.inner.state.borrow().durable_offset
    }

    /// Batches below this offset are in the file (durable or not).
    pub fn written_offset(&self) -> Offset {
        self.inner.state.borrow().written_offset
    }

    /// I/O counters since the log was opened.
    pub fn stats(&self) -> LogStats {
        self.inner.state.borrow().stats
    }

    /// Bytes of the tail buffer now: it starts at one block beyond the kept partial block and
    /// grows with the traffic up to `write_buffer_bytes`, so an idle log holds little memory.
    pub fn buffer_bytes(&self) -> usize {
        self.inner.state.borrow().tail.buffer.as_slice().len()
    }

    /// Bytes of written buffers the batch cache holds (by allocation).
    pub fn cached_bytes(&self) -> usize {
        self.inner.state.borrow().cache.bytes()
    }

    /// The failure that poisoned the log, if one did.
    pub fn poisoned(&self) -> Option<String> {
        self.inner.state.borrow().poisoned.clone()
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.inner.state.borrow().segments.len()
    }

    /// Bytes of batches held (sum of the segments' data, headers included).
    pub fn size_bytes(&self) -> u64 {
        self.inner
            .state
            .borrow()
            .segments
            .values()
            .map(|s| s.data_end)
            .sum()
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }
}

struct MaintenanceGuard<'a, S: Storage> {
    inner: &'a Inner<S>,
}

impl<S: Storage> Drop for MaintenanceGuard<'_, S> {
    fn drop(&mut self) {
        self.inner.state.borrow_mut().maintenance_busy = false;
        self.inner.maintenance.notify();
    }
}

/// How far batches of `segment` may be read: the written end in the active segment, the end
/// of its batches in a sealed one.
fn readable_end<S: Storage>(state: &State<S>, segment: &Segment<S::File>) -> u64 {
    if state.segments.keys().next_back() == Some(&segment.base) {
        state.written_pos
    } else {
        segment.data_end
    }
}

/// Refuses an offset below the log's start (`Trimmed`) or beyond its next offset
/// (`OffsetOutOfRange`).
fn within_log<S: Storage>(state: &State<S>, offset: Offset) -> Result<(), LogError> {
    if offset < state.start {
        return Err(LogError::Trimmed {
            requested: offset,
            start: state.start,
        });
    }
    if offset > state.next_offset {
        return Err(LogError::OffsetOutOfRange {
            requested: offset,
            next: state.next_offset,
        });
    }
    Ok(())
}

/// Refuses an offset in a lost range (`LostRange`): it holds nothing, forever.
fn within_lost_range<S: Storage>(state: &State<S>, offset: Offset) -> Result<(), LogError> {
    let after = Offset(offset.0.saturating_add(1));
    if let Some((_, segment)) = state.segments.range(after..).next() {
        let lost_from = Offset(segment.base.0.saturating_sub(segment.lost_before));
        if offset >= lost_from {
            return Err(LogError::LostRange {
                requested: offset,
                from: lost_from,
                to: segment.base,
            });
        }
    }
    Ok(())
}

fn bound_offset<S: Storage>(state: &State<S>, bound: ReadBound) -> Offset {
    match bound {
        ReadBound::Durable => state.durable_offset,
        ReadBound::Written => state.written_offset,
        ReadBound::Below(offset) => offset.min(state.written_offset),
    }
}

fn poison<S: Storage>(inner: &Inner<S>, cause: String) {
    inner.state.borrow_mut().poisoned.get_or_insert(cause);
    inner.appended.notify();
    inner.durable.notify();
    inner.written.notify();
    inner.room.notify();
    inner.truncated.notify();
}

/// What the flusher does next.
enum Work<S: Storage> {
    Flush(FlushJob<S>),
    Roll,
    /// Truncate the log's suffix from this offset (everything buffered was flushed).
    Truncate(Offset),
    /// Record the durable end in block 0 on its own (the log went idle).
    Checkpoint(Rc<S::File>, S::Buffer),
    Stop,
}

/// The background task: every write, sync, reservation, checkpoint and roll of the log.
///
/// Writes are pipelined with syncs: write k+1 is issued while the fdatasync of write k is in
/// flight, and at most one sync is in flight. So at most two writes are ever unsynced, which is
/// the torn-write window recovery allows for ([`crate::format::UNSYNCED_WRITES_MAX`]). A
/// checkpoint written with write k+1 records only what write k's completed sync made durable.
///
/// Reservations run beside the writes as their own task ([`reserve`]), at most one at a time:
/// a write of batches that would touch the range its zeros are being written over waits for
/// it, and a roll or a stop waits for it to finish.
async fn flusher<S: Storage>(inner: Rc<Inner<S>>) {
    let mut syncing: Option<TaskHandle<Result<(), LogError>>> = None;
    let mut reserving: Option<TaskHandle<()>> = None;
    loop {
        let work = loop {
            let appended = inner.appended.listen();
            if let Some(file) = reservation_due(&inner) {
                inner.state.borrow_mut().reserving = true;
                reserving = Some(spawn(reserve(Rc::clone(&inner), file)));
            }
            if let Some(work) = next_work(&inner) {
                break work;
            }
            // When a checkpoint is due later, a timer wakes the flusher then; dropping the
            // handle (new work came first) cancels it.
            let _timer = checkpoint_due_in(&inner).map(|due| {
                let inner = Rc::clone(&inner);
                spawn(async move {
                    sleep(due).await;
                    inner.appended.notify();
                })
            });
            appended.await;
        };
        let result = match work {
            Work::Stop => {
                if let Some(reservation) = reserving.take() {
                    reservation.join().await;
                }
                let previous = match syncing.take() {
                    Some(previous) => previous.join().await,
                    None => Ok(()),
                };
                // A clean close records the final acknowledged end.
                if previous.is_ok() && inner.state.borrow().poisoned.is_none() {
                    if let Some((file, block)) = take_checkpoint_block(&inner) {
                        if let Err(error) = write_checkpoint(&inner, &file, block).await {
                            poison(&inner, error.to_string());
                        }
                    }
                }
                return;
            }
            Work::Flush(job) => {
                let (file, upto_offset, upto_pos) =
                    (Rc::clone(&job.file), job.upto_offset, job.upto_pos);
                let end = job.pos + job.buffer.as_slice().len() as u64;
                if zeroing_overlaps(&inner, job.pos, end) {
                    if let Some(reservation) = reserving.take() {
                        reservation.join().await;
                    }
                }
                {
                    let mut state = inner.state.borrow_mut();
                    assert!(
                        state.zeroing.is_none_or(|(from, _)| end <= from),
                        "a write of batches never races a write of zeros over its blocks"
                    );
                    state.write_claimed_end = state.write_claimed_end.max(end);
                }
                match write(&inner, job).await {
                    Ok(()) => {
                        let previous = match syncing.take() {
                            Some(previous) => previous.join().await,
                            None => Ok(()),
                        };
                        if previous.is_ok() {
                            syncing = Some(spawn(sync_up_to(
                                Rc::clone(&inner),
                                file,
                                upto_offset,
                                upto_pos,
                            )));
                        }
                        previous
                    }
                    Err(error) => Err(error),
                }
            }
            Work::Checkpoint(file, block) => {
                let previous = match syncing.take() {
                    Some(previous) => previous.join().await,
                    None => Ok(()),
                };
                match previous {
                    Ok(()) => write_checkpoint(&inner, &file, block).await,
                    Err(error) => Err(error),
                }
            }
            Work::Roll | Work::Truncate(_) => {
                if let Some(reservation) = reserving.take() {
                    reservation.join().await;
                }
                let previous = match syncing.take() {
                    Some(previous) => previous.join().await,
                    None => Ok(()),
                };
                match (previous, work) {
                    (Err(error), _) => Err(error),
                    (Ok(()), Work::Truncate(cut)) => replica::truncate(&inner, cut).await,
                    (Ok(()), _) => roll(&inner).await,
                }
            }
        };
        if let Err(error) = result {
            poison(&inner, error.to_string());
            // No write of zeros outlives the flusher.
            if let Some(reservation) = reserving.take() {
                reservation.join().await;
            }
            return;
        }
    }
}

/// Writes the batches of a flush job, and block 0 with its checkpoint beside them.
async fn write<S: Storage>(inner: &Inner<S>, job: FlushJob<S>) -> Result<(), LogError> {
    let FlushJob {
        file,
        segment,
        buffer,
        filled,
        capacity,
        pos,
        upto_offset,
        upto_pos,
        checkpoint_block,
    } = job;
    let bytes = buffer.as_slice().len() as u64;
    let checkpointed = checkpoint_block.is_some();
    let batches = file.write_at(buffer, pos);
    let written = match checkpoint_block {
        Some(block) => {
            let (batches, header) = both(batches, file.write_at(block, 0)).await;
            header.map_err(|e| LogError::io("write segment checkpoint", file.path(), e))?;
            batches
        }
        None => batches.await,
    };
    let buffer = written.map_err(|e| LogError::io("write segment", file.path(), e))?;
    {
        let mut state = inner.state.borrow_mut();
        assert_eq!(
            upto_pos,
            pos + filled as u64,
            "a flushed buffer ends at the written end"
        );
        state.cache.insert(segment, pos, filled, capacity, buffer);
        assert!(
            state.durable_offset <= upto_offset && upto_offset <= state.next_offset,
            "durable <= written <= next"
        );
        state.written_offset = upto_offset;
        state.written_pos = upto_pos;
        state.last_write_at = Instant::now();
        state.stats.writes += 1;
        state.stats.bytes_written += bytes;
        state.writes_since_reservation.0 += 1;
        state.writes_since_reservation.1 += bytes;
        if checkpointed {
            state.stats.checkpoints += 1;
        }
    }
    inner.written.notify();
    Ok(())
}

/// Writes block 0 with a new checkpoint on its own and syncs it.
async fn write_checkpoint<S: Storage>(
    inner: &Inner<S>,
    file: &S::File,
    block: S::Buffer,
) -> Result<(), LogError> {
    file.write_at(block, 0)
        .await
        .map_err(|e| LogError::io("write segment checkpoint", file.path(), e))?;
    file.sync()
        .await
        .map_err(|e| LogError::io("fdatasync segment", file.path(), e))?;
    let mut state = inner.state.borrow_mut();
    state.stats.checkpoints += 1;
    state.stats.syncs += 1;
    Ok(())
}

/// fdatasync of everything written to `file` so far; then batches below `upto` (ending at
/// `upto_pos` in the active segment) are durable.
async fn sync_up_to<S: Storage>(
    inner: Rc<Inner<S>>,
    file: Rc<S::File>,
    upto: Offset,
    upto_pos: u64,
) -> Result<(), LogError> {
    if let Err(e) = file.sync().await {
        let error = LogError::io("fdatasync segment", file.path(), e);
        poison(&inner, error.to_string());
        return Err(error);
    }
    {
        let mut state = inner.state.borrow_mut();
        if upto > state.durable_offset {
            state.durable_offset = upto;
            state.durable_pos = upto_pos;
        }
        assert!(
            state.durable_offset <= state.written_offset,
            "durable <= written"
        );
        state.stats.syncs += 1;
    }
    inner.durable.notify();
    // The flusher may now owe a checkpoint.
    inner.appended.notify();
    Ok(())
}

/// Whether a write of zeros is in flight over part of `[pos, end)` of the active segment.
fn zeroing_overlaps<S: Storage>(inner: &Inner<S>, pos: u64, end: u64) -> bool {
    inner
        .state
        .borrow()
        .zeroing
        .is_some_and(|(from, to)| pos < to && from < end)
}

/// The active segment's file, when the flusher should start a reservation now: appends wait
/// for one (`reserve_wanted`), or the segment holds batches and the buffered ones came within
/// half a step of the reserved end, so that the next step is reserved and written with zeros
/// before appends reach it. Never while one runs, a roll is pending or the log stops, and not
/// ahead of need while the disk was found full less than `NO_SPACE_RETRY_MS` ago.
fn reservation_due<S: Storage>(inner: &Inner<S>) -> Option<Rc<S::File>> {
    if !inner.config.preallocate {
        return None;
    }
    let state = inner.state.borrow();
    if state.reserving
        || state.roll_requested
        || state.truncation.is_some()
        || state.closed
        || state.poisoned.is_some()
    {
        return None;
    }
    let active = state.segments.values().next_back()?;
    let reserved = active.reserved_bytes;
    if state.reserve_wanted > reserved {
        return Some(Rc::clone(&active.file));
    }
    if active.is_empty() {
        return None;
    }
    if let Some((_, at)) = &state.no_space {
        if at.elapsed() < Duration::from_millis(NO_SPACE_RETRY_MS) {
            return None;
        }
    }
    let buffered_end = state.tail.file_pos + state.tail.fill as u64;
    let (reserve_next, zero_more) = ahead_of_need(&state, reserved, buffered_end, &inner.config);
    (reserve_next || zero_more).then(|| Rc::clone(&active.file))
}

/// Whether the buffered batches (ending at `buffered_end`) came within half a step of the
/// reserved end, with room to reserve more (the next step is due), and whether they came
/// within half a step of the zeros with reserved space left to write them over (after opening
/// a log, the space it had reserved may be unwritten).
fn ahead_of_need<S: Storage>(
    state: &State<S>,
    reserved: u64,
    buffered_end: u64,
    config: &LogConfig,
) -> (bool, bool) {
    let step = reserved.clamp(RESERVE_STEP_BYTES_MIN, config.reserve_step_bytes_max);
    let reserve_next = buffered_end + step / 2 >= reserved
        && next_reservation(reserved, buffered_end, config) > reserved;
    let zero_more = buffered_end + step / 2 >= state.zeroed_end && state.zeroed_end < reserved;
    (reserve_next, zero_more)
}

/// A reservation of the active segment (`file`), run as a task beside the flusher's writes:
///
/// 1. reserves the next step with fallocate (at least up to what waiting appends need), and
///    wakes the appends. A full disk is not a fault of the log: it is noted, and the waiting
///    appends are refused with `NoSpace` (nothing of theirs was buffered); any other failure
///    poisons the log.
/// 2. writes zeros over the new space, from the end of what is buffered or wanted (whose
///    batches will be written there anyway) to the end of the reservation, so that the writes
///    of batches that follow land on written blocks and their fdatasync is the device's flush
///    alone, with no extent conversion to commit. The range is published in `zeroing` while
///    the write is in flight; the flusher keeps its writes of batches out of it.
async fn reserve<S: Storage>(inner: Rc<Inner<S>>, file: Rc<S::File>) {
    let (target, wanted, grows) = {
        let state = inner.state.borrow();
        let active = state
            .segments
            .values()
            .next_back()
            .expect("a log always has an active segment");
        assert!(
            Rc::ptr_eq(&active.file, &file),
            "reserves the active segment"
        );
        let wanted = state.reserve_wanted;
        let reserved = active.reserved_bytes;
        let buffered_end = state.tail.file_pos + state.tail.fill as u64;
        let (reserve_next, _) = ahead_of_need(&state, reserved, buffered_end, &inner.config);
        let target = if wanted > reserved || reserve_next {
            next_reservation(reserved, wanted, &inner.config)
        } else {
            // Only zeros are owed, over space already reserved.
            reserved
        };
        (target, wanted, target > reserved)
    };
    // Zeros pay while writes are small; for large ones the extent conversion costs little
    // beside their bytes, and zeros would double what the disk writes.
    let zero_ahead = {
        let mut state = inner.state.borrow_mut();
        let (writes, bytes) = std::mem::take(&mut state.writes_since_reservation);
        if let Some(average_bytes) = bytes.checked_div(writes) {
            state.zero_ahead = average_bytes < ZERO_AHEAD_WRITE_BYTES_MAX;
        }
        state.zero_ahead
    };
    let reserved = if grows {
        file.preallocate(target).await
    } else {
        Ok(())
    };
    let zeroing = {
        let mut state = inner.state.borrow_mut();
        state.reserve_wanted = 0;
        match reserved {
            Ok(()) => {
                if grows {
                    if let Some(active) = state.segments.values_mut().next_back() {
                        active.reserved_bytes = active.reserved_bytes.max(target);
                    }
                    state.stats.reservations += 1;
                    state.no_space = None;
                }
                let buffered_end = align_up(state.tail.file_pos + state.tail.fill as u64);
                let from = state
                    .zeroed_end
                    .max(buffered_end)
                    .max(align_up(wanted))
                    .max(state.write_claimed_end);
                // Below `from`, batches are written or will be: nothing there is owed zeros;
                // nor beyond it when the writes are large.
                let owed_from = if zero_ahead { from } else { target };
                state.zeroed_end = state.zeroed_end.max(owed_from.min(target));
                (zero_ahead && from < target && state.poisoned.is_none()).then(|| {
                    state.zeroing = Some((from, target));
                    (from, target)
                })
            }
            Err(error) if is_no_space(&error) => {
                if state.no_space.is_none() {
                    eprintln!(
                        "runnel-segment: no space to grow {} to {target} bytes: appends to it \
                         are refused until space is freed ({error})",
                        file.path().display()
                    );
                }
                state.no_space = Some((error.to_string(), Instant::now()));
                None
            }
            Err(error) => {
                drop(state);
                let error = LogError::io("reserve segment space", file.path(), error);
                poison(&inner, error.to_string());
                None
            }
        }
    };
    inner.room.notify();
    if let Some((from, to)) = zeroing {
        let written = file.write_zeroes(from, to - from).await;
        let mut state = inner.state.borrow_mut();
        state.zeroing = None;
        // Written, or given up on: not tried again.
        state.zeroed_end = state.zeroed_end.max(to);
        match written {
            Ok(()) => state.stats.bytes_zeroed += to - from,
            // The space stays reserved, unwritten: batches written there cost a conversion.
            Err(error) if is_no_space(&error) => {}
            Err(error) => {
                drop(state);
                let error = LogError::io("write zeros ahead", file.path(), error);
                poison(&inner, error.to_string());
            }
        }
    }
    inner.state.borrow_mut().reserving = false;
    // The flusher may wait for the zeros, or owe the next step.
    inner.appended.notify();
}

/// The next reservation of a segment of `reserved` bytes that must reach `end`: the segment
/// doubles, by at least the smallest step and at most `reserve_step_bytes_max`, never past
/// `segment_bytes_max` unless `end` needs it.
fn next_reservation(reserved: u64, end: u64, config: &LogConfig) -> u64 {
    let step = reserved.clamp(RESERVE_STEP_BYTES_MIN, config.reserve_step_bytes_max);
    let wanted = align_up(reserved + step).min(config.segment_bytes_max);
    let target = wanted.max(align_up(end));
    assert!(target >= end, "a reservation covers the write");
    target
}

/// How long until an idle checkpoint is due, when one is owed.
fn checkpoint_due_in<S: Storage>(inner: &Inner<S>) -> Option<Duration> {
    let state = inner.state.borrow();
    if state.poisoned.is_some() || state.durable_offset <= state.checkpointed_offset {
        return None;
    }
    let idle = Duration::from_millis(inner.config.acked_checkpoint_idle_ms);
    Some(idle.saturating_sub(state.last_write_at.elapsed()))
}

/// Block 0 of the active segment with a new checkpoint recording the durable end, when that
/// moved past the newest checkpoint; the state then counts it as written.
fn take_checkpoint_block<S: Storage>(inner: &Inner<S>) -> Option<(Rc<S::File>, S::Buffer)> {
    let mut guard = inner.state.borrow_mut();
    let state = &mut *guard;
    if state.durable_offset <= state.checkpointed_offset {
        return None;
    }
    let active = state.segments.values().next_back()?;
    assert!(
        active.base <= state.durable_offset && state.durable_pos <= state.written_pos,
        "a checkpoint records durable batches of the active segment"
    );
    let sequence = state
        .checkpoints
        .iter()
        .flatten()
        .map(|c| c.sequence + 1)
        .max()
        .unwrap_or(0);
    let checkpoint = AckedCheckpoint {
        sequence,
        offset: state.durable_offset,
        position: state.durable_pos,
    };
    if let Some(slot) = state.checkpoints.get_mut(checkpoint.slot()) {
        *slot = Some(checkpoint);
    }
    state.checkpointed_offset = checkpoint.offset;
    let mut block = header_block(
        &*active.file,
        active.base,
        active.created_ms,
        active.write_bytes_max,
        active.lost_before,
    );
    for slot in state.checkpoints.iter().flatten() {
        slot.encode_into(block.as_mut_slice());
    }
    Some((Rc::clone(&active.file), block))
}

fn next_work<S: Storage>(inner: &Inner<S>) -> Option<Work<S>> {
    if inner.state.borrow().poisoned.is_some() {
        return Some(Work::Stop);
    }
    let pending = {
        let state = inner.state.borrow();
        state.tail.fill > state.tail.written
    };
    if pending {
        let checkpoint_block = take_checkpoint_block(inner).map(|(_, block)| block);
        let mut guard = inner.state.borrow_mut();
        let state = &mut *guard;
        let active = state.segments.values().next_back()?;
        let file = Rc::clone(&active.file);
        let fill = state.tail.fill;
        let keep_from = align_down(fill as u64) as usize;
        let aligned_end = align_up(fill as u64) as usize;
        assert!(
            state.tail.written <= fill && fill <= inner.config.write_buffer_bytes,
            "written <= fill <= capacity"
        );
        assert!(
            !inner.config.preallocate
                || state.tail.file_pos + aligned_end as u64 <= active.reserved_bytes,
            "writes stay within the reserved space"
        );
        // The next buffer keeps the capacity the traffic grew this one to.
        let mut fresh = file.alloc(state.tail.buffer.as_slice().len());
        let kept = state
            .tail
            .buffer
            .as_slice()
            .get(keep_from..fill)
            .unwrap_or_default();
        if let Some(target) = fresh.as_mut_slice().get_mut(..kept.len()) {
            target.copy_from_slice(kept);
        }
        let mut buffer = std::mem::replace(&mut state.tail.buffer, fresh);
        let capacity = buffer.as_slice().len();
        if let Some(padding) = buffer.as_mut_slice().get_mut(fill..aligned_end) {
            padding.fill(0);
        }
        buffer.truncate(aligned_end);
        let job = FlushJob {
            file,
            segment: active.base,
            buffer,
            filled: fill,
            capacity,
            pos: state.tail.file_pos,
            upto_offset: state.next_offset,
            upto_pos: state.tail.file_pos + fill as u64,
            checkpoint_block,
        };
        state.tail.file_pos += keep_from as u64;
        state.tail.fill -= keep_from;
        state.tail.written = state.tail.fill;
        inner.room.notify();
        return Some(Work::Flush(job));
    }
    let (roll_requested, closed) = {
        let state = inner.state.borrow();
        (state.roll_requested, state.closed)
    };
    if roll_requested {
        return Some(Work::Roll);
    }
    if let Some(cut) = replica::truncation_due(inner) {
        return Some(Work::Truncate(cut));
    }
    if closed {
        return Some(Work::Stop);
    }
    if checkpoint_due_in(inner).is_some_and(|due| due.is_zero()) {
        let (file, block) = take_checkpoint_block(inner)?;
        return Some(Work::Checkpoint(file, block));
    }
    None
}

/// Seals the active segment and starts a new one. Everything buffered was flushed first.
async fn roll<S: Storage>(inner: &Inner<S>) -> Result<(), LogError> {
    let (file, data_end, next) = {
        let state = inner.state.borrow();
        let active = state
            .segments
            .values()
            .next_back()
            .ok_or_else(|| LogError::InvalidConfig("no active segment".into()))?;
        (Rc::clone(&active.file), active.data_end, active.next_offset)
    };
    seal_file(&*file, data_end).await?;
    let sealed = {
        let state = inner.state.borrow();
        let active = state
            .segments
            .values()
            .next_back()
            .ok_or_else(|| LogError::InvalidConfig("no active segment".into()))?;
        SealedSegmentIndex::of(active)
    };
    write_index_file(&inner.storage, &inner.dir, sealed).await?;
    let segment = create_segment(&inner.storage, &inner.dir, next, &inner.config).await?;
    let tail = open_tail(&segment, &inner.config).await?;
    {
        let mut state = inner.state.borrow_mut();
        assert_eq!(
            state.durable_offset, next,
            "a roll starts after everything was made durable"
        );
        assert!(
            !state.reserving && state.zeroing.is_none(),
            "a roll starts after the reservation of the sealed segment finished"
        );
        state.written_pos = segment.data_end;
        state.durable_pos = segment.data_end;
        state.zeroed_end = segment.data_end;
        state.write_claimed_end = segment.data_end;
        state.checkpoints = [None, None];
        state.checkpointed_offset = segment.base;
        state.tail = tail;
        // The cache serves the active segment only: a sealed one is read from the disk, where
        // its CRCs are checked (bit rot in it is reported, not hidden by a copy in memory).
        let active = segment.base;
        state.cache.forget(|base| base != active);
        state.segments.insert(segment.base, segment);
        state.roll_requested = false;
    }
    inner.room.notify();
    Ok(())
}

/// Writes the index file of a segment that was just sealed. Its directory entry is made
/// durable by the directory sync of the segment created next.
async fn write_index_file<S: Storage>(
    storage: &S,
    dir: &Path,
    sealed: SealedSegmentIndex,
) -> Result<(), LogError> {
    let path = dir.join(index_file_name(sealed.base_offset));
    write_new_file(storage, &path, &index_file::encode(&sealed)).await
}

/// Writes `bytes` (a whole number of blocks) as the new file `path`, replacing a stale one left
/// by a crash, and syncs it. Its directory entry is not synced here.
async fn write_new_file<S: Storage>(
    storage: &S,
    path: &Path,
    bytes: &[u8],
) -> Result<(), LogError> {
    if storage.open(path).await.is_ok() {
        storage
            .remove(path)
            .await
            .map_err(|e| LogError::io("remove stale file", path, e))?;
    }
    let file = storage
        .create(path)
        .await
        .map_err(|e| LogError::io("create file", path, e))?;
    let mut buffer = file.alloc(bytes.len());
    buffer.as_mut_slice().copy_from_slice(bytes);
    file.write_at(buffer, 0)
        .await
        .map_err(|e| LogError::io("write file", path, e))?;
    file.sync()
        .await
        .map_err(|e| LogError::io("fdatasync file", path, e))
}

/// Cuts a full segment's file after its last batch and syncs it.
async fn seal_file<F: StorageFile>(file: &F, data_end: u64) -> Result<(), LogError> {
    let path = file.path().clone();
    file.truncate(align_up(data_end))
        .await
        .map_err(|e| LogError::io("truncate sealed segment", &path, e))?;
    file.sync()
        .await
        .map_err(|e| LogError::io("fdatasync sealed segment", &path, e))
}

async fn seal_segment<F: StorageFile>(segment: &Segment<F>) -> Result<(), LogError> {
    seal_file(&*segment.file, segment.data_end).await
}

/// Block 0 of a segment in the current layout, with empty checkpoint slots.
fn header_block<F: StorageFile>(
    file: &F,
    base: Offset,
    created_ms: i64,
    write_bytes_max: u32,
    lost_before: u64,
) -> F::Buffer {
    let mut block = file.alloc(BLOCK_BYTES);
    block.as_mut_slice().fill(0);
    SegmentHeader {
        version: SEGMENT_FORMAT_VERSION,
        base_offset: base,
        created_ms,
        write_bytes_max,
        lost_before,
    }
    .encode_into(block.as_mut_slice());
    block
}

/// Creates and syncs a new segment file (and its directory entry). It holds block 0 only:
/// disk for batches is reserved in steps as they arrive ([`reserve`]).
async fn create_segment<S: Storage>(
    storage: &S,
    dir: &Path,
    base: Offset,
    config: &LogConfig,
) -> Result<Segment<S::File>, LogError> {
    create_segment_after(storage, dir, base, 0, config).await
}

/// [`create_segment`] of a segment preceded by a lost range of `lost_before` offsets.
async fn create_segment_after<S: Storage>(
    storage: &S,
    dir: &Path,
    base: Offset,
    lost_before: u64,
    config: &LogConfig,
) -> Result<Segment<S::File>, LogError> {
    let path = dir.join(segment_file_name(base));
    let file = storage
        .create(&path)
        .await
        .map_err(|e| LogError::io("create segment", &path, e))?;
    let created_ms = now_ms();
    let block = header_block(
        &file,
        base,
        created_ms,
        config.write_buffer_bytes as u32,
        lost_before,
    );
    file.write_at(block, 0)
        .await
        .map_err(|e| LogError::io("write segment header", &path, e))?;
    file.sync()
        .await
        .map_err(|e| LogError::io("fdatasync segment", &path, e))?;
    storage
        .sync_dir(dir)
        .await
        .map_err(|e| LogError::io("sync directory", dir, e))?;
    Ok(Segment {
        base,
        file: Rc::new(file),
        path,
        data_end: SEGMENT_DATA_START,
        next_offset: base,
        max_timestamp_ms: i64::MIN,
        created_ms,
        write_bytes_max: config.write_buffer_bytes as u32,
        version: SEGMENT_FORMAT_VERSION,
        reserved_bytes: SEGMENT_DATA_START,
        index: SparseIndex::default(),
        lost_before,
    })
}

/// Whether appends cannot continue in `segment` as it is: its torn-write window
/// (`write_bytes_max`) is not this writer's, or its layout is older.
fn needs_new_layout<F>(segment: &Segment<F>, config: &LogConfig) -> bool {
    segment.write_bytes_max as usize != config.write_buffer_bytes
        || segment.version != SEGMENT_FORMAT_VERSION
}

/// Makes the last segment fit for appends by this writer when [`needs_new_layout`] says so:
/// an empty one gets a new header (no checkpoints); one with batches is sealed (with its index
/// file) and appends continue in the returned new segment at its next offset.
async fn adopt_layout<S: Storage>(
    storage: &S,
    dir: &Path,
    segment: &mut Segment<S::File>,
    config: &LogConfig,
) -> Result<Option<Segment<S::File>>, LogError> {
    if segment.is_empty() {
        rewrite_header(segment, config).await?;
        return Ok(None);
    }
    let next = segment.next_offset;
    seal_segment(segment).await?;
    write_index_file(storage, dir, SealedSegmentIndex::of(segment)).await?;
    Ok(Some(create_segment(storage, dir, next, config).await?))
}

async fn rewrite_header<F: StorageFile>(
    segment: &mut Segment<F>,
    config: &LogConfig,
) -> Result<(), LogError> {
    let block = header_block(
        &*segment.file,
        segment.base,
        segment.created_ms,
        config.write_buffer_bytes as u32,
        segment.lost_before,
    );
    let path = segment.path.clone();
    segment
        .file
        .write_at(block, 0)
        .await
        .map_err(|e| LogError::io("write segment header", &path, e))?;
    segment
        .file
        .sync()
        .await
        .map_err(|e| LogError::io("fdatasync segment", &path, e))?;
    segment.write_bytes_max = config.write_buffer_bytes as u32;
    segment.version = SEGMENT_FORMAT_VERSION;
    Ok(())
}

/// Zeroes what a torn write left after the last batch of the last segment, so that no stale
/// bytes can ever be mistaken for data by a later recovery: cuts the file after the block
/// holding the last batch's end, rewrites that block with zeros after it, and syncs.
async fn clean_torn_tail<F: StorageFile>(segment: &mut Segment<F>) -> Result<(), LogError> {
    crate::truncate::cut_after(&*segment.file, &segment.path, segment.data_end).await?;
    segment.reserved_bytes = align_up(segment.data_end);
    Ok(())
}

/// Builds the tail buffer for appending to `segment` after its last batch.
async fn open_tail<F: StorageFile>(
    segment: &Segment<F>,
    config: &LogConfig,
) -> Result<Tail<F::Buffer>, LogError> {
    open_tail_at(&*segment.file, segment.data_end, config).await
}

/// Builds the tail buffer for appending to `file` after its batches, which end at `data_end`.
async fn open_tail_at<F: StorageFile>(
    file: &F,
    data_end: u64,
    config: &LogConfig,
) -> Result<Tail<F::Buffer>, LogError> {
    let keep_from = align_down(data_end);
    let partial = (data_end - keep_from) as usize;
    let capacity = align_up(partial as u64 + TAIL_BYTES_MIN) as usize;
    let mut buffer = file.alloc(capacity.min(config.write_buffer_bytes));
    if partial > 0 {
        let bytes = file
            .read_at(keep_from, partial)
            .await
            .map_err(|e| LogError::io("read segment tail", file.path(), e))?;
        if let Some(target) = buffer.as_mut_slice().get_mut(..partial) {
            target.copy_from_slice(bytes.get(..partial).unwrap_or_default());
        }
    }
    Ok(Tail {
        buffer,
        file_pos: keep_from,
        fill: partial,
        written: partial,
    })
}

/// Replaces the offset reservation file: offsets below `end` may be handed out.
async fn write_reserved_file<S: Storage>(
    storage: &S,
    dir: &Path,
    end: Offset,
) -> Result<(), LogError> {
    let mut block = vec![0u8; BLOCK_BYTES];
    ReservedFile { end }.encode_into(&mut block);
    replace_file(storage, dir, RESERVED_FILE_NAME, &block).await
}

/// When the reservation file says offsets up to `reserved` may have been handed out and the
/// recovered log ends before it, a crash lost them (they were acknowledged before they were
/// durable): the active segment is sealed and a new one starts at `reserved`, its header
/// naming the lost range, so that those offsets are never handed out again and readers are
/// told what they held is gone. Returns the number of lost offsets. Each step is durable
/// before the next; a crash between them leaves a log this function continues from.
async fn record_lost_range<S: Storage>(
    storage: &S,
    dir: &Path,
    segments: &mut BTreeMap<Offset, Segment<S::File>>,
    reserved: Option<Offset>,
    config: &LogConfig,
) -> Result<Option<u64>, LogError> {
    let Some(active) = segments.values().next_back() else {
        return Ok(None);
    };
    let Some(reserved) = reserved.filter(|&r| r > active.next_offset) else {
        return Ok(None);
    };
    let lost = reserved.0 - active.next_offset.0;
    seal_segment(active).await?;
    write_index_file(storage, dir, SealedSegmentIndex::of(active)).await?;
    let segment = create_segment_after(storage, dir, reserved, lost, config).await?;
    segments.insert(segment.base, segment);
    Ok(Some(lost))
}

async fn write_start_file<S: Storage>(
    storage: &S,
    dir: &Path,
    start: Offset,
) -> Result<(), LogError> {
    let mut block = vec![0u8; BLOCK_BYTES];
    encode_start(start, &mut block);
    replace_file(storage, dir, START_FILE_NAME, &block).await
}

/// Replaces the file `name` of `dir` with `bytes` (whole blocks) atomically: writes and syncs
/// `<name>.tmp`, renames it over `name`, syncs the directory.
pub(crate) async fn replace_file<S: Storage>(
    storage: &S,
    dir: &Path,
    name: &str,
    bytes: &[u8],
) -> Result<(), LogError> {
    let temporary = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    write_new_file(storage, &temporary, bytes).await?;
    storage
        .rename(&temporary, &path)
        .await
        .map_err(|e| LogError::io("rename file", &path, e))?;
    sync_directory(storage, dir).await
}

/// Removes the file `path` of `dir` and makes the removal durable.
pub(crate) async fn remove_durably<S: Storage>(
    storage: &S,
    dir: &Path,
    path: &Path,
    op: &'static str,
) -> Result<(), LogError> {
    storage
        .remove(path)
        .await
        .map_err(|e| LogError::io(op, path, e))?;
    sync_directory(storage, dir).await
}

/// fsync of the directory: its entries (creations, removals, renames) are durable.
pub(crate) async fn sync_directory<S: Storage>(storage: &S, dir: &Path) -> Result<(), LogError> {
    storage
        .sync_dir(dir)
        .await
        .map_err(|e| LogError::io("sync directory", dir, e))
}
