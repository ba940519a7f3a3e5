//! Unit tests of the codec: the frame's fields and checks in order, every command's round
//! trip, and each way a body or snapshot is refused. (Randomized properties over whole command
//! sequences live in `metadata/proptests.rs`.)

use runnel_core::{Epoch, KeyRange, Offset, ShardId};

use super::wire::Writer;
use super::*;
use crate::metadata::testing::{
    config, name, node, subscription_config, subscription_name, Harness,
};
use crate::metadata::{
    Durability, NodeId, Placement, ProgressCommit, Shard, ShardStatus, StreamConfig, StreamId,
    SubscriptionConfig, SubscriptionId, SubscriptionStart,
};

/// A frame of `magic` around whatever `body` writes.
fn frame(magic: u32, version: u8, body: impl FnOnce(&mut Writer)) -> Vec<u8> {
    let mut writer = Writer::framed(magic, version);
    body(&mut writer);
    writer.finish_frame()
}

fn all_commands() -> Vec<Command> {
    vec![
        Command::RegisterNode { node: node(7, 16) },
        Command::RemoveNode { node: NodeId(7) },
        Command::SetClusterId {
            id: 0x0123_4567_89ab_cdef,
        },
        Command::RemoveNode {
            node: NodeId(u64::MAX),
        },
        Command::CreateStream {
            config: config("orders", 2),
            now_ms: 3,
            avoid: vec![NodeId(2), NodeId(u64::MAX), NodeId(0)],
        },
        Command::CreateStream {
            config: StreamConfig {
                replication_factor: 3,
                durability: Durability::Memory,
                ..config("orders.eu-1", 8)
            },
            now_ms: 1_763_726_400_000,
            avoid: Vec::new(),
        },
        Command::DeleteStream {
            name: name("orders"),
            force: false,
        },
        Command::DeleteStream {
            name: name("orders"),
            force: true,
        },
        Command::SplitShard {
            shard: ShardId(42),
            now_ms: 5,
        },
        Command::MergeShards {
            left: ShardId(3),
            right: ShardId(u64::MAX),
            now_ms: u64::MAX,
        },
        Command::BumpEpochUnconditionally { shard: ShardId(0) },
        Command::BumpEpoch {
            shard: ShardId(u64::MAX),
            from: Epoch(u64::MAX),
            sequencer: Placement {
                node: NodeId(3),
                core: u32::MAX,
            },
        },
        Command::CreateSubscription {
            config: subscription_config("billing", "orders"),
            now_ms: 1,
        },
        Command::CreateSubscription {
            config: SubscriptionConfig {
                ack_timeout_ms: u64::MAX,
                max_unacked_records: 0,
                start: SubscriptionStart::Timestamp(i64::MIN),
                ..subscription_config("a.b-c_d", "9z")
            },
            now_ms: u64::MAX,
        },
        Command::CreateSubscription {
            config: SubscriptionConfig {
                start: SubscriptionStart::Earliest,
                ..subscription_config("x", "y")
            },
            now_ms: 0,
        },
        Command::DeleteSubscription {
            name: subscription_name("billing"),
        },
        Command::CommitProgress {
            subscription: SubscriptionId(3),
            shard: ShardId(u64::MAX),
            offset: Offset(1 << 40),
        },
        Command::CommitProgressBatch {
            commits: vec![
                ProgressCommit {
                    subscription: SubscriptionId(1),
                    shard: ShardId(2),
                    offset: Offset(50),
                },
                ProgressCommit {
                    subscription: SubscriptionId(u64::MAX),
                    shard: ShardId(0),
                    offset: Offset(u64::MAX),
                },
            ],
        },
        Command::CommitProgressBatch { commits: vec![] },
    ]
}

/// A create that avoids no node keeps the bytes creates always had (tag 2, nothing after
/// `now_ms`), so logs written before the list existed replay unchanged; one that avoids nodes
/// takes tag 33 and its list follows.
#[test]
fn a_create_takes_tag_13_only_when_it_avoids_nodes() {
    let plain = Command::CreateStream {
        config: config("orders", 2),
        now_ms: 9,
        avoid: Vec::new(),
    };
    let bytes = encode_command(&plain);
    assert_eq!(bytes[FRAME_HEADER_LEN..FRAME_HEADER_LEN + 2], [2, 0]);
    let avoiding = Command::CreateStream {
        config: config("orders", 2),
        now_ms: 9,
        avoid: vec![NodeId(3)],
    };
    let longer = encode_command(&avoiding);
    assert_eq!(longer[FRAME_HEADER_LEN..FRAME_HEADER_LEN + 2], [33, 0]);
    // Same body after the tag, then a count of 1 and node 3.
    let body_end = bytes.len() - 4;
    assert_eq!(
        longer[FRAME_HEADER_LEN + 2..body_end],
        bytes[FRAME_HEADER_LEN + 2..body_end]
    );
    assert_eq!(
        longer[body_end..longer.len() - 4],
        [1, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(decode_command(&longer), Ok(avoiding));
}

/// Tag 33 with an empty list is refused: that value's one encoding is tag 2.
#[test]
fn an_empty_avoid_list_under_tag_13_is_refused() {
    let plain = encode_command(&Command::CreateStream {
        config: config("orders", 2),
        now_ms: 9,
        avoid: Vec::new(),
    });
    let body = &plain[FRAME_HEADER_LEN + 2..plain.len() - 4];
    let bytes = frame(COMMAND_MAGIC, COMMAND_FORMAT_VERSION, |writer| {
        writer.u16(33);
        for &byte in body {
            writer.u8(byte);
        }
        writer.count(0);
    });
    assert!(matches!(
        decode_command(&bytes),
        Err(DecodeError::InvalidValue {
            field: "avoided nodes",
            ..
        })
    ));
}

/// The bytes of a progress batch as `docs/format/metadata.md` draws them.
#[test]
fn a_progress_batch_has_the_documented_bytes() {
    let bytes = encode_command(&Command::CommitProgressBatch {
        commits: vec![ProgressCommit {
            subscription: SubscriptionId(1),
            shard: ShardId(2),
            offset: Offset(50),
        }],
    });
    let mut expected = vec![
        0x52, 0x4e, 0x4c, 0x43, 1, 1, 0, 0, 30, 0, 0, 0, // header, body_len 30
        11, 0, // tag 11
        1, 0, 0, 0, // one commit
    ];
    for value in [1u64, 2, 50] {
        expected.extend_from_slice(&value.to_le_bytes());
    }
    expected.extend_from_slice(&crc32fast::hash(&expected).to_le_bytes());
    assert_eq!(bytes, expected);
    // The CRC drawn in the document.
    assert_eq!(bytes[bytes.len() - 4..], DOCUMENTED_BATCH_CRC);
}

/// The last 4 bytes of the progress-batch example in `docs/format/metadata.md`.
const DOCUMENTED_BATCH_CRC: [u8; 4] = [0x3a, 0xd1, 0xcf, 0xc0];

/// A state with nodes, two streams (shards 1-3 and 4), a split (1 into 5, 6), a merge
/// (2 and 3 into 7), subscriptions 1 (`billing` on `orders`, progress on shards 1 and 7) and 2
/// (`audit` on `clicks`, progress on shard 4), and a deleted subscription 3.
pub(super) fn busy_state() -> MetadataState {
    let mut harness = Harness::with_nodes(2, 2);
    for command in [
        Command::CreateStream {
            // Two replicas per shard: the snapshot holds the replica-set section.
            config: StreamConfig {
                replication_factor: 2,
                ..config("orders", 3)
            },
            now_ms: 10,
            avoid: Vec::new(),
        },
        Command::CreateStream {
            config: config("clicks", 1),
            now_ms: 11,
            avoid: Vec::new(),
        },
        Command::SplitShard {
            shard: ShardId(1),
            now_ms: 12,
        },
        Command::MergeShards {
            left: ShardId(2),
            right: ShardId(3),
            now_ms: 13,
        },
        Command::BumpEpoch {
            shard: ShardId(4),
            from: Epoch(0),
            // Shard 4 (clicks, R = 1) is on the ring's fourth slot; it stays its sequencer.
            sequencer: Placement {
                node: NodeId(2),
                core: 1,
            },
        },
        Command::CreateSubscription {
            config: SubscriptionConfig {
                start: SubscriptionStart::Earliest,
                ..subscription_config("billing", "orders")
            },
            now_ms: 14,
        },
        Command::CreateSubscription {
            config: SubscriptionConfig {
                start: SubscriptionStart::Timestamp(-5),
                ..subscription_config("audit", "clicks")
            },
            now_ms: 15,
        },
        Command::CreateSubscription {
            config: subscription_config("gone", "orders"),
            now_ms: 16,
        },
        Command::DeleteSubscription {
            name: subscription_name("gone"),
        },
        commit(1, 1, 10),
        commit(1, 7, 20),
        commit(2, 4, 3),
    ] {
        harness.ok(command);
    }
    harness.state
}

fn commit(subscription: u64, shard: u64, offset: u64) -> Command {
    Command::CommitProgress {
        subscription: SubscriptionId(subscription),
        shard: ShardId(shard),
        offset: Offset(offset),
    }
}

#[test]
fn every_command_round_trips_in_a_well_formed_frame() {
    for command in all_commands() {
        let bytes = encode_command(&command);
        assert_eq!(&bytes[0..4], b"RNLC");
        assert_eq!(bytes[4], COMMAND_FORMAT_VERSION);
        assert_eq!(bytes[5], CHECKSUM_CRC32_IEEE);
        assert_eq!(&bytes[6..8], &[0, 0]);
        let body_len = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        assert_eq!(body_len as usize, bytes.len() - FRAME_OVERHEAD_LEN);
        let crc_at = bytes.len() - 4;
        assert_eq!(
            crc32fast::hash(&bytes[..crc_at]).to_le_bytes(),
            bytes[crc_at..]
        );
        assert_eq!(decode_command(&bytes), Ok(command));
    }
}

#[test]
fn snapshots_round_trip_and_start_with_their_own_magic() {
    for state in [MetadataState::new(), busy_state()] {
        let bytes = encode_snapshot(&state);
        assert_eq!(&bytes[0..4], b"RNLM");
        assert_eq!(bytes[4], SNAPSHOT_FORMAT_VERSION);
        let decoded = decode_snapshot(&bytes).expect("decodes");
        assert_eq!(decoded, state);
        assert_eq!(encode_snapshot(&decoded), bytes);
    }
}

/// The cluster id travels in its own snapshot section, written only once it is set (a state
/// without one encodes as before the section existed); a section holding 0 is refused.
#[test]
fn the_cluster_id_has_an_optional_snapshot_section() {
    let without = busy_state();
    let mut harness = Harness::with_nodes(1, 1);
    harness.ok(Command::SetClusterId { id: 0xfeed });
    let with = harness.state.clone();
    assert_eq!(with.cluster_id(), Some(0xfeed));
    let bytes = encode_snapshot(&with);
    assert_eq!(decode_snapshot(&bytes).expect("decodes"), with);
    let plain = encode_snapshot(&MetadataState::new());
    assert!(bytes.len() > plain.len() + 8, "a section of its own");
    assert_eq!(
        decode_snapshot(&encode_snapshot(&without))
            .expect("decodes")
            .cluster_id(),
        None
    );
    // The same state with the section's value zeroed (and the CRC fixed) is refused.
    let mut zeroed = bytes.clone();
    let at = zeroed.len() - 4 - 8;
    assert_eq!(zeroed[at..at + 8], 0xfeed_u64.to_le_bytes());
    zeroed[at..at + 8].fill(0);
    let crc_at = zeroed.len() - 4;
    let crc = crc32fast::hash(&zeroed[..crc_at]).to_le_bytes();
    zeroed[crc_at..].copy_from_slice(&crc);
    assert!(decode_snapshot(&zeroed).is_err());
}

#[test]
fn a_forced_stream_delete_takes_its_own_tag_and_an_unforced_one_keeps_tag_3() {
    for (force, tag) in [(false, 3u16), (true, 10)] {
        let command = Command::DeleteStream {
            name: name("orders"),
            force,
        };
        let bytes = encode_command(&command);
        assert_eq!(bytes[12..14], tag.to_le_bytes());
        // Same body after the tag: the name, and nothing else.
        assert_eq!(bytes.len(), FRAME_OVERHEAD_LEN + 2 + 4 + "orders".len());
        assert_eq!(decode_command(&bytes), Ok(command));
    }
}

#[test]
fn frame_checks_run_in_order() {
    let good = encode_command(&all_commands()[1]);
    let edited = |at: usize, value: u8| {
        let mut bytes = good.clone();
        bytes[at] = value;
        decode_command(&bytes)
    };
    assert_eq!(
        decode_command(&good[..15]),
        Err(DecodeError::Truncated {
            field: "frame",
            needed: 16,
            available: 15
        })
    );
    assert!(matches!(
        decode_command(&encode_snapshot(&MetadataState::new())),
        Err(DecodeError::BadMagic { expected, .. }) if expected == COMMAND_MAGIC
    ));
    assert!(matches!(
        decode_snapshot(&good),
        Err(DecodeError::BadMagic { expected, .. }) if expected == SNAPSHOT_MAGIC
    ));
    assert_eq!(
        edited(4, 2),
        Err(DecodeError::UnsupportedVersion {
            found: 2,
            supported: 1
        })
    );
    assert_eq!(edited(5, 0), Err(DecodeError::UnknownChecksum { found: 0 }));
    assert_eq!(
        edited(7, 1),
        Err(DecodeError::UnsupportedFlags { found: 0x100 })
    );
    let body_len = (good.len() - FRAME_OVERHEAD_LEN) as u64;
    assert_eq!(
        decode_command(&good[..good.len() - 1]),
        Err(DecodeError::BadLength {
            body_len,
            available: body_len - 1
        })
    );
    let mut longer = good.clone();
    longer.push(0);
    assert_eq!(
        decode_command(&longer),
        Err(DecodeError::BadLength {
            body_len,
            available: body_len + 1
        })
    );
    assert!(matches!(
        edited(14, good[14] ^ 1),
        Err(DecodeError::ChecksumMismatch { .. })
    ));
    let crc_at = good.len() - 1;
    assert!(matches!(
        edited(crc_at, good[crc_at] ^ 0x80),
        Err(DecodeError::ChecksumMismatch { .. })
    ));
}

#[test]
fn command_bodies_are_checked_field_by_field() {
    let command = |body: &dyn Fn(&mut Writer)| {
        decode_command(&frame(COMMAND_MAGIC, COMMAND_FORMAT_VERSION, body))
    };
    assert_eq!(
        command(&|_| {}),
        Err(DecodeError::Truncated {
            field: "command tag",
            needed: 2,
            available: 0
        })
    );
    assert_eq!(
        command(&|w| w.u16(99)),
        Err(DecodeError::UnknownCommand { tag: 99 })
    );
    assert_eq!(
        command(&|w| w.u16(0)),
        Err(DecodeError::UnknownCommand { tag: 0 })
    );
    assert_eq!(
        command(&|w| {
            w.u16(6);
            w.u64(1);
            w.u8(0);
        }),
        Err(DecodeError::TrailingBytes {
            field: "command",
            count: 1
        })
    );
    assert_eq!(
        command(&|w| {
            w.u16(6);
            w.u32(1);
        }),
        Err(DecodeError::Truncated {
            field: "shard",
            needed: 8,
            available: 4
        })
    );
    assert!(matches!(
        command(&|w| {
            w.u16(3);
            w.string("a b");
        }),
        Err(DecodeError::InvalidValue {
            field: "stream name",
            ..
        })
    ));
    let create = |durability: u8| {
        move |w: &mut Writer| {
            w.u16(2);
            w.string("orders");
            w.u32(1);
            w.u8(1);
            w.u64(1);
            w.u8(durability);
            w.u64(0);
        }
    };
    assert!(command(&create(1)).is_ok());
    assert!(matches!(
        command(&create(2)),
        Err(DecodeError::InvalidValue {
            field: "durability",
            ..
        })
    ));
    assert!(matches!(
        command(&|w| {
            w.u16(1);
            w.u64(1);
            w.u32(1);
            w.u32(2);
            w.u8(0xff);
            w.u8(0xfe);
        }),
        Err(DecodeError::InvalidValue {
            field: "node address",
            ..
        })
    ));
    let create_subscription = |name: &'static str, start: u8, timestamp: Option<i64>| {
        move |w: &mut Writer| {
            w.u16(7);
            w.string(name);
            w.string("orders");
            w.u64(60_000);
            w.u32(10);
            w.u8(start);
            if let Some(timestamp) = timestamp {
                w.i64(timestamp);
            }
            w.u64(0);
        }
    };
    for (start, timestamp) in [(0, None), (1, None), (2, Some(-1))] {
        assert!(command(&create_subscription("sub", start, timestamp)).is_ok());
    }
    assert!(matches!(
        command(&create_subscription("sub", 3, None)),
        Err(DecodeError::InvalidValue {
            field: "subscription start",
            ..
        })
    ));
    assert!(matches!(
        command(&create_subscription("-sub", 0, None)),
        Err(DecodeError::InvalidValue {
            field: "subscription name",
            ..
        })
    ));
    // A timestamp start without its timestamp: the now_ms behind it is read as the timestamp.
    assert_eq!(
        command(&create_subscription("sub", 2, None)),
        Err(DecodeError::Truncated {
            field: "now_ms",
            needed: 8,
            available: 0
        })
    );
    assert!(matches!(
        command(&|w| {
            w.u16(8);
            w.string("");
        }),
        Err(DecodeError::InvalidValue {
            field: "subscription name",
            ..
        })
    ));
    assert_eq!(
        command(&|w| {
            w.u16(9);
            w.u64(1);
            w.u64(2);
            w.u32(3);
        }),
        Err(DecodeError::Truncated {
            field: "offset",
            needed: 8,
            available: 4
        })
    );
    assert_eq!(
        command(&|w| w.u16(11)),
        Err(DecodeError::Truncated {
            field: "progress commits",
            needed: 4,
            available: 0
        })
    );
    // A count of commits larger than the bytes left is refused before allocating.
    assert_eq!(
        command(&|w| {
            w.u16(11);
            w.u32(1000);
            w.u64(1);
        }),
        Err(DecodeError::Truncated {
            field: "progress commits",
            needed: 24_000,
            available: 8
        })
    );
    assert_eq!(
        command(&|w| w.u16(12)),
        Err(DecodeError::UnknownCommand { tag: 12 })
    );
    assert_eq!(
        command(&|w| w.u16(32)),
        Err(DecodeError::Truncated {
            field: "node",
            needed: 8,
            available: 0
        })
    );
    assert_eq!(
        command(&|w| w.u16(34)),
        Err(DecodeError::Truncated {
            field: "cluster id",
            needed: 8,
            available: 0
        })
    );
    assert_eq!(
        command(&|w| w.u16(35)),
        Err(DecodeError::UnknownCommand { tag: 35 })
    );
    // A length larger than the bytes left is refused before anything is allocated.
    assert_eq!(
        command(&|w| {
            w.u16(3);
            w.u32(u32::MAX);
        }),
        Err(DecodeError::Truncated {
            field: "stream name",
            needed: u64::from(u32::MAX),
            available: 0
        })
    );
}

/// Writes the counters section of an empty state.
fn counters(writer: &mut Writer) {
    writer.section(1, |w| {
        w.u64(0);
        w.u64(1);
        w.u64(1);
        w.u64(0);
    });
}

fn empty_list(writer: &mut Writer, tag: u16) {
    writer.section(tag, |w| w.count(0));
}

fn snapshot(body: impl FnOnce(&mut Writer)) -> Result<MetadataState, DecodeError> {
    decode_snapshot(&frame(SNAPSHOT_MAGIC, SNAPSHOT_FORMAT_VERSION, body))
}

#[test]
fn snapshot_sections_must_be_known_ascending_and_complete() {
    let all = |w: &mut Writer| {
        counters(w);
        for tag in 2..=4 {
            empty_list(w, tag);
        }
    };
    assert_eq!(snapshot(all), Ok(MetadataState::new()));
    assert_eq!(
        snapshot(|w| {
            all(w);
            w.section(10, |_| {});
        }),
        Err(DecodeError::UnknownSection { tag: 10 })
    );
    assert_eq!(
        snapshot(|w| {
            counters(w);
            empty_list(w, 3);
            empty_list(w, 2);
        }),
        Err(DecodeError::SectionOutOfOrder {
            tag: 2,
            previous: 3
        })
    );
    assert_eq!(
        snapshot(|w| {
            counters(w);
            empty_list(w, 2);
            empty_list(w, 2);
        }),
        Err(DecodeError::SectionOutOfOrder {
            tag: 2,
            previous: 2
        })
    );
    assert_eq!(
        snapshot(|w| {
            counters(w);
            empty_list(w, 2);
            empty_list(w, 4);
        }),
        Err(DecodeError::MissingSection { tag: 3 })
    );
    assert_eq!(
        snapshot(|w| {
            w.section(1, |w| w.u64(0));
        }),
        Err(DecodeError::Truncated {
            field: "next stream id",
            needed: 8,
            available: 0
        })
    );
    assert_eq!(
        snapshot(|w| {
            w.section(2, |w| {
                w.count(0);
                w.u8(0);
            });
        }),
        Err(DecodeError::TrailingBytes {
            field: "nodes section",
            count: 1
        })
    );
    assert_eq!(
        snapshot(|w| {
            w.section(2, |w| w.count(u32::MAX as usize));
        }),
        Err(DecodeError::Truncated {
            field: "nodes",
            needed: u64::from(u32::MAX) * 16,
            available: 0
        })
    );
}

#[test]
fn the_subscriptions_section_is_optional_and_never_empty() {
    let base = |w: &mut Writer| {
        counters(w);
        for tag in 2..=4 {
            empty_list(w, tag);
        }
    };
    // A state that never had a subscription encodes without section 5: as before it existed.
    assert_eq!(
        encode_snapshot(&MetadataState::new()),
        frame(SNAPSHOT_MAGIC, SNAPSHOT_FORMAT_VERSION, base)
    );
    let with_counter = |next: u64| {
        move |w: &mut Writer| {
            base(w);
            w.section(5, |w| {
                w.u64(next);
                w.count(0);
            });
        }
    };
    // The empty state written out would be a second encoding of it.
    assert!(matches!(
        snapshot(with_counter(1)),
        Err(DecodeError::InvalidValue {
            field: "next subscription id",
            ..
        })
    ));
    assert!(matches!(
        snapshot(with_counter(0)),
        Err(DecodeError::Inconsistent { .. })
    ));
    // Subscriptions were created and all deleted: the counter must survive.
    let bytes = frame(SNAPSHOT_MAGIC, SNAPSHOT_FORMAT_VERSION, with_counter(3));
    let state = decode_snapshot(&bytes).expect("decodes");
    assert_eq!(state.next_subscription_id, 3);
    assert_eq!(state.subscriptions().len(), 0);
    assert_eq!(encode_snapshot(&state), bytes);
    assert_eq!(
        snapshot(|w| {
            with_counter(3)(w);
            w.section(8, |_| {});
        }),
        Err(DecodeError::UnknownSection { tag: 8 })
    );
}

#[test]
fn committed_offsets_in_a_snapshot_must_ascend() {
    let state = busy_state();
    // Rewrite the snapshot with billing's two committed shards swapped.
    let body = |w: &mut Writer| {
        let bytes = encode_snapshot(&state);
        let body = &bytes[FRAME_HEADER_LEN..bytes.len() - 4];
        let mut pairs = Vec::new();
        for shard in [1u64, 7] {
            let mut pair = shard.to_le_bytes().to_vec();
            let offset = state
                .subscription_by_id(SubscriptionId(1))
                .and_then(|s| s.committed.get(&ShardId(shard)))
                .expect("committed")
                .0;
            pair.extend_from_slice(&offset.to_le_bytes());
            pairs.push(pair);
        }
        let ascending = [pairs[0].clone(), pairs[1].clone()].concat();
        let at = body
            .windows(ascending.len())
            .position(|window| window == ascending)
            .expect("billing's progress is in the snapshot");
        let mut swapped = body.to_vec();
        swapped[at..at + ascending.len()]
            .copy_from_slice(&[pairs[1].clone(), pairs[0].clone()].concat());
        for byte in swapped {
            w.u8(byte);
        }
    };
    assert!(matches!(
        snapshot(body),
        Err(DecodeError::InvalidValue {
            field: "committed offsets",
            ..
        })
    ));
}

#[test]
fn snapshot_items_must_ascend_and_hold_valid_values() {
    let nodes = |ids: [u64; 2]| {
        move |w: &mut Writer| {
            counters(w);
            w.section(2, |w| {
                w.count(2);
                for id in ids {
                    super::items::write_node(w, &node(id, 1));
                }
            });
            empty_list(w, 3);
            empty_list(w, 4);
        }
    };
    assert_eq!(
        snapshot(nodes([1, 2])).map(|state| state.nodes.len()),
        Ok(2)
    );
    for bad in [[2, 1], [1, 1]] {
        assert!(matches!(
            snapshot(nodes(bad)),
            Err(DecodeError::InvalidValue { field: "nodes", .. })
        ));
    }

    // A shard whose range starts after it ends.
    let shard = |status: u8, start: u128, end: u128| {
        move |w: &mut Writer| {
            counters(w);
            empty_list(w, 2);
            empty_list(w, 3);
            w.section(4, |w| {
                w.count(1);
                w.u64(1);
                w.u64(1);
                w.u128(start);
                w.u128(end);
                w.u8(status);
                for _ in 0..3 {
                    w.u64(0);
                }
                w.u32(0);
                w.count(0);
                w.count(0);
            });
        }
    };
    assert!(matches!(
        snapshot(shard(0, 2, 1)),
        Err(DecodeError::InvalidValue {
            field: "key range",
            ..
        })
    ));
    assert!(matches!(
        snapshot(shard(2, 0, 1)),
        Err(DecodeError::InvalidValue {
            field: "shard status",
            ..
        })
    ));
    // Well formed, but the shard's stream does not exist.
    assert!(matches!(
        snapshot(shard(0, 0, 1)),
        Err(DecodeError::Inconsistent { .. })
    ));
}

/// A named way to break a valid state.
type Breakage = (&'static str, Box<dyn Fn(&mut MetadataState)>);

#[test]
fn snapshots_that_break_an_invariant_are_refused() {
    let state = busy_state();
    let breakages: Vec<Breakage> = vec![
        (
            "a shard id at the counter",
            Box::new(|state| state.next_shard_id = 7),
        ),
        (
            "a stream id at the counter",
            Box::new(|state| state.next_stream_id = 2),
        ),
        (
            "a placement on an unknown node",
            Box::new(|state| {
                if let Some(shard) = state.shards.get_mut(&ShardId(4)) {
                    shard.placement = Placement {
                        node: crate::metadata::NodeId(9),
                        core: 0,
                    };
                }
            }),
        ),
        (
            "one-sided lineage",
            Box::new(|state| {
                if let Some(shard) = state.shards.get_mut(&ShardId(7)) {
                    shard.parents.pop();
                }
            }),
        ),
        (
            "an open parent",
            Box::new(|state| {
                if let Some(shard) = state.shards.get_mut(&ShardId(1)) {
                    shard.status = ShardStatus::Open;
                }
            }),
        ),
        (
            "a missing child",
            Box::new(|state| {
                state.shards.remove(&ShardId(6));
                if let Some(shard) = state.shards.get_mut(&ShardId(1)) {
                    shard.children.pop();
                }
            }),
        ),
        (
            "an orphan shard",
            Box::new(|state| {
                state.shards.insert(
                    ShardId(8),
                    Shard {
                        id: ShardId(8),
                        stream: StreamId(9),
                        key_range: KeyRange::FULL,
                        status: ShardStatus::Open,
                        parents: Vec::new(),
                        children: Vec::new(),
                        epoch: Epoch(0),
                        placement: Placement {
                            node: crate::metadata::NodeId(1),
                            core: 0,
                        },
                        replicas: vec![Placement {
                            node: crate::metadata::NodeId(1),
                            core: 0,
                        }],
                        created_ms: 0,
                    },
                );
                state.next_shard_id = 9;
            }),
        ),
        (
            "a subscription id at the counter",
            Box::new(|state| state.next_subscription_id = 2),
        ),
        (
            "two subscriptions with one id",
            Box::new(|state| {
                if let Some(audit) = state.subscriptions.get_mut(&subscription_name("audit")) {
                    audit.id = SubscriptionId(1);
                }
                state.subscription_names = MetadataState::index_subscriptions(&state.subscriptions);
            }),
        ),
        (
            "a subscription on a missing stream",
            Box::new(|state| {
                if let Some(audit) = state.subscriptions.get_mut(&subscription_name("audit")) {
                    audit.stream = StreamId(9);
                    audit.committed.clear();
                }
            }),
        ),
        (
            "a subscription naming another stream than its own",
            Box::new(|state| {
                if let Some(audit) = state.subscriptions.get_mut(&subscription_name("audit")) {
                    audit.config.stream = name("orders");
                }
            }),
        ),
        (
            "progress on a shard of another stream",
            Box::new(|state| {
                if let Some(audit) = state.subscriptions.get_mut(&subscription_name("audit")) {
                    audit.committed.insert(ShardId(5), Offset(0));
                }
            }),
        ),
        (
            "progress on a missing shard",
            Box::new(|state| {
                if let Some(audit) = state.subscriptions.get_mut(&subscription_name("audit")) {
                    audit.committed.insert(ShardId(99), Offset(0));
                }
            }),
        ),
        (
            "an invalid subscription configuration",
            Box::new(|state| {
                if let Some(audit) = state.subscriptions.get_mut(&subscription_name("audit")) {
                    audit.config.ack_timeout_ms = 0;
                }
            }),
        ),
    ];
    for (what, breakage) in breakages {
        let mut broken = state.clone();
        breakage(&mut broken);
        assert!(
            matches!(
                decode_snapshot(&encode_snapshot(&broken)),
                Err(DecodeError::Inconsistent { .. })
            ),
            "{what} was not refused"
        );
    }
}
