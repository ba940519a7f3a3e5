//! Typed messages to flatbuffers envelopes. Each function writes one schema table from the
//! Rust value of the same name; children (strings, vectors, nested tables) are written before
//! their parent, as flatbuffers requires.

use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};

use super::subscription::encode as subs;
use super::*;
use crate::protocol::generated as wire;

/// Initial builder size: most envelopes fit, larger ones grow the builder.
const BUILDER_CAPACITY_BYTES: usize = 256;

impl Request {
    /// The request's envelope: a finished flatbuffer with the [`REQUEST_IDENTIFIER`].
    ///
    /// Does not check the envelope limit; [`encode_frame`](crate::protocol::encode_frame)
    /// does, when the envelope is framed.
    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::with_capacity(BUILDER_CAPACITY_BYTES);
        let (body_type, body) = request_body(&mut fbb, self);
        let root = wire::Request::create(
            &mut fbb,
            &wire::RequestArgs {
                body_type,
                body: Some(body),
            },
        );
        fbb.finish(root, Some(REQUEST_IDENTIFIER));
        fbb.finished_data().to_vec()
    }
}

impl Response {
    /// The response's envelope: a finished flatbuffer with the [`RESPONSE_IDENTIFIER`].
    ///
    /// Does not check the envelope limit; [`encode_frame`](crate::protocol::encode_frame)
    /// does, when the envelope is framed. Lists must be paged to fit it.
    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::with_capacity(BUILDER_CAPACITY_BYTES);
        self.encode_with(&mut fbb).to_vec()
    }

    /// [`Self::encode`] with a builder that is reset and reused (it keeps its capacity, so a
    /// server answering request after request allocates nothing for its envelopes).
    pub fn encode_with<'b>(&self, fbb: &'b mut FlatBufferBuilder<'static>) -> &'b [u8] {
        fbb.reset();
        let (body_type, body) = response_body(fbb, self);
        let root = wire::Response::create(
            fbb,
            &wire::ResponseArgs {
                body_type,
                body: Some(body),
            },
        );
        fbb.finish(root, Some(RESPONSE_IDENTIFIER));
        fbb.finished_data()
    }
}

fn request_body<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    request: &Request,
) -> (wire::RequestBody, WIPOffset<UnionWIPOffset>) {
    match request {
        Request::Hello(hello) => {
            let client_name = Some(fbb.create_string(&hello.client_name));
            let args = wire::HelloArgs {
                version_min: hello.version_min,
                version_max: hello.version_max,
                client_name,
            };
            let table = wire::Hello::create(fbb, &args);
            (wire::RequestBody::Hello, table.as_union_value())
        }
        Request::CreateStream(create) => {
            let name = Some(fbb.create_string(create.name.as_str()));
            let args = wire::CreateStreamArgs {
                name,
                shard_count: create.shard_count,
                replication_factor: create.replication_factor,
                retention_ms: create.retention_ms,
                durability: durability(create.durability),
            };
            let table = wire::CreateStream::create(fbb, &args);
            (wire::RequestBody::CreateStream, table.as_union_value())
        }
        Request::ListStreams(list) => {
            let start_after = list
                .start_after
                .as_ref()
                .map(|name| fbb.create_string(name.as_str()));
            let args = wire::ListStreamsArgs {
                start_after,
                limit: list.limit,
            };
            let table = wire::ListStreams::create(fbb, &args);
            (wire::RequestBody::ListStreams, table.as_union_value())
        }
        Request::DescribeStream(describe) => {
            let name = Some(fbb.create_string(describe.name.as_str()));
            let table = wire::DescribeStream::create(fbb, &wire::DescribeStreamArgs { name });
            (wire::RequestBody::DescribeStream, table.as_union_value())
        }
        Request::DeleteStream(delete) => {
            let name = Some(fbb.create_string(delete.name.as_str()));
            let args = wire::DeleteStreamArgs {
                name,
                force: delete.force,
            };
            let table = wire::DeleteStream::create(fbb, &args);
            (wire::RequestBody::DeleteStream, table.as_union_value())
        }
        Request::ListShards(list) => {
            let stream = Some(fbb.create_string(list.stream.as_str()));
            let args = wire::ListShardsArgs {
                stream,
                start_after: list.start_after.map(|shard| shard.0),
                limit: list.limit,
            };
            let table = wire::ListShards::create(fbb, &args);
            (wire::RequestBody::ListShards, table.as_union_value())
        }
        Request::Append(append) => {
            let stream = Some(fbb.create_string(append.stream.as_str()));
            let args = wire::AppendArgs {
                stream,
                shard: append.shard.0,
            };
            let table = wire::Append::create(fbb, &args);
            (wire::RequestBody::Append, table.as_union_value())
        }
        Request::Read(read) => {
            let stream = Some(fbb.create_string(read.stream.as_str()));
            let from = Some(read_from(fbb, read.from));
            let args = wire::ReadArgs {
                stream,
                shard: read.shard.0,
                from,
                until_offset: read.until.map(|offset| offset.0),
                max_bytes: read.max_bytes,
                tail: read.tail,
            };
            let table = wire::Read::create(fbb, &args);
            (wire::RequestBody::Read, table.as_union_value())
        }
        Request::Trim(trim) => {
            let stream = Some(fbb.create_string(trim.stream.as_str()));
            let args = wire::TrimArgs {
                stream,
                shard: trim.shard.0,
                offset: trim.offset.0,
            };
            let table = wire::Trim::create(fbb, &args);
            (wire::RequestBody::Trim, table.as_union_value())
        }
        Request::GetNodeStatus => {
            let table = wire::GetNodeStatus::create(fbb, &wire::GetNodeStatusArgs {});
            (wire::RequestBody::GetNodeStatus, table.as_union_value())
        }
        Request::CreateSubscription(create) => (
            wire::RequestBody::CreateSubscription,
            subs::create_subscription(fbb, create),
        ),
        Request::ListSubscriptions(list) => (
            wire::RequestBody::ListSubscriptions,
            subs::list_subscriptions(fbb, list),
        ),
        Request::DescribeSubscription(describe) => (
            wire::RequestBody::DescribeSubscription,
            subs::describe_subscription(fbb, describe),
        ),
        Request::DeleteSubscription(delete) => (
            wire::RequestBody::DeleteSubscription,
            subs::delete_subscription(fbb, delete),
        ),
        Request::JoinSubscription(join) => (
            wire::RequestBody::JoinSubscription,
            subs::join_subscription(fbb, join),
        ),
        Request::Heartbeat => (wire::RequestBody::Heartbeat, subs::heartbeat(fbb)),
        Request::LeaveSubscription => (
            wire::RequestBody::LeaveSubscription,
            subs::leave_subscription(fbb),
        ),
        Request::Consume(consume) => (wire::RequestBody::Consume, subs::consume(fbb, consume)),
        Request::Ack(ack) => (wire::RequestBody::Ack, subs::ack(fbb, ack)),
        Request::ListNodes => (wire::RequestBody::ListNodes, cluster::list_nodes(fbb)),
        Request::InitCluster => (wire::RequestBody::InitCluster, cluster::init_cluster(fbb)),
        Request::RemoveNode(node) => (
            wire::RequestBody::RemoveNode,
            cluster::remove_node(fbb, *node),
        ),
        Request::ExecuteSql(execute) => (
            wire::RequestBody::ExecuteSql,
            sql::execute_sql(fbb, execute),
        ),
    }
}

fn response_body<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    response: &Response,
) -> (wire::ResponseBody, WIPOffset<UnionWIPOffset>) {
    match response {
        Response::Error(error) => {
            let message = Some(fbb.create_string(&error.message));
            let args = wire::ErrorArgs {
                code: wire::ErrorCode(error.code.number()),
                message,
                owner_node: error.owner.map(|owner| owner.node),
                owner_core: error.owner.map(|owner| owner.core),
                retry_after_ms: error.retry_after_ms,
                start_offset: error.start_offset.map(|offset| offset.0),
                next_offset: error.next_offset.map(|offset| offset.0),
                sql_line: error.sql_position.map(|(line, _)| line),
                sql_column: error.sql_position.map(|(_, column)| column),
            };
            let table = wire::Error::create(fbb, &args);
            (wire::ResponseBody::Error, table.as_union_value())
        }
        Response::HelloOk(ok) => {
            let server_version = Some(fbb.create_string(&ok.server_version));
            let args = wire::HelloOkArgs {
                version: ok.version,
                node_id: ok.node_id,
                core: ok.core,
                core_count: ok.core_count,
                base_port: ok.base_port,
                server_version,
                record_bytes_max: ok.record_bytes_max,
                batch_bytes_max: ok.batch_bytes_max,
                frame_payload_bytes_max: ok.frame_payload_bytes_max,
            };
            let table = wire::HelloOk::create(fbb, &args);
            (wire::ResponseBody::HelloOk, table.as_union_value())
        }
        Response::StreamInfo(info) => {
            let table = stream_info(fbb, info);
            (wire::ResponseBody::StreamInfo, table.as_union_value())
        }
        Response::StreamList(list) => {
            let streams: Vec<_> = list
                .streams
                .iter()
                .map(|info| stream_info(fbb, info))
                .collect();
            let streams = Some(fbb.create_vector(&streams));
            let args = wire::StreamListArgs {
                streams,
                more: list.more,
            };
            let table = wire::StreamList::create(fbb, &args);
            (wire::ResponseBody::StreamList, table.as_union_value())
        }
        Response::DeleteStreamOk(ok) => {
            let name = Some(fbb.create_string(ok.name.as_str()));
            let table = wire::DeleteStreamOk::create(fbb, &wire::DeleteStreamOkArgs { name });
            (wire::ResponseBody::DeleteStreamOk, table.as_union_value())
        }
        Response::ShardList(list) => {
            let stream = Some(fbb.create_string(list.stream.as_str()));
            let shards = Some(shard_infos(fbb, &list.shards));
            let args = wire::ShardListArgs {
                stream,
                shards,
                more: list.more,
            };
            let table = wire::ShardList::create(fbb, &args);
            (wire::ResponseBody::ShardList, table.as_union_value())
        }
        Response::AppendOk(ok) => {
            let args = wire::AppendOkArgs {
                shard: ok.shard.0,
                base_offset: ok.base_offset.0,
                last_offset: ok.last_offset.0,
            };
            let table = wire::AppendOk::create(fbb, &args);
            (wire::ResponseBody::AppendOk, table.as_union_value())
        }
        Response::ReadChunk(chunk) => {
            let args = wire::ReadChunkArgs {
                next_offset: chunk.next_offset.0,
                batch_count: chunk.batch_count,
            };
            let table = wire::ReadChunk::create(fbb, &args);
            (wire::ResponseBody::ReadChunk, table.as_union_value())
        }
        Response::ReadEnd(end) => {
            let args = wire::ReadEndArgs {
                next_offset: end.next_offset.0,
                reason: read_end_reason(end.reason),
            };
            let table = wire::ReadEnd::create(fbb, &args);
            (wire::ResponseBody::ReadEnd, table.as_union_value())
        }
        Response::TrimOk(ok) => {
            let args = wire::TrimOkArgs {
                shard: ok.shard.0,
                start_offset: ok.start_offset.0,
            };
            let table = wire::TrimOk::create(fbb, &args);
            (wire::ResponseBody::TrimOk, table.as_union_value())
        }
        Response::NodeStatus(status) => {
            let server_version = Some(fbb.create_string(&status.server_version));
            let cores: Vec<_> = status
                .cores
                .iter()
                .map(|core| {
                    let args = wire::CoreStatusArgs {
                        core: core.core,
                        port: core.port,
                        shard_count: core.shard_count,
                        allocations: core.allocations.map(|counts| counts.allocations),
                        allocated_bytes: core.allocations.map(|counts| counts.bytes),
                    };
                    wire::CoreStatus::create(fbb, &args)
                })
                .collect();
            let cores = Some(fbb.create_vector(&cores));
            let args = wire::NodeStatusArgs {
                node_id: status.node_id,
                server_version,
                uptime_ms: status.uptime_ms,
                core_count: status.core_count,
                base_port: status.base_port,
                cores,
                other_allocations: status.other_allocations.map(|counts| counts.allocations),
                other_allocated_bytes: status.other_allocations.map(|counts| counts.bytes),
            };
            let table = wire::NodeStatus::create(fbb, &args);
            (wire::ResponseBody::NodeStatus, table.as_union_value())
        }
        Response::SubscriptionInfo(info) => (
            wire::ResponseBody::SubscriptionInfo,
            subs::subscription_info_body(fbb, info),
        ),
        Response::SubscriptionList(list) => (
            wire::ResponseBody::SubscriptionList,
            subs::subscription_list(fbb, list),
        ),
        Response::DeleteSubscriptionOk(ok) => (
            wire::ResponseBody::DeleteSubscriptionOk,
            subs::delete_subscription_ok(fbb, ok),
        ),
        Response::JoinOk(ok) => (wire::ResponseBody::JoinOk, subs::join_ok(fbb, ok)),
        Response::Assignment(assignment) => (
            wire::ResponseBody::Assignment,
            subs::assignment(fbb, assignment),
        ),
        Response::Delivery(delivery) => {
            (wire::ResponseBody::Delivery, subs::delivery(fbb, delivery))
        }
        Response::AckResult(result) => {
            (wire::ResponseBody::AckResult, subs::ack_result(fbb, result))
        }
        Response::ConsumeEnd(end) => (wire::ResponseBody::ConsumeEnd, subs::consume_end(fbb, end)),
        Response::LeaveOk => (wire::ResponseBody::LeaveOk, subs::leave_ok(fbb)),
        Response::NodeList(list) => (wire::ResponseBody::NodeList, cluster::node_list(fbb, list)),
        Response::RemoveNodeOk(node) => (
            wire::ResponseBody::RemoveNodeOk,
            cluster::remove_node_ok(fbb, *node),
        ),
        Response::InitClusterOk => (
            wire::ResponseBody::InitClusterOk,
            cluster::init_cluster_ok(fbb),
        ),
        Response::SqlResult(result) => {
            (wire::ResponseBody::SqlResult, sql::sql_result(fbb, result))
        }
        Response::SqlChanges(changes) => (
            wire::ResponseBody::SqlChanges,
            sql::sql_changes(fbb, changes),
        ),
    }
}

fn stream_info<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    info: &StreamInfo,
) -> WIPOffset<wire::StreamInfo<'a>> {
    let name = Some(fbb.create_string(info.name.as_str()));
    let shards = Some(shard_infos(fbb, &info.shards));
    let args = wire::StreamInfoArgs {
        name,
        shard_count: info.shard_count,
        replication_factor: info.replication_factor,
        retention_ms: info.retention_ms,
        durability: durability(info.durability),
        shards,
        shards_truncated: info.shards_truncated,
    };
    wire::StreamInfo::create(fbb, &args)
}

fn shard_infos<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    shards: &[ShardInfo],
) -> WIPOffset<flatbuffers::Vector<'a, flatbuffers::ForwardsUOffset<wire::ShardInfo<'a>>>> {
    let tables: Vec<_> = shards.iter().map(|shard| shard_info(fbb, shard)).collect();
    fbb.create_vector(&tables)
}

fn shard_info<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    shard: &ShardInfo,
) -> WIPOffset<wire::ShardInfo<'a>> {
    let parents: Vec<u64> = shard.parents.iter().map(|id| id.0).collect();
    let parents = Some(fbb.create_vector(&parents));
    let children: Vec<u64> = shard.children.iter().map(|id| id.0).collect();
    let children = Some(fbb.create_vector(&children));
    // A shard whose only replica is its sequencer (R = 1) sends no list: the decoder reads an
    // absent list so, as it must for servers older than replica sets.
    let replicas = (shard.replicas != [shard.sequencer()]).then(|| {
        let replicas: Vec<wire::ReplicaPlacement> = shard
            .replicas
            .iter()
            .map(|replica| wire::ReplicaPlacement::new(replica.node, replica.core))
            .collect();
        fbb.create_vector(&replicas)
    });
    let key_start = hash128(shard.key_range.start());
    let key_end = hash128(shard.key_range.end());
    let args = wire::ShardInfoArgs {
        id: shard.id.0,
        key_start: Some(&key_start),
        key_end: Some(&key_end),
        status: match shard.status {
            ShardStatus::Open => wire::ShardStatus::Open,
            ShardStatus::Sealed => wire::ShardStatus::Sealed,
        },
        node: shard.node,
        core: shard.core,
        epoch: shard.epoch.0,
        start_offset: shard.start_offset.map(|offset| offset.0),
        next_offset: shard.next_offset.map(|offset| offset.0),
        parents,
        children,
        replicas,
    };
    wire::ShardInfo::create(fbb, &args)
}

fn read_from<'a>(fbb: &mut FlatBufferBuilder<'a>, from: ReadFrom) -> WIPOffset<wire::ReadFrom<'a>> {
    let (kind, offset, timestamp_ms) = match from {
        ReadFrom::Earliest => (wire::ReadFromKind::Earliest, 0, 0),
        ReadFrom::Latest => (wire::ReadFromKind::Latest, 0, 0),
        ReadFrom::Offset(offset) => (wire::ReadFromKind::Offset, offset.0, 0),
        ReadFrom::Timestamp(timestamp_ms) => (wire::ReadFromKind::Timestamp, 0, timestamp_ms),
    };
    let args = wire::ReadFromArgs {
        kind,
        offset,
        timestamp_ms,
    };
    wire::ReadFrom::create(fbb, &args)
}

/// A 128-bit hash as the schema's two little-endian halves.
fn hash128(value: u128) -> wire::Hash128 {
    wire::Hash128::new(value as u64, (value >> 64) as u64)
}

fn durability(durability: Durability) -> wire::Durability {
    match durability {
        Durability::Fsync => wire::Durability::Fsync,
        Durability::Memory => wire::Durability::Memory,
    }
}

fn read_end_reason(reason: ReadEndReason) -> wire::ReadEndReason {
    match reason {
        ReadEndReason::CaughtUp => wire::ReadEndReason::CaughtUp,
        ReadEndReason::UntilReached => wire::ReadEndReason::UntilReached,
        ReadEndReason::MaxBytesReached => wire::ReadEndReason::MaxBytesReached,
        ReadEndReason::ShardSealed => wire::ReadEndReason::ShardSealed,
    }
}
