//! A member's Raft log as raft-rs reads it: hard state, membership, the newest snapshot of the
//! metadata state and the entries after it.
//!
//! The store is memory only. Its owner writes what a [`super::Persist`] carries to disk (and
//! syncs) before acknowledging it; on restart it rebuilds the store from what the disk holds.
//! The simulator keeps two stores per member: the live one and the image of what was synced.

use raft::prelude::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};

use crate::metadata::{encode_snapshot, MetadataState};

/// The index (and term) of a founding member's first snapshot: the group's log starts after it.
pub const FOUNDING_INDEX: u64 = 1;

/// The snapshot a store holds: where it stands in the log and the encoded metadata state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredSnapshot {
    /// Log index of the last entry the snapshot covers (0: none).
    pub index: u64,
    /// Term of that entry.
    pub term: u64,
    /// The group's members at that index.
    pub conf_state: ConfState,
    /// `encode_snapshot` of the metadata state at that index (empty when `index` is 0).
    pub data: Vec<u8>,
}

impl StoredSnapshot {
    /// The raft-rs form.
    pub fn to_raft(&self) -> Snapshot {
        let mut metadata = SnapshotMetadata {
            index: self.index,
            term: self.term,
            ..SnapshotMetadata::default()
        };
        metadata.set_conf_state(self.conf_state.clone());
        let mut snapshot = Snapshot::default();
        snapshot.set_metadata(metadata);
        snapshot.data = self.data.clone().into();
        snapshot
    }

    /// From the raft-rs form.
    pub fn from_raft(snapshot: &Snapshot) -> StoredSnapshot {
        let metadata = snapshot.get_metadata();
        StoredSnapshot {
            index: metadata.index,
            term: metadata.term,
            conf_state: metadata.get_conf_state().clone(),
            data: snapshot.data.to_vec(),
        }
    }
}

/// Why [`GroupStore::restore`] refused what a disk held.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// The entries after the snapshot skip or repeat an index.
    #[error("entry {got} where entry {expected} was next (the snapshot ends at {snapshot})")]
    NotConsecutive {
        /// The snapshot's index.
        snapshot: u64,
        /// The index that was next.
        expected: u64,
        /// The index found.
        got: u64,
    },
    /// The commit index lies below the snapshot or past the last entry.
    #[error("commit index {commit} outside the log (snapshot at {snapshot}, last entry {last})")]
    CommitOutOfRange {
        /// The hard state's commit index.
        commit: u64,
        /// The snapshot's index.
        snapshot: u64,
        /// The last entry's index (the snapshot's when there is none).
        last: u64,
    },
}

/// A member's Raft log in memory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupStore {
    hard_state: HardState,
    snapshot: StoredSnapshot,
    /// Entries `snapshot.index + 1 ..`, consecutive.
    entries: Vec<Entry>,
    /// raft-rs asked for a snapshot for a peer that the one held does not name as a member
    /// (it predates the peer's joining): the member takes a fresh one.
    fresh_snapshot_wanted: std::cell::Cell<bool>,
}

impl GroupStore {
    /// The store of a founding member of a new group whose voters are `voters`: the log
    /// starts with a snapshot at index 1 (term 1) that holds the founding members and the
    /// empty metadata state. Members that join later start empty ([`Self::joining`]): the
    /// log below index 2 is never sent as entries, so the leader sends them a snapshot, and
    /// with it the members as they are — a joiner can never miss the founding voters, which
    /// are in no log entry.
    pub fn founding(voters: &[u64]) -> GroupStore {
        let conf_state = ConfState {
            voters: voters.to_vec(),
            ..ConfState::default()
        };
        let mut state = MetadataState::new();
        let skipped = state.skip(FOUNDING_INDEX);
        assert!(skipped.is_ok(), "index 1 follows an empty state");
        GroupStore {
            hard_state: HardState {
                term: FOUNDING_INDEX,
                commit: FOUNDING_INDEX,
                ..HardState::default()
            },
            snapshot: StoredSnapshot {
                index: FOUNDING_INDEX,
                term: FOUNDING_INDEX,
                conf_state,
                data: encode_snapshot(&state),
            },
            entries: Vec::new(),
            fresh_snapshot_wanted: std::cell::Cell::new(false),
        }
    }

    /// The store of the only voter `voters` of a group made from a node's existing metadata
    /// (a node whose data predates the group): a snapshot of `state` at its applied index, in
    /// term 1, naming `voters`; committed up to that index, and no entries after it. A state
    /// with nothing applied (index 0) gives the founding store, whose snapshot stands at
    /// index 1 like every founding member's.
    pub fn from_state(state: &MetadataState, voters: &[u64]) -> GroupStore {
        let index = state.applied_index();
        if index == 0 {
            return GroupStore::founding(voters);
        }
        GroupStore {
            hard_state: HardState {
                term: FOUNDING_INDEX,
                commit: index,
                ..HardState::default()
            },
            snapshot: StoredSnapshot {
                index,
                term: FOUNDING_INDEX,
                conf_state: ConfState {
                    voters: voters.to_vec(),
                    ..ConfState::default()
                },
                data: encode_snapshot(state),
            },
            entries: Vec::new(),
            fresh_snapshot_wanted: std::cell::Cell::new(false),
        }
    }

    /// Rebuilds a store from what a disk held: the hard state, the newest snapshot and the
    /// entries after it. Refuses parts that do not fit together (raft-rs would panic on them):
    /// entries that do not follow the snapshot one by one, or a commit index outside
    /// `[snapshot index, last index]`.
    pub fn restore(
        hard_state: HardState,
        snapshot: StoredSnapshot,
        entries: Vec<Entry>,
    ) -> Result<GroupStore, RestoreError> {
        for (position, entry) in entries.iter().enumerate() {
            let expected = snapshot.index + 1 + position as u64;
            if entry.index != expected {
                return Err(RestoreError::NotConsecutive {
                    snapshot: snapshot.index,
                    expected,
                    got: entry.index,
                });
            }
        }
        let last = entries.last().map_or(snapshot.index, |e| e.index);
        if hard_state.commit < snapshot.index || hard_state.commit > last {
            return Err(RestoreError::CommitOutOfRange {
                commit: hard_state.commit,
                snapshot: snapshot.index,
                last,
            });
        }
        Ok(GroupStore {
            hard_state,
            snapshot,
            entries,
            fresh_snapshot_wanted: std::cell::Cell::new(false),
        })
    }

    /// Whether a snapshot newer than the one held is wanted (a peer joined after it); asking
    /// clears the wish.
    pub fn take_fresh_snapshot_wanted(&self) -> bool {
        self.fresh_snapshot_wanted.replace(false)
    }

    /// The store of a member that joins an existing group: empty, knowing no members; it
    /// waits for the leader's snapshot.
    pub fn joining() -> GroupStore {
        GroupStore::default()
    }

    /// The vote, term and commit index last written.
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// The newest snapshot.
    pub fn snapshot(&self) -> &StoredSnapshot {
        &self.snapshot
    }

    /// The entries after the snapshot.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Index of the last entry (the snapshot's when there is none after it).
    pub fn last_index(&self) -> u64 {
        self.entries.last().map_or(self.snapshot.index, |e| e.index)
    }

    fn first_index(&self) -> u64 {
        self.snapshot.index + 1
    }

    /// Records a new hard state.
    pub fn set_hard_state(&mut self, hard_state: HardState) {
        self.hard_state = hard_state;
    }

    /// Records a higher commit index learnt after the last hard state was written (raft-rs
    /// reports it with the entries it makes applicable).
    pub fn set_commit(&mut self, commit: u64) {
        self.hard_state.commit = self.hard_state.commit.max(commit);
    }

    /// Appends `entries`, replacing any entries at and after the first one's index (a new
    /// leader's log wins over an unacknowledged suffix).
    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else {
            return;
        };
        assert!(
            first.index > self.snapshot.index,
            "appending entry {} at or below the snapshot at {}",
            first.index,
            self.snapshot.index
        );
        assert!(
            first.index <= self.last_index() + 1,
            "appending entry {} leaves a gap after {}",
            first.index,
            self.last_index()
        );
        let keep = (first.index - self.first_index()) as usize;
        self.entries.truncate(keep);
        self.entries.extend_from_slice(entries);
    }

    /// Replaces the log with a snapshot received from the leader: the entries it covers go,
    /// and so does everything after it (it came from a leader whose log wins).
    pub fn install_snapshot(&mut self, snapshot: StoredSnapshot) {
        assert!(
            snapshot.index >= self.snapshot.index,
            "a snapshot at {} older than the one held at {}",
            snapshot.index,
            self.snapshot.index
        );
        self.entries.clear();
        self.hard_state.commit = self.hard_state.commit.max(snapshot.index);
        self.hard_state.term = self.hard_state.term.max(snapshot.term);
        self.snapshot = snapshot;
    }

    /// Takes a snapshot at `index` (applied, so committed) whose encoded state is `data`, and
    /// drops the entries it covers.
    pub fn compact(&mut self, index: u64, data: Vec<u8>, conf_state: ConfState) {
        if index <= self.snapshot.index {
            return;
        }
        assert!(
            index <= self.hard_state.commit,
            "compacting to {index} beyond the commit index {}",
            self.hard_state.commit
        );
        let term = self.term_at(index).unwrap_or(self.snapshot.term);
        self.keep_snapshot(StoredSnapshot {
            index,
            term,
            conf_state,
            data,
        });
    }

    /// Keeps `snapshot`, taken by this member from its own applied state, and drops the
    /// entries it covers (what the owner's disk does with [`super::Advanced::compacted`]).
    pub fn keep_snapshot(&mut self, snapshot: StoredSnapshot) {
        if snapshot.index <= self.snapshot.index {
            return;
        }
        assert!(
            snapshot.index <= self.last_index(),
            "a snapshot at {} past the log's end {}",
            snapshot.index,
            self.last_index()
        );
        let drop = (snapshot.index + 1 - self.first_index()) as usize;
        self.entries.drain(..drop);
        self.hard_state.commit = self.hard_state.commit.max(snapshot.index);
        self.snapshot = snapshot;
    }

    fn term_at(&self, index: u64) -> Option<u64> {
        if index == self.snapshot.index {
            return Some(self.snapshot.term);
        }
        let position = index.checked_sub(self.first_index())?;
        self.entries.get(position as usize).map(|e| e.term)
    }
}

impl raft::Storage for GroupStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState {
            hard_state: self.hard_state.clone(),
            conf_state: self.snapshot.conf_state.clone(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let from = (low - self.first_index()) as usize;
        let to = (high - self.first_index()) as usize;
        let mut taken = Vec::new();
        let mut size = 0u64;
        let max_size = max_size.into().unwrap_or(u64::MAX);
        for entry in self.entries.get(from..to).unwrap_or_default() {
            size += protobuf::Message::compute_size(entry) as u64;
            // Always at least one entry, as raft-rs expects.
            if !taken.is_empty() && size > max_size {
                break;
            }
            taken.push(entry.clone());
        }
        Ok(taken)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        if index < self.snapshot.index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        self.term_at(index)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index())
    }

    fn snapshot(&self, _request_index: u64, to: u64) -> raft::Result<Snapshot> {
        // A peer that is not a member in the snapshot would refuse it (raft-rs checks): ask
        // the member for a fresh one, and raft-rs tries again later.
        let members = &self.snapshot.conf_state;
        if !members.voters.contains(&to) && !members.learners.contains(&to) {
            self.fresh_snapshot_wanted.set(true);
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot.to_raft())
    }
}

#[cfg(test)]
mod tests {
    use raft::prelude::{Entry, HardState};

    use super::{GroupStore, RestoreError, StoredSnapshot, FOUNDING_INDEX};
    use crate::group::{GroupMember, MemberConfig};
    use crate::metadata::testing::{config, node};
    use crate::metadata::{decode_snapshot, encode_snapshot, Command, MetadataState};

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: vec![index as u8; 3].into(),
            ..Entry::default()
        }
    }

    /// A store rebuilt from its parts is the store they came from, compacted or not.
    #[test]
    fn restore_gives_back_the_store_its_parts_came_from() {
        let mut store = GroupStore::founding(&[1, 2, 3]);
        store.append(&(2..=6).map(|i| entry(i, 2)).collect::<Vec<_>>());
        store.set_hard_state(HardState {
            term: 2,
            vote: 1,
            commit: 5,
            ..HardState::default()
        });
        for _ in 0..2 {
            let restored = GroupStore::restore(
                store.hard_state().clone(),
                store.snapshot().clone(),
                store.entries().to_vec(),
            );
            assert_eq!(restored, Ok(store.clone()));
            store.compact(4, vec![9; 4], store.snapshot().conf_state.clone());
        }
    }

    /// Parts that raft-rs would panic on are refused with what is wrong.
    #[test]
    fn restore_refuses_a_gap_and_a_commit_outside_the_log() {
        let snapshot = GroupStore::founding(&[1]).snapshot().clone();
        let hard_state = |commit| HardState {
            term: 1,
            commit,
            ..HardState::default()
        };
        assert_eq!(
            GroupStore::restore(
                hard_state(1),
                snapshot.clone(),
                vec![entry(2, 1), entry(4, 1)]
            ),
            Err(RestoreError::NotConsecutive {
                snapshot: 1,
                expected: 3,
                got: 4
            })
        );
        assert_eq!(
            GroupStore::restore(hard_state(1), snapshot.clone(), vec![entry(3, 1)]),
            Err(RestoreError::NotConsecutive {
                snapshot: 1,
                expected: 2,
                got: 3
            })
        );
        assert_eq!(
            GroupStore::restore(hard_state(3), snapshot.clone(), vec![entry(2, 1)]),
            Err(RestoreError::CommitOutOfRange {
                commit: 3,
                snapshot: 1,
                last: 2
            })
        );
        assert_eq!(
            GroupStore::restore(hard_state(0), snapshot, Vec::new()),
            Err(RestoreError::CommitOutOfRange {
                commit: 0,
                snapshot: 1,
                last: 1
            })
        );
    }

    /// A node's existing state becomes a group of one that starts on it and goes on at the
    /// next index; a state with nothing applied gives the founding store.
    #[test]
    fn a_store_from_an_existing_state_starts_a_member_on_that_state() {
        assert_eq!(
            GroupStore::from_state(&MetadataState::new(), &[7]),
            GroupStore::founding(&[7])
        );
        let mut state = MetadataState::new();
        let commands = [
            Command::RegisterNode { node: node(7, 2) },
            Command::CreateStream {
                config: config("orders", 2),
                now_ms: 1,
                avoid: Vec::new(),
            },
        ];
        for (i, command) in commands.iter().enumerate() {
            assert!(state.apply(i as u64 + 1, command).is_ok());
        }
        let store = GroupStore::from_state(&state, &[7]);
        assert_eq!(
            store.snapshot(),
            &StoredSnapshot {
                index: 2,
                term: FOUNDING_INDEX,
                conf_state: raft::prelude::ConfState {
                    voters: vec![7],
                    ..Default::default()
                },
                data: encode_snapshot(&state),
            }
        );
        assert_eq!(store.hard_state().commit, 2);
        let mut member = GroupMember::start(MemberConfig::new(7), store, 1).unwrap();
        assert_eq!(member.state(), &state);
        member.campaign().unwrap();
        let command = Command::CreateStream {
            config: config("payments", 1),
            now_ms: 2,
            avoid: Vec::new(),
        };
        let mut proposed = false;
        while let Some(persist) = member.ready() {
            assert!(persist.snapshot.is_none());
            member.persisted().unwrap();
            if member.is_leader() && !proposed {
                member.propose(42, &command).unwrap();
                proposed = true;
            }
        }
        // Index 3 is the new leader's empty entry; the command is 4.
        assert_eq!(member.applied_index(), 4);
        assert!(state.skip(3).is_ok());
        assert!(state.apply(4, &command).is_ok());
        assert_eq!(member.state(), &state);
        assert_eq!(decode_snapshot(&encode_snapshot(&state)).unwrap(), state);
    }
}
