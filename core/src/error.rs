//! Operating errors of the core types: bad names, bad ids and bad batch bytes.
//!
//! Each variant carries what a caller needs to act on it or to tell a person what was wrong.

use thiserror::Error;

/// A name or identifier that does not parse or is not allowed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum IdError {
    /// A stream name broke a naming rule.
    #[error("invalid stream name {name:?}: {reason}")]
    InvalidStreamName {
        /// The name as given (possibly shortened for display).
        name: String,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// A record id was not of the form `<shard>-<offset>`.
    #[error("invalid record id {text:?}: expected <shard>-<offset>, both unsigned integers")]
    InvalidRecordId {
        /// The text as given.
        text: String,
    },
    /// Two key ranges could not be merged because they are not adjacent.
    #[error("key ranges {first} and {second} are not adjacent")]
    RangesNotAdjacent {
        /// The lower range as given.
        first: String,
        /// The upper range as given.
        second: String,
    },
    /// A key range holds fewer hashes than the parts asked for.
    #[error("key range {range} is too small to split into {parts} parts")]
    RangeTooSmall {
        /// The range.
        range: String,
        /// The parts asked for.
        parts: u64,
    },
    /// A split into zero ranges, or into more than the limit.
    #[error("a key range split needs between 1 and {max} ranges, got {count}")]
    InvalidRangeCount {
        /// The count asked for.
        count: u64,
        /// The most ranges a split may produce.
        max: u64,
    },
}

/// Why a batch was rejected, when built or when validated.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum BatchError {
    /// Fewer bytes than a header, or than the header says the batch holds.
    #[error("batch truncated: need {needed} bytes, have {available}")]
    Truncated {
        /// Bytes the batch needs.
        needed: u64,
        /// Bytes there are.
        available: u64,
    },
    /// The first four bytes are not the batch magic.
    #[error("not a batch: magic {found:#010x}, expected {expected:#010x}")]
    BadMagic {
        /// The value found.
        found: u32,
        /// The batch magic.
        expected: u32,
    },
    /// A format version this build does not read.
    #[error("unsupported batch format version {found} (this build reads {supported})")]
    UnsupportedVersion {
        /// The version found.
        found: u8,
        /// The version this build reads.
        supported: u8,
    },
    /// A checksum algorithm id this build does not know.
    #[error("unknown checksum algorithm id {found}")]
    UnknownChecksum {
        /// The id found.
        found: u8,
    },
    /// Flag bits this build does not understand are set.
    #[error("unsupported batch flags {found:#06x}")]
    UnsupportedFlags {
        /// The flags found.
        found: u16,
    },
    /// The header CRC does not match the header bytes.
    #[error("batch header checksum mismatch: stored {expected:#010x}, computed {actual:#010x}")]
    HeaderChecksumMismatch {
        /// CRC stored in the header.
        expected: u32,
        /// CRC computed over the header bytes.
        actual: u32,
    },
    /// The payload CRC does not match the payload bytes.
    #[error("batch payload checksum mismatch: stored {expected:#010x}, computed {actual:#010x}")]
    PayloadChecksumMismatch {
        /// CRC stored in the header.
        expected: u32,
        /// CRC computed over the payload bytes.
        actual: u32,
    },
    /// The header's lengths contradict each other or the limits.
    #[error("batch length fields are inconsistent: {reason}")]
    BadLength {
        /// Which rule was broken.
        reason: String,
    },
    /// The payload is not a valid archive of records.
    #[error("batch payload is malformed: {reason}")]
    MalformedPayload {
        /// What the validator said.
        reason: String,
    },
    /// The header disagrees with the records it describes.
    #[error("batch header disagrees with its records: {reason}")]
    HeaderMismatch {
        /// Which field disagrees.
        reason: String,
    },
    /// A batch must hold at least one record.
    #[error("a batch must hold at least one record")]
    Empty,
    /// One record is larger than the configured limit.
    #[error("record {index} is {size} bytes, over the limit of {max} bytes")]
    RecordTooLarge {
        /// Index of the record within the batch.
        index: usize,
        /// Its encoded size (key + value + headers).
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The whole batch is larger than the configured limit.
    #[error("batch is {size} bytes, over the limit of {max} bytes")]
    BatchTooLarge {
        /// Its size in bytes.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// Too many records in one batch.
    #[error("batch holds {count} records, over the limit of {max}")]
    TooManyRecords {
        /// Records in the batch.
        count: u64,
        /// The limit.
        max: u64,
    },
}
