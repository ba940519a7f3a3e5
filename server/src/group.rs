//! Core 0's member of the metadata group: the node's metadata, replicated by Raft.
//!
//! Every node, a node alone included, runs its metadata through a [`GroupMember`] (raft-rs):
//! a single node is a group of one, with the same code. This module drives the member on core
//! 0 — ticks, peer messages, proposals — persists what it asks through the
//! [`GroupLog`](crate::group_log::GroupLog), sends what it returns over the peer transport
//! ([`Peers`]), and applies what becomes committed to the node: core 0's replica first (which
//! creates and opens the logs of this node's new shards), then every other core's.
//!
//! Proposals come from core 0's [`Proposer`](crate::proposer::Proposer), which runs only while
//! this node leads: it stages a batch against the committed state, and asks [`MetaGroup::record`]
//! to propose it and wait until it is applied. A node that does not lead forwards each
//! proposal to the leader ([`MetaGroup::forward`]) and answers once it has applied the
//! command itself, so a client reads its own writes through any node.
//!
//! The node's view of the cluster (`crate::cluster`) is refreshed here: the registered nodes,
//! who leads, and each node's state from when it was last heard.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use runnel_core::ShardId;
use runnel_net::protocol::{ErrorCode, ErrorResponse};
use runnel_replicate::group::{
    Advanced, GroupError, GroupMember, GroupStore, MemberConfig, MembershipChange, Message,
    Persist, StoredSnapshot,
};
use runnel_replicate::metadata::{
    decode_command, encode_command, encode_snapshot, Applied, Command, MetadataError, Node, NodeId,
};
use runnel_segment::runtime::{first_of, sleep, spawn, Event, First};

use crate::cluster::{NodeState, NodeView, VERSION};
use crate::core::Core;
use crate::error::FatalError;
use crate::group_log::GroupLog;
use crate::metadata_log::AppendError;
use crate::peer::{
    Inbound, NodeHello, PeerError, PeerMessage, PeerRefusal, PeerRequest, PeerResponse, PeerTarget,
    Peers,
};

/// How long a forwarded proposal may take, end to end.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one attempt to reach the leader may take (then who leads is asked again).
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long a proposal waits for a leader to be known before it is refused `Unavailable`.
pub const LEADER_WAIT: Duration = Duration::from_secs(3);
/// Ticks between two heartbeats to every other node (failure detection).
const PING_TICKS: u64 = 5;
/// Ticks between two join requests of a node outside the group.
const JOIN_TICKS: u64 = 20;
/// How long the leader waits, after a node's removal is applied, for that node to hold the
/// removal in its log before dropping it from the group (a node that is down is dropped at
/// once): a running node must learn it was removed, and once out of the group it is sent
/// nothing more.
const REMOVAL_GRACE: Duration = Duration::from_secs(3);
/// How long a node that learnt it was removed waits to see itself out of the group before it
/// stops anyway: its vote may still be needed to commit its own removal.
const REMOVED_EXIT_WAIT: Duration = Duration::from_secs(5);

/// Why a proposed batch was not applied.
#[derive(Debug)]
pub enum RecordError {
    /// This node does not lead (any more): nothing of the batch is known to be committed.
    NotLeader(ErrorResponse),
    /// The disk is full.
    NoSpace(String),
    /// The node stops.
    Stopping,
}

/// The outcome of one proposed command: its index and what applying it did.
type Outcome = (u64, Result<Applied, MetadataError>);

enum Input {
    /// Commands to propose, each under its proposal id.
    Propose(Vec<(u64, Vec<u8>)>),
}

/// Core 0's member of the metadata group, and its driver.
pub struct MetaGroup {
    member: RefCell<GroupMember>,
    disk: RefCell<Option<GroupLog>>,
    peers: Option<Rc<Peers>>,
    inputs: RefCell<VecDeque<Input>>,
    input_ready: Event,
    outcomes: RefCell<HashMap<u64, Option<Result<Outcome, ErrorResponse>>>>,
    applied_changed: Event,
    /// Notified when the term or leader changes (see `log_leader`).
    leader_changed: Event,
    /// Notified once, when the group starts stopping: every wait ends at once.
    stop_event: Event,
    next_proposal: Cell<u64>,
    /// A proposer batch is staged or in flight: no membership change is proposed meanwhile
    /// (the batch's indexes were predicted from the committed state).
    batch_active: Cell<bool>,
    /// Shards whose logs the proposer created for the batch in flight.
    prepared: RefCell<HashSet<ShardId>>,
    /// The last word from each node, and when.
    hellos: RefCell<HashMap<u64, (NodeHello, Instant)>>,
    /// Set while this leader's `SetClusterId` is in flight.
    naming_cluster: Rc<Cell<bool>>,
    ticks: Cell<u64>,
    /// The term and leader last logged.
    seen_leader: Cell<(u64, Option<u64>)>,
    started: Instant,
    stopping: Cell<bool>,
    finished: Event,
    running: Cell<bool>,
    /// `runnel cluster init` asked this node to found a group: answered once done.
    found_requested: RefCell<Option<Rc<FoundReply>>>,
    /// Nodes whose removal this node applied: at which index, and when.
    removals: RefCell<HashMap<u64, (u64, Instant)>>,
    /// The failovers this node proposed as leader and has in flight (`crate::failover`).
    failovers: crate::failover::Failovers,
    /// When this node applied its own removal: it hands over its leadership, waits to be out
    /// of the group (at most [`REMOVED_EXIT_WAIT`]) and stops.
    removed_at: Cell<Option<Instant>>,
}

/// The answer to a request to found a group.
#[derive(Default)]
struct FoundReply {
    outcome: RefCell<Option<Result<(), ErrorResponse>>>,
    done: Event,
}

fn unavailable(message: impl Into<String>) -> ErrorResponse {
    ErrorResponse::new(ErrorCode::Unavailable, message)
}

fn not_leader(leader: Option<u64>) -> ErrorResponse {
    ErrorResponse::new(
        ErrorCode::NotLeader,
        match leader {
            Some(id) => format!("node {id} leads the metadata group; retry"),
            None => "the metadata group has no leader now (an election is under way); retry".into(),
        },
    )
}

fn store_error(error: AppendError) -> FatalError {
    match error {
        AppendError::NoSpace(message) => {
            FatalError::Metadata(format!("the metadata group cannot be written: {message}"))
        }
        AppendError::Fatal(fatal) => fatal,
    }
}

fn group_fatal(error: GroupError) -> FatalError {
    match error {
        GroupError::Corrupt(_) | GroupError::SnapshotIndex { .. } => {
            FatalError::Corruption(format!("metadata group: {error}"))
        }
        other => FatalError::Metadata(format!("metadata group: {other}")),
    }
}

/// Starts this node's member from `store`: snapshots as `metadata_snapshot_interval` says,
/// election timeouts seeded from the node id and the clock.
fn start_member(
    config: &crate::config::NodeConfig,
    store: GroupStore,
) -> Result<GroupMember, FatalError> {
    let member_config = MemberConfig {
        compact_after_entries: config.metadata_snapshot_interval,
        ..MemberConfig::new(config.node_id)
    };
    let seed = config.node_id ^ (crate::core::now_ms() as u64).rotate_left(17);
    GroupMember::start(member_config, store, seed).map_err(group_fatal)
}

impl MetaGroup {
    /// A member started from `store` (what the disk holds), persisting to `disk`.
    pub fn new(
        core: &Core,
        store: GroupStore,
        disk: GroupLog,
        peers: Option<Rc<Peers>>,
    ) -> Result<MetaGroup, FatalError> {
        let config = &core.config;
        let member = start_member(config, store)?;
        Ok(MetaGroup {
            member: RefCell::new(member),
            disk: RefCell::new(Some(disk)),
            peers,
            inputs: RefCell::new(VecDeque::new()),
            input_ready: Event::default(),
            outcomes: RefCell::new(HashMap::new()),
            applied_changed: Event::default(),
            leader_changed: Event::default(),
            stop_event: Event::default(),
            next_proposal: Cell::new(1),
            batch_active: Cell::new(false),
            prepared: RefCell::new(HashSet::new()),
            hellos: RefCell::new(HashMap::new()),
            naming_cluster: Rc::new(Cell::new(false)),
            ticks: Cell::new(0),
            seen_leader: Cell::new((0, None)),
            started: Instant::now(),
            stopping: Cell::new(false),
            finished: Event::default(),
            running: Cell::new(false),
            found_requested: RefCell::new(None),
            removals: RefCell::new(HashMap::new()),
            failovers: crate::failover::Failovers::default(),
            removed_at: Cell::new(None),
        })
    }

    /// The snapshot the member started from, encoded, and its index: what every core loads
    /// before the committed entries after it are applied.
    pub fn start_state(&self) -> (Vec<u8>, u64) {
        let member = self.member.borrow();
        (encode_snapshot(member.state()), member.applied_index())
    }

    /// Whether this node leads the group.
    pub fn is_leader(&self) -> bool {
        self.member.borrow().is_leader()
    }

    /// The leader this node knows of.
    pub fn leader(&self) -> Option<u64> {
        self.member.borrow().leader()
    }

    /// Whether this node is a member of a group (founded, or let in): a node started with
    /// seeds and no `init` is not, until it is let in or `runnel cluster init` founds one.
    pub fn is_member(&self) -> bool {
        let members = self.member.borrow().members();
        !members.voters.is_empty() || !members.learners.is_empty()
    }

    /// Every member of the group (voters and learners) this node knows of.
    pub fn member_ids(&self) -> Vec<u64> {
        let members = self.member.borrow().members();
        members
            .voters
            .iter()
            .chain(&members.learners)
            .copied()
            .collect()
    }

    /// The index up to which a restarted member must apply before it serves: what it had
    /// recorded as committed, and for a node alone everything in its log (it commits all of
    /// it as soon as it elects itself; the commit index it recorded may lag behind).
    pub fn replay_target(&self) -> u64 {
        let member = self.member.borrow();
        if self.alone() {
            member.store().last_index()
        } else {
            member.store().hard_state().commit
        }
    }

    /// Whether this node is the only voter (a node alone): it elects itself at once.
    pub fn alone(&self) -> bool {
        let members = self.member.borrow().members();
        members.voters == [self.member.borrow().id()] && members.learners.is_empty()
    }

    /// Waits until the member applied `index` (or `timeout` passes, or the node stops).
    pub async fn wait_applied(&self, core: &Core, index: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let changed = self.applied_changed.listen();
            let stopped = self.stop_event.listen();
            if core.metadata.borrow().applied_index() >= index {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stopping.get() {
                return false;
            }
            let _ = first_of(changed, sleep(left), stopped).await;
        }
    }

    /// Waits until a leader is known (up to [`LEADER_WAIT`]); `None` if none came.
    async fn known_leader(&self) -> Option<u64> {
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            let changed = self.leader_changed.listen();
            let stopped = self.stop_event.listen();
            if let Some(leader) = self.leader() {
                return Some(leader);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stopping.get() {
                return None;
            }
            let _ = first_of(changed, sleep(left), stopped).await;
        }
    }

    /// The proposer, before staging a batch: waits until this node leads and nothing is in
    /// flight (every entry of the log applied), so the batch's indexes follow the committed
    /// state's; then no membership change is proposed until [`MetaGroup::end_batch`].
    pub async fn begin_batch(&self, core: &Core) -> Result<(), ErrorResponse> {
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            let changed = self.applied_changed.listen();
            let stopped = self.stop_event.listen();
            {
                let member = self.member.borrow();
                if !member.is_leader() {
                    return Err(not_leader(member.leader()));
                }
                let quiet = member.store().last_index() == member.applied_index()
                    && core.metadata.borrow().applied_index() == member.applied_index();
                if quiet {
                    self.batch_active.set(true);
                    return Ok(());
                }
            }
            if self.stopping.get() {
                return Err(unavailable("the node is stopping"));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(unavailable(
                    "the metadata leader is busy with earlier entries; retry",
                ));
            }
            let _ = first_of(changed, sleep(left), stopped).await;
        }
    }

    /// The proposer's batch is done (answered or given up).
    pub fn end_batch(&self) {
        self.batch_active.set(false);
        self.prepared.borrow_mut().clear();
    }

    /// Remembers the shards whose logs the proposer created for the batch in flight: applying
    /// the batch does not create them again.
    pub fn prepared(&self, shards: impl IntoIterator<Item = ShardId>) {
        self.prepared.borrow_mut().extend(shards);
    }

    /// Proposes encoded commands (a staged batch, in order) and waits until each is applied
    /// here; returns each one's index and outcome.
    pub async fn record(&self, commands: Vec<Vec<u8>>) -> Result<Vec<Outcome>, RecordError> {
        let first = self.next_proposal.get();
        self.next_proposal.set(first + commands.len() as u64);
        let ids: Vec<u64> = (first..first + commands.len() as u64).collect();
        {
            let mut outcomes = self.outcomes.borrow_mut();
            for &id in &ids {
                outcomes.insert(id, None);
            }
        }
        self.inputs
            .borrow_mut()
            .push_back(Input::Propose(ids.iter().copied().zip(commands).collect()));
        self.input_ready.notify();
        let mut results = Vec::with_capacity(ids.len());
        let mut failure = None;
        for id in ids {
            let outcome = loop {
                let changed = self.applied_changed.listen();
                let done = self
                    .outcomes
                    .borrow_mut()
                    .get_mut(&id)
                    .and_then(Option::take);
                if let Some(outcome) = done {
                    break Some(outcome);
                }
                if !self.running.get() {
                    // The driver is gone (the node stops, or it failed).
                    break None;
                }
                changed.await;
            };
            self.outcomes.borrow_mut().remove(&id);
            match outcome {
                Some(Ok(outcome)) => results.push(outcome),
                Some(Err(error)) => {
                    failure.get_or_insert(RecordError::NotLeader(error));
                }
                None => {
                    failure.get_or_insert(RecordError::Stopping);
                }
            }
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(results),
        }
    }

    /// A node that does not lead: sends `command` to the leader, waits until it is committed
    /// and applied here too, and returns its index.
    pub async fn forward(&self, core: &Core, command: &Command) -> Result<u64, ErrorResponse> {
        let Some(peers) = &self.peers else {
            return Err(unavailable(
                "this node has no peers (no cluster CA configured) and does not lead",
            ));
        };
        let deadline = Instant::now() + FORWARD_TIMEOUT;
        let encoded = encode_command(command);
        loop {
            let Some(leader) = self.known_leader().await else {
                return Err(not_leader(None));
            };
            if leader == core.config.node_id {
                return Err(not_leader(Some(leader)));
            }
            // A leader that died is still named until the others elect another: each attempt
            // is short, and the next one asks again who leads.
            let left = deadline
                .saturating_duration_since(Instant::now())
                .min(ATTEMPT_TIMEOUT);
            let request = PeerRequest::Propose {
                command: encoded.clone(),
            };
            let index = match peers.request(PeerTarget::Node(leader), request, left).await {
                Ok(PeerResponse::Proposed(Ok(index))) => index,
                Ok(PeerResponse::Proposed(Err(refusal))) => {
                    // A leader that lost its role names the new one: try once more.
                    let retryable = refusal.code == ErrorCode::NotLeader.number()
                        || refusal.code == ErrorCode::Unavailable.number();
                    if retryable && Instant::now() < deadline {
                        sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    return Err(ErrorResponse::new(
                        ErrorCode::from_number(refusal.code),
                        refusal.message,
                    ));
                }
                Ok(_) => {
                    return Err(ErrorResponse::new(
                        ErrorCode::Internal,
                        "the metadata leader answered a proposal with another message",
                    ))
                }
                Err(error) => {
                    // Retried only when the proposal certainly did not leave this node; once it
                    // may have reached the leader, a retry could apply it twice.
                    let not_sent = matches!(
                        error,
                        PeerError::NoAddress { .. }
                            | PeerError::Unreachable { .. }
                            | PeerError::InvalidAddress { .. }
                    );
                    if not_sent && Instant::now() < deadline {
                        sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    return Err(unavailable(format!(
                        "the metadata leader (node {leader}) did not answer: {error}; the \
                         outcome is unknown"
                    )));
                }
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if !self
                .wait_applied(core, index, left.max(Duration::from_secs(1)))
                .await
            {
                return Err(unavailable(format!(
                    "committed at index {index}, not yet applied on this node; retry the read"
                )));
            }
            return Ok(index);
        }
    }

    /// Runs the member until [`MetaGroup::stop`]: one task on core 0.
    pub async fn run(self: Rc<Self>, core: Rc<Core>) {
        self.running.set(true);
        if let Err(error) = self.drive(&core).await {
            core.fail(error);
        }
        self.running.set(false);
        self.applied_changed.notify();
        self.finished.notify();
    }

    /// Stops the driver and waits for it.
    pub async fn stop(&self) {
        self.stopping.set(true);
        self.stop_event.notify();
        self.input_ready.notify();
        loop {
            let finished = self.finished.listen();
            if !self.running.get() {
                break;
            }
            finished.await;
        }
        self.fail_waiters(|| unavailable("the node is stopping"));
    }

    async fn drive(&self, core: &Rc<Core>) -> Result<(), FatalError> {
        let tick = Duration::from_millis(core.config.cluster.tick_ms);
        if self.alone() {
            let _ = self.member.borrow_mut().campaign();
        }
        self.process(core).await?;
        let mut next_tick = Instant::now() + tick;
        loop {
            // Runs while the node stops, until its core closes: the last proposals (progress
            // commits) still need it.
            if self.stopping.get() {
                return Ok(());
            }
            // A tick that is due runs before anything else: under a steady stream of peer
            // messages a zero-length sleep may never win the race below, and a member that
            // does not tick never stands for election.
            if Instant::now() >= next_tick {
                next_tick = Instant::now() + tick;
                self.on_tick(core);
                self.take_inputs();
                self.process(core).await?;
                self.log_leader();
                self.name_cluster(core);
                continue;
            }
            let input = self.input_ready.listen();
            let left = next_tick.saturating_duration_since(Instant::now());
            let inbound = async {
                match &self.peers {
                    Some(peers) => peers.next().await,
                    None => std::future::pending().await,
                }
            };
            match first_of(sleep(left), inbound, input).await {
                // The tick itself runs at the top of the loop.
                First::A(()) => {}
                First::B(inbound) => self.on_inbound(core, inbound),
                First::C(()) => {}
            }
            self.take_inputs();
            let found = self.found_requested.borrow_mut().take();
            if let Some(reply) = found {
                let outcome = self.found_here(core).await?;
                reply.outcome.replace(Some(outcome));
                reply.done.notify();
            }
            self.process(core).await?;
            self.log_leader();
            self.name_cluster(core);
        }
    }

    /// Hands the cluster id to the peer transport once the metadata names one; a leader of a
    /// cluster without one (new, or from before ids existed) names it, once.
    fn name_cluster(&self, core: &Rc<Core>) {
        let id = core.metadata.borrow().cluster_id();
        if let Some(peers) = &self.peers {
            if peers.cluster() != id {
                peers.set_cluster(id);
                if let Some(id) = id {
                    tracing::info!(cluster = format!("{id:016x}"), "cluster id");
                }
            }
        }
        let leads = self.member.borrow().leader() == Some(core.config.node_id);
        if id.is_some() || !leads || !core.is_ready() || self.naming_cluster.get() {
            return;
        }
        self.naming_cluster.set(true);
        let naming = Rc::clone(&self.naming_cluster);
        let core = Rc::clone(core);
        let id = new_cluster_id(core.config.node_id);
        runnel_segment::runtime::spawn(async move {
            // Refused when another leader named it first: the next look finds the id.
            if let Err(error) = core.propose(Command::SetClusterId { id }).await {
                tracing::debug!(%error.message, "naming the cluster");
            }
            naming.set(false);
        })
        .detach();
    }

    /// Logs a change of term or leader (operators follow elections in the log).
    fn log_leader(&self) {
        let now = {
            let member = self.member.borrow();
            (member.term(), member.leader())
        };
        if now != self.seen_leader.get() {
            self.seen_leader.set(now);
            self.leader_changed.notify();
            tracing::info!(term = now.0, leader = ?now.1, "metadata group leader");
        }
    }

    /// Founds a group of this node (`runnel cluster init`), if it belongs to none; the other
    /// nodes started with it as a seed are then let in.
    pub async fn found(&self) -> Result<(), ErrorResponse> {
        let reply = Rc::new(FoundReply::default());
        *self.found_requested.borrow_mut() = Some(Rc::clone(&reply));
        self.input_ready.notify();
        loop {
            let done = reply.done.listen();
            let stopped = self.stop_event.listen();
            if let Some(outcome) = reply.outcome.borrow_mut().take() {
                return outcome;
            }
            if self.stopping.get() {
                return Err(unavailable("the node is stopping"));
            }
            let _ = first_of(done, stopped, std::future::pending::<()>()).await;
        }
    }

    async fn found_here(&self, core: &Rc<Core>) -> Result<Result<(), ErrorResponse>, FatalError> {
        if self.is_member() {
            return Ok(Err(ErrorResponse::new(
                ErrorCode::InvalidRequest,
                "this node already belongs to a cluster",
            )));
        }
        let config = &core.config;
        // The log of a node outside any group holds nothing of value: it is replaced.
        let store = GroupStore::founding(&[config.node_id]);
        let dir = config.data_dir.join("metadata-group");
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| FatalError::Io(format!("remove {}: {e}", dir.display())))?;
        }
        let disk = GroupLog::create(&config.data_dir, &store).await?;
        let member = start_member(config, store)?;
        *self.member.borrow_mut() = member;
        *self.disk.borrow_mut() = Some(disk);
        let _ = self.member.borrow_mut().campaign();
        tracing::info!(node = config.node_id, "founded a new cluster");
        // Registers this node once it leads (the driver goes on meanwhile).
        let core = Rc::clone(core);
        spawn(async move {
            let node = Node {
                id: NodeId(core.config.node_id),
                cores: core.config.cores as u32,
                address: core.config.advertised(),
            };
            if let Err(error) = core.propose(Command::RegisterNode { node }).await {
                tracing::error!(%error.message, "registering this node in the new cluster");
            }
        })
        .detach();
        Ok(Ok(()))
    }

    fn take_inputs(&self) {
        let inputs: Vec<Input> = self.inputs.borrow_mut().drain(..).collect();
        for input in inputs {
            match input {
                Input::Propose(commands) => {
                    for (id, bytes) in commands {
                        let result = match decode_command(&bytes) {
                            Ok(command) => self.member.borrow_mut().propose(id, &command),
                            Err(error) => {
                                self.resolve(
                                    id,
                                    Err(ErrorResponse::new(
                                        ErrorCode::InvalidRequest,
                                        error.to_string(),
                                    )),
                                );
                                continue;
                            }
                        };
                        if let Err(error) = result {
                            let leader = match error {
                                GroupError::NotLeader { leader } => leader,
                                _ => None,
                            };
                            self.resolve(id, Err(not_leader(leader)));
                        }
                    }
                }
            }
        }
    }

    fn resolve(&self, id: u64, outcome: Result<Outcome, ErrorResponse>) {
        if let Some(slot) = self.outcomes.borrow_mut().get_mut(&id) {
            *slot = Some(outcome);
        }
        self.applied_changed.notify();
    }

    fn fail_waiters(&self, error: impl Fn() -> ErrorResponse) {
        for slot in self.outcomes.borrow_mut().values_mut() {
            if slot.is_none() {
                *slot = Some(Err(error()));
            }
        }
        self.applied_changed.notify();
    }

    fn on_tick(&self, core: &Rc<Core>) {
        let ticks = self.ticks.get() + 1;
        self.ticks.set(ticks);
        let was_leader = self.member.borrow().is_leader();
        self.member.borrow_mut().tick();
        if was_leader && !self.member.borrow().is_leader() {
            // Entries this node proposed may be replaced by the next leader's.
            self.fail_waiters(|| {
                unavailable("the metadata leader changed; the outcome is unknown, retry")
            });
        }
        if ticks.is_multiple_of(PING_TICKS) {
            self.ping(core);
            self.refresh_view(core);
            if self.is_leader() {
                self.failovers.propose(core);
            }
        }
        if let Some(at) = self.removed_at.get() {
            self.leave(core, at);
            return;
        }
        if !self.batch_active.get() {
            self.membership_step(core);
        }
        if ticks.is_multiple_of(JOIN_TICKS) && !self.is_member() {
            self.ask_to_join(core);
        }
    }

    fn hello(&self, core: &Core) -> NodeHello {
        NodeHello {
            node: core.config.node_id,
            address: core.config.advertised(),
            cores: core.config.cores as u32,
            version: VERSION.to_string(),
            running: core.is_ready(),
            cluster: None,
        }
    }

    fn ping(&self, core: &Core) {
        let Some(peers) = &self.peers else {
            return;
        };
        let hello = self.hello(core);
        let nodes: Vec<u64> = core
            .metadata
            .borrow()
            .nodes()
            .map(|node| node.id.0)
            .filter(|&id| id != core.config.node_id)
            .collect();
        for node in nodes {
            peers.send(node, PeerMessage::Ping(hello.clone()));
        }
    }

    fn ask_to_join(&self, core: &Rc<Core>) {
        let Some(peers) = &self.peers else {
            return;
        };
        for seed in &core.config.cluster.seeds {
            let (peers, seed, hello) = (Rc::clone(peers), seed.clone(), self.hello(core));
            spawn(async move {
                let request = PeerRequest::Join(hello);
                match peers
                    .request(PeerTarget::Address(seed.clone()), request, FORWARD_TIMEOUT)
                    .await
                {
                    Ok(PeerResponse::Joined(Ok(()))) => {
                        tracing::info!(%seed, "asked to join the cluster: accepted")
                    }
                    Ok(PeerResponse::Joined(Err(refusal))) => {
                        tracing::debug!(%seed, reason = %refusal.message, "join refused")
                    }
                    Ok(_) => tracing::debug!(%seed, "join answered with another message"),
                    Err(error) => tracing::debug!(%seed, %error, "join request failed"),
                }
            })
            .detach();
        }
    }

    /// The leader lets registered nodes into the group: learners first, voters up to
    /// `cluster.voters`.
    fn membership_step(&self, core: &Core) {
        let nodes: Vec<u64> = core.metadata.borrow().nodes().map(|n| n.id.0).collect();
        let step = self
            .member
            .borrow()
            .membership_step(&nodes, core.config.cluster.voters);
        if let Some(MembershipChange::Remove(node)) = step {
            if !self.may_drop(core, node) {
                return;
            }
        }
        if let Some(change) = step {
            let id = self.next_proposal.get();
            self.next_proposal.set(id + 1);
            tracing::info!(?change, "metadata group membership change");
            if let Err(error) = self.member.borrow_mut().propose_membership(id, change) {
                tracing::debug!(%error, "membership change not proposed");
            }
        }
    }

    /// Node `node`'s removal was applied at `index`. This node, if it is the one removed,
    /// marks its data directory (every later start is refused) and begins to leave; another
    /// node remembers the removal until the group drops the removed node.
    fn node_removed(&self, core: &Core, node: u64, index: u64) -> Result<(), FatalError> {
        if node == core.config.node_id {
            crate::data_dir::mark_removed(&core.config.data_dir, node)?;
            tracing::error!(
                node,
                index,
                "this node was removed from the cluster (runnel node remove); it stops once \
                 the group has let it go, and its data directory will not serve again"
            );
            self.removed_at.set(Some(Instant::now()));
        } else {
            tracing::info!(node, index, "a node was removed from the cluster");
            self.removals
                .borrow_mut()
                .insert(node, (index, Instant::now()));
        }
        self.refresh_view(core);
        Ok(())
    }

    /// Whether the leader may drop removed node `node` from the group now: once the node holds
    /// its removal in its log, or is not reachable, or [`REMOVAL_GRACE`] passed.
    fn may_drop(&self, core: &Core, node: u64) -> bool {
        let Some(&(index, at)) = self.removals.borrow().get(&node) else {
            return true;
        };
        let holds_it = self
            .member
            .borrow()
            .matched(node)
            .is_some_and(|matched| matched >= index);
        let reachable = core
            .cluster
            .nodes()
            .iter()
            .find(|view| view.id == node)
            .is_none_or(|view| matches!(view.state, NodeState::Starting | NodeState::Running));
        holds_it || !reachable || at.elapsed() >= REMOVAL_GRACE
    }

    /// Closes the peer connections of removed nodes the group no longer holds.
    fn forget_departed(&self) {
        let Some(peers) = &self.peers else {
            return;
        };
        let members = self.member_ids();
        for (&node, _) in self.removals.borrow().iter() {
            if !members.contains(&node) {
                peers.forget(node);
            }
        }
    }

    /// A removed node leaving: a leader hands its role to another voter; a follower stops
    /// once the group no longer holds it, or after [`REMOVED_EXIT_WAIT`].
    fn leave(&self, core: &Core, removed_at: Instant) {
        let me = core.config.node_id;
        if self.is_leader() {
            if self.ticks.get().is_multiple_of(PING_TICKS) {
                // To a voter still registered (another removed node would hand it back).
                let metadata = core.metadata.borrow();
                let to = {
                    let member = self.member.borrow();
                    member
                        .members()
                        .voters
                        .iter()
                        .copied()
                        .filter(|&id| id != me && metadata.node(NodeId(id)).is_some())
                        .max_by_key(|&id| member.matched(id).unwrap_or(0))
                };
                drop(metadata);
                if let Some(to) = to {
                    tracing::info!(to, "handing the metadata group's leadership over");
                    self.member.borrow_mut().transfer_leader(to);
                }
            }
            if removed_at.elapsed() < REMOVED_EXIT_WAIT * 2 {
                return;
            }
        }
        let out_of_group = !self.member_ids().contains(&me);
        if out_of_group || removed_at.elapsed() >= REMOVED_EXIT_WAIT {
            core.fail(crate::data_dir::removed(&core.config.data_dir, me));
        }
    }

    fn on_inbound(&self, core: &Rc<Core>, inbound: Inbound) {
        match inbound {
            Inbound::Message { from, message } => match message {
                PeerMessage::Raft(bytes) => {
                    match <Message as protobuf::Message>::parse_from_bytes(&bytes) {
                        Ok(message) => {
                            if let Err(error) = self.member.borrow_mut().step(message) {
                                tracing::debug!(from, %error, "a raft message was refused");
                            }
                        }
                        Err(error) => {
                            tracing::warn!(from, %error, "a raft message does not decode")
                        }
                    }
                }
                PeerMessage::Ping(hello) => self.heard(hello),
            },
            Inbound::Request {
                from,
                request,
                reply,
            } => {
                let core = Rc::clone(core);
                spawn(async move {
                    let response = match request {
                        PeerRequest::Propose { command } => {
                            PeerResponse::Proposed(Self::serve_proposal(&core, &command).await)
                        }
                        PeerRequest::Join(hello) => {
                            PeerResponse::Joined(Self::serve_join(&core, hello).await)
                        }
                        PeerRequest::Ask {
                            core: target,
                            applied_index,
                            service,
                            request,
                        } => PeerResponse::Answered(
                            crate::mesh::remote::answer_from_peer(
                                &core,
                                from,
                                target,
                                applied_index,
                                service,
                                &request,
                            )
                            .await,
                        ),
                    };
                    tracing::trace!(from, "answered a peer request");
                    reply.send(response);
                })
                .detach();
            }
        }
    }

    fn heard(&self, hello: NodeHello) {
        // A removed node may still talk until it learns so: its connection is not redialled.
        let removed = self.removals.borrow().contains_key(&hello.node);
        if let (Some(peers), false) = (&self.peers, removed) {
            peers.set_address(hello.node, &hello.address);
        }
        self.hellos
            .borrow_mut()
            .insert(hello.node, (hello, Instant::now()));
    }

    fn refusal(core: &Core, error: ErrorResponse) -> PeerRefusal {
        PeerRefusal {
            code: error.code.number(),
            message: error.message,
            leader: core.group().and_then(|group| group.leader()),
        }
    }

    /// A proposal forwarded by another node: proposed here if this node leads (never
    /// forwarded again).
    async fn serve_proposal(core: &Rc<Core>, command: &[u8]) -> Result<u64, PeerRefusal> {
        let command = decode_command(command).map_err(|error| {
            Self::refusal(
                core,
                ErrorResponse::new(ErrorCode::InvalidRequest, error.to_string()),
            )
        })?;
        let leads = core.group().is_some_and(|group| group.is_leader());
        if !leads {
            let leader = core.group().and_then(|group| group.leader());
            return Err(Self::refusal(core, not_leader(leader)));
        }
        core.propose_here(command)
            .await
            .map_err(|error| Self::refusal(core, error))
    }

    /// A node asks to be let in: registers it (through the leader), unless it is registered
    /// as it is already.
    async fn serve_join(core: &Rc<Core>, hello: NodeHello) -> Result<(), PeerRefusal> {
        if let Some(group) = core.group() {
            group.heard(hello.clone());
        }
        let node = Node {
            id: NodeId(hello.node),
            cores: hello.cores,
            address: hello.address,
        };
        if core.metadata.borrow().node(node.id) == Some(&node) {
            return Ok(());
        }
        core.propose(Command::RegisterNode { node })
            .await
            .map_err(|error| Self::refusal(core, error))
    }

    /// Hands the member's ready work to the disk and the network, and applies what is
    /// committed, until it has none.
    async fn process(&self, core: &Rc<Core>) -> Result<(), FatalError> {
        loop {
            let persist = self.member.borrow_mut().ready();
            let Some(persist) = persist else {
                return Ok(());
            };
            let mut snapshots_sent = self.send(&persist.send_now);
            let snapshot = persist.snapshot.as_ref().map(|s| s.data.clone());
            self.write(&persist).await?;
            let advanced = self.member.borrow_mut().persisted().map_err(group_fatal)?;
            snapshots_sent.extend(self.send(&advanced.send));
            // raft-rs sends a peer nothing more after a snapshot until told what became of it
            // (the snapshot's answer alone may be lost, e.g. while the joining peer does not
            // know this node's address yet): without this report a new learner stays behind
            // for ever and is never promoted to voter. Handed to the transport counts as
            // delivered; a lost one makes the learner refuse the next append, and the leader
            // sends the snapshot again.
            for to in snapshots_sent {
                self.member.borrow_mut().snapshot_sent(to, true);
            }
            if let Some(data) = snapshot {
                self.install(core, &data).await?;
            }
            self.apply(core, &advanced).await?;
            if advanced.members.is_some() {
                if let Some(commit) = advanced.commit {
                    self.set_commit(commit).await?;
                }
                self.forget_departed();
                self.refresh_view(core);
            }
            if let Some(snapshot) = &advanced.compacted {
                self.compact(snapshot).await?;
            }
            if !self.member.borrow().is_leader() && !self.outcomes.borrow().is_empty() {
                let leader = self.leader();
                if leader.is_some() {
                    self.fail_waiters(|| {
                        unavailable("the metadata leader changed; the outcome is unknown, retry")
                    });
                }
            }
        }
    }

    fn take_disk(&self) -> Result<GroupLog, FatalError> {
        self.disk
            .borrow_mut()
            .take()
            .ok_or_else(|| FatalError::Metadata("the metadata group's log is in use".into()))
    }

    /// Makes `persist` durable. The log is moved out of its cell while the write awaits (only
    /// this driver task writes), so no borrow is held across the await.
    async fn write(&self, persist: &Persist) -> Result<(), FatalError> {
        let mut disk = self.take_disk()?;
        let result = disk.write(persist).await;
        *self.disk.borrow_mut() = Some(disk);
        result.map_err(store_error)
    }

    async fn set_commit(&self, commit: u64) -> Result<(), FatalError> {
        let mut disk = self.take_disk()?;
        let result = disk.set_commit(commit).await;
        *self.disk.borrow_mut() = Some(disk);
        result.map_err(store_error)
    }

    /// Writes a compaction's snapshot. Without room it is skipped: the log on disk keeps its
    /// entries (the next compaction tries again), and the node goes on.
    async fn compact(&self, snapshot: &StoredSnapshot) -> Result<(), FatalError> {
        let mut disk = self.take_disk()?;
        let result = disk.compact(snapshot).await;
        *self.disk.borrow_mut() = Some(disk);
        match result {
            Err(AppendError::NoSpace(message)) => {
                tracing::warn!(%message, "no room for a metadata snapshot; the log keeps its entries");
                Ok(())
            }
            other => other.map_err(store_error),
        }
    }

    /// Hands `messages` to the peer transport; returns the peers a snapshot was handed over
    /// for, to report to the member once it is idle.
    fn send(&self, messages: &[Message]) -> Vec<u64> {
        let Some(peers) = &self.peers else {
            return Vec::new();
        };
        let mut snapshots = Vec::new();
        for message in messages {
            match protobuf::Message::write_to_bytes(message) {
                Ok(bytes) => {
                    if message.get_msg_type() == raft::prelude::MessageType::MsgSnapshot {
                        snapshots.push(message.to);
                    }
                    peers.send(message.to, PeerMessage::Raft(bytes))
                }
                Err(error) => tracing::warn!(%error, "a raft message does not encode"),
            }
        }
        snapshots
    }

    /// A snapshot from the leader replaced the member's state: every core loads it.
    async fn install(&self, core: &Rc<Core>, data: &[u8]) -> Result<(), FatalError> {
        let state = runnel_replicate::metadata::decode_snapshot(data)
            .map_err(|error| FatalError::Corruption(format!("metadata snapshot: {error}")))?;
        let index = state.applied_index();
        // Shards placed here while this node was away (or before it joined) get their logs.
        let missing: Vec<_> = state
            .shards()
            .filter(|shard| shard.placement.node == core.node_id())
            .filter(|shard| !core.shard_dir(shard.id).exists())
            .cloned()
            .collect();
        if !missing.is_empty() {
            tracing::info!(
                shards = missing.len(),
                "creating the logs of shards placed on this node while it was away"
            );
            if let Err(error) = core.create_logs(&missing).await {
                tracing::error!(error = %error.message, "cannot create the logs of new shards");
            }
        }
        core.install_snapshot(state);
        self.learn_addresses(core);
        core.distribute_snapshot(data, index).await;
        self.applied_changed.notify();
        Ok(())
    }

    /// Applies committed entries to core 0's replica (creating this node's new shard logs
    /// first), then to every other core's; resolves the proposals among them.
    async fn apply(&self, core: &Rc<Core>, advanced: &Advanced) -> Result<(), FatalError> {
        if advanced.committed.is_empty() {
            return Ok(());
        }
        let outcomes: HashMap<u64, Option<u64>> = advanced
            .applied
            .iter()
            .map(|applied| (applied.index, applied.proposal))
            .collect();
        let mut distributed: Vec<(u64, Vec<u8>)> = Vec::with_capacity(advanced.committed.len());
        for entry in &advanced.committed {
            let index = entry.index;
            if index <= core.metadata.borrow().applied_index() {
                continue;
            }
            let is_command = entry.get_entry_type() == raft::prelude::EntryType::EntryNormal
                && !entry.data.is_empty();
            if !is_command {
                core.metadata.borrow_mut().skip(index).map_err(|error| {
                    FatalError::Metadata(format!("entry {index} cannot be skipped: {error}"))
                })?;
                distributed.push((index, Vec::new()));
                continue;
            }
            let command = decode_command(&entry.data).map_err(|error| {
                FatalError::Corruption(format!("committed metadata entry {index}: {error}"))
            })?;
            self.create_new_logs(core, index, &command).await;
            let outcome = core.apply(index, &command).await?;
            match &outcome {
                Ok(Applied::NodeRegistered { node, .. }) => {
                    // A node registered again under a removed id is a new node.
                    self.removals.borrow_mut().remove(&node.id.0);
                    self.learn_addresses(core);
                }
                Ok(Applied::NodeRemoved { node }) => self.node_removed(core, node.id.0, index)?,
                _ => {}
            }
            distributed.push((index, entry.data.to_vec()));
            if let Some(Some(proposal)) = outcomes.get(&index) {
                self.resolve(*proposal, Ok((index, outcome)));
            }
        }
        let entries: Vec<(u64, &[u8])> = distributed
            .iter()
            .map(|(index, bytes)| (*index, bytes.as_slice()))
            .collect();
        core.distribute_all(&entries).await;
        self.applied_changed.notify();
        Ok(())
    }

    /// Creates the logs of this node's shards that `command` creates, unless the proposer
    /// created them for it. A failure (a full disk) leaves the shard without a log: requests
    /// for it fail until an operator makes room (the command is committed on every node).
    async fn create_new_logs(&self, core: &Core, index: u64, command: &Command) {
        let creates = matches!(
            command,
            Command::CreateStream { .. } | Command::SplitShard { .. } | Command::MergeShards { .. }
        );
        if !creates {
            return;
        }
        // While replaying at start, a log that exists holds what was written since the
        // command was first applied; only a missing one (a crash between commit and apply) is
        // created. Once serving, a new shard's log is empty by definition.
        let replaying = !core.is_ready();
        let planned = match core.metadata.borrow().check(index, command) {
            Ok(shards) => shards,
            Err(_) => return,
        };
        let missing: Vec<_> = {
            let prepared = self.prepared.borrow();
            planned
                .into_iter()
                .filter(|shard| shard.placement.node == core.node_id())
                .filter(|shard| !prepared.contains(&shard.id))
                .filter(|shard| !replaying || !core.shard_dir(shard.id).exists())
                .collect()
        };
        if missing.is_empty() {
            return;
        }
        if let Err(error) = core.create_logs(&missing).await {
            tracing::error!(index, error = %error.message, "cannot create the logs of new shards");
        }
    }

    /// Recomputes the node's view of the cluster.
    pub fn refresh_view(&self, core: &Core) {
        let member = self.member.borrow();
        let members = member.members();
        let leader = member.leader();
        let now = Instant::now();
        let unavailable_after = Duration::from_millis(core.config.cluster.unavailable_after_ms);
        let dead_after = Duration::from_millis(core.config.cluster.dead_after_ms);
        let hellos = self.hellos.borrow();
        let mut views: Vec<NodeView> = core
            .metadata
            .borrow()
            .nodes()
            .map(|node| {
                let id = node.id.0;
                let mine = id == core.config.node_id;
                let heard = hellos.get(&id);
                let last = heard
                    .map(|(_, at)| *at)
                    .into_iter()
                    .chain(self.peers.as_ref().and_then(|peers| peers.last_heard(id)))
                    .max();
                let state = if mine {
                    if core.is_ready() {
                        NodeState::Running
                    } else {
                        NodeState::Starting
                    }
                } else {
                    let silent = match last {
                        Some(at) => now.saturating_duration_since(at),
                        None => now.saturating_duration_since(self.started),
                    };
                    if silent >= dead_after {
                        NodeState::Dead
                    } else if silent >= unavailable_after {
                        NodeState::Unavailable
                    } else if heard.is_some_and(|(hello, _)| hello.running) {
                        NodeState::Running
                    } else {
                        NodeState::Starting
                    }
                };
                NodeView {
                    id,
                    state,
                    address: node.address.clone(),
                    version: if mine {
                        Some(VERSION.to_string())
                    } else {
                        heard.map(|(hello, _)| hello.version.clone())
                    },
                    cores: node.cores,
                    leader: leader == Some(id),
                    voter: members.voters.contains(&id),
                }
            })
            .collect();
        if !views.iter().any(|view| view.id == core.config.node_id) {
            views.push(NodeView {
                id: core.config.node_id,
                state: NodeState::Starting,
                address: core.config.advertised(),
                version: Some(VERSION.to_string()),
                cores: core.config.cores as u32,
                leader: false,
                voter: false,
            });
        }
        core.cluster.set(views);
        self.learn_addresses(core);
    }

    /// The peer transport learns where the registered nodes are from the metadata: at once
    /// when a snapshot or a registration is applied (a joining node answers the leader's
    /// snapshot only if it knows where the leader is), and on every refresh of the view.
    fn learn_addresses(&self, core: &Core) {
        if let Some(peers) = &self.peers {
            for node in core.metadata.borrow().nodes() {
                peers.set_address(node.id.0, &node.address);
            }
        }
    }
}

/// A new cluster's id: random, never 0. Not a secret: it only tells clusters apart.
fn new_cluster_id(node: u64) -> u64 {
    crate::peer::random_id(node).max(1)
}
