//! Command-line options of the benchmarks (clap). Sizes accept the suffixes K, M, G (powers of
//! 1024), e.g. `512M`, `1G`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
    /// A node over QUIC on loopback: producer throughput (fsync, memory), latency.
    Node(NodeArgs),
    /// Subscriptions: backlog consume throughput, append-to-delivery latency at a fixed rate.
    Subscribe(SubscribeArgs),
    /// What a stream costs: create time vs stream count, server RSS, disk, restart time.
    Streams(StreamsArgs),
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

/// Options of `runnel-bench node`.
#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    /// Where the node keeps its data (default: a temporary directory under ./target).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Bytes of records per throughput phase.
    #[arg(long, default_value = "512M", value_parser = positive_size)]
    pub bytes: u64,
    /// Value size of a record.
    #[arg(long, default_value = "1024", value_parser = positive_count)]
    pub record_bytes: usize,
    /// Buffered producers.
    #[arg(long, default_value = "4", value_parser = positive_count)]
    pub producers: usize,
    /// Requests in flight per producer and shard.
    #[arg(long, default_value = "4", value_parser = positive_count)]
    pub in_flight: usize,
    /// Executors of the node (the client needs the other core).
    #[arg(long, default_value = "1", value_parser = positive_count)]
    pub server_cores: usize,
    /// Offered rate of the latency phase in bytes/s.
    #[arg(long = "rate", default_value = "20M", value_parser = positive_size)]
    pub rate_bytes_per_second: u64,
    /// Records per request in the latency phase.
    #[arg(long, default_value = "16", value_parser = positive_count)]
    pub latency_batch_records: usize,
    /// Length of the latency phase, in seconds.
    #[arg(long, default_value = "5", value_parser = positive_size)]
    pub latency_seconds: u64,
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

#[cfg(test)]
mod tests {
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
}
