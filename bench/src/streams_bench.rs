//! `runnel-bench streams`: what a stream costs. Starts a release `runnel-server` process on a
//! temporary data directory (loopback, a free base port), creates `--count` single-shard `fsync`
//! streams through the SDK with `--concurrency` creates in flight, and prints: the total time
//! and creates/s, the time of every `--interval` creates (a create whose cost grows with the
//! number of streams shows as growing intervals), the server's RSS, open files and disk use
//! after the creates; then stops the server with SIGTERM, starts it again on the same data and
//! prints the time until it serves (until `describe_stream` of the last stream succeeds) and
//! its RSS then. Figures only: no thresholds (the targets live in `docs/benchmarks.md`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runnel_client::{Client, ClientOptions, Durability, StreamSpec};

use crate::args::StreamsArgs;
use crate::server_process::{runnel_command, runnel_server_path, udp_port_bound, ServerProcess};

/// How long the server may take to answer after a start before the benchmark gives up.
const SERVE_TIMEOUT: Duration = Duration::from_secs(600);

/// Starts the server of this benchmark on `dir/data`, its log in `dir/server.log`.
fn start_server(
    server: &Path,
    dir: &Path,
    base_port: u16,
    args: &StreamsArgs,
) -> Result<ServerProcess, String> {
    let mut command = runnel_command(server, &dir.join("data"), base_port, args.server_cores);
    if let Some(interval) = args.metadata_snapshot_interval {
        command
            .arg("--metadata-snapshot-interval")
            .arg(interval.to_string());
    }
    if let Some(bytes) = args.write_buffer_bytes {
        let config = dir.join("server.toml");
        std::fs::write(&config, format!("[log]\nwrite_buffer_bytes = {bytes}\n"))
            .map_err(|e| format!("write {}: {e}", config.display()))?;
        command.arg("--config").arg(config);
    }
    ServerProcess::spawn(command, "runnel-server", &dir.join("server.log"))
}

/// A line of `/proc/<pid>/status` (`VmRSS`, `VmHWM`) in bytes.
fn proc_status_bytes(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn open_files(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|dir| dir.count())
}

/// Bytes allocated on disk under `dir` (st_blocks × 512, as `du` counts them).
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(metadata) = entry.metadata() else {
                continue;
            };
            total += metadata.blocks() * 512;
            if metadata.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    total
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("?".into(), |b| {
        format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
    })
}

fn stream_name(n: usize) -> String {
    format!("s-{n:07}")
}

/// Connects (once the server listens) and describes `stream`, until it succeeds.
async fn until_serving(
    url: &str,
    port: u16,
    options: &ClientOptions,
    stream: &str,
) -> Result<Client, String> {
    let deadline = Instant::now() + SERVE_TIMEOUT;
    let mut last_error = String::new();
    while Instant::now() < deadline {
        if !udp_port_bound(port) {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        if options
            .ca_cert_path
            .as_ref()
            .is_some_and(|path| path.exists())
        {
            match Client::connect(url, options.clone()).await {
                Ok(client) => match client.describe_stream(stream).await {
                    Ok(_) => return Ok(client),
                    Err(e) => last_error = format!("describe {stream}: {e}"),
                },
                Err(e) => last_error = format!("connect: {e}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!("the server does not serve: {last_error}"))
}

/// Creates streams `0..count` with `concurrency` in flight; returns the elapsed time at every
/// `interval`-th completed create, the creates that completed, and the first failure (the
/// creates stop at it; what was measured until then is still reported).
async fn create_streams(
    client: &Client,
    count: usize,
    concurrency: usize,
    interval: usize,
) -> Result<(Vec<Duration>, usize, Option<String>), String> {
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let marks = Arc::new(Mutex::new(Vec::with_capacity(count / interval + 1)));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (client, next, done, marks) = (
            client.clone(),
            Arc::clone(&next),
            Arc::clone(&done),
            Arc::clone(&marks),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    return Ok::<(), String>(());
                }
                let name = stream_name(n);
                client
                    .create_stream(StreamSpec::new(&name, Durability::Fsync).shard_count(1))
                    .await
                    .map_err(|e| {
                        format!(
                            "create {name} (after {} creates): {e}",
                            done.load(Ordering::Relaxed)
                        )
                    })?;
                let completed = done.fetch_add(1, Ordering::Relaxed) + 1;
                if completed.is_multiple_of(interval) || completed == count {
                    if let Ok(mut marks) = marks.lock() {
                        marks.push(started.elapsed());
                    }
                }
            }
        }));
    }
    let mut failure = None;
    for task in tasks {
        if let Err(error) = task.await.map_err(|e| e.to_string())? {
            // Stop the other workers at their next create.
            next.store(count, Ordering::Relaxed);
            failure.get_or_insert(error);
        }
    }
    let mut marks = marks.lock().map_err(|e| e.to_string())?.clone();
    marks.sort();
    Ok((marks, done.load(Ordering::Relaxed), failure))
}

fn print_intervals(marks: &[Duration], interval: usize, count: usize) {
    let lengths: Vec<f64> = marks
        .iter()
        .scan(Duration::ZERO, |previous, &mark| {
            let length = mark - *previous;
            *previous = mark;
            Some(length.as_secs_f64())
        })
        .collect();
    println!("time per {interval} creates, in order (s):");
    for row in lengths.chunks(10) {
        let row: Vec<String> = row.iter().map(|s| format!("{s:7.3}")).collect();
        println!("  {}", row.join(" "));
    }
    // Only full intervals compare: the final mark may close a partial one.
    let full = &lengths[..(count / interval).min(lengths.len())];
    if let (Some(first), Some(last)) = (full.first(), full.last()) {
        println!("last full interval / first interval: {:.2}", last / first);
    }
}

pub fn run(args: StreamsArgs) -> Result<(), String> {
    let server = runnel_server_path(args.server.as_deref())?;
    let parent = args.dir.clone().unwrap_or_else(|| PathBuf::from("target"));
    std::fs::create_dir_all(&parent).map_err(|e| format!("create {}: {e}", parent.display()))?;
    let temp = tempfile::Builder::new()
        .prefix("runnel-bench-streams-")
        .tempdir_in(&parent)
        .map_err(|e| format!("temporary directory: {e}"))?;
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let base_port = probe.local_addr().map_err(|e| e.to_string())?.port();
    drop(probe);
    let url = format!("runnel://127.0.0.1:{base_port}");
    let options = ClientOptions {
        ca_cert_path: Some(runnel_server::identity::self_signed_paths(&temp.path().join("data")).0),
        ..ClientOptions::default()
    };
    println!(
        "runnel-bench streams: {} single-shard fsync streams, {} creates in flight, {} server core(s), server {}",
        args.count,
        args.concurrency,
        args.server_cores,
        server.display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;

    let data = temp.path().join("data");

    let process = start_server(&server, temp.path(), base_port, &args)?;
    let pid = process.pid();
    let (marks, created, failure) = runtime.block_on(async {
        let client = until_serving_any(&url, &options).await?;
        let created = create_streams(&client, args.count, args.concurrency, args.interval).await?;
        client.close().await;
        Ok::<_, String>(created)
    })?;
    let total = marks.last().copied().unwrap_or_default().as_secs_f64();
    println!(
        "created {created} streams in {total:.2} s: {:.0} creates/s",
        created as f64 / total
    );
    print_intervals(&marks, args.interval, created);
    if let Some(failure) = &failure {
        println!("creates stopped at the first failure: {failure}");
    }
    println!(
        "server after the creates: RSS {} (peak {}), {} open files, data dir {} on disk",
        mib(proc_status_bytes(pid, "VmRSS:")),
        mib(proc_status_bytes(pid, "VmHWM:")),
        open_files(pid).map_or("?".into(), |n| n.to_string()),
        mib(Some(disk_bytes(&data)))
    );
    let stopped = process.stop_cleanly()?;
    // The last stream created (after a failure, some stream created last: any of the last
    // `concurrency` names may be the one missing, so probe the first, always created).
    let last = if failure.is_none() {
        stream_name(args.count - 1)
    } else {
        stream_name(0)
    };
    println!("stop (SIGTERM to exit): {:.2} s", stopped.as_secs_f64());

    let started = Instant::now();
    let process = start_server(&server, temp.path(), base_port, &args)?;
    let pid = process.pid();
    runtime.block_on(async {
        let client = until_serving(&url, base_port, &options, &last).await?;
        client.close().await;
        Ok::<_, String>(())
    })?;
    println!(
        "restart until describe_stream({last}) succeeds: {:.2} s; RSS then {} (peak {}), {} open files",
        started.elapsed().as_secs_f64(),
        mib(proc_status_bytes(pid, "VmRSS:")),
        mib(proc_status_bytes(pid, "VmHWM:")),
        open_files(pid).map_or("?".into(), |n| n.to_string()),
    );
    process.stop_cleanly()?;
    if let Some(failure) = failure {
        return Err(failure);
    }
    if args.keep {
        let kept = temp.keep();
        println!("kept {}", kept.display());
    }
    Ok(())
}

/// Connects once the first start created the certificate and the server listens.
async fn until_serving_any(url: &str, options: &ClientOptions) -> Result<Client, String> {
    let deadline = Instant::now() + SERVE_TIMEOUT;
    let mut last_error = String::new();
    while Instant::now() < deadline {
        if options
            .ca_cert_path
            .as_ref()
            .is_some_and(|path| path.exists())
        {
            match Client::connect(url, options.clone()).await {
                Ok(client) => return Ok(client),
                Err(e) => last_error = format!("connect: {e}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!("the server does not serve: {last_error}"))
}
