//! A one-shot flag any thread raises and tasks on any executor await, woken at once: how a
//! node's stop (a signal, a fatal error on one core) reaches the waiters of every core.
//!
//! Why wakers, and not a message per executor or an eventfd: a `std::task::Waker` is `Send`
//! by contract, and glommio honours it, routing a wake from a foreign thread through the
//! owning executor's notifier (an eventfd that wakes the executor from io_uring). So the
//! raising thread wakes each registered waiter directly, whichever thread it is on and whether
//! or not it runs an executor (a signal thread does not). The latch is runtime-agnostic.
//!
//! Cost: a wait takes the latch's mutex to register its waker and again when it ends (to
//! remove it, so waits that end otherwise leave nothing behind). Waits on a latch are for rare
//! events (stopping), never on a data path.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

/// A flag raised once, from any thread; [`Latch::wait`] completes once it is raised.
#[derive(Debug, Default)]
pub struct Latch {
    raised: AtomicBool,
    waiters: Mutex<Waiters>,
}

#[derive(Debug, Default)]
struct Waiters {
    next_id: u64,
    wakers: HashMap<u64, Waker>,
}

impl Latch {
    /// A latch not raised yet.
    pub fn new() -> Latch {
        Latch::default()
    }

    /// Raises the latch and wakes every waiter, on whatever thread it waits. Raising it again
    /// does nothing.
    pub fn raise(&self) {
        // The flag is set before the waiters are taken: a waiter that registers after this
        // `take` sees the flag under the same mutex, and one registered before is woken.
        self.raised.store(true, Ordering::SeqCst);
        let wakers = std::mem::take(&mut self.lock().wakers);
        for waker in wakers.into_values() {
            waker.wake();
        }
    }

    /// Whether the latch was raised.
    pub fn is_raised(&self) -> bool {
        self.raised.load(Ordering::SeqCst)
    }

    /// A future that completes once the latch is raised (at once if it is).
    pub fn wait(&self) -> LatchWait<'_> {
        LatchWait {
            latch: self,
            id: None,
        }
    }

    /// Blocks the calling thread (one that runs no executor, like `main`) until the latch is
    /// raised or `timeout` passes (never, for `Duration::MAX`); whether it was raised.
    pub fn wait_blocking(&self, timeout: Duration) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut context = Context::from_waker(&waker);
        let mut wait = std::pin::pin!(self.wait());
        loop {
            if wait.as_mut().poll(&mut context).is_ready() {
                return true;
            }
            // A raise unparks this thread; a spurious wake-up polls again.
            match deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    std::thread::park_timeout(left);
                }
                None => std::thread::park(),
            }
        }
    }

    /// Waiters registered now (for tests: a wait that ended left none behind).
    pub fn waiters(&self) -> usize {
        self.lock().wakers.len()
    }

    fn lock(&self) -> MutexGuard<'_, Waiters> {
        // A panic while holding the lock leaves the map consistent (insert and remove only).
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Wakes a thread blocked in [`Latch::wait_blocking`].
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// The future of [`Latch::wait`].
#[must_use = "a latch wait does nothing unless awaited"]
pub struct LatchWait<'a> {
    latch: &'a Latch,
    /// This wait's registration, once it registered.
    id: Option<u64>,
}

impl Future for LatchWait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.latch.is_raised() {
            return Poll::Ready(());
        }
        let latch = self.latch;
        let mut waiters = latch.lock();
        // Checked again under the mutex: `raise` sets the flag before it takes the wakers.
        if latch.is_raised() {
            return Poll::Ready(());
        }
        let id = match self.id {
            Some(id) => id,
            None => {
                let id = waiters.next_id;
                waiters.next_id += 1;
                id
            }
        };
        match waiters.wakers.get_mut(&id) {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            Some(waker) => waker.clone_from(cx.waker()),
            None => {
                waiters.wakers.insert(id, cx.waker().clone());
            }
        }
        drop(waiters);
        self.id = Some(id);
        Poll::Pending
    }
}

impl Drop for LatchWait<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.latch.lock().wakers.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::Latch;
    use crate::runtime::{first_of, run, sleep, First};

    /// A wait on one executor ends when another thread raises the latch: the waiter has no
    /// timer at all, so only the raise can end it.
    #[test]
    fn a_raise_on_another_thread_wakes_the_waiter() {
        let latch = Arc::new(Latch::new());
        let (registered_sender, registered) = std::sync::mpsc::channel();
        let waiter = {
            let latch = Arc::clone(&latch);
            std::thread::spawn(move || {
                run("latch-waiter", 2, move || async move {
                    let wait = latch.wait();
                    let mut wait = std::pin::pin!(wait);
                    // Registered before the raiser is told to go: the raise must wake it.
                    assert!(futures_poll_once(wait.as_mut()).await.is_pending());
                    let _ = registered_sender.send(());
                    wait.await;
                    latch.waiters()
                })
            })
        };
        registered.recv().expect("the waiter registered");
        latch.raise();
        let left = waiter.join().expect("the waiter's executor");
        assert_eq!(left, 0, "a raise leaves no waiter registered");
    }

    /// A thread blocked in `wait_blocking` returns when an executor raises the latch; with
    /// nothing raised, it returns false once its timeout passed.
    #[test]
    fn a_raise_from_an_executor_wakes_a_blocked_thread() {
        let latch = Arc::new(Latch::new());
        assert!(!latch.wait_blocking(std::time::Duration::ZERO));
        let blocked = {
            let latch = Arc::clone(&latch);
            std::thread::spawn(move || latch.wait_blocking(std::time::Duration::MAX))
        };
        while latch.waiters() == 0 {
            std::thread::yield_now();
        }
        let raising = Arc::clone(&latch);
        run("latch-raiser", 1, move || async move { raising.raise() });
        assert!(
            blocked.join().expect("the blocked thread"),
            "raised, not timed out"
        );
    }

    /// A wait that ends otherwise (it lost a race) leaves no registration behind; a wait on a
    /// raised latch completes at once.
    #[test]
    fn a_wait_given_up_leaves_nothing_behind() {
        run("latch-give-up", 1, || async {
            let latch = Latch::new();
            let raced = first_of(
                latch.wait(),
                sleep(std::time::Duration::from_millis(1)),
                std::future::pending::<()>(),
            )
            .await;
            assert!(matches!(raced, First::B(())));
            assert_eq!(latch.waiters(), 0);
            latch.raise();
            latch.raise();
            latch.wait().await;
            assert!(latch.is_raised());
        });
    }

    /// Polls a future once and hands back whether it was ready.
    async fn futures_poll_once<F: std::future::Future + Unpin>(
        mut future: F,
    ) -> std::task::Poll<F::Output> {
        std::future::poll_fn(|cx| std::task::Poll::Ready(std::pin::Pin::new(&mut future).poll(cx)))
            .await
    }
}
