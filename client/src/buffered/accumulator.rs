//! The batching state of a [`BufferedProducer`](super::BufferedProducer), without I/O or a
//! clock: records go into one open batch per shard; a batch is sealed when it is full (by
//! record count or estimated bytes), when its linger time has passed, or on flush; sealed
//! batches leave in order, at most `in_flight_max` per shard at a time.
//!
//! Time is an argument (`now`), so tests drive it exactly. Under load a shard at its in-flight
//! limit keeps filling its open batch (up to the size bounds), which is what batches
//! naturally when the server is the bottleneck.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use runnel_core::{BatchBuilder, Record, ShardId};
use tokio::time::Instant;

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
}

/// A batch sealed for one shard: its records (in a builder, not yet encoded), the replies
/// waiting for them (`R`), and the buffer bytes it holds.
pub(crate) struct SealedBatch<R> {
    /// Identifies the batch for flush barriers; increasing in sealing order.
    pub id: u64,
    /// The shard the records were routed to.
    pub shard: ShardId,
    /// The records.
    pub builder: BatchBuilder,
    /// One per record, in order.
    pub replies: Vec<R>,
    /// Buffer bytes to give back once the batch is done.
    pub buffer_bytes: u64,
}

/// A shard's batch being filled.
struct OpenBatch<R> {
    builder: BatchBuilder,
    replies: Vec<R>,
    estimate_bytes: u64,
    buffer_bytes: u64,
    deadline: Instant,
}

#[derive(Default)]
struct ShardQueue<R> {
    open: Option<OpenBatch<R>>,
    sealed: VecDeque<SealedBatch<R>>,
    in_flight: usize,
}

impl<R> ShardQueue<R> {
    fn is_empty(&self) -> bool {
        self.open.is_none() && self.sealed.is_empty() && self.in_flight == 0
    }
}

/// All shards' batches.
pub(crate) struct Accumulator<R> {
    bounds: BatchBounds,
    shards: BTreeMap<ShardId, ShardQueue<R>>,
    next_batch_id: u64,
    /// Sealed batches not yet completed.
    unfinished: BTreeSet<u64>,
}

impl<R> Accumulator<R> {
    /// An empty accumulator.
    pub fn new(bounds: BatchBounds) -> Accumulator<R> {
        assert!(
            bounds.records_max >= 1 && bounds.in_flight_max >= 1,
            "{bounds:?}"
        );
        Accumulator {
            bounds,
            shards: BTreeMap::new(),
            next_batch_id: 0,
            unfinished: BTreeSet::new(),
        }
    }

    /// Adds `record` for `shard`, holding `buffer_bytes` of the producer's buffer until its
    /// batch is done.
    pub fn push(
        &mut self,
        shard: ShardId,
        record: Record,
        reply: R,
        buffer_bytes: u64,
        now: Instant,
    ) {
        let estimate = record_estimate_bytes(&record);
        let bounds = self.bounds;
        let queue = self.shards.entry(shard).or_insert_with(|| ShardQueue {
            open: None,
            sealed: VecDeque::new(),
            in_flight: 0,
        });
        let no_room = queue.open.as_ref().is_some_and(|open| {
            open.replies.len() >= bounds.records_max
                || open.estimate_bytes + estimate > bounds.bytes_max
        });
        if no_room {
            Self::seal_open(&mut self.next_batch_id, &mut self.unfinished, shard, queue);
        }
        let open = queue.open.get_or_insert_with(|| OpenBatch {
            builder: BatchBuilder::new(),
            replies: Vec::new(),
            estimate_bytes: BATCH_OVERHEAD_BYTES,
            buffer_bytes: 0,
            deadline: now + bounds.linger,
        });
        open.builder.push(record);
        open.replies.push(reply);
        open.estimate_bytes += estimate;
        open.buffer_bytes += buffer_bytes;
        if open.replies.len() >= bounds.records_max || open.estimate_bytes >= bounds.bytes_max {
            Self::seal_open(&mut self.next_batch_id, &mut self.unfinished, shard, queue);
        }
    }

    fn seal_open(
        next_batch_id: &mut u64,
        unfinished: &mut BTreeSet<u64>,
        shard: ShardId,
        queue: &mut ShardQueue<R>,
    ) {
        if let Some(open) = queue.open.take() {
            let id = *next_batch_id;
            *next_batch_id += 1;
            unfinished.insert(id);
            queue.sealed.push_back(SealedBatch {
                id,
                shard,
                builder: open.builder,
                replies: open.replies,
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

    /// The batches to send now: per shard, in order, while it has room in flight — sealed
    /// batches first, then an open batch whose linger time has passed. They count as in
    /// flight until [`Self::complete`].
    pub fn take_ready(&mut self, now: Instant) -> Vec<SealedBatch<R>> {
        let mut ready = Vec::new();
        for (&shard, queue) in &mut self.shards {
            while queue.in_flight < self.bounds.in_flight_max {
                if queue.sealed.is_empty()
                    && queue.open.as_ref().is_some_and(|open| open.deadline <= now)
                {
                    Self::seal_open(&mut self.next_batch_id, &mut self.unfinished, shard, queue);
                }
                let Some(batch) = queue.sealed.pop_front() else {
                    break;
                };
                queue.in_flight += 1;
                ready.push(batch);
            }
        }
        ready
    }

    /// When [`Self::take_ready`] may next have something without a new record or completion:
    /// the earliest linger deadline of a shard with room in flight.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.shards
            .values()
            .filter(|queue| queue.in_flight < self.bounds.in_flight_max)
            .filter_map(|queue| queue.open.as_ref().map(|open| open.deadline))
            .min()
    }

    /// Batch `id` of `shard` is done (stored or failed): frees its place in flight.
    pub fn complete(&mut self, shard: ShardId, id: u64) {
        let queue = self
            .shards
            .get_mut(&shard)
            .expect("a completed batch's shard has a queue");
        assert!(
            queue.in_flight > 0,
            "shard {shard} completed more than it sent"
        );
        queue.in_flight -= 1;
        assert!(self.unfinished.remove(&id), "batch {id} completed twice");
        if queue.is_empty() {
            self.shards.remove(&shard);
        }
    }

    /// Whether every batch sealed before `barrier` is done.
    pub fn flushed(&self, barrier: u64) -> bool {
        self.unfinished.range(..barrier).next().is_none()
    }

    /// Whether nothing is buffered or in flight.
    pub fn is_idle(&self) -> bool {
        self.shards.is_empty() && self.unfinished.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINGER: Duration = Duration::from_millis(10);

    fn bounds(records_max: usize, bytes_max: u64, in_flight_max: usize) -> BatchBounds {
        BatchBounds {
            records_max,
            bytes_max,
            linger: LINGER,
            in_flight_max,
        }
    }

    fn record(value_len: usize) -> Record {
        Record::at(vec![0; value_len], 0)
    }

    fn sizes<R>(batches: &[SealedBatch<R>]) -> Vec<usize> {
        batches.iter().map(|b| b.replies.len()).collect()
    }

    /// A batch leaves as soon as it is full by count, without waiting for its linger time.
    #[test]
    fn full_batches_leave_at_once() {
        let now = Instant::now();
        let mut accumulator = Accumulator::new(bounds(3, u64::MAX, 10));
        for index in 0..7 {
            accumulator.push(ShardId(1), record(1), index, 1, now);
        }
        let ready = accumulator.take_ready(now);
        assert_eq!(sizes(&ready), vec![3, 3]);
        let replies: Vec<i32> = ready.iter().flat_map(|b| b.replies.clone()).collect();
        assert_eq!(replies, vec![0, 1, 2, 3, 4, 5], "order kept");
        assert_eq!(accumulator.next_deadline(), Some(now + LINGER));
        assert!(accumulator
            .take_ready(now + LINGER - Duration::from_millis(1))
            .is_empty());
        let late = accumulator.take_ready(now + LINGER);
        assert_eq!(
            sizes(&late),
            vec![1],
            "the last record leaves after its linger time"
        );
        assert_eq!(late[0].replies, vec![6]);
    }

    /// Batches are cut by estimated bytes, never above the bound, and a record larger than
    /// the bound travels alone.
    #[test]
    fn batches_are_cut_by_bytes() {
        let now = Instant::now();
        let per_record = record_estimate_bytes(&record(100));
        let mut accumulator =
            Accumulator::new(bounds(1_000, BATCH_OVERHEAD_BYTES + 2 * per_record, 10));
        for index in 0..5 {
            accumulator.push(ShardId(1), record(100), index, per_record, now);
        }
        accumulator.push(ShardId(1), record(10_000), 5, 1, now);
        accumulator.seal_all();
        let ready = accumulator.take_ready(now);
        assert_eq!(sizes(&ready), vec![2, 2, 1, 1]);
        assert_eq!(ready[0].buffer_bytes, 2 * per_record);
    }

    /// Each shard has its own batch and its own in-flight window; completions open it again.
    #[test]
    fn in_flight_is_bounded_per_shard() {
        let now = Instant::now();
        let mut accumulator = Accumulator::new(bounds(1, u64::MAX, 2));
        for index in 0..5 {
            accumulator.push(ShardId(1), record(1), index, 1, now);
            accumulator.push(ShardId(2), record(1), 10 + index, 1, now);
        }
        let ready = accumulator.take_ready(now);
        assert_eq!(ready.len(), 4, "two per shard");
        assert!(accumulator.take_ready(now).is_empty());
        let first = &ready[0];
        accumulator.complete(first.shard, first.id);
        let more = accumulator.take_ready(now);
        assert_eq!(more.len(), 1);
        assert_eq!(more[0].shard, first.shard);
        assert_eq!(more[0].replies, vec![2], "the shard's next record in order");
    }

    /// A shard at its in-flight limit keeps filling its open batch and sets no deadline.
    #[test]
    fn a_busy_shard_keeps_filling_its_batch() {
        let now = Instant::now();
        let mut accumulator = Accumulator::new(bounds(100, u64::MAX, 1));
        accumulator.push(ShardId(1), record(1), 0, 1, now);
        assert_eq!(sizes(&accumulator.take_ready(now + LINGER)), vec![1]);
        for index in 1..6 {
            accumulator.push(ShardId(1), record(1), index, 1, now + LINGER);
        }
        assert_eq!(
            accumulator.next_deadline(),
            None,
            "no room in flight: nothing to wake for"
        );
        let later = now + 10 * LINGER;
        assert!(accumulator.take_ready(later).is_empty());
        accumulator.complete(ShardId(1), 0);
        assert_eq!(
            sizes(&accumulator.take_ready(later)),
            vec![5],
            "one batch of five"
        );
    }

    /// A flush barrier is passed only once every batch sealed before it is complete, in
    /// whatever order they complete; records pushed after it do not hold it back.
    #[test]
    fn flush_barriers_wait_for_earlier_batches_only() {
        let now = Instant::now();
        let mut accumulator = Accumulator::new(bounds(10, u64::MAX, 10));
        accumulator.push(ShardId(1), record(1), 0, 1, now);
        accumulator.push(ShardId(2), record(1), 1, 1, now);
        let barrier = accumulator.seal_all();
        accumulator.push(ShardId(1), record(1), 2, 1, now);
        let ready = accumulator.take_ready(now);
        assert_eq!(ready.len(), 2, "the sealed batches; the new record lingers");
        assert!(!accumulator.flushed(barrier));
        accumulator.complete(ready[1].shard, ready[1].id);
        assert!(!accumulator.flushed(barrier));
        accumulator.complete(ready[0].shard, ready[0].id);
        assert!(accumulator.flushed(barrier));
        assert!(!accumulator.is_idle(), "the later record is still buffered");
        let last = accumulator.take_ready(now + LINGER);
        accumulator.complete(last[0].shard, last[0].id);
        assert!(accumulator.is_idle());
    }
}
