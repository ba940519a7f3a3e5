//! The buffered producer driven end to end against the in-memory transport, in paused
//! (virtual) time: batching by count, bytes and linger time, the in-flight window, the
//! memory bound, flush, close and failures.

use std::sync::Arc;
use std::time::Duration;

use runnel_core::{hash128, Limits, Record, ShardId, StreamName};
use runnel_net::protocol::ErrorCode;
use tokio::time::Instant;

use super::*;
use crate::routing::tests::even_shards;
use crate::testing::FakeTransport;

fn stream() -> StreamName {
    StreamName::new("orders").expect("valid")
}

fn start(transport: &Arc<FakeTransport>, config: BufferedProducerConfig) -> BufferedProducer {
    BufferedProducer::start(
        Arc::clone(transport) as Arc<dyn Transport>,
        stream(),
        config,
    )
    .expect("valid config")
}

/// Record `index`, dated `index + 1` ms (0 would mean "no timestamp": the producer's clock).
fn value(index: usize) -> Record {
    Record::at(format!("value-{index}").into_bytes(), index as i64 + 1)
}

fn batch_sizes(transport: &FakeTransport) -> Vec<usize> {
    transport
        .stored()
        .iter()
        .map(|(_, records)| records.len())
        .collect()
}

/// Full batches leave at once; the rest leaves at flush.
#[tokio::test(start_paused = true)]
async fn batches_are_cut_by_record_count() {
    let transport = Arc::new(FakeTransport::new(even_shards(1)));
    let producer = start(
        &transport,
        BufferedProducerConfig {
            batch_records_max: 10,
            linger_ms: 60_000,
            ..BufferedProducerConfig::default()
        },
    );
    let mut futures = Vec::new();
    for index in 0..25 {
        futures.push(producer.send(value(index)).await.expect("queued"));
    }
    let first = futures.remove(0).await.expect("stored");
    assert_eq!(first.to_string(), "1-0");
    producer.flush().await.expect("flushed");
    assert_eq!(batch_sizes(&transport), vec![10, 10, 5]);
    for (index, future) in futures.into_iter().enumerate() {
        assert_eq!(future.await.expect("stored").offset.0, index as u64 + 1);
    }
}

/// A lone batch waits exactly its linger time, then leaves with everything that arrived.
#[tokio::test(start_paused = true)]
async fn batches_wait_for_their_linger_time() {
    let transport = Arc::new(FakeTransport::new(even_shards(1)));
    let producer = start(
        &transport,
        BufferedProducerConfig {
            linger_ms: 50,
            ..BufferedProducerConfig::default()
        },
    );
    let started = Instant::now();
    let first = producer.send(value(0)).await.expect("queued");
    // Let the worker take the record at time 0 before the clock moves.
    tokio::task::yield_now().await;
    tokio::time::advance(Duration::from_millis(20)).await;
    let second = producer.send(value(1)).await.expect("queued");
    assert_eq!(
        transport.append_calls(),
        0,
        "nothing before the linger time"
    );
    first.await.expect("stored");
    second.await.expect("stored");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(50) && waited <= Duration::from_millis(51),
        "{waited:?}"
    );
    assert_eq!(batch_sizes(&transport), vec![2]);
}

/// Batches are cut by estimated bytes and every batch fits the bound.
#[tokio::test(start_paused = true)]
async fn batches_are_cut_by_bytes() {
    let transport = Arc::new(FakeTransport::new(even_shards(1)));
    let record_bytes =
        crate::append::record_estimate_bytes((&Record::at(vec![0; 1_000], 0)).into());
    let batch_bytes_max = BATCH_OVERHEAD_BYTES + 4 * record_bytes;
    let producer = start(
        &transport,
        BufferedProducerConfig {
            batch_bytes_max,
            ..BufferedProducerConfig::default()
        },
    );
    let mut futures = Vec::new();
    for _ in 0..10 {
        futures.push(
            producer
                .send(Record::at(vec![0; 1_000], 0))
                .await
                .expect("queued"),
        );
    }
    producer.flush().await.expect("flushed");
    assert_eq!(batch_sizes(&transport), vec![4, 4, 2]);
    for future in futures {
        future.await.expect("stored");
    }
}

/// Each shard gets its own batches, holding only its keys, in send order per key.
#[tokio::test(start_paused = true)]
async fn records_are_batched_per_shard_in_order() {
    let transport = Arc::new(FakeTransport::new(even_shards(3)));
    let producer = start(&transport, BufferedProducerConfig::default());
    let mut futures = Vec::new();
    for index in 0..60 {
        let key = format!("user-{}", index % 7);
        let record = value(index).with_key(key.into_bytes());
        futures.push(producer.send(record).await.expect("queued"));
    }
    producer.close().await.expect("closed");
    let map = transport.shard_map(&stream(), None).await.expect("map");
    for (shard, records) in transport.stored() {
        let range = map.shard(shard).expect("listed").key_range;
        for record in &records {
            assert!(range.contains(hash128(record.key.as_deref().expect("keyed"))));
        }
    }
    // Per key, timestamps (= send order) increase with offsets.
    for user in 0..7 {
        let key = format!("user-{user}").into_bytes();
        let stored: Vec<i64> = transport
            .stored()
            .into_iter()
            .flat_map(|(_, records)| records)
            .filter(|record| record.key.as_deref() == Some(&key[..]))
            .map(|record| record.timestamp_ms)
            .collect();
        assert!(
            stored.windows(2).all(|pair| pair[0] < pair[1]),
            "user-{user}: {stored:?}"
        );
    }
    for future in futures {
        future.await.expect("stored");
    }
    assert_eq!(transport.stored_records(), 60);
}

/// No more than `in_flight_max` batches of a shard are appended at once.
#[tokio::test(start_paused = true)]
async fn in_flight_batches_are_bounded_per_shard() {
    let (transport, gate) = FakeTransport::gated(even_shards(1));
    let transport = Arc::new(transport);
    let producer = start(
        &transport,
        BufferedProducerConfig {
            batch_records_max: 1,
            in_flight_max: 2,
            ..BufferedProducerConfig::default()
        },
    );
    let mut futures = Vec::new();
    for index in 0..6 {
        futures.push(producer.send(value(index)).await.expect("queued"));
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(transport.in_flight(), 2);
    gate.add_permits(6);
    for future in futures {
        future.await.expect("stored");
    }
    assert_eq!(transport.in_flight_max_seen(), 2);
    assert_eq!(batch_sizes(&transport), vec![1; 6]);
}

/// With the buffer full, `send` waits until a batch is done and frees its bytes.
#[tokio::test(start_paused = true)]
async fn a_full_buffer_makes_send_wait() {
    let (transport, gate) = FakeTransport::gated(even_shards(1));
    let transport = Arc::new(transport);
    let record_bytes =
        crate::append::record_estimate_bytes((&Record::at(vec![0; 1_000], 0)).into());
    let producer = start(
        &transport,
        BufferedProducerConfig {
            batch_records_max: 2,
            batch_bytes_max: 4 * record_bytes,
            buffer_bytes_max: 4 * record_bytes,
            linger_ms: 0,
            ..BufferedProducerConfig::default()
        },
    );
    let mut futures = Vec::new();
    for _ in 0..4 {
        futures.push(
            producer
                .send(Record::at(vec![0; 1_000], 0))
                .await
                .expect("room"),
        );
    }
    let blocked = tokio::time::timeout(
        Duration::from_secs(5),
        producer.send(Record::at(vec![0; 1_000], 0)),
    )
    .await;
    assert!(blocked.is_err(), "the fifth record waits for room");
    gate.add_permits(1);
    let fifth = producer
        .send(Record::at(vec![0; 1_000], 0))
        .await
        .expect("room after the first batch");
    gate.add_permits(10);
    for future in futures {
        future.await.expect("stored");
    }
    fifth.await.expect("stored");
}

/// A refused batch fails exactly its records; later records are stored.
#[tokio::test(start_paused = true)]
async fn failures_reach_every_record_of_the_batch() {
    let transport = Arc::new(FakeTransport::new(even_shards(1)));
    let producer = start(&transport, BufferedProducerConfig::default());
    transport.refuse_next(ErrorCode::StorageFault);
    let failed: Vec<AppendFuture> = {
        let mut futures = Vec::new();
        for index in 0..3 {
            futures.push(producer.send(value(index)).await.expect("queued"));
        }
        futures
    };
    producer.flush().await.expect("flushed");
    let later = producer.send(value(3)).await.expect("queued");
    for future in failed {
        let error = future.await.expect_err("refused");
        assert_eq!(error.code(), Some(ErrorCode::StorageFault));
    }
    assert_eq!(later.await.expect("stored").to_string(), "1-0");
}

/// A split seen by the server is handled: the batch is routed again and the producer routes
/// later records with the new shards.
#[tokio::test(start_paused = true)]
async fn a_split_is_followed() {
    let transport = Arc::new(FakeTransport::new(even_shards(1)));
    let producer = start(&transport, BufferedProducerConfig::default());
    producer
        .send(value(0).with_key(b"k".to_vec()))
        .await
        .expect("queued")
        .await
        .expect("stored");
    transport.split(ShardId(1));
    let mut futures = Vec::new();
    for index in 0..10 {
        let record = value(index).with_key(format!("k{index}").into_bytes());
        futures.push(producer.send(record).await.expect("queued"));
    }
    for future in futures {
        let id = future.await.expect("stored on a child");
        assert!(id.shard == ShardId(2) || id.shard == ShardId(3), "{id}");
    }
    let later = producer
        .send(value(11).with_key(b"z".to_vec()))
        .await
        .expect("queued");
    let calls = transport.append_calls();
    later.await.expect("stored");
    assert_eq!(
        transport.append_calls(),
        calls + 1,
        "routed right the first time"
    );
    assert_eq!(transport.map_fetches(), 2);
}

/// Records too large for the server are refused at once; after close nothing is accepted,
/// and close waits for what was queued.
#[tokio::test(start_paused = true)]
async fn oversized_records_and_closed_producers_are_refused() {
    let limits = Limits {
        record_bytes_max: 100,
        ..Limits::DEFAULT
    };
    let transport = Arc::new(FakeTransport::with(
        even_shards(1),
        limits,
        None,
        Duration::from_millis(3),
    ));
    let producer = start(&transport, BufferedProducerConfig::default());
    let error = producer
        .send(Record::at(vec![0; 101], 0))
        .await
        .expect_err("too large");
    assert!(matches!(error, ClientError::Batch { .. }), "{error:?}");
    let queued = producer.send(value(1)).await.expect("queued");
    producer.close().await.expect("closed");
    assert_eq!(
        transport.stored_records(),
        1,
        "close waited for the queued record"
    );
    queued.await.expect("stored");
    let clone = producer.clone();
    assert!(matches!(
        clone.send(value(2)).await,
        Err(ClientError::Closed)
    ));
    assert!(producer.flush().await.is_err());
}

/// Dropping every handle still delivers what was queued.
#[tokio::test(start_paused = true)]
async fn dropping_the_producer_still_sends_queued_records() {
    let transport = Arc::new(FakeTransport::new(even_shards(2)));
    let producer = start(&transport, BufferedProducerConfig::default());
    let future = producer.send(value(0)).await.expect("queued");
    drop(producer);
    future.await.expect("stored");
}

/// Each bound is checked and names its option; an oversized batch bound is lowered to the
/// server's.
#[test]
fn configs_are_validated() {
    let limits = Limits::DEFAULT;
    let refused = |config: BufferedProducerConfig| match config.bounds(&limits) {
        Err(ClientError::InvalidOptions { field, .. }) => field,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let base = BufferedProducerConfig::default;
    assert!(base().bounds(&limits).is_ok());
    assert_eq!(
        refused(BufferedProducerConfig {
            batch_records_max: 0,
            ..base()
        }),
        "batch_records_max"
    );
    assert_eq!(
        refused(BufferedProducerConfig {
            batch_records_max: 1_000_001,
            ..base()
        }),
        "batch_records_max"
    );
    assert_eq!(
        refused(BufferedProducerConfig {
            batch_bytes_max: 100,
            ..base()
        }),
        "batch_bytes_max"
    );
    assert_eq!(
        refused(BufferedProducerConfig {
            linger_ms: 60_001,
            ..base()
        }),
        "linger_ms"
    );
    assert_eq!(
        refused(BufferedProducerConfig {
            buffer_bytes_max: 1_000,
            ..base()
        }),
        "buffer_bytes_max"
    );
    assert_eq!(
        refused(BufferedProducerConfig {
            buffer_bytes_max: 1 << 32,
            ..base()
        }),
        "buffer_bytes_max"
    );
    assert_eq!(
        refused(BufferedProducerConfig {
            in_flight_max: 0,
            ..base()
        }),
        "in_flight_max"
    );
    assert_eq!(
        refused(BufferedProducerConfig {
            in_flight_max: 65,
            ..base()
        }),
        "in_flight_max"
    );
    for partial_in_flight_max in [0, 65] {
        assert_eq!(
            refused(BufferedProducerConfig {
                partial_in_flight_max,
                ..base()
            }),
            "partial_in_flight_max"
        );
    }
    let lowered = BufferedProducerConfig {
        batch_bytes_max: 64 << 20,
        buffer_bytes_max: 64 << 20,
        ..base()
    }
    .bounds(&limits)
    .expect("valid");
    assert_eq!(lowered.bytes_max, limits.batch_bytes_max);
}

/// Regression (issue 8, item 9): a record built without a timestamp is stored with the
/// producer's clock (taken when it is queued), never 0; an explicit event time is kept.
#[tokio::test]
async fn records_without_a_timestamp_get_the_producers_clock() {
    let transport = Arc::new(FakeTransport::new(even_shards(1)));
    let producer = start(&transport, BufferedProducerConfig::default());
    let before_ms = crate::append::now_ms();
    let unset = producer
        .send(Record::new(b"now".to_vec()))
        .await
        .expect("queued");
    let explicit = producer
        .send(Record::new(b"then".to_vec()).with_timestamp(42))
        .await
        .expect("queued");
    let after_ms = crate::append::now_ms();
    producer.close().await.expect("closed");
    unset.await.expect("stored");
    explicit.await.expect("stored");
    let stored: Vec<Record> = transport
        .stored()
        .into_iter()
        .flat_map(|(_, records)| records)
        .collect();
    assert_eq!(stored.len(), 2);
    assert!(
        (before_ms..=after_ms).contains(&stored[0].timestamp_ms),
        "stamped {} outside {before_ms}..={after_ms}",
        stored[0].timestamp_ms
    );
    assert_eq!(stored[1].timestamp_ms, 42);
}
