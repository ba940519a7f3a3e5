//! The persisted index of a sealed segment (`<base offset>.idx`), so that opening a log reads
//! one small file per sealed segment instead of scanning it. Drawn in `docs/format/segment.md`.
//!
//! Written once, after the segment was sealed and synced. A missing, torn or otherwise invalid
//! index file is never an error: recovery then scans the segment (and verifies every CRC) as if
//! there were none. The batches of an indexed segment are still checked on every read.
//!
//! ```text
//! 0   magic "RNLI" u32 | 4 version u16 | 6 reserved u16
//! 8   base_offset u64  | 16 next_offset u64 | 24 data_end u64
//! 32  max_timestamp_ms i64 | 40 created_ms i64
//! 48  write_bytes_max u32 | 52 entry_count u32
//! 56  entries: entry_count × (base_offset u64, position u64, max_timestamp_before_ms i64)
//! ..  CRC-32 of every byte before it, u32; zeros up to the next 4 KiB
//! ```

use runnel_core::Offset;

use crate::config::BLOCK_BYTES;
use crate::index::{IndexEntry, SparseIndex};

/// `"RNLI"` as a little-endian u32.
const INDEX_MAGIC: u32 = u32::from_le_bytes(*b"RNLI");
/// Version of the index file layout.
const INDEX_FORMAT_VERSION: u16 = 1;
/// Bytes before the entries.
const INDEX_HEADER_LEN: usize = 56;
/// Bytes of one entry.
const INDEX_ENTRY_LEN: usize = 24;
/// Extension of index files.
pub(crate) const INDEX_EXTENSION: &str = "idx";

/// What an index file says about its sealed segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SealedSegmentIndex {
    pub base_offset: Offset,
    pub next_offset: Offset,
    pub data_end: u64,
    pub max_timestamp_ms: i64,
    pub created_ms: i64,
    pub write_bytes_max: u32,
    pub index: SparseIndex,
}

impl SealedSegmentIndex {
    /// What the log knows of a segment it just sealed.
    pub(crate) fn of<F>(segment: &crate::segment::Segment<F>) -> SealedSegmentIndex {
        SealedSegmentIndex {
            base_offset: segment.base,
            next_offset: segment.next_offset,
            data_end: segment.data_end,
            max_timestamp_ms: segment.max_timestamp_ms,
            created_ms: segment.created_ms,
            write_bytes_max: segment.write_bytes_max,
            index: segment.index.clone(),
        }
    }
}

/// The file name of the index of the segment starting at `base`.
pub(crate) fn index_file_name(base: Offset) -> String {
    format!("{:020}.{INDEX_EXTENSION}", base.0)
}

fn field<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut raw = [0u8; N];
    if let Some(src) = bytes.get(at..at + N) {
        raw.copy_from_slice(src);
    }
    raw
}

/// Encodes the index, padded with zeros to a whole number of blocks.
pub(crate) fn encode(sealed: &SealedSegmentIndex) -> Vec<u8> {
    let entries = sealed.index.entries();
    let len = INDEX_HEADER_LEN + entries.len() * INDEX_ENTRY_LEN;
    let mut out = Vec::with_capacity(len + 4 + BLOCK_BYTES);
    out.extend_from_slice(&INDEX_MAGIC.to_le_bytes());
    out.extend_from_slice(&INDEX_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&sealed.base_offset.0.to_le_bytes());
    out.extend_from_slice(&sealed.next_offset.0.to_le_bytes());
    out.extend_from_slice(&sealed.data_end.to_le_bytes());
    out.extend_from_slice(&sealed.max_timestamp_ms.to_le_bytes());
    out.extend_from_slice(&sealed.created_ms.to_le_bytes());
    out.extend_from_slice(&sealed.write_bytes_max.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for entry in entries {
        out.extend_from_slice(&entry.base_offset.0.to_le_bytes());
        out.extend_from_slice(&entry.position.to_le_bytes());
        out.extend_from_slice(&entry.max_timestamp_before_ms.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    let padded = out.len().div_ceil(BLOCK_BYTES) * BLOCK_BYTES;
    out.resize(padded, 0);
    out
}

/// Decodes an index file, or says why it cannot be used.
pub(crate) fn decode(bytes: &[u8]) -> Result<SealedSegmentIndex, String> {
    if bytes.len() < INDEX_HEADER_LEN + 4 {
        return Err(format!("index file of {} bytes is too short", bytes.len()));
    }
    if u32::from_le_bytes(field(bytes, 0)) != INDEX_MAGIC {
        return Err("index file magic is wrong".into());
    }
    if u16::from_le_bytes(field(bytes, 4)) != INDEX_FORMAT_VERSION {
        return Err("index file version is not supported".into());
    }
    let entry_count = u32::from_le_bytes(field(bytes, 52)) as usize;
    let body_len = entry_count
        .checked_mul(INDEX_ENTRY_LEN)
        .and_then(|n| n.checked_add(INDEX_HEADER_LEN))
        .filter(|&n| n + 4 <= bytes.len())
        .ok_or_else(|| format!("index file claims {entry_count} entries, more than it holds"))?;
    let stored = u32::from_le_bytes(field(bytes, body_len));
    let computed = crc32fast::hash(bytes.get(..body_len).unwrap_or_default());
    if stored != computed {
        return Err(format!(
            "index file CRC {stored:#010x}, computed {computed:#010x}"
        ));
    }
    let mut entries = Vec::with_capacity(entry_count);
    for i in 0..entry_count {
        let at = INDEX_HEADER_LEN + i * INDEX_ENTRY_LEN;
        entries.push(IndexEntry {
            base_offset: Offset(u64::from_le_bytes(field(bytes, at))),
            position: u64::from_le_bytes(field(bytes, at + 8)),
            max_timestamp_before_ms: i64::from_le_bytes(field(bytes, at + 16)),
        });
    }
    let sealed = SealedSegmentIndex {
        base_offset: Offset(u64::from_le_bytes(field(bytes, 8))),
        next_offset: Offset(u64::from_le_bytes(field(bytes, 16))),
        data_end: u64::from_le_bytes(field(bytes, 24)),
        max_timestamp_ms: i64::from_le_bytes(field(bytes, 32)),
        created_ms: i64::from_le_bytes(field(bytes, 40)),
        write_bytes_max: u32::from_le_bytes(field(bytes, 48)),
        index: SparseIndex::from_entries(entries).ok_or("index entries are out of order")?,
    };
    if sealed.next_offset < sealed.base_offset {
        return Err("index file's next offset is before its base offset".into());
    }
    Ok(sealed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> SealedSegmentIndex {
        let mut index = SparseIndex::default();
        index.note_batch(Offset(100), 4096, i64::MIN, 1);
        index.note_batch(Offset(110), 9000, 55, 1);
        SealedSegmentIndex {
            base_offset: Offset(100),
            next_offset: Offset(120),
            data_end: 12_000,
            max_timestamp_ms: 99,
            created_ms: 1_700_000_000_000,
            write_bytes_max: 4 << 20,
            index,
        }
    }

    #[test]
    fn round_trips_and_any_damage_is_refused() {
        let bytes = encode(&sample());
        assert!(bytes.len().is_multiple_of(BLOCK_BYTES));
        assert_eq!(decode(&bytes), Ok(sample()));
        let body = INDEX_HEADER_LEN + 2 * INDEX_ENTRY_LEN + 4;
        for at in 0..body {
            let mut damaged = bytes.clone();
            if let Some(byte) = damaged.get_mut(at) {
                *byte ^= 0x10;
            }
            assert!(
                decode(&damaged).is_err(),
                "damage at byte {at} went unnoticed"
            );
        }
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode(&bytes);
        }
    }
}
