//! `runnel-bench log`: the storage engine on this machine's disk, in one run:
//!
//! 1. raw: plain sequential glommio DMA writes (one in flight, the log's write size) of N
//!    bytes, then one fdatasync — the ceiling;
//! 2. durable append: the same N bytes as batches of 1 KiB records through `ShardLog`, many
//!    producers each waiting for durability (group commit) — and the ratio to 1.;
//! 3. append-to-durable latency at a fixed offered rate, from each batch's scheduled time
//!    (run first, before the bulk phases leave the device busy writing back);
//! 4. a cold full scan (O_DIRECT, so no page cache) of what 2. wrote, reading every record.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use runnel_core::batch::AlignedBytes;
use runnel_core::{BatchBuilder, Epoch, Limits, Record};
use runnel_segment::log::ReadBound;
use runnel_segment::runtime;
use runnel_segment::storage::{Storage, StorageFile, WriteBuffer};
use runnel_segment::{DmaStorage, LogConfig, ShardLog};

use crate::args::LogArgs;

const MB: f64 = 1_000_000.0;

fn batches(
    args: &LogArgs,
    records_per_batch: usize,
    distinct: usize,
) -> Result<Vec<AlignedBytes>, String> {
    let mut out = Vec::with_capacity(distinct);
    let mut seed = 0x5eed_u64;
    for b in 0..distinct {
        let mut builder = BatchBuilder::new();
        for r in 0..records_per_batch {
            let value: Vec<u8> = (0..args.record_bytes)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (seed >> 33) as u8
                })
                .collect();
            let key = format!("key-{}", (b * records_per_batch + r) % 1000);
            builder.push(
                Record::at(
                    value,
                    1_700_000_000_000 + (b * records_per_batch + r) as i64,
                )
                .with_key(key),
            );
        }
        out.push(
            builder
                .finish(&Limits::DEFAULT)
                .map_err(|e| format!("cannot build a batch: {e}"))?,
        );
    }
    Ok(out)
}

fn config(args: &LogArgs) -> LogConfig {
    LogConfig {
        write_buffer_bytes: args.write_buffer_bytes,
        ..LogConfig::default()
    }
}

struct Throughput {
    bytes: u64,
    records: u64,
    elapsed: Duration,
}

impl Throughput {
    fn zero() -> Self {
        Throughput {
            bytes: 0,
            records: 0,
            elapsed: Duration::ZERO,
        }
    }
    fn add(&mut self, other: &Throughput) {
        self.bytes += other.bytes;
        self.records += other.records;
        self.elapsed += other.elapsed;
    }
    fn mb_per_second(&self) -> f64 {
        self.bytes as f64 / MB / self.elapsed.as_secs_f64()
    }
    fn records_per_second(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }
}

async fn raw_dma(dir: &Path, bytes: u64, write_bytes: usize) -> Result<Throughput, String> {
    let storage = DmaStorage;
    let path = dir.join("raw.dat");
    let file = storage
        .create(&path)
        .await
        .map_err(|e| format!("create {}: {e}", path.display()))?;
    file.preallocate(bytes + write_bytes as u64)
        .await
        .map_err(|e| format!("preallocate: {e}"))?;
    file.sync().await.map_err(|e| format!("sync: {e}"))?;
    let started = Instant::now();
    let mut pos = 0u64;
    let mut fill = 0u8;
    while pos < bytes {
        let mut buffer = file.alloc(write_bytes);
        // Touch the buffer as the log does when it copies batches in.
        fill = fill.wrapping_add(1);
        buffer.as_mut_slice().fill(fill);
        file.write_at(buffer, pos)
            .await
            .map_err(|e| format!("write: {e}"))?;
        pos += write_bytes as u64;
    }
    file.sync().await.map_err(|e| format!("sync: {e}"))?;
    let elapsed = started.elapsed();
    drop(file);
    storage
        .remove(&path)
        .await
        .map_err(|e| format!("remove: {e}"))?;
    Ok(Throughput {
        bytes: pos,
        records: 0,
        elapsed,
    })
}

async fn durable_append(
    dir: &Path,
    args: &LogArgs,
    bytes: u64,
    pool: Rc<Vec<AlignedBytes>>,
) -> Result<(Throughput, Histogram<u64>), String> {
    let log = Rc::new(
        ShardLog::open(DmaStorage, dir, config(args))
            .await
            .map_err(|e| e.to_string())?,
    );
    let first_offset = log.next_offset();
    let batch_bytes = pool.first().map_or(1, |b| b.len()) as u64;
    let total_batches = bytes.div_ceil(batch_bytes);
    let per_producer = total_batches.div_ceil(args.producers as u64);
    let histogram = Rc::new(RefCell::new(
        Histogram::<u64>::new(3).map_err(|e| e.to_string())?,
    ));
    let started = Instant::now();
    let allocations_before = crate::alloc_counter::allocations();
    let mut tasks = Vec::new();
    for producer in 0..args.producers {
        let log = log.clone();
        let pool = pool.clone();
        let histogram = histogram.clone();
        tasks.push(runtime::spawn(async move {
            for i in 0..per_producer {
                let batch = &pool[(producer + i as usize) % pool.len()];
                let sent = Instant::now();
                log.append_durable(batch, Epoch(1)).await?;
                let _ = histogram
                    .borrow_mut()
                    .record(sent.elapsed().as_micros() as u64);
            }
            Ok::<u64, runnel_segment::LogError>(per_producer)
        }));
    }
    let mut appended_batches = 0;
    for task in tasks {
        appended_batches += task.join().await.map_err(|e| e.to_string())?;
    }
    let elapsed = started.elapsed();
    let allocations = crate::alloc_counter::allocations() - allocations_before;
    let records = appended_batches * args.batch_records as u64;
    println!(
        "  heap allocations during the phase: {allocations} ({:.4} per record, {:.2} per batch; producer tasks, histogram and group-commit buffers included)",
        allocations as f64 / records.max(1) as f64,
        allocations as f64 / appended_batches.max(1) as f64
    );
    if log.durable_offset() != first_offset.after(records) {
        return Err(format!(
            "durable offset {} after {records} records appended from {first_offset}",
            log.durable_offset()
        ));
    }
    let stats = log.stats();
    println!(
        "  group commits: {} writes, {} fdatasyncs, {:.0} KiB per write on average",
        stats.writes,
        stats.syncs,
        stats.bytes_written as f64 / 1024.0 / stats.writes.max(1) as f64
    );
    let log = Rc::try_unwrap(log).map_err(|_| "log still shared".to_string())?;
    log.close().await.map_err(|e| e.to_string())?;
    let histogram = histogram.borrow().clone();
    Ok((
        Throughput {
            bytes: appended_batches * batch_bytes,
            records,
            elapsed,
        },
        histogram,
    ))
}

async fn fixed_rate_latency(
    dir: &Path,
    args: &LogArgs,
    pool: Rc<Vec<AlignedBytes>>,
) -> Result<(Histogram<u64>, f64), String> {
    let log = Rc::new(
        ShardLog::open(DmaStorage, dir, config(args))
            .await
            .map_err(|e| e.to_string())?,
    );
    let batch_bytes = pool.first().map_or(1, |b| b.len()) as f64;
    let interval = Duration::from_secs_f64(batch_bytes / args.rate_bytes_per_second as f64);
    let count = (args.latency_seconds as f64 / interval.as_secs_f64()) as u64;
    let histogram = Rc::new(RefCell::new(
        Histogram::<u64>::new(3).map_err(|e| e.to_string())?,
    ));
    let mut tasks = Vec::with_capacity(count as usize);
    let started = Instant::now();
    for i in 0..count {
        let scheduled = started + interval * i as u32;
        let now = Instant::now();
        if scheduled > now {
            runtime::sleep(scheduled - now).await;
        }
        let log = log.clone();
        let pool = pool.clone();
        let histogram = histogram.clone();
        tasks.push(runtime::spawn(async move {
            let batch = &pool[i as usize % pool.len()];
            log.append_durable(batch, Epoch(1)).await?;
            // From the scheduled time: a stalled sender does not hide the stall.
            let _ = histogram
                .borrow_mut()
                .record(scheduled.elapsed().as_micros() as u64);
            Ok::<(), runnel_segment::LogError>(())
        }));
    }
    for task in tasks {
        task.join().await.map_err(|e| e.to_string())?;
    }
    let achieved = count as f64 * batch_bytes / MB / started.elapsed().as_secs_f64();
    let log = Rc::try_unwrap(log).map_err(|_| "log still shared".to_string())?;
    log.close().await.map_err(|e| e.to_string())?;
    let histogram = histogram.borrow().clone();
    Ok((histogram, achieved))
}

async fn cold_scan(dir: &Path, args: &LogArgs) -> Result<(Throughput, Duration), String> {
    let opened = Instant::now();
    let log = ShardLog::open(DmaStorage, dir, config(args))
        .await
        .map_err(|e| e.to_string())?;
    let open_time = opened.elapsed();
    let started = Instant::now();
    let mut next = log.start_offset();
    let (mut bytes, mut records, mut checksum) = (0u64, 0u64, 0u64);
    loop {
        let chunk = log
            .read(next, 4 << 20, ReadBound::Durable)
            .await
            .map_err(|e| e.to_string())?;
        if chunk.is_empty() {
            break;
        }
        bytes += chunk.as_bytes().len() as u64;
        for batch in chunk.batches() {
            for record in batch.records().map_err(|e| e.to_string())? {
                records += 1;
                checksum = checksum.wrapping_add(record.value().len() as u64);
            }
        }
        next = chunk.next_offset();
    }
    let elapsed = started.elapsed();
    if checksum != records * args.record_bytes as u64 {
        return Err("scan read records of the wrong size".into());
    }
    log.close().await.map_err(|e| e.to_string())?;
    Ok((
        Throughput {
            bytes,
            records,
            elapsed,
        },
        open_time,
    ))
}

fn percentiles(histogram: &Histogram<u64>) -> String {
    format!(
        "p50 {} µs, p99 {} µs, p999 {} µs, max {} µs ({} samples)",
        histogram.value_at_quantile(0.50),
        histogram.value_at_quantile(0.99),
        histogram.value_at_quantile(0.999),
        histogram.max(),
        histogram.len()
    )
}

pub fn run(args: LogArgs) -> Result<(), String> {
    let base: PathBuf = match &args.dir {
        Some(dir) => dir.clone(),
        None => PathBuf::from("target"),
    };
    std::fs::create_dir_all(&base).map_err(|e| format!("create {}: {e}", base.display()))?;
    let temp = tempfile::Builder::new()
        .prefix("runnel-bench-")
        .tempdir_in(&base)
        .map_err(|e| format!("temporary directory in {}: {e}", base.display()))?;
    let root = temp.path().to_owned();
    println!(
        "runnel-bench log: {} MiB per phase, {}-byte records, {} per batch, {} producers, write buffer {} KiB, in {}",
        args.bytes >> 20,
        args.record_bytes,
        args.batch_records,
        args.producers,
        args.write_buffer_bytes >> 10,
        root.display()
    );
    runtime::run("bench-log", 1, move || async move {
        let pool = Rc::new(batches(&args, args.batch_records, 64)?);
        let batch_bytes = pool.first().map_or(0, |b| b.len());
        println!("batch size {batch_bytes} bytes");

        // The latency phase runs first: after gigabytes of writes the file system and the
        // device are busy writing back for a while, which is noise, not the log.
        let latency_pool = Rc::new(batches(&args, args.latency_batch_records, 64)?);
        let (latency, achieved) =
            fixed_rate_latency(&root.join("latency"), &args, latency_pool).await?;
        println!(
            "append-to-durable latency at {:.0} MB/s offered ({:.1} MB/s achieved, {}-record batches): {}",
            args.rate_bytes_per_second as f64 / MB,
            achieved,
            args.latency_batch_records,
            percentiles(&latency)
        );

        // Raw writes and durable appends alternate in rounds, so that the disk's swings in
        // speed (it is shared) fall on both sides of the ratio alike.
        let log_dir = root.join("durable");
        let round_bytes = args.bytes / args.rounds;
        let mut append_latency = Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
        let (mut raw_total, mut append_total) = (Throughput::zero(), Throughput::zero());
        let mut ratios = Vec::new();
        for round in 1..=args.rounds {
            let raw = raw_dma(&root, round_bytes, args.write_buffer_bytes).await?;
            let (append, latency) =
                durable_append(&log_dir, &args, round_bytes, pool.clone()).await?;
            append_latency.add(&latency).map_err(|e| e.to_string())?;
            let ratio = append.mb_per_second() / raw.mb_per_second();
            println!(
                "round {round}: raw DMA {:>7.1} MB/s, durable append {:>7.1} MB/s ({:>9.0} records/s), ratio {ratio:.2}",
                raw.mb_per_second(),
                append.mb_per_second(),
                append.records_per_second()
            );
            ratios.push(ratio);
            raw_total.add(&raw);
            append_total.add(&append);
        }
        println!(
            "raw DMA sequential writes     {:>9.1} MB/s   ({} MiB in {:.2} s, {} KiB writes, one fdatasync a round)",
            raw_total.mb_per_second(),
            raw_total.bytes >> 20,
            raw_total.elapsed.as_secs_f64(),
            args.write_buffer_bytes >> 10
        );
        println!(
            "durable append (group commit) {:>9.1} MB/s   {:>10.0} records/s   ({} MiB in {:.2} s)",
            append_total.mb_per_second(),
            append_total.records_per_second(),
            append_total.bytes >> 20,
            append_total.elapsed.as_secs_f64()
        );
        println!(
            "  closed-loop append-to-durable latency: {}",
            percentiles(&append_latency)
        );
        ratios.sort_by(f64::total_cmp);
        println!(
            "ratio durable append / raw DMA: {:.2} over all rounds, median of rounds {:.2}   (target >= 0.70)",
            append_total.mb_per_second() / raw_total.mb_per_second(),
            ratios.get(ratios.len() / 2).copied().unwrap_or_default()
        );

        let (scan, open_time) = cold_scan(&log_dir, &args).await?;
        println!(
            "cold full scan                {:>9.1} MB/s   {:>10.0} records/s   ({} MiB in {:.2} s; recovery open took {:.2} s)",
            scan.mb_per_second(),
            scan.records_per_second(),
            scan.bytes >> 20,
            scan.elapsed.as_secs_f64(),
            open_time.as_secs_f64()
        );
        Ok::<(), String>(())
    })?;
    drop(temp);
    Ok(())
}
