//! The sequencer of one epoch: it assigns dense offsets to appends, sends every entry to every
//! replica (its own node's included) in log order, and commits an offset once W replicas hold
//! the whole prefix up to it. It starts from the log a [`super::Recovery`] adopted.
//!
//! Commit rule (Raft's): an offset commits only when W replicas match this sequencer's log up
//! to an entry of **this** epoch. The recovered entries keep their older epochs, so they commit
//! with the first new append that reaches W, never by counting copies of old entries (an older
//! entry on W replicas can still be replaced by a later epoch that did not see it).
//!
//! A sequencer that hears of a higher sealed epoch is deposed for good: it acknowledges nothing
//! more, whatever answers arrive later.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use super::{write_quorum, Entry, Epoch, Message, Mutation, NodeId};

/// The shape of a sequencer.
#[derive(Debug, Clone)]
pub struct SequencerConfig {
    /// This node.
    pub node: NodeId,
    /// This sequencer's epoch (metadata named this node for it).
    pub epoch: Epoch,
    /// The shard's replica set, this node included.
    pub replicas: Vec<NodeId>,
    /// Entries sent to one replica and not yet acknowledged by it, at most.
    pub in_flight_entries_max: usize,
    /// Appended entries not yet committed, at most (appends beyond are refused).
    pub uncommitted_entries_max: usize,
    /// Committed entries kept in memory for replicas that lag (at least 1: the last one
    /// carries the committed offset to caught-up replicas); older ones are read back through
    /// [`SequencerEffect::ReadCommitted`].
    pub retained_entries_max: usize,
    /// Ticks without progress from a replica before its unacknowledged entries are resent.
    pub resend_after_ticks: u64,
}

/// What the sequencer asks of its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SequencerEffect {
    /// Send `message` to replica `to` (possibly this node's own).
    Send {
        /// The addressee.
        to: NodeId,
        /// The message.
        message: Message,
    },
    /// Every offset below `offset` is committed: acknowledge the appends ending at or below
    /// it; readers may read below it.
    Committed {
        /// The new committed offset.
        offset: u64,
    },
    /// Read the committed entries covering `[from, to)` and hand them to
    /// [`Sequencer::on_read`]: a replica needs entries no longer in memory. This node's own log
    /// holds them when [`Sequencer::matched`] of this node reaches `to` (entries leave memory
    /// only then); otherwise (entries below the log recovery adopted) a replica whose committed
    /// offset reaches `to` does.
    ReadCommitted {
        /// The first offset needed.
        from: u64,
        /// The first offset held in memory.
        to: u64,
    },
    /// A replica is sealed at a higher epoch: this sequencer stopped for good. Appends not yet
    /// acknowledged have an unknown outcome.
    Deposed {
        /// The higher epoch.
        by: Epoch,
    },
}

/// Why an append was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// This sequencer was deposed by a higher epoch.
    #[error("the sequencer of {epoch} was deposed")]
    Deposed {
        /// Its epoch.
        epoch: Epoch,
    },
    /// Too many uncommitted entries: retry later.
    #[error("{uncommitted} uncommitted entries, the limit")]
    Backpressure {
        /// Entries not yet committed.
        uncommitted: usize,
    },
    /// A batch must hold at least one record.
    #[error("an empty batch")]
    Empty,
}

/// What the sequencer knows of one replica.
#[derive(Debug, Clone, Copy)]
struct Progress {
    /// The replica's log matches this sequencer's up to here (acknowledged).
    matched: u64,
    /// The next offset to send it.
    send_from: u64,
    /// Where to resume after a silence: its last `NeedFrom`, or what it matched.
    resume: u64,
    /// The committed offset last sent to it.
    told_committed: u64,
    /// The tick of its last answer.
    heard_at_tick: u64,
}

/// The sequencer of one epoch of one shard.
#[derive(Debug)]
pub struct Sequencer {
    config: SequencerConfig,
    quorum: usize,
    /// The log from `base` (entries below are committed and read back on demand).
    log: VecDeque<Entry>,
    base: u64,
    /// The epoch of the entry ending at `base`, once known.
    base_prev_epoch: Option<Epoch>,
    next: u64,
    /// The first offset this epoch assigned (the adopted log ends here).
    own_start: u64,
    committed: u64,
    progress: BTreeMap<NodeId, Progress>,
    reading: bool,
    deposed: bool,
    tick: u64,
    effects: Vec<SequencerEffect>,
}

impl Sequencer {
    /// The sequencer of `config.epoch`, continuing the log recovery adopted: `tail` holds its
    /// entries from the one ending at `committed` (or containing it), `end` is its end,
    /// `committed` the highest committed offset any sealed replica knew.
    pub fn new(config: SequencerConfig, tail: Vec<Entry>, end: u64, committed: u64) -> Sequencer {
        Sequencer::new_mutated(config, tail, end, committed, Mutation::None)
    }

    pub(crate) fn new_mutated(
        config: SequencerConfig,
        tail: Vec<Entry>,
        end: u64,
        committed: u64,
        mutation: Mutation,
    ) -> Sequencer {
        assert!(
            config.replicas.contains(&config.node),
            "the sequencer's node is one of the replicas"
        );
        assert!(
            config.in_flight_entries_max >= 1
                && config.uncommitted_entries_max >= 1
                && config.retained_entries_max >= 1
                && config.resend_after_ticks >= 1,
            "sequencer limits must be at least 1: {config:?}"
        );
        assert!(
            tail.last().is_none_or(|e| e.end() == end),
            "the tail must end the log"
        );
        // Entries ending at or below `committed` only tell the epoch before the first entry
        // sent (so replicas that do not know `committed` can check it); keep just that.
        let mut tail: VecDeque<Entry> = tail.into();
        let mut base_prev_epoch = None;
        while let Some(anchor) = tail.front().filter(|e| e.end() <= committed) {
            base_prev_epoch = Some(anchor.epoch);
            tail.pop_front();
        }
        let base = tail.front().map_or(end, |e| e.first);
        assert!(
            base <= committed && committed <= end,
            "committed outside the log"
        );
        let quorum = if mutation == Mutation::AckBeforeQuorum {
            1
        } else {
            write_quorum(config.replicas.len())
        };
        let progress = config
            .replicas
            .iter()
            .map(|&node| {
                let start = Progress {
                    matched: 0,
                    send_from: base,
                    resume: base,
                    told_committed: 0,
                    heard_at_tick: 0,
                };
                (node, start)
            })
            .collect();
        let mut sequencer = Sequencer {
            config,
            quorum,
            log: tail,
            base,
            base_prev_epoch,
            next: end,
            own_start: end,
            committed,
            progress,
            reading: false,
            deposed: false,
            tick: 0,
            effects: Vec::new(),
        };
        let replicas = sequencer.config.replicas.clone();
        for replica in replicas {
            sequencer.pump(replica);
        }
        sequencer
    }

    /// This sequencer's epoch.
    pub fn epoch(&self) -> Epoch {
        self.config.epoch
    }

    /// The committed offset.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// The next offset it will assign.
    pub fn next_offset(&self) -> u64 {
        self.next
    }

    /// Where `replica`'s log is known to match this sequencer's (0 when unknown).
    pub fn matched(&self, replica: NodeId) -> u64 {
        self.progress.get(&replica).map_or(0, |p| p.matched)
    }

    /// The entries it holds in memory (from the oldest retained one to the newest).
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.log.iter()
    }

    /// Whether a higher epoch deposed it.
    pub fn is_deposed(&self) -> bool {
        self.deposed
    }

    /// The effects produced since the last call.
    pub fn take_effects(&mut self) -> Vec<SequencerEffect> {
        std::mem::take(&mut self.effects)
    }

    /// Appends a batch of `count` records: returns its first offset. It is acknowledged by a
    /// later [`SequencerEffect::Committed`] at or above `first + count`.
    pub fn append(&mut self, bytes: Arc<[u8]>, count: u64) -> Result<u64, AppendError> {
        if self.deposed {
            return Err(AppendError::Deposed {
                epoch: self.config.epoch,
            });
        }
        if count == 0 {
            return Err(AppendError::Empty);
        }
        // Only this epoch's own entries count: the recovered ones commit with the first own
        // entry, so refusing appends because of them would never let them commit.
        let floor = self.committed.max(self.own_start);
        let uncommitted = self.log.iter().filter(|e| e.end() > floor).count();
        if uncommitted >= self.config.uncommitted_entries_max {
            return Err(AppendError::Backpressure { uncommitted });
        }
        let first = self.next;
        self.log.push_back(Entry {
            first,
            count,
            epoch: self.config.epoch,
            bytes,
        });
        self.next = first + count;
        let replicas = self.config.replicas.clone();
        for replica in replicas {
            self.pump(replica);
        }
        Ok(first)
    }

    /// A message from node `from`.
    pub fn on_message(&mut self, from: NodeId, message: Message) {
        if self.deposed {
            return;
        }
        if let Message::Sealed { sealed } = message {
            if sealed > self.config.epoch {
                self.deposed = true;
                self.effects.push(SequencerEffect::Deposed { by: sealed });
            }
            return;
        }
        if message.epoch() != self.config.epoch {
            return;
        }
        let tick = self.tick;
        let Some(progress) = self.progress.get_mut(&from) else {
            return;
        };
        match message {
            Message::Stored { end, .. } => {
                if end > self.next {
                    return; // Not an end this sequencer ever sent.
                }
                progress.matched = progress.matched.max(end);
                progress.send_from = progress.send_from.max(end);
                progress.resume = progress.resume.max(end);
                progress.heard_at_tick = tick;
                self.advance_commit();
            }
            Message::NeedFrom { from: offset, .. } => {
                // Rewind to where it says its log is known to match (possibly below what it
                // matched: its committed offset may be older than its log). Only ever rewind:
                // a later answer to a store sent before the rewind must not undo it.
                if offset < progress.send_from {
                    progress.send_from = offset;
                    progress.resume = offset;
                }
                progress.heard_at_tick = tick;
            }
            _ => return,
        }
        self.pump(from);
    }

    /// A timer tick: resend to replicas that have been silent, and tell caught-up replicas the
    /// committed offset.
    pub fn on_tick(&mut self) {
        if self.deposed {
            return;
        }
        self.tick += 1;
        self.reading = false;
        self.trim();
        let replicas = self.config.replicas.clone();
        for replica in replicas {
            let Some(progress) = self.progress.get_mut(&replica) else {
                continue;
            };
            let silent = self.tick - progress.heard_at_tick >= self.config.resend_after_ticks;
            if silent && progress.matched < self.next {
                progress.send_from = progress.resume.max(progress.matched);
                progress.heard_at_tick = self.tick;
            }
            let behind_on_commit = progress.told_committed < self.committed;
            if progress.matched == self.next && behind_on_commit {
                // Resend the last entry: a duplicate the replica recognises, carrying the
                // committed offset.
                if let Some(last) = self.log.back().cloned() {
                    self.send(replica, last);
                }
            }
            self.pump(replica);
        }
    }

    /// Committed entries read back after a [`SequencerEffect::ReadCommitted`]: they must end
    /// where the in-memory log starts (others are ignored: a stale or partial read).
    pub fn on_read(&mut self, entries: Vec<Entry>) {
        self.reading = false;
        let contiguous = entries.windows(2).all(|w| match w {
            [a, b] => a.end() == b.first,
            _ => true,
        });
        let ends_at_base = entries.last().is_some_and(|e| e.end() == self.base);
        if !contiguous || !ends_at_base || self.deposed {
            return;
        }
        for entry in entries.into_iter().rev() {
            self.base = entry.first;
            self.base_prev_epoch = None;
            self.log.push_front(entry);
        }
        let replicas = self.config.replicas.clone();
        for replica in replicas {
            self.pump(replica);
        }
    }

    /// Sends `replica` what it lacks, within its in-flight window.
    fn pump(&mut self, replica: NodeId) {
        if self.deposed {
            return;
        }
        loop {
            let Some(progress) = self.progress.get(&replica).copied() else {
                return;
            };
            if progress.send_from >= self.next {
                return;
            }
            if progress.send_from < self.base {
                if !self.reading {
                    self.reading = true;
                    self.effects.push(SequencerEffect::ReadCommitted {
                        from: progress.send_from,
                        to: self.base,
                    });
                }
                return;
            }
            // Sent since the replica's last answer or rewind (not since `matched`, which a
            // rewind can leave far behind).
            let since = progress.matched.max(progress.resume);
            let in_flight = self
                .log
                .iter()
                .filter(|e| e.first >= since && e.first < progress.send_from)
                .count();
            if in_flight >= self.config.in_flight_entries_max {
                return;
            }
            let Some(entry) = self
                .log
                .iter()
                .find(|e| e.first == progress.send_from)
                .cloned()
            else {
                // Not an entry boundary (a confused answer): start over from what it matched.
                if let Some(p) = self.progress.get_mut(&replica) {
                    p.send_from = p.matched.max(self.base);
                    p.resume = p.send_from;
                    if self.log.iter().all(|e| e.first != p.send_from) {
                        return;
                    }
                }
                continue;
            };
            self.send(replica, entry.clone());
            if let Some(p) = self.progress.get_mut(&replica) {
                p.send_from = entry.end();
            }
        }
    }

    fn send(&mut self, replica: NodeId, entry: Entry) {
        let prev_epoch = if entry.first == self.base {
            self.base_prev_epoch
        } else {
            self.log
                .iter()
                .find(|e| e.end() == entry.first)
                .map(|e| e.epoch)
        };
        if let Some(p) = self.progress.get_mut(&replica) {
            p.told_committed = self.committed;
        }
        self.effects.push(SequencerEffect::Send {
            to: replica,
            message: Message::Store {
                epoch: self.config.epoch,
                entry,
                prev_epoch,
                committed: self.committed,
            },
        });
    }

    fn advance_commit(&mut self) {
        let mut matched: Vec<u64> = self.progress.values().map(|p| p.matched).collect();
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let Some(&candidate) = matched.get(self.quorum - 1) else {
            return;
        };
        // Raft's rule: only an entry of this epoch commits by counting replicas.
        if candidate <= self.committed || candidate <= self.own_start {
            return;
        }
        assert!(candidate <= self.next, "commit beyond the log");
        self.committed = candidate;
        self.effects
            .push(SequencerEffect::Committed { offset: candidate });
    }

    /// Drops committed entries beyond the retained count: only those this node's own replica
    /// also holds, so that [`SequencerEffect::ReadCommitted`] can always be served from the
    /// local log (other replicas may not know them committed yet, so they could not serve it).
    fn trim(&mut self) {
        let own = self
            .progress
            .get(&self.config.node)
            .map_or(0, |p| p.matched);
        let floor = self.committed.min(own);
        while self.log.len() > self.config.retained_entries_max {
            match self.log.front() {
                Some(first) if first.end() <= floor => {
                    self.base = first.end();
                    self.base_prev_epoch = Some(first.epoch);
                    self.log.pop_front();
                }
                _ => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(epoch: u64) -> SequencerConfig {
        SequencerConfig {
            node: NodeId(1),
            epoch: Epoch(epoch),
            replicas: vec![NodeId(1), NodeId(2), NodeId(3)],
            in_flight_entries_max: 8,
            uncommitted_entries_max: 4,
            retained_entries_max: 8,
            resend_after_ticks: 3,
        }
    }

    fn stored(epoch: u64, end: u64) -> Message {
        Message::Stored {
            epoch: Epoch(epoch),
            end,
        }
    }

    fn committed(effects: &[SequencerEffect]) -> Vec<u64> {
        effects
            .iter()
            .filter_map(|e| match e {
                SequencerEffect::Committed { offset } => Some(*offset),
                _ => None,
            })
            .collect()
    }

    /// The first offsets of the stores sent to `to`.
    fn stores_to(to: NodeId, effects: &[SequencerEffect]) -> Vec<u64> {
        let mut firsts = Vec::new();
        for effect in effects {
            if let SequencerEffect::Send {
                to: addressee,
                message: Message::Store { entry, .. },
            } = effect
            {
                if *addressee == to {
                    firsts.push(entry.first);
                }
            }
        }
        firsts
    }

    fn entry(first: u64, count: u64, epoch: u64) -> Entry {
        Entry {
            first,
            count,
            epoch: Epoch(epoch),
            bytes: bytes(),
        }
    }

    fn bytes() -> Arc<[u8]> {
        Arc::from([7u8].as_slice())
    }

    /// An append is acknowledged only when W = 2 of 3 replicas hold it, its own node's
    /// included.
    #[test]
    fn an_append_commits_at_a_write_quorum() {
        let mut sequencer = Sequencer::new(config(1), Vec::new(), 0, 0);
        assert_eq!(sequencer.append(bytes(), 2), Ok(0));
        let sent = sequencer.take_effects();
        assert_eq!(sent.len(), 3, "one store per replica");
        sequencer.on_message(NodeId(1), stored(1, 2));
        assert!(committed(&sequencer.take_effects()).is_empty());
        sequencer.on_message(NodeId(1), stored(1, 2));
        assert!(
            committed(&sequencer.take_effects()).is_empty(),
            "a duplicate answer is not a second replica"
        );
        sequencer.on_message(NodeId(3), stored(1, 2));
        assert_eq!(committed(&sequencer.take_effects()), vec![2]);
        assert_eq!(sequencer.committed(), 2);
    }

    /// Answers for another epoch count for nothing.
    #[test]
    fn answers_of_another_epoch_are_ignored() {
        let mut sequencer = Sequencer::new(config(2), Vec::new(), 0, 0);
        sequencer.append(bytes(), 1).unwrap();
        sequencer.take_effects();
        sequencer.on_message(NodeId(1), stored(1, 1));
        sequencer.on_message(NodeId(2), stored(1, 1));
        assert!(committed(&sequencer.take_effects()).is_empty());
    }

    /// A deposed sequencer acknowledges nothing, even when quorum answers arrive afterwards
    /// (a paused sequencer waking up in a later epoch), and refuses appends.
    #[test]
    fn a_deposed_sequencer_acknowledges_nothing() {
        let mut sequencer = Sequencer::new(config(1), Vec::new(), 0, 0);
        sequencer.append(bytes(), 1).unwrap();
        sequencer.take_effects();
        sequencer.on_message(NodeId(2), Message::Sealed { sealed: Epoch(2) });
        assert_eq!(
            sequencer.take_effects(),
            vec![SequencerEffect::Deposed { by: Epoch(2) }]
        );
        sequencer.on_message(NodeId(1), stored(1, 1));
        sequencer.on_message(NodeId(3), stored(1, 1));
        assert!(sequencer.take_effects().is_empty());
        assert_eq!(
            sequencer.append(bytes(), 1),
            Err(AppendError::Deposed { epoch: Epoch(1) })
        );
    }

    /// Recovered entries of an older epoch do not commit by counting their copies (Raft's
    /// rule); they commit with the first own entry on W replicas.
    #[test]
    fn recovered_entries_commit_with_the_first_own_entry() {
        let old = entry(0, 3, 1);
        let mut sequencer = Sequencer::new(config(2), vec![old], 3, 0);
        sequencer.take_effects();
        sequencer.on_message(NodeId(1), stored(2, 3));
        sequencer.on_message(NodeId(2), stored(2, 3));
        assert!(committed(&sequencer.take_effects()).is_empty());
        assert_eq!(sequencer.append(bytes(), 1), Ok(3));
        sequencer.on_message(NodeId(1), stored(2, 4));
        sequencer.on_message(NodeId(2), stored(2, 4));
        assert_eq!(committed(&sequencer.take_effects()), vec![4]);
    }

    /// Appends beyond the uncommitted limit are refused, not queued without bound.
    #[test]
    fn appends_beyond_the_uncommitted_limit_are_refused() {
        let mut sequencer = Sequencer::new(config(1), Vec::new(), 0, 0);
        for _ in 0..4 {
            sequencer.append(bytes(), 1).unwrap();
        }
        assert_eq!(
            sequencer.append(bytes(), 1),
            Err(AppendError::Backpressure { uncommitted: 4 })
        );
        assert_eq!(sequencer.append(bytes(), 0), Err(AppendError::Empty));
    }

    /// A replica that needs entries below the in-memory window gets them read back, then sent.
    #[test]
    fn a_lagging_replica_is_served_from_a_read() {
        let tail = vec![entry(5, 1, 1)];
        let mut sequencer = Sequencer::new(config(2), tail, 6, 5);
        sequencer.take_effects();
        sequencer.on_message(
            NodeId(3),
            Message::NeedFrom {
                epoch: Epoch(2),
                from: 2,
            },
        );
        assert_eq!(
            sequencer.take_effects(),
            vec![SequencerEffect::ReadCommitted { from: 2, to: 5 }]
        );
        let read = vec![entry(2, 2, 1), entry(4, 1, 1)];
        sequencer.on_read(read);
        assert_eq!(
            stores_to(NodeId(3), &sequencer.take_effects()),
            vec![2, 4, 5]
        );
    }

    /// Regression (simulator seed 1987 at R=5): after entries were read back below the
    /// recovered log, a silent replica whose `matched` was still 0 counted all of them as in
    /// flight and was never sent anything again; the window now counts from its last rewind.
    #[test]
    fn entries_read_back_do_not_fill_another_replica_window() {
        let one = |first: u64| entry(first, 1, 1);
        let config = SequencerConfig {
            in_flight_entries_max: 2,
            resend_after_ticks: 1,
            ..config(2)
        };
        let mut sequencer = Sequencer::new(config, vec![one(5), one(6)], 7, 5);
        sequencer.take_effects();
        sequencer.on_message(
            NodeId(3),
            Message::NeedFrom {
                epoch: Epoch(2),
                from: 0,
            },
        );
        sequencer.on_read((0..5).map(one).collect());
        sequencer.take_effects();
        sequencer.on_tick();
        assert_eq!(stores_to(NodeId(2), &sequencer.take_effects()), vec![5, 6]);
    }

    /// Regression (simulator seed 10519 at R=5): recovery adopted a log ending at the committed
    /// offset that no live replica knew any more (the one that knew it restarted); the first
    /// stores carried no previous epoch, every replica asked for older entries nobody could
    /// vouch for, and the shard stalled. The entry ending at the committed offset now gives
    /// the first store its previous epoch.
    #[test]
    fn the_first_store_after_recovery_names_the_previous_epoch() {
        let anchor = entry(17, 2, 1);
        let mut sequencer = Sequencer::new(config(3), vec![anchor], 19, 19);
        assert_eq!(sequencer.entries().count(), 0);
        sequencer.append(bytes(), 1).unwrap();
        let prevs: Vec<Option<Epoch>> = sequencer
            .take_effects()
            .iter()
            .filter_map(|e| match e {
                SequencerEffect::Send {
                    message: Message::Store { prev_epoch, .. },
                    ..
                } => Some(*prev_epoch),
                _ => None,
            })
            .collect();
        assert_eq!(prevs, vec![Some(Epoch(1)); 3]);
    }
}
