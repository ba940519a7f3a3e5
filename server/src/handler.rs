//! A core's QUIC endpoint: connections, the handshake, and one request per bidirectional
//! stream (`docs/format/protocol.md`).

use std::cell::RefCell;
use std::rc::Rc;

use bytes::Bytes;
use runnel_core::BatchError;
use runnel_net::protocol::{
    negotiate, AppendOk, CloseCode, DeleteStreamOk, ErrorCode, ErrorResponse, FrameLimits,
    FrameReader, HelloOk, NodeStatus, ReadEnd, ReadEndReason, ReadFrom, Request, Response,
    ShardList, ShardOwner, StreamList, TrimOk, PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN,
};
use runnel_net::protocol::{
    write_response, AllocationCounts, CoreStatus, ReadChunk as WireChunk, ResponseWriter,
};
use runnel_replicate::metadata::{Command, StreamConfig};
use runnel_replicate::producers::SequenceError;
use runnel_segment::log::ReadBound;
use runnel_segment::LogError;

use crate::append::{AppendError, AppendRequest};
use crate::convert::{
    durability_from_wire, fill_offsets, shard_info, stream_info, SHARDS_PER_ENVELOPE_MAX,
};
use crate::core::{now_ms, Core};
use crate::local::{visible_end, OpenError};
use crate::ownership::{OwnedShard, ShardError};
use crate::subscription;
use runnel_segment::runtime::{first_of, spawn, First};

/// Most streams in one `StreamList` answer.
const STREAMS_PER_PAGE_MAX: usize = 100;
/// Most bytes of batches in one `ReadChunk` frame.
const READ_CHUNK_BYTES_MAX: u64 = 1 << 20;
/// Most idle request buffers a connection keeps for its next requests (each holds a frame
/// reader and a response writer, grown to the largest envelope seen).
const IDLE_REQUEST_BUFFERS_MAX: usize = 64;

/// The buffers one request stream reads and answers with, handed from request to request of
/// a connection so that a request allocates none of them.
struct RequestBuffers {
    reader: FrameReader,
    writer: ResponseWriter,
}

/// A connection's idle [`RequestBuffers`].
type BufferPool = Rc<RefCell<Vec<RequestBuffers>>>;

type Answer = Result<Response, ErrorResponse>;

/// Accepts connections until the endpoint closes.
pub async fn serve(core: Rc<Core>, endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        let core = Rc::clone(&core);
        spawn(async move {
            if let Err(reason) = connection(core, incoming).await {
                tracing::debug!(%reason, "connection ended");
            }
        })
        .detach();
    }
}

async fn connection(core: Rc<Core>, incoming: quinn::Incoming) -> Result<(), String> {
    let connection = incoming.await.map_err(|e| e.to_string())?;
    if crate::peer::is_peer_connection(&connection) {
        let peers = core.peers.borrow().clone();
        match peers {
            Some(peers) => peers.accept(connection),
            None => connection.close(
                crate::peer::PeerCloseCode::NotAccepting.varint(),
                b"this core accepts no peer connections",
            ),
        }
        return Ok(());
    }
    let limits = FrameLimits::for_batches(&core.config.limits());
    let (mut send, mut recv) = connection.accept_bi().await.map_err(|e| e.to_string())?;
    let mut reader = FrameReader::new(limits);
    let hello = match reader.read_request(&mut recv).await {
        Ok(Some((Request::Hello(hello), _))) => hello,
        Ok(_) => {
            connection.close(
                CloseCode::ProtocolViolation.varint(),
                b"the first stream must carry Hello",
            );
            return Err("no Hello on the first stream".into());
        }
        Err(error) => {
            connection.close(
                CloseCode::ProtocolViolation.varint(),
                error.to_string().as_bytes(),
            );
            return Err(error.to_string());
        }
    };
    match negotiate(&hello, PROTOCOL_VERSION_MIN, PROTOCOL_VERSION_MAX) {
        Ok(version) => {
            let ok = Response::HelloOk(HelloOk {
                version,
                node_id: core.config.node_id,
                core: core.index,
                core_count: core.config.cores as u32,
                base_port: core.config.base_port,
                server_version: env!("CARGO_PKG_VERSION").to_string(),
                record_bytes_max: u32::try_from(core.config.limits.record_bytes_max)
                    .unwrap_or(u32::MAX),
                batch_bytes_max: u32::try_from(core.config.limits.batch_bytes_max)
                    .unwrap_or(u32::MAX),
                frame_payload_bytes_max: limits.payload_bytes_max,
            });
            write_response(&mut send, &ok, &[], &limits)
                .await
                .map_err(|e| e.to_string())?;
            let _ = send.finish();
        }
        Err(error) => {
            let _ = write_response(&mut send, &Response::Error(error.clone()), &[], &limits).await;
            let _ = send.finish();
            connection.close(
                CloseCode::UnsupportedVersion.varint(),
                error.message.as_bytes(),
            );
            return Err(error.message);
        }
    }
    tracing::debug!(client = %hello.client_name, core = core.index, "client connected");
    let pool = BufferPool::default();
    loop {
        let (send, recv) = connection.accept_bi().await.map_err(|e| e.to_string())?;
        let core = Rc::clone(&core);
        let pool = Rc::clone(&pool);
        spawn(async move { request_stream(core, send, recv, limits, pool).await }).detach();
    }
}

async fn request_stream(
    core: Rc<Core>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    limits: FrameLimits,
    pool: BufferPool,
) {
    let taken = pool.borrow_mut().pop();
    let RequestBuffers {
        mut reader,
        mut writer,
    } = taken.unwrap_or_else(|| RequestBuffers {
        reader: FrameReader::new(limits),
        writer: ResponseWriter::new(),
    });
    let answer = match reader.read_request_chunks(&mut recv).await {
        Ok(Some((Request::Read(read), _))) => {
            read_shard(&core, &read, &mut send, &limits).await;
            let _ = send.finish();
            return;
        }
        Ok(Some((Request::JoinSubscription(join), _))) => {
            subscription::serve_join(core, join, send, recv, reader, limits).await;
            return;
        }
        Ok(Some((Request::ExecuteSql(execute), _))) => {
            crate::sql::serve(&core, execute, &mut send, &limits).await;
            let _ = send.finish();
            return;
        }
        Ok(Some((Request::Consume(consume), _))) => {
            subscription::serve_consume(core, consume, send, recv, reader, limits).await;
            return;
        }
        Ok(Some((request, payload))) => handle(&core, request, payload).await,
        Ok(None) => return,
        Err(error) => Err(ErrorResponse::invalid_request(&error)),
    };
    let response = answer.unwrap_or_else(Response::Error);
    if let Err(error) = writer.write(&mut send, &response, &[], &limits).await {
        tracing::debug!(%error, "could not answer a request");
    }
    let _ = send.finish();
    reader.reset();
    let mut idle = pool.borrow_mut();
    if idle.len() < IDLE_REQUEST_BUFFERS_MAX {
        idle.push(RequestBuffers { reader, writer });
    }
}

fn error(code: ErrorCode, message: impl Into<String>) -> ErrorResponse {
    ErrorResponse::new(code, message)
}

/// The protocol error for a log error.
pub(crate) fn log_error(error: &LogError) -> ErrorResponse {
    let code = match error {
        LogError::Poisoned { .. }
        | LogError::Io { .. }
        | LogError::Corruption { .. }
        | LogError::NoSpace { .. } => ErrorCode::StorageFault,
        LogError::InvalidBatch(_) => ErrorCode::InvalidBatch,
        LogError::BatchTooLarge { .. } => ErrorCode::BatchTooLarge,
        LogError::Trimmed { .. } => ErrorCode::Trimmed,
        LogError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        LogError::Closed => ErrorCode::Unavailable,
        LogError::LostRange { .. } => ErrorCode::LostRange,
        _ => ErrorCode::Internal,
    };
    let mut response = error_response_with_offsets(code, error.to_string(), error);
    if matches!(code, ErrorCode::Unavailable) {
        response.retry_after_ms = Some(1000);
    }
    response
}

fn error_response_with_offsets(
    code: ErrorCode,
    message: String,
    error: &LogError,
) -> ErrorResponse {
    let mut response = ErrorResponse::new(code, message);
    match error {
        LogError::Trimmed { start, .. } => response.start_offset = Some(*start),
        LogError::OffsetOutOfRange { next, .. } => response.next_offset = Some(*next),
        LogError::LostRange { to, .. } => response.next_offset = Some(*to),
        _ => {}
    }
    response
}

fn batch_error(error: &BatchError) -> ErrorResponse {
    let code = match error {
        BatchError::RecordTooLarge { .. } => ErrorCode::RecordTooLarge,
        BatchError::BatchTooLarge { .. } | BatchError::TooManyRecords { .. } => {
            ErrorCode::BatchTooLarge
        }
        _ => ErrorCode::InvalidBatch,
    };
    ErrorResponse::new(code, error.to_string())
}

/// The protocol's answer to an idempotent producer's sequence the shard cannot place: a
/// batch still being stored is `Busy` (the same request later may succeed); a reused sequence
/// is an invalid batch; every other refusal is `OutOfOrderSequence` (nothing was stored, and
/// whether an earlier attempt was cannot be told here).
fn sequence_error(refusal: &SequenceError) -> ErrorResponse {
    let code = match refusal {
        SequenceError::InFlight { .. } => {
            let mut response = error(ErrorCode::Busy, refusal.to_string());
            response.retry_after_ms = Some(IN_FLIGHT_RETRY_AFTER_MS);
            return response;
        }
        SequenceError::Mismatch { .. } | SequenceError::Overflow { .. } => ErrorCode::InvalidBatch,
        _ => ErrorCode::OutOfOrderSequence,
    };
    error(code, refusal.to_string())
}

/// How long a producer whose previous batch is still being stored is asked to wait before
/// sending it again, in milliseconds.
const IN_FLIGHT_RETRY_AFTER_MS: u32 = 10;

/// The protocol's answer to a refused append: the one place the append service's typed
/// errors become wire errors.
impl From<AppendError> for ErrorResponse {
    fn from(refusal: AppendError) -> ErrorResponse {
        match &refusal {
            AppendError::Shard(error) => ErrorResponse::from(error.clone()),
            AppendError::Sealed { .. } => error(ErrorCode::ShardSealed, refusal.to_string()),
            AppendError::WrongShard { .. } => error(ErrorCode::WrongShard, refusal.to_string()),
            AppendError::Batch(error) => batch_error(error),
            AppendError::Log(error) => log_error(error),
            AppendError::NotOneBatch { .. } => error(ErrorCode::InvalidBatch, refusal.to_string()),
            AppendError::Replication(refusal) => crate::replicated::error_response(refusal),
            AppendError::Sequence(sequence) => sequence_error(sequence),
        }
    }
}

/// The protocol's answer to a request for a shard this core does not serve.
impl From<ShardError> for ErrorResponse {
    fn from(refusal: ShardError) -> ErrorResponse {
        let code = match &refusal {
            ShardError::UnknownStream { .. } => ErrorCode::UnknownStream,
            ShardError::UnknownShard { .. } => ErrorCode::UnknownShard,
            ShardError::NotOwner { .. } => ErrorCode::NotOwner,
            ShardError::NotLocalYet { .. } => ErrorCode::Unavailable,
            ShardError::Open(open) => return ErrorResponse::from(open.clone()),
        };
        let mut response = error(code, refusal.to_string());
        if let ShardError::NotOwner { owner, .. } = refusal {
            response.owner = Some(ShardOwner {
                node: owner.node.0,
                core: owner.core,
            });
        }
        response
    }
}

/// The protocol's answer to a shard log that could not be opened.
impl From<OpenError> for ErrorResponse {
    fn from(refusal: OpenError) -> ErrorResponse {
        let code = match &refusal {
            OpenError::Deleted { .. } => ErrorCode::UnknownShard,
            OpenError::Unavailable { .. } => ErrorCode::Unavailable,
            OpenError::Storage { .. } => ErrorCode::StorageFault,
        };
        error(code, refusal.to_string())
    }
}

async fn handle(core: &Rc<Core>, request: Request, payload: &[Bytes]) -> Answer {
    match request {
        Request::Hello(_) => Err(error(
            ErrorCode::InvalidRequest,
            "Hello is only valid on a connection's first stream",
        )),
        Request::CreateStream(create) => {
            let config = StreamConfig {
                name: create.name.clone(),
                shard_count: create.shard_count,
                replication_factor: create.replication_factor,
                retention_ms: create.retention_ms,
                durability: durability_from_wire(create.durability),
            };
            core.propose(Command::CreateStream {
                config,
                now_ms: now_ms().max(0) as u64,
                avoid: Vec::new(),
            })
            .await?;
            describe(core, &create.name).await
        }
        Request::DescribeStream(describe_stream) => describe(core, &describe_stream.name).await,
        Request::ListStreams(list) => {
            let state = core.metadata.borrow();
            let limit = (list.limit as usize).clamp(1, STREAMS_PER_PAGE_MAX);
            let mut streams = state.streams().filter(|s| {
                list.start_after
                    .as_ref()
                    .is_none_or(|after| &s.config.name > after)
            });
            let page: Vec<_> = streams
                .by_ref()
                .take(limit)
                .map(|s| stream_info(core, &state, s, 0))
                .collect();
            Ok(Response::StreamList(StreamList {
                streams: page,
                more: streams.next().is_some(),
            }))
        }
        Request::DeleteStream(delete) => {
            core.propose(Command::DeleteStream {
                name: delete.name.clone(),
                force: delete.force,
            })
            .await?;
            Ok(Response::DeleteStreamOk(DeleteStreamOk {
                name: delete.name,
            }))
        }
        Request::ListShards(list) => {
            let (mut page, more) = {
                let state = core.metadata.borrow();
                let stream = state.stream(&list.stream).ok_or_else(|| {
                    error(
                        ErrorCode::UnknownStream,
                        format!("stream {} does not exist", list.stream),
                    )
                })?;
                let limit = (list.limit as usize).clamp(1, SHARDS_PER_ENVELOPE_MAX);
                let mut shards = state
                    .shards()
                    .filter(|s| s.stream == stream.id)
                    .filter(|s| list.start_after.is_none_or(|after| s.id > after));
                let page: Vec<_> = shards
                    .by_ref()
                    .take(limit)
                    .map(|s| shard_info(core, s))
                    .collect();
                (page, shards.next().is_some())
            };
            fill_offsets(core, &mut page).await;
            Ok(Response::ShardList(ShardList {
                stream: list.stream,
                shards: page,
                more,
            }))
        }
        Request::Append(append) => {
            let appended = core
                .append(AppendRequest {
                    stream: &append.stream,
                    shard: append.shard,
                    batch: payload,
                })
                .await?;
            Ok(Response::AppendOk(AppendOk {
                shard: appended.shard,
                base_offset: appended.base_offset,
                last_offset: appended.last_offset,
            }))
        }
        Request::Trim(trim) => {
            let OwnedShard { log, shard } = core.owned_log(&trim.stream, trim.shard).await?;
            log.trim(trim.offset).await.map_err(|e| log_error(&e))?;
            Ok(Response::TrimOk(TrimOk {
                shard: shard.id,
                start_offset: log.start_offset(),
            }))
        }
        Request::GetNodeStatus => {
            let state = core.metadata.borrow();
            let cores = (0..core.config.cores as u32)
                .map(|index| CoreStatus {
                    core: index,
                    port: core.config.base_port.saturating_add(index as u16),
                    shard_count: state
                        .shards()
                        .filter(|s| s.placement.node == core.node_id() && s.placement.core == index)
                        .count() as u32,
                    allocations: crate::allocations::core_counts(index as usize).map(wire_counts),
                })
                .collect();
            Ok(Response::NodeStatus(NodeStatus {
                node_id: core.config.node_id,
                server_version: env!("CARGO_PKG_VERSION").to_string(),
                uptime_ms: core.started.elapsed().as_millis() as u64,
                core_count: core.config.cores as u32,
                base_port: core.config.base_port,
                cores,
                other_allocations: crate::allocations::other_counts().map(wire_counts),
            }))
        }
        Request::ListNodes => Ok(Response::NodeList(crate::cluster::node_list(&core.cluster))),
        Request::InitCluster => core.init_cluster().await.map(|()| Response::InitClusterOk),
        Request::RemoveNode(node) => core
            .remove_node(node)
            .await
            .map(|()| Response::RemoveNodeOk(node)),
        Request::CreateSubscription(create) => subscription::create(core, create).await,
        Request::ListSubscriptions(list) => subscription::list(core, list),
        Request::DescribeSubscription(describe) => {
            subscription::describe(core, &describe.name).await
        }
        Request::DeleteSubscription(delete) => subscription::delete(core, delete).await,
        Request::Heartbeat | Request::LeaveSubscription => Err(error(
            ErrorCode::InvalidRequest,
            "Heartbeat and LeaveSubscription are only valid on a JoinSubscription stream",
        )),
        Request::Ack(_) => Err(error(
            ErrorCode::InvalidRequest,
            "Ack is only valid on a Consume stream",
        )),
        Request::Read(_)
        | Request::JoinSubscription(_)
        | Request::Consume(_)
        | Request::ExecuteSql(_) => Err(error(
            ErrorCode::Internal,
            "streaming requests are served by their own loops",
        )),
    }
}

/// The wire form of the server's allocation counts.
fn wire_counts(counts: crate::allocations::AllocationCounts) -> AllocationCounts {
    AllocationCounts {
        allocations: counts.allocations,
        bytes: counts.bytes,
    }
}

async fn describe(core: &Rc<Core>, name: &runnel_core::StreamName) -> Answer {
    let mut info = {
        let state = core.metadata.borrow();
        let stream = state.stream(name).ok_or_else(|| {
            error(
                ErrorCode::UnknownStream,
                format!("stream {name} does not exist"),
            )
        })?;
        stream_info(core, &state, stream, SHARDS_PER_ENVELOPE_MAX)
    };
    fill_offsets(core, &mut info.shards).await;
    Ok(Response::StreamInfo(info))
}

/// Serves a `Read`: `ReadChunk` frames with whole batches, then a `ReadEnd` (or an `Error`).
async fn read_shard(
    core: &Rc<Core>,
    read: &runnel_net::protocol::Read,
    send: &mut quinn::SendStream,
    limits: &FrameLimits,
) {
    let result = read_loop(core, read, send, limits).await;
    let last = match result {
        Ok(end) => Response::ReadEnd(end),
        Err(None) => return,
        Err(Some(error)) => Response::Error(error),
    };
    let _ = write_response(send, &last, &[], limits).await;
}

/// `Err(None)`: the client went away (nothing more to send).
async fn read_loop(
    core: &Rc<Core>,
    read: &runnel_net::protocol::Read,
    send: &mut quinn::SendStream,
    limits: &FrameLimits,
) -> Result<ReadEnd, Option<ErrorResponse>> {
    // A replicated shard is read on any core hosting a replica, up to that replica's
    // committed offset, never past it.
    let (OwnedShard { log, shard }, replicated) =
        crate::replicated::readable_log(core, &read.stream, read.shard)
            .await
            .map_err(|refusal| Some(refusal.into()))?;
    let bound = crate::core::visible(shard.durability);
    if replicated.is_none() && shard.replicated {
        // Its replica is not open yet: nothing says what of its log is committed.
        let refusal = crate::replicated::ReplicationError::Recovering { shard: shard.id };
        return Err(Some(crate::replicated::error_response(&refusal)));
    }
    let bound_offset = || match &replicated {
        Some(host) => host.visible_end(),
        None => visible_end(&log, bound),
    };
    let mut next = match read.from {
        ReadFrom::Earliest => log.start_offset(),
        ReadFrom::Latest => bound_offset(),
        ReadFrom::Offset(offset) => offset,
        ReadFrom::Timestamp(ms) => log
            .offset_for_timestamp(ms)
            .await
            .map_err(|e| Some(log_error(&e)))?,
    };
    let mut sent_bytes = 0u64;
    loop {
        if let Some(until) = read.until {
            if next >= until {
                return Ok(ReadEnd {
                    next_offset: next,
                    reason: ReadEndReason::UntilReached,
                });
            }
        }
        let mut want = READ_CHUNK_BYTES_MAX.min(u64::from(limits.payload_bytes_max));
        if read.max_bytes > 0 {
            want = want.min(read.max_bytes - sent_bytes);
        }
        let visible = bound_offset();
        let chunk_bound = match read.until {
            Some(until) => ReadBound::Below(until.min(visible)),
            None => ReadBound::Below(visible),
        };
        let chunk = match log.read(next, want as usize, chunk_bound).await {
            Ok(chunk) => chunk,
            // The chunk reaches a corrupt batch past `next`: the batches before it are sound,
            // so they are sent first and the error comes with the next read, at the bad batch
            // itself. Otherwise a reader would lose good records read in the same chunk.
            Err(LogError::Corruption { offset, .. }) if offset > next => log
                .read(next, want as usize, ReadBound::Below(offset))
                .await
                .map_err(|e| Some(log_error(&e)))?,
            Err(e) => return Err(Some(log_error(&e))),
        };
        if chunk.is_empty() {
            if !read.tail {
                return Ok(ReadEnd {
                    next_offset: next,
                    reason: ReadEndReason::CaughtUp,
                });
            }
            // Tailing: wait for new data, the client going away, or the node stopping.
            let more = async {
                match &replicated {
                    Some(host) => {
                        host.wait_changed(std::time::Duration::from_millis(1000))
                            .await;
                        Ok(())
                    }
                    None => log.wait_for(next, bound).await,
                }
            };
            match first_of(more, send.stopped(), core.until_stopping()).await {
                First::A(Ok(())) => continue,
                First::A(Err(e)) => return Err(Some(log_error(&e))),
                First::B(_) => return Err(None),
                First::C(()) => {
                    return Err(Some(error(ErrorCode::Unavailable, "the node is stopping")));
                }
            }
        }
        let header = Response::ReadChunk(WireChunk {
            next_offset: chunk.next_offset(),
            batch_count: chunk.batch_count() as u32,
        });
        if write_response(send, &header, &[chunk.as_bytes()], limits)
            .await
            .is_err()
        {
            return Err(None);
        }
        sent_bytes += chunk.as_bytes().len() as u64;
        next = chunk.next_offset();
        if read.max_bytes > 0 && sent_bytes >= read.max_bytes {
            return Ok(ReadEnd {
                next_offset: next,
                reason: ReadEndReason::MaxBytesReached,
            });
        }
    }
}
