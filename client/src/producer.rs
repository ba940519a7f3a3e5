//! [`Producer`]: appends records as they are given — one request per `send`, one per shard
//! (per batch of at most the server's batch size) for `send_batch` — and answers with their
//! record ids once stored.
//!
//! Routing: by `hash128(key)` to the open shard holding it; records without a key go to the
//! open shards in turn. Order: the records of one `send_batch` that go to one shard are stored
//! in the order given; different shards are written concurrently and independently (so a
//! failure can leave some shards written: [`ClientError::PartialAppend`] says which records).
//! No append is ever retried when it may have been stored (see the crate documentation),
//! unless the producer is idempotent ([`Producer::idempotent`]): then a retried batch the
//! server stored already is answered with its first offsets, so an append whose outcome was
//! unknown (a lost connection, a timeout) is sent again.

use std::collections::BTreeMap;
use std::sync::Arc;

use runnel_core::{Record, RecordId, ShardId, StreamName};

use crate::append::{append_batch, encode_routed, EncodedBatch, Outcomes};
use crate::error::ClientError;
use crate::routing::ShardMap;
use crate::transport::Transport;

/// Appends records to one stream. Cheap to clone.
#[derive(Clone)]
pub struct Producer {
    transport: Arc<dyn Transport>,
    stream: StreamName,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl Producer {
    pub(crate) fn new(transport: Arc<dyn Transport>, stream: StreamName) -> Producer {
        Producer { transport, stream }
    }

    /// This producer made idempotent (`true`) or not: each batch then carries a producer id
    /// and a per-shard sequence, and the server stores a batch sent twice only once,
    /// answering the copy with the first offsets. Appends with an unknown outcome (connection
    /// lost or timed out after sending) are then retried, up to
    /// [`ClientOptions::request_attempts_max`](crate::ClientOptions) attempts; only if all
    /// fail is the outcome [`ClientError::OutcomeUnknown`]. The price: one batch per shard in
    /// flight at a time for this producer (and its clones), so concurrent `send`s to one
    /// shard are sent one after the other. Off by default (see `docs/sdk.md`). Each call
    /// with `true` starts new producer sessions.
    pub fn idempotent(mut self, enabled: bool) -> Producer {
        self.transport = crate::idempotence::idempotent(self.transport, enabled);
        self
    }

    /// The stream records go to.
    pub fn stream(&self) -> &StreamName {
        &self.stream
    }

    /// Appends one record; its id once stored. A record without a timestamp
    /// ([`Record::new`]) gets this producer's clock.
    pub async fn send(&self, record: Record) -> Result<RecordId, ClientError> {
        let mut ids = self.send_batch(vec![record]).await?;
        ids.pop().ok_or_else(|| ClientError::UnexpectedResponse {
            request: "Append",
            response: "no record id for the record sent".into(),
        })
    }

    /// Appends `records`, one batch per shard (several if they exceed the server's batch
    /// size), shards in parallel; their ids in the order given. If only some were stored, the
    /// error is [`ClientError::PartialAppend`] with the ids of those that were; if none were,
    /// the first record's error. Records without a timestamp get this producer's clock.
    pub async fn send_batch(&self, mut records: Vec<Record>) -> Result<Vec<RecordId>, ClientError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let now_ms = crate::append::now_ms();
        for record in &mut records {
            record.stamp_if_unset(now_ms);
        }
        let count = records.len();
        let map = self.transport.shard_map(&self.stream, None).await?;
        let mut outcomes = Outcomes::new(count);
        let batches = encode_routed(
            &map,
            records.into_iter().enumerate(),
            &self.transport.limits(),
            &mut outcomes,
        );
        let mut by_shard: BTreeMap<ShardId, Vec<EncodedBatch>> = BTreeMap::new();
        for batch in batches {
            by_shard.entry(batch.shard).or_default().push(batch);
        }
        if by_shard.len() <= 1 {
            for batch in by_shard.into_values().flatten() {
                append_batch(
                    &*self.transport,
                    &self.stream,
                    Arc::clone(&map),
                    batch,
                    &mut outcomes,
                )
                .await;
            }
        } else {
            self.append_shards_in_parallel(map, by_shard, &mut outcomes)
                .await?;
        }
        collect(outcomes.into_results())
    }

    /// One task per shard, each appending its shard's batches in order.
    async fn append_shards_in_parallel(
        &self,
        map: Arc<ShardMap>,
        by_shard: BTreeMap<ShardId, Vec<EncodedBatch>>,
        outcomes: &mut Outcomes,
    ) -> Result<(), ClientError> {
        let mut tasks = tokio::task::JoinSet::new();
        for batches in by_shard.into_values() {
            let transport = Arc::clone(&self.transport);
            let stream = self.stream.clone();
            let map = Arc::clone(&map);
            tasks.spawn(async move {
                // The task's own outcomes, indexed locally; `positions` maps them back.
                let mut positions = Vec::new();
                let mut local = Vec::with_capacity(batches.len());
                for mut batch in batches {
                    let start = positions.len();
                    positions.extend_from_slice(&batch.positions);
                    batch.positions = (start..positions.len()).collect();
                    local.push(batch);
                }
                let mut task_outcomes = Outcomes::new(positions.len());
                for batch in local {
                    append_batch(
                        &*transport,
                        &stream,
                        Arc::clone(&map),
                        batch,
                        &mut task_outcomes,
                    )
                    .await;
                }
                (positions, task_outcomes.into_results())
            });
        }
        while let Some(joined) = tasks.join_next().await {
            let (positions, results) = joined.map_err(|error| ClientError::UnexpectedResponse {
                request: "Append",
                response: format!("an append task failed: {error}"),
            })?;
            for (position, result) in positions.into_iter().zip(results) {
                outcomes.set(position, result);
            }
        }
        Ok(())
    }
}

/// All ids, or the error that says which records were stored.
pub(crate) fn collect(
    results: Vec<Result<RecordId, ClientError>>,
) -> Result<Vec<RecordId>, ClientError> {
    if results.iter().all(Result::is_ok) {
        return Ok(results.into_iter().flatten().collect());
    }
    let stored_any = results.iter().any(Result::is_ok);
    let mut first_error = None;
    let ids: Vec<Option<RecordId>> = results
        .into_iter()
        .map(|result| match result {
            Ok(id) => Some(id),
            Err(error) => {
                first_error.get_or_insert(error);
                None
            }
        })
        .collect();
    let error = first_error.unwrap_or(ClientError::Closed);
    if stored_any {
        Err(ClientError::PartialAppend {
            ids,
            source: Box::new(error),
        })
    } else {
        Err(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::tests::even_shards;
    use crate::testing::FakeTransport;
    use runnel_core::hash128;
    use runnel_net::protocol::ErrorCode;

    fn producer(transport: &Arc<FakeTransport>) -> Producer {
        Producer::new(
            Arc::clone(transport) as Arc<dyn Transport>,
            StreamName::new("orders").expect("valid"),
        )
    }

    /// Each record lands on the shard its key hashes into, ids come back in input order and
    /// are dense per shard; keyless records spread over the shards.
    #[tokio::test]
    async fn send_batch_routes_by_key_and_returns_ids_in_order() {
        let transport = Arc::new(FakeTransport::new(even_shards(4)));
        let producer = producer(&transport);
        let records: Vec<Record> = (0..40)
            .map(|i| {
                let record = Record::at(format!("v{i}").into_bytes(), i);
                if i % 4 == 3 {
                    record
                } else {
                    record.with_key(format!("user-{i}").into_bytes())
                }
            })
            .collect();
        let ids = producer.send_batch(records.clone()).await.expect("stored");
        assert_eq!(ids.len(), 40);
        let map = transport
            .shard_map(producer.stream(), None)
            .await
            .expect("map");
        let mut keyless_shards = std::collections::BTreeSet::new();
        for (record, id) in records.iter().zip(&ids) {
            match &record.key {
                Some(key) => assert!(map
                    .shard(id.shard)
                    .expect("listed")
                    .key_range
                    .contains(hash128(key))),
                None => {
                    keyless_shards.insert(id.shard);
                }
            }
        }
        assert_eq!(
            keyless_shards.len(),
            4,
            "ten keyless records visit all four shards"
        );
        // Per shard, offsets are 0.. in input order.
        for shard in 1..=4 {
            let offsets: Vec<u64> = ids
                .iter()
                .filter(|id| id.shard == ShardId(shard))
                .map(|id| id.offset.0)
                .collect();
            assert_eq!(offsets, (0..offsets.len() as u64).collect::<Vec<_>>());
        }
        // The stored records are the ones sent.
        let stored: usize = transport.stored().iter().map(|(_, r)| r.len()).sum();
        assert_eq!(stored, 40);
        assert_eq!(transport.append_calls(), 4, "one batch per shard");
    }

    /// A single send returns the record's id; an empty batch sends nothing.
    #[tokio::test]
    async fn single_sends_and_empty_batches() {
        let transport = Arc::new(FakeTransport::new(even_shards(2)));
        let producer = producer(&transport);
        let id = producer
            .send(Record::at(b"x".to_vec(), 1).with_key(b"runnel".to_vec()))
            .await
            .expect("stored");
        assert_eq!(id.to_string(), "1-0");
        assert_eq!(
            producer.send_batch(Vec::new()).await.expect("nothing"),
            vec![]
        );
        assert_eq!(transport.append_calls(), 1);
    }

    /// When one shard's append fails after another's succeeded, the error names exactly the
    /// stored records.
    #[tokio::test]
    async fn partial_failures_say_which_records_were_stored() {
        let transport = Arc::new(FakeTransport::new(even_shards(2)));
        let producer = producer(&transport);
        let records = vec![
            Record::at(b"a".to_vec(), 1).with_key(b"runnel".to_vec()), // shard 1
            Record::at(b"b".to_vec(), 1).with_key(b"a".to_vec()),      // shard 2
        ];
        // The next append (whichever shard's task runs first) is refused.
        transport.refuse_next(ErrorCode::StorageFault);
        match producer.send_batch(records).await {
            Err(ClientError::PartialAppend { ids, source }) => {
                assert_eq!(ids.iter().flatten().count(), 1);
                assert_eq!(source.code(), Some(ErrorCode::StorageFault));
            }
            other => panic!("expected a partial append, got {other:?}"),
        }
        transport.refuse_next(ErrorCode::StorageFault);
        let error = producer
            .send(Record::at(b"c".to_vec(), 1))
            .await
            .expect_err("refused");
        assert_eq!(error.code(), Some(ErrorCode::StorageFault));
    }

    /// Regression (issue 8, item 9): the README's `Record::new(value, 0)` stored records dated
    /// 1970, which retention deleted within seconds. A record built without a timestamp is
    /// stored with the producer's clock; an explicit event time is kept.
    #[tokio::test]
    async fn records_without_a_timestamp_get_the_producers_clock() {
        let transport = Arc::new(FakeTransport::new(even_shards(1)));
        let producer = producer(&transport);
        let before_ms = crate::append::now_ms();
        producer
            .send_batch(vec![
                Record::new(b"now".to_vec()),
                Record::new(b"then".to_vec()).with_timestamp(42),
            ])
            .await
            .expect("stored");
        let after_ms = crate::append::now_ms();
        let stored: Vec<Record> = transport
            .stored()
            .into_iter()
            .flat_map(|(_, records)| records)
            .collect();
        assert_eq!(stored.len(), 2);
        let now = &stored[0];
        assert!(
            (before_ms..=after_ms).contains(&now.timestamp_ms),
            "stamped {} outside {before_ms}..={after_ms}",
            now.timestamp_ms
        );
        assert_eq!(stored[1].timestamp_ms, 42);
    }

    /// An unknown outcome is passed through, never retried: the record is stored at most once.
    #[tokio::test]
    async fn unknown_outcomes_are_not_retried() {
        let transport = Arc::new(FakeTransport::new(even_shards(1)));
        let producer = producer(&transport);
        transport.fail_next(ClientError::OutcomeUnknown {
            request: "Append",
            source: Box::new(ClientError::Timeout {
                request: "Append",
                timeout_ms: 1,
            }),
        });
        let error = producer
            .send(Record::at(b"x".to_vec(), 1))
            .await
            .expect_err("unknown");
        assert!(
            matches!(error, ClientError::OutcomeUnknown { .. }),
            "{error:?}"
        );
        assert!(!error.is_retriable());
        assert_eq!(transport.append_calls(), 1);
    }
}
