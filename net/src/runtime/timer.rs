//! quinn's timers on glommio's timer wheel.
//!
//! A quinn connection keeps one timer and re-arms it for every loss-detection, idle and pacing
//! deadline. Each timer is a glommio [`Timer`] confined to the executor thread (it holds an
//! `Rc` into the reactor), behind a `Send` [`Confined`] handle as quinn requires.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use glommio::timer::Timer;

use super::confined::{Confined, Owner};

/// A quinn timer backed by a glommio timer on the owner's executor.
#[derive(Debug)]
pub(crate) struct GlommioTimer {
    timer: Confined<Timer>,
}

impl GlommioTimer {
    /// A timer that expires at `deadline`; must be called on `owner`'s executor thread.
    pub(crate) fn new(owner: Owner, deadline: Instant) -> GlommioTimer {
        owner.check("Runtime::new_timer");
        // glommio timers are relative; a deadline in the past fires on the first poll.
        let timer = Timer::new(deadline.saturating_duration_since(Instant::now()));
        GlommioTimer {
            timer: Confined::new(owner, "Runtime::new_timer", timer),
        }
    }
}

impl quinn::AsyncTimer for GlommioTimer {
    fn reset(self: Pin<&mut Self>, deadline: Instant) {
        self.timer.with("AsyncTimer::reset", |timer| {
            timer.reset(deadline.saturating_duration_since(Instant::now()));
        });
    }

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.timer.with("AsyncTimer::poll", |timer| {
            Pin::new(timer).poll(cx).map(|_fired_at| ())
        })
    }
}
