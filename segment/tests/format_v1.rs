//! Compatibility with segment format version 1 (before the acknowledged-end checkpoints).
//!
//! `fixtures/v1-log/` was written by the version 1 code (commit 0b7eb59) with real files: 12
//! durable batches of 3 records from `SplitMix64::new(1)` and `random_batch(.., 3, 900,
//! 1_700_000_000_000 + i * 10)`, a 16 KiB segment size (one sealed segment with its index
//! file, and an active one) and no preallocation. This build must read every record of it
//! unchanged, continue its offsets, and write what follows in version 2.

mod common;

use std::path::{Path, PathBuf};

use common::{payload, random_batch, read_all, run};
use runnel_core::{Epoch, Offset};
use runnel_segment::storage::fault::SplitMix64;
use runnel_segment::{DmaStorage, LogConfig, LogError, ShardLog};

fn fixture_copy() -> (tempfile::TempDir, PathBuf) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-log");
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join("log");
    std::fs::create_dir_all(&dir).expect("dir");
    for entry in std::fs::read_dir(&source).expect("fixture") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), dir.join(entry.file_name())).expect("copy");
    }
    (temp, dir)
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 16 << 10,
        write_buffer_bytes: 16 << 10,
        index_interval_bytes: 2 << 10,
        ..LogConfig::default()
    }
}

fn expected_payloads() -> Vec<Vec<u8>> {
    let mut random = SplitMix64::new(1);
    (0..12)
        .map(|i| {
            payload(&random_batch(
                &mut random,
                3,
                900,
                1_700_000_000_000 + i * 10,
            ))
        })
        .collect()
}

fn version_of(path: &Path) -> u16 {
    let bytes = std::fs::read(path).expect("segment");
    u16::from_le_bytes([bytes[4], bytes[5]])
}

#[test]
fn a_version_1_log_reads_back_whole_and_continues_in_version_2() {
    let (_temp, dir) = fixture_copy();
    assert_eq!(version_of(&dir.join("00000000000000000024.seg")), 1);
    let open_dir = dir.clone();
    let (batches, next, appended) = run(move || async move {
        let log = ShardLog::open(DmaStorage, &open_dir, config())
            .await
            .expect("a version 1 log opens");
        let batches = read_all(&log, Offset(0)).await;
        let next = log.next_offset();
        let mut random = SplitMix64::new(2);
        let appended = log
            .append_durable(&random_batch(&mut random, 2, 100, 0), Epoch(1))
            .await
            .expect("append");
        log.close().await.expect("close");
        (batches, next, appended.base_offset)
    });
    let want = expected_payloads();
    assert_eq!(batches.len(), want.len());
    for (i, (base, count, _, bytes)) in batches.iter().enumerate() {
        assert_eq!(*base, 3 * i as u64, "batch {i} offset");
        assert_eq!(*count, 3);
        assert_eq!(bytes, &want[i], "batch {i} payload");
    }
    assert_eq!(next, Offset(36));
    assert_eq!(appended, Offset(36), "offsets continue densely");
    // The version 1 active segment was sealed; appends went into a new version 2 segment.
    assert_eq!(version_of(&dir.join("00000000000000000024.seg")), 1);
    assert_eq!(version_of(&dir.join("00000000000000000036.seg")), 2);
    assert!(dir.join("00000000000000000024.idx").exists());
    // And the mixed directory opens again with everything in it.
    let count = run(move || async move {
        let log = ShardLog::open(DmaStorage, &dir, config())
            .await
            .expect("reopen");
        let all = read_all(&log, Offset(0)).await;
        log.close().await.expect("close");
        all.len()
    });
    assert_eq!(count, 13);
}

#[test]
fn damage_in_a_sealed_version_1_segment_is_still_corruption() {
    let (_temp, dir) = fixture_copy();
    let path = dir.join("00000000000000000000.seg");
    let mut bytes = std::fs::read(&path).expect("segment");
    bytes[4096 + 200] ^= 0x04;
    std::fs::write(&path, &bytes).expect("damage");
    let result = run(move || async move {
        let log = ShardLog::open(DmaStorage, &dir, config())
            .await
            .expect("sealed segments open from their index files");
        let read = log.read(Offset(0), 1 << 20, runnel_segment::log::ReadBound::Durable);
        let result = read.await.map(|c| c.batch_count());
        log.close().await.expect("close");
        result
    });
    match result {
        Err(LogError::Corruption { offset, .. }) => assert_eq!(offset, Offset(0)),
        other => panic!("expected corruption, got {other:?}"),
    }
}
