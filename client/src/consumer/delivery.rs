//! [`Delivery`]: records of one shard handed to a consumer, read in place from the batches
//! the server sent (a [`RecordBatch`] cut to the delivery's ranges).

use std::ops::Range;

use runnel_core::batch::AlignedBytes;
use runnel_core::{Offset, Record, RecordId, RecordRef, ShardId};

use crate::error::ClientError;
use crate::reader::RecordBatch;

/// Records of one shard delivered to a [`Consumer`](crate::Consumer): whole batches exactly as
/// stored, of which the records in the delivery's ranges are yielded (read in place, each
/// batch's CRCs and archive checked before its first record).
///
/// Ack the records once processed — one by one with [`Consumer::ack`](crate::Consumer::ack)
/// or all at once with [`Consumer::ack_delivery`](crate::Consumer::ack_delivery); records
/// not acked within the subscription's ack timeout are delivered again.
pub struct Delivery {
    batch: RecordBatch,
    redelivery: bool,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("shard", &self.batch.shard())
            .field("ranges", &self.batch.wanted())
            .field("redelivery", &self.redelivery)
            .finish()
    }
}

impl Delivery {
    /// A `Delivery` frame's payload, checked: whole batches in offset order, holding every
    /// offset of `ranges`.
    pub(crate) fn new(
        shard: ShardId,
        bytes: AlignedBytes,
        batch_count: u32,
        ranges: Vec<Range<u64>>,
        redelivery: bool,
    ) -> Result<Delivery, ClientError> {
        Ok(Delivery {
            batch: RecordBatch::delivered(shard, bytes, batch_count, ranges)?,
            redelivery,
        })
    }

    /// The shard the records come from.
    pub fn shard(&self) -> ShardId {
        self.batch.shard()
    }

    /// Whether these records were delivered before and not acked in time (or their consumer
    /// lost the shard): they may have been processed already.
    pub fn is_redelivery(&self) -> bool {
        self.redelivery
    }

    /// Records delivered.
    pub fn len(&self) -> usize {
        self.batch.len()
    }

    /// Whether no record was delivered (never, from a well-behaved server).
    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    /// The offsets delivered: ascending, disjoint ranges (end exclusive).
    pub fn ranges(&self) -> &[Range<u64>] {
        self.batch.wanted()
    }

    /// The ids of the records delivered, in offset order (from the ranges: no batch is read).
    pub fn ids(&self) -> impl Iterator<Item = RecordId> + '_ {
        let shard = self.shard();
        self.ranges().iter().flat_map(move |range| {
            range.clone().map(move |offset| RecordId {
                shard,
                offset: Offset(offset),
            })
        })
    }

    /// The records delivered, read in place (no copy), with their ids, in offset order. A
    /// batch failing its checks is yielded as one error and its records are skipped.
    pub fn records(
        &self,
    ) -> impl Iterator<Item = Result<(RecordId, RecordRef<'_>), ClientError>> + '_ {
        self.batch.records()
    }

    /// The records as owned values with their ids (allocates each record).
    pub fn to_records(&self) -> Result<Vec<(RecordId, Record)>, ClientError> {
        self.batch.to_records()
    }

    /// The raw batch bytes (format: `docs/format/batch.md`): whole batches, so possibly with
    /// records outside the delivery's ranges.
    pub fn as_bytes(&self) -> &[u8] {
        self.batch.as_bytes()
    }
}

#[cfg(test)]
// Vectors of one range are what the tests mean.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use crate::reader::tests::{chunk_of, stored_batch};

    fn ids(delivery: &Delivery) -> Vec<String> {
        delivery
            .to_records()
            .expect("valid")
            .iter()
            .map(|(id, _)| id.to_string())
            .collect()
    }

    /// A delivery of several ranges over several batches yields exactly the records in its
    /// ranges, in order, and its ids match its records.
    #[test]
    fn deliveries_yield_the_records_of_their_ranges() {
        let bytes = chunk_of(&[
            stored_batch(10, 4),
            stored_batch(14, 4),
            stored_batch(18, 2),
        ]);
        let delivery =
            Delivery::new(ShardId(3), bytes, 3, vec![11..12, 13..16, 19..20], true).expect("valid");
        assert_eq!(delivery.len(), 5);
        assert!(delivery.is_redelivery());
        assert_eq!(delivery.shard(), ShardId(3));
        assert_eq!(ids(&delivery), vec!["3-11", "3-13", "3-14", "3-15", "3-19"]);
        let from_ranges: Vec<String> = delivery.ids().map(|id| id.to_string()).collect();
        assert_eq!(from_ranges, ids(&delivery));
        let values: Vec<Vec<u8>> = delivery
            .records()
            .map(|item| item.expect("valid").1.value().to_vec())
            .collect();
        assert_eq!(values[1], b"r13".to_vec());
        // A range spanning two batches, and one batch holding two ranges.
        let bytes = chunk_of(&[stored_batch(0, 3), stored_batch(3, 3)]);
        let delivery = Delivery::new(ShardId(1), bytes, 2, vec![0..1, 2..5], false).expect("valid");
        assert_eq!(ids(&delivery), vec!["1-0", "1-2", "1-3", "1-4"]);
        assert!(!delivery.is_redelivery());
    }

    /// A delivery naming offsets its batches do not hold, malformed ranges, batches out of
    /// order or a wrong batch count are refused: every record delivered must be readable.
    #[test]
    fn deliveries_that_do_not_hold_their_ranges_are_refused() {
        let refused = |batches: &[Vec<u8>], count: u32, ranges: Vec<Range<u64>>| match Delivery::new(
            ShardId(1),
            chunk_of(batches),
            count,
            ranges,
            false,
        ) {
            Err(ClientError::UnexpectedResponse { request, response }) => {
                assert_eq!(request, "Consume");
                response
            }
            other => panic!("expected a refusal, got {other:?}"),
        };
        let reason = refused(&[stored_batch(0, 3)], 1, vec![1..5]);
        assert!(reason.contains("naming 4 records carries 2"), "{reason}");
        let reason = refused(&[stored_batch(0, 3)], 1, vec![2..2]);
        assert!(reason.contains("empty"), "{reason}");
        let reason = refused(&[stored_batch(0, 3)], 1, vec![1..3, 0..1]);
        assert!(reason.contains("order"), "{reason}");
        let reason = refused(&[stored_batch(5, 3), stored_batch(0, 3)], 2, vec![0..1]);
        assert!(reason.contains("follows"), "{reason}");
        let reason = refused(&[stored_batch(0, 3)], 2, vec![0..1]);
        assert!(reason.contains("announcing 2 batches"), "{reason}");
    }
}
