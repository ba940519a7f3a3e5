//! What the `sub` verbs print: subscriptions as HStreamDB's table (`Subscription ID | Stream
//! Name | Ack Timeout | Max Unacked Records`, the ID being the subscription's name), and for
//! `describe` its settings, its progress on each shard and its consumers; or the same as one
//! JSON document.
//!
//! Ack timeouts print in seconds (`60s`; `1500ms` for one the SDK set to a fraction of a
//! second), times in RFC 3339 UTC, unknown values as `-` in tables and `null` in JSON. Lag is
//! the shard's end offset less its committed offset, when the node knows both.

use runnel_client::{
    Offset, ShardId, SubscriptionConsumer, SubscriptionInfo, SubscriptionShard, SubscriptionStart,
};
use serde::Serialize;

use crate::table::Table;
use crate::time::{format_rfc3339_ms, format_rfc3339_ms_unsigned};

/// A subscription as JSON.
#[derive(Debug, Serialize)]
pub struct SubscriptionDocument {
    name: String,
    id: u64,
    stream: String,
    ack_timeout_ms: u64,
    ack_timeout: String,
    max_unacked_records: u32,
    /// `earliest`, `latest` or `timestamp`.
    start: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_timestamp_ms: Option<i64>,
    created_ms: u64,
    created: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    shards: Option<Vec<SubscriptionShardDocument>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    consumers: Option<Vec<ConsumerDocument>>,
}

/// One shard of a subscription as JSON.
#[derive(Debug, Serialize)]
struct SubscriptionShardDocument {
    shard: u64,
    committed_offset: Option<u64>,
    end_offset: Option<u64>,
    lag: Option<u64>,
    unacked_records: Option<u32>,
    consumer: Option<String>,
}

/// A member of a subscription's group as JSON.
#[derive(Debug, Serialize)]
struct ConsumerDocument {
    name: String,
    member: u64,
    shards: Vec<u64>,
    joined_ms: u64,
    joined: String,
}

impl SubscriptionDocument {
    /// The subscription; its shards and consumers too when `described`.
    pub fn new(info: &SubscriptionInfo, described: bool) -> SubscriptionDocument {
        let (start, start_timestamp_ms) = match info.start {
            SubscriptionStart::Earliest => ("earliest", None),
            SubscriptionStart::Latest => ("latest", None),
            SubscriptionStart::Timestamp(ms) => ("timestamp", Some(ms)),
        };
        SubscriptionDocument {
            name: info.name.clone(),
            id: info.id,
            stream: info.stream.to_string(),
            ack_timeout_ms: info.ack_timeout_ms,
            ack_timeout: ack_timeout_text(info.ack_timeout_ms),
            max_unacked_records: info.max_unacked_records,
            start,
            start_timestamp_ms,
            created_ms: info.created_ms,
            created: format_rfc3339_ms_unsigned(info.created_ms),
            shards: described.then(|| {
                info.shards
                    .iter()
                    .map(|shard| SubscriptionShardDocument {
                        shard: shard.shard.0,
                        committed_offset: shard.committed_offset.map(|offset| offset.0),
                        end_offset: shard.end_offset.map(|offset| offset.0),
                        lag: lag(shard),
                        unacked_records: shard.unacked_records,
                        consumer: shard.consumer.clone(),
                    })
                    .collect()
            }),
            consumers: described.then(|| {
                info.consumers
                    .iter()
                    .map(|consumer| ConsumerDocument {
                        name: consumer.name.clone(),
                        member: consumer.member,
                        shards: consumer.shards.iter().map(|shard| shard.0).collect(),
                        joined_ms: consumer.joined_ms,
                        joined: format_rfc3339_ms_unsigned(consumer.joined_ms),
                    })
                    .collect()
            }),
        }
    }
}

/// An ack timeout in seconds as HStreamDB shows it (`60s`), or in milliseconds when it is not
/// a whole number of seconds.
fn ack_timeout_text(ms: u64) -> String {
    if ms.is_multiple_of(1_000) {
        format!("{}s", ms / 1_000)
    } else {
        format!("{ms}ms")
    }
}

/// Where delivery starts on a shard without progress, as `--offset` takes it.
fn start_text(start: SubscriptionStart) -> String {
    match start {
        SubscriptionStart::Earliest => "earliest".into(),
        SubscriptionStart::Latest => "latest".into(),
        SubscriptionStart::Timestamp(ms) => format_rfc3339_ms(ms),
    }
}

/// Records after the committed offset, when the node knows both ends.
fn lag(shard: &SubscriptionShard) -> Option<u64> {
    match (shard.committed_offset, shard.end_offset) {
        (Some(committed), Some(end)) => Some(end.0.saturating_sub(committed.0)),
        _ => None,
    }
}

/// The subscription table of `create` and `list`: one row per subscription.
pub fn subscription_table(subscriptions: &[SubscriptionInfo]) -> Table {
    let mut table = Table::new([
        "Subscription ID",
        "Stream Name",
        "Ack Timeout",
        "Max Unacked Records",
    ]);
    for info in subscriptions {
        table.row(vec![
            info.name.clone(),
            info.stream.to_string(),
            ack_timeout_text(info.ack_timeout_ms),
            info.max_unacked_records.to_string(),
        ]);
    }
    table
}

/// The settings table of `describe`: the columns of [`subscription_table`], then where
/// delivery starts and when the subscription was created.
pub fn subscription_settings_table(info: &SubscriptionInfo) -> Table {
    let mut table = Table::new([
        "Subscription ID",
        "Stream Name",
        "Ack Timeout",
        "Max Unacked Records",
        "Start Offset",
        "Created",
    ]);
    table.row(vec![
        info.name.clone(),
        info.stream.to_string(),
        ack_timeout_text(info.ack_timeout_ms),
        info.max_unacked_records.to_string(),
        start_text(info.start),
        format_rfc3339_ms_unsigned(info.created_ms),
    ]);
    table
}

/// The progress table of `describe`: one row per shard of the stream.
pub fn subscription_shard_table(shards: &[SubscriptionShard]) -> Table {
    let mut table = Table::new([
        "Shard",
        "Committed Offset",
        "End Offset",
        "Lag",
        "Unacked",
        "Consumer",
    ]);
    let offset = |value: Option<Offset>| value.map_or("-".into(), |o| o.to_string());
    for shard in shards {
        table.row(vec![
            shard.shard.to_string(),
            offset(shard.committed_offset),
            offset(shard.end_offset),
            lag(shard).map_or("-".into(), |lag| lag.to_string()),
            shard
                .unacked_records
                .map_or("-".into(), |records| records.to_string()),
            shard.consumer.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    table
}

/// The consumers table of `describe`: one row per member of the group.
pub fn consumer_table(consumers: &[SubscriptionConsumer]) -> Table {
    let mut table = Table::new(["Consumer", "Member", "Shards", "Joined"]);
    let ids = |shards: &[ShardId]| {
        if shards.is_empty() {
            "-".to_owned()
        } else {
            shards
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        }
    };
    for consumer in consumers {
        table.row(vec![
            consumer.name.clone(),
            consumer.member.to_string(),
            ids(&consumer.shards),
            format_rfc3339_ms_unsigned(consumer.joined_ms),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_client::StreamName;

    fn subscription() -> SubscriptionInfo {
        SubscriptionInfo {
            name: "billing".into(),
            id: 3,
            stream: StreamName::new("orders").expect("valid"),
            ack_timeout_ms: 60_000,
            max_unacked_records: 10_000,
            start: SubscriptionStart::Timestamp(1_796_119_200_000),
            created_ms: 1_714_564_800_250,
            shards: vec![
                SubscriptionShard {
                    shard: ShardId(1),
                    committed_offset: Some(Offset(7)),
                    end_offset: Some(Offset(10)),
                    unacked_records: Some(2),
                    consumer: Some("worker-1".into()),
                },
                SubscriptionShard {
                    shard: ShardId(2),
                    committed_offset: None,
                    end_offset: Some(Offset(4)),
                    unacked_records: None,
                    consumer: None,
                },
            ],
            consumers: vec![SubscriptionConsumer {
                name: "worker-1".into(),
                member: 12,
                shards: vec![ShardId(1), ShardId(2)],
                joined_ms: 1_714_564_800_000,
            }],
        }
    }

    fn rows(table: &Table) -> Vec<String> {
        table.render().lines().map(str::to_owned).collect()
    }

    /// Create and list show HStreamDB's four columns; the ack timeout in seconds.
    #[test]
    fn subscription_tables_have_hstream_columns() {
        let lines = rows(&subscription_table(&[subscription()]));
        assert_eq!(
            lines[1],
            "| Subscription ID | Stream Name | Ack Timeout | Max Unacked Records |"
        );
        assert_eq!(
            lines[3],
            "| billing         | orders      | 60s         | 10000               |"
        );
        assert_eq!(ack_timeout_text(1_500), "1500ms");
        assert_eq!(ack_timeout_text(3_600_000), "3600s");
    }

    /// Describe adds the start and creation time, per-shard progress (lag where both ends are
    /// known) and the consumers.
    #[test]
    fn describe_tables_show_progress_and_consumers() {
        let settings = rows(&subscription_settings_table(&subscription()));
        assert!(
            settings[3].ends_with("| 2026-12-01T10:00:00Z | 2024-05-01T12:00:00.250Z |"),
            "{settings:?}"
        );
        let shards = rows(&subscription_shard_table(&subscription().shards));
        assert_eq!(
            shards[1],
            "| Shard | Committed Offset | End Offset | Lag | Unacked | Consumer |"
        );
        assert_eq!(
            shards[3],
            "| 1     | 7                | 10         | 3   | 2       | worker-1 |"
        );
        assert_eq!(
            shards[4],
            "| 2     | -                | 4          | -   | -       | -        |"
        );
        let consumers = rows(&consumer_table(&subscription().consumers));
        assert_eq!(
            consumers[1],
            "| Consumer | Member | Shards | Joined               |"
        );
        assert_eq!(
            consumers[3],
            "| worker-1 | 12     | 1,2    | 2024-05-01T12:00:00Z |"
        );
        let mut start = subscription();
        start.start = SubscriptionStart::Earliest;
        assert!(rows(&subscription_settings_table(&start))[3].contains("| earliest "));
    }

    /// JSON names every field; shards and consumers only when described.
    #[test]
    fn subscription_documents_serialise() {
        let json =
            serde_json::to_value(SubscriptionDocument::new(&subscription(), false)).expect("json");
        assert_eq!(json["name"], "billing");
        assert_eq!(json["stream"], "orders");
        assert_eq!(json["ack_timeout_ms"], 60_000);
        assert_eq!(json["ack_timeout"], "60s");
        assert_eq!(json["start"], "timestamp");
        assert_eq!(json["start_timestamp_ms"], 1_796_119_200_000_i64);
        assert_eq!(json["created"], "2024-05-01T12:00:00.250Z");
        assert!(json.get("shards").is_none() && json.get("consumers").is_none());
        let json =
            serde_json::to_value(SubscriptionDocument::new(&subscription(), true)).expect("json");
        assert_eq!(json["shards"][0]["lag"], 3);
        assert_eq!(json["shards"][1]["lag"], serde_json::Value::Null);
        assert_eq!(
            json["shards"][1]["committed_offset"],
            serde_json::Value::Null
        );
        assert_eq!(json["consumers"][0]["shards"], serde_json::json!([1, 2]));
        assert_eq!(json["consumers"][0]["joined"], "2024-05-01T12:00:00Z");
        let mut latest = subscription();
        latest.start = SubscriptionStart::Latest;
        let json = serde_json::to_value(SubscriptionDocument::new(&latest, false)).expect("json");
        assert_eq!(json["start"], "latest");
        assert!(json.get("start_timestamp_ms").is_none());
    }
}
