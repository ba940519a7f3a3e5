//! The body of an encoded command: a u16 tag naming the command, then its fields in order.
//!
//! Tags are never reused or renumbered. A new command takes a new tag; a command whose fields
//! change takes a new tag too (the old one stays decodable), so old logs replay forever.

use runnel_core::ShardId;

use super::items::{
    read_node, read_stream_config, read_stream_name, write_node, write_stream_config,
    write_stream_name,
};
use super::wire::{Reader, Writer};
use super::DecodeError;
use crate::metadata::command::Command;

const TAG_REGISTER_NODE: u16 = 1;
const TAG_CREATE_STREAM: u16 = 2;
const TAG_DELETE_STREAM: u16 = 3;
const TAG_SPLIT_SHARD: u16 = 4;
const TAG_MERGE_SHARDS: u16 = 5;
const TAG_BUMP_EPOCH: u16 = 6;

pub(crate) fn write(writer: &mut Writer, command: &Command) {
    match command {
        Command::RegisterNode { node } => {
            writer.u16(TAG_REGISTER_NODE);
            write_node(writer, node);
        }
        Command::CreateStream { config, now_ms } => {
            writer.u16(TAG_CREATE_STREAM);
            write_stream_config(writer, config);
            writer.u64(*now_ms);
        }
        Command::DeleteStream { name } => {
            writer.u16(TAG_DELETE_STREAM);
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
        Command::BumpEpoch { shard } => {
            writer.u16(TAG_BUMP_EPOCH);
            writer.u64(shard.0);
        }
    }
}

pub(crate) fn read(reader: &mut Reader<'_>) -> Result<Command, DecodeError> {
    let command = match reader.u16("command tag")? {
        TAG_REGISTER_NODE => Command::RegisterNode {
            node: read_node(reader)?,
        },
        TAG_CREATE_STREAM => Command::CreateStream {
            config: read_stream_config(reader)?,
            now_ms: reader.u64("now_ms")?,
        },
        TAG_DELETE_STREAM => Command::DeleteStream {
            name: read_stream_name(reader)?,
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
        TAG_BUMP_EPOCH => Command::BumpEpoch {
            shard: ShardId(reader.u64("shard")?),
        },
        tag => return Err(DecodeError::UnknownCommand { tag }),
    };
    Ok(command)
}
