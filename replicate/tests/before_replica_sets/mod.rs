//! What a snapshot written before replica sets existed means now.
//!
//! Shards then had one placement and nothing else; such a snapshot decodes with every shard's
//! replicas `[placement]` (the legacy form the invariants accept). Replaying the commands that
//! produced it gives full replica sets instead (a create places R replicas now), so the two
//! states differ in exactly that: the replayed snapshot is the older one plus section 9, the
//! replica sets, and nothing else.

use runnel_replicate::metadata::codec::{FRAME_HEADER_LEN, FRAME_OVERHEAD_LEN};
use runnel_replicate::metadata::{decode_snapshot, encode_snapshot, MetadataState};

/// The tag of the replica-set section (docs/format/metadata.md).
const SECTION_REPLICA_SETS: u16 = 9;

/// The body of one frame: what lies between its header and its CRC.
fn body(frame: &[u8]) -> &[u8] {
    &frame[FRAME_HEADER_LEN..frame.len() - (FRAME_OVERHEAD_LEN - FRAME_HEADER_LEN)]
}

/// Checks that `older` (a snapshot from before replica sets) decodes, re-encodes to the same
/// bytes, holds only one-replica sets, and equals `replayed` (its commands replayed now)
/// except for the replica sets, which the replayed state has in full. Returns the decoded
/// state.
pub fn assert_same_but_replica_sets(older: &[u8], replayed: &MetadataState) -> MetadataState {
    let restored = decode_snapshot(older).expect("older snapshot decodes");
    assert_eq!(
        encode_snapshot(&restored),
        older,
        "older bytes re-encode alike"
    );
    for shard in restored.shards() {
        assert_eq!(shard.replicas, vec![shard.placement], "shard {}", shard.id);
    }
    let replayed_bytes = encode_snapshot(replayed);
    let (old_body, new_body) = (body(older), body(&replayed_bytes));
    assert!(new_body.starts_with(old_body), "only a section was added");
    let added = &new_body[old_body.len()..];
    if !added.is_empty() {
        assert_eq!(added[..2], SECTION_REPLICA_SETS.to_le_bytes());
    }
    for (old, new) in restored.shards().zip(replayed.shards()) {
        assert_eq!(old.placement, new.placement, "shard {}", old.id);
        assert_eq!(
            new.replicas.first(),
            Some(&new.placement),
            "shard {}",
            new.id
        );
    }
    restored
}
