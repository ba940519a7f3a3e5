//! [`BatchEncoder`]: encodes records into one batch as they come, straight into a reusable
//! buffer, from borrowed parts ([`BorrowedRecord`]): no allocation per record once its
//! buffers have grown to the batch's size.
//!
//! It writes exactly the bytes of [`BatchBuilder::finish`](super::BatchBuilder::finish)
//! (rkyv's layout of a `Vec<Record>`, `docs/format/batch.md`): rkyv's serializer writes each
//! record's out-of-line data (key bytes, value bytes, the headers' bytes and their array) in
//! record order, then the array of archived records, then the root. The encoder writes the
//! out-of-line data when a record is pushed, remembers where it went (a [`RecordSlot`] of
//! positions and lengths, no pointer into the caller's memory), and writes the array of
//! archived records and the root from those slots at [`BatchEncoder::finish`]. A test checks
//! the bytes against `BatchBuilder`'s for random records.

use rkyv::munge::munge;
use rkyv::place::Place;
use rkyv::rancor::{self, Fallible};
use rkyv::ser::Serializer;
use rkyv::vec::{ArchivedVec, VecResolver};
use rkyv::{Archive, Serialize};

use super::{
    align_batch_len, AlignedBytes, BatchHeader, ProducerStamp, BATCH_ALIGNMENT, BATCH_HEADER_LEN,
};
use crate::error::BatchError;
use crate::ids::{Epoch, Offset};
use crate::limits::Limits;
use crate::record::{ArchivedRecord, ArchivedRecordHeader, BorrowedRecord, RecordHeader};

/// Where a byte string of a record went in the buffer: it archives as the `ArchivedVec<u8>`
/// pointing there.
#[derive(Debug, Clone, Copy)]
struct BytesAt {
    pos: usize,
    len: usize,
}

impl Archive for BytesAt {
    type Archived = ArchivedVec<u8>;
    type Resolver = ();

    fn resolve(&self, (): (), out: Place<ArchivedVec<u8>>) {
        ArchivedVec::resolve_from_len(self.len, VecResolver::from_pos(self.pos), out);
    }
}

/// Where one record's parts went: it archives as the record's `ArchivedRecord`.
#[derive(Debug, Clone, Copy)]
struct RecordSlot {
    key: Option<BytesAt>,
    value: BytesAt,
    timestamp_ms: i64,
    /// The array of archived headers (`len` headers at `pos`).
    headers: BytesAt,
}

impl Archive for RecordSlot {
    type Archived = ArchivedRecord;
    type Resolver = ();

    fn resolve(&self, (): (), out: Place<ArchivedRecord>) {
        munge!(let ArchivedRecord { key, value, timestamp_ms, headers } = out);
        self.key.resolve(self.key.map(|_| ()), key);
        self.value.resolve((), value);
        self.timestamp_ms.resolve((), timestamp_ms);
        ArchivedVec::<ArchivedRecordHeader>::resolve_from_len(
            self.headers.len,
            VecResolver::from_pos(self.headers.pos),
            headers,
        );
    }
}

impl<S: Fallible + ?Sized> Serialize<S> for RecordSlot {
    /// The slot's data is in the buffer already: nothing more to write before the array.
    fn serialize(&self, _: &mut S) -> Result<(), S::Error> {
        Ok(())
    }
}

/// Encodes records into one batch as they are pushed; [`Self::finish`] hands the batch out
/// and leaves the encoder empty for the next one. Reuse one encoder (and hand finished
/// buffers back with [`Self::recycle`]) to encode without allocating per record.
#[derive(Debug)]
pub struct BatchEncoder {
    limits: Limits,
    producer: ProducerStamp,
    /// The header's room, then every pushed record's out-of-line data.
    bytes: AlignedBytes,
    slots: Vec<RecordSlot>,
    size_bytes: u64,
    first_timestamp_ms: i64,
    max_timestamp_ms: i64,
}

impl BatchEncoder {
    /// An empty encoder whose records and batches must keep `limits`.
    pub fn new(limits: Limits) -> BatchEncoder {
        BatchEncoder {
            limits,
            producer: ProducerStamp::default(),
            bytes: AlignedBytes::new(),
            slots: Vec::new(),
            size_bytes: 0,
            first_timestamp_ms: 0,
            max_timestamp_ms: i64::MIN,
        }
    }

    /// Sets the producer id and sequence for idempotent appends, for the batches to come.
    pub fn set_producer(&mut self, producer: ProducerStamp) {
        self.producer = producer;
    }

    /// Records pushed since the last batch.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no record was pushed since the last batch.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Sum of the pushed records' sizes (key + value + headers).
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// Bytes written so far (header room and out-of-line data; the archived records and the
    /// root, about 40 bytes per record, are added by [`Self::finish`]).
    pub fn written_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Gives the encoder a buffer to write its next batch into (e.g. one [`Self::finish`]
    /// returned earlier, once sent), so that it need not grow a new one. Ignored unless the
    /// encoder is empty and its own buffer is smaller.
    pub fn recycle(&mut self, mut buffer: AlignedBytes) {
        if self.slots.is_empty() && buffer.capacity() > self.bytes.capacity() {
            buffer.clear();
            self.bytes = buffer;
        }
    }

    /// Adds `record` to the batch: checks it against `record_bytes_max` and the batch's
    /// record count against `batch_records_max`, and writes its bytes. A refused record
    /// leaves the batch as it was. The timestamp is taken as given (a producer stamps unset
    /// ones first).
    pub fn push(&mut self, record: BorrowedRecord<'_>) -> Result<(), BatchError> {
        let size_bytes = record.size_bytes();
        self.limits.check_record(self.slots.len(), size_bytes)?;
        if self.slots.len() as u64 >= self.limits.batch_records_max {
            return Err(BatchError::TooManyRecords {
                count: self.slots.len() as u64 + 1,
                max: self.limits.batch_records_max,
            });
        }
        if self.bytes.is_empty() {
            self.bytes.extend_from_slice(&[0_u8; BATCH_HEADER_LEN]);
        }
        let start = self.bytes.len();
        // In the order rkyv's serializer writes a record: key, value, headers.
        let key = record.key.map(|key| self.write_bytes(key));
        let value = self.write_bytes(record.value);
        let headers = match self.write_headers(record.headers) {
            Ok(headers) => headers,
            Err(error) => {
                self.bytes.resize(start, 0);
                return Err(error);
            }
        };
        self.slots.push(RecordSlot {
            key,
            value,
            timestamp_ms: record.timestamp_ms,
            headers,
        });
        if self.slots.len() == 1 {
            self.first_timestamp_ms = record.timestamp_ms;
        }
        self.max_timestamp_ms = self.max_timestamp_ms.max(record.timestamp_ms);
        self.size_bytes += size_bytes;
        Ok(())
    }

    /// Writes a byte string as rkyv does (alignment 1, no padding).
    fn write_bytes(&mut self, bytes: &[u8]) -> BytesAt {
        let pos = self.bytes.len();
        self.bytes.extend_from_slice(bytes);
        BytesAt {
            pos,
            len: bytes.len(),
        }
    }

    /// Writes the headers' bytes and their array of archived headers, as rkyv does (which
    /// aligns the array even when it is empty).
    fn write_headers(&mut self, headers: &[RecordHeader]) -> Result<BytesAt, BatchError> {
        if headers.is_empty() {
            let aligned = self
                .bytes
                .len()
                .next_multiple_of(align_of::<ArchivedRecordHeader>());
            self.bytes.resize(aligned, 0);
            return Ok(BytesAt {
                pos: aligned,
                len: 0,
            });
        }
        let bytes = &mut self.bytes;
        rkyv::util::with_arena(|arena| {
            let mut serializer = Serializer::new(&mut *bytes, arena.acquire(), ());
            ArchivedVec::<ArchivedRecordHeader>::serialize_from_slice(
                headers,
                rancor::Strategy::<_, rancor::Error>::wrap(&mut serializer),
            )
        })
        .map_err(|error| BatchError::MalformedPayload {
            reason: format!("encoding headers failed: {error}"),
        })?;
        // The array is the last thing written.
        let array_bytes = headers.len() * size_of::<ArchivedRecordHeader>();
        Ok(BytesAt {
            pos: self.bytes.len() - array_bytes,
            len: headers.len(),
        })
    }

    /// The batch of the records pushed since the last one (base offset 0, epoch 0: the server
    /// stamps both), checked against `batch_bytes_max`; the encoder is left empty. On an
    /// error the records are dropped too.
    pub fn finish(&mut self) -> Result<AlignedBytes, BatchError> {
        let result = self.encode();
        self.slots.clear();
        self.size_bytes = 0;
        self.first_timestamp_ms = 0;
        self.max_timestamp_ms = i64::MIN;
        match result {
            Ok(()) => Ok(std::mem::take(&mut self.bytes)),
            Err(error) => {
                self.bytes.clear();
                Err(error)
            }
        }
    }

    fn encode(&mut self) -> Result<(), BatchError> {
        if self.slots.is_empty() {
            return Err(BatchError::Empty);
        }
        let record_count = self.slots.len();
        let written =
            rkyv::api::high::to_bytes_in::<_, rancor::Error>(&self.slots, &mut self.bytes);
        written.map_err(|e| BatchError::MalformedPayload {
            reason: format!("encoding failed: {e}"),
        })?;
        let payload_len = self.bytes.len() - BATCH_HEADER_LEN;
        let batch_len = align_batch_len(self.bytes.len());
        if batch_len as u64 > self.limits.batch_bytes_max || payload_len > u32::MAX as usize - 64 {
            return Err(BatchError::BatchTooLarge {
                size: batch_len as u64,
                max: self.limits.batch_bytes_max,
            });
        }
        let payload_crc = crc32fast::hash(self.bytes.get(BATCH_HEADER_LEN..).unwrap_or_default());
        self.bytes.resize(batch_len, 0);
        let header = BatchHeader {
            batch_len: batch_len as u32,
            payload_len: payload_len as u32,
            base_offset: Offset(0),
            epoch: Epoch(0),
            record_count: record_count as u32,
            first_timestamp_ms: self.first_timestamp_ms,
            max_timestamp_ms: self.max_timestamp_ms,
            producer: self.producer,
            payload_crc,
        };
        assert!(batch_len.is_multiple_of(BATCH_ALIGNMENT) && batch_len >= BATCH_HEADER_LEN);
        self.bytes[..BATCH_HEADER_LEN].copy_from_slice(&header.encode());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::tests::record_strategy;
    use crate::batch::{BatchBuilder, BatchView};
    use crate::record::Record;
    use proptest::prelude::*;

    proptest! {
        /// The encoder writes exactly the bytes `BatchBuilder` writes (rkyv's own
        /// serialization of the records), batch after batch from one reused encoder.
        #[test]
        fn encodes_the_same_bytes_as_the_builder(
            batches in proptest::collection::vec(
                proptest::collection::vec(record_strategy(), 1..20), 1..4),
        ) {
            let mut encoder = BatchEncoder::new(Limits::DEFAULT);
            for records in batches {
                let mut builder = BatchBuilder::new();
                for record in &records {
                    encoder.push(BorrowedRecord::from(record)).expect("fits");
                    builder.push(record.clone());
                }
                let expected = builder.finish(&Limits::DEFAULT).expect("fits");
                let encoded = encoder.finish().expect("fits");
                prop_assert_eq!(encoded.as_slice(), expected.as_slice());
                let view = BatchView::validate(&encoded, &Limits::DEFAULT).expect("valid");
                let decoded: Vec<Record> = view.records().expect("archive").map(|r| r.to_record()).collect();
                prop_assert_eq!(decoded, records);
                encoder.recycle(encoded);
            }
        }
    }

    /// Limits are checked as records are pushed; a refused record leaves the batch intact,
    /// and an empty batch is refused.
    #[test]
    fn limits_are_checked_on_push() {
        let limits = Limits {
            record_bytes_max: 10,
            batch_bytes_max: 1 << 20,
            batch_records_max: 2,
        };
        let mut encoder = BatchEncoder::new(limits);
        assert!(matches!(encoder.finish(), Err(BatchError::Empty)));
        let small = Record::at(vec![1; 10], 5);
        let large = Record::at(vec![1; 11], 5);
        encoder.push((&small).into()).expect("fits");
        assert!(matches!(
            encoder.push((&large).into()),
            Err(BatchError::RecordTooLarge { index: 1, .. })
        ));
        encoder.push((&small).into()).expect("fits");
        assert!(matches!(
            encoder.push((&small).into()),
            Err(BatchError::TooManyRecords { count: 3, max: 2 })
        ));
        let batch = encoder.finish().expect("two records");
        let view = BatchView::validate(&batch, &limits).expect("valid");
        assert_eq!(view.record_count(), 2);
        assert!(encoder.is_empty());
    }

    /// A batch over `batch_bytes_max` is refused at finish and the encoder is empty after.
    #[test]
    fn oversized_batches_are_refused() {
        let limits = Limits {
            record_bytes_max: 1_000,
            batch_bytes_max: 256,
            batch_records_max: 100,
        };
        let mut encoder = BatchEncoder::new(limits);
        encoder
            .push((&Record::at(vec![0; 1_000], 1)).into())
            .expect("the record fits");
        assert!(matches!(
            encoder.finish(),
            Err(BatchError::BatchTooLarge { max: 256, .. })
        ));
        assert!(encoder.is_empty());
        encoder
            .push((&Record::at(vec![0; 10], 1)).into())
            .expect("fits");
        assert!(encoder.finish().is_ok());
    }
}
