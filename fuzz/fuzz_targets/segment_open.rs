//! Fuzz target: opening a log directory never panics, whatever the segment file holds, and what
//! recovery accepts reads back and keeps the rules of `docs/format/segment.md`.
//!
//! Each input damages a copy of a real segment file — one written by `ShardLog` on a
//! `FaultStorage`, with a valid header block and a dozen batches — by overwriting bytes from a
//! position the first input byte chooses. The damaged file is placed as the only segment of a
//! log directory, the log is opened (recovery: header check, CRC scan, torn-tail rule, zeroing of
//! a dirty tail) and everything is read back. An error from `open` is fine (corruption must be
//! reported, not hidden); a panic, a failed assertion, or a read error after a successful open
//! is a bug in `runnel-segment`. The assertions are paired checks:
//!
//! * after a successful open, every offset from the start to the next offset reads back, dense,
//!   with no error (recovery checked every batch of the last segment, so reads must agree);
//! * batches that lie wholly before the damaged bytes are durable data: they read back
//!   byte-identical;
//! * optionally, one more batch is appended, the log closed and reopened: the reopen succeeds
//!   and holds exactly what was read before plus that batch (so the zeroing of a torn tail
//!   left a log its own recovery accepts).
//!
//! The first input byte, `mode`:
//!
//! | bits | meaning |
//! |---|---|
//! | 0–1 | where the rest of the input overwrites the file: 0 = byte 0 (the segment header), 1 = byte 4096 (the first batch), 2 = a batch in the middle, 3 = just after the last batch (the zero tail) |
//! | 2 | re-sign what was overwritten: the segment header CRC (position 0), or the header and payload CRCs of the batch starting there, so mutations reach the checks behind the CRCs |
//! | 3 | append one batch, close, reopen and compare |

#![no_main]

use std::path::Path;

use glommio::{LocalExecutor, LocalExecutorBuilder, Placement};
use libfuzzer_sys::fuzz_target;
use runnel_core::batch::AlignedBytes;
use runnel_core::{BatchBuilder, Epoch, Limits, Offset, Record};
use runnel_segment::{FaultStorage, LogConfig, ReadBound, ShardLog};

const DIR: &str = "/f/log";
const SEGMENT: &str = "/f/log/00000000000000000000.seg";

/// Where the first batch starts (after the 4096-byte header block).
const DATA_START: usize = 4096;
/// The segment header's CRC covers bytes 0..60 and is stored at 60.
const SEGMENT_HEADER_CRC_AT: usize = 60;
// Batch header fields used to re-sign a batch; drawn in docs/format/batch.md.
const BATCH_HEADER_LEN: usize = 80;
const PAYLOAD_LEN_AT: usize = 12;
const PAYLOAD_CRC_AT: usize = 72;
const HEADER_CRC_AT: usize = 76;

const MODE_WHERE: u8 = 0b0011;
const MODE_RESIGN: u8 = 0b0100;
const MODE_REOPEN: u8 = 0b1000;

/// Batches in the template segment.
const TEMPLATE_BATCHES: usize = 14;

thread_local! {
    /// One executor per fuzz process: `LocalExecutor::run` takes `&self` and may be called
    /// again after it returned (it only refuses to nest).
    static EXECUTOR: LocalExecutor = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(64 << 10)
        .make()
        .expect("cannot start a glommio executor");
    /// Built once per process, on first use (never from inside `run`, which must not nest).
    static TEMPLATE: Template = EXECUTOR.with(|executor| executor.run(build_template()));
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let case = TEMPLATE.with(|template| template.damage(mode, body));
    EXECUTOR.with(|executor| executor.run(exercise(case, mode & MODE_REOPEN != 0)));
});

/// The config of the log under test: small, so segments roll and windows are short.
fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 64 << 10,
        write_buffer_bytes: 16 << 10,
        index_interval_bytes: 2 << 10,
        ..LogConfig::default()
    }
}

/// A batch as the log stores it: base offset, record count, all its bytes.
type StoredBatch = (u64, u32, Vec<u8>);

/// A segment file written by the log itself, and where its batches lie.
struct Template {
    /// The whole file: header block, batches, zero tail up to `segment_bytes_max`.
    bytes: Vec<u8>,
    /// Start position of each batch.
    batch_starts: Vec<usize>,
    /// Each batch as stored.
    batches: Vec<StoredBatch>,
    /// Position just after the last batch.
    data_end: usize,
}

/// One input: the damaged file and what of the template it cannot have touched.
struct Case {
    bytes: Vec<u8>,
    /// Template batches that lie wholly before the first overwritten byte.
    untouched: Vec<StoredBatch>,
}

fn template_batch(index: usize) -> AlignedBytes {
    let mut builder = BatchBuilder::new();
    let records = 1 + index % 3;
    for r in 0..records {
        let value: Vec<u8> = (0..1000 + 97 * index)
            .map(|i| (i * 31 + index * 7 + r) as u8)
            .collect();
        // Timestamps go back and forth, so the time index has work to do.
        let timestamp_ms = 1_700_000_000_000 + ((index * 7919) % 13) as i64 * 1000 + r as i64;
        let mut record = Record::at(value, timestamp_ms);
        if index % 2 == 0 {
            record = record.with_key(format!("key-{index}-{r}"));
        }
        builder.push(record);
    }
    builder
        .finish(&Limits::DEFAULT)
        .expect("template batch encodes")
}

async fn build_template() -> Template {
    let storage = FaultStorage::new();
    let log = ShardLog::open(storage.clone(), DIR, config())
        .await
        .expect("template log opens");
    let mut last = Offset(0);
    for index in 0..TEMPLATE_BATCHES {
        let appended = log
            .append(&template_batch(index), Epoch(3))
            .await
            .expect("template append");
        last = appended.last_offset;
    }
    log.wait_durable(last).await.expect("template durable");
    log.close().await.expect("template close");
    let segments: Vec<_> = storage
        .paths()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    assert_eq!(
        segments,
        vec![Path::new(SEGMENT).to_owned()],
        "the template must fit one segment"
    );
    let bytes = storage
        .file_bytes(Path::new(SEGMENT))
        .expect("template segment exists");
    let mut batch_starts = Vec::new();
    let mut batches = Vec::new();
    let mut pos = DATA_START;
    for _ in 0..TEMPLATE_BATCHES {
        let header = runnel_core::BatchHeader::decode(&bytes[pos..]).expect("template batch");
        let len = header.batch_len as usize;
        batch_starts.push(pos);
        batches.push((
            header.base_offset.0,
            header.record_count,
            bytes[pos..pos + len].to_vec(),
        ));
        pos += len;
    }
    assert!(
        bytes[pos..].iter().all(|&b| b == 0),
        "the template's tail is zeros"
    );
    Template {
        bytes,
        batch_starts,
        batches,
        data_end: pos,
    }
}

impl Template {
    fn damage(&self, mode: u8, body: &[u8]) -> Case {
        let at = match mode & MODE_WHERE {
            0 => 0,
            1 => DATA_START,
            2 => self.batch_starts[self.batch_starts.len() / 2],
            _ => self.data_end,
        };
        let mut bytes = self.bytes.clone();
        if bytes.len() < at + body.len() {
            bytes.resize(at + body.len(), 0);
        }
        bytes[at..at + body.len()].copy_from_slice(body);
        if mode & MODE_RESIGN != 0 {
            if at == 0 {
                let crc = crc32fast::hash(&bytes[..SEGMENT_HEADER_CRC_AT]);
                bytes[SEGMENT_HEADER_CRC_AT..SEGMENT_HEADER_CRC_AT + 4]
                    .copy_from_slice(&crc.to_le_bytes());
            } else {
                resign_batch(&mut bytes, at);
            }
        }
        let untouched = self
            .batch_starts
            .iter()
            .zip(&self.batches)
            .take_while(|(start, batch)| at >= DATA_START && **start + batch.2.len() <= at)
            .map(|(_, batch)| batch.clone())
            .collect();
        Case { bytes, untouched }
    }
}

/// Recomputes the payload CRC (over the payload the header claims, clamped to the file) and
/// the header CRC of the batch at `at`.
fn resign_batch(bytes: &mut [u8], at: usize) {
    if bytes.len() < at + BATCH_HEADER_LEN {
        return;
    }
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[at + PAYLOAD_LEN_AT..at + PAYLOAD_LEN_AT + 4]);
    let payload_len = u32::from_le_bytes(raw) as usize;
    let payload_start = at + BATCH_HEADER_LEN;
    let payload_end = payload_start.saturating_add(payload_len).min(bytes.len());
    let payload_crc = crc32fast::hash(&bytes[payload_start..payload_end]);
    bytes[at + PAYLOAD_CRC_AT..at + PAYLOAD_CRC_AT + 4].copy_from_slice(&payload_crc.to_le_bytes());
    let header_crc = crc32fast::hash(&bytes[at..at + HEADER_CRC_AT]);
    bytes[at + HEADER_CRC_AT..at + HEADER_CRC_AT + 4].copy_from_slice(&header_crc.to_le_bytes());
}

async fn exercise(case: Case, reopen: bool) {
    let storage = FaultStorage::new();
    storage.put_file(Path::new(SEGMENT), &case.bytes);
    let Ok(log) = ShardLog::open(storage.clone(), DIR, config()).await else {
        // Refusing to open damaged bytes is allowed; panicking is not.
        return;
    };
    let read = read_everything(&log).await;
    assert!(
        read.len() >= case.untouched.len() && read[..case.untouched.len()] == case.untouched[..],
        "batches before the damage were lost or changed: {} untouched, {} read",
        case.untouched.len(),
        read.len()
    );
    for probe in [i64::MIN, 0, 1_700_000_003_000, 1_700_000_012_001, i64::MAX] {
        let found = log.offset_for_timestamp(probe).await;
        if let Ok(offset) = found {
            assert!(offset <= log.next_offset(), "time lookup beyond the end");
        }
    }
    if !reopen {
        log.close().await.expect("close after a successful open");
        return;
    }
    let extra = template_batch(1);
    let expected_base = log.next_offset();
    let appended = log
        .append_durable(&extra, Epoch(9))
        .await
        .expect("append to a recovered log");
    assert_eq!(
        appended.base_offset, expected_base,
        "appends continue densely"
    );
    log.close().await.expect("close after a successful open");
    let log = match ShardLog::open(storage.clone(), DIR, config()).await {
        Ok(log) => log,
        Err(error) => {
            panic!("a log this process recovered and closed cleanly does not reopen: {error}")
        }
    };
    let reread = read_everything(&log).await;
    assert_eq!(
        reread.len(),
        read.len() + 1,
        "the reopened log holds other batches"
    );
    assert!(
        reread[..read.len()] == read[..],
        "batches changed across a reopen"
    );
    let (base, count, _) = &reread[read.len()];
    assert_eq!((*base, *count), (appended.base_offset.0, 2));
    log.close().await.expect("close after reopen");
}

/// Reads every batch from the start to the written end. After a successful open every read
/// must succeed: recovery checked each batch of the (only, hence last) segment.
async fn read_everything(log: &ShardLog<FaultStorage>) -> Vec<StoredBatch> {
    let mut out = Vec::new();
    let mut next = log.start_offset();
    loop {
        let chunk = match log.read(next, 4096, ReadBound::Written).await {
            Ok(chunk) => chunk,
            Err(error) => panic!("read from {next} after a successful open failed: {error}"),
        };
        if chunk.is_empty() {
            break;
        }
        for batch in chunk.batches() {
            assert_eq!(batch.base_offset(), next, "offsets are not dense");
            next = Offset(batch.base_offset().0 + u64::from(batch.record_count()));
            out.push((
                batch.base_offset().0,
                batch.record_count(),
                batch.as_bytes().to_vec(),
            ));
        }
        assert_eq!(chunk.next_offset(), next, "chunk's next offset");
    }
    assert_eq!(
        next,
        log.written_offset(),
        "reads stop before the written end"
    );
    out
}
