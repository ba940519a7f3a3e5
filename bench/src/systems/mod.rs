//! The systems the benchmarks drive, each as a separate server process started on loopback
//! with a temporary data directory: Runnel (`runnel-server`, through the SDK), Redis Streams
//! (`redis-server`, through the `redis` crate) and NATS JetStream (`nats-server`, through
//! `async-nats`). Every system gets the same load: the same record size, producers, records
//! per request, requests in flight, and the same offered rate and request size for latency.
//!
//! [`measure`] wraps a phase with the counters every phase prints: the server's CPU time from
//! `/proc/<pid>/stat`, this process's (the client's) CPU time and heap allocations, and the
//! machine's busy time.

pub mod nats;
pub mod redis;
pub mod runnel;

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::pacing::{OpenLoopResult, Pacer};
use crate::proc_stat::{CpuMark, CpuUse};
use crate::report::{merge, probe_disk};
use crate::stats::{cpu_seconds_per_gb, new_histogram, per_record, ratio, Percentiles, MB};

/// The load of a throughput phase.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// Value bytes of each record.
    pub record_bytes: usize,
    /// Records in the phase, over all producers.
    pub records: u64,
    /// Producers (each its own connection or buffered producer).
    pub producers: usize,
    /// Requests in flight per producer (Runnel: per producer and shard).
    pub in_flight: usize,
    /// Records per request (Runnel: the buffered producer's `batch_records_max`; Redis: XADDs
    /// per pipeline; NATS: publishes before their acks are awaited).
    pub batch_records: usize,
}

impl Workload {
    /// Records each producer sends (the remainder of an uneven split is not sent).
    pub fn records_per_producer(&self) -> u64 {
        self.records / self.producers as u64
    }

    /// Requests of `batch_records` each producer sends (rounded up).
    pub fn requests_per_producer(&self) -> u64 {
        self.records_per_producer()
            .div_ceil(self.batch_records as u64)
    }
}

/// The load of an open-loop latency phase.
#[derive(Debug, Clone, Copy)]
pub struct LatencyLoad {
    /// Value bytes of each record.
    pub record_bytes: usize,
    /// Records per request.
    pub batch_records: usize,
    /// Offered bytes (of values) per second.
    pub rate_bytes_per_second: u64,
    /// Length of the phase.
    pub seconds: f64,
    /// How requests are paced.
    pub pacer: Pacer,
}

impl LatencyLoad {
    /// The interval between requests and their number.
    pub fn schedule(&self) -> (Duration, u64) {
        crate::stats::schedule(
            (self.batch_records * self.record_bytes) as u64,
            self.rate_bytes_per_second,
            self.seconds,
        )
    }
}

/// The counters of one measured phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    /// CPU time of the server, this process and the machine.
    pub cpu: CpuUse,
    /// Heap allocations in this process (the client side) during the phase.
    pub client_allocations: u64,
}

/// Runs `phase` between two readings of the counters; `server` is the server's pid.
pub async fn measure<T>(
    server: Option<u32>,
    phase: impl Future<Output = Result<T, String>>,
) -> Result<(T, Counters), String> {
    let mark = CpuMark::now(server);
    let allocations = crate::alloc_counter::allocations();
    let output = phase.await?;
    let client_allocations = crate::alloc_counter::allocations() - allocations;
    let cpu = mark.since(server);
    Ok((
        output,
        Counters {
            cpu,
            client_allocations,
        },
    ))
}

impl Counters {
    /// Adds the counters of another phase (slices of one phase).
    pub fn add(&mut self, other: &Counters) {
        self.cpu.server_seconds += other.cpu.server_seconds;
        self.cpu.client_seconds += other.cpu.client_seconds;
        self.cpu.machine_seconds += other.cpu.machine_seconds;
        self.client_allocations += other.client_allocations;
    }
}

/// A latency phase and the disk probe taken alongside it.
#[derive(Debug, Clone)]
pub struct LatencyWithDisk {
    /// The append (or publish) latency.
    pub latency: Latency,
    /// 4 KiB O_DIRECT write + fdatasync into fallocated space.
    pub disk_reserved: Histogram<u64>,
    /// 4 KiB O_DIRECT write + fdatasync over written blocks.
    pub disk_written: Histogram<u64>,
}

/// The latency phase in `slices` slices, each preceded by its share of the disk probe in `dir`:
/// the disk's flush time on this shared machine swings between about 0.1 and 4 ms from one
/// minute to the next, so the baseline is taken interleaved with the phase it is compared to,
/// not once before it. `run` runs one slice of the open loop; `server` is its pid.
pub async fn sliced_latency<F, Fut>(
    server: u32,
    dir: &Path,
    load: LatencyLoad,
    disk_seconds: f64,
    slices: usize,
    mut run: F,
) -> Result<LatencyWithDisk, String>
where
    F: FnMut(LatencyLoad) -> Fut,
    Fut: Future<Output = Result<OpenLoopResult, String>>,
{
    assert!(slices > 0, "a latency phase has at least one slice");
    let slice = LatencyLoad {
        seconds: load.seconds / slices as f64,
        ..load
    };
    let mut disk_reserved = new_histogram();
    let mut disk_written = new_histogram();
    let mut merged = OpenLoopResult {
        latency: new_histogram(),
        dispatch: new_histogram(),
        pacer_lateness: new_histogram(),
        requests: 0,
        elapsed: Duration::ZERO,
    };
    let mut counters = Counters::default();
    for _ in 0..slices {
        let (reserved, written) =
            probe_disk(dir, Duration::from_secs_f64(disk_seconds / slices as f64)).await?;
        merge(&mut disk_reserved, &reserved);
        merge(&mut disk_written, &written);
        let (open_loop, slice_counters) = measure(Some(server), run(slice)).await?;
        merge(&mut merged.latency, &open_loop.latency);
        merge(&mut merged.dispatch, &open_loop.dispatch);
        merge(&mut merged.pacer_lateness, &open_loop.pacer_lateness);
        merged.requests += open_loop.requests;
        merged.elapsed += open_loop.elapsed;
        counters.add(&slice_counters);
    }
    Ok(LatencyWithDisk {
        latency: Latency::new(merged, &load, counters),
        disk_reserved,
        disk_written,
    })
}

/// What a throughput phase measured.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    /// Records acknowledged.
    pub records: u64,
    /// Value bytes acknowledged.
    pub bytes: u64,
    /// From the first request to the last acknowledgement.
    pub elapsed: Duration,
    /// CPU and allocations meanwhile.
    pub counters: Counters,
}

impl Throughput {
    /// MB/s of values.
    pub fn mb_per_second(&self) -> f64 {
        ratio(self.bytes as f64 / MB, self.elapsed.as_secs_f64())
    }

    /// Records per second.
    pub fn records_per_second(&self) -> f64 {
        ratio(self.records as f64, self.elapsed.as_secs_f64())
    }

    /// The server's CPU-seconds per GB of values appended.
    pub fn server_cpu_per_gb(&self) -> f64 {
        cpu_seconds_per_gb(self.counters.cpu.server_seconds, self.bytes)
    }

    /// The client's (this process's) CPU-seconds per GB.
    pub fn client_cpu_per_gb(&self) -> f64 {
        cpu_seconds_per_gb(self.counters.cpu.client_seconds, self.bytes)
    }

    /// The client's heap allocations per record.
    pub fn client_allocations_per_record(&self) -> f64 {
        per_record(self.counters.client_allocations, self.records)
    }

    /// One line: rate, CPU per GB of server and client, allocations, the machine's other load.
    pub fn line(&self) -> String {
        format!(
            "{:>8.1} MB/s {:>9.0} records/s | server {:.2} CPU-s/GB, client {:.2} CPU-s/GB | client {:.2} allocations/record | other load {:.2} cores",
            self.mb_per_second(),
            self.records_per_second(),
            self.server_cpu_per_gb(),
            self.client_cpu_per_gb(),
            self.client_allocations_per_record(),
            ratio(self.counters.cpu.others_seconds(), self.elapsed.as_secs_f64()),
        )
    }
}

/// What a latency phase measured.
#[derive(Debug, Clone)]
pub struct Latency {
    /// The open loop's histograms.
    pub open_loop: OpenLoopResult,
    /// Records sent.
    pub records: u64,
    /// Value bytes sent.
    pub bytes: u64,
    /// The offered rate in MB/s.
    pub offered_mb_per_second: f64,
    /// CPU and allocations meanwhile.
    pub counters: Counters,
}

impl Latency {
    /// Builds the figures of an open-loop phase of `load`.
    pub fn new(open_loop: OpenLoopResult, load: &LatencyLoad, counters: Counters) -> Latency {
        let records = open_loop.requests * load.batch_records as u64;
        Latency {
            records,
            bytes: records * load.record_bytes as u64,
            offered_mb_per_second: load.rate_bytes_per_second as f64 / MB,
            open_loop,
            counters,
        }
    }

    /// The achieved rate in MB/s (over the phase, up to the last acknowledgement).
    pub fn achieved_mb_per_second(&self) -> f64 {
        ratio(self.bytes as f64 / MB, self.open_loop.elapsed.as_secs_f64())
    }

    /// Percentiles from scheduled send to acknowledgement.
    pub fn percentiles(&self) -> Percentiles {
        Percentiles::of(&self.open_loop.latency)
    }

    /// The benchmark's own share: scheduled time to the request's first poll.
    pub fn dispatch(&self) -> Percentiles {
        Percentiles::of(&self.open_loop.dispatch)
    }

    /// The server's CPU-seconds per GB in this phase.
    pub fn server_cpu_per_gb(&self) -> f64 {
        cpu_seconds_per_gb(self.counters.cpu.server_seconds, self.bytes)
    }

    /// The client's heap allocations per record.
    pub fn client_allocations_per_record(&self) -> f64 {
        per_record(self.counters.client_allocations, self.records)
    }
}
