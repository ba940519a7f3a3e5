//! Issue 10's acceptance on real processes: three `runnel-server` nodes on loopback form one
//! cluster. Metadata written through one node is seen through every node; SIGKILL of the
//! metadata leader, three times under a stream of creates and deletes, loses no acknowledged
//! change, the group elects again and a restarted node catches up; a node paused (SIGSTOP)
//! past `cluster.unavailable_after_ms` is marked `Unavailable` (or `Dead`) and `Running` again
//! after SIGCONT; records produced through the SDK to shards on all three nodes are read back
//! exactly once, and delivered exactly once to the consumers of a subscription whose
//! coordinator, shards and consumers are on different nodes.
//!
//! Needs `cargo build -p runnel-server -p runnel-cli` (the harness runs both binaries).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runnel_client::{
    Client, ClientOptions, Consumer, ConsumerOptions, Durability, Record, RecordId, ShardId,
    StreamSpec, SubscriptionSpec, SubscriptionStart,
};
use runnel_tests::cluster::{one_cluster_at_a_time, poll, runtime, LocalCluster};

/// Longest any wait in these tests may take before it fails the test: a liveness bound far
/// above what the defaults need (an election takes well under 2 s).
const PATIENCE: Duration = Duration::from_secs(60);

/// The stream names one node lists, or why it did not answer.
async fn stream_names(client: &Client) -> Result<BTreeSet<String>, String> {
    let streams = client.list_streams().await.map_err(|e| e.to_string())?;
    Ok(streams.into_iter().map(|s| s.name.to_string()).collect())
}

/// Three nodes start from the harness and each lists all three `Running`, with one leader of
/// the metadata group that every node names; a stream and a subscription created through node
/// 2 are listed by nodes 1 and 3.
#[test]
fn metadata_written_through_one_node_is_seen_by_every_node() {
    let _serial = one_cluster_at_a_time();
    let mut cluster = LocalCluster::start(3, 2);
    let nodes = cluster.wait_running(3, PATIENCE);
    assert_eq!(
        nodes.iter().map(|n| n.id).collect::<BTreeSet<_>>(),
        cluster.ids().collect::<BTreeSet<_>>(),
        "node list shows exactly the three nodes: {nodes:?}"
    );
    // Every node names the same leader (none may be known for a moment after the start).
    let leader = cluster.wait_leader(None, PATIENCE);
    assert!(cluster.ids().contains(&leader), "leader {leader}");

    let rt = runtime();
    let through_2 = rt.block_on(cluster.client(2));
    rt.block_on(
        through_2.create_stream(StreamSpec::new("orders", Durability::Fsync).shard_count(3)),
    )
    .expect("create a stream through node 2");
    rt.block_on(through_2.create_subscription(
        SubscriptionSpec::new("billing", "orders").start(SubscriptionStart::Earliest),
    ))
    .expect("create a subscription through node 2");

    for k in [1, 3] {
        let client = rt.block_on(cluster.client(k));
        let seen = poll(PATIENCE, || {
            rt.block_on(async {
                let streams = stream_names(&client).await?;
                if !streams.contains("orders") {
                    return Err(format!("node {k} lists streams {streams:?}"));
                }
                let subscriptions = client
                    .list_subscriptions(None)
                    .await
                    .map_err(|e| e.to_string())?;
                let names: Vec<String> = subscriptions.iter().map(|s| s.name.clone()).collect();
                if !names.iter().any(|n| n == "billing") {
                    return Err(format!("node {k} lists subscriptions {names:?}"));
                }
                let described = client
                    .describe_stream("orders")
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(described.shard_count)
            })
        });
        let shard_count = cluster.or_panic_with_logs(seen, "metadata not seen");
        assert_eq!(shard_count, 3, "node {k} describes the stream as created");
    }
    // The leader named the cluster, and every node's peer transport took that id.
    let named = poll(PATIENCE, || {
        let ids: BTreeSet<Option<String>> = cluster
            .ids()
            .map(|k| cluster_id_logged(&cluster.log(k)))
            .collect();
        match ids.iter().next() {
            Some(Some(id)) if ids.len() == 1 => Ok(id.clone()),
            _ => Err(format!("cluster ids logged by the nodes: {ids:?}")),
        }
    });
    cluster.or_panic_with_logs(named, "one cluster id on every node");
}

/// The last cluster id a node's log names (`cluster id cluster=<16 hex digits>`).
fn cluster_id_logged(log: &str) -> Option<String> {
    log.lines()
        .rev()
        .find(|line| line.contains("cluster id"))
        .and_then(|line| {
            let at = line.find("cluster=")? + "cluster=".len();
            let id: String = line[at..]
                .trim_start_matches('"')
                .chars()
                .take_while(char::is_ascii_hexdigit)
                .collect();
            (id.len() == 16).then_some(id)
        })
}

/// What the churn task learned about each change it asked for: acknowledged, or sent without
/// an answer (the change may or may not have happened).
#[derive(Debug, Default)]
struct ChurnLog {
    created: BTreeSet<String>,
    create_unknown: BTreeSet<String>,
    deleted: BTreeSet<String>,
    delete_unknown: BTreeSet<String>,
}

impl ChurnLog {
    /// Whether `listed` (one node's `churn-` streams) is a state the log allows: every
    /// acknowledged create not since deleted is there, no acknowledged delete is, and nothing
    /// never asked for is.
    fn check(&self, listed: &BTreeSet<String>) -> Result<(), String> {
        let must: BTreeSet<&String> = self
            .created
            .iter()
            .filter(|name| !self.deleted.contains(*name) && !self.delete_unknown.contains(*name))
            .collect();
        let missing: Vec<&&String> = must
            .iter()
            .filter(|name| !listed.contains(**name))
            .collect();
        let resurrected: Vec<&String> = listed.intersection(&self.deleted).collect();
        let invented: Vec<&String> = listed
            .iter()
            .filter(|name| !self.created.contains(*name) && !self.create_unknown.contains(*name))
            .collect();
        if missing.is_empty() && resurrected.is_empty() && invented.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "acknowledged creates missing: {missing:?}; acknowledged deletes present: \
                 {resurrected:?}; never created: {invented:?}"
            ))
        }
    }
}

/// Shared between the test and the churn thread.
struct Churn {
    urls: Vec<String>,
    options: ClientOptions,
    /// Nodes the test killed: the churn thread sends them nothing.
    down: Vec<AtomicBool>,
    stop: AtomicBool,
    acknowledged: AtomicUsize,
    log: Mutex<ChurnLog>,
}

impl Churn {
    /// Waits until the churn thread has had a few more changes acknowledged: the metadata
    /// group accepts changes.
    fn wait_for_changes(&self, cluster: &mut LocalCluster, when: &str) {
        const CHANGES: usize = 5;
        let before = self.acknowledged.load(Ordering::SeqCst);
        let progressed = poll(PATIENCE, || {
            let now = self.acknowledged.load(Ordering::SeqCst);
            if now >= before + CHANGES {
                Ok(())
            } else {
                Err(format!(
                    "{when}: {} of {CHANGES} changes acknowledged",
                    now - before
                ))
            }
        });
        cluster.or_panic_with_logs(progressed, "the metadata group accepts no change");
    }
}

/// Creates `churn-<i>` streams and deletes every third acknowledged one, round-robin over the
/// nodes not down, one request at a time and without SDK retries (so an error means exactly
/// "outcome unknown"), until told to stop.
fn churn(shared: &Churn) {
    let rt = runtime();
    rt.block_on(async {
        let mut clients: Vec<Option<Client>> = shared.urls.iter().map(|_| None).collect();
        let mut deletable: Vec<String> = Vec::new();
        let mut i = 0usize;
        while !shared.stop.load(Ordering::SeqCst) {
            i += 1;
            let k = i % shared.urls.len();
            if shared.down[k].load(Ordering::SeqCst) {
                continue;
            }
            if clients[k].is_none() {
                match Client::connect(&shared.urls[k], shared.options.clone()).await {
                    Ok(client) => clients[k] = Some(client),
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                }
            }
            let Some(client) = clients[k].as_ref() else {
                continue;
            };
            let result = if i.is_multiple_of(3) && !deletable.is_empty() {
                let name = deletable.remove(0);
                let result = client.delete_stream(&name, false).await;
                let mut log = shared.log.lock().expect("churn log");
                match result {
                    Ok(()) => log.deleted.insert(name),
                    Err(_) => log.delete_unknown.insert(name),
                };
                result.map(|_| ())
            } else {
                let name = format!("churn-{i}");
                let spec = StreamSpec::new(name.as_str(), Durability::Fsync).shard_count(1);
                let result = client.create_stream(spec).await;
                let mut log = shared.log.lock().expect("churn log");
                match result {
                    Ok(_) => {
                        log.created.insert(name.clone());
                        deletable.push(name);
                    }
                    Err(_) => {
                        log.create_unknown.insert(name);
                    }
                }
                result.map(|_| ())
            };
            match result {
                Ok(()) => {
                    shared.acknowledged.fetch_add(1, Ordering::SeqCst);
                }
                // The node may be gone or electing: reconnect next time, after a breath.
                Err(_) => {
                    clients[k] = None;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
}

/// SIGKILL the metadata leader three times while a thread creates and deletes streams through
/// the other nodes and records every acknowledged change. After each kill the survivors agree
/// on a new leader and acknowledge changes again; the killed node restarts and rejoins. At the
/// end every node lists the same `churn-` streams, and that list keeps every acknowledged
/// create not deleted, no acknowledged delete, and nothing never asked for (changes whose
/// answer was lost may have happened or not).
#[test]
fn killing_the_metadata_leader_loses_no_acknowledged_change() {
    let _serial = one_cluster_at_a_time();
    let mut cluster = LocalCluster::start(3, 1);
    cluster.wait_running(3, PATIENCE);
    let shared = Arc::new(Churn {
        urls: cluster.ids().map(|k| cluster.url(k)).collect(),
        options: ClientOptions {
            connect_timeout_ms: 2_000,
            request_timeout_ms: 5_000,
            request_attempts_max: 1,
            ..cluster.client_options()
        },
        down: cluster.ids().map(|_| AtomicBool::new(false)).collect(),
        stop: AtomicBool::new(false),
        acknowledged: AtomicUsize::new(0),
        log: Mutex::new(ChurnLog::default()),
    });
    let writer = {
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || churn(&shared))
    };
    let index = |k: u64| usize::try_from(k - 1).expect("a node index");

    let mut leaders = Vec::new();
    for round in 1..=3 {
        let leader = cluster.wait_leader(None, PATIENCE);
        shared.wait_for_changes(&mut cluster, &format!("round {round}, before the kill"));

        shared.down[index(leader)].store(true, Ordering::SeqCst);
        cluster.kill(leader);
        let next = cluster.wait_leader(Some(leader), PATIENCE);
        assert_ne!(next, leader);
        shared.wait_for_changes(
            &mut cluster,
            &format!("round {round}, since leader {leader} was killed"),
        );

        cluster.restart(leader);
        shared.down[index(leader)].store(false, Ordering::SeqCst);
        cluster.wait_running(3, PATIENCE);
        leaders.push(leader);
    }
    shared.stop.store(true, Ordering::SeqCst);
    writer.join().expect("the churn thread");
    let log = std::mem::take(&mut *shared.log.lock().expect("churn log"));
    assert!(
        !log.created.is_empty() && !log.deleted.is_empty(),
        "the churn acknowledged creates and deletes: {log:?}"
    );

    let rt = runtime();
    let mut lists = BTreeMap::new();
    for k in cluster.ids() {
        let client = rt.block_on(cluster.client(k));
        // A restarted node may still be catching up: wait until its list is a state the log
        // allows, then compare every node's list.
        let listed = poll(PATIENCE, || {
            let names = rt.block_on(stream_names(&client))?;
            let churned: BTreeSet<String> = names
                .into_iter()
                .filter(|n| n.starts_with("churn-"))
                .collect();
            log.check(&churned).map(|()| churned)
        });
        let listed = cluster.or_panic_with_logs(
            listed,
            &format!("node {k}'s streams (leaders killed: {leaders:?})"),
        );
        lists.insert(k, listed);
    }
    let first = lists.get(&1).cloned().unwrap_or_default();
    for (k, listed) in &lists {
        assert_eq!(
            listed, &first,
            "node {k} lists other streams than node 1 (unknown outcomes: creates {:?}, deletes {:?})",
            log.create_unknown, log.delete_unknown
        );
    }
}

/// A node paused with SIGSTOP past `cluster.unavailable_after_ms` (1 s here) is shown
/// `Unavailable` (or `Dead`) by the others, and `Running` again once resumed.
#[test]
fn a_paused_node_is_unavailable_then_running_after_sigcont() {
    let _serial = one_cluster_at_a_time();
    let mut cluster = LocalCluster::start(3, 1);
    cluster.wait_running(3, PATIENCE);
    cluster.pause(3);
    for k in [1, 2] {
        let marked = poll(PATIENCE, || {
            let nodes = cluster.node_list(k)?;
            match nodes.iter().find(|n| n.id == 3) {
                Some(node) if node.state == "Unavailable" || node.state == "Dead" => Ok(()),
                other => Err(format!("node {k} shows node 3 as {other:?}")),
            }
        });
        cluster.or_panic_with_logs(marked, "the paused node was not marked");
    }
    cluster.resume(3);
    let nodes = cluster.wait_running(3, PATIENCE);
    assert!(nodes.iter().all(|n| n.state == "Running"), "{nodes:?}");
}

/// A stream with six shards on three nodes has shards on every node; records produced
/// through node 1 reach shards on every node, and readers through nodes 2 and 3 find exactly
/// the acknowledged records, each once.
#[test]
fn records_on_shards_of_every_node_are_read_back_exactly_once() {
    let _serial = one_cluster_at_a_time();
    let mut cluster = LocalCluster::start(3, 2);
    cluster.wait_running(3, PATIENCE);
    let rt = runtime();
    let (producer_client, reader_2, reader_3) = rt.block_on(async {
        (
            cluster.client(1).await,
            cluster.client(2).await,
            cluster.client(3).await,
        )
    });
    let acknowledged = spread_over_every_node(&cluster, &rt, &producer_client);
    let mut want: Vec<Vec<u8>> = acknowledged.into_values().collect();
    want.sort();
    for (node, client) in [(2, &reader_2), (3, &reader_3)] {
        let mut read = rt.block_on(runnel_tests::sdk::read_all_values(client, "spread"));
        read.sort();
        assert_eq!(
            read, want,
            "readers through node {node} find exactly the acknowledged records, each once"
        );
    }
}

/// Creates the stream `spread` of six shards through `client`, checks they are placed on
/// every node, appends 600 numbered records through `client` and checks they went to shards on
/// every node; returns each acknowledged record's id and value.
fn spread_over_every_node(
    cluster: &LocalCluster,
    rt: &tokio::runtime::Runtime,
    client: &Client,
) -> BTreeMap<RecordId, Vec<u8>> {
    rt.block_on(client.create_stream(StreamSpec::new("spread", Durability::Fsync).shard_count(6)))
        .expect("create the stream");
    let shards = rt
        .block_on(client.list_shards("spread"))
        .expect("list shards");
    let owners: BTreeSet<u64> = shards.iter().map(|s| s.node).collect();
    assert_eq!(
        owners,
        cluster.ids().collect::<BTreeSet<_>>(),
        "the shards are placed on every node: {shards:?}"
    );
    let acknowledged = rt.block_on(produce_numbered(client, "spread", 0..600));
    let used: BTreeSet<u64> = acknowledged
        .keys()
        .filter_map(|id| shards.iter().find(|s| s.id == id.shard).map(|s| s.node))
        .collect();
    assert_eq!(used.len(), 3, "records went to shards on every node");
    acknowledged
}

/// Appends `keys` (one request each, key = the number, value `record-<number>`) through
/// `client`; returns each acknowledged record's id and value.
async fn produce_numbered(
    client: &Client,
    stream: &str,
    keys: std::ops::Range<u32>,
) -> BTreeMap<RecordId, Vec<u8>> {
    let producer = client.producer(stream).expect("producer");
    let mut acknowledged = BTreeMap::new();
    for i in keys {
        let value = format!("record-{i}").into_bytes();
        let record = Record::new(value.clone()).with_key(i.to_le_bytes().to_vec());
        let id = producer.send(record).await.expect("append");
        acknowledged.insert(id, value);
    }
    acknowledged
}

/// Receives and acks deliveries until `want` distinct records arrived (or `PATIENCE` passed:
/// then it returns what it has, for the caller's assertion to show); returns every record
/// received, repeats included, with its value.
async fn consume_values(consumer: &mut Consumer, want: usize) -> Vec<(RecordId, Vec<u8>)> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut distinct = BTreeSet::new();
    let mut received = Vec::new();
    while distinct.len() < want {
        let Ok(next) = tokio::time::timeout_at(deadline, consumer.next()).await else {
            break;
        };
        let delivery = match next {
            Some(Ok(delivery)) => delivery,
            Some(Err(error)) => panic!("consumer {}: {error}", consumer.name()),
            None => panic!("consumer {} ended: {:?}", consumer.name(), consumer.stats()),
        };
        for (id, record) in delivery.to_records().expect("records decode") {
            distinct.insert(id);
            received.push((id, record.value));
        }
        consumer.ack_delivery(&delivery).expect("ack");
    }
    received
}

/// Ok if `received` holds each record of `want` exactly once, with its value, and nothing
/// else; else what is wrong.
fn exactly_once(
    received: &[(RecordId, Vec<u8>)],
    want: &BTreeMap<RecordId, Vec<u8>>,
    what: &str,
) -> Result<(), String> {
    let mut seen: BTreeMap<RecordId, &Vec<u8>> = BTreeMap::new();
    for (id, value) in received {
        if seen.insert(*id, value).is_some() {
            return Err(format!("{what}: record {id:?} delivered twice"));
        }
        if want.get(id) != Some(value) {
            return Err(format!(
                "{what}: record {id:?} ({:?}) was not acknowledged with this value",
                String::from_utf8_lossy(value)
            ));
        }
    }
    if seen.len() != want.len() {
        return Err(format!(
            "{what}: {} of {} acknowledged records delivered",
            seen.len(),
            want.len()
        ));
    }
    Ok(())
}

/// Issue 10, subscriptions across nodes: a stream of 6 shards on all three nodes, 600 records
/// produced through node 1, a subscription created through node 2 and a consumer joined
/// through node 3 — whichever node coordinates the subscription — receives every acknowledged
/// record exactly once, with its value, and nothing else; node 1 describes the subscription
/// with every shard committed to its end. Then a second consumer joins through node 1: the two
/// split the shards, each receives only its shards' records, and together they receive each
/// of 600 new records exactly once.
#[test]
fn a_subscription_over_shards_of_every_node_delivers_each_record_once() {
    let _serial = one_cluster_at_a_time();
    let mut cluster = LocalCluster::start(3, 2);
    cluster.wait_running(3, PATIENCE);
    let rt = runtime();
    let (through_1, through_2, through_3) = rt.block_on(async {
        (
            cluster.client(1).await,
            cluster.client(2).await,
            cluster.client(3).await,
        )
    });
    let first = spread_over_every_node(&cluster, &rt, &through_1);
    rt.block_on(through_2.create_subscription(
        SubscriptionSpec::new("everything", "spread").start(SubscriptionStart::Earliest),
    ))
    .expect("create the subscription through node 2");

    let outcome: Result<(), String> = rt.block_on(async {
        let mut a = through_3
            .consumer("everything", ConsumerOptions::new("a"))
            .await
            .map_err(|e| format!("a joins through node 3: {e}"))?;
        let received = consume_values(&mut a, first.len()).await;
        exactly_once(&received, &first, "consumer a alone")?;
        a.flush_acks()
            .await
            .map_err(|e| format!("a flushes its acks: {e}"))?;

        // The coordinator and every owner answer a description through node 1.
        let described = poll_async(|| async {
            let info = through_1
                .describe_subscription("everything")
                .await
                .map_err(|e| e.to_string())?;
            let behind: Vec<_> = info
                .shards
                .iter()
                .filter(|s| s.end_offset.is_none() || s.committed_offset != s.end_offset)
                .collect();
            if info.consumers.len() != 1 || !behind.is_empty() {
                return Err(format!(
                    "consumers {:?}, shards not committed to their end: {behind:?}",
                    info.consumers
                ));
            }
            Ok(info)
        })
        .await?;
        assert_eq!(described.consumers[0].name, "a");
        assert_eq!(described.consumers[0].shards.len(), 6, "{described:?}");

        let mut b = through_1
            .consumer("everything", ConsumerOptions::new("b"))
            .await
            .map_err(|e| format!("b joins through node 1: {e}"))?;
        let (shards_a, shards_b) = poll_async(|| async {
            let (shards_a, shards_b) = (a.assignment(), b.assignment());
            let all: BTreeSet<ShardId> = shards_a.iter().chain(&shards_b).copied().collect();
            if shards_a.is_empty() || shards_b.is_empty() || all.len() != 6 {
                return Err(format!("assignments a {shards_a:?}, b {shards_b:?}"));
            }
            if shards_a.len() + shards_b.len() != 6 {
                return Err(format!("overlapping: a {shards_a:?}, b {shards_b:?}"));
            }
            Ok((shards_a, shards_b))
        })
        .await?;

        let second = produce_numbered(&through_1, "spread", 600..1200).await;
        let for_a: BTreeMap<RecordId, Vec<u8>> = second
            .iter()
            .filter(|(id, _)| shards_a.contains(&id.shard))
            .map(|(id, value)| (*id, value.clone()))
            .collect();
        let for_b: BTreeMap<RecordId, Vec<u8>> = second
            .iter()
            .filter(|(id, _)| shards_b.contains(&id.shard))
            .map(|(id, value)| (*id, value.clone()))
            .collect();
        assert_eq!(for_a.len() + for_b.len(), second.len());
        let (received_a, received_b) = tokio::join!(
            consume_values(&mut a, for_a.len()),
            consume_values(&mut b, for_b.len())
        );
        exactly_once(&received_a, &for_a, "consumer a beside b")?;
        exactly_once(&received_b, &for_b, "consumer b beside a")?;
        let together: Vec<(RecordId, Vec<u8>)> = received_a.into_iter().chain(received_b).collect();
        exactly_once(&together, &second, "consumers a and b together")?;
        Ok(())
    });
    cluster.or_panic_with_logs(outcome, "subscription across nodes");
}

/// Admin requests outlive the node a client reached. With node 1 SIGKILLed: a client that
/// reached node 1 and listed the nodes turns to another listed node (a listing, then a create);
/// a client whose URL names nodes 1 and 2 and that never listed turns to node 2 for a create;
/// and a new client given that URL connects to node 2. A create goes elsewhere only once its
/// connection to node 1 has closed (after the short idle timeout here), so it was certainly
/// never sent to node 1.
#[test]
fn admin_requests_turn_to_another_node_when_theirs_is_gone() {
    let _serial = one_cluster_at_a_time();
    let mut cluster = LocalCluster::start(3, 1);
    cluster.wait_running(3, PATIENCE);
    let options = ClientOptions {
        connect_timeout_ms: 2_000,
        request_timeout_ms: 2_000,
        keep_alive_interval_ms: 300,
        idle_timeout_ms: 1_000,
        ..cluster.client_options()
    };
    let two_nodes = format!(
        "{},{}",
        cluster.url(1),
        cluster.url(2).trim_start_matches("runnel://")
    );
    let rt = runtime();
    let outcome = rt.block_on(async {
        let listed = Client::connect(&cluster.url(1), options.clone())
            .await
            .map_err(|e| e.to_string())?;
        listed
            .list_nodes()
            .await
            .map_err(|e| format!("list nodes: {e}"))?;
        let seeded = Client::connect(&two_nodes, options.clone())
            .await
            .map_err(|e| e.to_string())?;
        if seeded.server_info().node_id != 1 {
            return Err(format!(
                "the URL's first node answers first: {:?}",
                seeded.server_info()
            ));
        }
        Ok((listed, seeded))
    });
    let (listed, seeded) = cluster.or_panic_with_logs(outcome, "clients before the kill");
    cluster.kill(1);
    let outcome = rt.block_on(async {
        let names = stream_names(&listed)
            .await
            .map_err(|e| format!("list through a listed node: {e}"))?;
        if !names.is_empty() {
            return Err(format!("no stream yet: {names:?}"));
        }
        listed
            .create_stream(StreamSpec::new("after-kill-1", Durability::Fsync))
            .await
            .map_err(|e| format!("create through a listed node: {e}"))?;
        // Past the idle timeout the connection to node 1 is closed: the create is not sent there.
        tokio::time::sleep(Duration::from_millis(
            3 * u64::from(options.idle_timeout_ms),
        ))
        .await;
        seeded
            .create_stream(StreamSpec::new("after-kill-2", Durability::Fsync))
            .await
            .map_err(|e| format!("create through the URL's second node: {e}"))?;
        let fresh = Client::connect(&two_nodes, options.clone())
            .await
            .map_err(|e| format!("connect with node 1 dead: {e}"))?;
        if fresh.server_info().node_id != 2 {
            return Err(format!(
                "node 2 answers for the URL: {:?}",
                fresh.server_info()
            ));
        }
        let names = stream_names(&fresh).await?;
        let want: BTreeSet<String> = ["after-kill-1", "after-kill-2"].map(String::from).into();
        if names != want {
            return Err(format!("node 2 lists both creates: {names:?}"));
        }
        Ok(())
    });
    cluster.or_panic_with_logs(outcome, "admin requests with node 1 dead");
}

/// Calls `check` until it returns `Ok` or `PATIENCE` passes (a liveness bound); then the last
/// error.
async fn poll_async<T, F, Fut>(mut check: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match check().await {
            Ok(value) => return Ok(value),
            Err(reason) if tokio::time::Instant::now() >= deadline => {
                return Err(format!("after {PATIENCE:?}: {reason}"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
