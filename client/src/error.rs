//! [`ClientError`]: everything a client call can fail with, typed so a program can act on it.
//!
//! A server's refusal keeps the protocol's [`ErrorCode`], message and details. Connection,
//! TLS, timeout and protocol failures are separate variants. [`ClientError::OutcomeUnknown`]
//! is the one a caller must think about: the request may or may not have taken effect.

use std::net::SocketAddr;
use std::sync::Arc;

use runnel_core::{BatchError, IdError, Offset, RecordId, ShardId};
use runnel_net::protocol::{CloseCode, ErrorCode, ErrorResponse, ProtocolError, ShardOwner};
use thiserror::Error;

use crate::consumer::{AckSummary, RefusedAck};

/// Why a client call failed. Cheap to clone (one failed batch fails many records).
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The URL is not `runnel://host[:port]`.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given (shortened to 256 characters).
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An option or configuration value is out of its allowed range.
    #[error("invalid option {field}: {reason}")]
    InvalidOptions {
        /// The option's name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// An argument is invalid (a stream name breaking the naming rule, a shard count of 0, …).
    #[error("invalid {what}: {reason}")]
    InvalidArgument {
        /// What the argument is.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The server refused the request: a protocol error code and the server's message.
    #[error("{request}: {code}: {message}")]
    Server {
        /// The request that failed (e.g. `"Append"`).
        request: &'static str,
        /// What went wrong, as the protocol numbers it.
        code: ErrorCode,
        /// The server's explanation, for people.
        message: String,
        /// `NotOwner`: the shard's owner, when the server knows it.
        owner: Option<ShardOwner>,
        /// `Busy`, `Unavailable`: when to retry, in milliseconds.
        retry_after_ms: Option<u32>,
        /// `Trimmed`, `OffsetOutOfRange`: the shard's first readable offset.
        start_offset: Option<Offset>,
        /// `OffsetOutOfRange`: the shard's next offset.
        next_offset: Option<Offset>,
    },
    /// The endpoint refused to start a connection (bad address or server name).
    #[error("cannot connect to {address}: {source}")]
    Connect {
        /// The address dialled.
        address: SocketAddr,
        /// quinn's reason.
        source: quinn::ConnectError,
    },
    /// The connection failed or was closed (lost, timed out, reset, closed by the server).
    #[error("connection failed: {source}")]
    Connection {
        /// quinn's reason.
        source: quinn::ConnectionError,
    },
    /// TLS failed: the trust anchor could not be loaded, or the server's certificate was
    /// refused during the handshake.
    #[error("TLS: {reason}")]
    Tls {
        /// What failed, in words.
        reason: String,
    },
    /// The handshake on a connection's first stream failed (no common version, an answer
    /// from an unexpected node or core).
    #[error("handshake with {address} failed: {reason}")]
    Handshake {
        /// The address of the endpoint.
        address: SocketAddr,
        /// What failed.
        reason: String,
    },
    /// `Client::connect` found no node to talk to within its deadline
    /// (`ClientOptions::connect_timeout_ms`), over every attempt.
    #[error(
        "cannot reach the node at {address} within {timeout_ms} ms (the connect deadline){}",
        last.as_ref().map_or_else(String::new, |last| format!("; last failure: {last}"))
    )]
    Unreachable {
        /// The node's URL, as parsed.
        address: String,
        /// The deadline, in milliseconds.
        timeout_ms: u64,
        /// The last attempt's failure, unless the deadline itself ended it.
        last: Option<Box<ClientError>>,
    },
    /// No answer within the time allowed.
    #[error("{request}: no answer within {timeout_ms} ms")]
    Timeout {
        /// The request (or `"connect"`).
        request: &'static str,
        /// The time allowed, in milliseconds.
        timeout_ms: u64,
    },
    /// The bytes on a request's stream broke the protocol (see `ProtocolError`), or the
    /// stream was reset.
    #[error("{request}: protocol error: {source}")]
    Protocol {
        /// The request whose stream failed.
        request: &'static str,
        /// The frame reader's or writer's error.
        source: ProtocolError,
    },
    /// The server answered with a message that does not answer the request.
    #[error("{request}: unexpected answer {response}")]
    UnexpectedResponse {
        /// The request.
        request: &'static str,
        /// What came back (or what was wrong with it).
        response: String,
    },
    /// A batch could not be encoded (e.g. a record over the server's `record_bytes_max`), or
    /// a batch read from the server failed its checks.
    #[error("batch: {source}")]
    Batch {
        /// The batch format's error.
        #[from]
        source: BatchError,
    },
    /// No shard can take the record: no open shard holds its key, the stream has no open
    /// shard, or the shards the server listed are inconsistent.
    #[error("stream {stream}: {reason}")]
    NoRoute {
        /// The stream.
        stream: String,
        /// Why.
        reason: String,
    },
    /// A shard is owned by a core this client does not know of on the node it is connected
    /// to (the node has fewer cores than the shard list says, or its ports overflow).
    #[error("core {core} is not one of the node's {core_count} cores")]
    UnknownCore {
        /// The core asked for.
        core: u32,
        /// The cores the node announced in its handshake.
        core_count: u32,
    },
    /// A shard (or a subscription's coordinator) is placed on a node this client cannot
    /// find: the cluster does not list it, even after the nodes were listed again, or its
    /// advertised address answers as another node. Nothing was sent to it.
    #[error("node {node}: {reason}")]
    UnknownNode {
        /// The node id the metadata named.
        node: u64,
        /// Why it cannot be reached.
        reason: String,
    },
    /// The request may or may not have taken effect: it was sent in full, then the connection
    /// failed or the answer did not come in time. Never retried automatically for appends,
    /// stream creation and deletion: retrying could store records twice. Read the shard (or
    /// describe the stream) to find out.
    #[error("{request}: outcome unknown ({source}); not retried, to avoid duplicates")]
    OutcomeUnknown {
        /// The request.
        request: &'static str,
        /// The failure after which the outcome is unknown.
        source: Box<ClientError>,
    },
    /// `Producer::send_batch` stored some records and failed others: `ids[i]` is record `i`'s
    /// id if it was stored (records of other shards may have been, since batches to different
    /// shards are independent requests).
    #[error("{stored} of {total} records stored; first failure: {source}", stored = ids.iter().flatten().count(), total = ids.len())]
    PartialAppend {
        /// Each record's id, in the order given, or `None` if it was not stored (or its
        /// outcome is unknown: see `source`).
        ids: Vec<Option<RecordId>>,
        /// The first failure.
        source: Box<ClientError>,
    },
    /// Acks were refused: those records were not acked, and will be delivered again (to this
    /// consumer, or to the shard's new member). Returned by `Consumer::flush_acks` for every
    /// refusal since the previous flush (the ones of acks sent automatically included), and by
    /// `Consumer::ack` at once for a shard the consumer does not hold. Not fatal: the
    /// consumer goes on.
    #[error(
        "{refused_ranges} acked range(s) refused ({refused_records} records){}",
        first_refusal(refused)
    )]
    AckRefused {
        /// The refused ranges with why, in the order refused; at most 64 are listed.
        refused: Vec<RefusedAck>,
        /// Ranges refused in all, the unlisted ones included.
        refused_ranges: u64,
        /// Records refused in all.
        refused_records: u64,
        /// What was acked meanwhile.
        summary: AckSummary,
    },
    /// Too many separate ranges of acks are queued for one shard (acks of scattered records,
    /// or a shard whose stream has been down long): flush the acks, then ack again.
    #[error("shard {shard}: {ranges_max} separate ranges of acks are queued already")]
    AckQueueFull {
        /// The shard.
        shard: ShardId,
        /// The bound.
        ranges_max: usize,
    },
    /// The producer, consumer or client was closed.
    #[error("closed")]
    Closed,
    /// A local I/O operation failed (reading the CA file, resolving the host, binding).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The operating system's error.
        source: Arc<std::io::Error>,
    },
}

impl ClientError {
    /// Whether the same call may succeed if made again later, unchanged: the server said
    /// `Busy`, `Unavailable` or `NotLeader` (the metadata group is electing), the connection was lost or timed out, or no answer came in
    /// time. Never true of [`ClientError::OutcomeUnknown`]: retrying it may duplicate records.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Server { code, .. } => code.is_retryable(),
            ClientError::Connection { source } => connection_is_transient(source),
            ClientError::Timeout { .. } => true,
            ClientError::Protocol {
                source:
                    ProtocolError::Read(quinn::ReadError::ConnectionLost(lost))
                    | ProtocolError::Write(quinn::WriteError::ConnectionLost(lost)),
                ..
            } => connection_is_transient(lost),
            _ => false,
        }
    }

    /// The protocol error code, for errors the server answered.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the server refused because the client's view of the stream's shards is stale
    /// (wrong shard for a key, shard unknown, owned elsewhere, or sealed), or the shards name
    /// a node the client cannot find: refresh the shards and route again. Nothing was stored.
    pub(crate) fn is_routing(&self) -> bool {
        matches!(self, ClientError::UnknownNode { .. })
            || matches!(
                self.code(),
                Some(
                    ErrorCode::WrongShard
                        | ErrorCode::UnknownShard
                        | ErrorCode::NotOwner
                        | ErrorCode::ShardSealed
                )
            )
    }

    /// Whether no connection to the node could be made (refused, unreachable, or no answer
    /// to the connect itself): nothing was sent. For a shard's request this may mean the shard
    /// moved off a dead node (a failover), so the caller refreshes the shards from another
    /// node before the retry rather than dial the dead one again.
    pub(crate) fn is_connect_failure(&self) -> bool {
        matches!(
            self,
            ClientError::Connect { .. }
                | ClientError::Unreachable { .. }
                | ClientError::Timeout {
                    request: "connect",
                    ..
                }
        )
    }

    /// A server's error answer to `request`.
    pub(crate) fn server(request: &'static str, error: ErrorResponse) -> ClientError {
        ClientError::Server {
            request,
            code: error.code,
            message: error.message,
            owner: error.owner,
            retry_after_ms: error.retry_after_ms,
            start_offset: error.start_offset,
            next_offset: error.next_offset,
        }
    }

    /// A frame error on `request`'s stream; a lost connection is reported as such.
    pub(crate) fn protocol(request: &'static str, error: ProtocolError) -> ClientError {
        match error {
            ProtocolError::Read(quinn::ReadError::ConnectionLost(lost))
            | ProtocolError::Write(quinn::WriteError::ConnectionLost(lost)) => {
                ClientError::connection(lost)
            }
            source => ClientError::Protocol { request, source },
        }
    }

    /// A failed connection; a TLS alert (QUIC crypto error codes 0x100..0x1ff) is a TLS error.
    pub(crate) fn connection(error: quinn::ConnectionError) -> ClientError {
        if let quinn::ConnectionError::TransportError(transport) = &error {
            if is_tls_alert(u64::from(transport.code)) {
                return ClientError::Tls {
                    reason: transport.to_string(),
                };
            }
        }
        ClientError::Connection { source: error }
    }

    /// A local I/O failure while doing `context`.
    pub(crate) fn io(context: impl Into<String>, error: std::io::Error) -> ClientError {
        ClientError::Io {
            context: context.into(),
            source: Arc::new(error),
        }
    }

    /// An invalid stream name.
    pub(crate) fn stream_name(error: IdError) -> ClientError {
        ClientError::InvalidArgument {
            what: "stream name",
            reason: name_reason(error),
        }
    }

    /// An invalid subscription name (subscription names follow the stream naming rule).
    pub(crate) fn subscription_name(error: IdError) -> ClientError {
        ClientError::InvalidArgument {
            what: "subscription name",
            reason: name_reason(error),
        }
    }
}

/// Why a name was refused, without the "invalid stream name" that `InvalidArgument`'s message
/// says already: `"<name>" <rule broken>`.
fn name_reason(error: IdError) -> String {
    match error {
        IdError::InvalidStreamName { name, reason } => format!("{name:?} {reason}"),
        other => other.to_string(),
    }
}

/// `"; first: <refusal>"`, or nothing when none is listed.
fn first_refusal(refused: &[RefusedAck]) -> String {
    refused
        .first()
        .map_or_else(String::new, |first| format!("; first: {first}"))
}

/// Whether a QUIC transport error code carries a TLS alert (RFC 9001 §4.8: 0x100 + alert).
fn is_tls_alert(code: u64) -> bool {
    (0x100..0x200).contains(&code)
}

/// Whether a connection failure may go away by reconnecting: lost, timed out, reset, or
/// closed by a server shutting down. Not: closed by us, a protocol violation, a version
/// mismatch, a TLS failure.
fn connection_is_transient(error: &quinn::ConnectionError) -> bool {
    match error {
        quinn::ConnectionError::Reset | quinn::ConnectionError::TimedOut => true,
        quinn::ConnectionError::ApplicationClosed(close) => matches!(
            CloseCode::from_number(close.error_code.into_inner()),
            Some(CloseCode::ShuttingDown | CloseCode::Done | CloseCode::Internal) | None
        ),
        quinn::ConnectionError::ConnectionClosed(_) => true,
        quinn::ConnectionError::VersionMismatch
        | quinn::ConnectionError::TransportError(_)
        | quinn::ConnectionError::LocallyClosed
        | quinn::ConnectionError::CidsExhausted => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(code: ErrorCode) -> ClientError {
        ClientError::server("Append", ErrorResponse::new(code, "because"))
    }

    /// Only Busy, Unavailable and NotLeader among server codes are retriable, as the protocol says; a
    /// lost or timed-out connection is; an unknown outcome never is.
    #[test]
    fn retriability_follows_the_protocol() {
        for code in ErrorCode::all() {
            assert_eq!(
                server_error(code).is_retriable(),
                matches!(
                    code,
                    ErrorCode::Busy | ErrorCode::Unavailable | ErrorCode::NotLeader
                ),
                "{code}"
            );
        }
        assert!(!server_error(ErrorCode::Other(999)).is_retriable());
        assert!(ClientError::connection(quinn::ConnectionError::TimedOut).is_retriable());
        assert!(ClientError::connection(quinn::ConnectionError::Reset).is_retriable());
        assert!(!ClientError::connection(quinn::ConnectionError::LocallyClosed).is_retriable());
        let timeout = ClientError::Timeout {
            request: "Append",
            timeout_ms: 5,
        };
        assert!(timeout.is_retriable());
        let unknown = ClientError::OutcomeUnknown {
            request: "Append",
            source: Box::new(timeout),
        };
        assert!(!unknown.is_retriable());
        assert!(!ClientError::Closed.is_retriable());
    }

    /// A server error keeps the code, the message and every detail.
    #[test]
    fn server_errors_keep_code_message_and_details() {
        let mut response = ErrorResponse::new(ErrorCode::NotOwner, "shard 3 lives on core 2");
        response.owner = Some(ShardOwner { node: 1, core: 2 });
        response.retry_after_ms = Some(7);
        let error = ClientError::server("Append", response);
        assert_eq!(error.code(), Some(ErrorCode::NotOwner));
        assert!(error.is_routing());
        match &error {
            ClientError::Server {
                request,
                message,
                owner,
                retry_after_ms,
                ..
            } => {
                assert_eq!(*request, "Append");
                assert_eq!(message, "shard 3 lives on core 2");
                assert_eq!(*owner, Some(ShardOwner { node: 1, core: 2 }));
                assert_eq!(*retry_after_ms, Some(7));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            error.to_string(),
            "Append: NotOwner: shard 3 lives on core 2"
        );
        for code in [
            ErrorCode::WrongShard,
            ErrorCode::UnknownShard,
            ErrorCode::ShardSealed,
        ] {
            assert!(server_error(code).is_routing(), "{code}");
        }
        assert!(!server_error(ErrorCode::Busy).is_routing());
        assert!(!server_error(ErrorCode::NotLeader).is_routing());
        assert!(server_error(ErrorCode::NotLeader).is_retriable());
        let unknown = ClientError::UnknownNode {
            node: 7,
            reason: "the cluster does not list it".into(),
        };
        assert!(unknown.is_routing(), "an unknown node refreshes the shards");
        assert!(!unknown.is_retriable());
    }

    /// A lost connection seen while reading a stream is a connection error, not a protocol
    /// error; a TLS alert is a TLS error; other frame errors stay protocol errors.
    #[test]
    fn transport_failures_map_to_their_kind() {
        let lost = ClientError::protocol(
            "Read",
            ProtocolError::Read(quinn::ReadError::ConnectionLost(
                quinn::ConnectionError::TimedOut,
            )),
        );
        assert!(matches!(lost, ClientError::Connection { .. }), "{lost:?}");
        assert!(lost.is_retriable());
        let framing = ClientError::protocol("Read", ProtocolError::NonZeroPadding);
        assert!(matches!(framing, ClientError::Protocol { .. }));
        assert!(!framing.is_retriable());
        let reset = ClientError::protocol(
            "Read",
            ProtocolError::Read(quinn::ReadError::Reset(quinn::VarInt::from_u32(1))),
        );
        assert!(!reset.is_retriable());
        // quinn does not re-export the transport error type; its code is what decides.
        assert!(is_tls_alert(u64::from(quinn::TransportErrorCode::crypto(
            42
        ))));
        assert!(!is_tls_alert(u64::from(
            quinn::TransportErrorCode::PROTOCOL_VIOLATION
        )));
    }

    /// Regression (issue 8, item 12): a bad stream name printed "invalid stream name: invalid
    /// stream name …"; each message says what is invalid once, then the name and the rule.
    #[test]
    fn a_bad_name_is_named_once() {
        let Err(refused) = runnel_core::StreamName::new("a b") else {
            panic!("a space is not allowed in a name");
        };
        for error in [
            ClientError::stream_name(refused.clone()),
            ClientError::subscription_name(refused),
        ] {
            let message = error.to_string();
            assert_eq!(message.matches("invalid").count(), 1, "{message}");
            assert!(message.contains("\"a b\" may hold only"), "{message}");
        }
        assert_eq!(
            ClientError::stream_name(IdError::InvalidStreamName {
                name: String::new(),
                reason: "must not be empty",
            })
            .to_string(),
            "invalid stream name: \"\" must not be empty"
        );
    }

    /// Regression (issue 8, item 11): an unreachable node is one sentence naming the address
    /// and the deadline, with the last failure when there was one; it is not retried.
    #[test]
    fn unreachable_names_the_address_and_the_deadline() {
        let timed_out = ClientError::Unreachable {
            address: "runnel://127.0.0.1:9".into(),
            timeout_ms: 3_000,
            last: None,
        };
        assert_eq!(
            timed_out.to_string(),
            "cannot reach the node at runnel://127.0.0.1:9 within 3000 ms (the connect deadline)"
        );
        assert!(!timed_out.is_retriable());
        let refused = ClientError::Unreachable {
            address: "runnel://127.0.0.1:9".into(),
            timeout_ms: 3_000,
            last: Some(Box::new(ClientError::connection(
                quinn::ConnectionError::Reset,
            ))),
        };
        assert!(
            refused.to_string().ends_with(
                "(the connect deadline); last failure: connection failed: reset by peer"
            ),
            "{refused}"
        );
    }

    /// A server shutting down is worth reconnecting to; a protocol violation is not.
    #[test]
    fn application_close_codes_decide_transience() {
        let closed = |code: CloseCode| {
            ClientError::connection(quinn::ConnectionError::ApplicationClosed(
                quinn::ApplicationClose {
                    error_code: code.varint(),
                    reason: Vec::new().into(),
                },
            ))
        };
        assert!(closed(CloseCode::ShuttingDown).is_retriable());
        assert!(!closed(CloseCode::ProtocolViolation).is_retriable());
        assert!(!closed(CloseCode::UnsupportedVersion).is_retriable());
    }
}
