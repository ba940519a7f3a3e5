//! Unit tests of the snapshot's replica-set section (tag 9): one encoding per state, every
//! malformed section refused, and states whose replica sets break an invariant refused; and
//! the encoding of the `BumpEpoch` command (tag 40) that moves a sequencer within its set.

use runnel_core::ShardId;

use super::tests::busy_state;
use super::wire::Writer;
use super::*;
use crate::metadata::testing::resign;
use crate::metadata::{NodeId, Placement};

const SECTION_REPLICA_SETS: u16 = 9;

/// The snapshot of `state` with its replica-set section's body replaced by what `body` writes.
fn with_replica_sets(state: &MetadataState, body: impl FnOnce(&mut Writer)) -> Vec<u8> {
    let bytes = encode_snapshot(state);
    let (header, rest) = bytes.split_at(FRAME_HEADER_LEN);
    let sections = &rest[..rest.len() - 4];
    // Walk the sections to the replica sets' (the last one in these states).
    let mut at = 0;
    loop {
        let tag = u16::from_le_bytes([sections[at], sections[at + 1]]);
        if tag == SECTION_REPLICA_SETS {
            break;
        }
        let length = u32::from_le_bytes(sections[at + 2..at + 6].try_into().expect("4 bytes"));
        at += 6 + length as usize;
    }
    let mut writer = Writer::framed(SNAPSHOT_MAGIC, SNAPSHOT_FORMAT_VERSION);
    writer.section(SECTION_REPLICA_SETS, body);
    let framed = writer.finish_frame();
    let section = &framed[FRAME_HEADER_LEN..framed.len() - 4];
    let mut edited = [header, &sections[..at], section, &[0; 4]].concat();
    resign(&mut edited);
    edited
}

fn set(writer: &mut Writer, shard: u64, replicas: &[(u64, u32)]) {
    writer.u64(shard);
    writer.count(replicas.len());
    for &(node, core) in replicas {
        writer.u64(node);
        writer.u32(core);
    }
}

/// The first shard of `state` with `count` replicas.
fn shard_with_replicas(state: &MetadataState, count: usize) -> &crate::metadata::Shard {
    state
        .shards()
        .find(|shard| shard.replicas.len() == count)
        .expect("busy_state has shards of one and two replicas")
}

fn refused_field(bytes: &[u8]) -> &'static str {
    match decode_snapshot(bytes) {
        Err(DecodeError::InvalidValue { field, .. }) => field,
        other => panic!("not refused as an invalid value: {other:?}"),
    }
}

/// A state with replica sets writes section 9 and reads it back; the section written by hand
/// as the encoder writes it decodes to the same state.
#[test]
fn replica_sets_round_trip() {
    let state = busy_state();
    let replicated: Vec<&crate::metadata::Shard> = state
        .shards()
        .filter(|shard| shard.replicas.len() > 1)
        .collect();
    assert!(!replicated.is_empty());
    let by_hand = with_replica_sets(&state, |w| {
        w.count(replicated.len());
        for shard in &replicated {
            let replicas: Vec<(u64, u32)> = shard
                .replicas
                .iter()
                .map(|replica| (replica.node.0, replica.core))
                .collect();
            set(w, shard.id.0, &replicas);
        }
    });
    assert_eq!(by_hand, encode_snapshot(&state));
    assert_eq!(decode_snapshot(&by_hand), Ok(state));
}

/// Each way the section can be malformed is refused: empty, out of order, naming a shard the
/// snapshot does not hold, a set of just the sequencer (the absent entry's meaning), no
/// replica, more than the largest factor.
#[test]
fn malformed_replica_set_sections_are_refused() {
    let state = busy_state();
    let shard = shard_with_replicas(&state, 2).clone();
    let (sequencer, other) = (shard.replicas[0], shard.replicas[1]);
    let pair = [
        (sequencer.node.0, sequencer.core),
        (other.node.0, other.core),
    ];
    let id = shard.id.0;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "empty",
            with_replica_sets(&state, |w| w.count(0)),
            "replica sets",
        ),
        (
            "descending",
            with_replica_sets(&state, |w| {
                w.count(2);
                set(w, id, &pair);
                set(w, id, &pair);
            }),
            "replica sets",
        ),
        (
            "unknown shard",
            with_replica_sets(&state, |w| {
                w.count(1);
                set(w, 99, &pair);
            }),
            "replica sets",
        ),
        (
            "just the sequencer",
            with_replica_sets(&state, |w| {
                w.count(1);
                set(w, id, &pair[..1]);
            }),
            "replica sets",
        ),
        (
            "no replica",
            with_replica_sets(&state, |w| {
                w.count(1);
                set(w, id, &[]);
                // Room for the smallest entry, so that the list's length check passes.
                w.u64(0);
                w.u32(0);
            }),
            "replicas",
        ),
        (
            "eight replicas",
            with_replica_sets(&state, |w| {
                w.count(1);
                set(w, id, &[(1, 0); 8]);
            }),
            "replicas",
        ),
    ];
    for (what, bytes, field) in cases {
        assert_eq!(refused_field(&bytes), field, "{what}");
    }
}

/// What a test breaks, the shard it breaks, and how.
type ShardBreakage = (
    &'static str,
    ShardId,
    Box<dyn Fn(&mut crate::metadata::Shard)>,
);

/// States whose replica sets break an invariant are refused when decoded.
#[test]
fn replica_sets_that_break_an_invariant_are_refused() {
    let state = busy_state();
    let replicated = shard_with_replicas(&state, 2).id;
    let single = shard_with_replicas(&state, 1).id;
    let breakages: Vec<ShardBreakage> = vec![
        (
            "two replicas on one node",
            replicated,
            Box::new(|shard| shard.replicas[1].node = shard.replicas[0].node),
        ),
        (
            "a sequencer outside its replicas",
            replicated,
            Box::new(|shard| shard.placement.core += 1),
        ),
        (
            "a replica on an unregistered node",
            replicated,
            Box::new(|shard| shard.replicas[1].node = NodeId(9)),
        ),
        (
            "more replicas than the factor",
            single,
            Box::new(|shard| {
                let node = NodeId(3 - shard.placement.node.0);
                shard.replicas.push(Placement { node, core: 0 });
            }),
        ),
    ];
    for (what, id, breakage) in breakages {
        let mut broken = state.clone();
        breakage(broken.shards.get_mut(&id).expect("shard"));
        assert!(
            matches!(
                decode_snapshot(&encode_snapshot(&broken)),
                Err(DecodeError::Inconsistent { .. })
            ),
            "{what} was not refused"
        );
    }
}

/// The `BumpEpoch` example of docs/format/metadata.md, byte for byte.
#[test]
fn bump_epoch_encodes_as_documented() {
    let command = Command::BumpEpoch {
        shard: ShardId(5),
        from: runnel_core::Epoch(1),
        sequencer: Placement {
            node: NodeId(2),
            core: 0,
        },
    };
    let expected: Vec<u8> = [
        &b"RNLC"[..],
        &[1, 1, 0, 0, 30, 0, 0, 0],
        &[40, 0],
        &5u64.to_le_bytes(),
        &1u64.to_le_bytes(),
        &2u64.to_le_bytes(),
        &0u32.to_le_bytes(),
        &[0xcf, 0xc9, 0x50, 0x2b],
    ]
    .concat();
    assert_eq!(encode_command(&command), expected);
    assert_eq!(decode_command(&expected), Ok(command));
}
