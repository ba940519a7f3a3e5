//! Subscriptions at the protocol level against the real server, below the SDK: what a client
//! sends that the SDK never would. Creating on a missing stream or twice, joining with a name in
//! use, acking what was never delivered, acking twice, inverted ranges, a Consume by a member
//! the shard is not assigned to, a delete while consumers are joined — each gets its typed
//! error or refusal, the streams stay usable, and the acked records are committed.

// Ranges written by hand here are wire values, inverted ones included on purpose.
#![allow(clippy::single_range_in_vec_init, clippy::reversed_empty_ranges)]

use std::ops::Range;
use std::time::{SystemTime, UNIX_EPOCH};

use runnel_client::{Client, ClientOptions, Durability, Record, StreamSpec};
use runnel_core::batch::iter_batches;
use runnel_core::StreamName;
use runnel_net::protocol::{
    Ack, AckRefusal, Consume, CreateSubscription, DeleteSubscription, DescribeSubscription,
    ErrorCode, JoinSubscription, Request, Response, SubscriptionInfo, SubscriptionStart,
};
use runnel_tests::raw::{connect, error_code, request, RawStream};
use runnel_tests::server::TestServer;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// An SDK client of `server`, trusting its certificate.
async fn client(server: &TestServer) -> Client {
    let options = ClientOptions {
        ca_cert_path: Some(server.certificate()),
        ..ClientOptions::default()
    };
    Client::connect(&server.url(), options)
        .await
        .expect("connect")
}

fn join(consumer: &str) -> Request {
    Request::JoinSubscription(JoinSubscription {
        subscription: "audit".into(),
        consumer: consumer.into(),
        previous_member: None,
        session_timeout_ms: 0,
    })
}

/// `DescribeSubscription` of the test's subscription.
async fn describe(connection: &quinn::Connection) -> SubscriptionInfo {
    let request_describe = Request::DescribeSubscription(DescribeSubscription {
        name: "audit".into(),
    });
    match request(connection, &request_describe, &[]).await {
        Response::SubscriptionInfo(info) => info,
        other => panic!("describe failed: {other:?}"),
    }
}

fn ack(sequence: u64, ranges: Vec<Range<u64>>) -> Request {
    Request::Ack(Ack { sequence, ranges })
}

#[tokio::test]
async fn bad_subscription_input_gets_typed_errors_and_loses_nothing() {
    let temp = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(temp.path(), 2);
    let client = client(&server).await;
    let info = client
        .create_stream(StreamSpec::new("ledger", Durability::Fsync).shard_count(2))
        .await
        .expect("create stream");
    let producer = client.producer("ledger").expect("producer");
    for i in 0..40u32 {
        producer
            .send(Record::at(vec![7; 64], now_ms()).with_key(i.to_le_bytes().to_vec()))
            .await
            .expect("append");
    }
    let (_endpoint, admin) = connect(&server, 0, false).await;

    // A subscription on a missing stream, then a good one, then the same name again.
    let create = |stream: &str| {
        Request::CreateSubscription(CreateSubscription {
            name: "audit".into(),
            stream: StreamName::new(stream).expect("name"),
            ack_timeout_ms: 60_000,
            max_unacked_records: 0,
            start: SubscriptionStart::Earliest,
        })
    };
    assert_eq!(
        error_code(&request(&admin, &create("nowhere"), &[]).await),
        Some(ErrorCode::UnknownStream)
    );
    let created = request(&admin, &create("ledger"), &[]).await;
    let Response::SubscriptionInfo(created) = created else {
        panic!("expected the subscription, got {created:?}");
    };
    assert_eq!(created.max_unacked_records, 10_000, "the default limit");
    assert_eq!(
        error_code(&request(&admin, &create("ledger"), &[]).await),
        Some(ErrorCode::SubscriptionExists)
    );

    // Join: any core redirects to the coordinator core.
    let mut joined = RawStream::open(&admin, &join("worker")).await;
    let (first, _) = joined.next().await.expect("an answer");
    let (connections, mut joined, coordinator) = match first {
        Response::Error(error) if error.code == ErrorCode::NotOwner => {
            let core = error.owner.expect("the coordinator").core as u16;
            let (endpoint, connection) = connect(&server, core, false).await;
            let mut stream = RawStream::open(&connection, &join("worker")).await;
            let (first, _) = stream.next().await.expect("an answer");
            assert!(matches!(first, Response::JoinOk(_)), "{first:?}");
            (Some((endpoint, connection.clone())), stream, connection)
        }
        Response::JoinOk(_) => (None, joined, admin.clone()),
        other => panic!("expected JoinOk or NotOwner, got {other:?}"),
    };
    let (assignment, _) = joined.next().await.expect("the assignment");
    let Response::Assignment(assignment) = assignment else {
        panic!("expected the assignment, got {assignment:?}");
    };
    assert_eq!(assignment.shards.len(), 2, "one member holds every shard");

    // A second consumer with the same name is refused; the first keeps its shards.
    let mut twin = RawStream::open(&coordinator, &join("worker")).await;
    let (answer, _) = twin.next().await.expect("an answer");
    assert_eq!(error_code(&answer), Some(ErrorCode::ConsumerNameInUse));

    // Consume shard A as a member that does not hold it: refused.
    let shard = assignment.shards[0];
    let (_consume_endpoint, owner) = connect(&server, shard.core as u16, false).await;
    let consume = |member: u64| {
        Request::Consume(Consume {
            subscription: "audit".into(),
            shard: shard.shard,
            member,
        })
    };
    let mut stranger = RawStream::open(&owner, &consume(123_456)).await;
    let (answer, _) = stranger.next().await.expect("an answer");
    assert_eq!(error_code(&answer), Some(ErrorCode::NotAssigned));

    // The member's consume stream delivers the shard's records from the earliest.
    let member = {
        let described = describe(&admin).await;
        assert_eq!(described.consumers.len(), 1);
        assert_eq!(described.consumers[0].name, "worker");
        described.consumers[0].member
    };
    assert!(
        info.shards.iter().any(|s| s.id == shard.shard),
        "the assigned shard is one of the stream's"
    );
    let mut consumer = RawStream::open(&owner, &consume(member)).await;
    let (delivery, payload) = consumer.next().await.expect("a delivery");
    let Response::Delivery(delivery) = delivery else {
        panic!("expected a delivery, got {delivery:?}");
    };
    assert_eq!(delivery.shard, shard.shard);
    assert!(!delivery.redelivery);
    assert_eq!(delivery.ranges.first().map(|r| r.start), Some(0));
    let delivered: u64 = delivery.ranges.iter().map(|r| r.end - r.start).sum();
    let in_batches: u64 = iter_batches(&payload)
        .map(|batch| u64::from(batch.expect("a checked batch").header().record_count))
        .sum();
    assert!(
        delivered > 0 && delivered <= in_batches,
        "{delivered} of {in_batches}"
    );
    let end = delivery.ranges.last().map(|r| r.end).expect("a range");

    // Acks: beyond what was delivered, inverted, then a good one, then the same again. The
    // shard holds fewer than 40 records: 40.. is never delivered (the records after `end`
    // may be, in further deliveries sent before the acks are read).
    let beyond = 40..45;
    consumer.send(&ack(1, vec![beyond.clone()])).await;
    consumer.send(&ack(2, vec![3..1])).await;
    consumer.send(&ack(3, vec![0..end])).await;
    consumer.send(&ack(4, vec![0..1])).await;
    let mut results = Vec::new();
    while results.len() < 4 {
        match consumer.next().await.expect("an ack result") {
            (Response::AckResult(result), _) => results.push(result),
            (Response::Delivery(_), _) => {}
            (other, _) => panic!("expected ack results, got {other:?}"),
        }
    }
    assert_eq!(results[0].acked, 0);
    assert_eq!(results[0].refused, vec![(beyond, AckRefusal::NotDelivered)]);
    assert_eq!(results[1].refused, vec![(3..1, AckRefusal::InvalidRange)]);
    assert_eq!(results[2].acked, end);
    assert!(results[2].refused.is_empty());
    assert_eq!(results[2].committed_offset.0, end);
    assert_eq!(results[3].acked, 0);
    assert_eq!(results[3].refused, vec![(0..1, AckRefusal::AlreadyAcked)]);

    // Deleting while a consumer is joined is refused; after it leaves, it works.
    let delete = |force| {
        Request::DeleteSubscription(DeleteSubscription {
            name: "audit".into(),
            force,
        })
    };
    assert_eq!(
        error_code(&request(&admin, &delete(false), &[]).await),
        Some(ErrorCode::SubscriptionInUse)
    );
    let described = describe(&admin).await;
    let progress = described
        .shards
        .iter()
        .find(|s| s.shard == shard.shard)
        .expect("the shard");
    assert_eq!(progress.committed_offset.map(|o| o.0), Some(end));
    assert_eq!(progress.consumer.as_deref(), Some("worker"));
    joined.send(&Request::LeaveSubscription).await;
    loop {
        match joined.next().await {
            Some((Response::LeaveOk, _)) => break,
            Some((Response::Assignment(_), _)) => {}
            other => panic!("expected LeaveOk, got {other:?}"),
        }
    }
    // The consume stream of the member that left ends: the shard was revoked.
    loop {
        match consumer.next().await {
            Some((Response::ConsumeEnd(_), _)) => break,
            Some((Response::Delivery(_), _)) => {}
            other => panic!("expected the end of the consume stream, got {other:?}"),
        }
    }
    assert!(matches!(
        request(&admin, &delete(false), &[]).await,
        Response::DeleteSubscriptionOk(_)
    ));
    drop(connections);

    // The stream's records are all still there.
    let mut count = 0;
    for shard in &info.shards {
        let mut reader = client
            .reader("ledger", shard.id, runnel_client::ReadFrom::Earliest, None)
            .expect("reader");
        while let Some(batch) = reader.next_batch().await.expect("read") {
            count += batch.len();
        }
    }
    assert_eq!(count, 40);
}

/// A member that stops sending heartbeats is expelled after its session timeout, and one whose
/// connection closes is removed at once; either way its shards go to the member that stays.
#[tokio::test]
async fn silent_and_vanished_members_lose_their_shards() {
    let temp = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(temp.path(), 1);
    let client = client(&server).await;
    client
        .create_stream(StreamSpec::new("feed", Durability::Memory).shard_count(4))
        .await
        .expect("create stream");
    client
        .create_subscription(runnel_client::SubscriptionSpec::new("audit", "feed"))
        .await
        .expect("create subscription");
    let staying = client
        .consumer("audit", runnel_client::ConsumerOptions::new("staying"))
        .await
        .expect("join");
    let shards_of = |consumer: &runnel_client::Consumer| consumer.assignment().len();

    // A raw member that never sends a heartbeat, with the shortest session timeout (1 s).
    let (_endpoint, connection) = connect(&server, 0, false).await;
    let silent_join = Request::JoinSubscription(JoinSubscription {
        subscription: "audit".into(),
        consumer: "silent".into(),
        previous_member: None,
        session_timeout_ms: 1_000,
    });
    let mut silent = RawStream::open(&connection, &silent_join).await;
    let (ok, _) = silent.next().await.expect("JoinOk");
    assert!(
        matches!(ok, Response::JoinOk(ref ok) if ok.session_timeout_ms == 1_000),
        "{ok:?}"
    );
    let (assignment, _) = silent.next().await.expect("its assignment");
    assert!(
        matches!(assignment, Response::Assignment(ref a) if a.shards.len() == 2),
        "{assignment:?}"
    );
    wait_until(|| shards_of(&staying) == 2, "the group splits 2 + 2").await;
    // No heartbeat: expelled, told so, and its shards move.
    let expelled = loop {
        match silent.next().await.expect("a frame") {
            (Response::Error(error), _) => break error,
            (Response::Assignment(_), _) => {}
            (other, _) => panic!("expected the expulsion, got {other:?}"),
        }
    };
    assert_eq!(expelled.code, ErrorCode::NotAssigned, "{expelled}");
    wait_until(
        || shards_of(&staying) == 4,
        "the silent member's shards move",
    )
    .await;

    // A member whose connection closes loses its shards without waiting for the timeout.
    let (endpoint, vanishing) = connect(&server, 0, false).await;
    let vanish_join = Request::JoinSubscription(JoinSubscription {
        subscription: "audit".into(),
        consumer: "vanishing".into(),
        previous_member: None,
        session_timeout_ms: 300_000,
    });
    let mut stream = RawStream::open(&vanishing, &vanish_join).await;
    let _ok = stream.next().await.expect("JoinOk");
    wait_until(|| shards_of(&staying) == 2, "the group splits again").await;
    vanishing.close(0u32.into(), b"gone");
    drop(stream);
    drop(endpoint);
    wait_until(
        || shards_of(&staying) == 4,
        "the vanished member's shards move",
    )
    .await;
    staying.leave().await.expect("leave");
}

/// Waits (up to 20 s) until `check` holds.
async fn wait_until(check: impl Fn() -> bool, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !check() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
