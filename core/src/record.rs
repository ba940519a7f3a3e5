//! The record: what a producer writes and a consumer reads.
//!
//! Records travel inside batches as an rkyv archive of `Vec<Record>`; a consumer reads them in
//! place through [`RecordRef`] without copying or deserializing.

use rkyv::{Archive, Deserialize, Serialize};

/// One record: an optional partition key, an opaque value, an event time and small headers.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// Partition key; records without one are spread across shards by the producer.
    pub key: Option<Vec<u8>>,
    /// The payload, opaque to the log.
    pub value: Vec<u8>,
    /// Event time in milliseconds since the Unix epoch; [`Record::TIMESTAMP_UNSET`] (0) in a
    /// record built without one, which the SDK's producers replace with their clock when they
    /// send it.
    pub timestamp_ms: i64,
    /// Small named attributes, in the order the producer gave them.
    pub headers: Vec<RecordHeader>,
}

/// One named attribute of a record.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordHeader {
    /// Attribute name.
    pub name: String,
    /// Attribute value.
    pub value: Vec<u8>,
}

impl Record {
    /// The timestamp of a record built without one. A producer sending such a record stamps
    /// it with its own clock, so a stored record is never dated 1970 by omission (retention
    /// would take it for expired). An event that really happened at the epoch cannot be told
    /// apart, and gets the producer's clock too.
    pub const TIMESTAMP_UNSET: i64 = 0;

    /// A record with a value, no key, no headers, and no timestamp yet: the producer that
    /// sends it stamps it with its clock ([`Record::at`] or [`Record::with_timestamp`] give it
    /// an event time of its own).
    pub fn new(value: impl Into<Vec<u8>>) -> Self {
        Record::at(value, Record::TIMESTAMP_UNSET)
    }

    /// A record with a value and an event time (milliseconds since the Unix epoch), no key
    /// and no headers.
    pub fn at(value: impl Into<Vec<u8>>, timestamp_ms: i64) -> Self {
        Record {
            key: None,
            value: value.into(),
            timestamp_ms,
            headers: Vec::new(),
        }
    }

    /// The same record with an event time (milliseconds since the Unix epoch).
    pub fn with_timestamp(mut self, timestamp_ms: i64) -> Self {
        self.timestamp_ms = timestamp_ms;
        self
    }

    /// Whether the record carries a timestamp (anything but [`Record::TIMESTAMP_UNSET`]).
    pub fn has_timestamp(&self) -> bool {
        self.timestamp_ms != Record::TIMESTAMP_UNSET
    }

    /// Gives a record without a timestamp the time `now_ms` (the producer's clock); a record
    /// with one keeps it.
    pub fn stamp_if_unset(&mut self, now_ms: i64) {
        if !self.has_timestamp() {
            self.timestamp_ms = now_ms;
        }
    }

    /// The same record with a partition key.
    pub fn with_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Bytes this record counts against `record_bytes_max`: key, value, header names and values.
    pub fn size_bytes(&self) -> u64 {
        BorrowedRecord::from(self).size_bytes()
    }
}

/// A record to encode, borrowed from the caller: what a producer needs to write a record
/// without the caller building an owned [`Record`] (no allocation per record). Headers are
/// borrowed as owned [`RecordHeader`]s, so a set of headers built once can go with every
/// record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BorrowedRecord<'a> {
    /// Partition key; records without one are spread across shards by the producer.
    pub key: Option<&'a [u8]>,
    /// The payload.
    pub value: &'a [u8],
    /// Event time in milliseconds since the Unix epoch, or [`Record::TIMESTAMP_UNSET`] for the
    /// producer's clock.
    pub timestamp_ms: i64,
    /// Small named attributes.
    pub headers: &'a [RecordHeader],
}

impl<'a> BorrowedRecord<'a> {
    /// A value with no key, no headers and no timestamp yet (the producer stamps it).
    pub fn new(value: &'a [u8]) -> Self {
        BorrowedRecord {
            key: None,
            value,
            timestamp_ms: Record::TIMESTAMP_UNSET,
            headers: &[],
        }
    }

    /// The same record with a partition key.
    pub fn with_key(mut self, key: &'a [u8]) -> Self {
        self.key = Some(key);
        self
    }

    /// The same record with an event time (milliseconds since the Unix epoch).
    pub fn with_timestamp(mut self, timestamp_ms: i64) -> Self {
        self.timestamp_ms = timestamp_ms;
        self
    }

    /// The same record with headers.
    pub fn with_headers(mut self, headers: &'a [RecordHeader]) -> Self {
        self.headers = headers;
        self
    }

    /// Bytes this record counts against `record_bytes_max`: key, value, header names and values.
    pub fn size_bytes(&self) -> u64 {
        let headers: usize = self
            .headers
            .iter()
            .map(|h| h.name.len() + h.value.len())
            .sum();
        (self.key.map_or(0, <[u8]>::len) + self.value.len() + headers) as u64
    }
}

impl<'a> From<&'a Record> for BorrowedRecord<'a> {
    fn from(record: &'a Record) -> Self {
        BorrowedRecord {
            key: record.key.as_deref(),
            value: &record.value,
            timestamp_ms: record.timestamp_ms,
            headers: &record.headers,
        }
    }
}

/// A record read in place from a batch's bytes.
#[derive(Clone, Copy)]
pub struct RecordRef<'a> {
    archived: &'a ArchivedRecord,
}

impl<'a> RecordRef<'a> {
    pub(crate) fn new(archived: &'a ArchivedRecord) -> Self {
        RecordRef { archived }
    }

    /// The partition key, if the record has one.
    pub fn key(&self) -> Option<&'a [u8]> {
        self.archived.key.as_ref().map(|k| k.as_slice())
    }

    /// The value bytes.
    pub fn value(&self) -> &'a [u8] {
        self.archived.value.as_slice()
    }

    /// Event time in milliseconds since the Unix epoch.
    pub fn timestamp_ms(&self) -> i64 {
        self.archived.timestamp_ms.to_native()
    }

    /// The headers as `(name, value)` pairs.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        self.archived
            .headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_slice()))
    }

    /// Bytes this record counts against `record_bytes_max`.
    pub fn size_bytes(&self) -> u64 {
        let headers: usize = self.headers().map(|(n, v)| n.len() + v.len()).sum();
        (self.key().map_or(0, <[u8]>::len) + self.value().len() + headers) as u64
    }

    /// An owned copy (allocates; for tests and tools, not the data path).
    pub fn to_record(&self) -> Record {
        Record {
            key: self.key().map(<[u8]>::to_vec),
            value: self.value().to_vec(),
            timestamp_ms: self.timestamp_ms(),
            headers: self
                .headers()
                .map(|(name, value)| RecordHeader {
                    name: name.to_owned(),
                    value: value.to_vec(),
                })
                .collect(),
        }
    }
}

impl std::fmt::Debug for RecordRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordRef")
            .field("key", &self.key())
            .field("value_len", &self.value().len())
            .field("timestamp_ms", &self.timestamp_ms())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record built without a timestamp is marked unset and takes the producer's clock once;
    /// an explicit event time is never overwritten.
    #[test]
    fn only_records_without_a_timestamp_are_stamped() {
        let mut unset = Record::new(b"v".to_vec());
        assert!(!unset.has_timestamp());
        unset.stamp_if_unset(1_700_000_000_000);
        assert_eq!(unset.timestamp_ms, 1_700_000_000_000);
        unset.stamp_if_unset(1_800_000_000_000);
        assert_eq!(unset.timestamp_ms, 1_700_000_000_000, "stamped once");

        let mut explicit = Record::new(b"v".to_vec()).with_timestamp(42);
        explicit.stamp_if_unset(1_700_000_000_000);
        assert_eq!(explicit.timestamp_ms, 42);
        assert_eq!(Record::at(b"v".to_vec(), 42), explicit);
    }
}
