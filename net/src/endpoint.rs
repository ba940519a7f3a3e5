//! A QUIC endpoint on the current glommio executor: one per core, each on its own port.
//!
//! [`endpoint`] binds a UDP socket, raises its kernel buffers (a QUIC endpoint at speed needs
//! more than Linux's default ~200 KiB, or bursts are dropped before quinn sees them) and hands
//! it to quinn with a [`GlommioRuntime`] of the calling executor. The endpoint, its connections
//! and their streams then belong to that executor's thread.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::runtime::GlommioRuntime;

/// How an endpoint's socket is set up.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EndpointOptions {
    /// Requested `SO_RCVBUF` and `SO_SNDBUF`. Linux caps the request at
    /// `net.core.rmem_max` / `net.core.wmem_max` (raise those sysctls on servers) and then
    /// doubles it for bookkeeping; a smaller effective size is not an error.
    pub socket_buffer_bytes: usize,
    /// quinn's endpoint-wide settings (connection id length, reset key, versions, the largest
    /// datagram accepted). The default is [`crate::TransportLimits::endpoint_config`] of the
    /// default limits, which accepts datagrams up to 65,527 bytes.
    pub endpoint_config: quinn::EndpointConfig,
}

impl EndpointOptions {
    /// The default socket buffer request: 8 MiB each way.
    pub const SOCKET_BUFFER_BYTES_DEFAULT: usize = 8 << 20;
}

impl Default for EndpointOptions {
    fn default() -> EndpointOptions {
        EndpointOptions {
            socket_buffer_bytes: EndpointOptions::SOCKET_BUFFER_BYTES_DEFAULT,
            endpoint_config: crate::TransportLimits::DEFAULT.endpoint_config(),
        }
    }
}

/// A QUIC endpoint bound to `addr` on the calling glommio executor, accepting connections if
/// `server_config` is given (and always able to connect out once a client configuration is
/// set). Must be called inside a glommio executor.
pub fn endpoint(
    addr: SocketAddr,
    server_config: Option<quinn::ServerConfig>,
    options: &EndpointOptions,
) -> io::Result<quinn::Endpoint> {
    endpoint_on(
        Arc::new(GlommioRuntime::new()),
        addr,
        server_config,
        options,
    )
}

/// [`endpoint`] with a given runtime (to read its counters, or to share one among several
/// endpoints of the same executor). `runtime` must belong to the calling thread.
pub fn endpoint_on(
    runtime: Arc<GlommioRuntime>,
    addr: SocketAddr,
    server_config: Option<quinn::ServerConfig>,
    options: &EndpointOptions,
) -> io::Result<quinn::Endpoint> {
    let socket = std::net::UdpSocket::bind(addr)?;
    let socket_ref = socket2::SockRef::from(&socket);
    socket_ref.set_recv_buffer_size(options.socket_buffer_bytes)?;
    socket_ref.set_send_buffer_size(options.socket_buffer_bytes)?;
    quinn::Endpoint::new(
        options.endpoint_config.clone(),
        server_config,
        socket,
        runtime,
    )
}
