//! A deterministic simulator of one replicated shard: R nodes each running a [`Replica`] (and,
//! when metadata names them, a [`Recovery`] then a [`Sequencer`]), a virtual clock, a network
//! that drops, duplicates, delays, reorders and partitions (also one way), storage that loses
//! what was not synced when its node crashes, nodes that pause and wake up later, an oracle
//! metadata service (linearizable: it bumps the epoch and names a sequencer), and clients that
//! append, sometimes to a stale sequencer.
//!
//! Everything random comes from one seed: a failure prints it, and [`run`] with that seed
//! replays it (`RUNNEL_SIM_FIRST_SEED=<seed> RUNNEL_SIM_SEEDS=1 cargo test -p runnel-replicate
//! --test shard_sim`). The checks of [`Checker`] run on every event: the committed log only
//! grows and never changes; a replica's log below its committed offset is the committed log;
//! one sequencer commits per epoch; every acknowledged append is in the committed log where it
//! was acknowledged. At the end the faults stop and a new append must commit (liveness).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use super::{
    Durability, Entry, Epoch, Message, Mutation, NodeId, Recovery, RecoveryOutcome, Replica,
    ReplicaEffect, Sequencer, SequencerConfig, SequencerEffect, StorageOp,
};
use crate::group::SplitMix64;

/// Events in one run, at most: more is a message storm (two state machines answering each
/// other without end), reported as a failure rather than a hang.
const EVENTS_MAX: u64 = 1_000_000;

/// The shape of a run. Rates are per million; times in virtual milliseconds.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Replicas (nodes 1 to R).
    pub replicas: u64,
    /// The stream's durability (`Memory` runs have no crashes: they lose data by design).
    pub durability: Durability,
    /// Virtual time with faults.
    pub faulty_ms: u64,
    /// Virtual time after the faults stop, in which an append must commit.
    pub healing_ms: u64,
    /// Nodes tick this often.
    pub tick_ms: u64,
    /// A message is lost with this chance.
    pub drop_per_million: u64,
    /// A message is delivered twice with this chance.
    pub duplicate_per_million: u64,
    /// A message takes 1 to this many milliseconds.
    pub delay_ms_max: u64,
    /// A storage write is synced within this many milliseconds.
    pub sync_ms_max: u64,
    /// Every this many milliseconds the world may change.
    pub chaos_every_ms: u64,
    /// At a chaos step a node crashes with this chance.
    pub crash_per_million: u64,
    /// At a chaos step a node pauses with this chance (for up to `pause_ms_max`).
    pub pause_per_million: u64,
    /// The longest pause.
    pub pause_ms_max: u64,
    /// At a chaos step metadata suspects a working sequencer and fails over (a false
    /// suspicion: the old one keeps running until it learns).
    pub spurious_failover_per_million: u64,
    /// A crashed node restarts within this long.
    pub restart_ms_max: u64,
    /// A client appends this often.
    pub append_every_ms: u64,
    /// An append goes to a random node's sequencer instead of the current one (stale routing).
    pub stale_route_per_million: u64,
    /// A deliberate protocol bug (tests of the checks).
    pub mutation: Mutation,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            replicas: 3,
            durability: Durability::Fsync,
            faulty_ms: 900,
            healing_ms: 500,
            tick_ms: 10,
            drop_per_million: 50_000,
            duplicate_per_million: 20_000,
            delay_ms_max: 20,
            sync_ms_max: 6,
            chaos_every_ms: 100,
            crash_per_million: 120_000,
            pause_per_million: 80_000,
            pause_ms_max: 400,
            spurious_failover_per_million: 100_000,
            restart_ms_max: 300,
            append_every_ms: 12,
            stale_route_per_million: 100_000,
            mutation: Mutation::None,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimReport {
    /// Offsets in the committed log at the end.
    pub committed: u64,
    /// Appends acknowledged to clients.
    pub acknowledged: u64,
    /// Epochs whose sequencer committed something.
    pub committing_epochs: u64,
    /// Node crashes.
    pub crashes: u64,
    /// Failovers (epoch bumps).
    pub failovers: u64,
    /// Messages delivered.
    pub delivered: u64,
    /// Committed entries a sequencer read back for a lagging replica.
    pub catch_up_reads: u64,
}

/// A broken check: the seed replays it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimFailure {
    /// The run's seed.
    pub seed: u64,
    /// Virtual time of the failure.
    pub at_ms: u64,
    /// What broke.
    pub what: String,
}

impl std::fmt::Display for SimFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seed {} at {} ms: {} (replay: RUNNEL_SIM_FIRST_SEED={} RUNNEL_SIM_SEEDS=1 \
             cargo test -p runnel-replicate --test shard_sim)",
            self.seed, self.at_ms, self.what, self.seed
        )
    }
}

/// What storage holds: the synced image survives a crash, the live one is what was written.
#[derive(Debug, Clone, Default)]
struct Image {
    sealed: Epoch,
    committed: u64,
    entries: Vec<Entry>,
}

impl Image {
    fn apply(&mut self, op: &StorageOp) {
        match op {
            StorageOp::Seal { epoch } => self.sealed = self.sealed.max(*epoch),
            StorageOp::Truncate { from } => self.entries.retain(|e| e.first < *from),
            StorageOp::Append { entry, committed } => {
                assert_eq!(
                    self.entries.last().map_or(0, |e| e.end()),
                    entry.first,
                    "storage append not at the log's end"
                );
                self.committed = self.committed.max(*committed);
                self.entries.push(entry.clone());
            }
        }
    }

    fn end(&self) -> u64 {
        self.entries.last().map_or(0, |e| e.end())
    }
}

enum Role {
    None,
    Recovering(Recovery),
    Sequencing(Box<Sequencer>),
}

struct Node {
    replica: Option<Replica>,
    role: Role,
    incarnation: u64,
    paused: bool,
    /// Events that came while paused, handled when it wakes up.
    deferred: Vec<Event>,
    live: Image,
    synced: Image,
    unsynced: VecDeque<(u64, StorageOp)>,
    /// The highest epoch this node ever started recovering (kept by metadata: a node never
    /// runs one epoch twice).
    started_epoch: Epoch,
    /// Appends its current sequencer took: (first, end, batch id).
    appends: Vec<(u64, u64, u64)>,
}

#[derive(Debug, Clone)]
enum Event {
    Deliver {
        from: NodeId,
        to: NodeId,
        message: Message,
    },
    Tick {
        node: NodeId,
        incarnation: u64,
    },
    Written {
        node: NodeId,
        incarnation: u64,
        op_id: u64,
    },
    Synced {
        node: NodeId,
        incarnation: u64,
        op_id: u64,
    },
    Read {
        node: NodeId,
        incarnation: u64,
        epoch: Epoch,
        entries: Vec<Entry>,
    },
    Restart {
        node: NodeId,
    },
    Resume {
        node: NodeId,
    },
    Chaos,
    Append,
}

impl Event {
    /// The node whose state the event changes (none for world events).
    fn node(&self) -> Option<NodeId> {
        match self {
            Event::Deliver { to, .. } => Some(*to),
            Event::Tick { node, .. }
            | Event::Written { node, .. }
            | Event::Synced { node, .. }
            | Event::Read { node, .. } => Some(*node),
            Event::Restart { .. } | Event::Resume { .. } | Event::Chaos | Event::Append => None,
        }
    }
}

/// The checks. Records are identified by (batch id, index in the batch).
#[derive(Default)]
struct Checker {
    /// The committed log: the record at each offset.
    log: Vec<(u64, u64)>,
    /// Epoch → the node whose sequencer committed in it.
    committers: BTreeMap<Epoch, NodeId>,
    acknowledged: u64,
}

fn batch_id(entry: &Entry) -> u64 {
    let mut bytes = [0u8; 8];
    for (slot, byte) in bytes.iter_mut().zip(entry.bytes.iter()) {
        *slot = *byte;
    }
    u64::from_le_bytes(bytes)
}

impl Checker {
    /// `entries` (covering offsets below `offset` where known) are committed.
    fn committed(&mut self, offset: u64, entries: &[Entry], by: &str) -> Result<(), String> {
        for entry in entries {
            let id = batch_id(entry);
            for (index, at) in (entry.first..entry.end().min(offset)).enumerate() {
                let record = (id, index as u64);
                match self.log.get(at as usize) {
                    Some(known) if *known != record => {
                        return Err(format!(
                            "{by}: offset {at} committed as batch {} record {} but holds batch \
                             {id} record {index}",
                            known.0, known.1
                        ));
                    }
                    Some(_) => {}
                    None if at as usize == self.log.len() => self.log.push(record),
                    None => {
                        return Err(format!(
                            "{by}: offset {at} committed while the committed log ends at {}",
                            self.log.len()
                        ));
                    }
                }
            }
        }
        if offset as usize > self.log.len() {
            return Err(format!(
                "{by}: committed {offset} without the records (log ends at {})",
                self.log.len()
            ));
        }
        Ok(())
    }

    /// A node's stored log below its committed offset is the committed log.
    fn replica(&self, node: NodeId, committed: u64, image: &Image) -> Result<(), String> {
        if committed as usize > self.log.len() {
            return Err(format!(
                "node {node} knows committed {committed} beyond the committed log's end {}",
                self.log.len()
            ));
        }
        let mut at = 0;
        for entry in &image.entries {
            if entry.first >= committed {
                break;
            }
            let id = batch_id(entry);
            for index in 0..entry.count {
                let offset = entry.first + index;
                if offset >= committed {
                    break;
                }
                if self.log.get(offset as usize) != Some(&(id, index)) {
                    return Err(format!(
                        "node {node} holds batch {id} record {index} at committed offset \
                         {offset}, the committed log {:?}",
                        self.log.get(offset as usize)
                    ));
                }
            }
            at = entry.end();
        }
        if at < committed {
            return Err(format!(
                "node {node} knows committed {committed} but its log ends at {at}"
            ));
        }
        Ok(())
    }
}

/// Runs one simulation from `seed`. A panic inside (an assertion of the state machines) fails
/// the run like a broken check.
pub fn run(seed: u64, config: &SimConfig) -> Result<SimReport, SimFailure> {
    let mut world = World::new(seed, config.clone());
    let what = match crate::sim::catch_panic(|| world.run()) {
        Ok(()) => return Ok(world.report),
        Err(what) => what,
    };
    Err(SimFailure {
        seed,
        at_ms: world.now_ms,
        what,
    })
}

struct World {
    config: SimConfig,
    rng: SplitMix64,
    now_ms: u64,
    sequence: u64,
    events: BTreeMap<(u64, u64), Event>,
    nodes: BTreeMap<NodeId, Node>,
    /// Directed links that lose everything: (from, to).
    cut: Vec<(NodeId, NodeId)>,
    faults: bool,
    /// The oracle metadata: current epoch and its sequencer.
    epoch: Epoch,
    sequencer: NodeId,
    next_batch: u64,
    /// The first batch appended after the faults stopped.
    healing_batch: Option<u64>,
    healed_committed: bool,
    checker: Checker,
    report: SimReport,
}

impl World {
    fn new(seed: u64, config: SimConfig) -> World {
        let mut nodes = BTreeMap::new();
        for id in 1..=config.replicas {
            nodes.insert(
                NodeId(id),
                Node {
                    replica: None,
                    role: Role::None,
                    incarnation: 0,
                    paused: false,
                    deferred: Vec::new(),
                    live: Image::default(),
                    synced: Image::default(),
                    unsynced: VecDeque::new(),
                    started_epoch: Epoch(0),
                    appends: Vec::new(),
                },
            );
        }
        World {
            config,
            rng: SplitMix64::new(seed),
            now_ms: 0,
            sequence: 0,
            events: BTreeMap::new(),
            nodes,
            cut: Vec::new(),
            faults: true,
            epoch: Epoch(1),
            sequencer: NodeId(1),
            next_batch: 1,
            healing_batch: None,
            healed_committed: false,
            checker: Checker::default(),
            report: SimReport::default(),
        }
    }

    fn run(&mut self) -> Result<(), String> {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.restart(id)?;
        }
        self.schedule(self.config.chaos_every_ms, Event::Chaos);
        self.schedule(self.config.append_every_ms, Event::Append);
        let end = self.config.faulty_ms + self.config.healing_ms;
        let mut handled = 0u64;
        while let Some(((at, _), event)) = self.events.pop_first() {
            if at > end {
                break;
            }
            handled += 1;
            if handled > EVENTS_MAX {
                return Err(format!(
                    "more than {EVENTS_MAX} events: a message storm ({})",
                    self.describe()
                ));
            }
            self.now_ms = at;
            if self.faults && at >= self.config.faulty_ms {
                self.heal()?;
            }
            self.handle(event)?;
        }
        // The full check of every replica, and liveness.
        for (&id, node) in &self.nodes {
            if let Some(replica) = &node.replica {
                self.checker.replica(id, replica.committed(), &node.live)?;
            }
        }
        if !self.healed_committed {
            return Err(format!(
                "no append committed in the {} ms after the faults stopped (epoch {}, \
                 sequencer {}): {}",
                self.config.healing_ms,
                self.epoch,
                self.sequencer.0,
                self.describe()
            ));
        }
        self.report.committed = self.checker.log.len() as u64;
        self.report.acknowledged = self.checker.acknowledged;
        self.report.committing_epochs = self.checker.committers.len() as u64;
        Ok(())
    }

    fn describe(&self) -> String {
        let mut out = Vec::new();
        for (id, node) in &self.nodes {
            let role = match &node.role {
                Role::None => "-".to_string(),
                Role::Recovering(r) => format!("recovering {}", r.epoch()),
                Role::Sequencing(s) => format!(
                    "sequencing {} committed {} next {}{}",
                    s.epoch(),
                    s.committed(),
                    s.next_offset(),
                    if s.is_deposed() { " deposed" } else { "" }
                ),
            };
            let replica = node.replica.as_ref().map_or("down".to_string(), |r| {
                format!(
                    "sealed {} committed {} end {}",
                    r.sealed(),
                    r.committed(),
                    r.end()
                )
            });
            out.push(format!(
                "{}: {replica}; {role}{}",
                id.0,
                if node.paused { " (paused)" } else { "" }
            ));
        }
        out.join(" | ")
    }

    fn schedule(&mut self, after_ms: u64, event: Event) {
        self.sequence += 1;
        self.events
            .insert((self.now_ms + after_ms, self.sequence), event);
    }

    fn node(&mut self, id: NodeId) -> Result<&mut Node, String> {
        self.nodes
            .get_mut(&id)
            .ok_or_else(|| format!("no node {}", id.0))
    }

    fn restart(&mut self, id: NodeId) -> Result<(), String> {
        let durability = self.config.durability;
        let mutation = self.config.mutation;
        let node = self.node(id)?;
        if node.replica.is_some() {
            return Ok(());
        }
        let image = node.synced.clone();
        node.live = image.clone();
        node.unsynced.clear();
        let end = image.end();
        let committed = image.committed.min(end);
        let last_epoch = image.entries.last().map_or(Epoch(0), |e| e.epoch);
        let tail: Vec<Entry> = image
            .entries
            .iter()
            .filter(|e| e.end() >= committed)
            .cloned()
            .collect();
        node.replica = Some(Replica::restore_mutated(
            durability,
            image.sealed,
            committed,
            end,
            last_epoch,
            tail,
            mutation,
        ));
        node.role = Role::None;
        node.incarnation += 1;
        let incarnation = node.incarnation;
        self.schedule(
            self.config.tick_ms,
            Event::Tick {
                node: id,
                incarnation,
            },
        );
        self.start_recovery_if_named(id)
    }

    fn crash(&mut self, id: NodeId) -> Result<(), String> {
        let node = self.node(id)?;
        if node.replica.is_none() {
            return Ok(());
        }
        node.replica = None;
        node.role = Role::None;
        node.paused = false;
        node.deferred.clear();
        node.appends.clear();
        node.live = node.synced.clone();
        node.unsynced.clear();
        node.incarnation += 1;
        self.report.crashes += 1;
        let after = 1 + self.rng.below(self.config.restart_ms_max);
        self.schedule(after, Event::Restart { node: id });
        Ok(())
    }

    fn config_for(&self, node: NodeId, epoch: Epoch) -> SequencerConfig {
        SequencerConfig {
            node,
            epoch,
            replicas: self.nodes.keys().copied().collect(),
            in_flight_entries_max: 8,
            uncommitted_entries_max: 32,
            retained_entries_max: 12,
            resend_after_ticks: 3,
        }
    }

    /// The node named sequencer starts recovering the current epoch, once.
    fn start_recovery_if_named(&mut self, id: NodeId) -> Result<(), String> {
        let epoch = self.epoch;
        if self.sequencer != id {
            return Ok(());
        }
        let config = self.config_for(id, epoch);
        let mutation = self.config.mutation;
        let node = self.node(id)?;
        if node.replica.is_none() || node.paused || node.started_epoch >= epoch {
            return Ok(());
        }
        node.started_epoch = epoch;
        node.appends.clear();
        node.role = Role::Recovering(Recovery::new_mutated(config, mutation));
        self.drain(id)
    }

    /// Metadata bumps the epoch and names a sequencer.
    fn failover(&mut self) -> Result<(), String> {
        self.epoch = Epoch(self.epoch.0 + 1);
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        let working: Vec<NodeId> = ids
            .iter()
            .copied()
            .filter(|id| {
                self.nodes
                    .get(id)
                    .is_some_and(|n| n.replica.is_some() && !n.paused)
            })
            .collect();
        let pool = if working.is_empty() { &ids } else { &working };
        self.sequencer = self.rng.pick(pool).copied().unwrap_or(NodeId(1));
        self.report.failovers += 1;
        self.start_recovery_if_named(self.sequencer)
    }

    fn sequencer_works(&self) -> bool {
        self.nodes.get(&self.sequencer).is_some_and(|n| {
            n.replica.is_some()
                && !n.paused
                && (n.started_epoch == self.epoch)
                && !matches!(&n.role, Role::Sequencing(s) if s.is_deposed())
                && !matches!(n.role, Role::None)
        })
    }

    fn handle(&mut self, event: Event) -> Result<(), String> {
        if let Event::Tick { node, incarnation } = event {
            if self.node(node)?.paused {
                // A paused node's timer fires when it wakes up, not in between.
                self.schedule(self.config.tick_ms, Event::Tick { node, incarnation });
                return Ok(());
            }
        }
        if let Some(id) = event.node() {
            let node = self.node(id)?;
            if node.paused {
                node.deferred.push(event);
                return Ok(());
            }
        }
        match event {
            Event::Deliver { from, to, message } => {
                self.report.delivered += 1;
                self.deliver(from, to, message)
            }
            Event::Tick { node, incarnation } => {
                if self.node(node)?.incarnation != incarnation {
                    return Ok(());
                }
                self.schedule(self.config.tick_ms, Event::Tick { node, incarnation });
                match &mut self.node(node)?.role {
                    Role::None => {}
                    Role::Recovering(recovery) => recovery.on_tick(),
                    Role::Sequencing(sequencer) => sequencer.on_tick(),
                }
                self.drain(node)
            }
            Event::Written {
                node,
                incarnation,
                op_id,
            } => {
                let n = self.node(node)?;
                if n.incarnation == incarnation {
                    if let Some(replica) = n.replica.as_mut() {
                        replica.on_written(op_id);
                    }
                }
                self.drain(node)
            }
            Event::Synced {
                node,
                incarnation,
                op_id,
            } => {
                let n = self.node(node)?;
                if n.incarnation != incarnation {
                    return Ok(());
                }
                while n.unsynced.front().is_some_and(|(id, _)| *id <= op_id) {
                    if let Some((_, op)) = n.unsynced.pop_front() {
                        n.synced.apply(&op);
                    }
                }
                if let Some(replica) = n.replica.as_mut() {
                    replica.on_synced(op_id);
                }
                self.drain(node)
            }
            Event::Read {
                node,
                incarnation,
                epoch,
                entries,
            } => {
                let n = self.node(node)?;
                if n.incarnation == incarnation {
                    if let Role::Sequencing(sequencer) = &mut n.role {
                        if sequencer.epoch() == epoch {
                            sequencer.on_read(entries);
                        }
                    }
                }
                self.drain(node)
            }
            Event::Restart { node } => self.restart(node),
            Event::Resume { node } => {
                let n = self.node(node)?;
                n.paused = false;
                let deferred = std::mem::take(&mut n.deferred);
                for event in deferred {
                    self.schedule(0, event);
                }
                self.start_recovery_if_named(node)
            }
            Event::Chaos => {
                if self.faults {
                    self.chaos()?;
                } else if !self.sequencer_works() {
                    // Metadata keeps watching the sequencer after the faults stop.
                    self.failover()?;
                }
                self.schedule(self.config.chaos_every_ms, Event::Chaos);
                Ok(())
            }
            Event::Append => {
                self.schedule(self.config.append_every_ms, Event::Append);
                self.append()
            }
        }
    }

    fn deliver(&mut self, from: NodeId, to: NodeId, message: Message) -> Result<(), String> {
        let node = self.node(to)?;
        let Some(replica) = node.replica.as_mut() else {
            return Ok(());
        };
        match &message {
            Message::Store { .. } | Message::Seal { .. } => replica.on_message(from, message),
            _ => match &mut node.role {
                Role::None => {}
                Role::Recovering(recovery) => recovery.on_message(from, message),
                Role::Sequencing(sequencer) => sequencer.on_message(from, message),
            },
        }
        self.drain(to)
    }

    /// Carries out what a node's state machines asked, until they ask nothing more.
    fn drain(&mut self, id: NodeId) -> Result<(), String> {
        loop {
            let mut progressed = false;
            let node = self.node(id)?;
            let incarnation = node.incarnation;
            let replica_effects = node
                .replica
                .as_mut()
                .map(Replica::take_effects)
                .unwrap_or_default();
            let mut sends = Vec::new();
            let mut sequencer_effects = Vec::new();
            let mut outcome = None;
            match &mut node.role {
                Role::None => {}
                Role::Recovering(recovery) => {
                    sends = recovery.take_messages();
                    outcome = Some(recovery.outcome());
                }
                Role::Sequencing(sequencer) => sequencer_effects = sequencer.take_effects(),
            }
            match outcome {
                Some(RecoveryOutcome::Done(sequencer)) => {
                    node.role = Role::Sequencing(sequencer);
                    progressed = true;
                }
                Some(RecoveryOutcome::Deposed { .. }) => node.role = Role::None,
                Some(RecoveryOutcome::DataLoss {
                    committed,
                    adopted_end,
                }) => {
                    return Err(format!(
                        "node {} recovering lost data inside the fault model: committed \
                         {committed}, most up-to-date log ends at {adopted_end}",
                        id.0
                    ));
                }
                Some(RecoveryOutcome::Pending) | None => {}
            }
            progressed |= !replica_effects.is_empty() || !sends.is_empty();
            progressed |= !sequencer_effects.is_empty();
            for effect in replica_effects {
                self.replica_effect(id, incarnation, effect)?;
            }
            for (to, message) in sends {
                self.send(id, to, message);
            }
            for effect in sequencer_effects {
                self.sequencer_effect(id, incarnation, effect)?;
            }
            if !progressed {
                return Ok(());
            }
        }
    }

    fn replica_effect(
        &mut self,
        id: NodeId,
        incarnation: u64,
        effect: ReplicaEffect,
    ) -> Result<(), String> {
        match effect {
            ReplicaEffect::Storage { op_id, op } => {
                let node = self.node(id)?;
                node.live.apply(&op);
                node.unsynced.push_back((op_id, op));
                let written = self.rng.below(2);
                let synced = written + self.rng.below(self.config.sync_ms_max + 1);
                self.schedule(
                    written,
                    Event::Written {
                        node: id,
                        incarnation,
                        op_id,
                    },
                );
                self.schedule(
                    synced,
                    Event::Synced {
                        node: id,
                        incarnation,
                        op_id,
                    },
                );
                Ok(())
            }
            ReplicaEffect::Send { to, message } => {
                self.send(id, to, message);
                Ok(())
            }
            ReplicaEffect::Committed { offset } => {
                let node = self.node(id)?;
                let image = node.live.clone();
                self.checker.replica(id, offset, &image)
            }
        }
    }

    fn sequencer_effect(
        &mut self,
        id: NodeId,
        incarnation: u64,
        effect: SequencerEffect,
    ) -> Result<(), String> {
        match effect {
            SequencerEffect::Send { to, message } => self.send(id, to, message),
            SequencerEffect::Committed { offset } => {
                let node = self.node(id)?;
                let Role::Sequencing(sequencer) = &node.role else {
                    return Err("a commit from no sequencer".to_string());
                };
                let epoch = sequencer.epoch();
                let entries: Vec<Entry> = sequencer.entries().cloned().collect();
                let acked: Vec<(u64, u64, u64)> = node
                    .appends
                    .iter()
                    .copied()
                    .filter(|&(_, end, _)| end <= offset)
                    .collect();
                node.appends.retain(|&(_, end, _)| end > offset);
                if let Some(other) = self.checker.committers.insert(epoch, id) {
                    if other != id {
                        return Err(format!(
                            "two sequencers committed in {epoch}: nodes {} and {}",
                            other.0, id.0
                        ));
                    }
                }
                let by = format!("sequencer {epoch} on node {}", id.0);
                self.checker.committed(offset, &entries, &by)?;
                for (first, end, batch) in acked {
                    for (index, at) in (first..end).enumerate() {
                        if self.checker.log.get(at as usize) != Some(&(batch, index as u64)) {
                            return Err(format!(
                                "{by} acknowledged batch {batch} at {first} but offset {at} \
                                 is not its record"
                            ));
                        }
                    }
                    self.checker.acknowledged += 1;
                    if self.healing_batch.is_some_and(|b| batch >= b) {
                        self.healed_committed = true;
                    }
                }
            }
            SequencerEffect::ReadCommitted { from, to } => self.read(id, incarnation, from, to)?,
            SequencerEffect::Deposed { .. } => {}
        }
        Ok(())
    }

    /// A sequencer reads committed entries back: from its own node's log when it matched
    /// them, else from a reachable peer that knows them committed.
    fn read(&mut self, id: NodeId, incarnation: u64, from: u64, to: u64) -> Result<(), String> {
        let (epoch, own_matched) = match &self.node(id)?.role {
            Role::Sequencing(s) => (s.epoch(), s.matched(id)),
            _ => return Ok(()),
        };
        let mut sources: Vec<NodeId> = Vec::new();
        for (&peer, node) in &self.nodes {
            let knows = node.replica.as_ref().is_some_and(|r| r.committed() >= to);
            let reachable = !self.cut.contains(&(peer, id)) && !node.paused;
            if (peer == id && own_matched >= to) || (knows && reachable) {
                sources.push(peer);
            }
        }
        let Some(&source) = self.rng.pick(&sources) else {
            return Ok(()); // Nobody can serve it now: the sequencer asks again on a tick.
        };
        let entries: Vec<Entry> = self
            .node(source)?
            .live
            .entries
            .iter()
            .filter(|e| e.end() > from && e.first < to)
            .cloned()
            .collect();
        if entries.first().is_none_or(|e| e.first > from)
            || entries.last().is_none_or(|e| e.end() != to)
        {
            return Err(format!(
                "node {} cannot serve [{from}, {to}) to the sequencer on node {}",
                source.0, id.0
            ));
        }
        self.report.catch_up_reads += 1;
        let delay = if source == id {
            0
        } else {
            1 + self.rng.below(self.config.delay_ms_max)
        };
        self.schedule(
            delay,
            Event::Read {
                node: id,
                incarnation,
                epoch,
                entries,
            },
        );
        Ok(())
    }

    fn send(&mut self, from: NodeId, to: NodeId, message: Message) {
        if from == to {
            self.schedule(0, Event::Deliver { from, to, message });
            return;
        }
        if self.cut.contains(&(from, to)) || self.rng.chance(self.config.drop_per_million) {
            return;
        }
        if self.rng.chance(self.config.duplicate_per_million) {
            let delay = 1 + self.rng.below(self.config.delay_ms_max);
            let copy = message.clone();
            self.schedule(
                delay,
                Event::Deliver {
                    from,
                    to,
                    message: copy,
                },
            );
        }
        let delay = 1 + self.rng.below(self.config.delay_ms_max);
        self.schedule(delay, Event::Deliver { from, to, message });
    }

    fn append(&mut self) -> Result<(), String> {
        let mut target = self.sequencer;
        if self.rng.chance(self.config.stale_route_per_million) {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            target = self.rng.pick(&ids).copied().unwrap_or(target);
        }
        let batch = self.next_batch;
        let count = 1 + self.rng.below(3);
        let node = self.node(target)?;
        if node.paused {
            return Ok(());
        }
        let Role::Sequencing(sequencer) = &mut node.role else {
            return Ok(());
        };
        let bytes: Arc<[u8]> = Arc::from(batch.to_le_bytes().as_slice());
        let Ok(first) = sequencer.append(bytes, count) else {
            return Ok(());
        };
        node.appends.push((first, first + count, batch));
        self.next_batch += 1;
        if !self.faults && self.healing_batch.is_none() {
            self.healing_batch = Some(batch);
        }
        self.drain(target)
    }

    fn chaos(&mut self) -> Result<(), String> {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        // The network.
        match self.rng.below(6) {
            0 => self.cut.clear(),
            1 => {
                // One node cut off both ways.
                if let Some(&node) = self.rng.pick(&ids) {
                    for &other in &ids {
                        if other != node {
                            self.cut.push((node, other));
                            self.cut.push((other, node));
                        }
                    }
                }
            }
            2 => {
                // One direction between two nodes.
                let (Some(&a), Some(&b)) = (self.rng.pick(&ids), self.rng.pick(&ids)) else {
                    return Ok(());
                };
                if a != b {
                    self.cut.push((a, b));
                }
            }
            _ => {}
        }
        for id in ids.clone() {
            let crash = self.config.durability == Durability::Fsync
                && self.rng.chance(self.config.crash_per_million);
            if crash {
                self.crash(id)?;
            } else if self.rng.chance(self.config.pause_per_million) {
                let node = self.node(id)?;
                if node.replica.is_some() && !node.paused {
                    node.paused = true;
                    let after = 1 + self.rng.below(self.config.pause_ms_max);
                    self.schedule(after, Event::Resume { node: id });
                }
            }
        }
        let spurious = self.rng.chance(self.config.spurious_failover_per_million);
        if spurious || !self.sequencer_works() {
            self.failover()?;
        }
        Ok(())
    }

    /// The faults stop: the network heals, paused nodes wake, crashed ones restart, and
    /// metadata fails over if the sequencer does not work.
    fn heal(&mut self) -> Result<(), String> {
        self.faults = false;
        self.cut.clear();
        self.config.drop_per_million = 0;
        self.config.duplicate_per_million = 0;
        self.config.stale_route_per_million = 0;
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            if self.node(id)?.paused {
                self.handle(Event::Resume { node: id })?;
            }
            self.restart(id)?;
        }
        if !self.sequencer_works() {
            self.failover()?;
        }
        Ok(())
    }
}
