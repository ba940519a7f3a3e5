//! Frames on a byte stream: [`FrameReader`] reads them incrementally into buffers it reuses,
//! [`write_frame`] writes one head and its payload parts without joining them.
//!
//! Both work on any [`FrameSource`] / [`FrameSink`]; quinn's `RecvStream` and `SendStream`
//! implement them (they are runtime-agnostic: the server drives them on glommio, the client
//! SDK on tokio), and so do byte slices and `Vec<u8>` for tests and fuzzing.
//!
//! The reader copies each byte once, from the stream's chunk into its buffer: the header into
//! an array, the envelope into a `Vec`, the payload into a 16-byte aligned [`AlignedBytes`]
//! sized once per frame. Nothing is allocated per frame once the buffers have grown to the
//! largest frame seen (unless the caller takes the payload, see [`Frame::payload`]).
//! [`FrameReader::read_request_chunks`] instead keeps a request's payload as the chunks it was
//! received in (quinn's, shared, not copied), for a server that copies an `Append`'s batch
//! once, straight into a log (`runnel_core::CheckedChunks`).

use std::future::Future;

use bytes::Bytes;
use runnel_core::batch::AlignedBytes;

use super::error::ProtocolError;
use super::frame::{encode_frame, encode_frame_into, FrameHeader, FrameLimits, FRAME_HEADER_LEN};
use super::messages::{Request, Response};

/// Where frames are read from: hands out the next bytes of a stream in chunks.
pub trait FrameSource {
    /// A chunk of bytes; borrowed or owned, as the source likes.
    type Chunk: AsRef<[u8]>;

    /// The next chunk of at most `bytes_max` bytes (at least 1), or `None` once the stream has
    /// ended. Must not lose data if the returned future is dropped before it completes, so
    /// that [`FrameReader::read_frame`] stays cancel-safe.
    fn next_chunk(
        &mut self,
        bytes_max: usize,
    ) -> impl Future<Output = Result<Option<Self::Chunk>, ProtocolError>>;

    /// `chunk` as shared bytes that outlive the source, for
    /// [`FrameReader::read_request_chunks`]. This default copies it; a source whose chunks
    /// already are shared bytes (quinn's) hands them over as they are.
    fn share(chunk: Self::Chunk) -> Bytes {
        Bytes::copy_from_slice(chunk.as_ref())
    }
}

/// Where frames are written to.
pub trait FrameSink {
    /// Writes all of `bytes`.
    fn write_all(&mut self, bytes: &[u8]) -> impl Future<Output = Result<(), ProtocolError>>;
}

/// A chunk of a quinn stream (its bytes are shared with quinn's receive buffer, not copied).
#[derive(Debug)]
pub struct QuinnChunk(quinn::Chunk);

impl AsRef<[u8]> for QuinnChunk {
    fn as_ref(&self) -> &[u8] {
        &self.0.bytes
    }
}

impl FrameSource for quinn::RecvStream {
    type Chunk = QuinnChunk;

    async fn next_chunk(&mut self, bytes_max: usize) -> Result<Option<QuinnChunk>, ProtocolError> {
        // Ordered reads: frames are a byte stream. quinn's read_chunk is cancel-safe.
        let chunk = self.read_chunk(bytes_max, true).await?;
        Ok(chunk.map(QuinnChunk))
    }

    fn share(chunk: QuinnChunk) -> Bytes {
        chunk.0.bytes
    }
}

impl FrameSink for quinn::SendStream {
    async fn write_all(&mut self, bytes: &[u8]) -> Result<(), ProtocolError> {
        quinn::SendStream::write_all(self, bytes).await?;
        Ok(())
    }
}

impl<'a> FrameSource for &'a [u8] {
    type Chunk = &'a [u8];

    async fn next_chunk(&mut self, bytes_max: usize) -> Result<Option<&'a [u8]>, ProtocolError> {
        if self.is_empty() {
            return Ok(None);
        }
        let (chunk, rest) = self.split_at(bytes_max.min(self.len()));
        *self = rest;
        Ok(Some(chunk))
    }
}

impl FrameSink for Vec<u8> {
    async fn write_all(&mut self, bytes: &[u8]) -> Result<(), ProtocolError> {
        self.extend_from_slice(bytes);
        Ok(())
    }
}

/// Writes one frame: its `head` (from [`encode_frame`]), then the
/// payload `parts` in order, each as it lies (e.g. batches straight from a log buffer). The
/// parts must add up to the payload length written in the head.
pub async fn write_frame<S: FrameSink>(
    sink: &mut S,
    head: &[u8],
    parts: &[&[u8]],
) -> Result<(), ProtocolError> {
    // A mismatch would desynchronise the stream for the peer: a bug of the caller, not input.
    let announced = FrameHeader::of_head(head).map(|header| header.payload_len);
    let payload_len: usize = parts.iter().map(|part| part.len()).sum();
    assert!(
        announced.is_some() && announced == u32::try_from(payload_len).ok(),
        "frame head announces a payload of {announced:?} bytes, parts hold {payload_len}"
    );
    sink.write_all(head).await?;
    for part in parts {
        if !part.is_empty() {
            sink.write_all(part).await?;
        }
    }
    Ok(())
}

/// One frame as read: its envelope and its payload, borrowed from the reader's buffers.
#[derive(Debug)]
pub struct Frame<'a> {
    /// The flatbuffers envelope, not yet verified (decode it with `Request::decode` or
    /// `Response::decode`, which verify).
    pub envelope: &'a [u8],
    /// The payload, at a 16-byte aligned address: batches can be validated and read in place.
    /// `std::mem::take` it to keep it (the reader then allocates a new buffer for the next
    /// payload); it is stamped in place with `runnel_core::batch::stamp`.
    pub payload: &'a mut AlignedBytes,
}

/// Where the reader is within the current frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading the 16 header bytes; `filled` of them are in.
    Header { filled: usize },
    /// Reading the envelope and its padding (`envelope` grows to the padded length).
    Envelope(FrameHeader),
    /// Reading the payload (`payload` grows to its length, or `chunks` to it when the frame
    /// keeps its payload's chunks).
    Payload(FrameHeader),
    /// The frame is complete and not yet handed out.
    Finished(FrameHeader),
    /// The last frame was returned; the next call starts a new one.
    Done,
}

/// Reads frames from one stream, reusing its buffers from frame to frame.
///
/// Cancel-safe: if a [`read_frame`](FrameReader::read_frame) future is dropped, the bytes it
/// already consumed stay in the reader and the next call continues the same frame.
#[derive(Debug)]
pub struct FrameReader {
    limits: FrameLimits,
    phase: Phase,
    header: [u8; FRAME_HEADER_LEN],
    /// Envelope bytes followed by their zero padding.
    envelope: Vec<u8>,
    payload: AlignedBytes,
    /// The payload's chunks, when the current frame keeps them ([`Self::read_request_chunks`]).
    chunks: Vec<Bytes>,
    /// Bytes in `chunks`.
    chunks_len: usize,
    /// Whether the current frame's payload goes to `chunks` rather than `payload`.
    keep_chunks: bool,
}

impl FrameReader {
    /// A reader that refuses payloads beyond `limits`.
    pub fn new(limits: FrameLimits) -> FrameReader {
        FrameReader {
            limits,
            phase: Phase::Header { filled: 0 },
            header: [0; FRAME_HEADER_LEN],
            envelope: Vec::new(),
            payload: AlignedBytes::new(),
            chunks: Vec::new(),
            chunks_len: 0,
            keep_chunks: false,
        }
    }

    /// The limits this reader enforces.
    pub fn limits(&self) -> FrameLimits {
        self.limits
    }

    /// Reads the next frame; `Ok(None)` when the stream ended cleanly between frames.
    ///
    /// Checks the header (magic, version, CRC, flags, lengths against the limits) before
    /// reserving any buffer for the frame, and that the padding is zero. A stream that ends
    /// inside a frame is [`ProtocolError::Truncated`]. A stream cannot be resynchronised after
    /// an error (the reader stays where it stopped, so calling again fails again): drop it.
    pub async fn read_frame<S: FrameSource>(
        &mut self,
        source: &mut S,
    ) -> Result<Option<Frame<'_>>, ProtocolError> {
        self.read_next(source, false).await?;
        Ok(self.finished_frame())
    }

    /// The frame [`Self::read_next`] just completed, if it did.
    fn finished_frame(&mut self) -> Option<Frame<'_>> {
        let Phase::Finished(header) = self.phase else {
            return None;
        };
        self.phase = Phase::Done;
        let envelope = envelope_of(&self.envelope, header);
        Some(Frame {
            envelope,
            payload: &mut self.payload,
        })
    }

    /// Reads up to the end of the next frame (the phase is then `Finished`), or to the clean
    /// end of the stream between frames (the phase stays `Header`). `keep_chunks`: a frame
    /// that starts in this call keeps its payload's chunks; one that continues keeps the mode
    /// it started with, so a call cancelled half-way must be repeated the same way.
    async fn read_next<S: FrameSource>(
        &mut self,
        source: &mut S,
        keep_chunks: bool,
    ) -> Result<(), ProtocolError> {
        if matches!(self.phase, Phase::Envelope(_) | Phase::Payload(_)) {
            assert_eq!(
                self.keep_chunks, keep_chunks,
                "a frame is continued the way it was started"
            );
        }
        loop {
            match self.phase {
                Phase::Done | Phase::Finished(_) => self.phase = Phase::Header { filled: 0 },
                Phase::Header { filled } if filled == FRAME_HEADER_LEN => {
                    let header = FrameHeader::decode(&self.header, &self.limits)?;
                    self.start_frame(header, keep_chunks);
                }
                Phase::Header { filled } => {
                    let wanted = FRAME_HEADER_LEN - filled;
                    let Some(chunk) = source.next_chunk(wanted).await? else {
                        if filled == 0 {
                            return Ok(());
                        }
                        return Err(truncated("header", FRAME_HEADER_LEN, filled));
                    };
                    let chunk = checked(chunk.as_ref(), wanted);
                    if let Some(target) = self.header.get_mut(filled..filled + chunk.len()) {
                        target.copy_from_slice(chunk);
                    }
                    self.phase = Phase::Header {
                        filled: filled + chunk.len(),
                    };
                }
                Phase::Envelope(header) => {
                    let padded_len = header.envelope_len as usize + header.padding_len();
                    let wanted = padded_len - self.envelope.len();
                    if wanted == 0 {
                        let padding = self.envelope.get(header.envelope_len as usize..);
                        if padding.is_some_and(|padding| padding.iter().any(|&byte| byte != 0)) {
                            return Err(ProtocolError::NonZeroPadding);
                        }
                        self.phase = Phase::Payload(header);
                        continue;
                    }
                    let Some(chunk) = source.next_chunk(wanted).await? else {
                        return Err(truncated("envelope", padded_len, self.envelope.len()));
                    };
                    self.envelope
                        .extend_from_slice(checked(chunk.as_ref(), wanted));
                }
                Phase::Payload(header) => {
                    let payload_len = header.payload_len as usize;
                    let filled = match self.keep_chunks {
                        true => self.chunks_len,
                        false => self.payload.len(),
                    };
                    let wanted = payload_len - filled;
                    if wanted == 0 {
                        self.phase = Phase::Finished(header);
                        return Ok(());
                    }
                    let Some(chunk) = source.next_chunk(wanted).await? else {
                        return Err(truncated("payload", payload_len, filled));
                    };
                    let len = checked(chunk.as_ref(), wanted).len();
                    if self.keep_chunks {
                        self.chunks.push(S::share(chunk));
                        self.chunks_len += len;
                    } else {
                        self.payload.extend_from_slice(chunk.as_ref());
                    }
                }
            }
        }
    }

    /// Prepares the buffers for the frame `header` announces (already checked against the
    /// limits, so the sizes are bounded).
    fn start_frame(&mut self, header: FrameHeader, keep_chunks: bool) {
        self.envelope.clear();
        self.envelope
            .reserve(header.envelope_len as usize + header.padding_len());
        self.payload.clear();
        // Dropping the last frame's chunks releases quinn's receive buffers.
        self.chunks.clear();
        self.chunks_len = 0;
        self.keep_chunks = keep_chunks;
        if !keep_chunks {
            // At most once per frame (when the caller took the last payload or this one is
            // the largest yet), and within the limit the header was checked against.
            self.payload.reserve_exact(header.payload_len as usize);
        }
        self.phase = Phase::Envelope(header);
    }
}

/// The envelope of a read frame, without its padding.
fn envelope_of(padded: &[u8], header: FrameHeader) -> &[u8] {
    padded
        .get(..header.envelope_len as usize)
        .unwrap_or_default()
}

/// A [`ProtocolError::Truncated`] for `part`.
fn truncated(part: &'static str, expected: usize, received: usize) -> ProtocolError {
    ProtocolError::Truncated {
        part,
        expected: expected as u64,
        received: received as u64,
    }
}

/// `chunk`, after checking the [`FrameSource`] contract: never more than asked for. A source
/// that breaks it is a bug of ours (quinn and the slice source keep it), not bad input.
fn checked(chunk: &[u8], wanted: usize) -> &[u8] {
    assert!(
        chunk.len() <= wanted,
        "frame source returned {} bytes where at most {wanted} were asked",
        chunk.len()
    );
    chunk
}

/// Writes a request frame: `request`'s envelope, then `payload` (one batch for `Append`,
/// nothing otherwise).
pub async fn write_request<S: FrameSink>(
    sink: &mut S,
    request: &Request,
    payload: &[u8],
    limits: &FrameLimits,
) -> Result<(), ProtocolError> {
    check_payload(request.kind(), request.carries_payload(), payload.len())?;
    let head = encode_frame(&request.encode(), payload.len(), limits)?;
    write_frame(sink, &head, &[payload]).await
}

/// Writes a response frame: `response`'s envelope, then the payload `parts` (whole batches
/// for `ReadChunk`, nothing otherwise).
pub async fn write_response<S: FrameSink>(
    sink: &mut S,
    response: &Response,
    parts: &[&[u8]],
    limits: &FrameLimits,
) -> Result<(), ProtocolError> {
    ResponseWriter::new()
        .write(sink, response, parts, limits)
        .await
}

/// Writes response frames with buffers it reuses: the flatbuffers builder of the envelope
/// and the frame's head. One per request stream at a time; a server keeps a few and hands
/// them from one request to the next, so answering allocates nothing once they have grown.
#[derive(Debug)]
pub struct ResponseWriter {
    builder: flatbuffers::FlatBufferBuilder<'static>,
    head: Vec<u8>,
}

impl Default for ResponseWriter {
    fn default() -> ResponseWriter {
        ResponseWriter::new()
    }
}

impl ResponseWriter {
    /// A writer with small buffers (they grow to the largest response written).
    pub fn new() -> ResponseWriter {
        ResponseWriter {
            builder: flatbuffers::FlatBufferBuilder::with_capacity(256),
            head: Vec::new(),
        }
    }

    /// [`write_response`] with this writer's buffers.
    pub async fn write<S: FrameSink>(
        &mut self,
        sink: &mut S,
        response: &Response,
        parts: &[&[u8]],
        limits: &FrameLimits,
    ) -> Result<(), ProtocolError> {
        let payload_len = parts.iter().map(|part| part.len()).sum();
        check_payload(response.kind(), response.carries_payload(), payload_len)?;
        let envelope = response.encode_with(&mut self.builder);
        encode_frame_into(&mut self.head, envelope, payload_len, limits)?;
        write_frame(sink, &self.head, parts).await
    }
}

impl FrameReader {
    /// Forgets the frame in progress and drops the chunks kept of the last one (releasing
    /// quinn's receive buffers), keeping the buffers' capacity: the reader can then read
    /// another stream.
    pub fn reset(&mut self) {
        self.phase = Phase::Header { filled: 0 };
        self.chunks.clear();
        self.chunks_len = 0;
        self.keep_chunks = false;
    }

    /// Reads and decodes the next request frame; `Ok(None)` when the stream ended cleanly.
    /// The payload is the batch of an `Append`, empty otherwise (a payload on any other
    /// request, or none on an `Append`, is refused).
    pub async fn read_request<S: FrameSource>(
        &mut self,
        source: &mut S,
    ) -> Result<Option<(Request, &mut AlignedBytes)>, ProtocolError> {
        let Some(frame) = self.read_frame(source).await? else {
            return Ok(None);
        };
        let request = Request::decode(frame.envelope)?;
        check_payload(
            request.kind(),
            request.carries_payload(),
            frame.payload.len(),
        )?;
        Ok(Some((request, frame.payload)))
    }

    /// [`Self::read_request`], keeping the payload as the chunks it was received in (shared
    /// with the source, not copied: see [`FrameSource::share`]). They stay in the reader until
    /// its next frame starts.
    pub async fn read_request_chunks<S: FrameSource>(
        &mut self,
        source: &mut S,
    ) -> Result<Option<(Request, &[Bytes])>, ProtocolError> {
        self.read_next(source, true).await?;
        let Phase::Finished(header) = self.phase else {
            return Ok(None);
        };
        self.phase = Phase::Done;
        let request = Request::decode(envelope_of(&self.envelope, header))?;
        check_payload(request.kind(), request.carries_payload(), self.chunks_len)?;
        Ok(Some((request, &self.chunks)))
    }

    /// Reads and decodes the next response frame; `Ok(None)` when the stream ended cleanly.
    /// The payload holds the batches of a `ReadChunk`, and is empty otherwise.
    pub async fn read_response<S: FrameSource>(
        &mut self,
        source: &mut S,
    ) -> Result<Option<(Response, &mut AlignedBytes)>, ProtocolError> {
        let Some(frame) = self.read_frame(source).await? else {
            return Ok(None);
        };
        let response = Response::decode(frame.envelope)?;
        check_payload(
            response.kind(),
            response.carries_payload(),
            frame.payload.len(),
        )?;
        Ok(Some((response, frame.payload)))
    }
}

/// Refuses a payload on a message that carries none, and a missing one where it must.
fn check_payload(
    kind: &'static str,
    carries_payload: bool,
    payload_len: usize,
) -> Result<(), ProtocolError> {
    if carries_payload == (payload_len > 0) {
        return Ok(());
    }
    Err(ProtocolError::PayloadMismatch {
        kind,
        payload_len: payload_len as u64,
    })
}
