//! The consumer's membership as the worker sees it: [`Session::Joined`] with its join stream
//! and heartbeat clock, or [`Session::Rejoining`] between a lost membership and the next
//! `JoinOk` (a join attempt running, or the backoff before the next one).

use std::time::Duration;

use runnel_net::protocol::{write_request, ProtocolError, Request, Response};
use tokio::time::Instant;

use super::join::{JoinFailure, JoinStream, Joined};
use crate::client::ClientInner;
use crate::error::ClientError;
use crate::transport::BoxFuture;

/// Shortest heartbeat interval honoured, in milliseconds.
const HEARTBEAT_INTERVAL_MS_MIN: u64 = 10;

/// A member of the group, with its join stream.
pub(super) struct Membership {
    pub stream: JoinStream,
    pub heartbeat_every: Duration,
    pub next_heartbeat: Instant,
}

/// Between a lost membership and the next `JoinOk`.
pub(super) struct Rejoin {
    /// Failed attempts so far.
    pub attempts: u32,
    /// When the membership was lost.
    pub since: Instant,
    pub next_attempt: Instant,
    /// The attempt in progress.
    pub running: Option<BoxFuture<'static, Result<Joined, JoinFailure>>>,
}

/// The consumer's membership.
pub(super) enum Session {
    Joined(Membership),
    Rejoining(Rejoin),
}

/// What happened on the session.
pub(super) enum SessionEvent {
    /// A frame (or the end) of the join stream.
    Frame(Result<Option<Response>, ProtocolError>),
    /// The outcome of a rejoin attempt.
    Attempt(Result<Joined, JoinFailure>),
}

impl Session {
    /// Joined, with the heartbeat interval the server asked for (a third of the session
    /// timeout if it asked for none, at least [`HEARTBEAT_INTERVAL_MS_MIN`]).
    pub fn joined(joined: Joined, now: Instant) -> Session {
        let ok = joined.ok;
        let interval_ms = if ok.heartbeat_interval_ms > 0 {
            u64::from(ok.heartbeat_interval_ms)
        } else {
            u64::from(ok.session_timeout_ms / 3)
        };
        let heartbeat_every = Duration::from_millis(interval_ms.max(HEARTBEAT_INTERVAL_MS_MIN));
        Session::Joined(Membership {
            stream: joined.stream,
            heartbeat_every,
            next_heartbeat: now + heartbeat_every,
        })
    }

    /// Lost: the first rejoin attempt is due at once.
    pub fn rejoining(now: Instant) -> Session {
        Session::Rejoining(Rejoin {
            attempts: 0,
            since: now,
            next_attempt: now,
            running: None,
        })
    }

    /// The next thing the session has to say: a frame of the join stream, or the outcome of
    /// the rejoin attempt in progress (never, between attempts). Cancel-safe: the frame
    /// reader keeps partial frames and the attempt stays in `running`.
    pub async fn event(&mut self) -> SessionEvent {
        match self {
            Session::Joined(member) => {
                let stream = &mut member.stream;
                let frame = stream.frames.read_response(&mut stream.recv).await;
                SessionEvent::Frame(frame.map(|frame| frame.map(|(response, _)| response)))
            }
            Session::Rejoining(Rejoin {
                running: Some(attempt),
                ..
            }) => SessionEvent::Attempt(attempt.as_mut().await),
            Session::Rejoining(_) => std::future::pending().await,
        }
    }
}

impl Membership {
    /// Writes one frame (`Heartbeat`, `LeaveSubscription`) on the join stream, within the
    /// request timeout.
    pub async fn write(
        &mut self,
        inner: &ClientInner,
        request: &Request,
    ) -> Result<(), ClientError> {
        let node = &inner.nodes;
        let timeout = node.request_timeout();
        let limits = node.frame_limits();
        let write = write_request(&mut self.stream.send, request, &[], &limits);
        match tokio::time::timeout(timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(ClientError::protocol(request.kind(), error)),
            Err(_) => Err(ClientError::Timeout {
                request: request.kind(),
                timeout_ms: timeout.as_millis() as u64,
            }),
        }
    }
}
