//! Subscription kill test: producers append with `fsync` durability and a consumer consumes
//! and acks continuously while the server is killed with SIGKILL and restarted, several times.
//! The consumer is one SDK `Consumer` for the whole test: it rejoins by itself after each
//! restart. A checker then verifies that
//! - every acknowledged record was delivered at least once, with the value acknowledged;
//! - per shard, first deliveries never skip an offset: each fresh delivery starts where the
//!   one before ended, or — only after a restart — back at the committed offset (a rewind),
//!   and the first starts at offset 0 (the subscription starts at the earliest record);
//! - no record was delivered that was not stored.
//!
//! It reports how many records were delivered again.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use runnel_client::{
    Client, ClientOptions, ConsumerOptions, Durability, ReadFrom, Record, RecordId, ShardId,
    StreamSpec, SubscriptionSpec, SubscriptionStart,
};
use runnel_tests::server::TestServer;

const CYCLES: usize = 3;
const PRODUCERS: usize = 4;
/// How long producers and the consumer run between two kills.
const RUN_MS: u64 = 1_500;
/// Longest the consumer may take to catch up after the last restart.
const CATCH_UP: Duration = Duration::from_secs(90);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn options(server: &TestServer) -> ClientOptions {
    ClientOptions {
        ca_cert_path: Some(server.certificate()),
        request_attempts_max: 1,
        // A killed server never answers: notice it quickly.
        request_timeout_ms: 2_000,
        idle_timeout_ms: 2_000,
        keep_alive_interval_ms: 500,
        ..ClientOptions::default()
    }
}

/// One delivery as the consumer saw it.
struct Seen {
    shard: ShardId,
    ranges: Vec<std::ops::Range<u64>>,
    redelivery: bool,
    values: Vec<(RecordId, Vec<u8>)>,
}

#[tokio::test]
async fn acknowledged_records_are_delivered_across_sigkill() {
    let temp = tempfile::tempdir().expect("temp dir");
    let mut server = TestServer::start(temp.path(), 2);
    let admin = Client::connect(&server.url(), options(&server))
        .await
        .expect("connect");
    admin
        .create_stream(StreamSpec::new("payments", Durability::Fsync).shard_count(4))
        .await
        .expect("create stream");
    admin
        .create_subscription(
            SubscriptionSpec::new("settle", "payments")
                .start(SubscriptionStart::Earliest)
                .ack_timeout(Duration::from_secs(5)),
        )
        .await
        .expect("create subscription");
    drop(admin);

    // The consumer: one for the whole test, on a client of its own.
    let consumer_client = Client::connect(&server.url(), options(&server))
        .await
        .expect("connect");
    let mut consumer = consumer_client
        .consumer(
            "settle",
            ConsumerOptions {
                session_timeout_ms: Some(3_000),
                ..ConsumerOptions::new("settler")
            },
        )
        .await
        .expect("join");
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let consuming = {
        let seen = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Some(delivery) = consumer.next().await {
                let Ok(delivery) = delivery else { continue };
                let values = delivery
                    .records()
                    .map(|item| {
                        let (id, record) = item.expect("a checked record");
                        (id, record.value().to_vec())
                    })
                    .collect();
                seen.lock().expect("lock").push(Seen {
                    shard: delivery.shard(),
                    ranges: delivery.ranges().to_vec(),
                    redelivery: delivery.is_redelivery(),
                    values,
                });
                let _ = consumer.ack_delivery(&delivery);
            }
            consumer.stats()
        })
    };

    let acknowledged: Arc<Mutex<HashMap<RecordId, Vec<u8>>>> = Arc::default();
    let mut sequence = 0u64;
    for cycle in 0..=CYCLES {
        let client = Client::connect(&server.url(), options(&server))
            .await
            .expect("connect");
        let mut producers = Vec::new();
        for index in 0..PRODUCERS {
            let producer = client.producer("payments").expect("producer");
            let acknowledged = Arc::clone(&acknowledged);
            let first = sequence + index as u64 * 1_000_000;
            producers.push(tokio::spawn(async move {
                for n in first.. {
                    let value = format!("c{cycle}-p{index}-{n}").into_bytes();
                    let record =
                        Record::at(value.clone(), now_ms()).with_key(n.to_le_bytes().to_vec());
                    match producer.send(record).await {
                        Ok(id) => {
                            acknowledged.lock().expect("lock").insert(id, value);
                        }
                        Err(_) => return,
                    }
                    if cycle == CYCLES && n - first >= 200 {
                        return;
                    }
                }
            }));
        }
        sequence += 10_000_000;
        if cycle == CYCLES {
            // The last round is not killed: its producers stop on their own.
            for producer in producers {
                producer.await.expect("producer task");
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(RUN_MS)).await;
        server.kill();
        for producer in producers {
            producer.await.expect("producer task");
        }
        drop(client);
        server.restart();
    }

    // Wait until the consumer has had every acknowledged record.
    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(
        acknowledged.len() > 200,
        "{} acknowledged",
        acknowledged.len()
    );
    let deadline = Instant::now() + CATCH_UP;
    loop {
        let missing = {
            let seen = seen.lock().expect("lock");
            let delivered: std::collections::HashSet<RecordId> = seen
                .iter()
                .flat_map(|s| s.values.iter().map(|(id, _)| *id))
                .collect();
            acknowledged
                .keys()
                .filter(|id| !delivered.contains(id))
                .count()
        };
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} acknowledged records were never delivered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // What the shards hold now, to check every delivered value against.
    let reader_client = Client::connect(&server.url(), options(&server))
        .await
        .expect("connect");
    let mut stored: HashMap<RecordId, Vec<u8>> = HashMap::new();
    for shard in reader_client.list_shards("payments").await.expect("shards") {
        let mut reader = reader_client
            .reader("payments", shard.id, ReadFrom::Earliest, None)
            .expect("reader");
        while let Some(batch) = reader.next_batch().await.expect("read") {
            for item in batch.records() {
                let (id, record) = item.expect("record");
                stored.insert(id, record.value().to_vec());
            }
        }
    }

    let seen = seen.lock().expect("lock");
    let mut delivered: HashMap<RecordId, usize> = HashMap::new();
    let mut fresh_end: BTreeMap<ShardId, u64> = BTreeMap::new();
    let mut rewinds: BTreeMap<ShardId, usize> = BTreeMap::new();
    for delivery in seen.iter() {
        for (id, value) in &delivery.values {
            assert_eq!(
                stored.get(id),
                Some(value),
                "delivered {id} is stored as delivered"
            );
            *delivered.entry(*id).or_default() += 1;
        }
        if delivery.redelivery {
            continue;
        }
        let start = delivery.ranges.first().map_or(0, |r| r.start);
        let end = delivery.ranges.last().map_or(0, |r| r.end);
        let expected = fresh_end.get(&delivery.shard).copied().unwrap_or(0);
        assert!(
            start <= expected,
            "shard {} skipped offsets {expected}..{start}",
            delivery.shard
        );
        if start < expected {
            *rewinds.entry(delivery.shard).or_default() += 1;
        }
        fresh_end.insert(delivery.shard, end);
    }
    for (shard, count) in &rewinds {
        assert!(
            *count <= CYCLES,
            "shard {shard} went back {count} times in {CYCLES} restarts"
        );
    }
    for (id, value) in &acknowledged {
        assert_eq!(stored.get(id), Some(value), "acknowledged {id} is stored");
        assert!(
            delivered.contains_key(id),
            "acknowledged {id} was delivered"
        );
    }
    let total: usize = delivered.values().sum();
    let redelivered = total - delivered.len();
    let flagged: usize = seen
        .iter()
        .filter(|s| s.redelivery)
        .map(|s| s.values.len())
        .sum();
    eprintln!(
        "subscription kill test: {CYCLES} SIGKILL cycles, {} acknowledged records all delivered; {} records delivered {} times: {redelivered} redelivered ({flagged} flagged as redeliveries, the rest after restarts), rewinds per shard {rewinds:?}",
        acknowledged.len(),
        delivered.len(),
        total,
    );
    drop(seen);
    consuming.abort();
}
