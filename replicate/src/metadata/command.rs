//! The commands of the metadata log, and what applying one changed.
//!
//! Room to grow: persistent queries and views will be new variants here, with new tags in the
//! codec (`docs/format/metadata.md` reserves them); a build that meets a tag it does not know
//! refuses the entry with [`super::DecodeError::UnknownCommand`] instead of skipping it.

use runnel_core::{Epoch, Offset, ShardId, StreamName};

use super::error::MetadataError;
use super::node::{Node, NodeId};
use super::shard::{Placement, Shard};
use super::stream::{Stream, StreamConfig};
use super::subscription::{Subscription, SubscriptionConfig, SubscriptionId, SubscriptionName};

/// One entry of the metadata log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// Adds a node, or updates the cores and address of a registered one. Shards already placed
    /// stay where they are.
    RegisterNode {
        /// The node and what it offers.
        node: Node,
    },
    /// Removes a node for good: it leaves the placement ring and the list of nodes. Refused
    /// while it owns shards of live streams ([`super::MetadataError::NodeOwnsShards`]) and for
    /// the last node. Its id is not retired: a node started afresh (an empty data directory)
    /// may register under it again.
    RemoveNode {
        /// The node.
        node: NodeId,
    },
    /// Names the cluster, once: the id every node's peer `Hello` carries, so that a node of
    /// another cluster (given the wrong seeds) is refused instead of mixing two metadata
    /// groups. Refused when the cluster has an id already ([`super::MetadataError::ClusterIdSet`])
    /// or for 0.
    SetClusterId {
        /// The id, random, not 0.
        id: u64,
    },
    /// Creates a stream with `config.shard_count` open shards splitting the key space evenly,
    /// placed round-robin over the registered cores of the nodes not in `avoid`, each with
    /// `config.replication_factor` replicas on distinct nodes (refused with
    /// [`super::MetadataError::NotEnoughNodes`] when fewer nodes are left).
    CreateStream {
        /// The stream's configuration.
        config: StreamConfig,
        /// The proposer's clock, in milliseconds since the Unix epoch: the creation time.
        now_ms: u64,
        /// Nodes that get none of the new shards: those the proposer saw unavailable. Node
        /// states are each node's own knowledge, so the proposer writes what it knows into the
        /// command and every replica places alike. Ids of unregistered nodes are ignored; when
        /// every registered node is listed the create is refused
        /// ([`super::MetadataError::NoAvailableNodes`]). Empty in entries written before it
        /// existed.
        avoid: Vec<NodeId>,
    },
    /// Deletes a stream and every shard of it, open or sealed. Their ids stay retired.
    ///
    /// A stream with subscriptions is refused ([`super::MetadataError::StreamHasSubscriptions`])
    /// unless `force` is set; a forced delete deletes its subscriptions too.
    DeleteStream {
        /// The stream.
        name: StreamName,
        /// Delete the stream even if it has subscriptions, and them with it. (Logs written
        /// before subscriptions existed hold deletes without the flag: they decode as `false`,
        /// which changes nothing for them since no stream had subscriptions then.)
        force: bool,
    },
    /// Seals an open shard and opens two children holding the two halves of its range.
    SplitShard {
        /// The shard to split.
        shard: ShardId,
        /// The proposer's clock, in milliseconds: the children's creation time.
        now_ms: u64,
    },
    /// Seals two adjacent open shards of one stream and opens one child holding both ranges.
    /// The two may be given in either order.
    MergeShards {
        /// One of the shards.
        left: ShardId,
        /// The other shard.
        right: ShardId,
        /// The proposer's clock, in milliseconds: the child's creation time.
        now_ms: u64,
    },
    /// Fails a shard's sequencer over: a compare-and-set that raises the epoch from `from` to
    /// `from + 1` and names `sequencer` the shard's placement. Refused unless the shard is
    /// open ([`super::MetadataError::ShardSealed`]), its epoch is still `from`
    /// ([`super::MetadataError::StaleEpoch`]: another bump came first, so two proposers that
    /// saw the same failure never bump twice) and `sequencer` is one of its replicas
    /// ([`super::MetadataError::NotAReplica`]).
    BumpEpoch {
        /// The shard.
        shard: ShardId,
        /// The epoch the proposer saw: the bump applies only if the shard is still at it.
        from: Epoch,
        /// The replica that becomes the sequencer of epoch `from + 1`.
        sequencer: Placement,
    },
    /// The epoch bump of the first version 1 logs (tag 6): raises a shard's epoch by one,
    /// open or sealed, without a compare and without moving the sequencer. Nothing proposes it
    /// any more; it stays so that such logs replay as they did.
    BumpEpochUnconditionally {
        /// The shard.
        shard: ShardId,
    },
    /// Creates a subscription on an existing stream, with no committed progress.
    CreateSubscription {
        /// The subscription's configuration.
        config: SubscriptionConfig,
        /// The proposer's clock, in milliseconds since the Unix epoch: the creation time.
        now_ms: u64,
    },
    /// Deletes a subscription and its committed progress. Its id stays retired.
    ///
    /// Whether consumers are connected is runtime state of the nodes, not metadata, so this
    /// command does not look: the server refuses a delete while consumers are connected, unless
    /// the request is forced, *before* proposing it.
    DeleteSubscription {
        /// The subscription.
        name: SubscriptionName,
    },
    /// Records a subscription's committed progress on one shard of its stream (open or
    /// sealed): every record below `offset` was acknowledged.
    ///
    /// Progress only moves forward: an offset at or below the committed one is accepted and
    /// changes nothing, because commits from different consumers and retries can reach the log
    /// out of order.
    CommitProgress {
        /// The subscription, by id: a commit in flight for a deleted subscription is refused,
        /// never applied to a new subscription of the same name.
        subscription: SubscriptionId,
        /// A shard of the subscription's stream.
        shard: ShardId,
        /// The offset delivery resumes at.
        offset: Offset,
    },
    /// Records the committed progress of several (subscription, shard) pairs at once: what one
    /// core commits per interval, as one entry of the metadata log (one consensus round in a
    /// cluster) instead of one per pair.
    ///
    /// Each commit is applied as [`Command::CommitProgress`] would apply it; a commit that one
    /// would refuse (its subscription deleted meanwhile, a shard not of its stream, the limit
    /// of committed offsets) is skipped and the others apply. The batch is refused as a whole
    /// only when it is empty or holds more than [`PROGRESS_BATCH_MAX`] commits.
    CommitProgressBatch {
        /// The commits, applied in this order.
        commits: Vec<ProgressCommit>,
    },
}

/// Most commits in one [`Command::CommitProgressBatch`].
pub const PROGRESS_BATCH_MAX: usize = 4096;

/// One commit of a [`Command::CommitProgressBatch`]: every record of `shard` below `offset`
/// was acknowledged to `subscription`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgressCommit {
    /// The subscription, by id.
    pub subscription: SubscriptionId,
    /// A shard of its stream.
    pub shard: ShardId,
    /// The offset delivery resumes at.
    pub offset: Offset,
}

/// What an accepted command changed, for the server to act on (open shard logs, start
/// sequencers, drop files). Shards are given as they are after the command.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Applied {
    /// A node was added (`previous` is `None`) or updated.
    NodeRegistered {
        /// The node now.
        node: Node,
        /// The node before, when it was registered already.
        previous: Option<Node>,
        /// Shards that were on cores the node no longer has, now on `core % cores`, in id
        /// order.
        replaced: Vec<Shard>,
    },
    /// The cluster got its id.
    ClusterIdSet {
        /// The id.
        id: u64,
    },
    /// A node was removed.
    NodeRemoved {
        /// The node as it was.
        node: Node,
    },
    /// A stream was created.
    StreamCreated {
        /// The stream.
        stream: Stream,
        /// Its shards, in key order.
        shards: Vec<Shard>,
    },
    /// A stream was deleted.
    StreamDeleted {
        /// The stream as it was.
        stream: Stream,
        /// Every shard it had, open or sealed, in id order, as they were.
        shards: Vec<Shard>,
        /// The subscriptions a forced delete deleted with it, in name order, as they were
        /// (empty when the delete was not forced).
        subscriptions: Vec<Subscription>,
    },
    /// A shard was split.
    ShardSplit {
        /// The parent, now sealed.
        parent: Shard,
        /// The two children, in key order.
        children: Vec<Shard>,
    },
    /// Two shards were merged.
    ShardsMerged {
        /// The two parents, now sealed, in key order.
        parents: Vec<Shard>,
        /// The child.
        child: Shard,
    },
    /// A shard's epoch was raised (by either bump command).
    EpochBumped {
        /// The shard with its new epoch and (after a `BumpEpoch`) its new sequencer.
        shard: Shard,
    },
    /// A subscription was created.
    SubscriptionCreated {
        /// The subscription.
        subscription: Subscription,
    },
    /// A subscription was deleted.
    SubscriptionDeleted {
        /// The subscription as it was, with its committed progress.
        subscription: Subscription,
    },
    /// A commit was accepted. `committed > previous` when it moved the progress; otherwise it
    /// came late and changed nothing.
    ProgressCommitted {
        /// The subscription.
        subscription: SubscriptionId,
        /// The shard.
        shard: ShardId,
        /// The committed offset now: the larger of the one given and `previous`.
        committed: Offset,
        /// The committed offset before, if there was one.
        previous: Option<Offset>,
    },
    /// A batch of commits was applied.
    ProgressBatchCommitted {
        /// Commits that were taken (moving the progress or not).
        taken: usize,
        /// Commits that were skipped, each with the refusal a single commit would have had.
        skipped: Vec<(ProgressCommit, MetadataError)>,
    },
}
