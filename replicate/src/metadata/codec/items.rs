//! The encodings of the metadata's items (node, stream configuration, stream, shard,
//! subscription configuration, subscription), shared by commands and snapshots. Each `read_*`
//! is the exact inverse of its `write_*`.

use std::collections::BTreeMap;

use runnel_core::{Epoch, KeyRange, Offset, ShardId, StreamName};

use super::wire::{Reader, Writer};
use super::DecodeError;
use crate::metadata::node::{Node, NodeId};
use crate::metadata::shard::{Placement, Shard, ShardStatus};
use crate::metadata::stream::{Durability, Stream, StreamConfig, StreamId, REPLICATION_FACTOR_MAX};
use crate::metadata::subscription::{
    Subscription, SubscriptionConfig, SubscriptionId, SubscriptionName, SubscriptionStart,
};

/// Fewest bytes a node takes: id, cores, an empty address's length.
pub(crate) const NODE_BYTES_MIN: usize = 8 + 4 + 4;

/// Fewest bytes a stream takes: id, created_ms, a configuration with a one-byte name, no
/// shard list entries.
pub(crate) const STREAM_BYTES_MIN: usize = 8 + 8 + (4 + 1 + 4 + 1 + 8 + 1) + 4;

/// Fewest bytes a shard takes: all fixed fields and two empty id lists.
pub(crate) const SHARD_BYTES_MIN: usize = 8 + 8 + 16 + 16 + 1 + 8 + 8 + 4 + 8 + 4 + 4;

/// Fewest bytes a subscription takes: id, stream, created_ms, a configuration with one-byte
/// names and no start timestamp, no committed offsets.
pub(crate) const SUBSCRIPTION_BYTES_MIN: usize = 8 + 8 + 8 + (4 + 1 + 4 + 1 + 8 + 4 + 1) + 4;

/// Bytes of one placement: a node id and a core.
pub(crate) const PLACEMENT_BYTES: usize = 8 + 4;

/// Fewest bytes a replica-set entry of a snapshot takes: a shard id and a one-replica list.
pub(crate) const REPLICA_SET_BYTES_MIN: usize = 8 + 4 + PLACEMENT_BYTES;

/// Bytes of one shard id in a list.
const SHARD_ID_BYTES: usize = 8;

/// Bytes of one committed offset: a shard id and an offset.
const COMMITTED_OFFSET_BYTES: usize = 8 + 8;

const DURABILITY_FSYNC: u8 = 0;
const DURABILITY_MEMORY: u8 = 1;
const STATUS_OPEN: u8 = 0;
const STATUS_SEALED: u8 = 1;
const START_EARLIEST: u8 = 0;
const START_LATEST: u8 = 1;
const START_TIMESTAMP: u8 = 2;

pub(crate) fn write_node(writer: &mut Writer, node: &Node) {
    writer.u64(node.id.0);
    writer.u32(node.cores);
    writer.string(&node.address);
}

pub(crate) fn read_node(reader: &mut Reader<'_>) -> Result<Node, DecodeError> {
    Ok(Node {
        id: NodeId(reader.u64("node id")?),
        cores: reader.u32("node cores")?,
        address: reader.string("node address")?,
    })
}

pub(crate) fn write_stream_name(writer: &mut Writer, name: &StreamName) {
    writer.string(name.as_str());
}

pub(crate) fn read_stream_name(reader: &mut Reader<'_>) -> Result<StreamName, DecodeError> {
    let text = reader.string("stream name")?;
    StreamName::new(text).map_err(|error| DecodeError::InvalidValue {
        field: "stream name",
        reason: error.to_string(),
    })
}

pub(crate) fn write_stream_config(writer: &mut Writer, config: &StreamConfig) {
    write_stream_name(writer, &config.name);
    writer.u32(config.shard_count);
    writer.u8(config.replication_factor);
    writer.u64(config.retention_ms);
    writer.u8(match config.durability {
        Durability::Fsync => DURABILITY_FSYNC,
        Durability::Memory => DURABILITY_MEMORY,
    });
}

pub(crate) fn read_stream_config(reader: &mut Reader<'_>) -> Result<StreamConfig, DecodeError> {
    Ok(StreamConfig {
        name: read_stream_name(reader)?,
        shard_count: reader.u32("shard count")?,
        replication_factor: reader.u8("replication factor")?,
        retention_ms: reader.u64("retention")?,
        durability: match reader.u8("durability")? {
            DURABILITY_FSYNC => Durability::Fsync,
            DURABILITY_MEMORY => Durability::Memory,
            other => {
                return Err(DecodeError::InvalidValue {
                    field: "durability",
                    reason: format!("unknown code {other}"),
                })
            }
        },
    })
}

pub(crate) fn write_stream(writer: &mut Writer, stream: &Stream) {
    writer.u64(stream.id.0);
    writer.u64(stream.created_ms);
    write_stream_config(writer, &stream.config);
    write_shard_ids(writer, &stream.shards);
}

pub(crate) fn read_stream(reader: &mut Reader<'_>) -> Result<Stream, DecodeError> {
    Ok(Stream {
        id: StreamId(reader.u64("stream id")?),
        created_ms: reader.u64("stream created_ms")?,
        config: read_stream_config(reader)?,
        shards: read_shard_ids(reader, "stream shards")?,
    })
}

pub(crate) fn write_placement(writer: &mut Writer, placement: &Placement) {
    writer.u64(placement.node.0);
    writer.u32(placement.core);
}

pub(crate) fn read_placement(
    reader: &mut Reader<'_>,
    field: &'static str,
) -> Result<Placement, DecodeError> {
    Ok(Placement {
        node: NodeId(reader.u64(field)?),
        core: reader.u32(field)?,
    })
}

/// A shard's replica set as a snapshot's replica-set section holds it: the shard id, then
/// the replicas (a count, then each placement).
pub(crate) fn write_replica_set(writer: &mut Writer, shard: &Shard) {
    writer.u64(shard.id.0);
    writer.count(shard.replicas.len());
    for replica in &shard.replicas {
        write_placement(writer, replica);
    }
}

/// The inverse of [`write_replica_set`]: a shard id and 1 to [`REPLICATION_FACTOR_MAX`]
/// replicas.
pub(crate) fn read_replica_set(
    reader: &mut Reader<'_>,
) -> Result<(ShardId, Vec<Placement>), DecodeError> {
    let shard = ShardId(reader.u64("replica set shard")?);
    let count = reader.count("replicas", PLACEMENT_BYTES)?;
    if count == 0 || count > usize::from(REPLICATION_FACTOR_MAX) {
        return Err(DecodeError::InvalidValue {
            field: "replicas",
            reason: format!("{count} replicas, allowed 1 to {REPLICATION_FACTOR_MAX}"),
        });
    }
    let mut replicas = Vec::with_capacity(count);
    for _ in 0..count {
        replicas.push(read_placement(reader, "replica")?);
    }
    Ok((shard, replicas))
}

pub(crate) fn write_shard(writer: &mut Writer, shard: &Shard) {
    writer.u64(shard.id.0);
    writer.u64(shard.stream.0);
    writer.u128(shard.key_range.start());
    writer.u128(shard.key_range.end());
    writer.u8(match shard.status {
        ShardStatus::Open => STATUS_OPEN,
        ShardStatus::Sealed => STATUS_SEALED,
    });
    writer.u64(shard.epoch.0);
    write_placement(writer, &shard.placement);
    writer.u64(shard.created_ms);
    write_shard_ids(writer, &shard.parents);
    write_shard_ids(writer, &shard.children);
}

pub(crate) fn read_shard(reader: &mut Reader<'_>) -> Result<Shard, DecodeError> {
    let id = ShardId(reader.u64("shard id")?);
    let stream = StreamId(reader.u64("shard stream")?);
    let start = reader.u128("key range start")?;
    let end = reader.u128("key range end")?;
    let key_range = KeyRange::new(start, end).ok_or_else(|| DecodeError::InvalidValue {
        field: "key range",
        reason: format!("start {start:#x} is after end {end:#x}"),
    })?;
    let status = match reader.u8("shard status")? {
        STATUS_OPEN => ShardStatus::Open,
        STATUS_SEALED => ShardStatus::Sealed,
        other => {
            return Err(DecodeError::InvalidValue {
                field: "shard status",
                reason: format!("unknown code {other}"),
            })
        }
    };
    let epoch = Epoch(reader.u64("shard epoch")?);
    let placement = read_placement(reader, "placement")?;
    Ok(Shard {
        id,
        stream,
        key_range,
        status,
        epoch,
        placement,
        // The snapshot's replica-set section (tag 9) replaces this for shards with more.
        replicas: vec![placement],
        created_ms: reader.u64("shard created_ms")?,
        parents: read_shard_ids(reader, "shard parents")?,
        children: read_shard_ids(reader, "shard children")?,
    })
}

pub(crate) fn write_subscription_name(writer: &mut Writer, name: &SubscriptionName) {
    writer.string(name.as_str());
}

pub(crate) fn read_subscription_name(
    reader: &mut Reader<'_>,
) -> Result<SubscriptionName, DecodeError> {
    let text = reader.string("subscription name")?;
    SubscriptionName::new(text).map_err(|error| DecodeError::InvalidValue {
        field: "subscription name",
        reason: error.to_string(),
    })
}

pub(crate) fn write_subscription_config(writer: &mut Writer, config: &SubscriptionConfig) {
    write_subscription_name(writer, &config.name);
    write_stream_name(writer, &config.stream);
    writer.u64(config.ack_timeout_ms);
    writer.u32(config.max_unacked_records);
    match config.start {
        SubscriptionStart::Earliest => writer.u8(START_EARLIEST),
        SubscriptionStart::Latest => writer.u8(START_LATEST),
        SubscriptionStart::Timestamp(timestamp_ms) => {
            writer.u8(START_TIMESTAMP);
            writer.i64(timestamp_ms);
        }
    }
}

pub(crate) fn read_subscription_config(
    reader: &mut Reader<'_>,
) -> Result<SubscriptionConfig, DecodeError> {
    Ok(SubscriptionConfig {
        name: read_subscription_name(reader)?,
        stream: read_stream_name(reader)?,
        ack_timeout_ms: reader.u64("ack timeout")?,
        max_unacked_records: reader.u32("max unacked records")?,
        start: match reader.u8("subscription start")? {
            START_EARLIEST => SubscriptionStart::Earliest,
            START_LATEST => SubscriptionStart::Latest,
            START_TIMESTAMP => SubscriptionStart::Timestamp(reader.i64("start timestamp")?),
            other => {
                return Err(DecodeError::InvalidValue {
                    field: "subscription start",
                    reason: format!("unknown code {other}"),
                })
            }
        },
    })
}

pub(crate) fn write_subscription(writer: &mut Writer, subscription: &Subscription) {
    writer.u64(subscription.id.0);
    writer.u64(subscription.stream.0);
    writer.u64(subscription.created_ms);
    write_subscription_config(writer, &subscription.config);
    writer.count(subscription.committed.len());
    for (shard, offset) in &subscription.committed {
        writer.u64(shard.0);
        writer.u64(offset.0);
    }
}

pub(crate) fn read_subscription(reader: &mut Reader<'_>) -> Result<Subscription, DecodeError> {
    let id = SubscriptionId(reader.u64("subscription id")?);
    let stream = StreamId(reader.u64("subscription stream")?);
    let created_ms = reader.u64("subscription created_ms")?;
    let config = read_subscription_config(reader)?;
    let count = reader.count("committed offsets", COMMITTED_OFFSET_BYTES)?;
    let mut committed = BTreeMap::new();
    for _ in 0..count {
        let shard = ShardId(reader.u64("committed shard")?);
        let offset = Offset(reader.u64("committed offset")?);
        if committed
            .last_key_value()
            .is_some_and(|(last, _)| *last >= shard)
        {
            return Err(DecodeError::InvalidValue {
                field: "committed offsets",
                reason: "shards are not in strictly ascending order".to_string(),
            });
        }
        committed.insert(shard, offset);
    }
    Ok(Subscription {
        id,
        config,
        stream,
        created_ms,
        committed,
    })
}

fn write_shard_ids(writer: &mut Writer, ids: &[ShardId]) {
    writer.count(ids.len());
    for id in ids {
        writer.u64(id.0);
    }
}

fn read_shard_ids(
    reader: &mut Reader<'_>,
    field: &'static str,
) -> Result<Vec<ShardId>, DecodeError> {
    let count = reader.count(field, SHARD_ID_BYTES)?;
    (0..count).map(|_| reader.u64(field).map(ShardId)).collect()
}
