//! The log on real files: glommio DMA (O_DIRECT through io_uring) on the machine's file system.
//! Write, then truncate or corrupt the tail of the last segment as a crash or a bad disk would,
//! reopen, and check the recovered prefix; damage in the middle is reported as corruption.

mod common;

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use common::{payload, random_batch, read_all, run};
use runnel_core::{
    BatchError, BatchHeader, CheckedChunks, Epoch, Limits, Offset, BATCH_HEADER_LEN,
};
use runnel_segment::log::ReadBound;
use runnel_segment::storage::fault::SplitMix64;
use runnel_segment::{DmaStorage, LogConfig, LogError, ShardLog};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 256 << 10,
        write_buffer_bytes: 64 << 10,
        index_interval_bytes: 8 << 10,
        ..LogConfig::default()
    }
}

/// Writes `batches` batches with real files; returns (base, count, payload) each.
fn write_log(dir: PathBuf, batches: usize, seed: u64) -> Vec<(u64, u32, Vec<u8>)> {
    run(move || async move {
        let log = ShardLog::open(DmaStorage, &dir, config())
            .await
            .expect("open");
        let mut random = SplitMix64::new(seed);
        let mut out = Vec::new();
        for i in 0..batches {
            let count = 1 + random.below(8) as usize;
            let batch = random_batch(&mut random, count, 1500, i as i64 * 100);
            let appended = if i % 7 == 0 {
                log.append_durable(&batch, Epoch(1)).await
            } else {
                log.append(&batch, Epoch(1)).await
            }
            .expect("append");
            out.push((appended.base_offset.0, count as u32, payload(&batch)));
        }
        log.close().await.expect("close");
        out
    })
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    paths.sort();
    paths
}

/// Byte positions of the batches in a segment file.
fn batch_positions(path: &Path) -> Vec<(u64, u64)> {
    let bytes = std::fs::read(path).expect("segment bytes");
    let mut pos = 4096usize;
    let mut out = Vec::new();
    while let Ok(header) = BatchHeader::decode(&bytes[pos..]) {
        out.push((pos as u64, header.base_offset.0));
        pos += header.batch_len as usize;
    }
    out
}

/// Rewrites the acknowledged-end checkpoint of a segment (block 0, docs/format/segment.md) to
/// say that only the batches below `position` (offset `offset`) were acknowledged, as a crash
/// soon after those writes would have left it: slot 0 gets the claim, slot 1 is cleared.
fn set_checkpoint(path: &Path, offset: u64, position: u64) {
    let mut slot = [0u8; 40];
    slot[0..4].copy_from_slice(b"RNLA");
    slot[8..16].copy_from_slice(&1000u64.to_le_bytes());
    slot[16..24].copy_from_slice(&offset.to_le_bytes());
    slot[24..32].copy_from_slice(&position.to_le_bytes());
    let crc = crc32fast::hash(&slot[..32]);
    slot[32..36].copy_from_slice(&crc.to_le_bytes());
    let mut file = OpenOptions::new().write(true).open(path).expect("open");
    file.seek(SeekFrom::Start(512)).expect("seek");
    file.write_all(&slot).expect("slot 0");
    file.seek(SeekFrom::Start(1024)).expect("seek");
    file.write_all(&[0u8; 40]).expect("slot 1");
}

/// (base offset, record count, payload) of each batch.
type Batches = Vec<(u64, u32, Vec<u8>)>;

fn reopen_and_read(dir: PathBuf) -> Result<(Batches, u64), LogError> {
    run(move || async move {
        let log = ShardLog::open(DmaStorage, &dir, config()).await?;
        let all = read_all(&log, log.start_offset()).await;
        // The log keeps working after recovery.
        let mut random = SplitMix64::new(99);
        let next = log.next_offset();
        let appended = log
            .append_durable(&random_batch(&mut random, 2, 100, 0), Epoch(2))
            .await?;
        assert_eq!(
            appended.base_offset, next,
            "offsets continue densely after recovery"
        );
        log.close().await?;
        Ok((
            all.into_iter().map(|(b, c, _, p)| (b, c, p)).collect(),
            next.0,
        ))
    })
}

#[test]
fn a_clean_log_reopens_whole() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join("log");
    let written = write_log(dir.clone(), 300, 1);
    assert!(segments(&dir).len() > 3, "the workload rolls segments");
    let (recovered, next) = reopen_and_read(dir).expect("reopen");
    assert_eq!(recovered, written);
    assert_eq!(next, written.last().map_or(0, |w| w.0 + u64::from(w.1)));
}

#[test]
fn a_truncated_tail_recovers_the_prefix_before_it() {
    // Cut inside the last batch, inside an earlier batch's header, and just after a batch.
    for (case, cut_into) in [(0u64, 100u64), (1, 10), (2, 0)] {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().join("log");
        let written = write_log(dir.clone(), 120, 10 + case);
        let last = segments(&dir).pop().expect("a segment");
        let positions = batch_positions(&last);
        let (victim_pos, victim_offset) = positions[positions.len() - 1 - case as usize];
        // A crash: the cut batches were written after the last checkpoint.
        set_checkpoint(&last, victim_offset, victim_pos);
        let file = OpenOptions::new()
            .write(true)
            .open(&last)
            .expect("open segment");
        file.set_len(victim_pos + cut_into).expect("truncate");
        drop(file);
        let (recovered, _) = reopen_and_read(dir).expect("recovers from a torn tail");
        let want: Vec<_> = written
            .iter()
            .filter(|w| w.0 < victim_offset)
            .cloned()
            .collect();
        assert_eq!(
            recovered, want,
            "case {case}: exactly the batches before the cut"
        );
    }
}

#[test]
fn garbage_over_the_tail_recovers_the_prefix_before_it() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join("log");
    let written = write_log(dir.clone(), 150, 3);
    let last = segments(&dir).pop().expect("a segment");
    let positions = batch_positions(&last);
    let (victim_pos, victim_offset) = positions[positions.len() - 2];
    set_checkpoint(&last, victim_offset, victim_pos);
    let mut file = OpenOptions::new()
        .write(true)
        .open(&last)
        .expect("open segment");
    file.seek(SeekFrom::Start(victim_pos + 40)).expect("seek");
    file.write_all(&[0xa5; 3000]).expect("scribble");
    drop(file);
    let (recovered, _) = reopen_and_read(dir.clone()).expect("recovers from a torn tail");
    let want: Vec<_> = written
        .iter()
        .filter(|w| w.0 < victim_offset)
        .cloned()
        .collect();
    assert_eq!(recovered, want);
    // The torn bytes were zeroed: a second recovery sees the same log plus the appended batch.
    let (again, _) = reopen_and_read(dir).expect("second recovery");
    assert_eq!(again.len(), want.len() + 1);
}

/// Regression (issue 8): one flipped byte in acknowledged, fsynced data of the active segment
/// made recovery take it for a torn tail (it lay within the torn-write window): the shard came
/// back empty and handed offset 0 out again. The segment's checkpoint now says that the data
/// was acknowledged, so the damage is reported, and a refused open changes nothing on disk.
#[test]
fn bit_rot_in_acknowledged_data_of_the_active_segment_is_corruption_not_a_torn_tail() {
    for (case, at) in [(0u64, 2000u64), (1, 100), (2, 40_000)] {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().join("log");
        let written = write_log(dir.clone(), 60, 20 + case);
        let last = segments(&dir).pop().expect("a segment");
        let size_before = std::fs::metadata(&last).expect("stat").len();
        let positions = batch_positions(&last);
        let data_end = positions.last().map(|p| p.0).expect("batches") + 80;
        let at = 4096 + at.min(data_end - 4096 - 1);
        let mut bytes = std::fs::read(&last).expect("read");
        bytes[at as usize] ^= 0x10;
        std::fs::write(&last, &bytes).expect("flip a bit");
        for _ in 0..2 {
            match reopen_and_read(dir.clone()) {
                Err(LogError::Corruption { reason, path, .. }) => {
                    assert_eq!(path, last);
                    assert!(reason.contains("acknowledged"), "case {case}: {reason}");
                }
                Err(other) => panic!("case {case}: expected corruption, got {other}"),
                Ok((recovered, next)) => panic!(
                    "case {case}: damage at byte {at} was accepted: {} of {} batches, next offset {next}",
                    recovered.len(),
                    written.len()
                ),
            }
        }
        assert_eq!(
            std::fs::read(&last).expect("read").len() as u64,
            size_before,
            "a refused open truncates nothing"
        );
    }
}

#[test]
fn corruption_in_the_middle_of_a_segment_is_reported_not_returned() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join("log");
    write_log(dir.clone(), 200, 4);
    let first = segments(&dir).into_iter().next().expect("a segment");
    let positions = batch_positions(&first);
    let (victim_pos, victim_offset) = positions[positions.len() / 2];
    let mut file = OpenOptions::new()
        .write(true)
        .open(&first)
        .expect("open segment");
    file.seek(SeekFrom::Start(victim_pos + BATCH_HEADER_LEN as u64 + 5))
        .expect("seek");
    file.write_all(&[0x00, 0xff, 0x00]).expect("flip bytes");
    drop(file);
    // A reader of the damaged batch gets a typed error naming it, never its bytes.
    let read_dir = dir.clone();
    let read = run(move || async move {
        let log = ShardLog::open(DmaStorage, &read_dir, config())
            .await
            .expect("open from index files");
        let result = log
            .read(Offset(victim_offset), 1, ReadBound::Durable)
            .await
            .map(|c| c.batch_count());
        log.close().await.expect("close");
        result
    });
    let expect_corruption = |result: Result<_, LogError>| match result {
        Err(LogError::Corruption {
            offset,
            position,
            path,
            ..
        }) => {
            assert_eq!(offset, Offset(victim_offset));
            assert_eq!(position, victim_pos);
            assert_eq!(path, first);
        }
        Ok(_) => panic!("corrupt data was accepted"),
        Err(other) => panic!("expected corruption, got {other}"),
    };
    expect_corruption(read);
    // A verifying open refuses to start over it, and changes nothing: it fails the same way again.
    let verify = LogConfig {
        verify_sealed_segments_on_open: true,
        ..config()
    };
    for _ in 0..2 {
        let (dir, verify) = (dir.clone(), verify.clone());
        expect_corruption(run(move || async move {
            ShardLog::open(DmaStorage, &dir, verify)
                .await
                .map(|_| 0usize)
        }));
    }
}

#[test]
fn reads_by_offset_and_time_on_real_files() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join("log");
    let written = write_log(dir.clone(), 100, 5);
    run(move || async move {
        let log = ShardLog::open(DmaStorage, &dir, config())
            .await
            .expect("open");
        for (i, (base, _, bytes)) in written.iter().enumerate() {
            let chunk = log
                .read(Offset(*base), 1, ReadBound::Durable)
                .await
                .expect("read");
            let batch = chunk.batches().next().expect("a batch");
            assert_eq!(&payload(batch.as_bytes()), bytes);
            let records: Vec<_> = batch
                .records()
                .expect("records")
                .map(|r| r.timestamp_ms())
                .collect();
            assert_eq!(records.first().copied(), Some(i as i64 * 100));
            assert_eq!(
                log.offset_for_timestamp(i as i64 * 100)
                    .await
                    .expect("time"),
                Offset(*base)
            );
        }
        log.close().await.expect("close");
    });
}

/// Regression: glommio probes polled-I/O support once per thread by reading block 0 of the first
/// DMA file it opens; when that file was new and empty the probe "succeeded" without reaching
/// the device, and every later read on the device failed with EOPNOTSUPP. Writing, closing and
/// reopening on one executor thread exercises exactly that sequence.
#[test]
fn a_log_reopens_on_the_same_executor_thread() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join("log");
    let next = run(move || async move {
        let log = ShardLog::open(DmaStorage, &dir, config())
            .await
            .expect("open");
        let mut random = SplitMix64::new(6);
        for i in 0..20 {
            log.append_durable(&random_batch(&mut random, 3, 500, i), Epoch(1))
                .await
                .expect("append");
        }
        log.close().await.expect("close");
        let log = ShardLog::open(DmaStorage, &dir, config())
            .await
            .expect("reopen on the same thread");
        let chunk = log
            .read(Offset(0), 1 << 20, ReadBound::Durable)
            .await
            .expect("read");
        assert_eq!(chunk.batch_count(), 20);
        log.next_offset()
    });
    assert_eq!(next, Offset(60));
}

/// Regression: the same glommio probe, met through an existing empty file (as a crash between
/// creating a file and writing it can leave) opened first on a fresh thread.
#[test]
fn an_empty_file_opened_first_does_not_break_reads() {
    use runnel_segment::storage::Storage;
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join("log");
    let written = write_log(dir.clone(), 30, 7);
    let empty = dir.join("empty.bin");
    std::fs::File::create(&empty).expect("empty file");
    let count = run(move || async move {
        let file = DmaStorage
            .open(&empty)
            .await
            .expect("open the empty file first");
        drop(file);
        let log = ShardLog::open(DmaStorage, &dir, config())
            .await
            .expect("open");
        let all = read_all(&log, Offset(0)).await;
        log.close().await.expect("close");
        all.len()
    });
    assert_eq!(count, written.len());
}

/// Regression (found when metadata snapshots made a restart open, concurrently, existing shard
/// logs and the logs of streams deleted after the snapshot, which are created anew): the first
/// open of an existing file on a thread stood in for the device probe and marked the device
/// probed at once, so a new empty file created while that open was still in flight skipped the
/// probe file, and glommio's own probe of the empty file could conclude "pollable"; reads of
/// the existing log then failed with EOPNOTSUPP. Now the first open on a device is the only
/// one until its probe is done. Each round is a fresh executor thread (fresh probe state).
#[test]
fn logs_opened_and_created_at_once_on_a_fresh_thread_read_back() {
    let temp = tempfile::tempdir().expect("temp dir");
    let existing: Vec<PathBuf> = (0..3)
        .map(|i| temp.path().join(format!("existing-{i}")))
        .collect();
    let written: Vec<usize> = existing
        .iter()
        .zip(11..)
        .map(|(dir, seed)| write_log(dir.clone(), 10, seed).len())
        .collect();
    for round in 0..40 {
        let existing = existing.clone();
        let root = temp.path().join(format!("round-{round}"));
        let counts = run(move || async move {
            // Existing logs and new ones interleaved, all in flight at once, an existing one
            // first.
            let mut tasks = Vec::new();
            for (i, dir) in existing.into_iter().enumerate() {
                tasks.push(glommio::spawn_local(async move {
                    ShardLog::open(DmaStorage, &dir, config()).await.map(Some)
                }));
                for new in 0..4 {
                    let dir = root.join(format!("new-{i}-{new}"));
                    tasks.push(glommio::spawn_local(async move {
                        let log = ShardLog::open(DmaStorage, &dir, config()).await?;
                        log.close().await?;
                        Ok(None)
                    }));
                }
            }
            let mut opened = Vec::new();
            for task in tasks {
                if let Some(log) = task.await.expect("open or create a log") {
                    opened.push(log);
                }
            }
            let mut counts = Vec::new();
            for log in opened {
                counts.push(read_all(&log, Offset(0)).await.len());
                log.close().await.expect("close");
            }
            counts
        });
        assert_eq!(counts, written, "round {round}");
    }
}

/// Regression: glommio's `Directory::open` fails with EBADF on a relative path, which made
/// every directory sync (and so opening a log) fail for a relative data directory.
#[test]
fn a_log_in_a_relative_directory_opens() {
    let temp = tempfile::tempdir_in(".").expect("temp dir under the working directory");
    let name = temp.path().file_name().expect("a name").to_owned();
    let relative = PathBuf::from(name).join("log");
    assert!(relative.is_relative());
    let next = run(move || async move {
        let log = ShardLog::open(DmaStorage, &relative, config())
            .await
            .expect("open with a relative path");
        let mut random = SplitMix64::new(8);
        log.append_durable(&random_batch(&mut random, 2, 10, 0), Epoch(1))
            .await
            .expect("append");
        log.close().await.expect("close");
        let log = ShardLog::open(DmaStorage, &relative, config())
            .await
            .expect("reopen");
        log.next_offset()
    });
    assert_eq!(next, Offset(2));
}

/// Batches received in chunks (as QUIC delivers them) are copied once into the log and read
/// back identical after a reopen; a batch that its validation refuses in place (here the
/// caller's record check) uses no offset, and the files hold only the accepted batches (also
/// when the last attempt was refused, its bytes having been copied into the tail buffer).
#[test]
fn chunked_appends_read_back_and_refused_ones_leave_nothing() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().to_path_buf();
    let (accepted, refusals) = run({
        let dir = dir.clone();
        move || async move {
            let log = ShardLog::open(DmaStorage, &dir, config())
                .await
                .expect("open");
            let mut random = SplitMix64::new(99);
            let mut accepted = Vec::new();
            let mut refusals = 0;
            for i in 0..40usize {
                let count = 1 + random.below(8) as usize;
                let batch = random_batch(&mut random, count, 1500, i as i64 * 100);
                // A cut inside the header, then chunks of one random size.
                let (head, rest) = batch.split_at(random.below(BATCH_HEADER_LEN as u64) as usize);
                let size = 1 + random.below(2000) as usize;
                let chunks: Vec<&[u8]> = std::iter::once(head).chain(rest.chunks(size)).collect();
                let checked = CheckedChunks::check(&chunks, &Limits::DEFAULT).expect("checks");
                // Every fifth batch is refused, the last one too (nothing accepted after it).
                let refuse = i % 5 == 2 || i == 39;
                let result = log
                    .append_chunks(&checked, Epoch(1), &Limits::DEFAULT, |index, _| {
                        match refuse && index + 1 == count {
                            true => Err(LogError::InvalidBatch(BatchError::Empty)),
                            false => Ok(()),
                        }
                    })
                    .await;
                let next = log.next_offset();
                match result {
                    Ok(appended) => {
                        assert!(!refuse);
                        assert_eq!(appended.base_offset.0 + count as u64, next.0);
                        accepted.push((appended.base_offset.0, count as u32, payload(&batch)));
                    }
                    Err(error) => {
                        assert!(refuse, "batch {i} refused: {error}");
                        let expected = accepted
                            .last()
                            .map_or(0, |(base, count, _)| base + u64::from(*count));
                        assert_eq!(next.0, expected, "a refused batch uses no offset");
                        refusals += 1;
                    }
                }
            }
            log.sync_all().await.expect("sync");
            log.close().await.expect("close");
            (accepted, refusals)
        }
    });
    assert_eq!(refusals, 9);
    let on_disk: usize = segments(&dir)
        .iter()
        .map(|path| batch_positions(path).len())
        .sum();
    assert_eq!(
        on_disk,
        accepted.len(),
        "only accepted batches are in the files"
    );
    let (read, next) = reopen_and_read(dir).expect("reopen");
    assert_eq!(read, accepted);
    assert_eq!(
        next,
        accepted
            .last()
            .map_or(0, |(base, count, _)| base + u64::from(*count))
    );
}
