//! A stand-in node for the SDK's loopback tests: two "cores" (two quinn endpoints on tokio, on
//! consecutive ports) speaking the wire protocol from `runnel_net::protocol`, with streams kept
//! in memory. It follows `docs/format/protocol.md` closely enough to exercise the client's
//! QUIC path — handshake, lazy connections per core, paging, routing by owner core, reads —
//! and has knobs to break connections at chosen moments. It is not the server: end-to-end
//! tests against the real binary live in the workspace's `tests/`.

#![allow(dead_code, missing_docs)]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use quinn::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use runnel_core::batch::{stamp, AlignedBytes};
use runnel_core::{hash128, BatchView, Epoch, KeyRange, Limits, Offset, ShardId, StreamName};
use runnel_net::protocol::*;
use runnel_net::{Identity, TransportLimits};

pub const CORES: u32 = 2;
const LIST_STREAMS_PAGE: usize = 1;
const LIST_SHARDS_PAGE: usize = 2;
const BATCHES_PER_CHUNK: usize = 2;

struct Shard {
    info: ShardInfo,
    batches: Vec<AlignedBytes>,
    next_offset: u64,
    start_offset: u64,
}

struct Stream {
    info: StreamInfo,
    shards: Vec<Shard>,
}

#[derive(Default)]
struct State {
    streams: BTreeMap<String, Stream>,
    next_shard_id: u64,
    connections: Vec<quinn::Connection>,
    /// The nodes `ListNodes` answers with: id and base port.
    nodes: Vec<(u64, u16)>,
    /// The node new streams' shards go to (none: node 1).
    place_on: Option<u64>,
    /// Requests served, by node and kind.
    requests: BTreeMap<(u64, &'static str), usize>,
}

/// Options of a client of `node`: its certificate trusted, short backoffs.
pub fn options(node: &MockNode) -> runnel_client::ClientOptions {
    runnel_client::ClientOptions {
        ca_cert_path: Some(node.cert_path.clone()),
        request_timeout_ms: 5_000,
        retry_backoff_ms_min: 1,
        retry_backoff_ms_max: 10,
        ..runnel_client::ClientOptions::default()
    }
}

/// A client connected to `node` with [`options`].
pub async fn connect(node: &MockNode) -> runnel_client::Client {
    runnel_client::Client::connect(&node.url(), options(node))
        .await
        .expect("connects")
}

/// The stand-in node.
pub struct MockNode {
    /// Its id (1 unless started as part of a cluster).
    pub node_id: u64,
    pub base_port: u16,
    pub cert_path: PathBuf,
    _directory: Arc<tempfile::TempDir>,
    state: Arc<Mutex<State>>,
    /// Close the connection on the next `Append`, after reading it and before answering.
    pub drop_next_append: Arc<AtomicBool>,
    /// Answer the next request with `Busy`.
    pub busy_next: Arc<AtomicBool>,
    endpoints: Vec<quinn::Endpoint>,
}

impl MockNode {
    /// Starts both cores on loopback, with a fresh self-signed certificate for `localhost`
    /// and `127.0.0.1`, written as PEM to `cert_path`.
    pub async fn start() -> MockNode {
        MockNode::start_cluster(1).await.remove(0)
    }

    /// Starts `count` stand-in nodes (ids 1 to `count`) that share one cluster's streams
    /// and one certificate; each lists them all in `ListNodes`.
    pub async fn start_cluster(count: u64) -> Vec<MockNode> {
        let directory = tempfile::tempdir().expect("temporary directory");
        let certified =
            rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
                .expect("certificate");
        let cert_path = directory.path().join("cert.pem");
        std::fs::write(&cert_path, certified.cert.pem()).expect("write the certificate");
        let cert = CertificateDer::from(certified.cert.der().to_vec());
        let key = certified.key_pair.serialize_der();
        let config = || {
            runnel_net::tls::server_config(
                Identity {
                    cert_chain: vec![cert.clone()],
                    key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.clone())),
                },
                &TransportLimits::DEFAULT,
            )
            .expect("server config")
        };
        let state = Arc::new(Mutex::new(State {
            next_shard_id: 1,
            ..State::default()
        }));
        let directory = Arc::new(directory);
        let mut nodes = Vec::new();
        for node_id in 1..=count {
            let endpoints = bind_consecutive(&config);
            let base_port = endpoints[0].local_addr().expect("bound").port();
            state
                .lock()
                .expect("state")
                .nodes
                .push((node_id, base_port));
            let node = MockNode {
                node_id,
                base_port,
                cert_path: cert_path.clone(),
                _directory: Arc::clone(&directory),
                state: Arc::clone(&state),
                drop_next_append: Arc::new(AtomicBool::new(false)),
                busy_next: Arc::new(AtomicBool::new(false)),
                endpoints,
            };
            node.serve();
            nodes.push(node);
        }
        nodes
    }

    fn serve(&self) {
        for (core, endpoint) in self.endpoints.iter().cloned().enumerate() {
            let server = self.server(core as u32);
            tokio::spawn(async move {
                while let Some(incoming) = endpoint.accept().await {
                    let server = server.clone();
                    tokio::spawn(async move {
                        if let Ok(connection) = incoming.await {
                            server.serve(connection).await;
                        }
                    });
                }
            });
        }
    }

    /// New streams' shards go to node `node` (which `ListNodes` may not list).
    pub fn place_new_shards_on(&self, node: u64) {
        self.state.lock().expect("state").place_on = Some(node);
    }

    /// Moves every shard of `stream` to node `node` (on the server side only: the client
    /// learns of it from `NotOwner`).
    pub fn move_shards(&self, stream: &str, node: u64) {
        let mut state = self.state.lock().expect("state");
        for shard in &mut state.streams.get_mut(stream).expect("stream").shards {
            shard.info.node = node;
        }
    }

    /// Requests of `kind` served by node `node`.
    pub fn requests(&self, node: u64, kind: &str) -> usize {
        let state = self.state.lock().expect("state");
        state
            .requests
            .iter()
            .filter(|((served_by, served), _)| *served_by == node && *served == kind)
            .map(|(_, count)| count)
            .sum()
    }

    /// Records stored in every shard of `stream`.
    pub fn stored_records(&self, stream: &str) -> u64 {
        let state = self.state.lock().expect("state");
        state.streams.get(stream).map_or(0, |stream| {
            stream
                .shards
                .iter()
                .map(|shard| shard.next_offset - shard.start_offset)
                .sum()
        })
    }

    pub fn url(&self) -> String {
        format!("runnel://127.0.0.1:{}", self.base_port)
    }

    /// Closes every connection as a node shutting down would.
    pub fn close_connections(&self) {
        let connections = std::mem::take(&mut self.state.lock().expect("state").connections);
        for connection in connections {
            connection.close(CloseCode::ShuttingDown.varint(), b"restarting");
        }
    }

    /// Splits an open shard of `stream` (on the server side only: the client learns of it
    /// from the server's refusals).
    pub fn split(&self, stream: &str, shard: ShardId) {
        let mut state = self.state.lock().expect("state");
        let mut next_id = state.next_shard_id;
        let stream = state.streams.get_mut(stream).expect("stream");
        let parent = stream
            .shards
            .iter_mut()
            .find(|s| s.info.id == shard)
            .expect("shard");
        parent.info.status = ShardStatus::Sealed;
        let (low, high) = parent.info.key_range.split().expect("splittable");
        let node = parent.info.node;
        let mut children = Vec::new();
        for (index, range) in [low, high].into_iter().enumerate() {
            let mut info = shard_info(next_id, range, index as u32);
            info.node = node;
            info.parents = vec![shard];
            children.push(Shard {
                info,
                batches: Vec::new(),
                next_offset: 0,
                start_offset: 0,
            });
            next_id += 1;
        }
        stream.shards.extend(children);
        stream.info.shard_count += 1;
        state.next_shard_id = next_id;
    }

    fn server(&self, core: u32) -> CoreServer {
        CoreServer {
            node_id: self.node_id,
            core,
            base_port: self.base_port,
            state: Arc::clone(&self.state),
            drop_next_append: Arc::clone(&self.drop_next_append),
            busy_next: Arc::clone(&self.busy_next),
        }
    }
}

impl Drop for MockNode {
    fn drop(&mut self) {
        for endpoint in &self.endpoints {
            endpoint.close(CloseCode::Done.varint(), b"test over");
        }
    }
}

/// Two endpoints on consecutive loopback ports.
fn bind_consecutive(config: &dyn Fn() -> quinn::ServerConfig) -> Vec<quinn::Endpoint> {
    for _ in 0..50 {
        let first = quinn::Endpoint::server(config(), SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .expect("bind core 0");
        let port = first.local_addr().expect("bound").port();
        let Some(next) = port.checked_add(1) else {
            continue;
        };
        if let Ok(second) =
            quinn::Endpoint::server(config(), SocketAddr::from((Ipv4Addr::LOCALHOST, next)))
        {
            return vec![first, second];
        }
    }
    panic!("no two consecutive free UDP ports on loopback");
}

fn shard_info(id: u64, range: KeyRange, core: u32) -> ShardInfo {
    ShardInfo {
        id: ShardId(id),
        key_range: range,
        status: ShardStatus::Open,
        node: 1,
        core,
        epoch: Epoch(1),
        start_offset: None,
        next_offset: None,
        parents: Vec::new(),
        children: Vec::new(),
        replicas: vec![runnel_net::protocol::ReplicaPlacement { node: 1, core }],
    }
}

#[derive(Clone)]
struct CoreServer {
    node_id: u64,
    core: u32,
    base_port: u16,
    state: Arc<Mutex<State>>,
    drop_next_append: Arc<AtomicBool>,
    busy_next: Arc<AtomicBool>,
}

/// What to do with a request: answer with frames, or close the connection unanswered.
enum Answer {
    Frames(Vec<(Response, Vec<u8>)>),
    CloseConnection,
}

fn error(code: ErrorCode, message: impl Into<String>) -> Answer {
    Answer::Frames(vec![(
        Response::Error(ErrorResponse::new(code, message)),
        Vec::new(),
    )])
}

fn one(response: Response) -> Answer {
    Answer::Frames(vec![(response, Vec::new())])
}

impl CoreServer {
    async fn serve(self, connection: quinn::Connection) {
        self.state
            .lock()
            .expect("state")
            .connections
            .push(connection.clone());
        let limits = FrameLimits::DEFAULT;
        let Ok((mut send, mut recv)) = connection.accept_bi().await else {
            return;
        };
        let mut reader = FrameReader::new(limits);
        match reader.read_request(&mut recv).await {
            Ok(Some((Request::Hello(hello), _))) => {
                let Ok(version) = negotiate(&hello, PROTOCOL_VERSION_MIN, PROTOCOL_VERSION_MAX)
                else {
                    connection.close(CloseCode::UnsupportedVersion.varint(), b"version");
                    return;
                };
                let ok = Response::HelloOk(HelloOk {
                    version,
                    node_id: self.node_id,
                    core: self.core,
                    core_count: CORES,
                    base_port: self.base_port,
                    server_version: "mock".into(),
                    record_bytes_max: Limits::DEFAULT.record_bytes_max as u32,
                    batch_bytes_max: Limits::DEFAULT.batch_bytes_max as u32,
                    frame_payload_bytes_max: limits.payload_bytes_max,
                });
                if write_response(&mut send, &ok, &[], &limits).await.is_err() {
                    return;
                }
                let _ = send.finish();
            }
            _ => {
                connection.close(CloseCode::ProtocolViolation.varint(), b"Hello first");
                return;
            }
        }
        while let Ok((send, recv)) = connection.accept_bi().await {
            let server = self.clone();
            let connection = connection.clone();
            tokio::spawn(async move { server.serve_stream(connection, send, recv).await });
        }
    }

    async fn serve_stream(
        self,
        connection: quinn::Connection,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
    ) {
        let limits = FrameLimits::DEFAULT;
        let mut reader = FrameReader::new(limits);
        let (request, payload) = match reader.read_request(&mut recv).await {
            Ok(Some((request, payload))) => (request, std::mem::take(payload)),
            Ok(None) => return,
            Err(problem) => {
                let answer = Response::Error(ErrorResponse::invalid_request(&problem));
                let _ = write_response(&mut send, &answer, &[], &limits).await;
                return;
            }
        };
        let answer = if self.busy_next.swap(false, Ordering::SeqCst) {
            let mut busy = ErrorResponse::new(ErrorCode::Busy, "busy");
            busy.retry_after_ms = Some(1);
            one(Response::Error(busy))
        } else {
            self.answer(request, payload)
        };
        match answer {
            Answer::CloseConnection => connection.close(CloseCode::Internal.varint(), b"boom"),
            Answer::Frames(frames) => {
                for (response, payload) in frames {
                    if write_response(&mut send, &response, &[&payload], &limits)
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                let _ = send.finish();
                let _ = send.stopped().await;
            }
        }
    }

    fn answer(&self, request: Request, payload: AlignedBytes) -> Answer {
        let mut state = self.state.lock().expect("state");
        *state
            .requests
            .entry((self.node_id, request.kind()))
            .or_default() += 1;
        match request {
            Request::ListNodes => {
                let nodes = state
                    .nodes
                    .iter()
                    .map(|&(id, base_port)| NodeInfo {
                        id,
                        state: NodeState::Running,
                        address: format!("127.0.0.1:{base_port}"),
                        version: Some("mock".into()),
                        cores: CORES,
                        leader: id == 1,
                        voter: true,
                    })
                    .collect();
                one(Response::NodeList(NodeList { nodes }))
            }
            Request::CreateStream(create) => {
                if state.streams.contains_key(create.name.as_str()) {
                    return error(ErrorCode::StreamExists, "exists");
                }
                let ranges = match KeyRange::split_space(u64::from(create.shard_count)) {
                    Ok(ranges) => ranges,
                    Err(problem) => return error(ErrorCode::InvalidRequest, problem.to_string()),
                };
                let mut shards = Vec::new();
                let node = state.place_on.unwrap_or(1);
                for (index, range) in ranges.into_iter().enumerate() {
                    let id = state.next_shard_id;
                    state.next_shard_id += 1;
                    let mut info = shard_info(id, range, index as u32 % CORES);
                    info.node = node;
                    shards.push(Shard {
                        info,
                        batches: Vec::new(),
                        next_offset: 0,
                        start_offset: 0,
                    });
                }
                let info = StreamInfo {
                    name: create.name.clone(),
                    shard_count: create.shard_count,
                    replication_factor: create.replication_factor,
                    retention_ms: create.retention_ms,
                    durability: create.durability,
                    shards: Vec::new(),
                    shards_truncated: false,
                };
                let stream = Stream { info, shards };
                let described = describe(&stream);
                state.streams.insert(create.name.to_string(), stream);
                one(Response::StreamInfo(described))
            }
            Request::ListStreams(list) => {
                let after = list.start_after.map(|name| name.to_string());
                let names: Vec<&Stream> = state
                    .streams
                    .iter()
                    .filter(|(name, _)| after.as_ref().is_none_or(|after| *name > after))
                    .map(|(_, stream)| stream)
                    .collect();
                let streams = names
                    .iter()
                    .take(LIST_STREAMS_PAGE)
                    .map(|stream| stream.info.clone())
                    .collect();
                one(Response::StreamList(StreamList {
                    streams,
                    more: names.len() > LIST_STREAMS_PAGE,
                }))
            }
            Request::DescribeStream(describe_request) => {
                match state.streams.get(describe_request.name.as_str()) {
                    // Always cut, so the client has to page with ListShards.
                    Some(stream) => {
                        let mut info = describe(stream);
                        info.shards.truncate(1);
                        info.shards_truncated = true;
                        one(Response::StreamInfo(info))
                    }
                    None => error(ErrorCode::UnknownStream, "no such stream"),
                }
            }
            Request::DeleteStream(delete) => match state.streams.remove(delete.name.as_str()) {
                Some(_) => one(Response::DeleteStreamOk(DeleteStreamOk {
                    name: delete.name,
                })),
                None => error(ErrorCode::UnknownStream, "no such stream"),
            },
            Request::ListShards(list) => match state.streams.get(list.stream.as_str()) {
                Some(stream) => {
                    let after: Vec<ShardInfo> = describe(stream)
                        .shards
                        .into_iter()
                        .filter(|shard| list.start_after.is_none_or(|after| shard.id > after))
                        .collect();
                    one(Response::ShardList(ShardList {
                        stream: list.stream,
                        more: after.len() > LIST_SHARDS_PAGE,
                        shards: after.into_iter().take(LIST_SHARDS_PAGE).collect(),
                    }))
                }
                None => error(ErrorCode::UnknownStream, "no such stream"),
            },
            Request::Append(append) => {
                if self.drop_next_append.swap(false, Ordering::SeqCst) {
                    return Answer::CloseConnection;
                }
                let Some(shard) = self.owned_shard(&mut state, &append.stream, append.shard) else {
                    return self.shard_error(&state, &append.stream, append.shard);
                };
                if shard.info.status == ShardStatus::Sealed {
                    return error(ErrorCode::ShardSealed, "sealed");
                }
                let mut batch = payload;
                let (count, wrong_key) = match BatchView::validate(&batch, &Limits::DEFAULT) {
                    Ok(view) => {
                        let records = view.records().expect("validated");
                        let wrong = records
                            .filter_map(|record| record.key())
                            .any(|key| !shard.info.key_range.contains(hash128(key)));
                        (u64::from(view.record_count()), wrong)
                    }
                    Err(problem) => return error(ErrorCode::InvalidBatch, problem.to_string()),
                };
                if wrong_key {
                    return error(ErrorCode::WrongShard, "key outside the shard's range");
                }
                let base = shard.next_offset;
                stamp(&mut batch, Offset(base), Epoch(1)).expect("stampable");
                shard.batches.push(batch);
                shard.next_offset += count;
                one(Response::AppendOk(AppendOk {
                    shard: shard.info.id,
                    base_offset: Offset(base),
                    last_offset: Offset(base + count - 1),
                }))
            }
            Request::Read(read) => {
                let Some(shard) = self.owned_shard(&mut state, &read.stream, read.shard) else {
                    return self.shard_error(&state, &read.stream, read.shard);
                };
                let start = match read.from {
                    ReadFrom::Earliest => shard.start_offset,
                    ReadFrom::Latest => shard.next_offset,
                    ReadFrom::Offset(offset) => offset.0,
                    ReadFrom::Timestamp(_) => shard.start_offset,
                };
                let until = read.until.map_or(u64::MAX, |until| until.0);
                let mut selected: Vec<&AlignedBytes> = Vec::new();
                let mut next = start;
                for batch in &shard.batches {
                    let header = runnel_core::BatchHeader::decode(batch).expect("stored");
                    let first = header.base_offset.0;
                    let after = first + u64::from(header.record_count);
                    if after > start && first < until {
                        selected.push(batch);
                        next = after;
                    }
                }
                let mut frames = Vec::new();
                for chunk in selected.chunks(BATCHES_PER_CHUNK) {
                    let mut payload = Vec::new();
                    for batch in chunk {
                        payload.extend_from_slice(batch);
                    }
                    let after_chunk = chunk
                        .last()
                        .map(|batch| {
                            let header = runnel_core::BatchHeader::decode(batch).expect("stored");
                            header.base_offset.0 + u64::from(header.record_count)
                        })
                        .unwrap_or(start);
                    frames.push((
                        Response::ReadChunk(ReadChunk {
                            next_offset: Offset(after_chunk),
                            batch_count: chunk.len() as u32,
                        }),
                        payload,
                    ));
                }
                let reason = if next >= until {
                    ReadEndReason::UntilReached
                } else {
                    ReadEndReason::CaughtUp
                };
                frames.push((
                    Response::ReadEnd(ReadEnd {
                        next_offset: Offset(next.min(until)),
                        reason,
                    }),
                    Vec::new(),
                ));
                Answer::Frames(frames)
            }
            Request::Trim(trim) => {
                let Some(shard) = self.owned_shard(&mut state, &trim.stream, trim.shard) else {
                    return self.shard_error(&state, &trim.stream, trim.shard);
                };
                shard.start_offset = shard.start_offset.max(trim.offset.0.min(shard.next_offset));
                one(Response::TrimOk(TrimOk {
                    shard: trim.shard,
                    start_offset: Offset(shard.start_offset),
                }))
            }
            Request::GetNodeStatus => one(Response::NodeStatus(NodeStatus {
                node_id: self.node_id,
                server_version: "mock".into(),
                uptime_ms: 42,
                core_count: CORES,
                base_port: self.base_port,
                cores: (0..CORES)
                    .map(|core| CoreStatus {
                        core,
                        port: self.base_port + core as u16,
                        shard_count: 0,
                        allocations: None,
                    })
                    .collect(),
                other_allocations: None,
            })),
            Request::Hello(_) => error(ErrorCode::InvalidRequest, "Hello twice"),
            // Subscriptions are tested against the real server (tests/tests/subscriptions.rs).
            other => error(
                ErrorCode::InvalidRequest,
                format!("the fake server does not serve {}", other.kind()),
            ),
        }
    }

    /// The shard, if it exists and this core owns it.
    fn owned_shard<'a>(
        &self,
        state: &'a mut State,
        stream: &StreamName,
        shard: ShardId,
    ) -> Option<&'a mut Shard> {
        state
            .streams
            .get_mut(stream.as_str())?
            .shards
            .iter_mut()
            .find(|s| s.info.id == shard && s.info.node == self.node_id && s.info.core == self.core)
    }

    fn shard_error(&self, state: &State, stream: &StreamName, shard: ShardId) -> Answer {
        let Some(stream) = state.streams.get(stream.as_str()) else {
            return error(ErrorCode::UnknownStream, "no such stream");
        };
        match stream.shards.iter().find(|s| s.info.id == shard) {
            Some(owner) => {
                let mut refusal = ErrorResponse::new(ErrorCode::NotOwner, "another core");
                refusal.owner = Some(ShardOwner {
                    node: owner.info.node,
                    core: owner.info.core,
                });
                one(Response::Error(refusal))
            }
            None => error(ErrorCode::UnknownShard, "no such shard"),
        }
    }
}

fn describe(stream: &Stream) -> StreamInfo {
    let mut info = stream.info.clone();
    info.shards = stream
        .shards
        .iter()
        .map(|shard| {
            let mut info = shard.info.clone();
            info.start_offset = Some(Offset(shard.start_offset));
            info.next_offset = Some(Offset(shard.next_offset));
            info
        })
        .collect();
    info
}
