//! Conversions between the metadata's values and the protocol's.

use runnel_net::protocol::{
    Durability as WireDurability, ShardInfo, ShardStatus as WireStatus, StreamInfo,
};
use runnel_replicate::metadata::{Durability, MetadataState, Shard, ShardStatus, Stream};

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

/// A shard as the protocol describes it; offsets only when this core owns it.
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
