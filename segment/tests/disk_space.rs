//! Disk space and memory of a log (issue 8): a segment reserves disk in steps as data arrives,
//! so an empty shard costs one block instead of a preallocated `segment_bytes_max` (1 GiB by
//! default); a full disk refuses appends as an operating error instead of poisoning the log;
//! an idle log's write buffer is kilobytes, not `write_buffer_bytes` (4 MiB).

mod common;

use std::path::Path;
use std::time::Duration;

use common::{random_batch, read_all, run};
use runnel_core::{Epoch, Offset};
use runnel_segment::storage::fault::SplitMix64;
use runnel_segment::{DmaStorage, FaultStorage, LogConfig, LogError, ShardLog};

const DIR: &str = "/space/log";

fn segment_sizes(storage: &FaultStorage) -> Vec<u64> {
    storage
        .paths()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .map(|p| storage.file_bytes(&p).map_or(0, |b| b.len() as u64))
        .collect()
}

/// Regression: every new segment was preallocated to `segment_bytes_max`, so an empty stream
/// cost 1 GiB of disk.
#[test]
fn an_empty_log_costs_one_block_and_reservations_grow_in_steps() {
    run(|| async {
        let storage = FaultStorage::new();
        let config = LogConfig {
            segment_bytes_max: 64 << 20,
            write_buffer_bytes: 64 << 10,
            reserve_step_bytes_max: 1 << 20,
            ..LogConfig::default()
        };
        let log = ShardLog::open(storage.clone(), Path::new(DIR), config.clone())
            .await
            .expect("open");
        assert_eq!(
            segment_sizes(&storage),
            vec![4096],
            "an empty log is one block"
        );
        let mut random = SplitMix64::new(1);
        log.append_durable(&random_batch(&mut random, 2, 100, 0), Epoch(1))
            .await
            .expect("append");
        assert_eq!(
            segment_sizes(&storage),
            vec![4096 + (64 << 10)],
            "the first reservation is the smallest step"
        );
        // 3 MiB of data: the reservation doubles up to the 1 MiB step, then grows by 1 MiB.
        let mut data = 0u64;
        while data < 3 << 20 {
            let batch = random_batch(&mut random, 8, 4000, 0);
            data += batch.len() as u64;
            log.append_durable(&batch, Epoch(1)).await.expect("append");
        }
        log.sync_all().await.expect("durable");
        let size = segment_sizes(&storage)[0];
        let data_end = log.size_bytes();
        assert!(
            size >= data_end && size <= data_end + (1 << 20) + 4096,
            "reserved {size} bytes for {data_end} bytes of data"
        );
        let reservations = log.stats().reservations;
        assert!(
            (6..=12).contains(&reservations),
            "{reservations} reservations"
        );
        log.close().await.expect("close");
    });
}

/// A full disk refuses appends that need more space with `NoSpace`, cleanly: no offset is
/// given out, nothing is buffered, nothing is poisoned; appends that fit the space already
/// reserved go on, and once space is freed appends are accepted again.
#[test]
fn a_full_disk_refuses_appends_cleanly_until_space_is_freed() {
    run(|| async {
        let storage = FaultStorage::new();
        let log = ShardLog::open(storage.clone(), Path::new(DIR), LogConfig::default())
            .await
            .expect("open");
        let mut random = SplitMix64::new(2);
        log.append_durable(&random_batch(&mut random, 3, 100, 0), Epoch(1))
            .await
            .expect("an append while there is space");
        storage.set_disk_full(true);
        // The first reservation (64 KiB) has room for small batches: they go on.
        let fits = log
            .append_durable(&random_batch(&mut random, 1, 10, 0), Epoch(1))
            .await
            .expect("an append within the reserved space");
        // A batch beyond the reservation is refused.
        let big = random_batch(&mut random, 60, 4000, 0);
        let refused = log
            .append(&big, Epoch(1))
            .await
            .expect_err("no space for it");
        assert!(
            matches!(refused, LogError::NoSpace { .. }),
            "expected NoSpace, got {refused}"
        );
        assert!(refused.to_string().contains("no space"), "{refused}");
        assert!(
            log.poisoned().is_none(),
            "a full disk does not poison the log"
        );
        assert_eq!(
            log.next_offset(),
            Offset(fits.last_offset.0 + 1),
            "no offset given"
        );
        storage.set_disk_full(false);
        // Refusals continue for a moment, then the next attempt reserves again.
        let mut accepted = None;
        for _ in 0..40 {
            match log.append_durable(&big, Epoch(1)).await {
                Ok(appended) => {
                    accepted = Some(appended);
                    break;
                }
                Err(LogError::NoSpace { .. }) => {
                    runnel_segment::runtime::sleep(Duration::from_millis(100)).await
                }
                Err(other) => panic!("expected NoSpace or success, got {other}"),
            }
        }
        let accepted = accepted.expect("appends are accepted again once space is freed");
        assert_eq!(
            accepted.base_offset,
            Offset(fits.last_offset.0 + 1),
            "no offset was skipped or reused"
        );
        let all = read_all(&log, Offset(0)).await;
        let end = all.last().map_or(0, |b| b.0 + u64::from(b.1));
        assert_eq!(Offset(end), log.next_offset());
        log.close().await.expect("close");
    });
}

/// The same on real files: new segments are small on disk (`du`-like allocated size).
#[test]
fn a_new_segment_on_real_files_allocates_one_block() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join("log");
    let open_dir = dir.clone();
    run(move || async move {
        let log = ShardLog::open(DmaStorage, &open_dir, LogConfig::default())
            .await
            .expect("open");
        log.close().await.expect("close");
    });
    let segment = dir.join("00000000000000000000.seg");
    let metadata = std::fs::metadata(&segment).expect("segment");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(metadata.len(), 4096);
    assert!(
        metadata.blocks() * 512 <= 8192,
        "{} bytes allocated",
        metadata.blocks() * 512
    );
}

/// Regression: every open log allocated a full `write_buffer_bytes` (4 MiB) tail buffer, and a
/// second one for each group commit, so 100,000 idle shards asked for 400 GB.
#[test]
fn an_idle_log_holds_a_small_buffer_that_grows_with_traffic() {
    run(|| async {
        let storage = FaultStorage::new();
        let config = LogConfig::default();
        let log = ShardLog::open(storage.clone(), Path::new(DIR), config.clone())
            .await
            .expect("open");
        assert!(
            log.buffer_bytes() <= 20 << 10,
            "{} bytes",
            log.buffer_bytes()
        );
        let mut random = SplitMix64::new(5);
        let mut appended = Vec::new();
        for _ in 0..64 {
            appended.push(
                log.append(&random_batch(&mut random, 16, 4000, 0), Epoch(1))
                    .await
                    .expect("append"),
            );
        }
        log.sync_all().await.expect("durable");
        let grown = log.buffer_bytes();
        assert!(
            grown > 8 << 10 && grown <= config.write_buffer_bytes,
            "{grown} bytes"
        );
        let all = read_all(&log, Offset(0)).await;
        assert_eq!(all.len(), appended.len(), "every batch reads back");
        log.close().await.expect("close");
    });
}
