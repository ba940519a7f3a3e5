//! `runnel-bench`: Runnel's load generators and benchmarks.
//!
//! Every figure a benchmark prints comes from one run on this machine, and comparisons are
//! printed as ratios of two measurements taken in that same run, because the machines are
//! shared and noisy. Latencies are recorded in hdrhistogram; open-loop (fixed-rate) latencies
//! are measured from each request's *scheduled* time, which corrects coordinated omission.
//!
//! Usage: `cargo run --release -p runnel-bench -- log|node [OPTIONS]`
//! (`--help` lists the options).

mod alloc_counter;
mod args;
mod log_bench;
mod node_bench;

#[global_allocator]
static ALLOCATOR: alloc_counter::CountingAllocator = alloc_counter::CountingAllocator;

fn main() {
    let mut argv = std::env::args().skip(1);
    let command = argv.next().unwrap_or_else(|| "help".into());
    let rest: Vec<String> = argv.collect();
    let result = match command.as_str() {
        "log" => args::LogArgs::parse(&rest).and_then(log_bench::run),
        "node" => args::NodeArgs::parse(&rest).and_then(node_bench::run),
        "help" | "--help" | "-h" => {
            println!("{}", args::USAGE);
            Ok(())
        }
        other => Err(format!("unknown benchmark {other:?}\n\n{}", args::USAGE)),
    };
    if let Err(message) = result {
        eprintln!("runnel-bench: {message}");
        std::process::exit(2);
    }
}
