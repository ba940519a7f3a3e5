//! The wire protocol without a network: every message round-trips through its envelope, frames
//! round-trip through the incremental reader whatever the chunking, payloads land 16-byte
//! aligned, and arbitrary, mutated or truncated bytes give typed errors, never panics.
//!
//! Randomized tests are proptests: a failure prints the minimal failing input, and its seed is
//! saved in `net/tests/protocol.proptest-regressions`, replayed first by every later run.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use runnel_core::batch::iter_batches;
use runnel_core::{BatchBuilder, BatchView, Epoch, KeyRange, Limits, Offset, Record, ShardId};
use runnel_core::{StreamName, BATCH_ALIGNMENT};
use runnel_net::protocol::*;

// ---------------------------------------------------------------------------------------------
// Driving futures over in-memory sources
// ---------------------------------------------------------------------------------------------

/// Runs a future whose sources are always ready: it must finish on the first poll.
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("an in-memory frame source never waits"),
    }
}

/// Hands out `bytes` in chunks whose sizes cycle through `sizes` (each at least 1), capped by
/// what the reader asks for.
struct Chunked<'a> {
    bytes: &'a [u8],
    sizes: Vec<usize>,
    next: usize,
}

impl<'a> Chunked<'a> {
    fn new(bytes: &'a [u8], sizes: Vec<usize>) -> Chunked<'a> {
        assert!(!sizes.is_empty() && sizes.iter().all(|&size| size > 0));
        Chunked {
            bytes,
            sizes,
            next: 0,
        }
    }
}

impl<'a> FrameSource for Chunked<'a> {
    type Chunk = &'a [u8];

    async fn next_chunk(&mut self, bytes_max: usize) -> Result<Option<&'a [u8]>, ProtocolError> {
        if self.bytes.is_empty() {
            return Ok(None);
        }
        let size = self.sizes[self.next % self.sizes.len()];
        self.next += 1;
        let (chunk, rest) = self
            .bytes
            .split_at(size.min(bytes_max).min(self.bytes.len()));
        self.bytes = rest;
        Ok(Some(chunk))
    }
}

/// Like [`Chunked`], but every other call first returns `Pending` once, so a reader future can
/// be dropped half-way through a frame.
struct Hesitant<'a> {
    inner: Chunked<'a>,
    calls: usize,
}

impl<'a> FrameSource for Hesitant<'a> {
    type Chunk = &'a [u8];

    async fn next_chunk(&mut self, bytes_max: usize) -> Result<Option<&'a [u8]>, ProtocolError> {
        self.calls += 1;
        if self.calls.is_multiple_of(2) {
            YieldOnce(false).await;
        }
        self.inner.next_chunk(bytes_max).await
    }
}

struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: std::pin::Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            Poll::Pending
        }
    }
}

/// Everything `poll_read` reads until the stream ends, each read polled once with a fresh
/// future that is dropped if it is pending (as a caller racing reads against other events
/// does): what a cancel-safe reader must survive.
fn read_dropping_pending<T>(
    mut poll_read: impl FnMut(&mut Context<'_>) -> Poll<Result<Option<T>, ProtocolError>>,
) -> Result<Vec<T>, ProtocolError> {
    let mut read = Vec::new();
    for _ in 0..100_000 {
        match poll_read(&mut Context::from_waker(Waker::noop())) {
            Poll::Pending => continue,
            Poll::Ready(Ok(Some(item))) => read.push(item),
            Poll::Ready(Ok(None)) => return Ok(read),
            Poll::Ready(Err(error)) => return Err(error),
        }
    }
    panic!("no progress after 100,000 polls");
}

/// A frame as bytes: its envelope and its payload.
type FrameBytes = (Vec<u8>, Vec<u8>);

/// Reads every frame of `source`: envelopes and payloads, checking each payload's alignment.
fn read_all<S: FrameSource>(
    reader: &mut FrameReader,
    source: &mut S,
) -> Result<Vec<FrameBytes>, ProtocolError> {
    let mut frames = Vec::new();
    while let Some(frame) = ready(reader.read_frame(source))? {
        // An empty payload has no address to speak of (an unallocated buffer).
        assert!(
            frame.payload.is_empty()
                || (frame.payload.as_ptr() as usize).is_multiple_of(BATCH_ALIGNMENT),
            "payload not 16-byte aligned"
        );
        frames.push((frame.envelope.to_vec(), frame.payload.to_vec()));
    }
    Ok(frames)
}

fn frame_bytes(envelope: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut bytes = encode_frame(envelope, payload.len(), &FrameLimits::DEFAULT).expect("frame");
    bytes.extend_from_slice(payload);
    bytes
}

fn name(text: &str) -> StreamName {
    StreamName::new(text).expect("valid stream name")
}

/// A real batch of `records` small records.
fn batch(records: usize, seed: u8) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    for index in 0..records {
        let mut record = Record::at(vec![seed; 10 + index], 1_700_000_000_000 + index as i64);
        record.key = Some(vec![seed, index as u8]);
        builder.push(record);
    }
    builder.finish(&Limits::DEFAULT).expect("batch").to_vec()
}

// ---------------------------------------------------------------------------------------------
// Strategies for every message
// ---------------------------------------------------------------------------------------------

fn stream_name() -> impl Strategy<Value = StreamName> {
    "[A-Za-z0-9_][A-Za-z0-9_.-]{0,40}".prop_map(|text| name(&text))
}

fn key_range() -> impl Strategy<Value = KeyRange> {
    (any::<u128>(), any::<u128>())
        .prop_map(|(a, b)| KeyRange::new(a.min(b), a.max(b)).expect("ordered key range"))
}

fn durability() -> impl Strategy<Value = Durability> {
    prop_oneof![Just(Durability::Fsync), Just(Durability::Memory)]
}

fn shard_ids() -> impl Strategy<Value = Vec<ShardId>> {
    prop::collection::vec(any::<u64>().prop_map(ShardId), 0..3)
}

fn shard_info() -> impl Strategy<Value = ShardInfo> {
    (
        (
            any::<u64>(),
            key_range(),
            any::<bool>(),
            any::<u64>(),
            any::<u32>(),
        ),
        (any::<u64>(), any::<Option<u64>>(), any::<Option<u64>>()),
        (
            shard_ids(),
            shard_ids(),
            // At least one: none decodes as the sequencer alone (older servers).
            prop::collection::vec((any::<u64>(), any::<u32>()), 1..8),
        ),
    )
        .prop_map(
            |(
                (id, key_range, sealed, node, core),
                (epoch, start, next),
                (parents, children, replicas),
            )| {
                ShardInfo {
                    id: ShardId(id),
                    key_range,
                    status: if sealed {
                        ShardStatus::Sealed
                    } else {
                        ShardStatus::Open
                    },
                    node,
                    core,
                    epoch: Epoch(epoch),
                    start_offset: start.map(Offset),
                    next_offset: next.map(Offset),
                    parents,
                    children,
                    replicas: replicas
                        .into_iter()
                        .map(|(node, core)| ReplicaPlacement { node, core })
                        .collect(),
                }
            },
        )
}

fn stream_info() -> impl Strategy<Value = StreamInfo> {
    (
        stream_name(),
        (any::<u32>(), any::<u8>(), any::<u64>(), durability()),
        prop::collection::vec(shard_info(), 0..4),
        any::<bool>(),
    )
        .prop_map(
            |(name, (shard_count, replication_factor, retention_ms, durability), shards, cut)| {
                StreamInfo {
                    name,
                    shard_count,
                    replication_factor,
                    retention_ms,
                    durability,
                    shards,
                    shards_truncated: cut,
                }
            },
        )
}

fn read_from() -> impl Strategy<Value = ReadFrom> {
    prop_oneof![
        Just(ReadFrom::Earliest),
        Just(ReadFrom::Latest),
        any::<u64>().prop_map(|offset| ReadFrom::Offset(Offset(offset))),
        any::<i64>().prop_map(ReadFrom::Timestamp),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (any::<u16>(), any::<u16>(), ".{0,20}").prop_map(|(min, max, client_name)| {
            Request::Hello(Hello {
                version_min: min,
                version_max: max,
                client_name,
            })
        }),
        (
            stream_name(),
            any::<u32>(),
            any::<u8>(),
            any::<u64>(),
            durability()
        )
            .prop_map(
                |(name, shard_count, replication_factor, retention_ms, durability)| {
                    Request::CreateStream(CreateStream {
                        name,
                        shard_count,
                        replication_factor,
                        retention_ms,
                        durability,
                    })
                }
            ),
        (prop::option::of(stream_name()), any::<u32>()).prop_map(|(start_after, limit)| {
            Request::ListStreams(ListStreams { start_after, limit })
        }),
        stream_name().prop_map(|name| Request::DescribeStream(DescribeStream { name })),
        (stream_name(), any::<bool>())
            .prop_map(|(name, force)| Request::DeleteStream(DeleteStream { name, force })),
        (stream_name(), any::<Option<u64>>(), any::<u32>()).prop_map(
            |(stream, start_after, limit)| Request::ListShards(ListShards {
                stream,
                start_after: start_after.map(ShardId),
                limit,
            })
        ),
        (stream_name(), any::<u64>()).prop_map(|(stream, shard)| Request::Append(Append {
            stream,
            shard: ShardId(shard),
        })),
        (
            stream_name(),
            any::<u64>(),
            read_from(),
            any::<Option<u64>>(),
            any::<u64>(),
            any::<bool>()
        )
            .prop_map(|(stream, shard, from, until, max_bytes, tail)| {
                Request::Read(Read {
                    stream,
                    shard: ShardId(shard),
                    from,
                    until: until.map(Offset),
                    max_bytes,
                    tail,
                })
            }),
        (stream_name(), any::<u64>(), any::<u64>()).prop_map(|(stream, shard, offset)| {
            Request::Trim(Trim {
                stream,
                shard: ShardId(shard),
                offset: Offset(offset),
            })
        }),
        Just(Request::GetNodeStatus),
        Just(Request::ListNodes),
        Just(Request::InitCluster),
        any::<u64>().prop_map(Request::RemoveNode),
    ]
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop_oneof![
        prop::sample::select(ErrorCode::all().collect::<Vec<_>>()),
        (26_u16..).prop_map(ErrorCode::Other),
    ]
}

fn error_response() -> impl Strategy<Value = ErrorResponse> {
    (
        error_code(),
        ".{0,40}",
        prop::option::of((any::<u64>(), any::<u32>())),
        any::<Option<u32>>(),
        any::<Option<u64>>(),
        any::<Option<u64>>(),
        any::<Option<(u64, u64)>>(),
    )
        .prop_map(
            |(code, message, owner, retry, start, next, sql_position)| ErrorResponse {
                code,
                message,
                owner: owner.map(|(node, core)| ShardOwner { node, core }),
                retry_after_ms: retry,
                start_offset: start.map(Offset),
                next_offset: next.map(Offset),
                sql_position,
            },
        )
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        error_response().prop_map(Response::Error),
        (
            (
                any::<u16>(),
                any::<u64>(),
                any::<u32>(),
                any::<u32>(),
                any::<u16>()
            ),
            ".{0,20}",
            (any::<u32>(), any::<u32>(), any::<u32>())
        )
            .prop_map(
                |((version, node_id, core, core_count, base_port), server_version, limits)| {
                    Response::HelloOk(HelloOk {
                        version,
                        node_id,
                        core,
                        core_count,
                        base_port,
                        server_version,
                        record_bytes_max: limits.0,
                        batch_bytes_max: limits.1,
                        frame_payload_bytes_max: limits.2,
                    })
                }
            ),
        stream_info().prop_map(Response::StreamInfo),
        (prop::collection::vec(stream_info(), 0..3), any::<bool>())
            .prop_map(|(streams, more)| Response::StreamList(StreamList { streams, more })),
        stream_name().prop_map(|name| Response::DeleteStreamOk(DeleteStreamOk { name })),
        (
            stream_name(),
            prop::collection::vec(shard_info(), 0..4),
            any::<bool>()
        )
            .prop_map(|(stream, shards, more)| Response::ShardList(ShardList {
                stream,
                shards,
                more
            })),
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(shard, a, b)| {
            Response::AppendOk(AppendOk {
                shard: ShardId(shard),
                base_offset: Offset(a.min(b)),
                last_offset: Offset(a.max(b)),
            })
        }),
        (any::<u64>(), any::<u32>()).prop_map(|(next, batch_count)| {
            Response::ReadChunk(ReadChunk {
                next_offset: Offset(next),
                batch_count,
            })
        }),
        (
            any::<u64>(),
            prop::sample::select(vec![
                ReadEndReason::CaughtUp,
                ReadEndReason::UntilReached,
                ReadEndReason::MaxBytesReached,
                ReadEndReason::ShardSealed,
            ])
        )
            .prop_map(|(next, reason)| Response::ReadEnd(ReadEnd {
                next_offset: Offset(next),
                reason
            })),
        (any::<u64>(), any::<u64>()).prop_map(|(shard, start)| Response::TrimOk(TrimOk {
            shard: ShardId(shard),
            start_offset: Offset(start),
        })),
        (
            (
                any::<u64>(),
                ".{0,20}",
                any::<u64>(),
                any::<u32>(),
                any::<u16>()
            ),
            prop::collection::vec(
                (
                    any::<u32>(),
                    any::<u16>(),
                    any::<u32>(),
                    any::<Option<(u64, u64)>>()
                ),
                0..8
            ),
            any::<Option<(u64, u64)>>()
        )
            .prop_map(
                |((node_id, server_version, uptime_ms, core_count, base_port), cores, other)| {
                    let counts = |(allocations, bytes)| AllocationCounts { allocations, bytes };
                    Response::NodeStatus(NodeStatus {
                        node_id,
                        server_version,
                        uptime_ms,
                        core_count,
                        base_port,
                        cores: cores
                            .into_iter()
                            .map(|(core, port, shard_count, allocations)| CoreStatus {
                                core,
                                port,
                                shard_count,
                                allocations: allocations.map(counts),
                            })
                            .collect(),
                        other_allocations: other.map(counts),
                    })
                }
            ),
        prop::collection::vec(node_info(), 0..5)
            .prop_map(|nodes| Response::NodeList(NodeList { nodes })),
        Just(Response::InitClusterOk),
        any::<u64>().prop_map(Response::RemoveNodeOk),
    ]
}

fn node_info() -> impl Strategy<Value = NodeInfo> {
    (
        (any::<u64>(), 0_usize..4, "[a-z0-9.:\\[\\]-]{1,40}"),
        (prop::option::of("[0-9.]{1,10}"), any::<u32>()),
        (any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |((id, state, address), (version, cores), (leader, voter))| {
                let states = [
                    NodeState::Starting,
                    NodeState::Running,
                    NodeState::Unavailable,
                    NodeState::Dead,
                ];
                NodeInfo {
                    id,
                    state: states[state],
                    address,
                    version,
                    cores,
                    leader,
                    voter,
                }
            },
        )
}

// ---------------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------------

/// 512 cases each; failures persisted next to this file (proptest's default location needs a
/// `lib.rs` beside the test, which integration tests do not have).
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Every request decodes to itself, and is refused where a response is expected.
    #[test]
    fn requests_round_trip(request in request()) {
        let envelope = request.encode();
        prop_assert!(envelope.len() <= ENVELOPE_BYTES_MAX as usize);
        prop_assert_eq!(Request::decode(&envelope), Ok(request));
        let wrong_way = Response::decode(&envelope);
        prop_assert!(
            matches!(wrong_way, Err(ProtocolError::UnexpectedMessage { .. })),
            "{:?}",
            wrong_way
        );
    }

    /// Every response decodes to itself, and is refused where a request is expected.
    #[test]
    fn responses_round_trip(response in response()) {
        let envelope = response.encode();
        prop_assert_eq!(Response::decode(&envelope), Ok(response));
        let wrong_way = Request::decode(&envelope);
        prop_assert!(
            matches!(wrong_way, Err(ProtocolError::UnexpectedMessage { .. })),
            "{:?}",
            wrong_way
        );
    }

    /// A sequence of frames read back through chunks of random sizes gives the same envelopes
    /// and payloads, each payload 16-byte aligned, and then a clean end of stream.
    #[test]
    fn frames_round_trip_in_any_chunking(
        frames in prop::collection::vec(
            (request(), prop::collection::vec(any::<u8>(), 0..4).prop_map(|blocks| {
                blocks.iter().flat_map(|&b| [b; 16]).collect::<Vec<u8>>()
            })),
            1..6,
        ),
        sizes in prop::collection::vec(1_usize..40, 1..8),
    ) {
        let mut bytes = Vec::new();
        let mut expected = Vec::new();
        for (request, payload) in &frames {
            let envelope = request.encode();
            bytes.extend_from_slice(&frame_bytes(&envelope, payload));
            expected.push((envelope, payload.clone()));
        }
        let mut reader = FrameReader::new(FrameLimits::DEFAULT);
        let got = read_all(&mut reader, &mut Chunked::new(&bytes, sizes));
        prop_assert_eq!(got, Ok(expected));
    }

    /// Dropping a read half-way (the source was not ready) and calling again continues the
    /// same frame: the reader is cancel-safe.
    #[test]
    fn reader_is_cancel_safe(
        requests in prop::collection::vec(request(), 1..4),
        sizes in prop::collection::vec(1_usize..24, 1..5),
    ) {
        let payload = batch(2, 9);
        let mut bytes = Vec::new();
        let mut expected = Vec::new();
        for request in &requests {
            let envelope = request.encode();
            bytes.extend_from_slice(&frame_bytes(&envelope, &payload));
            expected.push((envelope, payload.clone()));
        }
        let mut source = Hesitant { inner: Chunked::new(&bytes, sizes), calls: 0 };
        let mut reader = FrameReader::new(FrameLimits::DEFAULT);
        let got = read_dropping_pending(|cx| {
            let polled = pin!(reader.read_frame(&mut source)).poll(cx);
            polled.map_ok(|frame| frame.map(|frame| (frame.envelope.to_vec(), frame.payload.to_vec())))
        });
        prop_assert_eq!(got, Ok(expected));
    }

    /// Requests read keeping their payload's chunks (as the server reads them) give the same
    /// requests and payload bytes as requests read into one buffer, in any chunking and with
    /// reads dropped half-way (cancel safety); a reset reader reads a new stream from its
    /// start, and one reused writer writes every response as `write_response` does.
    #[test]
    fn requests_read_as_chunks_match_requests_read_whole(
        kinds in prop::collection::vec((any::<bool>(), request()), 1..5),
        sizes in prop::collection::vec(1_usize..300, 1..6),
        responses in prop::collection::vec(response(), 1..4),
    ) {
        let mut bytes = Vec::new();
        let mut expected = Vec::new();
        for (index, (append, other)) in kinds.iter().enumerate() {
            let (request, payload) = match (append, other.carries_payload()) {
                (true, _) | (false, true) => (
                    Request::Append(Append { stream: name("orders"), shard: ShardId(1) }),
                    batch(1 + index, index as u8),
                ),
                (false, false) => (other.clone(), Vec::new()),
            };
            ready(write_request(&mut bytes, &request, &payload, &FrameLimits::DEFAULT)).expect("write");
            expected.push((request, payload));
        }
        let mut source = Hesitant { inner: Chunked::new(&bytes, sizes), calls: 0 };
        let mut reader = FrameReader::new(FrameLimits::DEFAULT);
        // Half a frame of another stream first: `reset` forgets it.
        prop_assert!(ready(reader.read_frame(&mut &bytes[..20])).is_err());
        reader.reset();
        let got = read_dropping_pending(|cx| {
            let polled = pin!(reader.read_request_chunks(&mut source)).poll(cx);
            polled.map_ok(|read| read.map(|(request, chunks)| {
                assert!(chunks.iter().all(|chunk| !chunk.is_empty()));
                (request, chunks.concat())
            }))
        });
        prop_assert_eq!(got, Ok(expected));

        let mut writer = ResponseWriter::new();
        for response in &responses {
            let (mut reused, mut fresh) = (Vec::new(), Vec::new());
            let parts: &[&[u8]] = &[];
            let a = ready(writer.write(&mut reused, response, parts, &FrameLimits::DEFAULT));
            let b = ready(write_response(&mut fresh, response, parts, &FrameLimits::DEFAULT));
            prop_assert_eq!(a.is_ok(), b.is_ok());
            prop_assert_eq!(reused, fresh);
        }
    }

    /// Any prefix of a valid frame stream either ends cleanly at a frame boundary or is
    /// reported as truncated, with the part that was cut.
    #[test]
    fn truncated_frames_are_typed_errors(
        request in request(),
        cut_seed in any::<prop::sample::Index>(),
    ) {
        let payload = batch(3, 1);
        let bytes = frame_bytes(&request.encode(), &payload);
        let cut = cut_seed.index(bytes.len());
        let mut reader = FrameReader::new(FrameLimits::DEFAULT);
        let result = read_all(&mut reader, &mut &bytes[..cut]);
        if cut == 0 {
            prop_assert_eq!(result, Ok(vec![]));
        } else {
            prop_assert!(
                matches!(result, Err(ProtocolError::Truncated { .. })),
                "cut at {} of {}: {:?}", cut, bytes.len(), result
            );
        }
    }

    /// Arbitrary bytes, in arbitrary chunks, never make the reader panic.
    #[test]
    fn arbitrary_bytes_never_panic_the_reader(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        sizes in prop::collection::vec(1_usize..64, 1..4),
    ) {
        let mut reader = FrameReader::new(FrameLimits { payload_bytes_max: 1 << 10 });
        let _ = read_all(&mut reader, &mut Chunked::new(&bytes, sizes));
    }

    /// Arbitrary bytes behind a valid frame header (so they reach the verifier and the
    /// decoders) give an error or a message, never a panic.
    #[test]
    fn arbitrary_envelopes_never_panic(
        mut envelope in prop::collection::vec(any::<u8>(), 1..300),
        identifier in prop::sample::select(vec![*b"RNRQ", *b"RNRS", *b"XXXX"]),
    ) {
        if envelope.len() >= 8 {
            envelope[4..8].copy_from_slice(&identifier);
        }
        let bytes = frame_bytes(&envelope, &[]);
        let mut reader = FrameReader::new(FrameLimits::DEFAULT);
        let _ = ready(reader.read_request(&mut &bytes[..]));
        let mut reader = FrameReader::new(FrameLimits::DEFAULT);
        let _ = ready(reader.read_response(&mut &bytes[..]));
    }

    /// Valid envelopes with bytes overwritten at random: the verifier and the typed decoders
    /// refuse or accept them, never panic.
    #[test]
    fn mutated_envelopes_never_panic(
        request in request(),
        response in response(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        for mut envelope in [request.encode(), response.encode()] {
            for (at, value) in &edits {
                let at = at.index(envelope.len());
                envelope[at] = *value;
            }
            let _ = Request::decode(&envelope);
            let _ = Response::decode(&envelope);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Specific cases
// ---------------------------------------------------------------------------------------------

/// Every error code has a stable number, and unknown numbers survive as `Other`.
#[test]
fn error_codes_have_stable_numbers() {
    let numbers: Vec<u16> = ErrorCode::all().map(ErrorCode::number).collect();
    assert_eq!(numbers, (1..=28).collect::<Vec<u16>>());
    for code in ErrorCode::all() {
        assert_eq!(ErrorCode::from_number(code.number()), code);
    }
    assert_eq!(ErrorCode::from_number(900), ErrorCode::Other(900));
    assert_eq!(ErrorCode::NotOwner.number(), 8);
    assert_eq!(ErrorCode::Unavailable.number(), 18);
    assert_eq!(ErrorCode::UnknownSubscription.number(), 19);
    assert_eq!(ErrorCode::NotAssigned.number(), 23);
    assert_eq!(ErrorCode::StreamHasSubscriptions.number(), 24);
    assert_eq!(ErrorCode::NotLeader.number(), 25);
    assert_eq!(ErrorCode::NodeOwnsShards.number(), 26);
    assert_eq!(ErrorCode::UnknownNode.number(), 27);
    assert_eq!(ErrorCode::WouldLoseQuorum.number(), 28);

    // Code 0 means "unspecified" and is refused.
    let mut error = ErrorResponse::new(ErrorCode::Other(0), "zero");
    let envelope = Response::Error(error.clone()).encode();
    assert!(matches!(
        Response::decode(&envelope),
        Err(ProtocolError::InvalidField {
            field: "Error.code",
            ..
        })
    ));
    error.code = ErrorCode::Busy;
    error.retry_after_ms = Some(50);
    let envelope = Response::Error(error.clone()).encode();
    assert_eq!(Response::decode(&envelope), Ok(Response::Error(error)));
}

/// An `Append` frame carrying a real batch: the payload arrives aligned and validates in place
/// with `BatchView::validate`, whatever the chunking; its records read back.
#[test]
fn append_payload_validates_in_place() {
    let batch = batch(5, 7);
    let request = Request::Append(Append {
        stream: name("orders"),
        shard: ShardId(3),
    });
    let mut bytes = Vec::new();
    ready(write_request(
        &mut bytes,
        &request,
        &batch,
        &FrameLimits::DEFAULT,
    ))
    .expect("write");
    // The payload starts at a 16-byte aligned offset of the frame.
    let payload_at = bytes.len() - batch.len();
    assert_eq!(payload_at % 16, 0);
    assert_eq!(&bytes[payload_at..], &batch[..]);

    for sizes in [vec![1], vec![7, 3], vec![4096]] {
        let mut reader = FrameReader::new(FrameLimits::DEFAULT);
        let mut source = Chunked::new(&bytes, sizes);
        let (decoded, payload) = ready(reader.read_request(&mut source))
            .expect("read")
            .expect("a frame");
        assert_eq!(decoded, request);
        assert!((payload.as_ptr() as usize).is_multiple_of(16));
        let view = BatchView::validate(payload, &Limits::DEFAULT).expect("valid batch");
        assert_eq!(view.record_count(), 5);
        assert_eq!(view.records().expect("records").count(), 5);
    }
}

/// A read answer: several `ReadChunk` frames of whole batches, then `ReadEnd`, read with one
/// reader whose buffers are reused; every batch checks.
#[test]
fn read_answer_streams_chunks_then_end() {
    let batches: Vec<Vec<u8>> = (0..6).map(|seed| batch(1 + seed as usize, seed)).collect();
    let mut bytes = Vec::new();
    for pair in batches.chunks(2) {
        let parts: Vec<&[u8]> = pair.iter().map(Vec::as_slice).collect();
        let chunk = Response::ReadChunk(ReadChunk {
            next_offset: Offset(10),
            batch_count: 2,
        });
        ready(write_response(
            &mut bytes,
            &chunk,
            &parts,
            &FrameLimits::DEFAULT,
        ))
        .expect("chunk");
    }
    let end = Response::ReadEnd(ReadEnd {
        next_offset: Offset(21),
        reason: ReadEndReason::CaughtUp,
    });
    ready(write_response(&mut bytes, &end, &[], &FrameLimits::DEFAULT)).expect("end");

    let mut reader = FrameReader::new(FrameLimits::DEFAULT);
    let mut source = Chunked::new(&bytes, vec![1000, 13]);
    let mut batch_count = 0;
    loop {
        let (response, payload) = ready(reader.read_response(&mut source))
            .expect("read")
            .expect("a frame before the end");
        match response {
            Response::ReadChunk(chunk) => {
                let views: Vec<_> = iter_batches(payload)
                    .collect::<Result<_, _>>()
                    .expect("batches check");
                assert_eq!(views.len(), chunk.batch_count as usize);
                batch_count += views.len();
            }
            Response::ReadEnd(end) => {
                assert_eq!(end.reason, ReadEndReason::CaughtUp);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(batch_count, 6);
    assert!(matches!(ready(reader.read_response(&mut source)), Ok(None)));
}

/// Payloads where the message carries none, and none where it must, are refused on both
/// sides.
#[test]
fn payload_presence_is_checked() {
    let trim = Request::Trim(Trim {
        stream: name("s"),
        shard: ShardId(1),
        offset: Offset(2),
    });
    let mut sink = Vec::new();
    assert!(matches!(
        ready(write_request(
            &mut sink,
            &trim,
            &[0; 16],
            &FrameLimits::DEFAULT
        )),
        Err(ProtocolError::PayloadMismatch { kind: "Trim", .. })
    ));
    let bytes = frame_bytes(&trim.encode(), &[0; 16]);
    let mut reader = FrameReader::new(FrameLimits::DEFAULT);
    assert!(matches!(
        ready(reader.read_request(&mut &bytes[..])),
        Err(ProtocolError::PayloadMismatch {
            kind: "Trim",
            payload_len: 16
        })
    ));
    let append = Request::Append(Append {
        stream: name("s"),
        shard: ShardId(1),
    });
    let bytes = frame_bytes(&append.encode(), &[]);
    let mut reader = FrameReader::new(FrameLimits::DEFAULT);
    assert!(matches!(
        ready(reader.read_request(&mut &bytes[..])),
        Err(ProtocolError::PayloadMismatch {
            kind: "Append",
            payload_len: 0
        })
    ));
}

/// The reader refuses oversized frames from the header alone, before reading (or sizing a
/// buffer for) the envelope or payload, and refuses non-zero padding.
#[test]
fn limits_and_padding_are_enforced_on_read() {
    let limits = FrameLimits {
        payload_bytes_max: 64,
    };
    let envelope = Request::GetNodeStatus.encode();
    // A header announcing 128 payload bytes, and nothing after it.
    let head = encode_frame(&envelope, 128, &FrameLimits::DEFAULT).expect("head");
    let mut reader = FrameReader::new(limits);
    assert_eq!(
        ready(reader.read_frame(&mut &head[..16])).map(|_| ()),
        Err(ProtocolError::PayloadTooLarge { len: 128, max: 64 })
    );

    let mut bytes = frame_bytes(&envelope, &[]);
    let last = bytes.len() - 1;
    assert_ne!(envelope.len() % 16, 0, "the test needs padding to corrupt");
    bytes[last] = 1;
    let mut reader = FrameReader::new(limits);
    assert_eq!(
        ready(reader.read_frame(&mut &bytes[..])).map(|_| ()),
        Err(ProtocolError::NonZeroPadding)
    );
}

/// Stream names, enums and key ranges are checked by the decoder, so the server never sees an
/// invalid one: here an envelope whose CreateStream name breaks the naming rule.
#[test]
fn invalid_field_values_are_refused() {
    let request = Request::CreateStream(CreateStream {
        name: name("abc"),
        shard_count: 1,
        replication_factor: 1,
        retention_ms: 1,
        durability: Durability::Fsync,
    });
    let mut envelope = request.encode();
    let at = envelope
        .windows(3)
        .position(|window| window == b"abc")
        .expect("name bytes");
    envelope[at] = b'-';
    assert!(matches!(
        Request::decode(&envelope),
        Err(ProtocolError::InvalidField {
            field: "CreateStream.name",
            ..
        })
    ));
}

/// A writer whose payload parts do not add up to the length in its head would desynchronise
/// the peer: that is a bug of the caller, and it stops rather than writes.
#[test]
#[should_panic(expected = "frame head announces a payload of Some(32) bytes, parts hold 16")]
fn write_frame_refuses_parts_that_do_not_match_the_head() {
    let head =
        encode_frame(&Request::GetNodeStatus.encode(), 32, &FrameLimits::DEFAULT).expect("head");
    let mut sink = Vec::new();
    let _ = ready(write_frame(&mut sink, &head, &[&[0; 16]]));
}

/// The reader's future over quinn's stream is `Send`, so the tokio client can spawn it.
#[test]
fn quinn_reader_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    #[allow(dead_code)]
    fn check(reader: &mut FrameReader, recv: &mut quinn::RecvStream, send: &mut quinn::SendStream) {
        let read = reader.read_response(recv);
        assert_send(&read);
        let write = write_request(send, &Request::GetNodeStatus, &[], &FrameLimits::DEFAULT);
        assert_send(&write);
    }
}
