//! A passive replica of a shard's log: it stores what a sequencer sends when it follows its log
//! (Raft's log-matching check), answers once the write is held (in memory or synced, by the
//! stream's durability), learns the committed offset from the stores, and is sealed by a
//! recovery so that older epochs can no longer write to it.
//!
//! Its owner performs the [`StorageOp`]s in the order given and reports, also in order, when
//! each is written ([`Replica::on_written`]) and synced ([`Replica::on_synced`]). After a crash
//! it rebuilds the replica with [`Replica::restore`] from what its storage kept.

use std::collections::VecDeque;

use super::{Durability, Entry, Epoch, Message, Mutation, NodeId};

/// A write to the replica's storage, performed in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageOp {
    /// Remember `epoch` as sealed (it must survive a crash once synced).
    Seal {
        /// The sealed epoch.
        epoch: Epoch,
    },
    /// Drop every entry at or after `from` (an entry boundary above the committed offset).
    Truncate {
        /// The first offset dropped.
        from: u64,
    },
    /// Append `entry` at the log's end; `committed` is the committed offset known now (kept
    /// with it, like BookKeeper's last-add-confirmed, so a restart knows it again).
    Append {
        /// The entry, its first offset equal to the log's end.
        entry: Entry,
        /// The committed offset known when writing it.
        committed: u64,
    },
}

/// What the replica asks of its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaEffect {
    /// Perform this storage operation (numbered `op_id`, in increasing order).
    Storage {
        /// Its number, reported back by `on_written` / `on_synced`.
        op_id: u64,
        /// The operation.
        op: StorageOp,
    },
    /// Send `message` to node `to`.
    Send {
        /// The addressee.
        to: NodeId,
        /// The message.
        message: Message,
    },
    /// Readers may now read offsets below `offset`.
    Committed {
        /// The new committed offset.
        offset: u64,
    },
}

/// An answer waiting for the storage operations before it.
#[derive(Debug)]
struct Pending {
    after_op: u64,
    needs_sync: bool,
    to: NodeId,
    message: Message,
}

/// A shard's replica on one node.
#[derive(Debug)]
pub struct Replica {
    durability: Durability,
    mutation: Mutation,
    sealed: Epoch,
    committed: u64,
    /// The offset after the log's last entry.
    end: u64,
    /// The epoch of the log's last entry.
    last_epoch: Epoch,
    /// The entries ending at or above `committed`, in order: the part that can still change,
    /// and the entry ending at `committed` (whose epoch lets a new sequencer check the next).
    tail: VecDeque<Entry>,
    next_op: u64,
    written: u64,
    synced: u64,
    pending: VecDeque<Pending>,
    effects: Vec<ReplicaEffect>,
}

impl Replica {
    /// A replica with an empty log.
    pub fn new(durability: Durability) -> Replica {
        Replica::restore(durability, Epoch(0), 0, 0, Epoch(0), Vec::new())
    }

    /// A replica rebuilt from its storage: the sealed epoch, the committed offset kept with the
    /// last entry, the log's end and last entry's epoch, and the entries ending at or above
    /// `committed` (others are ignored).
    pub fn restore(
        durability: Durability,
        sealed: Epoch,
        committed: u64,
        end: u64,
        last_epoch: Epoch,
        tail: Vec<Entry>,
    ) -> Replica {
        Replica::restore_mutated(
            durability,
            sealed,
            committed,
            end,
            last_epoch,
            tail,
            Mutation::None,
        )
    }

    pub(crate) fn restore_mutated(
        durability: Durability,
        sealed: Epoch,
        committed: u64,
        end: u64,
        last_epoch: Epoch,
        tail: Vec<Entry>,
        mutation: Mutation,
    ) -> Replica {
        assert!(
            committed <= end,
            "committed {committed} beyond the log's end {end}"
        );
        let tail: VecDeque<Entry> = tail.into_iter().filter(|e| e.end() >= committed).collect();
        assert!(
            tail.back()
                .is_none_or(|e| e.end() == end && e.epoch == last_epoch),
            "the tail does not end the log"
        );
        Replica {
            durability,
            mutation,
            // Epochs never decrease along a log, so its last entry's epoch was accepted, hence
            // sealed, even if the seal itself was not yet synced.
            sealed: sealed.max(last_epoch),
            committed,
            end,
            last_epoch,
            tail,
            next_op: 1,
            written: 0,
            synced: 0,
            pending: VecDeque::new(),
            effects: Vec::new(),
        }
    }

    /// The epoch below which this replica accepts nothing.
    pub fn sealed(&self) -> Epoch {
        self.sealed
    }

    /// The committed offset this replica knows: readers may read below it.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// The offset after the log's last entry.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// The number of the last storage operation issued (0 before the first).
    pub fn last_op_id(&self) -> u64 {
        self.next_op - 1
    }

    /// The effects produced since the last call.
    pub fn take_effects(&mut self) -> Vec<ReplicaEffect> {
        std::mem::take(&mut self.effects)
    }

    /// A message from node `from`.
    pub fn on_message(&mut self, from: NodeId, message: Message) {
        match message {
            Message::Store {
                epoch,
                entry,
                prev_epoch,
                committed,
            } => self.on_store(from, epoch, entry, prev_epoch, committed),
            Message::Seal { epoch } => self.on_seal(from, epoch),
            // Answers are for sequencers and recoveries.
            Message::Stored { .. }
            | Message::NeedFrom { .. }
            | Message::Sealed { .. }
            | Message::Digest { .. } => {}
        }
    }

    /// Storage finished writing operations up to `op_id` (in memory, not yet synced).
    pub fn on_written(&mut self, op_id: u64) {
        assert!(op_id < self.next_op, "op {op_id} was never issued");
        self.written = self.written.max(op_id);
        self.release();
    }

    /// Storage synced operations up to `op_id`.
    pub fn on_synced(&mut self, op_id: u64) {
        assert!(op_id < self.next_op, "op {op_id} was never issued");
        self.synced = self.synced.max(op_id);
        self.written = self.written.max(op_id);
        self.release();
    }

    /// Answers `Sealed` to a message from an epoch below the sealed one; true if it was.
    fn refused_as_stale(&mut self, from: NodeId, epoch: Epoch) -> bool {
        if epoch >= self.sealed {
            return false;
        }
        self.reply_now(
            from,
            Message::Sealed {
                sealed: self.sealed,
            },
        );
        true
    }

    fn on_seal(&mut self, from: NodeId, epoch: Epoch) {
        if self.refused_as_stale(from, epoch) {
            return;
        }
        if epoch > self.sealed && self.mutation != Mutation::SkipSealing {
            self.sealed = epoch;
            self.storage(StorageOp::Seal { epoch });
        }
        let digest = Message::Digest {
            epoch,
            committed: self.committed,
            tail: self.tail.iter().cloned().collect(),
            end: self.end,
            last_epoch: self.last_epoch,
        };
        // A digest goes out only once the seal is synced, whatever the durability: a seal
        // that a crash forgets would let the old sequencer reach W again.
        self.reply_after(from, digest, true);
    }

    fn on_store(
        &mut self,
        from: NodeId,
        epoch: Epoch,
        entry: Entry,
        prev_epoch: Option<Epoch>,
        committed: u64,
    ) {
        if self.refused_as_stale(from, epoch) {
            return;
        }
        if entry.count == 0 || entry.epoch > epoch {
            return; // Malformed: no sequencer sends these; ignore rather than trust.
        }
        if epoch > self.sealed {
            // A newer sequencer writes: it was recovered, so older ones must now be refused
            // here too (Raft's term update), durably before this store is answered.
            self.sealed = epoch;
            self.storage(StorageOp::Seal { epoch });
        }
        if entry.end() <= self.committed {
            // Both logs hold the committed prefix: this one matches through the entry's end.
            self.stored(from, epoch, entry.end());
            return;
        }
        let existing = match self.follows(&entry, prev_epoch) {
            Ok(existing) => existing,
            Err(resume) => {
                self.reply_now(
                    from,
                    Message::NeedFrom {
                        epoch,
                        from: resume,
                    },
                );
                return;
            }
        };
        let first = entry.first;
        match existing {
            Some(index) if self.tail.get(index).is_some_and(|e| e.epoch == entry.epoch) => {
                let held = self.tail.get(index).map(|e| e.end());
                assert_eq!(held, Some(entry.end()), "one epoch, two entries at {first}");
            }
            Some(_) => {
                // Log matching: an entry of another epoch at `first` (and all after it) is not
                // the sender's and was never committed.
                assert!(
                    first >= self.committed,
                    "truncating committed offset {first}"
                );
                self.tail.retain(|e| e.first < first);
                self.storage(StorageOp::Truncate { from: first });
                self.end = first;
                self.append(entry.clone(), committed);
            }
            None => self.append(entry.clone(), committed),
        }
        self.learn_committed(committed.min(entry.end()));
        self.stored(from, epoch, entry.end());
    }

    /// Whether `entry` (ending above the committed offset) follows this log, Raft's
    /// log-matching check: `Ok` with the index in the tail of an entry already starting at its
    /// offset, or `Err` with the offset the sender should resume from.
    fn follows(&self, entry: &Entry, prev_epoch: Option<Epoch>) -> Result<Option<usize>, u64> {
        let first = entry.first;
        if first > self.end {
            return Err(self.end);
        }
        if first < self.committed {
            // Not on an entry boundary of the committed prefix: not a sequencer's store.
            return Err(self.committed);
        }
        let same = self
            .tail
            .iter()
            .position(|e| e.first == first && e.epoch == entry.epoch && e.count == entry.count);
        if let Some(index) = same {
            // Log matching: two logs holding an entry of one epoch at one offset are equal up
            // to its end (every entry was accepted only after the one before it matched), so
            // no previous epoch is needed to recognise it.
            return Ok(Some(index));
        }
        if first > self.committed {
            // Below the committed offset every legitimate log agrees; above, the entry before
            // must be the sender's.
            let prev = self.tail.iter().find(|e| e.end() == first).map(|e| e.epoch);
            if prev.is_none() || prev != prev_epoch {
                return Err(self.committed);
            }
        }
        match self.tail.iter().position(|e| e.first == first) {
            Some(index) => Ok(Some(index)),
            None if first == self.end => Ok(None),
            // Inside one of this log's entries: no sequencer's log cuts there.
            None => Err(self.committed),
        }
    }

    fn stored(&mut self, to: NodeId, epoch: Epoch, end: u64) {
        self.reply_after(to, Message::Stored { epoch, end }, false);
    }

    fn append(&mut self, entry: Entry, committed: u64) {
        assert_eq!(entry.first, self.end, "append must follow the log's end");
        self.end = entry.end();
        self.last_epoch = entry.epoch;
        self.storage(StorageOp::Append {
            entry: entry.clone(),
            committed: committed.min(entry.end()).max(self.committed),
        });
        self.tail.push_back(entry);
    }

    fn learn_committed(&mut self, offset: u64) {
        if offset <= self.committed {
            return;
        }
        assert!(
            offset <= self.end,
            "committed {offset} beyond the log's end"
        );
        self.committed = offset;
        let committed = self.committed;
        self.tail.retain(|e| e.end() >= committed);
        self.effects.push(ReplicaEffect::Committed { offset });
    }

    fn storage(&mut self, op: StorageOp) {
        let op_id = self.next_op;
        self.next_op += 1;
        self.effects.push(ReplicaEffect::Storage { op_id, op });
    }

    fn reply_now(&mut self, to: NodeId, message: Message) {
        self.effects.push(ReplicaEffect::Send { to, message });
    }

    /// Answers once every storage operation issued so far is held: synced when `sync` or the
    /// durability is `fsync`, written otherwise.
    fn reply_after(&mut self, to: NodeId, message: Message, sync: bool) {
        let needs_sync = sync || self.durability == Durability::Fsync;
        self.pending.push_back(Pending {
            after_op: self.next_op - 1,
            needs_sync,
            to,
            message,
        });
        self.release();
    }

    fn release(&mut self) {
        // Answers leave in order: one waiting for a sync holds back those behind it, which
        // only delays them.
        while let Some(pending) = self.pending.front() {
            let done = if pending.needs_sync {
                pending.after_op <= self.synced
            } else {
                pending.after_op <= self.written
            };
            if !done {
                break;
            }
            let Some(pending) = self.pending.pop_front() else {
                break;
            };
            // A replica never answers an epoch below its sealed one: what it stored for that
            // epoch was in the digest it gave the recovery that sealed it.
            let stale = matches!(
                pending.message,
                Message::Stored { epoch, .. } if epoch < self.sealed
            );
            if !stale {
                self.effects.push(ReplicaEffect::Send {
                    to: pending.to,
                    message: pending.message,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn entry(first: u64, count: u64, epoch: u64) -> Entry {
        Entry {
            first,
            count,
            epoch: Epoch(epoch),
            bytes: Arc::from([first as u8].as_slice()),
        }
    }

    fn store(epoch: u64, entry: Entry, prev: Option<u64>, committed: u64) -> Message {
        Message::Store {
            epoch: Epoch(epoch),
            entry,
            prev_epoch: prev.map(Epoch),
            committed,
        }
    }

    /// The storage operations and the messages among `effects`.
    fn split(effects: &[ReplicaEffect]) -> (Vec<StorageOp>, Vec<Message>) {
        let (mut ops, mut sends) = (Vec::new(), Vec::new());
        for effect in effects {
            match effect {
                ReplicaEffect::Storage { op, .. } => ops.push(op.clone()),
                ReplicaEffect::Send { message, .. } => sends.push(message.clone()),
                ReplicaEffect::Committed { .. } => {}
            }
        }
        (ops, sends)
    }

    fn sends(effects: &[ReplicaEffect]) -> Vec<Message> {
        split(effects).1
    }

    fn ops(effects: &[ReplicaEffect]) -> Vec<StorageOp> {
        split(effects).0
    }

    /// Applies every storage op (written and synced) and returns all effects.
    fn settle(replica: &mut Replica) -> Vec<ReplicaEffect> {
        let mut all = replica.take_effects();
        replica.on_synced(replica.last_op_id());
        all.extend(replica.take_effects());
        all
    }

    const S: NodeId = NodeId(1);

    /// A store from an epoch below the sealed one is refused with the sealed epoch, and nothing
    /// is written: a deposed sequencer learns it and cannot count this replica.
    #[test]
    fn a_stale_epoch_is_refused() {
        let mut replica = Replica::new(Durability::Fsync);
        replica.on_message(S, Message::Seal { epoch: Epoch(2) });
        settle(&mut replica);
        replica.on_message(S, store(1, entry(0, 1, 1), None, 0));
        let effects = replica.take_effects();
        assert!(ops(&effects).is_empty());
        assert_eq!(sends(&effects), vec![Message::Sealed { sealed: Epoch(2) }]);
    }

    /// The digest answering a seal leaves only once the seal is synced, even for `memory`
    /// durability: a seal a crash forgets would let the old sequencer reach W again.
    #[test]
    fn a_seal_is_answered_after_it_is_synced() {
        let mut replica = Replica::new(Durability::Memory);
        replica.on_message(S, Message::Seal { epoch: Epoch(3) });
        let effects = replica.take_effects();
        assert_eq!(ops(&effects), vec![StorageOp::Seal { epoch: Epoch(3) }]);
        assert!(sends(&effects).is_empty());
        replica.on_written(1);
        assert!(sends(&replica.take_effects()).is_empty());
        replica.on_synced(1);
        assert!(matches!(
            sends(&replica.take_effects()).as_slice(),
            [Message::Digest {
                epoch: Epoch(3),
                ..
            }]
        ));
        assert_eq!(replica.sealed(), Epoch(3));
    }

    /// `fsync` answers a store after the sync, `memory` after the write.
    #[test]
    fn a_store_is_answered_by_durability() {
        let mut fsync = Replica::new(Durability::Fsync);
        fsync.on_message(S, store(1, entry(0, 2, 1), None, 0));
        fsync.on_written(2);
        assert!(sends(&fsync.take_effects()).is_empty());
        fsync.on_synced(2);
        let stored = Message::Stored {
            epoch: Epoch(1),
            end: 2,
        };
        assert_eq!(sends(&fsync.take_effects()), vec![stored.clone()]);

        let mut memory = Replica::new(Durability::Memory);
        memory.on_message(S, store(1, entry(0, 2, 1), None, 0));
        memory.on_written(2);
        assert_eq!(sends(&memory.take_effects()), vec![stored]);
    }

    /// A store whose previous entry does not match is refused with the committed offset (below
    /// which every legitimate log agrees), and a store past the end with the end.
    #[test]
    fn a_store_that_does_not_follow_the_log_is_refused() {
        let mut replica = Replica::new(Durability::Fsync);
        replica.on_message(S, store(1, entry(0, 1, 1), None, 0));
        replica.on_message(S, store(1, entry(1, 1, 1), Some(1), 1));
        settle(&mut replica);
        assert_eq!(replica.committed(), 1);
        replica.on_message(S, store(2, entry(2, 1, 2), Some(2), 1));
        assert_eq!(
            sends(&settle(&mut replica)),
            vec![Message::NeedFrom {
                epoch: Epoch(2),
                from: 1
            }]
        );
        replica.on_message(S, store(2, entry(5, 1, 2), Some(2), 1));
        assert_eq!(
            sends(&settle(&mut replica)),
            vec![Message::NeedFrom {
                epoch: Epoch(2),
                from: 2
            }]
        );
    }

    /// A never-committed suffix of an older epoch is truncated when the new sequencer's entry
    /// at the same offset differs; the committed prefix stays.
    #[test]
    fn a_conflicting_suffix_is_truncated() {
        let mut replica = Replica::new(Durability::Fsync);
        replica.on_message(S, store(1, entry(0, 1, 1), None, 0));
        replica.on_message(S, store(1, entry(1, 2, 1), Some(1), 1));
        replica.on_message(S, store(1, entry(3, 1, 1), Some(1), 1));
        settle(&mut replica);
        assert_eq!((replica.committed(), replica.end()), (1, 4));
        replica.on_message(S, store(2, entry(1, 1, 2), Some(1), 1));
        let effects = settle(&mut replica);
        assert_eq!(
            ops(&effects),
            vec![
                StorageOp::Seal { epoch: Epoch(2) },
                StorageOp::Truncate { from: 1 },
                StorageOp::Append {
                    entry: entry(1, 1, 2),
                    committed: 1
                },
            ]
        );
        assert_eq!(replica.end(), 2);
        assert_eq!(
            sends(&effects),
            vec![Message::Stored {
                epoch: Epoch(2),
                end: 2
            }]
        );
        // The older epoch is now refused.
        replica.on_message(S, store(1, entry(2, 1, 1), Some(1), 1));
        assert_eq!(
            sends(&replica.take_effects()),
            vec![Message::Sealed { sealed: Epoch(2) }]
        );
    }

    /// A replica learns the committed offset only up to the end of what matched the sender's
    /// log: a stale entry beyond it is never readable.
    #[test]
    fn the_committed_offset_stops_at_the_matched_prefix() {
        let mut replica = Replica::new(Durability::Fsync);
        replica.on_message(S, store(1, entry(0, 1, 1), None, 0));
        replica.on_message(S, store(1, entry(1, 1, 1), Some(1), 0));
        settle(&mut replica);
        // Epoch 2 committed up to 5, but sends this replica only its entry at 0.
        replica.on_message(S, store(2, entry(0, 1, 1), None, 5));
        settle(&mut replica);
        assert_eq!(replica.committed(), 1);
    }
}

#[cfg(test)]
mod proptests {
    //! Log matching under any delivery order: a replica holding a stale log of epoch 1 gets
    //! the stores of epoch 2's log (which shares a prefix with it) lost, duplicated and
    //! reordered at will, with any committed offset epoch 2 could have had when sending.

    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;

    /// A log of entries with the given counts and epochs, `tag` marking the writer.
    fn log(shape: &[(u64, u64)], tag: u8) -> Vec<Entry> {
        let mut first = 0;
        shape
            .iter()
            .map(|&(count, epoch)| {
                let entry = Entry {
                    first,
                    count,
                    epoch: Epoch(epoch),
                    bytes: Arc::from([tag, first as u8].as_slice()),
                };
                first += count;
                entry
            })
            .collect()
    }

    fn apply(stored: &mut Vec<Entry>, op: &StorageOp) {
        match op {
            StorageOp::Seal { .. } => {}
            StorageOp::Truncate { from } => stored.retain(|e| e.first < *from),
            StorageOp::Append { entry, .. } => stored.push(entry.clone()),
        }
    }

    proptest! {
        #[test]
        fn a_replica_only_ever_matches_the_sequencer_log(
            shared in 0usize..4,
            stale in proptest::collection::vec(1u64..4, 0..6),
            fresh in proptest::collection::vec(1u64..4, 1..8),
            deliveries in proptest::collection::vec((0usize..16, 0u64..=100), 1..60),
        ) {
            // Epoch 1's log: `shared` entries then a stale suffix; epoch 2's: the same
            // `shared` entries, then its own.
            let common: Vec<(u64, u64)> = stale.iter().take(shared).map(|&c| (c, 1)).collect();
            let shared = common.len();
            let old_shape: Vec<(u64, u64)> = stale.iter().map(|&c| (c, 1)).collect();
            let mut new_shape = common.clone();
            new_shape.extend(fresh.iter().map(|&c| (c, 2)));
            let old = log(&old_shape, 1);
            let new = log(&new_shape, 2);
            let mut new = new;
            // The shared prefix is the same entries (bytes included).
            for (n, o) in new.iter_mut().zip(old.iter()).take(shared) {
                *n = o.clone();
            }
            let end = old.last().map_or(0, Entry::end);
            let last = old.last().map_or(Epoch(0), |e| e.epoch);
            let mut replica = Replica::restore(
                Durability::Fsync, last, 0, end, last, old.clone(),
            );
            let mut stored = old.clone();
            // What epoch 2 could have committed: some prefix of its log that ends after its
            // adopted part (here: any of its entry ends after the shared prefix).
            for (pick, committed_pct) in deliveries {
                let Some(entry) = new.get(pick % new.len()).cloned() else { continue };
                let index = pick % new.len();
                let prev_epoch = index.checked_sub(1).and_then(|i| new.get(i)).map(|e| e.epoch);
                let ends: Vec<u64> = new.iter().map(Entry::end).collect();
                let committed_index = (committed_pct as usize * ends.len()) / 101;
                let committed = if committed_index == 0 { 0 } else { ends[committed_index - 1] };
                replica.on_message(NodeId(1), Message::Store {
                    epoch: Epoch(2),
                    entry,
                    prev_epoch,
                    committed,
                });
                replica.on_synced(replica.last_op_id());
                for effect in replica.take_effects() {
                    match effect {
                        ReplicaEffect::Storage { op, .. } => apply(&mut stored, &op),
                        ReplicaEffect::Send { message: Message::Stored { end, .. }, .. } => {
                            // "My log matches yours up to `end`."
                            let mine: Vec<&Entry> =
                                stored.iter().take_while(|e| e.end() <= end).collect();
                            let theirs: Vec<&Entry> =
                                new.iter().take_while(|e| e.end() <= end).collect();
                            prop_assert_eq!(mine, theirs);
                        }
                        _ => {}
                    }
                }
                // Below its committed offset the replica holds epoch 2's log.
                let c = replica.committed();
                let mine: Vec<&Entry> = stored.iter().take_while(|e| e.end() <= c).collect();
                let theirs: Vec<&Entry> = new.iter().take_while(|e| e.end() <= c).collect();
                prop_assert_eq!(mine, theirs);
                prop_assert_eq!(stored.last().map_or(0, Entry::end), replica.end());
            }
        }
    }
}
