//! Starting and stopping a node: one executor per core (`runnel_segment::runtime`), joined by
//! a channel mesh; core 0 replays the metadata and leads it; every core serves its QUIC
//! endpoint. Each core waits for the node's stop signal, which wakes it from any thread.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use runnel_net::protocol::ErrorCode;
use runnel_net::{endpoint, server_config, EndpointOptions, Identity, TransportLimits};
use runnel_replicate::group::GroupStore;
use runnel_replicate::metadata::{Command, Node, NodeId};
use runnel_segment::runtime::channel::Mesh;
use runnel_segment::runtime::{first_of, sleep, spawn_detached, Executor, First, Pinning};

use crate::cluster::ClusterView;
use crate::config::NodeConfig;
use crate::core::{now_ms, Core, CoreMessage};
use crate::error::FatalError;
use crate::group::MetaGroup;
use crate::group_log::GroupLog;
use crate::handler::serve;
use crate::peer::Peers;
use crate::stop::NodeStop;

/// Messages a core may have queued to another before senders wait.
const MESH_CHANNEL_CAPACITY: usize = 1024;
/// How long a stopping core may spend persisting its subscriptions' progress, in milliseconds.
const LAST_COMMITS_MS: u64 = 3_000;
/// How long a clean stop may take before the process exits anyway (code 6): the last progress
/// commits and the wait for every core's last proposals (3 s each at most), then flushing and
/// closing every shard log, which takes longer with many shards. Only a stuck core reaches it.
pub const CLEAN_STOP_DEADLINE_MS: u64 = 60_000;
/// How long the cores may take to stop after a fatal error before the process exits anyway
/// with that error's code: no progress is committed then, the cores only close their logs.
pub const FATAL_STOP_DEADLINE_MS: u64 = 5_000;

/// A running node: its executor threads.
pub struct RunningNode {
    stop: Arc<NodeStop>,
    /// Each core sends its index here when its executor ends, however it ends.
    exits: mpsc::Receiver<u32>,
    exited: Vec<bool>,
    threads: Vec<Executor<()>>,
}

impl RunningNode {
    /// Asks every core to stop cleanly.
    pub fn stop(&self) {
        self.stop.request();
    }

    /// The node's stop signal, for another thread to stop it (a signal handler's thread).
    pub fn stop_signal(&self) -> Arc<NodeStop> {
        Arc::clone(&self.stop)
    }

    /// Blocks up to `timeout` until the node is stopping: asked to (a signal), a core recorded
    /// a fatal error, or a core's executor ended although nobody asked (recorded as fatal by
    /// the core's exit notice). True once the node is stopping for any reason; woken by the
    /// stop itself, without polling.
    pub fn wait_stopping(&self, timeout: Duration) -> bool {
        self.stop.wait_blocking(timeout)
    }

    fn mark_exited(&mut self, core: u32) {
        if let Some(exited) = self.exited.get_mut(core as usize) {
            *exited = true;
        }
    }

    /// Stops every core and waits for them, but no longer than the deadline (shorter after a
    /// fatal error); then the first fatal error, if any. Cores that did not stop in time are
    /// left running: the caller exits the process, which ends them.
    pub fn stop_and_join(mut self) -> Result<(), FatalError> {
        let deadline_ms = if self.stop.has_failed() {
            FATAL_STOP_DEADLINE_MS
        } else {
            CLEAN_STOP_DEADLINE_MS
        };
        self.stop.request();
        let deadline = Instant::now() + Duration::from_millis(deadline_ms);
        while self.exited.iter().any(|exited| !exited) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.exits.recv_timeout(left) {
                Ok(core) => self.mark_exited(core),
                Err(_) => break,
            }
        }
        let stuck: Vec<usize> = self
            .exited
            .iter()
            .enumerate()
            .filter(|&(_, &exited)| !exited)
            .map(|(core, _)| core)
            .collect();
        if stuck.is_empty() {
            for (core, thread) in self.threads.into_iter().enumerate() {
                if thread.join().is_err() {
                    self.stop.fail(
                        core as u32,
                        FatalError::Executor(format!("core {core} panicked")),
                    );
                }
            }
        } else {
            tracing::error!(
                cores = ?stuck,
                deadline_ms,
                "cores did not stop in time; exiting without them"
            );
            if !self.stop.has_failed() {
                self.stop.fail(
                    stuck.first().map_or(0, |&core| core as u32),
                    FatalError::Executor(format!(
                        "cores {stuck:?} did not stop within {deadline_ms} ms"
                    )),
                );
            }
        }
        match self.stop.take_fatal() {
            Some((_, error)) => Err(error),
            None => Ok(()),
        }
    }
}

/// Tells `main` that a core's executor ended, however it ended: a panic, or an end nobody
/// asked for, fails the node with that reason (which wakes `main` and every other core).
struct ExitNotice {
    core: u32,
    stop: Arc<NodeStop>,
    exits: mpsc::Sender<u32>,
}

impl Drop for ExitNotice {
    fn drop(&mut self) {
        let core = self.core;
        if std::thread::panicking() {
            self.stop
                .fail(core, FatalError::Executor(format!("core {core} panicked")));
        } else if !self.stop.is_stopping() {
            self.stop.fail(
                core,
                FatalError::Executor(format!("core {core} stopped unexpectedly")),
            );
        }
        let _ = self.exits.send(self.core);
    }
}

/// Starts the node's executors. The data directory must be locked by this process already.
pub fn start(config: NodeConfig, identity: Identity) -> Result<RunningNode, FatalError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| FatalError::Io(format!("create {}: {e}", config.data_dir.display())))?;
    // With a cluster CA, core 0 also speaks to the other nodes (mutual TLS).
    let (server, peer_client) = match &config.tls_ca_path {
        Some(ca_path) => {
            let (server, client) = crate::peer::cluster_tls(identity, ca_path)
                .map_err(|e| FatalError::Tls(e.to_string()))?;
            (server, Some(client))
        }
        None => (
            server_config(identity, &TransportLimits::DEFAULT)
                .map_err(|e| FatalError::Tls(e.to_string()))?,
            None,
        ),
    };
    let config = Arc::new(config);
    let stop = Arc::new(NodeStop::default());
    let cluster = Arc::new(ClusterView::default());
    let (exit_sender, exits) = mpsc::channel();
    let mesh = Mesh::full(config.cores, MESH_CHANNEL_CAPACITY);
    let started = Instant::now();
    let io_memory = runnel_segment::runtime::io_memory_bytes(config.cores);
    let mut threads = Vec::with_capacity(config.cores);
    for index in 0..config.cores {
        let pinning = if config.pin_cores {
            Pinning::Cpu(index)
        } else {
            Pinning::Unbound
        };
        let cluster = Arc::clone(&cluster);
        let peer_client = peer_client.clone();
        let (config, stop_for_core, mesh, server, exit_sender) = (
            Arc::clone(&config),
            Arc::clone(&stop),
            mesh.clone(),
            server.clone(),
            exit_sender.clone(),
        );
        let name = format!("runnel-core-{index}");
        let spawned = Executor::start(&name, pinning, io_memory, move || async move {
            crate::allocations::count_as_core(index);
            let core = index as u32;
            let _notice = ExitNotice {
                core,
                stop: Arc::clone(&stop_for_core),
                exits: exit_sender,
            };
            let result = run_core(
                core,
                config,
                mesh,
                server,
                Arc::clone(&stop_for_core),
                Shared {
                    started,
                    cluster,
                    peer_client,
                },
            )
            .await;
            if let Err(error) = result {
                stop_for_core.fail(core, error);
            }
        });
        match spawned {
            Ok(thread) => threads.push(thread),
            Err(e) => {
                // The cores already started wait in the mesh for this one: stop them.
                stop.fail(
                    index as u32,
                    FatalError::Executor(format!("start core {index}: {e}")),
                );
                break;
            }
        }
    }
    let mut exited = vec![false; config.cores];
    // Cores that never started have nothing to wait for.
    for slot in exited.iter_mut().skip(threads.len()) {
        *slot = true;
    }
    Ok(RunningNode {
        stop,
        exits,
        exited,
        threads,
    })
}

/// How long a core retries binding its port while another socket holds it.
const BIND_RETRY_MS: u64 = 3_000;

/// Core `index`'s QUIC endpoint on `address`. A port still held is retried for
/// [`BIND_RETRY_MS`]: a process that just exited may hold its sockets a moment longer (its
/// io_uring instance is torn down after the exit), and a restart must not fail on that.
async fn listen(
    index: u32,
    address: SocketAddr,
    server: quinn::ServerConfig,
) -> Result<quinn::Endpoint, FatalError> {
    let deadline = Instant::now() + Duration::from_millis(BIND_RETRY_MS);
    let mut warned = false;
    loop {
        match endpoint(address, Some(server.clone()), &EndpointOptions::default()) {
            Ok(endpoint) => return Ok(endpoint),
            Err(error)
                if error.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline =>
            {
                if !warned {
                    tracing::info!(core = index, %address, "the port is still held; retrying");
                    warned = true;
                }
                sleep(Duration::from_millis(50)).await;
            }
            Err(error) => {
                return Err(FatalError::Io(format!(
                    "core {index} cannot listen on {address}: {error}"
                )))
            }
        }
    }
}

/// What every core gets from the node besides its configuration.
struct Shared {
    /// When the node started.
    started: Instant,
    /// The node's view of the cluster.
    cluster: Arc<ClusterView>,
    /// With a cluster CA: how core 0 dials the other nodes.
    peer_client: Option<quinn::ClientConfig>,
}

async fn run_core(
    index: u32,
    config: Arc<NodeConfig>,
    mesh: Mesh<CoreMessage>,
    server: quinn::ServerConfig,
    stop: Arc<NodeStop>,
    shared: Shared,
) -> Result<(), FatalError> {
    let Shared {
        started,
        cluster,
        peer_client,
    } = shared;
    let (senders, receivers) = mesh
        .join()
        .await
        .map_err(|e| FatalError::Executor(format!("core {index} could not join the mesh: {e}")))?;
    let core = Rc::new(Core::new(
        index,
        Arc::clone(&config),
        started,
        senders,
        stop,
        cluster,
    ));
    register_services(&core);
    // Core 0's metadata proposer: one task, until the core closes.
    spawn_detached(Rc::clone(&core).run_proposer());
    // Every core listens to every other core.
    for receiver in receivers {
        let core = Rc::clone(&core);
        spawn_detached(async move {
            while let Some(message) = receiver.recv().await {
                if let Err(error) = core.on_message(message).await {
                    core.fail(error);
                    return;
                }
            }
        });
    }
    let address = SocketAddr::new(config.listen_address, config.base_port + index as u16);
    let listen = || listen(index, address, server.clone());
    // Core 0 listens at once: its peers reach the metadata group through it before the node
    // serves clients.
    let early_endpoint = if index == 0 {
        let endpoint = listen().await?;
        if !start_group(&core, &endpoint, peer_client).await? {
            core.close().await;
            return Ok(());
        }
        Some(endpoint)
    } else {
        None
    };
    if !core.wait_ready().await {
        core.close().await;
        return Ok(());
    }
    let endpoint = match early_endpoint {
        Some(endpoint) => endpoint,
        None => listen().await?,
    };
    tracing::info!(core = index, %address, "listening");
    spawn_detached(serve(Rc::clone(&core), endpoint.clone()));
    spawn_detached(retention(Rc::clone(&core)));
    spawn_detached(crate::replicated::run(Rc::clone(&core)));
    spawn_detached(Rc::clone(&core).close_idle_logs_loop());
    {
        let core = Rc::clone(&core);
        spawn_detached(async move { core.verify_logs().await });
    }
    spawn_detached(crate::subscription::commit_progress(Rc::clone(&core)));
    spawn_detached(crate::subscription::expire_members(Rc::clone(&core)));
    if index == 0 {
        spawn_detached(crate::sql::run(Rc::clone(&core)));
    }
    core.until_stopping().await;
    if let Some(peers) = core.peers.borrow_mut().take() {
        peers.close();
    }
    endpoint.close(
        runnel_net::protocol::CloseCode::ShuttingDown.varint(),
        b"the node is stopping",
    );
    // Acked progress is persisted before the metadata log closes, so that a clean restart
    // redelivers nothing that was acked. Not after a fatal error: the node stops as promptly
    // as it can then, and redelivers as after a crash.
    if !core.failed() {
        let last_commits = crate::subscription::progress_commit_pass(&core);
        let deadline = Duration::from_millis(LAST_COMMITS_MS);
        let _ = first_of(last_commits, sleep(deadline), std::future::pending::<()>()).await;
        core.finish_proposals(deadline).await;
    }
    core.close().await;
    tracing::info!(core = index, "stopped");
    Ok(())
}

/// Registers every feature's services of the core mesh on `core` (`crate::mesh`): each
/// feature module registers its own handlers; a new feature adds its line here.
fn register_services(core: &Core) {
    crate::mesh::remote::register(core);
    crate::proposal::register(core);
    crate::subscription::services::register(core);
    crate::convert::register(core);
    crate::sql::services::register(core);
    crate::replicated::register(core);
}

/// Core 0: opens this node's member of the metadata group (founding a group of one, joining,
/// or taking over the metadata log of an older version), loads its state into every core,
/// replays what it had committed, registers this node, and tells every core to serve. False if
/// the node stops first.
async fn start_group(
    core: &Rc<Core>,
    endpoint: &quinn::Endpoint,
    peer_client: Option<quinn::ClientConfig>,
) -> Result<bool, FatalError> {
    let config = Arc::clone(&core.config);
    let (disk, store) = match GroupLog::open(&config.data_dir).await? {
        Some(opened) => opened,
        None => match crate::group_log::migrate(&config.data_dir, config.node_id).await? {
            Some(migrated) => {
                tracing::info!(
                    "the metadata log of an earlier version became the metadata group's"
                );
                migrated
            }
            None => {
                let store = if config.cluster.founds() {
                    tracing::info!("founding a new cluster (a metadata group of this node)");
                    GroupStore::founding(&[config.node_id])
                } else {
                    GroupStore::joining()
                };
                let disk = GroupLog::create(&config.data_dir, &store).await?;
                (disk, store)
            }
        },
    };
    let peers = peer_client.map(|client| Peers::new(config.node_id, endpoint.clone(), client));
    // Peers' connections reach core 0's endpoint from now on (`handler::serve` hands them over).
    core.peers.borrow_mut().clone_from(&peers);
    if let (Some(peers), Some(path)) = (&peers, &config.fault_injection_file) {
        spawn_detached(crate::peer::watch_fault_file(
            Rc::clone(peers),
            path.clone(),
        ));
    }
    let group = Rc::new(MetaGroup::new(core, store, disk, peers)?);
    core.set_group(Rc::clone(&group));
    let (snapshot, snapshot_index) = group.start_state();
    let state = runnel_replicate::metadata::decode_snapshot(&snapshot)
        .map_err(|e| FatalError::Corruption(format!("metadata snapshot: {e}")))?;
    core.install_snapshot(state);
    core.distribute_snapshot(&snapshot, snapshot_index).await;
    if core.shutting_down() {
        // Another core failed to install it: its error is the node's reason.
        return Ok(false);
    }
    let members = group.member_ids();
    if !members.is_empty() && !members.contains(&config.node_id) {
        // The group's log names its members: a data directory of another node.
        return Err(match members.as_slice() {
            [owner] => crate::data_dir::mismatch(&config.data_dir, *owner, config.node_id),
            _ => FatalError::Identity(format!(
                "the metadata group in {} has members {members:?} but not node {}",
                config.data_dir.display(),
                config.node_id
            )),
        });
    }
    let commit = group.replay_target();
    spawn_detached(Rc::clone(&group).run(Rc::clone(core)));
    if group.is_member() {
        // Replays what this member had committed (raft-rs hands it back after the snapshot).
        loop {
            let applied = group.wait_applied(core, commit, Duration::from_secs(1));
            match first_of(applied, core.until_stopping(), std::future::pending::<()>()).await {
                First::A(true) => break,
                First::A(false) => {}
                First::B(()) | First::C(()) => return Ok(false),
            }
        }
        claim_data_dir(core)?;
        register_node(core).await?;
    } else {
        tracing::info!(
            seeds = ?config.cluster.seeds,
            "not in a cluster yet: asking the seeds to be let in (or found one with \
             `runnel cluster init`)"
        );
    }
    for other in 1..config.cores as u32 {
        core.send(other, CoreMessage::Ready).await;
    }
    core.set_ready();
    group.refresh_view(core);
    tracing::info!(
        snapshot_index,
        applied_index = core.metadata.borrow().applied_index(),
        streams = core.metadata.borrow().streams().len(),
        leader = ?group.leader(),
        "metadata replayed"
    );
    Ok(true)
}

/// Core 0, after the replay: refuses data whose metadata names other nodes but not this one
/// (data written before the identity file existed), then records this node's identity in the
/// data directory if it is not there yet. A few blocking file operations, once, before any
/// core serves.
fn claim_data_dir(core: &Core) -> Result<(), FatalError> {
    let config = &core.config;
    let nodes: Vec<u64> = core.metadata.borrow().nodes().map(|n| n.id.0).collect();
    if !nodes.is_empty() && !nodes.contains(&config.node_id) {
        return Err(match nodes.as_slice() {
            [owner] => crate::data_dir::mismatch(&config.data_dir, *owner, config.node_id),
            _ => FatalError::Identity(format!(
                "the metadata in {} lists nodes {nodes:?} but not node {}",
                config.data_dir.display(),
                config.node_id
            )),
        });
    }
    crate::data_dir::write_node_id(&config.data_dir, config.node_id)
}

/// Core 0: makes sure this node is registered with its current cores and address. Registering
/// re-places the shards of cores this node no longer has (`core % cores`), so a restart with
/// fewer cores serves every shard; it is also proposed when the node is unchanged but a shard
/// still sits on a missing core (data from a build that did not re-place).
async fn register_node(core: &Rc<Core>) -> Result<(), FatalError> {
    let config = &core.config;
    let node = Node {
        id: NodeId(config.node_id),
        cores: config.cores as u32,
        address: config.advertised(),
    };
    let (unchanged, stranded) = {
        let metadata = core.metadata.borrow();
        let stranded = metadata
            .shards()
            .filter(|s| s.placement.node == node.id && s.placement.core >= node.cores)
            .count();
        (metadata.node(node.id) == Some(&node), stranded)
    };
    if unchanged && stranded == 0 {
        return Ok(());
    }
    if stranded > 0 {
        tracing::info!(
            shards = stranded,
            cores = node.cores,
            "re-placing the shards of cores this node no longer has"
        );
    }
    // In a cluster the leader may be away for a while (an election, a quorum still starting):
    // the node waits for it rather than stopping.
    loop {
        match core
            .propose(Command::RegisterNode { node: node.clone() })
            .await
        {
            Ok(()) => return Ok(()),
            Err(error)
                if matches!(error.code, ErrorCode::Unavailable | ErrorCode::NotLeader)
                    && !core.shutting_down() =>
            {
                tracing::warn!(%error.message, "registering this node: waiting for the metadata leader");
                sleep(Duration::from_millis(500)).await;
            }
            Err(error) => return Err(FatalError::Metadata(format!("register this node: {error}"))),
        }
    }
}

/// Deletes expired segments of this core's shards every `log.retention_check_interval_ms`
/// until the node stops: of the open logs, and of the closed ones whose close recorded that
/// retention would now delete something (those are opened for it).
async fn retention(core: Rc<Core>) {
    let interval = Duration::from_millis(core.config.log.retention_check_interval_ms);
    while core.sleep_unless_stopping(interval).await {
        let now = now_ms();
        let shards: Vec<_> = core
            .shards
            .borrow()
            .iter()
            .filter(|(_, shard)| shard.retention_due(now))
            .map(|(id, shard)| (*id, Rc::clone(shard)))
            .collect();
        for (id, shard) in shards {
            // An open log is not "used" by retention: it still closes when idle.
            let opened = match shard.open_log() {
                Some(log) => Ok(log),
                None => core.shard_log(&shard).await,
            };
            let log = match opened {
                Ok(log) => log,
                Err(error) => {
                    tracing::warn!(core = core.index, shard = %id, %error.message, "retention cannot open a shard log");
                    continue;
                }
            };
            match log.enforce_retention(now_ms()).await {
                // Deleting records is never silent: the shard, how many segments, and the
                // first offset still readable.
                Ok(0) => {}
                Ok(segments) => tracing::info!(
                    core = core.index,
                    shard = %id,
                    segments,
                    start_offset = %log.start_offset(),
                    "retention deleted expired segments"
                ),
                Err(error) => tracing::warn!(core = core.index, %error, "retention failed"),
            }
        }
    }
}
