//! Runnel as a benchmarked system: a `runnel-server` process on a fresh temporary data
//! directory, driven through the SDK on tokio. Throughput through `BufferedProducer`s (one per
//! producer, records sent one by one as an application would, borrowed:
//! `BufferedProducer::send_borrowed`), latency through
//! `Producer::send_batch` of one key per request (a request goes to one shard, as a keyed
//! producer's would).

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use runnel_client::{
    BorrowedRecord, BufferedProducerConfig, Client, ClientOptions, Durability, Record, StreamSpec,
};

use crate::pacing::{open_loop, OpenLoopResult};
use crate::server_process::{free_udp_ports, runnel_command_pinned, udp_port_bound, ServerProcess};
use crate::systems::{LatencyLoad, Workload};

/// How long a fresh server may take to serve.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// A producer awaits its records' futures every this many records (bounds their memory).
const PENDING_FUTURES_MAX: usize = 4096;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A keyed record as the benchmarks send it: 1,000 distinct keys.
pub fn record(value: &[u8], n: u64) -> Record {
    let mut key = Vec::new();
    write_key(&mut key, n);
    Record::at(value.to_vec(), now_ms()).with_key(key)
}

/// Appends record `n`'s key (`key-<n mod 1000>`) to `key`.
fn write_key(key: &mut Vec<u8>, n: u64) {
    use std::io::Write;
    // Writing into a vector cannot fail.
    let _ = write!(key, "key-{}", n % 1000);
}

/// Heap allocations of building one owned [`record`] (the value and the key are owned
/// vectors, as the SDK's `Record` requires), as the latency phase and the other benchmarks
/// do; the throughput phase sends borrowed records and builds none.
pub fn record_build_allocations(value: &[u8]) -> f64 {
    const RECORDS: u64 = 1000;
    let before = crate::alloc_counter::allocations();
    for n in 0..RECORDS {
        std::hint::black_box(record(value, n));
    }
    (crate::alloc_counter::allocations() - before) as f64 / RECORDS as f64
}

/// A running `runnel-server` and a client of it.
pub struct RunnelSystem {
    process: ServerProcess,
    client: Client,
    dir: tempfile::TempDir,
}

impl RunnelSystem {
    /// Starts `server` with `cores` executors on a new directory under `parent`, and connects.
    pub async fn start(
        server: &Path,
        parent: &Path,
        cores: usize,
        pin_cores: bool,
    ) -> Result<RunnelSystem, String> {
        let dir = tempfile::Builder::new()
            .prefix("runnel-bench-node-")
            .tempdir_in(parent)
            .map_err(|e| format!("temporary directory under {}: {e}", parent.display()))?;
        let data = dir.path().join("data");
        let base_port = free_udp_ports(cores)?;
        let mut process = ServerProcess::spawn(
            runnel_command_pinned(server, &data, base_port, cores, pin_cores),
            "runnel-server",
            &dir.path().join("server.log"),
        )?;
        let options = ClientOptions {
            ca_cert_path: Some(runnel_server::identity::self_signed_paths(&data).0),
            ..ClientOptions::default()
        };
        let url = format!("runnel://127.0.0.1:{base_port}");
        let deadline = Instant::now() + START_TIMEOUT;
        let client = loop {
            process.check_running()?;
            let ready = udp_port_bound(base_port)
                && options.ca_cert_path.as_ref().is_some_and(|p| p.exists());
            if ready {
                match Client::connect(&url, options.clone()).await {
                    Ok(client) => break client,
                    Err(e) if Instant::now() > deadline => {
                        return Err(format!("connect to {}: {e}", server.display()))
                    }
                    Err(_) => {}
                }
            } else if Instant::now() > deadline {
                return Err(format!(
                    "{} did not serve within {START_TIMEOUT:?}",
                    server.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Ok(RunnelSystem {
            process,
            client,
            dir,
        })
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The run's directory (the data directory is inside it): the disk probe writes here.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Creates `names`, each with `shards` shards and `durability`.
    pub async fn create_streams(
        &self,
        names: &[String],
        durability: Durability,
        shards: u32,
    ) -> Result<(), String> {
        for name in names {
            self.client
                .create_stream(StreamSpec::new(name, durability).shard_count(shards))
                .await
                .map_err(|e| format!("create {name}: {e}"))?;
        }
        Ok(())
    }

    /// Throughput: `workload.producers` buffered producers, producer `p` on stream
    /// `p % streams.len()`, as fast as the node takes them.
    pub async fn throughput(
        &self,
        streams: &[String],
        workload: Workload,
    ) -> Result<Duration, String> {
        throughput(&self.client, streams, workload).await
    }

    /// Heap allocations the server has counted since it started, all its threads together;
    /// `None` from a server that does not count them (before issue 9's counter).
    pub async fn server_allocations(&self) -> Result<Option<u64>, String> {
        let status = self.client.node_status().await.map_err(|e| e.to_string())?;
        let mut total = status.other_allocations.map(|counts| counts.allocations);
        for core in &status.cores {
            total = total
                .zip(core.allocations)
                .map(|(sum, counts)| sum + counts.allocations);
        }
        Ok(total)
    }

    /// Latency at a fixed rate to `stream`.
    pub async fn latency(&self, stream: &str, load: LatencyLoad) -> Result<OpenLoopResult, String> {
        let producer = self.client.producer(stream).map_err(|e| e.to_string())?;
        let value = vec![0x5au8; load.record_bytes];
        let (interval, count) = load.schedule();
        open_loop(interval, count, load.pacer, move |i| {
            let producer = producer.clone();
            let value = value.clone();
            let batch_records = load.batch_records;
            async move {
                let records: Vec<Record> = (0..batch_records).map(|_| record(&value, i)).collect();
                producer
                    .send_batch(records)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        })
        .await
    }

    /// Closes the client and stops the server (SIGTERM); an error if it exits badly.
    pub async fn stop(mut self) -> Result<(), String> {
        self.client.close().await;
        self.process.check_running()?;
        self.process.stop_cleanly().map(|_| ())
    }
}

/// Produces `workload` with buffered producers (producer `p` on `streams[p % len]`) as fast as
/// the node takes it; returns the time from the first record to the last acknowledgement.
pub async fn throughput(
    client: &Client,
    streams: &[String],
    workload: Workload,
) -> Result<Duration, String> {
    assert!(!streams.is_empty(), "a throughput phase needs a stream");
    let per_producer = workload.records_per_producer();
    let value = vec![0x5au8; workload.record_bytes];
    // Room for `batch_records` records with their keys and framing; the SDK lowers it to the
    // server's batch limit, so the record count is the bound that binds.
    let batch_bytes_max =
        (workload.batch_records as u64 * (workload.record_bytes as u64 + 128)).max(64 << 10);
    let config = BufferedProducerConfig {
        linger_ms: 2,
        batch_records_max: workload.batch_records,
        batch_bytes_max,
        buffer_bytes_max: (32u64 << 20).max(batch_bytes_max),
        in_flight_max: workload.in_flight,
        ..BufferedProducerConfig::default()
    };
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..workload.producers {
        let producer = client
            .buffered_producer(&streams[p % streams.len()], config.clone())
            .map_err(|e| e.to_string())?;
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut pending = Vec::with_capacity(PENDING_FUTURES_MAX);
            // The same keys as `record`, written into one reused buffer: the SDK copies a
            // borrowed record into its batch, so the benchmark allocates nothing per record.
            let mut key = Vec::with_capacity(16);
            for n in 0..per_producer {
                key.clear();
                write_key(&mut key, n + p as u64);
                let borrowed = BorrowedRecord::new(&value)
                    .with_key(&key)
                    .with_timestamp(now_ms());
                let future = producer
                    .send_borrowed(borrowed)
                    .await
                    .map_err(|e| e.to_string())?;
                pending.push(future);
                if pending.len() >= PENDING_FUTURES_MAX {
                    for future in pending.drain(..) {
                        future.await.map_err(|e| e.to_string())?;
                    }
                }
            }
            producer.close().await.map_err(|e| e.to_string())?;
            for future in pending {
                future.await.map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    Ok(started.elapsed())
}
