//! Node-to-node transport on core 0's QUIC endpoint, with mutual TLS (ALPN `runnel-peer/1`).
//!
//! Core 0 of each node hosts the metadata group and talks to core 0 of the other nodes through
//! [`Peers`]: one-way [`PeerMessage`]s (Raft messages, heartbeats) that may be lost, and
//! [`PeerRequest`]s answered with a [`PeerResponse`] within a timeout.
//!
//! Connections carry traffic one way: the node that dials sends, the node that accepts
//! receives. Each node dials its own long-lived connection to every peer it sends to (on
//! demand, again with backoff after a failure), so two nodes talking both ways hold two
//! connections, and no simultaneous-dial race needs resolving. On a connection the dialler
//! opens one unidirectional stream whose first frame is its [`Hello`] (its node id; mutual TLS
//! proves it holds a certificate of the cluster's CA), followed by its one-way messages in
//! order; each request is one bidirectional stream (the request frame, then the response).
//! Frames are drawn in `docs/format/peer.md`.
//!
//! Tests may make a node drop peer frames to and from chosen nodes (`fault`: off unless the
//! configuration names a fault file).
//!
//! Bounds: each peer's send queue (messages and bytes), the inbound queue, every frame's size
//! (Raft messages up to 256 MiB, others 16 MiB), dials and requests (timeouts). Sending never
//! waits: a message for a peer that is unreachable or whose queue is full is dropped, and the
//! sender's protocol (raft) retries. Fault model: a peer may vanish, restart, or send
//! anything; a malformed frame closes that connection only. Failures are logged at warn,
//! at most once per `warn_interval_ms` per peer.

pub mod fault;
mod frame;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use runnel_net::tls::{
    cluster_server_config, has_verified_client_certificate, load_ca, negotiated_alpn,
    peer_client_config,
};
use runnel_net::{Identity, TlsError, TransportLimits, PEER_ALPN};
use runnel_segment::runtime::channel::{self, LocalReceiver, LocalSender};
use runnel_segment::runtime::{first_of, sleep, spawn, spawn_blocking, Event, First};
use thiserror::Error;

pub use fault::{watch_fault_file, FaultRules};
pub use frame::{
    decode, encode, read_frame, Frame, FrameError, FrameLimits, Hello, NodeHello, PeerMessage,
    PeerRefusal, PeerRequest, PeerResponse, FRAME_HEADER_BYTES, FRAME_VERSION, STRING_BYTES_MAX,
};

/// Application close codes of peer connections (their own space, apart from the client
/// protocol's `CloseCode`: the ALPN tells which applies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerCloseCode {
    /// The connection is no longer needed (a request to an address was answered, the peer's
    /// address changed, the transport closed).
    Done = 0,
    /// This core takes no peer connections (not core 0, or no cluster CA configured).
    NotAccepting = 16,
    /// The client presented no certificate the cluster's CA signed.
    Unauthenticated = 17,
    /// No `Hello` frame opened the connection in time.
    NoHello = 18,
    /// The dialler meant another node (`Hello.to` is not this node's id).
    WrongNode = 19,
    /// A frame broke the format or came where it does not belong.
    MalformedFrame = 20,
    /// The dialler belongs to another cluster (its `Hello.cluster` is not this node's).
    ForeignCluster = 21,
}

impl PeerCloseCode {
    /// The code as quinn takes it.
    pub fn varint(self) -> quinn::VarInt {
        quinn::VarInt::from_u32(self as u32)
    }
}

/// Whether a server-side connection negotiated the peer ALPN (it belongs to [`Peers::accept`]).
pub fn is_peer_connection(connection: &quinn::Connection) -> bool {
    negotiated_alpn(connection).as_deref() == Some(PEER_ALPN)
}

/// The QUIC limits for peer connections (pass them to `runnel_net::peer_client_config`): the
/// defaults, with keep-alives every second and a 10-second idle timeout, so that a connection
/// to a peer that crashed (and whose restarted endpoint ignores it) is given up in seconds.
pub fn peer_transport_limits() -> TransportLimits {
    let mut limits = TransportLimits::DEFAULT;
    limits.idle_timeout_ms = 10_000;
    limits.keep_alive_interval_ms = Some(1_000);
    limits
}

/// The TLS configurations of a node whose cluster CA is the PEM file `ca_path`: the server
/// configuration for its endpoints (clients without certificates and peers with one) and the
/// client configuration with which core 0 dials its peers ([`Peers::new`]).
pub fn cluster_tls(
    identity: Identity,
    ca_path: &Path,
) -> Result<(quinn::ServerConfig, quinn::ClientConfig), TlsError> {
    let ca = load_ca(ca_path)?;
    let for_peers = Identity {
        cert_chain: identity.cert_chain.clone(),
        key: identity.key.clone_key(),
    };
    let server = cluster_server_config(identity, &ca, &TransportLimits::DEFAULT)?;
    let client = peer_client_config(for_peers, &ca, &peer_transport_limits())?;
    Ok((server, client))
}

/// The bounds of a [`Peers`] transport.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerLimits {
    /// The largest frame bodies accepted.
    pub frames: FrameLimits,
    /// Messages queued for one peer before more are dropped.
    pub queue_messages_max: usize,
    /// Encoded bytes queued for one peer before more are dropped (at least one largest Raft
    /// message must fit).
    pub queue_bytes_max: usize,
    /// Inbound messages and requests waiting for [`Peers::next`] before readers wait (their
    /// peers then wait on QUIC flow control).
    pub inbound_max: usize,
    /// How long a dial (QUIC handshake and `Hello`) may take.
    pub dial_timeout_ms: u64,
    /// How long an accepted connection may take to send its `Hello`.
    pub hello_timeout_ms: u64,
    /// The first wait before dialling a peer again after a failure; doubled per failure.
    pub backoff_initial_ms: u64,
    /// The longest wait between dials of an unreachable peer.
    pub backoff_max_ms: u64,
    /// The least time between two warnings about the same peer.
    pub warn_interval_ms: u64,
}

impl PeerLimits {
    /// The defaults.
    pub const DEFAULT: PeerLimits = PeerLimits {
        frames: FrameLimits::DEFAULT,
        queue_messages_max: 4096,
        queue_bytes_max: 512 << 20,
        inbound_max: 1024,
        dial_timeout_ms: 5_000,
        hello_timeout_ms: 5_000,
        backoff_initial_ms: 100,
        backoff_max_ms: 5_000,
        warn_interval_ms: 30_000,
    };
}

impl Default for PeerLimits {
    fn default() -> PeerLimits {
        PeerLimits::DEFAULT
    }
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerTarget {
    /// A node whose address is known ([`Peers::set_address`]), on its long-lived connection.
    Node(u64),
    /// An address (`host:port`, e.g. a seed before its id is known), on a connection of its
    /// own that is closed after the answer.
    Address(String),
}

/// Why a request failed (one-way messages fail silently).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PeerError {
    /// No address is known for the node.
    #[error("no address known for node {node}")]
    NoAddress {
        /// The node.
        node: u64,
    },
    /// The node could not be reached lately; no dial before the backoff ends.
    #[error("node {node} is unreachable (next dial in {retry_in_ms} ms)")]
    Unreachable {
        /// The node.
        node: u64,
        /// When the next dial may happen.
        retry_in_ms: u64,
    },
    /// The address is not `host:port`, or does not resolve.
    #[error("invalid peer address {address:?}: {reason}")]
    InvalidAddress {
        /// The address.
        address: String,
        /// Why.
        reason: String,
    },
    /// The connection could not be made or was lost.
    #[error("connection to {address} failed: {reason}")]
    Connection {
        /// The address.
        address: String,
        /// quinn's reason.
        reason: String,
    },
    /// A frame could not be encoded, or the answer was not a valid frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The peer ended the request stream without an answer.
    #[error("the peer did not answer")]
    Unanswered,
    /// No answer within the timeout.
    #[error("no answer within {timeout_ms} ms")]
    Timeout {
        /// The timeout.
        timeout_ms: u64,
    },
    /// This transport was closed.
    #[error("the peer transport is closed")]
    Closed,
}

/// Something a peer sent, for [`Peers::next`].
#[derive(Debug)]
pub enum Inbound {
    /// A one-way message.
    Message {
        /// The sending node.
        from: u64,
        /// The message.
        message: PeerMessage,
    },
    /// A request: answer it with `reply`.
    Request {
        /// The asking node.
        from: u64,
        /// The request.
        request: PeerRequest,
        /// Where the answer goes.
        reply: Reply,
    },
}

/// The way back to a request's asker. Dropping it unanswered resets the request's stream.
pub struct Reply {
    sender: LocalSender<PeerResponse>,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply").finish_non_exhaustive()
    }
}

impl Reply {
    /// Answers the request (a no-op if the asker gave up).
    pub fn send(self, response: PeerResponse) {
        let _ = self.sender.try_send(response);
    }
}

/// Rate-limits warnings about one peer: one per interval, counting the rest.
#[derive(Default)]
struct WarnLimiter {
    last: Cell<Option<Instant>>,
    suppressed: Cell<u64>,
}

impl WarnLimiter {
    /// Some(how many were suppressed since the last warning) if a warning may be logged now.
    fn allow(&self, interval: Duration) -> Option<u64> {
        let now = Instant::now();
        match self.last.get() {
            Some(last) if now.duration_since(last) < interval => {
                self.suppressed.set(self.suppressed.get() + 1);
                None
            }
            _ => {
                self.last.set(Some(now));
                Some(self.suppressed.replace(0))
            }
        }
    }
}

/// What this node knows of one peer it sends to.
struct Peer {
    id: u64,
    address: RefCell<Option<String>>,
    /// Encoded frames waiting for the writer, oldest first.
    queue: RefCell<VecDeque<Vec<u8>>>,
    queued_bytes: Cell<usize>,
    /// Notified when a frame is queued or the transport closes.
    queued: Event,
    /// The long-lived connection, once dialled.
    link: RefCell<Option<quinn::Connection>>,
    /// The message stream of the last dial (its `Hello` written), for the writer to take,
    /// with the connection's stable id.
    fresh_stream: RefCell<Option<(usize, quinn::SendStream)>>,
    dialling: Cell<bool>,
    /// Notified when a dial ends.
    dialled: Event,
    backoff: Cell<Duration>,
    retry_at: Cell<Option<Instant>>,
    failures: Cell<u64>,
    dropped: Cell<u64>,
    warnings: WarnLimiter,
    writer_started: Cell<bool>,
}

impl Peer {
    fn new(id: u64, backoff: Duration) -> Peer {
        Peer {
            id,
            address: RefCell::new(None),
            queue: RefCell::new(VecDeque::new()),
            queued_bytes: Cell::new(0),
            queued: Event::default(),
            link: RefCell::new(None),
            fresh_stream: RefCell::new(None),
            dialling: Cell::new(false),
            dialled: Event::default(),
            backoff: Cell::new(backoff),
            retry_at: Cell::new(None),
            failures: Cell::new(0),
            dropped: Cell::new(0),
            warnings: WarnLimiter::default(),
            writer_started: Cell::new(false),
        }
    }

    /// The live connection, if any (a closed one is forgotten).
    fn live_link(&self) -> Option<quinn::Connection> {
        let mut link = self.link.borrow_mut();
        if link
            .as_ref()
            .is_some_and(|connection| connection.close_reason().is_some())
        {
            *link = None;
        }
        link.clone()
    }

    /// Forgets `connection` if it is still the link, closing it.
    fn drop_link(&self, connection: &quinn::Connection, code: PeerCloseCode, reason: &[u8]) {
        let mut link = self.link.borrow_mut();
        if link
            .as_ref()
            .is_some_and(|current| current.stable_id() == connection.stable_id())
        {
            *link = None;
        }
        connection.close(code.varint(), reason);
    }

    /// Empties the queue (the peer is unreachable); returns how many frames were dropped.
    fn drain(&self) -> usize {
        let dropped = self.queue.borrow_mut().drain(..).count();
        self.queued_bytes.set(0);
        dropped
    }
}

/// The node-to-node transport of core 0 (see the module header). Its tasks (a writer per peer
/// it sent to, a reader per accepted connection) hold it until [`Peers::close`].
pub struct Peers {
    my_id: u64,
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    limits: PeerLimits,
    peers: RefCell<HashMap<u64, Rc<Peer>>>,
    heard: RefCell<HashMap<u64, Instant>>,
    /// The cluster this node belongs to, once its metadata names one.
    cluster: Cell<Option<u64>>,
    /// This process's incarnation, sent in every `Hello`.
    incarnation: u64,
    /// The incarnation each node's last `Hello` carried.
    incarnations: RefCell<HashMap<u64, u64>>,
    inbound_sender: LocalSender<Inbound>,
    inbound: LocalReceiver<Inbound>,
    /// Accepted connections, by stable id, to close them with the transport.
    accepted: RefCell<HashMap<usize, quinn::Connection>>,
    closed: Cell<bool>,
    /// Frames dropped on purpose (tests only: `fault`); empty unless a fault file says so.
    faults: RefCell<FaultRules>,
    /// This transport, for the tasks `send` starts.
    me: std::rc::Weak<Peers>,
}

impl Peers {
    /// A transport for node `my_id` that dials from `endpoint` with `client` (built by
    /// `runnel_net::peer_client_config`), with the default limits.
    pub fn new(my_id: u64, endpoint: quinn::Endpoint, client: quinn::ClientConfig) -> Rc<Peers> {
        Peers::with_limits(my_id, endpoint, client, PeerLimits::DEFAULT)
    }

    /// [`Peers::new`] with other limits.
    pub fn with_limits(
        my_id: u64,
        endpoint: quinn::Endpoint,
        client: quinn::ClientConfig,
        limits: PeerLimits,
    ) -> Rc<Peers> {
        assert!(
            limits.queue_bytes_max >= limits.frames.raft_bytes_max as usize + FRAME_HEADER_BYTES,
            "a peer's queue must hold the largest Raft message"
        );
        assert!(limits.inbound_max > 0 && limits.queue_messages_max > 0);
        let (inbound_sender, inbound) = channel::local(limits.inbound_max);
        Rc::new_cyclic(|me| Peers {
            me: me.clone(),
            my_id,
            endpoint,
            client,
            limits,
            peers: RefCell::new(HashMap::new()),
            heard: RefCell::new(HashMap::new()),
            cluster: Cell::new(None),
            incarnation: random_id(my_id),
            incarnations: RefCell::new(HashMap::new()),
            inbound_sender,
            inbound,
            accepted: RefCell::new(HashMap::new()),
            closed: Cell::new(false),
            faults: RefCell::new(FaultRules::default()),
        })
    }

    /// This node's id.
    pub fn my_id(&self) -> u64 {
        self.my_id
    }

    /// Sets the id of the cluster this node belongs to (from its metadata, once known): its
    /// `Hello`s carry it, and connections from nodes of another cluster are refused.
    pub fn set_cluster(&self, cluster: Option<u64>) {
        self.cluster.set(cluster);
    }

    /// The cluster id this node's `Hello`s carry.
    pub fn cluster(&self) -> Option<u64> {
        self.cluster.get()
    }

    /// Drops peer frames to and from nodes as `rules` say (fault injection, tests only: see
    /// [`fault`]); empty rules heal.
    pub fn set_faults(&self, rules: FaultRules) {
        *self.faults.borrow_mut() = rules;
    }

    /// Whether [`Peers::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    fn peer(&self, id: u64) -> Rc<Peer> {
        let backoff = Duration::from_millis(self.limits.backoff_initial_ms);
        Rc::clone(
            self.peers
                .borrow_mut()
                .entry(id)
                .or_insert_with(|| Rc::new(Peer::new(id, backoff))),
        )
    }

    fn warn_interval(&self) -> Duration {
        Duration::from_millis(self.limits.warn_interval_ms)
    }

    /// The address known for node `id`.
    pub fn address(&self, id: u64) -> Option<String> {
        self.peers
            .borrow()
            .get(&id)
            .and_then(|peer| peer.address.borrow().clone())
    }

    /// Where node `id` is (its advertised `host:base_port`): from the metadata and from Pings.
    /// A changed address closes the connection to the old one and forgets any backoff.
    pub fn set_address(&self, id: u64, address: &str) {
        let peer = self.peer(id);
        if peer.address.borrow().as_deref() == Some(address) {
            return;
        }
        tracing::debug!(peer = id, address, "peer address");
        *peer.address.borrow_mut() = Some(address.to_owned());
        if let Some(connection) = peer.live_link() {
            peer.drop_link(&connection, PeerCloseCode::Done, b"the address changed");
        }
        peer.retry_at.set(None);
        peer.backoff
            .set(Duration::from_millis(self.limits.backoff_initial_ms));
    }

    /// Forgets node `id` (removed from the cluster): its address, its queued messages and its
    /// connection go; nothing is sent to it until an address is set again.
    pub fn forget(&self, id: u64) {
        let Some(peer) = self.peers.borrow().get(&id).cloned() else {
            return;
        };
        *peer.address.borrow_mut() = None;
        peer.drain();
        if let Some(connection) = peer.live_link() {
            peer.drop_link(&connection, PeerCloseCode::Done, b"the node was removed");
        }
    }

    /// One-way send to node `id`: queued and sent in order on a long-lived connection (dialled
    /// on demand, re-dialled with backoff after failure); dropped, never blocking, when the
    /// peer is unreachable or its queue is full (raft retries). Never awaits.
    pub fn send(&self, to: u64, message: PeerMessage) {
        if self.closed.get() {
            return;
        }
        let peer = self.peer(to);
        let refused = if to == self.my_id {
            Some("it is this node".to_string())
        } else if self.faults.borrow().drops_to(to) {
            Some("fault injection drops frames to it".to_string())
        } else if peer.address.borrow().is_none() {
            Some("no address is known".to_string())
        } else if peer.live_link().is_none()
            && peer.retry_at.get().is_some_and(|at| Instant::now() < at)
        {
            Some("it is unreachable (backing off)".to_string())
        } else {
            None
        };
        let encoded = match refused {
            Some(reason) => Err(reason),
            None => encode(&Frame::Message(message)).map_err(|e| e.to_string()),
        };
        let frame = match encoded {
            Ok(frame) => frame,
            Err(reason) => return self.dropped(&peer, 1, &reason),
        };
        if peer.queue.borrow().len() >= self.limits.queue_messages_max
            || peer.queued_bytes.get() + frame.len() > self.limits.queue_bytes_max
        {
            return self.dropped(&peer, 1, "its send queue is full");
        }
        peer.queued_bytes.set(peer.queued_bytes.get() + frame.len());
        peer.queue.borrow_mut().push_back(frame);
        peer.queued.notify();
        if !peer.writer_started.get() {
            if let Some(peers) = self.me.upgrade() {
                peer.writer_started.set(true);
                spawn(async move { peers.write_messages(peer).await }).detach();
            }
        }
    }

    fn dropped(&self, peer: &Peer, count: usize, reason: &str) {
        if count == 0 {
            return;
        }
        peer.dropped.set(peer.dropped.get() + count as u64);
        if let Some(suppressed) = peer.warnings.allow(self.warn_interval()) {
            tracing::warn!(
                peer = peer.id,
                count,
                dropped_total = peer.dropped.get(),
                suppressed_warnings = suppressed,
                reason,
                "dropped messages to a peer"
            );
        }
    }

    /// The writer of one peer: sends its queued frames in order on the current connection's
    /// message stream, dialling when needed; drops the queue while the peer is unreachable.
    async fn write_messages(self: Rc<Self>, peer: Rc<Peer>) {
        let mut stream: Option<(usize, quinn::SendStream)> = None;
        loop {
            if self.closed.get() {
                return;
            }
            if peer.queue.borrow().is_empty() {
                peer.queued.listen().await;
                continue;
            }
            let connection = match self.link(&peer).await {
                Ok(connection) => connection,
                Err(error) => {
                    self.dropped(&peer, peer.drain(), &error.to_string());
                    continue;
                }
            };
            let id = connection.stable_id();
            if stream.as_ref().map(|(stream_id, _)| *stream_id) != Some(id) {
                stream = peer
                    .fresh_stream
                    .borrow_mut()
                    .take()
                    .filter(|(stream_id, _)| *stream_id == id);
            }
            let Some((_, send)) = stream.as_mut() else {
                // The stream of this connection was lost; dial again.
                peer.drop_link(&connection, PeerCloseCode::Done, b"lost the message stream");
                continue;
            };
            loop {
                let Some(frame) = peer.queue.borrow_mut().pop_front() else {
                    break;
                };
                let queued = peer.queued_bytes.get();
                assert!(
                    queued >= frame.len(),
                    "queued bytes count every queued frame"
                );
                peer.queued_bytes.set(queued - frame.len());
                if let Err(error) = send.write_all(&frame).await {
                    if let Some(suppressed) = peer.warnings.allow(self.warn_interval()) {
                        tracing::warn!(peer = peer.id, %error, suppressed_warnings = suppressed, "sending to a peer failed");
                    }
                    peer.dropped.set(peer.dropped.get() + 1);
                    peer.drop_link(&connection, PeerCloseCode::Done, b"send failed");
                    stream = None;
                    break;
                }
            }
        }
    }

    /// The live connection to `peer`, dialled if there is none and the backoff allows.
    async fn link(&self, peer: &Peer) -> Result<quinn::Connection, PeerError> {
        loop {
            if self.closed.get() {
                return Err(PeerError::Closed);
            }
            if let Some(connection) = peer.live_link() {
                return Ok(connection);
            }
            if peer.dialling.get() {
                peer.dialled.listen().await;
                continue;
            }
            let now = Instant::now();
            if let Some(at) = peer.retry_at.get().filter(|at| now < *at) {
                return Err(PeerError::Unreachable {
                    node: peer.id,
                    retry_in_ms: at.duration_since(now).as_millis() as u64,
                });
            }
            let Some(address) = peer.address.borrow().clone() else {
                return Err(PeerError::NoAddress { node: peer.id });
            };
            peer.dialling.set(true);
            let dialled = self.dial(&address, Some(peer.id)).await;
            peer.dialling.set(false);
            let outcome = match dialled {
                Ok((connection, stream)) => {
                    let failures = peer.failures.replace(0);
                    if failures > 0 {
                        tracing::info!(peer = peer.id, %address, failures, "peer reachable again");
                    } else {
                        tracing::debug!(peer = peer.id, %address, "connected to peer");
                    }
                    peer.retry_at.set(None);
                    peer.backoff
                        .set(Duration::from_millis(self.limits.backoff_initial_ms));
                    *peer.fresh_stream.borrow_mut() = Some((connection.stable_id(), stream));
                    *peer.link.borrow_mut() = Some(connection.clone());
                    Ok(connection)
                }
                Err(error) => {
                    let backoff = peer.backoff.get();
                    peer.retry_at.set(Some(Instant::now() + backoff));
                    peer.backoff
                        .set((backoff * 2).min(Duration::from_millis(self.limits.backoff_max_ms)));
                    peer.failures.set(peer.failures.get() + 1);
                    if let Some(suppressed) = peer.warnings.allow(self.warn_interval()) {
                        tracing::warn!(
                            peer = peer.id,
                            %address,
                            %error,
                            failures = peer.failures.get(),
                            retry_in_ms = backoff.as_millis() as u64,
                            suppressed_warnings = suppressed,
                            "cannot reach peer"
                        );
                    }
                    Err(error)
                }
            };
            peer.dialled.notify();
            return outcome;
        }
    }

    /// Dials `address` and sends the `Hello` on a new message stream, within the dial timeout.
    async fn dial(
        &self,
        address: &str,
        to: Option<u64>,
    ) -> Result<(quinn::Connection, quinn::SendStream), PeerError> {
        let timeout_ms = self.limits.dial_timeout_ms;
        let dialling = async {
            let (socket, server_name) = resolve(address).await?;
            let failed = |reason: String| PeerError::Connection {
                address: address.to_owned(),
                reason,
            };
            let connecting = self
                .endpoint
                .connect_with(self.client.clone(), socket, &server_name)
                .map_err(|e| failed(e.to_string()))?;
            let connection = connecting.await.map_err(|e| failed(e.to_string()))?;
            let mut stream = connection
                .open_uni()
                .await
                .map_err(|e| failed(e.to_string()))?;
            let hello = encode(&Frame::Hello(Hello {
                from: self.my_id,
                to,
                cluster: self.cluster.get(),
                incarnation: self.incarnation,
            }))?;
            stream
                .write_all(&hello)
                .await
                .map_err(|e| failed(e.to_string()))?;
            Ok((connection, stream))
        };
        match first_of(
            dialling,
            sleep(Duration::from_millis(timeout_ms)),
            std::future::pending::<()>(),
        )
        .await
        {
            First::A(outcome) => outcome,
            First::B(()) | First::C(()) => Err(PeerError::Connection {
                address: address.to_owned(),
                reason: format!("no handshake within {timeout_ms} ms"),
            }),
        }
    }

    /// A request to a node id or to an address (a seed, before its id is known), answered or
    /// failed within `timeout`.
    pub async fn request(
        &self,
        to: PeerTarget,
        request: PeerRequest,
        timeout: Duration,
    ) -> Result<PeerResponse, PeerError> {
        let (cut_to, cut_from) = match &to {
            PeerTarget::Node(id) => {
                let faults = self.faults.borrow();
                (faults.drops_to(*id), faults.drops_from(*id))
            }
            PeerTarget::Address(_) => (false, false),
        };
        let timed_out = || PeerError::Timeout {
            timeout_ms: timeout.as_millis() as u64,
        };
        if cut_to {
            // Fault injection: the request is lost on the way, so no answer ever comes.
            sleep(timeout).await;
            return Err(timed_out());
        }
        let started = Instant::now();
        let asking = async {
            let frame = encode(&Frame::Request(request))?;
            let (connection, own) = match &to {
                PeerTarget::Node(id) => (self.link(&self.peer(*id)).await?, false),
                // The Hello stream is finished when dropped; the connection lives on.
                PeerTarget::Address(address) => (self.dial(address, None).await?.0, true),
            };
            let failed = |reason: String| PeerError::Connection {
                address: format!("{to:?}"),
                reason,
            };
            let (mut send, mut recv) = connection
                .open_bi()
                .await
                .map_err(|e| failed(e.to_string()))?;
            send.write_all(&frame)
                .await
                .map_err(|e| failed(e.to_string()))?;
            let _ = send.finish();
            let answer = read_frame(&mut recv, &self.limits.frames).await;
            if own {
                connection.close(PeerCloseCode::Done.varint(), b"answered");
            }
            match answer {
                Ok(Some(Frame::Response(response))) => Ok(response),
                Ok(Some(other)) => Err(PeerError::Frame(FrameError::Misplaced {
                    kind: other.kind(),
                    expected: "a response",
                })),
                Ok(None) => Err(PeerError::Unanswered),
                Err(FrameError::Read(_)) => Err(PeerError::Unanswered),
                Err(error) => Err(PeerError::Frame(error)),
            }
        };
        let outcome = match first_of(asking, sleep(timeout), std::future::pending::<()>()).await {
            First::A(outcome) => outcome,
            First::B(()) | First::C(()) => Err(timed_out()),
        };
        if cut_from {
            // Fault injection: the request went out (and may have acted), its answer is lost.
            sleep(timeout.saturating_sub(started.elapsed())).await;
            return Err(timed_out());
        }
        outcome
    }

    /// Takes an inbound connection (called by the endpoint's accept loop for connections that
    /// negotiated `runnel-peer/1`). One without a verified client certificate is closed.
    pub fn accept(self: &Rc<Self>, connection: quinn::Connection) {
        if self.closed.get() {
            connection.close(
                PeerCloseCode::NotAccepting.varint(),
                b"peer transport closed",
            );
            return;
        }
        if !has_verified_client_certificate(&connection) {
            tracing::warn!(
                remote = %connection.remote_address(),
                "refused a peer connection without a client certificate"
            );
            connection.close(
                PeerCloseCode::Unauthenticated.varint(),
                b"peer connections need a certificate of the cluster's CA",
            );
            return;
        }
        let peers = Rc::clone(self);
        spawn(async move {
            let id = connection.stable_id();
            peers.accepted.borrow_mut().insert(id, connection.clone());
            let remote = connection.remote_address();
            match peers.receive(&connection).await {
                Ok(from) => tracing::debug!(peer = from, %remote, "peer connection ended"),
                Err((code, error)) => {
                    tracing::warn!(%remote, %error, "closing a peer connection");
                    connection.close(code.varint(), error.as_bytes());
                }
            }
            peers.accepted.borrow_mut().remove(&id);
        })
        .detach();
    }

    /// Serves one accepted connection: its `Hello`, then its messages and requests, until it
    /// closes. Err: the code and reason to close it with.
    async fn receive(
        self: &Rc<Self>,
        connection: &quinn::Connection,
    ) -> Result<u64, (PeerCloseCode, String)> {
        let hello_timeout = Duration::from_millis(self.limits.hello_timeout_ms);
        let opening = async {
            let mut stream = connection.accept_uni().await.map_err(|e| e.to_string())?;
            match read_frame(&mut stream, &self.limits.frames).await {
                Ok(Some(Frame::Hello(hello))) => Ok((stream, hello)),
                Ok(Some(other)) => Err(FrameError::Misplaced {
                    kind: other.kind(),
                    expected: "Hello",
                }
                .to_string()),
                Ok(None) => Err("the first stream ended without Hello".to_string()),
                Err(error) => Err(error.to_string()),
            }
        };
        let (mut messages, hello) =
            match first_of(opening, sleep(hello_timeout), std::future::pending::<()>()).await {
                First::A(Ok(opened)) => opened,
                First::A(Err(reason)) => return Err((PeerCloseCode::NoHello, reason)),
                First::B(()) | First::C(()) => {
                    return Err((
                        PeerCloseCode::NoHello,
                        format!("no Hello within {} ms", hello_timeout.as_millis()),
                    ))
                }
            };
        if let Some(to) = hello.to.filter(|to| *to != self.my_id) {
            return Err((
                PeerCloseCode::WrongNode,
                format!("this is node {}, not node {to}", self.my_id),
            ));
        }
        // Raft messages of another cluster's group would be taken for this one's (node ids
        // repeat across clusters): a node of another cluster is refused. A node of none yet
        // (new, dialling its seeds to join) is let in.
        if let (Some(theirs), Some(mine)) = (hello.cluster, self.cluster.get()) {
            if theirs != mine {
                return Err((
                    PeerCloseCode::ForeignCluster,
                    format!(
                        "node {} belongs to cluster {theirs:016x}, this node to cluster \
                         {mine:016x}: check its seeds",
                        hello.from
                    ),
                ));
            }
        }
        let from = hello.from;
        self.restarted(from, hello.incarnation);
        if !self.faults.borrow().drops_from(from) {
            self.heard_from(from);
        }
        tracing::debug!(peer = from, remote = %connection.remote_address(), "peer connected");
        {
            let peers = Rc::clone(self);
            let connection = connection.clone();
            spawn(async move { peers.accept_requests(from, connection).await }).detach();
        }
        loop {
            match read_frame(&mut messages, &self.limits.frames).await {
                Ok(Some(Frame::Message(_))) if self.faults.borrow().drops_from(from) => {}
                Ok(Some(Frame::Message(message))) => {
                    self.heard_from(from);
                    // A Ping fills in an address not known yet (a node that just joined can be
                    // answered at once); changing a known one is for the caller, who sees the
                    // Ping and the metadata.
                    if let PeerMessage::Ping(hello) = &message {
                        if hello.node == from
                            && !hello.address.is_empty()
                            && self.address(from).is_none()
                        {
                            self.set_address(from, &hello.address);
                        }
                    }
                    if self
                        .inbound_sender
                        .send(Inbound::Message { from, message })
                        .await
                        .is_err()
                    {
                        return Ok(from);
                    }
                }
                Ok(Some(other)) => {
                    let error = FrameError::Misplaced {
                        kind: other.kind(),
                        expected: "a one-way message",
                    };
                    return Err((
                        PeerCloseCode::MalformedFrame,
                        format!("node {from}: {error}"),
                    ));
                }
                // The dialler sends no more messages (e.g. it only asks); its requests go on.
                Ok(None) => {
                    connection.closed().await;
                    return Ok(from);
                }
                Err(FrameError::Read(_)) => return Ok(from),
                Err(error) => {
                    return Err((
                        PeerCloseCode::MalformedFrame,
                        format!("node {from}: {error}"),
                    ))
                }
            }
        }
    }

    /// Accepts the request streams of a connection from node `from`, one task each.
    async fn accept_requests(self: Rc<Self>, from: u64, connection: quinn::Connection) {
        while let Ok((send, recv)) = connection.accept_bi().await {
            let peers = Rc::clone(&self);
            let connection = connection.clone();
            spawn(async move {
                if let Err(error) = peers.answer(from, send, recv).await {
                    tracing::warn!(peer = from, %error, "closing a peer connection");
                    connection.close(
                        PeerCloseCode::MalformedFrame.varint(),
                        error.to_string().as_bytes(),
                    );
                }
            })
            .detach();
        }
    }

    /// Reads one request, hands it to [`Peers::next`]'s consumer and writes its answer. Err: a
    /// malformed request (the connection is closed).
    async fn answer(
        &self,
        from: u64,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
    ) -> Result<(), FrameError> {
        let request = match read_frame(&mut recv, &self.limits.frames).await {
            Ok(Some(Frame::Request(request))) => request,
            Ok(Some(other)) => {
                return Err(FrameError::Misplaced {
                    kind: other.kind(),
                    expected: "a request",
                })
            }
            Ok(None) | Err(FrameError::Read(_)) => return Ok(()),
            Err(error) => return Err(error),
        };
        if self.faults.borrow().cuts(from) {
            // Fault injection: the request (or its answer) is lost; the asker hears nothing
            // until its own timeout, as on a partitioned network.
            sleep(Duration::from_millis(fault::UNANSWERED_HOLD_MS)).await;
            return Ok(());
        }
        self.heard_from(from);
        let (sender, answers) = channel::local(1);
        let reply = Reply { sender };
        if self
            .inbound_sender
            .send(Inbound::Request {
                from,
                request,
                reply,
            })
            .await
            .is_err()
        {
            let _ = send.reset(PeerCloseCode::Done.varint());
            return Ok(());
        }
        let encoded = match answers.recv().await {
            Some(response) => encode(&Frame::Response(response)),
            None => {
                let _ = send.reset(PeerCloseCode::Done.varint());
                return Ok(());
            }
        };
        match encoded {
            Ok(bytes) => {
                if send.write_all(&bytes).await.is_ok() {
                    let _ = send.finish();
                }
            }
            Err(error) => {
                tracing::warn!(peer = from, %error, "cannot encode an answer");
                let _ = send.reset(PeerCloseCode::Done.varint());
            }
        }
        Ok(())
    }

    /// A `Hello` from node `id` carried `incarnation`. Another one than before means the node
    /// restarted: the connection to its old process is dropped and it is dialled afresh. (A
    /// killed process sends no close, and its successor on the same port ignores the old
    /// connection's packets: without this, messages to the node went on into that connection
    /// until its idle timeout, 10 s, and a restarted node heard nothing from here that long.)
    fn restarted(&self, id: u64, incarnation: u64) {
        let previous = self.incarnations.borrow_mut().insert(id, incarnation);
        if previous.is_none_or(|previous| previous == incarnation) {
            return;
        }
        let peer = self.peers.borrow().get(&id).cloned();
        if let Some(peer) = peer {
            if let Some(connection) = peer.live_link() {
                tracing::info!(
                    peer = id,
                    "peer restarted; dropping the connection to its old process"
                );
                peer.drop_link(&connection, PeerCloseCode::Done, b"the peer restarted");
            }
            peer.retry_at.set(None);
            peer.backoff
                .set(Duration::from_millis(self.limits.backoff_initial_ms));
        }
    }

    fn heard_from(&self, id: u64) {
        self.heard.borrow_mut().insert(id, Instant::now());
        // A node that just spoke is up: dialling it need not wait out a backoff earned while it
        // was down (up to `backoff_max_ms`, during which a restarted node would get no Raft
        // messages from here and stay behind, `Starting`).
        if let Some(peer) = self.peers.borrow().get(&id) {
            if peer.live_link().is_none() && peer.retry_at.take().is_some() {
                peer.backoff
                    .set(Duration::from_millis(self.limits.backoff_initial_ms));
                tracing::debug!(
                    peer = id,
                    "heard from a peer in backoff; dialling it at once"
                );
            }
        }
    }

    /// The next inbound message or request (one consumer: core 0's metadata driver). Pending
    /// forever once the transport is closed and drained.
    pub async fn next(&self) -> Inbound {
        match self.inbound.recv().await {
            Some(inbound) => inbound,
            // The sender lives in `self`: the channel cannot close while we are called.
            None => std::future::pending().await,
        }
    }

    /// How many one-way messages to node `id` were dropped so far (unreachable, no address,
    /// queue full, connection lost).
    pub fn dropped_messages(&self, id: u64) -> u64 {
        self.peers
            .borrow()
            .get(&id)
            .map_or(0, |peer| peer.dropped.get())
    }

    /// The QUIC connection that carries messages to node `id` now (its `stable_id`), if any:
    /// for diagnostics and tests.
    pub fn link_id(&self, id: u64) -> Option<usize> {
        self.peers
            .borrow()
            .get(&id)
            .and_then(|peer| peer.live_link())
            .map(|connection| connection.stable_id())
    }

    /// When each node was last heard from (any message or request from it), for failure
    /// detection.
    pub fn last_heard(&self, id: u64) -> Option<Instant> {
        self.heard.borrow().get(&id).copied()
    }

    /// Closes every connection, stops every writer and drops what is queued; later sends are
    /// dropped and requests fail with [`PeerError::Closed`]. The endpoint stays open.
    pub fn close(&self) {
        if self.closed.replace(true) {
            return;
        }
        for peer in self.peers.borrow().values() {
            if let Some(connection) = peer.live_link() {
                peer.drop_link(&connection, PeerCloseCode::Done, b"closing");
            }
            peer.drain();
            peer.queued.notify();
            peer.dialled.notify();
        }
        for connection in self.accepted.borrow_mut().drain().map(|(_, c)| c) {
            connection.close(PeerCloseCode::Done.varint(), b"closing");
        }
    }
}

/// The socket address and TLS server name of `host:port`. An IP address is parsed; a host name
/// is resolved on a blocking thread (never on the executor).
async fn resolve(address: &str) -> Result<(SocketAddr, String), PeerError> {
    let invalid = |reason: String| PeerError::InvalidAddress {
        address: address.to_owned(),
        reason,
    };
    let (host, _port) = address
        .rsplit_once(':')
        .ok_or_else(|| invalid("not host:port".into()))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    if let Ok(socket) = address.parse::<SocketAddr>() {
        return Ok((socket, host));
    }
    let owned = address.to_owned();
    let resolved = spawn_blocking(move || owned.to_socket_addrs().map(|mut all| all.next())).await;
    match resolved {
        Ok(Some(socket)) => Ok((socket, host)),
        Ok(None) => Err(invalid("resolves to no address".into())),
        Err(error) => Err(invalid(error.to_string())),
    }
}

/// A random id (std's per-process random hash keys over `node` and the time): a process's
/// incarnation, a new cluster's id.
pub(crate) fn random_id(node: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(node);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(now);
    hasher.finish()
}
