//! One member of the metadata group: raft-rs's `RawNode` over a [`GroupStore`], and the
//! metadata state it applies committed commands to.
//!
//! The owner drives it, and does all the I/O:
//! 1. inputs: [`GroupMember::tick`] on a timer, [`GroupMember::step`] for each message from a
//!    peer, [`GroupMember::propose`] for a command;
//! 2. then [`GroupMember::ready`]: when it returns a [`Persist`], the owner sends
//!    `send_now` at once (a leader replicates while it persists), writes the rest to disk and
//!    syncs it, and only then calls [`GroupMember::persisted`];
//! 3. which applies what became committed and returns the messages that needed the write to be
//!    durable (votes, append acknowledgements) and what each applied command did.
//!
//! No other input may be given between `ready` and `persisted` (raft-rs's rule). Election
//! timeouts are drawn from the member's own seeded generator, never from raft-rs's thread RNG,
//! so a simulation replays exactly from its seed.

use raft::prelude::{
    ConfChange, ConfChangeSingle, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType,
    HardState, Message,
};
use raft::{Config, RawNode, StateRole};

use super::rng::SplitMix64;
use super::store::{GroupStore, StoredSnapshot};
use super::GroupError;
use crate::metadata::{
    decode_command, decode_snapshot, encode_command, encode_snapshot, Applied, Command,
    MetadataError, MetadataState,
};

/// A learner whose log is this close to the leader's commit index counts as caught up.
pub const CAUGHT_UP_ENTRIES: u64 = 64;

/// How a member runs: its id and its timing in ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberConfig {
    /// The member's id in the group (the node id): never 0.
    pub id: u64,
    /// Ticks without a leader's word before a follower stands for election; each member draws
    /// its timeout between this and twice this.
    pub election_ticks: usize,
    /// Ticks between a leader's heartbeats; less than `election_ticks`.
    pub heartbeat_ticks: usize,
    /// A snapshot replaces the log once this many entries were applied past the last one,
    /// and their commands' bytes are at least half the last snapshot's: a large state is not
    /// snapshotted every few commands (the snapshot bytes written per command byte stay at
    /// most two).
    pub compact_after_entries: u64,
}

impl MemberConfig {
    /// The defaults for member `id`: elections after 10–20 ticks, heartbeats every 2, a
    /// snapshot every 1,000 entries.
    pub fn new(id: u64) -> MemberConfig {
        MemberConfig {
            id,
            election_ticks: 10,
            heartbeat_ticks: 2,
            compact_after_entries: 1000,
        }
    }
}

/// What the owner must make durable before [`GroupMember::persisted`], and what it may send
/// at once.
#[derive(Debug, Default)]
pub struct Persist {
    /// The new vote, term or commit index, if it changed.
    pub hard_state: Option<HardState>,
    /// A snapshot from the leader that replaces the log (written before `entries`).
    pub snapshot: Option<StoredSnapshot>,
    /// Entries to append, replacing any at and after the first one's index.
    pub entries: Vec<Entry>,
    /// Messages that may be sent before the write is durable.
    pub send_now: Vec<Message>,
}

impl Persist {
    /// Applies the writes to `store` in order (what the owner's disk must end up holding).
    pub fn write_to(&self, store: &mut GroupStore) {
        if let Some(snapshot) = &self.snapshot {
            store.install_snapshot(snapshot.clone());
        }
        store.append(&self.entries);
        if let Some(hard_state) = &self.hard_state {
            store.set_hard_state(hard_state.clone());
        }
    }
}

/// One committed log entry that held a command, applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedEntry {
    /// Its log index.
    pub index: u64,
    /// The proposal id the proposer gave (`None` if it carried none).
    pub proposal: Option<u64>,
    /// What applying it did: accepted with its effect, or refused (every member refuses it
    /// alike).
    pub outcome: Result<Applied, MetadataError>,
}

/// A change of the group's members, one member at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipChange {
    /// Makes the node a voter (a learner is promoted).
    AddVoter(u64),
    /// Adds the node as a learner: it receives the log but does not vote.
    AddLearner(u64),
    /// Removes the node from the group.
    Remove(u64),
}

/// What [`GroupMember::persisted`] produced.
#[derive(Debug, Default)]
pub struct Advanced {
    /// Messages to send now.
    pub send: Vec<Message>,
    /// Commands applied, in log order.
    pub applied: Vec<AppliedEntry>,
    /// Every entry that was applied (commands, a leader's empty entries), in log order: for
    /// checkers and diagnostics.
    pub committed: Vec<Entry>,
    /// A snapshot taken after applying: the owner writes it (and may then drop the entries it
    /// covers from disk).
    pub compacted: Option<StoredSnapshot>,
    /// A higher commit index learnt here: the owner records it durably with the applied
    /// state (a member that restarts with an older one would run on an older membership
    /// until it re-applies the changes it had already acted on).
    pub commit: Option<u64>,
    /// The members after the membership changes applied here, if any was.
    pub members: Option<ConfState>,
    /// Proposal ids of the membership changes applied here (accepted or refused alike).
    pub membership_proposals: Vec<u64>,
}

/// A member of the metadata group.
pub struct GroupMember {
    raw: RawNode<GroupStore>,
    state: MetadataState,
    config: MemberConfig,
    rng: SplitMix64,
    /// Term, role and leader after the last input: a change means raft-rs reset the election
    /// timer, and the member draws the timeout itself.
    seen: (u64, StateRole, u64),
    /// A ready handed out by [`Self::ready`] and not yet persisted.
    pending: Option<raft::Ready>,
    /// Bytes of the commands applied since the newest snapshot.
    bytes_since_snapshot: u64,
}

impl GroupMember {
    /// Starts (or restarts) a member from what its disk holds: the snapshot's state, then
    /// raft-rs hands back every committed entry after it to apply again. `seed` seeds its
    /// election timeouts.
    pub fn start(
        config: MemberConfig,
        store: GroupStore,
        seed: u64,
    ) -> Result<GroupMember, GroupError> {
        assert!(config.id != 0, "member id 0 is raft-rs's 'none'");
        assert!(
            config.heartbeat_ticks > 0 && config.heartbeat_ticks < config.election_ticks,
            "heartbeats must come more often than elections"
        );
        let snapshot = store.snapshot();
        let state = if snapshot.index == 0 {
            MetadataState::new()
        } else {
            let state = decode_snapshot(&snapshot.data).map_err(GroupError::Corrupt)?;
            if state.applied_index() != snapshot.index {
                return Err(GroupError::SnapshotIndex {
                    snapshot: snapshot.index,
                    state: state.applied_index(),
                });
            }
            state
        };
        let raft_config = Config {
            id: config.id,
            election_tick: config.election_ticks,
            heartbeat_tick: config.heartbeat_ticks,
            // raft-rs draws from [min, max) with its thread RNG whenever it resets the timer;
            // the member then overrides the draw with its own (see `after_input`).
            min_election_tick: config.election_ticks,
            max_election_tick: 2 * config.election_ticks,
            applied: snapshot.index,
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            ..Config::default()
        };
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&raft_config, store, &logger).map_err(GroupError::Raft)?;
        let seen = (raw.raft.term, raw.raft.state, raw.raft.leader_id);
        let mut member = GroupMember {
            raw,
            state,
            config,
            rng: SplitMix64::new(seed),
            seen,
            pending: None,
            bytes_since_snapshot: 0,
        };
        member.draw_election_timeout();
        Ok(member)
    }

    /// The member's id.
    pub fn id(&self) -> u64 {
        self.config.id
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    /// Whether this member leads the group in its current term.
    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// The leader this member knows of in its term (`None` while it knows none).
    pub fn leader(&self) -> Option<u64> {
        Some(self.raw.raft.leader_id).filter(|&id| id != 0)
    }

    /// The metadata state: every committed command up to [`Self::applied_index`] applied.
    pub fn state(&self) -> &MetadataState {
        &self.state
    }

    /// Log index of the last entry applied.
    pub fn applied_index(&self) -> u64 {
        self.state.applied_index()
    }

    /// The member's log as raft-rs sees it (written entries included, durable or not).
    pub fn store(&self) -> &GroupStore {
        self.raw.store()
    }

    /// One tick of the member's clock.
    pub fn tick(&mut self) {
        self.assert_idle();
        self.raw.tick();
        self.after_input();
    }

    /// A message from a peer. Stale or misdirected messages are ignored by raft-rs; an error
    /// means the message was not for this group.
    pub fn step(&mut self, message: Message) -> Result<(), GroupError> {
        self.assert_idle();
        let result = self.raw.step(message).map_err(GroupError::Raft);
        self.after_input();
        result
    }

    /// Proposes `command` under the proposer's id `proposal` (given back with the applied
    /// entry). Only the leader takes proposals: others answer [`GroupError::NotLeader`] with
    /// the leader they know of, for the caller to forward to.
    pub fn propose(&mut self, proposal: u64, command: &Command) -> Result<(), GroupError> {
        self.assert_idle();
        if !self.is_leader() {
            return Err(GroupError::NotLeader {
                leader: self.leader(),
            });
        }
        let result = self
            .raw
            .propose(proposal.to_le_bytes().to_vec(), encode_command(command))
            .map_err(|error| match error {
                raft::Error::ProposalDropped => GroupError::NotLeader {
                    leader: self.leader(),
                },
                other => GroupError::Raft(other),
            });
        self.after_input();
        result
    }

    /// Proposes a membership change under the proposer's id `proposal`. Only the leader takes
    /// it, and only one change may be pending at a time (raft-rs turns a second one into an
    /// empty entry).
    pub fn propose_membership(
        &mut self,
        proposal: u64,
        change: MembershipChange,
    ) -> Result<(), GroupError> {
        self.assert_idle();
        if !self.is_leader() {
            return Err(GroupError::NotLeader {
                leader: self.leader(),
            });
        }
        let (node_id, change_type) = match change {
            MembershipChange::AddVoter(id) => (id, ConfChangeType::AddNode),
            MembershipChange::AddLearner(id) => (id, ConfChangeType::AddLearnerNode),
            MembershipChange::Remove(id) => (id, ConfChangeType::RemoveNode),
        };
        let mut single = ConfChangeSingle {
            node_id,
            ..ConfChangeSingle::default()
        };
        single.set_change_type(change_type);
        let mut conf_change = ConfChangeV2::default();
        conf_change.set_changes(vec![single].into());
        let result = self
            .raw
            .propose_conf_change(proposal.to_le_bytes().to_vec(), conf_change)
            .map_err(GroupError::Raft);
        self.after_input();
        result
    }

    /// The group's members as this member last applied them.
    pub fn members(&self) -> ConfState {
        self.raw.raft.prs().conf().to_conf_state()
    }

    /// The next membership change the leader should make so the group reaches
    /// `target_voters` voters among `nodes` (every node known to the cluster), the others
    /// being learners: first every node joins as a learner, then learners whose log is within
    /// [`CAUGHT_UP_ENTRIES`] of the leader's commit index are promoted, one change at a time
    /// (a voter that cannot keep up would slow every commit). A member missing from `nodes`
    /// (a removed node), other than this one, is removed from the group. `None` when there
    /// is nothing to do, when this member does not lead, or while a change is pending.
    pub fn membership_step(&self, nodes: &[u64], target_voters: usize) -> Option<MembershipChange> {
        if !self.is_leader() || self.raw.raft.pending_conf_index > self.applied_index() {
            return None;
        }
        let members = self.members();
        let known = |id: &u64| members.voters.contains(id) || members.learners.contains(id);
        if let Some(&new) = nodes.iter().find(|id| !known(id)) {
            return Some(MembershipChange::AddLearner(new));
        }
        // A member the cluster no longer knows was removed (every other member was registered
        // before it was added): it leaves the group. The leader never removes itself here; a
        // removed leader hands its role over first (`transfer_leader`).
        if let Some(&gone) = members
            .voters
            .iter()
            .chain(&members.learners)
            .find(|&&id| id != self.id() && !nodes.contains(&id))
        {
            return Some(MembershipChange::Remove(gone));
        }
        if members.voters.len() >= target_voters {
            return None;
        }
        let commit = self.raw.raft.raft_log.committed;
        members
            .learners
            .iter()
            .copied()
            .find(|&id| {
                self.raw.raft.prs().get(id).is_some_and(|progress| {
                    progress.state == raft::ProgressState::Replicate
                        && progress.matched + CAUGHT_UP_ENTRIES >= commit
                })
            })
            .map(MembershipChange::AddVoter)
    }

    /// The highest log index the leader knows `peer` holds (`None` when this member does not
    /// lead or `peer` is not a member).
    pub fn matched(&self, peer: u64) -> Option<u64> {
        if !self.is_leader() {
            return None;
        }
        self.raw
            .raft
            .prs()
            .get(peer)
            .map(|progress| progress.matched)
    }

    /// Asks the leader to hand its role to voter `to` (raft-rs's leadership transfer: `to` is
    /// brought up to date, then told to stand at once; the leader takes no proposal
    /// meanwhile, and gives up after an election timeout). Nothing happens when this member
    /// does not lead, or while a transfer is under way: a new target would abort it, and a
    /// caller that asks again each time with whichever voter looks best could keep the group
    /// transferring, and refusing proposals, for ever (the simulator found that).
    pub fn transfer_leader(&mut self, to: u64) {
        self.assert_idle();
        if self.is_leader() && self.raw.raft.lead_transferee.is_none() {
            self.raw.transfer_leader(to);
        }
        self.after_input();
    }

    /// What became of a snapshot message this member sent to `to`: `delivered` when the peer
    /// received it, not when it was lost (the transport timed out or the peer is gone). Until
    /// told, the leader sends that peer nothing more.
    pub fn snapshot_sent(&mut self, to: u64, delivered: bool) {
        self.assert_idle();
        let status = if delivered {
            raft::SnapshotStatus::Finish
        } else {
            raft::SnapshotStatus::Failure
        };
        self.raw.report_snapshot(to, status);
        self.after_input();
    }

    /// Starts an election now (a node that knows it should lead, or a test).
    pub fn campaign(&mut self) -> Result<(), GroupError> {
        self.assert_idle();
        let result = self.raw.campaign().map_err(GroupError::Raft);
        self.after_input();
        result
    }

    /// The work the last inputs produced, if any: see the module's steps.
    pub fn ready(&mut self) -> Option<Persist> {
        self.assert_idle();
        if !self.raw.has_ready() {
            return None;
        }
        let mut ready = self.raw.ready();
        let snapshot =
            (!ready.snapshot().is_empty()).then(|| StoredSnapshot::from_raft(ready.snapshot()));
        let persist = Persist {
            hard_state: ready.hs().cloned(),
            snapshot,
            entries: ready.take_entries(),
            send_now: ready.take_messages(),
        };
        // raft-rs reads what it wrote from the store before `persisted` is called.
        persist.write_to(self.raw.mut_store());
        self.pending = Some(ready);
        Some(persist)
    }

    /// The owner made the last [`Persist`] durable: applies what is committed and returns
    /// what to send and what was applied.
    pub fn persisted(&mut self) -> Result<Advanced, GroupError> {
        let Some(mut ready) = self.pending.take() else {
            panic!("persisted() without a ready handed out");
        };
        let mut advanced = Advanced {
            send: ready.take_persisted_messages(),
            ..Advanced::default()
        };
        if !ready.snapshot().is_empty() {
            let state = decode_snapshot(&ready.snapshot().data).map_err(GroupError::Corrupt)?;
            let index = ready.snapshot().get_metadata().index;
            if state.applied_index() != index {
                return Err(GroupError::SnapshotIndex {
                    snapshot: index,
                    state: state.applied_index(),
                });
            }
            self.state = state;
            self.bytes_since_snapshot = 0;
        }
        self.apply(ready.take_committed_entries(), &mut advanced)?;
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit);
            advanced.commit = Some(commit);
        }
        advanced.send.extend(light.take_messages());
        self.apply(light.take_committed_entries(), &mut advanced)?;
        self.raw.advance_apply();
        self.step_down_if_removed();
        advanced.compacted = self.maybe_compact();
        self.after_input();
        Ok(advanced)
    }

    fn apply(&mut self, entries: Vec<Entry>, advanced: &mut Advanced) -> Result<(), GroupError> {
        for entry in entries {
            let index = entry.index;
            if index <= self.state.applied_index() {
                // Covered by a snapshot installed in the same ready.
                continue;
            }
            let expected = self.state.applied_index() + 1;
            if index != expected {
                return Err(GroupError::Gap {
                    expected,
                    got: index,
                });
            }
            match entry.get_entry_type() {
                EntryType::EntryNormal if entry.data.is_empty() => {
                    // A new leader's empty entry.
                    let skipped = self.state.skip(index);
                    assert!(skipped.is_ok(), "index {index} was checked to be next");
                }
                EntryType::EntryNormal => {
                    self.bytes_since_snapshot += entry.data.len() as u64;
                    let command = decode_command(&entry.data).map_err(GroupError::Corrupt)?;
                    let outcome = self.state.apply(index, &command);
                    let proposal = <[u8; 8]>::try_from(entry.context.as_ref())
                        .ok()
                        .map(u64::from_le_bytes);
                    advanced.applied.push(AppliedEntry {
                        index,
                        proposal,
                        outcome,
                    });
                }
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    self.apply_membership(&entry, advanced)?;
                    let skipped = self.state.skip(index);
                    assert!(skipped.is_ok(), "index {index} was checked to be next");
                }
            }
            advanced.committed.push(entry);
        }
        Ok(())
    }

    /// Applies a committed membership change. raft-rs refuses a change that would break the
    /// group (every member refuses it alike); it is then skipped.
    fn apply_membership(
        &mut self,
        entry: &Entry,
        advanced: &mut Advanced,
    ) -> Result<(), GroupError> {
        let corrupt = |_| GroupError::CorruptMembership { index: entry.index };
        let applied = if entry.get_entry_type() == EntryType::EntryConfChange {
            let change: ConfChange =
                protobuf::Message::parse_from_bytes(&entry.data).map_err(corrupt)?;
            self.raw.apply_conf_change(&change)
        } else {
            let change: ConfChangeV2 =
                protobuf::Message::parse_from_bytes(&entry.data).map_err(corrupt)?;
            self.raw.apply_conf_change(&change)
        };
        if let Ok(members) = applied {
            advanced.members = Some(members);
        }
        if let Ok(bytes) = <[u8; 8]>::try_from(entry.context.as_ref()) {
            advanced
                .membership_proposals
                .push(u64::from_le_bytes(bytes));
        }
        Ok(())
    }

    /// A snapshot of the state at the applied index, once enough entries were applied past
    /// the last one.
    fn maybe_compact(&mut self) -> Option<StoredSnapshot> {
        let applied = self.state.applied_index();
        let store = self.raw.store();
        let wanted = store.take_fresh_snapshot_wanted();
        let due = applied >= store.snapshot().index + self.config.compact_after_entries
            && self.bytes_since_snapshot.saturating_mul(2) >= store.snapshot().data.len() as u64;
        if !(due || wanted) || applied <= store.snapshot().index {
            return None;
        }
        let conf_state = self.raw.raft.prs().conf().to_conf_state();
        let data = encode_snapshot(&self.state);
        self.raw.mut_store().compact(applied, data, conf_state);
        self.bytes_since_snapshot = 0;
        Some(self.raw.store().snapshot().clone())
    }

    fn assert_idle(&self) {
        assert!(
            self.pending.is_none(),
            "an input between ready() and persisted()"
        );
    }

    /// raft-rs resets the election timer whenever the term or the role changes: the member
    /// then draws the new timeout from its own generator.
    /// raft-rs 0.7 leaves a leader that applied its own removal in charge (its TODO says to
    /// step down), and then panics on the next append response (the leader has no progress of
    /// its own): such a leader steps down into the next term, as etcd's does, once the ready
    /// cycle is over (raft-rs asserts the hard state does not change within one). The
    /// simulator found it: a leader proposes a member's removal and loses its role, and that
    /// member is elected and commits its own removal.
    fn step_down_if_removed(&mut self) {
        let removed = !self.members().voters.contains(&self.id());
        if self.raw.raft.state == raft::StateRole::Leader && removed {
            let term = self.raw.raft.term + 1;
            self.raw.raft.become_follower(term, raft::INVALID_ID);
        }
    }

    fn after_input(&mut self) {
        let now = (
            self.raw.raft.term,
            self.raw.raft.state,
            self.raw.raft.leader_id,
        );
        if now != self.seen {
            self.seen = now;
            self.draw_election_timeout();
        }
    }

    fn draw_election_timeout(&mut self) {
        let low = self.config.election_ticks as u64;
        let timeout = low + self.rng.below(low);
        self.raw
            .raft
            .set_randomized_election_timeout(timeout as usize);
    }
}
