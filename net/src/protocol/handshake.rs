//! The versioned handshake, and the codes that close connections and streams.
//!
//! The first bidirectional stream a client opens carries one `Hello` frame (the protocol
//! versions it speaks); the server answers `HelloOk` with the version it chose — the newest
//! both speak — and finishes the stream, or answers `Error { UnsupportedVersion }` and closes
//! the connection with [`CloseCode::UnsupportedVersion`]. The client opens no other stream
//! before `HelloOk`. Protocol versions (u16, in `Hello`) are distinct from the frame format
//! version (the frame header's version byte): see `docs/format/protocol.md`.

use super::messages::{ErrorCode, ErrorResponse, Hello, HelloOk};

/// Oldest protocol version this build speaks.
pub const PROTOCOL_VERSION_MIN: u16 = 1;
/// Newest protocol version this build speaks.
pub const PROTOCOL_VERSION_MAX: u16 = 1;
const _: () = assert!(PROTOCOL_VERSION_MIN >= 1 && PROTOCOL_VERSION_MIN <= PROTOCOL_VERSION_MAX);

impl Hello {
    /// A `Hello` offering every version this build speaks.
    pub fn new(client_name: impl Into<String>) -> Hello {
        Hello {
            version_min: PROTOCOL_VERSION_MIN,
            version_max: PROTOCOL_VERSION_MAX,
            client_name: client_name.into(),
        }
    }

    /// Whether a server's `HelloOk` chose a version this `Hello` offered. A client closes the
    /// connection with [`CloseCode::UnsupportedVersion`] if not.
    pub fn accepts(&self, ok: &HelloOk) -> bool {
        self.version_min <= ok.version && ok.version <= self.version_max
    }
}

/// The server side of version negotiation: the newest version both `hello` and the server's
/// range `[server_min, server_max]` contain, or the error to answer.
pub fn negotiate(hello: &Hello, server_min: u16, server_max: u16) -> Result<u16, ErrorResponse> {
    assert!(
        server_min >= 1 && server_min <= server_max,
        "server version range {server_min}..={server_max}"
    );
    if hello.version_min == 0 || hello.version_min > hello.version_max {
        return Err(ErrorResponse::new(
            ErrorCode::InvalidRequest,
            format!(
                "Hello offers versions {}..={}: the range must be non-empty and start at 1 or more",
                hello.version_min, hello.version_max
            ),
        ));
    }
    let chosen = hello.version_max.min(server_max);
    if chosen < hello.version_min.max(server_min) {
        return Err(ErrorResponse::new(
            ErrorCode::UnsupportedVersion,
            format!(
                "no common protocol version: client speaks {}..={}, server speaks {server_min}..={server_max}",
                hello.version_min, hello.version_max
            ),
        ));
    }
    Ok(chosen)
}

/// Application codes of QUIC `CONNECTION_CLOSE` (with a reason phrase: a code plus a message,
/// like every error) and of stream `RESET_STREAM` / `STOP_SENDING`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum CloseCode {
    /// Normal end: the connection is no longer needed; on a stream, a cancelled request (a
    /// client stopping a tailing read).
    Done = 0,
    /// The peer broke the protocol (bad frame, no `Hello` first, request before `HelloOk`).
    ProtocolViolation = 1,
    /// No common protocol version.
    UnsupportedVersion = 2,
    /// The server is shutting down; reconnect elsewhere or later.
    ShuttingDown = 3,
    /// A bug or unexpected state (the reason phrase says more).
    Internal = 4,
}

impl CloseCode {
    /// The code as quinn takes it.
    pub fn varint(self) -> quinn::VarInt {
        quinn::VarInt::from_u32(self as u32)
    }

    /// The code for a number received from a peer, if this build knows it.
    pub fn from_number(number: u64) -> Option<CloseCode> {
        [
            CloseCode::Done,
            CloseCode::ProtocolViolation,
            CloseCode::UnsupportedVersion,
            CloseCode::ShuttingDown,
            CloseCode::Internal,
        ]
        .into_iter()
        .find(|code| *code as u64 == number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(min: u16, max: u16) -> Hello {
        Hello {
            version_min: min,
            version_max: max,
            client_name: "test".to_owned(),
        }
    }

    /// The newest common version wins; disjoint or malformed ranges get a code and a message.
    #[test]
    fn negotiation_picks_the_newest_common_version() {
        assert_eq!(negotiate(&hello(1, 1), 1, 1), Ok(1));
        assert_eq!(negotiate(&hello(1, 5), 1, 3), Ok(3));
        assert_eq!(negotiate(&hello(2, 3), 1, 5), Ok(3));
        assert_eq!(negotiate(&hello(3, 3), 1, 5), Ok(3));
        let too_new = negotiate(&hello(4, 6), 1, 3).expect_err("disjoint");
        assert_eq!(too_new.code, ErrorCode::UnsupportedVersion);
        assert!(too_new.message.contains("4..=6"), "{}", too_new.message);
        let too_old = negotiate(&hello(1, 1), 2, 3).expect_err("disjoint");
        assert_eq!(too_old.code, ErrorCode::UnsupportedVersion);
        for (min, max) in [(0, 1), (0, 0), (3, 2)] {
            let error = negotiate(&hello(min, max), 1, 1).expect_err("malformed range");
            assert_eq!(error.code, ErrorCode::InvalidRequest);
        }
        assert_eq!(
            negotiate(&Hello::new("x"), PROTOCOL_VERSION_MIN, PROTOCOL_VERSION_MAX),
            Ok(PROTOCOL_VERSION_MAX)
        );
    }

    #[test]
    fn close_codes_round_trip() {
        for number in 0..8_u64 {
            if let Some(code) = CloseCode::from_number(number) {
                assert_eq!(code as u64, number);
                assert_eq!(code.varint().into_inner(), number);
            }
        }
        assert_eq!(CloseCode::from_number(5), None);
    }
}
