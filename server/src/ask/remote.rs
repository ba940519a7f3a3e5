//! Questions to a core of another node, through both nodes' core 0 and the peer transport.
//!
//! The asking node's core 0 sends `PeerRequest::Ask` to the other node's core 0 with the
//! metadata index the asking core had applied when it asked; the answering node first waits
//! (up to [`ASK_METADATA_WAIT_MS`]) until it applied that index too, so a question about a
//! subscription or an assignment just committed is never answered from older metadata, then
//! asks its core over its mesh and answers `PeerResponse::Answered`. Every failure on the way
//! (no peer transport, the node unreachable or silent, no such core) is an
//! [`Answer::Failed`] that says what failed.

use std::rc::Rc;
use std::time::Duration;

use runnel_replicate::metadata::NodeId;

use super::{Answer, Question};
use crate::core::Core;
use crate::peer::{PeerRequest, PeerResponse, PeerTarget};

/// How long a question to another node may take, end to end, in milliseconds (a `Prepare`
/// persists through the metadata group, whose forwarded proposals take up to 5 s).
pub const ASK_TIMEOUT_MS: u64 = 10_000;
/// How long the answering node waits to apply the asker's metadata index, in milliseconds.
pub const ASK_METADATA_WAIT_MS: u64 = 5_000;

/// Core 0: asks core `target` of node `node` (another node) `question`, as a core that had
/// applied metadata index `applied_index` asks it.
pub async fn ask_peer(
    core: &Rc<Core>,
    node: NodeId,
    target: u32,
    applied_index: u64,
    question: Question,
) -> Answer {
    assert_eq!(core.index, 0, "only core 0 talks to other nodes");
    assert_ne!(
        node,
        core.node_id(),
        "a question for this node goes over the mesh"
    );
    let peers = core.peers.borrow().clone();
    let Some(peers) = peers else {
        return Answer::Failed(format!(
            "cannot ask node {node}: this node has no peer transport (no cluster CA configured)"
        ));
    };
    let request = PeerRequest::Ask {
        core: target,
        applied_index,
        question,
    };
    let timeout = Duration::from_millis(ASK_TIMEOUT_MS);
    match peers
        .request(PeerTarget::Node(node.0), request, timeout)
        .await
    {
        Ok(PeerResponse::Answered(answer)) => answer,
        Ok(other) => Answer::Failed(format!(
            "node {node} answered a question with another response (kind {})",
            crate::peer::Frame::Response(other).kind()
        )),
        Err(error) => Answer::Failed(format!("node {node} core {target} did not answer: {error}")),
    }
}

/// Core 0: answers node `from`'s question for this node's core `target`, once this node
/// applied the metadata index the asker had.
pub async fn answer_from_peer(
    core: &Rc<Core>,
    from: u64,
    target: u32,
    applied_index: u64,
    question: Question,
) -> Answer {
    if target as usize >= core.config.cores {
        return Answer::Failed(format!(
            "node {} has no core {target} (it runs {} cores); asked by node {from}",
            core.node_id(),
            core.config.cores
        ));
    }
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
        return Answer::Failed(format!(
            "node {} has not applied metadata index {applied_index} (node {from} has) within \
             {ASK_METADATA_WAIT_MS} ms",
            core.node_id()
        ));
    }
    core.ask(target, question).await
}
