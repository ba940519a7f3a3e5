//! Conversions between the metadata's values and the protocol's.

use std::collections::BTreeMap;
use std::rc::Rc;

use runnel_core::ShardId;
use runnel_net::protocol::{
    Durability as WireDurability, ShardInfo, ShardStatus as WireStatus, StreamInfo,
};
use runnel_replicate::metadata::{Durability, MetadataState, Shard, ShardStatus, Stream};

use crate::ask::{Answer, Question};
use crate::core::Core;

/// Most shards described in one envelope (the rest: `shards_truncated`).
pub const SHARDS_PER_ENVELOPE_MAX: usize = 256;

/// The protocol's name for a durability.
pub fn durability_to_wire(durability: Durability) -> WireDurability {
    match durability {
        Durability::Fsync => WireDurability::Fsync,
        Durability::Memory => WireDurability::Memory,
    }
}

/// The metadata's name for a protocol durability.
pub fn durability_from_wire(durability: WireDurability) -> Durability {
    match durability {
        WireDurability::Fsync => Durability::Fsync,
        WireDurability::Memory => Durability::Memory,
    }
}

/// A shard as the protocol describes it; offsets only when this core owns it (see
/// [`fill_offsets`] for the shards of the node's other cores).
pub fn shard_info(core: &Core, shard: &Shard) -> ShardInfo {
    let local = core.local_shard(shard.id);
    ShardInfo {
        id: shard.id,
        key_range: shard.key_range,
        status: match shard.status {
            ShardStatus::Open => WireStatus::Open,
            ShardStatus::Sealed => WireStatus::Sealed,
        },
        node: shard.placement.node.0,
        core: shard.placement.core,
        epoch: shard.epoch,
        start_offset: local.as_ref().map(|l| l.log.start_offset()),
        next_offset: local.as_ref().map(|l| l.log.next_offset()),
        parents: shard.parents.clone(),
        children: shard.children.clone(),
    }
}

/// A stream as the protocol describes it, with up to `shards_max` shards in key order.
pub fn stream_info(
    core: &Core,
    state: &MetadataState,
    stream: &Stream,
    shards_max: usize,
) -> StreamInfo {
    let shards: Vec<ShardInfo> = stream
        .shards
        .iter()
        .filter_map(|id| state.shard(*id))
        .take(shards_max)
        .map(|shard| shard_info(core, shard))
        .collect();
    StreamInfo {
        name: stream.config.name.clone(),
        shard_count: stream.config.shard_count,
        replication_factor: stream.config.replication_factor,
        retention_ms: stream.config.retention_ms,
        durability: durability_to_wire(stream.config.durability),
        shards_truncated: shards.len() < stream.shards.len(),
        shards,
    }
}

/// Answer to [`Question::Offsets`]: the start and next offsets of those of `shards` this core
/// owns.
pub fn local_offsets(core: &Core, shards: &[ShardId]) -> Answer {
    Answer::Offsets(
        shards
            .iter()
            .filter_map(|id| {
                let local = core.local_shard(*id)?;
                Some((*id, local.log.start_offset(), local.log.next_offset()))
            })
            .collect(),
    )
}

/// Fills in the offsets of `shards` owned by the node's other cores by asking each of them
/// once (a shard list or stream description is answered by whichever core the request
/// reached, which knows only its own shards' logs). A shard whose core does not answer keeps
/// unknown offsets.
pub async fn fill_offsets(core: &Rc<Core>, shards: &mut [ShardInfo]) {
    let mut by_core: BTreeMap<u32, Vec<ShardId>> = BTreeMap::new();
    for shard in shards.iter() {
        let elsewhere_here = shard.node == core.node_id().0 && shard.core != core.index;
        // A shard placed on a core this node does not run has no one to ask.
        if elsewhere_here
            && shard.start_offset.is_none()
            && (shard.core as usize) < core.config.cores
        {
            by_core.entry(shard.core).or_default().push(shard.id);
        }
    }
    for (other, ids) in by_core {
        let Answer::Offsets(offsets) = core.ask(other, Question::Offsets { shards: ids }).await
        else {
            continue;
        };
        for (id, start, next) in offsets {
            if let Some(shard) = shards.iter_mut().find(|shard| shard.id == id) {
                shard.start_offset = Some(start);
                shard.next_offset = Some(next);
            }
        }
    }
}
