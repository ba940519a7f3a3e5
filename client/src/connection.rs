//! The connections to one node: one QUIC connection per core (core *i* at `base_port + i`),
//! each opened on first use with the versioned handshake and reopened after it fails; one
//! bidirectional stream per request.
//!
//! [`Node::call`] runs a request that has one answer, retrying as `retry.rs` allows;
//! [`Node::send_request`] is one attempt of writing a request, for reads that stream their
//! answer; [`Node::open_stream`] writes a request and keeps the stream open both ways, for
//! the subscription streams. A connection slot is locked while its connection is being
//! opened, so concurrent requests to one core wait for one handshake instead of opening
//! several connections.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use runnel_net::protocol::{
    write_request, CloseCode, FrameLimits, FrameReader, Hello, HelloOk, Request, Response,
};
use tokio::time::Instant;

use crate::address::ServerAddress;
use crate::endpoint::client_endpoint;
use crate::error::ClientError;
use crate::options::ClientOptions;
use crate::retry::{Delivery, Failure, RetryPolicy, Safety};

/// Most cores a node may announce: bounds the connection table a handshake can make us build.
const CORES_MAX: u32 = 4096;
/// How long `close` waits for the connections to say goodbye, in milliseconds.
const CLOSE_WAIT_MS: u64 = 1_000;

/// One node: its endpoint, its handshake answer and a connection slot per core.
pub(crate) struct Node {
    endpoint: quinn::Endpoint,
    address: ServerAddress,
    server_name: String,
    ip: IpAddr,
    /// The port of core 0, as reached through the URL.
    base_port: u16,
    hello_request: Hello,
    hello: HelloOk,
    slots: Vec<tokio::sync::Mutex<Option<quinn::Connection>>>,
    frame_limits: FrameLimits,
    policy: RetryPolicy,
    connect_timeout: Duration,
    request_timeout: Duration,
}

impl Node {
    /// Resolves `address`, connects to its port and completes the handshake, retrying
    /// transient failures (a server still starting) within the options' bounds, all within
    /// one deadline: `connect_timeout_ms` from now.
    pub async fn connect(
        address: ServerAddress,
        options: &ClientOptions,
    ) -> Result<Node, ClientError> {
        let client_config = crate::tls::client_config(options)?;
        let connect_timeout = Duration::from_millis(options.connect_timeout_ms);
        let deadline = Instant::now() + connect_timeout;
        let policy = RetryPolicy::from_options(options);
        let unreachable = |last: Option<ClientError>| ClientError::Unreachable {
            address: address.to_string(),
            timeout_ms: options.connect_timeout_ms,
            last: last.map(Box::new),
        };
        let target = match resolve(&address, connect_timeout).await {
            Err(ClientError::Timeout { .. }) => return Err(unreachable(None)),
            other => other?,
        };
        let bind = match target {
            SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
        };
        let mut endpoint = client_endpoint(bind, &options.transport_limits()).map_err(|error| {
            ClientError::io(format!("cannot bind a UDP socket on {bind}"), error)
        })?;
        endpoint.set_default_client_config(client_config);
        let server_name = options
            .server_name
            .clone()
            .unwrap_or_else(|| address.host().to_owned());
        let hello_request = Hello::new(options.client_name.clone());
        let mut attempt = 0;
        let (connection, hello) = loop {
            attempt += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            match dial(&endpoint, target, &server_name, &hello_request, remaining).await {
                Ok(dialled) => break dialled,
                // The dial itself ran out of time: the deadline has passed.
                Err(ClientError::Timeout { .. }) => return Err(unreachable(None)),
                Err(error) if error.is_retriable() && attempt < policy.attempts_max => {
                    let delay = policy.delay(attempt, None);
                    if Instant::now() + delay >= deadline {
                        return Err(unreachable(Some(error)));
                    }
                    tracing::debug!(%address, attempt, %error, ?delay, "connect failed, retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(error) => return Err(error),
            }
        };
        let invalid = |reason: String| ClientError::Handshake {
            address: target,
            reason,
        };
        if hello.core_count == 0 || hello.core_count > CORES_MAX || hello.core >= hello.core_count {
            return Err(invalid(format!(
                "the server announced core {} of {} cores",
                hello.core, hello.core_count
            )));
        }
        // The URL reached core `hello.core`; the other cores' ports count from there, so that
        // a port mapping between us and the node is respected.
        let base_port = u32::from(target.port())
            .checked_sub(hello.core)
            .and_then(|port| u16::try_from(port).ok())
            .ok_or_else(|| {
                invalid(format!(
                    "port {} cannot be core {}",
                    target.port(),
                    hello.core
                ))
            })?;
        if base_port != hello.base_port {
            tracing::warn!(
                url_base_port = base_port,
                announced_base_port = hello.base_port,
                "the node announces another base port than the URL's; using the URL's"
            );
        }
        if u32::from(base_port) + hello.core_count - 1 > u32::from(u16::MAX) {
            return Err(invalid(format!(
                "base port {base_port} + {} cores runs past port 65535",
                hello.core_count
            )));
        }
        let mut slots: Vec<_> = (0..hello.core_count)
            .map(|_| tokio::sync::Mutex::new(None))
            .collect();
        if let Some(slot) = slots.get_mut(hello.core as usize) {
            *slot.get_mut() = Some(connection);
        }
        tracing::debug!(
            %address,
            node = hello.node_id,
            cores = hello.core_count,
            server_version = %hello.server_version,
            "connected"
        );
        Ok(Node {
            endpoint,
            address,
            server_name,
            ip: target.ip(),
            base_port,
            hello_request,
            frame_limits: FrameLimits {
                payload_bytes_max: hello.frame_payload_bytes_max,
            },
            hello,
            slots,
            policy,
            connect_timeout,
            request_timeout: Duration::from_millis(options.request_timeout_ms),
        })
    }

    /// The handshake answer of the core the URL reached.
    pub fn hello(&self) -> &HelloOk {
        &self.hello
    }

    /// The address this node was dialled at.
    pub fn address(&self) -> &ServerAddress {
        &self.address
    }

    /// The core the URL reached (core 0 normally): where metadata requests go.
    pub fn bootstrap_core(&self) -> u32 {
        self.hello.core
    }

    /// Frame limits of this node's connections.
    pub fn frame_limits(&self) -> FrameLimits {
        self.frame_limits
    }

    /// Attempts and backoff of requests.
    pub fn policy(&self) -> RetryPolicy {
        self.policy
    }

    /// Time allowed for one attempt of a request.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// Sends `request` (with `payload`, one batch for `Append`) to `core` and reads its one
    /// answer; an `Error` answer is a [`ClientError::Server`]. Failed attempts are retried as
    /// `safety` allows (see `retry.rs`); the last failure is returned.
    pub async fn call(
        &self,
        core: u32,
        request: &Request,
        payload: &[u8],
        safety: Safety,
    ) -> Result<Response, ClientError> {
        let kind = request.kind();
        let mut attempt = 0;
        let mut delivered_before = false;
        loop {
            attempt += 1;
            let deadline = Instant::now() + self.request_timeout;
            let failure = match self.attempt(core, request, payload, deadline).await {
                Ok(response) => return Ok(response),
                Err(failure) => failure,
            };
            if attempt >= self.policy.attempts_max || !failure.may_retry(safety) {
                return Err(failure.into_error(kind, safety, delivered_before));
            }
            delivered_before |= failure.delivery == Delivery::MaybeDelivered;
            let delay = self.policy.delay(attempt, failure.retry_after_ms());
            tracing::debug!(request = kind, core, attempt, error = %failure.error, ?delay, "retrying");
            tokio::time::sleep(delay).await;
        }
    }

    /// One attempt: send, then read one answer, all before `deadline`.
    async fn attempt(
        &self,
        core: u32,
        request: &Request,
        payload: &[u8],
        deadline: Instant,
    ) -> Result<Response, Failure> {
        let kind = request.kind();
        let mut recv = self
            .send_request(core, request, payload, Some(deadline))
            .await?;
        let mut reader = FrameReader::new(self.frame_limits);
        let answer = tokio::time::timeout_at(deadline, reader.read_response(&mut recv))
            .await
            .map_err(|_| Failure::maybe_delivered(self.timeout(kind)))?;
        match answer {
            Ok(Some((Response::Error(error), _))) => {
                Err(Failure::refused(ClientError::server(kind, error)))
            }
            Ok(Some((response, _))) => Ok(response),
            Ok(None) => Err(Failure::maybe_delivered(ClientError::UnexpectedResponse {
                request: kind,
                response: "the stream ended without an answer".into(),
            })),
            Err(error) => Err(Failure::maybe_delivered(ClientError::protocol(kind, error))),
        }
    }

    /// Opens a stream on `core`'s connection (connecting first if needed), writes `request`
    /// and `payload` as one frame and finishes the sending side; returns the receiving side
    /// for the answer. Any failure here is [`Delivery::NotSent`](crate::retry::Delivery):
    /// the frame was not handed to QUIC in full.
    pub async fn send_request(
        &self,
        core: u32,
        request: &Request,
        payload: &[u8],
        deadline: Option<Instant>,
    ) -> Result<quinn::RecvStream, Failure> {
        let (mut send, recv) = self.open_stream(core, request, payload, deadline).await?;
        // Only fails if the stream is already closed, which the answer will show.
        let _ = send.finish();
        Ok(recv)
    }

    /// Opens a stream on `core`'s connection (connecting first if needed) and writes
    /// `request` and `payload` as its first frame, keeping the sending side open for more
    /// frames: the long-lived subscription streams (join, consume). Failures are
    /// [`Delivery::NotSent`](crate::retry::Delivery), as for [`Node::send_request`].
    pub async fn open_stream(
        &self,
        core: u32,
        request: &Request,
        payload: &[u8],
        deadline: Option<Instant>,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), Failure> {
        let kind = request.kind();
        let timed_out = || Failure::not_sent(self.timeout(kind));
        let connection = within(deadline, self.connection(core))
            .await
            .ok_or_else(timed_out)?
            .map_err(Failure::not_sent)?;
        let (mut send, recv) = within(deadline, connection.open_bi())
            .await
            .ok_or_else(timed_out)?
            .map_err(|error| Failure::not_sent(ClientError::connection(error)))?;
        let written = within(
            deadline,
            write_request(&mut send, request, payload, &self.frame_limits),
        )
        .await;
        match written {
            Some(Ok(())) => Ok((send, recv)),
            Some(Err(error)) => {
                // Abandon the incomplete frame explicitly (dropping would finish the stream).
                let _ = send.reset(CloseCode::Done.varint());
                Err(Failure::not_sent(ClientError::protocol(kind, error)))
            }
            None => {
                let _ = send.reset(CloseCode::Done.varint());
                Err(timed_out())
            }
        }
    }

    /// The connection to `core`: the open one, or a new one after the handshake.
    async fn connection(&self, core: u32) -> Result<quinn::Connection, ClientError> {
        let unknown = || ClientError::UnknownCore {
            core,
            core_count: self.hello.core_count,
        };
        let slot = self.slots.get(core as usize).ok_or_else(unknown)?;
        let mut guard = slot.lock().await;
        if let Some(connection) = guard.as_ref() {
            match connection.close_reason() {
                None => return Ok(connection.clone()),
                Some(reason) => tracing::debug!(core, %reason, "connection closed, reconnecting"),
            }
        }
        *guard = None;
        let port = u16::try_from(u32::from(self.base_port) + core).map_err(|_| unknown())?;
        let target = SocketAddr::new(self.ip, port);
        let (connection, hello) = dial(
            &self.endpoint,
            target,
            &self.server_name,
            &self.hello_request,
            self.connect_timeout,
        )
        .await?;
        if hello.node_id != self.hello.node_id || hello.core != core {
            connection.close(CloseCode::Done.varint(), b"unexpected node or core");
            return Err(ClientError::Handshake {
                address: target,
                reason: format!(
                    "expected node {} core {core}, reached node {} core {}",
                    self.hello.node_id, hello.node_id, hello.core
                ),
            });
        }
        tracing::debug!(address = %self.address, core, "connected to core");
        *guard = Some(connection.clone());
        Ok(connection)
    }

    fn timeout(&self, request: &'static str) -> ClientError {
        ClientError::Timeout {
            request,
            timeout_ms: self.request_timeout.as_millis() as u64,
        }
    }

    /// Closes every connection (code `Done`) and waits briefly for the goodbyes.
    pub async fn close(&self) {
        for slot in &self.slots {
            if let Some(connection) = slot.lock().await.take() {
                connection.close(CloseCode::Done.varint(), b"client closed");
            }
        }
        let _ = tokio::time::timeout(
            Duration::from_millis(CLOSE_WAIT_MS),
            self.endpoint.wait_idle(),
        )
        .await;
    }
}

/// `future`'s output, or `None` if `deadline` passed first (no deadline: wait as long as it
/// takes).
async fn within<F: Future>(deadline: Option<Instant>, future: F) -> Option<F::Output> {
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, future).await.ok(),
        None => Some(future.await),
    }
}

/// The first address `address` resolves to.
async fn resolve(address: &ServerAddress, timeout: Duration) -> Result<SocketAddr, ClientError> {
    let lookup = tokio::net::lookup_host((address.host(), address.port()));
    let mut addresses = tokio::time::timeout(timeout, lookup)
        .await
        .map_err(|_| ClientError::Timeout {
            request: "resolve",
            timeout_ms: timeout.as_millis() as u64,
        })?
        .map_err(|error| ClientError::io(format!("cannot resolve {address}"), error))?;
    addresses.next().ok_or_else(|| {
        ClientError::io(
            format!("cannot resolve {address}"),
            std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
        )
    })
}

/// Opens a connection to `target` and completes the handshake, within `timeout`.
async fn dial(
    endpoint: &quinn::Endpoint,
    target: SocketAddr,
    server_name: &str,
    hello: &Hello,
    timeout: Duration,
) -> Result<(quinn::Connection, HelloOk), ClientError> {
    let work = async {
        let connecting =
            endpoint
                .connect(target, server_name)
                .map_err(|source| ClientError::Connect {
                    address: target,
                    source,
                })?;
        let connection = connecting.await.map_err(ClientError::connection)?;
        match handshake(&connection, hello, target).await {
            Ok(ok) => Ok((connection, ok)),
            Err(error) => {
                // Closing twice is harmless: the first code (a version mismatch) stays.
                connection.close(CloseCode::Done.varint(), b"handshake failed");
                Err(error)
            }
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| ClientError::Timeout {
            request: "connect",
            timeout_ms: timeout.as_millis() as u64,
        })?
}

/// The handshake on the connection's first stream: `Hello`, then `HelloOk` with a version
/// this client offered.
async fn handshake(
    connection: &quinn::Connection,
    hello: &Hello,
    target: SocketAddr,
) -> Result<HelloOk, ClientError> {
    let (mut send, mut recv) = connection
        .open_bi()
        .await
        .map_err(ClientError::connection)?;
    let request = Request::Hello(hello.clone());
    write_request(&mut send, &request, &[], &FrameLimits::DEFAULT)
        .await
        .map_err(|error| ClientError::protocol("Hello", error))?;
    let _ = send.finish();
    let mut reader = FrameReader::new(FrameLimits::DEFAULT);
    let answer = reader
        .read_response(&mut recv)
        .await
        .map_err(|error| ClientError::protocol("Hello", error))?;
    match answer {
        Some((Response::HelloOk(ok), _)) if hello.accepts(&ok) => Ok(ok),
        Some((Response::HelloOk(ok), _)) => {
            connection.close(
                CloseCode::UnsupportedVersion.varint(),
                b"version not offered",
            );
            Err(ClientError::Handshake {
                address: target,
                reason: format!(
                    "the server chose protocol version {}, this client speaks {}..={}",
                    ok.version, hello.version_min, hello.version_max
                ),
            })
        }
        Some((Response::Error(error), _)) => Err(ClientError::server("Hello", error)),
        Some((other, _)) => Err(ClientError::UnexpectedResponse {
            request: "Hello",
            response: other.kind().into(),
        }),
        None => Err(ClientError::Handshake {
            address: target,
            reason: "the server ended the handshake stream without an answer".into(),
        }),
    }
}
