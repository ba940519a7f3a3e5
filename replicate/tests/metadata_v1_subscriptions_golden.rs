//! Compatibility of the subscription additions to metadata format version 1: command tags 7
//! to 10 (create subscription, delete subscription, commit progress, forced stream delete) and
//! snapshot section 5 (subscriptions). The bytes in
//! `golden/metadata_subscription_commands_v1.bin` and
//! `golden/metadata_subscription_snapshot_v1.bin` were written by this encoder when the
//! additions were made; any change to their layout, a tag or an enum code breaks this test and
//! must come with a new tag, section or format version instead (see docs/format/metadata.md).
//!
//! It also proves the additions left the older bytes alone: the golden files of
//! `metadata_v1_golden.rs`, written before subscriptions existed, decode to a state without
//! subscriptions and re-encode to the very same bytes.
//!
//! To regenerate after a deliberate version bump: `RUNNEL_WRITE_GOLDEN=1 cargo test -p
//! runnel-replicate --test metadata_v1_subscriptions_golden`, and keep the old files for the old
//! version's test.

mod before_replica_sets;

use runnel_core::{Offset, ShardId, StreamName};
use runnel_replicate::metadata::codec::FRAME_OVERHEAD_LEN;
use runnel_replicate::metadata::{
    decode_command, decode_snapshot, encode_command, encode_snapshot, Command, Durability,
    MetadataError, MetadataState, Node, NodeId, StreamConfig, SubscriptionConfig, SubscriptionId,
    SubscriptionName, SubscriptionStart,
};

const GOLDEN_COMMANDS: &[u8] = include_bytes!("golden/metadata_subscription_commands_v1.bin");
const GOLDEN_SNAPSHOT: &[u8] = include_bytes!("golden/metadata_subscription_snapshot_v1.bin");
const OLDER_COMMANDS: &[u8] = include_bytes!("golden/metadata_commands_v1.bin");
const OLDER_SNAPSHOT: &[u8] = include_bytes!("golden/metadata_snapshot_v1.bin");

fn name(text: &str) -> StreamName {
    StreamName::new(text).expect("valid name")
}

fn subscription_name(text: &str) -> SubscriptionName {
    SubscriptionName::new(text).expect("valid name")
}

fn stream(stream: &str, shard_count: u32, now_ms: u64) -> Command {
    Command::CreateStream {
        config: StreamConfig {
            name: name(stream),
            shard_count,
            replication_factor: 1,
            retention_ms: 86_400_000,
            durability: Durability::Fsync,
        },
        now_ms,
        avoid: Vec::new(),
    }
}

fn commit(subscription: u64, shard: u64, offset: u64) -> Command {
    Command::CommitProgress {
        subscription: SubscriptionId(subscription),
        shard: ShardId(shard),
        offset: Offset(offset),
    }
}

/// Every new command and encoding, some of them refused when applied (refusals are logged too).
fn commands() -> Vec<Command> {
    vec![
        Command::RegisterNode {
            node: Node {
                id: NodeId(1),
                cores: 2,
                address: "10.0.0.1:7000".to_string(),
            },
        },
        stream("orders", 2, 1_763_726_400_000), // shards 1, 2
        stream("clicks", 1, 1_763_726_400_100), // shard 3
        Command::CreateSubscription {
            config: SubscriptionConfig {
                ack_timeout_ms: 30_000,
                max_unacked_records: 5_000,
                start: SubscriptionStart::Earliest,
                ..SubscriptionConfig::new(subscription_name("billing"), name("orders"))
            },
            now_ms: 1_763_726_400_200,
        },
        Command::CreateSubscription {
            config: SubscriptionConfig {
                start: SubscriptionStart::Timestamp(1_763_726_000_000),
                ..SubscriptionConfig::new(subscription_name("audit"), name("clicks"))
            },
            now_ms: 1_763_726_400_300,
        },
        Command::CreateSubscription {
            config: SubscriptionConfig {
                start: SubscriptionStart::Timestamp(-1),
                ..SubscriptionConfig::new(subscription_name("scratch.reader"), name("orders"))
            },
            now_ms: 1_763_726_400_400,
        },
        commit(1, 1, 100),
        commit(1, 2, 50),
        // Accepted, but late: the committed offset stays 100.
        commit(1, 1, 80),
        commit(3, 2, 7),
        Command::SplitShard {
            shard: ShardId(1),
            now_ms: 1_763_726_400_500,
        }, // 4, 5
        commit(1, 5, 9),
        Command::DeleteSubscription {
            name: subscription_name("scratch.reader"),
        },
        // Refused: clicks has subscription audit.
        Command::DeleteStream {
            name: name("clicks"),
            force: false,
        },
        // Tag 10: deletes clicks and audit.
        Command::DeleteStream {
            name: name("clicks"),
            force: true,
        },
        // Refused: audit (id 2) was deleted with its stream.
        commit(2, 3, 1),
    ]
}

fn state() -> MetadataState {
    let mut state = MetadataState::new();
    for (index, command) in (1..).zip(commands()) {
        let _ = state.apply(index, &command);
    }
    state
}

/// Splits frames written back to back; each frame's length is in its header.
fn frames(mut rest: &[u8]) -> Vec<&[u8]> {
    let mut frames = Vec::new();
    while !rest.is_empty() {
        let body_len = u32::from_le_bytes(rest[8..12].try_into().expect("4 bytes")) as usize;
        let (frame, next) = rest.split_at(FRAME_OVERHEAD_LEN + body_len);
        frames.push(frame);
        rest = next;
    }
    frames
}

#[test]
fn subscription_bytes_are_stable() {
    let encoded: Vec<u8> = commands().iter().flat_map(encode_command).collect();
    let snapshot = encode_snapshot(&state());
    if std::env::var_os("RUNNEL_WRITE_GOLDEN").is_some() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/");
        std::fs::write(
            format!("{dir}metadata_subscription_commands_v1.bin"),
            &encoded,
        )
        .expect("write");
        std::fs::write(
            format!("{dir}metadata_subscription_snapshot_v1.bin"),
            &snapshot,
        )
        .expect("write");
    }
    assert_eq!(encoded, GOLDEN_COMMANDS, "command encoding changed");
    assert_eq!(snapshot, GOLDEN_SNAPSHOT, "snapshot encoding changed");
}

#[test]
fn subscription_bytes_still_decode_and_replay() {
    let decoded: Vec<Command> = frames(GOLDEN_COMMANDS)
        .into_iter()
        .map(|frame| decode_command(frame).expect("golden command decodes"))
        .collect();
    assert_eq!(decoded, commands());

    // The refusals, replayed from the bytes.
    let mut replayed = MetadataState::new();
    let mut refused = Vec::new();
    for (index, command) in (1..).zip(&decoded) {
        if let Err(error) = replayed.apply(index, command) {
            refused.push((index, error));
        }
    }
    assert_eq!(refused.len(), 2);
    assert_eq!(
        refused[0],
        (
            14,
            MetadataError::StreamHasSubscriptions {
                name: name("clicks"),
                subscriptions: vec![subscription_name("audit")],
            }
        )
    );
    assert_eq!(
        refused[1],
        (
            16,
            MetadataError::SubscriptionIdNotFound {
                subscription: SubscriptionId(2)
            }
        )
    );

    let restored = decode_snapshot(GOLDEN_SNAPSHOT).expect("golden snapshot decodes");
    assert_eq!(restored, state());
    assert_eq!(restored, replayed);
    assert_eq!(restored.applied_index(), 16);
    let names: Vec<&str> = restored
        .subscriptions()
        .map(|subscription| subscription.config.name.as_str())
        .collect();
    assert_eq!(names, vec!["billing"]);
    let billing = restored
        .subscription(&subscription_name("billing"))
        .expect("billing lives");
    assert_eq!(billing.id, SubscriptionId(1));
    assert_eq!(billing.config.start, SubscriptionStart::Earliest);
    let committed: Vec<(u64, u64)> = billing
        .committed
        .iter()
        .map(|(shard, offset)| (shard.0, offset.0))
        .collect();
    assert_eq!(committed, vec![(1, 100), (2, 50), (5, 9)]);
    assert_eq!(restored.stream(&name("clicks")), None);
}

#[test]
fn bytes_written_before_subscriptions_mean_what_they_meant() {
    let mut replayed = MetadataState::new();
    for (index, frame) in (1..).zip(frames(OLDER_COMMANDS)) {
        let command = decode_command(frame).expect("older command decodes");
        if let Command::DeleteStream { force, .. } = &command {
            assert!(!force, "an older delete decodes as unforced");
        }
        let _ = replayed.apply(index, &command);
    }
    // No subscription was ever created, so no subscriptions section is written: the same
    // bytes, apart from the replica sets a replay now adds.
    let restored = before_replica_sets::assert_same_but_replica_sets(OLDER_SNAPSHOT, &replayed);
    assert_eq!(restored.subscriptions().len(), 0);
}
