//! The batching state of a [`BufferedProducer`](super::BufferedProducer), without I/O or a
//! clock: records are encoded as they arrive into one open batch per shard (a reused
//! [`BatchEncoder`] writing into a reused buffer); a batch is sealed when it is full (by
//! record count or estimated bytes), when its linger time has passed, or on flush; sealed
//! batches leave in order, at most `in_flight_max` per shard at a time. A sent batch's
//! buffer comes back with its completion and is written into again.
//!
//! Nothing here allocates per record: a record's bytes are copied into its batch's buffer,
//! and its acknowledgement is its index in the batch's [`PendingAck`].
//!
//! Time is an argument (`now`), so tests drive it exactly. Under load a shard at its in-flight
//! limit keeps filling its open batch (up to the size bounds), which is what batches
//! naturally when the server is the bottleneck.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use runnel_core::batch::AlignedBytes;
use runnel_core::{BatchEncoder, BatchError, BorrowedRecord, Limits, ShardId};
use tokio::time::Instant;

use super::ack::{AppendFuture, PendingAck};
use crate::append::{record_estimate_bytes, BATCH_OVERHEAD_BYTES};

/// When a shard's batch is full and how many may be in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchBounds {
    /// Most records in a batch.
    pub records_max: usize,
    /// Most estimated bytes in a batch.
    pub bytes_max: u64,
    /// How long a batch waits for more records after its first one.
    pub linger: Duration,
    /// Most batches of one shard being appended at once.
    pub in_flight_max: usize,
    /// Most batches sent before they were full (by their linger time) being appended at
    /// once, over all shards.
    pub partial_in_flight_max: usize,
}

/// A batch sealed for one shard: its encoded bytes, the acknowledgement its records' futures
/// wait for, and the buffer bytes it holds.
pub(crate) struct SealedBatch {
    /// Identifies the batch for flush barriers; increasing in sealing order.
    pub id: u64,
    /// The shard the records were routed to.
    pub shard: ShardId,
    /// The encoded batch, or why it could not be encoded.
    pub bytes: Result<AlignedBytes, BatchError>,
    /// Records in the batch.
    pub records: usize,
    /// Sent by its linger time before it was full: counts against `partial_in_flight_max`.
    pub partial: bool,
    /// Completed once the batch is done.
    pub ack: PendingAck,
    /// Buffer bytes to give back once the batch is done.
    pub buffer_bytes: u64,
}

/// A shard's batch being filled (its records are in the shard's encoder).
struct OpenBatch {
    ack: PendingAck,
    records: usize,
    estimate_bytes: u64,
    buffer_bytes: u64,
    deadline: Instant,
}

struct ShardQueue {
    encoder: BatchEncoder,
    open: Option<OpenBatch>,
    sealed: VecDeque<SealedBatch>,
    in_flight: usize,
}

impl ShardQueue {
    fn is_idle(&self) -> bool {
        self.open.is_none() && self.sealed.is_empty() && self.in_flight == 0
    }
}

/// What [`Accumulator::push`] did that the sending task must know.
#[derive(Debug)]
pub(crate) struct Pushed {
    /// The record's future.
    pub future: AppendFuture,
    /// A batch was sealed or a new one opened (a new linger deadline): the worker has
    /// something new to look at.
    pub wake: bool,
}

/// All shards' batches.
pub(crate) struct Accumulator {
    bounds: BatchBounds,
    limits: Limits,
    /// Kept while the stream has the shard (they hold each shard's encoder, reused).
    shards: BTreeMap<ShardId, ShardQueue>,
    next_batch_id: u64,
    /// Sealed batches not yet completed.
    unfinished: BTreeSet<u64>,
    /// Buffers of completed batches, to encode the next ones into.
    buffers: Vec<AlignedBytes>,
    /// Partial batches in flight (see `BatchBounds::partial_in_flight_max`).
    partial_in_flight: usize,
}

impl Accumulator {
    /// An empty accumulator for batches within `limits` (the server's).
    pub fn new(bounds: BatchBounds, limits: Limits) -> Accumulator {
        assert!(
            bounds.records_max >= 1
                && bounds.in_flight_max >= 1
                && bounds.partial_in_flight_max >= 1,
            "{bounds:?}"
        );
        Accumulator {
            bounds,
            limits,
            shards: BTreeMap::new(),
            next_batch_id: 0,
            unfinished: BTreeSet::new(),
            buffers: Vec::new(),
            partial_in_flight: 0,
        }
    }

    /// Encodes `record` into `shard`'s open batch, which holds `buffer_bytes` of the
    /// producer's buffer for it until the batch is done. A record the encoder refuses (too
    /// large) changes nothing.
    pub fn push(
        &mut self,
        shard: ShardId,
        record: BorrowedRecord<'_>,
        buffer_bytes: u64,
        now: Instant,
    ) -> Result<Pushed, BatchError> {
        let estimate = record_estimate_bytes(record);
        let bounds = self.bounds;
        let limits = self.limits;
        let queue = self.shards.entry(shard).or_insert_with(|| ShardQueue {
            encoder: BatchEncoder::new(limits),
            open: None,
            sealed: VecDeque::new(),
            in_flight: 0,
        });
        let mut wake = false;
        let no_room = queue.open.as_ref().is_some_and(|open| {
            open.records >= bounds.records_max || open.estimate_bytes + estimate > bounds.bytes_max
        });
        if no_room {
            Self::seal_open(&mut self.next_batch_id, &mut self.unfinished, shard, queue);
            wake = true;
        }
        if queue.open.is_none() {
            if let Some(buffer) = self.buffers.pop() {
                queue.encoder.recycle(buffer);
            }
        }
        queue.encoder.push(record)?;
        let open = queue.open.get_or_insert_with(|| {
            wake = true;
            OpenBatch {
                ack: PendingAck::default(),
                records: 0,
                estimate_bytes: BATCH_OVERHEAD_BYTES,
                buffer_bytes: 0,
                deadline: now + bounds.linger,
            }
        });
        let future = open.ack.future(open.records);
        open.records += 1;
        open.estimate_bytes += estimate;
        open.buffer_bytes += buffer_bytes;
        assert_eq!(open.records, queue.encoder.len(), "batch {shard}");
        if open.records >= bounds.records_max || open.estimate_bytes >= bounds.bytes_max {
            Self::seal_open(&mut self.next_batch_id, &mut self.unfinished, shard, queue);
            wake = true;
        }
        Ok(Pushed { future, wake })
    }

    fn seal_open(
        next_batch_id: &mut u64,
        unfinished: &mut BTreeSet<u64>,
        shard: ShardId,
        queue: &mut ShardQueue,
    ) {
        if let Some(open) = queue.open.take() {
            let id = *next_batch_id;
            *next_batch_id += 1;
            unfinished.insert(id);
            queue.sealed.push_back(SealedBatch {
                id,
                shard,
                bytes: queue.encoder.finish(),
                records: open.records,
                partial: false,
                ack: open.ack,
                buffer_bytes: open.buffer_bytes,
            });
        }
    }

    /// Seals every open batch (a flush or close). Returns the barrier: once no batch below it
    /// is unfinished ([`Self::flushed`]), everything pushed before this call is done.
    pub fn seal_all(&mut self) -> u64 {
        for (&shard, queue) in &mut self.shards {
            Self::seal_open(&mut self.next_batch_id, &mut self.unfinished, shard, queue);
        }
        self.next_batch_id
    }

    /// Adds to `ready` the batches to send now: per shard, in order, its sealed batches (full,
    /// or sealed by a flush) while it has room in flight; then batches whose linger time has
    /// passed, oldest first, of shards with nothing in flight, while fewer than
    /// `partial_in_flight_max` such partial batches are in flight. They count as in flight
    /// until [`Self::complete`].
    ///
    /// So a batch that is not full never overtakes one of its shard's in flight, and only a
    /// few partial batches of the whole producer travel at once (as Nagle's algorithm holds a
    /// small segment while one is unacknowledged): they keep filling for as long as the server
    /// takes to answer. With many shards per producer each shard receives a small share of
    /// the records, and a linger time alone would send every shard a request of a few records
    /// every `linger`; waiting for answers instead sizes the requests by the server's pace
    /// (fewer, larger requests when it is busy), while full batches still use each shard's
    /// whole window.
    pub fn take_ready(&mut self, now: Instant, ready: &mut Vec<SealedBatch>) {
        for queue in self.shards.values_mut() {
            while queue.in_flight < self.bounds.in_flight_max {
                let Some(batch) = queue.sealed.pop_front() else {
                    break;
                };
                queue.in_flight += 1;
                ready.push(batch);
            }
        }
        while self.partial_in_flight < self.bounds.partial_in_flight_max {
            let oldest = self
                .shards
                .iter()
                .filter(|(_, queue)| queue.in_flight == 0 && queue.sealed.is_empty())
                .filter_map(|(&shard, queue)| {
                    queue.open.as_ref().map(|open| (open.deadline, shard))
                })
                .filter(|&(deadline, _)| deadline <= now)
                .min();
            let Some((_, shard)) = oldest else {
                break;
            };
            let queue = self
                .shards
                .get_mut(&shard)
                .expect("the shard was just found");
            Self::seal_open(&mut self.next_batch_id, &mut self.unfinished, shard, queue);
            let mut batch = queue
                .sealed
                .pop_front()
                .expect("the open batch was just sealed");
            batch.partial = true;
            queue.in_flight += 1;
            self.partial_in_flight += 1;
            ready.push(batch);
        }
    }

    /// When [`Self::take_ready`] may next have something without a new record or completion:
    /// the earliest linger deadline of a shard with nothing in flight, if a partial batch may
    /// go.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.partial_in_flight >= self.bounds.partial_in_flight_max {
            return None;
        }
        self.shards
            .values()
            .filter(|queue| queue.in_flight == 0)
            .filter_map(|queue| queue.open.as_ref().map(|open| open.deadline))
            .min()
    }

    /// Batch `id` of `shard` is done (stored or failed): frees its place in flight, and keeps
    /// its `buffer` for a later batch (at most one per batch that may be in flight or open).
    pub fn complete(
        &mut self,
        shard: ShardId,
        id: u64,
        partial: bool,
        buffer: Option<AlignedBytes>,
    ) {
        let queue = self
            .shards
            .get_mut(&shard)
            .expect("a completed batch's shard has a queue");
        assert!(
            queue.in_flight > 0,
            "shard {shard} completed more than it sent"
        );
        queue.in_flight -= 1;
        if partial {
            assert!(
                self.partial_in_flight > 0,
                "more partial batches completed than sent"
            );
            self.partial_in_flight -= 1;
        }
        assert!(self.unfinished.remove(&id), "batch {id} completed twice");
        let buffers_max = self.shards.len() * (self.bounds.in_flight_max + 1);
        if let Some(buffer) = buffer {
            if self.buffers.len() < buffers_max {
                self.buffers.push(buffer);
            }
        }
    }

    /// Forgets the shards that are idle and not in `current` (sealed or gone after a split
    /// or merge), with their encoders.
    pub fn retain_shards(&mut self, current: impl Fn(ShardId) -> bool) {
        self.shards
            .retain(|&shard, queue| current(shard) || !queue.is_idle());
    }

    /// Whether every batch sealed before `barrier` is done.
    pub fn flushed(&self, barrier: u64) -> bool {
        self.unfinished.range(..barrier).next().is_none()
    }

    /// Whether nothing is buffered or in flight.
    pub fn is_idle(&self) -> bool {
        self.unfinished.is_empty() && self.shards.values().all(ShardQueue::is_idle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_core::{BatchView, Record};

    const LINGER: Duration = Duration::from_millis(10);

    fn bounds(records_max: usize, bytes_max: u64, in_flight_max: usize) -> BatchBounds {
        BatchBounds {
            records_max,
            bytes_max,
            linger: LINGER,
            in_flight_max,
            partial_in_flight_max: 16,
        }
    }

    fn complete(accumulator: &mut Accumulator, batch: &SealedBatch) {
        accumulator.complete(batch.shard, batch.id, batch.partial, None);
    }

    fn accumulator(bounds: BatchBounds) -> Accumulator {
        Accumulator::new(bounds, Limits::DEFAULT)
    }

    fn record(value_len: usize) -> Record {
        Record::at(vec![0; value_len], 1)
    }

    fn push(accumulator: &mut Accumulator, shard: u64, value: &[u8], now: Instant) -> bool {
        let record = BorrowedRecord::new(value).with_timestamp(1);
        accumulator
            .push(ShardId(shard), record, 1, now)
            .expect("fits")
            .wake
    }

    fn sizes(batches: &[SealedBatch]) -> Vec<usize> {
        batches.iter().map(|b| b.records).collect()
    }

    /// The values of a sealed batch's records, decoded from its bytes.
    fn values(batch: &SealedBatch) -> Vec<Vec<u8>> {
        let bytes = batch.bytes.as_ref().expect("encoded");
        let view = BatchView::validate(bytes, &Limits::DEFAULT).expect("valid");
        view.records()
            .expect("archive")
            .map(|record| record.value().to_vec())
            .collect()
    }

    fn take(accumulator: &mut Accumulator, now: Instant) -> Vec<SealedBatch> {
        let mut ready = Vec::new();
        accumulator.take_ready(now, &mut ready);
        ready
    }

    /// A batch leaves as soon as it is full by count, without waiting for its linger time;
    /// the records are encoded in order.
    #[test]
    fn full_batches_leave_at_once() {
        let now = Instant::now();
        let mut accumulator = accumulator(bounds(3, u64::MAX, 10));
        for index in 0..7_u8 {
            push(&mut accumulator, 1, &[index], now);
        }
        let ready = take(&mut accumulator, now);
        assert_eq!(sizes(&ready), vec![3, 3]);
        let encoded: Vec<Vec<u8>> = ready.iter().flat_map(values).collect();
        assert_eq!(
            encoded,
            (0..6).map(|i| vec![i]).collect::<Vec<_>>(),
            "order kept"
        );
        assert_eq!(accumulator.next_deadline(), None, "two batches in flight");
        for batch in ready {
            complete(&mut accumulator, &batch);
        }
        assert_eq!(accumulator.next_deadline(), Some(now + LINGER));
        assert!(take(&mut accumulator, now + LINGER - Duration::from_millis(1)).is_empty());
        let late = take(&mut accumulator, now + LINGER);
        assert_eq!(
            sizes(&late),
            vec![1],
            "the last record leaves after its linger time"
        );
        assert_eq!(values(&late[0]), vec![vec![6]]);
    }

    /// Batches are cut by estimated bytes, never above the bound, and a record larger than
    /// the bound travels alone.
    #[test]
    fn batches_are_cut_by_bytes() {
        let now = Instant::now();
        let small = record(100);
        let per_record = record_estimate_bytes((&small).into());
        let mut accumulator = accumulator(bounds(1_000, BATCH_OVERHEAD_BYTES + 2 * per_record, 10));
        for _ in 0..5 {
            accumulator
                .push(ShardId(1), (&small).into(), per_record, now)
                .expect("fits");
        }
        accumulator
            .push(ShardId(1), (&record(10_000)).into(), 1, now)
            .expect("fits the server's limits");
        accumulator.seal_all();
        let ready = take(&mut accumulator, now);
        assert_eq!(sizes(&ready), vec![2, 2, 1, 1]);
        assert_eq!(ready[0].buffer_bytes, 2 * per_record);
        for batch in &ready {
            let encoded = batch.bytes.as_ref().expect("encoded").len() as u64;
            assert!(encoded <= BATCH_OVERHEAD_BYTES + 10_000 + 64, "{encoded}");
        }
    }

    /// A record the encoder refuses changes nothing: no empty batch, no wake.
    #[test]
    fn refused_records_leave_no_trace() {
        let now = Instant::now();
        let limits = Limits {
            record_bytes_max: 10,
            ..Limits::DEFAULT
        };
        let mut accumulator = Accumulator::new(bounds(10, u64::MAX, 1), limits);
        assert!(accumulator
            .push(ShardId(1), BorrowedRecord::new(&[0; 11]), 1, now)
            .is_err());
        assert!(accumulator.is_idle());
        assert_eq!(accumulator.next_deadline(), None);
        assert!(
            push(&mut accumulator, 1, &[0; 10], now),
            "a new batch wakes the worker"
        );
        assert!(!push(&mut accumulator, 1, &[0; 10], now));
        assert_eq!(sizes(&take(&mut accumulator, now + LINGER)), vec![2]);
    }

    /// Each shard has its own batch and its own in-flight window; completions open it again
    /// and hand their buffers back for the next batches.
    #[test]
    fn in_flight_is_bounded_per_shard() {
        let now = Instant::now();
        let mut accumulator = accumulator(bounds(1, u64::MAX, 2));
        for index in 0..5_u8 {
            push(&mut accumulator, 1, &[index], now);
            push(&mut accumulator, 2, &[10 + index], now);
        }
        let mut ready = take(&mut accumulator, now);
        assert_eq!(ready.len(), 4, "two per shard");
        assert!(take(&mut accumulator, now).is_empty());
        let first = ready.remove(0);
        let buffer = first.bytes.expect("encoded");
        let capacity = buffer.capacity();
        accumulator.complete(first.shard, first.id, first.partial, Some(buffer));
        let more = take(&mut accumulator, now);
        assert_eq!(more.len(), 1);
        assert_eq!(more[0].shard, first.shard);
        assert_eq!(
            values(&more[0]),
            vec![vec![2]],
            "the shard's next record in order"
        );
        assert_eq!(accumulator.buffers.len(), 1);
        push(&mut accumulator, 3, &[0], now);
        assert!(accumulator.buffers.is_empty(), "the new batch took it");
        let batch = take(&mut accumulator, now + LINGER)
            .into_iter()
            .find(|batch| batch.shard == ShardId(3))
            .expect("shard 3's batch");
        assert_eq!(batch.bytes.expect("encoded").capacity(), capacity);
    }

    /// A batch that is not full waits, past its linger time, while one of its shard's batches
    /// is in flight (full batches do not: they use the whole window), and leaves when that
    /// one is done. Other shards are not held back.
    #[test]
    fn partial_batches_wait_for_the_one_in_flight() {
        let now = Instant::now();
        let mut accumulator = accumulator(bounds(3, u64::MAX, 4));
        push(&mut accumulator, 1, &[0], now);
        let first = take(&mut accumulator, now + LINGER);
        assert_eq!(sizes(&first), vec![1]);
        for index in 1..=5_u8 {
            push(&mut accumulator, 1, &[index], now + LINGER);
        }
        push(&mut accumulator, 2, &[9], now + LINGER);
        let later = now + 5 * LINGER;
        let ready = take(&mut accumulator, later);
        assert_eq!(
            ready
                .iter()
                .map(|b| (b.shard.0, b.records))
                .collect::<Vec<_>>(),
            vec![(1, 3), (2, 1)],
            "shard 1's full batch goes; its partial one waits; shard 2 has nothing in flight"
        );
        assert_eq!(accumulator.next_deadline(), None);
        complete(&mut accumulator, &first[0]);
        assert!(
            take(&mut accumulator, later).is_empty(),
            "one still in flight"
        );
        complete(&mut accumulator, &ready[0]);
        let last = take(&mut accumulator, later);
        assert_eq!(values(&last[0]), vec![vec![4], vec![5]]);
    }

    /// At most `partial_in_flight_max` partial batches travel at once over all shards, the
    /// oldest first; the others keep filling until a place frees. Full batches are not held.
    #[test]
    fn partial_batches_in_flight_are_bounded_over_all_shards() {
        let now = Instant::now();
        let mut accumulator = accumulator(BatchBounds {
            partial_in_flight_max: 2,
            ..bounds(3, u64::MAX, 4)
        });
        for shard in [3, 1, 2] {
            push(
                &mut accumulator,
                shard,
                &[shard as u8],
                now + Duration::from_millis(shard),
            );
        }
        let later = now + 2 * LINGER;
        let ready = take(&mut accumulator, later);
        assert_eq!(
            ready.iter().map(|b| b.shard.0).collect::<Vec<_>>(),
            vec![1, 2],
            "the two oldest"
        );
        assert_eq!(accumulator.next_deadline(), None, "no place for shard 3");
        for _ in 0..2 {
            push(&mut accumulator, 3, &[3], later);
        }
        let full = take(&mut accumulator, later);
        assert_eq!(sizes(&full), vec![3], "a full batch goes at once");
        complete(&mut accumulator, &full[0]);
        complete(&mut accumulator, &ready[0]);
        assert_eq!(
            accumulator.next_deadline(),
            None,
            "shard 3's batch is empty"
        );
        push(&mut accumulator, 3, &[4], later);
        let next = take(&mut accumulator, later + LINGER);
        assert_eq!(
            next.iter()
                .map(|b| (b.shard.0, b.records))
                .collect::<Vec<_>>(),
            vec![(3, 1)]
        );
        assert!(next[0].partial && !full[0].partial);
    }

    /// A shard at its in-flight limit keeps filling its open batch and sets no deadline.
    #[test]
    fn a_busy_shard_keeps_filling_its_batch() {
        let now = Instant::now();
        let mut accumulator = accumulator(bounds(100, u64::MAX, 1));
        push(&mut accumulator, 1, &[0], now);
        assert_eq!(sizes(&take(&mut accumulator, now + LINGER)), vec![1]);
        for index in 1..6_u8 {
            push(&mut accumulator, 1, &[index], now + LINGER);
        }
        assert_eq!(
            accumulator.next_deadline(),
            None,
            "no room in flight: nothing to wake for"
        );
        let later = now + 10 * LINGER;
        assert!(take(&mut accumulator, later).is_empty());
        accumulator.complete(ShardId(1), 0, true, None);
        assert_eq!(
            sizes(&take(&mut accumulator, later)),
            vec![5],
            "one batch of five"
        );
    }

    /// A flush barrier is passed only once every batch sealed before it is complete, in
    /// whatever order they complete; records pushed after it do not hold it back.
    #[test]
    fn flush_barriers_wait_for_earlier_batches_only() {
        let now = Instant::now();
        let mut accumulator = accumulator(bounds(10, u64::MAX, 10));
        push(&mut accumulator, 1, &[0], now);
        push(&mut accumulator, 2, &[1], now);
        let barrier = accumulator.seal_all();
        push(&mut accumulator, 1, &[2], now);
        let ready = take(&mut accumulator, now);
        assert_eq!(ready.len(), 2, "the sealed batches; the new record lingers");
        assert!(!accumulator.flushed(barrier));
        complete(&mut accumulator, &ready[1]);
        assert!(!accumulator.flushed(barrier));
        complete(&mut accumulator, &ready[0]);
        assert!(accumulator.flushed(barrier));
        assert!(!accumulator.is_idle(), "the later record is still buffered");
        let last = take(&mut accumulator, now + LINGER);
        complete(&mut accumulator, &last[0]);
        assert!(accumulator.is_idle());
    }
}
