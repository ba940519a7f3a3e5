//! Byte layouts of the files in a log directory (drawn in `docs/format/segment.md`).
//!
//! * `<base offset, 20 digits>.seg`: a segment. Block 0 (4 KiB) holds the segment header;
//!   batches follow back to back from byte 4096, each in the batch format of `runnel-core`.
//!   Space reserved beyond the last batch (fallocate, in steps) is zeros.
//!   From version 2, block 0 also holds two *acknowledged-end checkpoint* slots (sectors 1 and
//!   2), rewritten alternately with each group-commit write: how far the log was durable and
//!   acknowledged, so that recovery can tell damage to acknowledged data from a torn tail.
//! * `start`: the log's logical start offset (moved by trim), replaced atomically by rename.

use runnel_core::Offset;

use crate::config::BLOCK_BYTES;

/// `"RNLS"` as a little-endian u32: the segment header magic.
pub(crate) const SEGMENT_MAGIC: u32 = u32::from_le_bytes(*b"RNLS");
/// `"RNLT"` as a little-endian u32: the start file magic.
pub(crate) const START_MAGIC: u32 = u32::from_le_bytes(*b"RNLT");
/// `"RNLA"` as a little-endian u32: the magic of an acknowledged-end checkpoint slot.
pub(crate) const CHECKPOINT_MAGIC: u32 = u32::from_le_bytes(*b"RNLA");
/// Version of the segment layout this build writes: 2 adds the acknowledged-end checkpoint
/// slots to block 0.
pub(crate) const SEGMENT_FORMAT_VERSION: u16 = 2;
/// The oldest segment layout this build still reads (version 1: no checkpoint slots).
pub(crate) const SEGMENT_FORMAT_VERSION_MIN: u16 = 1;
/// Version of the start file layout.
pub(crate) const START_FORMAT_VERSION: u16 = 1;
/// Where the two checkpoint slots of block 0 start: each in its own 512-byte sector, so that
/// a torn write of block 0 can damage at most the slot being written.
pub(crate) const CHECKPOINT_SLOT_AT: [usize; 2] = [512, 1024];
/// Bytes of a checkpoint slot that carry data.
pub(crate) const CHECKPOINT_SLOT_LEN: usize = 40;
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
/// `"RNLC"` as a little-endian u32: the truncation record magic ("cut").
pub(crate) const TRUNCATE_MAGIC: u32 = u32::from_le_bytes(*b"RNLC");
/// Version of the truncation record layout.
pub(crate) const TRUNCATE_FORMAT_VERSION: u16 = 1;
/// Bytes of the truncation record that carry data.
pub(crate) const TRUNCATE_FILE_LEN: usize = 36;
/// File name of the truncation record: exists only while a suffix truncation is under way.
pub(crate) const TRUNCATE_FILE_NAME: &str = "truncate";
/// Extension of segment files.
pub(crate) const SEGMENT_EXTENSION: &str = "seg";

const _: () = assert!(SEGMENT_HEADER_LEN <= BLOCK_BYTES);
const _: () = assert!(TRUNCATE_FILE_LEN <= BLOCK_BYTES);
const _: () = assert!(SEGMENT_HEADER_LEN <= CHECKPOINT_SLOT_AT[0]);
const _: () = assert!(CHECKPOINT_SLOT_AT[0] + CHECKPOINT_SLOT_LEN <= CHECKPOINT_SLOT_AT[1]);
const _: () = assert!(CHECKPOINT_SLOT_AT[1] + CHECKPOINT_SLOT_LEN <= BLOCK_BYTES);

/// The header of a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    /// Layout version of the file (1 or 2); new segments are always written as version 2.
    pub version: u16,
    /// Offset of the first batch in the segment.
    pub base_offset: Offset,
    /// Wall-clock creation time, milliseconds since the Unix epoch.
    pub created_ms: i64,
    /// The most bytes one write of the writer could carry: the window in which a power loss
    /// can leave torn data, used by recovery to tell a torn tail from corruption.
    pub write_bytes_max: u32,
    /// How many offsets just below `base_offset` are a **lost range**: handed out by a writer
    /// that acknowledged before fdatasync (`memory` durability, see [`ReservedFile`]) and lost
    /// in a crash. They hold nothing, forever. 0 (every segment written before this field
    /// existed): the previous segment ends at `base_offset`. Bytes 32..40 of the header.
    pub lost_before: u64,
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
        put(block, 4, &self.version.to_le_bytes());
        put(block, 6, &0u16.to_le_bytes());
        put(block, 8, &self.base_offset.0.to_le_bytes());
        put(block, 16, &self.created_ms.to_le_bytes());
        put(block, 24, &self.write_bytes_max.to_le_bytes());
        put(block, 28, &(BLOCK_BYTES as u32).to_le_bytes());
        put(block, 32, &self.lost_before.to_le_bytes());
        put(block, 40, &[0u8; 20]);
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
        if !(SEGMENT_FORMAT_VERSION_MIN..=SEGMENT_FORMAT_VERSION).contains(&version) {
            return Err(format!(
                "segment format version {version}, this build reads versions \
                 {SEGMENT_FORMAT_VERSION_MIN} to {SEGMENT_FORMAT_VERSION}"
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
            version,
            base_offset: Offset(le_u64(raw, 8)),
            created_ms: le_u64(raw, 16) as i64,
            write_bytes_max: le_u32(raw, 24),
            lost_before: le_u64(raw, 32),
        })
    }
}

/// `"RNLR"` as a little-endian u32: the offset reservation file's magic.
pub(crate) const RESERVED_MAGIC: u32 = u32::from_le_bytes(*b"RNLR");
/// Version of the offset reservation file.
pub(crate) const RESERVED_FORMAT_VERSION: u16 = 1;
/// Bytes of the offset reservation file that carry data.
pub(crate) const RESERVED_FILE_LEN: usize = 20;
/// File name of the offset reservation file.
pub(crate) const RESERVED_FILE_NAME: &str = "reserved";

/// The offset reservation file (`reserved`): offsets below `end` may have been handed out
/// (and acknowledged before they were durable). Layout (little-endian): magic `RNLR` u32,
/// version u16 = 1, reserved u16 = 0, end u64, CRC-32 of bytes 0..16 u32. Replaced atomically
/// by rename, like the start file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReservedFile {
    /// Offsets below this may have been handed out.
    pub end: Offset,
}

impl ReservedFile {
    /// Writes the record into the first [`RESERVED_FILE_LEN`] bytes of `block`.
    pub(crate) fn encode_into(&self, block: &mut [u8]) {
        put(block, 0, &RESERVED_MAGIC.to_le_bytes());
        put(block, 4, &RESERVED_FORMAT_VERSION.to_le_bytes());
        put(block, 6, &0u16.to_le_bytes());
        put(block, 8, &self.end.0.to_le_bytes());
        let crc = crc32fast::hash(block.get(..16).unwrap_or_default());
        put(block, 16, &crc.to_le_bytes());
    }

    /// Reads the record, or says what is wrong with it.
    pub(crate) fn decode(bytes: &[u8]) -> Result<ReservedFile, String> {
        let raw = bytes.get(..RESERVED_FILE_LEN).ok_or_else(|| {
            format!(
                "reserved file needs {RESERVED_FILE_LEN} bytes, has {}",
                bytes.len()
            )
        })?;
        if le_u32(raw, 0) != RESERVED_MAGIC {
            return Err("reserved file magic is wrong".into());
        }
        if le_u16(raw, 4) != RESERVED_FORMAT_VERSION {
            return Err("reserved file version is not supported".into());
        }
        let stored = le_u32(raw, 16);
        let computed = crc32fast::hash(raw.get(..16).unwrap_or_default());
        if stored != computed {
            return Err(format!(
                "reserved file CRC {stored:#010x}, computed {computed:#010x}"
            ));
        }
        Ok(ReservedFile {
            end: Offset(le_u64(raw, 8)),
        })
    }
}

/// An acknowledged-end checkpoint: every batch of the segment below `position` (and so every
/// offset below `offset`) was durable, and may have been acknowledged, when it was written.
/// Recovery treats damage below it as corruption, never as a torn tail.
///
/// Slot layout (little-endian): magic `RNLA` u32, reserved u32 = 0, sequence u64, offset u64,
/// position u64, CRC-32 of bytes 0..32 u32, reserved u32 = 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AckedCheckpoint {
    /// Counts up with each checkpoint written in this segment; the slot is `sequence % 2`.
    pub sequence: u64,
    /// The offset after the last acknowledged batch.
    pub offset: Offset,
    /// The byte position just after that batch in the segment file.
    pub position: u64,
}

impl AckedCheckpoint {
    /// Which slot this checkpoint goes into: `sequence % 2`.
    pub(crate) fn slot(&self) -> usize {
        (self.sequence % 2) as usize
    }

    /// Writes this checkpoint into its slot of `block` (block 0 of a segment).
    pub(crate) fn encode_into(&self, block: &mut [u8]) {
        let [even, odd] = CHECKPOINT_SLOT_AT;
        let at = if self.slot() == 0 { even } else { odd };
        let mut slot = [0u8; CHECKPOINT_SLOT_LEN];
        put(&mut slot, 0, &CHECKPOINT_MAGIC.to_le_bytes());
        put(&mut slot, 8, &self.sequence.to_le_bytes());
        put(&mut slot, 16, &self.offset.0.to_le_bytes());
        put(&mut slot, 24, &self.position.to_le_bytes());
        let crc = crc32fast::hash(slot.get(..32).unwrap_or_default());
        put(&mut slot, 32, &crc.to_le_bytes());
        put(block, at, &slot);
    }

    /// The slot at `at` of `block`, if it holds a valid checkpoint.
    fn decode_slot(block: &[u8], at: usize) -> Option<AckedCheckpoint> {
        let raw = block.get(at..at + CHECKPOINT_SLOT_LEN)?;
        if le_u32(raw, 0) != CHECKPOINT_MAGIC || le_u32(raw, 32) != crc32fast::hash(raw.get(..32)?)
        {
            return None;
        }
        Some(AckedCheckpoint {
            sequence: le_u64(raw, 8),
            offset: Offset(le_u64(raw, 16)),
            position: le_u64(raw, 24),
        })
    }

    /// The newest valid checkpoint of block 0, if any. A slot that does not check (torn while
    /// it was written, or damaged) is passed over: the other holds the previous checkpoint.
    pub(crate) fn decode_newest(block: &[u8]) -> Option<AckedCheckpoint> {
        CHECKPOINT_SLOT_AT
            .iter()
            .filter_map(|&at| Self::decode_slot(block, at))
            .max_by_key(|c| c.sequence)
    }

    /// Both slots of block 0, each if it holds a valid checkpoint (index = slot).
    pub(crate) fn decode_slots(block: &[u8]) -> [Option<AckedCheckpoint>; 2] {
        CHECKPOINT_SLOT_AT.map(|at| Self::decode_slot(block, at))
    }
}

/// A suffix truncation under way: every record at and after `cut` goes. Written (atomically,
/// by rename) before any file is changed and removed after the last step, so that recovery,
/// finding it, completes the truncation: the log is the old one or the truncated one, never
/// a mix.
///
/// Layout (little-endian): magic `RNLC` u32, version u16 = 1, reserved u16 = 0, cut u64,
/// segment_base u64, position u64, CRC-32 of bytes 0..32 u32; zeros up to 4096.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TruncationRecord {
    /// The first offset removed: the log's next offset once the truncation is done.
    pub cut: Offset,
    /// Base offset of the segment holding the cut (the greatest base at or below `cut`): it
    /// is shortened; every segment with a greater base is deleted.
    pub segment_base: Offset,
    /// File position of the cut in that segment: the start of the batch whose base offset is
    /// `cut`, or the end of the segment's batches when `cut` is its next offset.
    pub position: u64,
}

impl TruncationRecord {
    /// Writes the record into the first [`TRUNCATE_FILE_LEN`] bytes of `block`.
    pub(crate) fn encode_into(&self, block: &mut [u8]) {
        put(block, 0, &TRUNCATE_MAGIC.to_le_bytes());
        put(block, 4, &TRUNCATE_FORMAT_VERSION.to_le_bytes());
        put(block, 6, &0u16.to_le_bytes());
        put(block, 8, &self.cut.0.to_le_bytes());
        put(block, 16, &self.segment_base.0.to_le_bytes());
        put(block, 24, &self.position.to_le_bytes());
        let crc = crc32fast::hash(block.get(..32).unwrap_or_default());
        put(block, 32, &crc.to_le_bytes());
    }

    /// Reads a record, or says what is wrong with it.
    pub(crate) fn decode(bytes: &[u8]) -> Result<TruncationRecord, String> {
        let raw = bytes.get(..TRUNCATE_FILE_LEN).ok_or_else(|| {
            format!(
                "truncation record needs {TRUNCATE_FILE_LEN} bytes, has {}",
                bytes.len()
            )
        })?;
        if le_u32(raw, 0) != TRUNCATE_MAGIC {
            return Err("truncation record magic is wrong".into());
        }
        if le_u16(raw, 4) != TRUNCATE_FORMAT_VERSION {
            return Err("truncation record version is not supported".into());
        }
        let stored = le_u32(raw, 32);
        let computed = crc32fast::hash(raw.get(..32).unwrap_or_default());
        if stored != computed {
            return Err(format!(
                "truncation record CRC {stored:#010x}, computed {computed:#010x}"
            ));
        }
        let record = TruncationRecord {
            cut: Offset(le_u64(raw, 8)),
            segment_base: Offset(le_u64(raw, 16)),
            position: le_u64(raw, 24),
        };
        if record.segment_base > record.cut || record.position < SEGMENT_DATA_START {
            return Err(format!(
                "truncation record cuts at offset {} in the segment at {}, byte {}: \
                 not a place in that segment",
                record.cut, record.segment_base, record.position
            ));
        }
        Ok(record)
    }
}

/// Encodes the start file: magic, version, reserved, start offset, CRC.
pub(crate) fn encode_start(start: Offset, block: &mut [u8]) {
    put(block, 0, &START_MAGIC.to_le_bytes());
    put(block, 4, &START_FORMAT_VERSION.to_le_bytes());
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
    if le_u16(raw, 4) != START_FORMAT_VERSION {
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
            version: SEGMENT_FORMAT_VERSION,
            base_offset: Offset(1234),
            created_ms: 1_700_000_000_000,
            write_bytes_max: 4 << 20,
            lost_before: 0,
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
    fn the_newest_valid_checkpoint_wins_and_a_damaged_slot_is_passed_over() {
        let mut block = vec![0u8; BLOCK_BYTES];
        assert_eq!(AckedCheckpoint::decode_newest(&block), None);
        let older = AckedCheckpoint {
            sequence: 6,
            offset: Offset(100),
            position: 8192,
        };
        let newer = AckedCheckpoint {
            sequence: 7,
            offset: Offset(150),
            position: 12288,
        };
        older.encode_into(&mut block);
        newer.encode_into(&mut block);
        assert_eq!(AckedCheckpoint::decode_newest(&block), Some(newer));
        // Every byte of the newer slot matters: damaged, the older one is used.
        let at = CHECKPOINT_SLOT_AT[1];
        for byte in 0..CHECKPOINT_SLOT_LEN - 4 {
            let mut damaged = block.clone();
            damaged[at + byte] ^= 0x01;
            assert_eq!(
                AckedCheckpoint::decode_newest(&damaged),
                Some(older),
                "byte {byte}"
            );
        }
        // The header sector is separate: writing checkpoints never changes the header.
        let header = SegmentHeader {
            version: SEGMENT_FORMAT_VERSION,
            base_offset: Offset(100),
            created_ms: 1,
            write_bytes_max: 1 << 20,
            lost_before: 0,
        };
        header.encode_into(&mut block);
        assert_eq!(SegmentHeader::decode(&block), Ok(header));
        assert_eq!(AckedCheckpoint::decode_newest(&block), Some(newer));
    }

    #[test]
    fn version_1_segments_are_still_read_and_unknown_versions_are_refused() {
        let mut block = vec![0u8; BLOCK_BYTES];
        let v1 = SegmentHeader {
            version: 1,
            base_offset: Offset(7),
            created_ms: 2,
            write_bytes_max: 4 << 20,
            lost_before: 0,
        };
        v1.encode_into(&mut block);
        assert_eq!(SegmentHeader::decode(&block), Ok(v1));
        let v3 = SegmentHeader { version: 3, ..v1 };
        v3.encode_into(&mut block);
        let error = SegmentHeader::decode(&block).expect_err("version 3 is unknown");
        assert!(error.contains("version 3"), "{error}");
    }

    #[test]
    fn lost_range_header_and_reserved_file_round_trip_and_are_checked() {
        // A segment preceded by a lost range names its length at bytes 32..40, under the CRC.
        let mut block = vec![0u8; BLOCK_BYTES];
        let header = SegmentHeader {
            version: SEGMENT_FORMAT_VERSION,
            base_offset: Offset(300),
            created_ms: 1,
            write_bytes_max: 1 << 20,
            lost_before: 166,
        };
        header.encode_into(&mut block);
        assert_eq!(block[32..40], 166u64.to_le_bytes());
        assert_eq!(SegmentHeader::decode(&block), Ok(header));
        block[33] ^= 1;
        assert!(
            SegmentHeader::decode(&block).is_err(),
            "the CRC covers the field"
        );
        let reserved = ReservedFile {
            end: Offset(65_636),
        };
        let mut block = vec![0u8; BLOCK_BYTES];
        reserved.encode_into(&mut block);
        assert_eq!(
            block[..16],
            [0x52, 0x4e, 0x4c, 0x52, 1, 0, 0, 0, 0x64, 0x00, 0x01, 0, 0, 0, 0, 0]
        );
        assert_eq!(ReservedFile::decode(&block), Ok(reserved));
        for byte in 0..RESERVED_FILE_LEN {
            let mut damaged = block.clone();
            damaged[byte] ^= 0x01;
            assert!(ReservedFile::decode(&damaged).is_err(), "byte {byte}");
        }
    }

    #[test]
    fn truncation_record_bytes_are_as_documented() {
        let record = TruncationRecord {
            cut: Offset(150),
            segment_base: Offset(100),
            position: 12288,
        };
        let mut block = vec![0u8; BLOCK_BYTES];
        record.encode_into(&mut block);
        let expected = vec![
            0x52, 0x4e, 0x4c, 0x43, 0x01, 0x00, 0x00, 0x00, // magic "RNLC", version 1
            0x96, 0, 0, 0, 0, 0, 0, 0, // cut 150
            0x64, 0, 0, 0, 0, 0, 0, 0, // segment_base 100
            0x00, 0x30, 0, 0, 0, 0, 0, 0, // position 12288
            0xc2, 0xf1, 0x40, 0xd3, // CRC 0xd340f1c2, as in docs/format/segment.md
        ];
        assert_eq!(crc32fast::hash(&expected[..32]), 0xd340_f1c2);
        assert_eq!(&block[..TRUNCATE_FILE_LEN], &expected[..]);
        assert!(block[TRUNCATE_FILE_LEN..].iter().all(|&b| b == 0));
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
            let _ = ReservedFile::decode(&bytes);
            let _ = AckedCheckpoint::decode_newest(&bytes);
            let _ = TruncationRecord::decode(&bytes);
        }

        #[test]
        fn truncation_record_round_trips_and_detects_damage(
            cut in 0u64..u64::MAX / 2, back in 0u64..1000, position in 4096u64..1 << 40,
            flip in 0usize..TRUNCATE_FILE_LEN,
        ) {
            let record = TruncationRecord {
                cut: Offset(cut),
                segment_base: Offset(cut.saturating_sub(back)),
                position,
            };
            let mut block = vec![0u8; BLOCK_BYTES];
            record.encode_into(&mut block);
            prop_assert_eq!(TruncationRecord::decode(&block), Ok(record));
            block[flip] ^= 0x10;
            prop_assert!(TruncationRecord::decode(&block).is_err());
        }

        #[test]
        fn start_round_trips(start: u64) {
            let mut block = vec![0u8; BLOCK_BYTES];
            encode_start(Offset(start), &mut block);
            prop_assert_eq!(decode_start(&block), Ok(Offset(start)));
        }
    }
}
