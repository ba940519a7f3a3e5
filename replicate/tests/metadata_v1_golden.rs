//! Compatibility of metadata format version 1 (commands and snapshots): the bytes in
//! `golden/metadata_commands_v1.bin` and `golden/metadata_snapshot_v1.bin` were written by this
//! encoder when the format was defined. Nodes replay their metadata log from such bytes after an
//! upgrade, so any change to a layout, a tag or an enum code breaks this test and must instead
//! come with a new command tag, a new snapshot section or a new format version (see
//! docs/format/metadata.md).
//!
//! The snapshot was written before replica sets existed: it decodes to one-replica sets, and
//! the state its commands replay to now is the same plus section 9, the replica sets
//! (`before_replica_sets`).
//!
//! To regenerate after a deliberate version bump: `RUNNEL_WRITE_GOLDEN=1 cargo test -p
//! runnel-replicate --test metadata_v1_golden`, and keep the old files for the old version's test.

mod before_replica_sets;

use runnel_core::{ShardId, StreamName};
use runnel_replicate::metadata::codec::FRAME_OVERHEAD_LEN;
use runnel_replicate::metadata::{
    decode_command, encode_command, encode_snapshot, Command, Durability, MetadataState, Node,
    NodeId, StreamConfig,
};

const GOLDEN_COMMANDS: &[u8] = include_bytes!("golden/metadata_commands_v1.bin");
const GOLDEN_SNAPSHOT: &[u8] = include_bytes!("golden/metadata_snapshot_v1.bin");

fn name(text: &str) -> StreamName {
    StreamName::new(text).expect("valid name")
}

/// One command of every kind, some of them refused when applied (refusals are logged too).
fn commands() -> Vec<Command> {
    let node = |id, cores| Command::RegisterNode {
        node: Node {
            id: NodeId(id),
            cores,
            address: format!("10.0.0.{id}:7000"),
        },
    };
    vec![
        node(1, 2),
        node(2, 1),
        Command::CreateStream {
            config: StreamConfig {
                name: name("orders"),
                shard_count: 3,
                replication_factor: 2,
                retention_ms: 7 * 86_400_000,
                durability: Durability::Fsync,
            },
            now_ms: 1_763_726_400_000,
            avoid: Vec::new(),
        },
        Command::CreateStream {
            config: StreamConfig {
                name: name("scratch"),
                shard_count: 1,
                replication_factor: 1,
                retention_ms: 60_000,
                durability: Durability::Memory,
            },
            now_ms: 1_763_726_400_100,
            avoid: Vec::new(),
        },
        Command::SplitShard {
            shard: ShardId(1),
            now_ms: 1_763_726_400_200,
        },
        Command::MergeShards {
            left: ShardId(3),
            right: ShardId(2),
            now_ms: 1_763_726_400_300,
        },
        // Tag 6: the unconditional bump of the first logs.
        Command::BumpEpochUnconditionally { shard: ShardId(5) },
        // Tag 3: a delete without `force`, as every delete was before subscriptions.
        Command::DeleteStream {
            name: name("scratch"),
            force: false,
        },
        // Refused (shard 1 is sealed), but still an entry of the log.
        Command::SplitShard {
            shard: ShardId(1),
            now_ms: 1_763_726_400_400,
        },
    ]
}

fn state() -> MetadataState {
    let mut state = MetadataState::new();
    for (index, command) in (1..).zip(commands()) {
        let _ = state.apply(index, &command);
    }
    state
}

#[test]
fn version_1_bytes_are_stable() {
    let encoded: Vec<u8> = commands().iter().flat_map(encode_command).collect();
    let snapshot = encode_snapshot(&state());
    if std::env::var_os("RUNNEL_WRITE_GOLDEN").is_some() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/");
        std::fs::write(format!("{dir}metadata_commands_v1.bin"), &encoded).expect("write");
        std::fs::write(format!("{dir}metadata_snapshot_v1.bin"), &snapshot).expect("write");
    }
    assert_eq!(encoded, GOLDEN_COMMANDS, "command encoding changed");
    before_replica_sets::assert_same_but_replica_sets(GOLDEN_SNAPSHOT, &state());
}

#[test]
fn version_1_bytes_still_decode_and_replay() {
    // The golden commands are frames back to back; each frame's length is in its header.
    let mut rest = GOLDEN_COMMANDS;
    let mut decoded = Vec::new();
    while !rest.is_empty() {
        let body_len = u32::from_le_bytes(rest[8..12].try_into().expect("4 bytes")) as usize;
        let (frame, next) = rest.split_at(FRAME_OVERHEAD_LEN + body_len);
        decoded.push(decode_command(frame).expect("golden command decodes"));
        rest = next;
    }
    assert_eq!(decoded, commands());

    let restored = before_replica_sets::assert_same_but_replica_sets(GOLDEN_SNAPSHOT, &state());
    assert_eq!(restored.applied_index(), 9);
    // Replayed now, "orders" (R = 2 on two nodes) gets two replicas per shard.
    assert!(state()
        .open_shards(&name("orders"))
        .expect("orders lives")
        .iter()
        .all(|shard| shard.replicas.len() == 2));
    let orders = restored.open_shards(&name("orders")).expect("orders lives");
    let ids: Vec<u64> = orders.iter().map(|shard| shard.id.0).collect();
    assert_eq!(ids, vec![5, 6, 7]);
    assert_eq!(
        restored.shard(ShardId(5)).map(|shard| shard.epoch.0),
        Some(1)
    );
}
