//! The subscription messages (request and response numbers 32–63): managing subscriptions,
//! joining a consumer group, receiving a shard's records and acking them.
//!
//! Stream model (`docs/format/protocol.md`, "Subscriptions"): `JoinSubscription` and `Consume`
//! open long-lived streams on which the client keeps its side open. On a join stream the
//! server sends `JoinOk` and then an `Assignment` whenever the member's shards change, the
//! client sends `Heartbeat`s and finally `LeaveSubscription`. On a consume stream the server
//! sends `Delivery` frames (each followed by whole batches) and the client sends `Ack`s, each
//! answered by an `AckResult`.
//!
//! Subscription names follow the stream naming rule (checked on decode); consumer names are
//! 1 to [`CONSUMER_NAME_BYTES_MAX`] bytes of UTF-8 without control characters.

pub(crate) mod decode;
pub(crate) mod encode;

use std::ops::Range;

use runnel_core::{Offset, ShardId, StreamName};

/// Longest consumer name, in bytes.
pub const CONSUMER_NAME_BYTES_MAX: usize = 255;

/// Where delivery starts on a shard a subscription has no committed progress on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubscriptionStart {
    /// Each shard's first retained record.
    Earliest,
    /// Records appended after the subscription was created.
    Latest,
    /// The first batch holding a record with a timestamp at or after this (ms since the epoch).
    Timestamp(i64),
}

/// Creates a subscription; answered by [`super::Response::SubscriptionInfo`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateSubscription {
    /// The subscription's name (the stream naming rule), unique in the cluster.
    pub name: String,
    /// The stream it consumes.
    pub stream: StreamName,
    /// Unacked records are delivered again after this long, in ms; 0: the server's default.
    pub ack_timeout_ms: u64,
    /// Most records delivered and not acked at once; 0: the server's default.
    pub max_unacked_records: u32,
    /// Where delivery starts on each shard.
    pub start: SubscriptionStart,
}

/// Lists subscriptions in name order, one page at a time; answered by
/// [`super::Response::SubscriptionList`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListSubscriptions {
    /// List subscriptions after this name (exclusive); from the first when `None`.
    pub start_after: Option<String>,
    /// Most subscriptions to list; 0 lets the server choose its page size.
    pub limit: u32,
    /// Only the subscriptions of this stream, when given.
    pub stream: Option<StreamName>,
}

/// Describes a subscription with its shards and consumers; answered by
/// [`super::Response::SubscriptionInfo`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeSubscription {
    /// The subscription.
    pub name: String,
}

/// Deletes a subscription; answered by [`super::Response::DeleteSubscriptionOk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteSubscription {
    /// The subscription.
    pub name: String,
    /// Delete even while consumers are joined (their streams end).
    pub force: bool,
}

/// Joins a subscription's consumer group; answered by [`super::Response::JoinOk`] and then
/// [`super::Response::Assignment`]s on the same stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinSubscription {
    /// The subscription.
    pub subscription: String,
    /// The consumer's name, unique in the group.
    pub consumer: String,
    /// The member id this client had before a reconnect: that member is replaced instead of
    /// its name being refused as in use.
    pub previous_member: Option<u64>,
    /// The member is expelled when not heard from for this long, in ms; 0: the server's
    /// default.
    pub session_timeout_ms: u32,
}

/// Receives one assigned shard's records; answered by [`super::Response::Delivery`] frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consume {
    /// The subscription.
    pub subscription: String,
    /// The shard, assigned to `member`.
    pub shard: ShardId,
    /// The member id from [`JoinOk`].
    pub member: u64,
}

/// On a consume stream: these delivered records were processed; answered by an [`AckResult`]
/// with the same `sequence`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// Chosen by the client, echoed by the answer.
    pub sequence: u64,
    /// The offsets acked, as ranges (end exclusive). Not checked here: the server refuses
    /// empty, inverted or unknown ranges in its answer.
    pub ranges: Vec<Range<u64>>,
}

/// One shard of a subscription, as described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionShard {
    /// The shard.
    pub shard: ShardId,
    /// Every record before it was acked; `None`: no progress yet.
    pub committed_offset: Option<Offset>,
    /// The shard's readable end, when its owner said (lag = end − committed).
    pub end_offset: Option<Offset>,
    /// Records delivered and not acked yet, when the shard's owner said.
    pub unacked_records: Option<u32>,
    /// The consumer it is assigned to.
    pub consumer: Option<String>,
}

/// A member of a consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionConsumer {
    /// The consumer's name.
    pub name: String,
    /// Its member id.
    pub member: u64,
    /// Its shards, ascending.
    pub shards: Vec<ShardId>,
    /// When it joined, in ms since the Unix epoch.
    pub joined_ms: u64,
}

/// A subscription; with its shards and consumers when described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionInfo {
    /// The subscription's name.
    pub name: String,
    /// Its id (never reused).
    pub id: u64,
    /// The stream it consumes.
    pub stream: StreamName,
    /// Unacked records are delivered again after this long, in ms.
    pub ack_timeout_ms: u64,
    /// Most records delivered and not acked at once.
    pub max_unacked_records: u32,
    /// Where delivery starts on a shard without progress.
    pub start: SubscriptionStart,
    /// When it was created, in ms since the Unix epoch.
    pub created_ms: u64,
    /// Every shard of the stream, in id order (describe only).
    pub shards: Vec<SubscriptionShard>,
    /// The members, in name order (describe only).
    pub consumers: Vec<SubscriptionConsumer>,
}

/// A page of subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionList {
    /// The subscriptions, in name order, without shards and consumers.
    pub subscriptions: Vec<SubscriptionInfo>,
    /// More follow the last one listed.
    pub more: bool,
}

/// A subscription was deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteSubscriptionOk {
    /// The subscription.
    pub name: String,
}

/// The answer to [`JoinSubscription`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinOk {
    /// The member id of this client.
    pub member: u64,
    /// Send a heartbeat at least this often, in ms.
    pub heartbeat_interval_ms: u32,
    /// The member is expelled when not heard from for this long, in ms.
    pub session_timeout_ms: u32,
}

/// A shard assigned to a member, and where to consume it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssignedShard {
    /// The shard.
    pub shard: ShardId,
    /// The node that owns it.
    pub node: u64,
    /// The core of that node (send `Consume` there).
    pub core: u32,
}

/// The member's shards now, replacing the previous assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// Grows with every change of the group's assignment.
    pub generation: u64,
    /// The shards, ascending.
    pub shards: Vec<AssignedShard>,
}

/// Header of a frame whose payload holds `batch_count` whole batches of `shard`, of which the
/// records with offsets in `ranges` are delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The shard.
    pub shard: ShardId,
    /// The offsets delivered: ascending, disjoint, non-empty ranges (checked on decode).
    pub ranges: Vec<Range<u64>>,
    /// Batches in the payload.
    pub batch_count: u32,
    /// These records were delivered before and not acked in time (or their member left).
    pub redelivery: bool,
}

/// Why an acked range was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AckRefusal {
    /// At or past the first offset never delivered.
    NotDelivered,
    /// Acked before, or below the committed offset.
    AlreadyAcked,
    /// The shard is not assigned to this member (any more).
    NotAssignee,
    /// An empty or inverted range.
    InvalidRange,
}

/// The answer to an [`Ack`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckResult {
    /// The ack's sequence.
    pub sequence: u64,
    /// Records newly acked.
    pub acked: u64,
    /// Ranges refused, with why; they changed nothing.
    pub refused: Vec<(Range<u64>, AckRefusal)>,
    /// The shard's committed offset after the ack.
    pub committed_offset: Offset,
    /// Refused ranges beyond those listed in `refused` (the server lists a bounded number).
    pub refused_unlisted: u64,
}

/// Why a consume stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConsumeEndReason {
    /// The shard went to another member, or this member left or was expelled.
    Revoked,
    /// The subscription was deleted.
    SubscriptionDeleted,
    /// The node is stopping.
    NodeStopping,
}

/// The last frame of a consume stream that ends without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumeEnd {
    /// Why.
    pub reason: ConsumeEndReason,
}

/// Checks a consumer name: 1 to [`CONSUMER_NAME_BYTES_MAX`] bytes, no control characters.
pub fn check_consumer_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("must not be empty");
    }
    if name.len() > CONSUMER_NAME_BYTES_MAX {
        return Err("must be at most 255 bytes");
    }
    if name.chars().any(char::is_control) {
        return Err("must not hold control characters");
    }
    Ok(())
}
