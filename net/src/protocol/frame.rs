//! The frame: a fixed 16-byte header, the flatbuffers envelope, zero padding to 16, and the
//! raw payload (whole batches, never re-encoded).
//!
//! ```text
//! 0        16                    16 + envelope_len    16 + align16(envelope_len)    + payload_len
//! +--------+---------------------+-------------------+-----------------------------+
//! | header | envelope            | zero padding      | payload (batch bytes, raw)  |
//! +--------+---------------------+-------------------+-----------------------------+
//! ```
//! Drawn byte by byte in `docs/format/protocol.md`. The payload starts at a 16-byte aligned
//! offset of the frame, so a reader that places the frame's payload at the start of a
//! 16-aligned buffer can hand batches to `BatchView` without another copy. A writer sends the
//! head ([`encode_frame`]) and then the payload from wherever it already lies.

use runnel_core::{Limits, BATCH_ALIGNMENT};

use super::error::ProtocolError;

/// The frame magic: bytes `52 46` (`"RF"`), `0x4652` as a little-endian u16.
pub const FRAME_MAGIC: u16 = u16::from_le_bytes(*b"RF");
/// The frame format version this build writes and reads.
pub const FRAME_VERSION: u8 = 1;
/// Length of the fixed frame header.
pub const FRAME_HEADER_LEN: usize = 16;
/// Largest envelope, a protocol constant both sides rely on: envelopes carry requests and
/// metadata, never bulk data, so lists are paged to fit.
pub const ENVELOPE_BYTES_MAX: u32 = 64 << 10;
/// The payload, and so the envelope's padded end, is aligned to this.
pub const FRAME_ALIGNMENT: usize = BATCH_ALIGNMENT;

// Field positions within the frame header (docs/format/protocol.md): magic 0..2, version 2,
// flags 3, envelope_len 4..8, payload_len 8..12, header_crc 12..16 over bytes 0..12. The
// encoder and decoder below spell them out as array patterns, so no index can go wrong.
const _: () = assert!(FRAME_HEADER_LEN.is_multiple_of(FRAME_ALIGNMENT));
const _: () = assert!((ENVELOPE_BYTES_MAX as usize).is_multiple_of(FRAME_ALIGNMENT));

/// Rounds `len` up to the frame alignment.
pub const fn align_frame_len(len: usize) -> usize {
    (len + FRAME_ALIGNMENT - 1) & !(FRAME_ALIGNMENT - 1)
}

/// What a reader accepts. The envelope limit is the protocol constant [`ENVELOPE_BYTES_MAX`];
/// the payload limit is the reader's, announced to clients in `HelloOk`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Largest frame payload accepted, in bytes; a multiple of 16. Default 8 MiB, the default
    /// `batch_bytes_max`: an `Append` carries one batch, a `ReadChunk` whole batches.
    pub payload_bytes_max: u32,
}

impl FrameLimits {
    /// Payloads up to the default largest batch (8 MiB).
    pub const DEFAULT: FrameLimits = FrameLimits {
        payload_bytes_max: Limits::DEFAULT.batch_bytes_max as u32,
    };

    /// Payloads up to `limits.batch_bytes_max` (rounded down to 16, capped at `u32::MAX`), so
    /// that one largest batch always fits in one frame.
    pub fn for_batches(limits: &Limits) -> FrameLimits {
        let max = limits.batch_bytes_max.min(u64::from(u32::MAX));
        let max = u32::try_from(max).unwrap_or(u32::MAX);
        FrameLimits {
            payload_bytes_max: max & !(FRAME_ALIGNMENT as u32 - 1),
        }
    }
}

impl Default for FrameLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

const _: () = assert!((FrameLimits::DEFAULT.payload_bytes_max as usize).is_multiple_of(16));

/// The decoded fixed header of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Bytes of the flatbuffers envelope, padding excluded: 1 to [`ENVELOPE_BYTES_MAX`].
    pub envelope_len: u32,
    /// Bytes of the payload after the padding: a multiple of 16, within the reader's limit.
    pub payload_len: u32,
}

impl FrameHeader {
    /// Bytes of zero padding after the envelope.
    pub fn padding_len(&self) -> usize {
        align_frame_len(self.envelope_len as usize) - self.envelope_len as usize
    }

    /// Bytes of the whole frame: header, envelope, padding and payload.
    pub fn frame_len(&self) -> u64 {
        (FRAME_HEADER_LEN + align_frame_len(self.envelope_len as usize)) as u64
            + u64::from(self.payload_len)
    }

    /// The 16 header bytes: magic, version, flags 0, lengths and the header CRC.
    pub fn encode(&self) -> [u8; FRAME_HEADER_LEN] {
        let [m0, m1] = FRAME_MAGIC.to_le_bytes();
        let [e0, e1, e2, e3] = self.envelope_len.to_le_bytes();
        let [p0, p1, p2, p3] = self.payload_len.to_le_bytes();
        let covered = [m0, m1, FRAME_VERSION, 0, e0, e1, e2, e3, p0, p1, p2, p3];
        let [c0, c1, c2, c3] = crc32fast::hash(&covered).to_le_bytes();
        [
            m0,
            m1,
            FRAME_VERSION,
            0,
            e0,
            e1,
            e2,
            e3,
            p0,
            p1,
            p2,
            p3,
            c0,
            c1,
            c2,
            c3,
        ]
    }

    /// Decodes and checks a header, in the order drawn in `docs/format/protocol.md`: magic,
    /// version, CRC, flags, envelope length, payload length and alignment.
    pub fn decode(
        bytes: &[u8; FRAME_HEADER_LEN],
        limits: &FrameLimits,
    ) -> Result<FrameHeader, ProtocolError> {
        let [m0, m1, version, flags, e0, e1, e2, e3, p0, p1, p2, p3, c0, c1, c2, c3] = *bytes;
        let magic = u16::from_le_bytes([m0, m1]);
        if magic != FRAME_MAGIC {
            return Err(ProtocolError::BadMagic {
                found: magic,
                expected: FRAME_MAGIC,
            });
        }
        if version != FRAME_VERSION {
            return Err(ProtocolError::UnsupportedVersion {
                found: version,
                supported: FRAME_VERSION,
            });
        }
        let stored_crc = u32::from_le_bytes([c0, c1, c2, c3]);
        let covered = [m0, m1, version, flags, e0, e1, e2, e3, p0, p1, p2, p3];
        let actual_crc = crc32fast::hash(&covered);
        if stored_crc != actual_crc {
            return Err(ProtocolError::HeaderChecksumMismatch {
                expected: stored_crc,
                actual: actual_crc,
            });
        }
        if flags != 0 {
            return Err(ProtocolError::UnsupportedFlags { found: flags });
        }
        let header = FrameHeader {
            envelope_len: u32::from_le_bytes([e0, e1, e2, e3]),
            payload_len: u32::from_le_bytes([p0, p1, p2, p3]),
        };
        header.check(limits)?;
        Ok(header)
    }

    /// The header at the start of a frame head this process encoded, if it is one (used to
    /// check that a writer's payload matches its head; no payload limit applies).
    pub(crate) fn of_head(head: &[u8]) -> Option<FrameHeader> {
        let bytes: &[u8; FRAME_HEADER_LEN] = head.get(..FRAME_HEADER_LEN)?.try_into().ok()?;
        let unlimited = FrameLimits {
            payload_bytes_max: u32::MAX,
        };
        FrameHeader::decode(bytes, &unlimited).ok()
    }

    /// The length rules shared by the encoder and the decoder.
    fn check(&self, limits: &FrameLimits) -> Result<(), ProtocolError> {
        if self.envelope_len == 0 || self.envelope_len > ENVELOPE_BYTES_MAX {
            return Err(ProtocolError::EnvelopeTooLarge {
                len: u64::from(self.envelope_len),
                max: ENVELOPE_BYTES_MAX,
            });
        }
        if self.payload_len > limits.payload_bytes_max {
            return Err(ProtocolError::PayloadTooLarge {
                len: u64::from(self.payload_len),
                max: limits.payload_bytes_max,
            });
        }
        if !(self.payload_len as usize).is_multiple_of(FRAME_ALIGNMENT) {
            return Err(ProtocolError::PayloadNotAligned {
                len: self.payload_len,
            });
        }
        Ok(())
    }
}

/// The head of a frame — header, `envelope` and zero padding — for a payload of
/// `payload_len` bytes that the caller writes right after it (not copied here).
pub fn encode_frame(
    envelope: &[u8],
    payload_len: usize,
    limits: &FrameLimits,
) -> Result<Vec<u8>, ProtocolError> {
    let mut head = Vec::new();
    encode_frame_into(&mut head, envelope, payload_len, limits)?;
    Ok(head)
}

/// [`encode_frame`] into a reused buffer: clears `head`, then writes the frame's head into it.
/// On error `head` is left empty.
pub fn encode_frame_into(
    head: &mut Vec<u8>,
    envelope: &[u8],
    payload_len: usize,
    limits: &FrameLimits,
) -> Result<(), ProtocolError> {
    head.clear();
    let envelope_len =
        u32::try_from(envelope.len()).map_err(|_| ProtocolError::EnvelopeTooLarge {
            len: envelope.len() as u64,
            max: ENVELOPE_BYTES_MAX,
        })?;
    let payload_len = u32::try_from(payload_len).map_err(|_| ProtocolError::PayloadTooLarge {
        len: payload_len as u64,
        max: limits.payload_bytes_max,
    })?;
    let header = FrameHeader {
        envelope_len,
        payload_len,
    };
    header.check(limits)?;
    let padded_len = align_frame_len(envelope.len());
    head.reserve(FRAME_HEADER_LEN + padded_len);
    head.extend_from_slice(&header.encode());
    head.extend_from_slice(envelope);
    head.resize(FRAME_HEADER_LEN + padded_len, 0);
    assert!(head.len().is_multiple_of(FRAME_ALIGNMENT));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header of a 20-byte envelope and a 32-byte payload, byte by byte, as drawn in
    /// docs/format/protocol.md: a layout change must change this test and the document.
    #[test]
    fn header_bytes_are_as_documented() {
        let header = FrameHeader {
            envelope_len: 20,
            payload_len: 32,
        };
        let bytes = header.encode();
        assert_eq!(
            bytes,
            [
                0x52, 0x46, 0x01, 0x00, 0x14, 0x00, 0x00, 0x00, 0x20, 0x00, 0x00, 0x00, 0x81, 0x2a,
                0x69, 0x22
            ]
        );
        assert_eq!(
            FrameHeader::decode(&bytes, &FrameLimits::DEFAULT),
            Ok(header)
        );
        assert_eq!(header.padding_len(), 12);
        assert_eq!(header.frame_len(), 16 + 32 + 32);
    }

    /// Every single-bit flip of a header is refused (magic, version, CRC or flags catch it),
    /// so a reader that lost frame sync cannot take garbage for lengths.
    #[test]
    fn every_bit_flip_of_a_header_is_refused() {
        let bytes = FrameHeader {
            envelope_len: 100,
            payload_len: 4096,
        }
        .encode();
        for bit in 0..FRAME_HEADER_LEN * 8 {
            let mut flipped = bytes;
            if let Some(byte) = flipped.get_mut(bit / 8) {
                *byte ^= 1 << (bit % 8);
            }
            assert!(
                FrameHeader::decode(&flipped, &FrameLimits::DEFAULT).is_err(),
                "bit {bit} flipped and still accepted"
            );
        }
    }

    #[test]
    fn limits_are_checked_on_both_sides() {
        let limits = FrameLimits {
            payload_bytes_max: 64,
        };
        assert!(matches!(
            encode_frame(&[], 0, &limits),
            Err(ProtocolError::EnvelopeTooLarge { len: 0, .. })
        ));
        let too_big = vec![1_u8; ENVELOPE_BYTES_MAX as usize + 1];
        assert!(matches!(
            encode_frame(&too_big, 0, &limits),
            Err(ProtocolError::EnvelopeTooLarge { .. })
        ));
        assert!(matches!(
            encode_frame(&[1], 80, &limits),
            Err(ProtocolError::PayloadTooLarge { len: 80, max: 64 })
        ));
        assert!(matches!(
            encode_frame(&[1], 8, &limits),
            Err(ProtocolError::PayloadNotAligned { len: 8 })
        ));
        let head = encode_frame(&[7; 17], 64, &limits).expect("valid frame");
        assert_eq!(head.len(), 16 + 32);
        assert!(head
            .get(16 + 17..)
            .is_some_and(|pad| pad.iter().all(|&b| b == 0)));

        let header = FrameHeader {
            envelope_len: 1,
            payload_len: 80,
        }
        .encode();
        assert!(matches!(
            FrameHeader::decode(&header, &limits),
            Err(ProtocolError::PayloadTooLarge { len: 80, max: 64 })
        ));
    }

    #[test]
    fn frame_limits_follow_batch_limits() {
        assert_eq!(
            FrameLimits::for_batches(&Limits::DEFAULT),
            FrameLimits::DEFAULT
        );
        let odd = Limits {
            batch_bytes_max: 1000,
            ..Limits::DEFAULT
        };
        assert_eq!(FrameLimits::for_batches(&odd).payload_bytes_max, 992);
        let huge = Limits {
            batch_bytes_max: u64::MAX,
            ..Limits::DEFAULT
        };
        assert_eq!(
            FrameLimits::for_batches(&huge).payload_bytes_max,
            u32::MAX - 15
        );
    }
}
