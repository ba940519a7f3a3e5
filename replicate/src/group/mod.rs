//! The metadata group: the metadata state machine replicated by Raft (tikv's raft-rs, which
//! is sans-IO like the rest of this crate).
//!
//! A [`GroupMember`] wraps raft-rs's `RawNode` over an in-memory [`GroupStore`] and applies
//! committed commands to its [`crate::metadata::MetadataState`]. Its owner (the server on core
//! 0, or the simulator) ticks it, hands it messages and proposals, persists what it asks,
//! sends what it returns. A single node is a group of one: the same code.
//!
//! Invariants (checked by the simulator in `tests/group_sim.rs` after every step): at most one
//! leader per term; a committed entry never changes or moves; every member's state is the
//! state of the committed log's prefix up to its applied index, byte for byte.
//!
//! Fault model: messages may be lost, duplicated, delayed, reordered, or cut by partitions;
//! members crash and lose what they had not synced; a snapshot or command that does not decode
//! is [`GroupError::Corrupt`], never skipped.

mod member;
mod rng;
pub mod sim;
mod store;

pub use member::{Advanced, AppliedEntry, GroupMember, MemberConfig, MembershipChange, Persist};
pub use raft::prelude::{ConfState, Entry, EntryType, HardState, Message};
pub use rng::SplitMix64;
pub use store::{GroupStore, RestoreError, StoredSnapshot};

use crate::metadata::DecodeError;

/// What can go wrong in a member.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// Only the leader takes proposals; `leader` is the one this member knows of.
    #[error("not the metadata leader (leader: {leader:?})")]
    NotLeader {
        /// The leader's id, if known.
        leader: Option<u64>,
    },
    /// raft-rs refused an input (a message for another group, a malformed message).
    #[error("raft: {0}")]
    Raft(raft::Error),
    /// A committed command or a snapshot did not decode: the log or the sender is damaged.
    #[error("a committed metadata entry or snapshot is damaged: {0}")]
    Corrupt(DecodeError),
    /// A snapshot whose state says another index than its position in the log.
    #[error("a snapshot at log index {snapshot} holds the state of index {state}")]
    SnapshotIndex {
        /// Where the snapshot stands in the log.
        snapshot: u64,
        /// The index its state was applied to.
        state: u64,
    },
    /// Committed entries arrived with a gap.
    #[error("committed entry {got} arrived when {expected} was next")]
    Gap {
        /// The index that was next.
        expected: u64,
        /// The index that came.
        got: u64,
    },
    /// A committed membership change did not decode.
    #[error("the membership change at log index {index} is damaged")]
    CorruptMembership {
        /// Its index.
        index: u64,
    },
}
