//! Metadata proposals from any core: the mesh service through which a core other than 0 hands
//! a command to core 0, which proposes it (through its proposer when this node leads the
//! metadata group, through the leader otherwise) and answers once it is committed and applied
//! on this node, or refused. See [`Core::propose`].

use runnel_net::protocol::ErrorResponse;
use runnel_replicate::metadata::Command;

use crate::core::Core;
use crate::mesh::Service;

/// `metadata.propose`: core 0 proposes the command. Local to the node (other nodes get
/// proposals as the peer request `Propose`).
pub struct Propose;

impl Service for Propose {
    const NAME: &'static str = "metadata.propose";
    type Request = Command;
    /// Committed and applied on this node, or why not (the client's error).
    type Response = Result<(), ErrorResponse>;
}

/// Registers the proposal service on `core`.
pub fn register(core: &Core) {
    core.mesh
        .register::<Propose, _, _>(|core, command| async move { Ok(core.propose(command).await) });
}
