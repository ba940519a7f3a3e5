//! `runnel-bench cluster`: issue 10's two cluster figures, from release `runnel-server`
//! processes on loopback (see `cluster_process.rs`), each node `--cores` executors, not pinned.
//!
//! 1. **Create rate, N nodes against 1, in one run.** Every round starts a fresh 1-node and a
//!    fresh N-node cluster, one after the other (the order alternates between rounds, so that
//!    the machine's swings fall on both), and creates `--creates` single-shard `fsync` streams
//!    through the SDK with `--concurrency` creates in flight — on the cluster spread over one
//!    client per node, each node forwarding to the metadata leader. Printed: creates/s of each
//!    and the ratio N ÷ 1 per round, and their medians.
//! 2. **Leader failover.** On a fresh N-node cluster, every round finds the metadata leader
//!    (every node listing every node `Running` and naming the same leader), SIGKILLs it, and
//!    from a client of another node, connected before the kill, starts a stream create every
//!    `--attempt-interval-ms` (each a single attempt bounded by `--attempt-timeout-ms`, several
//!    in flight); the figure is the time from the kill to the first acknowledged create. Then
//!    the killed node restarts and the round ends when every node lists every node `Running`
//!    again. Printed: each round, p50 and max, against issue 10's target (≤ 2 s).
//!
//! A node that exits, a cluster that does not serve, a create that fails on a healthy cluster:
//! the run stops with the error and every node's log tail, and exits non-zero.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use runnel_client::{Client, Durability, StreamSpec};

use crate::args::{ClusterArgs, ClusterPhase};
use crate::cluster_process::ClusterProcesses;
use crate::report::load_average;
use crate::server_process::runnel_server_path;
use crate::stats::{format_ratio, median, ratio};

/// How long a fresh or restarted cluster may take to serve before the run gives up.
const SERVE_TIMEOUT: Duration = Duration::from_secs(120);
/// A failover round with no acknowledged create this long after the kill fails the run.
const FAILOVER_GIVE_UP: Duration = Duration::from_secs(30);
/// One attempt of a create during the rate phase (retries are the SDK's default).
const CREATE_TIMEOUT_MS: u64 = 30_000;
/// Issue 10's target for the time from SIGKILL of the leader to the next committed change.
const FAILOVER_TARGET: Duration = Duration::from_secs(2);

pub fn run(args: ClusterArgs) -> Result<(), String> {
    let server = runnel_server_path(args.server.as_deref())?;
    let parent = args.dir.clone().unwrap_or_else(|| PathBuf::from("target"));
    std::fs::create_dir_all(&parent).map_err(|e| format!("create {}: {e}", parent.display()))?;
    let temp = tempfile::Builder::new()
        .prefix("runnel-bench-cluster-")
        .tempdir_in(&parent)
        .map_err(|e| format!("temporary directory: {e}"))?;
    println!(
        "runnel-bench cluster: {} nodes of {} core(s) (not pinned), {} rounds, server {}",
        args.nodes,
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
    let mut outcome = Ok(());
    if args.phases.contains(&ClusterPhase::Rate) {
        outcome = create_rate_phase(&runtime, &server, temp.path(), &args);
    }
    if outcome.is_ok() && args.phases.contains(&ClusterPhase::Failover) {
        outcome = failover_phase(&runtime, &server, temp.path(), &args);
    }
    if let Err(error) = outcome {
        // The nodes' whole logs and data, for what the tails above do not show.
        let kept = temp.keep();
        return Err(format!(
            "{error}\n(kept {} with the nodes' logs)",
            kept.display()
        ));
    }
    println!("load average at the end: {}", load_average());
    if args.keep {
        println!("kept {}", temp.keep().display());
    }
    Ok(())
}

/// Creates/s of one cluster in one round.
fn create_rate_round(
    runtime: &tokio::runtime::Runtime,
    server: &Path,
    root: &Path,
    nodes: usize,
    args: &ClusterArgs,
) -> Result<f64, String> {
    let mut cluster = ClusterProcesses::start(server, root, nodes, args.cores)?;
    runtime.block_on(cluster.wait_serving(SERVE_TIMEOUT))?;
    let options = cluster.client_options(CREATE_TIMEOUT_MS, 4);
    let outcome = runtime.block_on(async {
        let mut clients = Vec::with_capacity(nodes);
        for id in cluster.ids() {
            clients.push(cluster.connect(id, &options).await?);
        }
        let outcome = create_streams(&clients, args.creates, args.concurrency).await;
        for client in clients {
            client.close().await;
        }
        outcome
    });
    let elapsed = match outcome {
        Ok(elapsed) => elapsed,
        Err(error) => return Err(cluster.failure(error)),
    };
    cluster.check_running()?;
    if let Err(error) = cluster.stop() {
        println!("  (stopping the {nodes}-node cluster: {error})");
    }
    if !args.keep {
        // Each round's streams would otherwise pile up on a tight disk.
        std::fs::remove_dir_all(root).map_err(|e| format!("remove {}: {e}", root.display()))?;
    }
    Ok(args.creates as f64 / elapsed.as_secs_f64())
}

/// Creates streams `0..count`, single-shard `fsync`, with `concurrency` in flight, worker `w`
/// through `clients[w % clients.len()]`; returns the time until the last one was
/// acknowledged. The first failure stops the workers and is returned.
async fn create_streams(
    clients: &[Client],
    count: usize,
    concurrency: usize,
) -> Result<Duration, String> {
    assert!(!clients.is_empty(), "no client to create streams through");
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let client = clients[worker % clients.len()].clone();
        let next = Arc::clone(&next);
        tasks.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    return Ok::<(), String>(());
                }
                let name = format!("s-{n:07}");
                client
                    .create_stream(StreamSpec::new(&name, Durability::Fsync).shard_count(1))
                    .await
                    .map_err(|e| format!("create {name}: {e}"))?;
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        // On a failure, returning drops the set, which aborts the other workers.
        joined.map_err(|e| e.to_string())??;
    }
    Ok(started.elapsed())
}

fn create_rate_phase(
    runtime: &tokio::runtime::Runtime,
    server: &Path,
    root: &Path,
    args: &ClusterArgs,
) -> Result<(), String> {
    let n = args.nodes;
    println!(
        "\ncreate rate: {} single-shard fsync streams per cluster and round, {} in flight \
         (on {n} nodes spread over {n} clients, one per node); a fresh cluster each time",
        args.creates, args.concurrency
    );
    let mut rows = Vec::with_capacity(args.rounds);
    for round in 1..=args.rounds {
        // Odd rounds measure the single node first, even rounds the cluster first.
        let order = if round % 2 == 1 { [1, n] } else { [n, 1] };
        let mut rates = [0.0; 2];
        for size in order {
            let dir = root.join(format!("rate-{round}-{size}-nodes"));
            let rate = create_rate_round(runtime, server, &dir, size, args)?;
            println!(
                "  round {round}: {size} node(s): {rate:.0} creates/s (load {})",
                load_average()
            );
            rates[usize::from(size != 1)] = rate;
        }
        rows.push(RateRow {
            round,
            single: rates[0],
            cluster: rates[1],
            single_first: round % 2 == 1,
        });
    }
    print!("{}", rate_table(&rows, n));
    Ok(())
}

/// One round of the create-rate phase.
#[derive(Debug, Clone, PartialEq)]
pub struct RateRow {
    /// 1-based.
    pub round: usize,
    /// Creates/s of the single node.
    pub single: f64,
    /// Creates/s of the N-node cluster.
    pub cluster: f64,
    /// Whether the single node ran first in this round.
    pub single_first: bool,
}

/// The create-rate table: per round both rates and cluster ÷ single, then the medians.
pub fn rate_table(rows: &[RateRow], nodes: usize) -> String {
    let cluster_header = format!("{nodes} nodes (creates/s)");
    let ratio_header = format!("{nodes} nodes ÷ 1 node");
    let mut text = format!(
        "\n{:<7} {:>18} {:>20} {:>16}  first\n",
        "round", "1 node (creates/s)", cluster_header, ratio_header
    );
    let mut ratios = Vec::with_capacity(rows.len());
    for row in rows {
        let row_ratio = ratio(row.cluster, row.single);
        ratios.push(row_ratio);
        let first = if row.single_first {
            "1 node".to_owned()
        } else {
            format!("{nodes} nodes")
        };
        text.push_str(&format!(
            "{:<7} {:>18.0} {:>20.0} {:>16}  {first}\n",
            row.round,
            row.single,
            row.cluster,
            format_ratio(row_ratio)
        ));
    }
    let singles: Vec<f64> = rows.iter().map(|row| row.single).collect();
    let clusters: Vec<f64> = rows.iter().map(|row| row.cluster).collect();
    let or_nan = |value: Option<f64>| value.unwrap_or(f64::NAN);
    text.push_str(&format!(
        "{:<7} {:>18.0} {:>20.0} {:>16}\n",
        "median",
        or_nan(median(&singles)),
        or_nan(median(&clusters)),
        format_ratio(or_nan(median(&ratios)))
    ));
    text
}

/// One round of the failover phase.
#[derive(Debug, Clone, PartialEq)]
pub struct FailoverRow {
    /// 1-based.
    pub round: usize,
    /// The leader killed.
    pub killed: u64,
    /// The node the creates went to.
    pub from: u64,
    /// From the SIGKILL to the first acknowledged create.
    pub recovery: Duration,
    /// Creates started until then, and how many of them failed or timed out.
    pub attempts: usize,
    /// Of `attempts`, those that ended in an error or their timeout before the first ack.
    pub failed: usize,
    /// The leader the creating node named after the first ack (once it named another than
    /// the killed one, within 5 s).
    pub new_leader: Option<u64>,
    /// From the restart of the killed node until every node lists every node `Running`.
    pub rejoin: Duration,
}

/// What the attempts after a kill saw.
pub struct FirstAck {
    /// From the kill to the first acknowledgement.
    pub recovery: Duration,
    /// Attempts started until then.
    pub attempts: usize,
    /// Of `attempts`, those that ended in an error or their timeout before the first ack.
    pub failed: usize,
}

/// Starts `attempt(n)` (n = 0, 1, …) every `interval`, each bounded by `attempt_timeout` (at
/// most `attempt_timeout / interval + 1` in flight, a start skipped past that), until one
/// succeeds; returns the time from `killed_at` to that success. Gives up `give_up` after the
/// kill, with the last failure.
pub async fn first_ack<F, A>(
    killed_at: Instant,
    interval: Duration,
    attempt_timeout: Duration,
    give_up: Duration,
    mut attempt: A,
) -> Result<FirstAck, String>
where
    A: FnMut(usize) -> F,
    F: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    assert!(
        !interval.is_zero(),
        "a zero interval would start attempts without bound"
    );
    let in_flight_max = (attempt_timeout.as_nanos() / interval.as_nanos()) as usize + 1;
    let mut tasks: tokio::task::JoinSet<Result<Instant, String>> = tokio::task::JoinSet::new();
    let mut next_start = tokio::time::Instant::from_std(killed_at);
    let (mut attempts, mut failed) = (0, 0);
    let mut last_failure = String::from("no attempt finished");
    loop {
        tokio::select! {
            // Finished attempts first: the in-flight count then holds running ones only.
            biased;
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                match joined.map_err(|e| e.to_string())? {
                    Ok(acked_at) => {
                        let recovery = acked_at.saturating_duration_since(killed_at);
                        return Ok(FirstAck { recovery, attempts, failed });
                    }
                    Err(reason) => {
                        failed += 1;
                        last_failure = reason;
                    }
                }
            }
            () = tokio::time::sleep_until(next_start) => {
                if killed_at.elapsed() >= give_up {
                    return Err(format!(
                        "nothing acknowledged {give_up:?} after the kill ({attempts} \
                         started, {failed} failed; last failure: {last_failure})"
                    ));
                }
                next_start += interval;
                if tasks.len() >= in_flight_max {
                    continue;
                }
                let one = attempt(attempts);
                tasks.spawn(async move {
                    match tokio::time::timeout(attempt_timeout, one).await {
                        Ok(Ok(())) => Ok(Instant::now()),
                        Ok(Err(error)) => Err(error),
                        Err(_) => Err(format!("no answer in {attempt_timeout:?}")),
                    }
                });
                attempts += 1;
            }
        }
    }
}

fn failover_phase(
    runtime: &tokio::runtime::Runtime,
    server: &Path,
    root: &Path,
    args: &ClusterArgs,
) -> Result<(), String> {
    println!(
        "\nleader failover: {} nodes; SIGKILL the metadata leader, then a create every {} ms \
         (one attempt each, {} ms timeout) through another node until one is acknowledged; \
         restart the killed node and wait until every node lists every node Running",
        args.nodes, args.attempt_interval_ms, args.attempt_timeout_ms
    );
    let mut cluster =
        ClusterProcesses::start(server, &root.join("failover"), args.nodes, args.cores)?;
    let mut leader = runtime.block_on(cluster.wait_serving(SERVE_TIMEOUT))?;
    let options = cluster.client_options(args.attempt_timeout_ms, 1);
    let interval = Duration::from_millis(args.attempt_interval_ms);
    let attempt_timeout = Duration::from_millis(args.attempt_timeout_ms);
    let mut rows = Vec::with_capacity(args.rounds);
    println!("{}", failover_header());
    for round in 1..=args.rounds {
        let from = cluster
            .ids()
            .find(|&id| id != leader)
            .ok_or("a failover needs a node besides the leader")?;
        let client = runtime.block_on(async {
            let client = cluster.connect(from, &options).await?;
            // The path works before the kill: a failure after it is the failover's.
            client
                .create_stream(StreamSpec::new(
                    format!("before-{round}"),
                    Durability::Fsync,
                ))
                .await
                .map_err(|e| format!("round {round}: a create before the kill: {e}"))?;
            Ok::<_, String>(client)
        });
        let client = client.map_err(|error| cluster.failure(error))?;
        let killed_at = Instant::now();
        cluster.kill(leader)?;
        let outcome = runtime.block_on(first_ack(
            killed_at,
            interval,
            attempt_timeout,
            FAILOVER_GIVE_UP,
            |n| {
                let client = client.clone();
                let name = format!("after-{round}-{n:05}");
                async move {
                    let spec = StreamSpec::new(&name, Durability::Fsync).shard_count(1);
                    match client.create_stream(spec).await {
                        Ok(_) => Ok(()),
                        Err(error) => Err(format!("create {name}: {error}")),
                    }
                }
            },
        ));
        let acked = outcome.map_err(|error| cluster.failure(format!("round {round}: {error}")))?;
        let new_leader = runtime.block_on(async {
            let leader = leader_other_than(&client, leader).await;
            client.close().await;
            leader
        });
        cluster.restart(leader)?;
        let restarted_at = Instant::now();
        let killed = leader;
        leader = runtime.block_on(cluster.wait_serving(SERVE_TIMEOUT))?;
        let row = FailoverRow {
            round,
            killed,
            from,
            recovery: acked.recovery,
            attempts: acked.attempts,
            failed: acked.failed,
            new_leader,
            rejoin: restarted_at.elapsed(),
        };
        println!("{}  load {}", failover_cells(&row), load_average());
        rows.push(row);
    }
    if let Err(error) = cluster.stop() {
        println!("  (stopping the cluster: {error})");
    }
    print!("{}", failover_summary(&rows));
    Ok(())
}

/// The leader the client's node names once it names one other than `killed` (its view
/// lags the election by up to a ping interval), asked every 50 ms for at most 5 s.
async fn leader_other_than(client: &Client, killed: u64) -> Option<u64> {
    for _ in 0..100 {
        if let Ok(nodes) = client.list_nodes().await {
            let leader = nodes.iter().find(|node| node.leader).map(|node| node.id);
            if leader.is_some_and(|id| id != killed) {
                return leader;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// One row of the failover table (also printed as each round ends).
fn failover_cells(row: &FailoverRow) -> String {
    format!(
        "{:<7} {:>7} {:>6} {:>19.0} {:>9} {:>7} {:>11} {:>20.2}",
        row.round,
        row.killed,
        row.from,
        row.recovery.as_secs_f64() * 1e3,
        row.attempts,
        row.failed,
        row.new_leader.map_or("?".into(), |id| id.to_string()),
        row.rejoin.as_secs_f64()
    )
}

/// The header of the failover rows.
fn failover_header() -> String {
    format!(
        "{:<7} {:>7} {:>6} {:>19} {:>9} {:>7} {:>11} {:>20}",
        "round",
        "killed",
        "via",
        "kill → 1st ack (ms)",
        "attempts",
        "failed",
        "new leader",
        "restart → Running (s)"
    )
}

/// The failover summary: p50 and max of the time to the first ack over the rounds, against
/// the target; empty without rounds.
pub fn failover_summary(rows: &[FailoverRow]) -> String {
    let mut text = String::new();
    let recoveries: Vec<f64> = rows.iter().map(|row| row.recovery.as_secs_f64()).collect();
    let max = recoveries.iter().copied().fold(f64::NAN, f64::max);
    if let Some(p50) = median(&recoveries) {
        let verdict = if max <= FAILOVER_TARGET.as_secs_f64() {
            "met"
        } else {
            "not met"
        };
        text.push_str(&format!(
            "kill → first acknowledged create: p50 {:.0} ms, max {:.0} ms over {} rounds \
             (target ≤ {} s: {verdict})\n",
            p50 * 1e3,
            max * 1e3,
            rows.len(),
            FAILOVER_TARGET.as_secs()
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rate table shows cluster ÷ single per round and the median of those ratios (not
    /// the ratio of the medians), and which ran first.
    #[test]
    fn rate_table_has_per_round_ratios_and_their_median() {
        let rows = [
            RateRow {
                round: 1,
                single: 1000.0,
                cluster: 500.0,
                single_first: true,
            },
            RateRow {
                round: 2,
                single: 800.0,
                cluster: 600.0,
                single_first: false,
            },
            RateRow {
                round: 3,
                single: 2000.0,
                cluster: 200.0,
                single_first: true,
            },
        ];
        let table = rate_table(&rows, 3);
        let lines: Vec<&str> = table.lines().filter(|line| !line.is_empty()).collect();
        assert!(lines[0].contains("3 nodes ÷ 1 node"), "{table}");
        assert!(
            lines[1].contains("0.50") && lines[1].ends_with("1 node"),
            "{table}"
        );
        assert!(
            lines[2].contains("0.75") && lines[2].ends_with("3 nodes"),
            "{table}"
        );
        assert!(lines[3].contains("0.10"), "{table}");
        // Medians: 1000 creates/s, 500 creates/s, ratio 0.50 (median of 0.50, 0.75, 0.10).
        let median_line = lines[4];
        assert!(median_line.starts_with("median"), "{table}");
        let fields: Vec<&str> = median_line.split_whitespace().collect();
        assert_eq!(fields, ["median", "1000", "500", "0.50"], "{table}");
    }

    fn failover_row(round: usize, recovery_ms: u64) -> FailoverRow {
        FailoverRow {
            round,
            killed: 1,
            from: 2,
            recovery: Duration::from_millis(recovery_ms),
            attempts: 40,
            failed: 39,
            new_leader: Some(3),
            rejoin: Duration::from_millis(1500),
        }
    }

    /// The failover summary takes p50 and max over the rounds and judges the max against
    /// the 2 s target.
    #[test]
    fn failover_summary_judges_the_max() {
        let met = failover_summary(&[
            failover_row(1, 900),
            failover_row(2, 1200),
            failover_row(3, 700),
        ]);
        assert!(
            met.contains("p50 900 ms, max 1200 ms over 3 rounds (target ≤ 2 s: met)"),
            "{met}"
        );
        let missed = failover_summary(&[failover_row(1, 900), failover_row(2, 2100)]);
        assert!(
            missed.contains("max 2100 ms") && missed.contains("not met"),
            "{missed}"
        );
        assert!(!failover_summary(&[]).contains("p50"));
    }
}
