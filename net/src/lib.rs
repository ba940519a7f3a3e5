//! `runnel-net`: how Runnel nodes and clients talk — QUIC (quinn) on the server's glommio
//! executors, and the wire protocol of flatbuffers envelopes followed by raw batch bytes.
//!
//! Invariants: every executor runs its own endpoint; glommio objects never leave the thread
//! that created them (the quinn runtime checks it and refuses use from another thread).
//! Must never: block an executor thread, or re-encode batch bytes.
//! Fault model: any datagram or stream byte may be malformed or missing; a peer may vanish at
//! any instant. Bad input is an error for that connection, never a panic of the node.
//!
//! Map: [`runtime`] runs quinn on glommio, [`mod@endpoint`] binds an endpoint on the current
//! executor, [`gso`] keeps every GSO send within what the kernel accepts (on any runtime),
//! [`transport`] holds the flow-control, stream and datagram-size limits, [`tls`] the certificates,
//! [`protocol`] the frames and messages (`docs/format/protocol.md`; runtime-agnostic, so the
//! tokio client SDK uses it too). The only `unsafe` in the crate is inside flatc's generated
//! code (`protocol::generated`), reached only through verified envelopes.
//!
//! Feature `glommio` (on by default) gates [`runtime`] and [`mod@endpoint`], the only glommio
//! code; the client SDK turns it off and gets [`gso`], [`protocol`], [`tls`] and [`transport`]
//! only.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

#[cfg(feature = "glommio")]
pub mod endpoint;
pub mod gso;
pub mod protocol;
#[cfg(feature = "glommio")]
pub mod runtime;
pub mod tls;
pub mod transport;

#[cfg(feature = "glommio")]
pub use endpoint::{endpoint, endpoint_on, EndpointOptions};
#[cfg(feature = "glommio")]
pub use runtime::{GlommioRuntime, RuntimeCounters};
pub use tls::{
    ca_from_pem, client_config, cluster_server_config, load_ca, peer_client_config, self_signed,
    server_config, CertificateAuthority, Identity, NodeCertificate, TlsError, ALPN_PROTOCOL,
    PEER_ALPN,
};
pub use transport::TransportLimits;
