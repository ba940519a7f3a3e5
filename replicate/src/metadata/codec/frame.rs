//! The frame around every command and snapshot: a 12-byte header, the body, a CRC-32.
//!
//! ```text
//! 0       4     5       6       8          12                12 + body_len
//! | magic | ver | cksum | flags | body_len | body ...        | crc (u32) |
//! ```
//!
//! The CRC covers bytes `[0, 12 + body_len)`. The checks run in a fixed order so that a frame
//! of another kind or version is named as such rather than reported as a checksum mismatch.

use super::wire::Reader;
use super::DecodeError;

/// Checksum algorithm id of CRC-32 (IEEE), as `crc32fast::hash` computes it; the only one.
pub const CHECKSUM_CRC32_IEEE: u8 = 1;

/// Bytes of the frame header: magic, version, checksum id, flags, body length.
pub const FRAME_HEADER_LEN: usize = 12;

/// Bytes a frame adds to its body: the header and the trailing CRC.
pub const FRAME_OVERHEAD_LEN: usize = FRAME_HEADER_LEN + 4;

/// Checks the frame around `bytes` and returns its body.
pub(crate) fn open(bytes: &[u8], magic: u32, version: u8) -> Result<&[u8], DecodeError> {
    if bytes.len() < FRAME_OVERHEAD_LEN {
        return Err(DecodeError::Truncated {
            field: "frame",
            needed: FRAME_OVERHEAD_LEN as u64,
            available: bytes.len() as u64,
        });
    }
    let mut header = Reader::new(bytes);
    let found = header.u32("magic")?;
    if found != magic {
        return Err(DecodeError::BadMagic {
            found,
            expected: magic,
        });
    }
    let found = header.u8("version")?;
    if found != version {
        return Err(DecodeError::UnsupportedVersion {
            found,
            supported: version,
        });
    }
    let found = header.u8("checksum id")?;
    if found != CHECKSUM_CRC32_IEEE {
        return Err(DecodeError::UnknownChecksum { found });
    }
    let found = header.u16("flags")?;
    if found != 0 {
        return Err(DecodeError::UnsupportedFlags { found });
    }
    let body_len = u64::from(header.u32("body length")?);
    let available = (bytes.len() - FRAME_OVERHEAD_LEN) as u64;
    if body_len != available {
        return Err(DecodeError::BadLength {
            body_len,
            available,
        });
    }
    let (covered, stored) = bytes
        .split_last_chunk::<4>()
        .map(|(covered, stored)| (covered, u32::from_le_bytes(*stored)))
        .ok_or(DecodeError::Truncated {
            field: "checksum",
            needed: 4,
            available: bytes.len() as u64,
        })?;
    let actual = crc32fast::hash(covered);
    if actual != stored {
        return Err(DecodeError::ChecksumMismatch {
            expected: stored,
            actual,
        });
    }
    covered
        .get(FRAME_HEADER_LEN..)
        .ok_or(DecodeError::Truncated {
            field: "frame",
            needed: FRAME_OVERHEAD_LEN as u64,
            available: bytes.len() as u64,
        })
}
