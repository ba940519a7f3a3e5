//! Time on the current executor's timer wheel: sleeping for a duration or until an instant.
//! A timer is for a real deadline (a timeout, a retry's back-off, a periodic duty); waiting for
//! something to happen is an [`Event`](super::Event) or a [`Latch`](super::Latch), never a
//! loop that sleeps and looks again.

use std::future::Future;
use std::time::{Duration, Instant};

use super::{first_of, First};

/// Sleeps for `duration` on the current executor.
///
/// # Panics
///
/// Outside an executor.
pub async fn sleep(duration: Duration) {
    glommio::timer::sleep(duration).await;
}

/// Sleeps until `deadline` (at once if it has passed).
///
/// # Panics
///
/// Outside an executor.
pub async fn sleep_until(deadline: Instant) {
    sleep(deadline.saturating_duration_since(Instant::now())).await;
}

/// A deadline passed before the future it guarded completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the deadline of {duration_ms} ms passed")]
pub struct Elapsed {
    /// How long the future was given, in milliseconds.
    pub duration_ms: u64,
}

/// Runs `future` for at most `duration`; [`Elapsed`] if it did not complete by then (it is
/// dropped).
///
/// # Panics
///
/// Outside an executor.
pub async fn timeout<F: Future>(duration: Duration, future: F) -> Result<F::Output, Elapsed> {
    match first_of(future, sleep(duration), std::future::pending::<()>()).await {
        First::A(output) => Ok(output),
        First::B(()) | First::C(()) => Err(Elapsed {
            duration_ms: duration.as_millis().try_into().unwrap_or(u64::MAX),
        }),
    }
}
