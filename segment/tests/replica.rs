//! The log as a replica (issue 11, item 2): appends at the offset and epoch a sequencer gave,
//! suffix truncation of what was never committed — on real O_DIRECT files, under a crash at
//! every step of it, with readers waiting at the end — and the epoch digest recovery reads.
//! A property test runs random sequences of appends, appends at offsets, truncations and
//! reopens against a model.

mod common;

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use common::{random_batch, run, small_config};
use proptest::prelude::*;
use runnel_core::batch::{stamp_header, AlignedBytes};
use runnel_core::{BatchHeader, CheckedChunks, Epoch, Limits, Offset};
use runnel_segment::log::ReadBound;
use runnel_segment::runtime::spawn;
use runnel_segment::storage::fault::SplitMix64;
use runnel_segment::storage::Storage;
use runnel_segment::{BatchEpoch, DmaStorage, FaultStorage, LogConfig, LogError, ShardLog};

/// A batch as the log must hold it: its offsets, epoch and every byte, header included.
#[derive(Clone, PartialEq, Eq)]
struct Held {
    base: u64,
    count: u32,
    epoch: u64,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Held({}+{}, epoch {}, {} bytes, crc {:08x})",
            self.base,
            self.count,
            self.epoch,
            self.bytes.len(),
            crc32fast::hash(&self.bytes)
        )
    }
}

impl Held {
    fn next(&self) -> u64 {
        self.base + u64::from(self.count)
    }

    fn digest(&self) -> BatchEpoch {
        BatchEpoch {
            base_offset: Offset(self.base),
            record_count: self.count,
            epoch: Epoch(self.epoch),
        }
    }
}

/// `batch` with `offset` and `epoch` stamped in, as a sequencer sends it.
fn stamped(batch: &AlignedBytes, offset: u64, epoch: u64) -> AlignedBytes {
    let mut copy = batch.clone();
    let header = BatchHeader::decode(batch).expect("test batch header");
    stamp_header(copy.as_mut_slice(), header, Offset(offset), Epoch(epoch)).expect("stamp");
    copy
}

/// Appends `count` batches at the log's next offsets with `append_at`, as a replica does;
/// every `durable_every`-th one waits until durable.
async fn replicate<S: Storage>(
    log: &ShardLog<S>,
    random: &mut SplitMix64,
    count: usize,
    epoch: u64,
) -> Vec<Held> {
    let mut held = Vec::new();
    for i in 0..count {
        let records = 1 + random.below(6) as usize;
        let next = log.next_offset().0;
        let batch = stamped(&random_batch(random, records, 900, i as i64), next, epoch);
        let appended = log
            .append_at(Offset(next), Epoch(epoch), &batch)
            .await
            .expect("append at the next offset");
        assert_eq!(appended.base_offset, Offset(next));
        if i % 5 == 4 {
            log.wait_durable(appended.last_offset)
                .await
                .expect("durable");
        }
        held.push(Held {
            base: next,
            count: records as u32,
            epoch,
            bytes: batch.to_vec(),
        });
    }
    held
}

/// Every batch the log holds from its start to its end (once written).
async fn contents<S: Storage>(log: &ShardLog<S>) -> Vec<Held> {
    try_contents(log).await.expect("the log reads back")
}

async fn try_contents<S: Storage>(log: &ShardLog<S>) -> Result<Vec<Held>, LogError> {
    log.sync_all().await?;
    let mut out = Vec::new();
    let mut next = log.start_offset();
    loop {
        let chunk = log.read(next, 64 << 10, ReadBound::Written).await?;
        if chunk.is_empty() {
            return Ok(out);
        }
        for batch in chunk.batches() {
            out.push(Held {
                base: batch.base_offset().0,
                count: batch.record_count(),
                epoch: batch.header().epoch.0,
                bytes: batch.as_bytes().to_vec(),
            });
        }
        next = chunk.next_offset();
    }
}

fn prefix(held: &[Held], cut: u64) -> Vec<Held> {
    held.iter().filter(|h| h.base < cut).cloned().collect()
}

fn segment_bases(paths: impl Iterator<Item = PathBuf>) -> Vec<u64> {
    let mut bases: Vec<u64> = paths
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .filter_map(|p| p.file_stem()?.to_str()?.parse().ok())
        .collect();
    bases.sort();
    bases
}

fn real_segment_bases(dir: &Path) -> Vec<u64> {
    segment_bases(
        std::fs::read_dir(dir)
            .expect("list log dir")
            .map(|e| e.expect("entry").path()),
    )
}

#[test]
fn append_at_takes_only_the_next_offset_and_stores_the_bytes_unchanged() {
    run(|| async {
        let log = ShardLog::open(FaultStorage::new(), "/replica/log", small_config())
            .await
            .expect("open");
        let mut random = SplitMix64::new(1);
        let held = replicate(&log, &mut random, 3, 4).await;
        let next = log.next_offset();
        let batch = random_batch(&mut random, 2, 100, 0);
        for wrong in [next.0 + 1, next.0 - 1, 0] {
            match log.append_at(Offset(wrong), Epoch(4), &batch).await {
                Err(LogError::NotNextOffset { requested, next: n }) => {
                    assert_eq!((requested, n), (Offset(wrong), next));
                }
                other => panic!("append at {wrong} with next {next}: {other:?}"),
            }
        }
        assert_eq!(log.next_offset(), next, "a refused append uses no offset");
        // The chunked path, as the server receives a batch from the network.
        let chunked = stamped(&batch, next.0, 5);
        let pieces: Vec<&[u8]> = chunked.chunks(33).collect();
        let checked = CheckedChunks::check(&pieces, &Limits::DEFAULT).expect("checks");
        let refused = log
            .append_chunks_at(
                Offset(next.0 + 7),
                Epoch(5),
                &checked,
                &Limits::DEFAULT,
                |_, _| Ok::<(), LogError>(()),
            )
            .await;
        assert!(matches!(refused, Err(LogError::NotNextOffset { .. })));
        log.append_chunks_at(next, Epoch(5), &checked, &Limits::DEFAULT, |_, _| {
            Ok::<(), LogError>(())
        })
        .await
        .expect("chunks at the next offset");
        let mut want = held;
        want.push(Held {
            base: next.0,
            count: 2,
            epoch: 5,
            bytes: chunked.to_vec(),
        });
        assert_eq!(
            contents(&log).await,
            want,
            "byte for byte, headers included"
        );
        log.close().await.expect("close");
    });
}

/// One truncation on real files: `cut_at` picks the cut from what was written and the
/// segment bases; `reopen_first` closes and reopens before truncating, so that the active
/// segment's checkpoint claims everything (the cut is then below an acknowledged end).
fn truncate_on_real_files(
    name: &str,
    reopen_first: bool,
    cut_at: impl FnOnce(&[Held], &[u64]) -> u64 + Send + 'static,
) {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join("log");
    let config = LogConfig {
        segment_bytes_max: 64 << 10,
        write_buffer_bytes: 16 << 10,
        index_interval_bytes: 4 << 10,
        ..LogConfig::default()
    };
    let name = name.to_owned();
    run(move || async move {
        let mut log = ShardLog::open(DmaStorage, &dir, config.clone())
            .await
            .expect("open");
        let mut random = SplitMix64::new(name.len() as u64);
        let held = replicate(&log, &mut random, 80, 1).await;
        let end = held.last().map_or(0, Held::next);
        if reopen_first {
            log.close().await.expect("close");
            log = ShardLog::open(DmaStorage, &dir, config.clone())
                .await
                .expect("reopen");
        }
        let bases = real_segment_bases(&dir);
        assert!(bases.len() >= 3, "{name}: the workload rolls segments");
        let cut = cut_at(&held, &bases);
        log.truncate_from(Offset(cut)).await.expect("truncate");
        let want = prefix(&held, cut);
        assert_eq!(
            (
                log.next_offset(),
                log.written_offset(),
                log.durable_offset()
            ),
            (Offset(cut), Offset(cut), Offset(cut)),
            "{name}: next, written and durable move back to the cut"
        );
        assert_eq!(
            contents(&log).await,
            want,
            "{name}: the prefix before the cut"
        );
        assert!(
            real_segment_bases(&dir).iter().all(|&b| b <= cut),
            "{name}: no segment after the cut's remains"
        );
        let digest: Vec<BatchEpoch> = want.iter().map(Held::digest).collect();
        assert_eq!(
            log.batch_epochs(Offset(0), usize::MAX)
                .await
                .expect("digest"),
            digest
        );
        log.close().await.expect("close");
        // A deliberate truncation is not damage: the log reopens as truncated.
        let log = ShardLog::open(DmaStorage, &dir, config.clone())
            .await
            .expect("reopen after truncation");
        assert_eq!(log.next_offset(), Offset(cut), "{name}");
        assert_eq!(contents(&log).await, want, "{name}: after reopen");
        // The same offsets again with a new epoch: the new bytes, never the old ones.
        let again = replicate(&log, &mut random, 30, 2).await;
        let mut want = want;
        want.extend(again);
        assert_eq!(contents(&log).await, want, "{name}: new epoch's batches");
        log.close().await.expect("close");
        let log = ShardLog::open(DmaStorage, &dir, config)
            .await
            .expect("reopen after appends");
        assert_eq!(
            contents(&log).await,
            want,
            "{name}: new batches after reopen"
        );
        assert!(cut <= end);
        log.close().await.expect("close");
    });
}

#[test]
fn truncation_in_the_middle_of_the_active_segment() {
    truncate_on_real_files("active middle", true, |held, _| held[held.len() - 4].base);
}

#[test]
fn truncation_in_the_middle_of_a_sealed_segment() {
    truncate_on_real_files("sealed middle", true, |held, bases| {
        let (from, to) = (bases[1], bases[2]);
        let inside: Vec<&Held> = held
            .iter()
            .filter(|h| h.base > from && h.base < to)
            .collect();
        inside[inside.len() / 2].base
    });
}

#[test]
fn truncation_at_a_segment_boundary() {
    truncate_on_real_files("boundary", false, |_, bases| bases[1]);
}

#[test]
fn truncation_of_everything_and_of_nothing() {
    truncate_on_real_files("everything", false, |_, _| 0);
    truncate_on_real_files("nothing", true, |held, _| held.last().map_or(0, Held::next));
}

#[test]
fn truncation_of_buffered_batches_not_yet_written() {
    // No reopen and no wait: the last batches may still be in the tail buffer.
    truncate_on_real_files("buffered", false, |held, _| held[held.len() - 2].base);
}

#[test]
fn truncation_refuses_offsets_inside_a_batch_below_the_start_and_beyond_the_end() {
    run(|| async {
        let log = ShardLog::open(FaultStorage::new(), "/replica/refuse", small_config())
            .await
            .expect("open");
        let mut random = SplitMix64::new(2);
        let held = replicate(&log, &mut random, 40, 1).await;
        let inside = held
            .iter()
            .find(|h| h.count > 1)
            .expect("a batch of several");
        match log.truncate_from(Offset(inside.base + 1)).await {
            Err(LogError::NotBatchBoundary {
                requested,
                batch_base,
                batch_next,
            }) => assert_eq!(
                (requested, batch_base, batch_next),
                (
                    Offset(inside.base + 1),
                    Offset(inside.base),
                    Offset(inside.next())
                )
            ),
            other => panic!("cut inside a batch: {other:?}"),
        }
        let next = log.next_offset();
        assert!(matches!(
            log.truncate_from(Offset(next.0 + 1)).await,
            Err(LogError::OffsetOutOfRange { .. })
        ));
        log.trim(Offset(held[3].base)).await.expect("trim");
        assert!(matches!(
            log.truncate_from(Offset(held[2].base)).await,
            Err(LogError::Trimmed { .. })
        ));
        // Nothing changed, and appends go on after a refusal.
        assert_eq!(log.next_offset(), next);
        assert_eq!(contents(&log).await, held[3..].to_vec());
        let more = replicate(&log, &mut random, 2, 1).await;
        assert_eq!(more[0].base, next.0);
        // A cut at the start is allowed when the start is a batch boundary.
        log.truncate_from(Offset(held[3].base))
            .await
            .expect("cut at the start");
        assert_eq!(log.next_offset(), Offset(held[3].base));
        log.close().await.expect("close");
    });
}

#[test]
fn readers_and_waiters_at_the_end_see_the_new_end() {
    run(|| async {
        let log = Rc::new(
            ShardLog::open(FaultStorage::new(), "/replica/wait", small_config())
                .await
                .expect("open"),
        );
        let mut random = SplitMix64::new(3);
        let held = replicate(&log, &mut random, 20, 1).await;
        let old_next = log.next_offset();
        log.sync_all().await.expect("sync");
        // A tailing reader waits for the next batch at the old end.
        let woke = Rc::new(Cell::new(false));
        let waiter = spawn({
            let (log, woke) = (Rc::clone(&log), Rc::clone(&woke));
            async move {
                let result = log.wait_for(old_next, ReadBound::Written).await;
                woke.set(true);
                result
            }
        });
        let cut = held[12].base;
        log.truncate_from(Offset(cut)).await.expect("truncate");
        for _ in 0..20 {
            runnel_segment::runtime::yield_now().await;
        }
        assert!(!woke.get(), "nothing is at the old end any more");
        assert!(matches!(
            log.read(old_next, 1 << 20, ReadBound::Written).await,
            Err(LogError::OffsetOutOfRange { .. })
        ));
        assert!(matches!(
            log.wait_durable(Offset(cut)).await,
            Err(LogError::OffsetOutOfRange { .. })
        ));
        let empty = log
            .read(Offset(cut), 1 << 20, ReadBound::Written)
            .await
            .expect("read at the cut");
        assert!(empty.is_empty(), "a read at the new end finds nothing yet");
        // The new epoch refills the offsets; the waiter wakes on the new bytes.
        let mut again = Vec::new();
        while log.next_offset() <= old_next {
            again.extend(replicate(&log, &mut random, 1, 2).await);
        }
        waiter
            .join()
            .await
            .expect("the waiter sees the new batches");
        assert!(woke.get());
        let mut want = prefix(&held, cut);
        want.extend(again);
        assert_eq!(contents(&log).await, want);
        match Rc::try_unwrap(log) {
            Ok(log) => log.close().await.expect("close"),
            Err(_) => panic!("the log is still shared"),
        }
    });
}

#[test]
fn batch_epochs_is_a_bounded_digest_from_the_batch_holding_an_offset() {
    run(|| async {
        let log = ShardLog::open(FaultStorage::new(), "/replica/digest", small_config())
            .await
            .expect("open");
        let mut random = SplitMix64::new(4);
        let mut held = Vec::new();
        for epoch in 1..=4 {
            held.extend(replicate(&log, &mut random, 15, epoch).await);
        }
        let all: Vec<BatchEpoch> = held.iter().map(Held::digest).collect();
        assert_eq!(
            log.batch_epochs(Offset(0), usize::MAX).await.expect("all"),
            all
        );
        // From inside a batch: that batch first.
        let inside = held
            .iter()
            .position(|h| h.count > 1 && h.base > 30)
            .expect("batch");
        let from = Offset(held[inside].base + 1);
        assert_eq!(
            log.batch_epochs(from, usize::MAX)
                .await
                .expect("from inside"),
            all[inside..].to_vec()
        );
        // Bounded, and continued from the last entry.
        let mut pieces = Vec::new();
        let mut at = Offset(0);
        loop {
            let piece = log.batch_epochs(at, 7).await.expect("piece");
            assert!(piece.len() <= 7);
            let Some(last) = piece.last() else { break };
            at = last.next_offset();
            pieces.extend(piece);
        }
        assert_eq!(pieces, all);
        assert!(log
            .batch_epochs(log.next_offset(), 10)
            .await
            .expect("end")
            .is_empty());
        assert!(matches!(
            log.batch_epochs(Offset(log.next_offset().0 + 1), 10).await,
            Err(LogError::OffsetOutOfRange { .. })
        ));
        log.close().await.expect("close");
    });
}

/// The log a crash test starts from: batches over several segments, all durable, the last
/// checkpoint claiming them (a clean close and reopen).
async fn crash_fixture(storage: &FaultStorage, dir: &Path) -> (ShardLog<FaultStorage>, Vec<Held>) {
    let log = ShardLog::open(storage.clone(), dir, small_config())
        .await
        .expect("open");
    let mut random = SplitMix64::new(5);
    let held = replicate(&log, &mut random, 90, 1).await;
    log.close().await.expect("close");
    let log = ShardLog::open(storage.clone(), dir, small_config())
        .await
        .expect("reopen");
    (log, held)
}

/// Opens a crash image and checks it is the old log or the truncated one; then, on the
/// truncated one, appends the cut's offsets again with a new epoch and crashes once more: the
/// offsets hold the new bytes or nothing, never the old ones. Returns whether it was truncated.
async fn check_image(
    image: FaultStorage,
    dir: &Path,
    held: &[Held],
    cut: u64,
    seed: u64,
) -> Result<bool, String> {
    let log = ShardLog::open(image.clone(), dir, small_config())
        .await
        .map_err(|e| format!("open after a crash failed: {e}"))?;
    let found = try_contents(&log)
        .await
        .map_err(|e| format!("read after a crash failed: {e}"))?;
    let truncated = if found == held {
        false
    } else if found == prefix(held, cut) {
        true
    } else {
        return Err(format!(
            "neither old nor truncated: {} batches ending at {}",
            found.len(),
            found.last().map_or(0, Held::next)
        ));
    };
    if !truncated {
        log.close().await.map_err(|e| e.to_string())?;
        return Ok(false);
    }
    let mut random = SplitMix64::new(seed);
    let fresh = replicate(&log, &mut random, 2, 9).await;
    log.wait_durable(Offset(fresh[0].next() - 1))
        .await
        .map_err(|e| e.to_string())?;
    // The second batch may be durable or not when the plug is pulled.
    let again = image.crash(seed ^ 0x5eed);
    drop(log);
    let log = ShardLog::open(again, dir, small_config())
        .await
        .map_err(|e| format!("open after the second crash failed: {e}"))?;
    let found = try_contents(&log)
        .await
        .map_err(|e| format!("read after the second crash failed: {e}"))?;
    let mut want = prefix(held, cut);
    want.push(fresh[0].clone());
    let mut with_second = want.clone();
    with_second.push(fresh[1].clone());
    if found != want && found != with_second {
        return Err(format!(
            "after re-appending at the cut and a crash: {:?}",
            found.iter().map(|h| (h.base, h.epoch)).collect::<Vec<_>>()
        ));
    }
    log.close().await.map_err(|e| e.to_string())?;
    Ok(true)
}

#[test]
fn a_crash_at_any_step_of_a_truncation_reopens_as_the_old_or_the_truncated_log() {
    let failures = run(|| async {
        let mut failures = Vec::new();
        let dir = Path::new("/replica/crash");
        // Cuts in the active segment, in a sealed one, and at a segment's base.
        for case in 0..3 {
            let mut seen = (0, 0);
            let mut steps_after_done = 0;
            for steps in 0u64.. {
                let storage = FaultStorage::new();
                let (log, held) = crash_fixture(&storage, dir).await;
                let bases = segment_bases(storage.paths().into_iter());
                let cut = match case {
                    0 => held[held.len() - 5].base,
                    1 => {
                        held.iter()
                            .find(|h| h.base > bases[1] + 2 && h.base < bases[2])
                            .expect("a batch inside the second segment")
                            .base
                    }
                    _ => bases[2],
                };
                let log = Rc::new(log);
                let done = Rc::new(Cell::new(false));
                let truncation = spawn({
                    let (log, done) = (Rc::clone(&log), Rc::clone(&done));
                    async move {
                        let result = log.truncate_from(Offset(cut)).await;
                        done.set(true);
                        result
                    }
                });
                for _ in 0..steps {
                    runnel_segment::runtime::yield_now().await;
                }
                let finished_before = done.get();
                let images: Vec<FaultStorage> = (0..4).map(|seed| storage.crash(seed)).collect();
                truncation.join().await.expect("the truncation succeeds");
                drop(log);
                for (seed, image) in images.into_iter().enumerate() {
                    match check_image(image, dir, &held, cut, seed as u64).await {
                        Ok(true) => seen.1 += 1,
                        Ok(false) => {
                            seen.0 += 1;
                            if finished_before {
                                failures.push(format!(
                                    "case {case}, step {steps}, seed {seed}: the truncation \
                                     had returned, yet the old log came back"
                                ));
                            }
                        }
                        Err(reason) => failures
                            .push(format!("case {case}, step {steps}, seed {seed}: {reason}")),
                    }
                }
                if finished_before {
                    steps_after_done += 1;
                    if steps_after_done > 2 {
                        break;
                    }
                }
            }
            assert!(
                seen.0 > 0 && seen.1 > 0,
                "case {case}: crashes left both the old log and the truncated one ({seen:?})"
            );
        }
        failures
    });
    assert!(
        failures.is_empty(),
        "{} crash images failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// One step of the model test.
#[derive(Debug, Clone)]
enum Op {
    /// An append that gets the next offset.
    Append { records: usize },
    /// An append at the next offset plus `skew` (refused unless 0) with an epoch.
    AppendAt {
        records: usize,
        skew: i8,
        epoch: u64,
    },
    /// A truncation at the base of the batch `pick` (mod the held batches), `inside` it when
    /// that batch has several records (refused), or at the end.
    Truncate { pick: usize, inside: bool },
    /// Close and open again.
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..6).prop_map(|records| Op::Append { records }),
        4 => (1usize..6, prop_oneof![3 => Just(0i8), 1 => -3i8..4], 1u64..5)
            .prop_map(|(records, skew, epoch)| Op::AppendAt { records, skew, epoch }),
        2 => (0usize..1000, any::<bool>()).prop_map(|(pick, inside)| Op::Truncate { pick, inside }),
        1 => Just(Op::Reopen),
    ]
}

async fn model_run(ops: Vec<Op>) -> Result<(), String> {
    let storage = FaultStorage::new();
    let dir = Path::new("/replica/model");
    let config = small_config();
    let mut log = ShardLog::open(storage.clone(), dir, config.clone())
        .await
        .map_err(|e| e.to_string())?;
    let mut model: Vec<Held> = Vec::new();
    let mut random = SplitMix64::new(ops.len() as u64);
    for (step, op) in ops.into_iter().enumerate() {
        let next = model.last().map_or(0, Held::next);
        match op {
            Op::Append { records } => {
                let batch = random_batch(&mut random, records, 1500, step as i64);
                let appended = log
                    .append(&batch, Epoch(0))
                    .await
                    .map_err(|e| e.to_string())?;
                model.push(Held {
                    base: appended.base_offset.0,
                    count: records as u32,
                    epoch: 0,
                    bytes: stamped(&batch, next, 0).to_vec(),
                });
            }
            Op::AppendAt {
                records,
                skew,
                epoch,
            } => {
                let at = next.checked_add_signed(i64::from(skew)).unwrap_or(next + 1);
                let batch = stamped(&random_batch(&mut random, records, 1500, 0), next, epoch);
                let result = log.append_at(Offset(at), Epoch(epoch), &batch).await;
                match (skew, result) {
                    (0, Ok(_)) => model.push(Held {
                        base: next,
                        count: records as u32,
                        epoch,
                        bytes: batch.to_vec(),
                    }),
                    (0, Err(e)) => return Err(format!("step {step}: append at next: {e}")),
                    (_, Err(LogError::NotNextOffset { .. })) => {}
                    (_, other) => return Err(format!("step {step}: skewed append: {other:?}")),
                }
            }
            Op::Truncate { pick, inside } => {
                let target = model.get(pick % (model.len() + 1)).cloned();
                let (cut, refused) = match &target {
                    Some(held) if inside && held.count > 1 => (held.base + 1, true),
                    Some(held) => (held.base, false),
                    None => (next, false),
                };
                let result = log.truncate_from(Offset(cut)).await;
                match (refused, result) {
                    (false, Ok(())) => model.retain(|h| h.base < cut),
                    (true, Err(LogError::NotBatchBoundary { .. })) => {}
                    (_, other) => return Err(format!("step {step}: truncate at {cut}: {other:?}")),
                }
            }
            Op::Reopen => {
                log.close().await.map_err(|e| e.to_string())?;
                log = ShardLog::open(storage.clone(), dir, config.clone())
                    .await
                    .map_err(|e| format!("step {step}: reopen: {e}"))?;
            }
        }
        let next = model.last().map_or(0, Held::next);
        if log.next_offset() != Offset(next) {
            return Err(format!(
                "step {step}: next offset {} but the model says {next}",
                log.next_offset()
            ));
        }
        let digest: Vec<BatchEpoch> = model.iter().map(Held::digest).collect();
        let found = log
            .batch_epochs(Offset(0), usize::MAX)
            .await
            .map_err(|e| format!("step {step}: digest: {e}"))?;
        if found != digest {
            return Err(format!("step {step}: digest {found:?}, model {digest:?}"));
        }
        if contents(&log).await != model {
            return Err(format!("step {step}: contents differ from the model"));
        }
    }
    log.close().await.map_err(|e| e.to_string())?;
    let log = ShardLog::open(storage, dir, config)
        .await
        .map_err(|e| format!("final reopen: {e}"))?;
    if contents(&log).await != model {
        return Err("after the final reopen the contents differ from the model".into());
    }
    log.close().await.map_err(|e| e.to_string())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn appends_at_offsets_truncations_and_reopens_match_a_model(
        ops in proptest::collection::vec(op(), 1..60)
    ) {
        let result = run(move || model_run(ops));
        if let Err(reason) = result {
            prop_assert!(false, "{}", reason);
        }
    }
}
