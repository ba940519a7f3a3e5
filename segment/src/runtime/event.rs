//! A wake-up within one executor: tasks wait until some state changed, then check again.
//! Waiters are woken all at once; a waiter takes its `listen()` before checking its condition
//! and re-checks it in a loop, so no change is missed. For a wake-up from another thread, see
//! [`Latch`](super::Latch).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Wakes every task waiting on it when notified.
#[derive(Default)]
pub struct Event {
    generation: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
}

impl Event {
    /// Wakes every current waiter.
    pub fn notify(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        for waker in self.waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    /// A future that completes at the next `notify` after this call.
    pub fn listen(&self) -> Listen<'_> {
        Listen {
            event: self,
            generation: self.generation.get(),
        }
    }
}

/// The future of [`Event::listen`].
pub struct Listen<'a> {
    event: &'a Event,
    generation: u64,
}

impl Future for Listen<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.event.generation.get() != self.generation {
            return Poll::Ready(());
        }
        let mut waiters = self.event.waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// Yields once to the executor, so that other tasks run.
pub fn yield_now() -> YieldNow {
    YieldNow(false)
}

/// The future of [`yield_now`].
pub struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
