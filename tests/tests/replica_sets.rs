//! Replica sets and the metadata's failover on real processes (issue 11, items 3 and 4).
//!
//! Three nodes; a stream created with `--replication-factor 3` lists, per shard, three replicas
//! on distinct nodes and a sequencer among them (`runnel shard list --output json`). SIGKILL of
//! the sequencer's node makes the metadata leader (a new one, if the killed node led) name
//! another replica sequencer at the next epoch, as every surviving node's metadata then shows.
//!
//! This proves the metadata half only: moving the data path to the new sequencer (sealing,
//! recovery) is the server's replication, tested with it.
//!
//! Needs `cargo build -p runnel-server -p runnel-cli` (the harness runs both binaries).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use runnel_tests::cluster::{poll, LocalCluster};
use serde_json::Value;

/// Longest any wait in this test may take before it fails: a liveness bound far above what the
/// defaults need (detection takes `cluster.unavailable_after_ms`, 1 s).
const PATIENCE: Duration = Duration::from_secs(60);

/// The first shard of `stream` as node `k`'s `shard list --output json` shows it.
fn first_shard(cluster: &LocalCluster, k: u64, stream: &str) -> Result<Value, String> {
    let text = cluster.cli(k, &["shard", "list", stream])?;
    let listed: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
    listed["shards"]
        .get(0)
        .cloned()
        .ok_or_else(|| format!("no shard listed: {text}"))
}

fn number(shard: &Value, field: &str) -> u64 {
    shard[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is not a number: {shard}"))
}

fn replicas(shard: &Value) -> Vec<u64> {
    shard["replicas"]
        .as_array()
        .unwrap_or_else(|| panic!("no replicas: {shard}"))
        .iter()
        .map(|node| node.as_u64().expect("a node id"))
        .collect()
}

/// R = 3 on three nodes: three distinct replicas with the sequencer among them; after SIGKILL
/// of the sequencer's node, the metadata names one of the two others sequencer at epoch 1.
#[test]
fn killing_the_sequencers_node_moves_the_sequencer_to_another_replica() {
    let mut cluster = LocalCluster::start(3, 1);
    cluster.wait_running(3, PATIENCE);
    let leader = cluster.wait_leader(None, PATIENCE);
    let created = poll(PATIENCE, || {
        match cluster.cli(
            leader,
            &[
                "stream",
                "create",
                "r3",
                "--shards",
                "1",
                "--replication-factor",
                "3",
            ],
        ) {
            Ok(_) => Ok(()),
            Err(error) if error.contains("StreamExists") => Ok(()),
            Err(error) => Err(error),
        }
    });
    cluster.or_panic_with_logs(created, "create r3 with three replicas");
    let shard = first_shard(&cluster, leader, "r3").expect("shard list");
    let sequencer = number(&shard, "sequencer");
    let set = replicas(&shard);
    assert_eq!(set.len(), 3, "{shard}");
    assert_eq!(set.iter().collect::<BTreeSet<_>>().len(), 3, "{shard}");
    assert!(set.contains(&sequencer), "{shard}");
    assert_eq!(set[0], sequencer, "the first replica sequences a new shard");
    assert_eq!(number(&shard, "epoch"), 0, "{shard}");

    cluster.kill(sequencer);
    let killed_at = Instant::now();
    let survivor = cluster.ids().find(|&k| k != sequencer).expect("a survivor");
    let moved = poll(PATIENCE, || {
        let shard = first_shard(&cluster, survivor, "r3")?;
        if number(&shard, "sequencer") == sequencer {
            return Err(format!("still on the killed node: {shard}"));
        }
        Ok(shard)
    });
    let moved = cluster.or_panic_with_logs(moved, "the sequencer did not move");
    println!(
        "the metadata named a new sequencer {:?} after the kill (includes polling the CLI)",
        killed_at.elapsed()
    );
    let new_sequencer = number(&moved, "sequencer");
    assert_ne!(new_sequencer, sequencer);
    assert!(set.contains(&new_sequencer), "{moved}");
    assert_eq!(replicas(&moved), set, "the replica set stays");
    assert_eq!(number(&moved, "epoch"), 1, "one bump: {moved}");
    // The other survivor agrees.
    let other = cluster
        .ids()
        .find(|&k| k != sequencer && k != survivor)
        .expect("a second survivor");
    let agreed = poll(PATIENCE, || {
        let shard = first_shard(&cluster, other, "r3")?;
        if number(&shard, "epoch") == 1 && number(&shard, "sequencer") == new_sequencer {
            Ok(())
        } else {
            Err(format!("node {other} shows {shard}"))
        }
    });
    cluster.or_panic_with_logs(agreed, "the second survivor did not learn the bump");
}
