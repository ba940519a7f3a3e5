//! Test helpers: short constructors and a harness that applies commands at consecutive log
//! indexes and checks, after every step, that the invariants hold and that a refused command
//! changed nothing but the applied index.

use runnel_core::StreamName;

use super::{
    Applied, Command, Durability, MetadataError, MetadataState, Node, NodeId, StreamConfig,
    SubscriptionConfig, SubscriptionName,
};

/// A valid stream name.
pub(crate) fn name(text: &str) -> StreamName {
    StreamName::new(text).expect("test names are valid")
}

/// A valid configuration: `shard_count` shards, replication factor 1, a day of retention.
pub(crate) fn config(stream: &str, shard_count: u32) -> StreamConfig {
    StreamConfig {
        name: name(stream),
        shard_count,
        replication_factor: 1,
        retention_ms: 86_400_000,
        durability: Durability::Fsync,
    }
}

/// A valid subscription name.
pub(crate) fn subscription_name(text: &str) -> SubscriptionName {
    SubscriptionName::new(text).expect("test names are valid")
}

/// A subscription `subscription` on stream `stream` with the default settings.
pub(crate) fn subscription_config(subscription: &str, stream: &str) -> SubscriptionConfig {
    SubscriptionConfig::new(subscription_name(subscription), name(stream))
}

/// A node with `cores` cores at a valid address.
pub(crate) fn node(id: u64, cores: u32) -> Node {
    Node {
        id: NodeId(id),
        cores,
        address: format!("node-{id}.test:7000"),
    }
}

/// Applies commands at consecutive indexes, checking every step.
pub(crate) struct Harness {
    pub(crate) state: MetadataState,
}

impl Harness {
    pub(crate) fn new() -> Harness {
        Harness {
            state: MetadataState::new(),
        }
    }

    /// A harness with nodes `1..=nodes`, each with `cores` cores.
    pub(crate) fn with_nodes(nodes: u64, cores: u32) -> Harness {
        let mut harness = Harness::new();
        for id in 1..=nodes {
            harness.ok(Command::RegisterNode {
                node: node(id, cores),
            });
        }
        harness
    }

    /// Applies `command` at the next index. On a refusal, checks that only the applied index
    /// moved. Always checks the invariants.
    pub(crate) fn apply(&mut self, command: Command) -> Result<Applied, MetadataError> {
        let before = self.state.clone();
        let index = self.state.applied_index() + 1;
        let outcome = self.state.apply(index, &command);
        if let Err(error) = &outcome {
            assert!(error.is_rejection(), "{error}");
            let mut expected = before;
            expected.applied_index = index;
            assert_eq!(
                self.state, expected,
                "refused command {command:?} changed the state"
            );
        }
        assert_eq!(self.state.applied_index(), index);
        if let Err(broken) = self.state.check_invariants() {
            panic!("after {command:?}: {broken}");
        }
        outcome
    }

    /// Applies `command`, which must be accepted.
    pub(crate) fn ok(&mut self, command: Command) -> Applied {
        match self.apply(command.clone()) {
            Ok(applied) => applied,
            Err(error) => panic!("{command:?} was refused: {error}"),
        }
    }

    /// Applies `command`, which must be refused, and returns why.
    pub(crate) fn refused(&mut self, command: Command) -> MetadataError {
        match self.apply(command.clone()) {
            Ok(applied) => panic!("{command:?} was accepted: {applied:?}"),
            Err(error) => error,
        }
    }
}

/// Recomputes the body length and the CRC of a frame whose body was edited, so that a test can
/// reach the body decoder past the frame checks.
pub(crate) fn resign(bytes: &mut [u8]) {
    let Some(crc_at) = bytes.len().checked_sub(4) else {
        return;
    };
    let body_len = (crc_at.saturating_sub(super::codec::FRAME_HEADER_LEN)) as u32;
    if let Some(slot) = bytes.get_mut(8..12) {
        slot.copy_from_slice(&body_len.to_le_bytes());
    }
    let crc = crc32fast::hash(&bytes[..crc_at]);
    bytes[crc_at..].copy_from_slice(&crc.to_le_bytes());
}
