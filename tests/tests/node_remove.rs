//! Removing nodes, and placement that avoids unavailable nodes, on real processes (issue 10).
//!
//! - `runnel node remove` of a node that owns shards of a live stream is refused with
//!   `NodeOwnsShards`, naming the stream; once the stream is deleted, the metadata leader itself
//!   is removed: it hands its leadership over, exits with code 10, disappears from every
//!   node's `node list`, and the cluster goes on committing creates; restarted on the same data
//!   directory it refuses to start (code 10, saying to wipe the directory). A follower is then
//!   removed the same way, leaving one node that still serves.
//! - A stream created while a node is paused (SIGSTOP) past `cluster.unavailable_after_ms`
//!   gets no shard on it.
//!
//! Needs `cargo build -p runnel-server -p runnel-cli` (the harness runs both binaries).

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use runnel_client::{Client, Durability, StreamSpec};
use runnel_tests::cluster::{poll, runtime, LocalCluster};

/// Longest any wait in these tests may take before it fails the test: a liveness bound far
/// above what the defaults need.
const PATIENCE: Duration = Duration::from_secs(60);

/// The exit code of a removed node (`FatalError::Removed`).
const REMOVED_EXIT_CODE: i32 = 10;

/// One cluster at a time: several on a small machine would starve each other's heartbeats.
static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_cluster_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The nodes owning the shards of `stream`.
async fn owners(client: &Client, stream: &str) -> BTreeSet<u64> {
    let shards = client.list_shards(stream).await.expect("list shards");
    shards.iter().map(|shard| shard.node).collect()
}

/// Waits until every node in `asked` lists exactly the nodes `want`.
fn wait_listed(cluster: &mut LocalCluster, asked: &[u64], want: &BTreeSet<u64>) {
    let listed = poll(PATIENCE, || {
        for &k in asked {
            let ids: BTreeSet<u64> = cluster.node_list(k)?.iter().map(|n| n.id).collect();
            if &ids != want {
                return Err(format!("node {k} lists {ids:?}, want {want:?}"));
            }
        }
        Ok(())
    });
    cluster.or_panic_with_logs(listed, "the node lists did not settle");
}

/// Removes `removed` through node `via`, waits for it to exit with the removed code, and
/// checks that its data directory is refused afterwards.
fn remove_and_watch_it_stop(cluster: &mut LocalCluster, via: u64, removed: u64) {
    let id = removed.to_string();
    let answer = cluster.cli(via, &["node", "remove", &id]);
    cluster.or_panic_with_logs(answer, "the removal was refused");
    let exited = cluster.wait_exit(removed, PATIENCE);
    let code = cluster.or_panic_with_logs(exited, "the removed node did not stop");
    let log = cluster.log(removed);
    assert_eq!(code, Some(REMOVED_EXIT_CODE), "{log}");
    assert!(
        log.contains("this node was removed from the cluster"),
        "the removed node says why it stops:\n{log}"
    );
    let again = cluster.run_to_exit(removed);
    assert_eq!(again.code, Some(REMOVED_EXIT_CODE), "{}", again.output);
    assert!(
        again.output.contains("wipe the directory"),
        "a restart says how to join again:\n{}",
        again.output
    );
}

/// The full removal story on three nodes: refused while the node owns shards, then the leader
/// and a follower are removed; what is left keeps committing creates on the nodes it has.
#[test]
fn removed_nodes_leave_every_list_and_stop_and_the_rest_commits() {
    let _serial = one_cluster_at_a_time();
    let mut cluster = LocalCluster::start(3, 1);
    cluster.wait_running(3, PATIENCE);
    let leader = cluster.wait_leader(None, PATIENCE);
    let others: Vec<u64> = cluster.ids().filter(|&k| k != leader).collect();
    let (first, second) = (others[0], others[1]);
    let rt = runtime();
    let client = rt.block_on(cluster.client(first));

    // Three shards on three nodes of one core each: one on every node.
    rt.block_on(client.create_stream(StreamSpec::new("owned", Durability::Fsync).shard_count(3)))
        .expect("create the stream");
    assert_eq!(rt.block_on(owners(&client, "owned")).len(), 3);
    let refused = cluster
        .cli(first, &["node", "remove", &leader.to_string()])
        .expect_err("a node owning shards is not removed");
    assert!(
        refused.contains("NodeOwnsShards") && refused.contains("owned"),
        "the refusal is typed and names the stream: {refused}"
    );
    let unknown = cluster
        .cli(first, &["node", "remove", "99"])
        .expect_err("no node 99");
    assert!(unknown.contains("UnknownNode"), "{unknown}");
    rt.block_on(client.delete_stream("owned", false))
        .expect("delete the stream");

    // The leader goes: it hands its role over, stops, and leaves every list.
    remove_and_watch_it_stop(&mut cluster, first, leader);
    let left: BTreeSet<u64> = others.iter().copied().collect();
    wait_listed(&mut cluster, &others, &left);
    let new_leader = cluster.wait_leader(Some(leader), PATIENCE);
    assert!(left.contains(&new_leader), "leader {new_leader}");
    let created = rt.block_on(poll_create(&client, "after-leader", 4));
    let created = cluster.or_panic_with_logs(created, "no create committed without the leader");
    assert_eq!(created, left, "new shards go to the nodes left");

    // Then a follower (of the two left, the one the client is not connected to, or either).
    rt.block_on(client.delete_stream("after-leader", false))
        .expect("delete the stream");
    remove_and_watch_it_stop(&mut cluster, first, second);
    wait_listed(&mut cluster, &[first], &BTreeSet::from([first]));
    let created = rt.block_on(poll_create(&client, "alone", 2));
    let created = cluster.or_panic_with_logs(created, "the last node does not commit");
    assert_eq!(created, BTreeSet::from([first]));
}

/// Creates `stream` with `shards` shards through `client`, retrying while the group elects;
/// returns the nodes that own its shards.
async fn poll_create(client: &Client, stream: &str, shards: u32) -> Result<BTreeSet<u64>, String> {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let spec = StreamSpec::new(stream, Durability::Fsync).shard_count(shards);
        match client.create_stream(spec).await {
            Ok(_) => return Ok(owners(client, stream).await),
            // An earlier attempt whose answer was lost committed it.
            Err(error) if error.to_string().contains("StreamExists") => {
                return Ok(owners(client, stream).await)
            }
            // The group may be electing, or the client's node catching up: try again.
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => return Err(format!("create {stream}: {error}")),
        }
    }
}

/// A stream created while a node is paused past `cluster.unavailable_after_ms` (1 s) gets no
/// shard on that node: the leader names it unavailable in the create, and every node places
/// alike. The node serves again after SIGCONT.
#[test]
fn a_stream_created_while_a_node_is_paused_gets_no_shard_on_it() {
    let _serial = one_cluster_at_a_time();
    let mut cluster = LocalCluster::start(3, 1);
    cluster.wait_running(3, PATIENCE);
    let leader = cluster.wait_leader(None, PATIENCE);
    let paused = cluster.ids().find(|&k| k != leader).expect("a follower");
    cluster.pause(paused);
    let marked = poll(PATIENCE, || {
        let nodes = cluster.node_list(leader)?;
        match nodes.iter().find(|n| n.id == paused) {
            Some(node) if node.state == "Unavailable" || node.state == "Dead" => Ok(()),
            other => Err(format!("the leader shows node {paused} as {other:?}")),
        }
    });
    cluster.or_panic_with_logs(marked, "the paused node was not marked");
    let rt = runtime();
    let client = rt.block_on(cluster.client(leader));
    rt.block_on(
        client.create_stream(StreamSpec::new("avoiding", Durability::Fsync).shard_count(6)),
    )
    .expect("create the stream");
    let placed = rt.block_on(owners(&client, "avoiding"));
    let expected: BTreeSet<u64> = cluster.ids().filter(|&k| k != paused).collect();
    assert_eq!(placed, expected, "the shards go to the two available nodes");
    cluster.resume(paused);
    cluster.wait_running(3, PATIENCE);
}
