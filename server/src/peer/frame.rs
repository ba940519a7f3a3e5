//! The frames nodes exchange (`docs/format/peer.md`): a 12-byte header (version first, kind,
//! body length, CRC-32 of header and body) and a body per kind, little-endian.
//!
//! Decoding takes bytes from another node and never panics: every length is checked against
//! what is left and against the kind's limit before anything is allocated or read, and a frame
//! that breaks any rule is a [`FrameError`] (the connection that sent it is then closed).

use thiserror::Error;

use crate::mesh::ServiceId;

/// The frame format this build writes and reads (byte 0 of every frame).
pub const FRAME_VERSION: u8 = 1;
/// Bytes of a frame's header.
pub const FRAME_HEADER_BYTES: usize = 12;
/// The longest string field (addresses, versions, refusal messages): a u16 length.
pub const STRING_BYTES_MAX: usize = u16::MAX as usize;

const _: () = assert!(FRAME_HEADER_BYTES == 1 + 1 + 2 + 4 + 4);

/// Frame kinds (byte 1 of the header).
mod kind {
    pub const HELLO: u8 = 1;
    pub const RAFT: u8 = 2;
    pub const PING: u8 = 3;
    pub const PROPOSE: u8 = 4;
    pub const JOIN: u8 = 5;
    pub const PROPOSED: u8 = 6;
    pub const JOINED: u8 = 7;
    pub const ASK: u8 = 8;
    pub const ANSWERED: u8 = 9;
}

/// A one-way message between nodes; it may be lost (the sender's protocol retries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerMessage {
    /// A raft-rs `Message` (`raft::prelude::Message`), protobuf-encoded.
    Raft(Vec<u8>),
    /// A heartbeat, every few hundred milliseconds, for failure detection.
    Ping(NodeHello),
}

/// What a node says about itself in heartbeats and when it asks to join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeHello {
    /// Its node id.
    pub node: u64,
    /// Its advertised address, `host:base_port`.
    pub address: String,
    /// Its cores.
    pub cores: u32,
    /// Its software version.
    pub version: String,
    /// Whether it serves clients (false while it starts).
    pub running: bool,
    /// The cluster id of the metadata group it belongs to; None before it joined one.
    pub cluster: Option<u64>,
}

/// A request to another node, answered with a [`PeerResponse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerRequest {
    /// Propose an encoded metadata `Command` (to the metadata group's leader).
    Propose {
        /// The encoded command.
        command: Vec<u8>,
    },
    /// A node outside the group asks to be let in.
    Join(NodeHello),
    /// Call service `service` of core `core` of the receiving node (`crate::mesh::remote`),
    /// once the receiving node applied metadata index `applied_index`.
    Ask {
        /// The core called.
        core: u32,
        /// The metadata index the calling core had applied.
        applied_index: u64,
        /// The service called.
        service: ServiceId,
        /// The request, encoded by the service's codec.
        request: Vec<u8>,
    },
}

/// The answer to a [`PeerRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerResponse {
    /// The answer to `Propose`: the committed index, or why not.
    Proposed(Result<u64, PeerRefusal>),
    /// The answer to `Join`.
    Joined(Result<(), PeerRefusal>),
    /// The answer to `Ask`: the response encoded by the service's codec, or why there is
    /// none (for people).
    Answered(Result<Vec<u8>, String>),
}

/// Why a node refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRefusal {
    /// The protocol's `ErrorCode` number (e.g. `NotLeader`, `Unavailable`).
    pub code: u16,
    /// For a person.
    pub message: String,
    /// The metadata group's leader, when the refusing node knows it.
    pub leader: Option<u64>,
}

/// The first frame of every connection, from the node that dialled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// The dialling node's id.
    pub from: u64,
    /// The node the dialler means to reach; None when it dialled an address (a seed).
    pub to: Option<u64>,
    /// The dialler's cluster id; None before it joined a cluster (a new node dialling seeds).
    pub cluster: Option<u64>,
    /// The dialler's process: random, chosen when its transport starts. Another one from the
    /// same node means the node restarted.
    pub incarnation: u64,
}

/// Any frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The dialler's first frame.
    Hello(Hello),
    /// A one-way message.
    Message(PeerMessage),
    /// A request (the first frame of a bidirectional stream).
    Request(PeerRequest),
    /// Its response.
    Response(PeerResponse),
}

impl Frame {
    /// The frame's kind byte (`docs/format/peer.md`).
    pub fn kind(&self) -> u8 {
        match self {
            Frame::Hello(_) => kind::HELLO,
            Frame::Message(PeerMessage::Raft(_)) => kind::RAFT,
            Frame::Message(PeerMessage::Ping(_)) => kind::PING,
            Frame::Request(PeerRequest::Propose { .. }) => kind::PROPOSE,
            Frame::Request(PeerRequest::Join(_)) => kind::JOIN,
            Frame::Response(PeerResponse::Proposed(_)) => kind::PROPOSED,
            Frame::Response(PeerResponse::Joined(_)) => kind::JOINED,
            Frame::Request(PeerRequest::Ask { .. }) => kind::ASK,
            Frame::Response(PeerResponse::Answered(_)) => kind::ANSWERED,
        }
    }
}

/// The largest frame bodies a reader accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// The largest `Raft` body (raft snapshots may be tens of MiB).
    pub raft_bytes_max: u32,
    /// The largest body of any other kind.
    pub other_bytes_max: u32,
}

impl FrameLimits {
    /// 256 MiB for Raft messages, 16 MiB for everything else.
    pub const DEFAULT: FrameLimits = FrameLimits {
        raft_bytes_max: 256 << 20,
        other_bytes_max: 16 << 20,
    };

    fn body_bytes_max(&self, kind: u8) -> u32 {
        if kind == kind::RAFT {
            self.raft_bytes_max
        } else {
            self.other_bytes_max
        }
    }
}

/// Why bytes are not a frame, or a frame cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Byte 0 is a version this build does not know.
    #[error("unsupported peer frame version {version} (this build speaks {FRAME_VERSION})")]
    UnsupportedVersion {
        /// The version found.
        version: u8,
    },
    /// Byte 1 is no known kind.
    #[error("unknown peer frame kind {kind}")]
    UnknownKind {
        /// The kind found.
        kind: u8,
    },
    /// The reserved bytes 2..4 are not zero.
    #[error("peer frame reserved bytes are {value:#06x}, not 0")]
    Reserved {
        /// Their value.
        value: u16,
    },
    /// The body is longer than the kind allows.
    #[error("peer frame of kind {kind} has a {bytes}-byte body, more than {max}")]
    TooLarge {
        /// The frame kind.
        kind: u8,
        /// The body length.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// The CRC does not match the header and body.
    #[error(
        "peer frame checksum mismatch: header says {expected:#010x}, bytes give {actual:#010x}"
    )]
    ChecksumMismatch {
        /// The CRC in the header.
        expected: u32,
        /// The CRC of the bytes.
        actual: u32,
    },
    /// The body ends before a field.
    #[error("peer frame body ends inside field {field}")]
    Truncated {
        /// The field being read.
        field: &'static str,
    },
    /// The body has bytes after its last field.
    #[error("peer frame of kind {kind} has {bytes} bytes after its last field")]
    TrailingBytes {
        /// The frame kind.
        kind: u8,
        /// How many.
        bytes: usize,
    },
    /// A string field is not UTF-8.
    #[error("peer frame field {field} is not UTF-8")]
    InvalidUtf8 {
        /// The field.
        field: &'static str,
    },
    /// A flag or tag byte has a value outside its range, or an absent option has a value.
    #[error("peer frame field {field} has invalid value {value}")]
    InvalidValue {
        /// The field.
        field: &'static str,
        /// The value found.
        value: u64,
    },
    /// A field is too long to encode.
    #[error("peer frame field {field} is {bytes} bytes, more than {max}")]
    FieldTooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// A valid frame where its kind does not belong (e.g. a request on the message stream).
    #[error("a peer frame of kind {kind} where {expected} belongs")]
    Misplaced {
        /// The frame's kind.
        kind: u8,
        /// What belongs there.
        expected: &'static str,
    },
    /// The stream ended inside a frame.
    #[error("the stream ended inside a peer frame ({read} of {expected} bytes)")]
    StreamEnded {
        /// Bytes of the frame read.
        read: usize,
        /// Bytes the frame has.
        expected: usize,
    },
    /// Reading the stream failed (the connection or stream was lost or reset).
    #[error("reading a peer stream failed: {0}")]
    Read(String),
}

/// A frame's encoding: header and body in one buffer, ready to write.
pub fn encode(frame: &Frame) -> Result<Vec<u8>, FrameError> {
    let mut out = vec![0_u8; FRAME_HEADER_BYTES];
    match frame {
        Frame::Hello(hello) => {
            put_u64(&mut out, hello.from);
            put_option(&mut out, hello.to);
            put_option(&mut out, hello.cluster);
            put_u64(&mut out, hello.incarnation);
        }
        Frame::Message(PeerMessage::Raft(bytes)) => out.extend_from_slice(bytes),
        Frame::Message(PeerMessage::Ping(hello)) => put_node_hello(&mut out, hello)?,
        Frame::Request(PeerRequest::Propose { command }) => out.extend_from_slice(command),
        Frame::Request(PeerRequest::Join(hello)) => put_node_hello(&mut out, hello)?,
        Frame::Response(PeerResponse::Proposed(Ok(index))) => {
            out.push(0);
            put_u64(&mut out, *index);
        }
        Frame::Response(PeerResponse::Joined(Ok(()))) => out.push(0),
        Frame::Request(PeerRequest::Ask {
            core,
            applied_index,
            service,
            request,
        }) => {
            out.extend_from_slice(&core.to_le_bytes());
            put_u64(&mut out, *applied_index);
            out.extend_from_slice(&service.0.to_le_bytes());
            out.extend_from_slice(request);
        }
        Frame::Response(PeerResponse::Answered(Ok(response))) => {
            out.push(0);
            out.extend_from_slice(response);
        }
        Frame::Response(PeerResponse::Answered(Err(reason))) => {
            out.push(1);
            put_string(&mut out, "reason", reason)?;
        }
        Frame::Response(
            PeerResponse::Proposed(Err(refusal)) | PeerResponse::Joined(Err(refusal)),
        ) => {
            out.push(1);
            put_refusal(&mut out, refusal)?;
        }
    }
    let kind = frame.kind();
    let body_bytes = out.len() - FRAME_HEADER_BYTES;
    let body_len = u32::try_from(body_bytes).map_err(|_| FrameError::FieldTooLong {
        field: "body",
        bytes: body_bytes,
        max: u32::MAX as usize,
    })?;
    let header = header_prefix(kind, body_len);
    out[..8].copy_from_slice(&header);
    let crc = checksum(&header, &out[FRAME_HEADER_BYTES..]);
    out[8..FRAME_HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Bytes 0..8 of a header: version, kind, reserved, body length.
fn header_prefix(kind: u8, body_len: u32) -> [u8; 8] {
    let mut header = [0_u8; 8];
    header[0] = FRAME_VERSION;
    header[1] = kind;
    header[4..8].copy_from_slice(&body_len.to_le_bytes());
    header
}

fn checksum(header_prefix: &[u8], body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(header_prefix);
    hasher.update(body);
    hasher.finalize()
}

/// A checked frame header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    kind: u8,
    body_len: u32,
    crc: u32,
}

impl Header {
    /// The body's length in bytes.
    pub(crate) fn body_len(&self) -> usize {
        self.body_len as usize
    }
}

/// Checks a header against the format and `limits` (before its body is read).
pub(crate) fn parse_header(
    bytes: &[u8; FRAME_HEADER_BYTES],
    limits: &FrameLimits,
) -> Result<Header, FrameError> {
    let [version, kind, r0, r1, l0, l1, l2, l3, c0, c1, c2, c3] = *bytes;
    if version != FRAME_VERSION {
        return Err(FrameError::UnsupportedVersion { version });
    }
    if !(kind::HELLO..=kind::ANSWERED).contains(&kind) {
        return Err(FrameError::UnknownKind { kind });
    }
    let reserved = u16::from_le_bytes([r0, r1]);
    if reserved != 0 {
        return Err(FrameError::Reserved { value: reserved });
    }
    let body_len = u32::from_le_bytes([l0, l1, l2, l3]);
    let max = limits.body_bytes_max(kind);
    if body_len > max {
        return Err(FrameError::TooLarge {
            kind,
            bytes: u64::from(body_len),
            max: u64::from(max),
        });
    }
    Ok(Header {
        kind,
        body_len,
        crc: u32::from_le_bytes([c0, c1, c2, c3]),
    })
}

/// The frame of a checked header and its body (exactly `header.body_len()` bytes).
pub(crate) fn decode_body(header: &Header, body: Vec<u8>) -> Result<Frame, FrameError> {
    assert_eq!(
        body.len(),
        header.body_len(),
        "the caller reads the whole body"
    );
    let actual = checksum(&header_prefix(header.kind, header.body_len), &body);
    if actual != header.crc {
        return Err(FrameError::ChecksumMismatch {
            expected: header.crc,
            actual,
        });
    }
    let kind = header.kind;
    // Raft and Propose bodies are the payload itself: kept, not copied.
    match kind {
        kind::RAFT => return Ok(Frame::Message(PeerMessage::Raft(body))),
        kind::PROPOSE => return Ok(Frame::Request(PeerRequest::Propose { command: body })),
        _ => {}
    }
    let mut fields = Fields {
        bytes: &body,
        at: 0,
    };
    let frame = match kind {
        kind::HELLO => Frame::Hello(Hello {
            from: fields.u64("from")?,
            to: fields.option("to")?,
            cluster: fields.option("cluster")?,
            incarnation: fields.u64("incarnation")?,
        }),
        kind::PING => Frame::Message(PeerMessage::Ping(fields.node_hello()?)),
        kind::JOIN => Frame::Request(PeerRequest::Join(fields.node_hello()?)),
        kind::PROPOSED => Frame::Response(PeerResponse::Proposed(match fields.tag("result")? {
            false => Ok(fields.u64("index")?),
            true => Err(fields.refusal()?),
        })),
        kind::JOINED => Frame::Response(PeerResponse::Joined(match fields.tag("result")? {
            false => Ok(()),
            true => Err(fields.refusal()?),
        })),
        // A request and a response take the rest of the body: their service's codec reads
        // them where the service is known (`crate::mesh::remote`).
        kind::ASK => Frame::Request(PeerRequest::Ask {
            core: fields.u32("core")?,
            applied_index: fields.u64("applied_index")?,
            service: ServiceId(fields.u32("service")?),
            request: fields.rest().to_vec(),
        }),
        kind::ANSWERED => Frame::Response(PeerResponse::Answered(match fields.tag("result")? {
            false => Ok(fields.rest().to_vec()),
            true => Err(fields.string("reason")?),
        })),
        other => return Err(FrameError::UnknownKind { kind: other }),
    };
    let left = body.len() - fields.at;
    if left != 0 {
        return Err(FrameError::TrailingBytes { kind, bytes: left });
    }
    Ok(frame)
}

/// Decodes one frame from the start of `bytes`; returns it and the bytes it took.
pub fn decode(bytes: &[u8], limits: &FrameLimits) -> Result<(Frame, usize), FrameError> {
    let header: &[u8; FRAME_HEADER_BYTES] = bytes
        .get(..FRAME_HEADER_BYTES)
        .and_then(|slice| slice.try_into().ok())
        .ok_or(FrameError::StreamEnded {
            read: bytes.len(),
            expected: FRAME_HEADER_BYTES,
        })?;
    let header = parse_header(header, limits)?;
    let end = FRAME_HEADER_BYTES + header.body_len();
    let body = bytes
        .get(FRAME_HEADER_BYTES..end)
        .ok_or(FrameError::StreamEnded {
            read: bytes.len(),
            expected: end,
        })?;
    Ok((decode_body(&header, body.to_vec())?, end))
}

/// Reads the next frame from `recv`: None when the stream finished between frames.
pub async fn read_frame(
    recv: &mut quinn::RecvStream,
    limits: &FrameLimits,
) -> Result<Option<Frame>, FrameError> {
    let mut header = [0_u8; FRAME_HEADER_BYTES];
    let mut filled = 0;
    while filled < FRAME_HEADER_BYTES {
        let rest = header.get_mut(filled..).unwrap_or_default();
        match recv.read(rest).await {
            Ok(Some(read)) => filled += read,
            Ok(None) if filled == 0 => return Ok(None),
            Ok(None) => {
                return Err(FrameError::StreamEnded {
                    read: filled,
                    expected: FRAME_HEADER_BYTES,
                })
            }
            Err(error) => return Err(FrameError::Read(error.to_string())),
        }
    }
    let header = parse_header(&header, limits)?;
    // Grown as bytes arrive: a header alone cannot make us allocate a large body.
    let expected = header.body_len();
    let mut body = Vec::with_capacity(expected.min(BODY_PREALLOCATE_BYTES_MAX));
    while body.len() < expected {
        match recv.read_chunk(expected - body.len(), true).await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk.bytes),
            Ok(None) => {
                return Err(FrameError::StreamEnded {
                    read: FRAME_HEADER_BYTES + body.len(),
                    expected: FRAME_HEADER_BYTES + expected,
                })
            }
            Err(error) => return Err(FrameError::Read(error.to_string())),
        }
    }
    decode_body(&header, body).map(Some)
}

/// The most body bytes allocated before they arrive.
const BODY_PREALLOCATE_BYTES_MAX: usize = 1 << 20;

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

/// An option: a flag byte (0 absent, 1 present) and always 8 value bytes (0 when absent).
fn put_option(out: &mut Vec<u8>, value: Option<u64>) {
    out.push(u8::from(value.is_some()));
    put_u64(out, value.unwrap_or(0));
}

fn put_string(out: &mut Vec<u8>, field: &'static str, value: &str) -> Result<(), FrameError> {
    let len = u16::try_from(value.len()).map_err(|_| FrameError::FieldTooLong {
        field,
        bytes: value.len(),
        max: STRING_BYTES_MAX,
    })?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(value.as_bytes());
    Ok(())
}

fn put_node_hello(out: &mut Vec<u8>, hello: &NodeHello) -> Result<(), FrameError> {
    put_u64(out, hello.node);
    out.extend_from_slice(&hello.cores.to_le_bytes());
    out.push(u8::from(hello.running));
    put_option(out, hello.cluster);
    put_string(out, "address", &hello.address)?;
    put_string(out, "version", &hello.version)
}

fn put_refusal(out: &mut Vec<u8>, refusal: &PeerRefusal) -> Result<(), FrameError> {
    out.extend_from_slice(&refusal.code.to_le_bytes());
    put_option(out, refusal.leader);
    put_string(out, "message", &refusal.message)
}

/// A cursor over a body's fields.
struct Fields<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Fields<'_> {
    fn take<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], FrameError> {
        let bytes: [u8; N] = self
            .bytes
            .get(self.at..self.at + N)
            .and_then(|slice| slice.try_into().ok())
            .ok_or(FrameError::Truncated { field })?;
        self.at += N;
        Ok(bytes)
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, FrameError> {
        self.take(field).map(u16::from_le_bytes)
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, FrameError> {
        self.take(field).map(u32::from_le_bytes)
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, FrameError> {
        self.take(field).map(u64::from_le_bytes)
    }

    /// A byte that must be 0 (false) or 1 (true).
    fn tag(&mut self, field: &'static str) -> Result<bool, FrameError> {
        let [value] = self.take(field)?;
        match value {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(FrameError::InvalidValue {
                field,
                value: u64::from(other),
            }),
        }
    }

    fn option(&mut self, field: &'static str) -> Result<Option<u64>, FrameError> {
        let present = self.tag(field)?;
        let value = self.u64(field)?;
        match (present, value) {
            (true, value) => Ok(Some(value)),
            (false, 0) => Ok(None),
            (false, value) => Err(FrameError::InvalidValue { field, value }),
        }
    }

    fn string(&mut self, field: &'static str) -> Result<String, FrameError> {
        let len = usize::from(self.u16(field)?);
        let bytes = self
            .bytes
            .get(self.at..self.at + len)
            .ok_or(FrameError::Truncated { field })?;
        self.at += len;
        String::from_utf8(bytes.to_vec()).map_err(|_| FrameError::InvalidUtf8 { field })
    }

    /// Every byte left (the fields are then all read).
    fn rest(&mut self) -> &[u8] {
        let rest = self.bytes.get(self.at..).unwrap_or_default();
        self.at = self.bytes.len();
        rest
    }

    fn node_hello(&mut self) -> Result<NodeHello, FrameError> {
        Ok(NodeHello {
            node: self.u64("node")?,
            cores: self.u32("cores")?,
            running: self.tag("running")?,
            cluster: self.option("cluster")?,
            address: self.string("address")?,
            version: self.string("version")?,
        })
    }

    fn refusal(&mut self) -> Result<PeerRefusal, FrameError> {
        Ok(PeerRefusal {
            code: self.u16("code")?,
            leader: self.option("leader")?,
            message: self.string("message")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(node: u64) -> NodeHello {
        NodeHello {
            node,
            address: "127.0.0.1:6570".into(),
            cores: 4,
            version: "0.1.0".into(),
            running: true,
            cluster: Some(0xc1u64 << 32),
        }
    }

    fn refusal() -> PeerRefusal {
        PeerRefusal {
            code: 18,
            message: "not the leader: ask node 3".into(),
            leader: Some(3),
        }
    }

    /// One frame of every kind and variant.
    fn every_frame() -> Vec<Frame> {
        vec![
            Frame::Hello(Hello {
                from: 1,
                to: Some(2),
                cluster: Some(3),
                incarnation: 4,
            }),
            Frame::Hello(Hello {
                from: 7,
                to: None,
                cluster: None,
                incarnation: u64::MAX,
            }),
            Frame::Message(PeerMessage::Raft(vec![8, 1, 16, 2, 24, 3])),
            Frame::Message(PeerMessage::Raft(Vec::new())),
            Frame::Message(PeerMessage::Ping(hello(2))),
            Frame::Message(PeerMessage::Ping(NodeHello {
                cluster: None,
                running: false,
                address: String::new(),
                ..hello(3)
            })),
            Frame::Request(PeerRequest::Propose {
                command: vec![0x52, 0x4e, 0x4c, 0x43, 1, 2, 3],
            }),
            Frame::Request(PeerRequest::Join(hello(4))),
            Frame::Response(PeerResponse::Proposed(Ok(42))),
            Frame::Response(PeerResponse::Proposed(Err(refusal()))),
            Frame::Response(PeerResponse::Joined(Ok(()))),
            Frame::Response(PeerResponse::Joined(Err(PeerRefusal {
                leader: None,
                ..refusal()
            }))),
            Frame::Request(PeerRequest::Ask {
                core: 1,
                applied_index: 42,
                service: ServiceId::of("subscription.members"),
                request: 3_u64.to_le_bytes().to_vec(),
            }),
            Frame::Request(PeerRequest::Ask {
                core: 0,
                applied_index: 0,
                service: ServiceId(0),
                request: Vec::new(),
            }),
            Frame::Response(PeerResponse::Answered(Ok(Vec::new()))),
            Frame::Response(PeerResponse::Answered(Ok(vec![1, 2, 3]))),
            Frame::Response(PeerResponse::Answered(Err(
                "node 2 core 1 did not answer".into()
            ))),
        ]
    }

    /// Every frame decodes to itself and takes exactly its bytes.
    #[test]
    fn every_frame_round_trips() -> Result<(), FrameError> {
        for frame in every_frame() {
            let bytes = encode(&frame)?;
            let (decoded, used) = decode(&bytes, &FrameLimits::DEFAULT)?;
            assert_eq!(decoded, frame);
            assert_eq!(used, bytes.len());
        }
        Ok(())
    }

    /// The bytes of a `Hello` as `docs/format/peer.md` draws them.
    #[test]
    fn hello_bytes_match_the_format_document() -> Result<(), FrameError> {
        let bytes = encode(&Frame::Hello(Hello {
            from: 1,
            to: Some(2),
            cluster: Some(0x0102_0304_0506_0708),
            incarnation: 0x1122_3344_5566_7788,
        }))?;
        let body = [
            1, 0, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 1, 8, 7, 6, 5, 4, 3, 2, 1, 0x88,
            0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11,
        ];
        let mut expected = vec![1, 1, 0, 0, 34, 0, 0, 0];
        let crc = crc32fast::hash(&[expected.as_slice(), &body].concat());
        expected.extend_from_slice(&crc.to_le_bytes());
        expected.extend_from_slice(&body);
        assert_eq!(bytes, expected);
        Ok(())
    }

    /// Every prefix of a valid frame is an error (never a panic, never a frame).
    #[test]
    fn truncated_frames_are_errors() -> Result<(), FrameError> {
        for frame in every_frame() {
            let bytes = encode(&frame)?;
            for len in 0..bytes.len() {
                let outcome = decode(bytes.get(..len).unwrap_or_default(), &FrameLimits::DEFAULT);
                assert!(outcome.is_err(), "{len} bytes of {frame:?}: {outcome:?}");
            }
        }
        Ok(())
    }

    /// Any single changed byte is detected (by the header checks or the CRC).
    #[test]
    fn flipped_bytes_are_errors() -> Result<(), FrameError> {
        for frame in every_frame() {
            let bytes = encode(&frame)?;
            for at in 0..bytes.len() {
                for flip in [0x01_u8, 0x80, 0xff] {
                    let mut damaged = bytes.clone();
                    if let Some(byte) = damaged.get_mut(at) {
                        *byte ^= flip;
                    }
                    let outcome = decode(&damaged, &FrameLimits::DEFAULT);
                    assert!(outcome.is_err(), "byte {at} ^ {flip:#x} of {frame:?}");
                }
            }
        }
        Ok(())
    }

    /// Bodies with a valid CRC but invalid fields are refused with the field's name.
    #[test]
    fn invalid_fields_are_named() {
        let frame = |kind: u8, body: &[u8]| {
            let header = header_prefix(kind, body.len() as u32);
            let crc = checksum(&header, body);
            [&header[..], &crc.to_le_bytes(), body].concat()
        };
        let limits = FrameLimits::DEFAULT;
        // An absent `to` with a value.
        let bad_option = frame(
            kind::HELLO,
            &[1, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0],
        );
        assert_eq!(
            decode(&bad_option, &limits).map(|_| ()),
            Err(FrameError::InvalidValue {
                field: "to",
                value: 9
            })
        );
        // A result tag of 2.
        assert_eq!(
            decode(&frame(kind::JOINED, &[2]), &limits).map(|_| ()),
            Err(FrameError::InvalidValue {
                field: "result",
                value: 2
            })
        );
        // A byte after the last field.
        assert_eq!(
            decode(&frame(kind::JOINED, &[0, 0]), &limits).map(|_| ()),
            Err(FrameError::TrailingBytes {
                kind: kind::JOINED,
                bytes: 1
            })
        );
        // An address that is not UTF-8.
        let mut ping = Vec::new();
        put_u64(&mut ping, 1);
        ping.extend_from_slice(&2_u32.to_le_bytes());
        ping.push(1);
        put_option(&mut ping, None);
        ping.extend_from_slice(&[2, 0, 0xff, 0xfe, 0, 0]);
        assert_eq!(
            decode(&frame(kind::PING, &ping), &limits).map(|_| ()),
            Err(FrameError::InvalidUtf8 { field: "address" })
        );
        // An Ask too short for its service id, and an Answered with an unknown result.
        assert_eq!(
            decode(&frame(kind::ASK, &[0; 15]), &limits).map(|_| ()),
            Err(FrameError::Truncated { field: "service" })
        );
        assert_eq!(
            decode(&frame(kind::ANSWERED, &[2]), &limits).map(|_| ()),
            Err(FrameError::InvalidValue {
                field: "result",
                value: 2
            })
        );
        // An unknown kind and a version from the future.
        assert_eq!(
            decode(&frame(10, &[]), &limits).map(|_| ()),
            Err(FrameError::UnknownKind { kind: 10 })
        );
        let mut future = frame(kind::JOINED, &[0]);
        future[0] = 2;
        assert_eq!(
            decode(&future, &limits).map(|_| ()),
            Err(FrameError::UnsupportedVersion { version: 2 })
        );
    }

    /// A header announcing a body above the kind's limit is refused before the body is read.
    #[test]
    fn oversized_bodies_are_refused_by_the_header() {
        let limits = FrameLimits {
            raft_bytes_max: 100,
            other_bytes_max: 10,
        };
        let mut raft = [0_u8; FRAME_HEADER_BYTES];
        raft[..8].copy_from_slice(&header_prefix(kind::RAFT, 101));
        assert!(matches!(
            parse_header(&raft, &limits),
            Err(FrameError::TooLarge { bytes: 101, .. })
        ));
        raft[..8].copy_from_slice(&header_prefix(kind::RAFT, 100));
        assert!(parse_header(&raft, &limits).is_ok());
        let mut join = [0_u8; FRAME_HEADER_BYTES];
        join[..8].copy_from_slice(&header_prefix(kind::JOIN, 11));
        assert!(matches!(
            parse_header(&join, &limits),
            Err(FrameError::TooLarge { max: 10, .. })
        ));
    }

    /// A string longer than its u16 length is an encoding error, not a silent truncation.
    #[test]
    fn overlong_strings_cannot_be_encoded() {
        let ping = Frame::Message(PeerMessage::Ping(NodeHello {
            address: "a".repeat(STRING_BYTES_MAX + 1),
            ..hello(1)
        }));
        assert!(matches!(
            encode(&ping),
            Err(FrameError::FieldTooLong {
                field: "address",
                ..
            })
        ));
    }
}
