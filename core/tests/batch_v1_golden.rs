//! Compatibility of batch format version 1: the bytes in `golden/batch_v1.bin` were written by
//! this encoder when the format was defined. Any change to the header layout, the rkyv archive
//! of `Record` (field order, rkyv version or features) or the padding breaks this test, and
//! must come with a new format version instead (see docs/format/batch.md).
//!
//! To regenerate after a deliberate version bump: `RUNNEL_WRITE_GOLDEN=1 cargo test -p
//! runnel-core --test batch_v1_golden`, and keep the old file for the old version's test.

use runnel_core::batch::{stamp, AlignedBytes};
use runnel_core::{
    BatchBuilder, BatchView, Epoch, Limits, Offset, ProducerStamp, Record, RecordHeader,
};

const GOLDEN: &[u8] = include_bytes!("golden/batch_v1.bin");

fn records() -> Vec<Record> {
    vec![
        Record {
            key: Some(b"user-42".to_vec()),
            value: br#"{"temperature":21.5}"#.to_vec(),
            timestamp_ms: 1_763_726_400_000,
            headers: vec![RecordHeader {
                name: "content-type".into(),
                value: b"application/json".to_vec(),
            }],
        },
        Record {
            key: None,
            value: b"plain bytes".to_vec(),
            timestamp_ms: 1_763_726_400_123,
            headers: Vec::new(),
        },
    ]
}

fn encode() -> AlignedBytes {
    let mut builder = BatchBuilder::new().producer(ProducerStamp {
        producer_id: 0x0102_0304_0506_0708,
        sequence: 99,
    });
    for record in records() {
        builder.push(record);
    }
    let mut bytes = builder.finish(&Limits::DEFAULT).expect("encodes");
    stamp(&mut bytes, Offset(42), Epoch(7)).expect("stamps");
    bytes
}

#[test]
fn version_1_bytes_are_stable() {
    let bytes = encode();
    if std::env::var_os("RUNNEL_WRITE_GOLDEN").is_some() {
        std::fs::write(
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/batch_v1.bin"),
            &bytes,
        )
        .expect("write golden file");
    }
    assert_eq!(
        bytes.as_slice(),
        GOLDEN,
        "the encoder no longer writes format version 1 bytes"
    );
}

#[test]
fn version_1_bytes_still_decode() {
    let mut aligned = AlignedBytes::new();
    aligned.extend_from_slice(GOLDEN);
    let view = BatchView::validate(&aligned, &Limits::DEFAULT).expect("golden batch validates");
    assert_eq!(view.base_offset(), Offset(42));
    assert_eq!(view.header().epoch, Epoch(7));
    assert_eq!(view.header().producer.sequence, 99);
    let decoded: Vec<Record> = view
        .records()
        .expect("records")
        .map(|r| r.to_record())
        .collect();
    assert_eq!(decoded, records());
}
