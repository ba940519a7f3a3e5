//! Byte layouts of the files in a log directory (drawn in `docs/format/segment.md`).
//!
//! * `<base offset, 20 digits>.seg`: a segment. Block 0 (4 KiB) holds the segment header;
//!   batches follow back to back from byte 4096, each in the batch format of `runnel-core`.
//!   The preallocated rest of the file is zeros.
//! * `start`: the log's logical start offset (moved by trim), replaced atomically by rename.

use runnel_core::Offset;

use crate::config::BLOCK_BYTES;

/// `"RNLS"` as a little-endian u32: the segment header magic.
pub(crate) const SEGMENT_MAGIC: u32 = u32::from_le_bytes(*b"RNLS");
/// `"RNLT"` as a little-endian u32: the start file magic.
pub(crate) const START_MAGIC: u32 = u32::from_le_bytes(*b"RNLT");
/// Version of the segment and start file layouts.
pub(crate) const SEGMENT_FORMAT_VERSION: u16 = 1;
/// Bytes of the segment header that carry data (the rest of block 0 is zero).
pub(crate) const SEGMENT_HEADER_LEN: usize = 64;
/// Bytes of the start file that carry data.
pub(crate) const START_FILE_LEN: usize = 20;
/// Where the first batch of a segment starts.
pub(crate) const SEGMENT_DATA_START: u64 = BLOCK_BYTES as u64;
/// The most writes that are ever unsynced at once (the flusher overlaps one write with the
/// previous write's fdatasync): a power loss can tear at most this many writes of at most
/// `write_bytes_max` bytes each.
pub(crate) const UNSYNCED_WRITES_MAX: u64 = 2;
/// File name of the start file.
pub(crate) const START_FILE_NAME: &str = "start";
/// Extension of segment files.
pub(crate) const SEGMENT_EXTENSION: &str = "seg";

const _: () = assert!(SEGMENT_HEADER_LEN <= BLOCK_BYTES);

/// The header of a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    /// Offset of the first batch in the segment.
    pub base_offset: Offset,
    /// Wall-clock creation time, milliseconds since the Unix epoch.
    pub created_ms: i64,
    /// The most bytes one write of the writer could carry: the window in which a power loss
    /// can leave torn data, used by recovery to tell a torn tail from corruption.
    pub write_bytes_max: u32,
}

fn le_u16(bytes: &[u8], at: usize) -> u16 {
    let mut raw = [0u8; 2];
    raw.copy_from_slice(bytes.get(at..at + 2).unwrap_or(&[0; 2]));
    u16::from_le_bytes(raw)
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(bytes.get(at..at + 4).unwrap_or(&[0; 4]));
    u32::from_le_bytes(raw)
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(bytes.get(at..at + 8).unwrap_or(&[0; 8]));
    u64::from_le_bytes(raw)
}

fn put(out: &mut [u8], at: usize, value: &[u8]) {
    if let Some(target) = out.get_mut(at..at + value.len()) {
        target.copy_from_slice(value);
    }
}

impl SegmentHeader {
    /// Writes the header into the first bytes of `block` (at least [`SEGMENT_HEADER_LEN`]).
    pub(crate) fn encode_into(&self, block: &mut [u8]) {
        put(block, 0, &SEGMENT_MAGIC.to_le_bytes());
        put(block, 4, &SEGMENT_FORMAT_VERSION.to_le_bytes());
        put(block, 6, &0u16.to_le_bytes());
        put(block, 8, &self.base_offset.0.to_le_bytes());
        put(block, 16, &self.created_ms.to_le_bytes());
        put(block, 24, &self.write_bytes_max.to_le_bytes());
        put(block, 28, &(BLOCK_BYTES as u32).to_le_bytes());
        put(block, 32, &[0u8; 28]);
        let crc = crc32fast::hash(block.get(..60).unwrap_or_default());
        put(block, 60, &crc.to_le_bytes());
    }

    /// Reads a header, or says what is wrong with it.
    pub(crate) fn decode(bytes: &[u8]) -> Result<SegmentHeader, String> {
        let raw = bytes.get(..SEGMENT_HEADER_LEN).ok_or_else(|| {
            format!(
                "segment header needs {SEGMENT_HEADER_LEN} bytes, file has {}",
                bytes.len()
            )
        })?;
        let magic = le_u32(raw, 0);
        if magic != SEGMENT_MAGIC {
            return Err(format!(
                "segment magic {magic:#010x}, expected {SEGMENT_MAGIC:#010x}"
            ));
        }
        let version = le_u16(raw, 4);
        if version != SEGMENT_FORMAT_VERSION {
            return Err(format!(
                "segment format version {version}, this build reads {SEGMENT_FORMAT_VERSION}"
            ));
        }
        let block = le_u32(raw, 28);
        if block as usize != BLOCK_BYTES {
            return Err(format!(
                "segment block size {block}, this build uses {BLOCK_BYTES}"
            ));
        }
        // Version and block size first: another version is "unsupported", not "corrupt".
        let stored = le_u32(raw, 60);
        let computed = crc32fast::hash(raw.get(..60).unwrap_or_default());
        if stored != computed {
            return Err(format!(
                "segment header CRC {stored:#010x}, computed {computed:#010x}"
            ));
        }
        Ok(SegmentHeader {
            base_offset: Offset(le_u64(raw, 8)),
            created_ms: le_u64(raw, 16) as i64,
            write_bytes_max: le_u32(raw, 24),
        })
    }
}

/// Encodes the start file: magic, version, reserved, start offset, CRC.
pub(crate) fn encode_start(start: Offset, block: &mut [u8]) {
    put(block, 0, &START_MAGIC.to_le_bytes());
    put(block, 4, &SEGMENT_FORMAT_VERSION.to_le_bytes());
    put(block, 6, &0u16.to_le_bytes());
    put(block, 8, &start.0.to_le_bytes());
    let crc = crc32fast::hash(block.get(..16).unwrap_or_default());
    put(block, 16, &crc.to_le_bytes());
}

/// Decodes the start file.
pub(crate) fn decode_start(bytes: &[u8]) -> Result<Offset, String> {
    let raw = bytes.get(..START_FILE_LEN).ok_or_else(|| {
        format!(
            "start file needs {START_FILE_LEN} bytes, has {}",
            bytes.len()
        )
    })?;
    if le_u32(raw, 0) != START_MAGIC {
        return Err("start file magic is wrong".into());
    }
    if le_u16(raw, 4) != SEGMENT_FORMAT_VERSION {
        return Err("start file version is not supported".into());
    }
    let stored = le_u32(raw, 16);
    let computed = crc32fast::hash(raw.get(..16).unwrap_or_default());
    if stored != computed {
        return Err(format!(
            "start file CRC {stored:#010x}, computed {computed:#010x}"
        ));
    }
    Ok(Offset(le_u64(raw, 8)))
}

/// The file name of the segment starting at `base`.
pub(crate) fn segment_file_name(base: Offset) -> String {
    format!("{:020}.{SEGMENT_EXTENSION}", base.0)
}

/// The base offset in a segment file name, or `None` for other files.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<Offset> {
    let stem = name.strip_suffix(".seg")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok().map(Offset)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_round_trips_and_detects_damage() {
        let header = SegmentHeader {
            base_offset: Offset(1234),
            created_ms: 1_700_000_000_000,
            write_bytes_max: 4 << 20,
        };
        let mut block = vec![0u8; BLOCK_BYTES];
        header.encode_into(&mut block);
        assert_eq!(SegmentHeader::decode(&block), Ok(header));
        for at in 0..SEGMENT_HEADER_LEN {
            let mut damaged = block.clone();
            damaged[at] ^= 0x40;
            assert!(SegmentHeader::decode(&damaged).is_err(), "byte {at}");
        }
    }

    #[test]
    fn file_names_round_trip() {
        let name = segment_file_name(Offset(42));
        assert_eq!(name, "00000000000000000042.seg");
        assert_eq!(parse_segment_file_name(&name), Some(Offset(42)));
        for other in [
            "start",
            "42.seg",
            "0000000000000000004x.seg",
            "00000000000000000042.idx",
        ] {
            assert_eq!(parse_segment_file_name(other), None);
        }
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = SegmentHeader::decode(&bytes);
            let _ = decode_start(&bytes);
        }

        #[test]
        fn start_round_trips(start: u64) {
            let mut block = vec![0u8; BLOCK_BYTES];
            encode_start(Offset(start), &mut block);
            prop_assert_eq!(decode_start(&block), Ok(Offset(start)));
        }
    }
}
