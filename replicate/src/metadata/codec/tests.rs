//! Unit tests of the codec: the frame's fields and checks in order, every command's round
//! trip, and each way a body or snapshot is refused. (Randomized properties over whole command
//! sequences live in `metadata/proptests.rs`.)

use runnel_core::{Epoch, KeyRange, ShardId};

use super::wire::Writer;
use super::*;
use crate::metadata::testing::{config, name, node, Harness};
use crate::metadata::{Durability, Placement, Shard, ShardStatus, StreamConfig, StreamId};

/// A frame of `magic` around whatever `body` writes.
fn frame(magic: u32, version: u8, body: impl FnOnce(&mut Writer)) -> Vec<u8> {
    let mut writer = Writer::framed(magic, version);
    body(&mut writer);
    writer.finish_frame()
}

fn all_commands() -> Vec<Command> {
    vec![
        Command::RegisterNode { node: node(7, 16) },
        Command::CreateStream {
            config: StreamConfig {
                replication_factor: 3,
                durability: Durability::Memory,
                ..config("orders.eu-1", 8)
            },
            now_ms: 1_763_726_400_000,
        },
        Command::DeleteStream {
            name: name("orders"),
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
        Command::BumpEpoch { shard: ShardId(0) },
    ]
}

/// A state with nodes, two streams (shards 1-3 and 4), a split (1 into 5, 6) and a merge
/// (2 and 3 into 7).
fn busy_state() -> MetadataState {
    let mut harness = Harness::with_nodes(2, 2);
    for command in [
        Command::CreateStream {
            config: config("orders", 3),
            now_ms: 10,
        },
        Command::CreateStream {
            config: config("clicks", 1),
            now_ms: 11,
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
        Command::BumpEpoch { shard: ShardId(4) },
    ] {
        harness.ok(command);
    }
    harness.state
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
            w.section(9, |_| {});
        }),
        Err(DecodeError::UnknownSection { tag: 9 })
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
                        created_ms: 0,
                    },
                );
                state.next_shard_id = 9;
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
