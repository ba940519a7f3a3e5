//! The wire protocol: frames of a flatbuffers envelope followed by raw batch bytes, on QUIC
//! streams. Drawn byte by byte, with every message and error code, in
//! `docs/format/protocol.md`.
//!
//! Stream model: one bidirectional QUIC stream per request. The client writes one request
//! frame and finishes its side; the server answers with one response frame — or, for `Read`,
//! `ReadChunk` frames and a `ReadEnd` — and finishes. The first stream of a connection is the
//! versioned handshake ([`handshake`]). ALPN `runnel/1` is set by [`crate::tls`].
//!
//! Invariants: batch bytes are carried raw after the envelope, at a 16-byte aligned offset of
//! the frame, and land in a 16-byte aligned buffer ([`FrameReader`]); they are never
//! re-encoded. Every envelope from the network passes the flatbuffers verifier before any field
//! is read. Every limit (envelope, payload) is checked from the frame header, before a buffer
//! is sized for the frame.
//! Must never: panic on bytes from the network, or use glommio (the client SDK runs on tokio:
//! everything here works on quinn's runtime-agnostic streams, or on byte slices).
//!
//! Map: [`frame`] the frame header and encoder, [`mod@stream`] the incremental reader and the
//! writers, [`messages`] the typed requests and responses, [`handshake`] versions and close
//! codes, [`error`] the [`ProtocolError`]. The generated flatbuffers code is private.

pub mod error;
pub mod frame;
mod generated;
pub mod handshake;
pub mod messages;
pub mod stream;

pub use error::ProtocolError;
pub use frame::{
    align_frame_len, encode_frame, encode_frame_into, FrameHeader, FrameLimits, ENVELOPE_BYTES_MAX,
    FRAME_ALIGNMENT, FRAME_HEADER_LEN, FRAME_MAGIC, FRAME_VERSION,
};
pub use handshake::{negotiate, CloseCode, PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN};
pub use messages::{
    check_consumer_name, Ack, AckRefusal, AckResult, AllocationCounts, Append, AppendOk,
    AssignedShard, Assignment, Consume, ConsumeEnd, ConsumeEndReason, CoreStatus, CreateStream,
    CreateSubscription, DeleteStream, DeleteStreamOk, DeleteSubscription, DeleteSubscriptionOk,
    Delivery, DescribeStream, DescribeSubscription, Durability, ErrorCode, ErrorResponse,
    ExecuteSql, Hello, HelloOk, JoinOk, JoinSubscription, ListShards, ListStreams,
    ListSubscriptions, NodeInfo, NodeList, NodeState, NodeStatus, Read, ReadChunk, ReadEnd,
    ReadEndReason, ReadFrom, ReplicaPlacement, Request, Response, ShardInfo, ShardList, ShardOwner,
    ShardStatus, SqlChange, SqlChanges, SqlResult, StreamInfo, StreamList, SubscriptionConsumer,
    SubscriptionInfo, SubscriptionList, SubscriptionShard, SubscriptionStart, Trim, TrimOk,
    CONSUMER_NAME_BYTES_MAX, REQUEST_IDENTIFIER, RESPONSE_IDENTIFIER,
};
pub use stream::{
    write_frame, write_request, write_response, Frame, FrameReader, FrameSink, FrameSource,
    QuinnChunk, ResponseWriter,
};
