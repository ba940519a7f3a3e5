//! `runnel-server`: runs a Runnel node. With no configuration at all it starts one node on
//! loopback with data under `./runnel-data` and a self-signed certificate.

use std::io::IsTerminal;
use std::time::Duration;

use clap::Parser;
use runnel_server::config::{Flags, NodeConfig};
use runnel_server::error::FatalError;
use runnel_server::{data_dir, identity, node};
use signal_hook::consts::{SIGINT, SIGTERM};
use tracing_subscriber::EnvFilter;

/// Counts heap allocations per core for `GetNodeStatus` (see the module's documentation).
#[global_allocator]
static ALLOCATOR: runnel_server::allocations::CountingAllocator =
    runnel_server::allocations::CountingAllocator;

fn main() {
    // Before any thread allocates: see the module's documentation.
    let malloc_tuned = runnel_server::malloc::tune();
    let filter = EnvFilter::try_from_env("RUNNEL_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal: a log file, a pipe or journald gets plain text.
    let colours = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(colours)
        .init();
    if !malloc_tuned {
        tracing::debug!("malloc thresholds not set (not glibc)");
    }
    if let Err(error) = run() {
        tracing::error!(%error, "runnel-server stopped");
        eprintln!("runnel-server: {error}");
        std::process::exit(error.exit_code());
    }
}

fn run() -> Result<(), FatalError> {
    let flags = Flags::parse();
    let available = std::thread::available_parallelism().map_or(1, usize::from);
    let config = NodeConfig::load(&flags, available)?;
    // Before anything else touches the data directory: one process at a time, one node. The
    // lock is held until the process exits (the kernel releases it then, however it exits),
    // also while cores that did not stop in time are still running.
    std::mem::forget(data_dir::lock(&config.data_dir)?);
    data_dir::check_node_id(&config.data_dir, config.node_id)?;
    data_dir::check_not_removed(&config.data_dir, config.node_id)?;
    let (identity, certificate) = identity::load_or_create(&config)?;
    tracing::info!(
        node = config.node_id,
        cores = config.cores,
        data_dir = %config.data_dir.display(),
        address = %config.listen_address,
        base_port = config.base_port,
        certificate = %certificate.display(),
        "starting runnel-server {}",
        env!("CARGO_PKG_VERSION")
    );
    runnel_server::open_files::raise_limit();
    let running = node::start(config, identity)?;
    let signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]);
    let mut signals =
        signals.map_err(|e| FatalError::Io(format!("cannot install signal handlers: {e}")))?;
    // A signal stops the node from its own thread: the stop wakes every core, and this thread.
    let stop = running.stop_signal();
    std::thread::Builder::new()
        .name("runnel-signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                tracing::info!(signal, "stopping");
                stop.request();
            }
        })
        .map_err(|e| FatalError::Io(format!("cannot start the signal thread: {e}")))?;
    // A core never stops on its own unless something is wrong; the first fatal error of any
    // core is the reason the process exits with.
    running.wait_stopping(Duration::MAX);
    running.stop_and_join()
}
