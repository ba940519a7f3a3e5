//! Acks on their way to the server: [`AckRanges`], the offsets of one shard queued for acking
//! (merged into ranges, so acking a delivery in order costs one range), and [`AckReport`],
//! what the server answered since the last [`Consumer::flush_acks`](super::Consumer::flush_acks):
//! records acked, committed offsets, and the refusals, as [`RefusedAck`]s.
//!
//! Bounds: a shard's queue holds at most [`ACK_RANGES_QUEUED_MAX`] separate ranges (acking in
//! order, or whole deliveries, merges them; only acks with many holes use more); one `Ack`
//! frame carries at most [`ACK_FRAME_RANGES_MAX`] ranges, well inside the 64 KiB envelope; a
//! report lists at most [`REFUSALS_LISTED_MAX`] refused ranges and counts the rest.

use std::collections::BTreeMap;
use std::ops::Range;

use runnel_core::{Offset, ShardId};
use runnel_net::protocol::AckRefusal;

/// Most separate ranges queued for one shard. Acks of records as delivered merge into few
/// ranges, and the queue is flushed every `ack_batch_records` records: only a consumer that
/// acks scattered records it was never delivered (or one whose shard stream is down for
/// long) can fill it.
pub(crate) const ACK_RANGES_QUEUED_MAX: usize = 65_536;
/// Most ranges in one `Ack` frame: 16 bytes each, so 32 KiB of the 64 KiB envelope.
pub(crate) const ACK_FRAME_RANGES_MAX: usize = 2_048;
/// Most refused ranges a report (and so an [`ClientError::AckRefused`]) lists; further
/// refusals are counted only. The server lists at most 64 per answer, too.
///
/// [`ClientError::AckRefused`]: crate::ClientError::AckRefused
pub(crate) const REFUSALS_LISTED_MAX: usize = 64;

/// Offsets of one shard, as ascending, disjoint, non-adjacent ranges (end exclusive).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AckRanges {
    /// start → end of each range.
    ranges: BTreeMap<u64, u64>,
    /// Offsets held, the sum of the ranges' lengths.
    offsets: u64,
}

impl AckRanges {
    /// Adds `range` (ignored when empty), merging it with the ranges it overlaps or touches.
    /// Returns how many offsets were new. No allocation when it extends an existing range —
    /// the usual case, acks in delivery order.
    pub fn insert(&mut self, range: Range<u64>) -> u64 {
        use std::ops::Bound::{Excluded, Included};
        if range.start >= range.end {
            return 0;
        }
        let before = self.offsets;
        let mut start = range.start;
        let mut end = range.end;
        // A range starting at or before `start` that reaches it absorbs the new one in place.
        let mut extended = false;
        if let Some((&held_start, held_end)) = self.ranges.range_mut(..=start).next_back() {
            if *held_end >= start {
                if *held_end >= end {
                    return 0;
                }
                self.offsets += end - *held_end;
                *held_end = end;
                start = held_start;
                extended = true;
            }
        }
        if !extended {
            self.offsets += end - start;
        }
        // Ranges starting within `(start, end]` are swallowed; their overlap was counted twice.
        while let Some((&next_start, &next_end)) =
            self.ranges.range((Excluded(start), Included(end))).next()
        {
            self.ranges.remove(&next_start);
            self.offsets -= next_end.min(end) - next_start;
            end = end.max(next_end);
        }
        self.ranges.insert(start, end);
        self.offsets - before
    }

    /// Offsets held.
    pub fn offsets(&self) -> u64 {
        self.offsets
    }

    /// Separate ranges held.
    pub fn range_count(&self) -> usize {
        self.ranges.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Takes out up to `ranges_max` ranges from the lowest, ascending.
    pub fn take_front(&mut self, ranges_max: usize) -> Vec<Range<u64>> {
        let mut taken = Vec::with_capacity(ranges_max.min(self.ranges.len()));
        while taken.len() < ranges_max {
            let Some((start, end)) = self.ranges.pop_first() else {
                break;
            };
            self.offsets -= end - start;
            taken.push(start..end);
        }
        taken
    }

    /// Takes out every range, ascending.
    pub fn take_all(&mut self) -> Vec<Range<u64>> {
        self.take_front(usize::MAX)
    }
}

/// Offsets in `ranges`.
pub(crate) fn offsets_in(ranges: &[Range<u64>]) -> u64 {
    ranges
        .iter()
        .map(|range| range.end.saturating_sub(range.start))
        .sum()
}

/// Acked records that were not acked, and why. They are delivered again: to this consumer
/// (`NotDelivered` after a server restart, for instance) or to the shard's new member
/// (`NotAssignee`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedAck {
    /// The shard.
    pub shard: ShardId,
    /// The offsets refused (end exclusive).
    pub offsets: Range<u64>,
    /// Why: `NotDelivered` (at or past the first offset the server never delivered),
    /// `NotAssignee` (the shard is not this consumer's now: refused by the server, or by the
    /// consumer itself for a shard it no longer holds), `InvalidRange`.
    pub reason: AckRefusal,
}

impl std::fmt::Display for RefusedAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}-{}..{}-{}: {:?}",
            self.shard, self.offsets.start, self.shard, self.offsets.end, self.reason
        )
    }
}

/// What the server answered to the acks sent since the last
/// [`Consumer::flush_acks`](super::Consumer::flush_acks), when it refused none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AckSummary {
    /// Records the server newly acked.
    pub records_acked: u64,
    /// Records whose ack the server answered `AlreadyAcked`: acked before (an ack sent again
    /// after a reconnect, or a record acked both as delivered and as redelivered). Not an
    /// error: the record is acked either way.
    pub records_already_acked: u64,
    /// Each shard's committed offset (every record before it acked) after the last answer
    /// for it, in shard order.
    pub committed_offsets: Vec<(ShardId, Offset)>,
}

/// Answers gathered between two flushes.
#[derive(Debug, Default)]
pub(crate) struct AckReport {
    records_acked: u64,
    records_already_acked: u64,
    committed: BTreeMap<ShardId, Offset>,
    refused: Vec<RefusedAck>,
    refused_ranges: u64,
    refused_records: u64,
}

impl AckReport {
    /// Notes an `AckResult` of `shard`; returns the records refused (`AlreadyAcked` is not a
    /// refusal: see [`AckSummary::records_already_acked`]).
    pub fn answered(
        &mut self,
        shard: ShardId,
        acked: u64,
        refused: &[(Range<u64>, AckRefusal)],
        refused_unlisted: u64,
        committed: Offset,
    ) -> u64 {
        self.records_acked += acked;
        // Ranges the server refused without listing them (it lists a bounded number).
        self.refused_ranges += refused_unlisted;
        let entry = self.committed.entry(shard).or_insert(committed);
        *entry = (*entry).max(committed);
        let mut refused_records = 0;
        for (range, reason) in refused {
            let records = range.end.saturating_sub(range.start);
            if *reason == AckRefusal::AlreadyAcked {
                self.records_already_acked += records;
                continue;
            }
            refused_records += records;
            self.refuse(shard, range.clone(), *reason);
        }
        refused_records
    }

    /// Notes a refusal made locally or by the server.
    pub fn refuse(&mut self, shard: ShardId, offsets: Range<u64>, reason: AckRefusal) {
        self.refused_ranges += 1;
        self.refused_records += offsets.end.saturating_sub(offsets.start);
        if self.refused.len() < REFUSALS_LISTED_MAX {
            self.refused.push(RefusedAck {
                shard,
                offsets,
                reason,
            });
        }
    }

    /// The report so far, emptied: the summary, or the refusals with the summary.
    pub fn take(&mut self) -> Result<AckSummary, crate::ClientError> {
        let report = std::mem::take(self);
        let summary = AckSummary {
            records_acked: report.records_acked,
            records_already_acked: report.records_already_acked,
            committed_offsets: report.committed.into_iter().collect(),
        };
        if report.refused_ranges == 0 {
            return Ok(summary);
        }
        Err(crate::ClientError::AckRefused {
            refused: report.refused,
            refused_ranges: report.refused_ranges,
            refused_records: report.refused_records,
            summary,
        })
    }
}

#[cfg(test)]
// Vectors of one range are what the tests mean.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ranges(set: &AckRanges) -> Vec<Range<u64>> {
        set.ranges.iter().map(|(&start, &end)| start..end).collect()
    }

    /// Acks in order extend one range; gaps make new ranges; filling a gap merges them.
    #[test]
    fn acks_merge_into_ranges() {
        let mut set = AckRanges::default();
        for offset in 10..20 {
            assert_eq!(set.insert(offset..offset + 1), 1);
        }
        assert_eq!(ranges(&set), vec![10..20]);
        assert_eq!(set.insert(25..30), 5);
        assert_eq!(set.insert(0..2), 2);
        assert_eq!(ranges(&set), vec![0..2, 10..20, 25..30]);
        assert_eq!(set.offsets(), 17);
        // Already held: nothing new.
        assert_eq!(set.insert(12..15), 0);
        assert_eq!(set.insert(5..5), 0);
        // Touching ranges merge; one range can swallow several.
        assert_eq!(set.insert(20..25), 5);
        assert_eq!(ranges(&set), vec![0..2, 10..30]);
        assert_eq!(set.insert(1..40), 8 + 10);
        assert_eq!(ranges(&set), vec![0..40]);
        assert_eq!(set.offsets(), 40);
        assert_eq!(set.range_count(), 1);
    }

    /// Taking from the front hands out the lowest ranges and keeps the count right.
    #[test]
    fn ranges_are_taken_from_the_front() {
        let mut set = AckRanges::default();
        for start in [0, 10, 20, 30] {
            set.insert(start..start + 2);
        }
        assert_eq!(set.take_front(3), vec![0..2, 10..12, 20..22]);
        assert_eq!(set.offsets(), 2);
        assert_eq!(set.take_all(), vec![30..32]);
        assert!(set.is_empty());
        assert_eq!(set.offsets(), 0);
        assert!(set.take_all().is_empty());
    }

    /// AlreadyAcked counts as acked; other refusals are listed (up to the bound) and make
    /// the report an error; taking the report empties it.
    #[test]
    fn reports_separate_refusals_from_acks() {
        let mut report = AckReport::default();
        let refused = report.answered(
            ShardId(3),
            5,
            &[
                (7..9, AckRefusal::AlreadyAcked),
                (9..10, AckRefusal::NotDelivered),
            ],
            0,
            Offset(7),
        );
        assert_eq!(refused, 1);
        // Three more refused ranges the server did not list are counted.
        report.answered(ShardId(3), 2, &[], 3, Offset(6));
        match report.take() {
            Err(crate::ClientError::AckRefused {
                refused,
                refused_ranges,
                refused_records,
                summary,
            }) => {
                assert_eq!(
                    refused,
                    vec![RefusedAck {
                        shard: ShardId(3),
                        offsets: 9..10,
                        reason: AckRefusal::NotDelivered
                    }]
                );
                assert_eq!((refused_ranges, refused_records), (4, 1));
                assert_eq!(summary.records_acked, 7);
                assert_eq!(summary.records_already_acked, 2);
                assert_eq!(summary.committed_offsets, vec![(ShardId(3), Offset(7))]);
            }
            other => panic!("expected refusals, got {other:?}"),
        }
        assert_eq!(report.take().expect("empty"), AckSummary::default());
        for index in 0..(REFUSALS_LISTED_MAX as u64 + 10) {
            report.refuse(ShardId(1), index..index + 1, AckRefusal::NotAssignee);
        }
        match report.take() {
            Err(crate::ClientError::AckRefused {
                refused,
                refused_ranges,
                ..
            }) => {
                assert_eq!(refused.len(), REFUSALS_LISTED_MAX);
                assert_eq!(refused_ranges, REFUSALS_LISTED_MAX as u64 + 10);
            }
            other => panic!("expected refusals, got {other:?}"),
        }
    }

    proptest! {
        /// Whatever the order of inserts, the ranges are exactly the set of offsets inserted:
        /// ascending, disjoint, never touching, with the right count.
        #[test]
        fn ranges_hold_exactly_the_offsets_inserted(
            inserts in proptest::collection::vec((0u64..200, 0u64..12), 0..60)
        ) {
            let mut set = AckRanges::default();
            let mut model = std::collections::BTreeSet::new();
            for (start, len) in inserts {
                let new = (start..start + len)
                    .filter(|offset| !model.contains(offset))
                    .count() as u64;
                prop_assert_eq!(set.insert(start..start + len), new);
                model.extend(start..start + len);
            }
            let held = ranges(&set);
            for pair in held.windows(2) {
                prop_assert!(pair[0].end < pair[1].start);
            }
            let offsets: Vec<u64> = held.iter().flat_map(|range| range.clone()).collect();
            prop_assert_eq!(offsets, model.iter().copied().collect::<Vec<_>>());
            prop_assert_eq!(set.offsets(), model.len() as u64);
        }
    }
}
