//! `runnel-server`: runs a Runnel node. With no configuration at all it starts one node on
//! loopback with data under `./runnel-data` and a self-signed certificate.

use std::time::Duration;

use clap::Parser;
use runnel_server::config::{Flags, NodeConfig};
use runnel_server::error::FatalError;
use runnel_server::{identity, node};
use signal_hook::consts::{SIGINT, SIGTERM};
use tracing_subscriber::EnvFilter;

fn main() {
    let filter = EnvFilter::try_from_env("RUNNEL_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
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
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| FatalError::Io(format!("cannot install signal handlers: {e}")))?;
    loop {
        if let Some(signal) = signals.pending().next() {
            tracing::info!(signal, "stopping");
            break;
        }
        if let Some((core, result)) = running.wait_exit(Duration::from_millis(100)) {
            // A core never stops on its own unless something is wrong.
            if let Err(error) = &result {
                tracing::error!(core, %error, "a core failed; stopping the node");
            }
            running.stop();
            let outcome = running.stop_and_join();
            return match (result, outcome) {
                (Err(error), _) | (Ok(()), Err(error)) => Err(error),
                (Ok(()), Ok(())) => Err(FatalError::Executor(format!(
                    "core {core} stopped unexpectedly"
                ))),
            };
        }
    }
    running.stop_and_join()
}
