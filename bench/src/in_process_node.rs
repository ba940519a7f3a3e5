//! A node running inside the benchmark's process (its executors on their own threads), with
//! the tokio runtime its clients run on: what `runnel-bench subscribe` measures against.
//! (`runnel-bench node` and `peers` run the server as a separate process instead, to measure
//! its CPU on its own.)

use std::time::{Duration, Instant};

use runnel_client::{Client, ClientOptions};
use runnel_server::config::NodeConfig;

/// A node running in this process for a benchmark, on a temporary data directory, with the
/// tokio runtime its clients run on.
pub(crate) struct BenchNode {
    _temp: tempfile::TempDir,
    node: runnel_server::node::RunningNode,
    url: String,
    options: ClientOptions,
    /// The clients' runtime (two worker threads: the other core, beside the node's).
    pub runtime: tokio::runtime::Runtime,
}

impl BenchNode {
    /// Starts a node of `server_cores` executors with `data` under `dir` (default ./target).
    pub fn start(
        dir: Option<std::path::PathBuf>,
        server_cores: usize,
        configure: impl FnOnce(&mut NodeConfig),
    ) -> Result<BenchNode, String> {
        let parent = dir.unwrap_or_else(|| "target".into());
        std::fs::create_dir_all(&parent)
            .map_err(|e| format!("create {}: {e}", parent.display()))?;
        let temp = tempfile::Builder::new()
            .prefix("runnel-bench-node-")
            .tempdir_in(parent)
            .map_err(|e| format!("temporary directory: {e}"))?;
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let base_port = probe.local_addr().map_err(|e| e.to_string())?.port();
        drop(probe);
        let mut config = NodeConfig {
            data_dir: temp.path().join("data"),
            base_port,
            cores: server_cores,
            pin_cores: false,
            ..NodeConfig::default()
        };
        configure(&mut config);
        config.validate().map_err(|e| e.to_string())?;
        let (identity, certificate) =
            runnel_server::identity::load_or_create(&config).map_err(|e| e.to_string())?;
        let node = runnel_server::node::start(config, identity).map_err(|e| e.to_string())?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(BenchNode {
            _temp: temp,
            node,
            url: format!("runnel://127.0.0.1:{base_port}"),
            options: ClientOptions {
                ca_cert_path: Some(certificate),
                ..ClientOptions::default()
            },
            runtime,
        })
    }

    /// A client of the node, once it listens (within 30 s).
    pub async fn connect(&self) -> Result<Client, String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match Client::connect(&self.url, self.options.clone()).await {
                Ok(client) => return Ok(client),
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => return Err(format!("connect: {e}")),
            }
        }
    }

    /// Stops the node and waits for it.
    pub fn stop(self) -> Result<(), String> {
        drop(self.runtime);
        self.node.stop_and_join().map_err(|e| e.to_string())
    }
}
