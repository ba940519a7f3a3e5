//! Issue 11 items 5 and 6 on real processes: three `runnel-server` nodes on loopback, a stream
//! with three replicas (R=3, W=2, `fsync`).
//!
//! - Readers and subscriptions see only committed records: with both other replicas SIGKILLed,
//!   a record the sequencer stored on its log (its shard lists it) is neither read nor counted
//!   readable by the subscription; any replica's node serves reads of committed records (a
//!   read sent to a replica that is not the sequencer is served, not refused).
//! - An idempotent producer's batch retried after a sequencer failover is answered with the
//!   offsets it got before, and stored once.
//!
//! Needs `cargo build -p runnel-server -p runnel-cli` (the harness runs both binaries).

use std::time::Duration;

use runnel_client::{Client, Durability, Record, StreamSpec, SubscriptionSpec, SubscriptionStart};
use runnel_core::{BatchBuilder, Limits, Offset, ProducerStamp, ShardId, StreamName};
use runnel_net::protocol::{Append, Read, ReadFrom, Request, Response};
use runnel_tests::cluster::{one_cluster_at_a_time, runtime, LocalCluster};
use runnel_tests::raw::{connect_trusting, error_code, request, RawStream};
use runnel_tests::sdk::read_all_values;

/// A raw connection to core 0 of node `k`, trusting the cluster's CA.
async fn connect(cluster: &LocalCluster, k: u64) -> (quinn::Endpoint, quinn::Connection) {
    connect_trusting(cluster.server(k), cluster.ca_path(), 0, false).await
}

/// The subscriptions of the first test (see there why three).
const SUBSCRIPTIONS: [&str; 3] = ["sub-a", "sub-b", "sub-c"];

/// Longest any wait may take before it fails the test (a liveness bound, not a measurement).
const PATIENCE: Duration = Duration::from_secs(60);

fn stream() -> StreamName {
    StreamName::new("r3").expect("name")
}

/// Creates `r3` (one shard, R=3, fsync); returns its shard and the node of its sequencer.
fn create(
    cluster: &mut LocalCluster,
    client: &Client,
    rt: &tokio::runtime::Runtime,
) -> (ShardId, u64) {
    let spec = StreamSpec::new("r3", Durability::Fsync)
        .shard_count(1)
        .replication_factor(3);
    let created = rt.block_on(client.create_stream(spec));
    cluster.or_panic_with_logs(created.map_err(|e| e.to_string()), "create r3");
    let shards = rt.block_on(client.list_shards("r3")).expect("list shards");
    let shard = shards.first().expect("one shard");
    (shard.id, shard.node)
}

/// `values` as one batch, stamped `producer_id`/`sequence` (0/0: not idempotent).
fn batch(values: &[&str], producer_id: u64, sequence: u64) -> Vec<u8> {
    let mut builder = BatchBuilder::new().producer(ProducerStamp {
        producer_id,
        sequence,
    });
    for value in values {
        builder.push(Record::at(value.as_bytes().to_vec(), 1_700_000_000_000));
    }
    builder.finish(&Limits::DEFAULT).expect("batch").to_vec()
}

/// A whole non-tailing read from the earliest offset on node `k` core 0: where it ended, or
/// the server's error.
async fn read_end_at(cluster: &LocalCluster, k: u64, shard: ShardId) -> Result<Offset, String> {
    let (_endpoint, connection) = connect(cluster, k).await;
    let read = Request::Read(Read {
        stream: stream(),
        shard,
        from: ReadFrom::Earliest,
        until: None,
        max_bytes: 0,
        tail: false,
    });
    let mut raw = RawStream::open(&connection, &read).await;
    loop {
        match raw.next().await {
            Some((Response::ReadChunk(_), _)) => {}
            Some((Response::ReadEnd(end), _)) => return Ok(end.next_offset),
            Some((other, _)) => return Err(format!("read answered {:?}", error_code(&other))),
            None => return Err("read stream ended without ReadEnd".into()),
        }
    }
}

/// Polls `check` until it returns `Some` (at most [`PATIENCE`]).
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("after {PATIENCE:?}: {what}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Regression (issue 11, contract point 3): a subscription's readable end was the sequencer
/// log's durable end, so a record stored there but never committed could be delivered. And a
/// read sent to a replica that is not the sequencer was refused (`NotOwner`).
#[test]
fn an_uncommitted_record_is_neither_read_nor_readable_by_a_subscription() {
    let _serial = one_cluster_at_a_time();
    let mut cluster = LocalCluster::start(3, 1);
    cluster.wait_running(3, PATIENCE);
    let rt = runtime();
    let client = rt.block_on(cluster.client(1));
    let (shard, sequencer) = create(&mut cluster, &client, &rt);
    // Three subscriptions: a subscription is described by its coordinator, the node at its
    // id modulo the node count, so one of them is coordinated by the sequencer's node (the
    // only one left running below).
    for name in SUBSCRIPTIONS {
        let subscribed = rt.block_on(client.create_subscription(
            SubscriptionSpec::new(name, "r3").start(SubscriptionStart::Earliest),
        ));
        cluster.or_panic_with_logs(
            subscribed.map_err(|e| e.to_string()),
            "create a subscription",
        );
    }
    let others: Vec<u64> = cluster.ids().filter(|&k| k != sequencer).collect();
    let at_sequencer = rt.block_on(cluster.client(sequencer));
    let producer = at_sequencer.producer("r3").expect("producer");
    for i in 0..20 {
        let value = format!("committed {i}").into_bytes();
        // The shard's sequencer recovers first: "recovering, retry".
        let sent = rt.block_on(eventually("an append acknowledged", || async {
            producer.send(Record::new(value.clone())).await.ok()
        }));
        cluster.or_panic_with_logs(sent, "append");
    }
    // Every replica serves reads of the committed records (its committed offset reaches 20
    // within a tick of the sequencer's).
    for &replica in &others {
        let served = rt.block_on(eventually("a replica serves the 20 records", || async {
            (read_end_at(&cluster, replica, shard).await == Ok(Offset(20))).then_some(())
        }));
        cluster.or_panic_with_logs(served, "read from a replica");
    }

    // Both other replicas gone: the sequencer stores the next record on its log, and no
    // write quorum ever confirms it (nor can metadata elect another sequencer).
    for &other in &others {
        cluster.kill(other);
    }
    let uncommitted = rt.block_on(connect(&cluster, sequencer));
    let append = Request::Append(Append {
        stream: stream(),
        shard,
    });
    let pending = rt.spawn(async move {
        let (_endpoint, connection) = uncommitted;
        request(&connection, &append, &batch(&["never committed"], 0, 0)).await
    });
    let stored = rt.block_on(eventually(
        "the sequencer's log holds record 20",
        || async {
            let shards = at_sequencer.list_shards("r3").await.ok()?;
            (shards.first()?.next_offset? == Offset(21)).then_some(())
        },
    ));
    cluster.or_panic_with_logs(stored, "the uncommitted record on the sequencer's log");
    assert_eq!(
        rt.block_on(read_end_at(&cluster, sequencer, shard)),
        Ok(Offset(20)),
        "a reader stops at the committed offset"
    );
    let mut described = 0;
    for name in SUBSCRIPTIONS {
        // Those coordinated by a killed node cannot be described now.
        let Ok(info) = rt.block_on(at_sequencer.describe_subscription(name)) else {
            continue;
        };
        described += 1;
        let end = info.shards.first().and_then(|s| s.end_offset);
        assert_eq!(
            end,
            Some(Offset(20)),
            "{name}: the subscription's readable end is the committed offset"
        );
    }
    assert!(described > 0, "no subscription could be described");
    // Unanswered (no quorum) until its 10 s pass: not waited for.
    pending.abort();
}

/// Regression (issue 11, item 6): the replicated append path skipped the producer table, so a
/// stamped batch retried after a sequencer failover was stored a second time.
#[test]
fn a_stamped_batch_retried_after_a_failover_keeps_its_offsets() {
    let _serial = one_cluster_at_a_time();
    let mut cluster = LocalCluster::start(3, 1);
    cluster.wait_running(3, PATIENCE);
    let rt = runtime();
    let client = rt.block_on(cluster.client(1));
    let (shard, sequencer) = create(&mut cluster, &client, &rt);
    let append = Request::Append(Append {
        stream: stream(),
        shard,
    });
    let first = batch(&["a", "b"], 77, 0);
    let second = batch(&["c"], 77, 2);
    rt.block_on(async {
        let (_endpoint, connection) = connect(&cluster, sequencer).await;
        for (bytes, want) in [(&first, (0, 1)), (&second, (2, 2)), (&second, (2, 2))] {
            // The shard's sequencer recovers first: "recovering, retry".
            let answered = eventually("an append acknowledged", || async {
                match request(&connection, &append, bytes).await {
                    Response::AppendOk(ok) => Some((ok.base_offset.0, ok.last_offset.0)),
                    _ => None,
                }
            })
            .await;
            assert_eq!(answered, Ok(want));
        }
    });
    // Every replica learns that the three batches are committed (within a tick), so the
    // next epoch's recovery finds them committed: a retry of an adopted entry not yet
    // committed is answered only after the epoch's first fresh append commits it.
    for replica in cluster.ids().filter(|&k| k != sequencer) {
        let known = rt.block_on(eventually(
            "a replica knows offsets below 3 committed",
            || async {
                (read_end_at(&cluster, replica, shard).await == Ok(Offset(3))).then_some(())
            },
        ));
        cluster.or_panic_with_logs(known, "replicas committed");
    }
    cluster.kill(sequencer);
    let other = cluster
        .ids()
        .find(|&k| k != sequencer)
        .expect("another node");
    let at_other = rt.block_on(cluster.client(other));
    let moved = rt.block_on(eventually("metadata names a new sequencer", || async {
        let shards = at_other.list_shards("r3").await.ok()?;
        let node = shards.first()?.node;
        (node != sequencer).then_some(node)
    }));
    let new_sequencer = cluster.or_panic_with_logs(moved, "failover");
    let retried = rt.block_on(async {
        let (_endpoint, connection) = connect(&cluster, new_sequencer).await;
        eventually("the retry is answered", || async {
            match request(&connection, &append, &second).await {
                Response::AppendOk(ok) => Some((ok.base_offset.0, ok.last_offset.0)),
                // Recovering, or its table not rebuilt yet: retry.
                _ => None,
            }
        })
        .await
    });
    let retried = cluster.or_panic_with_logs(retried, "retry after the failover");
    assert_eq!(retried, (2, 2), "the retry gets its original offsets");
    let next = rt.block_on(async {
        let (_endpoint, connection) = connect(&cluster, new_sequencer).await;
        request(&connection, &append, &batch(&["d"], 77, 3)).await
    });
    assert!(
        matches!(&next, Response::AppendOk(ok) if ok.base_offset.0 == 3),
        "the producer's next batch follows: {next:?}"
    );
    let values = rt.block_on(read_all_values(&at_other, "r3"));
    assert_eq!(
        values,
        [b"a", b"b", b"c", b"d"].map(|v| v.to_vec()),
        "each batch stored once"
    );
}
