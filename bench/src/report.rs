//! Printing shared by `node` and `peers`: the machine's load, the disk probe, the latency
//! lines with their ratios to the disk, and the plots.

use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::disk::{probe, ProbeFile};
use crate::stats::{format_ratio, ratio, Percentiles};
use crate::systems::Latency;

/// The load average line of `/proc/loadavg` (1, 5 and 15 minutes), for the record of a run.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|line| {
            line.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| "?".into())
}

/// Both disk probes under `dir`, on a blocking thread: (reserved, written).
pub async fn probe_disk(
    dir: &Path,
    duration: Duration,
) -> Result<(Histogram<u64>, Histogram<u64>), String> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        // Half the time each; at most 100,000 samples (an unusually fast device).
        let half = duration / 2;
        let reserved = probe(&dir, ProbeFile::Reserved, half, 100_000)?;
        let written = probe(&dir, ProbeFile::Written, half, 100_000)?;
        Ok((reserved, written))
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Prints the disk probe's two lines.
pub fn print_disk(indent: &str, reserved: &Histogram<u64>, written: &Histogram<u64>) {
    println!(
        "{indent}disk, {}: {}",
        ProbeFile::Reserved.label(),
        Percentiles::of(reserved)
    );
    println!(
        "{indent}disk, {}: {}",
        ProbeFile::Written.label(),
        Percentiles::of(written)
    );
}

/// Append latency as multiples of the disk's: (p50 ratio, p99 ratio).
pub fn disk_ratios(latency: &Percentiles, disk: &Percentiles) -> (f64, f64) {
    (
        ratio(latency.p50_us as f64, disk.p50_us as f64),
        ratio(latency.p99_us as f64, disk.p99_us as f64),
    )
}

/// Prints a latency phase: percentiles, ratios to both disk probes, the benchmark's share,
/// server CPU and client allocations.
pub fn print_latency(
    indent: &str,
    what: &str,
    latency: &Latency,
    batch_records: usize,
    disk: Option<(&Histogram<u64>, &Histogram<u64>)>,
) {
    let p = latency.percentiles();
    println!(
        "{indent}{what} at {:.1} MB/s offered ({:.1} MB/s achieved, {batch_records}-record requests): {p}",
        latency.offered_mb_per_second,
        latency.achieved_mb_per_second(),
    );
    if let Some((reserved, written)) = disk {
        let (w50, w99) = disk_ratios(&p, &Percentiles::of(written));
        let (r50, r99) = disk_ratios(&p, &Percentiles::of(reserved));
        println!(
            "{indent}  ÷ disk fdatasync (written blocks): p50 {}×, p99 {}× (targets ≤ 2×, ≤ 3×); ÷ disk fdatasync (fallocated space, as the log writes): p50 {}×, p99 {}×",
            format_ratio(w50),
            format_ratio(w99),
            format_ratio(r50),
            format_ratio(r99)
        );
    }
    let pacer = Percentiles::of(&latency.open_loop.pacer_lateness);
    let dispatch = latency.dispatch();
    println!(
        "{indent}  benchmark's share: pacer late p50 {} µs, p99 {} µs; scheduled → request polled p50 {} µs, p99 {} µs | server {:.2} CPU-s/GB | client {:.2} allocations/record",
        pacer.p50_us,
        pacer.p99_us,
        dispatch.p50_us,
        dispatch.p99_us,
        latency.server_cpu_per_gb(),
        latency.client_allocations_per_record()
    );
}

/// Adds `from` into `into` (hdrhistogram merge; both record microseconds).
pub fn merge(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    // Both are auto-resizing histograms of the same precision: adding cannot fail.
    let _ = into.add(from);
}

/// Writes `throughput.png` and `latency.png` into `dir`.
pub fn write_plots(
    dir: &Path,
    font: &Path,
    title: &str,
    throughput: &[(String, f64)],
    latency: &[(String, Percentiles)],
) -> Result<(), String> {
    crate::plot::load_font(font)?;
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    if !throughput.is_empty() {
        let path = dir.join("throughput.png");
        crate::plot::bars(
            &path,
            &format!("{title}: producer throughput"),
            "MB/s",
            throughput,
        )?;
        println!("plot: {}", path.display());
    }
    if !latency.is_empty() {
        let path = dir.join("latency.png");
        crate::plot::percentiles(&path, &format!("{title}: latency percentiles"), latency)?;
        println!("plot: {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_as_multiples_of_the_disk() {
        let latency = Percentiles {
            p50_us: 600,
            p99_us: 1800,
            ..Percentiles::default()
        };
        let disk = Percentiles {
            p50_us: 300,
            p99_us: 900,
            ..Percentiles::default()
        };
        assert_eq!(disk_ratios(&latency, &disk), (2.0, 2.0));
        let (p50, _) = disk_ratios(&latency, &Percentiles::default());
        assert!(p50.is_nan());
    }

    #[test]
    fn merged_histograms_hold_both() {
        let mut a = crate::stats::new_histogram();
        let mut b = crate::stats::new_histogram();
        a.record(100).expect("record");
        b.record(200).expect("record");
        merge(&mut a, &b);
        assert_eq!(a.len(), 2);
        assert_eq!(a.max(), 200);
    }
}
