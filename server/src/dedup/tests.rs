//! Idempotent appends through the append service on a real core with real files (the
//! fixture of `append/tests.rs`): a retried batch is stored once and answered with its first
//! offsets, before and after the table is rebuilt from the log; a gap is refused and stores
//! nothing. The rebuild of a full window is timed (printed, not asserted).

use std::time::Instant;

use runnel_core::batch::AlignedBytes;
use runnel_core::{BatchBuilder, Limits, ProducerStamp, Record};
use runnel_replicate::metadata::Durability;
use runnel_replicate::producers::{ProducerTableConfig, SequenceError};
use runnel_segment::log::ReadBound;

use crate::append::tests::{on_a_core, Fixture};
use crate::append::AppendError;

/// `count` records with `key`, stamped by producer `producer_id` from `sequence`.
fn stamped(key: &[u8], count: usize, producer_id: u64, sequence: u64) -> AlignedBytes {
    let mut builder = BatchBuilder::new().producer(ProducerStamp {
        producer_id,
        sequence,
    });
    for index in 0..count {
        builder.push(Record::new(format!("v{index}").into_bytes()).with_key(key.to_vec()));
    }
    builder.finish(&Limits::DEFAULT).expect("a valid batch")
}

/// The same stamped batch appended twice gets the same offsets and is stored once; so is a
/// retry after the table was forgotten and rebuilt from the log (what a restart does).
#[test]
fn a_retried_batch_is_stored_once_with_its_first_offsets() {
    on_a_core(|| async {
        let fixture = Fixture::new(Durability::Fsync).await;
        let key = fixture.key(true);
        let shard = fixture.here.id;
        let first = stamped(&key, 3, 42, 0);
        let stored = fixture.append(shard, &first).await.expect("stored");
        assert_eq!((stored.base_offset.0, stored.last_offset.0), (0, 2));
        let again = fixture.append(shard, &first).await.expect("a duplicate");
        assert_eq!(again, stored, "the first offsets");
        assert_eq!(fixture.next_offset().await, 3, "stored once");
        // An unstamped batch in between, then the producer's next batch.
        let other = stamped(&key, 2, 0, 0);
        fixture.append(shard, &other).await.expect("stored");
        fixture
            .append(shard, &other)
            .await
            .expect("stored again: not idempotent");
        let second = stamped(&key, 1, 42, 3);
        let stored_second = fixture.append(shard, &second).await.expect("stored");
        assert_eq!(stored_second.base_offset.0, 7);
        // Forget the table, as a restart does: it is rebuilt from the log's tail.
        let local = fixture.core.local_shard(shard).expect("local");
        assert_eq!(local.producers.producer_count(), Some(1));
        local.producers.reset();
        assert_eq!(local.producers.producer_count(), None);
        let again = fixture.append(shard, &second).await.expect("a duplicate");
        assert_eq!(again, stored_second);
        let again = fixture.append(shard, &first).await.expect("a duplicate");
        assert_eq!(again, stored);
        assert_eq!(fixture.next_offset().await, 8, "nothing stored twice");
        fixture.close().await;
    });
}

/// A sequence that skips ahead, or a producer the shard does not know starting past 0, is
/// refused and stores nothing; a reused sequence with other records is refused too.
#[test]
fn gaps_and_unknown_producers_are_refused() {
    on_a_core(|| async {
        let fixture = Fixture::new(Durability::Memory).await;
        let key = fixture.key(true);
        let shard = fixture.here.id;
        fixture
            .append(shard, &stamped(&key, 2, 5, 0))
            .await
            .expect("stored");
        let gap = fixture.append(shard, &stamped(&key, 1, 5, 3)).await;
        assert!(
            matches!(
                gap,
                Err(AppendError::Sequence(SequenceError::OutOfOrder {
                    expected: 2,
                    found: 3,
                    ..
                }))
            ),
            "{gap:?}"
        );
        let unknown = fixture.append(shard, &stamped(&key, 1, 6, 9)).await;
        assert!(
            matches!(
                unknown,
                Err(AppendError::Sequence(SequenceError::UnknownProducer { .. }))
            ),
            "{unknown:?}"
        );
        let reused = fixture.append(shard, &stamped(&key, 1, 5, 0)).await;
        assert!(
            matches!(
                reused,
                Err(AppendError::Sequence(SequenceError::Mismatch { .. }))
            ),
            "{reused:?}"
        );
        // A batch refused by its keys is not stored, and the producer may send it again.
        let wrong = stamped(&fixture.key(false), 1, 5, 2);
        assert!(matches!(
            fixture.append(shard, &wrong).await,
            Err(AppendError::WrongShard { .. })
        ));
        fixture
            .append(shard, &stamped(&key, 1, 5, 2))
            .await
            .expect("the next sequence after a refusal");
        assert_eq!(fixture.next_offset().await, 3);
        fixture.close().await;
    });
}

/// How long a rebuild of a full window takes: a shard of `RUNNEL_DEDUP_RECORDS` records
/// (default 1,000,000, the default window) from 1,000 producers, in batches of 1,000.
#[test]
fn rebuild_time_of_a_full_window() {
    on_a_core(|| async {
        let records: u64 = std::env::var("RUNNEL_DEDUP_RECORDS")
            .ok()
            .and_then(|value| value.parse().ok())
            .unwrap_or(1_000_000);
        let fixture = Fixture::new(Durability::Memory).await;
        let key = fixture.key(true);
        let shard = fixture.here.id;
        let batches = records / 1_000;
        for index in 0..batches {
            let producer_id = 1 + index % 1_000;
            let sequence = (index / 1_000) * 1_000;
            fixture
                .append(shard, &stamped(&key, 1_000, producer_id, sequence))
                .await
                .expect("stored");
        }
        let owned = fixture
            .core
            .owned_log(&fixture.stream, shard)
            .await
            .expect("served here");
        let bytes = owned.log.size_bytes();
        let started = Instant::now();
        let table = super::rebuild(
            &owned.log,
            ProducerTableConfig::default(),
            ReadBound::Written,
        )
        .await
        .expect("rebuilt");
        let elapsed = started.elapsed();
        println!(
            "rebuild of {records} records ({} MiB, {} producers): {} ms",
            bytes >> 20,
            table.producer_count(),
            elapsed.as_millis()
        );
        assert_eq!(table.producer_count(), batches.min(1_000) as usize);
        drop(owned);
        fixture.close().await;
    });
}
