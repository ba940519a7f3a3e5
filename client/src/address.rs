//! Server addresses: `runnel://host:port`, where the port is the node's base port (core 0);
//! core *i* of the node listens on `port + i`.
//!
//! The grammar is deliberately small: scheme `runnel` (any case), then a host — a DNS name,
//! an IPv4 address or a bracketed IPv6 address — and an optional port (default
//! [`DEFAULT_PORT`]), then at most a trailing `/`. User info, paths, queries and fragments are
//! refused rather than ignored, so a typo never connects somewhere unexpected.
//!
//! A client may name several nodes of one cluster, separated by commas
//! (`runnel://host1:6570,host2:6570`, as Kafka's `bootstrap.servers` or NATS's server lists):
//! [`ServerAddress::parse_list`] reads them; the client connects to the first that answers and
//! turns to the others when the node it sends admin requests to cannot be reached.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

use crate::error::ClientError;

/// The port of core 0 when a URL names none: the server's default base port (HStreamDB's).
pub const DEFAULT_PORT: u16 = 6570;

/// Most nodes one URL may name.
pub const URL_NODES_MAX: usize = 64;

/// Longest host name accepted, in bytes (the DNS limit).
const HOST_BYTES_MAX: usize = 253;

/// A node's address, parsed from a `runnel://host:port` URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerAddress {
    host: String,
    port: u16,
}

impl ServerAddress {
    /// Parses `runnel://host[:port][/]`.
    pub fn parse(url: &str) -> Result<ServerAddress, ClientError> {
        let invalid = |reason: &str| invalid_url(url, reason);
        let (scheme, rest) = split_scheme(url)?;
        if !scheme.eq_ignore_ascii_case("runnel") {
            return Err(invalid("the scheme must be runnel://"));
        }
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#']) {
            return Err(invalid("a path, query or fragment is not allowed"));
        }
        if authority.contains('@') {
            return Err(invalid("user information is not allowed"));
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| invalid("an IPv6 address needs a closing ']'"))?;
            if host.parse::<Ipv6Addr>().is_err() {
                return Err(invalid("not an IPv6 address between '[' and ']'"));
            }
            let port = match after {
                "" => None,
                _ => Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| invalid("expected ':' and a port after ']'"))?,
                ),
            };
            (host, port)
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(invalid("the host is empty"));
        }
        if host.len() > HOST_BYTES_MAX {
            return Err(invalid("the host is longer than 253 bytes"));
        }
        let is_ipv6 = authority.starts_with('[');
        if !is_ipv6
            && !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        {
            return Err(invalid(
                "the host may hold only letters, digits, '-', '.' and '_'",
            ));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(text) => {
                if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(invalid("the port must be a number"));
                }
                match text.parse::<u16>() {
                    Ok(0) | Err(_) => return Err(invalid("the port must be 1 to 65535")),
                    Ok(port) => port,
                }
            }
        };
        Ok(ServerAddress {
            host: host.to_owned(),
            port,
        })
    }

    /// Parses `runnel://host[:port][,host[:port]]…[/]`: one or more nodes of one cluster, in
    /// the order to try them. Each is checked as [`ServerAddress::parse`] checks one; an empty
    /// entry, a repeated node or more than [`URL_NODES_MAX`] nodes are refused.
    pub fn parse_list(url: &str) -> Result<Vec<ServerAddress>, ClientError> {
        let invalid = |reason: &str| invalid_url(url, reason);
        let (scheme, rest) = split_scheme(url)?;
        let authorities = rest.strip_suffix('/').unwrap_or(rest);
        let mut addresses: Vec<ServerAddress> = Vec::new();
        for authority in authorities.split(',') {
            if authority.is_empty() {
                return Err(invalid("an empty node between commas"));
            }
            if addresses.len() == URL_NODES_MAX {
                return Err(invalid("more than 64 nodes"));
            }
            let address = ServerAddress::parse(&format!("{scheme}://{authority}"))?;
            if addresses.contains(&address) {
                return Err(invalid("a node is named twice"));
            }
            addresses.push(address);
        }
        Ok(addresses)
    }

    /// The host: a DNS name, an IPv4 address, or an IPv6 address without brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The node's base port: core 0's endpoint.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// The refusal of `url` (shortened to 256 characters) for `reason`.
fn invalid_url(url: &str, reason: &str) -> ClientError {
    ClientError::InvalidUrl {
        url: url.chars().take(256).collect(),
        reason: reason.to_owned(),
    }
}

/// `url`'s scheme and what follows `://`.
fn split_scheme(url: &str) -> Result<(&str, &str), ClientError> {
    url.split_once("://")
        .ok_or_else(|| invalid_url(url, "expected runnel://host:port"))
}

impl FromStr for ServerAddress {
    type Err = ClientError;

    fn from_str(url: &str) -> Result<ServerAddress, ClientError> {
        ServerAddress::parse(url)
    }
}

impl fmt::Display for ServerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "runnel://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "runnel://{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parsed(url: &str) -> (String, u16) {
        let address = ServerAddress::parse(url).expect(url);
        (address.host().to_owned(), address.port())
    }

    /// Hosts of every kind, with and without a port, and the default port.
    #[test]
    fn accepts_the_documented_forms() {
        assert_eq!(
            parsed("runnel://localhost:7000"),
            ("localhost".into(), 7000)
        );
        assert_eq!(parsed("runnel://127.0.0.1:1"), ("127.0.0.1".into(), 1));
        assert_eq!(
            parsed("runnel://node-1.example"),
            ("node-1.example".into(), 6570)
        );
        assert_eq!(parsed("RUNNEL://Host_A:65535/"), ("Host_A".into(), 65535));
        assert_eq!(parsed("runnel://[::1]:6570"), ("::1".into(), 6570));
        assert_eq!(parsed("runnel://[fe80::1]"), ("fe80::1".into(), 6570));
    }

    /// Each malformed URL is refused with a reason, never connected to.
    #[test]
    fn refuses_malformed_urls() {
        for url in [
            "",
            "localhost:6570",
            "http://localhost:6570",
            "runnel://",
            "runnel://:6570",
            "runnel://host:",
            "runnel://host:0",
            "runnel://host:65536",
            "runnel://host:-1",
            "runnel://host:+1",
            "runnel://host:12ab",
            "runnel://host:1:2",
            "runnel://host/path",
            "runnel://host:1/path",
            "runnel://host?x=1",
            "runnel://host#frag",
            "runnel://user@host",
            "runnel://[::1",
            "runnel://[::1]x",
            "runnel://[not-v6]:1",
            "runnel://::1:6570",
            "runnel://ho st",
            "runnel://hôst",
        ] {
            let outcome = ServerAddress::parse(url);
            assert!(
                matches!(outcome, Err(ClientError::InvalidUrl { .. })),
                "{url:?}: {outcome:?}"
            );
        }
        let long = format!("runnel://{}", "a".repeat(254));
        assert!(ServerAddress::parse(&long).is_err());
    }

    /// A list names nodes in order; one node is a list of one; every entry is checked.
    #[test]
    fn lists_of_nodes() {
        let list = ServerAddress::parse_list("runnel://a:1,[::1]:2,b/").expect("valid");
        let shown: Vec<String> = list.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            ["runnel://a:1", "runnel://[::1]:2", "runnel://b:6570"]
        );
        assert_eq!(
            ServerAddress::parse_list("runnel://a:1").expect("one"),
            [ServerAddress::parse("runnel://a:1").expect("one")]
        );
        let too_many = format!(
            "runnel://{}",
            (1..=65)
                .map(|p| format!("h:{p}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        for url in [
            "runnel://a:1,",
            "runnel://,a:1",
            "runnel://a:1,,b:2",
            "runnel://a:1,b:0",
            "runnel://a:1,http://b:2",
            "runnel://a:1,b:2/x",
            "runnel://a:1,a:1",
            "http://a:1,b:2",
            "a:1,b:2",
            too_many.as_str(),
        ] {
            let outcome = ServerAddress::parse_list(url);
            assert!(
                matches!(outcome, Err(ClientError::InvalidUrl { .. })),
                "{url:?}: {outcome:?}"
            );
        }
    }

    proptest! {
        /// Display prints a URL that parses back to the same address.
        #[test]
        fn display_round_trips(host in "[a-z][a-z0-9.-]{0,20}", port in 1u16..) {
            let address = ServerAddress::parse(&format!("runnel://{host}:{port}")).expect("valid");
            prop_assert_eq!(ServerAddress::parse(&address.to_string()).expect("reparses"), address);
        }

        /// No string makes the parser panic.
        #[test]
        fn never_panics(url in ".{0,40}") {
            let _ = ServerAddress::parse(&url);
            let _ = ServerAddress::parse(&format!("runnel://{url}"));
            let _ = ServerAddress::parse_list(&format!("runnel://{url}"));
        }
    }
}
