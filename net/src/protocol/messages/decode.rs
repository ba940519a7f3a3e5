//! Flatbuffers envelopes to typed messages. Every envelope is verified first (file identifier,
//! then the flatbuffers verifier: offsets, lengths, alignment, required fields, UTF-8); only
//! then are fields read, and each value the protocol constrains is checked on the way out.

use flatbuffers::{ForwardsUOffset, Vector, VerifierOptions};

use super::*;
use crate::protocol::frame::ENVELOPE_BYTES_MAX;
use crate::protocol::generated as wire;

/// The verifier's bounds. Flatbuffers lets many offsets point at one table, so a small
/// envelope could describe millions of tables (a list of a thousand references to a stream of
/// a thousand references to one shard) and make the decoder allocate gigabytes. Envelopes we
/// write never share tables (only vtables), so each table occupies at least 4 bytes of its
/// own, and everything the verifier visits fits in a few times the envelope's size; the
/// bounds below leave ample room for that and refuse anything larger. The schema nests 4
/// tables deep at most.
fn verifier_options() -> VerifierOptions {
    let envelope_bytes_max = ENVELOPE_BYTES_MAX as usize;
    VerifierOptions {
        max_depth: 16,
        max_tables: envelope_bytes_max / 4,
        max_apparent_size: envelope_bytes_max * 16,
        ignore_missing_null_terminator: false,
    }
}

impl Request {
    /// Verifies and decodes a request envelope.
    pub fn decode(envelope: &[u8]) -> Result<Request, ProtocolError> {
        check_identifier(envelope, REQUEST_IDENTIFIER)?;
        let root = flatbuffers::root_with_opts::<wire::Request<'_>>(&verifier_options(), envelope)
            .map_err(malformed)?;
        let body = root.body_type();
        let absent = || ProtocolError::invalid("Request.body", "absent for its type");
        Ok(match body {
            wire::RequestBody::Hello => {
                let hello = root.body_as_hello().ok_or_else(absent)?;
                Request::Hello(Hello {
                    version_min: hello.version_min(),
                    version_max: hello.version_max(),
                    client_name: hello.client_name().unwrap_or_default().to_owned(),
                })
            }
            wire::RequestBody::CreateStream => {
                let create = root.body_as_create_stream().ok_or_else(absent)?;
                Request::CreateStream(CreateStream {
                    name: stream_name("CreateStream.name", create.name())?,
                    shard_count: create.shard_count(),
                    replication_factor: create.replication_factor(),
                    retention_ms: create.retention_ms(),
                    durability: durability("CreateStream.durability", create.durability())?,
                })
            }
            wire::RequestBody::ListStreams => {
                let list = root.body_as_list_streams().ok_or_else(absent)?;
                let start_after = list
                    .start_after()
                    .map(|name| stream_name("ListStreams.start_after", name))
                    .transpose()?;
                Request::ListStreams(ListStreams {
                    start_after,
                    limit: list.limit(),
                })
            }
            wire::RequestBody::DescribeStream => {
                let describe = root.body_as_describe_stream().ok_or_else(absent)?;
                Request::DescribeStream(DescribeStream {
                    name: stream_name("DescribeStream.name", describe.name())?,
                })
            }
            wire::RequestBody::DeleteStream => {
                let delete = root.body_as_delete_stream().ok_or_else(absent)?;
                Request::DeleteStream(DeleteStream {
                    name: stream_name("DeleteStream.name", delete.name())?,
                    force: delete.force(),
                })
            }
            wire::RequestBody::ListShards => {
                let list = root.body_as_list_shards().ok_or_else(absent)?;
                Request::ListShards(ListShards {
                    stream: stream_name("ListShards.stream", list.stream())?,
                    start_after: list.start_after().map(ShardId),
                    limit: list.limit(),
                })
            }
            wire::RequestBody::Append => {
                let append = root.body_as_append().ok_or_else(absent)?;
                Request::Append(Append {
                    stream: stream_name("Append.stream", append.stream())?,
                    shard: ShardId(append.shard()),
                })
            }
            wire::RequestBody::Read => {
                let read = root.body_as_read().ok_or_else(absent)?;
                Request::Read(Read {
                    stream: stream_name("Read.stream", read.stream())?,
                    shard: ShardId(read.shard()),
                    from: read_from(read.from())?,
                    until: read.until_offset().map(Offset),
                    max_bytes: read.max_bytes(),
                    tail: read.tail(),
                })
            }
            wire::RequestBody::Trim => {
                let trim = root.body_as_trim().ok_or_else(absent)?;
                Request::Trim(Trim {
                    stream: stream_name("Trim.stream", trim.stream())?,
                    shard: ShardId(trim.shard()),
                    offset: Offset(trim.offset()),
                })
            }
            wire::RequestBody::GetNodeStatus => {
                root.body_as_get_node_status().ok_or_else(absent)?;
                Request::GetNodeStatus
            }
            unknown => {
                if let Some(decoded) = subscription::decode::request(&root) {
                    return decoded;
                }
                if let Some(decoded) = cluster::decode_request(&root) {
                    return decoded;
                }
                if let Some(decoded) = sql::decode_request(&root) {
                    return decoded;
                }
                return Err(ProtocolError::UnknownKind {
                    envelope: "Request",
                    kind: unknown.0,
                });
            }
        })
    }
}

impl Response {
    /// Verifies and decodes a response envelope.
    pub fn decode(envelope: &[u8]) -> Result<Response, ProtocolError> {
        check_identifier(envelope, RESPONSE_IDENTIFIER)?;
        let root = flatbuffers::root_with_opts::<wire::Response<'_>>(&verifier_options(), envelope)
            .map_err(malformed)?;
        let body = root.body_type();
        let absent = || ProtocolError::invalid("Response.body", "absent for its type");
        Ok(match body {
            wire::ResponseBody::Error => {
                let error = root.body_as_error().ok_or_else(absent)?;
                Response::Error(error_response(&error)?)
            }
            wire::ResponseBody::HelloOk => {
                let ok = root.body_as_hello_ok().ok_or_else(absent)?;
                Response::HelloOk(HelloOk {
                    version: ok.version(),
                    node_id: ok.node_id(),
                    core: ok.core(),
                    core_count: ok.core_count(),
                    base_port: ok.base_port(),
                    server_version: ok.server_version().to_owned(),
                    record_bytes_max: ok.record_bytes_max(),
                    batch_bytes_max: ok.batch_bytes_max(),
                    frame_payload_bytes_max: ok.frame_payload_bytes_max(),
                })
            }
            wire::ResponseBody::StreamInfo => {
                let info = root.body_as_stream_info().ok_or_else(absent)?;
                Response::StreamInfo(stream_info(&info)?)
            }
            wire::ResponseBody::StreamList => {
                let list = root.body_as_stream_list().ok_or_else(absent)?;
                let streams = list
                    .streams()
                    .into_iter()
                    .flatten()
                    .map(|info| stream_info(&info))
                    .collect::<Result<_, _>>()?;
                Response::StreamList(StreamList {
                    streams,
                    more: list.more(),
                })
            }
            wire::ResponseBody::DeleteStreamOk => {
                let ok = root.body_as_delete_stream_ok().ok_or_else(absent)?;
                Response::DeleteStreamOk(DeleteStreamOk {
                    name: stream_name("DeleteStreamOk.name", ok.name())?,
                })
            }
            wire::ResponseBody::ShardList => {
                let list = root.body_as_shard_list().ok_or_else(absent)?;
                Response::ShardList(ShardList {
                    stream: stream_name("ShardList.stream", list.stream())?,
                    shards: shard_infos(list.shards())?,
                    more: list.more(),
                })
            }
            wire::ResponseBody::AppendOk => {
                let ok = root.body_as_append_ok().ok_or_else(absent)?;
                if ok.last_offset() < ok.base_offset() {
                    return Err(ProtocolError::invalid(
                        "AppendOk.last_offset",
                        format!(
                            "{} before base offset {}",
                            ok.last_offset(),
                            ok.base_offset()
                        ),
                    ));
                }
                Response::AppendOk(AppendOk {
                    shard: ShardId(ok.shard()),
                    base_offset: Offset(ok.base_offset()),
                    last_offset: Offset(ok.last_offset()),
                })
            }
            wire::ResponseBody::ReadChunk => {
                let chunk = root.body_as_read_chunk().ok_or_else(absent)?;
                Response::ReadChunk(ReadChunk {
                    next_offset: Offset(chunk.next_offset()),
                    batch_count: chunk.batch_count(),
                })
            }
            wire::ResponseBody::ReadEnd => {
                let end = root.body_as_read_end().ok_or_else(absent)?;
                Response::ReadEnd(ReadEnd {
                    next_offset: Offset(end.next_offset()),
                    reason: read_end_reason(end.reason())?,
                })
            }
            wire::ResponseBody::TrimOk => {
                let ok = root.body_as_trim_ok().ok_or_else(absent)?;
                Response::TrimOk(TrimOk {
                    shard: ShardId(ok.shard()),
                    start_offset: Offset(ok.start_offset()),
                })
            }
            wire::ResponseBody::NodeStatus => {
                let status = root.body_as_node_status().ok_or_else(absent)?;
                let cores = status
                    .cores()
                    .into_iter()
                    .flatten()
                    .map(|core| CoreStatus {
                        core: core.core(),
                        port: core.port(),
                        shard_count: core.shard_count(),
                        allocations: allocation_counts(core.allocations(), core.allocated_bytes()),
                    })
                    .collect();
                Response::NodeStatus(NodeStatus {
                    node_id: status.node_id(),
                    server_version: status.server_version().to_owned(),
                    uptime_ms: status.uptime_ms(),
                    core_count: status.core_count(),
                    base_port: status.base_port(),
                    cores,
                    other_allocations: allocation_counts(
                        status.other_allocations(),
                        status.other_allocated_bytes(),
                    ),
                })
            }
            unknown => {
                if let Some(decoded) = subscription::decode::response(&root) {
                    return decoded;
                }
                if let Some(decoded) = cluster::decode_response(&root) {
                    return decoded;
                }
                if let Some(decoded) = sql::decode_response(&root) {
                    return decoded;
                }
                return Err(ProtocolError::UnknownKind {
                    envelope: "Response",
                    kind: unknown.0,
                });
            }
        })
    }
}

/// Checks bytes 4..8 before the verifier runs, so that a response where a request belongs
/// (or the reverse) is reported as such rather than as a malformed flatbuffer.
fn check_identifier(envelope: &[u8], expected: &'static str) -> Result<(), ProtocolError> {
    let found = envelope.get(4..8);
    if found == Some(expected.as_bytes()) {
        return Ok(());
    }
    let (wanted, other) = if expected == REQUEST_IDENTIFIER {
        ("a request", RESPONSE_IDENTIFIER)
    } else {
        ("a response", REQUEST_IDENTIFIER)
    };
    if found == Some(other.as_bytes()) {
        let found = if other == REQUEST_IDENTIFIER {
            "a request"
        } else {
            "a response"
        };
        return Err(ProtocolError::UnexpectedMessage {
            expected: wanted,
            found,
        });
    }
    Err(ProtocolError::MalformedEnvelope {
        reason: format!(
            "no {expected:?} file identifier in an envelope of {} bytes",
            envelope.len()
        ),
    })
}

fn malformed(error: flatbuffers::InvalidFlatbuffer) -> ProtocolError {
    ProtocolError::MalformedEnvelope {
        reason: error.to_string(),
    }
}

fn stream_name(field: &'static str, name: &str) -> Result<StreamName, ProtocolError> {
    StreamName::new(name).map_err(|error| ProtocolError::invalid(field, error.to_string()))
}

fn durability(field: &'static str, value: wire::Durability) -> Result<Durability, ProtocolError> {
    match value {
        wire::Durability::Fsync => Ok(Durability::Fsync),
        wire::Durability::Memory => Ok(Durability::Memory),
        other => Err(ProtocolError::invalid(
            field,
            format!("durability {} is not Fsync (1) or Memory (2)", other.0),
        )),
    }
}

fn read_from(from: wire::ReadFrom<'_>) -> Result<ReadFrom, ProtocolError> {
    match from.kind() {
        wire::ReadFromKind::Earliest => Ok(ReadFrom::Earliest),
        wire::ReadFromKind::Latest => Ok(ReadFrom::Latest),
        wire::ReadFromKind::Offset => Ok(ReadFrom::Offset(Offset(from.offset()))),
        wire::ReadFromKind::Timestamp => Ok(ReadFrom::Timestamp(from.timestamp_ms())),
        other => Err(ProtocolError::invalid(
            "ReadFrom.kind",
            format!("unknown read start kind {}", other.0),
        )),
    }
}

fn read_end_reason(reason: wire::ReadEndReason) -> Result<ReadEndReason, ProtocolError> {
    match reason {
        wire::ReadEndReason::CaughtUp => Ok(ReadEndReason::CaughtUp),
        wire::ReadEndReason::UntilReached => Ok(ReadEndReason::UntilReached),
        wire::ReadEndReason::MaxBytesReached => Ok(ReadEndReason::MaxBytesReached),
        wire::ReadEndReason::ShardSealed => Ok(ReadEndReason::ShardSealed),
        other => Err(ProtocolError::invalid(
            "ReadEnd.reason",
            format!("unknown read end reason {}", other.0),
        )),
    }
}

fn error_response(error: &wire::Error<'_>) -> Result<ErrorResponse, ProtocolError> {
    let code = ErrorCode::from_number(error.code().0);
    if code == ErrorCode::Other(0) {
        return Err(ProtocolError::invalid("Error.code", "0 (unspecified)"));
    }
    let owner = match (error.owner_node(), error.owner_core()) {
        (Some(node), Some(core)) => Some(ShardOwner { node, core }),
        (None, None) => None,
        _ => {
            return Err(ProtocolError::invalid(
                "Error.owner_node",
                "owner_node and owner_core come together",
            ))
        }
    };
    Ok(ErrorResponse {
        code,
        message: error.message().to_owned(),
        owner,
        retry_after_ms: error.retry_after_ms(),
        start_offset: error.start_offset().map(Offset),
        next_offset: error.next_offset().map(Offset),
        sql_position: error.sql_line().zip(error.sql_column()),
    })
}

fn stream_info(info: &wire::StreamInfo<'_>) -> Result<StreamInfo, ProtocolError> {
    Ok(StreamInfo {
        name: stream_name("StreamInfo.name", info.name())?,
        shard_count: info.shard_count(),
        replication_factor: info.replication_factor(),
        retention_ms: info.retention_ms(),
        durability: durability("StreamInfo.durability", info.durability())?,
        shards: shard_infos(info.shards())?,
        shards_truncated: info.shards_truncated(),
    })
}

fn shard_infos(
    shards: Option<Vector<'_, ForwardsUOffset<wire::ShardInfo<'_>>>>,
) -> Result<Vec<ShardInfo>, ProtocolError> {
    shards
        .into_iter()
        .flatten()
        .map(|shard| shard_info(&shard))
        .collect()
}

fn shard_info(shard: &wire::ShardInfo<'_>) -> Result<ShardInfo, ProtocolError> {
    let start = hash128(shard.key_start());
    let end = hash128(shard.key_end());
    let key_range = KeyRange::new(start, end).ok_or_else(|| {
        ProtocolError::invalid(
            "ShardInfo.key_end",
            format!("key range end {end:#x} before its start {start:#x}"),
        )
    })?;
    let status = match shard.status() {
        wire::ShardStatus::Open => ShardStatus::Open,
        wire::ShardStatus::Sealed => ShardStatus::Sealed,
        other => {
            return Err(ProtocolError::invalid(
                "ShardInfo.status",
                format!("shard status {} is not Open (1) or Sealed (2)", other.0),
            ))
        }
    };
    Ok(ShardInfo {
        id: ShardId(shard.id()),
        key_range,
        status,
        node: shard.node(),
        core: shard.core(),
        epoch: Epoch(shard.epoch()),
        start_offset: shard.start_offset().map(Offset),
        next_offset: shard.next_offset().map(Offset),
        parents: shard_ids(shard.parents()),
        children: shard_ids(shard.children()),
        replicas: replicas(shard),
    })
}

/// A shard's replicas; a server older than replica sets sends none: the sequencer alone.
fn replicas(shard: &wire::ShardInfo<'_>) -> Vec<ReplicaPlacement> {
    match shard.replicas() {
        Some(replicas) if !replicas.is_empty() => replicas
            .iter()
            .map(|replica| ReplicaPlacement {
                node: replica.node(),
                core: replica.core(),
            })
            .collect(),
        _ => vec![ReplicaPlacement {
            node: shard.node(),
            core: shard.core(),
        }],
    }
}

fn shard_ids(ids: Option<Vector<'_, u64>>) -> Vec<ShardId> {
    ids.into_iter().flatten().map(ShardId).collect()
}

/// Allocation counts, present when the server sent both fields (it sends both or neither).
fn allocation_counts(allocations: Option<u64>, bytes: Option<u64>) -> Option<AllocationCounts> {
    let (allocations, bytes) = allocations.zip(bytes)?;
    Some(AllocationCounts { allocations, bytes })
}

fn hash128(hash: &wire::Hash128) -> u128 {
    (u128::from(hash.high()) << 64) | u128::from(hash.low())
}

#[cfg(test)]
mod tests {
    use flatbuffers::FlatBufferBuilder;

    use super::*;

    /// A StreamList of `streams` references to one stream whose shard list holds `shards`
    /// references to one shard: tiny on the wire, `streams * shards` shards once decoded.
    fn shared_tables_envelope(streams: usize, shards: usize) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::new();
        let key = wire::Hash128::new(0, 0);
        let shard = wire::ShardInfo::create(
            &mut fbb,
            &wire::ShardInfoArgs {
                key_start: Some(&key),
                key_end: Some(&key),
                status: wire::ShardStatus::Open,
                ..Default::default()
            },
        );
        let shard_refs = fbb.create_vector(&vec![shard; shards]);
        let name = fbb.create_string("s");
        let stream = wire::StreamInfo::create(
            &mut fbb,
            &wire::StreamInfoArgs {
                name: Some(name),
                durability: wire::Durability::Fsync,
                shards: Some(shard_refs),
                ..Default::default()
            },
        );
        let stream_refs = fbb.create_vector(&vec![stream; streams]);
        let list = wire::StreamList::create(
            &mut fbb,
            &wire::StreamListArgs {
                streams: Some(stream_refs),
                more: false,
            },
        );
        let root = wire::Response::create(
            &mut fbb,
            &wire::ResponseArgs {
                body_type: wire::ResponseBody::StreamList,
                body: Some(list.as_union_value()),
            },
        );
        fbb.finish(root, Some(RESPONSE_IDENTIFIER));
        fbb.finished_data().to_vec()
    }

    /// Regression guard for memory amplification: 300 x 1,000 shared references fit in 6 KiB
    /// but would decode into 300,000 shards (tens of MB), which the verifier's default bounds
    /// (a million tables, 2 GiB) let through; ours refuse them.
    #[test]
    fn shared_tables_cannot_amplify_an_envelope() {
        let envelope = shared_tables_envelope(300, 1_000);
        assert!(
            flatbuffers::root::<wire::Response<'_>>(&envelope).is_ok(),
            "the default bounds accept it"
        );
        assert!(envelope.len() < ENVELOPE_BYTES_MAX as usize);
        let decoded = Response::decode(&envelope);
        assert!(
            matches!(decoded, Err(ProtocolError::MalformedEnvelope { .. })),
            "{:?}",
            decoded.map(|response| response.kind())
        );
        // A little sharing within the bounds still decodes (the bounds are not too tight).
        let envelope = shared_tables_envelope(10, 10);
        match Response::decode(&envelope) {
            Ok(Response::StreamList(list)) => {
                assert_eq!(list.streams.len(), 10);
                assert!(list.streams.iter().all(|stream| stream.shards.len() == 10));
            }
            other => panic!("expected a stream list, got {other:?}"),
        }
    }

    /// A request kind from a newer protocol (here 64, in the range reserved for SQL) passes
    /// the verifier and is reported as unknown, so the server can
    /// answer `InvalidRequest` instead of dropping the connection.
    #[test]
    fn unknown_request_kinds_are_typed_errors() {
        let mut fbb = FlatBufferBuilder::new();
        let body = wire::GetNodeStatus::create(&mut fbb, &wire::GetNodeStatusArgs {});
        let root = wire::Request::create(
            &mut fbb,
            &wire::RequestArgs {
                body_type: wire::RequestBody(64),
                body: Some(body.as_union_value()),
            },
        );
        fbb.finish(root, Some(REQUEST_IDENTIFIER));
        assert_eq!(
            Request::decode(fbb.finished_data()),
            Err(ProtocolError::UnknownKind {
                envelope: "Request",
                kind: 64
            })
        );
    }

    /// The largest honest envelopes pass the bounds: a shard list filling the envelope limit.
    #[test]
    fn full_envelopes_of_distinct_tables_decode() {
        let shard = |id: u64| ShardInfo {
            id: ShardId(id),
            key_range: KeyRange::FULL,
            status: ShardStatus::Open,
            node: id,
            core: 1,
            epoch: Epoch(id),
            start_offset: Some(Offset(id)),
            next_offset: Some(Offset(id + 1)),
            parents: vec![ShardId(id)],
            children: vec![],
            // The sequencer alone, which is sent as no list at all (as by older servers).
            replicas: vec![ReplicaPlacement { node: id, core: 1 }],
        };
        let mut shards = Vec::new();
        let mut envelope = Vec::new();
        while envelope.len() < ENVELOPE_BYTES_MAX as usize - 200 {
            shards.push(shard(shards.len() as u64));
            let list = Response::ShardList(ShardList {
                stream: StreamName::new("s").expect("name"),
                shards: shards.clone(),
                more: true,
            });
            envelope = list.encode();
        }
        assert!(shards.len() > 500, "{} shards", shards.len());
        match Response::decode(&envelope) {
            Ok(Response::ShardList(list)) => assert_eq!(list.shards, shards),
            other => panic!("expected a shard list, got {other:?}"),
        }
    }
}
