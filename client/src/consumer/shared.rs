//! What a consumer's handles ([`Consumer`](super::Consumer), [`Acker`](super::Acker)) share
//! with its worker: the shards held now, each with its queue of acks, the answers gathered
//! for the next flush, the counters, and how the consumer ended.
//!
//! One mutex guards the queues and the assignment together, so an ack is queued only for a
//! shard the consumer holds, and a shard's queued acks are refused (`NotAssignee`) the moment
//! it is given up. It is held for a few map operations at a time, never across an await.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use runnel_core::ShardId;
use runnel_net::protocol::AckRefusal;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::acks::{AckRanges, AckReport, AckSummary, RefusedAck, ACK_RANGES_QUEUED_MAX};
use super::ConsumerStats;
use crate::error::ClientError;

/// The shared part of a consumer.
pub(crate) struct Shared {
    /// The consumer's name in its group.
    pub name: String,
    /// The subscription joined.
    pub subscription: String,
    /// Acks of a shard are sent once they cover this many records.
    pub ack_batch_records: u64,
    member: AtomicU64,
    state: Mutex<State>,
    /// Wakes the worker: acks were queued (the first since the last send, or a full batch).
    pub wake: Notify,
    pub counters: Counters,
}

/// Guarded by [`Shared`]'s mutex.
#[derive(Default)]
pub(crate) struct State {
    /// The acks queued for each shard held now (the shards of the last `Assignment`; kept
    /// while the consumer rejoins). The keys are the assignment.
    pub queues: BTreeMap<ShardId, AckRanges>,
    /// When the oldest ack queued since the last send was queued.
    pub oldest_ack: Option<Instant>,
    /// Answers for the next flush.
    pub report: AckReport,
    /// The consumer ended (left, dropped, or failed): acks are refused with `Closed`.
    pub ended: bool,
    /// The error that ended it, if one did.
    pub fatal: Option<ClientError>,
}

/// The numbers behind [`ConsumerStats`].
#[derive(Default)]
pub(crate) struct Counters {
    pub deliveries: AtomicU64,
    pub records: AtomicU64,
    pub redelivered_records: AtomicU64,
    pub acks_sent: AtomicU64,
    pub records_acked: AtomicU64,
    pub records_refused: AtomicU64,
    pub rejoins: AtomicU64,
}

impl Counters {
    /// Adds `value` to `counter` (relaxed: they are statistics, read in no particular order).
    pub fn add(counter: &AtomicU64, value: u64) {
        counter.fetch_add(value, Ordering::Relaxed);
    }
}

impl Shared {
    pub fn new(name: String, subscription: String, ack_batch_records: u64, member: u64) -> Shared {
        Shared {
            name,
            subscription,
            ack_batch_records,
            member: AtomicU64::new(member),
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            counters: Counters::default(),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        // Plain maps and counters: a panic elsewhere cannot leave them half-edited.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The member id now.
    pub fn member(&self) -> u64 {
        self.member.load(Ordering::Relaxed)
    }

    pub fn set_member(&self, member: u64) {
        self.member.store(member, Ordering::Relaxed);
    }

    /// The shards held now, ascending.
    pub fn assignment(&self) -> Vec<ShardId> {
        self.lock().queues.keys().copied().collect()
    }

    /// Queues acks of `ranges` of `shard`. Refused at once for a shard not held now
    /// ([`ClientError::AckRefused`], `NotAssignee`: the records go to the shard's new member),
    /// when the shard's queue is full, or once the consumer ended.
    pub fn ack(&self, shard: ShardId, ranges: &[Range<u64>]) -> Result<(), ClientError> {
        let mut state = self.lock();
        if state.ended {
            return Err(ClientError::Closed);
        }
        let Some(queue) = state.queues.get_mut(&shard) else {
            drop(state);
            return Err(self.refuse_not_held(shard, ranges));
        };
        if queue.range_count() >= ACK_RANGES_QUEUED_MAX {
            return Err(ClientError::AckQueueFull {
                shard,
                ranges_max: ACK_RANGES_QUEUED_MAX,
            });
        }
        let before = queue.offsets();
        for range in ranges {
            queue.insert(range.clone());
        }
        let after = queue.offsets();
        if state.oldest_ack.is_none() && after > 0 {
            state.oldest_ack = Some(Instant::now());
        }
        drop(state);
        // Wake the worker only when something changes for it: a shard's first queued ack
        // (the age clock now matters for it), or a full batch (due now).
        let batch = self.ack_batch_records;
        if (before == 0 && after > 0) || (before < batch && after >= batch) {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// The refusal of acks for a shard this consumer does not hold.
    fn refuse_not_held(&self, shard: ShardId, ranges: &[Range<u64>]) -> ClientError {
        let refused: Vec<RefusedAck> = ranges
            .iter()
            .filter(|range| range.start < range.end)
            .take(super::acks::REFUSALS_LISTED_MAX)
            .map(|range| RefusedAck {
                shard,
                offsets: range.clone(),
                reason: AckRefusal::NotAssignee,
            })
            .collect();
        let records = super::acks::offsets_in(ranges);
        Counters::add(&self.counters.records_refused, records);
        ClientError::AckRefused {
            refused,
            refused_ranges: ranges.len() as u64,
            refused_records: records,
            summary: AckSummary::default(),
        }
    }

    /// Marks the consumer ended (with the error that ended it): acks are refused from now on
    /// and queued ones are dropped (they will be delivered again).
    pub fn end(&self, fatal: Option<ClientError>) {
        let mut state = self.lock();
        state.ended = true;
        state.fatal = fatal;
        state.queues.clear();
        state.oldest_ack = None;
    }

    /// The error that ended the consumer, if one did.
    pub fn fatal(&self) -> Option<ClientError> {
        self.lock().fatal.clone()
    }

    /// The counters now.
    pub fn stats(&self) -> ConsumerStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let counters = &self.counters;
        ConsumerStats {
            deliveries: read(&counters.deliveries),
            records: read(&counters.records),
            redelivered_records: read(&counters.redelivered_records),
            acks_sent: read(&counters.acks_sent),
            records_acked: read(&counters.records_acked),
            records_refused: read(&counters.records_refused),
            rejoins: read(&counters.rejoins),
        }
    }
}

impl State {
    /// Makes `shards` the assignment: new shards get an empty queue; the queued acks of
    /// shards given up are refused (`NotAssignee`), as they can no longer be sent. Returns
    /// the records refused.
    pub fn assign(&mut self, shards: &[ShardId]) -> u64 {
        let mut refused = 0;
        let given_up: Vec<ShardId> = self
            .queues
            .keys()
            .filter(|shard| !shards.contains(shard))
            .copied()
            .collect();
        for shard in given_up {
            if let Some(mut queue) = self.queues.remove(&shard) {
                for range in queue.take_all() {
                    refused += range.end - range.start;
                    self.report.refuse(shard, range, AckRefusal::NotAssignee);
                }
            }
        }
        for shard in shards {
            self.queues.entry(*shard).or_default();
        }
        if self.queues.values().all(AckRanges::is_empty) {
            self.oldest_ack = None;
        }
        refused
    }
}

#[cfg(test)]
// Vectors of one range are what the tests mean.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        Shared::new("w".into(), "s".into(), 4, 1)
    }

    /// Acks queue only for shards held; giving a shard up refuses what it had queued, and an
    /// ended consumer refuses every ack.
    #[test]
    fn acks_queue_only_for_shards_held() {
        let shared = shared();
        let refused = shared.ack(ShardId(1), &[0..1]).expect_err("not held");
        assert!(
            matches!(&refused, ClientError::AckRefused { refused, refused_records: 1, .. }
                if refused[0].reason == AckRefusal::NotAssignee),
            "{refused:?}"
        );
        assert_eq!(shared.lock().assign(&[ShardId(1), ShardId(2)]), 0);
        assert_eq!(shared.assignment(), vec![ShardId(1), ShardId(2)]);
        shared.ack(ShardId(1), &[0..1, 1..3]).expect("queued");
        shared.ack(ShardId(2), &[7..8]).expect("queued");
        assert!(shared.lock().oldest_ack.is_some());
        assert_eq!(shared.lock().queues[&ShardId(1)].offsets(), 3);
        // Shard 1 goes elsewhere: its 3 queued records are refused for the next flush.
        assert_eq!(shared.lock().assign(&[ShardId(2), ShardId(5)]), 3);
        assert_eq!(shared.assignment(), vec![ShardId(2), ShardId(5)]);
        match shared.lock().report.take() {
            Err(ClientError::AckRefused { refused, .. }) => {
                assert_eq!(refused[0].shard, ShardId(1));
                assert_eq!(refused[0].offsets, 0..3);
            }
            other => panic!("expected refusals, got {other:?}"),
        }
        assert_eq!(shared.stats().records_refused, 1);
        shared.end(None);
        assert!(matches!(
            shared.ack(ShardId(2), &[8..9]),
            Err(ClientError::Closed)
        ));
        assert!(shared.assignment().is_empty());
    }

    /// A queue with too many separate ranges refuses further acks.
    #[test]
    fn full_queues_refuse_acks() {
        let shared = shared();
        shared.lock().assign(&[ShardId(1)]);
        let scattered: Vec<Range<u64>> = (0..ACK_RANGES_QUEUED_MAX as u64)
            .map(|index| index * 2..index * 2 + 1)
            .collect();
        shared.ack(ShardId(1), &scattered).expect("queued");
        assert!(matches!(
            shared.ack(ShardId(1), &[1..2]),
            Err(ClientError::AckQueueFull {
                shard: ShardId(1),
                ..
            })
        ));
    }
}
