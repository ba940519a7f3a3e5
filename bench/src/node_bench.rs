//! `runnel-bench node`: a node over QUIC on loopback, the server as a separate `runnel-server`
//! process (so `/proc/<pid>/stat` gives its CPU time alone), the client on tokio in this
//! process. Per round and variant, on a fresh data directory:
//!
//! 1. append latency at a fixed offered rate, paced by a dedicated thread and measured from
//!    each request's scheduled time, in `--slices` slices each preceded by a slice of the
//!    disk's own latency (4 KiB O_DIRECT write + fdatasync, on the data directory's file
//!    system), printed as multiples of the disk's p50/p99; again under a concurrent disk
//!    writer with `--disk-writer`. First, because after
//!    the bulk phases the device keeps flushing for a while (fdatasync then took about 4 ms
//!    here instead of 0.15), which is the previous phase's noise, not this one's baseline;
//! 2. producer throughput with buffered producers, once per `--durability` (fsync, memory),
//!    with the server's CPU-seconds per GB appended, the client's, and the heap allocations
//!    per record of the client and of the server (the server's counted by the server itself
//!    and read through `GetNodeStatus` before and after the phase, also for the latency phase).
//!
//! Variants are the servers (`--server`, `--server-b`) times the shard counts (`--shards`);
//! they alternate within every round (A B, then B A, …) so the shared machine's swings fall on
//! all of them, and the summary prints medians over rounds and ratios to the first variant.
//! A server that does not count its allocations (before issue 9's counter) prints `n/a`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use hdrhistogram::Histogram;
use runnel_client::Durability;

use crate::args::{DurabilityArg, NodeArgs, Phase};
use crate::disk::DiskWriter;
use crate::pacing::Pacer;
use crate::report::{disk_ratios, load_average, merge, print_disk, print_latency, write_plots};
use crate::server_process::runnel_server_path;
use crate::stats::{format_ratio, median, new_histogram, ratio, Percentiles};
use crate::systems::runnel::{record_build_allocations, RunnelSystem};
use crate::systems::{measure, sliced_latency, LatencyLoad, LatencyWithDisk, Throughput, Workload};

/// One server binary with one shard count.
#[derive(Debug, Clone)]
struct Variant {
    label: String,
    server: PathBuf,
    shards: u32,
}

fn variants(args: &NodeArgs) -> Result<Vec<Variant>, String> {
    let mut servers = vec![("A", runnel_server_path(args.load.server.as_deref())?)];
    if let Some(b) = &args.server_b {
        servers.push(("B", b.clone()));
    }
    for (_, path) in &servers {
        if !path.is_file() {
            return Err(format!(
                "no server binary at {} (cargo build --release -p runnel-server, or --server PATH)",
                path.display()
            ));
        }
    }
    let shards = if args.shards.is_empty() {
        vec![args.load.server_cores as u32 * 2]
    } else {
        args.shards.clone()
    };
    let mut out = Vec::new();
    for (name, server) in &servers {
        for &count in &shards {
            let shard_label = format!("{count} shard{}", if count == 1 { "" } else { "s" });
            let label = match (servers.len() > 1, shards.len() > 1) {
                (true, true) => format!("{name} {shard_label}"),
                (true, false) => name.to_string(),
                (false, true) => shard_label,
                (false, false) => "runnel".into(),
            };
            out.push(Variant {
                label,
                server: server.clone(),
                shards: count,
            });
        }
    }
    Ok(out)
}

fn durability_name(durability: DurabilityArg) -> &'static str {
    match durability {
        DurabilityArg::Fsync => "fsync",
        DurabilityArg::Memory => "memory",
    }
}

fn durability(durability: DurabilityArg) -> Durability {
    match durability {
        DurabilityArg::Fsync => Durability::Fsync,
        DurabilityArg::Memory => Durability::Memory,
    }
}

/// A latency phase with the disk probe taken alongside it.
type LatencyRound = LatencyWithDisk;

/// Everything one variant measured in one round.
#[derive(Default)]
struct RoundResult {
    throughput: BTreeMap<&'static str, Throughput>,
    /// Server heap allocations per record of each throughput phase, if the server counts them.
    server_allocations: BTreeMap<&'static str, Option<f64>>,
    latency: Option<LatencyRound>,
    latency_tokio_timer: Option<LatencyRound>,
    latency_loaded: Option<LatencyRound>,
}

fn workload(args: &NodeArgs) -> Workload {
    Workload {
        record_bytes: args.load.record_bytes,
        records: args.load.bytes / args.load.record_bytes as u64,
        producers: args.load.producers,
        in_flight: args.load.in_flight,
        batch_records: args.load.batch_records,
    }
}

pub(crate) fn latency_load(load: &crate::args::LoadArgs) -> LatencyLoad {
    LatencyLoad {
        record_bytes: load.record_bytes,
        batch_records: load.latency_batch_records,
        rate_bytes_per_second: load.rate_bytes_per_second,
        seconds: load.latency_seconds as f64,
        pacer: Pacer::Thread {
            spin: std::time::Duration::from_micros(load.spin_us),
        },
    }
}

async fn latency_round(
    system: &RunnelSystem,
    args: &NodeArgs,
    what: &str,
    pacer: Pacer,
) -> Result<LatencyRound, String> {
    let load = LatencyLoad {
        pacer,
        ..latency_load(&args.load)
    };
    let round = sliced_latency(
        system.pid(),
        system.dir(),
        load,
        args.load.disk_seconds as f64,
        args.load.slices,
        |slice| system.latency("bench-latency", slice),
    )
    .await?;
    print_disk("  ", &round.disk_reserved, &round.disk_written);
    print_latency(
        "  ",
        what,
        &round.latency,
        load.batch_records,
        Some((&round.disk_reserved, &round.disk_written)),
    );
    Ok(round)
}

async fn run_round(variant: &Variant, args: &NodeArgs) -> Result<RoundResult, String> {
    let parent = args
        .load
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("target"));
    std::fs::create_dir_all(&parent).map_err(|e| format!("create {}: {e}", parent.display()))?;
    let system = RunnelSystem::start(
        &variant.server,
        &parent,
        args.load.server_cores,
        args.load.server_pin_cores,
    )
    .await?;
    let result = measure_round(&system, variant, args).await;
    let stopped = system.stop().await;
    let result = result?;
    stopped?;
    Ok(result)
}

async fn measure_round(
    system: &RunnelSystem,
    variant: &Variant,
    args: &NodeArgs,
) -> Result<RoundResult, String> {
    let mut result = RoundResult::default();
    let mut streams = BTreeMap::new();
    for &d in &args.durability {
        let names: Vec<String> = (0..args.streams)
            .map(|i| format!("bench-{}-{i}", durability_name(d)))
            .collect();
        system
            .create_streams(&names, durability(d), variant.shards)
            .await?;
        streams.insert(durability_name(d), names);
    }
    if args.phases.contains(&Phase::Latency) {
        system
            .create_streams(&["bench-latency".into()], Durability::Fsync, variant.shards)
            .await?;
    }
    if args.phases.contains(&Phase::Latency) {
        let default_pacer = latency_load(&args.load).pacer;
        let before = system.server_allocations().await?;
        let precise = latency_round(system, args, "append latency (fsync)", default_pacer).await?;
        let per_record = allocations_per_record(
            before,
            system.server_allocations().await?,
            precise.latency.records,
        );
        println!(
            "  server allocations per record in the latency phase ({}-record requests): {}",
            args.load.latency_batch_records,
            format_allocations(per_record)
        );
        if args.compare_tokio_timer {
            result.latency_tokio_timer = Some(
                latency_round(
                    system,
                    args,
                    "append latency (fsync) paced by tokio's timer",
                    Pacer::TokioTimer,
                )
                .await?,
            );
        }
        result.latency = Some(precise);
        if let Some(rate) = args.disk_writer {
            let writer = DiskWriter::start(system.dir(), rate)?;
            let loaded = latency_round(
                system,
                args,
                &format!(
                    "append latency (fsync) with a disk writer at {:.0} MB/s",
                    rate as f64 / 1e6
                ),
                default_pacer,
            )
            .await;
            let written = writer.stop()?;
            println!(
                "  (the disk writer wrote {:.0} MB meanwhile)",
                written as f64 / 1e6
            );
            result.latency_loaded = Some(loaded?);
        }
    }
    if args.phases.contains(&Phase::Throughput) {
        let workload = workload(args);
        for &d in &args.durability {
            let name = durability_name(d);
            let before = system.server_allocations().await?;
            let (elapsed, counters) = measure(
                Some(system.pid()),
                system.throughput(&streams[name], workload),
            )
            .await?;
            let records = workload.records_per_producer() * workload.producers as u64;
            let throughput = Throughput {
                records,
                bytes: records * workload.record_bytes as u64,
                elapsed,
                counters,
            };
            let server_allocations =
                allocations_per_record(before, system.server_allocations().await?, records);
            println!(
                "  throughput, {name:<6} {} | server {} allocations/record",
                throughput.line(),
                format_allocations(server_allocations)
            );
            result.throughput.insert(name, throughput);
            result.server_allocations.insert(name, server_allocations);
        }
    }
    Ok(result)
}

/// Server allocations per record between two readings of its counter (`None` from a server
/// that does not count).
fn allocations_per_record(before: Option<u64>, after: Option<u64>, records: u64) -> Option<f64> {
    let (before, after) = before.zip(after)?;
    Some(ratio(after.saturating_sub(before) as f64, records as f64))
}

/// Allocations per record, or `n/a` from a server that does not count them.
fn format_allocations(per_record: Option<f64>) -> String {
    per_record.map_or_else(|| "n/a".into(), |value| format!("{value:.4}"))
}

/// Merged histograms of a variant's latency rounds.
struct MergedLatency {
    latency: Histogram<u64>,
    reserved: Histogram<u64>,
    written: Histogram<u64>,
    rounds: usize,
    /// Per round, append p50 and p99 ÷ the written-block probe taken just before them.
    per_round_p50: Vec<f64>,
    per_round_p99: Vec<f64>,
}

fn merge_latency<'a>(rounds: impl Iterator<Item = &'a LatencyRound>) -> MergedLatency {
    let mut merged = MergedLatency {
        latency: new_histogram(),
        reserved: new_histogram(),
        written: new_histogram(),
        rounds: 0,
        per_round_p50: Vec::new(),
        per_round_p99: Vec::new(),
    };
    for round in rounds {
        let (p50, p99) = disk_ratios(
            &Percentiles::of(&round.latency.open_loop.latency),
            &Percentiles::of(&round.disk_written),
        );
        merged.per_round_p50.push(p50);
        merged.per_round_p99.push(p99);
        merge(&mut merged.latency, &round.latency.open_loop.latency);
        merge(&mut merged.reserved, &round.disk_reserved);
        merge(&mut merged.written, &round.disk_written);
        merged.rounds += 1;
    }
    merged
}

fn print_merged(label: &str, what: &str, merged: &MergedLatency) {
    if merged.rounds == 0 {
        return;
    }
    let p = Percentiles::of(&merged.latency);
    let reserved = Percentiles::of(&merged.reserved);
    let written = Percentiles::of(&merged.written);
    let (r50, r99) = disk_ratios(&p, &reserved);
    let (w50, w99) = disk_ratios(&p, &written);
    println!("{label}: {what}: {p}");
    println!(
        "{label}:   disk fdatasync (written blocks) p50 {} µs, p99 {} µs → append ÷ disk p50 {}×, p99 {}× (targets ≤ 2×, ≤ 3×); fallocated space p50 {} µs, p99 {} µs → p50 {}×, p99 {}×",
        written.p50_us,
        written.p99_us,
        format_ratio(w50),
        format_ratio(w99),
        reserved.p50_us,
        reserved.p99_us,
        format_ratio(r50),
        format_ratio(r99)
    );
    println!(
        "{label}:   append ÷ the written-block probe just before it, per round: p50 {} (median {}×), p99 {} (median {}×)",
        merged.per_round_p50.iter().map(|r| format_ratio(*r)).collect::<Vec<_>>().join(", "),
        format_ratio(median(&merged.per_round_p50).unwrap_or(f64::NAN)),
        merged.per_round_p99.iter().map(|r| format_ratio(*r)).collect::<Vec<_>>().join(", "),
        format_ratio(median(&merged.per_round_p99).unwrap_or(f64::NAN)),
    );
}

/// The order of the variants in round `round`: forwards in even rounds, backwards in odd ones
/// (A B, B A, A B, …), so that running second (after the other variant's data was written and
/// deleted, while the disk may still be writing it back) falls on every variant alike.
pub(crate) fn round_order(round: usize, variants: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..variants).collect();
    if round % 2 == 1 {
        order.reverse();
    }
    order
}

fn medians(values: impl Iterator<Item = f64>) -> (f64, Vec<f64>) {
    let values: Vec<f64> = values.collect();
    (median(&values).unwrap_or(f64::NAN), values)
}

fn list(values: &[f64], decimals: usize) -> String {
    values
        .iter()
        .map(|v| format!("{v:.decimals$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn run(args: NodeArgs) -> Result<(), String> {
    let variants = variants(&args)?;
    let build_allocations = record_build_allocations(&vec![0u8; args.load.record_bytes]);
    println!(
        "runnel-bench node: {} MiB per throughput phase, {}-byte records, {} producer(s) × {} in flight, {} records per request, {} stream(s), {} server core(s), {} round(s), QUIC on loopback; load average {}",
        args.load.bytes >> 20,
        args.load.record_bytes,
        args.load.producers,
        args.load.in_flight,
        args.load.batch_records,
        args.streams,
        args.load.server_cores,
        args.load.rounds,
        load_average()
    );
    for variant in &variants {
        println!(
            "variant {}: {} with {} shard(s) per stream",
            variant.label,
            variant.server.display(),
            variant.shards
        );
    }
    println!("(client allocations per record: the throughput phase sends borrowed records and builds none; the latency phase's include {build_allocations:.2} for building each owned Record in the benchmark; the server's are counted by the server, n/a from one that does not count them)");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut results: Vec<Vec<RoundResult>> = variants.iter().map(|_| Vec::new()).collect();
    for round in 0..args.load.rounds {
        for index in round_order(round, variants.len()) {
            let variant = &variants[index];
            println!(
                "round {}/{}, {} (load average {}):",
                round + 1,
                args.load.rounds,
                variant.label,
                load_average()
            );
            let result = runtime.block_on(run_round(variant, &args))?;
            results[index].push(result);
        }
    }
    println!(
        "summary over {} round(s): medians of the rounds (each round's figures above); latency histograms merged over the rounds; load average now {}",
        args.load.rounds,
        load_average()
    );
    let mut plot_throughput = Vec::new();
    let mut plot_latency = Vec::new();
    for (variant, rounds) in variants.iter().zip(&results) {
        for &d in &args.durability {
            let name = durability_name(d);
            let phases: Vec<&Throughput> = rounds
                .iter()
                .filter_map(|r| r.throughput.get(name))
                .collect();
            if phases.is_empty() {
                continue;
            }
            let (mb, mbs) = medians(phases.iter().map(|t| t.mb_per_second()));
            let (server_cpu, server_cpus) = medians(phases.iter().map(|t| t.server_cpu_per_gb()));
            let (client_cpu, _) = medians(phases.iter().map(|t| t.client_cpu_per_gb()));
            let (allocations, _) =
                medians(phases.iter().map(|t| t.client_allocations_per_record()));
            let server_allocations: Option<Vec<f64>> = rounds
                .iter()
                .filter_map(|r| r.server_allocations.get(name).copied())
                .collect();
            let server_allocations = server_allocations
                .filter(|rounds| !rounds.is_empty())
                .map_or_else(
                    || "n/a".to_string(),
                    |rounds| {
                        let (median, all) = medians(rounds.into_iter());
                        format!("{median:.4} (rounds: {})", list(&all, 4))
                    },
                );
            println!(
                "{}: throughput {name:<6} {mb:>7.1} MB/s (rounds: {}) | server {server_cpu:.2} CPU-seconds per GB (rounds: {}) | client {client_cpu:.2} CPU-s/GB | client {allocations:.2} allocations/record | server {server_allocations} allocations/record",
                variant.label,
                list(&mbs, 1),
                list(&server_cpus, 2)
            );
            plot_throughput.push((format!("{} {name}", variant.label), mb));
        }
        let merged = merge_latency(rounds.iter().filter_map(|r| r.latency.as_ref()));
        print_merged(&variant.label, "append latency (fsync)", &merged);
        if merged.rounds > 0 {
            plot_latency.push((
                format!("{} append (fsync)", variant.label),
                Percentiles::of(&merged.latency),
            ));
        }
        let tokio_timer =
            merge_latency(rounds.iter().filter_map(|r| r.latency_tokio_timer.as_ref()));
        print_merged(
            &variant.label,
            "append latency (fsync) paced by tokio's timer",
            &tokio_timer,
        );
        if tokio_timer.rounds > 0 {
            let (old, new) = (
                Percentiles::of(&tokio_timer.latency),
                Percentiles::of(&merged.latency),
            );
            println!(
                "{}:   paced by tokio's timer ÷ paced by the thread: p50 {}, p99 {} ({} µs more at p50)",
                variant.label,
                format_ratio(ratio(old.p50_us as f64, new.p50_us as f64)),
                format_ratio(ratio(old.p99_us as f64, new.p99_us as f64)),
                old.p50_us as i64 - new.p50_us as i64
            );
            plot_latency.push((format!("{} append, tokio-timer pacing", variant.label), old));
        }
        let loaded = merge_latency(rounds.iter().filter_map(|r| r.latency_loaded.as_ref()));
        print_merged(
            &variant.label,
            "append latency (fsync) with the disk writer",
            &loaded,
        );
        if loaded.rounds > 0 {
            plot_latency.push((
                format!("{} append, disk writer", variant.label),
                Percentiles::of(&loaded.latency),
            ));
        }
    }
    print_ratios(&args, &variants, &results);
    // The disk, all rounds and variants together, as the plots' yardstick.
    let all = merge_latency(results.iter().flatten().filter_map(|r| r.latency.as_ref()));
    if all.rounds > 0 {
        plot_latency.push((
            "disk fdatasync (fallocated)".into(),
            Percentiles::of(&all.reserved),
        ));
        plot_latency.push((
            "disk fdatasync (written blocks)".into(),
            Percentiles::of(&all.written),
        ));
    }
    let loaded = merge_latency(
        results
            .iter()
            .flatten()
            .filter_map(|r| r.latency_loaded.as_ref()),
    );
    if loaded.rounds > 0 {
        plot_latency.push((
            "disk fdatasync (written), disk writer".into(),
            Percentiles::of(&loaded.written),
        ));
    }
    if let Some(dir) = &args.load.plot {
        write_plots(
            dir,
            &args.load.font,
            "runnel-bench node",
            &plot_throughput,
            &plot_latency,
        )?;
    }
    Ok(())
}

/// Ratios of every variant to the first: of the medians, and the median of the per-round
/// pairs (variant and first variant of the same round, a few seconds apart).
fn print_ratios(args: &NodeArgs, variants: &[Variant], results: &[Vec<RoundResult>]) {
    let Some((first, rest)) = variants.split_first() else {
        return;
    };
    for (index, variant) in rest.iter().enumerate() {
        let ours = &results[index + 1];
        let theirs = &results[0];
        for &d in &args.durability {
            let name = durability_name(d);
            let pairs: Vec<(&Throughput, &Throughput)> = ours
                .iter()
                .zip(theirs)
                .filter_map(|(a, b)| Some((a.throughput.get(name)?, b.throughput.get(name)?)))
                .collect();
            if pairs.is_empty() {
                continue;
            }
            let pair_ratio = |f: &dyn Fn(&Throughput) -> f64| {
                let per_round: Vec<f64> = pairs.iter().map(|(a, b)| ratio(f(a), f(b))).collect();
                let of_medians = ratio(
                    median(&pairs.iter().map(|(a, _)| f(a)).collect::<Vec<_>>())
                        .unwrap_or(f64::NAN),
                    median(&pairs.iter().map(|(_, b)| f(b)).collect::<Vec<_>>())
                        .unwrap_or(f64::NAN),
                );
                format!(
                    "{} (per round: {})",
                    format_ratio(of_medians),
                    per_round
                        .iter()
                        .map(|r| format_ratio(*r))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            println!(
                "ratio {} / {}, {name}: throughput {}; server CPU-s/GB {}; client allocations/record {}",
                variant.label,
                first.label,
                pair_ratio(&|t| t.mb_per_second()),
                pair_ratio(&|t| t.server_cpu_per_gb()),
                pair_ratio(&|t| t.client_allocations_per_record()),
            );
        }
        let a = merge_latency(ours.iter().filter_map(|r| r.latency.as_ref()));
        let b = merge_latency(theirs.iter().filter_map(|r| r.latency.as_ref()));
        if a.rounds > 0 && b.rounds > 0 {
            let (pa, pb) = (Percentiles::of(&a.latency), Percentiles::of(&b.latency));
            println!(
                "ratio {} / {}, append latency: p50 {}, p99 {}, p999 {}",
                variant.label,
                first.label,
                format_ratio(ratio(pa.p50_us as f64, pb.p50_us as f64)),
                format_ratio(ratio(pa.p99_us as f64, pb.p99_us as f64)),
                format_ratio(ratio(pa.p999_us as f64, pb.p999_us as f64)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn node_args(extra: &[&str]) -> NodeArgs {
        let mut argv = vec!["runnel-bench", "node"];
        argv.extend_from_slice(extra);
        match crate::args::Cli::try_parse_from(argv)
            .expect("parse")
            .command
        {
            crate::args::Bench::Node(args) => args,
            _ => panic!("parsed the wrong benchmark"),
        }
    }

    #[test]
    fn variants_are_servers_times_shard_counts() {
        // Any existing file stands in for a server binary here.
        let file = tempfile::NamedTempFile::new().expect("file");
        let path = file.path().to_str().expect("utf-8 path");
        let one = variants(&node_args(&["--server", path])).expect("variants");
        assert_eq!(one.len(), 1);
        assert_eq!((one[0].label.as_str(), one[0].shards), ("runnel", 2));
        let shards =
            variants(&node_args(&["--server", path, "--shards", "1,16"])).expect("variants");
        let labels: Vec<&str> = shards.iter().map(|v| v.label.as_str()).collect();
        assert_eq!(labels, ["1 shard", "16 shards"]);
        let ab = variants(&node_args(&["--server", path, "--server-b", path])).expect("variants");
        let labels: Vec<&str> = ab.iter().map(|v| v.label.as_str()).collect();
        assert_eq!(labels, ["A", "B"]);
        let both = variants(&node_args(&[
            "--server",
            path,
            "--server-b",
            path,
            "--shards",
            "1,4",
        ]))
        .expect("variants");
        assert_eq!(both.len(), 4);
        assert_eq!(both[3].label, "B 4 shards");
        assert!(variants(&node_args(&["--server", "/nonexistent/runnel-server"])).is_err());
    }

    #[test]
    fn rounds_alternate_the_order_of_the_variants() {
        assert_eq!(round_order(0, 2), vec![0, 1]);
        assert_eq!(round_order(1, 2), vec![1, 0]);
        assert_eq!(round_order(2, 3), vec![0, 1, 2]);
        assert_eq!(round_order(3, 1), vec![0]);
    }

    #[test]
    fn medians_and_lists_print_rounds() {
        let (m, values) = medians([3.0, 1.0, 2.0].into_iter());
        assert_eq!(m, 2.0);
        assert_eq!(list(&values, 1), "3.0, 1.0, 2.0");
    }
}
