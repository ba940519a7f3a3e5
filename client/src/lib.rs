//! `runnel-client`: the Rust SDK of Runnel — admin calls, producers, readers and consumers
//! over QUIC, on tokio and quinn, speaking the wire protocol of `docs/format/protocol.md`.
//!
//! Responsibility: connect to a node (`runnel://host:port`, TLS 1.3, versioned handshake),
//! reach each shard on the node and core that own it (other nodes of a cluster learned with
//! `ListNodes` and dialled at their advertised addresses; one QUIC connection per core, opened
//! lazily, one bidirectional stream per request), route records by `hash128(key)` to the open shard
//! whose key range holds it, batch them ([`BufferedProducer`]: each record, owned or borrowed,
//! encoded at once into its shard's reused batch buffer; one acknowledgement per batch), read
//! shards ([`Reader`]), and consume subscriptions as a member of their consumer group
//! ([`Consumer`]: joins, heartbeats, rejoins, one long-lived stream per assigned shard, batched
//! acks).
//!
//! Invariants: a record is encoded once, by `runnel_core::BatchBuilder`; every batch read or
//! delivered is checked (both CRCs) before a record is handed out. Every buffer, queue, retry
//! loop and in-flight window is bounded by a named option or constant.
//! Must never: silently duplicate an append. A request is retried after a failure only when
//! that is safe: idempotent requests always; appends (and stream or subscription creation or
//! deletion) only when the request provably never reached the server, or the server refused
//! it (`Busy`). Otherwise the caller gets [`ClientError::OutcomeUnknown`] and decides —
//! unless the producer is idempotent (below).
//! Fault model: the server may vanish, restart, move shards, or answer anything; the answer
//! is a typed [`ClientError`], never a panic. A consumer survives a server restart by
//! rejoining; what it had not acked is delivered again (at least once, never lost).
//!
//! ```no_run
//! use runnel_client::{Client, ClientOptions, Durability, Record, StreamSpec};
//!
//! # async fn demo() -> Result<(), runnel_client::ClientError> {
//! let options = ClientOptions {
//!     ca_cert_path: Some("runnel-data/tls/cert.pem".into()),
//!     ..ClientOptions::default()
//! };
//! let client = Client::connect("runnel://127.0.0.1:6570", options).await?;
//! client
//!     .create_stream(StreamSpec::new("orders", Durability::Fsync).shard_count(4))
//!     .await?;
//! let producer = client.producer("orders")?;
//! let id = producer
//!     .send(Record::new(b"{\"total\": 12}".to_vec()).with_key(b"user-42".to_vec()))
//!     .await?;
//! println!("stored as {id}");
//! # Ok(())
//! # }
//! ```
//!
//! # Idempotent producer
//!
//! `client.producer("orders")?.idempotent(true)`, or [`BufferedProducerConfig::idempotent`],
//! makes retries safe: every batch carries a producer id and a per-shard sequence
//! (`docs/format/batch.md`, "Producer stamp"), and a shard that stored a batch answers a copy
//! of it with the first offsets instead of storing it again — across a server restart, and
//! across a failover of a replicated shard. So an append whose outcome was unknown (the
//! connection broke, or no answer came in time, after it was sent) is sent again, up to
//! [`ClientOptions::request_attempts_max`] attempts (raise it to ride out a restart: the
//! backoff between attempts is `retry_backoff_ms_min` doubling up to `retry_backoff_ms_max`).
//! Only when every attempt failed after one may have been delivered is the answer
//! [`ClientError::OutcomeUnknown`]. A producer that is not idempotent never sends an append
//! again once it may have reached the server.
//!
//! It is off by default. Kafka turned it on by default (3.0) because its producer keeps five
//! batches per partition in flight under it; ours sends one batch per shard at a time per
//! producer while idempotent (the server then sees a producer's sequences in order), which
//! costs nothing for a [`BufferedProducer`] at its default `in_flight_max` of 1 but serialises
//! concurrent `send`s of one [`Producer`] to the same shard, which otherwise share the
//! server's group commit. Producer ids are random (no round trip to ask for one); sessions
//! are renewed after any failure (`idempotence.rs`).
//!
//! Map: [`Client`] (`client.rs`, admin calls in `admin.rs` and `subscription_admin.rs`),
//! [`ClientOptions`] and [`ServerAddress`] (`options.rs`, `address.rs`), [`ClientError`]
//! (`error.rs`), the nodes of a cluster (`nodes.rs`), the connections per core and the
//! retry rules (`connection.rs`, `retry.rs`),
//! the QUIC endpoint (`endpoint.rs`), TLS (`tls.rs`), key routing (`routing.rs`), appends
//! shared by both producers (`append.rs`), [`Producer`], [`BufferedProducer`] (`buffered/`),
//! the idempotent producer's stamping (`idempotence.rs`),
//! [`Reader`] (`reader.rs`), [`Consumer`] (`consumer/`).

#![deny(clippy::unwrap_used)]

mod address;
mod admin;
mod append;
mod buffered;
mod client;
mod connection;
mod consumer;
mod endpoint;
mod error;
mod idempotence;
mod nodes;
mod options;
mod producer;
mod reader;
mod retry;
mod routing;
mod sql;
mod subscription_admin;
mod tls;
mod transport;

#[cfg(test)]
mod testing;

pub use address::{ServerAddress, DEFAULT_PORT, URL_NODES_MAX};
pub use admin::StreamSpec;
pub use buffered::{AppendFuture, BufferedProducer, BufferedProducerConfig};
pub use client::Client;
pub use consumer::{
    AckSummary, Acker, Consumer, ConsumerOptions, ConsumerStats, Delivery, RefusedAck,
};
pub use error::ClientError;
pub use options::ClientOptions;
pub use producer::Producer;
pub use reader::{Reader, RecordBatch, RecordStream};
pub use sql::{PushQuery, SqlAnswer, SqlOutcome, SqlRow};
pub use subscription_admin::SubscriptionSpec;

// The vocabulary of the SDK's signatures, so users need not depend on the inner crates.
pub use runnel_core::{
    BatchError, BorrowedRecord, KeyRange, Limits, Offset, Record, RecordHeader, RecordId,
    RecordRef, ShardId, StreamName,
};
pub use runnel_net::protocol::{
    AckRefusal, AllocationCounts, CoreStatus, Durability, ErrorCode, HelloOk, NodeInfo, NodeState,
    NodeStatus, ProtocolError, ReadEnd, ReadEndReason, ReadFrom, ReplicaPlacement, ShardInfo,
    ShardOwner, ShardStatus, StreamInfo, SubscriptionConsumer, SubscriptionInfo, SubscriptionShard,
    SubscriptionStart, CONSUMER_NAME_BYTES_MAX,
};

/// The handles move between tasks and threads; errors box into `Box<dyn Error + Send + Sync>`.
#[cfg(test)]
#[test]
fn public_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Client>();
    send_sync::<ClientError>();
    send_sync::<Producer>();
    send_sync::<BufferedProducer>();
    send_sync::<RecordBatch>();
    send_sync::<Consumer>();
    send_sync::<Acker>();
    send_sync::<Delivery>();
    send::<Reader>();
    send::<RecordStream>();
    send::<AppendFuture>();
}
