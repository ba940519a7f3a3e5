//! The batch: the one unit of bytes from producer to disk to consumer.
//!
//! ```text
//! +--------------------+----------------------------------+---------+
//! | header (80 bytes)  | payload: rkyv archive of records | padding |
//! +--------------------+----------------------------------+---------+
//! ```
//! Drawn byte by byte in `docs/format/batch.md`. The producer encodes once; the server
//! validates once ([`BatchView::validate`], or for a batch received in chunks
//! [`CheckedChunks::check`] and then [`CheckedChunks::copy_into`] its one copy) and then only
//! stamps the base offset and epoch into the header ([`stamp`]), which rewrites the header CRC
//! but leaves the payload and its CRC untouched. Every later reader checks both CRCs ([`BatchView::check`]) and reads records in
//! place ([`BatchView::records`]).

use rkyv::rancor;
use rkyv::util::AlignedVec;

/// A growable byte buffer aligned for batches (rkyv archives need 16-byte alignment).
pub type AlignedBytes = AlignedVec<BATCH_ALIGNMENT>;
use rkyv::vec::ArchivedVec;

use crate::error::BatchError;
use crate::ids::{Epoch, Offset};
use crate::limits::Limits;
use crate::record::{ArchivedRecord, Record, RecordRef};

mod encoder;
pub use encoder::BatchEncoder;

/// `"RNLB"` read as a little-endian u32.
pub const BATCH_MAGIC: u32 = u32::from_le_bytes(*b"RNLB");
/// The batch format version this build writes and reads.
pub const BATCH_FORMAT_VERSION: u8 = 1;
/// Checksum algorithm id of CRC-32 (IEEE 802.3, as computed by crc32fast).
pub const CHECKSUM_CRC32_IEEE: u8 = 1;
/// Length of the fixed header.
pub const BATCH_HEADER_LEN: usize = 80;
/// Batches start and end on this alignment (rkyv's archive alignment).
pub const BATCH_ALIGNMENT: usize = 16;

// Field positions within the header; see docs/format/batch.md.
const MAGIC_AT: usize = 0;
const VERSION_AT: usize = 4;
const CHECKSUM_ID_AT: usize = 5;
const FLAGS_AT: usize = 6;
const BATCH_LEN_AT: usize = 8;
const PAYLOAD_LEN_AT: usize = 12;
const BASE_OFFSET_AT: usize = 16;
const EPOCH_AT: usize = 24;
const RECORD_COUNT_AT: usize = 32;
const RESERVED_AT: usize = 36;
const FIRST_TIMESTAMP_AT: usize = 40;
const MAX_TIMESTAMP_AT: usize = 48;
const PRODUCER_ID_AT: usize = 56;
const PRODUCER_SEQUENCE_AT: usize = 64;
const PAYLOAD_CRC_AT: usize = 72;
const HEADER_CRC_AT: usize = 76;
const _: () = assert!(HEADER_CRC_AT + 4 == BATCH_HEADER_LEN);
const _: () = assert!(BATCH_HEADER_LEN.is_multiple_of(BATCH_ALIGNMENT));

/// Rounds `len` up to the batch alignment.
pub const fn align_batch_len(len: usize) -> usize {
    (len + BATCH_ALIGNMENT - 1) & !(BATCH_ALIGNMENT - 1)
}

/// Who produced a batch, for idempotent retries: producer id and the sequence number of the
/// batch's first record. Zero means "not idempotent".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProducerStamp {
    /// The producer's id, assigned by the server.
    pub producer_id: u64,
    /// Sequence number of the first record of the batch.
    pub sequence: u64,
}

/// The decoded fixed header of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Total bytes: header + payload + padding; a multiple of 16.
    pub batch_len: u32,
    /// Bytes of the rkyv payload, without padding.
    pub payload_len: u32,
    /// Offset of the first record (stamped by the server).
    pub base_offset: Offset,
    /// Sequencer epoch that stamped the batch.
    pub epoch: Epoch,
    /// Number of records, at least 1.
    pub record_count: u32,
    /// Timestamp of the first record.
    pub first_timestamp_ms: i64,
    /// Largest record timestamp.
    pub max_timestamp_ms: i64,
    /// Producer id and sequence for idempotence.
    pub producer: ProducerStamp,
    /// CRC-32 of the payload bytes (padding excluded).
    pub payload_crc: u32,
}

fn read_u16(bytes: &[u8], at: usize) -> u16 {
    let mut raw = [0u8; 2];
    if let Some(src) = bytes.get(at..at + 2) {
        raw.copy_from_slice(src);
    }
    u16::from_le_bytes(raw)
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut raw = [0u8; 4];
    if let Some(src) = bytes.get(at..at + 4) {
        raw.copy_from_slice(src);
    }
    u32::from_le_bytes(raw)
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    if let Some(src) = bytes.get(at..at + 8) {
        raw.copy_from_slice(src);
    }
    u64::from_le_bytes(raw)
}

fn write_bytes(out: &mut [u8; BATCH_HEADER_LEN], at: usize, value: &[u8]) {
    out[at..at + value.len()].copy_from_slice(value);
}

impl BatchHeader {
    /// Offset of the last record of the batch.
    pub fn last_offset(&self) -> Offset {
        Offset((self.base_offset.0 + u64::from(self.record_count)).saturating_sub(1))
    }

    /// The offset after the batch's last record.
    pub fn next_offset(&self) -> Offset {
        Offset(self.base_offset.0 + u64::from(self.record_count))
    }

    /// Reads and checks the fixed header at the start of `bytes`: magic, version, checksum id,
    /// flags, header CRC and the consistency of the length fields. The payload is not read.
    pub fn decode(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        let raw = bytes.get(..BATCH_HEADER_LEN).ok_or(BatchError::Truncated {
            needed: BATCH_HEADER_LEN as u64,
            available: bytes.len() as u64,
        })?;
        let magic = read_u32(raw, MAGIC_AT);
        if magic != BATCH_MAGIC {
            return Err(BatchError::BadMagic {
                found: magic,
                expected: BATCH_MAGIC,
            });
        }
        // Version and checksum id first: another version may place its CRC elsewhere, and
        // must be reported as unsupported, not as corruption.
        let version = raw.get(VERSION_AT).copied().unwrap_or_default();
        if version != BATCH_FORMAT_VERSION {
            return Err(BatchError::UnsupportedVersion {
                found: version,
                supported: BATCH_FORMAT_VERSION,
            });
        }
        let checksum = raw.get(CHECKSUM_ID_AT).copied().unwrap_or_default();
        if checksum != CHECKSUM_CRC32_IEEE {
            return Err(BatchError::UnknownChecksum { found: checksum });
        }
        let stored = read_u32(raw, HEADER_CRC_AT);
        let computed = crc32fast::hash(raw.get(..HEADER_CRC_AT).unwrap_or_default());
        if stored != computed {
            return Err(BatchError::HeaderChecksumMismatch {
                expected: stored,
                actual: computed,
            });
        }
        let flags = read_u16(raw, FLAGS_AT);
        if flags != 0 {
            return Err(BatchError::UnsupportedFlags { found: flags });
        }
        let header = BatchHeader {
            batch_len: read_u32(raw, BATCH_LEN_AT),
            payload_len: read_u32(raw, PAYLOAD_LEN_AT),
            base_offset: Offset(read_u64(raw, BASE_OFFSET_AT)),
            epoch: Epoch(read_u64(raw, EPOCH_AT)),
            record_count: read_u32(raw, RECORD_COUNT_AT),
            first_timestamp_ms: read_u64(raw, FIRST_TIMESTAMP_AT) as i64,
            max_timestamp_ms: read_u64(raw, MAX_TIMESTAMP_AT) as i64,
            producer: ProducerStamp {
                producer_id: read_u64(raw, PRODUCER_ID_AT),
                sequence: read_u64(raw, PRODUCER_SEQUENCE_AT),
            },
            payload_crc: read_u32(raw, PAYLOAD_CRC_AT),
        };
        let reserved = read_u32(raw, RESERVED_AT);
        let expected_len = align_batch_len(BATCH_HEADER_LEN + header.payload_len as usize);
        let bad = |reason: String| Err(BatchError::BadLength { reason });
        if reserved != 0 {
            return bad(format!("reserved field is {reserved:#x}, must be 0"));
        }
        if header.batch_len as usize != expected_len {
            return bad(format!(
                "batch_len {} but a payload of {} bytes needs {}",
                header.batch_len, header.payload_len, expected_len
            ));
        }
        if header.record_count == 0 {
            return Err(BatchError::Empty);
        }
        if header
            .base_offset
            .0
            .checked_add(u64::from(header.record_count))
            .is_none()
        {
            return bad(format!(
                "base offset {} + {} records overflows",
                header.base_offset, header.record_count
            ));
        }
        if header.first_timestamp_ms > header.max_timestamp_ms {
            return Err(BatchError::HeaderMismatch {
                reason: format!(
                    "first timestamp {} is after max timestamp {}",
                    header.first_timestamp_ms, header.max_timestamp_ms
                ),
            });
        }
        Ok(header)
    }

    /// Encodes the header, computing its CRC.
    pub fn encode(&self) -> [u8; BATCH_HEADER_LEN] {
        let mut out = [0u8; BATCH_HEADER_LEN];
        write_bytes(&mut out, MAGIC_AT, &BATCH_MAGIC.to_le_bytes());
        write_bytes(&mut out, VERSION_AT, &[BATCH_FORMAT_VERSION]);
        write_bytes(&mut out, CHECKSUM_ID_AT, &[CHECKSUM_CRC32_IEEE]);
        write_bytes(&mut out, FLAGS_AT, &0u16.to_le_bytes());
        write_bytes(&mut out, BATCH_LEN_AT, &self.batch_len.to_le_bytes());
        write_bytes(&mut out, PAYLOAD_LEN_AT, &self.payload_len.to_le_bytes());
        write_bytes(&mut out, BASE_OFFSET_AT, &self.base_offset.0.to_le_bytes());
        write_bytes(&mut out, EPOCH_AT, &self.epoch.0.to_le_bytes());
        write_bytes(&mut out, RECORD_COUNT_AT, &self.record_count.to_le_bytes());
        write_bytes(&mut out, RESERVED_AT, &0u32.to_le_bytes());
        write_bytes(
            &mut out,
            FIRST_TIMESTAMP_AT,
            &self.first_timestamp_ms.to_le_bytes(),
        );
        write_bytes(
            &mut out,
            MAX_TIMESTAMP_AT,
            &self.max_timestamp_ms.to_le_bytes(),
        );
        write_bytes(
            &mut out,
            PRODUCER_ID_AT,
            &self.producer.producer_id.to_le_bytes(),
        );
        write_bytes(
            &mut out,
            PRODUCER_SEQUENCE_AT,
            &self.producer.sequence.to_le_bytes(),
        );
        write_bytes(&mut out, PAYLOAD_CRC_AT, &self.payload_crc.to_le_bytes());
        let crc = crc32fast::hash(&out[..HEADER_CRC_AT]);
        write_bytes(&mut out, HEADER_CRC_AT, &crc.to_le_bytes());
        out
    }
}

/// Stamps a server-assigned base offset and epoch into an already validated batch, rewriting
/// only the header (and its CRC). The payload and its CRC are untouched.
pub fn stamp(
    batch: &mut [u8],
    base_offset: Offset,
    epoch: Epoch,
) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::decode(batch)?;
    stamp_header(batch, header, base_offset, epoch)
}

/// [`stamp`] for a copy of a batch whose header is already decoded (from a [`BatchView`]):
/// `header` must be the header of `batch`.
pub fn stamp_header(
    batch: &mut [u8],
    mut header: BatchHeader,
    base_offset: Offset,
    epoch: Epoch,
) -> Result<BatchHeader, BatchError> {
    header.base_offset = base_offset;
    header.epoch = epoch;
    if base_offset
        .0
        .checked_add(u64::from(header.record_count))
        .is_none()
    {
        return Err(BatchError::BadLength {
            reason: format!(
                "base offset {base_offset} + {} records overflows",
                header.record_count
            ),
        });
    }
    write_header(batch, &header)?;
    Ok(header)
}

/// Writes `header` (encoded, with its CRC) over the first bytes of `batch`.
fn write_header(batch: &mut [u8], header: &BatchHeader) -> Result<(), BatchError> {
    let encoded = header.encode();
    let head = batch
        .get_mut(..BATCH_HEADER_LEN)
        .ok_or(BatchError::Truncated {
            needed: BATCH_HEADER_LEN as u64,
            available: 0,
        })?;
    head.copy_from_slice(&encoded);
    Ok(())
}

/// Stamps an idempotent producer's id and sequence into an encoded batch, rewriting only the
/// header (and its CRC), as an SDK does before each send of a batch whose stamp it assigns
/// when it sends it. The payload and its CRC are untouched.
pub fn stamp_producer(batch: &mut [u8], producer: ProducerStamp) -> Result<(), BatchError> {
    let mut header = BatchHeader::decode(batch)?;
    header.producer = producer;
    write_header(batch, &header)
}

/// Refuses a batch whose header announces more bytes or records than `limits` allow.
fn check_batch_limits(header: &BatchHeader, limits: &Limits) -> Result<(), BatchError> {
    if u64::from(header.batch_len) > limits.batch_bytes_max {
        return Err(BatchError::BatchTooLarge {
            size: u64::from(header.batch_len),
            max: limits.batch_bytes_max,
        });
    }
    if u64::from(header.record_count) > limits.batch_records_max {
        return Err(BatchError::TooManyRecords {
            count: u64::from(header.record_count),
            max: limits.batch_records_max,
        });
    }
    Ok(())
}

/// A checked view of one batch's bytes (exactly `batch_len` of them).
#[derive(Clone, Copy)]
pub struct BatchView<'a> {
    header: BatchHeader,
    bytes: &'a [u8],
}

impl<'a> BatchView<'a> {
    /// Checks the batch at the start of `bytes`: header, lengths, zero padding and payload CRC.
    /// Bytes after the batch are ignored. Does not validate the archive; [`Self::records`] does.
    pub fn check(bytes: &'a [u8]) -> Result<BatchView<'a>, BatchError> {
        Self::check_decoded(BatchHeader::decode(bytes)?, bytes)
    }

    /// [`Self::check`] with the header already decoded (and its CRC checked) from `bytes`.
    fn check_decoded(header: BatchHeader, bytes: &'a [u8]) -> Result<BatchView<'a>, BatchError> {
        let batch_len = header.batch_len as usize;
        let bytes = bytes.get(..batch_len).ok_or(BatchError::Truncated {
            needed: batch_len as u64,
            available: bytes.len() as u64,
        })?;
        let payload_end = BATCH_HEADER_LEN + header.payload_len as usize;
        let payload = bytes.get(BATCH_HEADER_LEN..payload_end).unwrap_or_default();
        let padding = bytes.get(payload_end..).unwrap_or_default();
        if padding.iter().any(|&b| b != 0) {
            return Err(BatchError::BadLength {
                reason: "padding after the payload is not zero".into(),
            });
        }
        let computed = crc32fast::hash(payload);
        if computed != header.payload_crc {
            return Err(BatchError::PayloadChecksumMismatch {
                expected: header.payload_crc,
                actual: computed,
            });
        }
        Ok(BatchView { header, bytes })
    }

    /// Full ingress validation: [`Self::check`], then the archive (rkyv bytecheck), the record
    /// count, the timestamps in the header, and the limits.
    pub fn validate(bytes: &'a [u8], limits: &Limits) -> Result<BatchView<'a>, BatchError> {
        Self::validate_with(bytes, limits, |_, _| Ok(()))
    }

    /// [`Self::validate`], also handing each record to `check` during the one pass over the
    /// archive (for checks of the caller's, such as keys against a shard's range), so the
    /// archive is validated once.
    pub fn validate_with<E: From<BatchError>>(
        bytes: &'a [u8],
        limits: &Limits,
        check: impl FnMut(usize, RecordRef<'a>) -> Result<(), E>,
    ) -> Result<BatchView<'a>, E> {
        let header = BatchHeader::decode(bytes)?;
        check_batch_limits(&header, limits)?;
        Self::check_decoded(header, bytes)?.validate_records(limits, check)
    }

    /// The ingress checks after the CRCs (shared by [`Self::validate_with`] and
    /// [`CheckedChunks::copy_into`]): the archive (rkyv bytecheck), the record count, each
    /// record against the limits and `check`, and the timestamps in the header.
    fn validate_records<E: From<BatchError>>(
        self,
        limits: &Limits,
        mut check: impl FnMut(usize, RecordRef<'a>) -> Result<(), E>,
    ) -> Result<BatchView<'a>, E> {
        let view = self;
        let header = view.header;
        let records = view.archived()?;
        if records.len() != header.record_count as usize {
            return Err(E::from(BatchError::HeaderMismatch {
                reason: format!(
                    "header says {} records, payload holds {}",
                    header.record_count,
                    records.len()
                ),
            }));
        }
        let mut max_timestamp_ms = i64::MIN;
        for (index, archived) in records.iter().enumerate() {
            let record = RecordRef::new(archived);
            limits.check_record(index, record.size_bytes())?;
            max_timestamp_ms = max_timestamp_ms.max(record.timestamp_ms());
            check(index, record)?;
        }
        let first_timestamp_ms = records
            .first()
            .map(|r| r.timestamp_ms.to_native())
            .unwrap_or_default();
        if first_timestamp_ms != header.first_timestamp_ms
            || max_timestamp_ms != header.max_timestamp_ms
        {
            return Err(E::from(BatchError::HeaderMismatch {
                reason: format!(
                    "header timestamps first={} max={} but records give first={} max={}",
                    header.first_timestamp_ms,
                    header.max_timestamp_ms,
                    first_timestamp_ms,
                    max_timestamp_ms
                ),
            }));
        }
        Ok(view)
    }

    /// The decoded header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The whole batch, header to padding.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Offset of the first record.
    pub fn base_offset(&self) -> Offset {
        self.header.base_offset
    }

    /// Offset of the last record.
    pub fn last_offset(&self) -> Offset {
        self.header.last_offset()
    }

    /// Number of records.
    pub fn record_count(&self) -> u32 {
        self.header.record_count
    }

    fn archived(&self) -> Result<&'a ArchivedVec<ArchivedRecord>, BatchError> {
        let payload_end = BATCH_HEADER_LEN + self.header.payload_len as usize;
        let payload = self
            .bytes
            .get(BATCH_HEADER_LEN..payload_end)
            .unwrap_or_default();
        rkyv::access::<ArchivedVec<ArchivedRecord>, rancor::Error>(payload).map_err(|e| {
            BatchError::MalformedPayload {
                reason: e.to_string(),
            }
        })
    }

    /// The records, read in place. Validates the archive (bytecheck) on each call, so a
    /// corrupt payload that somehow passed its CRC is still an error and never a panic.
    pub fn records(&self) -> Result<impl ExactSizeIterator<Item = RecordRef<'a>> + 'a, BatchError> {
        Ok(self.archived()?.iter().map(RecordRef::new))
    }
}

impl std::fmt::Debug for BatchView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchView")
            .field("header", &self.header)
            .finish()
    }
}

/// Collects records and encodes them into one batch.
#[derive(Debug, Default)]
pub struct BatchBuilder {
    records: Vec<Record>,
    producer: ProducerStamp,
    size_bytes: u64,
}

impl BatchBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the producer id and sequence for idempotent appends.
    pub fn producer(mut self, producer: ProducerStamp) -> Self {
        self.producer = producer;
        self
    }

    /// Adds a record.
    pub fn push(&mut self, record: Record) {
        self.size_bytes += record.size_bytes();
        self.records.push(record);
    }

    /// Records added so far.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no record was added.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Sum of the records' sizes (key + value + headers): a lower bound of the batch size.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// Encodes the records into a batch (base offset 0, epoch 0: the server stamps both),
    /// checking the limits first.
    pub fn finish(&self, limits: &Limits) -> Result<AlignedVec<BATCH_ALIGNMENT>, BatchError> {
        let first = self.records.first().ok_or(BatchError::Empty)?;
        if self.records.len() as u64 > limits.batch_records_max {
            return Err(BatchError::TooManyRecords {
                count: self.records.len() as u64,
                max: limits.batch_records_max,
            });
        }
        for (index, record) in self.records.iter().enumerate() {
            limits.check_record(index, record.size_bytes())?;
        }
        let mut out = AlignedVec::<BATCH_ALIGNMENT>::with_capacity(
            BATCH_HEADER_LEN + self.size_bytes as usize + 64 * self.records.len() + 64,
        );
        out.extend_from_slice(&[0u8; BATCH_HEADER_LEN]);
        let mut out = rkyv::api::high::to_bytes_in::<_, rancor::Error>(&self.records, out)
            .map_err(|e| BatchError::MalformedPayload {
                reason: format!("encoding failed: {e}"),
            })?;
        let payload_len = out.len() - BATCH_HEADER_LEN;
        let batch_len = align_batch_len(out.len());
        if batch_len as u64 > limits.batch_bytes_max || payload_len > u32::MAX as usize - 64 {
            return Err(BatchError::BatchTooLarge {
                size: batch_len as u64,
                max: limits.batch_bytes_max,
            });
        }
        let payload_crc = crc32fast::hash(&out[BATCH_HEADER_LEN..]);
        out.resize(batch_len, 0);
        let header = BatchHeader {
            batch_len: batch_len as u32,
            payload_len: payload_len as u32,
            base_offset: Offset(0),
            epoch: Epoch(0),
            record_count: self.records.len() as u32,
            first_timestamp_ms: first.timestamp_ms,
            max_timestamp_ms: self
                .records
                .iter()
                .map(|r| r.timestamp_ms)
                .max()
                .unwrap_or(first.timestamp_ms),
            producer: self.producer,
            payload_crc,
        };
        out[..BATCH_HEADER_LEN].copy_from_slice(&header.encode());
        Ok(out)
    }

    /// Empties the builder for reuse, keeping its capacity.
    pub fn clear(&mut self) {
        self.records.clear();
        self.size_bytes = 0;
    }
}

/// Walks the batches packed back to back in `bytes` (as a log read returns them), checking
/// each one; stops at the first error.
pub fn iter_batches(bytes: &[u8]) -> impl Iterator<Item = Result<BatchView<'_>, BatchError>> + '_ {
    let mut rest = bytes;
    let mut failed = false;
    std::iter::from_fn(move || {
        if rest.is_empty() || failed {
            return None;
        }
        match BatchView::check(rest) {
            Ok(view) => {
                rest = rest.get(view.as_bytes().len()..).unwrap_or_default();
                Some(Ok(view))
            }
            Err(e) => {
                failed = true;
                Some(Err(e))
            }
        }
    })
}

mod chunks;
pub use chunks::CheckedChunks;

#[cfg(test)]
mod tests;
