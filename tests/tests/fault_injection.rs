//! The peer transport's fault injection (test-only, `docs/operations.md` "Fault injection") on
//! real processes: a node isolated through the fault files is `Unavailable` to the others and
//! they to it, it still answers clients but cannot change metadata, and after healing every
//! node is `Running` and the isolated one catches up; a one-way rule cuts only its direction.
//!
//! Needs `cargo build -p runnel-server -p runnel-cli`.

use std::time::Duration;

use runnel_client::{Client, ClientOptions, Durability, StreamSpec};
use runnel_tests::cluster::{
    one_cluster_at_a_time, poll, runtime, LocalCluster, TEST_CLUSTER_CONFIG,
};

/// A liveness bound far above what failure detection (1 s here) and an election need.
const PATIENCE: Duration = Duration::from_secs(60);

/// Waits until node `k` shows node `other` in one of `states`.
fn wait_state(cluster: &mut LocalCluster, k: u64, other: u64, states: &[&str]) {
    let shown = poll(PATIENCE, || {
        let nodes = cluster.node_list(k)?;
        match nodes.iter().find(|node| node.id == other) {
            Some(node) if states.contains(&node.state.as_str()) => Ok(()),
            found => Err(format!("node {k} shows node {other} as {found:?}")),
        }
    });
    cluster.or_panic_with_logs(shown, &format!("node {k}'s view of node {other}"));
}

/// Node 3 isolated both ways: nodes 1 and 2 mark it `Unavailable` and it marks them so; it
/// still answers a client, but a stream create through it fails while one through node 1 is
/// acknowledged. Healed, every node is `Running` and node 3 lists the stream created without it.
#[test]
fn an_isolated_node_is_cut_off_and_catches_up_after_healing() {
    let _serial = one_cluster_at_a_time();
    let mut cluster = LocalCluster::start_with_faults(3, 1, TEST_CLUSTER_CONFIG);
    cluster.wait_running(3, PATIENCE);
    cluster.isolate(3);
    for k in [1, 2] {
        wait_state(&mut cluster, k, 3, &["Unavailable", "Dead"]);
        wait_state(&mut cluster, 3, k, &["Unavailable", "Dead"]);
    }
    let rt = runtime();
    let options = ClientOptions {
        request_timeout_ms: 3_000,
        request_attempts_max: 1,
        ..cluster.client_options()
    };
    let outcome = rt.block_on(async {
        let minority = Client::connect(&cluster.url(3), options.clone())
            .await
            .map_err(|e| format!("connect to the isolated node: {e}"))?;
        let refused = minority
            .create_stream(StreamSpec::new("minority", Durability::Fsync))
            .await;
        if refused.is_ok() {
            return Err("the isolated node acknowledged a stream create".to_owned());
        }
        let majority = cluster.client(1).await;
        majority
            .create_stream(StreamSpec::new("majority", Durability::Fsync))
            .await
            .map_err(|e| format!("create through the majority: {e}"))?;
        Ok(minority)
    });
    let minority = cluster.or_panic_with_logs(outcome, "during the partition");

    cluster.heal_all();
    cluster.wait_running(3, PATIENCE);
    let caught_up = poll(PATIENCE, || {
        let streams = rt
            .block_on(minority.list_streams())
            .map_err(|e| e.to_string())?;
        if streams.iter().any(|s| s.name.to_string() == "majority") {
            Ok(())
        } else {
            Err(format!("node 3 lists {streams:?}"))
        }
    });
    cluster.or_panic_with_logs(caught_up, "node 3 after healing");
}

/// A one-way rule: node 1 ignores what node 3 sends (`drop-from 3`). Node 1 marks node 3
/// `Unavailable`; node 2, with no rule, keeps it `Running`. Healed, node 1 shows it `Running`.
#[test]
fn a_one_way_rule_cuts_one_direction_only() {
    let _serial = one_cluster_at_a_time();
    let mut cluster = LocalCluster::start_with_faults(3, 1, TEST_CLUSTER_CONFIG);
    cluster.wait_running(3, PATIENCE);
    cluster.set_faults(1, "drop-from 3\n");
    wait_state(&mut cluster, 1, 3, &["Unavailable", "Dead"]);
    wait_state(&mut cluster, 2, 3, &["Running"]);
    cluster.heal_all();
    wait_state(&mut cluster, 1, 3, &["Running"]);
}
