//! What can go wrong reading or writing frames and envelopes.
//!
//! A [`ProtocolError`] is about the bytes on one QUIC stream: the peer broke the framing, sent
//! an envelope that does not verify, or the stream failed. It is an error for that stream (the
//! server answers `InvalidRequest` when it still can, then drops the stream), never a panic.
//! Errors a request *asks for* (unknown stream, trimmed offset, …) are not protocol errors:
//! they travel as [`ErrorResponse`](super::ErrorResponse)s, a code plus a message.

use thiserror::Error;

/// A frame or envelope that could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The frame header does not start with the frame magic: not a Runnel frame, or the peer
    /// lost frame sync.
    #[error("bad frame magic {found:#06x}, expected {expected:#06x}")]
    BadMagic {
        /// The two bytes found, as a little-endian u16.
        found: u16,
        /// [`FRAME_MAGIC`](super::FRAME_MAGIC).
        expected: u16,
    },
    /// A frame format version this build does not read.
    #[error("unsupported frame version {found}, this build reads version {supported}")]
    UnsupportedVersion {
        /// The version byte found.
        found: u8,
        /// [`FRAME_VERSION`](super::FRAME_VERSION).
        supported: u8,
    },
    /// Flag bits this build does not know (version 1 defines none).
    #[error("unsupported frame flags {found:#04x}")]
    UnsupportedFlags {
        /// The flags byte found.
        found: u8,
    },
    /// The frame header's CRC does not match its bytes.
    #[error("frame header checksum mismatch: stored {expected:#010x}, computed {actual:#010x}")]
    HeaderChecksumMismatch {
        /// The CRC stored in the header.
        expected: u32,
        /// The CRC of the header's bytes.
        actual: u32,
    },
    /// The envelope is empty or larger than [`ENVELOPE_BYTES_MAX`](super::ENVELOPE_BYTES_MAX).
    #[error("envelope of {len} bytes, allowed 1 to {max}")]
    EnvelopeTooLarge {
        /// The envelope length claimed by the header (or produced by an encoder).
        len: u64,
        /// The largest envelope allowed.
        max: u32,
    },
    /// The payload is larger than the reader's (or the writer's) limit.
    #[error("frame payload of {len} bytes exceeds the limit of {max}")]
    PayloadTooLarge {
        /// The payload length claimed by the header (or given to an encoder).
        len: u64,
        /// The limit in force.
        max: u32,
    },
    /// The payload length is not a multiple of 16 (payloads are whole batches).
    #[error("frame payload of {len} bytes is not a multiple of 16")]
    PayloadNotAligned {
        /// The payload length claimed by the header.
        len: u32,
    },
    /// A padding byte between the envelope and the payload is not zero.
    #[error("non-zero padding byte after the envelope")]
    NonZeroPadding,
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame: {received} of {expected} bytes of the {part}")]
    Truncated {
        /// Which part was being read: "header", "envelope" or "payload".
        part: &'static str,
        /// Bytes of that part the frame header announced (16 for the header).
        expected: u64,
        /// Bytes of that part that arrived.
        received: u64,
    },
    /// The envelope failed the flatbuffers verifier, or is not a request/response envelope.
    #[error("malformed envelope: {reason}")]
    MalformedEnvelope {
        /// The verifier's (or the identifier check's) message.
        reason: String,
    },
    /// A well-formed message that does not fit where it arrived (e.g. a request before
    /// `Hello`, or a `ReadChunk` in answer to an `Append`).
    #[error("unexpected message: expected {expected}, got {found}")]
    UnexpectedMessage {
        /// What the reader could accept there.
        expected: &'static str,
        /// What arrived.
        found: &'static str,
    },
    /// A union member this build does not know (e.g. a request kind added by a newer
    /// protocol version that was not negotiated).
    #[error("unknown {envelope} kind {kind}")]
    UnknownKind {
        /// "Request" or "Response".
        envelope: &'static str,
        /// The union type number found.
        kind: u8,
    },
    /// A frame with a payload where the message carries none, or without one where it must
    /// (only `Append` and `ReadChunk` carry payloads).
    #[error("{kind} frame with a payload of {payload_len} bytes")]
    PayloadMismatch {
        /// The message.
        kind: &'static str,
        /// The frame's payload length.
        payload_len: u64,
    },
    /// An envelope field holds a value the protocol does not allow (a zero enum, an invalid
    /// stream name, an empty key range, a union member this build does not know, …).
    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// `Table.field`.
        field: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// Reading the QUIC stream failed (reset by the peer, connection lost, …).
    #[error("cannot read the stream: {0}")]
    Read(#[from] quinn::ReadError),
    /// Writing the QUIC stream failed (stopped by the peer, connection lost, …).
    #[error("cannot write the stream: {0}")]
    Write(#[from] quinn::WriteError),
}

impl ProtocolError {
    /// An [`InvalidField`](ProtocolError::InvalidField) error.
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> ProtocolError {
        ProtocolError::InvalidField {
            field,
            reason: reason.into(),
        }
    }
}
