//! The cluster requests of one real node (`ListNodes`, `InitCluster`), end to end: the
//! `runnel-server` binary on loopback, asked on every core through raw connections and through
//! the SDK.

use runnel_client::{ErrorCode, NodeState};
use runnel_net::protocol::{Request, Response};
use runnel_tests::raw;
use runnel_tests::server::TestServer;

/// Every core answers `ListNodes` with the same view: the node alone, running, leading its
/// group of one, at the address clients dial, with its version and cores.
#[tokio::test]
async fn every_core_lists_the_node_alone() {
    let temp = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(temp.path(), 2);
    for core in 0..2 {
        let (_endpoint, connection) = raw::connect(&server, core, false).await;
        let answer = raw::request(&connection, &Request::ListNodes, &[]).await;
        let Response::NodeList(list) = answer else {
            panic!("core {core}: expected a NodeList, got {answer:?}");
        };
        assert_eq!(list.nodes.len(), 1, "core {core}: {list:?}");
        let node = &list.nodes[0];
        assert_eq!(node.state, NodeState::Running);
        assert_eq!(node.address, format!("127.0.0.1:{}", server.base_port));
        assert_eq!(node.version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
        assert_eq!(node.cores, 2);
        assert!(node.leader && node.voter, "{node:?}");
    }

    let client = server.connect().await;
    let nodes = client.list_nodes().await.expect("list nodes");
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].id, client.server_info().node_id);
}

/// A node that already belongs to a cluster (a node alone leads its group of one) refuses
/// `InitCluster` as an invalid request, typed in the SDK, and keeps serving.
#[tokio::test]
async fn init_cluster_on_a_member_is_refused() {
    let temp = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(temp.path(), 1);
    let client = server.connect().await;
    let refused = client.init_cluster().await.expect_err("already a member");
    assert_eq!(refused.code(), Some(ErrorCode::InvalidRequest), "{refused}");
    assert!(
        refused.to_string().contains("already belongs to a cluster"),
        "{refused}"
    );
    assert_eq!(client.list_nodes().await.expect("still serving").len(), 1);
}
