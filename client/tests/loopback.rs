//! The SDK over real QUIC against an in-process stand-in node (`support/mod.rs`): proves the
//! handshake, lazy connections to a second core, paging, routing to owner cores, reads of
//! what was written, reconnection after the node drops its connections, that an append whose
//! answer is lost is reported as `OutcomeUnknown` and never resent, and TLS trust.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use runnel_client::{
    BufferedProducerConfig, Client, ClientError, ClientOptions, Durability, ErrorCode, Offset,
    ReadEndReason, ReadFrom, Record, ShardId, StreamSpec,
};
use support::{connect, options, MockNode};

/// A guard against hangs, not a performance bound.
const TEST_DEADLINE: Duration = Duration::from_secs(60);

fn keyed(index: usize) -> Record {
    Record::at(format!("value-{index}").into_bytes(), index as i64)
        .with_key(format!("user-{}", index % 13).into_bytes())
}

/// Every record of `stream`, read shard by shard: id -> value.
async fn read_all(client: &Client, stream: &str) -> BTreeMap<String, Vec<u8>> {
    let mut all = BTreeMap::new();
    for shard in client.list_shards(stream).await.expect("shards") {
        let mut reader = client
            .reader(stream, shard.id, ReadFrom::Earliest, None)
            .expect("reader");
        while let Some(batch) = reader.next_batch().await.expect("reads") {
            for (id, record) in batch.to_records().expect("valid") {
                all.insert(id.to_string(), record.value);
            }
        }
        assert_eq!(
            reader.end().map(|end| end.reason),
            Some(ReadEndReason::CaughtUp)
        );
    }
    all
}

/// Admin calls, with paging of streams and shards, and typed server errors.
#[tokio::test]
async fn admin_calls_work_and_follow_pages() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let node = MockNode::start().await;
        let client = connect(&node).await;
        assert_eq!(client.server_info().core_count, support::CORES);
        for name in ["alpha", "beta", "gamma"] {
            client
                .create_stream(StreamSpec::new(name, Durability::Fsync).shard_count(5))
                .await
                .expect("created");
        }
        let exists = client
            .create_stream(StreamSpec::new("beta", Durability::Fsync))
            .await
            .expect_err("exists");
        assert_eq!(exists.code(), Some(ErrorCode::StreamExists));
        let names: Vec<String> = client
            .list_streams()
            .await
            .expect("listed")
            .into_iter()
            .map(|stream| stream.name.to_string())
            .collect();
        assert_eq!(names, vec!["alpha", "beta", "gamma"], "three pages of one");
        let described = client.describe_stream("beta").await.expect("described");
        assert_eq!(described.shards.len(), 5, "completed with ListShards pages");
        assert!(!described.shards_truncated);
        assert_eq!(client.list_shards("beta").await.expect("listed").len(), 5);
        let status = client.node_status().await.expect("status");
        assert_eq!(status.cores.len(), 2);
        // Trim goes to the owner core (shard 2 of alpha lives on core 1).
        let start = client
            .trim("alpha", ShardId(2), Offset(0))
            .await
            .expect("trimmed");
        assert_eq!(start, Offset(0));
        client.delete_stream("gamma", false).await.expect("deleted");
        let missing = client.describe_stream("gamma").await.expect_err("gone");
        assert_eq!(missing.code(), Some(ErrorCode::UnknownStream));
        assert!(matches!(
            client.describe_stream("bad name").await,
            Err(ClientError::InvalidArgument { .. })
        ));
        client.close().await;
    })
    .await
    .expect("within the deadline");
}

/// Records sent by both producers land on the shards their keys hash to, on both cores, and
/// read back exactly; a reader from a mid-batch offset and to a bound gets exactly that range.
#[tokio::test]
async fn produced_records_read_back_exactly() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let node = MockNode::start().await;
        let client = connect(&node).await;
        client
            .create_stream(StreamSpec::new("orders", Durability::Fsync).shard_count(4))
            .await
            .expect("created");
        let producer = client.producer("orders").expect("producer");
        let records: Vec<Record> = (0..100).map(keyed).collect();
        let ids = producer.send_batch(records).await.expect("stored");
        let buffered = client
            .buffered_producer("orders", BufferedProducerConfig::default())
            .expect("producer");
        let mut futures = Vec::new();
        for index in 100..400 {
            futures.push(buffered.send(keyed(index)).await.expect("queued"));
        }
        buffered.close().await.expect("closed");
        let mut all_ids = ids;
        for future in futures {
            all_ids.push(future.await.expect("stored"));
        }
        let stored = read_all(&client, "orders").await;
        assert_eq!(stored.len(), 400);
        for (index, id) in all_ids.iter().enumerate() {
            assert_eq!(
                stored.get(&id.to_string()),
                Some(&format!("value-{index}").into_bytes()),
                "{id}"
            );
        }
        let shards_used: std::collections::BTreeSet<ShardId> =
            all_ids.iter().map(|id| id.shard).collect();
        assert_eq!(shards_used.len(), 4, "13 keys over 4 shards on 2 cores");

        // Offsets 3..7 of shard 1: whole batches come, the rest is skipped.
        let mut reader = client
            .reader(
                "orders",
                ShardId(1),
                ReadFrom::Offset(Offset(3)),
                Some(Offset(7)),
            )
            .expect("reader");
        let mut offsets = Vec::new();
        while let Some(batch) = reader.next_batch().await.expect("reads") {
            offsets.extend(
                batch
                    .to_records()
                    .expect("valid")
                    .iter()
                    .map(|(id, _)| id.offset.0),
            );
        }
        assert_eq!(offsets, vec![3, 4, 5, 6]);
        assert_eq!(
            reader.end().map(|end| end.reason),
            Some(ReadEndReason::UntilReached)
        );
    })
    .await
    .expect("within the deadline");
}

/// After the node drops every connection, requests reconnect; an append whose connection
/// dies after it was sent is OutcomeUnknown and is not sent again; Busy is retried.
#[tokio::test]
async fn reconnects_and_never_resends_an_append_that_may_be_stored() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let node = MockNode::start().await;
        let client = connect(&node).await;
        client
            .create_stream(StreamSpec::new("events", Durability::Memory))
            .await
            .expect("created");
        let producer = client.producer("events").expect("producer");
        producer.send(keyed(0)).await.expect("stored");

        node.close_connections();
        tokio::time::sleep(Duration::from_millis(50)).await;
        client.describe_stream("events").await.expect("reconnected");
        producer
            .send(keyed(1))
            .await
            .expect("stored after reconnecting");

        node.drop_next_append
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let error = producer.send(keyed(2)).await.expect_err("answer lost");
        assert!(
            matches!(error, ClientError::OutcomeUnknown { .. }),
            "{error:?}"
        );
        assert!(!error.is_retriable());
        assert_eq!(read_all(&client, "events").await.len(), 2, "not resent");

        node.busy_next
            .store(true, std::sync::atomic::Ordering::SeqCst);
        producer.send(keyed(3)).await.expect("Busy is retried");
        assert_eq!(read_all(&client, "events").await.len(), 3);
    })
    .await
    .expect("within the deadline");
}

/// A split on the server is followed: the refused batch is routed to the children.
#[tokio::test]
async fn appends_follow_a_split() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let node = MockNode::start().await;
        let client = connect(&node).await;
        client
            .create_stream(StreamSpec::new("split", Durability::Fsync))
            .await
            .expect("created");
        let producer = client.producer("split").expect("producer");
        producer.send(keyed(0)).await.expect("stored");
        node.split("split", ShardId(1));
        let ids = producer
            .send_batch((1..20).map(keyed).collect())
            .await
            .expect("stored on the children");
        assert!(ids.iter().all(|id| id.shard != ShardId(1)));
    })
    .await
    .expect("within the deadline");
}

/// A certificate the client does not trust fails as a TLS error; skipping verification
/// (explicitly) connects.
#[tokio::test]
async fn tls_trust_is_enforced() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let node = MockNode::start().await;
        let other = MockNode::start().await;
        let wrong = ClientOptions {
            ca_cert_path: Some(other.cert_path.clone()),
            request_attempts_max: 1,
            ..ClientOptions::default()
        };
        let refused = Client::connect(&node.url(), wrong)
            .await
            .expect_err("untrusted");
        assert!(matches!(refused, ClientError::Tls { .. }), "{refused:?}");
        let insecure = ClientOptions {
            insecure_skip_verify: true,
            ..ClientOptions::default()
        };
        Client::connect(&node.url(), insecure)
            .await
            .expect("connects without verification");
        // Nobody listens there: the connect deadline passes, whatever the attempts.
        let impatient = ClientOptions {
            connect_timeout_ms: 200,
            request_attempts_max: 2,
            ..options(&node)
        };
        let nobody = Client::connect("runnel://127.0.0.1:1", impatient)
            .await
            .expect_err("no node");
        assert!(
            matches!(
                nobody,
                ClientError::Unreachable {
                    timeout_ms: 200,
                    ..
                }
            ),
            "{nobody:?}"
        );
    })
    .await
    .expect("within the deadline");
}
