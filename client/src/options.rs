//! [`ClientOptions`]: trust, timeouts and retry bounds of a [`Client`](crate::Client).
//!
//! Every default is documented on its field. Trust is explicit: a node started without
//! configuration serves a self-signed certificate (`<data_dir>/tls/cert.pem`), so there is no
//! useful default trust store; the client needs `ca_cert_path`, or `insecure_skip_verify` as a
//! deliberate, logged opt-in for local development.

use std::path::PathBuf;

use runnel_net::TransportLimits;

use crate::error::ClientError;

/// Most attempts of one request (the first one included).
const REQUEST_ATTEMPTS_LIMIT: u32 = 100;
/// Largest backoff between two attempts, in milliseconds.
const RETRY_BACKOFF_MS_LIMIT: u64 = 60_000;
/// Longest client name sent in `Hello`, in bytes.
const CLIENT_NAME_BYTES_MAX: usize = 256;

/// How a [`Client`](crate::Client) connects, trusts, times out and retries.
///
/// Build one with struct update syntax:
///
/// ```
/// use runnel_client::ClientOptions;
///
/// let options = ClientOptions {
///     ca_cert_path: Some("runnel-data/tls/cert.pem".into()),
///     request_timeout_ms: 5_000,
///     ..ClientOptions::default()
/// };
/// assert!(options.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// PEM file of the certificate(s) to trust: the node's certificate (a self-signed node
    /// keeps it at `<data_dir>/tls/cert.pem`) or the CA that issued it. Default: none — set
    /// this or `insecure_skip_verify`.
    pub ca_cert_path: Option<PathBuf>,
    /// Accept any server certificate without verifying it (signatures are still checked, so
    /// the TLS handshake is sound, but the server is not authenticated). Only for local
    /// development; a warning is logged on every connect. Default `false`.
    pub insecure_skip_verify: bool,
    /// The name the server's certificate must carry. Default: the URL's host.
    pub server_name: Option<String>,
    /// Free text sent in `Hello`, for the server's logs. Default `runnel-client <version>`.
    pub client_name: String,
    /// Deadline of [`Client::connect`](crate::Client::connect), in milliseconds: resolving the
    /// host, establishing QUIC + TLS and completing the handshake, every retry included; past
    /// it the connect fails with [`ClientError::Unreachable`]. Also the time allowed to open a
    /// later connection to another core of the node. Default 10 000.
    pub connect_timeout_ms: u64,
    /// Time allowed for one attempt of a request — from opening its stream to its answer (for
    /// a non-tailing read: to each of its frames) — in milliseconds. Default 30 000.
    pub request_timeout_ms: u64,
    /// Most attempts of one request, the first included, when failures are safe to retry
    /// (see the crate documentation). 1 disables retries. Default 4, at most 100.
    pub request_attempts_max: u32,
    /// Backoff before the first retry, in milliseconds; doubled at each further retry up to
    /// `retry_backoff_ms_max`, with jitter. Default 50.
    pub retry_backoff_ms_min: u64,
    /// Largest backoff between two attempts, in milliseconds. Default 2 000, at most 60 000.
    pub retry_backoff_ms_max: u64,
    /// Keep-alive interval of idle connections, in milliseconds; 0 sends none (an idle
    /// connection then closes after `idle_timeout_ms` and is reopened on next use).
    /// Default 10 000.
    pub keep_alive_interval_ms: u32,
    /// A connection with no traffic for this long is closed, in milliseconds (the smaller of
    /// both sides' values applies). Default 30 000.
    pub idle_timeout_ms: u32,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            ca_cert_path: None,
            insecure_skip_verify: false,
            server_name: None,
            client_name: format!("runnel-client {}", env!("CARGO_PKG_VERSION")),
            connect_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
            request_attempts_max: 4,
            retry_backoff_ms_min: 50,
            retry_backoff_ms_max: 2_000,
            keep_alive_interval_ms: 10_000,
            idle_timeout_ms: 30_000,
        }
    }
}

impl ClientOptions {
    /// Checks every value; [`Client::connect`](crate::Client::connect) calls it first.
    pub fn validate(&self) -> Result<(), ClientError> {
        let invalid = |field, reason: &str| {
            Err(ClientError::InvalidOptions {
                field,
                reason: reason.to_owned(),
            })
        };
        match (&self.ca_cert_path, self.insecure_skip_verify) {
            (None, false) => {
                return invalid(
                    "ca_cert_path",
                    "no certificate to trust: set ca_cert_path to the node's certificate \
                     (<data_dir>/tls/cert.pem for a self-signed node), or insecure_skip_verify \
                     for local development",
                )
            }
            (Some(_), true) => {
                return invalid(
                    "insecure_skip_verify",
                    "set either ca_cert_path or insecure_skip_verify, not both",
                )
            }
            _ => {}
        }
        if self.server_name.as_deref() == Some("") {
            return invalid("server_name", "must not be empty");
        }
        if self.client_name.len() > CLIENT_NAME_BYTES_MAX {
            return invalid("client_name", "must be at most 256 bytes");
        }
        if self.connect_timeout_ms == 0 {
            return invalid("connect_timeout_ms", "must be at least 1");
        }
        if self.request_timeout_ms == 0 {
            return invalid("request_timeout_ms", "must be at least 1");
        }
        if !(1..=REQUEST_ATTEMPTS_LIMIT).contains(&self.request_attempts_max) {
            return invalid("request_attempts_max", "must be 1 to 100");
        }
        if self.retry_backoff_ms_max > RETRY_BACKOFF_MS_LIMIT {
            return invalid("retry_backoff_ms_max", "must be at most 60000");
        }
        if self.retry_backoff_ms_min > self.retry_backoff_ms_max {
            return invalid(
                "retry_backoff_ms_min",
                "must not exceed retry_backoff_ms_max",
            );
        }
        if self.idle_timeout_ms == 0 {
            return invalid("idle_timeout_ms", "must be at least 1");
        }
        if self.keep_alive_interval_ms >= self.idle_timeout_ms {
            return invalid(
                "keep_alive_interval_ms",
                "must be below idle_timeout_ms (or 0 for none)",
            );
        }
        Ok(())
    }

    /// The QUIC transport limits: the protocol's defaults with these keep-alive and idle
    /// settings.
    pub(crate) fn transport_limits(&self) -> TransportLimits {
        let mut limits = TransportLimits::DEFAULT;
        limits.idle_timeout_ms = self.idle_timeout_ms;
        limits.keep_alive_interval_ms =
            (self.keep_alive_interval_ms > 0).then_some(self.keep_alive_interval_ms);
        limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted() -> ClientOptions {
        ClientOptions {
            ca_cert_path: Some("cert.pem".into()),
            ..ClientOptions::default()
        }
    }

    fn refused_field(options: &ClientOptions) -> &'static str {
        match options.validate() {
            Err(ClientError::InvalidOptions { field, .. }) => field,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// The defaults are valid once a trust anchor is chosen, and only then.
    #[test]
    fn defaults_need_an_explicit_trust_choice() {
        assert_eq!(refused_field(&ClientOptions::default()), "ca_cert_path");
        assert!(trusted().validate().is_ok());
        let insecure = ClientOptions {
            insecure_skip_verify: true,
            ..ClientOptions::default()
        };
        assert!(insecure.validate().is_ok());
        let both = ClientOptions {
            insecure_skip_verify: true,
            ..trusted()
        };
        assert_eq!(refused_field(&both), "insecure_skip_verify");
    }

    /// Each bound is enforced and names the option that broke it.
    #[test]
    fn every_bound_is_checked() {
        let cases: Vec<(ClientOptions, &str)> = vec![
            (
                ClientOptions {
                    server_name: Some(String::new()),
                    ..trusted()
                },
                "server_name",
            ),
            (
                ClientOptions {
                    client_name: "x".repeat(257),
                    ..trusted()
                },
                "client_name",
            ),
            (
                ClientOptions {
                    connect_timeout_ms: 0,
                    ..trusted()
                },
                "connect_timeout_ms",
            ),
            (
                ClientOptions {
                    request_timeout_ms: 0,
                    ..trusted()
                },
                "request_timeout_ms",
            ),
            (
                ClientOptions {
                    request_attempts_max: 0,
                    ..trusted()
                },
                "request_attempts_max",
            ),
            (
                ClientOptions {
                    request_attempts_max: 101,
                    ..trusted()
                },
                "request_attempts_max",
            ),
            (
                ClientOptions {
                    retry_backoff_ms_max: 60_001,
                    ..trusted()
                },
                "retry_backoff_ms_max",
            ),
            (
                ClientOptions {
                    retry_backoff_ms_min: 3_000,
                    ..trusted()
                },
                "retry_backoff_ms_min",
            ),
            (
                ClientOptions {
                    idle_timeout_ms: 0,
                    keep_alive_interval_ms: 0,
                    ..trusted()
                },
                "idle_timeout_ms",
            ),
            (
                ClientOptions {
                    keep_alive_interval_ms: 30_000,
                    ..trusted()
                },
                "keep_alive_interval_ms",
            ),
        ];
        for (options, field) in cases {
            assert_eq!(refused_field(&options), field);
        }
    }

    /// Keep-alive 0 means none; the idle timeout is passed through.
    #[test]
    fn transport_limits_follow_the_options() {
        let limits = trusted().transport_limits();
        assert_eq!(limits.keep_alive_interval_ms, Some(10_000));
        assert_eq!(limits.idle_timeout_ms, 30_000);
        let quiet = ClientOptions {
            keep_alive_interval_ms: 0,
            ..trusted()
        };
        assert_eq!(quiet.transport_limits().keep_alive_interval_ms, None);
    }
}
