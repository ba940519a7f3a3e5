//! Conversions between the metadata's values and the protocol's.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use runnel_core::{Offset, ShardId};
use runnel_net::protocol::{
    Durability as WireDurability, ReplicaPlacement, ShardInfo, ShardStatus as WireStatus,
    StreamInfo,
};
use runnel_replicate::metadata::{Durability, MetadataState, NodeId, Shard, ShardStatus, Stream};

use crate::cluster::NodeState;
use crate::core::Core;
use crate::mesh::codec::{put_count, put_u64, Reader};
use crate::mesh::{MeshError, RemoteService, Service, WireError};
use runnel_segment::runtime::{sleep, spawn};

/// Most shards described in one envelope (the rest: `shards_truncated`, or the next page).
/// 192 of the largest descriptions (seven replicas each) take about 50 KiB of the 64 KiB
/// envelope; 256 no longer fit once shards listed their replicas.
pub const SHARDS_PER_ENVELOPE_MAX: usize = 192;

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

/// A shard as the protocol describes it; offsets only when this core owns it and knows them
/// without opening its log (see [`fill_offsets`] for the others).
pub fn shard_info(core: &Core, shard: &Shard) -> ShardInfo {
    let offsets = core.local_shard(shard.id).and_then(|local| local.offsets());
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
        start_offset: offsets.map(|(start, _)| start),
        next_offset: offsets.map(|(_, next)| next),
        parents: shard.parents.clone(),
        children: shard.children.clone(),
        replicas: shard
            .replicas
            .iter()
            .map(|replica| ReplicaPlacement {
                node: replica.node.0,
                core: replica.core,
            })
            .collect(),
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

/// `shard.offsets`: the start and next offsets of those of the asked core's shards it owns
/// (shard lists and stream descriptions are answered by whichever core the request reached,
/// which knows only its own shards' logs). Answered with `(shard, start offset, next offset)`
/// of each shard asked about that the core owns; shards it does not own are left out.
pub struct ShardOffsets;

impl Service for ShardOffsets {
    const NAME: &'static str = "shard.offsets";
    type Request = Vec<ShardId>;
    type Response = Vec<(ShardId, Offset, Offset)>;
}

/// Bytes of one `(shard, start, next)` of a `shard.offsets` response.
const SHARD_OFFSETS_BYTES: usize = 8 + 8 + 8;

impl RemoteService for ShardOffsets {
    fn encode_request(request: &Vec<ShardId>, out: &mut Vec<u8>) {
        put_count(out, request.len());
        for shard in request {
            put_u64(out, shard.0);
        }
    }

    fn decode_request(bytes: &[u8]) -> Result<Vec<ShardId>, WireError> {
        let mut reader = Reader::new(bytes);
        let shards = reader.u64_list("shards", ShardId)?;
        reader.finish()?;
        Ok(shards)
    }

    fn encode_response(response: &Vec<(ShardId, Offset, Offset)>, out: &mut Vec<u8>) {
        put_count(out, response.len());
        for (shard, start, next) in response {
            put_u64(out, shard.0);
            put_u64(out, start.0);
            put_u64(out, next.0);
        }
    }

    fn decode_response(bytes: &[u8]) -> Result<Vec<(ShardId, Offset, Offset)>, WireError> {
        let mut reader = Reader::new(bytes);
        let count = reader.count("offsets", SHARD_OFFSETS_BYTES)?;
        let mut offsets = Vec::with_capacity(count);
        for _ in 0..count {
            offsets.push((
                ShardId(reader.u64("shard")?),
                Offset(reader.u64("start")?),
                Offset(reader.u64("next")?),
            ));
        }
        reader.finish()?;
        Ok(offsets)
    }
}

/// Registers the `shard.offsets` service on `core`.
pub fn register(core: &Core) {
    core.mesh
        .register_remote::<ShardOffsets, _, _>(|core, shards| async move {
            Ok::<_, MeshError>(local_offsets(&core, &shards).await)
        });
}

/// The start and next offsets of those of `shards` this core owns, opening the logs whose
/// offsets it does not know yet.
pub async fn local_offsets(core: &Core, shards: &[ShardId]) -> Vec<(ShardId, Offset, Offset)> {
    let mut offsets = Vec::with_capacity(shards.len());
    for id in shards {
        let Some(local) = core.local_shard(*id) else {
            continue;
        };
        let known = match local.offsets() {
            Some(known) => Some(known),
            None => core
                .shard_log(&local)
                .await
                .ok()
                .map(|log| (log.start_offset(), log.next_offset())),
        };
        if let Some((start, next)) = known {
            offsets.push((*id, start, next));
        }
    }
    offsets
}

/// How long a description waits for other nodes' offsets, in milliseconds.
pub const REMOTE_OFFSETS_WAIT_MS: u64 = 500;

/// Fills in the offsets [`shard_info`] left unknown, asking each core that owns such shards
/// once, on this node over the mesh and on other nodes through the peer transport (a shard
/// list or stream description is answered by whichever core the request reached, which knows
/// only its own shards' logs; this core answers in place, opening logs not opened since the
/// start). Other nodes are asked only while this node sees them `Running` (a description
/// does not wait for a node that is down). A shard whose core does not answer keeps unknown
/// offsets.
pub async fn fill_offsets(core: &Rc<Core>, shards: &mut [ShardInfo]) {
    let running: BTreeSet<u64> = core
        .cluster
        .nodes()
        .into_iter()
        .filter(|node| node.state == NodeState::Running)
        .map(|node| node.id)
        .collect();
    let mut by_core: BTreeMap<(u64, u32), Vec<ShardId>> = BTreeMap::new();
    for shard in shards.iter() {
        // A shard placed on a core this node does not run has no one to ask here; another
        // node answers `Failed` for a core it does not run.
        let askable = if shard.node == core.node_id().0 {
            (shard.core as usize) < core.config.cores
        } else {
            running.contains(&shard.node)
        };
        if shard.start_offset.is_none() && askable {
            by_core
                .entry((shard.node, shard.core))
                .or_default()
                .push(shard.id);
        }
    }
    // Other nodes are asked all at once, and waited for at most `REMOTE_OFFSETS_WAIT_MS`: a
    // node that died a moment ago still counts as `Running` for up to
    // `cluster.unavailable_after_ms`, and a description (the answer to a create, too) must not
    // wait for it. Their shards then keep unknown offsets.
    let here = core.node_id().0;
    let mut remote = Vec::new();
    let mut answers = Vec::new();
    for ((node, other), ids) in by_core {
        if node == here {
            answers.push(core.call::<ShardOffsets>(other, ids).await);
        } else {
            let core = Rc::clone(core);
            remote.push(spawn(async move {
                core.call_at::<ShardOffsets>(NodeId(node), other, ids).await
            }));
        }
    }
    let deadline =
        std::time::Instant::now() + std::time::Duration::from_millis(REMOTE_OFFSETS_WAIT_MS);
    for task in remote {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if let runnel_segment::runtime::First::A(answer) =
            runnel_segment::runtime::first_of(task, sleep(left), std::future::pending::<()>()).await
        {
            answers.push(answer);
        }
    }
    for answer in answers {
        let Ok(offsets) = answer else {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::codec::check_encoding;
    use runnel_core::{Epoch, KeyRange, StreamName};
    use runnel_net::protocol::{Response, ShardList, ENVELOPE_BYTES_MAX};
    use runnel_replicate::metadata::REPLICATION_FACTOR_MAX;

    /// A page of shard descriptions fits one envelope even when every shard is as large as
    /// one gets: all its replicas, both offsets, two parents, two children, the longest ids.
    #[test]
    fn a_full_page_of_the_largest_shards_fits_an_envelope() {
        let shard = |id: u64| ShardInfo {
            id: ShardId(u64::MAX - id),
            key_range: KeyRange::FULL,
            status: WireStatus::Sealed,
            node: u64::MAX,
            core: u32::MAX,
            epoch: Epoch(u64::MAX),
            start_offset: Some(Offset(u64::MAX)),
            next_offset: Some(Offset(u64::MAX)),
            parents: vec![ShardId(u64::MAX); 2],
            children: vec![ShardId(u64::MAX); 2],
            replicas: (0..u64::from(REPLICATION_FACTOR_MAX))
                .map(|node| ReplicaPlacement {
                    node: u64::MAX - node,
                    core: u32::MAX,
                })
                .collect(),
        };
        let page = Response::ShardList(ShardList {
            stream: StreamName::new("s".repeat(255)).expect("name"),
            shards: (0..SHARDS_PER_ENVELOPE_MAX as u64).map(shard).collect(),
            more: true,
        });
        let bytes = page.encode().len();
        assert!(
            bytes <= ENVELOPE_BYTES_MAX as usize,
            "{bytes} bytes for {SHARDS_PER_ENVELOPE_MAX} shards"
        );
    }

    /// Requests and responses of `shard.offsets` round-trip; truncations and trailing bytes
    /// are errors; a forged count is refused before anything is allocated.
    #[test]
    fn shard_offsets_encodings_round_trip() {
        let requests = [vec![ShardId(1), ShardId(5)], Vec::new()];
        check_encoding(
            &requests,
            ShardOffsets::encode_request,
            ShardOffsets::decode_request,
        );
        let responses = [vec![(ShardId(1), Offset(0), Offset(600))], Vec::new()];
        check_encoding(
            &responses,
            ShardOffsets::encode_response,
            ShardOffsets::decode_response,
        );
        assert_eq!(
            ShardOffsets::decode_response(&u32::MAX.to_le_bytes()),
            Err(WireError::CountTooLarge {
                field: "offsets",
                count: u64::from(u32::MAX),
                bytes_left: 0
            })
        );
    }
}
