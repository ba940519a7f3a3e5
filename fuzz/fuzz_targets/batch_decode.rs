//! Fuzz target: the batch decoders never panic, whatever the bytes, and what they accept is
//! consistent.
//!
//! Every input goes through the four public ways bytes from a socket or a file become batches:
//! `BatchHeader::decode`, `BatchView::check`, `BatchView::validate` and `iter_batches`. A panic,
//! an out-of-bounds read (caught by the sanitizer) or a failed assertion is a bug in
//! `runnel-core`. The assertions are paired checks: whatever a decoder accepts must satisfy the
//! rules `docs/format/batch.md` states for a valid batch.
//!
//! CRCs stop almost every random mutation at the first checksum, so each input is tried twice:
//! as given, and "re-signed" with both CRCs recomputed, which lets mutations of the length
//! fields and of the rkyv payload reach the archive validation.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rkyv::util::AlignedVec;
use runnel_core::batch::{
    iter_batches, stamp, BatchHeader, BatchView, BATCH_ALIGNMENT, BATCH_HEADER_LEN,
};
use runnel_core::{Epoch, Limits, Offset, RecordRef};

// Field positions used to re-sign inputs; they are those drawn in docs/format/batch.md.
const PAYLOAD_LEN_AT: usize = 12;
const PAYLOAD_CRC_AT: usize = 72;
const HEADER_CRC_AT: usize = 76;

fuzz_target!(|data: &[u8]| {
    let bytes = aligned_copy(data);
    exercise(&bytes);
    if let Some(resigned) = resigned_copy(data) {
        if resigned[..] != data[..] {
            exercise(&resigned);
        }
    }
});

/// Batches always live in 16-byte aligned buffers (rkyv validates archives in place and
/// refuses unaligned ones), so the input is copied into one before decoding. Without this,
/// every archive would fail on alignment alone and the fuzzer would never get past it.
fn aligned_copy(data: &[u8]) -> AlignedVec<BATCH_ALIGNMENT> {
    let mut bytes = AlignedVec::<BATCH_ALIGNMENT>::with_capacity(data.len());
    bytes.extend_from_slice(data);
    bytes
}

/// A copy of `data` whose payload CRC (over the payload the header claims, clamped to the
/// input) and header CRC are correct. `None` for inputs shorter than a header.
fn resigned_copy(data: &[u8]) -> Option<AlignedVec<BATCH_ALIGNMENT>> {
    if data.len() < BATCH_HEADER_LEN {
        return None;
    }
    let mut bytes = aligned_copy(data);
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[PAYLOAD_LEN_AT..PAYLOAD_LEN_AT + 4]);
    let payload_len = u32::from_le_bytes(raw) as usize;
    let payload_end = BATCH_HEADER_LEN
        .saturating_add(payload_len)
        .min(bytes.len());
    let payload_crc = crc32fast::hash(&bytes[BATCH_HEADER_LEN..payload_end]);
    bytes[PAYLOAD_CRC_AT..PAYLOAD_CRC_AT + 4].copy_from_slice(&payload_crc.to_le_bytes());
    let header_crc = crc32fast::hash(&bytes[..HEADER_CRC_AT]);
    bytes[HEADER_CRC_AT..HEADER_CRC_AT + 4].copy_from_slice(&header_crc.to_le_bytes());
    Some(bytes)
}

fn exercise(bytes: &[u8]) {
    let header = decode_header(bytes);
    check_batch(bytes, header);
    validate_batch(bytes, header);
    walk_batches(bytes);
}

/// `BatchHeader::decode`: an accepted header obeys the header rules and re-encodes to exactly
/// the bytes it was decoded from (every one of the 80 bytes is a field, a constant or a CRC).
fn decode_header(bytes: &[u8]) -> Option<BatchHeader> {
    let header = BatchHeader::decode(bytes).ok()?;
    assert_eq!(
        header.encode()[..],
        bytes[..BATCH_HEADER_LEN],
        "decode/encode round trip"
    );
    let batch_len = header.batch_len as usize;
    assert_eq!(batch_len % BATCH_ALIGNMENT, 0);
    assert!(batch_len >= BATCH_HEADER_LEN + header.payload_len as usize);
    assert!(batch_len < BATCH_HEADER_LEN + header.payload_len as usize + BATCH_ALIGNMENT);
    assert!(header.record_count >= 1);
    assert!(header.first_timestamp_ms <= header.max_timestamp_ms);
    assert!(header.last_offset() < header.next_offset());
    Some(header)
}

/// `BatchView::check`: an accepted batch is exactly `batch_len` bytes of the input. Its archive
/// is not validated yet, so `records()` may fail, but it must not panic.
fn check_batch(bytes: &[u8], header: Option<BatchHeader>) {
    let Ok(view) = BatchView::check(bytes) else {
        return;
    };
    assert_eq!(
        Some(*view.header()),
        header,
        "check accepted what decode refused"
    );
    assert_eq!(view.as_bytes().len(), view.header().batch_len as usize);
    assert_eq!(view.as_bytes(), &bytes[..view.as_bytes().len()]);
    if let Ok(records) = view.records() {
        for record in records {
            touch(record);
        }
    }
}

/// `BatchView::validate`: an accepted batch holds as many records as its header says, each
/// within the limits, with the header's first and max timestamps; stamping it changes only
/// the base offset, the epoch and the header CRC, and keeps it valid.
fn validate_batch(bytes: &[u8], header: Option<BatchHeader>) {
    let limits = Limits::DEFAULT;
    let Ok(view) = BatchView::validate(bytes, &limits) else {
        return;
    };
    let header = header.expect("validate accepted what decode refused");
    assert_eq!(*view.header(), header);
    assert!(
        BatchView::check(bytes).is_ok(),
        "validate accepted what check refused"
    );
    assert!(u64::from(header.batch_len) <= limits.batch_bytes_max);
    let records = view.records().expect("a validated archive reads");
    assert_eq!(records.len(), header.record_count as usize);
    let mut max_timestamp_ms = i64::MIN;
    for (index, record) in records.enumerate() {
        assert!(record.size_bytes() <= limits.record_bytes_max);
        if index == 0 {
            assert_eq!(record.timestamp_ms(), header.first_timestamp_ms);
        }
        max_timestamp_ms = max_timestamp_ms.max(record.timestamp_ms());
        touch(record);
    }
    assert_eq!(max_timestamp_ms, header.max_timestamp_ms);

    let mut stamped = aligned_copy(view.as_bytes());
    let original = aligned_copy(view.as_bytes());
    assert!(
        stamp(&mut stamped, Offset(u64::MAX), Epoch(1)).is_err(),
        "a base offset that overflows with the record count is refused"
    );
    assert_eq!(
        stamped[..],
        original[..],
        "a refused stamp leaves the bytes alone"
    );
    // Any base offset that cannot overflow: derive both from the input so runs differ.
    let base_offset = Offset(header.epoch.0 >> 1);
    let epoch = Epoch(header.base_offset.0);
    let restamped = stamp(&mut stamped, base_offset, epoch).expect("a valid batch stamps");
    assert_eq!(restamped.base_offset, base_offset);
    assert_eq!(restamped.epoch, epoch);
    assert_eq!(
        stamped[BATCH_HEADER_LEN..],
        original[BATCH_HEADER_LEN..],
        "payload untouched"
    );
    assert_eq!(
        stamped[..16],
        original[..16],
        "magic to payload_len untouched"
    );
    assert_eq!(
        stamped[32..HEADER_CRC_AT],
        original[32..HEADER_CRC_AT],
        "record_count to payload CRC untouched"
    );
    let revalidated = BatchView::validate(&stamped, &limits).expect("a stamped batch stays valid");
    assert_eq!(
        BatchHeader {
            base_offset,
            epoch,
            ..header
        },
        *revalidated.header()
    );
}

/// `iter_batches`: yields batches back to back, stops after the first error, and never reads
/// past the input.
fn walk_batches(bytes: &[u8]) {
    let mut consumed = 0usize;
    let mut failed = false;
    for result in iter_batches(bytes) {
        assert!(!failed, "iter_batches went on after an error");
        match result {
            Ok(view) => {
                assert_eq!(
                    view.as_bytes(),
                    &bytes[consumed..consumed + view.as_bytes().len()]
                );
                consumed += view.as_bytes().len();
            }
            Err(_) => failed = true,
        }
    }
    assert!(consumed <= bytes.len());
}

/// Reads every byte of a record (so the sanitizer sees any out-of-bounds access) and checks
/// that the owned copy has the same size as the record read in place.
fn touch(record: RecordRef<'_>) {
    let owned = record.to_record();
    assert_eq!(owned.size_bytes(), record.size_bytes());
    assert_eq!(owned.key.as_deref(), record.key());
    assert_eq!(owned.value, record.value());
    assert_eq!(owned.headers.len(), record.headers().count());
}
