//! What this node knows of the cluster: every node's state, address and version, and which
//! node leads the metadata group. Core 0 keeps it current (from the metadata group and the
//! peers' heartbeats); any core reads it to answer `ListNodes`. It is read by admin requests
//! only, never on the data path, so one lock shared by the cores is fine here.

use std::sync::Mutex;

/// A node's state as this node sees it: the protocol's (`Starting | Running | Unavailable |
/// Dead`), one type from the view to the wire.
pub use runnel_net::protocol::NodeState;

/// One node of the cluster as this node sees it: the protocol's `NodeInfo` (id, state,
/// advertised address, version, cores, leader, voter), one type from the view to the wire.
pub use runnel_net::protocol::NodeInfo as NodeView;

/// The cluster as this node sees it, shared by its cores.
#[derive(Debug, Default)]
pub struct ClusterView {
    nodes: Mutex<Vec<NodeView>>,
}

impl ClusterView {
    /// Every known node, in id order.
    pub fn nodes(&self) -> Vec<NodeView> {
        self.nodes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Replaces the view (core 0).
    pub fn set(&self, mut nodes: Vec<NodeView>) {
        nodes.sort_by_key(|node| node.id);
        *self
            .nodes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = nodes;
    }
}

/// This build's version, as nodes report it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The nodes this node knows, as `ListNodes` answers them.
pub fn node_list(view: &ClusterView) -> runnel_net::protocol::NodeList {
    runnel_net::protocol::NodeList {
        nodes: view.nodes(),
    }
}

impl crate::core::Core {
    /// Founds the cluster on this node (`InitCluster`): starts the metadata group with this
    /// node as its first voter. Refused when the node already belongs to a cluster, and on
    /// cores other than 0 (the node's base port answers it).
    pub async fn init_cluster(&self) -> Result<(), runnel_net::protocol::ErrorResponse> {
        use runnel_net::protocol::{ErrorCode, ErrorResponse};
        if self.index != 0 {
            return Err(ErrorResponse::new(
                ErrorCode::InvalidRequest,
                "InitCluster is answered by core 0 (the node's base port)",
            ));
        }
        match self.group() {
            Some(group) => group.found().await,
            None => Err(ErrorResponse::new(
                ErrorCode::Unavailable,
                "the node is starting",
            )),
        }
    }
}
