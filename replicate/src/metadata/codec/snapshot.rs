//! The body of an encoded snapshot: a sequence of sections, each `tag (u16), length (u32),
//! body`, in strictly ascending tag order.
//!
//! Sections let the state grow without breaking old snapshots: subscriptions (section 5), and
//! later queries and views, are sections optional when decoding (absent = empty), so a newer
//! build reads an older snapshot unchanged. An older build refuses a snapshot with a section it
//! does not know ([`DecodeError::UnknownSection`]) rather than drop state it cannot represent.
//! A change to an existing section's layout needs a new format version.
//!
//! An optional section is written only when its state differs from the empty one, so a state
//! that never used the feature encodes exactly as before it existed (the version 1 golden
//! snapshot stays byte-identical, and an older build can still read it); the decoder refuses
//! the section when it holds the empty state, which would be a second encoding of one state.

use std::collections::BTreeMap;

use super::items::{
    read_node, read_replica_set, read_shard, read_stream, read_subscription, write_node,
    write_replica_set, write_shard, write_stream, write_subscription, NODE_BYTES_MIN,
    REPLICA_SET_BYTES_MIN, SHARD_BYTES_MIN, STREAM_BYTES_MIN, SUBSCRIPTION_BYTES_MIN,
};
use super::wire::{Reader, Writer};
use super::DecodeError;
use crate::metadata::routing::Routing;
use crate::metadata::state::MetadataState;

/// Applied index and id counters: four u64.
const SECTION_COUNTERS: u16 = 1;
/// Registered nodes, in id order.
const SECTION_NODES: u16 = 2;
/// Live streams, in name order.
const SECTION_STREAMS: u16 = 3;
/// Shards of live streams, in id order.
const SECTION_SHARDS: u16 = 4;
/// The subscription id counter, then live subscriptions in name order. Optional: absent when
/// no subscription was ever created (the counter is still 1).
const SECTION_SUBSCRIPTIONS: u16 = 5;
/// The cluster id (a u64, not 0). Optional: absent before a leader named the cluster.
const SECTION_CLUSTER: u16 = 6;
/// The replica sets of the shards that have more than `[placement]`, in shard id order.
/// Optional: absent when every shard has only its sequencer's replica (as every shard had
/// before replica sets existed, which is what a shard missing here decodes to).
const SECTION_REPLICA_SETS: u16 = 9;

/// The subscription id counter of a state that never created a subscription.
const NEXT_SUBSCRIPTION_ID_INITIAL: u64 = 1;

pub(crate) fn write(writer: &mut Writer, state: &MetadataState) {
    writer.section(SECTION_COUNTERS, |writer| {
        writer.u64(state.applied_index);
        writer.u64(state.next_stream_id);
        writer.u64(state.next_shard_id);
        writer.u64(state.placement_cursor);
    });
    writer.section(SECTION_NODES, |writer| {
        writer.count(state.nodes.len());
        for node in state.nodes.values() {
            write_node(writer, node);
        }
    });
    writer.section(SECTION_STREAMS, |writer| {
        writer.count(state.streams.len());
        for stream in state.streams.values() {
            write_stream(writer, stream);
        }
    });
    writer.section(SECTION_SHARDS, |writer| {
        writer.count(state.shards.len());
        for shard in state.shards.values() {
            write_shard(writer, shard);
        }
    });
    // Subscriptions only exist after the counter moved, so this skips only the empty state.
    if state.next_subscription_id != NEXT_SUBSCRIPTION_ID_INITIAL {
        writer.section(SECTION_SUBSCRIPTIONS, |writer| {
            writer.u64(state.next_subscription_id);
            writer.count(state.subscriptions.len());
            for subscription in state.subscriptions.values() {
                write_subscription(writer, subscription);
            }
        });
    }
    if let Some(id) = state.cluster_id {
        writer.section(SECTION_CLUSTER, |writer| writer.u64(id));
    }
    let replicated: Vec<_> = state
        .shards
        .values()
        .filter(|shard| shard.replicas != [shard.placement])
        .collect();
    if !replicated.is_empty() {
        writer.section(SECTION_REPLICA_SETS, |writer| {
            writer.count(replicated.len());
            for shard in replicated {
                write_replica_set(writer, shard);
            }
        });
    }
}

/// Reads the sections into a state. Collections must be in strictly ascending key order, so
/// that one state has exactly one encoding. The caller checks the invariants.
pub(crate) fn read(mut reader: Reader<'_>) -> Result<MetadataState, DecodeError> {
    let mut state = MetadataState::new();
    let mut previous = None;
    let mut seen = Vec::new();
    while reader.remaining() > 0 {
        let tag = reader.u16("section tag")?;
        if let Some(previous) = previous.filter(|&previous| tag <= previous) {
            return Err(DecodeError::SectionOutOfOrder { tag, previous });
        }
        previous = Some(tag);
        let length = usize::try_from(reader.u32("section length")?).unwrap_or(usize::MAX);
        let mut section = Reader::new(reader.take(length, "section body")?);
        match tag {
            SECTION_COUNTERS => {
                state.applied_index = section.u64("applied index")?;
                state.next_stream_id = section.u64("next stream id")?;
                state.next_shard_id = section.u64("next shard id")?;
                state.placement_cursor = section.u64("placement cursor")?;
                section.finish("counters section")?;
            }
            SECTION_NODES => {
                state.nodes = read_sorted(&mut section, "nodes", NODE_BYTES_MIN, |reader| {
                    read_node(reader).map(|node| (node.id, node))
                })?;
                section.finish("nodes section")?;
            }
            SECTION_STREAMS => {
                state.streams = read_sorted(&mut section, "streams", STREAM_BYTES_MIN, |reader| {
                    read_stream(reader).map(|stream| (stream.config.name.clone(), stream))
                })?;
                section.finish("streams section")?;
            }
            SECTION_SHARDS => {
                state.shards = read_sorted(&mut section, "shards", SHARD_BYTES_MIN, |reader| {
                    read_shard(reader).map(|shard| (shard.id, shard))
                })?;
                section.finish("shards section")?;
            }
            SECTION_SUBSCRIPTIONS => {
                state.next_subscription_id = section.u64("next subscription id")?;
                if state.next_subscription_id == NEXT_SUBSCRIPTION_ID_INITIAL {
                    return Err(DecodeError::InvalidValue {
                        field: "next subscription id",
                        reason: "the subscriptions section is written only once a subscription \
                                 was created (next subscription id above 1)"
                            .to_string(),
                    });
                }
                state.subscriptions = read_sorted(
                    &mut section,
                    "subscriptions",
                    SUBSCRIPTION_BYTES_MIN,
                    |reader| {
                        read_subscription(reader)
                            .map(|subscription| (subscription.config.name.clone(), subscription))
                    },
                )?;
                section.finish("subscriptions section")?;
            }
            SECTION_CLUSTER => {
                let id = section.u64("cluster id")?;
                if id == 0 {
                    return Err(DecodeError::InvalidValue {
                        field: "cluster id",
                        reason: "a cluster id is not 0".to_string(),
                    });
                }
                state.cluster_id = Some(id);
                section.finish("cluster section")?;
            }
            SECTION_REPLICA_SETS => {
                read_replica_sets(&mut section, &mut state)?;
                section.finish("replica sets section")?;
            }
            _ => return Err(DecodeError::UnknownSection { tag }),
        }
        seen.push(tag);
    }
    for required in [
        SECTION_COUNTERS,
        SECTION_NODES,
        SECTION_STREAMS,
        SECTION_SHARDS,
    ] {
        if !seen.contains(&required) {
            return Err(DecodeError::MissingSection { tag: required });
        }
    }
    state.routing = Routing::rebuild(state.streams.values(), state.shards.values());
    state.subscription_names = MetadataState::index_subscriptions(&state.subscriptions);
    Ok(state)
}

/// Reads the replica-set section into the shards read before it (section 4). Entries name
/// existing shards in strictly ascending id order, and never hold just `[placement]` (the
/// state an absent entry stands for), so each state keeps one encoding; the section is never
/// empty.
fn read_replica_sets(
    reader: &mut Reader<'_>,
    state: &mut MetadataState,
) -> Result<(), DecodeError> {
    let invalid = |reason: String| DecodeError::InvalidValue {
        field: "replica sets",
        reason,
    };
    let count = reader.count("replica sets", REPLICA_SET_BYTES_MIN)?;
    if count == 0 {
        return Err(invalid(
            "the section is written only when it holds a set".to_string(),
        ));
    }
    let mut previous = None;
    for _ in 0..count {
        let (id, replicas) = read_replica_set(reader)?;
        if previous.is_some_and(|previous| previous >= id) {
            return Err(invalid(
                "shards are not in strictly ascending id order".to_string(),
            ));
        }
        previous = Some(id);
        let shard = state
            .shards
            .get_mut(&id)
            .ok_or_else(|| invalid(format!("shard {id} is not in the shards section")))?;
        if replicas == [shard.placement] {
            return Err(invalid(format!(
                "shard {id}'s set is just its sequencer, which is written by leaving it out"
            )));
        }
        shard.replicas = replicas;
    }
    Ok(())
}

/// Reads a count, then that many `(key, value)` items whose keys must strictly ascend.
fn read_sorted<K: Ord, V>(
    reader: &mut Reader<'_>,
    field: &'static str,
    item_bytes_min: usize,
    mut read_item: impl FnMut(&mut Reader<'_>) -> Result<(K, V), DecodeError>,
) -> Result<BTreeMap<K, V>, DecodeError> {
    let count = reader.count(field, item_bytes_min)?;
    let mut items = BTreeMap::new();
    for _ in 0..count {
        let (key, value) = read_item(reader)?;
        if items.last_key_value().is_some_and(|(last, _)| *last >= key) {
            return Err(DecodeError::InvalidValue {
                field,
                reason: "items are not in strictly ascending key order".to_string(),
            });
        }
        items.insert(key, value);
    }
    Ok(items)
}
