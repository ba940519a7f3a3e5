use super::*;
use crate::record::RecordHeader;
use proptest::prelude::*;

/// Records with keys, values, timestamps and headers of any content (shared with the
/// encoder's tests).
pub(super) fn record_strategy() -> impl Strategy<Value = Record> {
    (
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
        proptest::collection::vec(any::<u8>(), 0..300),
        any::<i64>(),
        proptest::collection::vec(
            ("[a-z]{0,8}", proptest::collection::vec(any::<u8>(), 0..8)),
            0..3,
        ),
    )
        .prop_map(|(key, value, timestamp_ms, headers)| Record {
            key,
            value,
            timestamp_ms,
            headers: headers
                .into_iter()
                .map(|(name, value)| RecordHeader { name, value })
                .collect(),
        })
}

fn build(records: &[Record]) -> AlignedVec<BATCH_ALIGNMENT> {
    let mut builder = BatchBuilder::new().producer(ProducerStamp {
        producer_id: 9,
        sequence: 77,
    });
    for r in records {
        builder.push(r.clone());
    }
    builder.finish(&Limits::DEFAULT).expect("encodes")
}

#[test]
fn empty_batch_is_refused() {
    assert_eq!(
        BatchBuilder::new().finish(&Limits::DEFAULT).err(),
        Some(BatchError::Empty)
    );
}

#[test]
fn oversized_record_is_refused_when_built_and_when_validated() {
    let small = Limits {
        record_bytes_max: 100,
        ..Limits::DEFAULT
    };
    let mut builder = BatchBuilder::new();
    builder.push(Record::at(vec![1u8; 50], 1));
    builder.push(Record::at(vec![1u8; 101], 2));
    assert!(matches!(
        builder.finish(&small),
        Err(BatchError::RecordTooLarge {
            index: 1,
            size: 101,
            max: 100
        })
    ));
    let bytes = builder
        .finish(&Limits::DEFAULT)
        .expect("fits default limits");
    assert!(matches!(
        BatchView::validate(&bytes, &small),
        Err(BatchError::RecordTooLarge { index: 1, .. })
    ));
    let tiny_batches = Limits {
        batch_bytes_max: 128,
        ..Limits::DEFAULT
    };
    assert!(matches!(
        BatchView::validate(&bytes, &tiny_batches),
        Err(BatchError::BatchTooLarge { .. })
    ));
}

#[test]
fn header_that_lies_about_its_records_is_refused() {
    let bytes = build(&[Record::at("a", 5), Record::at("b", 9)]);
    let mut header = BatchHeader::decode(&bytes).expect("valid");
    header.record_count = 3;
    let mut forged = bytes.clone();
    forged[..BATCH_HEADER_LEN].copy_from_slice(&header.encode());
    assert!(BatchView::check(&forged).is_ok(), "CRCs are consistent");
    assert!(matches!(
        BatchView::validate(&forged, &Limits::DEFAULT),
        Err(BatchError::HeaderMismatch { .. })
    ));
    let mut header = BatchHeader::decode(&bytes).expect("valid");
    header.max_timestamp_ms = 8;
    let mut forged = bytes.clone();
    forged[..BATCH_HEADER_LEN].copy_from_slice(&header.encode());
    assert!(matches!(
        BatchView::validate(&forged, &Limits::DEFAULT),
        Err(BatchError::HeaderMismatch { .. })
    ));
}

#[test]
fn iter_batches_walks_back_to_back_batches_and_stops_at_damage() {
    let mut packed = Vec::new();
    for i in 0..3 {
        packed.extend_from_slice(&build(&[Record::at(vec![i; 10], i64::from(i))]));
    }
    let offsets: Vec<_> = iter_batches(&packed)
        .map(|b| b.map(|v| v.record_count()))
        .collect();
    assert_eq!(offsets, vec![Ok(1), Ok(1), Ok(1)]);
    let second_start = BatchHeader::decode(&packed).expect("first").batch_len as usize;
    packed[second_start + BATCH_HEADER_LEN + 2] ^= 0xff;
    let results: Vec<_> = iter_batches(&packed).collect();
    assert_eq!(results.len(), 2);
    assert!(matches!(
        results[1],
        Err(BatchError::PayloadChecksumMismatch { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn round_trip_and_stamp(records in proptest::collection::vec(record_strategy(), 1..20), base: u32, epoch: u64) {
        let mut bytes = build(&records);
        prop_assert!(bytes.len().is_multiple_of(BATCH_ALIGNMENT));
        let payload_crc = BatchView::validate(&bytes, &Limits::DEFAULT).expect("valid").header().payload_crc;
        let stamped = stamp(&mut bytes, Offset(u64::from(base)), Epoch(epoch)).expect("stamps");
        prop_assert_eq!(stamped.payload_crc, payload_crc);
        let view = BatchView::validate(&bytes, &Limits::DEFAULT).expect("still valid after stamping");
        prop_assert_eq!(view.base_offset(), Offset(u64::from(base)));
        prop_assert_eq!(view.header().epoch, Epoch(epoch));
        prop_assert_eq!(view.last_offset(), Offset(u64::from(base) + records.len() as u64 - 1));
        prop_assert_eq!(view.header().producer, ProducerStamp { producer_id: 9, sequence: 77 });
        let decoded: Vec<Record> = view.records().expect("archive").map(|r| r.to_record()).collect();
        prop_assert_eq!(decoded, records);
    }

    #[test]
    fn any_single_byte_change_is_detected(records in proptest::collection::vec(record_strategy(), 1..5), at: prop::sample::Index, flip in 1u8..=255) {
        let mut bytes = build(&records);
        let at = at.index(bytes.len());
        bytes[at] ^= flip;
        prop_assert!(BatchView::check(&bytes).is_err(), "change at byte {} went unnoticed", at);
    }

    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = BatchHeader::decode(&bytes);
        let _ = BatchView::check(&bytes);
        let _ = BatchView::validate(&bytes, &Limits::DEFAULT);
        let _ = iter_batches(&bytes).count();
    }

    #[test]
    fn decoders_never_panic_on_damaged_batches(records in proptest::collection::vec(record_strategy(), 1..5), damage in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut bytes = build(&records).to_vec();
        for (at, value) in damage {
            let at = at.index(bytes.len());
            bytes[at] = value;
        }
        // Re-sign the header so the damage reaches the payload and archive checks too.
        if let Some(mut header) = BatchView::check(&bytes).err().and_then(|_| BatchHeader::decode(&bytes).ok()) {
            header.payload_crc = crc32fast::hash(bytes.get(BATCH_HEADER_LEN..BATCH_HEADER_LEN + header.payload_len as usize).unwrap_or_default());
            bytes[..BATCH_HEADER_LEN].copy_from_slice(&header.encode());
        }
        if let Ok(view) = BatchView::validate(&bytes, &Limits::DEFAULT) {
            for record in view.records().expect("validated") {
                let _ = (record.key(), record.value(), record.timestamp_ms(), record.headers().count());
            }
        }
    }
}

/// The batch's bytes split at `cuts` (positions in any order, repeats and ends allowed: empty
/// chunks are legal).
fn split(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut cuts: Vec<usize> = cuts.iter().map(|&cut| cut.min(bytes.len())).collect();
    cuts.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for cut in cuts.into_iter().chain([bytes.len()]) {
        chunks.push(bytes[start..cut].to_vec());
        start = cut;
    }
    chunks
}

/// Refuses the record at `refused` (a stand-in for the server's key check).
fn refuse_at(refused: usize) -> impl FnMut(usize, RecordRef<'_>) -> Result<(), BatchError> {
    move |index, _| match index == refused {
        true => Err(BatchError::HeaderMismatch {
            reason: format!("record {index} refused by the caller"),
        }),
        false => Ok(()),
    }
}

/// The error without what differs between two copies of the same bytes (rkyv's messages
/// name addresses).
fn without_addresses(error: BatchError) -> BatchError {
    match error {
        BatchError::MalformedPayload { .. } => BatchError::MalformedPayload {
            reason: String::new(),
        },
        other => other,
    }
}

/// What ingress makes of `bytes` joined: the header and the batch's bytes, or the error.
fn contiguous(
    bytes: &[u8],
    limits: &Limits,
    refused: usize,
) -> Result<(BatchHeader, Vec<u8>), BatchError> {
    let mut aligned = AlignedBytes::new();
    aligned.extend_from_slice(bytes);
    BatchView::validate_with(&aligned, limits, refuse_at(refused))
        .map(|view| (*view.header(), view.as_bytes().to_vec()))
        .map_err(without_addresses)
}

/// What ingress makes of `bytes` received in `chunks`: checked over the chunks, copied once
/// into an aligned buffer (as into the log's tail buffer) and validated there.
fn chunked(
    chunks: &[Vec<u8>],
    limits: &Limits,
    refused: usize,
) -> Result<(BatchHeader, Vec<u8>), BatchError> {
    let checked = CheckedChunks::check(chunks, limits)?;
    let mut target = AlignedBytes::new();
    target.resize(checked.len(), 0xEE);
    let view = checked
        .copy_into(&mut target, limits, refuse_at(refused))
        .map_err(without_addresses)?;
    Ok((*view.header(), view.as_bytes().to_vec()))
}

/// Every way of cutting a small batch into two and three chunks (so every cut inside the
/// header, at its end, inside the payload and in the padding) gives what the joined bytes give.
#[test]
fn chunked_validation_agrees_at_every_split_point() {
    let record = Record {
        key: Some(b"k".to_vec()),
        value: vec![7; 21],
        timestamp_ms: 5,
        headers: Vec::new(),
    };
    let bytes = build(std::slice::from_ref(&record)).to_vec();
    let expected = contiguous(&bytes, &Limits::DEFAULT, usize::MAX);
    assert!(expected.is_ok());
    for first in 0..=bytes.len() {
        for second in first..=bytes.len() {
            let chunks = split(&bytes, &[first, second]);
            assert_eq!(
                chunked(&chunks, &Limits::DEFAULT, usize::MAX),
                expected,
                "cuts at {first} and {second}"
            );
        }
    }
    // Refused by the caller's check, and a payload CRC mismatch, at every single cut.
    let mut damaged = bytes.clone();
    damaged[BATCH_HEADER_LEN + 3] ^= 1;
    for cut in 0..=bytes.len() {
        assert_eq!(
            chunked(&split(&bytes, &[cut]), &Limits::DEFAULT, 0),
            contiguous(&bytes, &Limits::DEFAULT, 0)
        );
        assert_eq!(
            chunked(&split(&damaged, &[cut]), &Limits::DEFAULT, usize::MAX),
            contiguous(&damaged, &Limits::DEFAULT, usize::MAX)
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Chunked validation accepts and refuses exactly what contiguous validation does, with the
    /// same error, for any split (one cut always inside or at the end of the header), damaged
    /// bytes (re-signed or not, so the damage also reaches the payload, archive and record
    /// checks), truncated or trailing bytes, tight limits and a refusing caller check.
    #[test]
    fn chunked_validation_agrees_with_contiguous(
        records in proptest::collection::vec(record_strategy(), 1..8),
        header_cut in 0usize..=BATCH_HEADER_LEN,
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        damage in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
        resign: bool,
        length_change in -40i64..40,
        tight_limits: bool,
        refused in 0usize..16,
    ) {
        let mut bytes = build(&records).to_vec();
        for (at, value) in damage {
            let at = at.index(bytes.len());
            bytes[at] = value;
        }
        if resign {
            if let Ok(mut header) = BatchHeader::decode(&bytes) {
                let payload_end = (BATCH_HEADER_LEN + header.payload_len as usize).min(bytes.len());
                header.payload_crc = crc32fast::hash(&bytes[BATCH_HEADER_LEN..payload_end]);
                bytes[..BATCH_HEADER_LEN].copy_from_slice(&header.encode());
            }
        }
        let len = (bytes.len() as i64 + length_change).max(0) as usize;
        bytes.resize(len, 0);
        let limits = match tight_limits {
            true => Limits { batch_records_max: 3, record_bytes_max: 200, batch_bytes_max: 1024 },
            false => Limits::DEFAULT,
        };
        let mut positions: Vec<usize> = cuts.iter().map(|cut| cut.index(bytes.len() + 1)).collect();
        positions.push(header_cut);
        let chunks = split(&bytes, &positions);
        prop_assert_eq!(chunked(&chunks, &limits, refused), contiguous(&bytes, &limits, refused));
    }
}

/// `stamp_producer` changes bytes 56..72 and the header CRC only, and the batch stays valid.
#[test]
fn stamp_producer_rewrites_only_the_stamp_and_the_header_crc() {
    let original = build(&[
        Record::at(b"one".to_vec(), 5),
        Record::at(b"two".to_vec(), 6),
    ]);
    let mut stamped = original.clone();
    let stamp = ProducerStamp {
        producer_id: 0x0102_0304_0506_0708,
        sequence: 99,
    };
    stamp_producer(&mut stamped, stamp).expect("stamped");
    let view = BatchView::validate(&stamped, &Limits::DEFAULT).expect("still valid");
    assert_eq!(view.header().producer, stamp);
    for (index, (before, after)) in original.iter().zip(stamped.iter()).enumerate() {
        if before != after {
            assert!(
                (56..72).contains(&index) || (76..80).contains(&index),
                "byte {index} changed"
            );
        }
    }
    let mut short = vec![0_u8; 40];
    assert!(stamp_producer(&mut short, stamp).is_err());
}
