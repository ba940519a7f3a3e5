//! QUIC transport limits tuned for throughput: large flow-control windows, many streams,
//! datagrams as large as the path carries.
//!
//! quinn's defaults target the open internet (a 1.25 MB stream window, 100 streams, datagrams
//! of at most 1,452 bytes) and leave the connection receive window unlimited. Runnel moves
//! batches of up to megabytes between nodes in one datacenter, and a client may keep hundreds
//! of requests in flight on one connection, so the windows here allow several MiB in flight
//! per stream and tens of MiB per connection, but no more, and MTU discovery may search up to
//! 64 KiB (loopback, jumbo frames). Every limit is named with its unit and documented; the
//! memory a connection can pin is bounded by `connection_receive_window_bytes` (what a peer may
//! make us buffer) plus `send_window_bytes` (what we buffer for a peer).

use std::sync::Arc;
use std::time::Duration;

use quinn::{IdleTimeout, MtuDiscoveryConfig, TransportConfig, VarInt};

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
    /// The largest UDP payload this endpoint accepts, and the most MTU discovery searches for
    /// (1,200 to 65,527). quinn's default of 1,452 fits a 1,500-byte Ethernet path; loopback
    /// (and jumbo-frame LANs) carry far larger datagrams, and every packet costs a header, an
    /// AEAD call, an acknowledgement and bookkeeping on both sides. Discovery only probes:
    /// a path with a smaller MTU settles at its own size, and a peer that accepts less caps
    /// it. quinn sizes each endpoint's receive buffer by it (× 64 GRO segments × 32 messages:
    /// 128 MiB of address space at the maximum, of which at most 32 × 64 KiB = 2 MiB is ever
    /// written, as the kernel hands over no message above 64 KiB).
    pub udp_payload_bytes_max: u16,
}

impl TransportLimits {
    /// The defaults: 8 MiB per stream, 32 MiB per connection each way, 1024 bidirectional
    /// streams, 30 s idle timeout, no keep-alives, datagrams up to 65,527 bytes where the
    /// path carries them.
    pub const DEFAULT: TransportLimits = TransportLimits {
        stream_receive_window_bytes: 8 << 20,
        connection_receive_window_bytes: 32 << 20,
        send_window_bytes: 32 << 20,
        bidi_streams_max: 1024,
        uni_streams_max: 256,
        idle_timeout_ms: 30_000,
        keep_alive_interval_ms: None,
        udp_payload_bytes_max: TransportLimits::UDP_PAYLOAD_BYTES_MAX,
    };

    /// The smallest UDP payload QUIC allows a path to have (RFC 9000 §14).
    pub const UDP_PAYLOAD_BYTES_MIN: u16 = 1_200;
    /// The largest UDP payload there is: an IPv6 datagram's 65,535-byte payload less the
    /// 8-byte UDP header (over IPv4 the kernel stops at 65,507, and discovery below that).
    pub const UDP_PAYLOAD_BYTES_MAX: u16 = 65_527;

    /// quinn's endpoint configuration for these limits (the largest datagram accepted).
    ///
    /// # Panics
    ///
    /// If `udp_payload_bytes_max` is outside 1,200..=65,527.
    pub fn endpoint_config(&self) -> quinn::EndpointConfig {
        let mut config = quinn::EndpointConfig::default();
        config
            .max_udp_payload_size(self.udp_payload_bytes())
            .expect("a UDP payload size within quinn's range");
        config
    }

    /// quinn's transport configuration for these limits.
    ///
    /// # Panics
    ///
    /// If `udp_payload_bytes_max` is outside 1,200..=65,527.
    pub fn transport_config(&self) -> Arc<TransportConfig> {
        let mut mtu = MtuDiscoveryConfig::default();
        mtu.upper_bound(self.udp_payload_bytes());
        let mut config = TransportConfig::default();
        config
            .mtu_discovery_config(Some(mtu))
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

    /// `udp_payload_bytes_max`, checked: quinn would quietly replace a value out of its range
    /// with a default of its own.
    fn udp_payload_bytes(&self) -> u16 {
        let bytes = self.udp_payload_bytes_max;
        assert!(
            (Self::UDP_PAYLOAD_BYTES_MIN..=Self::UDP_PAYLOAD_BYTES_MAX).contains(&bytes),
            "udp_payload_bytes_max is {bytes}, outside {}..={}",
            Self::UDP_PAYLOAD_BYTES_MIN,
            Self::UDP_PAYLOAD_BYTES_MAX,
        );
        bytes
    }
}

impl Default for TransportLimits {
    fn default() -> TransportLimits {
        TransportLimits::DEFAULT
    }
}
