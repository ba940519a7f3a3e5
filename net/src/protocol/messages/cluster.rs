//! The cluster messages (request and response numbers 96–127): listing the cluster's nodes
//! (`ListNodes`, answered by a [`NodeList`]), founding the cluster (`InitCluster`, answered
//! by `InitClusterOk`) and removing a node (`RemoveNode`, answered by `RemoveNodeOk`, both
//! carrying the node's id). Any node answers `ListNodes`, with the cluster as that node sees
//! it, and `RemoveNode`.
//!
//! A node's address is the advertised `host:base_port` a client dials (core *i* listens on
//! `base_port + i`); it is checked on decode to be 1 to [`NODE_ADDRESS_BYTES_MAX`] bytes
//! without whitespace or control characters, since clients dial it.

use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};

use super::{Request, Response};
use crate::protocol::error::ProtocolError;
use crate::protocol::generated as wire;

/// Longest advertised node address, in bytes (a DNS name of 253 bytes and a port).
pub const NODE_ADDRESS_BYTES_MAX: usize = 260;

/// A node's state as the answering node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeState {
    /// Known, but not serving yet (replaying, joining, or not heard from since the answering
    /// node started).
    Starting,
    /// Heard from recently, and serving.
    Running,
    /// Not heard from for the unavailable timeout: its shards cannot be served.
    Unavailable,
    /// Not heard from for the dead timeout.
    Dead,
}

impl NodeState {
    /// The state's name, as the schema, the CLI and its JSON spell it.
    pub fn name(self) -> &'static str {
        match self {
            NodeState::Starting => "Starting",
            NodeState::Running => "Running",
            NodeState::Unavailable => "Unavailable",
            NodeState::Dead => "Dead",
        }
    }
}

/// One node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node's id.
    pub id: u64,
    /// Its state.
    pub state: NodeState,
    /// The address clients dial: `host:base_port`.
    pub address: String,
    /// Its software version, when it told the answering node.
    pub version: Option<String>,
    /// Its cores; core *i* listens on `base_port + i`.
    pub cores: u32,
    /// It leads the metadata group now, as the answering node knows.
    pub leader: bool,
    /// It votes in the metadata group (else a learner, or not a member yet).
    pub voter: bool,
}

/// The answer to `ListNodes`: every node the answering node knows, in id order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeList {
    /// The nodes.
    pub nodes: Vec<NodeInfo>,
}

/// Checks an advertised address: 1 to [`NODE_ADDRESS_BYTES_MAX`] bytes, no whitespace or
/// control characters.
pub fn check_node_address(address: &str) -> Result<(), String> {
    if address.is_empty() || address.len() > NODE_ADDRESS_BYTES_MAX {
        return Err(format!(
            "{} bytes, allowed 1 to {NODE_ADDRESS_BYTES_MAX}",
            address.len()
        ));
    }
    if let Some(bad) = address
        .chars()
        .find(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!("holds the character {bad:?}"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

pub(crate) fn list_nodes(fbb: &mut FlatBufferBuilder<'_>) -> WIPOffset<UnionWIPOffset> {
    wire::ListNodes::create(fbb, &wire::ListNodesArgs {}).as_union_value()
}

pub(crate) fn init_cluster(fbb: &mut FlatBufferBuilder<'_>) -> WIPOffset<UnionWIPOffset> {
    wire::InitCluster::create(fbb, &wire::InitClusterArgs {}).as_union_value()
}

pub(crate) fn init_cluster_ok(fbb: &mut FlatBufferBuilder<'_>) -> WIPOffset<UnionWIPOffset> {
    wire::InitClusterOk::create(fbb, &wire::InitClusterOkArgs {}).as_union_value()
}

pub(crate) fn remove_node(fbb: &mut FlatBufferBuilder<'_>, node: u64) -> WIPOffset<UnionWIPOffset> {
    wire::RemoveNode::create(fbb, &wire::RemoveNodeArgs { node }).as_union_value()
}

pub(crate) fn remove_node_ok(
    fbb: &mut FlatBufferBuilder<'_>,
    node: u64,
) -> WIPOffset<UnionWIPOffset> {
    wire::RemoveNodeOk::create(fbb, &wire::RemoveNodeOkArgs { node }).as_union_value()
}

pub(crate) fn node_list<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    list: &NodeList,
) -> WIPOffset<UnionWIPOffset> {
    let nodes: Vec<_> = list
        .nodes
        .iter()
        .map(|node| {
            let address = Some(fbb.create_string(&node.address));
            let version = node.version.as_deref().map(|v| fbb.create_string(v));
            let args = wire::NodeInfoArgs {
                id: node.id,
                state: match node.state {
                    NodeState::Starting => wire::NodeState::Starting,
                    NodeState::Running => wire::NodeState::Running,
                    NodeState::Unavailable => wire::NodeState::Unavailable,
                    NodeState::Dead => wire::NodeState::Dead,
                },
                address,
                version,
                cores: node.cores,
                leader: node.leader,
                voter: node.voter,
            };
            wire::NodeInfo::create(fbb, &args)
        })
        .collect();
    let nodes = Some(fbb.create_vector(&nodes));
    wire::NodeList::create(fbb, &wire::NodeListArgs { nodes }).as_union_value()
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

/// Decodes the cluster request in `root`; `None` when its body is another kind.
pub(crate) fn decode_request(root: &wire::Request<'_>) -> Option<Result<Request, ProtocolError>> {
    let absent = || ProtocolError::invalid("Request.body", "absent for its type");
    let decoded = match root.body_type() {
        wire::RequestBody::ListNodes => root
            .body_as_list_nodes()
            .ok_or_else(absent)
            .map(|_| Request::ListNodes),
        wire::RequestBody::InitCluster => root
            .body_as_init_cluster()
            .ok_or_else(absent)
            .map(|_| Request::InitCluster),
        wire::RequestBody::RemoveNode => root
            .body_as_remove_node()
            .ok_or_else(absent)
            .map(|remove| Request::RemoveNode(remove.node())),
        _ => return None,
    };
    Some(decoded)
}

/// Decodes the cluster response in `root`; `None` when its body is another kind.
pub(crate) fn decode_response(
    root: &wire::Response<'_>,
) -> Option<Result<Response, ProtocolError>> {
    let absent = || ProtocolError::invalid("Response.body", "absent for its type");
    let decoded = match root.body_type() {
        wire::ResponseBody::NodeList => {
            root.body_as_node_list()
                .ok_or_else(absent)
                .and_then(|list| {
                    let nodes = list
                        .nodes()
                        .into_iter()
                        .flatten()
                        .map(|node| node_info(&node))
                        .collect::<Result<_, _>>()?;
                    Ok(Response::NodeList(NodeList { nodes }))
                })
        }
        wire::ResponseBody::InitClusterOk => root
            .body_as_init_cluster_ok()
            .ok_or_else(absent)
            .map(|_| Response::InitClusterOk),
        wire::ResponseBody::RemoveNodeOk => root
            .body_as_remove_node_ok()
            .ok_or_else(absent)
            .map(|removed| Response::RemoveNodeOk(removed.node())),
        _ => return None,
    };
    Some(decoded)
}

fn node_info(node: &wire::NodeInfo<'_>) -> Result<NodeInfo, ProtocolError> {
    let state = match node.state() {
        wire::NodeState::Starting => NodeState::Starting,
        wire::NodeState::Running => NodeState::Running,
        wire::NodeState::Unavailable => NodeState::Unavailable,
        wire::NodeState::Dead => NodeState::Dead,
        other => {
            return Err(ProtocolError::invalid(
                "NodeInfo.state",
                format!("unknown node state {}", other.0),
            ))
        }
    };
    let address = node.address();
    check_node_address(address)
        .map_err(|reason| ProtocolError::invalid("NodeInfo.address", reason))?;
    Ok(NodeInfo {
        id: node.id(),
        state,
        address: address.to_owned(),
        version: node.version().map(str::to_owned),
        cores: node.cores(),
        leader: node.leader(),
        voter: node.voter(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u64, state: NodeState, version: Option<&str>) -> NodeInfo {
        NodeInfo {
            id,
            state,
            address: format!("127.0.0.1:{}", 6570 + id),
            version: version.map(str::to_owned),
            cores: 2,
            leader: id == 1,
            voter: id < 3,
        }
    }

    /// Every field of a node list, every state and an absent version survive a round trip.
    #[test]
    fn node_lists_round_trip() {
        let list = Response::NodeList(NodeList {
            nodes: vec![
                node(1, NodeState::Running, Some("0.1.0")),
                node(2, NodeState::Starting, None),
                node(3, NodeState::Unavailable, Some("0.1.0")),
                node(4, NodeState::Dead, Some("0.2.0")),
            ],
        });
        assert_eq!(Response::decode(&list.encode()), Ok(list));
        for response in [
            Response::InitClusterOk,
            Response::RemoveNodeOk(3),
            Response::RemoveNodeOk(u64::MAX),
            Response::NodeList(NodeList { nodes: vec![] }),
        ] {
            assert_eq!(Response::decode(&response.encode()), Ok(response));
        }
        for request in [
            Request::ListNodes,
            Request::InitCluster,
            Request::RemoveNode(0),
            Request::RemoveNode(u64::MAX),
        ] {
            assert_eq!(Request::decode(&request.encode()), Ok(request));
        }
    }

    /// A node the client could not dial is refused on decode: an empty address, or one with
    /// a space or a control character in it.
    #[test]
    fn undialable_addresses_are_refused() {
        for address in ["", "host 1:6570", "host\n:6570", &"a".repeat(261)] {
            let mut bad = node(1, NodeState::Running, None);
            bad.address = address.to_owned();
            let envelope = Response::NodeList(NodeList { nodes: vec![bad] }).encode();
            assert!(
                matches!(
                    Response::decode(&envelope),
                    Err(ProtocolError::InvalidField {
                        field: "NodeInfo.address",
                        ..
                    })
                ),
                "{address:?}"
            );
        }
    }

    /// A zero (unspecified) node state is refused, never guessed.
    #[test]
    fn unspecified_node_states_are_refused() {
        let mut fbb = FlatBufferBuilder::new();
        let address = fbb.create_string("127.0.0.1:6570");
        let info = wire::NodeInfo::create(
            &mut fbb,
            &wire::NodeInfoArgs {
                address: Some(address),
                ..Default::default()
            },
        );
        let nodes = fbb.create_vector(&[info]);
        let list = wire::NodeList::create(&mut fbb, &wire::NodeListArgs { nodes: Some(nodes) });
        let root = wire::Response::create(
            &mut fbb,
            &wire::ResponseArgs {
                body_type: wire::ResponseBody::NodeList,
                body: Some(list.as_union_value()),
            },
        );
        fbb.finish(root, Some(super::super::RESPONSE_IDENTIFIER));
        assert!(matches!(
            Response::decode(fbb.finished_data()),
            Err(ProtocolError::InvalidField {
                field: "NodeInfo.state",
                ..
            })
        ));
    }
}
