//! Which core serves a shard: this one, with its log, or another, named in the error.
//!
//! Every request for a shard's data (appends, reads, trims; replication and SQL later) starts
//! here. The stream and the shard must exist in this core's metadata replica and the shard
//! must be placed on this node and core; its log is then opened if it is closed
//! (`crate::local`). The answer holds what the data path needs of the shard's record, copied
//! (a few words, nothing allocated), so that no borrow of the metadata outlives the lookup.

use std::rc::Rc;

use runnel_core::{Epoch, KeyRange, ShardId, StreamName};
use runnel_replicate::metadata::{Durability, Placement};

use crate::core::Core;
use crate::local::{LocalShard, OpenError, OpenLog};

/// A shard this core owns, and its open log.
pub struct OwnedShard {
    /// The shard's log, open.
    pub log: OpenLog,
    /// What the data path needs of the shard's metadata record.
    pub shard: ShardFacts,
}

/// What the data path needs of a shard's metadata record, copied out of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardFacts {
    /// The shard.
    pub id: ShardId,
    /// The key hashes the shard owns.
    pub key_range: KeyRange,
    /// The shard's epoch (sequencer generation), stamped into the batches appended.
    pub epoch: Epoch,
    /// Whether the shard takes appends (false once a split or a merge sealed it).
    pub open: bool,
    /// Its stream's durability: when an append is acknowledged, and what readers see.
    pub durability: Durability,
    /// Whether metadata gives it two replicas or more: its appends and reads go through its
    /// replica's host (`crate::replicated`) only, never straight to the log.
    pub replicated: bool,
}

/// Why this core does not serve a shard's data.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ShardError {
    /// No stream of that name (in this core's replica of the metadata).
    #[error("stream {stream} does not exist")]
    UnknownStream {
        /// The stream asked for.
        stream: StreamName,
    },
    /// The stream has no shard of that id.
    #[error("stream {stream} has no shard {shard}")]
    UnknownShard {
        /// The stream.
        stream: StreamName,
        /// The shard asked for.
        shard: ShardId,
    },
    /// Another core, of this node or another, owns the shard: ask it.
    #[error("shard {shard} is owned by node {} core {}", owner.node.0, owner.core)]
    NotOwner {
        /// The shard.
        shard: ShardId,
        /// Where its sequencer runs.
        owner: Placement,
    },
    /// The metadata places the shard here but this core has not registered it yet (a
    /// command still on its way to this core): retry.
    #[error("shard {shard} is not open on this core yet")]
    NotLocalYet {
        /// The shard.
        shard: ShardId,
    },
    /// The shard's log could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
}

impl Core {
    /// The shard and its log, opened if it is not open, if this core owns it; or the error
    /// that says where it lives.
    pub async fn owned_log(
        &self,
        stream: &StreamName,
        shard: ShardId,
    ) -> Result<OwnedShard, ShardError> {
        let (local, facts) = self.owned_shard(stream, shard)?;
        let log = self.open_log(&local).await?;
        Ok(OwnedShard { log, shard: facts })
    }

    /// The shard if this core owns it (its log perhaps closed); or the error that says where
    /// it lives.
    fn owned_shard(
        &self,
        stream: &StreamName,
        shard: ShardId,
    ) -> Result<(Rc<LocalShard>, ShardFacts), ShardError> {
        let state = self.metadata.borrow();
        let stream_record = state
            .stream(stream)
            .ok_or_else(|| ShardError::UnknownStream {
                stream: stream.clone(),
            })?;
        let shard_record = state
            .shard(shard)
            .filter(|record| record.stream == stream_record.id)
            .ok_or_else(|| ShardError::UnknownShard {
                stream: stream.clone(),
                shard,
            })?;
        let placement = shard_record.placement;
        if placement.node != self.node_id() || placement.core != self.index {
            return Err(ShardError::NotOwner {
                shard,
                owner: placement,
            });
        }
        let local = self
            .local_shard(shard)
            .ok_or(ShardError::NotLocalYet { shard })?;
        let facts = ShardFacts {
            id: shard_record.id,
            key_range: shard_record.key_range,
            epoch: shard_record.epoch,
            open: shard_record.is_open(),
            durability: stream_record.config.durability,
            replicated: shard_record.replicas.len() >= 2,
        };
        Ok((local, facts))
    }
}
