//! Offset reservations and lost ranges (`memory` durability), on the fault-injecting storage.
//!
//! Regression for offsets handed out twice after a crash (the Jepsen-style run with
//! `RUNNEL_JEPSEN_DURABILITY=memory`, seed 3): a log whose appends are acknowledged before they
//! are durable reserves offsets durably first, and after a crash continues beyond everything
//! reserved, recording the offsets it lost as a lost range that reads report. Seeded workloads
//! cross several reservations, pull the plug at a random instant (which may fall inside a
//! reservation's file replacement), then fail the n-th sync of the reopening (each step of
//! recording the lost range in turn), crash again and reopen.

mod common;

use std::path::Path;

use common::{payload, random_batch, run, small_config};
use runnel_core::{Epoch, Offset};
use runnel_segment::log::ReadBound;
use runnel_segment::storage::fault::SplitMix64;
use runnel_segment::{FaultStorage, LogConfig, LogError, ShardLog, Storage};

/// A batch the log handed offsets to: base offset, record count, payload bytes.
struct HandedOut {
    base: u64,
    count: u32,
    payload: Vec<u8>,
}

fn config() -> LogConfig {
    LogConfig {
        // Small steps: a workload crosses several reservations.
        offset_reserve_step: 16,
        ..small_config()
    }
}

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

/// Checks what a reopened log holds against what was handed out: every handed-out offset
/// holds its batch or lies in a lost range, never anything else; the log is dense apart from
/// lost ranges; nothing handed out is handed out again. Returns the number of lost offsets
/// the reads reported.
async fn check<S: Storage>(log: &ShardLog<S>, handed: &[HandedOut]) -> Result<u64, String> {
    let handed_end = handed.last().map_or(0, |h| h.base + u64::from(h.count));
    let next = log.next_offset().0;
    if next < handed_end {
        return Err(format!(
            "the log continues at {next}, below {handed_end} already handed out"
        ));
    }
    let mut at = log.start_offset();
    let mut lost = 0u64;
    let mut found = Vec::new();
    while at.0 < next {
        match log.read(at, 64 << 10, ReadBound::Written).await {
            Ok(chunk) if chunk.is_empty() => return Err(format!("nothing at {at} below {next}")),
            Ok(chunk) => {
                for batch in chunk.batches() {
                    if batch.base_offset() != at {
                        return Err(format!("offsets jump from {at} to {}", batch.base_offset()));
                    }
                    found.push((at.0, batch.record_count(), payload(batch.as_bytes())));
                    at = Offset(at.0 + u64::from(batch.record_count()));
                }
            }
            Err(LogError::LostRange {
                requested,
                from,
                to,
            }) => {
                if requested != at || from != at || to <= at {
                    return Err(format!("lost range {from}..{to} read at {at}"));
                }
                lost += to.0 - from.0;
                at = to;
            }
            Err(error) => return Err(format!("read at {at}: {error}")),
        }
    }
    for handed_out in handed {
        let holds = found.iter().find(|(base, _, _)| *base == handed_out.base);
        match holds {
            Some((_, count, bytes))
                if *count == handed_out.count && *bytes == handed_out.payload => {}
            Some(_) => return Err(format!("offset {} holds another batch", handed_out.base)),
            None => {
                // Not found as a batch: it must be lost, never covered by another batch.
                let end = handed_out.base + u64::from(handed_out.count);
                if found.iter().any(|(base, count, _)| {
                    *base < end && base + u64::from(*count) > handed_out.base
                }) {
                    return Err(format!(
                        "offset {} was given to another batch",
                        handed_out.base
                    ));
                }
                match log
                    .read(Offset(handed_out.base), 1, ReadBound::Written)
                    .await
                {
                    Err(LogError::LostRange { .. }) => {}
                    Err(LogError::Trimmed { .. }) => {}
                    other => {
                        return Err(format!(
                            "offset {} is gone but not reported lost: {:?}",
                            handed_out.base,
                            other.map(|c| c.next_offset())
                        ))
                    }
                }
            }
        }
    }
    Ok(lost)
}

async fn workload(seed: u64, fail_sync_at: u64) -> Result<(u64, u64), String> {
    let mut lost_seen = 0u64;
    let mut failed_opens = 0u64;
    let mut random = SplitMix64::new(seed);
    let dir = Path::new("/lost/log");
    let config = config();
    let mut storage = FaultStorage::new();
    let mut handed: Vec<HandedOut> = Vec::new();
    let mut timestamp = 1_000_000i64;
    for cycle in 0..3u64 {
        let log = ShardLog::open(storage.clone(), dir, config.clone())
            .await
            .map_err(|e| format!("cycle {cycle}: open failed: {e}"))?;
        lost_seen += check(&log, &handed)
            .await
            .map_err(|e| format!("seed {seed} cycle {cycle}: {e}"))?;
        handed.retain(|h| h.base < log.next_offset().0);
        log.reserve_offsets_durably();
        for _ in 0..1 + random.below(60) {
            if random.below(4) == 0 {
                yield_once().await;
                continue;
            }
            let count = 1 + random.below(6) as usize;
            let batch = random_batch(&mut random, count, 300, timestamp);
            timestamp += count as i64;
            let appended = log
                .append(&batch, Epoch(cycle))
                .await
                .map_err(|e| format!("append failed: {e}"))?;
            handed.push(HandedOut {
                base: appended.base_offset.0,
                count: count as u32,
                payload: payload(&batch),
            });
        }
        // Pull the plug: appends were never waited for, as `memory` durability acknowledges.
        let image = storage.crash(random.next_u64());
        drop(log);
        // Reopen with the n-th sync failing (a step of recording the lost range), crash then.
        image.fail_syncs_after(fail_sync_at);
        storage = match ShardLog::open(image.clone(), dir, config.clone()).await {
            Ok(log) => {
                check(&log, &handed)
                    .await
                    .map_err(|e| format!("seed {seed} cycle {cycle}, reopened: {e}"))?;
                let again = image.crash(random.next_u64());
                drop(log);
                again
            }
            Err(_) => {
                failed_opens += 1;
                image.crash(random.next_u64())
            }
        };
    }
    let log = ShardLog::open(storage.clone(), dir, config.clone())
        .await
        .map_err(|e| format!("final open failed: {e}"))?;
    check(&log, &handed)
        .await
        .map_err(|e| format!("seed {seed} final: {e}"))?;
    let next = log.next_offset();
    let batch = random_batch(&mut random, 2, 100, timestamp);
    let appended = log
        .append_durable(&batch, Epoch(9))
        .await
        .map_err(|e| format!("append after recovery failed: {e}"))?;
    if appended.base_offset != next {
        return Err(format!(
            "append after recovery got {}",
            appended.base_offset
        ));
    }
    log.close().await.map_err(|e| format!("close: {e}"))?;
    Ok((lost_seen, failed_opens))
}

#[test]
fn no_offset_is_handed_out_twice_across_crashes_at_each_step() {
    let seeds: u64 = std::env::var("RUNNEL_LOST_RANGE_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let (mut lost, mut failed_opens) = (0, 0);
    for seed in 0..seeds {
        for fail_sync_at in 0..8 {
            match run(move || workload(seed, fail_sync_at)) {
                Ok((seen, failed)) => {
                    lost += seen;
                    failed_opens += failed;
                }
                Err(error) => panic!("seed {seed}, sync {fail_sync_at} failing: {error}"),
            }
        }
    }
    // The workloads did reach what they test: lost ranges, and reopenings cut short.
    assert!(lost > 0, "no lost range was ever read");
    assert!(failed_opens > 0, "no reopening failed part way");
    eprintln!("lost range test: {lost} lost offsets read, {failed_opens} reopenings cut short");
}

#[test]
fn a_clean_close_leaves_no_lost_range_and_fsync_logs_write_no_reservation() {
    run(|| async {
        let dir = Path::new("/lost/clean");
        let storage = FaultStorage::new();
        let mut random = SplitMix64::new(1);
        let log = ShardLog::open(storage.clone(), dir, config())
            .await
            .expect("open");
        for _ in 0..20 {
            let batch = random_batch(&mut random, 3, 100, 1);
            log.append_durable(&batch, Epoch(1)).await.expect("append");
        }
        // An `fsync` log (no reservation asked for) writes no reservation file at all.
        assert!(!storage.paths().iter().any(|p| p.ends_with("reserved")));
        log.reserve_offsets_durably();
        let batch = random_batch(&mut random, 3, 100, 1);
        log.append(&batch, Epoch(1)).await.expect("append");
        assert!(storage.paths().iter().any(|p| p.ends_with("reserved")));
        assert_eq!(log.stats().offset_reservations, 1);
        let end = log.next_offset();
        log.close().await.expect("close");
        let log = ShardLog::open(storage.clone(), dir, config())
            .await
            .expect("reopen");
        assert_eq!(
            log.next_offset(),
            end,
            "a clean close shrinks the reservation"
        );
        assert_eq!(log.stats().lost_ranges, 0);
        log.close().await.expect("close");
        // A crash with a reservation ahead: the rest of it becomes a lost range.
        let log = ShardLog::open(storage.clone(), dir, config())
            .await
            .expect("reopen");
        log.reserve_offsets_durably();
        let appended = log.append(&batch, Epoch(1)).await.expect("append");
        let image = storage.crash(7);
        drop(log);
        let log = ShardLog::open(image, dir, config()).await.expect("reopen");
        assert!(log.next_offset().0 > appended.last_offset.0);
        let stats = log.stats();
        assert_eq!(stats.lost_ranges, 1);
        match log.read(end, 1, ReadBound::Written).await {
            Err(LogError::LostRange { from, to, .. }) => {
                assert!(from <= end && to == log.next_offset());
                assert_eq!(to.0 - from.0, stats.lost_offsets);
            }
            Ok(chunk) => {
                // The batch survived the crash: the lost range starts after it.
                assert_eq!(chunk.batches().next().map(|b| b.base_offset()), Some(end));
            }
            Err(error) => panic!("read: {error}"),
        }
    })
}
