//! The body of an encoded command: a u16 tag naming the command, then its fields in order.
//!
//! Tags are never reused or renumbered. A new command takes a new tag; a command whose fields
//! change takes a new tag too (the old one stays decodable), so old logs replay forever.
//!
//! `DeleteStream` gained a `force` flag with subscriptions. Rather than a flag byte after the
//! name (which old entries lack), the flag picks the tag: tag 3 is the unforced delete it always
//! was, tag 10 the forced one. Each value has exactly one encoding, and every entry written
//! before subscriptions existed still decodes to what it meant.
//!
//! `BumpEpoch` became a compare-and-set naming the new sequencer (tag 40); tag 6 stays the
//! unconditional bump it was (`BumpEpochUnconditionally`), which nothing proposes any more.
//!
//! `CreateStream` gained the list of nodes to avoid the same way: tag 2 is a create that avoids
//! no node (every entry written before the list existed), tag 33 one that avoids at least one
//! (its list follows the create's fields; an empty list under tag 33 is refused, so each value
//! keeps exactly one encoding).

use runnel_core::{Epoch, Offset, ShardId};

use super::items::{
    read_node, read_placement, read_stream_config, read_stream_name, read_subscription_config,
    read_subscription_name, write_node, write_placement, write_stream_config, write_stream_name,
    write_subscription_config, write_subscription_name,
};
use super::wire::{Reader, Writer};
use super::DecodeError;
use crate::metadata::command::{Command, ProgressCommit};
use crate::metadata::node::{NodeId, NODES_MAX};
use crate::metadata::subscription::SubscriptionId;

const TAG_REGISTER_NODE: u16 = 1;
const TAG_CREATE_STREAM: u16 = 2;
/// `DeleteStream` with `force: false`.
const TAG_DELETE_STREAM: u16 = 3;
const TAG_SPLIT_SHARD: u16 = 4;
const TAG_MERGE_SHARDS: u16 = 5;
const TAG_BUMP_EPOCH: u16 = 6;
const TAG_CREATE_SUBSCRIPTION: u16 = 7;
const TAG_DELETE_SUBSCRIPTION: u16 = 8;
const TAG_COMMIT_PROGRESS: u16 = 9;
/// `DeleteStream` with `force: true`.
const TAG_DELETE_STREAM_FORCED: u16 = 10;
const TAG_COMMIT_PROGRESS_BATCH: u16 = 11;
const TAG_REMOVE_NODE: u16 = 32;
/// `CreateStream` with a non-empty `avoid` list.
const TAG_CREATE_STREAM_AVOIDING: u16 = 33;
const TAG_SET_CLUSTER_ID: u16 = 34;
/// `BumpEpoch` with its compare (`from`) and new sequencer; tag 6 is the older, unconditional
/// bump (`BumpEpochUnconditionally`).
const TAG_BUMP_EPOCH_TO: u16 = 40;

/// Bytes of one commit of a progress batch: subscription, shard and offset, a u64 each.
const PROGRESS_COMMIT_BYTES: usize = 24;

pub(crate) fn write(writer: &mut Writer, command: &Command) {
    match command {
        Command::RegisterNode { node } => {
            writer.u16(TAG_REGISTER_NODE);
            write_node(writer, node);
        }
        Command::RemoveNode { node } => {
            writer.u16(TAG_REMOVE_NODE);
            writer.u64(node.0);
        }
        Command::SetClusterId { id } => {
            writer.u16(TAG_SET_CLUSTER_ID);
            writer.u64(*id);
        }
        Command::CreateStream {
            config,
            now_ms,
            avoid,
        } => {
            writer.u16(if avoid.is_empty() {
                TAG_CREATE_STREAM
            } else {
                TAG_CREATE_STREAM_AVOIDING
            });
            write_stream_config(writer, config);
            writer.u64(*now_ms);
            if !avoid.is_empty() {
                writer.count(avoid.len());
                for node in avoid {
                    writer.u64(node.0);
                }
            }
        }
        Command::DeleteStream { name, force } => {
            writer.u16(if *force {
                TAG_DELETE_STREAM_FORCED
            } else {
                TAG_DELETE_STREAM
            });
            write_stream_name(writer, name);
        }
        Command::SplitShard { shard, now_ms } => {
            writer.u16(TAG_SPLIT_SHARD);
            writer.u64(shard.0);
            writer.u64(*now_ms);
        }
        Command::MergeShards {
            left,
            right,
            now_ms,
        } => {
            writer.u16(TAG_MERGE_SHARDS);
            writer.u64(left.0);
            writer.u64(right.0);
            writer.u64(*now_ms);
        }
        Command::BumpEpoch {
            shard,
            from,
            sequencer,
        } => {
            writer.u16(TAG_BUMP_EPOCH_TO);
            writer.u64(shard.0);
            writer.u64(from.0);
            write_placement(writer, sequencer);
        }
        Command::BumpEpochUnconditionally { shard } => {
            writer.u16(TAG_BUMP_EPOCH);
            writer.u64(shard.0);
        }
        Command::CreateSubscription { config, now_ms } => {
            writer.u16(TAG_CREATE_SUBSCRIPTION);
            write_subscription_config(writer, config);
            writer.u64(*now_ms);
        }
        Command::DeleteSubscription { name } => {
            writer.u16(TAG_DELETE_SUBSCRIPTION);
            write_subscription_name(writer, name);
        }
        Command::CommitProgress {
            subscription,
            shard,
            offset,
        } => {
            writer.u16(TAG_COMMIT_PROGRESS);
            writer.u64(subscription.0);
            writer.u64(shard.0);
            writer.u64(offset.0);
        }
        Command::CommitProgressBatch { commits } => {
            writer.u16(TAG_COMMIT_PROGRESS_BATCH);
            writer.count(commits.len());
            for commit in commits {
                writer.u64(commit.subscription.0);
                writer.u64(commit.shard.0);
                writer.u64(commit.offset.0);
            }
        }
    }
}

pub(crate) fn read(reader: &mut Reader<'_>) -> Result<Command, DecodeError> {
    let command = match reader.u16("command tag")? {
        TAG_REGISTER_NODE => Command::RegisterNode {
            node: read_node(reader)?,
        },
        TAG_REMOVE_NODE => Command::RemoveNode {
            node: NodeId(reader.u64("node")?),
        },
        TAG_SET_CLUSTER_ID => Command::SetClusterId {
            id: reader.u64("cluster id")?,
        },
        TAG_CREATE_STREAM => Command::CreateStream {
            config: read_stream_config(reader)?,
            now_ms: reader.u64("now_ms")?,
            avoid: Vec::new(),
        },
        TAG_CREATE_STREAM_AVOIDING => Command::CreateStream {
            config: read_stream_config(reader)?,
            now_ms: reader.u64("now_ms")?,
            avoid: read_avoided_nodes(reader)?,
        },
        TAG_DELETE_STREAM => Command::DeleteStream {
            name: read_stream_name(reader)?,
            force: false,
        },
        TAG_DELETE_STREAM_FORCED => Command::DeleteStream {
            name: read_stream_name(reader)?,
            force: true,
        },
        TAG_SPLIT_SHARD => Command::SplitShard {
            shard: ShardId(reader.u64("shard")?),
            now_ms: reader.u64("now_ms")?,
        },
        TAG_MERGE_SHARDS => Command::MergeShards {
            left: ShardId(reader.u64("left shard")?),
            right: ShardId(reader.u64("right shard")?),
            now_ms: reader.u64("now_ms")?,
        },
        TAG_BUMP_EPOCH => Command::BumpEpochUnconditionally {
            shard: ShardId(reader.u64("shard")?),
        },
        TAG_BUMP_EPOCH_TO => Command::BumpEpoch {
            shard: ShardId(reader.u64("shard")?),
            from: Epoch(reader.u64("from epoch")?),
            sequencer: read_placement(reader, "sequencer")?,
        },
        TAG_CREATE_SUBSCRIPTION => Command::CreateSubscription {
            config: read_subscription_config(reader)?,
            now_ms: reader.u64("now_ms")?,
        },
        TAG_DELETE_SUBSCRIPTION => Command::DeleteSubscription {
            name: read_subscription_name(reader)?,
        },
        TAG_COMMIT_PROGRESS => Command::CommitProgress {
            subscription: SubscriptionId(reader.u64("subscription")?),
            shard: ShardId(reader.u64("shard")?),
            offset: Offset(reader.u64("offset")?),
        },
        TAG_COMMIT_PROGRESS_BATCH => {
            let count = reader.count("progress commits", PROGRESS_COMMIT_BYTES)?;
            let mut commits = Vec::with_capacity(count);
            for _ in 0..count {
                commits.push(ProgressCommit {
                    subscription: SubscriptionId(reader.u64("subscription")?),
                    shard: ShardId(reader.u64("shard")?),
                    offset: Offset(reader.u64("offset")?),
                });
            }
            Command::CommitProgressBatch { commits }
        }
        tag => return Err(DecodeError::UnknownCommand { tag }),
    };
    Ok(command)
}

/// The `avoid` list of a `CreateStream` under tag 33: 1 to [`NODES_MAX`] node ids.
fn read_avoided_nodes(reader: &mut Reader<'_>) -> Result<Vec<NodeId>, DecodeError> {
    let count = reader.count("avoided nodes", 8)?;
    if count == 0 || count > NODES_MAX {
        return Err(DecodeError::InvalidValue {
            field: "avoided nodes",
            reason: format!("{count} nodes, allowed 1 to {NODES_MAX} under this tag"),
        });
    }
    let mut avoid = Vec::with_capacity(count);
    for _ in 0..count {
        avoid.push(NodeId(reader.u64("avoided node")?));
    }
    Ok(avoid)
}
