//! NATS JetStream as a benchmarked peer: a `nats-server` process on loopback with JetStream
//! file storage in a temporary directory, driven through `async-nats`. A record is one
//! JetStream publish to `bench.k<key % 1000>` (a stream `bench` on `bench.>`); a request is
//! `batch_records` publishes followed by awaiting their acknowledgements.
//!
//! Durability, honestly: JetStream's file store does **not** fsync per message. A publish is
//! acknowledged once the message is written to the block file (the page cache); the store
//! syncs in the background on a timer. nats-server 2.9 (Debian 12 ships 2.9.10) has no
//! `sync_interval` setting (it arrived in 2.10, with `always`; 2.9.10 refuses the field as
//! unknown), so the interval is 2.9's built-in one: 60 s (`defaultSyncInterval` in its
//! `filestore.go`). An acknowledged message can be lost in a power cut: this row compares with
//! Redis `appendfsync no` and Runnel `memory`, not with the fsync rows.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use async_nats::jetstream::{self, stream::StorageType, Context};
use bytes::Bytes;

use crate::pacing::{closed_loop, open_loop, OpenLoopResult};
use crate::server_process::{free_tcp_port, spawn_tcp_peer, ServerProcess};
use crate::systems::{LatencyLoad, Workload};

/// How long a fresh server may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The stream's name.
pub const STREAM: &str = "bench";
/// What the file store's background sync interval is in the server this benchmark runs.
pub const SYNC_NOTE: &str =
    "JetStream file store: no fsync per message; nats-server 2.9 has no sync_interval setting, background sync every 60 s";

/// The configuration file of a benchmark server on `port` with JetStream storage in `dir`.
pub fn server_config(port: u16, dir: &Path) -> String {
    format!(
        "listen: 127.0.0.1:{port}\nmax_payload: 8MB\njetstream {{\n  store_dir: \"{}\"\n}}\n",
        dir.display()
    )
}

/// A running `nats-server` with JetStream.
pub struct NatsSystem {
    process: ServerProcess,
    port: u16,
    _dir: tempfile::TempDir,
}

impl NatsSystem {
    /// Starts `nats-server` (from the PATH) on a new directory under `parent`.
    pub fn start(parent: &Path) -> Result<NatsSystem, String> {
        let dir = tempfile::Builder::new()
            .prefix("runnel-bench-nats-")
            .tempdir_in(parent)
            .map_err(|e| format!("temporary directory under {}: {e}", parent.display()))?;
        let port = free_tcp_port()?;
        let config = dir.path().join("nats.conf");
        std::fs::write(&config, server_config(port, &dir.path().join("jetstream")))
            .map_err(|e| format!("write {}: {e}", config.display()))?;
        let mut command = Command::new("nats-server");
        command.arg("-c").arg(&config);
        let process = spawn_tcp_peer(
            command,
            "nats-server",
            &dir.path().join("server.log"),
            port,
            START_TIMEOUT,
        )?;
        Ok(NatsSystem {
            process,
            port,
            _dir: dir,
        })
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// A JetStream context on a new connection, allowing `acks_in_flight` unacknowledged
    /// publishes (the client's default, 5,000, would throttle a larger window).
    async fn context(&self, acks_in_flight: usize) -> Result<Context, String> {
        let client = async_nats::connect(format!("127.0.0.1:{}", self.port))
            .await
            .map_err(|e| format!("connect to nats-server: {e}"))?;
        Ok(jetstream::context::ContextBuilder::new()
            .timeout(Duration::from_secs(30))
            .max_ack_inflight(acks_in_flight.max(1))
            .build(client))
    }

    /// Creates the file-stored stream `bench` on the subjects `bench.>`.
    pub async fn create_stream(&self) -> Result<(), String> {
        let context = self.context(1).await?;
        context
            .create_stream(jetstream::stream::Config {
                name: STREAM.into(),
                subjects: vec![format!("{STREAM}.>")],
                storage: StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("create JetStream stream: {e}"))?;
        Ok(())
    }

    /// Throughput: one connection per producer, `in_flight` requests of `batch_records`
    /// publishes outstanding on each.
    pub async fn throughput(&self, workload: Workload) -> Result<Duration, String> {
        let window = workload.in_flight * workload.batch_records;
        let mut contexts = Vec::with_capacity(workload.producers);
        for _ in 0..workload.producers {
            contexts.push(self.context(window).await?);
        }
        let contexts = std::sync::Arc::new(contexts);
        let value = Bytes::from(vec![0x5au8; workload.record_bytes]);
        let per_producer = workload.records_per_producer();
        let batch = workload.batch_records as u64;
        closed_loop(
            workload.producers,
            workload.in_flight,
            workload.requests_per_producer(),
            move |p, i| {
                let context = contexts[p].clone();
                let value = value.clone();
                let first = i * batch;
                let records = batch.min(per_producer - first);
                async move {
                    let subjects = (0..records).map(|n| (first + n + p as u64) % 1000);
                    publish(&context, subjects, &value).await
                }
            },
        )
        .await
    }

    /// Latency at a fixed rate: `batch_records` publishes of one key per request, then their
    /// acknowledgements.
    pub async fn latency(&self, load: LatencyLoad) -> Result<OpenLoopResult, String> {
        let context = self.context(1 << 16).await?;
        let value = Bytes::from(vec![0x5au8; load.record_bytes]);
        let (interval, count) = load.schedule();
        open_loop(interval, count, load.pacer, move |i| {
            let context = context.clone();
            let value = value.clone();
            let records = load.batch_records;
            async move { publish(&context, std::iter::repeat_n(i % 1000, records), &value).await }
        })
        .await
    }

    /// Stops the server (SIGTERM).
    pub fn stop(mut self) -> Result<(), String> {
        self.process.check_running()?;
        // nats-server exits with status 1 after a signal-initiated shutdown on some versions:
        // the benchmark only needs it gone.
        self.process.stop().map(|_| ())
    }
}

/// Publishes one message per key in `keys`, then awaits every acknowledgement.
async fn publish(
    context: &Context,
    keys: impl Iterator<Item = u64>,
    value: &Bytes,
) -> Result<(), String> {
    let mut acks = Vec::new();
    for key in keys {
        acks.push(
            context
                .publish(format!("{STREAM}.k{key}"), value.clone())
                .await
                .map_err(|e| format!("publish: {e}"))?,
        );
    }
    for ack in acks {
        ack.await.map_err(|e| format!("publish ack: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_is_loopback_with_file_storage() {
        let config = server_config(4300, Path::new("/tmp/js"));
        assert!(config.contains("listen: 127.0.0.1:4300"));
        assert!(config.contains("store_dir: \"/tmp/js\""));
        // 2.9 refuses an unknown field: the configuration must not name sync_interval.
        assert!(!config.contains("sync_interval"));
    }
}
