//! When a failed request may be sent again, and how long to wait first.
//!
//! The rule that keeps appends from being duplicated: a request is in one of three states when
//! it fails ([`Delivery`]). `NotSent` — it failed before its whole frame was handed to QUIC, so
//! the server cannot have acted on it (it acts only on complete frames; an incomplete one is a
//! truncated frame, refused). `Refused` — the server answered with an error, so it did not act.
//! `MaybeDelivered` — the frame was sent in full and then the connection failed or the answer
//! was late: the server may have acted. Idempotent requests (describe, list, read, trim, node
//! status) are retried in every state; at-most-once requests (append, create and delete stream)
//! only when `NotSent`, or when `Refused` with `Busy` or `NotLeader` (nothing was done).
//! A failure in state `MaybeDelivered` of an at-most-once request becomes
//! [`ClientError::OutcomeUnknown`].
//!
//! An idempotent producer's append ([`Safety::Deduplicated`]: its batch carries a producer
//! stamp the server checks) is retried in every state, as an idempotent request is: a copy the
//! server stored already is answered with its first offsets. If it still fails after an
//! attempt that may have been delivered, the outcome is unknown all the same
//! ([`ClientError::OutcomeUnknown`]), whatever the last attempt's error.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

use runnel_net::protocol::ErrorCode;

use crate::error::ClientError;
use crate::options::ClientOptions;

/// Longest wait a server's `retry_after_ms` can impose before one retry, in milliseconds.
pub(crate) const RETRY_AFTER_MS_MAX: u64 = 60_000;

/// Whether a request may be applied twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Safety {
    /// Applying it twice is the same as once (reads, describes, lists, trim to an offset).
    Idempotent,
    /// Applying it twice is not (append: two copies; create or delete: a second answer that
    /// contradicts the first).
    AtMostOnce,
    /// Applying it twice is detected by the server and answered as the first time (an
    /// idempotent producer's append): retried like [`Safety::Idempotent`], but its failure after
    /// a maybe-delivered attempt is an unknown outcome.
    Deduplicated,
}

/// How far a failed request got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Its frame was not handed to QUIC in full: the server cannot have acted on it.
    NotSent,
    /// The server answered with an error: it did not act on it.
    Refused,
    /// Its frame was sent in full; the server may have acted on it.
    MaybeDelivered,
}

/// A failed attempt of a request.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    /// What went wrong.
    pub error: ClientError,
    /// How far the request got.
    pub delivery: Delivery,
}

impl Failure {
    /// A failure before the request was sent.
    pub fn not_sent(error: ClientError) -> Failure {
        Failure {
            error,
            delivery: Delivery::NotSent,
        }
    }

    /// A failure after the request was sent in full.
    pub fn maybe_delivered(error: ClientError) -> Failure {
        Failure {
            error,
            delivery: Delivery::MaybeDelivered,
        }
    }

    /// The server's error answer.
    pub fn refused(error: ClientError) -> Failure {
        Failure {
            error,
            delivery: Delivery::Refused,
        }
    }

    /// Whether another attempt is safe and may succeed.
    pub fn may_retry(&self, safety: Safety) -> bool {
        if !self.error.is_retriable() {
            return false;
        }
        match (self.delivery, safety) {
            (Delivery::NotSent, _) | (_, Safety::Idempotent | Safety::Deduplicated) => true,
            // Busy is admission control and NotLeader a metadata change no leader took: either
            // way nothing was done.
            (Delivery::Refused, Safety::AtMostOnce) => matches!(
                self.error.code(),
                Some(ErrorCode::Busy | ErrorCode::NotLeader)
            ),
            (Delivery::MaybeDelivered, Safety::AtMostOnce) => false,
        }
    }

    /// The error to give the caller once no further attempt is made; `delivered_before`: an
    /// earlier attempt of the same request may have been delivered.
    pub fn into_error(
        self,
        request: &'static str,
        safety: Safety,
        delivered_before: bool,
    ) -> ClientError {
        let unknown = match safety {
            Safety::Idempotent => false,
            Safety::AtMostOnce => self.delivery == Delivery::MaybeDelivered,
            Safety::Deduplicated => self.delivery == Delivery::MaybeDelivered || delivered_before,
        };
        if unknown {
            return ClientError::OutcomeUnknown {
                request,
                source: Box::new(self.error),
            };
        }
        self.error
    }

    /// The server's hint of when to retry, if it gave one.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match &self.error {
            ClientError::Server { retry_after_ms, .. } => retry_after_ms.map(u64::from),
            _ => None,
        }
    }
}

/// Attempts and backoff of one request, from [`ClientOptions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    /// Most attempts, the first included.
    pub attempts_max: u32,
    /// Backoff before the first retry, in milliseconds.
    pub backoff_ms_min: u64,
    /// Largest backoff, in milliseconds.
    pub backoff_ms_max: u64,
}

impl RetryPolicy {
    /// The policy of `options`.
    pub fn from_options(options: &ClientOptions) -> RetryPolicy {
        RetryPolicy {
            attempts_max: options.request_attempts_max,
            backoff_ms_min: options.retry_backoff_ms_min,
            backoff_ms_max: options.retry_backoff_ms_max,
        }
    }

    /// How long to wait after failed attempt number `attempt` (from 1): the backoff with
    /// jitter, or the server's `retry_after_ms` if that is longer (at most
    /// [`RETRY_AFTER_MS_MAX`]).
    pub fn delay(&self, attempt: u32, retry_after_ms: Option<u64>) -> Duration {
        let jitter = RandomState::new().hash_one(attempt);
        let backoff = backoff_ms(attempt, self.backoff_ms_min, self.backoff_ms_max, jitter);
        let hint = retry_after_ms.unwrap_or(0).min(RETRY_AFTER_MS_MAX);
        Duration::from_millis(backoff.max(hint))
    }
}

/// Exponential backoff with jitter: `base = min(min_ms · 2^(attempt-1), max_ms)`, and the delay
/// is uniform-ish in `[base/2, base]` (from `random`), so clients that failed together do not
/// retry together.
pub(crate) fn backoff_ms(attempt: u32, min_ms: u64, max_ms: u64, random: u64) -> u64 {
    let doublings = attempt.saturating_sub(1).min(32);
    let base = min_ms.saturating_mul(1_u64 << doublings).min(max_ms);
    let half = base / 2;
    half + random % (base - half + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn server(code: ErrorCode) -> ClientError {
        ClientError::server(
            "Append",
            runnel_net::protocol::ErrorResponse::new(code, "x"),
        )
    }

    fn lost() -> ClientError {
        ClientError::connection(quinn::ConnectionError::TimedOut)
    }

    /// The duplicate-avoidance table: appends are retried only when provably not applied.
    #[test]
    fn at_most_once_requests_retry_only_when_not_applied() {
        use Safety::*;
        // Connection lost before the frame was sent: retry anything.
        assert!(Failure::not_sent(lost()).may_retry(AtMostOnce));
        assert!(Failure::not_sent(lost()).may_retry(Idempotent));
        // Lost after the frame was sent: only idempotent requests.
        assert!(!Failure::maybe_delivered(lost()).may_retry(AtMostOnce));
        assert!(Failure::maybe_delivered(lost()).may_retry(Idempotent));
        // Busy is admission control: nothing was done, retry anything.
        assert!(Failure::refused(server(ErrorCode::Busy)).may_retry(AtMostOnce));
        // NotLeader: no leader took the metadata change, so a create may be sent again.
        assert!(Failure::refused(server(ErrorCode::NotLeader)).may_retry(AtMostOnce));
        // Unavailable may leave an append half-replicated: not for appends.
        assert!(!Failure::refused(server(ErrorCode::Unavailable)).may_retry(AtMostOnce));
        assert!(Failure::refused(server(ErrorCode::Unavailable)).may_retry(Idempotent));
        // A definite refusal is final.
        assert!(!Failure::refused(server(ErrorCode::InvalidBatch)).may_retry(Idempotent));
        assert!(!Failure::not_sent(ClientError::Closed).may_retry(Idempotent));
    }

    /// A maybe-delivered failure of an append surfaces as OutcomeUnknown, never plain.
    #[test]
    fn maybe_delivered_appends_surface_as_outcome_unknown() {
        let error =
            Failure::maybe_delivered(lost()).into_error("Append", Safety::AtMostOnce, false);
        assert!(
            matches!(
                error,
                ClientError::OutcomeUnknown {
                    request: "Append",
                    ..
                }
            ),
            "{error:?}"
        );
        let error = Failure::maybe_delivered(lost()).into_error("Read", Safety::Idempotent, true);
        assert!(matches!(error, ClientError::Connection { .. }), "{error:?}");
        let error = Failure::not_sent(lost()).into_error("Append", Safety::AtMostOnce, false);
        assert!(matches!(error, ClientError::Connection { .. }), "{error:?}");
    }

    /// An idempotent producer's append is retried whatever happened to it (the server
    /// recognises a copy it stored), and given up after a maybe-delivered attempt it is still
    /// an unknown outcome, even when the last attempt was refused.
    #[test]
    fn deduplicated_appends_retry_everything_and_stay_unknown() {
        use Safety::Deduplicated;
        assert!(Failure::maybe_delivered(lost()).may_retry(Deduplicated));
        assert!(Failure::refused(server(ErrorCode::Unavailable)).may_retry(Deduplicated));
        assert!(!Failure::refused(server(ErrorCode::OutOfOrderSequence)).may_retry(Deduplicated));
        let error = Failure::refused(server(ErrorCode::OutOfOrderSequence)).into_error(
            "Append",
            Deduplicated,
            true,
        );
        assert!(
            matches!(error, ClientError::OutcomeUnknown { .. }),
            "{error:?}"
        );
        let error = Failure::refused(server(ErrorCode::OutOfOrderSequence)).into_error(
            "Append",
            Deduplicated,
            false,
        );
        assert_eq!(error.code(), Some(ErrorCode::OutOfOrderSequence));
    }

    /// The doubling starts at min, stops at max, and the server's hint wins when longer.
    #[test]
    fn backoff_doubles_up_to_the_bound() {
        assert_eq!(backoff_ms(1, 100, 1_000, 0), 50);
        assert_eq!(backoff_ms(1, 100, 1_000, 50), 100);
        assert_eq!(backoff_ms(2, 100, 1_000, 100), 200);
        assert_eq!(backoff_ms(4, 100, 1_000, 400), 800);
        assert_eq!(backoff_ms(4, 100, 1_000, 401), 400);
        assert_eq!(backoff_ms(5, 100, 1_000, 500), 1_000);
        assert_eq!(backoff_ms(u32::MAX, u64::MAX, u64::MAX, 0), u64::MAX / 2);
        let policy = RetryPolicy {
            attempts_max: 3,
            backoff_ms_min: 10,
            backoff_ms_max: 20,
        };
        assert_eq!(policy.delay(1, Some(5_000)), Duration::from_millis(5_000));
        assert!(policy.delay(3, None) <= Duration::from_millis(20));
        assert_eq!(
            policy.delay(1, Some(u64::MAX)),
            Duration::from_millis(RETRY_AFTER_MS_MAX)
        );
    }

    proptest! {
        /// Every delay lies in [base/2, base] and never exceeds the maximum.
        #[test]
        fn backoff_stays_in_bounds(attempt in 0u32..80, min in 0u64..10_000, extra in 0u64..100_000, random: u64) {
            let max = min + extra;
            let delay = backoff_ms(attempt, min, max, random);
            prop_assert!(delay <= max);
            let base = min.saturating_mul(1 << attempt.saturating_sub(1).min(32)).min(max);
            prop_assert!(delay >= base / 2 && delay <= base);
        }
    }
}
