//! Bit rot in the active segment (issue 8, contract points 2, 5 and 6 of ARCHITECTURE.md §6):
//! one flipped bit anywhere in the last segment file must never make recovery drop
//! acknowledged records and hand their offsets out again. Either the damage is reported as
//! corruption, or every acknowledged record reads back unchanged and the log continues after
//! them. Before the fix, a flip within the torn-write window (8 MiB by default, the whole file
//! of a young shard) was taken for a torn tail and the log was cut there.

mod common;

use std::path::{Path, PathBuf};

use common::{payload, random_batch, read_all, run};
use proptest::prelude::*;
use runnel_core::{BatchHeader, Epoch, Offset};
use runnel_segment::storage::fault::SplitMix64;
use runnel_segment::{FaultStorage, LogConfig, LogError, ShardLog};

const DIR: &str = "/rot/log";

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 256 << 10,
        write_buffer_bytes: 32 << 10,
        index_interval_bytes: 4 << 10,
        acked_checkpoint_idle_ms: 5,
        ..LogConfig::default()
    }
}

/// (base offset, record count, payload) of each appended batch.
type Written = Vec<(u64, u32, Vec<u8>)>;

/// Appends `batches` batches; every `durable_every`-th waits until durable. Returns what was
/// written and the offset below which every batch was acknowledged durable.
async fn append_some(
    log: &ShardLog<FaultStorage>,
    random: &mut SplitMix64,
    batches: usize,
    durable_every: usize,
) -> (Written, u64) {
    let mut written = Vec::new();
    let mut acked = 0;
    for i in 0..batches {
        let count = 1 + random.below(6) as usize;
        let batch = random_batch(random, count, 600, i as i64);
        let appended = if i % durable_every == durable_every - 1 {
            let appended = log.append_durable(&batch, Epoch(1)).await.expect("append");
            acked = appended.last_offset.0 + 1;
            appended
        } else {
            log.append(&batch, Epoch(1)).await.expect("append")
        };
        written.push((appended.base_offset.0, count as u32, payload(&batch)));
    }
    (written, acked)
}

fn last_segment(storage: &FaultStorage) -> PathBuf {
    storage
        .paths()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .max()
        .expect("a segment")
}

/// Flips one bit of the segment, in its header block, its batches or the first bytes after
/// them (what lies further is zeros that recovery checks separately).
fn flip(storage: &FaultStorage, path: &Path, selector: u64, bit: u8) -> u64 {
    let bytes = storage.file_bytes(path).expect("segment bytes");
    let mut data_end = 4096usize;
    while let Some(Ok(header)) = bytes.get(data_end..).map(BatchHeader::decode) {
        data_end += header.batch_len as usize;
    }
    let span = (data_end + 256).min(bytes.len());
    let at = selector % span as u64;
    let old = bytes[at as usize];
    assert!(storage.corrupt(path, at, &[old ^ (1 << (bit % 8))]));
    at
}

/// Reopens and checks the promise: corruption reported, or every acknowledged batch intact
/// and the next offset past them. Returns whether the damage was reported.
async fn reopen_and_check(
    storage: FaultStorage,
    written: &Written,
    acked: u64,
    at: u64,
) -> Result<bool, String> {
    let log = match ShardLog::open(storage, Path::new(DIR), config()).await {
        Err(LogError::Corruption { .. }) => return Ok(true),
        Err(other) => return Err(format!("flip at byte {at}: unexpected error {other}")),
        Ok(log) => log,
    };
    let next = log.next_offset().0;
    if next < acked {
        return Err(format!(
            "flip at byte {at}: the log restarts at offset {next}, but offsets below {acked} were acknowledged"
        ));
    }
    let recovered = read_all(&log, Offset(0)).await;
    for (base, count, _, bytes) in &recovered {
        let original = written
            .iter()
            .find(|w| w.0 == *base)
            .ok_or_else(|| format!("flip at byte {at}: batch at {base} was never written"))?;
        if original.1 != *count || &original.2 != bytes {
            return Err(format!(
                "flip at byte {at}: batch at {base} reads back changed"
            ));
        }
    }
    let read_end = recovered.last().map_or(0, |r| r.0 + u64::from(r.1));
    if read_end != next {
        return Err(format!(
            "flip at byte {at}: reads end at {read_end}, next offset is {next}"
        ));
    }
    log.close().await.map_err(|e| e.to_string())?;
    Ok(false)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// After a clean close everything written was acknowledged: no flip may lose any of it.
    #[test]
    fn a_flipped_bit_after_a_clean_stop_never_loses_acknowledged_records(
        seed: u64, batches in 1usize..120, selector: u64, bit: u8,
    ) {
        let outcome = run(move || async move {
            let storage = FaultStorage::new();
            let log = ShardLog::open(storage.clone(), Path::new(DIR), config()).await.expect("open");
            let mut random = SplitMix64::new(seed);
            let (written, _) = append_some(&log, &mut random, batches, 3).await;
            log.close().await.expect("close");
            let acked = written.last().map_or(0, |w| w.0 + u64::from(w.1));
            let path = last_segment(&storage);
            let at = flip(&storage, &path, selector, bit);
            reopen_and_check(storage, &written, acked, at).await
        });
        if let Err(error) = outcome {
            prop_assert!(false, "seed {seed}: {error}");
        }
    }

    /// After a crash, what was acknowledged durable before the log went idle (the checkpoint
    /// is written with the next write, or after `acked_checkpoint_idle_ms`) is never lost.
    #[test]
    fn a_flipped_bit_after_a_crash_never_loses_records_acknowledged_before_idling(
        seed: u64, batches in 1usize..120, selector: u64, bit: u8, crash_seed: u64,
    ) {
        let outcome = run(move || async move {
            let storage = FaultStorage::new();
            let log = ShardLog::open(storage.clone(), Path::new(DIR), config()).await.expect("open");
            let mut random = SplitMix64::new(seed);
            let (written, acked) = append_some(&log, &mut random, batches, 2).await;
            // Idle long enough for the checkpoint of the last acknowledged batch.
            runnel_segment::runtime::sleep(std::time::Duration::from_millis(30)).await;
            let crashed = storage.crash(crash_seed);
            drop(log);
            let path = last_segment(&crashed);
            let at = flip(&crashed, &path, selector, bit);
            reopen_and_check(crashed, &written, acked, at).await
        });
        if let Err(error) = outcome {
            prop_assert!(false, "seed {seed}: {error}");
        }
    }
}

/// The exact report of issue 8: 3,000 acknowledged records in a fresh shard, one byte flipped
/// 2,000 bytes into the data; the shard restarted at offset 0 and handed offset 0 out again.
#[test]
fn a_byte_flipped_early_in_a_young_shard_is_reported() {
    run(|| async {
        let storage = FaultStorage::new();
        let config = LogConfig::default();
        let log = ShardLog::open(storage.clone(), Path::new(DIR), config.clone())
            .await
            .expect("open");
        let mut random = SplitMix64::new(8);
        let mut records = 0;
        while records < 3000 {
            let batch = random_batch(&mut random, 100, 20, records as i64);
            log.append(&batch, Epoch(1)).await.expect("append");
            records += 100;
        }
        log.sync_all().await.expect("durable");
        log.close().await.expect("close");
        let path = last_segment(&storage);
        let byte = storage.file_bytes(&path).expect("bytes")[4096 + 2000];
        storage.corrupt(&path, 4096 + 2000, &[byte ^ 0xff]);
        match ShardLog::open(storage.clone(), Path::new(DIR), config).await {
            Err(LogError::Corruption { reason, .. }) => {
                assert!(reason.contains("acknowledged"), "{reason}")
            }
            Err(other) => panic!("expected corruption, got {other}"),
            Ok(log) => panic!(
                "damage accepted: the log restarts at offset {}",
                log.next_offset()
            ),
        }
    });
}
