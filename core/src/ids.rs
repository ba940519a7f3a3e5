//! Shard ids, offsets, epochs and record ids.

use std::fmt;
use std::str::FromStr;

use crate::error::IdError;

/// A shard's id, unique within a cluster for the cluster's life (never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u64);

/// A record's position within its shard: dense, from 0, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Offset(pub u64);

/// A sequencer generation of a shard. Writes from an older epoch are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Epoch(pub u64);

impl Offset {
    /// The offset `count` records after this one.
    pub fn after(self, count: u64) -> Offset {
        Offset(self.0 + count)
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A record's identity: its shard and its offset there, printed `<shard>-<offset>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId {
    /// The shard holding the record.
    pub shard: ShardId,
    /// The record's offset within that shard.
    pub offset: Offset,
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.shard.0, self.offset.0)
    }
}

impl FromStr for RecordId {
    type Err = IdError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || IdError::InvalidRecordId {
            text: text.chars().take(64).collect(),
        };
        let (shard, offset) = text.split_once('-').ok_or_else(invalid)?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(shard) || !digits(offset) {
            return Err(invalid());
        }
        Ok(RecordId {
            shard: ShardId(shard.parse().map_err(|_| invalid())?),
            offset: Offset(offset.parse().map_err(|_| invalid())?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn record_id_rejects_malformed_text() {
        for bad in [
            "",
            "1",
            "1-",
            "-1",
            "a-1",
            "1-b",
            "1-2-3",
            "+1-2",
            "1- 2",
            "99999999999999999999-1",
        ] {
            assert!(bad.parse::<RecordId>().is_err(), "{bad:?} should not parse");
        }
        assert_eq!(
            "7-42".parse::<RecordId>(),
            Ok(RecordId {
                shard: ShardId(7),
                offset: Offset(42)
            })
        );
    }

    proptest! {
        #[test]
        fn record_id_round_trips(shard: u64, offset: u64) {
            let id = RecordId { shard: ShardId(shard), offset: Offset(offset) };
            prop_assert_eq!(id.to_string().parse::<RecordId>(), Ok(id));
        }
    }
}
