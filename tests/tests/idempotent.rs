//! The idempotent producer against the real server, killed with SIGKILL and restarted:
//!
//! - below the SDK, a stamped batch sent again after the restart is recognised from the log
//!   (the server rebuilds its producer table from the batch headers) and answered with its
//!   first offsets, stored once; a sequence that skips ahead is refused;
//! - with the SDK, idempotent producers sending while the server is killed and restarted end
//!   with every send acknowledged and every record stored exactly once: a send whose
//!   connection broke after it was sent is retried, and a copy the server had stored is not
//!   stored again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runnel_client::{Client, ClientOptions, Durability, Record, RecordId, StreamSpec};
use runnel_core::{BatchBuilder, Limits, ProducerStamp, StreamName};
use runnel_net::protocol::{Append, ErrorCode, Request, Response};
use runnel_tests::raw::{connect, error_code, request};
use runnel_tests::sdk::read_all_values;
use runnel_tests::server::TestServer;

async fn client(server: &TestServer, attempts: u32) -> Client {
    let options = ClientOptions {
        ca_cert_path: Some(server.certificate()),
        request_attempts_max: attempts,
        // A killed server never answers: give up on an attempt quickly, and keep retrying
        // for longer than a restart takes.
        request_timeout_ms: 2_000,
        retry_backoff_ms_max: 500,
        idle_timeout_ms: 2_000,
        keep_alive_interval_ms: 500,
        ..ClientOptions::default()
    };
    Client::connect(&server.url(), options)
        .await
        .expect("connect")
}

/// `values` as one batch stamped `producer_id`/`sequence`.
fn stamped(values: &[&str], producer_id: u64, sequence: u64) -> Vec<u8> {
    let mut builder = BatchBuilder::new().producer(ProducerStamp {
        producer_id,
        sequence,
    });
    for value in values {
        builder.push(Record::at(value.as_bytes().to_vec(), 1_700_000_000_000));
    }
    builder.finish(&Limits::DEFAULT).expect("batch").to_vec()
}

/// The offsets an append was answered with, or its error code.
fn answer(response: &Response) -> Result<(u64, u64), Option<ErrorCode>> {
    match response {
        Response::AppendOk(ok) => Ok((ok.base_offset.0, ok.last_offset.0)),
        other => Err(error_code(other)),
    }
}

#[tokio::test]
async fn a_retried_batch_is_recognised_after_sigkill() {
    let temp = tempfile::tempdir().expect("temp dir");
    let mut server = TestServer::start(temp.path(), 1);
    let admin = client(&server, 4).await;
    admin
        .create_stream(StreamSpec::new("idem", Durability::Fsync).shard_count(1))
        .await
        .expect("create");
    let shard = admin.list_shards("idem").await.expect("shards")[0].clone();
    drop(admin);
    let append = Request::Append(Append {
        stream: StreamName::new("idem").expect("name"),
        shard: shard.id,
    });
    let first = stamped(&["a", "b", "c"], 77, 0);
    let second = stamped(&["d"], 77, 3);
    {
        let (_endpoint, connection) = connect(&server, 0, false).await;
        assert_eq!(
            answer(&request(&connection, &append, &first).await),
            Ok((0, 2))
        );
        assert_eq!(
            answer(&request(&connection, &append, &first).await),
            Ok((0, 2))
        );
        assert_eq!(
            answer(&request(&connection, &append, &second).await),
            Ok((3, 3))
        );
    }
    server.kill();
    server.restart();
    let (_endpoint, connection) = connect(&server, 0, false).await;
    assert_eq!(
        answer(&request(&connection, &append, &second).await),
        Ok((3, 3)),
        "the last batch, recognised from the log after the restart"
    );
    assert_eq!(
        answer(&request(&connection, &append, &first).await),
        Ok((0, 2)),
        "an older one too"
    );
    assert_eq!(
        answer(&request(&connection, &append, &stamped(&["x"], 77, 9)).await),
        Err(Some(ErrorCode::OutOfOrderSequence)),
        "a gap is refused"
    );
    assert_eq!(
        answer(&request(&connection, &append, &stamped(&["e"], 77, 4)).await),
        Ok((4, 4)),
        "the producer's next batch"
    );
    let reader = client(&server, 4).await;
    let values = read_all_values(&reader, "idem").await;
    assert_eq!(
        values,
        [b"a", b"b", b"c", b"d", b"e"].map(|v| v.to_vec()),
        "each stored once"
    );
}

const PRODUCERS: usize = 8;

#[tokio::test]
async fn an_idempotent_producer_rides_out_a_sigkill_with_each_record_once() {
    let temp = tempfile::tempdir().expect("temp dir");
    let mut server = TestServer::start(temp.path(), 2);
    let client = client(&server, 40).await;
    client
        .create_stream(StreamSpec::new("idem", Durability::Fsync).shard_count(4))
        .await
        .expect("create");
    let acknowledged: Arc<Mutex<HashMap<Vec<u8>, RecordId>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for index in 0..PRODUCERS {
        let producer = client.producer("idem").expect("producer").idempotent(true);
        let acknowledged = Arc::clone(&acknowledged);
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let value = format!("p{index}-{sent}").into_bytes();
                let record = Record::new(value.clone()).with_key(value.clone());
                let id = producer
                    .send(record)
                    .await
                    .unwrap_or_else(|error| panic!("send {index}/{sent} failed: {error}"));
                acknowledged.lock().expect("lock").insert(value, id);
                sent += 1;
            }
            sent
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.restart();
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::Relaxed);
    let mut sent = 0;
    for task in tasks {
        sent += task.await.expect("every send acknowledged");
    }
    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert_eq!(acknowledged.len() as u64, sent);
    let values = read_all_values(&client, "idem").await;
    let mut counts: HashMap<&Vec<u8>, usize> = HashMap::new();
    for value in &values {
        *counts.entry(value).or_default() += 1;
    }
    let duplicates = counts.values().filter(|&&count| count > 1).count();
    let lost = acknowledged
        .keys()
        .filter(|value| !counts.contains_key(value))
        .count();
    let unacknowledged = counts
        .keys()
        .filter(|value| !acknowledged.contains_key(**value))
        .count();
    eprintln!(
        "idempotent kill test: {sent} sends acknowledged, {} records stored, {duplicates} duplicates, {lost} lost, {unacknowledged} stored unacknowledged",
        values.len()
    );
    assert_eq!(duplicates, 0, "no record stored twice");
    assert_eq!(lost, 0, "no acknowledged record lost");
    assert_eq!(unacknowledged, 0, "every send ended acknowledged");
    assert!(sent > 100, "the producers made progress: {sent}");
}
