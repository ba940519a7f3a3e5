//! Redis Streams as a benchmarked peer: a `redis-server` process on loopback with a temporary
//! directory, append-only file on, driven through the `redis` crate on tokio. A record is one
//! `XADD <stream> * k <key> v <value>`; a request is a pipeline of `batch_records` of them.
//!
//! Durability per row, as Redis documents it: `appendfsync always` writes and fsyncs the AOF
//! before replying, once per event-loop iteration (so the commands of every client that
//! arrived together share one fsync: group commit); `appendfsync no` leaves flushing to the
//! OS (about every 30 s): acknowledged records can be lost in a power cut. RDB snapshots off
//! (`save ""`), one I/O thread (the default): Redis serves from one core.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;

use crate::pacing::{closed_loop, open_loop, OpenLoopResult};
use crate::server_process::{free_tcp_port, spawn_tcp_peer, ServerProcess};
use crate::systems::{LatencyLoad, Workload};

/// How long a fresh server may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// A reply slower than this fails the request (the client's default, 500 ms, is shorter than
/// a slow fsync under load).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// The stream key every producer appends to.
pub const STREAM_KEY: &str = "bench";

/// The `redis-server` arguments for a benchmark server on `port` with its files in `dir`.
pub fn server_arguments(port: u16, dir: &Path, fsync_always: bool) -> Vec<String> {
    [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--dir",
        &dir.display().to_string(),
        "--appendonly",
        "yes",
        "--appendfsync",
        if fsync_always { "always" } else { "no" },
        "--save",
        "",
        "--daemonize",
        "no",
        "--protected-mode",
        "no",
        "--loglevel",
        "warning",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A running `redis-server`.
pub struct RedisSystem {
    process: ServerProcess,
    client: redis::Client,
    _dir: tempfile::TempDir,
}

impl RedisSystem {
    /// Starts `redis-server` (from the PATH) on a new directory under `parent`.
    pub fn start(parent: &Path, fsync_always: bool) -> Result<RedisSystem, String> {
        let dir = tempfile::Builder::new()
            .prefix("runnel-bench-redis-")
            .tempdir_in(parent)
            .map_err(|e| format!("temporary directory under {}: {e}", parent.display()))?;
        let port = free_tcp_port()?;
        let mut command = Command::new("redis-server");
        command.args(server_arguments(port, dir.path(), fsync_always));
        let process = spawn_tcp_peer(
            command,
            "redis-server",
            &dir.path().join("server.log"),
            port,
            START_TIMEOUT,
        )?;
        let client =
            redis::Client::open(format!("redis://127.0.0.1:{port}/")).map_err(|e| e.to_string())?;
        Ok(RedisSystem {
            process,
            client,
            _dir: dir,
        })
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    async fn connection(&self) -> Result<MultiplexedConnection, String> {
        let config =
            redis::AsyncConnectionConfig::new().set_response_timeout(Some(RESPONSE_TIMEOUT));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| format!("connect to redis-server: {e}"))
    }

    /// Throughput: one connection per producer, `in_flight` pipelines of `batch_records` XADDs
    /// outstanding on each.
    pub async fn throughput(&self, workload: Workload) -> Result<Duration, String> {
        let mut connections = Vec::with_capacity(workload.producers);
        for _ in 0..workload.producers {
            connections.push(self.connection().await?);
        }
        let connections = Arc::new(connections);
        let value: Arc<[u8]> = vec![0x5au8; workload.record_bytes].into();
        let per_producer = workload.records_per_producer();
        let batch = workload.batch_records as u64;
        closed_loop(
            workload.producers,
            workload.in_flight,
            workload.requests_per_producer(),
            move |p, i| {
                let mut connection = connections[p].clone();
                let value = Arc::clone(&value);
                let first = i * batch;
                let records = batch.min(per_producer - first);
                async move { xadd(&mut connection, first + p as u64, records, &value).await }
            },
        )
        .await
    }

    /// Latency at a fixed rate: one pipeline of `batch_records` XADDs per request.
    pub async fn latency(&self, load: LatencyLoad) -> Result<OpenLoopResult, String> {
        let connection = self.connection().await?;
        let value: Arc<[u8]> = vec![0x5au8; load.record_bytes].into();
        let (interval, count) = load.schedule();
        open_loop(interval, count, load.pacer, move |i| {
            let mut connection = connection.clone();
            let value = Arc::clone(&value);
            let records = load.batch_records as u64;
            // One key per request, as the other systems' latency requests.
            async move { xadd_one_key(&mut connection, i, records, &value).await }
        })
        .await
    }

    /// Stops the server (SIGTERM: it writes the AOF out and exits).
    pub fn stop(mut self) -> Result<(), String> {
        self.process.check_running()?;
        self.process.stop_cleanly().map(|_| ())
    }
}

/// `records` XADDs in one pipeline, keys `key-<n % 1000>` from `first_key`.
async fn xadd(
    connection: &mut MultiplexedConnection,
    first_key: u64,
    records: u64,
    value: &[u8],
) -> Result<(), String> {
    xadd_keyed(connection, records, value, |n| first_key + n).await
}

/// `records` XADDs in one pipeline, all with the key `key-<key % 1000>`.
async fn xadd_one_key(
    connection: &mut MultiplexedConnection,
    key: u64,
    records: u64,
    value: &[u8],
) -> Result<(), String> {
    xadd_keyed(connection, records, value, |_| key).await
}

/// `records` XADDs in one pipeline, record `n` with the key `key-<key_of(n) % 1000>`.
async fn xadd_keyed(
    connection: &mut MultiplexedConnection,
    records: u64,
    value: &[u8],
    key_of: impl Fn(u64) -> u64,
) -> Result<(), String> {
    let mut pipe = redis::pipe();
    for n in 0..records {
        pipe.cmd("XADD")
            .arg(STREAM_KEY)
            .arg("*")
            .arg("k")
            .arg(format!("key-{}", key_of(n) % 1000))
            .arg("v")
            .arg(value);
    }
    let replies: Vec<redis::Value> = pipe
        .query_async(connection)
        .await
        .map_err(|e| format!("XADD: {e}"))?;
    check_ids(&replies, records)
}

/// Every reply of a pipeline of `records` XADDs must be an entry id: an error reply (out of
/// memory, a failed AOF write) fails the request.
fn check_ids(replies: &[redis::Value], records: u64) -> Result<(), String> {
    if replies.len() as u64 != records {
        return Err(format!("{} replies to {records} XADDs", replies.len()));
    }
    match replies
        .iter()
        .find(|reply| !matches!(reply, redis::Value::BulkString(_)))
    {
        Some(reply) => Err(format!("XADD answered {reply:?}")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durability_is_explicit_in_the_arguments() {
        let always = server_arguments(7000, Path::new("/tmp/r"), true);
        let window = |args: &[String], flag: &str| {
            let at = args.iter().position(|a| a == flag).expect("flag present");
            args[at + 1].clone()
        };
        assert_eq!(window(&always, "--appendonly"), "yes");
        assert_eq!(window(&always, "--appendfsync"), "always");
        assert_eq!(window(&always, "--save"), "");
        assert_eq!(window(&always, "--bind"), "127.0.0.1");
        assert_eq!(window(&always, "--port"), "7000");
        let no = server_arguments(7000, Path::new("/tmp/r"), false);
        assert_eq!(window(&no, "--appendfsync"), "no");
    }
}
