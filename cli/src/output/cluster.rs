//! What `node list` prints: the cluster's nodes as HStreamDB's table (`Server Id | State |
//! Address | Version`) with a `Role` column (`leader`, `voter` or `learner`: the node's place
//! in the metadata group), or as one JSON document
//! `{"nodes":[{"id":1,"state":"Running","address":"127.0.0.1:6570","version":"0.1.0",
//! "cores":2,"leader":true,"voter":true}]}`. A version the answering node does not know is
//! `-` in the table and `null` in JSON.

use runnel_client::NodeInfo;
use serde::Serialize;

use crate::table::Table;

/// The cluster's nodes as JSON.
#[derive(Debug, Serialize)]
pub struct NodeListDocument {
    nodes: Vec<NodeListEntry>,
}

/// One node as JSON.
#[derive(Debug, Serialize)]
struct NodeListEntry {
    id: u64,
    /// `Starting`, `Running`, `Unavailable` or `Dead`.
    state: &'static str,
    address: String,
    version: Option<String>,
    cores: u32,
    leader: bool,
    voter: bool,
}

impl NodeListDocument {
    /// The nodes as listed (in id order).
    pub fn new(nodes: &[NodeInfo]) -> NodeListDocument {
        NodeListDocument {
            nodes: nodes
                .iter()
                .map(|node| NodeListEntry {
                    id: node.id,
                    state: node.state.name(),
                    address: node.address.clone(),
                    version: node.version.clone(),
                    cores: node.cores,
                    leader: node.leader,
                    voter: node.voter,
                })
                .collect(),
        }
    }

    /// The table of nodes.
    pub fn table(&self) -> Table {
        let mut table = Table::new(["Server Id", "State", "Address", "Version", "Role"]);
        for node in &self.nodes {
            let role = match (node.leader, node.voter) {
                (true, _) => "leader",
                (false, true) => "voter",
                (false, false) => "learner",
            };
            table.row(vec![
                node.id.to_string(),
                node.state.to_owned(),
                node.address.clone(),
                node.version.clone().unwrap_or_else(|| "-".into()),
                role.to_owned(),
            ]);
        }
        table
    }
}

#[cfg(test)]
mod tests {
    use runnel_client::NodeState;

    use super::*;

    fn node(id: u64, state: NodeState, leader: bool, voter: bool) -> NodeInfo {
        NodeInfo {
            id,
            state,
            address: format!("127.0.0.1:{}", 6560 + 10 * id),
            version: (id != 3).then(|| "0.1.0".to_owned()),
            cores: 2,
            leader,
            voter,
        }
    }

    /// The table names each node's role (leader, voter, learner) and prints an unknown
    /// version as `-`; the JSON spells states as the protocol does and an unknown version as
    /// null.
    #[test]
    fn nodes_print_with_their_roles() {
        let document = NodeListDocument::new(&[
            node(1, NodeState::Running, true, true),
            node(2, NodeState::Unavailable, false, true),
            node(3, NodeState::Starting, false, false),
            node(4, NodeState::Dead, false, false),
        ]);
        let table = document.table().render();
        for row in [
            "| Server Id | State       | Address        | Version | Role    |",
            "| 1         | Running     | 127.0.0.1:6570 | 0.1.0   | leader  |",
            "| 2         | Unavailable | 127.0.0.1:6580 | 0.1.0   | voter   |",
            "| 3         | Starting    | 127.0.0.1:6590 | -       | learner |",
            "| 4         | Dead        | 127.0.0.1:6600 | 0.1.0   | learner |",
        ] {
            assert!(table.contains(row), "{row}\n{table}");
        }
        let json = serde_json::to_string(&NodeListDocument::new(&[node(
            1,
            NodeState::Running,
            true,
            true,
        )]))
        .expect("json");
        assert_eq!(
            json,
            r#"{"nodes":[{"id":1,"state":"Running","address":"127.0.0.1:6570","version":"0.1.0","cores":2,"leader":true,"voter":true}]}"#
        );
        let unknown = serde_json::to_string(&NodeListDocument::new(&[node(
            3,
            NodeState::Starting,
            false,
            false,
        )]))
        .expect("json");
        assert!(unknown.contains(r#""version":null"#), "{unknown}");
    }
}
