//! `runnel-bench node`: a node over QUIC on loopback, in one run: producer throughput of 1 KiB
//! records with `fsync` and with `memory` durability (buffered producers), then append latency
//! at a fixed offered rate measured from each request's scheduled time (coordinated omission
//! corrected). The node runs in this process (its executors on their own threads), the client
//! on tokio.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use runnel_client::{
    BufferedProducerConfig, Client, ClientOptions, Durability, Record, StreamSpec,
};
use runnel_server::config::NodeConfig;

use crate::args::NodeArgs;

const MB: f64 = 1_000_000.0;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn record(value: &[u8], n: u64) -> Record {
    Record::at(value.to_vec(), now_ms()).with_key(format!("key-{}", n % 1000).into_bytes())
}

/// How a throughput phase produces: its load.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Load {
    /// Records in all.
    pub records: u64,
    /// Buffered producers, each sending `records / producers`.
    pub producers: usize,
    /// Requests in flight per producer and shard.
    pub in_flight: usize,
}

/// Produces `load` with buffered producers as fast as the node takes it; returns MB/s and
/// records/s.
pub(crate) async fn throughput(
    client: &Client,
    stream: &str,
    load: Load,
    value: &[u8],
) -> Result<(f64, f64), String> {
    let per_producer = load.records / load.producers as u64;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..load.producers {
        let producer = client
            .buffered_producer(
                stream,
                BufferedProducerConfig {
                    linger_ms: 2,
                    batch_bytes_max: 512 << 10,
                    in_flight_max: load.in_flight,
                    ..BufferedProducerConfig::default()
                },
            )
            .map_err(|e| e.to_string())?;
        let value = value.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut pending = Vec::new();
            for n in 0..per_producer {
                let future = producer
                    .send(record(&value, n + p as u64))
                    .await
                    .map_err(|e| e.to_string())?;
                pending.push(future);
                if pending.len() >= 4096 {
                    for future in pending.drain(..) {
                        future.await.map_err(|e| e.to_string())?;
                    }
                }
            }
            producer.close().await.map_err(|e| e.to_string())?;
            for future in pending {
                future.await.map_err(|e| e.to_string())?;
            }
            Ok::<u64, String>(per_producer)
        }));
    }
    let mut sent = 0;
    for task in tasks {
        sent += task.await.map_err(|e| e.to_string())??;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok((
        sent as f64 * value.len() as f64 / MB / seconds,
        sent as f64 / seconds,
    ))
}

async fn latency(
    client: &Client,
    stream: &str,
    args: &NodeArgs,
    value: &[u8],
) -> Result<(Histogram<u64>, f64), String> {
    let batch_records = args.latency_batch_records;
    let batch_bytes = (batch_records * value.len()) as f64;
    let interval = Duration::from_secs_f64(batch_bytes / args.rate_bytes_per_second as f64);
    let count = (args.latency_seconds as f64 / interval.as_secs_f64()) as u64;
    let histogram = Arc::new(Mutex::new(
        Histogram::<u64>::new(3).map_err(|e| e.to_string())?,
    ));
    let producer = client.producer(stream).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(count as usize);
    for i in 0..count {
        let scheduled = started + interval * i as u32;
        tokio::time::sleep_until(scheduled.into()).await;
        let producer = producer.clone();
        let histogram = Arc::clone(&histogram);
        // One key per request: a batch goes to one shard, as a keyed producer's would.
        let records: Vec<Record> = (0..batch_records).map(|_| record(value, i)).collect();
        tasks.push(tokio::spawn(async move {
            producer
                .send_batch(records)
                .await
                .map_err(|e| e.to_string())?;
            let micros = scheduled.elapsed().as_micros() as u64;
            if let Ok(mut histogram) = histogram.lock() {
                let _ = histogram.record(micros);
            }
            Ok::<(), String>(())
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    let achieved = count as f64 * batch_bytes / MB / started.elapsed().as_secs_f64();
    let histogram = histogram.lock().map_err(|e| e.to_string())?.clone();
    Ok((histogram, achieved))
}

/// A node running in this process for a benchmark, on a temporary data directory, with the
/// tokio runtime its clients run on.
pub(crate) struct BenchNode {
    _temp: tempfile::TempDir,
    node: runnel_server::node::RunningNode,
    url: String,
    options: ClientOptions,
    /// The clients' runtime (two worker threads: the other core, beside the node's).
    pub runtime: tokio::runtime::Runtime,
}

impl BenchNode {
    /// Starts a node of `server_cores` executors with `data` under `dir` (default ./target).
    pub fn start(
        dir: Option<std::path::PathBuf>,
        server_cores: usize,
        configure: impl FnOnce(&mut NodeConfig),
    ) -> Result<BenchNode, String> {
        let parent = dir.unwrap_or_else(|| "target".into());
        std::fs::create_dir_all(&parent)
            .map_err(|e| format!("create {}: {e}", parent.display()))?;
        let temp = tempfile::Builder::new()
            .prefix("runnel-bench-node-")
            .tempdir_in(parent)
            .map_err(|e| format!("temporary directory: {e}"))?;
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let base_port = probe.local_addr().map_err(|e| e.to_string())?.port();
        drop(probe);
        let mut config = NodeConfig {
            data_dir: temp.path().join("data"),
            base_port,
            cores: server_cores,
            pin_cores: false,
            ..NodeConfig::default()
        };
        configure(&mut config);
        config.validate().map_err(|e| e.to_string())?;
        let (identity, certificate) =
            runnel_server::identity::load_or_create(&config).map_err(|e| e.to_string())?;
        let node = runnel_server::node::start(config, identity).map_err(|e| e.to_string())?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(BenchNode {
            _temp: temp,
            node,
            url: format!("runnel://127.0.0.1:{base_port}"),
            options: ClientOptions {
                ca_cert_path: Some(certificate),
                ..ClientOptions::default()
            },
            runtime,
        })
    }

    /// A client of the node, once it listens (within 30 s).
    pub async fn connect(&self) -> Result<Client, String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match Client::connect(&self.url, self.options.clone()).await {
                Ok(client) => return Ok(client),
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => return Err(format!("connect: {e}")),
            }
        }
    }

    /// Stops the node and waits for it.
    pub fn stop(self) -> Result<(), String> {
        drop(self.runtime);
        self.node.stop_and_join().map_err(|e| e.to_string())
    }
}

pub fn run(args: NodeArgs) -> Result<(), String> {
    let node = BenchNode::start(args.dir.clone(), args.server_cores, |_| {})?;
    println!(
        "runnel-bench node: {} MiB per throughput phase, {}-byte records, {} producers ({} in flight each), {} server core(s), QUIC on loopback",
        args.bytes >> 20,
        args.record_bytes,
        args.producers,
        args.in_flight,
        args.server_cores
    );
    let result = node.runtime.block_on(async {
        let client = node.connect().await?;
        let value = vec![0x5au8; args.record_bytes];
        let shards = args.server_cores as u32 * 2;
        for (name, durability) in [("bench-fsync", Durability::Fsync), ("bench-memory", Durability::Memory)] {
            client
                .create_stream(StreamSpec::new(name, durability).shard_count(shards))
                .await
                .map_err(|e| format!("create {name}: {e}"))?;
        }
        let load = Load {
            records: args.bytes / value.len() as u64,
            producers: args.producers,
            in_flight: args.in_flight,
        };
        let (fsync_mb, fsync_records) = throughput(&client, "bench-fsync", load, &value).await?;
        println!("producer throughput, fsync durability:  {fsync_mb:>8.1} MB/s {fsync_records:>10.0} records/s   (target >= 150 MB/s)");
        let (memory_mb, memory_records) = throughput(&client, "bench-memory", load, &value).await?;
        println!("producer throughput, memory durability: {memory_mb:>8.1} MB/s {memory_records:>10.0} records/s");
        println!("ratio fsync / memory: {:.2}", fsync_mb / memory_mb);
        let (histogram, achieved) = latency(&client, "bench-fsync", &args, &value).await?;
        println!(
            "append latency (fsync) at {:.0} MB/s offered ({achieved:.1} MB/s achieved, {}-record requests): p50 {} µs, p99 {} µs, p999 {} µs, max {} µs ({} samples)",
            args.rate_bytes_per_second as f64 / MB,
            args.latency_batch_records,
            histogram.value_at_quantile(0.5),
            histogram.value_at_quantile(0.99),
            histogram.value_at_quantile(0.999),
            histogram.max(),
            histogram.len()
        );
        client.close().await;
        Ok::<(), String>(())
    });
    let stopped = node.stop();
    result?;
    stopped
}
