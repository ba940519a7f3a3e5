//! Appending records, shared by [`Producer`](crate::Producer) and
//! [`BufferedProducer`](crate::BufferedProducer): route each record to its shard, encode each
//! shard's records into batches within the server's limits, append each batch to the core
//! that owns its shard, and hand every record its id or its error.
//!
//! When the server refuses a batch because the client's shards are stale (`WrongShard`,
//! `UnknownShard`, `NotOwner`, `ShardSealed`: nothing was stored), the stream's shards are
//! fetched again and the batch's records are routed again — decoded from the batch bytes,
//! which costs an allocation per record on this rare path only — at most
//! [`REROUTES_MAX`] times. Batches are encoded once and never re-encoded otherwise.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use runnel_core::batch::AlignedBytes;
use runnel_core::{
    BatchEncoder, BatchView, BorrowedRecord, Limits, Offset, Record, RecordId, ShardId, StreamName,
};
use runnel_net::protocol::AppendOk;
use runnel_net::protocol::ShardInfo;

use crate::error::ClientError;
use crate::routing::ShardMap;
use crate::transport::Transport;

/// Most times one batch's records are routed again after the server found the shards stale.
pub(crate) const REROUTES_MAX: u32 = 3;

/// Encoded bytes of a batch beyond its records' own estimates: the 80-byte header, the
/// archive's root and padding.
pub(crate) const BATCH_OVERHEAD_BYTES: u64 = 128;
/// Encoded bytes of a record beyond its key, value and header bytes: the archived record
/// (40 bytes with rkyv's 32-bit layout) and alignment padding. An upper bound.
const RECORD_OVERHEAD_BYTES: u64 = 64;
/// Encoded bytes of a header beyond its name and value: the archived header (16 bytes) and
/// alignment padding. An upper bound.
const HEADER_OVERHEAD_BYTES: u64 = 32;

/// The producer's clock: milliseconds since the Unix epoch, for records sent without a
/// timestamp. A clock set before 1970 gives 1 ms, not 0 (which means "unset").
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
        .max(1)
}

/// An upper bound of the bytes `record` adds to an encoded batch, so that batches cut by the
/// estimate stay within `batch_bytes_max` without encoding twice.
pub(crate) fn record_estimate_bytes(record: BorrowedRecord<'_>) -> u64 {
    record.size_bytes()
        + RECORD_OVERHEAD_BYTES
        + HEADER_OVERHEAD_BYTES * record.headers.len() as u64
}

/// A batch encoded for one shard, with the positions of its records in the caller's order.
#[derive(Debug)]
pub(crate) struct EncodedBatch {
    /// The shard it was routed to.
    pub shard: ShardId,
    /// The batch bytes, exactly as they go on the wire.
    pub bytes: AlignedBytes,
    /// `positions[i]` is the caller's index of the batch's record `i`.
    pub positions: Vec<usize>,
}

/// One result per record position: its id once stored, or why not.
pub(crate) struct Outcomes {
    slots: Vec<Option<Result<RecordId, ClientError>>>,
}

impl Outcomes {
    /// Room for `count` records' results.
    pub fn new(count: usize) -> Outcomes {
        Outcomes {
            slots: (0..count).map(|_| None).collect(),
        }
    }

    /// Records the result of the record at `position`.
    pub fn set(&mut self, position: usize, result: Result<RecordId, ClientError>) {
        let slot = self
            .slots
            .get_mut(position)
            .expect("a record position is within its outcomes");
        assert!(slot.is_none(), "record {position} got two results");
        *slot = Some(result);
    }

    /// Records `error` for every position in `positions`.
    pub fn fail(&mut self, positions: &[usize], error: &ClientError) {
        for &position in positions {
            self.set(position, Err(error.clone()));
        }
    }

    /// The results, in position order. Every position must have one.
    pub fn into_results(self) -> Vec<Result<RecordId, ClientError>> {
        self.slots
            .into_iter()
            .enumerate()
            .map(|(position, slot)| {
                slot.unwrap_or_else(|| panic!("record {position} got no result"))
            })
            .collect()
    }
}

/// A shard's batch under construction.
struct OpenBatch {
    encoder: BatchEncoder,
    positions: Vec<usize>,
    estimate_bytes: u64,
}

impl OpenBatch {
    fn new(limits: &Limits) -> OpenBatch {
        OpenBatch {
            encoder: BatchEncoder::new(*limits),
            positions: Vec::new(),
            estimate_bytes: BATCH_OVERHEAD_BYTES,
        }
    }
}

/// Routes `records` (each with its caller position) with `map` and encodes them into batches
/// of at most `limits.batch_bytes_max` bytes (by estimate) and `limits.batch_records_max`
/// records, keeping each shard's records in the order given. A record that cannot be routed
/// or is too large gets its error in `outcomes`; the others come back as batches, in order
/// per shard.
pub(crate) fn encode_routed(
    map: &ShardMap,
    records: impl IntoIterator<Item = (usize, Record)>,
    limits: &Limits,
    outcomes: &mut Outcomes,
) -> Vec<EncodedBatch> {
    let mut open: BTreeMap<ShardId, OpenBatch> = BTreeMap::new();
    let mut batches = Vec::new();
    for (position, record) in records {
        // Checked here to name the caller's position; the encoder's own check then passes.
        if let Err(error) = limits.check_record(position, record.size_bytes()) {
            outcomes.set(position, Err(error.into()));
            continue;
        }
        let shard = match map.route(record.key.as_deref()) {
            Ok(shard) => shard.id,
            Err(error) => {
                outcomes.set(position, Err(error));
                continue;
            }
        };
        let estimate = record_estimate_bytes((&record).into());
        let batch = open.entry(shard).or_insert_with(|| OpenBatch::new(limits));
        let full = batch.estimate_bytes + estimate > limits.batch_bytes_max
            || batch.encoder.len() as u64 >= limits.batch_records_max;
        if full && !batch.encoder.is_empty() {
            let done = std::mem::replace(batch, OpenBatch::new(limits));
            batches.extend(finish(shard, done, outcomes));
        }
        if let Err(error) = batch.encoder.push((&record).into()) {
            outcomes.set(position, Err(error.into()));
            continue;
        }
        batch.positions.push(position);
        batch.estimate_bytes += estimate;
    }
    for (shard, batch) in open {
        batches.extend(finish(shard, batch, outcomes));
    }
    batches
}

/// Encodes one shard's batch; on failure its records get the error.
fn finish(shard: ShardId, mut batch: OpenBatch, outcomes: &mut Outcomes) -> Option<EncodedBatch> {
    match batch.encoder.finish() {
        Ok(bytes) => Some(EncodedBatch {
            shard,
            bytes,
            positions: batch.positions,
        }),
        Err(error) => {
            outcomes.fail(&batch.positions, &error.into());
            None
        }
    }
}

/// Appends `batch` and everything it turns into if the server finds the shards stale, setting
/// the outcome of each of its records. Returns the newest shard map seen (callers keep
/// routing with it).
pub(crate) async fn append_batch(
    transport: &dyn Transport,
    stream: &StreamName,
    map: Arc<ShardMap>,
    batch: EncodedBatch,
    outcomes: &mut Outcomes,
) -> Arc<ShardMap> {
    let first = append_once(transport, stream, &map, batch.shard, &batch.bytes).await;
    settle(transport, stream, map, batch, first, outcomes).await
}

/// One append of `bytes` to `shard` as `map` lists it.
pub(crate) async fn append_once(
    transport: &dyn Transport,
    stream: &StreamName,
    map: &ShardMap,
    shard: ShardId,
    bytes: &[u8],
) -> Result<AppendOk, ClientError> {
    let info: Option<&ShardInfo> = map.shard(shard);
    match info {
        Some(shard) => transport.append(stream, shard, bytes).await,
        None => Err(ClientError::NoRoute {
            stream: stream.to_string(),
            reason: format!("shard {shard} is no longer listed"),
        }),
    }
}

/// Whether an append failed because the client's shards are stale (nothing was stored; the
/// records may be routed again with fresh shards): the server said so, or the shard's node
/// could not be connected to (after a failover the shard lives on another node).
pub(crate) fn is_stale(error: &ClientError) -> bool {
    error.is_routing() || error.is_connect_failure() || matches!(error, ClientError::NoRoute { .. })
}

/// Sets the outcome of each record of `batch`, whose first append ended in `first`: routes
/// the records again with fresh shards while the server finds the shards stale (at most
/// [`REROUTES_MAX`] times), appending what they turn into. Returns the newest shard map seen.
pub(crate) async fn settle(
    transport: &dyn Transport,
    stream: &StreamName,
    mut map: Arc<ShardMap>,
    batch: EncodedBatch,
    first: Result<AppendOk, ClientError>,
    outcomes: &mut Outcomes,
) -> Arc<ShardMap> {
    let mut work: VecDeque<(EncodedBatch, u32)> = VecDeque::from([(batch, 0)]);
    let mut first = Some(first);
    while let Some((batch, reroutes)) = work.pop_front() {
        let outcome = match first.take() {
            Some(outcome) => outcome,
            None => append_once(transport, stream, &map, batch.shard, &batch.bytes).await,
        };
        let stale = outcome.as_ref().is_err_and(is_stale);
        match outcome {
            Ok(ok) => record_ids(&batch, ok, outcomes),
            Err(error) if stale && reroutes < REROUTES_MAX => {
                tracing::debug!(%stream, shard = %batch.shard, %error, "shards changed: routing again");
                match transport.shard_map(stream, Some(&map)).await {
                    Ok(fresh) => map = fresh,
                    Err(refresh_error) => {
                        outcomes.fail(&batch.positions, &refresh_error);
                        continue;
                    }
                }
                let records = match decode_records(&batch.bytes) {
                    Ok(records) => records,
                    Err(decode_error) => {
                        outcomes.fail(&batch.positions, &decode_error);
                        continue;
                    }
                };
                let rerouted = encode_routed(
                    &map,
                    batch.positions.iter().copied().zip(records),
                    &transport.limits(),
                    outcomes,
                );
                // In front, in order: they go before later batches of the same records' shards.
                for (index, again) in rerouted.into_iter().enumerate() {
                    work.insert(index, (again, reroutes + 1));
                }
            }
            Err(error) => outcomes.fail(&batch.positions, &error),
        }
    }
    map
}

/// Checks that `ok` acknowledges exactly `records` records on `shard`.
pub(crate) fn check_acknowledged(
    shard: ShardId,
    records: usize,
    ok: &AppendOk,
) -> Result<(), ClientError> {
    let acknowledged = ok
        .last_offset
        .0
        .checked_sub(ok.base_offset.0)
        .and_then(|span| span.checked_add(1));
    if ok.shard != shard || acknowledged != Some(records as u64) {
        return Err(ClientError::UnexpectedResponse {
            request: "Append",
            response: format!(
                "AppendOk for shard {} offsets {}..={}, but {records} records were sent to shard {shard}",
                ok.shard, ok.base_offset, ok.last_offset
            ),
        });
    }
    Ok(())
}

/// Gives each record of `batch` its id from the server's acknowledgement, after checking
/// that it acknowledges exactly the batch's records on the batch's shard.
fn record_ids(batch: &EncodedBatch, ok: AppendOk, outcomes: &mut Outcomes) {
    if let Err(error) = check_acknowledged(batch.shard, batch.positions.len(), &ok) {
        outcomes.fail(&batch.positions, &error);
        return;
    }
    for (index, &position) in batch.positions.iter().enumerate() {
        let id = RecordId {
            shard: ok.shard,
            offset: Offset(ok.base_offset.0 + index as u64),
        };
        outcomes.set(position, Ok(id));
    }
}

/// The records of an encoded batch, as owned values (for routing them again).
pub(crate) fn decode_records(bytes: &[u8]) -> Result<Vec<Record>, ClientError> {
    let view = BatchView::check(bytes)?;
    Ok(view.records()?.map(|record| record.to_record()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::tests::even_shards;
    use crate::testing::FakeTransport;
    use runnel_core::{hash128, BatchBuilder};
    use runnel_net::protocol::ErrorCode;

    fn stream() -> StreamName {
        StreamName::new("orders").expect("valid")
    }

    fn keyed(key: &str, value_len: usize) -> Record {
        Record::at(vec![7_u8; value_len], 1).with_key(key.as_bytes().to_vec())
    }

    /// The estimate is an upper bound of the real encoded size, headers included.
    #[test]
    fn estimates_bound_the_encoded_size() {
        let mut builder = BatchBuilder::new();
        let mut estimate = BATCH_OVERHEAD_BYTES;
        for index in 0..50_usize {
            let mut record = keyed(&format!("key-{index}"), index * 3);
            for header in 0..(index % 4) {
                record.headers.push(runnel_core::RecordHeader {
                    name: format!("h{header}-{}", "x".repeat(index % 11)),
                    value: vec![1; index % 7],
                });
            }
            estimate += record_estimate_bytes((&record).into());
            builder.push(record);
            let encoded = builder.finish(&Limits::DEFAULT).expect("fits");
            assert!(
                encoded.len() as u64 <= estimate,
                "{} records: encoded {} > estimate {estimate}",
                index + 1,
                encoded.len()
            );
        }
    }

    /// Records are grouped by shard in order, batches are cut by bytes and by count, and
    /// oversized records fail alone.
    #[test]
    fn groups_by_shard_and_cuts_by_limits() {
        let map = ShardMap::new(stream(), even_shards(2)).expect("consistent");
        let limits = Limits {
            record_bytes_max: 1_000,
            batch_bytes_max: BATCH_OVERHEAD_BYTES + 3 * (64 + 100 + 8),
            batch_records_max: 1_000,
        };
        // Keys "k0".."k9" of 100-byte values, one oversized record at position 3.
        let records: Vec<(usize, Record)> = (0..10)
            .map(|i| {
                let size = if i == 3 { 2_000 } else { 100 };
                (i, keyed(&format!("k{i}"), size))
            })
            .collect();
        let mut outcomes = Outcomes::new(10);
        let batches = encode_routed(&map, records, &limits, &mut outcomes);
        let mut seen = Vec::new();
        for batch in &batches {
            assert!(batch.bytes.len() as u64 <= limits.batch_bytes_max);
            assert!(batch.positions.len() <= 3, "cut at three records by bytes");
            assert!(
                batch.positions.windows(2).all(|p| p[0] < p[1]),
                "order kept"
            );
            for &position in &batch.positions {
                let shard = map
                    .shard_for_hash(hash128(format!("k{position}").as_bytes()))
                    .expect("covered");
                assert_eq!(shard.id, batch.shard);
            }
            seen.extend(batch.positions.iter().copied());
            assert_eq!(
                decode_records(&batch.bytes).expect("decodes").len(),
                batch.positions.len()
            );
        }
        seen.sort_unstable();
        assert_eq!(seen, vec![0, 1, 2, 4, 5, 6, 7, 8, 9]);
        for batch in &batches {
            for &position in &batch.positions {
                let id = RecordId {
                    shard: batch.shard,
                    offset: Offset(0),
                };
                outcomes.set(position, Ok(id));
            }
        }
        let results = outcomes.into_results();
        assert!(matches!(
            &results[3],
            Err(ClientError::Batch {
                source: runnel_core::BatchError::RecordTooLarge { .. }
            })
        ));
        let by_count = Limits {
            batch_records_max: 2,
            ..Limits::DEFAULT
        };
        let mut outcomes = Outcomes::new(5);
        let records = (0..5).map(|i| (i, Record::at(vec![1], 1)));
        let single = ShardMap::new(stream(), even_shards(1)).expect("consistent");
        let batches = encode_routed(&single, records, &by_count, &mut outcomes);
        let sizes: Vec<usize> = batches.iter().map(|b| b.positions.len()).collect();
        assert_eq!(sizes, vec![2, 2, 1]);
    }

    /// A batch refused as ShardSealed is routed again with fresh shards and lands on the
    /// children, every record getting an id there; nothing is sent twice.
    #[tokio::test]
    async fn stale_shards_are_refreshed_and_records_rerouted() {
        let transport = FakeTransport::new(even_shards(1));
        let map = transport.shard_map(&stream(), None).await.expect("map");
        // The server has split shard 1 since: it refuses appends to it with ShardSealed.
        transport.split(ShardId(1));
        let records: Vec<(usize, Record)> = (0..20)
            .map(|i| (i, keyed(&format!("user-{i}"), 10)))
            .collect();
        let mut outcomes = Outcomes::new(20);
        let mut batches = encode_routed(&map, records, &transport.limits(), &mut outcomes);
        assert_eq!(batches.len(), 1);
        let batch = batches.remove(0);
        let newest = append_batch(&transport, &stream(), map, batch, &mut outcomes).await;
        assert_eq!(newest.shards().len(), 3);
        let results = outcomes.into_results();
        for (index, result) in results.iter().enumerate() {
            let id = result.as_ref().expect("stored after rerouting");
            let shard = newest.shard(id.shard).expect("listed");
            assert!(shard
                .key_range
                .contains(hash128(format!("user-{index}").as_bytes())));
            assert_ne!(id.shard, ShardId(1), "not on the sealed parent");
        }
        assert_eq!(transport.stored_records(), 20, "stored once each");
    }

    /// A routing refusal that persists fails the records after REROUTES_MAX attempts.
    #[tokio::test]
    async fn reroutes_are_bounded() {
        let transport = FakeTransport::new(even_shards(1));
        let map = transport.shard_map(&stream(), None).await.expect("map");
        for _ in 0..=REROUTES_MAX {
            transport.refuse_next(ErrorCode::NotOwner);
        }
        let mut outcomes = Outcomes::new(1);
        let mut batches = encode_routed(
            &map,
            [(0, keyed("a", 1))],
            &transport.limits(),
            &mut outcomes,
        );
        let batch = batches.remove(0);
        append_batch(&transport, &stream(), map, batch, &mut outcomes).await;
        let results = outcomes.into_results();
        assert_eq!(
            results[0].as_ref().err().and_then(ClientError::code),
            Some(ErrorCode::NotOwner)
        );
        assert_eq!(transport.append_calls(), REROUTES_MAX as usize + 1);
    }

    /// An acknowledgement that does not match the batch is an error, not wrong ids.
    #[test]
    fn mismatched_acknowledgements_are_refused() {
        let batch = EncodedBatch {
            shard: ShardId(4),
            bytes: AlignedBytes::new(),
            positions: vec![0, 1],
        };
        let bad = [
            AppendOk {
                shard: ShardId(5),
                base_offset: Offset(0),
                last_offset: Offset(1),
            },
            AppendOk {
                shard: ShardId(4),
                base_offset: Offset(0),
                last_offset: Offset(2),
            },
            AppendOk {
                shard: ShardId(4),
                base_offset: Offset(3),
                last_offset: Offset(2),
            },
        ];
        for ok in bad {
            let mut outcomes = Outcomes::new(2);
            record_ids(&batch, ok, &mut outcomes);
            assert!(outcomes
                .into_results()
                .iter()
                .all(|r| matches!(r, Err(ClientError::UnexpectedResponse { .. }))));
        }
        let mut outcomes = Outcomes::new(2);
        record_ids(
            &batch,
            AppendOk {
                shard: ShardId(4),
                base_offset: Offset(9),
                last_offset: Offset(10),
            },
            &mut outcomes,
        );
        let ids: Vec<String> = outcomes
            .into_results()
            .into_iter()
            .map(|r| r.expect("ok").to_string())
            .collect();
        assert_eq!(ids, vec!["4-9", "4-10"]);
    }
}
