//! A replicated shard's data path: [`Sequencer`], [`Replica`] and [`Recovery`] as sans-IO state
//! machines, after LogDevice/BookKeeper (a sequencer per epoch, passive replicas, sealing) with
//! Raft's log-matching rule for the consistency of replicas' logs. `docs/replication.md` holds
//! the protocol message by message and the proof sketch of each contract point.
//!
//! - Every node of a shard's replica set runs a [`Replica`]: it stores the entries it is sent
//!   (local write, then fsync for `fsync` durability) and answers; it rejects anything from an
//!   epoch below its **sealed** epoch.
//! - Per epoch, metadata names one node the sequencer. It first runs [`Recovery`]: it seals the
//!   epoch on at least R−W+1 replicas (so no older sequencer can reach W again), takes their
//!   digests and adopts the most up-to-date one (highest last epoch, then longest), which holds
//!   every record that may have been acknowledged. Then a [`Sequencer`] assigns dense offsets,
//!   sends each batch to every replica (its own node's too) and commits an offset when W = ⌊R/2⌋+1
//!   replicas hold the whole prefix up to it; it then acknowledges the appends and piggybacks the
//!   committed offset on later stores, so replicas learn it. Readers never read past it.
//!
//! Invariants (checked after every step by the simulator in [`sim`]): a committed offset never
//! goes backwards and never changes record; every replica's log below its committed offset is
//! the committed log; at most one sequencer commits per epoch; every acknowledged append is in
//! every later committed prefix.
//!
//! Must never: touch a clock, a socket, a file or a random source. Time is ticks, storage is
//! effects and their completions, messages are values.
//!
//! Fault model: messages are lost, duplicated, delayed and reordered; nodes pause and crash,
//! losing what they had not synced; a paused sequencer wakes up in a later epoch. Loss of more
//! than R−W replicas' synced data is outside the model.

mod recovery;
mod replica;
mod sequencer;
pub mod sim;

pub use recovery::{Recovery, RecoveryOutcome};
pub use replica::{Replica, ReplicaEffect, StorageOp};
pub use sequencer::{AppendError, Sequencer, SequencerConfig, SequencerEffect};

use std::sync::Arc;

pub use crate::metadata::{Durability, NodeId};

/// A sequencer's term: metadata bumps it at each failover and names one sequencer per epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Epoch(pub u64);

impl std::fmt::Display for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "e{}", self.0)
    }
}

/// One batch in a shard's log: it covers offsets `[first, first + count)` and keeps the epoch
/// of the sequencer that assigned its offsets for ever (recovery re-replicates it unchanged,
/// which is what keeps Raft's log-matching argument valid; see `docs/replication.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its first offset.
    pub first: u64,
    /// Records in it (at least one).
    pub count: u64,
    /// The epoch that assigned its offsets.
    pub epoch: Epoch,
    /// The batch bytes, unchanged from producer to disk to replicas.
    pub bytes: Arc<[u8]>,
}

impl Entry {
    /// The offset after its last record.
    pub fn end(&self) -> u64 {
        self.first + self.count
    }
}

/// A message between a shard's sequencer (or recovery) and its replicas. Every message carries
/// the sender's epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Sequencer → replica: store `entry` after the entry ending at `entry.first`, whose epoch
    /// is `prev_epoch` (`None`: the sender does not have it in memory, so the replica accepts
    /// only if `entry.first` is at or below the offset it knows committed). `committed` is the
    /// sender's committed offset.
    Store {
        /// The sequencer's epoch.
        epoch: Epoch,
        /// The entry to store.
        entry: Entry,
        /// The epoch of the entry before it, when the sender knows it.
        prev_epoch: Option<Epoch>,
        /// The sequencer's committed offset.
        committed: u64,
    },
    /// Replica → sequencer: my log matches yours up to `end` (held durably for `fsync`, in
    /// memory for `memory`).
    Stored {
        /// The sequencer's epoch this answers.
        epoch: Epoch,
        /// The end of the matching prefix.
        end: u64,
    },
    /// Replica → sequencer: your store does not follow my log; send from `from` (an offset at
    /// which my log is known to match every sequencer's: my end, or my committed offset).
    NeedFrom {
        /// The sequencer's epoch this answers.
        epoch: Epoch,
        /// Where to resume.
        from: u64,
    },
    /// Replica → sequencer or recovery: I am sealed at `sealed`, above your epoch; stop.
    Sealed {
        /// The replica's sealed epoch.
        sealed: Epoch,
    },
    /// Recovery → replica: seal every epoch below `epoch` and send your digest.
    Seal {
        /// The recovering epoch.
        epoch: Epoch,
    },
    /// Replica → recovery: sealed at `epoch`; my digest.
    Digest {
        /// The sealed epoch (the recovery's).
        epoch: Epoch,
        /// The offset this replica knows committed.
        committed: u64,
        /// Its entries from the one ending at `committed` (none when `committed` is 0) to its
        /// end.
        tail: Vec<Entry>,
        /// Its log's end (the offset after its last entry).
        end: u64,
        /// The epoch of its last entry (`Epoch(0)` for an empty log).
        last_epoch: Epoch,
    },
}

impl Message {
    /// The epoch the message speaks for (the sender's, or the sealed one for `Sealed`).
    pub fn epoch(&self) -> Epoch {
        match self {
            Message::Store { epoch, .. }
            | Message::Stored { epoch, .. }
            | Message::NeedFrom { epoch, .. }
            | Message::Seal { epoch }
            | Message::Digest { epoch, .. } => *epoch,
            Message::Sealed { sealed } => *sealed,
        }
    }
}

/// W for a replica set of `replicas`: ⌊R/2⌋+1.
pub fn write_quorum(replicas: usize) -> usize {
    replicas / 2 + 1
}

/// How many replicas recovery must seal: R−W+1, so that the replicas left unsealed are fewer
/// than W and any W-set meets the sealed ones.
pub fn seal_quorum(replicas: usize) -> usize {
    replicas - write_quorum(replicas) + 1
}

/// A deliberate protocol bug, for the simulator's tests that the checks catch it. Production
/// code always runs [`Mutation::None`]; the other values are reachable only through
/// [`sim::SimConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mutation {
    /// The protocol as built.
    #[default]
    None,
    /// Replicas answer a seal with their digest but do not raise their sealed epoch.
    SkipSealing,
    /// The sequencer acknowledges when any one replica holds a batch.
    AckBeforeQuorum,
}
