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

/// Opens (or reopens) the log under test in `DIR`.
async fn open(storage: &FaultStorage, config: &LogConfig) -> ShardLog<FaultStorage> {
    ShardLog::open(storage.clone(), Path::new(DIR), config.clone())
        .await
        .expect("open")
}

/// The payload of every batch the log holds, from offset 0.
async fn read_payloads<S: runnel_segment::Storage>(log: &ShardLog<S>) -> Vec<Vec<u8>> {
    read_all(log, Offset(0))
        .await
        .into_iter()
        .map(|batch| batch.3)
        .collect()
}

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
        let log = open(&storage, &config).await;
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
        // The next step is reserved once the data comes within half a step of the end, so
        // the reservation runs at most a step and a half ahead.
        assert!(
            size >= data_end && size <= data_end + (1 << 20) + (1 << 19) + 4096,
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
        let log = open(&storage, &config).await;
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

/// Issue 9: the log reserved segment space with fallocate alone, so every write of batches
/// landed on *unwritten* extents and every fdatasync after it also committed the extent
/// conversion to the file system's journal (about twice the device's flush, and entangled with
/// every other writer's metadata). Now each reservation is written with zeros ahead of the
/// batches: after the first batch of a segment (which waits for its first reservation), no
/// write of batches lands on reserved-but-unwritten space. Batches appended one at a time, as
/// a producer at a moderate rate sends them; then a crash, and every durable batch is back.
#[test]
fn batches_land_on_blocks_written_with_zeros_ahead_not_on_unwritten_space() {
    run(|| async {
        let storage = FaultStorage::new();
        let config = LogConfig {
            segment_bytes_max: 64 << 20,
            write_buffer_bytes: 64 << 10,
            reserve_step_bytes_max: 1 << 20,
            ..LogConfig::default()
        };
        let log = open(&storage, &config).await;
        let mut random = SplitMix64::new(6);
        let mut appended = Vec::new();
        let mut data = 0u64;
        while data < 3 << 20 {
            let batch = random_batch(&mut random, 16, 1000, 0);
            data += batch.len() as u64;
            log.append_durable(&batch, Epoch(1)).await.expect("append");
            appended.push(common::payload(&batch));
        }
        let stats = log.stats();
        assert!(stats.writes > 300, "{} writes", stats.writes);
        assert!(
            stats.bytes_zeroed >= data - (256 << 10),
            "{} bytes zeroed ahead of {data} bytes of batches",
            stats.bytes_zeroed
        );
        let into_unwritten = storage.data_writes_into_unwritten();
        assert!(
            into_unwritten <= 1,
            "{into_unwritten} of {} writes of batches landed on unwritten space",
            stats.writes
        );
        let image = storage.crash(7);
        drop(log);
        let log = ShardLog::open(image, Path::new(DIR), config)
            .await
            .expect("recovers a segment whose tail was written with zeros");
        let payloads = read_payloads(&log).await;
        assert_eq!(
            payloads, appended,
            "every durable batch is back, nothing after"
        );
        log.close().await.expect("close");
    });
}

/// Appends faster than the zeros are written: a write of batches that would touch the range
/// a write of zeros is in flight over waits for it (an assertion in the flusher checks that
/// they never race), so nothing appended is overwritten with zeros. Many small segments, so
/// rolls meet reservations in flight too.
#[test]
fn appends_that_catch_up_with_the_zeros_wait_for_them_and_read_back() {
    run(|| async {
        let storage = FaultStorage::new();
        let config = LogConfig {
            segment_bytes_max: 4 << 20,
            write_buffer_bytes: 64 << 10,
            reserve_step_bytes_max: 256 << 10,
            ..LogConfig::default()
        };
        let log = open(&storage, &config).await;
        let mut random = SplitMix64::new(8);
        let mut appended = Vec::new();
        for _ in 0..1500 {
            let batch = random_batch(&mut random, 8, 2000, 0);
            log.append(&batch, Epoch(1)).await.expect("append");
            appended.push(common::payload(&batch));
        }
        log.sync_all().await.expect("durable");
        assert!(log.segment_count() > 1, "the segments rolled");
        assert!(log.stats().bytes_zeroed > 0, "zeros were written ahead");
        let payloads = read_payloads(&log).await;
        assert_eq!(payloads, appended, "every batch reads back as appended");
        log.close().await.expect("close");
        // Reopened, the log writes zeros again over what it had reserved before it takes
        // batches there, and goes on.
        let log = ShardLog::open(storage.clone(), Path::new(DIR), config)
            .await
            .expect("reopens");
        for _ in 0..300 {
            let batch = random_batch(&mut random, 8, 2000, 0);
            log.append(&batch, Epoch(1)).await.expect("append");
            appended.push(common::payload(&batch));
        }
        log.sync_all().await.expect("durable");
        assert!(
            log.stats().bytes_zeroed > 0,
            "zeros were written ahead again"
        );
        let payloads = read_payloads(&log).await;
        assert_eq!(payloads, appended, "and after reopening");
        log.close().await.expect("close");
    });
}

/// The bandwidth the zeros cost is bounded: while the log's writes are large (a producer at
/// full speed, whose group commits carry megabytes), the disk would write every byte twice for
/// little gain (an extent conversion costs one commit per fdatasync, small beside the bytes),
/// so reservations are not written with zeros.
#[test]
fn large_writes_reserve_without_writing_zeros() {
    run(|| async {
        let storage = FaultStorage::new();
        let config = LogConfig {
            segment_bytes_max: 256 << 20,
            reserve_step_bytes_max: 4 << 20,
            ..LogConfig::default()
        };
        let log = ShardLog::open(storage.clone(), Path::new(DIR), config)
            .await
            .expect("open");
        let mut random = SplitMix64::new(10);
        let mut data = 0u64;
        while data < 32 << 20 {
            let batch = random_batch(&mut random, 200, 4000, 0);
            data += batch.len() as u64;
            log.append(&batch, Epoch(1)).await.expect("append");
        }
        log.sync_all().await.expect("durable");
        let stats = log.stats();
        assert!(
            stats.bytes_written / stats.writes >= 256 << 10,
            "{} bytes per write",
            stats.bytes_written / stats.writes
        );
        assert!(
            stats.bytes_zeroed < data / 8,
            "{} bytes of zeros for {data} bytes of batches",
            stats.bytes_zeroed
        );
        log.close().await.expect("close");
    });
}

/// The same on real files (ext4 or xfs, which reserve with unwritten extents): once a log has
/// taken batches and closed, no extent of its active segment is left unwritten (`FIEMAP`), so
/// the fdatasync of every write of batches there was the device's flush alone.
#[test]
fn a_segment_on_real_files_holds_no_unwritten_extents() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join("log");
    let open_dir = dir.clone();
    run(move || async move {
        let config = LogConfig {
            reserve_step_bytes_max: 1 << 20,
            ..LogConfig::default()
        };
        let log = ShardLog::open(DmaStorage, &open_dir, config)
            .await
            .expect("open");
        let mut random = SplitMix64::new(9);
        for _ in 0..300 {
            log.append_durable(&random_batch(&mut random, 16, 1000, 0), Epoch(1))
                .await
                .expect("append");
        }
        assert!(log.stats().bytes_zeroed > 0, "zeros were written ahead");
        log.close().await.expect("close");
    });
    let segment = dir.join("00000000000000000000.seg");
    let size = std::fs::metadata(&segment).expect("segment").len();
    let extents = fiemap::extents(&segment).expect("FIEMAP on the test's file system");
    let mapped: u64 = extents.iter().map(|e| e.length).sum();
    assert!(
        size > 1 << 20 && mapped >= size,
        "{mapped} bytes mapped of {size}"
    );
    let unwritten: Vec<(u64, u64)> = extents
        .iter()
        .filter(|e| e.unwritten)
        .map(|e| (e.logical, e.length))
        .collect();
    assert!(
        unwritten.is_empty(),
        "unwritten extents (position, bytes) in the active segment of {size} bytes: {unwritten:?}"
    );
}

/// `FS_IOC_FIEMAP`: a file's extents and whether each is unwritten (reserved, never written).
mod fiemap {
    use std::os::fd::AsRawFd;
    use std::path::Path;

    const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
    const FIEMAP_FLAG_SYNC: u32 = 0x1;
    const FIEMAP_EXTENT_LAST: u32 = 0x1;
    const FIEMAP_EXTENT_UNWRITTEN: u32 = 0x800;
    const EXTENTS_MAX: usize = 256;

    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct RawExtent {
        logical: u64,
        physical: u64,
        length: u64,
        reserved64: [u64; 2],
        flags: u32,
        reserved: [u32; 3],
    }

    #[repr(C)]
    struct Request {
        start: u64,
        length: u64,
        flags: u32,
        mapped_extents: u32,
        extent_count: u32,
        reserved: u32,
        extents: [RawExtent; EXTENTS_MAX],
    }

    pub struct Extent {
        pub logical: u64,
        pub length: u64,
        pub unwritten: bool,
    }

    #[allow(unsafe_code)]
    pub fn extents(path: &Path) -> std::io::Result<Vec<Extent>> {
        let file = std::fs::File::open(path)?;
        let mut out = Vec::new();
        let mut start = 0u64;
        loop {
            let mut request = Box::new(Request {
                start,
                length: u64::MAX - start,
                flags: FIEMAP_FLAG_SYNC,
                mapped_extents: 0,
                extent_count: EXTENTS_MAX as u32,
                reserved: 0,
                extents: [RawExtent::default(); EXTENTS_MAX],
            });
            // SAFETY: the request is a `struct fiemap` with room for `extent_count` extents,
            // which is all the kernel writes.
            let rc = unsafe {
                libc::ioctl(
                    file.as_raw_fd(),
                    FS_IOC_FIEMAP,
                    &mut *request as *mut Request,
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mapped = (request.mapped_extents as usize).min(EXTENTS_MAX);
            let mut last = mapped == 0;
            for raw in &request.extents[..mapped] {
                out.push(Extent {
                    logical: raw.logical,
                    length: raw.length,
                    unwritten: raw.flags & FIEMAP_EXTENT_UNWRITTEN != 0,
                });
                start = raw.logical + raw.length;
                last |= raw.flags & FIEMAP_EXTENT_LAST != 0;
            }
            if last {
                return Ok(out);
            }
        }
    }
}
