//! `runnel-bench`: Runnel's load generators and benchmarks.
//!
//! Every figure a benchmark prints comes from one run on this machine, and comparisons are
//! printed as ratios of two measurements taken in that same run, because the machines are
//! shared and noisy. Latencies are recorded in hdrhistogram; open-loop (fixed-rate) latencies
//! are measured from each request's *scheduled* time, which corrects coordinated omission.
//!
//! Usage: `cargo run --release -p runnel-bench -- log|node|peers|subscribe|streams|cluster|replication [OPTIONS]`
//! (`--help` lists them).

mod alloc_counter;
mod args;
mod cluster_bench;
mod cluster_process;
mod disk;
mod in_process_node;
mod log_bench;
mod node_bench;
mod pacing;
mod peers_bench;
mod plot;
mod proc_stat;
mod replication_bench;
mod report;
mod server_process;
mod stats;
mod streams_bench;
mod subscribe_bench;
mod systems;

use clap::Parser;

#[global_allocator]
static ALLOCATOR: alloc_counter::CountingAllocator = alloc_counter::CountingAllocator;

fn main() {
    // As `runnel-server` does, for the benchmarks that run a node in this process.
    runnel_server::malloc::tune();
    let cli = args::Cli::parse();
    let result = match cli.command {
        args::Bench::Log(args) => log_bench::run(args),
        args::Bench::Node(args) => node_bench::run(args),
        args::Bench::Peers(args) => peers_bench::run(args),
        args::Bench::Subscribe(args) => subscribe_bench::run(args),
        args::Bench::Streams(args) => streams_bench::run(args),
        args::Bench::Cluster(args) => cluster_bench::run(args),
        args::Bench::Replication(args) => replication_bench::run(args),
    };
    if let Err(message) = result {
        eprintln!("runnel-bench: {message}");
        std::process::exit(2);
    }
}
