//! Calls to a core of another node, through both nodes' core 0 and the peer transport.
//!
//! [`call_at`] encodes the request with its [`RemoteService`]'s codec and calls this node's
//! core 0 with the mesh's own service [`Forward`], whose handler sends `PeerRequest::Ask` (the
//! service's id, the encoded request, and the metadata index the calling core had applied) to
//! the other node's core 0. That node first waits (up to [`ASK_METADATA_WAIT_MS`]) until it
//! applied that index too, so a call about a subscription or an assignment just committed never
//! meets older metadata, then decodes the request with the service's codec (core 0 registers
//! every service), calls its core over its own mesh, and answers `PeerResponse::Answered` with
//! the encoded response or the error's description. Every failure on the way (no peer
//! transport, the node unreachable or silent, no such core, bytes that do not decode) is a
//! [`MeshError`] that says what failed.

use std::rc::Rc;
use std::time::Duration;

use runnel_replicate::metadata::NodeId;

use super::{Mesh, MeshError, RemoteService, Service, ServiceId};
use crate::core::Core;
use crate::peer::{PeerRequest, PeerResponse, PeerTarget};

/// How long a call to another node may take, end to end, in milliseconds (a
/// `subscription.prepare` persists through the metadata group, whose forwarded proposals take
/// up to 5 s).
pub const ASK_TIMEOUT_MS: u64 = 10_000;
/// How long the answering node waits to apply the caller's metadata index, in milliseconds.
pub const ASK_METADATA_WAIT_MS: u64 = 5_000;
/// The longest error description sent back to another node, in bytes (a frame's string holds
/// at most 64 KiB).
pub const REASON_BYTES_MAX: usize = 4096;

/// The mesh's own service: core 0 sends an encoded call to another node and returns its
/// encoded response.
pub struct Forward;

/// A call for a core of another node, encoded, as core 0 forwards it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    /// The node called.
    pub node: NodeId,
    /// Its core called.
    pub core: u32,
    /// The metadata index the calling core had applied (the other node answers from at least
    /// this state).
    pub applied_index: u64,
    /// The service called.
    pub service: ServiceId,
    /// The request, encoded by the service's codec.
    pub request: Vec<u8>,
}

impl Service for Forward {
    const NAME: &'static str = "mesh.forward";
    type Request = Forwarded;
    type Response = Vec<u8>;
}

/// Registers the mesh's own services on `core`.
pub fn register(core: &Core) {
    core.mesh
        .register::<Forward, _, _>(
            |core, forwarded| async move { forward(&core, forwarded).await },
        );
}

/// Calls remote service `S` on core `target` of node `node`: over the mesh on this node,
/// through core 0 and the peer transport on another.
pub async fn call_at<S: RemoteService>(
    core: &Rc<Core>,
    node: NodeId,
    target: u32,
    request: S::Request,
) -> Result<S::Response, MeshError> {
    if node == core.node_id() {
        return core.call::<S>(target, request).await;
    }
    let mut bytes = Vec::new();
    S::encode_request(&request, &mut bytes);
    let forwarded = Forwarded {
        node,
        core: target,
        applied_index: core.metadata.borrow().applied_index(),
        service: S::ID,
        request: bytes,
    };
    let response = core.call::<Forward>(0, forwarded).await?;
    S::decode_response(&response).map_err(|error| MeshError::Malformed {
        service: S::NAME,
        error,
    })
}

/// Core 0: sends a forwarded call to its node and waits (up to [`ASK_TIMEOUT_MS`]) for the
/// encoded response.
async fn forward(core: &Rc<Core>, forwarded: Forwarded) -> Result<Vec<u8>, MeshError> {
    let node = forwarded.node;
    assert_eq!(core.index, 0, "only core 0 talks to other nodes");
    assert_ne!(
        node,
        core.node_id(),
        "a call for this node goes over the mesh"
    );
    let peers = core.peers.borrow().clone();
    let Some(peers) = peers else {
        return Err(MeshError::Unreachable {
            node,
            reason: "this node has no peer transport (no cluster CA configured)".into(),
        });
    };
    let request = PeerRequest::Ask {
        core: forwarded.core,
        applied_index: forwarded.applied_index,
        service: forwarded.service,
        request: forwarded.request,
    };
    let timeout = Duration::from_millis(ASK_TIMEOUT_MS);
    match peers
        .request(PeerTarget::Node(node.0), request, timeout)
        .await
    {
        Ok(PeerResponse::Answered(Ok(response))) => Ok(response),
        Ok(PeerResponse::Answered(Err(reason))) => Err(MeshError::Remote { node, reason }),
        Ok(other) => Err(MeshError::Unreachable {
            node,
            reason: format!(
                "it answered a call with another response (kind {})",
                crate::peer::Frame::Response(other).kind()
            ),
        }),
        Err(error) => Err(MeshError::Unreachable {
            node,
            reason: format!("core {} did not answer: {error}", forwarded.core),
        }),
    }
}

/// Core 0: answers node `from`'s call of `service` on this node's core `target`, once this
/// node applied the metadata index the caller had: the encoded response, or the error's
/// description (at most [`REASON_BYTES_MAX`] bytes).
pub async fn answer_from_peer(
    core: &Rc<Core>,
    from: u64,
    target: u32,
    applied_index: u64,
    service: ServiceId,
    request: &[u8],
) -> Result<Vec<u8>, String> {
    let answered: Result<Vec<u8>, MeshError> = async {
        if target as usize >= core.config.cores {
            return Err(MeshError::NoCore {
                core: target,
                cores: core.config.cores,
            });
        }
        let request = core
            .mesh
            .decode_remote(service, request)
            .ok_or(MeshError::NoHandler {
                service,
                core: core.index,
            })??;
        let caught_up = match core.group() {
            Some(group) => {
                group
                    .wait_applied(
                        core,
                        applied_index,
                        Duration::from_millis(ASK_METADATA_WAIT_MS),
                    )
                    .await
            }
            None => core.metadata.borrow().applied_index() >= applied_index,
        };
        if !caught_up {
            return Err(MeshError::failed(format!(
                "node {} has not applied metadata index {applied_index} (node {from} has) within \
             {ASK_METADATA_WAIT_MS} ms",
                core.node_id()
            )));
        }
        let response = Mesh::call_any(core, target, service, request).await?;
        core.mesh.encode_remote(service, &response)
    }
    .await;
    answered.map_err(|error| {
        let mut reason = error.to_string();
        if reason.len() > REASON_BYTES_MAX {
            let mut end = REASON_BYTES_MAX;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        reason
    })
}
