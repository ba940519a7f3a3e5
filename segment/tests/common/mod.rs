//! Shared helpers of the segment tests: seeded batches and an executor to run them on.

#![allow(dead_code, missing_docs)]

use std::future::Future;

use runnel_core::batch::AlignedBytes;
use runnel_core::{BatchBuilder, BatchView, Limits, Record, RecordHeader};
use runnel_segment::log::ReadBound;
use runnel_segment::storage::fault::SplitMix64;
use runnel_segment::storage::Storage;
use runnel_segment::{LogConfig, ShardLog};

/// Runs a test body on a glommio executor sized for a test process.
pub fn run<T: Send + 'static, Fut: Future<Output = T> + 'static>(
    make: impl FnOnce() -> Fut + Send + 'static,
) -> T {
    runnel_segment::runtime::run("segment-test", 8, make)
}

/// A batch of `count` records with random keys, values of up to `value_bytes_max` bytes and
/// timestamps from `timestamp_ms` on.
pub fn random_batch(
    random: &mut SplitMix64,
    count: usize,
    value_bytes_max: usize,
    timestamp_ms: i64,
) -> AlignedBytes {
    let mut builder = BatchBuilder::new();
    for i in 0..count {
        let len = random.below(value_bytes_max as u64 + 1) as usize;
        let value: Vec<u8> = (0..len).map(|_| random.next_u64() as u8).collect();
        let mut record = Record::at(value, timestamp_ms + i as i64);
        if random.below(2) == 0 {
            record = record.with_key(random.next_u64().to_le_bytes().to_vec());
        }
        if random.below(4) == 0 {
            record.headers.push(RecordHeader {
                name: "h".into(),
                value: vec![i as u8],
            });
        }
        builder.push(record);
    }
    builder
        .finish(&Limits::DEFAULT)
        .expect("test batch encodes")
}

/// A small configuration that rolls segments and fills buffers often.
pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 64 << 10,
        write_buffer_bytes: 16 << 10,
        index_interval_bytes: 2 << 10,
        ..LogConfig::default()
    }
}

/// Payload bytes of a batch (what must come back unchanged; the header gets stamped).
pub fn payload(batch: &[u8]) -> Vec<u8> {
    batch[runnel_core::BATCH_HEADER_LEN..].to_vec()
}

/// Reads every batch from `from` to the log's written end; returns (base offset, record
/// count, max timestamp, payload bytes) per batch.
pub async fn read_all<S: Storage>(
    log: &ShardLog<S>,
    from: runnel_core::Offset,
) -> Vec<(u64, u32, i64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let chunk = log
            .read(next, 64 << 10, ReadBound::Written)
            .await
            .expect("read succeeds");
        if chunk.is_empty() {
            break;
        }
        for batch in chunk.batches() {
            out.push(view_summary(&batch));
        }
        next = chunk.next_offset();
    }
    out
}

pub fn view_summary(batch: &BatchView<'_>) -> (u64, u32, i64, Vec<u8>) {
    (
        batch.base_offset().0,
        batch.record_count(),
        batch.header().max_timestamp_ms,
        payload(batch.as_bytes()),
    )
}
