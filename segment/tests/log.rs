//! Behaviour of the shard log on the in-memory storage: read-back by offset and time, poison on
//! I/O failure, corruption reports, trim, retention, tailing, back-pressure and bad input.

mod common;

use std::path::Path;

use common::{payload, random_batch, read_all, run, small_config};
use proptest::prelude::*;
use runnel_core::{BatchHeader, Epoch, Offset, BATCH_HEADER_LEN};
use runnel_segment::log::ReadBound;
use runnel_segment::storage::fault::SplitMix64;
use runnel_segment::{FaultStorage, LogConfig, LogError, ShardLog};

const DIR: &str = "/t/log";

fn dir() -> &'static Path {
    Path::new(DIR)
}

/// Appends `batches` random batches; returns (base, count, first ts, max ts, payload) each.
async fn fill(
    log: &ShardLog<FaultStorage>,
    random: &mut SplitMix64,
    batches: usize,
    timestamps: &mut dyn FnMut(usize) -> i64,
) -> Vec<(u64, u32, i64, Vec<u8>)> {
    let mut out = Vec::new();
    for i in 0..batches {
        let count = 1 + random.below(5) as usize;
        let batch = random_batch(random, count, 900, timestamps(i));
        let appended = log.append(&batch, Epoch(1)).await.expect("append");
        let header = BatchHeader::decode(&batch).expect("valid");
        out.push((
            appended.base_offset.0,
            count as u32,
            header.max_timestamp_ms,
            payload(&batch),
        ));
    }
    if let Some(last) = out.last() {
        log.wait_durable(Offset(last.0 + u64::from(last.1) - 1))
            .await
            .expect("durable");
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Random batches come back byte-identical, from every offset and after a reopen, and a
    /// read from a time starts at the first batch whose newest record is at least that time.
    #[test]
    fn batches_read_back_identical_by_offset_and_by_time(seed: u64, batches in 1usize..80, shuffle in any::<bool>()) {
        let failure: Option<String> = run(move || async move {
            let storage = FaultStorage::new();
            let mut random = SplitMix64::new(seed);
            let log = ShardLog::open(storage.clone(), dir(), small_config()).await.expect("open");
            let mut clock = SplitMix64::new(seed ^ 7);
            let mut stamps = |i: usize| if shuffle { clock.below(10_000) as i64 } else { i as i64 * 10 };
            let written = fill(&log, &mut random, batches, &mut stamps).await;
            log.close().await.expect("close");
            let log = ShardLog::open(storage.clone(), dir(), small_config()).await.expect("reopen");
            let all = read_all(&log, Offset(0)).await;
            let want: Vec<_> = written.iter().map(|(b, c, m, p)| (*b, *c, *m, p.clone())).collect();
            if all != want {
                return Some(format!("full read differs: {} vs {} batches", all.len(), want.len()));
            }
            for (base, count, _, bytes) in &written {
                let inside = Offset(base + u64::from(*count) - 1);
                let chunk = log.read(inside, 1, ReadBound::Durable).await.expect("read");
                let first = chunk.batches().next().expect("one batch at least");
                if first.base_offset().0 != *base || &payload(first.as_bytes()) != bytes {
                    return Some(format!("read from {inside} did not start with batch {base}"));
                }
            }
            for probe in [i64::MIN, -1, 0, 5, 10, 4_999, 9_999, 10_000, i64::MAX] {
                let found = log.offset_for_timestamp(probe).await.expect("time lookup");
                let brute = written.iter().find(|(_, _, max, _)| *max >= probe).map_or(log.next_offset().0, |w| w.0);
                if found.0 != brute {
                    return Some(format!("time {probe}: got offset {found}, expected {brute}"));
                }
            }
            None
        });
        prop_assert!(failure.is_none(), "{}", failure.unwrap_or_default());
    }

    /// Arbitrary bytes in a segment file (with or without a valid header) never make open or
    /// read panic; at worst they are reported as corruption.
    #[test]
    fn arbitrary_segment_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..20_000), valid_header: bool, two_segments: bool) {
        run(move || async move {
            let storage = FaultStorage::new();
            // Build a real log first so a valid header (and maybe data) exists to damage.
            let log = ShardLog::open(storage.clone(), dir(), small_config()).await.expect("open");
            let mut random = SplitMix64::new(body.len() as u64);
            let mut stamps = |i: usize| i as i64;
            fill(&log, &mut random, if two_segments { 90 } else { 3 }, &mut stamps).await;
            log.close().await.expect("close");
            let path = dir().join("00000000000000000000.seg");
            let mut bytes = storage.file_bytes(&path).expect("first segment exists");
            let from = if valid_header { 4096 } else { 0 };
            for (i, b) in body.iter().enumerate() {
                if let Some(slot) = bytes.get_mut(from + i) {
                    *slot = *b;
                }
            }
            storage.put_file(&path, &bytes);
            if let Ok(log) = ShardLog::open(storage.clone(), dir(), small_config()).await {
                let mut next = log.start_offset();
                for _ in 0..10_000 {
                    match log.read(next, 4096, ReadBound::Written).await {
                        Ok(chunk) if !chunk.is_empty() => next = chunk.next_offset(),
                        _ => break,
                    }
                }
            }
        });
    }
}

#[test]
fn failed_fdatasync_poisons_the_log_and_acknowledges_nothing_more() {
    run(|| async {
        let storage = FaultStorage::new();
        let log = ShardLog::open(storage.clone(), dir(), small_config())
            .await
            .expect("open");
        let mut random = SplitMix64::new(1);
        let first = log
            .append_durable(&random_batch(&mut random, 2, 10, 0), Epoch(1))
            .await
            .expect("durable");
        storage.fail_syncs_after(0);
        let second = log
            .append(&random_batch(&mut random, 2, 10, 0), Epoch(1))
            .await
            .expect("buffered");
        let waited = log.wait_durable(second.last_offset).await;
        assert!(
            matches!(waited, Err(LogError::Poisoned { .. })),
            "got {waited:?}"
        );
        assert_eq!(
            log.durable_offset(),
            Offset(first.last_offset.0 + 1),
            "nothing after the failure is durable"
        );
        assert!(log
            .poisoned()
            .is_some_and(|cause| cause.contains("fdatasync")));
        let later = log
            .append(&random_batch(&mut random, 1, 10, 0), Epoch(1))
            .await;
        assert!(
            matches!(later, Err(LogError::Poisoned { .. })),
            "got {later:?}"
        );
        assert!(matches!(log.close().await, Err(LogError::Poisoned { .. })));
        // Whatever a crash now leaves, the acknowledged batch is there.
        let image = storage.crash(3);
        let log = ShardLog::open(image, dir(), small_config())
            .await
            .expect("recovers");
        assert!(log.next_offset() > first.last_offset);
    });
}

#[test]
fn failed_write_poisons_the_log() {
    run(|| async {
        let storage = FaultStorage::new();
        let log = ShardLog::open(storage.clone(), dir(), small_config())
            .await
            .expect("open");
        let mut random = SplitMix64::new(2);
        storage.fail_writes_after(0);
        let appended = log
            .append(&random_batch(&mut random, 1, 10, 0), Epoch(1))
            .await
            .expect("buffered");
        assert!(matches!(
            log.wait_durable(appended.last_offset).await,
            Err(LogError::Poisoned { .. })
        ));
        assert_eq!(log.durable_offset(), Offset(0));
        assert!(matches!(
            log.append(&random_batch(&mut random, 1, 10, 0), Epoch(1))
                .await,
            Err(LogError::Poisoned { .. })
        ));
    });
}

/// Finds the position of the batch holding `offset` in a segment image.
fn position_of(bytes: &[u8], offset: u64) -> usize {
    let mut pos = 4096;
    loop {
        let header = BatchHeader::decode(&bytes[pos..]).expect("valid batch");
        if header.next_offset().0 > offset {
            return pos;
        }
        pos += header.batch_len as usize;
    }
}

#[test]
fn corruption_in_a_sealed_segment_is_a_typed_error_with_the_offset() {
    run(|| async {
        let storage = FaultStorage::new();
        let log = ShardLog::open(storage.clone(), dir(), small_config())
            .await
            .expect("open");
        let mut random = SplitMix64::new(3);
        let mut stamps = |i: usize| i as i64;
        let written = fill(&log, &mut random, 120, &mut stamps).await;
        assert!(
            log.segment_count() > 2,
            "the workload spans several segments"
        );
        let path = dir().join("00000000000000000000.seg");
        let bytes = storage.file_bytes(&path).expect("segment");
        let victim = written[5].0;
        let pos = position_of(&bytes, victim);
        // Damage the payload of the sixth batch, as bit rot would.
        assert!(storage.corrupt(&path, (pos + BATCH_HEADER_LEN + 3) as u64, &[0xde, 0xad]));
        // A live reader gets a corruption error, not records.
        match log.read(Offset(victim), 1 << 20, ReadBound::Durable).await {
            Err(LogError::Corruption {
                offset, position, ..
            }) => {
                assert_eq!(offset, Offset(victim));
                assert_eq!(position, pos as u64);
            }
            other => panic!("expected corruption, got {other:?}"),
        }
        // Earlier batches are still served.
        let chunk = log
            .read(Offset(0), 1, ReadBound::Durable)
            .await
            .expect("batch 0 is intact");
        assert_eq!(chunk.batch_count(), 1);
        // Regression (issue 8): a read whose chunk reached the damaged batch failed whole, so
        // a reader lost the sound batches before it too. It now gets those, and the next read,
        // starting at the damaged batch, gets the error.
        let chunk = log
            .read(Offset(0), 1 << 20, ReadBound::Durable)
            .await
            .expect("the sound batches before the damage");
        assert_eq!(chunk.batch_count(), 5);
        assert_eq!(chunk.next_offset(), Offset(victim));
        assert!(matches!(
            log.read(chunk.next_offset(), 1 << 20, ReadBound::Durable).await,
            Err(LogError::Corruption { offset, .. }) if offset == Offset(victim)
        ));
        log.close().await.expect("close");
        // Opening trusts the sealed segment's index file, so the damage shows on read...
        let log = ShardLog::open(storage.clone(), dir(), small_config())
            .await
            .expect("open");
        assert!(matches!(
            log.read(Offset(victim), 1, ReadBound::Durable).await,
            Err(LogError::Corruption { offset, .. }) if offset == Offset(victim)
        ));
        log.close().await.expect("close");
        // ...and a verifying open refuses to start over it.
        let verify = LogConfig {
            verify_sealed_segments_on_open: true,
            ..small_config()
        };
        match ShardLog::open(storage.clone(), dir(), verify).await {
            Err(LogError::Corruption { offset, .. }) => assert_eq!(offset, Offset(victim)),
            Ok(_) => panic!("open succeeded over corruption"),
            Err(other) => panic!("expected corruption, got {other}"),
        }
    });
}

/// Sealed segments are opened from their index files; a missing or damaged index file makes
/// recovery scan the segment instead, with the same result.
#[test]
fn index_files_and_scans_agree() {
    run(|| async {
        let storage = FaultStorage::new();
        let log = ShardLog::open(storage.clone(), dir(), small_config())
            .await
            .expect("open");
        let mut random = SplitMix64::new(10);
        let mut clock = SplitMix64::new(11);
        let mut stamps = |_: usize| clock.below(100_000) as i64;
        fill(&log, &mut random, 300, &mut stamps).await;
        log.close().await.expect("close");
        let indexes: Vec<_> = storage
            .paths()
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "idx"))
            .collect();
        assert!(indexes.len() >= 3, "every sealed segment has an index file");
        let probe = |storage: FaultStorage, config: LogConfig| async move {
            let log = ShardLog::open(storage, dir(), config).await.expect("open");
            let all = read_all(&log, Offset(0)).await;
            let mut times = Vec::new();
            for t in (0..100_000).step_by(997) {
                times.push(log.offset_for_timestamp(t).await.expect("time"));
            }
            let mut starts = Vec::new();
            for offset in (0..log.next_offset().0).step_by(13) {
                let chunk = log
                    .read(Offset(offset), 1, ReadBound::Durable)
                    .await
                    .expect("read");
                starts.push(chunk.batches().next().map(|b| b.base_offset()));
            }
            log.close().await.expect("close");
            (all, times, starts)
        };
        let from_indexes = probe(storage.clone(), small_config()).await;
        let scanned = probe(
            storage.clone(),
            LogConfig {
                verify_sealed_segments_on_open: true,
                ..small_config()
            },
        )
        .await;
        assert!(from_indexes == scanned, "index files and scans disagree");
        // Damage one index file and delete another: both segments are scanned instead.
        let damaged = &indexes[0];
        let mut bytes = storage.file_bytes(damaged).expect("index bytes");
        bytes[20] ^= 1;
        storage.put_file(damaged, &bytes);
        storage.put_file(&indexes[1], &[]);
        let without = probe(storage.clone(), small_config()).await;
        assert!(
            without == scanned,
            "a damaged or empty index file changed what the log holds"
        );
    });
}

#[test]
fn corruption_in_the_active_segment_followed_by_data_is_not_a_torn_tail() {
    run(|| async {
        let storage = FaultStorage::new();
        let config = LogConfig {
            segment_bytes_max: 1 << 20,
            write_buffer_bytes: 16 << 10,
            ..small_config()
        };
        let log = ShardLog::open(storage.clone(), dir(), config.clone())
            .await
            .expect("open");
        let mut random = SplitMix64::new(4);
        let mut stamps = |i: usize| i as i64;
        let written = fill(&log, &mut random, 200, &mut stamps).await;
        log.close().await.expect("close");
        assert_eq!(
            storage
                .paths()
                .iter()
                .filter(|p| p.extension().is_some_and(|e| e == "seg"))
                .count(),
            1
        );
        let path = dir().join("00000000000000000000.seg");
        let bytes = storage.file_bytes(&path).expect("segment");
        // A batch early in the segment, with far more than one write window of data after it.
        let victim = written[3].0;
        let pos = position_of(&bytes, victim);
        storage.corrupt(&path, (pos + BATCH_HEADER_LEN + 1) as u64, &[0xff; 4]);
        match ShardLog::open(storage.clone(), dir(), config).await {
            Err(LogError::Corruption {
                offset, position, ..
            }) => {
                assert_eq!(offset, Offset(victim));
                assert_eq!(position, pos as u64);
            }
            Ok(_) => panic!("open succeeded over corruption"),
            Err(other) => panic!("expected corruption, got {other}"),
        }
    });
}

#[test]
fn trim_moves_the_start_durably_and_deletes_whole_segments() {
    run(|| async {
        let storage = FaultStorage::new();
        let log = ShardLog::open(storage.clone(), dir(), small_config())
            .await
            .expect("open");
        let mut random = SplitMix64::new(5);
        let mut stamps = |i: usize| i as i64;
        let written = fill(&log, &mut random, 150, &mut stamps).await;
        let segments_before = log.segment_count();
        let cut = written[100].0 + 1;
        log.trim(Offset(cut)).await.expect("trim");
        assert_eq!(log.start_offset(), Offset(cut));
        assert!(
            log.segment_count() < segments_before,
            "whole segments below the start are deleted"
        );
        assert!(matches!(
            log.read(Offset(cut - 1), 10, ReadBound::Durable).await,
            Err(LogError::Trimmed { requested, start }) if requested == Offset(cut - 1) && start == Offset(cut)
        ));
        let chunk = log
            .read(Offset(cut), 10, ReadBound::Durable)
            .await
            .expect("read at the start");
        assert_eq!(
            chunk.batches().next().map(|b| b.base_offset()),
            Some(Offset(written[100].0))
        );
        assert!(matches!(
            log.trim(Offset(1 << 40)).await,
            Err(LogError::OffsetOutOfRange { .. })
        ));
        log.close().await.expect("close");
        // The start survives a crash right after the trim returned.
        let log = ShardLog::open(storage.crash(11), dir(), small_config())
            .await
            .expect("reopen");
        assert_eq!(log.start_offset(), Offset(cut));
    });
}

#[test]
fn retention_deletes_old_and_excess_segments_but_never_the_active_one() {
    run(|| async {
        let storage = FaultStorage::new();
        let config = LogConfig {
            retention_bytes: Some(150 << 10),
            retention_age_ms: Some(1_000),
            ..small_config()
        };
        let log = ShardLog::open(storage.clone(), dir(), config)
            .await
            .expect("open");
        let mut random = SplitMix64::new(6);
        let mut stamps = |i: usize| i as i64;
        fill(&log, &mut random, 400, &mut stamps).await;
        let before = log.segment_count();
        let size_before = log.size_bytes();
        assert!(size_before > 150 << 10);
        // Records are stamped 0..400 ms: at now = 500 none is older than 1 s, so only size counts.
        let deleted = log.enforce_retention(500).await.expect("retention");
        assert!(deleted > 0);
        assert!(
            log.size_bytes() <= 150 << 10,
            "size {} after retention",
            log.size_bytes()
        );
        assert_eq!(log.segment_count(), before - deleted);
        let start = log.start_offset();
        assert!(start > Offset(0));
        assert!(matches!(
            log.read(Offset(0), 10, ReadBound::Durable).await,
            Err(LogError::Trimmed { .. })
        ));
        // Far in the future every sealed segment is too old; the active one stays.
        log.enforce_retention(i64::MAX / 2)
            .await
            .expect("retention");
        assert_eq!(log.segment_count(), 1);
        let next = log.next_offset();
        let chunk = log
            .read(log.start_offset(), 1 << 20, ReadBound::Durable)
            .await
            .expect("active segment readable");
        assert!(!chunk.is_empty());
        log.close().await.expect("close");
        let log = ShardLog::open(storage.clone(), dir(), small_config())
            .await
            .expect("reopen");
        assert_eq!(log.next_offset(), next, "offsets continue after retention");
    });
}

#[test]
fn a_tailing_reader_wakes_when_data_becomes_durable() {
    run(|| async {
        let storage = FaultStorage::new();
        let log = std::rc::Rc::new(
            ShardLog::open(storage, dir(), small_config())
                .await
                .expect("open"),
        );
        let reader = {
            let log = log.clone();
            runnel_segment::runtime::spawn(async move {
                log.wait_for(Offset(0), ReadBound::Durable)
                    .await
                    .expect("wait");
                let chunk = log
                    .read(Offset(0), 1 << 20, ReadBound::Durable)
                    .await
                    .expect("read");
                chunk.batches().map(|b| b.record_count()).sum::<u32>()
            })
        };
        let mut random = SplitMix64::new(7);
        log.append(&random_batch(&mut random, 4, 10, 0), Epoch(1))
            .await
            .expect("append");
        assert_eq!(reader.join().await, 4);
    });
}

#[test]
fn appends_wait_for_room_when_the_buffer_is_full() {
    run(|| async {
        let storage = FaultStorage::new();
        let log = std::rc::Rc::new(
            ShardLog::open(storage, dir(), small_config())
                .await
                .expect("open"),
        );
        let mut random = SplitMix64::new(8);
        // Far more than the 16 KiB buffer, appended without waiting for durability in between.
        let mut tasks = Vec::new();
        for i in 0..200 {
            let batch = random_batch(&mut random, 2, 900, i);
            let log = log.clone();
            tasks.push(runnel_segment::runtime::spawn(async move {
                log.append(&batch, Epoch(1)).await
            }));
        }
        let mut offsets = Vec::new();
        for task in tasks {
            offsets.push(task.join().await.expect("append").base_offset.0);
        }
        offsets.sort_unstable();
        offsets.dedup();
        assert_eq!(offsets.len(), 200, "every append got its own offset");
        assert_eq!(log.next_offset(), Offset(400));
    });
}

#[test]
fn bad_batches_are_refused_and_change_nothing() {
    run(|| async {
        let storage = FaultStorage::new();
        let config = LogConfig {
            limits: runnel_core::Limits {
                batch_bytes_max: 2048,
                ..runnel_core::Limits::DEFAULT
            },
            ..small_config()
        };
        let log = ShardLog::open(storage, dir(), config).await.expect("open");
        let mut random = SplitMix64::new(9);
        let big = random_batch(&mut random, 4, 0, 0);
        let mut big_values = runnel_core::BatchBuilder::new();
        big_values.push(runnel_core::Record::at(vec![7u8; 4000], 1));
        let big = if big.len() > 2048 {
            big
        } else {
            big_values
                .finish(&runnel_core::Limits::DEFAULT)
                .expect("encode")
        };
        assert!(matches!(
            log.append(&big, Epoch(1)).await,
            Err(LogError::BatchTooLarge { .. })
        ));
        let mut damaged = random_batch(&mut random, 2, 50, 0);
        let last = damaged.len() - 20;
        damaged[last] ^= 1;
        assert!(matches!(
            log.append(&damaged, Epoch(1)).await,
            Err(LogError::InvalidBatch(_))
        ));
        assert!(matches!(
            log.append(&[1, 2, 3], Epoch(1)).await,
            Err(LogError::InvalidBatch(_))
        ));
        assert_eq!(log.next_offset(), Offset(0));
        assert!(matches!(
            log.read(Offset(5), 10, ReadBound::Written).await,
            Err(LogError::OffsetOutOfRange { .. })
        ));
        let ok = log
            .append_durable(&random_batch(&mut random, 1, 50, 0), Epoch(1))
            .await
            .expect("good batch");
        assert_eq!(ok.base_offset, Offset(0));
    });
}

/// Regression: a torn tail recovered by a writer with another write-buffer size. The old
/// segment is sealed and a new one started; the torn bytes must be zeroed in the *old* segment,
/// or its next scan reports them as corruption.
#[test]
fn a_torn_tail_under_a_new_buffer_size_stays_clean() {
    run(|| async {
        let storage = FaultStorage::new();
        let config = LogConfig {
            segment_bytes_max: 1 << 20,
            ..small_config()
        };
        let log = ShardLog::open(storage.clone(), dir(), config.clone())
            .await
            .expect("open");
        let mut random = SplitMix64::new(12);
        let mut stamps = |i: usize| i as i64;
        let written = fill(&log, &mut random, 10, &mut stamps).await;
        log.close().await.expect("close");
        let path = dir().join("00000000000000000000.seg");
        let bytes = storage.file_bytes(&path).expect("segment");
        let end = position_of(&bytes, written[9].0)
            + BatchHeader::decode(&bytes[position_of(&bytes, written[9].0)..])
                .expect("batch")
                .batch_len as usize;
        storage.corrupt(&path, end as u64, &[0xab; 200]);
        let bigger = LogConfig {
            write_buffer_bytes: 32 << 10,
            ..config
        };
        for round in 0..2 {
            let log = ShardLog::open(storage.clone(), dir(), bigger.clone())
                .await
                .unwrap_or_else(|e| panic!("open {round} failed: {e}"));
            assert_eq!(log.next_offset().0, written[9].0 + u64::from(written[9].1));
            assert_eq!(read_all(&log, Offset(0)).await.len(), 10);
            log.close().await.expect("close");
        }
        let verify = LogConfig {
            verify_sealed_segments_on_open: true,
            ..bigger
        };
        ShardLog::open(storage, dir(), verify)
            .await
            .expect("a full scan finds no stale bytes");
    });
}

/// Regression: a last segment whose header does not decode but which holds batches is damage
/// to report, not an unborn segment to delete (deleting it would hand its offsets out again).
#[test]
fn a_damaged_header_on_a_segment_with_data_is_corruption_not_deletion() {
    run(|| async {
        let storage = FaultStorage::new();
        let log = ShardLog::open(storage.clone(), dir(), small_config())
            .await
            .expect("open");
        let mut random = SplitMix64::new(13);
        let mut stamps = |i: usize| i as i64;
        fill(&log, &mut random, 5, &mut stamps).await;
        log.close().await.expect("close");
        let path = dir().join("00000000000000000000.seg");
        storage.corrupt(&path, 9, &[0x77]);
        match ShardLog::open(storage.clone(), dir(), small_config()).await {
            Err(LogError::Corruption { position: 0, .. }) => {}
            Ok(log) => panic!(
                "opened over a damaged header at next offset {}",
                log.next_offset()
            ),
            Err(other) => panic!("expected corruption, got {other}"),
        }
        assert!(
            storage.file_bytes(&path).is_some(),
            "the segment is still there"
        );
    });
}

/// A segment created by a roll that crashed before its header was durable held nothing and
/// is removed; the log continues from the previous segment.
#[test]
fn an_unborn_last_segment_is_removed() {
    run(|| async {
        let storage = FaultStorage::new();
        let log = ShardLog::open(storage.clone(), dir(), small_config())
            .await
            .expect("open");
        let mut random = SplitMix64::new(14);
        let mut stamps = |i: usize| i as i64;
        fill(&log, &mut random, 5, &mut stamps).await;
        let next = log.next_offset();
        log.close().await.expect("close");
        let unborn = dir().join(format!("{:020}.seg", next.0));
        storage.put_file(&unborn, &vec![0u8; 64 << 10]);
        let log = ShardLog::open(storage.clone(), dir(), small_config())
            .await
            .expect("open");
        assert_eq!(log.next_offset(), next);
        assert_eq!(log.segment_count(), 1);
        assert!(storage.file_bytes(&unborn).is_none());
    });
}

/// Retention persists the start it moves to, so that even if every segment file were lost
/// the log would never hand out an offset below it again.
#[test]
fn retention_persists_the_new_start() {
    run(|| async {
        let storage = FaultStorage::new();
        let config = LogConfig {
            retention_bytes: Some(1),
            ..small_config()
        };
        let log = ShardLog::open(storage.clone(), dir(), config)
            .await
            .expect("open");
        let mut random = SplitMix64::new(15);
        let mut stamps = |i: usize| i as i64;
        fill(&log, &mut random, 200, &mut stamps).await;
        assert!(log.enforce_retention(0).await.expect("retention") > 0);
        let start = log.start_offset();
        log.close().await.expect("close");
        for path in storage.paths() {
            if path.extension().is_some_and(|e| e == "seg" || e == "idx") {
                storage.put_file(&path, &[]);
            }
        }
        let image = storage.crash(1);
        for path in image.paths() {
            if path.extension().is_some_and(|e| e == "seg" || e == "idx") {
                image.remove_now(&path);
            }
        }
        let log = ShardLog::open(image, dir(), small_config())
            .await
            .expect("open");
        assert_eq!(log.start_offset(), start);
        assert_eq!(
            log.next_offset(),
            start,
            "no offset below the persisted start is reused"
        );
    });
}

/// A consume stream allowed fewer records than it read keeps only the whole batches that end
/// within its budget (issue 9: it sent a whole 1 MiB chunk for the few records an ack made
/// room for), and keeps the first batch when even that one reaches past the budget.
#[test]
fn a_chunk_keeps_the_batches_ending_by_an_offset() {
    run(|| async {
        let log = ShardLog::open(FaultStorage::new(), dir(), small_config())
            .await
            .expect("open");
        let mut random = SplitMix64::new(21);
        let mut stamps = |i: usize| i as i64;
        let written = fill(&log, &mut random, 6, &mut stamps).await;
        log.sync_all().await.expect("durable");
        let ends: Vec<u64> = written.iter().map(|b| b.0 + u64::from(b.1)).collect();
        let read = || log.read(Offset(0), 1 << 20, ReadBound::Durable);
        let mut chunk = read().await.expect("read");
        assert_eq!(chunk.batch_count(), 6);
        let all_bytes = chunk.as_bytes().len();
        // An offset inside the fourth batch: the first three stay.
        assert!(chunk.keep_batches_ending_by(Offset(ends[2] + 1)));
        assert_eq!(chunk.batch_count(), 3);
        assert_eq!(chunk.next_offset(), Offset(ends[2]));
        let kept: Vec<u64> = chunk.batches().map(|b| b.base_offset().0).collect();
        assert_eq!(kept, vec![written[0].0, written[1].0, written[2].0]);
        assert!(chunk.as_bytes().len() < all_bytes);
        // At a batch's end exactly, that batch stays.
        let mut chunk = read().await.expect("read");
        assert!(chunk.keep_batches_ending_by(Offset(ends[4])));
        assert_eq!(chunk.batch_count(), 5);
        // Inside the first batch: nothing changes, and the answer says so.
        let (i, multi) = written
            .iter()
            .enumerate()
            .find(|(_, b)| b.1 > 1)
            .expect("a batch of several records");
        let mut chunk = log
            .read(Offset(multi.0), 1 << 20, ReadBound::Durable)
            .await
            .expect("read");
        let (count, bytes) = (chunk.batch_count(), chunk.as_bytes().len());
        assert!(!chunk.keep_batches_ending_by(Offset(ends[i] - 1)));
        assert_eq!(
            (chunk.batch_count(), chunk.as_bytes().len()),
            (count, bytes)
        );
        log.close().await.expect("close");
    });
}
