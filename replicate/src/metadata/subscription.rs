//! Subscriptions as the metadata knows them: a named, durable consumer group on one stream, its
//! delivery settings and its committed progress per shard.
//!
//! The metadata holds only what must survive a restart and agree on every node: the
//! configuration and, per shard, the committed offset. Everything else about a subscription
//! (connected consumers, shard assignments, unacked records and their timers, lag) is runtime
//! state that the server keeps on the core owning each shard.

use std::collections::BTreeMap;
use std::fmt;

use runnel_core::{IdError, Offset, ShardId, StreamName};
use thiserror::Error;

use super::error::MetadataError;
use super::stream::StreamId;

/// Most subscriptions the metadata holds, over all streams. Bounds the snapshot and the work
/// of the commands that scan them (a stream delete, a listing).
pub const SUBSCRIPTIONS_MAX: usize = 10_000;

/// Most committed offsets (one per subscription and shard it has committed on) the metadata
/// holds, over all subscriptions: 16 MB of snapshot at most.
pub const COMMITTED_OFFSETS_MAX: usize = 1_000_000;

/// Ack timeout a subscription gets when none is asked for: 60 s.
pub const ACK_TIMEOUT_MS_DEFAULT: u64 = 60_000;

/// Longest ack timeout: one hour. (The shortest is 1 ms.)
pub const ACK_TIMEOUT_MS_MAX: u64 = 3_600_000;

/// Unacked records a subscription allows when no limit is asked for.
pub const MAX_UNACKED_RECORDS_DEFAULT: u32 = 10_000;

/// Largest limit of unacked records a subscription may ask for. (The smallest is 1.)
pub const MAX_UNACKED_RECORDS_LIMIT: u32 = 1_000_000;

/// A subscription's id, allocated by the metadata from a counter: never reused, not even after
/// the subscription is deleted and another is created with its name. The first subscription
/// gets id 1. Progress is committed by id, so a commit still in flight for a deleted
/// subscription can never land on a new one of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId(pub u64);

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A subscription name. Its own type, so that a stream name cannot be passed where a
/// subscription name is meant, but the same rule as [`StreamName`] (1 to 255 characters of
/// `[A-Za-z0-9_.-]`, starting with a letter, a digit or `_`): HStreamDB names its
/// subscriptions by the same rule. Subscription names are unique in the cluster, not per
/// stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionName(StreamName);

/// A subscription name broke the naming rule.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid subscription name {name:?}: {reason}")]
pub struct InvalidSubscriptionName {
    /// The name as given (possibly shortened for display).
    pub name: String,
    /// Which rule it broke.
    pub reason: &'static str,
}

impl SubscriptionName {
    /// Checks `name` against the naming rule.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidSubscriptionName> {
        let name = name.into();
        let shortened = |name: &str| name.chars().take(64).collect();
        match StreamName::new(name.as_str()) {
            Ok(valid) => Ok(SubscriptionName(valid)),
            Err(IdError::InvalidStreamName { reason, .. }) => Err(InvalidSubscriptionName {
                name: shortened(&name),
                reason,
            }),
            Err(_) => Err(InvalidSubscriptionName {
                name: shortened(&name),
                reason: "breaks the naming rule",
            }),
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for SubscriptionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SubscriptionName {
    type Err = InvalidSubscriptionName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// Where delivery starts on a shard the subscription has not committed on yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SubscriptionStart {
    /// At the shard's first retained record.
    Earliest,
    /// After the shard's last committed record when delivery on the shard begins. The
    /// metadata does not know where that is; the server resolves it and commits it.
    #[default]
    Latest,
    /// At the first record whose timestamp is at or after this one, in milliseconds since the
    /// Unix epoch (record timestamps are signed).
    Timestamp(i64),
}

/// What a user chooses when creating a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionConfig {
    /// The subscription's name, unique among live subscriptions.
    pub name: SubscriptionName,
    /// The stream it consumes; must exist when the subscription is created.
    pub stream: StreamName,
    /// How long a delivered record may stay unacked before it is delivered again, in
    /// milliseconds: 1 to [`ACK_TIMEOUT_MS_MAX`]; [`ACK_TIMEOUT_MS_DEFAULT`] by default.
    pub ack_timeout_ms: u64,
    /// Most records delivered and not yet acked, over all consumers: 1 to
    /// [`MAX_UNACKED_RECORDS_LIMIT`]; [`MAX_UNACKED_RECORDS_DEFAULT`] by default.
    pub max_unacked_records: u32,
    /// Where delivery starts on a shard without committed progress.
    pub start: SubscriptionStart,
}

impl SubscriptionConfig {
    /// A configuration with the default ack timeout, unacked limit and start (latest).
    pub fn new(name: SubscriptionName, stream: StreamName) -> Self {
        SubscriptionConfig {
            name,
            stream,
            ack_timeout_ms: ACK_TIMEOUT_MS_DEFAULT,
            max_unacked_records: MAX_UNACKED_RECORDS_DEFAULT,
            start: SubscriptionStart::default(),
        }
    }

    /// Checks the rules that do not depend on the cluster: the ack timeout and unacked limit
    /// ranges. (Names are valid by construction.)
    pub fn validate(&self) -> Result<(), MetadataError> {
        let invalid = |reason: String| MetadataError::InvalidSubscriptionConfig {
            name: self.name.clone(),
            reason,
        };
        if !(1..=ACK_TIMEOUT_MS_MAX).contains(&self.ack_timeout_ms) {
            return Err(invalid(format!(
                "ack timeout must be between 1 and {ACK_TIMEOUT_MS_MAX} ms, got {}",
                self.ack_timeout_ms
            )));
        }
        if !(1..=MAX_UNACKED_RECORDS_LIMIT).contains(&self.max_unacked_records) {
            return Err(invalid(format!(
                "max unacked records must be between 1 and {MAX_UNACKED_RECORDS_LIMIT}, got {}",
                self.max_unacked_records
            )));
        }
        Ok(())
    }
}

/// A live subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The subscription's id.
    pub id: SubscriptionId,
    /// Its configuration, as created.
    pub config: SubscriptionConfig,
    /// The id of the stream `config.stream` named when the subscription was created. A stream
    /// with subscriptions is deleted only by a forced delete, which deletes them too, so this
    /// stream always lives while the subscription does.
    pub stream: StreamId,
    /// When it was created (the `now_ms` of its `CreateSubscription` command), in milliseconds
    /// since the Unix epoch.
    pub created_ms: u64,
    /// Committed progress, per shard of the stream (open or sealed): every record below the
    /// offset was acknowledged, and delivery on the shard resumes at it. A shard without an
    /// entry has no committed progress: delivery starts where `config.start` says.
    pub committed: BTreeMap<ShardId, Offset>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(ack_timeout_ms: u64, max_unacked_records: u32) -> SubscriptionConfig {
        SubscriptionConfig {
            ack_timeout_ms,
            max_unacked_records,
            ..SubscriptionConfig::new(
                SubscriptionName::new("sub").expect("valid name"),
                StreamName::new("s").expect("valid name"),
            )
        }
    }

    #[test]
    fn config_bounds_and_defaults_are_enforced() {
        let defaults = config(ACK_TIMEOUT_MS_DEFAULT, MAX_UNACKED_RECORDS_DEFAULT);
        assert_eq!(defaults.validate(), Ok(()));
        assert_eq!(defaults.ack_timeout_ms, 60_000);
        assert_eq!(defaults.max_unacked_records, 10_000);
        assert_eq!(defaults.start, SubscriptionStart::Latest);
        assert_eq!(config(1, 1).validate(), Ok(()));
        assert_eq!(
            config(ACK_TIMEOUT_MS_MAX, MAX_UNACKED_RECORDS_LIMIT).validate(),
            Ok(())
        );
        for bad in [
            config(0, 1),
            config(ACK_TIMEOUT_MS_MAX + 1, 1),
            config(1, 0),
            config(1, MAX_UNACKED_RECORDS_LIMIT + 1),
        ] {
            assert!(
                matches!(
                    bad.validate(),
                    Err(MetadataError::InvalidSubscriptionConfig { .. })
                ),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn names_follow_the_stream_naming_rule() {
        for good in ["a", "orders-reader.eu_1", "_internal", "9lives"] {
            assert_eq!(
                SubscriptionName::new(good).map(|name| name.to_string()),
                Ok(good.to_string())
            );
            assert_eq!(
                good.parse::<SubscriptionName>().map(|n| n.as_str().len()),
                Ok(good.len())
            );
        }
        for bad in ["", "-x", ".x", "a b", "a/b", "ü", &"x".repeat(256)] {
            let error = SubscriptionName::new(bad).expect_err("refused");
            assert!(
                error.to_string().starts_with("invalid subscription name"),
                "{error}"
            );
        }
        let long = "x".repeat(300);
        let error = SubscriptionName::new(long.as_str()).expect_err("too long");
        assert_eq!(error.name.len(), 64);
    }
}
