//! Streams as the metadata knows them: a name, a configuration and the shards made with it.

use std::fmt;

use runnel_core::key::KEY_RANGE_SPLIT_MAX;
use runnel_core::{ShardId, StreamName};

use super::error::MetadataError;

/// Most shards a stream may be created with. Far below what the key space allows
/// ([`KEY_RANGE_SPLIT_MAX`]): each shard costs a sequencer, files and a replica set.
pub const SHARD_COUNT_MAX: u32 = 1024;

/// Largest replication factor (replicas per shard).
pub const REPLICATION_FACTOR_MAX: u8 = 7;

const _: () = assert!(SHARD_COUNT_MAX as u64 <= KEY_RANGE_SPLIT_MAX);

/// A stream's id, allocated by the metadata from a counter: never reused, not even after the
/// stream is deleted. The first stream gets id 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u64);

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// When an append is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Durability {
    /// After fdatasync on a write quorum of replicas.
    #[default]
    Fsync,
    /// When a write quorum of replicas holds the batch in memory (like Kafka's `acks=all`).
    Memory,
}

/// What a user chooses when creating a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    /// The stream's name, unique among live streams.
    pub name: StreamName,
    /// Shards the stream is created with: 1 to [`SHARD_COUNT_MAX`].
    pub shard_count: u32,
    /// Replicas per shard: 1 to [`REPLICATION_FACTOR_MAX`], and at most the nodes that can
    /// take replicas (registered, not avoided by the create).
    pub replication_factor: u8,
    /// How long records are kept (the backlog duration), in milliseconds; at least 1.
    pub retention_ms: u64,
    /// When appends are acknowledged.
    pub durability: Durability,
}

impl StreamConfig {
    /// Checks the rules that do not depend on the cluster: shard count, replication factor and
    /// retention ranges.
    pub fn validate(&self) -> Result<(), MetadataError> {
        let invalid = |reason: String| MetadataError::InvalidConfig { reason };
        if self.shard_count == 0 || self.shard_count > SHARD_COUNT_MAX {
            return Err(invalid(format!(
                "shard count must be between 1 and {SHARD_COUNT_MAX}, got {}",
                self.shard_count
            )));
        }
        if self.replication_factor == 0 || self.replication_factor > REPLICATION_FACTOR_MAX {
            return Err(invalid(format!(
                "replication factor must be between 1 and {REPLICATION_FACTOR_MAX}, got {}",
                self.replication_factor
            )));
        }
        if self.retention_ms == 0 {
            return Err(invalid("retention must be at least 1 ms".to_string()));
        }
        Ok(())
    }
}

/// A live stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    /// The stream's id.
    pub id: StreamId,
    /// Its configuration, as created.
    pub config: StreamConfig,
    /// When it was created (the `now_ms` of its `CreateStream` command), in milliseconds since
    /// the Unix epoch.
    pub created_ms: u64,
    /// The shards created with the stream, in key order. Later splits and merges do not change
    /// this list: they are reached through each shard's children.
    pub shards: Vec<ShardId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(shard_count: u32, replication_factor: u8, retention_ms: u64) -> StreamConfig {
        StreamConfig {
            name: StreamName::new("s").expect("valid name"),
            shard_count,
            replication_factor,
            retention_ms,
            durability: Durability::Fsync,
        }
    }

    #[test]
    fn config_bounds_are_enforced() {
        assert_eq!(config(1, 1, 1).validate(), Ok(()));
        assert_eq!(
            config(SHARD_COUNT_MAX, REPLICATION_FACTOR_MAX, 1).validate(),
            Ok(())
        );
        for bad in [
            config(0, 1, 1),
            config(SHARD_COUNT_MAX + 1, 1, 1),
            config(1, 0, 1),
            config(1, REPLICATION_FACTOR_MAX + 1, 1),
            config(1, 1, 0),
        ] {
            assert!(
                matches!(bad.validate(), Err(MetadataError::InvalidConfig { .. })),
                "{bad:?} should be refused"
            );
        }
        assert_eq!(Durability::default(), Durability::Fsync);
    }
}
