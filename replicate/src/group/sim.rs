//! A deterministic simulator of the metadata group: members, a virtual clock, a network that
//! drops, duplicates, delays, reorders and partitions (also one way), disks that lose what was
//! not synced when their member crashes, and a client proposing commands.
//!
//! Everything random comes from one seed, so a failure prints its seed and [`run`] with that
//! seed replays it exactly. After every event the checks of [`Checker`] run: at most one leader
//! per term; a committed entry never changes; every member's state equals the state of the
//! committed log's prefix, byte for byte. At the end the faults stop and the group must elect
//! a leader and commit again (liveness).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use runnel_core::{Offset, ShardId, StreamName};

use super::store::FOUNDING_INDEX;
use super::{
    GroupMember, GroupStore, MemberConfig, MembershipChange, Message, Persist, SplitMix64,
};
use crate::metadata::{
    decode_command, encode_command, encode_snapshot, Command, Durability, MetadataState, Node,
    NodeId, ProgressCommit, StreamConfig, SubscriptionConfig, SubscriptionId, SubscriptionName,
};

/// How often the leader looks at the group's members.
const MEMBERSHIP_EVERY_MS: u64 = 100;

/// A deliberate bug, to show that the checks catch what they are meant to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutation {
    /// None: the group as built.
    None,
    /// The disk acknowledges writes it never keeps: a crash loses synced votes and entries
    /// (what a missing fsync does).
    SyncLost,
    /// The network replaces the command of an entry it carries with another valid command
    /// (what a transport without integrity checks could do): a follower then applies a command
    /// that was never committed at that index.
    AlteredEntries,
    /// The disk keeps entries and terms but not the votes cast (a vote written without
    /// sync): a restarted member can vote twice in one term.
    VoteLost,
}

/// The shape of a run. Rates are per million per event; times in virtual milliseconds.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Nodes in the cluster, each a member of the group (ids 1 to `members`).
    pub members: u64,
    /// Members that are voters from the start (ids 1 to this); the others start knowing no
    /// group and join when the leader adds them.
    pub initial_voters: u64,
    /// Voters the leader grows the group to (the others stay learners).
    pub target_voters: u64,
    /// Members removed from the cluster halfway through the faults (the highest ids): from
    /// then on the leader's list of nodes lacks them, a removed leader hands its role over,
    /// and at the end the leader's group must not hold them. They keep running, never told.
    pub removed_members: u64,
    /// Virtual time with faults.
    pub faulty_ms: u64,
    /// Virtual time after the faults stop, in which the group must commit again.
    pub healing_ms: u64,
    /// Each member ticks this often.
    pub tick_ms: u64,
    /// A message is lost with this chance.
    pub drop_per_million: u64,
    /// A message is delivered twice with this chance.
    pub duplicate_per_million: u64,
    /// A message takes 1 to this many milliseconds (so messages overtake each other).
    pub delay_ms_max: u64,
    /// A write takes 0 to this many milliseconds to be synced.
    pub sync_ms_max: u64,
    /// Every this many milliseconds the network may change: cut a member off, cut one
    /// direction between two members, split the group, or heal.
    pub chaos_every_ms: u64,
    /// At each chaos step a live member crashes with this chance.
    pub crash_per_million: u64,
    /// A crashed member restarts after up to this long.
    pub restart_ms_max: u64,
    /// The client proposes a command this often.
    pub propose_every_ms: u64,
    /// Members take a snapshot after this many applied entries.
    pub compact_after_entries: u64,
    /// A deliberate bug (tests of the checks).
    pub mutation: Mutation,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            members: 3,
            initial_voters: 3,
            target_voters: 3,
            removed_members: 0,
            faulty_ms: 6_000,
            healing_ms: 4_000,
            tick_ms: 10,
            drop_per_million: 50_000,
            duplicate_per_million: 20_000,
            delay_ms_max: 30,
            sync_ms_max: 8,
            chaos_every_ms: 400,
            crash_per_million: 150_000,
            restart_ms_max: 800,
            propose_every_ms: 15,
            compact_after_entries: 40,
            mutation: Mutation::None,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimReport {
    /// Entries in the committed log at the end.
    pub committed: u64,
    /// Proposals acknowledged to the client (applied at the member that took them).
    pub acknowledged: u64,
    /// Distinct terms that had a leader.
    pub leader_terms: u64,
    /// Member crashes.
    pub crashes: u64,
    /// Messages delivered.
    pub delivered: u64,
    /// Voters of the group at the end, as its leader saw them.
    pub voters_at_end: u64,
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
            "seed {} at {} ms: {} (replay: group_sim::run({}, ..))",
            self.seed, self.at_ms, self.what, self.seed
        )
    }
}

#[derive(Debug)]
enum Event {
    Deliver {
        to: u64,
        message: Box<Message>,
    },
    /// The transport tells a sender what became of its snapshot message.
    SnapshotReport {
        from: u64,
        to: u64,
        delivered: bool,
    },
    Tick {
        member: u64,
        incarnation: u64,
    },
    Synced {
        member: u64,
        incarnation: u64,
    },
    Restart {
        member: u64,
    },
    Chaos,
    Propose,
    /// The leader's look at the group's members.
    Membership,
}

enum Input {
    Message(Box<Message>),
    /// Whether a snapshot this member sent to the peer arrived (the transport's report).
    SnapshotSent {
        to: u64,
        delivered: bool,
    },
    Tick,
    Propose(u64, Command),
    Membership(u64, MembershipChange),
    /// A removed leader hands its role to this voter.
    TransferLeader(u64),
}

struct Slot {
    member: Option<GroupMember>,
    /// What a crash leaves: the synced image of the member's log.
    disk: GroupStore,
    /// A write in flight (its sync not yet done).
    writing: Option<Persist>,
    /// Inputs that came while a write was in flight.
    queued: VecDeque<Input>,
    incarnation: u64,
}

/// The checks, fed with what members apply and who leads.
#[derive(Default)]
struct Checker {
    /// The committed log: term and bytes of each entry, index 1 first.
    log: Vec<(u64, Vec<u8>)>,
    /// The state after applying the committed log's first `i` entries, encoded: index i.
    state_bytes: Vec<Vec<u8>>,
    reference: MetadataState,
    leaders: BTreeMap<u64, u64>,
}

impl Checker {
    /// The committed log as a founded group starts: index 1 is the founding snapshot's.
    fn new() -> Checker {
        let mut reference = MetadataState::new();
        let mut state_bytes = vec![encode_snapshot(&reference)];
        let skipped = reference.skip(FOUNDING_INDEX);
        assert!(skipped.is_ok(), "index 1 follows an empty state");
        state_bytes.push(encode_snapshot(&reference));
        Checker {
            log: vec![(FOUNDING_INDEX, Vec::new())],
            state_bytes,
            reference,
            ..Checker::default()
        }
    }

    fn leader(&mut self, term: u64, id: u64) -> Result<(), String> {
        match self.leaders.insert(term, id) {
            Some(other) if other != id => {
                Err(format!("two leaders in term {term}: {other} and {id}"))
            }
            _ => Ok(()),
        }
    }

    fn committed(&mut self, entry: &raft::prelude::Entry, by: u64) -> Result<(), String> {
        let (index, term, data) = (entry.index, entry.term, entry.data.as_ref());
        let holds_command =
            entry.get_entry_type() == raft::prelude::EntryType::EntryNormal && !data.is_empty();
        let position = (index - 1) as usize;
        if let Some((known_term, known_data)) = self.log.get(position) {
            if *known_term != term || known_data != data {
                return Err(format!(
                    "member {by} applied a different entry at {index} (term {term}, {} bytes) \
                     than was committed there (term {known_term}, {} bytes)",
                    data.len(),
                    known_data.len()
                ));
            }
            return Ok(());
        }
        if position != self.log.len() {
            return Err(format!(
                "member {by} applied entry {index} when the committed log ends at {}",
                self.log.len()
            ));
        }
        self.log.push((term, data.to_vec()));
        let outcome = if !holds_command {
            self.reference.skip(index).map_err(|e| e.to_string())
        } else {
            let command = decode_command(data).map_err(|e| e.to_string())?;
            match self.reference.apply(index, &command) {
                Err(error) if !error.is_rejection() => Err(error.to_string()),
                _ => Ok(()),
            }
        };
        outcome.map_err(|e| format!("the reference state cannot apply entry {index}: {e}"))?;
        self.state_bytes.push(encode_snapshot(&self.reference));
        Ok(())
    }

    fn state(&self, member: &GroupMember) -> Result<(), String> {
        let index = member.applied_index() as usize;
        let Some(expected) = self.state_bytes.get(index) else {
            return Err(format!(
                "member {} applied up to {index}, past the committed log",
                member.id()
            ));
        };
        if encode_snapshot(member.state()) != *expected {
            return Err(format!(
                "member {} state at index {index} differs from the committed log's",
                member.id()
            ));
        }
        Ok(())
    }
}

struct World {
    config: SimConfig,
    rng: SplitMix64,
    now_ms: u64,
    sequence: u64,
    events: BinaryHeap<Reverse<(u64, u64, EventBox)>>,
    slots: BTreeMap<u64, Slot>,
    /// Directed links that drop everything: (from, to).
    cut: Vec<(u64, u64)>,
    faults: bool,
    checker: Checker,
    report: SimReport,
    next_proposal: u64,
    /// Proposals in flight: id → the member that took it.
    proposals: BTreeMap<u64, u64>,
}

/// Events ordered only by (time, sequence): the box is never compared.
struct EventBox(Event);

impl PartialEq for EventBox {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for EventBox {}
impl PartialOrd for EventBox {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for EventBox {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

/// Runs one simulation from `seed`. A panic inside (raft-rs asserting its own invariants, or
/// ours) is a failure of the run like a broken check.
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

impl World {
    fn new(seed: u64, config: SimConfig) -> World {
        let voters: Vec<u64> = (1..=config.initial_voters).collect();
        let members = config.members;
        let mut world = World {
            rng: SplitMix64::new(seed),
            now_ms: 0,
            sequence: 0,
            events: BinaryHeap::new(),
            slots: BTreeMap::new(),
            cut: Vec::new(),
            faults: true,
            checker: Checker::new(),
            report: SimReport::default(),
            next_proposal: 1,
            proposals: BTreeMap::new(),
            config,
        };
        for id in 1..=members {
            let disk = if voters.contains(&id) {
                GroupStore::founding(&voters)
            } else {
                GroupStore::joining()
            };
            world.slots.insert(
                id,
                Slot {
                    member: None,
                    disk,
                    writing: None,
                    queued: VecDeque::new(),
                    incarnation: 0,
                },
            );
        }
        world
    }

    fn run(&mut self) -> Result<(), String> {
        let ids: Vec<u64> = self.slots.keys().copied().collect();
        for id in ids {
            self.start(id)?;
        }
        self.schedule(self.config.chaos_every_ms, Event::Chaos);
        self.schedule(self.config.propose_every_ms, Event::Propose);
        self.schedule(MEMBERSHIP_EVERY_MS, Event::Membership);
        let end = self.config.faulty_ms + self.config.healing_ms;
        let mut committed_at_heal = None;
        while let Some(Reverse((at, _, EventBox(event)))) = self.events.pop() {
            if at > end {
                break;
            }
            self.now_ms = at;
            if self.faults && at >= self.config.faulty_ms {
                self.heal()?;
                committed_at_heal = Some(self.checker.log.len());
            }
            self.handle(event)?;
            self.check_leaders()?;
        }
        let at_heal = committed_at_heal.unwrap_or(0);
        if self.checker.log.len() <= at_heal {
            return Err(format!(
                "no progress in {} ms after the faults stopped (committed log stayed at \
                 {at_heal}); members: {}",
                self.config.healing_ms,
                self.describe()
            ));
        }
        let leader = self
            .slots
            .values()
            .filter_map(|slot| slot.member.as_ref())
            .find(|member| member.is_leader());
        let registered = self.registered();
        if let Some(leader) = leader {
            let members = leader.members();
            let held: Vec<u64> = members
                .voters
                .iter()
                .chain(&members.learners)
                .copied()
                .filter(|id| !registered.contains(id))
                .collect();
            if !held.is_empty() {
                return Err(format!(
                    "the group still holds removed members {held:?} (leader {}); members: {}",
                    leader.id(),
                    self.describe()
                ));
            }
        }
        let voters = leader.map(|leader| leader.members().voters.len() as u64);
        self.report.voters_at_end = voters.unwrap_or(0);
        if self.report.voters_at_end != self.config.target_voters {
            return Err(format!(
                "the group ended with {} voters (leader's view), not {}; members: {}",
                self.report.voters_at_end,
                self.config.target_voters,
                self.describe()
            ));
        }
        self.report.committed = self.checker.log.len() as u64;
        self.report.leader_terms = self.checker.leaders.len() as u64;
        Ok(())
    }

    /// Each member's view, for failure messages.
    fn describe(&self) -> String {
        let mut out = Vec::new();
        for (id, slot) in &self.slots {
            let view = match &slot.member {
                None => "down".to_string(),
                Some(member) => format!(
                    "voters {:?} learners {:?} term {} leader {:?}{} applied {} last {} commit {} \
                     writing {} queued {}",
                    member.members().voters,
                    member.members().learners,
                    member.term(),
                    member.leader(),
                    if member.is_leader() { " (leads)" } else { "" },
                    member.applied_index(),
                    member.store().last_index(),
                    member.store().hard_state().commit,
                    slot.writing.is_some(),
                    slot.queued.len()
                ),
            };
            out.push(format!("{id}: {view}"));
        }
        out.join("; ")
    }

    fn schedule(&mut self, after_ms: u64, event: Event) {
        self.sequence += 1;
        self.events.push(Reverse((
            self.now_ms + after_ms,
            self.sequence,
            EventBox(event),
        )));
    }

    fn start(&mut self, id: u64) -> Result<(), String> {
        let seed = self.rng.next_u64();
        let config = MemberConfig {
            compact_after_entries: self.config.compact_after_entries,
            ..MemberConfig::new(id)
        };
        let slot = self.slot(id)?;
        if slot.member.is_some() {
            // Already restarted (the faults stopped before its restart came due).
            return Ok(());
        }
        let member = GroupMember::start(config, slot.disk.clone(), seed)
            .map_err(|e| format!("member {id} cannot restart from its disk: {e}"))?;
        assert!(
            slot.writing.is_none() && slot.queued.is_empty(),
            "a crash leaves no write in flight and no queued input"
        );
        slot.member = Some(member);
        slot.incarnation += 1;
        let incarnation = slot.incarnation;
        self.schedule(
            self.config.tick_ms,
            Event::Tick {
                member: id,
                incarnation,
            },
        );
        Ok(())
    }

    fn slot(&mut self, id: u64) -> Result<&mut Slot, String> {
        self.slots
            .get_mut(&id)
            .ok_or_else(|| format!("no member {id}"))
    }

    fn handle(&mut self, event: Event) -> Result<(), String> {
        match event {
            Event::Deliver { to, message } => {
                self.report.delivered += 1;
                if message.get_msg_type() == raft::prelude::MessageType::MsgSnapshot {
                    let from = message.from;
                    self.schedule(
                        1,
                        Event::SnapshotReport {
                            from,
                            to,
                            delivered: true,
                        },
                    );
                }
                self.input(to, Input::Message(message))
            }
            Event::SnapshotReport {
                from,
                to,
                delivered,
            } => self.input(from, Input::SnapshotSent { to, delivered }),
            Event::Tick {
                member,
                incarnation,
            } => {
                if self.slot(member)?.incarnation != incarnation {
                    return Ok(());
                }
                self.schedule(
                    self.config.tick_ms,
                    Event::Tick {
                        member,
                        incarnation,
                    },
                );
                self.input(member, Input::Tick)
            }
            Event::Synced {
                member,
                incarnation,
            } => self.synced(member, incarnation),
            Event::Restart { member } => self.start(member),
            Event::Chaos => {
                if self.faults {
                    self.chaos();
                    let every = self.config.chaos_every_ms;
                    self.schedule(every, Event::Chaos);
                }
                Ok(())
            }
            Event::Propose => {
                self.propose()?;
                self.schedule(self.config.propose_every_ms, Event::Propose);
                Ok(())
            }
            Event::Membership => {
                self.schedule(MEMBERSHIP_EVERY_MS, Event::Membership);
                let ids = self.registered();
                let target = self.config.target_voters as usize;
                let transfers: Vec<(u64, u64)> = self
                    .slots
                    .iter()
                    .filter(|(id, _)| !ids.contains(id))
                    .filter_map(|(&id, slot)| {
                        let member = slot.member.as_ref().filter(|m| m.is_leader())?;
                        let to = member
                            .members()
                            .voters
                            .iter()
                            .copied()
                            .filter(|voter| ids.contains(voter))
                            .max_by_key(|&voter| member.matched(voter).unwrap_or(0))?;
                        Some((id, to))
                    })
                    .collect();
                for (id, to) in transfers {
                    self.input(id, Input::TransferLeader(to))?;
                }
                let changes: Vec<(u64, MembershipChange)> = self
                    .slots
                    .iter()
                    .filter_map(|(&id, slot)| {
                        let member = slot.member.as_ref()?;
                        member
                            .membership_step(&ids, target)
                            .map(|change| (id, change))
                    })
                    .collect();
                for (id, change) in changes {
                    let proposal = self.next_proposal;
                    self.next_proposal += 1;
                    self.input(id, Input::Membership(proposal, change))?;
                }
                Ok(())
            }
        }
    }

    /// The nodes the cluster knows now: every member, less the removed ones once they are
    /// removed.
    fn registered(&self) -> Vec<u64> {
        let removing = self.now_ms >= self.config.faulty_ms / 2;
        let kept = self.config.members - self.config.removed_members;
        self.slots
            .keys()
            .copied()
            .filter(|&id| !removing || id <= kept)
            .collect()
    }

    fn input(&mut self, id: u64, input: Input) -> Result<(), String> {
        let registered = self.registered();
        let slot = self.slot(id)?;
        let Some(member) = slot.member.as_mut() else {
            return Ok(());
        };
        if slot.writing.is_some() {
            slot.queued.push_back(input);
            return Ok(());
        }
        match input {
            // raft-rs ignores stale messages itself; an error is a message of another group,
            // which this simulation never sends, or one from a removed member, which keeps
            // talking because nobody tells it (the server drops those alike).
            Input::Message(message) => {
                let from = message.from;
                let removed = !registered.contains(&from);
                if let Err(error) = member.step(*message) {
                    if !removed {
                        return Err(format!("member {id} refused a message: {error}"));
                    }
                }
            }
            Input::Tick => member.tick(),
            Input::SnapshotSent { to, delivered } => member.snapshot_sent(to, delivered),
            Input::Propose(proposal, command) => {
                if member.propose(proposal, &command).is_ok() {
                    self.proposals.insert(proposal, id);
                }
            }
            Input::Membership(proposal, change) => {
                // Refused when leadership moved meanwhile; the next look tries again.
                let _ = member.propose_membership(proposal, change);
            }
            Input::TransferLeader(to) => member.transfer_leader(to),
        }
        self.drive(id)
    }

    /// Takes the member's ready: sends what may go now, starts the write.
    fn drive(&mut self, id: u64) -> Result<(), String> {
        let sync_ms = self.rng.below(self.config.sync_ms_max + 1);
        let slot = self.slot(id)?;
        if slot.writing.is_some() {
            return Ok(());
        }
        let Some(member) = slot.member.as_mut() else {
            return Ok(());
        };
        let Some(mut persist) = member.ready() else {
            return Ok(());
        };
        let send = std::mem::take(&mut persist.send_now);
        slot.writing = Some(persist);
        let incarnation = slot.incarnation;
        self.schedule(
            sync_ms,
            Event::Synced {
                member: id,
                incarnation,
            },
        );
        self.send(id, send);
        Ok(())
    }

    fn synced(&mut self, id: u64, incarnation: u64) -> Result<(), String> {
        let mutation = self.config.mutation;
        let slot = self.slot(id)?;
        if slot.incarnation != incarnation || slot.member.is_none() {
            return Ok(());
        }
        let Some(persist) = slot.writing.take() else {
            return Err(format!("member {id}: a sync with no write in flight"));
        };
        match mutation {
            Mutation::None | Mutation::AlteredEntries => persist.write_to(&mut slot.disk),
            Mutation::SyncLost => {}
            Mutation::VoteLost => {
                let kept = slot.disk.hard_state().clone();
                persist.write_to(&mut slot.disk);
                let mut hard_state = slot.disk.hard_state().clone();
                hard_state.vote = if hard_state.term == kept.term {
                    kept.vote
                } else {
                    0
                };
                slot.disk.set_hard_state(hard_state);
            }
        }
        let Some(member) = slot.member.as_mut() else {
            return Ok(());
        };
        let advanced = member
            .persisted()
            .map_err(|e| format!("member {id} cannot apply: {e}"))?;
        if let (Some(commit), true) = (advanced.commit, mutation != Mutation::SyncLost) {
            slot.disk.set_commit(commit);
        }
        if let Some(snapshot) = &advanced.compacted {
            if mutation != Mutation::SyncLost {
                slot.disk.keep_snapshot(snapshot.clone());
            }
        }
        for entry in &advanced.committed {
            self.checker.committed(entry, id)?;
        }
        for applied in &advanced.applied {
            if let Some(proposal) = applied.proposal {
                if self.proposals.get(&proposal) == Some(&id) {
                    self.proposals.remove(&proposal);
                    self.report.acknowledged += 1;
                }
            }
        }
        if let Some(member) = self.slots.get(&id).and_then(|slot| slot.member.as_ref()) {
            self.checker.state(member)?;
        }
        self.send(id, advanced.send);
        // Inputs that waited for the write, until the next write starts.
        loop {
            let slot = self.slot(id)?;
            if slot.writing.is_some() {
                break;
            }
            let Some(input) = slot.queued.pop_front() else {
                break;
            };
            self.input(id, input)?;
        }
        self.drive(id)
    }

    fn send(&mut self, from: u64, messages: Vec<Message>) {
        for message in messages {
            let to = message.to;
            let lost = self.cut.contains(&(from, to))
                || (self.faults && self.rng.chance(self.config.drop_per_million));
            if lost {
                // A snapshot goes over a stream whose failure the transport sees (a timeout).
                if message.get_msg_type() == raft::prelude::MessageType::MsgSnapshot {
                    let timeout = 2 * self.config.delay_ms_max;
                    self.schedule(
                        timeout,
                        Event::SnapshotReport {
                            from,
                            to,
                            delivered: false,
                        },
                    );
                }
                continue;
            }
            let copies = if self.faults && self.rng.chance(self.config.duplicate_per_million) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                let delay = 1 + self.rng.below(self.config.delay_ms_max);
                let mut message = message.clone();
                if self.config.mutation == Mutation::AlteredEntries && self.rng.chance(10_000) {
                    self.alter(&mut message);
                }
                self.schedule(
                    delay,
                    Event::Deliver {
                        to,
                        message: Box::new(message),
                    },
                );
            }
        }
    }

    /// [`Mutation::AlteredEntries`]: another command in place of the first command entry.
    fn alter(&mut self, message: &mut Message) {
        let replacement = encode_command(&self.random_command());
        if let Some(entry) = message.entries.iter_mut().find(|e| !e.data.is_empty()) {
            entry.data = replacement.into();
        }
    }

    fn chaos(&mut self) {
        let ids: Vec<u64> = self.slots.keys().copied().collect();
        let pick = |rng: &mut SplitMix64| rng.pick(&ids).copied().unwrap_or(1);
        match self.rng.below(5) {
            0 => self.cut.clear(),
            1 => {
                // One member cut off both ways.
                let lone = pick(&mut self.rng);
                self.cut.clear();
                for &other in &ids {
                    if other != lone {
                        self.cut.push((lone, other));
                        self.cut.push((other, lone));
                    }
                }
            }
            2 => {
                // One direction only.
                let (a, b) = (pick(&mut self.rng), pick(&mut self.rng));
                if a != b {
                    self.cut.push((a, b));
                }
            }
            3 => {
                // Two sides.
                self.cut.clear();
                let sides: Vec<(u64, bool)> =
                    ids.iter().map(|&id| (id, self.rng.below(2) == 0)).collect();
                for &(a, side_a) in &sides {
                    for &(b, side_b) in &sides {
                        if side_a != side_b {
                            self.cut.push((a, b));
                        }
                    }
                }
            }
            _ => {}
        }
        if self.rng.chance(self.config.crash_per_million) {
            let victim = pick(&mut self.rng);
            self.crash(victim);
        }
    }

    fn crash(&mut self, id: u64) {
        let restart_ms = 1 + self.rng.below(self.config.restart_ms_max);
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        if slot.member.is_none() {
            return;
        }
        // What was not synced is gone with the process.
        slot.member = None;
        slot.writing = None;
        slot.queued.clear();
        slot.incarnation += 1;
        self.report.crashes += 1;
        self.schedule(restart_ms, Event::Restart { member: id });
    }

    fn heal(&mut self) -> Result<(), String> {
        self.faults = false;
        self.cut.clear();
        let down: Vec<u64> = self
            .slots
            .iter()
            .filter(|(_, slot)| slot.member.is_none())
            .map(|(&id, _)| id)
            .collect();
        for id in down {
            self.start(id)?;
        }
        Ok(())
    }

    fn propose(&mut self) -> Result<(), String> {
        let ids: Vec<u64> = self.slots.keys().copied().collect();
        let Some(&first) = self.rng.pick(&ids) else {
            return Ok(());
        };
        // A client asks any member and follows its leader hint once.
        let target = match self.slots.get(&first).and_then(|s| s.member.as_ref()) {
            Some(member) if member.is_leader() => first,
            Some(member) => match member.leader() {
                Some(leader) => leader,
                None => return Ok(()),
            },
            None => return Ok(()),
        };
        let command = self.random_command();
        let proposal = self.next_proposal;
        self.next_proposal += 1;
        self.input(target, Input::Propose(proposal, command))
    }

    /// A command drawn from a small world of names, so creates collide and deletes hit.
    fn random_command(&mut self) -> Command {
        const STREAMS: [&str; 3] = ["orders", "clicks", "audit"];
        const SUBSCRIPTIONS: [&str; 2] = ["billing", "search"];
        let stream = self.rng.pick(&STREAMS).copied().unwrap_or("orders");
        let name = StreamName::new(stream).unwrap_or_else(|_| unreachable!("valid test name"));
        let now_ms = 1_000 + self.now_ms;
        match self.rng.below(8) {
            0 => Command::RegisterNode {
                node: Node {
                    id: NodeId(1 + self.rng.below(self.config.members)),
                    cores: 1 + self.rng.below(4) as u32,
                    address: format!("node-{}.sim:7000", self.rng.below(9)),
                },
            },
            1 | 2 => Command::CreateStream {
                config: StreamConfig {
                    name,
                    shard_count: 1 + self.rng.below(3) as u32,
                    replication_factor: 1,
                    retention_ms: 86_400_000,
                    durability: Durability::Fsync,
                },
                now_ms,
                avoid: Vec::new(),
            },
            3 => Command::DeleteStream {
                name,
                force: self.rng.below(2) == 0,
            },
            4 => {
                let subscription = self.rng.pick(&SUBSCRIPTIONS).copied().unwrap_or("billing");
                let subscription = SubscriptionName::new(subscription)
                    .unwrap_or_else(|_| unreachable!("valid test name"));
                Command::CreateSubscription {
                    config: SubscriptionConfig::new(subscription, name),
                    now_ms,
                }
            }
            5 => Command::CommitProgress {
                subscription: SubscriptionId(1 + self.rng.below(4)),
                shard: ShardId(1 + self.rng.below(12)),
                offset: Offset(self.rng.below(1_000)),
            },
            6 => Command::CommitProgressBatch {
                commits: (0..1 + self.rng.below(4))
                    .map(|_| ProgressCommit {
                        subscription: SubscriptionId(1 + self.rng.below(4)),
                        shard: ShardId(1 + self.rng.below(12)),
                        offset: Offset(self.rng.below(1_000)),
                    })
                    .collect(),
            },
            _ => Command::SplitShard {
                shard: ShardId(1 + self.rng.below(12)),
                now_ms,
            },
        }
    }

    fn check_leaders(&mut self) -> Result<(), String> {
        let mut broken = None;
        for slot in self.slots.values() {
            if let Some(member) = &slot.member {
                if member.is_leader() {
                    if let Err(error) = self.checker.leader(member.term(), member.id()) {
                        broken = Some(error);
                    }
                }
            }
        }
        match broken {
            Some(error) => Err(format!("{error}; members: {}", self.describe())),
            None => Ok(()),
        }
    }
}
