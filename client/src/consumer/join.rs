//! Joining a consumer group: the join stream to the subscription's coordinator core, up to its
//! `JoinOk`, following `NotOwner` to the node and core it names (another node of the cluster
//! is connected to on demand); and which failures are worth another attempt.
//!
//! [`join`] is one attempt (with its reroutes). The first join, made by
//! [`Client::consumer`](crate::Client::consumer), is retried within the client's retry
//! policy and its failure returned; the worker's rejoins are retried for as long as the
//! failure is transient.

use std::sync::Arc;

use runnel_net::protocol::{
    ErrorCode, FrameReader, JoinOk, JoinSubscription, ProtocolError, Request, Response, ShardOwner,
};
use tokio::time::Instant;

use crate::append::REROUTES_MAX;
use crate::client::ClientInner;
use crate::error::ClientError;

/// A join stream after its `JoinOk`: the worker reads `Assignment`s from it and writes
/// `Heartbeat`s and `LeaveSubscription` on it.
pub(super) struct JoinStream {
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
    pub frames: FrameReader,
    /// The coordinator's node and core it is open to.
    pub target: ShardOwner,
}

/// A successful join.
pub(super) struct Joined {
    pub stream: JoinStream,
    pub ok: JoinOk,
}

/// A failed join attempt.
#[derive(Debug)]
pub(super) enum JoinFailure {
    /// Trying again may succeed (connection lost, server busy or restarting).
    Transient(ClientError),
    /// Trying again would fail the same way (unknown subscription, name in use, invalid).
    Fatal(ClientError),
}

impl JoinFailure {
    fn of(error: ClientError) -> JoinFailure {
        if is_fatal(&error) {
            JoinFailure::Fatal(error)
        } else {
            JoinFailure::Transient(error)
        }
    }

    pub fn error(&self) -> &ClientError {
        match self {
            JoinFailure::Transient(error) | JoinFailure::Fatal(error) => error,
        }
    }

    pub fn into_error(self) -> ClientError {
        match self {
            JoinFailure::Transient(error) | JoinFailure::Fatal(error) => error,
        }
    }
}

/// Whether `error` ends a consumer rather than being retried: the subscription is gone, the
/// name is taken, the request or the server is incompatible, or the client was closed.
/// Anything else (lost connections, timeouts, a server busy, restarting or answering
/// nonsense for a moment) is retried.
pub(super) fn is_fatal(error: &ClientError) -> bool {
    match error {
        ClientError::Server { code, .. } => matches!(
            code,
            ErrorCode::UnknownSubscription
                | ErrorCode::ConsumerNameInUse
                | ErrorCode::InvalidRequest
                | ErrorCode::UnsupportedVersion
        ),
        ClientError::Connection {
            source: quinn::ConnectionError::LocallyClosed,
        } => true,
        ClientError::Closed
        | ClientError::Tls { .. }
        | ClientError::Handshake { .. }
        | ClientError::InvalidArgument { .. }
        | ClientError::InvalidOptions { .. }
        | ClientError::UnknownCore { .. } => true,
        _ => false,
    }
}

/// One join attempt at `target`, following `NotOwner` to the coordinator it names (at most
/// `REROUTES_MAX` times), on whichever node it is; each stream must answer within the request
/// timeout.
pub(super) async fn join(
    inner: Arc<ClientInner>,
    request: JoinSubscription,
    mut target: ShardOwner,
) -> Result<Joined, JoinFailure> {
    let node = &inner.nodes;
    let request = Request::JoinSubscription(request);
    let mut reroutes = 0;
    loop {
        let deadline = Instant::now() + node.request_timeout();
        let (send, mut recv) = node
            .open_stream(target, &request, &[], Some(deadline))
            .await
            .map_err(|failure| JoinFailure::of(failure.error))?;
        let mut frames = FrameReader::new(node.frame_limits());
        let answer = tokio::time::timeout_at(deadline, frames.read_response(&mut recv))
            .await
            .map_err(|_| {
                JoinFailure::Transient(ClientError::Timeout {
                    request: "JoinSubscription",
                    timeout_ms: node.request_timeout().as_millis() as u64,
                })
            })?;
        let answer: Result<Option<Response>, ProtocolError> =
            answer.map(|frame| frame.map(|(response, _)| response));
        match answer {
            Ok(Some(Response::JoinOk(ok))) => {
                return Ok(Joined {
                    stream: JoinStream {
                        send,
                        recv,
                        frames,
                        target,
                    },
                    ok,
                })
            }
            Ok(Some(Response::Error(error)))
                if error.code == ErrorCode::NotOwner && reroutes < REROUTES_MAX =>
            {
                // The subscription's group lives on another core, of this node or another.
                let Some(owner) = error.owner else {
                    return Err(JoinFailure::Transient(ClientError::server(
                        "JoinSubscription",
                        error,
                    )));
                };
                tracing::debug!(
                    from_node = target.node,
                    from_core = target.core,
                    to_node = owner.node,
                    to_core = owner.core,
                    "joining at the coordinator core"
                );
                reroutes += 1;
                target = owner;
            }
            Ok(Some(Response::Error(error))) => {
                return Err(JoinFailure::of(ClientError::server(
                    "JoinSubscription",
                    error,
                )))
            }
            Ok(Some(other)) => {
                return Err(JoinFailure::Transient(ClientError::UnexpectedResponse {
                    request: "JoinSubscription",
                    response: other.kind().into(),
                }))
            }
            Ok(None) => {
                return Err(JoinFailure::Transient(ClientError::UnexpectedResponse {
                    request: "JoinSubscription",
                    response: "the stream ended without an answer".into(),
                }))
            }
            Err(error) => {
                return Err(JoinFailure::of(ClientError::protocol(
                    "JoinSubscription",
                    error,
                )))
            }
        }
    }
}

/// The first join: [`join`], with transient failures retried within the client's retry
/// policy (attempts and backoff); the last failure is returned.
pub(super) async fn first_join(
    inner: &Arc<ClientInner>,
    request: &JoinSubscription,
) -> Result<Joined, ClientError> {
    let policy = inner.nodes.policy();
    let target = inner.nodes.admin();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let outcome = match join(Arc::clone(inner), request.clone(), target).await {
            // After a failed attempt, the name may be held by the member that attempt made
            // (if the server admitted it before the failure) until the server sees its join
            // stream end: worth another try.
            Err(JoinFailure::Fatal(error))
                if attempt > 1 && error.code() == Some(ErrorCode::ConsumerNameInUse) =>
            {
                Err(JoinFailure::Transient(error))
            }
            outcome => outcome,
        };
        match outcome {
            Ok(joined) => return Ok(joined),
            Err(JoinFailure::Transient(error)) if attempt < policy.attempts_max => {
                let retry_after = match &error {
                    ClientError::Server { retry_after_ms, .. } => retry_after_ms.map(u64::from),
                    _ => None,
                };
                let delay = policy.delay(attempt, retry_after);
                tracing::debug!(attempt, %error, ?delay, "join failed, retrying");
                tokio::time::sleep(delay).await;
            }
            Err(failure) => return Err(failure.into_error()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_net::protocol::ErrorResponse;

    /// Only a gone subscription, a taken name, an invalid or incompatible request and a
    /// closed client end a consumer; lost connections and busy servers are retried.
    #[test]
    fn only_definite_refusals_are_fatal() {
        let server = |code| ClientError::server("JoinSubscription", ErrorResponse::new(code, "x"));
        for code in [
            ErrorCode::UnknownSubscription,
            ErrorCode::ConsumerNameInUse,
            ErrorCode::InvalidRequest,
        ] {
            assert!(is_fatal(&server(code)), "{code}");
        }
        for code in [
            ErrorCode::Busy,
            ErrorCode::Unavailable,
            ErrorCode::NotOwner,
            ErrorCode::NotAssigned,
            ErrorCode::Internal,
        ] {
            assert!(!is_fatal(&server(code)), "{code}");
        }
        assert!(is_fatal(&ClientError::connection(
            quinn::ConnectionError::LocallyClosed
        )));
        assert!(!is_fatal(&ClientError::connection(
            quinn::ConnectionError::TimedOut
        )));
        assert!(!is_fatal(&ClientError::Timeout {
            request: "JoinSubscription",
            timeout_ms: 1
        }));
        assert!(is_fatal(&ClientError::Closed));
    }
}
