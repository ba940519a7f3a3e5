//! The batch cache (issue 9): reads close behind the log's end are served from the buffers it
//! last wrote, without disk I/O; reads of what the cache no longer holds go to the disk and
//! behave as before (their CRCs checked); and a cached read returns exactly the bytes a read
//! from the disk returns.

mod common;

use std::path::Path;
use std::rc::Rc;

use common::{payload, random_batch, read_all, run, small_config, view_summary};
use runnel_core::{Epoch, Offset};
use runnel_segment::log::ReadBound;
use runnel_segment::storage::fault::SplitMix64;
use runnel_segment::storage::Storage;
use runnel_segment::{DmaStorage, FaultStorage, LogConfig, ShardLog};

const DIR: &str = "/cache-log";

/// Batches of one log as (base offset, record count, max timestamp, payload).
type Summary = Vec<(u64, u32, i64, Vec<u8>)>;

/// A reader following a log under appends: waits for each new batch, reads it, and returns
/// what it read. Every batch is read within moments of its write.
async fn tail<S: Storage>(log: Rc<ShardLog<S>>, batches: usize) -> Summary {
    let mut out = Vec::new();
    let mut next = Offset(0);
    while out.len() < batches {
        log.wait_for(next, ReadBound::Written)
            .await
            .expect("wait for batches");
        let chunk = log
            .read(next, 256 << 10, ReadBound::Written)
            .await
            .expect("read");
        assert!(!chunk.is_empty(), "a batch is readable after the wait");
        out.extend(chunk.batches().map(|batch| view_summary(&batch)));
        next = chunk.next_offset();
    }
    out
}

/// Appends `batches` random batches, yielding between them so the reader keeps up.
async fn append<S: Storage>(log: &ShardLog<S>, seed: u64, batches: usize) -> Vec<Vec<u8>> {
    let mut random = SplitMix64::new(seed);
    let mut payloads = Vec::new();
    for i in 0..batches {
        let count = 1 + random.below(6) as usize;
        let batch = random_batch(&mut random, count, 700, i as i64);
        log.append(&batch, Epoch(1)).await.expect("append");
        payloads.push(payload(&batch));
        if i % 3 == 0 {
            log.wait_for(
                Offset(log.next_offset().0.saturating_sub(1)),
                ReadBound::Written,
            )
            .await
            .expect("written");
        }
    }
    payloads
}

fn cache_config() -> LogConfig {
    LogConfig {
        // One segment holds the whole workload: the cache serves the active segment only.
        segment_bytes_max: 64 << 20,
        ..small_config()
    }
}

#[test]
fn a_tailing_reader_gets_every_batch_from_the_cache() {
    run(|| async {
        let log = Rc::new(
            ShardLog::open(FaultStorage::new(), Path::new(DIR), cache_config())
                .await
                .expect("open"),
        );
        let reader = runnel_segment::runtime::spawn(tail(Rc::clone(&log), 200));
        let payloads = append(&log, 11, 200).await;
        let read = reader.join().await;
        let read_payloads: Vec<_> = read.iter().map(|batch| batch.3.clone()).collect();
        assert_eq!(
            read_payloads, payloads,
            "the reader got every batch, in order"
        );
        let stats = log.stats();
        assert!(stats.cache_hits > 0, "reads were served: {stats:?}");
        assert_eq!(
            (stats.cache_misses, stats.disk_reads),
            (0, 0),
            "a tailing reader never reads the disk: {stats:?}"
        );
        let bytes: usize = read.iter().map(|batch| batch.3.len()).sum();
        assert!(stats.cache_hit_bytes >= bytes as u64);
        assert!(log.cached_bytes() <= cache_config().read_cache_bytes);
        Rc::into_inner(log)
            .expect("the reader is done")
            .close()
            .await
            .expect("close");
    });
}

#[test]
fn a_reader_far_behind_reads_the_disk_and_gets_the_same_batches() {
    run(|| async {
        let storage = FaultStorage::new();
        let config = LogConfig {
            // Room for two small buffers: the start of the log is long gone from the cache.
            read_cache_bytes: 32 << 10,
            ..cache_config()
        };
        let log = ShardLog::open(storage.clone(), Path::new(DIR), config)
            .await
            .expect("open");
        let payloads = append(&log, 12, 300).await;
        log.sync_all().await.expect("durable");
        let before = log.stats();
        let read = read_all(&log, Offset(0)).await;
        let after = log.stats();
        let read_payloads: Vec<_> = read.iter().map(|batch| batch.3.clone()).collect();
        assert_eq!(read_payloads, payloads);
        assert!(
            after.disk_reads > before.disk_reads && after.cache_misses > before.cache_misses,
            "the start of the log came from the disk: {after:?}"
        );
        assert!(log.cached_bytes() <= 32 << 10);
        // The same log reopened (nothing cached) reads the same batches.
        log.close().await.expect("close");
        let log = ShardLog::open(storage, Path::new(DIR), cache_config())
            .await
            .expect("reopen");
        assert_eq!(read_all(&log, Offset(0)).await, read);
        assert_eq!(log.stats().cache_hits, 0, "nothing is cached after an open");
        log.close().await.expect("close");
    });
}

/// For random workloads (seeded: a failure prints its seed), a log with a batch cache and one
/// without, given the same batches, return the same batches at every offset: a read the cache
/// serves may stop earlier (at the end of a cached buffer), but what it returns is exactly a
/// prefix of what the disk gives, byte for byte.
#[test]
fn cached_reads_return_what_the_disk_returns() {
    for seed in 0..24u64 {
        run(move || async move {
            let storage = FaultStorage::new();
            let mut random = SplitMix64::new(seed);
            let cached_config = LogConfig {
                read_cache_bytes: [16 << 10, 64 << 10, 16 << 20][random.below(3) as usize],
                ..cache_config()
            };
            let uncached_config = LogConfig {
                read_cache_bytes: 0,
                ..cache_config()
            };
            let cached = ShardLog::open(storage.clone(), Path::new("/cached"), cached_config)
                .await
                .expect("open");
            let uncached = ShardLog::open(storage.clone(), Path::new("/uncached"), uncached_config)
                .await
                .expect("open");
            let mut hits = 0;
            for i in 0..150 {
                let count = 1 + random.below(8) as usize;
                let batch = random_batch(&mut random, count, 1200, i);
                cached.append(&batch, Epoch(1)).await.expect("append");
                uncached.append(&batch, Epoch(1)).await.expect("append");
                if random.below(4) != 0 {
                    continue;
                }
                cached.sync_all().await.expect("durable");
                uncached.sync_all().await.expect("durable");
                let end = cached.next_offset().0;
                // Mostly close behind the end, sometimes anywhere.
                let from = if random.below(3) == 0 {
                    random.below(end)
                } else {
                    end.saturating_sub(1 + random.below(40))
                };
                let max_bytes = 1 + random.below(64 << 10) as usize;
                let bound = if random.below(2) == 0 {
                    ReadBound::Durable
                } else {
                    ReadBound::Below(Offset(end - random.below(3).min(end - from - 1)))
                };
                let hits_before = cached.stats().cache_hits;
                let got = cached
                    .read(Offset(from), max_bytes, bound)
                    .await
                    .expect("cached read");
                let want = uncached
                    .read(Offset(from), max_bytes, bound)
                    .await
                    .expect("disk read");
                hits += cached.stats().cache_hits - hits_before;
                let got: Summary = got.batches().map(|b| view_summary(&b)).collect();
                let want: Summary = want.batches().map(|b| view_summary(&b)).collect();
                assert!(
                    !got.is_empty() && got.len() <= want.len() && want.starts_with(&got),
                    "seed {seed}: read at {from} (bound {bound:?}): {} batches cached, {} from disk",
                    got.len(),
                    want.len()
                );
            }
            assert_eq!(uncached.stats().cache_hits, 0, "seed {seed}");
            assert!(hits > 0, "seed {seed}: the cache served reads");
            cached.close().await.expect("close");
            uncached.close().await.expect("close");
        });
    }
}

/// The same on real files: a tailing reader over glommio DMA files is served from the cache,
/// and a read of the same range after a reopen (from the disk) returns the same batches.
#[test]
fn a_tailing_reader_on_real_files_reads_no_disk() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("log");
    run(move || async move {
        let log = Rc::new(
            ShardLog::open(DmaStorage, &path, cache_config())
                .await
                .expect("open"),
        );
        let reader = runnel_segment::runtime::spawn(tail(Rc::clone(&log), 150));
        let payloads = append(&log, 13, 150).await;
        let read = reader.join().await;
        let read_payloads: Vec<_> = read.iter().map(|batch| batch.3.clone()).collect();
        assert_eq!(read_payloads, payloads);
        let stats = log.stats();
        assert!(stats.cache_hits > 0, "{stats:?}");
        assert_eq!((stats.cache_misses, stats.disk_reads), (0, 0), "{stats:?}");
        Rc::into_inner(log)
            .expect("the reader is done")
            .close()
            .await
            .expect("close");
        let log = ShardLog::open(DmaStorage, &path, cache_config())
            .await
            .expect("reopen");
        assert_eq!(read_all(&log, Offset(0)).await, read);
        assert!(log.stats().disk_reads > 0);
        log.close().await.expect("close");
    });
}
