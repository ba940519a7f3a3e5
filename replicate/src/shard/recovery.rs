//! Recovery of a shard when metadata names a new sequencer for epoch e: seal, collect digests,
//! adopt the most up-to-date log, then hand over to a [`Sequencer`] of epoch e.
//!
//! Why this keeps every acknowledged record (the full argument is in `docs/replication.md`):
//!
//! 1. **Sealing.** Each replica that answers `Seal{e}` refuses every epoch below e from then on
//!    (durably: it answers only after the seal is synced). Recovery waits for R−W+1 of them, so
//!    at most W−1 replicas can still accept an older epoch: no older sequencer can commit again.
//! 2. **Every acknowledged record is in some digest.** An acknowledged offset was committed:
//!    W replicas held the prefix up to it. W + (R−W+1) > R, so one sealed replica holds it, and
//!    its digest (everything from its committed offset on) shows it, or it is below that
//!    replica's committed offset and so below the committed offset recovery adopts.
//! 3. **The most up-to-date digest holds them all.** Digests are ranked as Raft ranks logs:
//!    highest last epoch, then longest. Entries keep the epoch that assigned their offsets, a
//!    sequencer of epoch f writes entries of epoch f only after the log it adopted (which holds
//!    everything committed before f, by induction), and a replica accepts an entry only after
//!    the entry before it matched (log matching). So a log whose last entry has epoch f > g is
//!    a prefix of f's log ending past f's start, hence holds everything committed up to g; and
//!    of two logs ending in the same epoch the longer holds the shorter.
//! 4. **Holes and the never-committed suffix.** The adopted log is dense by construction: it is
//!    one replica's log. Records other replicas hold beyond it, or in place of its entries, were
//!    never committed; the new sequencer's stores replace them (a replica truncates from the
//!    first entry whose epoch differs from the sequencer's), and readers never see them because
//!    a replica's committed offset only rises to the end of what matched the sequencer's log.
//! 5. **Re-replication.** The sequencer sends the adopted entries unchanged (with their old
//!    epochs) to every replica before its own; they commit with its first own entry on W
//!    replicas (Raft's commit rule). It continues at the adopted log's end: dense offsets.

use std::collections::BTreeMap;

use super::{seal_quorum, Entry, Epoch, Message, Mutation, NodeId, Sequencer, SequencerConfig};

/// One sealed replica's digest.
#[derive(Debug, Clone)]
struct Digest {
    committed: u64,
    tail: Vec<Entry>,
    end: u64,
    last_epoch: Epoch,
}

/// What a recovery came to.
#[derive(Debug)]
pub enum RecoveryOutcome {
    /// Still waiting for digests.
    Pending,
    /// Done: the sequencer of this epoch, ready to take appends.
    Done(Box<Sequencer>),
    /// A replica is sealed at a higher epoch: this recovery is obsolete.
    Deposed {
        /// The higher epoch.
        by: Epoch,
    },
    /// More than R−W replicas lost synced data (outside the fault model): a sealed replica
    /// knows offsets below `committed` committed, but the most up-to-date log ends at
    /// `adopted_end`. The shard must report the gap, never continue over it.
    DataLoss {
        /// The highest committed offset a sealed replica knew.
        committed: u64,
        /// The end of the most up-to-date log among the sealed replicas.
        adopted_end: u64,
    },
}

/// A recovery for one epoch on the node metadata named its sequencer.
#[derive(Debug)]
pub struct Recovery {
    config: SequencerConfig,
    mutation: Mutation,
    digests: BTreeMap<NodeId, Digest>,
    deposed: Option<Epoch>,
    outgoing: Vec<(NodeId, Message)>,
    tick: u64,
}

impl Recovery {
    /// Starts recovering `config.epoch`: the seals to send are in [`Recovery::take_messages`].
    pub fn new(config: SequencerConfig) -> Recovery {
        Recovery::new_mutated(config, Mutation::None)
    }

    pub(crate) fn new_mutated(config: SequencerConfig, mutation: Mutation) -> Recovery {
        assert!(config.epoch > Epoch(0), "epoch 0 is the empty log's");
        let mut recovery = Recovery {
            config,
            mutation,
            digests: BTreeMap::new(),
            deposed: None,
            outgoing: Vec::new(),
            tick: 0,
        };
        recovery.seal_missing();
        recovery
    }

    /// The epoch being recovered.
    pub fn epoch(&self) -> Epoch {
        self.config.epoch
    }

    /// Messages to send: `(to, message)`.
    pub fn take_messages(&mut self) -> Vec<(NodeId, Message)> {
        std::mem::take(&mut self.outgoing)
    }

    /// A message from node `from`.
    pub fn on_message(&mut self, from: NodeId, message: Message) {
        match message {
            Message::Sealed { sealed } if sealed > self.config.epoch => {
                self.deposed = Some(self.deposed.map_or(sealed, |e| e.max(sealed)));
            }
            Message::Digest {
                epoch,
                committed,
                tail,
                end,
                last_epoch,
            } if epoch == self.config.epoch && self.config.replicas.contains(&from) => {
                let consistent = committed <= end
                    && tail.windows(2).all(|w| match w {
                        [a, b] => a.end() == b.first,
                        _ => true,
                    })
                    && tail
                        .last()
                        .is_none_or(|e| e.end() == end && e.epoch == last_epoch)
                    && tail.first().is_none_or(|e| e.first <= committed)
                    && (!tail.is_empty() || committed == end);
                if consistent {
                    self.digests.insert(
                        from,
                        Digest {
                            committed,
                            tail,
                            end,
                            last_epoch,
                        },
                    );
                }
            }
            _ => {}
        }
    }

    /// A timer tick: seal again the replicas that have not answered (messages get lost).
    pub fn on_tick(&mut self) {
        self.tick += 1;
        if self
            .tick
            .is_multiple_of(self.config.resend_after_ticks.max(1))
        {
            self.seal_missing();
        }
    }

    /// Where the recovery stands; `Done` hands over the sequencer (call it after inputs).
    pub fn outcome(&mut self) -> RecoveryOutcome {
        if let Some(by) = self.deposed {
            return RecoveryOutcome::Deposed { by };
        }
        if self.digests.len() < seal_quorum(self.config.replicas.len()) {
            return RecoveryOutcome::Pending;
        }
        let committed = self
            .digests
            .values()
            .map(|d| d.committed)
            .max()
            .unwrap_or(0);
        // Highest last epoch, then longest; ties go to the lowest node id (any is right).
        let Some(best) = self
            .digests
            .values()
            .max_by(|a, b| (a.last_epoch, a.end).cmp(&(b.last_epoch, b.end)))
            .cloned()
        else {
            return RecoveryOutcome::Pending;
        };
        if committed > best.end {
            return RecoveryOutcome::DataLoss {
                committed,
                adopted_end: best.end,
            };
        }
        // Keep the adopted tail from the entry ending at `committed` (what lies below is
        // committed, identical everywhere, and read back on demand); that entry's epoch lets
        // the sequencer's first store be checked by replicas that do not know `committed`.
        let tail: Vec<Entry> = best
            .tail
            .into_iter()
            .filter(|e| e.end() >= committed)
            .collect();
        let sequencer = Sequencer::new_mutated(
            self.config.clone(),
            tail,
            best.end,
            committed,
            self.mutation,
        );
        RecoveryOutcome::Done(Box::new(sequencer))
    }

    fn seal_missing(&mut self) {
        let epoch = self.config.epoch;
        for &replica in &self.config.replicas {
            if !self.digests.contains_key(&replica) {
                self.outgoing.push((replica, Message::Seal { epoch }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::shard::{Durability, Replica, ReplicaEffect, SequencerEffect};

    const NODES: [NodeId; 3] = [NodeId(1), NodeId(2), NodeId(3)];

    fn config(epoch: u64) -> SequencerConfig {
        SequencerConfig {
            node: NodeId(1),
            epoch: Epoch(epoch),
            replicas: NODES.to_vec(),
            in_flight_entries_max: 8,
            uncommitted_entries_max: 8,
            retained_entries_max: 8,
            resend_after_ticks: 3,
        }
    }

    fn entry(first: u64, count: u64, epoch: u64, tag: u8) -> Entry {
        Entry {
            first,
            count,
            epoch: Epoch(epoch),
            bytes: Arc::from([tag].as_slice()),
        }
    }

    /// A replica holding `entries` (stored by their own epochs' sequencers), knowing
    /// `committed`.
    fn replica(entries: &[Entry], committed: u64) -> Replica {
        let end = entries.last().map_or(0, |e| e.end());
        let last = entries.last().map_or(Epoch(0), |e| e.epoch);
        let sealed = last;
        Replica::restore(
            Durability::Fsync,
            sealed,
            committed,
            end,
            last,
            entries.to_vec(),
        )
    }

    /// Delivers messages between the recovery/sequencer on node 1 and the given replicas
    /// (others are unreachable) until nothing moves; returns the sequencer if recovery ended.
    fn converge(
        mut recovery: Recovery,
        replicas: &mut [(NodeId, Replica)],
    ) -> (Option<Sequencer>, Vec<u64>) {
        let mut to_replicas: Vec<(NodeId, Message)> = recovery.take_messages();
        let mut sequencer: Option<Sequencer> = None;
        let mut commits = Vec::new();
        for _ in 0..100 {
            let mut to_sequencer = Vec::new();
            for (to, message) in std::mem::take(&mut to_replicas) {
                if let Some((_, r)) = replicas.iter_mut().find(|(id, _)| *id == to) {
                    r.on_message(NodeId(1), message);
                    r.on_synced(r.last_op_id());
                }
            }
            for (id, r) in replicas.iter_mut() {
                for effect in r.take_effects() {
                    if let ReplicaEffect::Send { message, .. } = effect {
                        to_sequencer.push((*id, message));
                    }
                }
            }
            if to_sequencer.is_empty() {
                break;
            }
            for (from, message) in to_sequencer {
                match sequencer.as_mut() {
                    Some(s) => s.on_message(from, message),
                    None => recovery.on_message(from, message),
                }
            }
            if sequencer.is_none() {
                if let RecoveryOutcome::Done(s) = recovery.outcome() {
                    sequencer = Some(*s);
                }
            }
            if let Some(s) = sequencer.as_mut() {
                for effect in s.take_effects() {
                    match effect {
                        SequencerEffect::Send { to, message } => to_replicas.push((to, message)),
                        SequencerEffect::Committed { offset } => commits.push(offset),
                        _ => {}
                    }
                }
            }
        }
        (sequencer, commits)
    }

    /// An acknowledged record held by only W = 2 replicas survives a recovery that hears one
    /// of them and the replica that lacks it: the longer log (same last epoch) is adopted.
    #[test]
    fn an_acknowledged_record_on_only_w_replicas_is_kept() {
        let acked = [entry(0, 1, 1, 10), entry(1, 1, 1, 11)];
        let mut replicas = vec![
            (NodeId(2), replica(&acked, 0)),
            (NodeId(3), replica(&acked[..1], 0)),
        ];
        let (sequencer, _) = converge(Recovery::new(config(2)), &mut replicas);
        let sequencer = sequencer.expect("recovery ends with two of three replicas");
        assert_eq!(
            sequencer.next_offset(),
            2,
            "continues after the kept record"
        );
        let kept: Vec<Entry> = sequencer.entries().cloned().collect();
        assert_eq!(kept, acked.to_vec());
        // Node 3 was repaired: it now holds the record too.
        assert_eq!(replicas[1].1.end(), 2);
    }

    /// A higher last epoch beats a longer log: the longer one's suffix was never committed
    /// (epoch 2's recovery did not adopt it), and it is truncated when re-replicated.
    #[test]
    fn a_never_committed_suffix_is_truncated() {
        let common = entry(0, 1, 1, 10);
        let stale = [common.clone(), entry(1, 1, 1, 11), entry(2, 1, 1, 12)];
        let newer = [common, entry(1, 1, 2, 20)];
        let mut replicas = vec![
            (NodeId(2), replica(&stale, 1)),
            (NodeId(3), replica(&newer, 1)),
        ];
        let (sequencer, _) = converge(Recovery::new(config(3)), &mut replicas);
        let mut sequencer = sequencer.expect("recovery ends");
        assert_eq!(sequencer.next_offset(), 2);
        // Node 2's suffix at 1.. was replaced by epoch 2's entry.
        assert_eq!(replicas[0].1.end(), 2);
        // The adopted entry commits with the first append of epoch 3.
        sequencer.append(Arc::from([30u8].as_slice()), 1).unwrap();
        let first_sends: Vec<(NodeId, Message)> = sequencer
            .take_effects()
            .into_iter()
            .filter_map(|e| match e {
                SequencerEffect::Send { to, message } => Some((to, message)),
                _ => None,
            })
            .collect();
        let mut commits = Vec::new();
        for (to, message) in first_sends {
            if let Some((_, r)) = replicas.iter_mut().find(|(id, _)| *id == to) {
                r.on_message(NodeId(1), message);
                r.on_synced(r.last_op_id());
                for effect in r.take_effects() {
                    if let ReplicaEffect::Send { message, .. } = effect {
                        sequencer.on_message(to, message);
                    }
                }
            }
        }
        for effect in sequencer.take_effects() {
            if let SequencerEffect::Committed { offset } = effect {
                commits.push(offset);
            }
        }
        assert_eq!(commits, vec![3]);
    }

    /// A hole: an offset no sealed replica holds was never acknowledged, so the adopted log
    /// ends before it and the next append reuses it.
    #[test]
    fn recovery_ends_the_log_at_a_hole() {
        let mut replicas = vec![
            (NodeId(2), replica(&[entry(0, 2, 1, 10)], 0)),
            (NodeId(3), replica(&[], 0)),
        ];
        let (sequencer, _) = converge(Recovery::new(config(2)), &mut replicas);
        assert_eq!(sequencer.map(|s| s.next_offset()), Some(2));
    }

    /// With fewer than R−W+1 replicas reachable, recovery does not finish (it cannot know it
    /// has seen every acknowledged record).
    #[test]
    fn recovery_waits_for_enough_seals() {
        let mut replicas = vec![(NodeId(2), replica(&[entry(0, 1, 1, 10)], 0))];
        let (sequencer, _) = converge(Recovery::new(config(2)), &mut replicas);
        assert!(sequencer.is_none());
    }

    /// A sealed replica knows offset 3 committed but the most up-to-date log ends at 1: data
    /// was lost beyond the fault model, and recovery reports it rather than reuse offsets.
    #[test]
    fn a_committed_offset_past_every_log_is_data_loss() {
        let mut recovery = Recovery::new(config(3));
        recovery.take_messages();
        // Node 2 knew offsets below 3 committed (its log ends there, in epoch 1); node 3's
        // log, with a higher last epoch, ends at 1: it wins the ranking and lacks 1..3.
        recovery.on_message(
            NodeId(2),
            Message::Digest {
                epoch: Epoch(3),
                committed: 3,
                tail: Vec::new(),
                end: 3,
                last_epoch: Epoch(1),
            },
        );
        recovery.on_message(
            NodeId(3),
            Message::Digest {
                epoch: Epoch(3),
                committed: 0,
                tail: vec![entry(0, 1, 2, 20)],
                end: 1,
                last_epoch: Epoch(2),
            },
        );
        assert!(matches!(
            recovery.outcome(),
            RecoveryOutcome::DataLoss {
                committed: 3,
                adopted_end: 1
            }
        ));
    }

    /// A replica sealed higher deposes the recovery.
    #[test]
    fn a_higher_seal_deposes_the_recovery() {
        let mut recovery = Recovery::new(config(2));
        recovery.take_messages();
        recovery.on_message(NodeId(2), Message::Sealed { sealed: Epoch(3) });
        assert!(matches!(
            recovery.outcome(),
            RecoveryOutcome::Deposed { by: Epoch(3) }
        ));
    }
}
