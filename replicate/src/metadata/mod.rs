//! The cluster **metadata state machine**: nodes, streams, shards and their lineage, and
//! subscriptions with their committed progress.
//!
//! Every node holds a replica of [`MetadataState`] and changes it only by applying the
//! [`Command`]s of the replicated metadata log, in log order, through [`MetadataState::apply`].
//! A command is stored as the bytes of [`encode_command`]; a node recovers from the bytes of
//! [`encode_snapshot`] plus the commands logged after it.
//!
//! Invariants (checked by [`MetadataState::check_invariants`], after every step in the property
//! tests and on every decoded snapshot): the open shards of each stream partition the whole
//! 128-bit key-hash space; lineage is symmetric (a parent lists its children and each child its
//! parents); stream and shard ids come from counters that only grow, so no id is ever reused,
//! not even after a delete; every shard belongs to a stream that exists and sits on a node that
//! is registered; every subscription belongs to a stream that exists, its committed progress
//! names only shards of that stream, and its id comes from a counter that only grows.
//!
//! Determinism: the same commands applied in the same order give byte-identical snapshots on
//! every replica. Nothing here reads a clock, a file, a socket or a random source; time comes in
//! inside the commands (`now_ms`), and only ordered maps are iterated.
//!
//! Fault model: any byte given to a decoder may be wrong; the answer is a typed
//! [`DecodeError`], never a panic. A command may be invalid for the state it meets (a stream
//! that already exists, a sealed shard): it is rejected with a [`MetadataError`], identically on
//! every replica, and consumes its log index.

mod command;
mod error;
mod invariants;
mod lineage;
mod node;
mod placement;
mod routing;
mod shard;
mod state;
mod stream;
mod subscription;

pub mod codec;

#[cfg(test)]
mod proptests;
#[cfg(test)]
pub(crate) mod testing;

pub use codec::{decode_command, decode_snapshot, encode_command, encode_snapshot, DecodeError};
pub use command::{Applied, Command, ProgressCommit, PROGRESS_BATCH_MAX};
pub use error::MetadataError;
pub use node::{Node, NodeId, NODES_MAX, NODE_ADDRESS_BYTES_MAX, NODE_CORES_MAX};
pub use shard::{Placement, Shard, ShardStatus};
pub use state::{MetadataState, SHARDS_MAX};
pub use stream::{
    Durability, Stream, StreamConfig, StreamId, REPLICATION_FACTOR_MAX, SHARD_COUNT_MAX,
};
pub use subscription::{
    InvalidSubscriptionName, Subscription, SubscriptionConfig, SubscriptionId, SubscriptionName,
    SubscriptionStart, ACK_TIMEOUT_MS_DEFAULT, ACK_TIMEOUT_MS_MAX, COMMITTED_OFFSETS_MAX,
    MAX_UNACKED_RECORDS_DEFAULT, MAX_UNACKED_RECORDS_LIMIT, SUBSCRIPTIONS_MAX,
};
