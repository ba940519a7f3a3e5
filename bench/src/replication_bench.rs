//! `runnel-bench replication`: issue 11's replication figures, from three release
//! `runnel-server` processes on loopback (`cluster_process.rs`), each node `--cores` executors,
//! never pinned (three nodes and the client share the machine's CPUs).
//!
//! 1. **Append, R=3 against R=1 (`append`).** One cluster, two single-shard `fsync` streams:
//!    `r1` (replication factor 1) and `r3` (3: W = 2). Each round appends to both, one after
//!    the other for `--seconds` each (the order alternates between rounds), with
//!    `--in-flight` closed-loop tasks each sending `--batch` records of `--record-bytes` per
//!    request through one SDK client. Printed: records/s and append latency (hdrhistogram,
//!    from send to acknowledgement) of each, R=3 ÷ R=1 per round and the medians, against
//!    issue 11's targets (R=3 p99 ≤ 2× R=1 p99, R=3 throughput ≥ 0.5× R=1).
//! 2. **Sequencer failover (`failover`).** A single-shard R=3 stream; each round finds its
//!    sequencer's node, connects a client to another node, appends once (the path works), keeps
//!    producers appending, SIGKILLs the sequencer's node, and starts an append every
//!    `--attempt-interval-ms` (each abandoned after `--attempt-timeout-ms`): the figure is the
//!    time from the kill to the first acknowledged one. The killed node then restarts and the
//!    round ends when the cluster serves again.
//! 3. **Catch-up (`catchup`).** A single-shard R=3 stream: one non-sequencer replica (A) is
//!    SIGKILLed, `--catchup-bytes` are appended (W = 2 still holds), A restarts, the cluster
//!    serves again, then the third replica (B) is SIGKILLed: the next append needs A in its
//!    quorum, so it is acknowledged only once A holds the prefix. Printed: A's restart → that
//!    first ack, B's kill → that ack, and the bytes over each.
//!
//! An append that fails on a healthy cluster, a node that exits, no ack 30 s after a kill
//! (120 s in the catch-up): the run stops with every node's log tail and exits non-zero.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use runnel_client::{Client, ClientOptions, Durability, Producer, Record, StreamSpec};

use crate::args::{ReplicationArgs, ReplicationPhase};
use crate::cluster_bench::first_ack;
use crate::cluster_process::ClusterProcesses;
use crate::report::{load_average, merge};
use crate::server_process::runnel_server_path;
use crate::stats::{format_ratio, median, new_histogram, ratio, Percentiles, MB};

/// Nodes of the cluster: R=3 needs three.
const NODES: usize = 3;
/// How long a fresh or restarted cluster may take to serve before the run gives up.
const SERVE_TIMEOUT: Duration = Duration::from_secs(120);
/// A failover round with no acknowledged append this long after the kill fails the run.
const FAILOVER_GIVE_UP: Duration = Duration::from_secs(30);
/// The catch-up's first ack may wait this long after the second replica's kill.
const CATCHUP_GIVE_UP: Duration = Duration::from_secs(120);
/// One append request's timeout in the throughput phase and for the catch-up's load.
const APPEND_TIMEOUT_MS: u64 = 10_000;
/// Issue 11's target for the time from SIGKILL of a sequencer to the next acknowledged append.
const FAILOVER_TARGET: Duration = Duration::from_secs(2);
/// SDK attempts of one append after a kill.
const FAILOVER_SDK_ATTEMPTS: u32 = 4;
/// Producers appending in the background of a failover round (closed loop, one record each).
const BACKGROUND_PRODUCERS: usize = 4;

pub fn run(args: ReplicationArgs) -> Result<(), String> {
    let server = runnel_server_path(args.server.as_deref())?;
    let parent = args
        .dir
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from("target"));
    std::fs::create_dir_all(&parent).map_err(|e| format!("create {}: {e}", parent.display()))?;
    let temp = tempfile::Builder::new()
        .prefix("runnel-bench-replication-")
        .tempdir_in(&parent)
        .map_err(|e| format!("temporary directory: {e}"))?;
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "runnel-bench replication: {NODES} nodes of {} core(s), servers NOT pinned ({NODES} \
         nodes and the client share {cpus} CPU(s); pinning cannot isolate them), {} rounds, \
         server {}",
        args.cores,
        args.rounds,
        server.display()
    );
    println!("load average at the start: {}", load_average());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut cluster = ClusterProcesses::start(&server, temp.path(), NODES, args.cores)?;
    let mut outcome = runtime
        .block_on(cluster.wait_serving(SERVE_TIMEOUT))
        .map(|_| ());
    if outcome.is_ok() && args.phases.contains(&ReplicationPhase::Append) {
        outcome = append_phase(&runtime, &mut cluster, &args);
    }
    if outcome.is_ok() && args.phases.contains(&ReplicationPhase::Failover) {
        outcome = failover_phase(&runtime, &mut cluster, &args);
    }
    if outcome.is_ok() && args.phases.contains(&ReplicationPhase::Catchup) {
        outcome = catchup_phase(&runtime, &mut cluster, &args);
    }
    if let Err(error) = outcome {
        drop(cluster);
        let kept = temp.keep();
        return Err(format!(
            "{error}\n(kept {} with the nodes' logs)",
            kept.display()
        ));
    }
    if let Err(error) = cluster.stop() {
        println!("  (stopping the cluster: {error})");
    }
    println!("load average at the end: {}", load_average());
    if args.keep {
        println!("kept {}", temp.keep().display());
    }
    Ok(())
}

/// Creates the single-shard `fsync` stream `name` with `replicas` replicas through `client`
/// and returns its shard's sequencer node and replica nodes.
async fn create_stream(
    client: &Client,
    name: &str,
    replicas: u8,
) -> Result<(u64, Vec<u64>), String> {
    let spec = StreamSpec::new(name, Durability::Fsync)
        .shard_count(1)
        .replication_factor(replicas);
    client
        .create_stream(spec)
        .await
        .map_err(|e| format!("create {name} (R={replicas}): {e}"))?;
    placement(client, name).await
}

/// The sequencer's node and the replicas' nodes of stream `name`'s first shard.
async fn placement(client: &Client, name: &str) -> Result<(u64, Vec<u64>), String> {
    let shards = client
        .list_shards(name)
        .await
        .map_err(|e| format!("list the shards of {name}: {e}"))?;
    let shard = shards
        .first()
        .ok_or_else(|| format!("{name} has no shard"))?;
    Ok((
        shard.node,
        shard.replicas.iter().map(|replica| replica.node).collect(),
    ))
}

/// `count` records of `bytes` bytes each.
fn records(count: usize, bytes: usize) -> Vec<Record> {
    (0..count).map(|_| Record::new(vec![b'r'; bytes])).collect()
}

/// What one stream did in one round.
#[derive(Debug, Clone)]
struct Side {
    records_per_second: f64,
    latency: Percentiles,
}

/// `tasks` closed-loop appenders of `batch` records each through `producer` until `bytes`
/// were acknowledged or `duration` passed, whichever comes first; the first failure stops
/// them. Returns the latency histogram (µs) and the records acknowledged and the time taken.
async fn closed_loop(
    producer: &Producer,
    tasks: usize,
    batch: Vec<Record>,
    duration: Duration,
    bytes: u64,
) -> Result<(Histogram<u64>, u64, Duration), String> {
    let started = Instant::now();
    let deadline = started + duration;
    let batch_bytes = batch.iter().map(|r| r.value.len() as u64).sum::<u64>();
    let acked_bytes = Arc::new(AtomicU64::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let (producer, batch, acked_bytes) =
            (producer.clone(), batch.clone(), Arc::clone(&acked_bytes));
        set.spawn(async move {
            let mut histogram = new_histogram();
            let mut records = 0u64;
            while Instant::now() < deadline && acked_bytes.load(Ordering::Relaxed) < bytes {
                let sent = Instant::now();
                producer
                    .send_batch(batch.clone())
                    .await
                    .map_err(|e| format!("append to {}: {e}", producer.stream()))?;
                let micros = sent.elapsed().as_micros() as u64;
                histogram
                    .record(micros.max(1))
                    .map_err(|e| format!("record {micros} µs: {e}"))?;
                records += batch.len() as u64;
                acked_bytes.fetch_add(batch_bytes, Ordering::Relaxed);
            }
            Ok::<_, String>((histogram, records))
        });
    }
    let mut histogram = new_histogram();
    let mut records = 0;
    while let Some(joined) = set.join_next().await {
        let (one, count) = joined.map_err(|e| e.to_string())??;
        merge(&mut histogram, &one);
        records += count;
    }
    Ok((histogram, records, started.elapsed()))
}

/// One round of the append phase.
#[derive(Debug, Clone)]
struct AppendRow {
    round: usize,
    r1: Side,
    r3: Side,
    r1_first: bool,
}

fn append_phase(
    runtime: &tokio::runtime::Runtime,
    cluster: &mut ClusterProcesses,
    args: &ReplicationArgs,
) -> Result<(), String> {
    println!(
        "\nappend, R=3 against R=1: single-shard fsync streams, {} closed-loop task(s) × {} \
         records of {} bytes per request, {} s per stream and round, the order alternating",
        args.in_flight, args.batch, args.record_bytes, args.seconds
    );
    let options = cluster.client_options(APPEND_TIMEOUT_MS, 1);
    let outcome = runtime.block_on(async {
        let client = cluster.connect(1, &options).await?;
        let (r1_sequencer, _) = create_stream(&client, "r1", 1).await?;
        let (r3_sequencer, r3_replicas) = create_stream(&client, "r3", 3).await?;
        println!(
            "  r1 on node {r1_sequencer}; r3's sequencer on node {r3_sequencer}, replicas on \
             nodes {r3_replicas:?}; the client connects to node 1"
        );
        let producers = [
            client.producer("r1").map_err(|e| e.to_string())?,
            client.producer("r3").map_err(|e| e.to_string())?,
        ];
        let batch = records(args.batch, args.record_bytes);
        let duration = Duration::from_secs(args.seconds);
        let mut rows = Vec::with_capacity(args.rounds);
        for round in 1..=args.rounds {
            let r1_first = round % 2 == 1;
            let order = if r1_first { [0, 1] } else { [1, 0] };
            let mut sides = [None, None];
            for index in order {
                let (histogram, count, elapsed) = closed_loop(
                    &producers[index],
                    args.in_flight,
                    batch.clone(),
                    duration,
                    u64::MAX,
                )
                .await?;
                let side = Side {
                    records_per_second: count as f64 / elapsed.as_secs_f64(),
                    latency: Percentiles::of(&histogram),
                };
                println!(
                    "  round {round}: R={}: {:.0} records/s ({:.1} MB/s), {} (load {})",
                    if index == 0 { 1 } else { 3 },
                    side.records_per_second,
                    side.records_per_second * args.record_bytes as f64 / MB,
                    side.latency,
                    load_average()
                );
                sides[index] = Some(side);
            }
            let [Some(r1), Some(r3)] = sides else {
                unreachable!("both streams ran in round {round}")
            };
            rows.push(AppendRow {
                round,
                r1,
                r3,
                r1_first,
            });
        }
        client.close().await;
        Ok::<_, String>(rows)
    });
    let rows = outcome.map_err(|error| cluster.failure(error))?;
    cluster.check_running()?;
    print!("{}", append_table(&rows));
    Ok(())
}

/// The append table: per round both streams' records/s and p99, R=3 ÷ R=1 of each, their
/// medians and the verdicts against issue 11's targets.
fn append_table(rows: &[AppendRow]) -> String {
    let mut text = format!(
        "\n{:<7} {:>13} {:>13} {:>11} {:>11} {:>11} {:>11}  first\n",
        "round", "R=1 rec/s", "R=3 rec/s", "thr 3÷1", "R=1 p99 µs", "R=3 p99 µs", "p99 3÷1"
    );
    let (mut throughput, mut p99) = (Vec::new(), Vec::new());
    for row in rows {
        let t = ratio(row.r3.records_per_second, row.r1.records_per_second);
        let p = ratio(row.r3.latency.p99_us as f64, row.r1.latency.p99_us as f64);
        throughput.push(t);
        p99.push(p);
        text.push_str(&format!(
            "{:<7} {:>13.0} {:>13.0} {:>11} {:>11} {:>11} {:>11}  {}\n",
            row.round,
            row.r1.records_per_second,
            row.r3.records_per_second,
            format_ratio(t),
            row.r1.latency.p99_us,
            row.r3.latency.p99_us,
            format_ratio(p),
            if row.r1_first { "R=1" } else { "R=3" }
        ));
    }
    let t = median(&throughput).unwrap_or(f64::NAN);
    let p = median(&p99).unwrap_or(f64::NAN);
    let verdict = |met: bool| if met { "met" } else { "not met" };
    text.push_str(&format!(
        "median ratios: throughput R=3 ÷ R=1 {} (target ≥ 0.5: {}), p99 R=3 ÷ R=1 {} \
         (target ≤ 2: {})\n",
        format_ratio(t),
        verdict(t >= 0.5),
        format_ratio(p),
        verdict(p <= 2.0)
    ));
    text
}

/// One round of the failover phase.
#[derive(Debug, Clone)]
struct FailoverRow {
    round: usize,
    killed: u64,
    via: u64,
    recovery: Duration,
    attempts: usize,
    failed: usize,
    new_sequencer: Option<u64>,
    /// Appends the background producers (one client, shards cached before the kill) had
    /// acknowledged after the kill by the time of the first fresh ack.
    cached_acks: u64,
}

/// One append of one small record through `producer`, as a failover attempt.
async fn one_append(producer: Producer, n: usize) -> Result<(), String> {
    match producer
        .send(Record::new(format!("after-{n}").into_bytes()))
        .await
    {
        Ok(_) => Ok(()),
        Err(error) => Err(format!("append {n}: {error}")),
    }
}

/// One append of one small record to `stream` through a new client of `url` (its shards
/// looked up afresh), as a failover attempt: the SDK keeps a stream's shards until a server
/// says they are stale, and a client whose cached sequencer was SIGKILLed only times out
/// dialling it (see `docs/benchmarks.md`, "Replication (issue 11)").
async fn fresh_append(
    url: String,
    options: ClientOptions,
    stream: &'static str,
    n: usize,
) -> Result<(), String> {
    let client = Client::connect(&url, options)
        .await
        .map_err(|e| format!("append {n}: connect to {url}: {e}"))?;
    let producer = client.producer(stream).map_err(|e| e.to_string())?;
    let outcome = one_append(producer, n).await;
    client.close().await;
    outcome
}

/// Producers appending one record at a time, errors ignored, until `stop` is set: the load
/// a failover happens under. Each returns its appends acknowledged once `killed` was set.
fn background_producers(
    producer: &Producer,
    killed: &Arc<AtomicBool>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<u64>> {
    (0..BACKGROUND_PRODUCERS)
        .map(|_| {
            let (producer, killed, stop) = (producer.clone(), Arc::clone(killed), Arc::clone(stop));
            tokio::spawn(async move {
                let mut acked = 0;
                while !stop.load(Ordering::Relaxed) {
                    let after_kill = killed.load(Ordering::Relaxed);
                    match producer.send(Record::new(b"background".to_vec())).await {
                        Ok(_) if after_kill => acked += 1,
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
                acked
            })
        })
        .collect()
}

/// SDK options of the appends after a kill: each connect and each request attempt bounded by
/// `--attempt-timeout-ms`, up to [`FAILOVER_SDK_ATTEMPTS`] attempts (the SDK retries what
/// was certainly not stored, with fresh shards when the server says they are stale).
fn failover_options(cluster: &ClusterProcesses, args: &ReplicationArgs) -> ClientOptions {
    ClientOptions {
        connect_timeout_ms: args.attempt_timeout_ms,
        ..cluster.client_options(args.attempt_timeout_ms, FAILOVER_SDK_ATTEMPTS)
    }
}

/// How long the benchmark waits for one append after a kill, the SDK's retries included.
fn attempt_bound(args: &ReplicationArgs) -> Duration {
    Duration::from_millis(args.attempt_timeout_ms * (u64::from(FAILOVER_SDK_ATTEMPTS) + 1))
}

/// The sequencer's node of `stream` once it is another than `killed`, asked every 50 ms for
/// at most 5 s.
async fn sequencer_other_than(client: &Client, stream: &str, killed: u64) -> Option<u64> {
    for _ in 0..100 {
        if let Ok((sequencer, _)) = placement(client, stream).await {
            if sequencer != killed {
                return Some(sequencer);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

fn failover_phase(
    runtime: &tokio::runtime::Runtime,
    cluster: &mut ClusterProcesses,
    args: &ReplicationArgs,
) -> Result<(), String> {
    println!(
        "\nsequencer failover: a single-shard R=3 fsync stream; {BACKGROUND_PRODUCERS} producers \
         append, SIGKILL the sequencer's node, then an append every {} ms (SDK connect and \
         request timeouts {} ms, {FAILOVER_SDK_ATTEMPTS} attempts), each through a new client of another node, until one is acknowledged; restart the killed \
         node and wait until every node lists every node Running",
        args.attempt_interval_ms, args.attempt_timeout_ms
    );
    let options = failover_options(cluster, args);
    let interval = Duration::from_millis(args.attempt_interval_ms);
    let attempt_timeout = attempt_bound(args);
    runtime
        .block_on(async {
            let client = cluster.connect(1, &options).await?;
            create_stream(&client, "f3", 3).await?;
            client.close().await;
            Ok::<_, String>(())
        })
        .map_err(|error| cluster.failure(error))?;
    println!(
        "{:<7} {:>7} {:>5} {:>19} {:>9} {:>7} {:>14} {:>12}",
        "round",
        "killed",
        "via",
        "kill → 1st ack (ms)",
        "attempts",
        "failed",
        "new sequencer",
        "cached acks"
    );
    let mut rows = Vec::with_capacity(args.rounds);
    for round in 1..=args.rounds {
        let outcome = runtime.block_on(async {
            let probe = cluster.connect(1, &options).await?;
            let (sequencer, _) = placement(&probe, "f3").await?;
            probe.close().await;
            let via = cluster
                .ids()
                .find(|&id| id != sequencer)
                .ok_or("no node besides the sequencer's")?;
            let client = cluster.connect(via, &options).await?;
            let producer = client.producer("f3").map_err(|e| e.to_string())?;
            one_append(producer.clone(), 0)
                .await
                .map_err(|e| format!("round {round}: an append before the kill: {e}"))?;
            let (killed, stop) = (
                Arc::new(AtomicBool::new(false)),
                Arc::new(AtomicBool::new(false)),
            );
            let background = background_producers(&producer, &killed, &stop);
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok::<_, String>((sequencer, via, client, killed, stop, background))
        });
        let (sequencer, via, client, killed_flag, stop, background) =
            outcome.map_err(|error| cluster.failure(error))?;
        let killed = sequencer;
        let url = cluster.url(via);
        let killed_at = Instant::now();
        killed_flag.store(true, Ordering::Relaxed);
        cluster.kill(killed)?;
        let acked = runtime.block_on(first_ack(
            killed_at,
            interval,
            attempt_timeout,
            FAILOVER_GIVE_UP,
            |n| fresh_append(url.clone(), options.clone(), "f3", n + 1),
        ));
        stop.store(true, Ordering::Relaxed);
        let acked = acked.map_err(|error| cluster.failure(format!("round {round}: {error}")))?;
        let (new_sequencer, cached_acks) = runtime.block_on(async {
            let mut acks = 0;
            for task in background {
                acks += task.await.unwrap_or(0);
            }
            let sequencer = sequencer_other_than(&client, "f3", killed).await;
            client.close().await;
            (sequencer, acks)
        });
        cluster.restart(killed)?;
        runtime.block_on(cluster.wait_serving(SERVE_TIMEOUT))?;
        let row = FailoverRow {
            round,
            killed,
            via,
            recovery: acked.recovery,
            attempts: acked.attempts,
            failed: acked.failed,
            new_sequencer,
            cached_acks,
        };
        println!(
            "{:<7} {:>7} {:>5} {:>19.0} {:>9} {:>7} {:>14} {:>12}  load {}",
            row.round,
            row.killed,
            row.via,
            row.recovery.as_secs_f64() * 1e3,
            row.attempts,
            row.failed,
            row.new_sequencer.map_or("?".into(), |id| id.to_string()),
            row.cached_acks,
            load_average()
        );
        rows.push(row);
    }
    let recoveries: Vec<f64> = rows.iter().map(|row| row.recovery.as_secs_f64()).collect();
    let max = recoveries.iter().copied().fold(f64::NAN, f64::max);
    if let Some(p50) = median(&recoveries) {
        println!(
            "kill of the sequencer's node → first acknowledged append: median {:.0} ms, max \
             {:.0} ms over {} rounds (target ≤ {} s: {})",
            p50 * 1e3,
            max * 1e3,
            rows.len(),
            FAILOVER_TARGET.as_secs(),
            if max <= FAILOVER_TARGET.as_secs_f64() {
                "met"
            } else {
                "not met"
            }
        );
    }
    Ok(())
}

fn catchup_phase(
    runtime: &tokio::runtime::Runtime,
    cluster: &mut ClusterProcesses,
    args: &ReplicationArgs,
) -> Result<(), String> {
    println!(
        "\ncatch-up: a single-shard R=3 fsync stream; SIGKILL replica A, append {:.1} MB, \
         restart A, wait until the cluster serves, SIGKILL replica B: the next append needs A",
        args.catchup_bytes as f64 / MB
    );
    let options = cluster.client_options(APPEND_TIMEOUT_MS, 1);
    let (sequencer, replicas) = runtime
        .block_on(async {
            let client = cluster.connect(1, &options).await?;
            let placed = create_stream(&client, "c3", 3).await;
            client.close().await;
            placed
        })
        .map_err(|error| cluster.failure(error))?;
    let others: Vec<u64> = replicas
        .iter()
        .copied()
        .filter(|&node| node != sequencer)
        .collect();
    let [a, b] = others[..] else {
        return Err(cluster.failure(format!(
            "c3: sequencer {sequencer}, replicas {replicas:?}: not two other replicas"
        )));
    };
    cluster.kill(a)?;
    let appended = runtime.block_on(async {
        let client = cluster.connect(sequencer, &options).await?;
        let producer = client.producer("c3").map_err(|e| e.to_string())?;
        let batch = records(args.batch, args.record_bytes);
        let outcome = closed_loop(
            &producer,
            args.in_flight,
            batch,
            Duration::from_secs(3600),
            args.catchup_bytes,
        )
        .await;
        client.close().await;
        outcome
    });
    let (_, count, elapsed) = appended.map_err(|error| cluster.failure(error))?;
    let bytes = count as f64 * args.record_bytes as f64;
    println!(
        "  sequencer node {sequencer}; node {a} (A) killed, {:.1} MB ({count} records) appended \
         in {:.2} s with 2 of 3 replicas",
        bytes / MB,
        elapsed.as_secs_f64()
    );
    let restarted_at = Instant::now();
    cluster.restart(a)?;
    runtime.block_on(cluster.wait_serving(SERVE_TIMEOUT))?;
    let serving = restarted_at.elapsed();
    let url = cluster.url(sequencer);
    let options = failover_options(cluster, args);
    let killed_at = Instant::now();
    cluster.kill(b)?;
    let acked = runtime.block_on(first_ack(
        killed_at,
        Duration::from_millis(args.attempt_interval_ms),
        attempt_bound(args),
        CATCHUP_GIVE_UP,
        |n| fresh_append(url.clone(), options.clone(), "c3", n),
    ));
    let acked = acked.map_err(|error| cluster.failure(format!("catch-up: {error}")))?;
    let total = killed_at.duration_since(restarted_at) + acked.recovery;
    println!(
        "  A restarted → cluster serving {:.2} s; B (node {b}) killed → first ack {:.0} ms; A \
         restarted → that ack {:.2} s: {:.1} MB/s over the whole span, {:.1} MB/s over B's kill \
         → ack (a bound either way: when A's catch-up starts is not observed)",
        serving.as_secs_f64(),
        acked.recovery.as_secs_f64() * 1e3,
        total.as_secs_f64(),
        bytes / MB / total.as_secs_f64(),
        bytes / MB / acked.recovery.as_secs_f64()
    );
    cluster.restart(b)?;
    runtime.block_on(cluster.wait_serving(SERVE_TIMEOUT))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(records_per_second: f64, p99_us: u64) -> Side {
        Side {
            records_per_second,
            latency: Percentiles {
                p99_us,
                ..Percentiles::default()
            },
        }
    }

    /// The table takes R=3 ÷ R=1 per round, the median of those, and judges the targets.
    #[test]
    fn append_table_has_ratios_medians_and_verdicts() {
        let rows = [
            AppendRow {
                round: 1,
                r1: side(1000.0, 1000),
                r3: side(600.0, 1500),
                r1_first: true,
            },
            AppendRow {
                round: 2,
                r1: side(1000.0, 1000),
                r3: side(400.0, 2500),
                r1_first: false,
            },
            AppendRow {
                round: 3,
                r1: side(1000.0, 1000),
                r3: side(550.0, 1900),
                r1_first: true,
            },
        ];
        let table = append_table(&rows);
        assert!(table.contains("0.60") && table.contains("1.50"), "{table}");
        assert!(
            table.contains("throughput R=3 ÷ R=1 0.55 (target ≥ 0.5: met)"),
            "{table}"
        );
        assert!(
            table.contains("p99 R=3 ÷ R=1 1.90 (target ≤ 2: met)"),
            "{table}"
        );
        let slow = [AppendRow {
            round: 1,
            r1: side(1000.0, 1000),
            r3: side(100.0, 5000),
            r1_first: true,
        }];
        let table = append_table(&slow);
        assert!(table.contains("0.10 (target ≥ 0.5: not met)"), "{table}");
        assert!(table.contains("5.00 (target ≤ 2: not met)"), "{table}");
    }
}
