//! `runnel-bench peers`: Runnel, Redis Streams and NATS JetStream in one run, each as its own
//! server process on loopback with a temporary directory, with the same load: the same record
//! size, producers, records per request and requests in flight for throughput, and the same
//! offered rate and request size for latency (from each request's scheduled time). Per
//! system: throughput, the server's CPU-seconds per GB (`/proc/<pid>/stat`), the client's
//! allocations per record, and latency percentiles. The systems take turns in every round
//! (forwards in even rounds, backwards in odd ones). Each system's turn: a fresh server, the
//! latency phase in slices interleaved with the disk's fdatasync probe, then the throughput
//! phase (the bulk phase last, so the device's flushing after it does not fall on a
//! baseline).
//!
//! Durability differs by row and is printed with each: Runnel `fsync` and Redis `appendfsync
//! always` acknowledge after an fsync; Runnel `memory`, Redis `appendfsync no` and NATS
//! JetStream (whose file store does not fsync per message) do not.

use std::path::PathBuf;
use std::time::Duration;

use hdrhistogram::Histogram;
use runnel_client::Durability;

use crate::args::{PeersArgs, SystemArg};
use crate::node_bench::{latency_load, round_order};
use crate::report::{load_average, merge, print_disk, print_latency, write_plots};
use crate::server_process::runnel_server_path;
use crate::stats::{format_ratio, median, new_histogram, ratio, Percentiles};
use crate::systems::nats::{NatsSystem, SYNC_NOTE};
use crate::systems::redis::RedisSystem;
use crate::systems::runnel::RunnelSystem;
use crate::systems::{measure, sliced_latency, Counters, Latency, Throughput, Workload};

/// The row name of a system and what its acknowledgement means.
pub fn describe(system: SystemArg) -> (&'static str, &'static str) {
    match system {
        SystemArg::Runnel => (
            "Runnel fsync",
            "acknowledged after fdatasync (group commit)",
        ),
        SystemArg::RunnelMemory => ("Runnel memory", "acknowledged when in the server's memory"),
        SystemArg::RedisAlways => (
            "Redis appendfsync always",
            "AOF written and fsynced before the reply (per event-loop iteration)",
        ),
        SystemArg::RedisNo => (
            "Redis appendfsync no",
            "AOF written, fsync left to the OS (about every 30 s)",
        ),
        SystemArg::Nats => ("NATS JetStream file", SYNC_NOTE),
    }
}

/// One system's figures in one round.
struct RoundResult {
    /// The disk probe taken just before the latency phase: (fallocated, written).
    disk_reserved: Histogram<u64>,
    disk_written: Histogram<u64>,
    throughput: Throughput,
    latency: Latency,
}

async fn run_system(
    system: SystemArg,
    args: &PeersArgs,
    parent: &std::path::Path,
) -> Result<RoundResult, String> {
    let load = &args.load;
    let workload = Workload {
        record_bytes: load.record_bytes,
        records: load.bytes / load.record_bytes as u64,
        producers: load.producers,
        in_flight: load.in_flight,
        batch_records: load.batch_records,
    };
    let latency_load = latency_load(load);
    let records = workload.records_per_producer() * workload.producers as u64;
    let (throughput, latency) = match system {
        SystemArg::Runnel | SystemArg::RunnelMemory => {
            let server = runnel_server_path(load.server.as_deref())?;
            let runnel =
                RunnelSystem::start(&server, parent, load.server_cores, load.server_pin_cores)
                    .await?;
            let durability = if system == SystemArg::Runnel {
                Durability::Fsync
            } else {
                Durability::Memory
            };
            let shards = args.shards.unwrap_or(load.server_cores as u32 * 2);
            let streams = vec!["bench".to_string()];
            let measured = async {
                runnel
                    .create_streams(
                        &["bench".into(), "bench-latency".into()],
                        durability,
                        shards,
                    )
                    .await?;
                let l = sliced_latency(
                    runnel.pid(),
                    runnel.dir(),
                    latency_load,
                    load.disk_seconds as f64,
                    load.slices,
                    |slice| runnel.latency("bench-latency", slice),
                )
                .await?;
                let t = measure(Some(runnel.pid()), runnel.throughput(&streams, workload)).await?;
                Ok::<_, String>((t, l))
            }
            .await;
            let stopped = runnel.stop().await;
            let measured = measured?;
            stopped?;
            measured
        }
        SystemArg::RedisAlways | SystemArg::RedisNo => {
            let redis = RedisSystem::start(parent, system == SystemArg::RedisAlways)?;
            let measured = async {
                let l = sliced_latency(
                    redis.pid(),
                    parent,
                    latency_load,
                    load.disk_seconds as f64,
                    load.slices,
                    |slice| redis.latency(slice),
                )
                .await?;
                let t = measure(Some(redis.pid()), redis.throughput(workload)).await?;
                Ok::<_, String>((t, l))
            }
            .await;
            let stopped = redis.stop();
            let measured = measured?;
            stopped?;
            measured
        }
        SystemArg::Nats => {
            let nats = NatsSystem::start(parent)?;
            let measured = async {
                nats.create_stream().await?;
                let l = sliced_latency(
                    nats.pid(),
                    parent,
                    latency_load,
                    load.disk_seconds as f64,
                    load.slices,
                    |slice| nats.latency(slice),
                )
                .await?;
                let t = measure(Some(nats.pid()), nats.throughput(workload)).await?;
                Ok::<_, String>((t, l))
            }
            .await;
            let stopped = nats.stop();
            let measured = measured?;
            stopped?;
            measured
        }
    };
    let (elapsed, counters) = throughput;
    Ok(RoundResult {
        disk_reserved: latency.disk_reserved,
        disk_written: latency.disk_written,
        throughput: throughput_of(records, workload.record_bytes, elapsed, counters),
        latency: latency.latency,
    })
}

fn throughput_of(
    records: u64,
    record_bytes: usize,
    elapsed: Duration,
    counters: Counters,
) -> Throughput {
    Throughput {
        records,
        bytes: records * record_bytes as u64,
        elapsed,
        counters,
    }
}

pub fn run(args: PeersArgs) -> Result<(), String> {
    let load = &args.load;
    let parent = load.dir.clone().unwrap_or_else(|| PathBuf::from("target"));
    std::fs::create_dir_all(&parent).map_err(|e| format!("create {}: {e}", parent.display()))?;
    println!(
        "runnel-bench peers: {} MiB per throughput phase, {}-byte records, {} producer(s) × {} in flight, {} records per request; latency at {:.1} MB/s offered in {}-record requests for {} s; {} round(s); Runnel: {} server core(s); load average {}",
        load.bytes >> 20,
        load.record_bytes,
        load.producers,
        load.in_flight,
        load.batch_records,
        load.rate_bytes_per_second as f64 / 1e6,
        load.latency_batch_records,
        load.latency_seconds,
        load.rounds,
        load.server_cores,
        load_average()
    );
    for &system in &args.systems {
        let (name, durability) = describe(system);
        println!("system {name}: {durability}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut results: Vec<Vec<RoundResult>> = args.systems.iter().map(|_| Vec::new()).collect();
    let mut disk_reserved = new_histogram();
    let mut disk_written = new_histogram();
    for round in 0..load.rounds {
        println!(
            "round {}/{} (load average {}):",
            round + 1,
            load.rounds,
            load_average()
        );
        for index in round_order(round, args.systems.len()) {
            let system = args.systems[index];
            let (name, _) = describe(system);
            let result = runtime.block_on(run_system(system, &args, &parent))?;
            println!("  {name}:");
            print_disk("    ", &result.disk_reserved, &result.disk_written);
            print_latency(
                "    ",
                "latency",
                &result.latency,
                load.latency_batch_records,
                Some((&result.disk_reserved, &result.disk_written)),
            );
            println!("    throughput {}", result.throughput.line());
            merge(&mut disk_reserved, &result.disk_reserved);
            merge(&mut disk_written, &result.disk_written);
            results[index].push(result);
        }
    }
    summarize(&args, &results, &disk_reserved, &disk_written)
}

fn summarize(
    args: &PeersArgs,
    results: &[Vec<RoundResult>],
    disk_reserved: &Histogram<u64>,
    disk_written: &Histogram<u64>,
) -> Result<(), String> {
    let load = &args.load;
    println!(
        "summary over {} round(s) (medians of rounds; latency merged over rounds); load average now {}",
        load.rounds,
        load_average()
    );
    println!("| system | durability | MB/s | records/s | server CPU-s/GB | client CPU-s/GB | client allocations/record | latency p50 µs | p99 µs | p99.9 µs | max µs |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut plot_throughput = Vec::new();
    let mut plot_latency = Vec::new();
    let mut rows = Vec::new();
    for (&system, rounds) in args.systems.iter().zip(results) {
        let (name, durability) = describe(system);
        let of = |f: &dyn Fn(&RoundResult) -> f64| {
            median(&rounds.iter().map(f).collect::<Vec<_>>()).unwrap_or(f64::NAN)
        };
        let mb = of(&|r| r.throughput.mb_per_second());
        let records = of(&|r| r.throughput.records_per_second());
        let server_cpu = of(&|r| r.throughput.server_cpu_per_gb());
        let client_cpu = of(&|r| r.throughput.client_cpu_per_gb());
        let allocations = of(&|r| r.throughput.client_allocations_per_record());
        let mut latency = new_histogram();
        for round in rounds {
            merge(&mut latency, &round.latency.open_loop.latency);
        }
        let p = Percentiles::of(&latency);
        println!(
            "| {name} | {durability} | {mb:.1} | {records:.0} | {server_cpu:.2} | {client_cpu:.2} | {allocations:.2} | {} | {} | {} | {} |",
            p.p50_us, p.p99_us, p.p999_us, p.max_us
        );
        plot_throughput.push((name.to_string(), mb));
        plot_latency.push((name.to_string(), p));
        rows.push((name, mb, server_cpu, p));
    }
    let reserved = Percentiles::of(disk_reserved);
    let written = Percentiles::of(disk_written);
    println!(
        "| disk: 4 KiB O_DIRECT write + fdatasync, fallocated | — | | | | | | {} | {} | {} | {} |",
        reserved.p50_us, reserved.p99_us, reserved.p999_us, reserved.max_us
    );
    println!(
        "| disk: 4 KiB O_DIRECT write + fdatasync, written blocks | — | | | | | | {} | {} | {} | {} |",
        written.p50_us, written.p99_us, written.p999_us, written.max_us
    );
    plot_latency.push(("disk fdatasync (written blocks)".into(), written));
    plot_latency.push(("disk fdatasync (fallocated)".into(), reserved));
    if let Some((base_name, base_mb, base_cpu, base_p)) = rows.first().copied() {
        for (name, mb, cpu, p) in rows.iter().skip(1) {
            println!(
                "ratio {base_name} / {name}: throughput {}, server CPU-s/GB {}, latency p50 {}, p99 {}",
                format_ratio(ratio(base_mb, *mb)),
                format_ratio(ratio(base_cpu, *cpu)),
                format_ratio(ratio(base_p.p50_us as f64, p.p50_us as f64)),
                format_ratio(ratio(base_p.p99_us as f64, p.p99_us as f64)),
            );
        }
    }
    if let Some(dir) = &load.plot {
        write_plots(
            dir,
            &load.font,
            "runnel-bench peers",
            &plot_throughput,
            &plot_latency,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_says_what_its_acknowledgement_means() {
        for system in [
            SystemArg::Runnel,
            SystemArg::RunnelMemory,
            SystemArg::RedisAlways,
            SystemArg::RedisNo,
            SystemArg::Nats,
        ] {
            let (name, durability) = describe(system);
            assert!(!name.is_empty() && !durability.is_empty());
        }
        assert!(describe(SystemArg::Nats).1.contains("no fsync per message"));
    }
}
