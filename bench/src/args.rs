//! Command-line options of the benchmarks.

use std::path::PathBuf;

pub const USAGE: &str = "\
runnel-bench: Runnel benchmarks

USAGE:
    runnel-bench log [OPTIONS]    storage engine: durable append vs raw DMA writes, latency, scan
    runnel-bench node [OPTIONS]   a node over QUIC on loopback: producer throughput (fsync, memory), latency

OPTIONS (log):
    --dir PATH               where to write (default: a temporary directory under ./target)
    --bytes N                bytes to write in each throughput phase, e.g. 1G, 512M (default 1G)
    --record-bytes N         value size of a record (default 1024)
    --batch-records N        records per batch (default 64)
    --producers N            concurrent producers in the durable throughput phase (default 64)
    --rounds N               raw and durable phases alternate in N rounds of bytes/N (default 4)
    --rate N                 offered rate of the latency phase in bytes/s, e.g. 50M (default 50M)
    --latency-batch-records  records per batch in the latency phase (default 16)
    --latency-seconds N      length of the latency phase (default 5)
    --write-buffer N         the log's write buffer (the most one group commit writes) (default 4M)

OPTIONS (node):
    --dir PATH               where the node keeps its data (default: a temporary directory under ./target)
    --bytes N                bytes of records per throughput phase (default 512M)
    --record-bytes N         value size of a record (default 1024)
    --producers N            buffered producers (default 4)
    --in-flight N            requests in flight per producer and shard (default 4)
    --server-cores N         executors of the node (default 1; the client needs the other core)
    --rate N                 offered rate of the latency phase in bytes/s (default 20M)
    --latency-batch-records  records per request in the latency phase (default 16)
    --latency-seconds N      length of the latency phase (default 5)";

/// Options of `runnel-bench node`.
#[derive(Debug, Clone)]
pub struct NodeArgs {
    pub dir: Option<PathBuf>,
    pub bytes: u64,
    pub record_bytes: usize,
    pub producers: usize,
    pub in_flight: usize,
    pub server_cores: usize,
    pub rate_bytes_per_second: u64,
    pub latency_batch_records: usize,
    pub latency_seconds: u64,
}

impl NodeArgs {
    pub fn parse(argv: &[String]) -> Result<NodeArgs, String> {
        let mut args = NodeArgs {
            dir: None,
            bytes: 512 << 20,
            record_bytes: 1024,
            producers: 4,
            in_flight: 4,
            server_cores: 1,
            rate_bytes_per_second: 20 << 20,
            latency_batch_records: 16,
            latency_seconds: 5,
        };
        let mut iter = argv.iter();
        while let Some(flag) = iter.next() {
            let mut value = || {
                iter.next()
                    .cloned()
                    .ok_or_else(|| format!("{flag} needs a value"))
            };
            match flag.as_str() {
                "--dir" => args.dir = Some(PathBuf::from(value()?)),
                "--bytes" => args.bytes = parse_size(&value()?)?,
                "--record-bytes" => args.record_bytes = parse_size(&value()?)? as usize,
                "--producers" => args.producers = parse_size(&value()?)? as usize,
                "--in-flight" => args.in_flight = parse_size(&value()?)? as usize,
                "--server-cores" => args.server_cores = parse_size(&value()?)? as usize,
                "--rate" => args.rate_bytes_per_second = parse_size(&value()?)?,
                "--latency-batch-records" => {
                    args.latency_batch_records = parse_size(&value()?)? as usize
                }
                "--latency-seconds" => args.latency_seconds = parse_size(&value()?)?,
                "--help" | "-h" => return Err(USAGE.to_string()),
                other => return Err(format!("unknown option {other:?}\n\n{USAGE}")),
            }
        }
        if args.producers == 0
            || args.in_flight == 0
            || args.server_cores == 0
            || args.record_bytes == 0
            || args.latency_batch_records == 0
            || args.rate_bytes_per_second == 0
        {
            return Err("counts, sizes and rates must be positive".into());
        }
        Ok(args)
    }
}

/// Options of `runnel-bench log`.
#[derive(Debug, Clone)]
pub struct LogArgs {
    pub dir: Option<PathBuf>,
    pub bytes: u64,
    pub record_bytes: usize,
    pub batch_records: usize,
    pub producers: usize,
    pub rate_bytes_per_second: u64,
    pub latency_batch_records: usize,
    pub latency_seconds: u64,
    pub write_buffer_bytes: usize,
    pub rounds: u64,
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

impl LogArgs {
    pub fn parse(argv: &[String]) -> Result<LogArgs, String> {
        let mut args = LogArgs {
            dir: None,
            bytes: 1 << 30,
            record_bytes: 1024,
            batch_records: 64,
            producers: 64,
            rate_bytes_per_second: 50 << 20,
            latency_batch_records: 16,
            latency_seconds: 5,
            write_buffer_bytes: 4 << 20,
            rounds: 4,
        };
        let mut iter = argv.iter();
        while let Some(flag) = iter.next() {
            let mut value = || {
                iter.next()
                    .cloned()
                    .ok_or_else(|| format!("{flag} needs a value"))
            };
            match flag.as_str() {
                "--dir" => args.dir = Some(PathBuf::from(value()?)),
                "--bytes" => args.bytes = parse_size(&value()?)?,
                "--record-bytes" => args.record_bytes = parse_size(&value()?)? as usize,
                "--batch-records" => args.batch_records = parse_size(&value()?)? as usize,
                "--producers" => args.producers = parse_size(&value()?)? as usize,
                "--rate" => args.rate_bytes_per_second = parse_size(&value()?)?,
                "--latency-batch-records" => {
                    args.latency_batch_records = parse_size(&value()?)? as usize
                }
                "--latency-seconds" => args.latency_seconds = parse_size(&value()?)?,
                "--write-buffer" => args.write_buffer_bytes = parse_size(&value()?)? as usize,
                "--rounds" => args.rounds = parse_size(&value()?)?,
                "--help" | "-h" => return Err(USAGE.to_string()),
                other => return Err(format!("unknown option {other:?}\n\n{USAGE}")),
            }
        }
        if args.batch_records == 0
            || args.producers == 0
            || args.latency_batch_records == 0
            || args.rate_bytes_per_second == 0
            || args.rounds == 0
        {
            return Err("counts and rates must be positive".into());
        }
        Ok(args)
    }
}
