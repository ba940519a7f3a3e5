//! Why a metadata command was refused.
//!
//! Every variant except [`MetadataError::OutOfOrder`] is a *rejection*: the command was applied
//! at its log index and refused by the state, identically on every replica. The log index is
//! consumed and nothing else changes. `OutOfOrder` means the caller offered the wrong index and
//! nothing changed at all.

use runnel_core::{Epoch, ShardId, StreamName};
use thiserror::Error;

use super::node::NodeId;
use super::shard::Placement;
use super::subscription::{SubscriptionId, SubscriptionName};

/// A metadata command that could not be applied, with what is needed to report or act on it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// The command's log index is not the one after the last applied index. Nothing changed:
    /// the caller skipped, repeated or reordered log entries.
    #[error("metadata command at log index {got} is out of order: expected index {expected}")]
    OutOfOrder {
        /// The index the state expects next (`applied_index + 1`).
        expected: u64,
        /// The index given.
        got: u64,
    },
    /// A stream configuration breaks a rule (shard count, replication factor, retention).
    #[error("invalid stream configuration: {reason}")]
    InvalidConfig {
        /// Which rule, with the value given.
        reason: String,
    },
    /// A node description breaks a rule (core count, address).
    #[error("invalid node {node}: {reason}")]
    InvalidNode {
        /// The node as given.
        node: NodeId,
        /// Which rule, with the value given.
        reason: String,
    },
    /// No node is registered, so there is nowhere to place a shard.
    #[error("no node is registered: shards cannot be placed")]
    NoNodes,
    /// Every registered node is on the command's list of nodes to avoid (unavailable as the
    /// proposer saw them): there is nowhere to place a new shard now.
    #[error("no node is available for new shards: all {avoided} registered nodes are unavailable")]
    NoAvailableNodes {
        /// Nodes registered (and all avoided).
        avoided: u64,
    },
    /// No registered node has that id.
    #[error("node {node} is not registered")]
    NodeNotFound {
        /// The id given.
        node: NodeId,
    },
    /// The cluster has an id already: it is set once.
    #[error("the cluster has an id already ({existing:016x})")]
    ClusterIdSet {
        /// The id it has.
        existing: u64,
    },
    /// A node cannot be removed while it holds a replica (sequencer or not) of a shard of a
    /// live stream: re-placing replicas on other nodes (re-replication) is not built yet.
    #[error(
        "node {node} owns {shards} shards of streams {streams:?}: delete those streams before \
         removing it (moving shards to other nodes waits for replication)"
    )]
    NodeOwnsShards {
        /// The node.
        node: NodeId,
        /// How many shards (open or sealed) it owns.
        shards: u64,
        /// The streams they belong to, in name order.
        streams: Vec<StreamName>,
    },
    /// The last registered node cannot be removed: the cluster would have none.
    #[error("node {node} is the last node of the cluster and cannot be removed")]
    LastNode {
        /// The node.
        node: NodeId,
    },
    /// The replication factor asks for more distinct nodes than can take replicas: the
    /// registered nodes, less those the command avoids (a create's `avoid`, the nodes its
    /// proposer saw unavailable).
    #[error(
        "replication factor {replication_factor} needs as many nodes, but {nodes} can take replicas"
    )]
    NotEnoughNodes {
        /// The stream's replication factor.
        replication_factor: u8,
        /// Nodes that could take a replica (registered, not avoided).
        nodes: u64,
    },
    /// A stream of that name exists already.
    #[error("stream {name} already exists")]
    StreamExists {
        /// The name asked for.
        name: StreamName,
    },
    /// No stream has that name.
    #[error("stream {name} does not exist")]
    StreamNotFound {
        /// The name asked for.
        name: StreamName,
    },
    /// No shard has that id (it never existed, or its stream was deleted).
    #[error("shard {shard} does not exist")]
    ShardNotFound {
        /// The id asked for.
        shard: ShardId,
    },
    /// The shard is sealed (split or merged already) and cannot change its range again.
    #[error("shard {shard} is sealed")]
    ShardSealed {
        /// The sealed shard.
        shard: ShardId,
    },
    /// The shard's key range holds a single hash and cannot be split.
    #[error("shard {shard} holds a single key hash and cannot be split")]
    ShardTooSmall {
        /// The shard asked to split.
        shard: ShardId,
    },
    /// Two shards cannot be merged: they are the same shard, belong to different streams, or
    /// their key ranges do not touch.
    #[error("shards {left} and {right} are not adjacent shards of one stream")]
    NotAdjacent {
        /// The first shard given.
        left: ShardId,
        /// The second shard given.
        right: ShardId,
    },
    /// The command would exceed a bound of the metadata (nodes, shards, subscriptions,
    /// committed offsets).
    #[error("too many {what}: the limit is {max}")]
    LimitExceeded {
        /// What is bounded.
        what: &'static str,
        /// The bound.
        max: u64,
    },
    /// A subscription configuration breaks a rule (ack timeout, unacked limit).
    #[error("invalid configuration of subscription {name}: {reason}")]
    InvalidSubscriptionConfig {
        /// The subscription's name.
        name: SubscriptionName,
        /// Which rule, with the value given.
        reason: String,
    },
    /// A subscription of that name exists already (names are unique in the cluster).
    #[error("subscription {name} already exists")]
    SubscriptionExists {
        /// The name asked for.
        name: SubscriptionName,
    },
    /// No subscription has that name.
    #[error("subscription {name} does not exist")]
    SubscriptionNotFound {
        /// The name asked for.
        name: SubscriptionName,
    },
    /// No subscription has that id (it never existed, or it was deleted: ids are never
    /// reused, so progress for a deleted subscription never lands on a new one).
    #[error("subscription id {subscription} does not exist")]
    SubscriptionIdNotFound {
        /// The id asked for.
        subscription: SubscriptionId,
    },
    /// The shard exists but belongs to another stream than the subscription's.
    #[error("shard {shard} is not a shard of the stream of subscription {subscription}")]
    ShardNotInSubscription {
        /// The subscription.
        subscription: SubscriptionId,
        /// The shard asked for.
        shard: ShardId,
    },
    /// The stream has subscriptions, and the delete was not forced.
    #[error(
        "stream {name} has {} subscription(s) ({}): delete them first or force the delete",
        .subscriptions.len(),
        list_names(.subscriptions)
    )]
    StreamHasSubscriptions {
        /// The stream.
        name: StreamName,
        /// Its subscriptions, in name order.
        subscriptions: Vec<SubscriptionName>,
    },
    /// A `BumpEpoch` saw an epoch the shard has left: another bump came first.
    #[error("shard {shard} is at epoch {current}, not {from}: another failover came first")]
    StaleEpoch {
        /// The shard.
        shard: ShardId,
        /// The epoch the bump expected.
        from: Epoch,
        /// The shard's epoch now.
        current: Epoch,
    },
    /// A `BumpEpoch` named a sequencer that is not one of the shard's replicas.
    #[error("node {} core {} holds no replica of shard {shard}", .sequencer.node, .sequencer.core)]
    NotAReplica {
        /// The shard.
        shard: ShardId,
        /// The placement given.
        sequencer: Placement,
    },
    /// A counter (stream ids, shard ids, subscription ids, an epoch) would pass `u64::MAX`.
    #[error("the {counter} counter is exhausted")]
    CounterExhausted {
        /// Which counter.
        counter: &'static str,
    },
}

/// The first few names, for a message of bounded length.
fn list_names(names: &[SubscriptionName]) -> String {
    const SHOWN_MAX: usize = 5;
    let mut text = names
        .iter()
        .take(SHOWN_MAX)
        .map(SubscriptionName::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if let Some(more) = names.len().checked_sub(SHOWN_MAX).filter(|&more| more > 0) {
        text.push_str(&format!(" and {more} more"));
    }
    text
}

impl MetadataError {
    /// Whether the command consumed its log index (every error but
    /// [`MetadataError::OutOfOrder`]): the state's `applied_index` moved to the command's index
    /// and nothing else changed.
    pub fn is_rejection(&self) -> bool {
        !matches!(self, MetadataError::OutOfOrder { .. })
    }
}
