//! What this node knows of the cluster: every node's state, address and version, and which
//! node leads the metadata group. Core 0 keeps it current (from the metadata group and the
//! peers' heartbeats); any core reads it to answer `ListNodes`. It is read by admin requests
//! only, never on the data path, so one lock shared by the cores is fine here.
//!
//! Two decisions rest on it: where a new stream's shards go (the leader names the nodes it
//! sees unavailable in the create, so every replica places alike), and whether a node may be
//! removed without leaving the metadata group unable to commit.

use std::rc::Rc;
use std::sync::Mutex;

use runnel_net::protocol::{ErrorCode, ErrorResponse};
use runnel_replicate::metadata::{Command, NodeId};

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

/// Whether a node in `state` can take new shards: not when this node has not heard from it for
/// the unavailable timeout.
fn takes_shards(state: NodeState) -> bool {
    !matches!(state, NodeState::Unavailable | NodeState::Dead)
}

/// The nodes of `nodes` a new shard must avoid, in id order: those not heard from for the
/// unavailable timeout.
pub fn unavailable_nodes(nodes: &[NodeView]) -> Vec<NodeId> {
    nodes
        .iter()
        .filter(|node| !takes_shards(node.state))
        .map(|node| NodeId(node.id))
        .collect()
}

/// Refuses the removal of node `id` when the metadata group could not commit without it: it is
/// the only voter, or fewer than a majority of the voters left are reachable (Starting or
/// Running) as `nodes` shows them. The group changes one member at a time, so for a moment
/// the voters are exactly the others (a learner is promoted after).
pub fn check_removal(nodes: &[NodeView], id: u64) -> Result<(), ErrorResponse> {
    let Some(node) = nodes.iter().find(|node| node.id == id) else {
        return Err(ErrorResponse::new(
            ErrorCode::UnknownNode,
            format!("node {id} is not registered"),
        ));
    };
    if !node.voter {
        return Ok(());
    }
    let others: Vec<&NodeView> = nodes
        .iter()
        .filter(|other| other.voter && other.id != id)
        .collect();
    if others.is_empty() {
        return Err(ErrorResponse::new(
            ErrorCode::WouldLoseQuorum,
            format!(
                "node {id} is the only voter of the metadata group: the group could not commit \
                 without it"
            ),
        ));
    }
    let reachable = others
        .iter()
        .filter(|other| takes_shards(other.state))
        .count();
    let quorum = others.len() / 2 + 1;
    if reachable < quorum {
        let ids: Vec<u64> = others.iter().map(|other| other.id).collect();
        return Err(ErrorResponse::new(
            ErrorCode::WouldLoseQuorum,
            format!(
                "without node {id} the metadata group's voters would be {ids:?}, of which only \
                 {reachable} are reachable (a quorum is {quorum}): bring the others back first"
            ),
        ));
    }
    Ok(())
}

impl crate::core::Core {
    /// `command` as this leader proposes it: a create avoids the nodes this node sees
    /// unavailable (placement is computed when the command is applied, on every replica, but
    /// node states are each node's own knowledge, so the leader writes its own into it).
    pub fn placement_hints(&self, command: Command) -> Command {
        match command {
            Command::CreateStream { config, now_ms, .. } => Command::CreateStream {
                config,
                now_ms,
                avoid: unavailable_nodes(&self.cluster.nodes()),
            },
            other => other,
        }
    }

    /// Removes node `id` from the cluster (`RemoveNode`): checks that the metadata group can
    /// commit without it, then proposes the removal (refused by the metadata while the node
    /// owns shards); answers once it is applied on this node. The group then drops the node
    /// from its members, and the node stops when it learns it was removed.
    pub async fn remove_node(self: &Rc<Self>, id: u64) -> Result<(), ErrorResponse> {
        check_removal(&self.cluster.nodes(), id)?;
        self.propose(Command::RemoveNode { node: NodeId(id) }).await
    }

    /// Founds the cluster on this node (`InitCluster`): starts the metadata group with this
    /// node as its first voter. Refused when the node already belongs to a cluster, and on
    /// cores other than 0 (the node's base port answers it).
    pub async fn init_cluster(&self) -> Result<(), ErrorResponse> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: u64, state: NodeState, voter: bool) -> NodeView {
        NodeView {
            id,
            state,
            address: format!("127.0.0.1:{}", 6570 + id),
            version: None,
            cores: 1,
            leader: id == 1,
            voter,
        }
    }

    /// A removal that leaves the voters without a reachable majority, or removes the only
    /// voter, is refused before anything is proposed; a learner may always go.
    #[test]
    fn removal_keeps_a_reachable_quorum() {
        use NodeState::{Dead, Running, Unavailable};
        let nodes = [
            view(1, Running, true),
            view(2, Unavailable, true),
            view(3, Running, true),
            view(4, Dead, false),
        ];
        // Without 3 the voters are 1 and 2, and 2 is unreachable.
        let refused = check_removal(&nodes, 3).expect_err("refused");
        assert_eq!(refused.code, ErrorCode::WouldLoseQuorum);
        // Without 2 the voters are 1 and 3, both reachable.
        check_removal(&nodes, 2).expect("allowed");
        check_removal(&nodes, 4).expect("a learner");
        assert_eq!(
            check_removal(&nodes, 9).expect_err("unknown").code,
            ErrorCode::UnknownNode
        );
        let alone = [view(1, Running, true), view(2, Running, false)];
        assert_eq!(
            check_removal(&alone, 1).expect_err("only voter").code,
            ErrorCode::WouldLoseQuorum
        );
        assert_eq!(unavailable_nodes(&nodes), vec![NodeId(2), NodeId(4)]);
    }
}
