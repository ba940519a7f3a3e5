//! One core of the node: its replica of the metadata state machine, the shard logs it owns,
//! and its side of the channel mesh.
//!
//! Core 0 is the metadata leader of the node: its proposer (`crate::proposer`) group-commits
//! metadata commands, checking them against a staged copy of the state, recording them
//! durably in the metadata log, applying them here, handing them to every other core (which
//! apply them to their own replica, open or delete the logs of their shards, and acknowledge),
//! and only then answering. This module is that proposer's [`Host`]: the committed state, the
//! logs of new shards, and the other cores. Other cores forward metadata writes to core 0 over
//! the mesh and answer metadata reads from their own replica.

use std::cell::{Cell, Ref, RefCell};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use runnel_core::ShardId;
use runnel_net::protocol::{ErrorCode, ErrorResponse};
use runnel_replicate::metadata::Durability;
use runnel_replicate::metadata::{
    decode_command, Applied, Command, MetadataError, MetadataState, NodeId, Shard,
};
use runnel_segment::log::ReadBound;
use runnel_segment::runtime::channel::{MeshSenders, SendError};
use runnel_segment::runtime::{first_of, sleep, spawn, Event, First};
use runnel_segment::{DmaStorage, LogConfig, ShardLog};

use crate::cluster::ClusterView;
use crate::config::NodeConfig;
use crate::error::FatalError;
use crate::group::{MetaGroup, RecordError};
use crate::local::LocalShard;
use crate::mesh::{Envelope, Mesh, MeshError, MeshHost, RemoteService, Service};
use crate::proposer::{Host, Proposer};
use crate::stop::NodeStop;
use crate::subscription::Subscriptions;

/// Messages between cores: core 0's ordered distribution of the metadata and the cores'
/// lifecycle, and the calls of the feature services (`Mesh`, [`crate::mesh`]). The former are
/// one-way messages whose order matters (commands apply in index order), which is why they are
/// not services.
#[derive(Debug)]
pub enum CoreMessage {
    /// Core 0 → all: apply this command (encoded) at this index.
    Apply {
        /// The command's log index.
        index: u64,
        /// The encoded command.
        command: Vec<u8>,
    },
    /// Core 0 → all: replace your metadata replica with this snapshot (encoded), at start.
    Snapshot {
        /// The encoded snapshot.
        snapshot: Vec<u8>,
    },
    /// Core 0 → all: the replay at start is complete; serve clients.
    Ready,
    /// A core → core 0: every command up to `index` is applied here.
    Applied {
        /// The acknowledging core.
        core: u32,
        /// Its applied index.
        index: u64,
    },
    /// A call of a mesh service, or its reply (`crate::mesh`).
    Mesh(Envelope),
    /// A core → core 0, while the node stops: this core's last proposals are done; core 0
    /// may close the metadata log once every core said so.
    Stopped {
        /// The core.
        core: u32,
    },
}

/// New shard logs core 0 creates at once (each holds a descriptor while it is created).
pub const CREATES_IN_FLIGHT_MAX: usize = 256;

/// What readers and consumers of a stream with `durability` may see: durable batches for
/// `fsync`, written ones for `memory` (acknowledged either way).
pub fn visible(durability: Durability) -> ReadBound {
    match durability {
        Durability::Fsync => ReadBound::Durable,
        Durability::Memory => ReadBound::Written,
    }
}

/// The state of one core.
pub struct Core {
    /// This core's index.
    pub index: u32,
    /// The node's configuration.
    pub config: Arc<NodeConfig>,
    /// When the node started.
    pub started: Instant,
    /// This core's replica of the metadata.
    pub metadata: RefCell<MetadataState>,
    /// Shard logs this core owns.
    pub shards: RefCell<HashMap<ShardId, Rc<LocalShard>>>,
    /// The shards whose logs are open now (see [`crate::local`]).
    pub open_logs: RefCell<HashSet<ShardId>>,
    /// [`Core::open_logs_max`], once computed.
    pub(crate) open_logs_max: Cell<Option<usize>>,
    /// This core's side of every subscription: dispatch of its shards, groups it coordinates.
    pub subscriptions: Subscriptions,
    senders: MeshSenders<CoreMessage>,
    /// Core 0: the metadata proposer (it runs while this node leads the metadata group).
    proposer: Option<Proposer>,
    /// Core 0: this node's member of the metadata group, once started.
    group: RefCell<Option<Rc<MetaGroup>>>,
    acked: RefCell<Vec<u64>>,
    acked_changed: Event,
    /// This core's side of the core mesh: the feature services' handlers, the calls awaited.
    pub mesh: Mesh<Core>,
    /// Core 0: which cores finished their last proposals while stopping.
    stopped: RefCell<Vec<bool>>,
    stopped_changed: Event,
    /// Set when this core closes: waits for answers end then.
    pub(crate) closing: Cell<bool>,
    ready: Cell<bool>,
    ready_changed: Event,
    stop: Arc<NodeStop>,
    /// The cluster as this node sees it (core 0 keeps it current).
    pub cluster: Arc<ClusterView>,
    /// Core 0 of a node with a cluster CA: the node-to-node transport, to which the endpoint
    /// hands connections that negotiated `runnel-peer/1`. None elsewhere.
    pub peers: RefCell<Option<Rc<crate::peer::Peers>>>,
    /// Core 0: the node's SQL service, once its checkpoint is loaded (`crate::sql`).
    pub sql: RefCell<Option<Rc<crate::sql::SqlNode>>>,
    /// Core 0: why SQL is unavailable (a checkpoint that cannot be restored).
    pub sql_unavailable: RefCell<Option<String>>,
    /// The replicated shards this core hosts a replica of (`crate::replicated`).
    pub replicated: crate::replicated::ReplicatedShards,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The protocol error for a refused metadata command.
pub fn metadata_error(error: &MetadataError) -> ErrorResponse {
    let code = match error {
        MetadataError::StreamExists { .. } => ErrorCode::StreamExists,
        MetadataError::StreamNotFound { .. } => ErrorCode::UnknownStream,
        MetadataError::SubscriptionExists { .. } => ErrorCode::SubscriptionExists,
        MetadataError::SubscriptionNotFound { .. }
        | MetadataError::SubscriptionIdNotFound { .. } => ErrorCode::UnknownSubscription,
        MetadataError::ShardNotFound { .. } => ErrorCode::UnknownShard,
        MetadataError::ShardSealed { .. } => ErrorCode::ShardSealed,
        MetadataError::StreamHasSubscriptions { .. } => ErrorCode::StreamHasSubscriptions,
        MetadataError::NodeOwnsShards { .. } => ErrorCode::NodeOwnsShards,
        MetadataError::NodeNotFound { .. } => ErrorCode::UnknownNode,
        MetadataError::LastNode { .. } => ErrorCode::WouldLoseQuorum,
        MetadataError::NoAvailableNodes { .. } => ErrorCode::Unavailable,
        MetadataError::InvalidConfig { .. }
        | MetadataError::NotEnoughNodes { .. }
        | MetadataError::LimitExceeded { .. }
        | MetadataError::NotAdjacent { .. }
        | MetadataError::ShardTooSmall { .. }
        | MetadataError::InvalidSubscriptionConfig { .. }
        | MetadataError::ShardNotInSubscription { .. }
        | MetadataError::StaleEpoch { .. }
        | MetadataError::NotAReplica { .. } => ErrorCode::InvalidRequest,
        _ => ErrorCode::Internal,
    };
    ErrorResponse::new(code, error.to_string())
}

impl Core {
    /// A core; core 0 also gets the metadata proposer.
    pub fn new(
        index: u32,
        config: Arc<NodeConfig>,
        started: Instant,
        senders: MeshSenders<CoreMessage>,
        stop: Arc<NodeStop>,
        cluster: Arc<ClusterView>,
    ) -> Core {
        let cores = config.cores;
        let proposer = (index == 0).then(Proposer::new);
        // Member ids of the groups this core coordinates count up from the start time, so that
        // ids from before a restart are not handed out again.
        let started_ms = now_ms().max(0) as u64;
        Core {
            index,
            config,
            started,
            metadata: RefCell::new(MetadataState::new()),
            shards: RefCell::new(HashMap::new()),
            open_logs: RefCell::new(HashSet::new()),
            open_logs_max: Cell::new(None),
            subscriptions: Subscriptions::new(started_ms),
            senders,
            proposer,
            group: RefCell::new(None),
            acked: RefCell::new(vec![0; cores]),
            acked_changed: Event::default(),
            mesh: Mesh::new(index, cores),
            stopped: RefCell::new(vec![false; cores]),
            stopped_changed: Event::default(),
            closing: Cell::new(false),
            ready: Cell::new(false),
            ready_changed: Event::default(),
            stop,
            cluster,
            peers: RefCell::new(None),
            sql: RefCell::new(None),
            sql_unavailable: RefCell::new(None),
            replicated: crate::replicated::ReplicatedShards::default(),
        }
    }

    /// This node's id in the metadata.
    pub fn node_id(&self) -> NodeId {
        NodeId(self.config.node_id)
    }

    /// Whether the node is stopping.
    pub fn shutting_down(&self) -> bool {
        self.stop.is_stopping()
    }

    /// Stops the whole node because of a fatal fault on this core; the process exits with
    /// this error's code unless another core failed first.
    pub fn fail(&self, error: FatalError) {
        self.stop.fail(self.index, error);
    }

    /// Whether some core recorded a fatal error (the node is stopping because of it).
    pub fn failed(&self) -> bool {
        self.stop.has_failed()
    }

    /// Returns once the node is stopping, woken by whichever thread stopped it.
    pub async fn until_stopping(&self) {
        self.stop.until_stopping().await;
    }

    /// Sleeps for `duration` (a periodic duty's interval); false if the node started stopping
    /// first, or had already: the duty ends then.
    pub async fn sleep_unless_stopping(&self, duration: std::time::Duration) -> bool {
        let slept = first_of(
            sleep(duration),
            self.until_stopping(),
            std::future::pending::<()>(),
        );
        matches!(slept.await, First::A(())) && !self.shutting_down()
    }

    /// Waits until core 0 finished replaying the metadata; false if the node stops first.
    pub async fn wait_ready(&self) -> bool {
        loop {
            if self.ready.get() {
                return true;
            }
            if self.shutting_down() {
                return false;
            }
            let changed = self.ready_changed.listen();
            let _ = first_of(changed, self.until_stopping(), std::future::pending::<()>()).await;
        }
    }

    /// Whether this core serves (core 0 finished replaying the metadata).
    pub fn is_ready(&self) -> bool {
        self.ready.get()
    }

    /// Core 0: this node's member of the metadata group, once started.
    pub fn group(&self) -> Option<Rc<MetaGroup>> {
        self.group.borrow().clone()
    }

    /// Core 0: sets the member of the metadata group.
    pub fn set_group(&self, group: Rc<MetaGroup>) {
        *self.group.borrow_mut() = Some(group);
    }

    /// Marks this core ready (core 0 after its replay).
    pub fn set_ready(&self) {
        self.ready.set(true);
        self.ready_changed.notify();
    }

    pub(crate) fn shard_dir(&self, shard: ShardId) -> PathBuf {
        self.config
            .data_dir
            .join("shards")
            .join(shard.0.to_string())
    }

    pub(crate) fn log_config(&self, retention_ms: u64) -> LogConfig {
        LogConfig {
            retention_age_ms: Some(retention_ms),
            ..self.config.log_config()
        }
    }

    fn is_local(&self, shard: &Shard) -> bool {
        shard.placement.node == self.node_id() && shard.placement.core == self.index
    }

    /// Registers this core's shards among `shards`; their logs open when first used. Once the
    /// node serves, a command names only shards whose logs core 0 just created, empty; before
    /// (the replay at start) their logs may hold anything.
    fn open_local(&self, shards: &[Shard], retention_ms: u64) {
        let live = self.ready.get();
        let mut local = self.shards.borrow_mut();
        for shard in shards.iter().filter(|s| self.is_local(s)) {
            local.entry(shard.id).or_insert_with(|| {
                Rc::new(if live {
                    LocalShard::new_empty(shard.id, retention_ms)
                } else {
                    LocalShard::new(shard.id, retention_ms)
                })
            });
        }
    }

    async fn delete_local(&self, shards: &[Shard]) -> Result<(), FatalError> {
        for shard in shards.iter().filter(|s| self.is_local(s)) {
            let removed = self.shards.borrow_mut().remove(&shard.id);
            if let Some(local) = removed {
                self.forget_shard(&local).await;
            }
            let dir = self.shard_dir(shard.id);
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| {
                    FatalError::Io(format!(
                        "remove shard {} at {}: {e}",
                        shard.id,
                        dir.display()
                    ))
                })?;
            }
        }
        Ok(())
    }

    /// Applies a command to this core's replica and acts on it (opens or deletes local logs).
    pub async fn apply(
        &self,
        index: u64,
        command: &Command,
    ) -> Result<Result<Applied, MetadataError>, FatalError> {
        let result = self.metadata.borrow_mut().apply(index, command);
        self.replicated.metadata_changed();
        match &result {
            Ok(Applied::StreamCreated { stream, shards }) => {
                self.open_local(shards, stream.config.retention_ms)
            }
            Ok(Applied::StreamDeleted {
                shards,
                subscriptions,
                ..
            }) => {
                for subscription in subscriptions {
                    self.subscriptions.forget(subscription.id);
                }
                self.delete_local(shards).await?
            }
            Ok(Applied::ShardSplit { parent, children }) => {
                let retention = self.retention_of(parent);
                self.open_local(children, retention)
            }
            Ok(Applied::ShardsMerged { parents, child }) => {
                let retention = parents.first().map_or(u64::MAX, |p| self.retention_of(p));
                self.open_local(std::slice::from_ref(child), retention);
            }
            Ok(Applied::NodeRegistered { replaced, .. }) => {
                // Shards of cores this node no longer has, now on this core: open their logs
                // where they are.
                for shard in replaced {
                    let retention = self.retention_of(shard);
                    self.open_local(std::slice::from_ref(shard), retention);
                }
            }
            Ok(Applied::SubscriptionDeleted { subscription }) => {
                self.subscriptions.forget(subscription.id)
            }
            Ok(_) => {}
            Err(error) if !error.is_rejection() => {
                return Err(FatalError::Metadata(format!(
                    "command {index} cannot be applied: {error}"
                )));
            }
            Err(_) => {}
        }
        Ok(result)
    }

    /// Replaces this core's replica with a snapshot and registers its shards; their logs open
    /// when first used (and [`Core::verify_logs`] checks them all once in the background).
    pub fn install_snapshot(&self, state: MetadataState) {
        {
            let mut local = self.shards.borrow_mut();
            for shard in state.shards().filter(|s| self.is_local(s)) {
                let retention = state
                    .stream_by_id(shard.stream)
                    .map_or(u64::MAX, |stream| stream.config.retention_ms);
                local
                    .entry(shard.id)
                    .or_insert_with(|| Rc::new(LocalShard::new(shard.id, retention)));
            }
        }
        *self.metadata.borrow_mut() = state;
    }

    /// Core 0: hands a snapshot to every other core and waits until all installed it.
    pub async fn distribute_snapshot(&self, snapshot: &[u8], index: u64) {
        for core in 1..self.config.cores as u32 {
            self.send(
                core,
                CoreMessage::Snapshot {
                    snapshot: snapshot.to_vec(),
                },
            )
            .await;
        }
        self.wait_acked(index).await;
    }

    async fn wait_acked(&self, index: u64) {
        loop {
            let changed = self.acked_changed.listen();
            let all = self
                .acked
                .borrow()
                .iter()
                .skip(1)
                .all(|&acked| acked >= index);
            if all || self.shutting_down() {
                return;
            }
            // Another core that failed never acknowledges: its failure stops the node, which
            // ends this wait.
            let _ = first_of(changed, self.until_stopping(), std::future::pending::<()>()).await;
        }
    }

    fn retention_of(&self, shard: &Shard) -> u64 {
        self.metadata
            .borrow()
            .stream_by_id(shard.stream)
            .map_or(u64::MAX, |s| s.config.retention_ms)
    }

    /// Sends a message to another core. A core that stopped draining its channel (it failed)
    /// must not block the sender forever: once the channel is full, the send waits only until
    /// the node stops, and is then dropped.
    pub async fn send(&self, core: u32, message: CoreMessage) {
        let result = match self.senders.try_send_to(core as usize, message) {
            Err(SendError::Full(message)) => {
                match first_of(
                    self.senders.send_to(core as usize, message),
                    self.until_stopping(),
                    std::future::pending::<()>(),
                )
                .await
                {
                    First::A(result) => result,
                    First::B(()) | First::C(()) => return,
                }
            }
            other => other,
        };
        if result.is_err() && !self.shutting_down() {
            self.fail(FatalError::Executor(format!(
                "core {}: the channel to core {core} is closed",
                self.index
            )));
        }
    }

    /// Core 0: proposes a command through this node's proposer (this node must lead the
    /// metadata group); its index once committed and applied here. A create gets the nodes
    /// this leader sees unavailable as nodes to avoid (`crate::cluster`).
    pub async fn propose_here(&self, command: Command) -> Result<u64, ErrorResponse> {
        match &self.proposer {
            Some(proposer) => proposer.propose(self.placement_hints(command)).await,
            None => Err(ErrorResponse::new(
                ErrorCode::Internal,
                "core 0 has no metadata proposer",
            )),
        }
    }

    /// Proposes a metadata command and returns once it is committed and applied on this node
    /// (or refused): on core 0, through the proposer when this node leads the metadata group
    /// and through the leader otherwise; elsewhere through core 0 (`crate::proposal`).
    pub async fn propose(self: &Rc<Self>, command: Command) -> Result<(), ErrorResponse> {
        if self.index == 0 {
            let Some(group) = self.group() else {
                return Err(ErrorResponse::new(
                    ErrorCode::Unavailable,
                    "the node is starting",
                ));
            };
            if group.is_leader() {
                return self.propose_here(command).await.map(|_| ());
            }
            return group.forward(self, &command).await.map(|_| ());
        }
        // Proposals are still answered while the node stops (its last progress commits), until
        // this core closes.
        match self.call::<crate::proposal::Propose>(0, command).await {
            Ok(result) => result,
            Err(MeshError::Stopping) => Err(ErrorResponse::new(
                ErrorCode::Unavailable,
                "the node is stopping",
            )),
            Err(error) => Err(ErrorResponse::new(ErrorCode::Internal, error.to_string())),
        }
    }

    /// Calls service `S` on core `to` of this node (in place when `to` is this core).
    pub async fn call<S: Service>(
        self: &Rc<Self>,
        to: u32,
        request: S::Request,
    ) -> Result<S::Response, MeshError> {
        Mesh::call::<S>(self, to, request).await
    }

    /// Calls remote service `S` on core `to` of node `node`: over the mesh on this node,
    /// through core 0 and the peer transport on another (`crate::mesh::remote`).
    pub async fn call_at<S: RemoteService>(
        self: &Rc<Self>,
        node: NodeId,
        to: u32,
        request: S::Request,
    ) -> Result<S::Response, MeshError> {
        crate::mesh::remote::call_at::<S>(self, node, to, request).await
    }

    /// Core 0, before commands that create shards are recorded: creates each new shard's log
    /// (directory and first segment, one 4 KiB block), whichever core will own it, which then
    /// opens it without allocating anything. The logs are created concurrently, up to
    /// [`CREATES_IN_FLIGHT_MAX`] at once, then `shards/` is synced once. On failure (a full
    /// disk) removes what it created and refuses. Returns the directories created.
    pub(crate) async fn create_logs(
        &self,
        shards: &[Shard],
    ) -> Result<Vec<PathBuf>, ErrorResponse> {
        let dirs: Vec<(ShardId, PathBuf)> = shards
            .iter()
            .map(|shard| (shard.id, self.shard_dir(shard.id)))
            .collect();
        let prepared: Vec<PathBuf> = dirs.iter().map(|(_, dir)| dir.clone()).collect();
        let config = self.config.log_config();
        let mut failure = None;
        for window in dirs.chunks(CREATES_IN_FLIGHT_MAX) {
            let creating: Vec<_> = window
                .iter()
                .map(|(id, dir)| {
                    let (id, dir, config) = (*id, dir.clone(), config.clone());
                    spawn(async move {
                        // A directory of a shard the metadata does not know is left by a
                        // create that crashed before it was recorded: it holds nothing anyone
                        // was promised.
                        if dir.exists() {
                            let _ = std::fs::remove_dir_all(&dir);
                        }
                        ShardLog::create(&DmaStorage, &dir, &config)
                            .await
                            .map_err(|error| {
                                format!("cannot create the log of shard {id}: {error}")
                            })
                    })
                })
                .collect();
            // Every task of the window is awaited, failed or not, before anything is removed.
            for task in creating {
                if let Err(message) = task.await {
                    failure.get_or_insert(message);
                }
            }
            if failure.is_some() {
                break;
            }
        }
        if let Some(message) = failure {
            self.remove_created_logs(&prepared);
            return Err(ErrorResponse::new(ErrorCode::StorageFault, message));
        }
        // The new shard directories' entries in `shards/` are durable before the commands that
        // name them are: a log syncs its own directory, not its parent's.
        if !prepared.is_empty() {
            let root = self.config.data_dir.join("shards");
            if let Err(error) = runnel_segment::storage::Storage::sync_dir(&DmaStorage, &root).await
            {
                self.remove_created_logs(&prepared);
                return Err(ErrorResponse::new(
                    ErrorCode::StorageFault,
                    format!("cannot sync {}: {error}", root.display()),
                ));
            }
        }
        Ok(prepared)
    }

    /// Removes logs created for commands that were then not recorded.
    fn remove_created_logs(&self, dirs: &[PathBuf]) {
        for dir in dirs {
            if let Err(error) = std::fs::remove_dir_all(dir) {
                if error.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(dir = %dir.display(), %error, "removing a prepared shard log");
                }
            }
        }
    }

    /// Core 0: hands commands `(index, encoded command)` to every other core, in order, and
    /// waits once, until all applied the last one (or the node stops).
    pub async fn distribute_all(&self, commands: &[(u64, &[u8])]) {
        let Some(&(last, _)) = commands.last() else {
            return;
        };
        for &(index, bytes) in commands {
            for core in 1..self.config.cores as u32 {
                self.send(
                    core,
                    CoreMessage::Apply {
                        index,
                        command: bytes.to_vec(),
                    },
                )
                .await;
            }
        }
        self.wait_acked(last).await;
    }

    /// Core 0: runs the metadata proposer until the core closes (one task, started with the
    /// core).
    pub async fn run_proposer(self: Rc<Self>) {
        if let Some(proposer) = &self.proposer {
            proposer.run(&*self).await;
        }
    }

    /// Handles one message from another core.
    pub async fn on_message(self: &Rc<Self>, message: CoreMessage) -> Result<(), FatalError> {
        match message {
            CoreMessage::Apply { index, command } if command.is_empty() => {
                // An entry of the metadata group itself (a leader's empty entry, a membership
                // change): it consumes its index.
                self.metadata
                    .borrow_mut()
                    .skip(index)
                    .map_err(|e| FatalError::Metadata(format!("entry {index} from core 0: {e}")))?;
                self.send(
                    0,
                    CoreMessage::Applied {
                        core: self.index,
                        index,
                    },
                )
                .await;
            }
            CoreMessage::Apply { index, command } => {
                let command = decode_command(&command).map_err(|e| {
                    FatalError::Metadata(format!("command {index} from core 0: {e}"))
                })?;
                // A refusal was core 0's refusal too: the index is consumed, nothing changes.
                let _refusal = self.apply(index, &command).await?;
                self.send(
                    0,
                    CoreMessage::Applied {
                        core: self.index,
                        index,
                    },
                )
                .await;
            }
            CoreMessage::Snapshot { snapshot } => {
                let state = runnel_replicate::metadata::decode_snapshot(&snapshot)
                    .map_err(|e| FatalError::Metadata(format!("snapshot from core 0: {e}")))?;
                let index = state.applied_index();
                self.install_snapshot(state);
                self.send(
                    0,
                    CoreMessage::Applied {
                        core: self.index,
                        index,
                    },
                )
                .await;
            }
            CoreMessage::Ready => self.set_ready(),
            CoreMessage::Applied { core, index } => {
                if let Some(slot) = self.acked.borrow_mut().get_mut(core as usize) {
                    *slot = (*slot).max(index);
                }
                self.acked_changed.notify();
            }
            CoreMessage::Mesh(envelope) => Mesh::receive(self, envelope),
            CoreMessage::Stopped { core } => {
                if let Some(slot) = self.stopped.borrow_mut().get_mut(core as usize) {
                    *slot = true;
                }
                self.stopped_changed.notify();
            }
        }
        Ok(())
    }

    /// The shard log this core owns, if it owns `shard`.
    pub fn local_shard(&self, shard: ShardId) -> Option<Rc<LocalShard>> {
        self.shards.borrow().get(&shard).cloned()
    }

    /// While the node stops, after this core's last proposals: core 0 waits (up to
    /// `timeout`) until every other core finished theirs, so none is cut off by the metadata
    /// log closing; the other cores tell core 0 they are done.
    pub async fn finish_proposals(&self, timeout: std::time::Duration) {
        if self.index != 0 {
            self.send(0, CoreMessage::Stopped { core: self.index })
                .await;
            return;
        }
        let deadline = Instant::now() + timeout;
        loop {
            let changed = self.stopped_changed.listen();
            if self.stopped.borrow().iter().skip(1).all(|&done| done) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!("stopping without every core's last progress commits");
                return;
            }
            let _ = first_of(changed, sleep(left), std::future::pending::<()>()).await;
        }
    }

    /// Closes every shard log (flushing what is buffered). On core 0, first stops the
    /// proposer: the batch in flight completes, proposals still queued are answered
    /// `Unavailable`.
    pub async fn close(&self) {
        self.closing.set(true);
        // Waits for answers end now (the answers may never come: their cores are stopping).
        self.mesh.wake_all();
        self.replicated.stop_all();
        if let Some(proposer) = &self.proposer {
            proposer.stop().await;
        }
        if let Some(group) = self.group() {
            group.stop().await;
        }
        let shards: Vec<Rc<LocalShard>> =
            self.shards.borrow_mut().drain().map(|(_, s)| s).collect();
        for shard in shards {
            // Handlers may still hold the log: make everything durable, then close it if this
            // was the last holder.
            if let Some(log) = shard.open_log() {
                if let Err(error) = log.sync_all().await {
                    tracing::warn!(core = self.index, %error, "flushing a shard log");
                }
            }
            self.close_log(&shard).await;
        }
        self.acked_changed.notify();
        self.mesh.wake_all();
    }
}

impl MeshHost for Core {
    fn mesh(&self) -> &Mesh<Core> {
        &self.mesh
    }

    async fn send_envelope(&self, to: u32, envelope: Envelope) {
        self.send(to, CoreMessage::Mesh(envelope)).await;
    }

    fn mesh_closing(&self) -> bool {
        self.closing.get()
    }
}

impl Host for Core {
    fn committed(&self) -> Ref<'_, MetadataState> {
        self.metadata.borrow()
    }

    async fn prepare_logs(&self, shards: &[Shard]) -> Result<Vec<PathBuf>, ErrorResponse> {
        // This node creates the logs of its own shards; the others create theirs when they
        // apply the command.
        let local: Vec<Shard> = shards
            .iter()
            .filter(|shard| shard.placement.node == self.node_id())
            .cloned()
            .collect();
        self.create_logs(&local).await
    }

    fn remove_logs(&self, prepared: &[PathBuf]) {
        self.remove_created_logs(prepared);
    }

    async fn begin_batch(&self) -> Result<(), ErrorResponse> {
        match self.group() {
            Some(group) => group.begin_batch(self).await,
            None => Err(ErrorResponse::new(
                ErrorCode::Unavailable,
                "the node is starting",
            )),
        }
    }

    fn prepared(&self, shards: &[Shard]) {
        if let Some(group) = self.group() {
            group.prepared(shards.iter().map(|shard| shard.id));
        }
    }

    async fn record(
        &self,
        commands: Vec<Vec<u8>>,
    ) -> Result<Vec<(u64, Result<Applied, MetadataError>)>, RecordError> {
        match self.group() {
            Some(group) => group.record(commands).await,
            None => Err(RecordError::Stopping),
        }
    }

    fn end_batch(&self) {
        if let Some(group) = self.group() {
            group.end_batch();
        }
    }

    fn fail(&self, error: FatalError) {
        Core::fail(self, error);
    }

    fn failed(&self) -> bool {
        Core::failed(self)
    }
}
