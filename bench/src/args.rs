//! Command-line options of the benchmarks (clap). Sizes accept the suffixes K, M, G (powers of
//! 1024), e.g. `512M`, `1G`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `runnel-bench`: Runnel's benchmarks.
#[derive(Debug, Parser)]
#[command(
    name = "runnel-bench",
    version,
    about = "Runnel benchmarks: figures from one run, ratios within it"
)]
pub struct Cli {
    /// Which benchmark.
    #[command(subcommand)]
    pub command: Bench,
}

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum Bench {
    /// Storage engine: durable append vs raw DMA writes, latency, cold scan.
    Log(LogArgs),
    /// A node over QUIC on loopback, the server as its own process: producer throughput
    /// (fsync, memory) with server CPU-seconds per GB, latency against the disk's fdatasync;
    /// A/B of two server binaries and shard-count variants in alternating rounds.
    Node(NodeArgs),
    /// Runnel against Redis Streams and NATS JetStream in one run: same records, producers
    /// and offered rates.
    Peers(PeersArgs),
    /// Subscriptions: backlog consume throughput, append-to-delivery latency at a fixed rate.
    Subscribe(SubscribeArgs),
    /// What a stream costs: create time vs stream count, server RSS, disk, restart time.
    Streams(StreamsArgs),
    /// A cluster on loopback: stream create rate on N nodes against 1 node in alternating
    /// rounds, and the time from SIGKILL of the metadata leader to the next acknowledged
    /// create.
    Cluster(ClusterArgs),
    /// Replicated shards on a 3-node loopback cluster: append throughput and latency of an
    /// R=3 stream against an R=1 stream in alternating rounds, the time from SIGKILL of a
    /// sequencer's node to the next acknowledged append, and a restarted replica's catch-up.
    Replication(ReplicationArgs),
}

/// Parses `512M`, `1G`, `4096`, `64K`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, multiplier) = match text.chars().last() {
        Some('K' | 'k') => (&text[..text.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&text[..text.len() - 1], 1 << 20),
        Some('G' | 'g') => (&text[..text.len() - 1], 1 << 30),
        _ => (text, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("{text:?} is not a size (examples: 4096, 64K, 512M, 1G)"))
}

fn positive_size(text: &str) -> Result<u64, String> {
    match parse_size(text)? {
        0 => Err("must be positive".into()),
        size => Ok(size),
    }
}

fn positive_count(text: &str) -> Result<usize, String> {
    positive_size(text).and_then(|n| usize::try_from(n).map_err(|e| e.to_string()))
}

/// Options of `runnel-bench log`.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Where to write (default: a temporary directory under ./target).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Bytes to write in each throughput phase.
    #[arg(long, default_value = "1G", value_parser = positive_size)]
    pub bytes: u64,
    /// Value size of a record.
    #[arg(long, default_value = "1024", value_parser = positive_count)]
    pub record_bytes: usize,
    /// Records per batch.
    #[arg(long, default_value = "64", value_parser = positive_count)]
    pub batch_records: usize,
    /// Concurrent producers in the durable throughput phase.
    #[arg(long, default_value = "64", value_parser = positive_count)]
    pub producers: usize,
    /// Offered rate of the latency phase in bytes/s.
    #[arg(long = "rate", default_value = "50M", value_parser = positive_size)]
    pub rate_bytes_per_second: u64,
    /// Records per batch in the latency phase.
    #[arg(long, default_value = "16", value_parser = positive_count)]
    pub latency_batch_records: usize,
    /// Length of the latency phase, in seconds.
    #[arg(long, default_value = "5", value_parser = positive_size)]
    pub latency_seconds: u64,
    /// The log's write buffer (the most one group commit writes), and the raw write size.
    #[arg(long = "write-buffer", default_value = "4M", value_parser = positive_count)]
    pub write_buffer_bytes: usize,
    /// Raw and durable phases alternate in this many rounds of bytes/rounds each.
    #[arg(long, default_value = "4", value_parser = positive_size)]
    pub rounds: u64,
}

/// Durability of the streams a phase appends to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DurabilityArg {
    /// Acknowledged after fdatasync.
    Fsync,
    /// Acknowledged when held in memory.
    Memory,
}

/// The phases of `runnel-bench node`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Phase {
    /// Producer throughput, once per `--durability`.
    Throughput,
    /// The disk's fdatasync latency, then append latency at `--rate`.
    Latency,
}

/// Options shared by `node` and `peers`: the load and the measurement.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Where each run's temporary data directory goes (default ./target); the disk probe
    /// writes there too, so put it on the disk to measure.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The `runnel-server` binary (default: the one beside this benchmark's binary).
    #[arg(long)]
    pub server: Option<PathBuf>,
    /// Executors of the Runnel server (the client needs the other core).
    #[arg(long, default_value = "1", value_parser = positive_count)]
    pub server_cores: usize,
    /// Pin the Runnel server's executors, one CPU each from CPU 0 (the server's default).
    /// Without it the benchmark starts the server unpinned, as the client shares the
    /// machine; on the 2-core development VM an unpinned executor drifts to the CPU where
    /// other writers' I/O is queued, and its append p50 was 5× a pinned one's
    /// (`docs/benchmarks.md`, *Where an append's latency goes*).
    #[arg(long)]
    pub server_pin_cores: bool,
    /// Rounds: every variant or system runs once per round, in turn, each on a fresh data
    /// directory, so that the machine's swings fall on all of them alike.
    #[arg(long, default_value = "2", value_parser = positive_count)]
    pub rounds: usize,
    /// Bytes of record values per throughput phase.
    #[arg(long, default_value = "512M", value_parser = positive_size)]
    pub bytes: u64,
    /// Value size of a record.
    #[arg(long, default_value = "1024", value_parser = positive_count)]
    pub record_bytes: usize,
    /// Records per request in the throughput phases (Runnel: the buffered producer's
    /// batch_records_max; Redis: XADDs per pipeline; NATS: publishes per ack wait).
    #[arg(long, default_value = "500", value_parser = positive_count)]
    pub batch_records: usize,
    /// Producers (Runnel: buffered producers; peers: connections).
    #[arg(long, default_value = "4", value_parser = positive_count)]
    pub producers: usize,
    /// Requests in flight per producer (Runnel: per producer and shard).
    #[arg(long, default_value = "4", value_parser = positive_count)]
    pub in_flight: usize,
    /// Offered rate of the latency phase in bytes of values per second.
    #[arg(long = "rate", default_value = "20M", value_parser = positive_size)]
    pub rate_bytes_per_second: u64,
    /// Records per request in the latency phase.
    #[arg(long, default_value = "16", value_parser = positive_count)]
    pub latency_batch_records: usize,
    /// Length of the latency phase, in seconds.
    #[arg(long, default_value = "5", value_parser = positive_size)]
    pub latency_seconds: u64,
    /// Length of the disk probe of each latency phase, in seconds (split over its slices).
    #[arg(long, default_value = "2", value_parser = positive_size)]
    pub disk_seconds: u64,
    /// A latency phase runs in this many slices, each after its share of the disk probe, so
    /// that the baseline and the latency see the same disk.
    #[arg(long, default_value = "5", value_parser = positive_count)]
    pub slices: usize,
    /// The latency pacer yields (instead of sleeping) within this many microseconds of each
    /// send time.
    #[arg(long, default_value = "200")]
    pub spin_us: u64,
    /// Write PNG plots (throughput, latency percentiles) into this directory.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// TrueType font for the plots' text (Debian's fonts-dejavu-core).
    #[arg(
        long,
        default_value = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
    )]
    pub font: PathBuf,
}

/// Options of `runnel-bench node`.
#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    /// The load and the measurement.
    #[command(flatten)]
    pub load: LoadArgs,
    /// A second `runnel-server` binary: A/B in one run, the two alternating in every round,
    /// with the ratios B/A printed.
    #[arg(long)]
    pub server_b: Option<PathBuf>,
    /// Shards per stream; several (e.g. `1,16`) are variants that alternate in every round,
    /// with ratios to the first. Default: 2 per server core.
    #[arg(long, value_delimiter = ',', value_parser = positive_u32)]
    pub shards: Vec<u32>,
    /// Streams per durability; producer p writes to stream p % streams.
    #[arg(long, default_value = "1", value_parser = positive_count)]
    pub streams: usize,
    /// Durabilities of the throughput phases, in order.
    #[arg(long, value_delimiter = ',', default_value = "fsync,memory")]
    pub durability: Vec<DurabilityArg>,
    /// Phases to run.
    #[arg(long, value_delimiter = ',', default_value = "throughput,latency")]
    pub phases: Vec<Phase>,
    /// Also measure latency with a concurrent writer slowing the disk: this many bytes per
    /// second written through the page cache, synced every 16 MiB (the disk probe is repeated
    /// under the same load).
    #[arg(long, value_parser = positive_size)]
    pub disk_writer: Option<u64>,
    /// Also run the latency phase paced by tokio's timer (`sleep_until`, 1 ms resolution), as
    /// the benchmark did before issue 9, right after the precisely paced one: what the old
    /// pacing added, in one run.
    #[arg(long)]
    pub compare_tokio_timer: bool,
}

/// The systems `runnel-bench peers` can measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SystemArg {
    /// Runnel, fsync durability.
    Runnel,
    /// Runnel, memory durability.
    RunnelMemory,
    /// Redis Streams, appendonly yes, appendfsync always.
    RedisAlways,
    /// Redis Streams, appendonly yes, appendfsync no.
    RedisNo,
    /// NATS JetStream, file storage.
    Nats,
}

/// Options of `runnel-bench peers`.
#[derive(Debug, Clone, Args)]
pub struct PeersArgs {
    /// The load and the measurement.
    #[command(flatten)]
    pub load: LoadArgs,
    /// Systems to measure, in the order of each round.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "runnel,redis-always,runnel-memory,redis-no,nats"
    )]
    pub systems: Vec<SystemArg>,
    /// Shards of Runnel's stream. Default: 2 per server core.
    #[arg(long, value_parser = positive_u32)]
    pub shards: Option<u32>,
}

fn positive_u32(text: &str) -> Result<u32, String> {
    positive_size(text).and_then(|n| u32::try_from(n).map_err(|e| e.to_string()))
}

/// Options of `runnel-bench subscribe`.
#[derive(Debug, Clone, Args)]
pub struct SubscribeArgs {
    /// Where the node keeps its data (default: a temporary directory under ./target).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Bytes of records in the backlog consumed in the throughput phase.
    #[arg(long, default_value = "256M", value_parser = positive_size)]
    pub bytes: u64,
    /// Value size of a record.
    #[arg(long, default_value = "1024", value_parser = positive_count)]
    pub record_bytes: usize,
    /// Buffered producers appending the backlog.
    #[arg(long, default_value = "4", value_parser = positive_count)]
    pub producers: usize,
    /// Requests in flight per producer and shard.
    #[arg(long, default_value = "4", value_parser = positive_count)]
    pub in_flight: usize,
    /// Executors of the node (the client needs the other core).
    #[arg(long, default_value = "1", value_parser = positive_count)]
    pub server_cores: usize,
    /// The subscriptions' limit of unacked records (split over the shards).
    #[arg(long, default_value = "10000", value_parser = positive_size)]
    pub max_unacked_records: u64,
    /// Offered rate of the latency phase, in records per second.
    #[arg(long = "rate", default_value = "20000", value_parser = positive_size)]
    pub rate_records_per_second: u64,
    /// Records per append request in the latency phase.
    #[arg(long, default_value = "20", value_parser = positive_count)]
    pub latency_batch_records: usize,
    /// Length of the latency phase, in seconds.
    #[arg(long, default_value = "5", value_parser = positive_size)]
    pub latency_seconds: u64,
    /// Backlog phases (each its own stream and subscription), for the ratio per round and
    /// its median.
    #[arg(long, default_value = "1", value_parser = positive_count)]
    pub rounds: usize,
}

/// Options of `runnel-bench streams`.
#[derive(Debug, Clone, Args)]
pub struct StreamsArgs {
    /// Where the server keeps its data (default: a temporary directory under ./target).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The `runnel-server` binary (default: the one beside this benchmark's binary).
    #[arg(long)]
    pub server: Option<PathBuf>,
    /// Single-shard streams to create.
    #[arg(long, default_value = "1000", value_parser = positive_count)]
    pub count: usize,
    /// Creates in flight.
    #[arg(long, default_value = "16", value_parser = positive_count)]
    pub concurrency: usize,
    /// Report the time of every this many creates.
    #[arg(long, default_value = "1000", value_parser = positive_count)]
    pub interval: usize,
    /// Executors of the server.
    #[arg(long, default_value = "1", value_parser = positive_count)]
    pub server_cores: usize,
    /// The server's `metadata_snapshot_interval` (default: the server's default).
    #[arg(long, value_parser = positive_size)]
    pub metadata_snapshot_interval: Option<u64>,
    /// The server's `log.write_buffer_bytes` (default: the server's default).
    #[arg(long = "write-buffer", value_parser = positive_count)]
    pub write_buffer_bytes: Option<usize>,
    /// Keep the data directory (and the server log) after the run.
    #[arg(long)]
    pub keep: bool,
}

/// The phases of `runnel-bench cluster`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClusterPhase {
    /// Stream creates/s on N nodes against 1 node, alternating rounds.
    Rate,
    /// Time from SIGKILL of the metadata leader to the next acknowledged create.
    Failover,
}

/// Nodes of a cluster that survives losing its leader: at least 3.
fn cluster_nodes(text: &str) -> Result<usize, String> {
    match positive_count(text)? {
        nodes if nodes < 3 => Err(format!(
            "a cluster that survives its leader's loss has at least 3 nodes, got {nodes}"
        )),
        nodes => Ok(nodes),
    }
}

/// Options of `runnel-bench cluster`.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Where the clusters' temporary directories go (default ./target).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The `runnel-server` binary (default: the one beside this benchmark's binary).
    #[arg(long)]
    pub server: Option<PathBuf>,
    /// Nodes of the cluster (the other side of the rate comparison is 1 node).
    #[arg(long, default_value = "3", value_parser = cluster_nodes)]
    pub nodes: usize,
    /// Executors per node.
    #[arg(long, default_value = "1", value_parser = positive_count)]
    pub cores: usize,
    /// Rounds of each phase.
    #[arg(long, default_value = "5", value_parser = positive_count)]
    pub rounds: usize,
    /// Single-shard streams created per cluster and round in the rate phase.
    #[arg(long, default_value = "2000", value_parser = positive_count)]
    pub creates: usize,
    /// Creates in flight in the rate phase.
    #[arg(long, default_value = "32", value_parser = positive_count)]
    pub concurrency: usize,
    /// After the kill, a create starts every this many milliseconds.
    #[arg(long, default_value = "20", value_parser = positive_size)]
    pub attempt_interval_ms: u64,
    /// Each create after the kill is one attempt, abandoned after this many milliseconds.
    #[arg(long, default_value = "500", value_parser = positive_size)]
    pub attempt_timeout_ms: u64,
    /// Phases to run.
    #[arg(long, value_delimiter = ',', default_value = "rate,failover")]
    pub phases: Vec<ClusterPhase>,
    /// Keep the clusters' directories (data and `node-K/node.log`) after the run.
    #[arg(long)]
    pub keep: bool,
}

/// The phases of `runnel-bench replication`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReplicationPhase {
    /// Append throughput and latency, R=3 against R=1, alternating rounds.
    Append,
    /// Time from SIGKILL of a sequencer's node to the next acknowledged append.
    Failover,
    /// A replica stopped while data is appended, restarted: time until it holds the data.
    Catchup,
}

/// Options of `runnel-bench replication`.
#[derive(Debug, Clone, Args)]
pub struct ReplicationArgs {
    /// Where the cluster's temporary directory goes (default ./target).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The `runnel-server` binary (default: the one beside this benchmark's binary).
    #[arg(long)]
    pub server: Option<PathBuf>,
    /// Executors per node (the three nodes are never pinned).
    #[arg(long, default_value = "1", value_parser = positive_count)]
    pub cores: usize,
    /// Rounds of the append phase (each measures both streams) and of the failover phase.
    #[arg(long, default_value = "4", value_parser = positive_count)]
    pub rounds: usize,
    /// Seconds each stream is appended to per round.
    #[arg(long, default_value = "5", value_parser = positive_size)]
    pub seconds: u64,
    /// Appends in flight (closed loop: each task sends its next append once one is acked).
    #[arg(long, default_value = "8", value_parser = positive_count)]
    pub in_flight: usize,
    /// Records per append request.
    #[arg(long, default_value = "16", value_parser = positive_count)]
    pub batch: usize,
    /// Bytes of each record's value.
    #[arg(long, default_value = "256", value_parser = positive_count)]
    pub record_bytes: usize,
    /// After the kill, an append starts every this many milliseconds.
    #[arg(long, default_value = "20", value_parser = positive_size)]
    pub attempt_interval_ms: u64,
    /// Each append after the kill is abandoned after this many milliseconds.
    #[arg(long, default_value = "1000", value_parser = positive_size)]
    pub attempt_timeout_ms: u64,
    /// Bytes appended while a replica is down in the catch-up phase (`64M`).
    #[arg(long, default_value = "64M", value_parser = parse_size)]
    pub catchup_bytes: u64,
    /// Phases to run.
    #[arg(long, value_delimiter = ',', default_value = "append,failover,catchup")]
    pub phases: Vec<ReplicationPhase>,
    /// Keep the cluster's directory (data and `node-K/node.log`) after the run.
    #[arg(long)]
    pub keep: bool,
}

#[cfg(test)]
mod tests {

    /// `replication` parses with its defaults and takes a phase list.
    #[test]
    fn replication_options_parse() {
        let Bench::Replication(defaults) = Cli::try_parse_from(["runnel-bench", "replication"])
            .expect("parse")
            .command
        else {
            panic!("parsed the wrong benchmark")
        };
        assert_eq!(
            (defaults.rounds, defaults.in_flight, defaults.batch),
            (4, 8, 16)
        );
        assert_eq!(defaults.catchup_bytes, 64 << 20);
        assert_eq!(
            defaults.phases,
            vec![
                ReplicationPhase::Append,
                ReplicationPhase::Failover,
                ReplicationPhase::Catchup
            ]
        );
        let Bench::Replication(args) = Cli::try_parse_from([
            "runnel-bench",
            "replication",
            "--phases",
            "failover",
            "--catchup-bytes",
            "8M",
        ])
        .expect("parse")
        .command
        else {
            panic!("parsed the wrong benchmark")
        };
        assert_eq!(args.phases, vec![ReplicationPhase::Failover]);
        assert_eq!(args.catchup_bytes, 8 << 20);
        assert!(Cli::try_parse_from(["runnel-bench", "replication", "--in-flight", "0"]).is_err());
    }
    use super::*;

    #[test]
    fn defaults_and_sizes_parse() {
        let cli = Cli::try_parse_from([
            "runnel-bench",
            "log",
            "--bytes",
            "512M",
            "--write-buffer",
            "8M",
        ])
        .expect("parse");
        match cli.command {
            Bench::Log(args) => {
                assert_eq!(args.bytes, 512 << 20);
                assert_eq!(args.write_buffer_bytes, 8 << 20);
                assert_eq!(
                    (args.producers, args.rounds, args.rate_bytes_per_second),
                    (64, 4, 50 << 20)
                );
            }
            _ => panic!("parsed the wrong benchmark"),
        }
        assert!(Cli::try_parse_from(["runnel-bench", "node", "--producers", "0"]).is_err());
        assert!(Cli::try_parse_from(["runnel-bench", "log", "--bytes", "12X"]).is_err());
        assert_eq!(parse_size("64k"), Ok(64 << 10));
    }

    #[test]
    fn node_options_parse_lists_and_variants() {
        let cli = Cli::try_parse_from([
            "runnel-bench",
            "node",
            "--shards",
            "1,16",
            "--durability",
            "fsync",
            "--server-b",
            "/tmp/b",
            "--phases",
            "throughput",
            "--disk-writer",
            "100M",
        ])
        .expect("parse");
        let Bench::Node(args) = cli.command else {
            panic!("parsed the wrong benchmark")
        };
        assert_eq!(args.shards, vec![1, 16]);
        assert_eq!(args.durability, vec![DurabilityArg::Fsync]);
        assert_eq!(args.phases, vec![Phase::Throughput]);
        assert_eq!(args.server_b, Some(PathBuf::from("/tmp/b")));
        assert_eq!(args.disk_writer, Some(100 << 20));
        assert_eq!(args.load.batch_records, 500);
        assert_eq!(args.load.rounds, 2);
        assert!(Cli::try_parse_from(["runnel-bench", "node", "--shards", "0"]).is_err());

        let Bench::Node(defaults) = Cli::try_parse_from(["runnel-bench", "node"])
            .expect("parse")
            .command
        else {
            panic!("parsed the wrong benchmark")
        };
        assert!(defaults.shards.is_empty());
        assert_eq!(
            defaults.durability,
            vec![DurabilityArg::Fsync, DurabilityArg::Memory]
        );
        assert_eq!(defaults.phases, vec![Phase::Throughput, Phase::Latency]);
    }

    #[test]
    fn cluster_options_parse_with_issue_10_defaults() {
        let Bench::Cluster(defaults) = Cli::try_parse_from(["runnel-bench", "cluster"])
            .expect("parse")
            .command
        else {
            panic!("parsed the wrong benchmark")
        };
        assert_eq!(
            (
                defaults.nodes,
                defaults.rounds,
                defaults.creates,
                defaults.concurrency
            ),
            (3, 5, 2000, 32)
        );
        assert_eq!((defaults.cores, defaults.attempt_interval_ms), (1, 20));
        assert_eq!(
            defaults.phases,
            vec![ClusterPhase::Rate, ClusterPhase::Failover]
        );
        let Bench::Cluster(args) = Cli::try_parse_from([
            "runnel-bench",
            "cluster",
            "--nodes",
            "5",
            "--phases",
            "failover",
            "--dir",
            "/tmp/c",
        ])
        .expect("parse")
        .command
        else {
            panic!("parsed the wrong benchmark")
        };
        assert_eq!(args.nodes, 5);
        assert_eq!(args.phases, vec![ClusterPhase::Failover]);
        assert_eq!(args.dir, Some(PathBuf::from("/tmp/c")));
        // Two nodes cannot elect a leader once one is killed.
        assert!(Cli::try_parse_from(["runnel-bench", "cluster", "--nodes", "2"]).is_err());
        assert!(
            Cli::try_parse_from(["runnel-bench", "cluster", "--attempt-interval-ms", "0"]).is_err()
        );
    }

    #[test]
    fn peers_options_parse() {
        let Bench::Peers(args) = Cli::try_parse_from([
            "runnel-bench",
            "peers",
            "--systems",
            "runnel,nats",
            "--rate",
            "8M",
        ])
        .expect("parse")
        .command
        else {
            panic!("parsed the wrong benchmark")
        };
        assert_eq!(args.systems, vec![SystemArg::Runnel, SystemArg::Nats]);
        assert_eq!(args.load.rate_bytes_per_second, 8 << 20);
        assert!(Cli::try_parse_from(["runnel-bench", "peers", "--systems", "kafka"]).is_err());
    }
}
