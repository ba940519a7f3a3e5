//! The cluster verbs of the `runnel` binary end to end, against a real `runnel-server` alone
//! (two cores, free loopback ports): `node list` as a table and as JSON, and `cluster init`
//! refused by a node that already belongs to a cluster (exit 1, the server's code).
//!
//! Needs the `runnel-server` binary next to this test's (`cargo build -p runnel-server`).

mod common;

use common::Node;

/// A node alone lists itself: running, at the address clients dial, leading the metadata
/// group; `cluster init` on it is refused and changes nothing.
#[test]
fn node_list_and_cluster_init_on_a_node_alone() {
    let node = Node::start();
    let shell = node.shell();
    let address = format!("127.0.0.1:{}", node.server.base_port);
    let version = env!("CARGO_PKG_VERSION");

    let listed = shell.run(&["node", "list"]).ok("node list");
    let header: Vec<&str> = listed
        .stdout
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split('|')
        .map(str::trim)
        .filter(|cell| !cell.is_empty())
        .collect();
    assert_eq!(
        header,
        ["Server Id", "State", "Address", "Version", "Role"],
        "{}",
        listed.stdout
    );
    assert_eq!(
        listed.table_rows(),
        vec![vec![
            "1".to_owned(),
            "Running".to_owned(),
            address.clone(),
            version.to_owned(),
            "leader".to_owned(),
        ]]
    );

    let json = shell
        .run(&["node", "list", "--output", "json"])
        .ok("node list json")
        .json();
    assert_eq!(
        json,
        serde_json::json!({"nodes": [{
            "id": 1,
            "state": "Running",
            "address": address,
            "version": version,
            "cores": 2,
            "leader": true,
            "voter": true,
        }]})
    );

    let refused =
        shell
            .run(&["cluster", "init"])
            .failed("init a member", 1, "runnel: InvalidRequest: ");
    assert!(
        refused.stderr.contains("already belongs to a cluster"),
        "{}",
        refused.stderr
    );
    // `node status` keeps working after the refusal.
    shell.run(&["node", "status"]).ok("node status");
}
