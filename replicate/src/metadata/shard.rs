//! Shards as the metadata knows them: a key range of a stream, its lineage, epoch, replica set
//! and the replica its sequencer runs on.

use runnel_core::{Epoch, KeyRange, ShardId};

use super::node::NodeId;
use super::stream::StreamId;

/// Whether a shard takes appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShardStatus {
    /// Takes appends for the keys of its range.
    Open,
    /// Split or merged: takes no more appends, stays readable; its children hold its range now.
    Sealed,
}

/// A node and one of its cores: where one replica of a shard (its sequencer's included) runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Placement {
    /// The node.
    pub node: NodeId,
    /// The core on that node (clients reach it at the node's base port + `core`).
    pub core: u32,
}

/// A shard of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// The shard's id, never reused.
    pub id: ShardId,
    /// The stream the shard belongs to.
    pub stream: StreamId,
    /// The key hashes it owns (while open) or owned (once sealed).
    pub key_range: KeyRange,
    /// Open or sealed.
    pub status: ShardStatus,
    /// The shards this one was split or merged from, in key order: none for a shard created
    /// with its stream, one after a split, two after a merge.
    pub parents: Vec<ShardId>,
    /// The shards that replaced this one, in key order: none while open, two after a split,
    /// one after a merge.
    pub children: Vec<ShardId>,
    /// The sequencer generation; 0 when the shard is created, raised by each failover. It is
    /// the epoch of the sequencer at [`Shard::placement`].
    pub epoch: Epoch,
    /// Where the shard's sequencer runs: always one of [`Shard::replicas`]. Clients route
    /// appends here.
    pub placement: Placement,
    /// Every replica of the shard, the sequencer's included: the stream's replication factor
    /// R entries on R distinct nodes, the first placed first (the sequencer at creation). A
    /// shard placed before replica sets existed (decoded from an older snapshot) has exactly
    /// `[placement]`, whatever R; re-replication will complete such sets later.
    pub replicas: Vec<Placement>,
    /// When the shard was created, in milliseconds since the Unix epoch. A sealed shard was
    /// sealed when its children were created.
    pub created_ms: u64,
}

impl Shard {
    /// Whether the shard takes appends.
    pub fn is_open(&self) -> bool {
        self.status == ShardStatus::Open
    }

    /// Whether a replica of the shard runs on `node`.
    pub fn has_replica_on(&self, node: NodeId) -> bool {
        self.replicas.iter().any(|replica| replica.node == node)
    }
}
