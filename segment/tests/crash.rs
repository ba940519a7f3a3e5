//! Crash tests on the fault-injecting storage: for thousands of seeded workloads, pull the plug
//! at a random instant (several times in a row), recover, and check that the log is exactly a
//! prefix of what was appended, holding every batch that was durable at the crash, with dense
//! offsets — and that it goes on working after recovery.
//!
//! `RUNNEL_CRASH_SEEDS=n` runs more seeds; `RUNNEL_CRASH_SEED=s` replays one.

mod common;

use std::path::Path;

use common::{payload, random_batch, read_all, run, small_config};
use runnel_core::{Epoch, Offset};
use runnel_segment::log::ReadBound;
use runnel_segment::storage::fault::SplitMix64;
use runnel_segment::{FaultStorage, ShardLog};

/// What the test appended: base offset, record count, payload bytes.
struct Expected {
    base: u64,
    count: u32,
    payload: Vec<u8>,
}

async fn yield_times(times: u64) {
    for _ in 0..times {
        yield_once().await;
    }
}

/// Yields once to the executor.
async fn yield_once() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

async fn workload(seed: u64) -> Result<(), String> {
    let mut random = SplitMix64::new(seed);
    let dir = Path::new("/crash/log");
    let config = small_config();
    let mut storage = FaultStorage::new();
    let mut expected: Vec<Expected> = Vec::new();
    let mut durable_next = 0u64; // every batch below this offset was acknowledged durable
    let mut trimmed_to = 0u64; // a completed trim guarantees the start is at least this
    let mut timestamp = 1_000_000i64;
    for cycle in 0..3 {
        let log = ShardLog::open(storage.clone(), dir, config.clone())
            .await
            .map_err(|e| format!("cycle {cycle}: open after crash failed: {e}"))?;
        // 1. What recovery kept must be a prefix holding everything durable.
        let start = log.start_offset().0;
        if start < trimmed_to {
            return Err(format!(
                "start {start} is before the completed trim to {trimmed_to}"
            ));
        }
        let next = log.next_offset().0;
        if next < durable_next {
            return Err(format!(
                "cycle {cycle}: lost durable data: log ends at {next}, {durable_next} were durable"
            ));
        }
        let recovered = read_all(&log, Offset(start)).await;
        let mut expected_offset = None;
        for (base, count, _, bytes) in &recovered {
            let Some(original) = expected.iter().find(|e| e.base == *base) else {
                return Err(format!(
                    "cycle {cycle}: batch at offset {base} was never appended with that base"
                ));
            };
            if original.count != *count || &original.payload != bytes {
                return Err(format!(
                    "cycle {cycle}: batch at offset {base} differs from what was appended"
                ));
            }
            if let Some(offset) = expected_offset {
                if offset != *base {
                    return Err(format!(
                        "cycle {cycle}: offsets not dense: expected {offset}, found {base}"
                    ));
                }
            }
            expected_offset = Some(base + u64::from(*count));
        }
        if let Some(end) = expected_offset {
            if end != next {
                return Err(format!(
                    "cycle {cycle}: read ended at {end} but next offset is {next}"
                ));
            }
        }
        // Forget what did not survive; the log continues from `next`.
        expected.retain(|e| e.base < next);
        // 2. A new workload, then a crash at a random instant.
        let operations = 1 + random.below(120);
        for _ in 0..operations {
            match random.below(12) {
                0..=6 => {
                    let count = 1 + random.below(6) as usize;
                    let batch = random_batch(&mut random, count, 700, timestamp);
                    timestamp += count as i64;
                    let appended = log
                        .append(&batch, Epoch(cycle))
                        .await
                        .map_err(|e| format!("append failed: {e}"))?;
                    if appended.base_offset.0
                        != expected
                            .last()
                            .map_or(next, |e| e.base + u64::from(e.count))
                    {
                        return Err(format!(
                            "append got offset {} out of sequence",
                            appended.base_offset
                        ));
                    }
                    expected.push(Expected {
                        base: appended.base_offset.0,
                        count: count as u32,
                        payload: payload(&batch),
                    });
                }
                7 | 8 => {
                    if let Some(last) = expected.last() {
                        let last_offset = last.base + u64::from(last.count) - 1;
                        if last_offset >= log.start_offset().0 {
                            log.wait_durable(Offset(last_offset))
                                .await
                                .map_err(|e| format!("wait_durable failed: {e}"))?;
                            durable_next = durable_next.max(last_offset + 1);
                        }
                    }
                }
                9 | 10 => yield_times(random.below(6)).await,
                _ => {
                    let durable = log.durable_offset().0;
                    let start = log.start_offset().0;
                    if durable > start && random.below(4) == 0 {
                        let to = start + random.below(durable - start + 1);
                        log.trim(Offset(to))
                            .await
                            .map_err(|e| format!("trim failed: {e}"))?;
                        trimmed_to = trimmed_to.max(to);
                    }
                }
            }
        }
        let image = storage.crash(random.next_u64());
        drop(log);
        storage = image;
    }
    // 3. After the last crash the log still takes appends and serves them.
    let log = ShardLog::open(storage.clone(), dir, config.clone())
        .await
        .map_err(|e| format!("final open failed: {e}"))?;
    let next = log.next_offset();
    if next.0 < durable_next {
        return Err(format!(
            "final: lost durable data: ends at {next}, {durable_next} durable"
        ));
    }
    let batch = random_batch(&mut random, 3, 100, timestamp);
    let appended = log
        .append_durable(&batch, Epoch(9))
        .await
        .map_err(|e| format!("append after recovery failed: {e}"))?;
    if appended.base_offset != next {
        return Err(format!(
            "append after recovery got {} instead of {next}",
            appended.base_offset
        ));
    }
    let chunk = log
        .read(appended.base_offset, 1 << 20, ReadBound::Durable)
        .await
        .map_err(|e| format!("read after recovery failed: {e}"))?;
    let first = chunk
        .batches()
        .next()
        .ok_or("appended batch not readable")?;
    if payload(first.as_bytes()) != payload(&batch) {
        return Err("batch appended after recovery reads back different".into());
    }
    log.close()
        .await
        .map_err(|e| format!("close failed: {e}"))?;
    Ok(())
}

#[test]
fn recovery_keeps_exactly_a_durable_prefix_across_seeded_crashes() {
    let seeds: Vec<u64> = match std::env::var("RUNNEL_CRASH_SEED") {
        Ok(seed) => vec![seed.parse().expect("RUNNEL_CRASH_SEED is a number")],
        Err(_) => {
            let count: u64 = std::env::var("RUNNEL_CRASH_SEEDS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(5000);
            (0..count).collect()
        }
    };
    let failures = run(move || async move {
        let mut failures = Vec::new();
        for seed in seeds {
            if let Err(reason) = workload(seed).await {
                failures.push(format!(
                    "seed {seed}: {reason} (replay: RUNNEL_CRASH_SEED={seed})"
                ));
            }
        }
        failures
    });
    assert!(
        failures.is_empty(),
        "{} workloads failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
