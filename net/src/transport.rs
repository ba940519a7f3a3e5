//! QUIC transport limits tuned for throughput: large flow-control windows, many streams.
//!
//! quinn's defaults target the open internet (a 1.25 MB stream window, 100 streams) and leave
//! the connection receive window unlimited. Runnel moves batches of up to megabytes between
//! nodes in one datacenter, and a client may keep hundreds of requests in flight on one
//! connection, so the windows here allow several MiB in flight per stream and tens of MiB per
//! connection, but no more. Every limit is named with its unit and documented; the memory a
//! connection can pin is bounded by `connection_receive_window_bytes` (what a peer may make us
//! buffer) plus `send_window_bytes` (what we buffer for a peer).

use std::sync::Arc;
use std::time::Duration;

use quinn::{IdleTimeout, TransportConfig, VarInt};

/// The QUIC transport limits of a Runnel endpoint; the same for servers and clients.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportLimits {
    /// Bytes a peer may send on one stream beyond what we have read (per-stream flow control).
    pub stream_receive_window_bytes: u32,
    /// Bytes a peer may send on all streams of a connection beyond what we have read.
    pub connection_receive_window_bytes: u32,
    /// Bytes we buffer for sending on a connection before writes wait.
    pub send_window_bytes: u64,
    /// Bidirectional streams a peer may have open at once.
    pub bidi_streams_max: u32,
    /// Unidirectional streams a peer may have open at once.
    pub uni_streams_max: u32,
    /// A connection with no traffic for this long is dropped (the smaller of both sides'
    /// values applies). Must be at least 1 ms.
    pub idle_timeout_ms: u32,
    /// Send keep-alives this often to hold an idle connection open; `None` sends none.
    pub keep_alive_interval_ms: Option<u32>,
}

impl TransportLimits {
    /// The defaults: 8 MiB per stream, 32 MiB per connection each way, 1024 bidirectional
    /// streams, 30 s idle timeout, no keep-alives.
    pub const DEFAULT: TransportLimits = TransportLimits {
        stream_receive_window_bytes: 8 << 20,
        connection_receive_window_bytes: 32 << 20,
        send_window_bytes: 32 << 20,
        bidi_streams_max: 1024,
        uni_streams_max: 256,
        idle_timeout_ms: 30_000,
        keep_alive_interval_ms: None,
    };

    /// quinn's transport configuration for these limits.
    pub fn transport_config(&self) -> Arc<TransportConfig> {
        let mut config = TransportConfig::default();
        config
            .stream_receive_window(VarInt::from_u32(self.stream_receive_window_bytes))
            .receive_window(VarInt::from_u32(self.connection_receive_window_bytes))
            .send_window(self.send_window_bytes)
            .max_concurrent_bidi_streams(VarInt::from_u32(self.bidi_streams_max))
            .max_concurrent_uni_streams(VarInt::from_u32(self.uni_streams_max))
            // A VarInt of milliseconds is exactly quinn's idle timeout encoding; 0 would mean
            // "never", which a bounded system does not want, hence the floor of 1 ms.
            .max_idle_timeout(Some(IdleTimeout::from(VarInt::from_u32(
                self.idle_timeout_ms.max(1),
            ))))
            .keep_alive_interval(
                self.keep_alive_interval_ms
                    .map(|ms| Duration::from_millis(u64::from(ms))),
            );
        Arc::new(config)
    }
}

impl Default for TransportLimits {
    fn default() -> TransportLimits {
        TransportLimits::DEFAULT
    }
}
