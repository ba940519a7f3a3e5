//! A Jepsen-style run against real processes (issue 11's acceptance): three `runnel-server`
//! nodes on loopback with fault injection on, a stream of R replicas, continuous producers
//! (each record's JSON names its producer and sequence number), tailing readers of every
//! shard and a subscription's consumer, and a **nemesis** that, on a seeded schedule, SIGKILLs
//! the node holding most sequencers and restarts it, SIGSTOPs a node past its failure timeout
//! and SIGCONTs it, and cuts one node off from the others (the peer transport's fault file)
//! and heals it. At the end it heals everything, reads every shard from the start and hands
//! the history to the [`checker`].
//!
//! [`run`] returns the checker's [`Report`](checker::Report) with the history and what the
//! nemesis did; the test decides what fails (see [`Settings::promise`]).

pub mod checker;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runnel_client::{
    Client, ClientOptions, ConsumerOptions, Durability, ReadFrom, Record, StreamSpec,
    SubscriptionSpec, SubscriptionStart,
};
use serde::Deserialize;

use crate::cluster::{poll, LocalCluster, TEST_CLUSTER_CONFIG};
use checker::{Ack, History, Isolation, Position, Promise, RecordKey, Report};

/// The stream the workload writes.
pub const STREAM: &str = "jepsen";
/// The subscription its consumer reads.
pub const SUBSCRIPTION: &str = "jepsen-all";
/// How long the cluster may take to recover from a fault (all nodes `Running`, producers
/// acknowledged again): a liveness bound far above what it needs, not a timing assertion.
pub const PATIENCE: Duration = Duration::from_secs(90);
/// `cluster.unavailable_after_ms` of the test cluster (see [`TEST_CLUSTER_CONFIG`]): a pause
/// lasts longer than this.
const UNAVAILABLE_AFTER_MS: u64 = 1_000;

/// What one run does. Every number is documented in `docs/testing.md`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Seeds the nemesis's schedule (which fault, which node, how long).
    pub seed: u64,
    /// Nodes of the cluster.
    pub nodes: usize,
    /// Shards of the stream.
    pub shards: u32,
    /// Replicas of each shard (R).
    pub replication_factor: u8,
    /// Whether producers are idempotent (then a duplicate fails the run).
    pub idempotent: bool,
    /// The stream's durability: with `Memory` and R = 1 a killed node may lose acknowledged
    /// records (reported, not a failure).
    pub durability: Durability,
    /// Concurrent producers, each sending one record at a time.
    pub producers: u32,
    /// Faults the nemesis injects, one after another.
    pub faults: usize,
    /// Shortest and longest time a fault lasts (a killed node stays down, a paused node
    /// stopped, an isolated node cut off), in milliseconds; a pause always lasts at least
    /// twice the failure detector's `unavailable_after_ms`.
    pub fault_ms: (u64, u64),
    /// Time between two faults once the cluster recovered, in milliseconds.
    pub quiet_ms: u64,
    /// Acknowledgements the producers must get after each recovery (liveness).
    pub progress_acks: usize,
}

impl Settings {
    /// The CI-sized run (about a minute): 3 nodes, 3 shards, R = 1, idempotent producers,
    /// 6 faults.
    pub fn ci(seed: u64) -> Settings {
        Settings {
            seed,
            nodes: 3,
            shards: 3,
            replication_factor: 1,
            idempotent: true,
            durability: Durability::Fsync,
            producers: 4,
            faults: 6,
            fault_ms: (1_500, 3_000),
            quiet_ms: 1_000,
            progress_acks: 20,
        }
    }

    /// The CI settings changed by the environment: `RUNNEL_JEPSEN_SEED` (default 1),
    /// `RUNNEL_JEPSEN_FAULTS` (default 6; the long run uses 100 or more),
    /// `RUNNEL_JEPSEN_R` (default 1; 3 once subscriptions stop at the committed offset), `RUNNEL_JEPSEN_IDEMPOTENT` (0/1, default 1),
    /// `RUNNEL_JEPSEN_DURABILITY` (`fsync` or `memory`, default `fsync`).
    pub fn from_env() -> Settings {
        let number = |name: &str, default: u64| -> u64 {
            match std::env::var(name) {
                Ok(text) => text
                    .trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}={text:?} is not a number")),
                Err(_) => default,
            }
        };
        let mut settings = Settings::ci(number("RUNNEL_JEPSEN_SEED", 1));
        settings.faults = number("RUNNEL_JEPSEN_FAULTS", settings.faults as u64) as usize;
        settings.replication_factor =
            u8::try_from(number("RUNNEL_JEPSEN_R", 1)).expect("RUNNEL_JEPSEN_R is 1, 3 or 5");
        settings.idempotent = number("RUNNEL_JEPSEN_IDEMPOTENT", 1) != 0;
        settings.durability = match std::env::var("RUNNEL_JEPSEN_DURABILITY").as_deref() {
            Err(_) | Ok("fsync") => Durability::Fsync,
            Ok("memory") => Durability::Memory,
            Ok(other) => panic!("RUNNEL_JEPSEN_DURABILITY={other:?} is not fsync or memory"),
        };
        settings
    }

    /// What the stream promises, for [`Report::violations`].
    pub fn promise(&self) -> Promise {
        Promise {
            replication_factor: self.replication_factor,
            idempotent: self.idempotent,
            fsync: self.durability == Durability::Fsync,
        }
    }
}

/// What a run produced.
#[derive(Debug)]
pub struct Outcome {
    /// The checker's findings.
    pub report: Report,
    /// Everything observed.
    pub history: History,
    /// What the nemesis did, one line per fault, with times since the start.
    pub nemesis: Vec<String>,
}

/// Writes every node's log (all its runs) to `dir/jepsen-seed<seed>-node<k>.log`
/// (`RUNNEL_JEPSEN_LOGS=dir`): what to read when the checker finds something.
fn save_logs(cluster: &mut LocalCluster, dir: &std::path::Path, seed: u64) {
    if let Err(error) = std::fs::create_dir_all(dir) {
        eprintln!("jepsen: cannot create {}: {error}", dir.display());
        return;
    }
    let ids: Vec<u64> = cluster.ids().collect();
    for k in ids {
        let path = dir.join(format!("jepsen-seed{seed}-node{k}.log"));
        match std::fs::write(&path, cluster.log(k)) {
            Ok(()) => eprintln!("jepsen: node {k}'s log in {}", path.display()),
            Err(error) => eprintln!("jepsen: cannot write {}: {error}", path.display()),
        }
    }
}

/// A small seeded generator (SplitMix64): the nemesis's schedule replays from the seed.
#[derive(Debug, Clone)]
pub struct Schedule {
    state: u64,
}

impl Schedule {
    /// The schedule of `seed`.
    pub fn new(seed: u64) -> Schedule {
        Schedule { state: seed }
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `[low, high]`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        assert!(low <= high);
        low + self.next_u64() % (high - low + 1)
    }
}

/// One fault of the nemesis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Kill,
    Pause,
    Isolate,
}

/// The history the workload's tasks fill in.
#[derive(Default)]
struct Shared {
    history: Mutex<History>,
    acked: AtomicUsize,
    stop: AtomicBool,
}

impl Shared {
    fn history(&self) -> std::sync::MutexGuard<'_, History> {
        self.history
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A shard as `runnel shard list --output json` shows it: its sequencer's node (`sequencer`
/// once replica sets exist; `node`, the owner, before).
#[derive(Debug, Deserialize)]
struct ShardEntry {
    id: u64,
    node: u64,
    #[serde(default)]
    sequencer: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct ShardListDocument {
    shards: Vec<ShardEntry>,
}

/// Runs the workload and the nemesis (see the module header) and checks the history.
pub fn run(settings: &Settings) -> Outcome {
    assert!(settings.nodes >= 3, "a run needs a majority and a minority");
    let mut cluster = LocalCluster::start_with_faults(settings.nodes, 1, TEST_CLUSTER_CONFIG);
    cluster.wait_running(settings.nodes, PATIENCE);
    let urls: Vec<String> = cluster.ids().map(|k| cluster.url(k)).collect();
    let all_nodes = format!(
        "{},{}",
        urls[0],
        urls[1..]
            .iter()
            .map(|url| url.trim_start_matches("runnel://"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let options = ClientOptions {
        connect_timeout_ms: 2_000,
        request_timeout_ms: 3_000,
        request_attempts_max: 1,
        keep_alive_interval_ms: 500,
        idle_timeout_ms: 2_000,
        client_name: "runnel-tests jepsen".into(),
        ..cluster.client_options()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let shard_ids = runtime.block_on(create_stream(&all_nodes, &options, settings));
    let started = Instant::now();
    let shared = Arc::new(Shared::default());
    let mut producers = Vec::new();
    for producer in 0..settings.producers {
        producers.push(runtime.spawn(produce(
            Arc::clone(&shared),
            all_nodes.clone(),
            options.clone(),
            producer,
            settings.idempotent,
            started,
        )));
    }
    let mut readers = Vec::new();
    for &shard in &shard_ids {
        readers.push(runtime.spawn(tail_shard(
            Arc::clone(&shared),
            all_nodes.clone(),
            options.clone(),
            shard,
        )));
    }
    readers.push(runtime.spawn(consume(
        Arc::clone(&shared),
        all_nodes.clone(),
        options.clone(),
    )));

    let mut nemesis = Vec::new();
    let mut schedule = Schedule::new(settings.seed);
    wait_for_acks(
        &mut cluster,
        &shared,
        settings.progress_acks,
        "before any fault",
    );
    for round in 0..settings.faults {
        let fault = match schedule.next_u64() % 3 {
            0 => Fault::Kill,
            1 => Fault::Pause,
            _ => Fault::Isolate,
        };
        let (low, high) = settings.fault_ms;
        let mut hold_ms = schedule.between(low, high);
        let sequencers = sequencers(&cluster);
        let node = match fault {
            // The node holding most sequencers (ties and unknowns by the schedule).
            Fault::Kill => busiest(&sequencers, &mut schedule, settings.nodes),
            Fault::Pause | Fault::Isolate => schedule.between(1, settings.nodes as u64),
        };
        let at_ms = started.elapsed().as_millis() as u64;
        match fault {
            Fault::Kill => {
                cluster.kill(node);
                std::thread::sleep(Duration::from_millis(hold_ms));
                cluster.restart(node);
            }
            Fault::Pause => {
                hold_ms = hold_ms.max(2 * UNAVAILABLE_AFTER_MS);
                cluster.pause(node);
                std::thread::sleep(Duration::from_millis(hold_ms));
                cluster.resume(node);
            }
            Fault::Isolate => {
                // The cut is the time between every node applying it and the first node
                // healing: a send both started and acknowledged inside it had no majority.
                cluster.isolate(node);
                let from_ms = started.elapsed().as_millis() as u64;
                std::thread::sleep(Duration::from_millis(hold_ms));
                let until_ms = started.elapsed().as_millis() as u64;
                cluster.heal_all();
                let sequenced_shards = sequencers
                    .iter()
                    .filter(|(_, &sequencer)| sequencer == node)
                    .map(|(&shard, _)| shard)
                    .collect();
                shared.history().isolations.push(Isolation {
                    node,
                    from_ms,
                    until_ms,
                    sequenced_shards,
                });
            }
        }
        let line = format!(
            "round {round} at {at_ms} ms: {fault:?} node {node} for {hold_ms} ms \
             (sequencers {sequencers:?}, {} acked so far)",
            shared.acked.load(Ordering::SeqCst)
        );
        eprintln!("jepsen: {line}");
        nemesis.push(line);
        cluster.wait_running(settings.nodes, PATIENCE);
        wait_for_acks(
            &mut cluster,
            &shared,
            settings.progress_acks,
            &format!("after round {round}"),
        );
        std::thread::sleep(Duration::from_millis(settings.quiet_ms));
    }

    // The end: stop producing, heal, and read every shard from its start.
    shared.stop.store(true, Ordering::SeqCst);
    for producer in producers {
        runtime
            .block_on(producer)
            .unwrap_or_else(|e| panic!("a producer task failed: {e}"));
    }
    for reader in &readers {
        reader.abort();
    }
    cluster.heal_all();
    cluster.wait_running(settings.nodes, PATIENCE);
    let final_log = runtime.block_on(read_everything(&all_nodes, &options, &shard_ids));
    let final_log = cluster.or_panic_with_logs(final_log, "the final read");
    if let Some(dir) = std::env::var_os("RUNNEL_JEPSEN_LOGS") {
        save_logs(&mut cluster, std::path::Path::new(&dir), settings.seed);
    }
    drop(readers);
    runtime.shutdown_timeout(Duration::from_secs(5));
    let mut history = std::mem::take(&mut *shared.history());
    history.final_lost = final_log
        .iter()
        .map(|(&shard, (_, lost))| (shard, lost.clone()))
        .collect();
    history.final_log = final_log
        .into_iter()
        .map(|(shard, (log, _))| (shard, log))
        .collect();
    let report = checker::check(&history);
    Outcome {
        report,
        history,
        nemesis,
    }
}

/// Creates the stream and the subscription; the stream's shard ids.
async fn create_stream(url: &str, options: &ClientOptions, settings: &Settings) -> Vec<u64> {
    let client = Client::connect(url, options.clone())
        .await
        .expect("connect to the cluster");
    client
        .create_stream(
            StreamSpec::new(STREAM, settings.durability)
                .shard_count(settings.shards)
                .replication_factor(settings.replication_factor),
        )
        .await
        .expect("create the stream");
    client
        .create_subscription(
            SubscriptionSpec::new(SUBSCRIPTION, STREAM).start(SubscriptionStart::Earliest),
        )
        .await
        .expect("create the subscription");
    let shards = client.list_shards(STREAM).await.expect("list the shards");
    shards.iter().map(|shard| shard.id.0).collect()
}

/// Connects to any node of `url`, trying again until it works or the run stops.
async fn connect(shared: &Shared, url: &str, options: &ClientOptions) -> Option<Client> {
    while !shared.stop.load(Ordering::SeqCst) {
        match Client::connect(url, options.clone()).await {
            Ok(client) => return Some(client),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    None
}

/// One producer (idempotent if asked: the SDK then retries a send whose outcome is unknown,
/// and the server stores it once): sends its records one at a time until the run stops,
/// recording each as acknowledged (with its id) or of unknown outcome.
async fn produce(
    shared: Arc<Shared>,
    url: String,
    options: ClientOptions,
    producer: u32,
    idempotent: bool,
    started: Instant,
) {
    let mut n = 0u64;
    let mut client = None;
    while !shared.stop.load(Ordering::SeqCst) {
        if client.is_none() {
            client = connect(&shared, &url, &options).await;
        }
        let Some(connected) = client.as_ref() else {
            return;
        };
        let sender = match connected
            .producer(STREAM)
            .map(|sender| sender.idempotent(idempotent))
        {
            Ok(sender) => sender,
            Err(_) => {
                client = None;
                continue;
            }
        };
        let record = RecordKey { producer, n };
        n += 1;
        let sent_ms = started.elapsed().as_millis() as u64;
        let key = format!("{producer}-{}", record.n).into_bytes();
        match sender.send(Record::new(record.value()).with_key(key)).await {
            Ok(id) => {
                let acked_ms = started.elapsed().as_millis() as u64;
                shared.history().acks.push(Ack {
                    record,
                    at: (id.shard.0, id.offset.0),
                    sent_ms,
                    acked_ms,
                });
                shared.acked.fetch_add(1, Ordering::SeqCst);
            }
            Err(_) => {
                shared.history().unknown.insert(record);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Records every record of a batch as seen during the run (`consumed`: delivered to the
/// subscription's consumer, else read by a tailing reader).
fn seen(shared: &Shared, records: impl IntoIterator<Item = (Position, Vec<u8>)>, consumed: bool) {
    let mut history = shared.history();
    for (at, value) in records {
        // A value that is not the workload's is kept as an impossible record, so the
        // checker reports it.
        let record = RecordKey::parse(&value).unwrap_or(RecordKey {
            producer: u32::MAX,
            n: u64::MAX,
        });
        history.live_reads.push((record, at));
        if consumed {
            history.consumed.insert((record, at));
        }
    }
}

/// Tails one shard from its start, reopening the read where it stopped after any error.
async fn tail_shard(shared: Arc<Shared>, url: String, options: ClientOptions, shard: u64) {
    let mut next: Option<u64> = None;
    loop {
        let Some(client) = connect(&shared, &url, &options).await else {
            return;
        };
        let from = next.map_or(ReadFrom::Earliest, |offset| {
            ReadFrom::Offset(runnel_core::Offset(offset))
        });
        let Ok(reader) = client.reader(STREAM, runnel_core::ShardId(shard), from, None) else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut reader = reader.tail(true);
        while let Ok(Some(batch)) = reader.next_batch().await {
            let mut records = Vec::new();
            for record in batch.records() {
                let Ok((id, record)) = record else { break };
                next = Some(id.offset.0 + 1);
                records.push(((id.shard.0, id.offset.0), record.value().to_vec()));
            }
            seen(&shared, records, false);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A consumer of the subscription: records what it is delivered and acks it; joins again
/// after any error.
async fn consume(shared: Arc<Shared>, url: String, options: ClientOptions) {
    loop {
        let Some(client) = connect(&shared, &url, &options).await else {
            return;
        };
        let Ok(mut consumer) = client
            .consumer(SUBSCRIPTION, ConsumerOptions::new("jepsen-consumer"))
            .await
        else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        while let Some(Ok(delivery)) = consumer.next().await {
            let Ok(records) = delivery.to_records() else {
                break;
            };
            seen(
                &shared,
                records
                    .into_iter()
                    .map(|(id, record)| ((id.shard.0, id.offset.0), record.value)),
                true,
            );
            if consumer.ack_delivery(&delivery).is_err() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every shard read from its first offset to its end (retrying a shard until it answers).
async fn read_everything(
    url: &str,
    options: &ClientOptions,
    shards: &[u64],
) -> Result<BTreeMap<u64, FinalRead>, String> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut logs = BTreeMap::new();
    for &shard in shards {
        loop {
            match read_shard(url, options, shard).await {
                Ok(log) => {
                    logs.insert(shard, log);
                    break;
                }
                Err(error) if tokio::time::Instant::now() >= deadline => {
                    return Err(format!("shard {shard}: {error}"))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
    Ok(logs)
}

/// One shard's final read: (offset, record) in the order read, and the lost ranges reported.
type FinalRead = (Vec<(u64, RecordKey)>, Vec<std::ops::Range<u64>>);

async fn read_shard(url: &str, options: &ClientOptions, shard: u64) -> Result<FinalRead, String> {
    let client = Client::connect(url, options.clone())
        .await
        .map_err(|e| e.to_string())?;
    let mut reader = client
        .reader(
            STREAM,
            runnel_core::ShardId(shard),
            ReadFrom::Earliest,
            None,
        )
        .map_err(|e| e.to_string())?;
    let mut log = Vec::new();
    while let Some(batch) = reader.next_batch().await.map_err(|e| e.to_string())? {
        for record in batch.records() {
            let (id, record) = record.map_err(|e| e.to_string())?;
            let key = RecordKey::parse(record.value()).unwrap_or(RecordKey {
                producer: u32::MAX,
                n: u64::MAX,
            });
            log.push((id.offset.0, key));
        }
    }
    let lost = reader
        .lost_ranges()
        .iter()
        .map(|range| range.start.0..range.end.0)
        .collect();
    Ok((log, lost))
}

/// Each shard's sequencer node, as the first serving node lists them (empty if none answers).
fn sequencers(cluster: &LocalCluster) -> BTreeMap<u64, u64> {
    for k in cluster.ids().filter(|&k| cluster.is_serving(k)) {
        let Ok(text) = cluster.cli(k, &["shard", "list", STREAM]) else {
            continue;
        };
        if let Ok(document) = serde_json::from_str::<ShardListDocument>(&text) {
            return document
                .shards
                .iter()
                .map(|shard| (shard.id, shard.sequencer.unwrap_or(shard.node)))
                .collect();
        }
    }
    BTreeMap::new()
}

/// The node that is the sequencer of most shards (ties broken by the schedule).
fn busiest(sequencers: &BTreeMap<u64, u64>, schedule: &mut Schedule, nodes: usize) -> u64 {
    let mut count: BTreeMap<u64, usize> = BTreeMap::new();
    for &node in sequencers.values() {
        *count.entry(node).or_default() += 1;
    }
    let most = count.values().copied().max().unwrap_or(0);
    let candidates: Vec<u64> = if most == 0 {
        (1..=nodes as u64).collect()
    } else {
        count
            .iter()
            .filter(|(_, &c)| c == most)
            .map(|(&node, _)| node)
            .collect::<BTreeSet<u64>>()
            .into_iter()
            .collect()
    };
    let pick = schedule.next_u64() % candidates.len() as u64;
    candidates[pick as usize]
}

/// Waits until the producers got `count` more acknowledgements (the cluster is live again).
fn wait_for_acks(cluster: &mut LocalCluster, shared: &Shared, count: usize, when: &str) {
    let before = shared.acked.load(Ordering::SeqCst);
    let progressed = poll(PATIENCE, || {
        let now = shared.acked.load(Ordering::SeqCst);
        if now >= before + count {
            Ok(())
        } else {
            Err(format!(
                "{when}: {} of {count} acknowledgements",
                now - before
            ))
        }
    });
    cluster.or_panic_with_logs(progressed, "the producers made no progress");
}
