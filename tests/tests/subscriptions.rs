//! Shared subscriptions end to end: the real `runnel-server` binary driven through the SDK's
//! `Consumer`. Two consumers share a stream's shards and one leaving hands its shards over;
//! unacked records come back after the ack timeout; `max unacked` pauses delivery until acks
//! arrive; a subscription created at a timestamp starts there; acked progress survives a clean
//! restart; a forced delete ends the consumers.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use runnel_client::{
    Client, ClientError, ClientOptions, Consumer, ConsumerOptions, Delivery, Durability, ErrorCode,
    Record, RecordId, ShardId, StreamSpec, SubscriptionSpec, SubscriptionStart,
};
use runnel_tests::server::TestServer;

/// Longest any wait in these tests may take before it fails the test.
const PATIENCE: Duration = Duration::from_secs(30);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

async fn client(server: &TestServer) -> Client {
    let options = ClientOptions {
        ca_cert_path: Some(server.certificate()),
        ..ClientOptions::default()
    };
    Client::connect(&server.url(), options)
        .await
        .expect("connect")
}

/// Appends `count` keyed records (one request each) and returns their ids.
async fn produce(client: &Client, stream: &str, first_key: u32, count: u32) -> Vec<RecordId> {
    let producer = client.producer(stream).expect("producer");
    let mut ids = Vec::new();
    for key in first_key..first_key + count {
        let record = Record::at(format!("value-{key}").into_bytes(), now_ms())
            .with_key(key.to_le_bytes().to_vec());
        ids.push(producer.send(record).await.expect("append"));
    }
    ids
}

/// The next delivery within `wait`, `None` if none came.
async fn next_within(consumer: &mut Consumer, wait: Duration) -> Option<Delivery> {
    match tokio::time::timeout(wait, consumer.next()).await {
        Ok(Some(delivery)) => Some(delivery.expect("a delivery")),
        Ok(None) => panic!("the consumer ended: {:?}", consumer.stats()),
        Err(_) => None,
    }
}

/// Receives and acks deliveries until `want` distinct records arrived; returns every record
/// id received (with repeats) and whether it came as a redelivery.
async fn consume_acking(consumer: &mut Consumer, want: usize) -> Vec<(RecordId, bool)> {
    let deadline = Instant::now() + PATIENCE;
    let mut seen = BTreeSet::new();
    let mut received = Vec::new();
    while seen.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        let delivery = next_within(consumer, left)
            .await
            .unwrap_or_else(|| panic!("only {} of {want} records arrived", seen.len()));
        for id in delivery.ids() {
            seen.insert(id);
            received.push((id, delivery.is_redelivery()));
        }
        consumer.ack_delivery(&delivery).expect("ack");
    }
    received
}

/// Waits until `check` holds for the consumers' assignments.
async fn wait_for_assignments(consumers: &[&Consumer], check: impl Fn(&[Vec<ShardId>]) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let assignments: Vec<Vec<ShardId>> = consumers.iter().map(|c| c.assignment()).collect();
        if check(&assignments) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "assignments never settled: {assignments:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn subscribe(client: &Client, spec: SubscriptionSpec) {
    client
        .create_subscription(spec)
        .await
        .expect("create subscription");
}

/// Two consumers split four shards two and two, each receives exactly the records of its own
/// shards, and when one leaves its shards move to the other, which then receives their new
/// records.
#[tokio::test]
async fn consumers_share_shards_and_a_leaver_hands_them_over() {
    let temp = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(temp.path(), 2);
    let client = client(&server).await;
    client
        .create_stream(StreamSpec::new("orders", Durability::Fsync).shard_count(4))
        .await
        .expect("create stream");
    subscribe(
        &client,
        SubscriptionSpec::new("billing", "orders").start(SubscriptionStart::Earliest),
    )
    .await;
    let mut a = client
        .consumer("billing", ConsumerOptions::new("a"))
        .await
        .expect("a joins");
    let mut b = client
        .consumer("billing", ConsumerOptions::new("b"))
        .await
        .expect("b joins");
    wait_for_assignments(&[&a, &b], |shards| {
        shards[0].len() == 2 && shards[1].len() == 2 && shards[0] != shards[1]
    })
    .await;
    let (shards_a, shards_b) = (a.assignment(), b.assignment());

    let produced = produce(&client, "orders", 0, 200).await;
    let for_a = produced
        .iter()
        .filter(|id| shards_a.contains(&id.shard))
        .count();
    let for_b = produced.len() - for_a;
    assert!(for_a > 0 && for_b > 0, "keys spread over the shards");
    let (received_a, received_b) =
        tokio::join!(consume_acking(&mut a, for_a), consume_acking(&mut b, for_b));
    assert!(received_a
        .iter()
        .all(|(id, _)| shards_a.contains(&id.shard)));
    assert!(received_b
        .iter()
        .all(|(id, _)| shards_b.contains(&id.shard)));
    let all: BTreeSet<RecordId> = received_a
        .iter()
        .chain(&received_b)
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(
        all,
        produced.iter().copied().collect(),
        "every record once at least"
    );

    // b leaves cleanly (its acks flushed first): a takes all four shards.
    b.flush_acks().await.expect("b's acks");
    b.leave().await.expect("b leaves");
    wait_for_assignments(&[&a], |shards| shards[0].len() == 4).await;
    let more = produce(&client, "orders", 1000, 100).await;
    let received = consume_acking(&mut a, more.len()).await;
    let got: BTreeSet<RecordId> = received.iter().map(|(id, _)| *id).collect();
    assert!(
        more.iter().all(|id| got.contains(id)),
        "a receives the new records of b's old shards too"
    );
    assert!(
        received.iter().all(|(id, _)| !all.contains(id)),
        "nothing acked before is delivered again"
    );
    let described = client
        .describe_subscription("billing")
        .await
        .expect("describe");
    assert_eq!(described.consumers.len(), 1);
    assert_eq!(described.consumers[0].name, "a");
    assert_eq!(described.shards.len(), 4);
    assert!(described
        .shards
        .iter()
        .all(|shard| shard.consumer.as_deref() == Some("a")));
    a.leave().await.expect("a leaves");
}

/// Records delivered and not acked come back after the ack timeout, marked as redelivered;
/// once acked they stop coming.
#[tokio::test]
async fn unacked_records_come_back_after_the_ack_timeout() {
    let temp = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(temp.path(), 1);
    let client = client(&server).await;
    client
        .create_stream(StreamSpec::new("jobs", Durability::Fsync))
        .await
        .expect("create stream");
    subscribe(
        &client,
        SubscriptionSpec::new("workers", "jobs")
            .start(SubscriptionStart::Earliest)
            .ack_timeout(Duration::from_millis(1000)),
    )
    .await;
    let produced = produce(&client, "jobs", 0, 5).await;
    let mut consumer = client
        .consumer("workers", ConsumerOptions::new("w"))
        .await
        .expect("join");
    let mut first = Vec::new();
    while first.len() < produced.len() {
        let delivery = next_within(&mut consumer, PATIENCE)
            .await
            .expect("delivered");
        assert!(!delivery.is_redelivery());
        first.extend(delivery.ids());
    }
    let delivered_at = Instant::now();
    assert_eq!(first, produced);

    // Not acked: the same records again, flagged, no sooner than the timeout.
    let mut again = Vec::new();
    while again.len() < produced.len() {
        let delivery = next_within(&mut consumer, PATIENCE)
            .await
            .expect("redelivered");
        assert!(delivery.is_redelivery(), "{delivery:?}");
        again.extend(delivery.ids());
        consumer.ack_delivery(&delivery).expect("ack");
    }
    assert!(delivered_at.elapsed() >= Duration::from_millis(900));
    assert_eq!(again, produced);
    let summary = consumer.flush_acks().await.expect("acks accepted");
    assert_eq!(summary.records_acked, 5);

    // Acked: nothing comes back, even after two more timeouts.
    assert!(next_within(&mut consumer, Duration::from_millis(2500))
        .await
        .is_none());
    assert!(consumer.stats().redelivered_records >= 5);
    consumer.leave().await.expect("leave");
}

/// With `max unacked records` = 10 delivery stops at ten unacked records, and each ack lets
/// exactly as many more through.
#[tokio::test]
async fn max_unacked_pauses_delivery_until_acks_arrive() {
    let temp = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(temp.path(), 1);
    let client = client(&server).await;
    client
        .create_stream(StreamSpec::new("events", Durability::Fsync))
        .await
        .expect("create stream");
    subscribe(
        &client,
        SubscriptionSpec::new("slow", "events")
            .start(SubscriptionStart::Earliest)
            .max_unacked_records(10),
    )
    .await;
    let produced = produce(&client, "events", 0, 50).await;
    let mut consumer = client
        .consumer("slow", ConsumerOptions::new("s"))
        .await
        .expect("join");
    let mut held = Vec::new();
    while held.len() < 10 {
        let delivery = next_within(&mut consumer, PATIENCE)
            .await
            .expect("delivered");
        held.extend(delivery.ids());
    }
    assert_eq!(held, produced[..10].to_vec());
    assert!(
        next_within(&mut consumer, Duration::from_millis(1000))
            .await
            .is_none(),
        "paused at ten unacked records"
    );
    for id in &held[..5] {
        consumer.ack(*id).expect("ack");
    }
    consumer.flush_acks().await.expect("acks accepted");
    let mut next = Vec::new();
    while next.len() < 5 {
        let delivery = next_within(&mut consumer, PATIENCE).await.expect("more");
        next.extend(delivery.ids());
    }
    assert_eq!(next, produced[10..15].to_vec(), "exactly five more");
    assert!(next_within(&mut consumer, Duration::from_millis(500))
        .await
        .is_none());
    consumer.leave().await.expect("leave");
}

/// A subscription created at a timestamp starts with the first record at or after it.
#[tokio::test]
async fn a_subscription_created_at_a_timestamp_starts_there() {
    let temp = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(temp.path(), 1);
    let client = client(&server).await;
    client
        .create_stream(StreamSpec::new("ticks", Durability::Fsync))
        .await
        .expect("create stream");
    let producer = client.producer("ticks").expect("producer");
    let t0 = 1_700_000_000_000_i64;
    let mut ids = Vec::new();
    for i in 0..10 {
        let record = Record::at(vec![i as u8], t0 + i * 1000);
        ids.push(producer.send(record).await.expect("append"));
    }
    subscribe(
        &client,
        SubscriptionSpec::new("since", "ticks").start(SubscriptionStart::Timestamp(t0 + 6500)),
    )
    .await;
    let mut consumer = client
        .consumer("since", ConsumerOptions::new("c"))
        .await
        .expect("join");
    let mut timestamps = Vec::new();
    let mut received = Vec::new();
    while received.len() < 3 {
        let delivery = next_within(&mut consumer, PATIENCE)
            .await
            .expect("delivered");
        for item in delivery.records() {
            let (id, record) = item.expect("record");
            received.push(id);
            timestamps.push(record.timestamp_ms());
        }
        consumer.ack_delivery(&delivery).expect("ack");
    }
    assert_eq!(received, ids[7..].to_vec());
    assert_eq!(timestamps, vec![t0 + 7000, t0 + 8000, t0 + 9000]);
    consumer.leave().await.expect("leave");
}

/// Acked progress survives a clean restart exactly: after it, a consumer receives only the
/// records appended since, none of the acked ones again. The committed offsets and the lag
/// show in `describe`.
#[tokio::test]
async fn acked_progress_survives_a_clean_restart() {
    let temp = tempfile::tempdir().expect("temp dir");
    let mut server = TestServer::start(temp.path(), 2);
    let first = client(&server).await;
    first
        .create_stream(StreamSpec::new("audit", Durability::Fsync).shard_count(2))
        .await
        .expect("create stream");
    subscribe(
        &first,
        SubscriptionSpec::new("archive", "audit").start(SubscriptionStart::Earliest),
    )
    .await;
    let before = produce(&first, "audit", 0, 60).await;
    let mut consumer = first
        .consumer("archive", ConsumerOptions::new("x"))
        .await
        .expect("join");
    consume_acking(&mut consumer, before.len()).await;
    consumer.flush_acks().await.expect("acks accepted");
    let described = first
        .describe_subscription("archive")
        .await
        .expect("describe");
    let mut per_shard: BTreeMap<ShardId, u64> = BTreeMap::new();
    for id in &before {
        *per_shard.entry(id.shard).or_default() += 1;
    }
    for shard in &described.shards {
        let count = per_shard.get(&shard.shard).copied().unwrap_or(0);
        assert_eq!(shard.committed_offset.map(|o| o.0), Some(count));
        assert_eq!(shard.end_offset.map(|o| o.0), Some(count), "no lag");
        assert_eq!(shard.unacked_records, Some(0));
    }
    consumer.leave().await.expect("leave");
    first.close().await;

    assert_eq!(server.stop(), Some(0), "a clean stop");
    server = TestServer::start_at(server.data_dir.clone(), server.base_port, 2, Vec::new());
    let second = client(&server).await;
    let after = produce(&second, "audit", 500, 40).await;
    let mut consumer = second
        .consumer("archive", ConsumerOptions::new("x"))
        .await
        .expect("join again");
    let received = consume_acking(&mut consumer, after.len()).await;
    let got: BTreeSet<RecordId> = received.iter().map(|(id, _)| *id).collect();
    assert_eq!(got, after.iter().copied().collect(), "only the new records");
    consumer.leave().await.expect("leave");
}

/// A forced delete ends the joined consumers with `UnknownSubscription`; an unforced one is
/// refused while they are joined; joining a missing subscription, or under a name in use,
/// fails at once with its code.
#[tokio::test]
async fn deletes_and_joins_get_clear_errors() {
    let temp = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(temp.path(), 2);
    let client = client(&server).await;
    client
        .create_stream(StreamSpec::new("mail", Durability::Memory).shard_count(2))
        .await
        .expect("create stream");
    let missing = client
        .create_subscription(SubscriptionSpec::new("x", "nowhere"))
        .await
        .expect_err("no such stream");
    assert_eq!(server_code(&missing), Some(ErrorCode::UnknownStream));
    subscribe(&client, SubscriptionSpec::new("outbox", "mail")).await;
    let unknown = client
        .consumer("nothing", ConsumerOptions::new("c"))
        .await
        .expect_err("no such subscription");
    assert_eq!(server_code(&unknown), Some(ErrorCode::UnknownSubscription));
    let mut consumer = client
        .consumer("outbox", ConsumerOptions::new("c"))
        .await
        .expect("join");
    let twin = client
        .consumer("outbox", ConsumerOptions::new("c"))
        .await
        .expect_err("name in use");
    assert_eq!(server_code(&twin), Some(ErrorCode::ConsumerNameInUse));
    let refused = client
        .delete_subscription("outbox", false)
        .await
        .expect_err("consumers are joined");
    assert_eq!(server_code(&refused), Some(ErrorCode::SubscriptionInUse));
    // Regression (issue 8, item 12): this answered the generic InvalidRequest.
    let refused = client
        .delete_stream("mail", false)
        .await
        .expect_err("the stream has a subscription");
    assert_eq!(
        server_code(&refused),
        Some(ErrorCode::StreamHasSubscriptions)
    );
    assert!(refused.to_string().contains("subscription"), "{refused}");
    client
        .delete_subscription("outbox", true)
        .await
        .expect("forced delete");
    let deadline = Instant::now() + PATIENCE;
    let ended = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, consumer.next()).await {
            Ok(Some(Err(error))) => break error,
            Ok(Some(Ok(_))) => continue,
            Ok(None) => panic!("the consumer ended without an error"),
            Err(_) => panic!("the consumer was not ended"),
        }
    };
    assert_eq!(server_code(&ended), Some(ErrorCode::UnknownSubscription));
    assert!(consumer.next().await.is_none(), "ended for good");
    assert!(client
        .list_subscriptions(None)
        .await
        .expect("list")
        .is_empty());
}

fn server_code(error: &ClientError) -> Option<ErrorCode> {
    error.code()
}
