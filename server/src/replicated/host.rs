//! The driver of one replicated shard on one core: it runs the shard's [`Replica`] over the
//! shard's log, and, on the core metadata names sequencer, its [`Recovery`] then its
//! [`Sequencer`]; it carries their messages (to this core directly, to other nodes through
//! the remote service `replica.deliver`), performs the replica's storage operations in order,
//! and ticks them from the runtime's timer.
//!
//! Everything runs on the shard's core: the state machines sit in `RefCell`s that no borrow
//! holds across an `await`. Inputs (a delivery, a tick, a storage completion, an append) go
//! into the state machines, then [`ShardHost::pump`] routes the effects until none is left:
//! messages for this node go to its inbox, the others to one outbox per node, which one task
//! per node sends in order, a delivery at a time (so messages to a node keep their order and
//! batch up while the previous delivery is in flight).
//!
//! One sequencer per epoch across restarts: before recovery of epoch e sends any `Seal` to
//! another node, this node's own replica is sealed at e durably (its digest only leaves after
//! the seal is synced). A host that finds its own replica already sealed at e or above does not
//! run e (a previous run of this node may have sequenced it): it asks metadata for a new epoch.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use runnel_core::{Offset, ShardId};
use runnel_replicate::metadata::{Durability, NodeId, Placement};
use runnel_replicate::shard::{
    Entry, Epoch, Message, Recovery, RecoveryOutcome, Replica, ReplicaEffect, Sequencer,
    SequencerConfig, SequencerEffect, StorageOp,
};
use runnel_segment::log::ReadBound;
use runnel_segment::runtime::{first_of, sleep, spawn_blocking, Event};
use runnel_segment::LogError;

use super::state::ReplicaState;
use super::{protocol_epoch, stamped_epoch, ReplicaSet, ReplicationError};
use crate::local::OpenLog;

/// How often the state machines tick, in milliseconds.
pub const TICK_MS: u64 = 20;
/// Ticks without an answer before a replica gets its unanswered entries (or a seal) again.
pub const RESEND_AFTER_TICKS: u64 = 5;
/// Entries sent to one replica and not yet answered, at most.
pub const IN_FLIGHT_ENTRIES_MAX: usize = 256;
/// Appended entries not yet committed, at most (appends beyond get `Backpressure`).
pub const UNCOMMITTED_ENTRIES_MAX: usize = 1024;
/// Committed entries the sequencer keeps in memory for lagging replicas.
pub const RETAINED_ENTRIES_MAX: usize = 256;
/// Ticks between two writes of the committed offset to the replica's state file.
pub const PERSIST_COMMITTED_EVERY_TICKS: u64 = 25;
/// Bytes of the log read at once when entries are read back (restore, catch-up).
const READ_CHUNK_BYTES: usize = 1 << 20;

/// What this node does for the shard beyond its replica.
enum Role {
    /// Only a replica.
    Replica,
    /// Recovering epoch `recovery.epoch()`; messages for other nodes wait in `held` until this
    /// node's own replica answered the seal (sealed durably).
    Recovering {
        recovery: Box<Recovery>,
        own_sealed: bool,
        held: Vec<(NodeId, Message)>,
    },
    /// Sequencing its epoch.
    Sequencing(Box<Sequencer>),
    /// Named sequencer of an epoch this node's replica is already sealed at (or above): it
    /// waits for metadata to name a newer epoch.
    Stale { epoch: Epoch },
    /// Deposed by a higher epoch while sequencing (or recovering) `epoch`.
    Deposed { epoch: Epoch },
    /// Recovery of `epoch` found less than every replica ever committed: the shard refuses
    /// appends (until metadata names a newer epoch).
    DataLoss {
        epoch: Epoch,
        committed: u64,
        adopted_end: u64,
    },
}

/// A replicated shard hosted on this core.
pub struct ShardHost {
    shard: ShardId,
    node: NodeId,
    dir: PathBuf,
    log: OpenLog,
    set: RefCell<ReplicaSet>,
    replica: RefCell<Replica>,
    role: RefCell<Role>,
    inbox: RefCell<VecDeque<(NodeId, Message)>>,
    ops: RefCell<VecDeque<(u64, StorageOp)>>,
    ops_changed: Event,
    outboxes: RefCell<BTreeMap<NodeId, VecDeque<Message>>>,
    outbox_changed: Event,
    /// The sequencer's committed offset, with its epoch (appends of that epoch end at or
    /// below it are acknowledged).
    sequenced: Cell<(Epoch, u64)>,
    /// The replica's committed offset as far as the storage operations performed agree with
    /// it: readers see below it, and the state file records no more. The replica's own runs
    /// ahead while the operations issued before it learnt it wait (a `Truncate` of a divergent
    /// suffix among them: until it is done the log still holds the old records there).
    visible: Cell<u64>,
    /// Committed offsets the replica learnt, each with the last storage operation issued
    /// before it: released into `visible` once that operation is performed.
    unapplied_commits: RefCell<VecDeque<(u64, u64)>>,
    /// The last storage operation performed (written, truncated or sealed).
    performed_op: Cell<u64>,
    /// The committed offset or role changed.
    changed: Event,
    persisted: Cell<ReplicaState>,
    persist_due: Cell<bool>,
    /// A storage fault: the replica stops (it answers nothing more) and appends are refused.
    failed: RefCell<Option<String>>,
    stopped: Cell<bool>,
    pumping: Cell<bool>,
    /// Read-backs in flight for the sequencer: its epoch, and where the entries arrive.
    reads: RefCell<Vec<(Epoch, ReadSlot)>>,
    /// The epoch this node last finished recovering, and where the log it adopted ends.
    adopted: Cell<Option<(Epoch, u64)>>,
}

impl ShardHost {
    /// Restores the replica of `shard` from its log and state file in `dir` (see
    /// [`super::state`]), taking on `set`'s role for this node.
    pub async fn open(
        shard: ShardId,
        node: NodeId,
        this_core: u32,
        dir: PathBuf,
        log: OpenLog,
        set: ReplicaSet,
    ) -> Result<Rc<ShardHost>, ReplicationError> {
        let state_dir = dir.clone();
        let persisted = spawn_blocking(move || ReplicaState::load(&state_dir))
            .await
            .map_err(|error| ReplicationError::Storage {
                shard,
                reason: error.to_string(),
            })?;
        let end = log.next_offset().0;
        // What the log holds is the truth after a crash: a committed offset beyond it was not
        // this replica's to keep (memory durability), and is forgotten.
        let committed = persisted.committed.min(end);
        let tail = read_entries(&log, committed.saturating_sub(1), end)
            .await
            .map_err(|error| ReplicationError::Storage {
                shard,
                reason: error.to_string(),
            })?;
        // What the disk holds is checked here, never asserted on: entries that do not end at
        // the log's end (a log that moved while read, a damaged one) refuse this open, and
        // the shard stays closed on this core until an open succeeds.
        let tail: Vec<Entry> = tail.into_iter().filter(|e| e.end() <= end).collect();
        let dense = tail.windows(2).all(|pair| match pair {
            [a, b] => a.end() == b.first,
            _ => true,
        });
        let ends_the_log = tail.last().map_or(committed == end, |e| e.end() == end);
        if !dense || !ends_the_log {
            return Err(ReplicationError::Storage {
                shard,
                reason: format!(
                    "the log's entries from offset {} do not end at its end {end} (committed \
                     {committed}): {:?}",
                    committed.saturating_sub(1),
                    tail.iter().map(|e| (e.first, e.count)).collect::<Vec<_>>()
                ),
            });
        }
        let last_epoch = tail.last().map_or(Epoch(0), |e| e.epoch);
        let replica = Replica::restore(
            set.durability,
            persisted.sealed,
            committed,
            end,
            last_epoch,
            tail,
        );
        let host = Rc::new(ShardHost {
            shard,
            node,
            dir,
            log,
            visible: Cell::new(replica.committed()),
            unapplied_commits: RefCell::new(VecDeque::new()),
            performed_op: Cell::new(0),
            replica: RefCell::new(replica),
            set: RefCell::new(set.clone()),
            role: RefCell::new(Role::Replica),
            inbox: RefCell::new(VecDeque::new()),
            ops: RefCell::new(VecDeque::new()),
            ops_changed: Event::default(),
            outboxes: RefCell::new(BTreeMap::new()),
            outbox_changed: Event::default(),
            sequenced: Cell::new((Epoch(0), 0)),
            changed: Event::default(),
            persisted: Cell::new(persisted),
            persist_due: Cell::new(false),
            failed: RefCell::new(None),
            stopped: Cell::new(false),
            pumping: Cell::new(false),
            reads: RefCell::new(Vec::new()),
            adopted: Cell::new(None),
        });
        host.update(set, this_core);
        Ok(host)
    }

    /// The shard.
    pub fn shard(&self) -> ShardId {
        self.shard
    }

    /// The shard's log (this node's replica).
    pub fn log(&self) -> &OpenLog {
        &self.log
    }

    /// The replica set as last given.
    pub fn set(&self) -> ReplicaSet {
        self.set.borrow().clone()
    }

    /// Readers of this replica see offsets below this one: its committed offset, as far as
    /// its log holds it (the storage operations trail the replica's state).
    pub fn visible_end(&self) -> Offset {
        Offset(self.visible.get()).min(self.log.written_offset())
    }

    /// The epoch and committed offset of this node's sequencer (`(Epoch(0), 0)` when it never
    /// sequenced).
    pub fn sequenced(&self) -> (Epoch, u64) {
        self.sequenced.get()
    }

    /// The storage fault that stopped this replica, if one did.
    pub fn failure(&self) -> Option<String> {
        self.failed.borrow().clone()
    }

    /// This replica's sealed epoch.
    pub fn sealed(&self) -> Epoch {
        self.replica.borrow().sealed()
    }

    /// Whether this host is the sequencer of its epoch and takes appends now.
    pub fn is_sequencing(&self) -> bool {
        matches!(&*self.role.borrow(), Role::Sequencing(s) if !s.is_deposed())
    }

    /// Whether metadata must name a new epoch before this shard takes appends again: this
    /// core is named sequencer of an epoch its replica already saw (a previous run of this
    /// node may have sequenced it).
    pub fn needs_new_epoch(&self) -> bool {
        matches!(&*self.role.borrow(), Role::Stale { .. })
    }

    /// Takes a new replica set (metadata changed): starts recovering when this core became
    /// the sequencer of a new epoch, steps down when it no longer is.
    pub fn update(&self, set: ReplicaSet, this_core: u32) {
        let epoch = protocol_epoch(set.epoch);
        let named = set.sequencer
            == Placement {
                node: self.node,
                core: this_core,
            };
        *self.set.borrow_mut() = set.clone();
        let current = self.role_epoch();
        if !named {
            if !matches!(&*self.role.borrow(), Role::Replica) {
                tracing::info!(shard = %self.shard, %epoch, "no longer this shard's sequencer");
                *self.role.borrow_mut() = Role::Replica;
                self.changed.notify();
            }
            return;
        }
        if current == Some(epoch) {
            return;
        }
        let sealed = self.replica.borrow().sealed();
        if sealed >= epoch {
            tracing::warn!(shard = %self.shard, %epoch, %sealed,
                "named sequencer of an epoch this replica already saw: asking for a new epoch");
            *self.role.borrow_mut() = Role::Stale { epoch };
            self.changed.notify();
            return;
        }
        let nodes: Vec<NodeId> = set.replicas.iter().map(|p| p.node).collect();
        let config = SequencerConfig {
            node: self.node,
            epoch,
            replicas: nodes,
            in_flight_entries_max: IN_FLIGHT_ENTRIES_MAX,
            uncommitted_entries_max: UNCOMMITTED_ENTRIES_MAX,
            retained_entries_max: RETAINED_ENTRIES_MAX,
            resend_after_ticks: RESEND_AFTER_TICKS,
        };
        tracing::info!(shard = %self.shard, %epoch, "recovering as the shard's sequencer");
        *self.role.borrow_mut() = Role::Recovering {
            recovery: Box::new(Recovery::new(config)),
            own_sealed: false,
            held: Vec::new(),
        };
        self.changed.notify();
        self.pump();
    }

    fn role_epoch(&self) -> Option<Epoch> {
        match &*self.role.borrow() {
            Role::Replica => None,
            Role::Recovering { recovery, .. } => Some(recovery.epoch()),
            Role::Sequencing(sequencer) => Some(sequencer.epoch()),
            Role::Stale { epoch, .. } | Role::Deposed { epoch } | Role::DataLoss { epoch, .. } => {
                Some(*epoch)
            }
        }
    }

    /// Messages from node `from`.
    pub fn deliver(&self, from: NodeId, messages: Vec<Message>) {
        self.inbox
            .borrow_mut()
            .extend(messages.into_iter().map(|m| (from, m)));
        self.pump();
    }

    /// A timer tick.
    pub fn tick(&self) {
        if self.failed.borrow().is_none() {
            self.replica_tick();
        }
        match &mut *self.role.borrow_mut() {
            Role::Recovering { recovery, .. } => recovery.on_tick(),
            Role::Sequencing(sequencer) => sequencer.on_tick(),
            _ => {}
        }
        self.pump();
    }

    fn replica_tick(&self) {
        let committed = self.visible.get();
        if committed > self.persisted.get().committed {
            self.persist_due.set(true);
            self.ops_changed.notify();
        }
    }

    /// While this node sequences the shard: the epoch, and where the log recovery adopted
    /// ends (what the epoch's first append continues). A refusal otherwise.
    pub fn sequencing(&self) -> Result<(Epoch, u64), ReplicationError> {
        let role = self.role.borrow();
        match (&*role, self.adopted.get()) {
            (Role::Sequencing(sequencer), Some((epoch, end)))
                if !sequencer.is_deposed() && sequencer.epoch() == epoch =>
            {
                Ok((epoch, end))
            }
            (other, _) => Err(role_refusal(self.shard, other)),
        }
    }

    /// Appends a batch (checked by the caller) of `count` records through this node's
    /// sequencer; returns its first offset once it is committed.
    pub async fn append(
        &self,
        bytes: Arc<[u8]>,
        count: u64,
        timeout: Duration,
    ) -> Result<u64, ReplicationError> {
        let (epoch, first) = self.sequence(bytes, count)?;
        self.wait_committed(epoch, first, count, timeout).await?;
        Ok(first)
    }

    /// Hands a batch of `count` records to this node's sequencer: its epoch and first offset
    /// ([`Self::wait_committed`] then says when it is committed).
    pub fn sequence(&self, bytes: Arc<[u8]>, count: u64) -> Result<(Epoch, u64), ReplicationError> {
        let shard = self.shard;
        if let Some(reason) = self.failed.borrow().clone() {
            return Err(ReplicationError::Storage { shard, reason });
        }
        let (epoch, first) = {
            let mut role = self.role.borrow_mut();
            match &mut *role {
                Role::Sequencing(sequencer) => {
                    let epoch = sequencer.epoch();
                    let first = sequencer
                        .append(bytes, count)
                        .map_err(|error| match error {
                            runnel_replicate::shard::AppendError::Backpressure { uncommitted } => {
                                ReplicationError::Backpressure { shard, uncommitted }
                            }
                            _ => ReplicationError::Deposed { shard },
                        })?;
                    (epoch, first)
                }
                other => return Err(role_refusal(shard, other)),
            }
        };
        self.pump();
        Ok((epoch, first))
    }

    /// Waits until the `count` records from `first` that epoch `epoch` sequenced are
    /// committed; [`ReplicationError::NoQuorum`] when `timeout` passes first or the epoch's
    /// sequencer is deposed (they may be stored or not).
    pub async fn wait_committed(
        &self,
        epoch: Epoch,
        first: u64,
        count: u64,
        timeout: Duration,
    ) -> Result<(), ReplicationError> {
        let shard = self.shard;
        let end = first + count;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let changed = self.changed.listen();
            let (sequenced_epoch, committed) = self.sequenced.get();
            if sequenced_epoch == epoch && committed >= end {
                return Ok(());
            }
            if let Some(reason) = self.failed.borrow().clone() {
                return Err(ReplicationError::Storage { shard, reason });
            }
            let still = matches!(&*self.role.borrow(),
                Role::Sequencing(s) if s.epoch() == epoch && !s.is_deposed());
            if !still || self.stopped.get() {
                // Sent to the replicas, then deposed: it may be stored or not.
                return Err(ReplicationError::NoQuorum { shard });
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(ReplicationError::NoQuorum { shard });
            }
            let _ = first_of(changed, sleep(left), std::future::pending::<()>()).await;
        }
    }

    /// Stops the host: its tasks end, waiting appends fail.
    pub fn stop(&self) {
        self.stopped.set(true);
        self.ops_changed.notify();
        self.outbox_changed.notify();
        self.changed.notify();
    }

    /// Whether [`Self::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.stopped.get()
    }

    /// Routes every effect of the state machines until none is left.
    fn pump(&self) {
        if self.pumping.replace(true) {
            return; // An outer pump on the stack routes what this call would.
        }
        loop {
            let mut progressed = false;
            loop {
                let next = self.inbox.borrow_mut().pop_front();
                let Some((from, message)) = next else { break };
                progressed = true;
                self.dispatch(from, message);
            }
            progressed |= self.route_replica();
            progressed |= self.route_role();
            if !progressed && self.inbox.borrow().is_empty() {
                break;
            }
        }
        self.pumping.set(false);
    }

    fn dispatch(&self, from: NodeId, message: Message) {
        match message {
            Message::Store { .. } | Message::Seal { .. } => {
                if self.failed.borrow().is_none() {
                    self.replica.borrow_mut().on_message(from, message);
                }
            }
            _ => {
                let mut role = self.role.borrow_mut();
                match &mut *role {
                    Role::Recovering {
                        recovery,
                        own_sealed,
                        held,
                    } => {
                        let own_digest = from == self.node
                            && matches!(&message, Message::Digest { epoch, .. } if *epoch == recovery.epoch());
                        recovery.on_message(from, message);
                        if own_digest && !*own_sealed {
                            // This node's replica is sealed durably: seals may leave now.
                            *own_sealed = true;
                            let held = std::mem::take(held);
                            drop(role);
                            for (to, message) in held {
                                self.send(to, message);
                            }
                        }
                    }
                    Role::Sequencing(sequencer) => sequencer.on_message(from, message),
                    _ => {}
                }
            }
        }
    }

    fn route_replica(&self) -> bool {
        let effects = self.replica.borrow_mut().take_effects();
        let any = !effects.is_empty();
        for effect in effects {
            match effect {
                ReplicaEffect::Storage { op_id, op } => {
                    self.ops.borrow_mut().push_back((op_id, op));
                    self.ops_changed.notify();
                }
                ReplicaEffect::Send { to, message } => self.send(to, message),
                ReplicaEffect::Committed { offset } => {
                    let after_op = self.replica.borrow().last_op_id();
                    self.unapplied_commits
                        .borrow_mut()
                        .push_back((after_op, offset));
                    self.release_commits();
                }
            }
        }
        any
    }

    /// Makes visible the committed offsets whose storage operations are all performed.
    fn release_commits(&self) {
        let performed = self.performed_op.get();
        let mut released = None;
        {
            let mut unapplied = self.unapplied_commits.borrow_mut();
            while let Some(&(after_op, offset)) = unapplied.front() {
                if after_op > performed {
                    break;
                }
                unapplied.pop_front();
                released = Some(offset);
            }
        }
        if let Some(offset) = released {
            if offset > self.visible.get() {
                self.visible.set(offset);
                self.changed.notify();
            }
        }
    }

    /// Storage performed operations up to `op_id` (written at least).
    fn performed(&self, op_id: u64) {
        self.performed_op.set(self.performed_op.get().max(op_id));
        self.release_commits();
    }

    fn route_role(&self) -> bool {
        let mut role = self.role.borrow_mut();
        match &mut *role {
            Role::Recovering {
                recovery,
                own_sealed,
                held,
            } => {
                let messages = recovery.take_messages();
                let mut any = !messages.is_empty();
                let mut now = Vec::new();
                for (to, message) in messages {
                    if to == self.node || *own_sealed {
                        now.push((to, message));
                    } else {
                        held.push((to, message));
                    }
                }
                let outcome = recovery.outcome();
                let epoch = recovery.epoch();
                match outcome {
                    RecoveryOutcome::Pending => {}
                    RecoveryOutcome::Done(sequencer) => {
                        tracing::info!(shard = %self.shard, %epoch,
                            next = sequencer.next_offset(), committed = sequencer.committed(),
                            "recovered: sequencing");
                        self.sequenced.set((epoch, sequencer.committed()));
                        self.adopted.set(Some((epoch, sequencer.next_offset())));
                        *role = Role::Sequencing(sequencer);
                        any = true;
                        self.changed.notify();
                    }
                    RecoveryOutcome::Deposed { by } => {
                        tracing::info!(shard = %self.shard, %epoch, %by, "recovery deposed");
                        *role = Role::Deposed { epoch };
                        self.changed.notify();
                    }
                    RecoveryOutcome::DataLoss {
                        committed,
                        adopted_end,
                    } => {
                        tracing::error!(shard = %self.shard, %epoch, committed, adopted_end,
                            "DATA LOSS: the replicas reached hold less than was committed; \
                             the shard refuses appends");
                        *role = Role::DataLoss {
                            epoch,
                            committed,
                            adopted_end,
                        };
                        self.changed.notify();
                    }
                }
                drop(role);
                for (to, message) in now {
                    self.send(to, message);
                }
                any
            }
            Role::Sequencing(sequencer) => {
                let effects = sequencer.take_effects();
                let epoch = sequencer.epoch();
                drop(role);
                let any = !effects.is_empty();
                for effect in effects {
                    match effect {
                        SequencerEffect::Send { to, message } => self.send(to, message),
                        SequencerEffect::Committed { offset } => {
                            self.sequenced.set((epoch, offset));
                            self.changed.notify();
                        }
                        SequencerEffect::ReadCommitted { from, to } => self.read_back(from, to),
                        SequencerEffect::Deposed { by } => {
                            tracing::info!(shard = %self.shard, %epoch, %by, "sequencer deposed");
                            *self.role.borrow_mut() = Role::Deposed { epoch };
                            self.changed.notify();
                        }
                    }
                }
                any
            }
            _ => false,
        }
    }

    fn send(&self, to: NodeId, message: Message) {
        if to == self.node {
            self.inbox.borrow_mut().push_back((to, message));
        } else {
            let mut outboxes = self.outboxes.borrow_mut();
            let queue = outboxes.entry(to).or_default();
            if queue.len() >= super::OUTBOX_MESSAGES_MAX {
                // The node does not take them: drop the oldest (the protocol resends).
                queue.pop_front();
            }
            queue.push_back(message);
            self.outbox_changed.notify();
        }
    }

    /// Reads committed entries `[from, to)` back from this node's log for the sequencer, in a
    /// task; [`Self::collect_reads`] hands them over at the next tick (if the read fails the
    /// sequencer asks again).
    fn read_back(&self, from: u64, to: u64) {
        // Only what this log agrees is committed: beyond, it may still hold a divergent suffix
        // its replica has yet to truncate. A read ending short is ignored and asked again.
        let to = to.min(self.visible.get());
        let log = Rc::clone(&self.log);
        let slot: ReadSlot = Rc::new(RefCell::new(None));
        self.reads
            .borrow_mut()
            .push((self.read_epoch(), Rc::clone(&slot)));
        runnel_segment::runtime::spawn_detached(async move {
            let entries = match read_entries(&log, from, to).await {
                Ok(entries) => entries.into_iter().filter(|e| e.end() <= to).collect(),
                Err(error) => {
                    tracing::warn!(%error, from, to, "reading committed entries back");
                    Vec::new()
                }
            };
            *slot.borrow_mut() = Some(entries);
        });
    }

    fn read_epoch(&self) -> Epoch {
        self.role_epoch().unwrap_or(Epoch(0))
    }

    /// Hands finished read-backs to the sequencer (the tick task calls it).
    pub fn collect_reads(&self) {
        let epoch = self.read_epoch();
        let mut done = Vec::new();
        self.reads
            .borrow_mut()
            .retain(|(read_epoch, slot)| match slot.borrow_mut().take() {
                Some(entries) => {
                    if *read_epoch == epoch {
                        done.push(entries);
                    }
                    false
                }
                None => true,
            });
        if done.is_empty() {
            return;
        }
        for entries in done {
            if let Role::Sequencing(sequencer) = &mut *self.role.borrow_mut() {
                sequencer.on_read(entries);
            }
        }
        self.pump();
    }

    /// The storage task: performs the replica's storage operations in order and reports them.
    pub async fn run_storage(self: Rc<Self>) {
        loop {
            if self.stopped.get() {
                return;
            }
            let changed = self.ops_changed.listen();
            let ops: Vec<(u64, StorageOp)> = self.ops.borrow_mut().drain(..).collect();
            if ops.is_empty() {
                if self.persist_due.replace(false) {
                    if let Err(reason) = self.persist_committed().await {
                        self.fail_storage(reason);
                        return;
                    }
                    continue;
                }
                changed.await;
                continue;
            }
            if let Err(reason) = self.perform(ops).await {
                self.fail_storage(reason);
                return;
            }
        }
    }

    /// Performs the first `max` storage operations queued, as the storage task would; for
    /// tests that stop a replica between two of them (a crash).
    #[cfg(test)]
    pub(super) async fn perform_queued(&self, max: usize) -> Result<(), String> {
        let ops: Vec<(u64, StorageOp)> = {
            let mut queued = self.ops.borrow_mut();
            let take = max.min(queued.len());
            queued.drain(..take).collect()
        };
        self.perform(ops).await
    }

    async fn perform(&self, ops: Vec<(u64, StorageOp)>) -> Result<(), String> {
        let durability = self.set.borrow().durability;
        let mut unsynced: Option<(u64, u64)> = None;
        for (op_id, op) in ops {
            match op {
                StorageOp::Seal { epoch } => {
                    self.log.sync_all().await.map_err(|e| e.to_string())?;
                    let state = ReplicaState {
                        sealed: epoch.max(self.persisted.get().sealed),
                        committed: self.durable_committed(self.visible.get()),
                    };
                    self.store_state(state).await?;
                    unsynced = None;
                    self.performed(op_id);
                    self.synced(op_id);
                }
                StorageOp::Truncate { from } => {
                    self.log
                        .truncate_from(Offset(from))
                        .await
                        .map_err(|e| e.to_string())?;
                    unsynced = None;
                    self.performed(op_id);
                    self.synced(op_id);
                }
                StorageOp::Append { entry, .. } => {
                    let appended = self
                        .log
                        .append_at(
                            Offset(entry.first),
                            stamped_epoch(entry.epoch),
                            &entry.bytes,
                        )
                        .await
                        .map_err(|e| e.to_string())?;
                    assert_eq!(
                        appended.base_offset.0, entry.first,
                        "a replica appends at the offset its sequencer gave"
                    );
                    self.performed(op_id);
                    self.replica.borrow_mut().on_written(op_id);
                    // Readers bounded by the written end may see further now.
                    self.changed.notify();
                    self.pump();
                    unsynced = Some((op_id, entry.end()));
                }
            }
        }
        if let (Some((op_id, end)), Durability::Fsync) = (unsynced, durability) {
            self.log
                .wait_durable(Offset(end - 1))
                .await
                .map_err(|e| e.to_string())?;
            self.synced(op_id);
        }
        Ok(())
    }

    fn synced(&self, op_id: u64) {
        self.replica.borrow_mut().on_synced(op_id);
        self.pump();
    }

    /// `known` (a committed offset the log agrees with), as far as the log holds it durably,
    /// and never below what the state file already says.
    fn durable_committed(&self, known: u64) -> u64 {
        known
            .min(self.log.durable_offset().0)
            .max(self.persisted.get().committed)
    }

    /// Writes the committed offset the log agrees with to the state file.
    async fn persist_committed(&self) -> Result<(), String> {
        let committed = self.durable_committed(self.visible.get());
        let persisted = self.persisted.get();
        if committed <= persisted.committed {
            return Ok(());
        }
        self.store_state(ReplicaState {
            sealed: persisted.sealed,
            committed,
        })
        .await
    }

    async fn store_state(&self, state: ReplicaState) -> Result<(), String> {
        let dir = self.dir.clone();
        spawn_blocking(move || state.store(&dir))
            .await
            .map_err(|e| e.to_string())?;
        self.persisted.set(state);
        Ok(())
    }

    fn fail_storage(&self, reason: String) {
        tracing::error!(shard = %self.shard, %reason,
            "replica storage failed: the replica stops and the shard refuses appends");
        *self.failed.borrow_mut() = Some(reason);
        self.changed.notify();
    }

    /// The messages waiting for `to`: at most `max`, and no more batch bytes than
    /// `bytes_max` beyond the first message.
    pub fn take_outbox(&self, to: NodeId, max: usize, bytes_max: usize) -> Vec<Message> {
        let mut outboxes = self.outboxes.borrow_mut();
        let Some(queue) = outboxes.get_mut(&to) else {
            return Vec::new();
        };
        let mut take = 0;
        let mut bytes = 0;
        for message in queue.iter() {
            let size = message_bytes(message);
            if take >= max || (take > 0 && bytes + size > bytes_max) {
                break;
            }
            bytes += size;
            take += 1;
        }
        queue.drain(..take).collect()
    }

    /// The nodes with messages waiting.
    pub fn outbox_nodes(&self) -> Vec<NodeId> {
        self.outboxes
            .borrow()
            .iter()
            .filter(|(_, queue)| !queue.is_empty())
            .map(|(node, _)| *node)
            .collect()
    }

    /// Waits until a message is queued for another node (or the host stops).
    pub async fn outbox_changed(&self) {
        let changed = self.outbox_changed.listen();
        if self.stopped.get() || !self.outbox_nodes().is_empty() {
            return;
        }
        changed.await;
    }

    /// The core of `node` in the replica set.
    pub fn core_of(&self, node: NodeId) -> Option<u32> {
        self.set
            .borrow()
            .replicas
            .iter()
            .find(|p| p.node == node)
            .map(|p| p.core)
    }

    /// Waits until the committed offset or the role changes (or `timeout` passes).
    pub async fn wait_changed(&self, timeout: Duration) {
        let changed = self.changed.listen();
        let _ = first_of(changed, sleep(timeout), std::future::pending::<()>()).await;
    }
}

/// Where a read-back task leaves the entries it read.
type ReadSlot = Rc<RefCell<Option<Vec<Entry>>>>;

fn role_refusal(shard: ShardId, role: &Role) -> ReplicationError {
    match role {
        Role::Replica | Role::Deposed { .. } | Role::Stale { .. } => {
            ReplicationError::Deposed { shard }
        }
        Role::Recovering { .. } => ReplicationError::Recovering { shard },
        Role::Sequencing(_) => ReplicationError::Deposed { shard },
        Role::DataLoss {
            committed,
            adopted_end,
            ..
        } => ReplicationError::DataLoss {
            shard,
            committed: *committed,
            adopted_end: *adopted_end,
        },
    }
}

/// The entries of `log` from the one holding `from` to the one ending at or after `to` (the
/// log's end at most), with their bytes.
pub async fn read_entries(log: &OpenLog, from: u64, to: u64) -> Result<Vec<Entry>, LogError> {
    let mut entries = Vec::new();
    let end = log.next_offset().0.min(to);
    let mut next = from.max(log.start_offset().0);
    while next < end {
        let chunk = log
            .read(Offset(next), READ_CHUNK_BYTES, ReadBound::Written)
            .await?;
        if chunk.is_empty() {
            break;
        }
        for view in chunk.batches() {
            entries.push(Entry {
                first: view.base_offset().0,
                count: u64::from(view.record_count()),
                epoch: protocol_epoch(view.header().epoch),
                bytes: Arc::from(view.as_bytes()),
            });
        }
        next = chunk.next_offset().0;
    }
    Ok(entries)
}

/// The batch bytes a message carries (what bounds a delivery's size).
fn message_bytes(message: &Message) -> usize {
    match message {
        Message::Store { entry, .. } => entry.bytes.len(),
        Message::Digest { tail, .. } => tail.iter().map(|e| e.bytes.len()).sum(),
        _ => 0,
    }
}
