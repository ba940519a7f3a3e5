//! The messages of the protocol as plain Rust values: [`Request`] and [`Response`] mirror the
//! unions of `net/schema/runnel.fbs` field by field, so the server and the client SDK never
//! touch generated flatbuffers code.
//!
//! [`Request::encode`] / [`Response::encode`] build an envelope; [`Request::decode`] /
//! [`Response::decode`] verify one (flatbuffers verifier, file identifier) and check every
//! value the protocol constrains (stream names, non-zero enums, key ranges) before returning
//! it. Decoding allocates only the message's own strings and lists; envelopes are at most
//! [`ENVELOPE_BYTES_MAX`](super::ENVELOPE_BYTES_MAX), so that is bounded too.

pub mod cluster;
mod decode;
mod encode;
pub mod sql;
pub mod subscription;

use std::fmt;

use runnel_core::{Epoch, KeyRange, Offset, RecordId, ShardId, StreamName};

use super::error::ProtocolError;
pub use cluster::{check_node_address, NodeInfo, NodeList, NodeState, NODE_ADDRESS_BYTES_MAX};
pub use sql::{ExecuteSql, SqlChange, SqlChanges, SqlResult};
pub use subscription::{
    check_consumer_name, Ack, AckRefusal, AckResult, AssignedShard, Assignment, Consume,
    ConsumeEnd, ConsumeEndReason, CreateSubscription, DeleteSubscription, DeleteSubscriptionOk,
    Delivery, DescribeSubscription, JoinOk, JoinSubscription, ListSubscriptions,
    SubscriptionConsumer, SubscriptionInfo, SubscriptionList, SubscriptionShard, SubscriptionStart,
    CONSUMER_NAME_BYTES_MAX,
};

/// The file identifier of a request envelope (bytes 4..8 of the flatbuffer).
pub const REQUEST_IDENTIFIER: &str = "RNRQ";
/// The file identifier of a response envelope.
pub const RESPONSE_IDENTIFIER: &str = "RNRS";

// ---------------------------------------------------------------------------------------------
// Shared values
// ---------------------------------------------------------------------------------------------

/// When a stream acknowledges an append (ARCHITECTURE §6). Always explicit on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Durability {
    /// After fdatasync on a write quorum.
    Fsync,
    /// Once a write quorum holds the batch in memory.
    Memory,
}

/// Whether a shard takes appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShardStatus {
    /// Takes appends.
    Open,
    /// Split or merged: readable, never appended to again.
    Sealed,
}

/// One shard of a stream and where it lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    /// The shard's id, unique in the cluster.
    pub id: ShardId,
    /// The key hashes the shard owns (or owned, once sealed).
    pub key_range: KeyRange,
    /// Open or sealed.
    pub status: ShardStatus,
    /// The node that owns the shard's sequencer.
    pub node: u64,
    /// The core of that node (its endpoint listens on the node's base port + core).
    pub core: u32,
    /// The sequencer generation.
    pub epoch: Epoch,
    /// The first readable offset, when the answering node knows it.
    pub start_offset: Option<Offset>,
    /// The offset the next record will get (the committed end), when known.
    pub next_offset: Option<Offset>,
    /// The shards this one was split or merged from.
    pub parents: Vec<ShardId>,
    /// The shards that replaced this one once sealed.
    pub children: Vec<ShardId>,
    /// Every replica of the shard, the sequencer's (`node`, `core`) included, in replica-set
    /// order: the stream's replication factor entries on distinct nodes. A server older than
    /// replica sets sends none; they decode as the sequencer alone.
    pub replicas: Vec<ReplicaPlacement>,
}

impl ShardInfo {
    /// Where the shard's sequencer runs (`node`, `core`): where appends go.
    pub fn sequencer(&self) -> ReplicaPlacement {
        ReplicaPlacement {
            node: self.node,
            core: self.core,
        }
    }
}

/// Where one replica of a shard runs: a node and one of its cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplicaPlacement {
    /// The node.
    pub node: u64,
    /// The core on that node.
    pub core: u32,
}

/// A stream's settings and, from `DescribeStream` and `CreateStream`, its shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// The stream's name.
    pub name: StreamName,
    /// Open shards now.
    pub shard_count: u32,
    /// Replicas per shard.
    pub replication_factor: u8,
    /// How long records are kept, in milliseconds.
    pub retention_ms: u64,
    /// When appends are acknowledged.
    pub durability: Durability,
    /// The shards; empty in a [`StreamList`].
    pub shards: Vec<ShardInfo>,
    /// `shards` was cut to fit the envelope: page on with [`ListShards`].
    pub shards_truncated: bool,
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

/// The first request of every connection: the protocol versions the client speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Oldest protocol version the client speaks.
    pub version_min: u16,
    /// Newest protocol version the client speaks.
    pub version_max: u16,
    /// Free text for the server's logs (e.g. `"runnel-cli 0.1.0"`).
    pub client_name: String,
}

/// Creates a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateStream {
    /// The new stream's name.
    pub name: StreamName,
    /// Shards to create it with.
    pub shard_count: u32,
    /// Replicas per shard.
    pub replication_factor: u8,
    /// How long records are kept, in milliseconds.
    pub retention_ms: u64,
    /// When appends are acknowledged.
    pub durability: Durability,
}

/// Lists streams in name order, one page at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListStreams {
    /// List streams after this name (exclusive); from the first one when `None`.
    pub start_after: Option<StreamName>,
    /// Most streams to list; 0 lets the server choose its page size.
    pub limit: u32,
}

/// Describes one stream with its shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeStream {
    /// The stream.
    pub name: StreamName,
}

/// Deletes a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteStream {
    /// The stream.
    pub name: StreamName,
    /// Delete even while subscriptions or queries use it.
    pub force: bool,
}

/// Lists a stream's shards in id order, one page at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListShards {
    /// The stream.
    pub stream: StreamName,
    /// List shards after this id (exclusive); from the first one when `None`.
    pub start_after: Option<ShardId>,
    /// Most shards to list; 0 lets the server choose its page size.
    pub limit: u32,
}

/// Appends the one batch carried as the frame's payload. Idempotence (producer id and
/// sequence) travels in the batch header only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Append {
    /// The stream.
    pub stream: StreamName,
    /// The shard, which must own every record's key hash.
    pub shard: ShardId,
}

/// Where a read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    /// The shard's first readable offset.
    Earliest,
    /// The shard's next offset: only records appended from now on.
    Latest,
    /// This offset.
    Offset(Offset),
    /// The first batch holding a record with timestamp at or after this (ms since the epoch).
    Timestamp(i64),
}

/// Reads a shard: answered by [`ReadChunk`] frames and one [`ReadEnd`], or an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// The stream.
    pub stream: StreamName,
    /// The shard.
    pub shard: ShardId,
    /// Where to start.
    pub from: ReadFrom,
    /// Stop before this offset (exclusive).
    pub until: Option<Offset>,
    /// Stop once this many batch bytes were sent; 0: no byte bound. The batch crossing the
    /// bound is still sent whole.
    pub max_bytes: u64,
    /// Once caught up, wait for new records instead of ending.
    pub tail: bool,
}

/// Makes every record before `offset` unreadable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trim {
    /// The stream.
    pub stream: StreamName,
    /// The shard.
    pub shard: ShardId,
    /// The shard's new first readable offset.
    pub offset: Offset,
}

/// A request: the envelope of the first frame of a request stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Handshake: the first request of a connection.
    Hello(Hello),
    /// Creates a stream; answered by [`Response::StreamInfo`].
    CreateStream(CreateStream),
    /// Lists streams; answered by [`Response::StreamList`].
    ListStreams(ListStreams),
    /// Describes a stream; answered by [`Response::StreamInfo`].
    DescribeStream(DescribeStream),
    /// Deletes a stream; answered by [`Response::DeleteStreamOk`].
    DeleteStream(DeleteStream),
    /// Lists a stream's shards; answered by [`Response::ShardList`].
    ListShards(ListShards),
    /// Appends the frame's payload (one batch); answered by [`Response::AppendOk`].
    Append(Append),
    /// Reads a shard; answered by [`Response::ReadChunk`]s and a [`Response::ReadEnd`].
    Read(Read),
    /// Trims a shard; answered by [`Response::TrimOk`].
    Trim(Trim),
    /// Asks for the node's status; answered by [`Response::NodeStatus`].
    GetNodeStatus,
    /// Creates a subscription; answered by [`Response::SubscriptionInfo`].
    CreateSubscription(CreateSubscription),
    /// Lists subscriptions; answered by [`Response::SubscriptionList`].
    ListSubscriptions(ListSubscriptions),
    /// Describes a subscription; answered by [`Response::SubscriptionInfo`].
    DescribeSubscription(DescribeSubscription),
    /// Deletes a subscription; answered by [`Response::DeleteSubscriptionOk`].
    DeleteSubscription(DeleteSubscription),
    /// Joins a consumer group; answered by [`Response::JoinOk`], then
    /// [`Response::Assignment`]s.
    JoinSubscription(JoinSubscription),
    /// On a join stream: the member is alive.
    Heartbeat,
    /// On a join stream: the member leaves; answered by [`Response::LeaveOk`].
    LeaveSubscription,
    /// Receives a shard's records; answered by [`Response::Delivery`] frames.
    Consume(Consume),
    /// On a consume stream: records processed; answered by [`Response::AckResult`].
    Ack(Ack),
    /// Lists the cluster's nodes; answered by [`Response::NodeList`].
    ListNodes,
    /// Founds the cluster on the node asked; answered by [`Response::InitClusterOk`].
    InitCluster,
    /// Removes the node with this id from the cluster; answered by [`Response::RemoveNodeOk`].
    RemoveNode(u64),
    /// Runs SQL statements; answered by [`Response::SqlResult`] (then [`Response::SqlChanges`]
    /// frames for a push query).
    ExecuteSql(ExecuteSql),
}

impl Request {
    /// The message's name, as in the schema (for logs and errors).
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Hello(_) => "Hello",
            Request::CreateStream(_) => "CreateStream",
            Request::ListStreams(_) => "ListStreams",
            Request::DescribeStream(_) => "DescribeStream",
            Request::DeleteStream(_) => "DeleteStream",
            Request::ListShards(_) => "ListShards",
            Request::Append(_) => "Append",
            Request::Read(_) => "Read",
            Request::Trim(_) => "Trim",
            Request::GetNodeStatus => "GetNodeStatus",
            Request::CreateSubscription(_) => "CreateSubscription",
            Request::ListSubscriptions(_) => "ListSubscriptions",
            Request::DescribeSubscription(_) => "DescribeSubscription",
            Request::DeleteSubscription(_) => "DeleteSubscription",
            Request::JoinSubscription(_) => "JoinSubscription",
            Request::Heartbeat => "Heartbeat",
            Request::LeaveSubscription => "LeaveSubscription",
            Request::Consume(_) => "Consume",
            Request::Ack(_) => "Ack",
            Request::ListNodes => "ListNodes",
            Request::InitCluster => "InitCluster",
            Request::RemoveNode(_) => "RemoveNode",
            Request::ExecuteSql(_) => "ExecuteSql",
        }
    }

    /// Whether frames of this message carry a payload: only `Append` (one batch) does.
    pub fn carries_payload(&self) -> bool {
        matches!(self, Request::Append(_))
    }
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

/// Why a request failed: the code a program acts on. Numbers are stable (see the schema).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// A bug or unexpected state on the server.
    Internal,
    /// The request is malformed or its arguments are invalid.
    InvalidRequest,
    /// No common protocol version, or a frame version the peer does not speak.
    UnsupportedVersion,
    /// No stream of that name.
    UnknownStream,
    /// A stream of that name exists already.
    StreamExists,
    /// No such shard in that stream.
    UnknownShard,
    /// A record's key hash is outside the shard's key range.
    WrongShard,
    /// The shard (or, for a join, the subscription's group) is served by another node or core
    /// ([`ErrorResponse::owner`] says which).
    NotOwner,
    /// The offset is beyond the shard's end.
    OffsetOutOfRange,
    /// The offset was trimmed or expired.
    Trimmed,
    /// The batch failed validation.
    InvalidBatch,
    /// The batch exceeds the server's `batch_bytes_max`.
    BatchTooLarge,
    /// A record exceeds the server's `record_bytes_max`.
    RecordTooLarge,
    /// The shard is poisoned by a storage error and refuses appends.
    StorageFault,
    /// Too much in flight: retry later.
    Busy,
    /// The shard is sealed: refresh the stream's shards.
    ShardSealed,
    /// An idempotent producer's sequence skipped ahead.
    OutOfOrderSequence,
    /// No write quorum reachable now: retry later.
    Unavailable,
    /// No subscription of that name.
    UnknownSubscription,
    /// A subscription of that name exists already.
    SubscriptionExists,
    /// Another member of the consumer group holds that consumer name.
    ConsumerNameInUse,
    /// The subscription has consumers joined: delete it with `force`.
    SubscriptionInUse,
    /// The shard is not assigned to that member: wait for the next assignment.
    NotAssigned,
    /// The stream has subscriptions and the delete was not forced: delete them first, or force.
    StreamHasSubscriptions,
    /// The metadata group's leader is elsewhere or unknown (an election is under way, or the
    /// cluster is not initialised yet): retry.
    NotLeader,
    /// RemoveNode of a node that still owns shards of live streams: delete those streams first
    /// (moving shards waits for replication).
    NodeOwnsShards,
    /// No registered node has that id.
    UnknownNode,
    /// RemoveNode refused: the metadata group could not commit without the node.
    WouldLoseQuorum,
    /// ExecuteSql: a statement failed; see [`ErrorResponse::sql_position`].
    SqlError,
    /// A code this build does not know (sent by a newer peer), kept as received. Never
    /// one of the numbers above.
    Other(u16),
}

/// `(code, number)` for every named code: the one table both directions use.
const ERROR_CODES: [(ErrorCode, u16); 29] = [
    (ErrorCode::Internal, 1),
    (ErrorCode::InvalidRequest, 2),
    (ErrorCode::UnsupportedVersion, 3),
    (ErrorCode::UnknownStream, 4),
    (ErrorCode::StreamExists, 5),
    (ErrorCode::UnknownShard, 6),
    (ErrorCode::WrongShard, 7),
    (ErrorCode::NotOwner, 8),
    (ErrorCode::OffsetOutOfRange, 9),
    (ErrorCode::Trimmed, 10),
    (ErrorCode::InvalidBatch, 11),
    (ErrorCode::BatchTooLarge, 12),
    (ErrorCode::RecordTooLarge, 13),
    (ErrorCode::StorageFault, 14),
    (ErrorCode::Busy, 15),
    (ErrorCode::ShardSealed, 16),
    (ErrorCode::OutOfOrderSequence, 17),
    (ErrorCode::Unavailable, 18),
    (ErrorCode::UnknownSubscription, 19),
    (ErrorCode::SubscriptionExists, 20),
    (ErrorCode::ConsumerNameInUse, 21),
    (ErrorCode::SubscriptionInUse, 22),
    (ErrorCode::NotAssigned, 23),
    (ErrorCode::StreamHasSubscriptions, 24),
    (ErrorCode::NotLeader, 25),
    (ErrorCode::NodeOwnsShards, 26),
    (ErrorCode::UnknownNode, 27),
    (ErrorCode::WouldLoseQuorum, 28),
    (ErrorCode::SqlError, 29),
];

impl ErrorCode {
    /// Every named code, in number order.
    pub fn all() -> impl Iterator<Item = ErrorCode> {
        ERROR_CODES.iter().map(|&(code, _)| code)
    }

    /// The code's number on the wire.
    pub fn number(self) -> u16 {
        match self {
            ErrorCode::Other(number) => number,
            named => ERROR_CODES
                .iter()
                .find(|&&(code, _)| code == named)
                .map_or(0, |&(_, number)| number),
        }
    }

    /// The code with `number`; [`ErrorCode::Other`] for numbers this build does not name.
    pub fn from_number(number: u16) -> ErrorCode {
        ERROR_CODES
            .iter()
            .find(|&&(_, n)| n == number)
            .map_or(ErrorCode::Other(number), |&(code, _)| code)
    }

    /// Whether the same request may succeed if retried later, unchanged.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::Busy | ErrorCode::Unavailable | ErrorCode::NotLeader
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorCode::Other(number) => write!(f, "error code {number}"),
            named => fmt::Debug::fmt(named, f),
        }
    }
}

/// The node and core that own a shard, as a `NotOwner` error names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShardOwner {
    /// The owning node.
    pub node: u64,
    /// The owning core of that node.
    pub core: u32,
}

/// A failed request: a code, a message for people, and what a program needs to act on
/// some codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorResponse {
    /// What went wrong.
    pub code: ErrorCode,
    /// Why, in words.
    pub message: String,
    /// `NotOwner`: where the shard lives, when the server knows.
    pub owner: Option<ShardOwner>,
    /// `Busy`, `Unavailable`: when to retry, in milliseconds.
    pub retry_after_ms: Option<u32>,
    /// `Trimmed`, `OffsetOutOfRange`: the shard's first readable offset.
    pub start_offset: Option<Offset>,
    /// `OffsetOutOfRange`: the shard's next offset.
    pub next_offset: Option<Offset>,
    /// `SqlError`: where in the statement text, `(line, column)` from 1.
    pub sql_position: Option<(u64, u64)>,
}

impl ErrorResponse {
    /// An error with `code` and `message` and no further detail.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorResponse {
        ErrorResponse {
            code,
            message: message.into(),
            owner: None,
            retry_after_ms: None,
            start_offset: None,
            next_offset: None,
            sql_position: None,
        }
    }

    /// An `InvalidRequest` error for a request that could not be read.
    pub fn invalid_request(error: &ProtocolError) -> ErrorResponse {
        ErrorResponse::new(ErrorCode::InvalidRequest, error.to_string())
    }
}

impl fmt::Display for ErrorResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ErrorResponse {}

/// The server's answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloOk {
    /// The protocol version of the connection: the newest both sides speak.
    pub version: u16,
    /// The server's node id.
    pub node_id: u64,
    /// This endpoint's core.
    pub core: u32,
    /// The node's cores; core *i* listens on `base_port + i`.
    pub core_count: u32,
    /// The port of core 0.
    pub base_port: u16,
    /// The server's version string.
    pub server_version: String,
    /// The server's largest record (key + value + headers), in bytes.
    pub record_bytes_max: u32,
    /// The server's largest batch, in bytes.
    pub batch_bytes_max: u32,
    /// The largest frame payload either side may send on this connection, in bytes.
    pub frame_payload_bytes_max: u32,
}

/// A page of streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamList {
    /// The streams, in name order, without their shards.
    pub streams: Vec<StreamInfo>,
    /// More streams follow the last one listed.
    pub more: bool,
}

/// A stream was deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteStreamOk {
    /// The stream.
    pub name: StreamName,
}

/// A page of a stream's shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardList {
    /// The stream.
    pub stream: StreamName,
    /// The shards, in id order.
    pub shards: Vec<ShardInfo>,
    /// More shards follow the last one listed.
    pub more: bool,
}

/// An append was acknowledged: its records are `(shard, base_offset) ..= (shard, last_offset)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOk {
    /// The shard.
    pub shard: ShardId,
    /// The first record's offset.
    pub base_offset: Offset,
    /// The last record's offset.
    pub last_offset: Offset,
}

impl AppendOk {
    /// The id of the batch's first record.
    pub fn first_record(&self) -> RecordId {
        RecordId {
            shard: self.shard,
            offset: self.base_offset,
        }
    }

    /// The id of the batch's last record.
    pub fn last_record(&self) -> RecordId {
        RecordId {
            shard: self.shard,
            offset: self.last_offset,
        }
    }
}

/// Header of a frame whose payload holds `batch_count` whole batches of a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadChunk {
    /// The offset after the chunk's last record.
    pub next_offset: Offset,
    /// Batches in the payload.
    pub batch_count: u32,
}

/// Why a read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReadEndReason {
    /// Not tailing, and the committed end of the shard was reached.
    CaughtUp,
    /// `until` was reached.
    UntilReached,
    /// `max_bytes` was reached.
    MaxBytesReached,
    /// The shard is sealed and was read to its end: continue with its children.
    ShardSealed,
}

/// The last frame of a successful read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadEnd {
    /// Where a later read should continue.
    pub next_offset: Offset,
    /// Why the read ended.
    pub reason: ReadEndReason,
}

/// A shard was trimmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrimOk {
    /// The shard.
    pub shard: ShardId,
    /// Its first readable offset now.
    pub start_offset: Offset,
}

/// One core of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreStatus {
    /// The core's index.
    pub core: u32,
    /// The port its endpoint listens on.
    pub port: u16,
    /// Shard replicas it owns.
    pub shard_count: u32,
    /// Heap allocations made by the core's thread since the node started, if the server
    /// counts them.
    pub allocations: Option<AllocationCounts>,
}

/// Heap allocations counted by a server, and the bytes they asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AllocationCounts {
    /// Allocations, reallocations included.
    pub allocations: u64,
    /// Bytes those allocations asked for.
    pub bytes: u64,
}

/// A node's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// The node's id.
    pub node_id: u64,
    /// The server's version string.
    pub server_version: String,
    /// Time since the node started, in milliseconds.
    pub uptime_ms: u64,
    /// The node's cores.
    pub core_count: u32,
    /// The port of core 0.
    pub base_port: u16,
    /// Each core's status.
    pub cores: Vec<CoreStatus>,
    /// Heap allocations made by the node's threads that are no core's, if the server counts
    /// them.
    pub other_allocations: Option<AllocationCounts>,
}

/// A response: the envelope of each frame the server sends back on a request stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// The request failed; the last frame of its stream.
    Error(ErrorResponse),
    /// Answer to [`Request::Hello`].
    HelloOk(HelloOk),
    /// Answer to [`Request::CreateStream`] and [`Request::DescribeStream`].
    StreamInfo(StreamInfo),
    /// Answer to [`Request::ListStreams`].
    StreamList(StreamList),
    /// Answer to [`Request::DeleteStream`].
    DeleteStreamOk(DeleteStreamOk),
    /// Answer to [`Request::ListShards`].
    ShardList(ShardList),
    /// Answer to [`Request::Append`].
    AppendOk(AppendOk),
    /// One frame of batches answering [`Request::Read`].
    ReadChunk(ReadChunk),
    /// The last frame answering [`Request::Read`].
    ReadEnd(ReadEnd),
    /// Answer to [`Request::Trim`].
    TrimOk(TrimOk),
    /// Answer to [`Request::GetNodeStatus`].
    NodeStatus(NodeStatus),
    /// Answer to [`Request::CreateSubscription`] and [`Request::DescribeSubscription`].
    SubscriptionInfo(SubscriptionInfo),
    /// Answer to [`Request::ListSubscriptions`].
    SubscriptionList(SubscriptionList),
    /// Answer to [`Request::DeleteSubscription`].
    DeleteSubscriptionOk(DeleteSubscriptionOk),
    /// First answer to [`Request::JoinSubscription`].
    JoinOk(JoinOk),
    /// On a join stream: the member's shards now.
    Assignment(Assignment),
    /// On a consume stream: records delivered (the payload holds their batches).
    Delivery(Delivery),
    /// Answer to [`Request::Ack`].
    AckResult(AckResult),
    /// The last frame of a consume stream ending without an error.
    ConsumeEnd(ConsumeEnd),
    /// Answer to [`Request::LeaveSubscription`].
    LeaveOk,
    /// Answer to [`Request::ListNodes`].
    NodeList(NodeList),
    /// Answer to [`Request::InitCluster`].
    InitClusterOk,
    /// Answer to [`Request::RemoveNode`]: the node with this id is removed.
    RemoveNodeOk(u64),
    /// Answer to [`Request::ExecuteSql`].
    SqlResult(SqlResult),
    /// On a push query's stream: rows as they come.
    SqlChanges(SqlChanges),
}

impl Response {
    /// The message's name, as in the schema (for logs and errors).
    pub fn kind(&self) -> &'static str {
        match self {
            Response::Error(_) => "Error",
            Response::HelloOk(_) => "HelloOk",
            Response::StreamInfo(_) => "StreamInfo",
            Response::StreamList(_) => "StreamList",
            Response::DeleteStreamOk(_) => "DeleteStreamOk",
            Response::ShardList(_) => "ShardList",
            Response::AppendOk(_) => "AppendOk",
            Response::ReadChunk(_) => "ReadChunk",
            Response::ReadEnd(_) => "ReadEnd",
            Response::TrimOk(_) => "TrimOk",
            Response::NodeStatus(_) => "NodeStatus",
            Response::SubscriptionInfo(_) => "SubscriptionInfo",
            Response::SubscriptionList(_) => "SubscriptionList",
            Response::DeleteSubscriptionOk(_) => "DeleteSubscriptionOk",
            Response::JoinOk(_) => "JoinOk",
            Response::Assignment(_) => "Assignment",
            Response::Delivery(_) => "Delivery",
            Response::AckResult(_) => "AckResult",
            Response::ConsumeEnd(_) => "ConsumeEnd",
            Response::LeaveOk => "LeaveOk",
            Response::NodeList(_) => "NodeList",
            Response::InitClusterOk => "InitClusterOk",
            Response::RemoveNodeOk(_) => "RemoveNodeOk",
            Response::SqlResult(_) => "SqlResult",
            Response::SqlChanges(_) => "SqlChanges",
        }
    }

    /// Whether frames of this message carry a payload: only `ReadChunk` and `Delivery` (whole
    /// batches) do.
    pub fn carries_payload(&self) -> bool {
        matches!(self, Response::ReadChunk(_) | Response::Delivery(_))
    }
}
