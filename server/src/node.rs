//! Starting and stopping a node: one glommio executor per core, joined by a channel mesh;
//! core 0 replays the metadata and leads it; every core serves its QUIC endpoint.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutorBuilder, Placement};
use runnel_net::{endpoint, server_config, EndpointOptions, Identity, TransportLimits};
use runnel_replicate::metadata::{Command, Node, NodeId};

use crate::config::NodeConfig;
use crate::core::{now_ms, Core, CoreMessage};
use crate::error::FatalError;
use crate::handler::serve;
use crate::metadata_log::MetadataLog;

/// Messages a core may have queued to another before senders wait.
const MESH_CHANNEL_CAPACITY: usize = 1024;
/// How often each core checks whether the node is stopping.
const SHUTDOWN_POLL_MS: u64 = 100;
/// How long a stopping core may spend persisting its subscriptions' progress, in milliseconds.
const LAST_COMMITS_MS: u64 = 3_000;

/// A running node: its executor threads.
pub struct RunningNode {
    shutdown: Arc<AtomicBool>,
    exits: mpsc::Receiver<(u32, Result<(), FatalError>)>,
    threads: Vec<glommio::ExecutorJoinHandle<()>>,
}

impl RunningNode {
    /// Asks every core to stop.
    pub fn stop(&self) {
        self.shutdown.store(true, Ordering::Relaxed);
    }

    /// Waits for one core to exit, up to `timeout`; `None` if none did.
    pub fn wait_exit(&self, timeout: Duration) -> Option<(u32, Result<(), FatalError>)> {
        self.exits.recv_timeout(timeout).ok()
    }

    /// Stops every core and waits for all of them; the first error, if any.
    pub fn stop_and_join(self) -> Result<(), FatalError> {
        self.stop();
        let mut first_error = None;
        for thread in self.threads {
            if thread.join().is_err() && first_error.is_none() {
                first_error = Some(FatalError::Executor("an executor thread panicked".into()));
            }
        }
        while let Ok((core, result)) = self.exits.try_recv() {
            if let Err(error) = result {
                tracing::error!(core, %error, "core stopped with an error");
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Starts the node's executors.
pub fn start(config: NodeConfig, identity: Identity) -> Result<RunningNode, FatalError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| FatalError::Io(format!("create {}: {e}", config.data_dir.display())))?;
    let server = server_config(identity, &TransportLimits::DEFAULT)
        .map_err(|e| FatalError::Tls(e.to_string()))?;
    let config = Arc::new(config);
    let shutdown = Arc::new(AtomicBool::new(false));
    let (exit_sender, exits) = mpsc::channel();
    let mesh = MeshBuilder::full(config.cores, MESH_CHANNEL_CAPACITY);
    let started = Instant::now();
    let io_memory = runnel_segment::runtime::io_memory_bytes(config.cores);
    let mut threads = Vec::with_capacity(config.cores);
    for index in 0..config.cores {
        let placement = if config.pin_cores {
            Placement::Fixed(index)
        } else {
            Placement::Unbound
        };
        let (config, shutdown, mesh, server, exit_sender) = (
            Arc::clone(&config),
            Arc::clone(&shutdown),
            mesh.clone(),
            server.clone(),
            exit_sender.clone(),
        );
        let thread = LocalExecutorBuilder::new(placement)
            .name(&format!("runnel-core-{index}"))
            .io_memory(io_memory)
            .spawn(move || async move {
                let result = run_core(
                    index as u32,
                    config,
                    mesh,
                    server,
                    Arc::clone(&shutdown),
                    started,
                )
                .await;
                if result.is_err() {
                    shutdown.store(true, Ordering::Relaxed);
                }
                let _ = exit_sender.send((index as u32, result));
            })
            .map_err(|e| FatalError::Executor(format!("start core {index}: {e}")))?;
        threads.push(thread);
    }
    Ok(RunningNode {
        shutdown,
        exits,
        threads,
    })
}

async fn run_core(
    index: u32,
    config: Arc<NodeConfig>,
    mesh: MeshBuilder<CoreMessage, glommio::channels::channel_mesh::Full>,
    server: quinn::ServerConfig,
    shutdown: Arc<AtomicBool>,
    started: Instant,
) -> Result<(), FatalError> {
    let (senders, mut receivers) = mesh
        .join()
        .await
        .map_err(|e| FatalError::Executor(format!("core {index} could not join the mesh: {e}")))?;
    let (metadata_log, replayed) = if index == 0 {
        let (log, replayed) = MetadataLog::open(&config.data_dir).await?;
        (Some(log), Some(replayed))
    } else {
        (None, None)
    };
    let core = Rc::new(Core::new(
        index,
        Arc::clone(&config),
        started,
        senders,
        metadata_log,
        shutdown,
    ));
    // Every core listens to every other core.
    for (_, receiver) in receivers.streams() {
        let core = Rc::clone(&core);
        glommio::spawn_local(async move {
            while let Some(message) = receiver.recv().await {
                if let Err(error) = core.on_message(message).await {
                    core.request_shutdown(&error.to_string());
                    return;
                }
            }
        })
        .detach();
    }
    if let Some(replayed) = replayed {
        // The snapshot, then the commands after it, into core 0's replica (opening its shards)
        // and into every other core's.
        let snapshot_index = match &replayed.snapshot {
            Some(bytes) => {
                let state = runnel_replicate::metadata::decode_snapshot(bytes)
                    .map_err(|e| FatalError::Metadata(format!("snapshot: {e}")))?;
                let snapshot_index = state.applied_index();
                core.install_snapshot(state).await?;
                core.distribute_snapshot(bytes, snapshot_index).await;
                Some(snapshot_index)
            }
            None => None,
        };
        for (command_index, command) in &replayed.commands {
            // Refusals in the log were refusals when written; they only consume their index.
            let _refusal = core.apply(*command_index, command).await?;
            core.distribute(*command_index, command).await;
        }
        if *core.metadata.borrow() != replayed.state {
            return Err(FatalError::Metadata(
                "replaying the metadata gave another state than loading it".into(),
            ));
        }
        register_node(&core).await?;
        for other in 1..config.cores as u32 {
            core.send(other, CoreMessage::Ready).await;
        }
        core.set_ready();
        tracing::info!(
            snapshot_index,
            commands = replayed.commands.len(),
            streams = core.metadata.borrow().streams().len(),
            "metadata replayed"
        );
    }
    if !core.wait_ready().await {
        core.close().await;
        return Ok(());
    }
    let address = SocketAddr::new(config.listen_address, config.base_port + index as u16);
    let endpoint = endpoint(address, Some(server), &EndpointOptions::default())
        .map_err(|e| FatalError::Io(format!("core {index} cannot listen on {address}: {e}")))?;
    tracing::info!(core = index, %address, "listening");
    glommio::spawn_local(serve(Rc::clone(&core), endpoint.clone())).detach();
    glommio::spawn_local(retention(Rc::clone(&core))).detach();
    glommio::spawn_local(crate::subscription::commit_progress(Rc::clone(&core))).detach();
    glommio::spawn_local(crate::subscription::expire_members(Rc::clone(&core))).detach();
    while !core.shutting_down() {
        glommio::timer::sleep(Duration::from_millis(SHUTDOWN_POLL_MS)).await;
    }
    endpoint.close(
        runnel_net::protocol::CloseCode::ShuttingDown.varint(),
        b"the node is stopping",
    );
    // Acked progress is persisted before the metadata log closes, so that a clean restart
    // redelivers nothing that was acked.
    let last_commits = crate::subscription::progress_commit_pass(&core);
    let deadline = Duration::from_millis(LAST_COMMITS_MS);
    let _ = crate::select::first_of(
        last_commits,
        glommio::timer::sleep(deadline),
        std::future::pending::<()>(),
    )
    .await;
    core.finish_proposals(deadline).await;
    core.close().await;
    tracing::info!(core = index, "stopped");
    Ok(())
}

/// Core 0: makes sure this node is registered with its current cores and address.
async fn register_node(core: &Core) -> Result<(), FatalError> {
    let config = &core.config;
    let node = Node {
        id: NodeId(config.node_id),
        cores: config.cores as u32,
        address: format!("{}:{}", config.listen_address, config.base_port),
    };
    if core.metadata.borrow().node(node.id) == Some(&node) {
        return Ok(());
    }
    core.propose(Command::RegisterNode { node })
        .await
        .map_err(|e| FatalError::Metadata(format!("register this node: {e}")))
}

/// Deletes expired segments of this core's shards now and then.
async fn retention(core: Rc<Core>) {
    let interval = Duration::from_millis(core.config.log.retention_check_interval_ms);
    while !core.shutting_down() {
        glommio::timer::sleep(interval.min(Duration::from_millis(1000))).await;
        let shards: Vec<_> = core
            .shards
            .borrow()
            .iter()
            .map(|(id, shard)| (*id, Rc::clone(shard)))
            .collect();
        for (id, shard) in shards {
            match shard.log.enforce_retention(now_ms()).await {
                // Deleting records is never silent: the shard, how many segments, and the
                // first offset still readable.
                Ok(0) => {}
                Ok(segments) => tracing::info!(
                    core = core.index,
                    shard = %id,
                    segments,
                    start_offset = %shard.log.start_offset(),
                    "retention deleted expired segments"
                ),
                Err(error) => tracing::warn!(core = core.index, %error, "retention failed"),
            }
        }
    }
}
