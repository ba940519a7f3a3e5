//! Retention by age judges a sealed segment by the later of its newest record timestamp and
//! the time it was sealed, so that record timestamps set by producers cannot make freshly
//! appended data look expired.

mod common;

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{random_batch, run, small_config};
use runnel_core::{Epoch, Offset};
use runnel_segment::storage::fault::SplitMix64;
use runnel_segment::{FaultStorage, LogConfig, ShardLog};

/// Seven days, the default retention of a stream.
const WEEK_MS: i64 = 7 * 24 * 3600 * 1000;

fn wall_clock_ms() -> i64 {
    let elapsed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    i64::try_from(elapsed.as_millis()).expect("milliseconds fit an i64")
}

/// Regression (issue 8, item 9): the README's SDK snippet wrote records with timestamp 0, and
/// the 7-day retention deleted every sealed segment of them within seconds of the append —
/// 6,044 of 8,373 acknowledged records became unreadable in 15 s. Segments of records dated
/// 1970 are now kept for the retention period after they were appended, and go after it.
#[test]
fn records_dated_1970_are_kept_for_the_retention_after_their_append() {
    run(|| async {
        let storage = FaultStorage::new();
        let config = LogConfig {
            retention_age_ms: Some(WEEK_MS as u64),
            ..small_config()
        };
        let log = ShardLog::open(storage.clone(), Path::new("/t/retention"), config)
            .await
            .expect("open");
        let mut random = SplitMix64::new(9);
        for _ in 0..300 {
            let batch = random_batch(&mut random, 3, 900, 0);
            log.append(&batch, Epoch(1)).await.expect("append");
        }
        let last = Offset(log.next_offset().0 - 1);
        log.wait_durable(last).await.expect("durable");
        let segments = log.segment_count();
        assert!(
            segments > 2,
            "the test needs sealed segments, has {segments}"
        );

        let now_ms = wall_clock_ms();
        let deleted = log.enforce_retention(now_ms).await.expect("retention");
        assert_eq!(deleted, 0, "records appended just now were deleted");
        assert_eq!(log.start_offset(), Offset(0));

        // A week (and a minute) later, every sealed segment has expired; the active one stays.
        let later_ms = now_ms + WEEK_MS + 60_000;
        let deleted = log.enforce_retention(later_ms).await.expect("retention");
        assert_eq!(deleted, segments - 1);
        assert_eq!(log.segment_count(), 1);
        log.close().await.expect("close");
    });
}

/// Records with timestamps of today still expire by them: a segment whose newest record is
/// older than the retention goes once its sealing time is too, and not before.
#[test]
fn segments_expire_by_the_later_of_record_time_and_sealing_time() {
    run(|| async {
        let storage = FaultStorage::new();
        let config = LogConfig {
            retention_age_ms: Some(1_000),
            ..small_config()
        };
        let log = ShardLog::open(storage.clone(), Path::new("/t/expire"), config)
            .await
            .expect("open");
        let mut random = SplitMix64::new(10);
        let now_ms = wall_clock_ms();
        for _ in 0..300 {
            let batch = random_batch(&mut random, 3, 900, now_ms);
            log.append(&batch, Epoch(1)).await.expect("append");
        }
        let last = Offset(log.next_offset().0 - 1);
        log.wait_durable(last).await.expect("durable");
        let segments = log.segment_count();
        assert!(
            segments > 2,
            "the test needs sealed segments, has {segments}"
        );
        assert_eq!(log.enforce_retention(now_ms).await.expect("retention"), 0);
        let deleted = log
            .enforce_retention(wall_clock_ms() + 3_600_000)
            .await
            .expect("retention");
        assert_eq!(deleted, segments - 1);
        log.close().await.expect("close");
    });
}

/// Appends 300 batches of records stamped `stamp` (several segments with a small config) and
/// waits until they are durable.
async fn fill(log: &ShardLog<FaultStorage>, random: &mut SplitMix64, stamp: i64) {
    for _ in 0..300 {
        let batch = random_batch(random, 3, 900, stamp);
        log.append(&batch, Epoch(1)).await.expect("append");
    }
    let last = Offset(log.next_offset().0 - 1);
    log.wait_durable(last).await.expect("durable");
}

/// A node closes idle logs and keeps only `retention_due_ms`, opening a log again for
/// retention once that time has passed: before it, retention deletes nothing; after it, it
/// deletes the oldest segment. A log with only its active segment is never due.
#[test]
fn retention_due_is_when_retention_first_deletes() {
    run(|| async {
        let storage = FaultStorage::new();
        let config = LogConfig {
            retention_age_ms: Some(10_000),
            ..small_config()
        };
        let log = ShardLog::open(storage.clone(), Path::new("/t/due"), config.clone())
            .await
            .expect("open");
        assert_eq!(log.retention_due_ms(), None, "an empty log is never due");
        let mut random = SplitMix64::new(11);
        let stamp = wall_clock_ms() + 5_000;
        log.append(&random_batch(&mut random, 3, 900, stamp), Epoch(1))
            .await
            .expect("append");
        assert_eq!(
            log.retention_due_ms(),
            None,
            "the active segment is never deleted"
        );
        fill(&log, &mut random, stamp).await;
        assert!(log.segment_count() > 2, "the test needs sealed segments");
        let due = log
            .retention_due_ms()
            .expect("sealed segments are due some day");
        // Records are stamped 5 s ahead of their sealing (record i of a batch at stamp + i):
        // the newest record time of the oldest segment decides.
        assert!(
            (stamp + 10_000..stamp + 10_003).contains(&due),
            "due {due}, stamp {stamp}"
        );
        assert_eq!(log.enforce_retention(due).await.expect("retention"), 0);
        assert!(log.enforce_retention(due + 1).await.expect("retention") >= 1);
        log.close().await.expect("close");

        // Over its size: due at once.
        let sized = LogConfig {
            retention_bytes: Some(64 << 10),
            retention_age_ms: None,
            ..small_config()
        };
        let log = ShardLog::open(storage.clone(), Path::new("/t/due-size"), sized)
            .await
            .expect("open");
        fill(&log, &mut random, stamp).await;
        assert_eq!(log.retention_due_ms(), Some(i64::MIN));
        assert!(log.enforce_retention(0).await.expect("retention") >= 1);
        log.close().await.expect("close");
    });
}
