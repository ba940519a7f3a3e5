//! How a node stops: one stop signal that wakes the waiters of every core at once, and the
//! first fatal error, kept typed so that the process exits with that error's code whichever
//! core hit it.
//!
//! The signal is a [`Latch`]: raised from any thread (the signal thread, `main`, a core that
//! failed), it wakes every task of every core waiting in [`NodeStop::until_stopping`] through
//! that task's own executor, so no core polls the flag. A core that hits a fatal fault
//! records it here (`fail`) and the whole node stops; `main` sees the recorded error. Later
//! errors are logged but do not replace the first: the first is the cause, the rest are
//! usually its consequences ("the channel to core 1 is closed").

use std::sync::{Mutex, PoisonError};

use runnel_segment::runtime::Latch;

use crate::error::FatalError;

/// The node-wide stop signal and the first fatal error.
#[derive(Debug, Default)]
pub struct NodeStop {
    stopping: Latch,
    first_fatal: Mutex<Option<(u32, FatalError)>>,
}

impl NodeStop {
    /// Asks every core to stop cleanly (a signal, or the end of a test).
    pub fn request(&self) {
        self.stopping.raise();
    }

    /// Whether the node is stopping, cleanly or not.
    pub fn is_stopping(&self) -> bool {
        self.stopping.is_raised()
    }

    /// Returns once the node is stopping, woken by whichever thread stops it.
    pub async fn until_stopping(&self) {
        self.stopping.wait().await;
    }

    /// Blocks the calling thread (not an executor's) until the node is stopping or `timeout`
    /// passes; whether it is stopping.
    pub fn wait_blocking(&self, timeout: std::time::Duration) -> bool {
        self.stopping.wait_blocking(timeout)
    }

    /// Records a fatal fault on `core` and stops the node. The first fault is kept as the
    /// reason the process exits with; later ones are only logged.
    pub fn fail(&self, core: u32, error: FatalError) {
        tracing::error!(core, %error, "stopping the node");
        let mut first = self
            .first_fatal
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if first.is_none() {
            *first = Some((core, error));
        }
        drop(first);
        self.stopping.raise();
    }

    /// Whether some core recorded a fatal fault.
    pub fn has_failed(&self) -> bool {
        self.first_fatal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Tasks waiting in [`NodeStop::until_stopping`] now, on every core.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.stopping.waiters()
    }

    /// The first fatal fault, taken out (the process exits with it).
    pub fn take_fatal(&self) -> Option<(u32, FatalError)> {
        self.first_fatal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use runnel_segment::runtime::{run, spawn};

    use super::*;

    /// Starts `executors` executors whose tasks wait for the stop (three waiters each, and no
    /// timer anywhere: only the stop can end them), and returns their threads once all wait.
    fn waiting_executors(
        stop: &Arc<NodeStop>,
        executors: usize,
    ) -> Vec<std::thread::JoinHandle<()>> {
        let threads: Vec<_> = (0..executors)
            .map(|index| {
                let stop = Arc::clone(stop);
                std::thread::spawn(move || {
                    run(
                        &format!("stop-waiter-{index}"),
                        executors,
                        move || async move {
                            let waiters: Vec<_> = (0..3)
                                .map(|_| {
                                    let stop = Arc::clone(&stop);
                                    spawn(async move { stop.until_stopping().await })
                                })
                                .collect();
                            for waiter in waiters {
                                waiter.await;
                            }
                            assert!(stop.is_stopping());
                        },
                    )
                })
            })
            .collect();
        // Registered before the stop, so the stop must wake them (a stop before they wait
        // would end the waits at once and prove nothing).
        while stop.waiting() < 3 * executors {
            std::thread::yield_now();
        }
        threads
    }

    /// A stop requested from a thread that runs no executor (the signal thread) wakes every
    /// waiter of every executor.
    #[test]
    fn a_stop_request_wakes_the_waiters_of_every_executor() {
        let stop = Arc::new(NodeStop::default());
        let threads = waiting_executors(&stop, 2);
        stop.request();
        for thread in threads {
            thread.join().expect("every waiter returned");
        }
        assert_eq!(stop.waiting(), 0);
    }

    /// A fatal error recorded by a task of one executor wakes the waiters of the others.
    #[test]
    fn a_fatal_error_on_one_executor_wakes_the_others() {
        let stop = Arc::new(NodeStop::default());
        let threads = waiting_executors(&stop, 2);
        let failing = Arc::clone(&stop);
        run("stop-failing", 3, move || async move {
            failing.fail(2, FatalError::Io("a shard log failed".into()));
        });
        for thread in threads {
            thread.join().expect("every waiter returned");
        }
        let (core, _) = stop.take_fatal().expect("the error is the reason");
        assert_eq!(core, 2);
    }

    #[test]
    fn the_first_fatal_error_is_the_reason() {
        let stop = NodeStop::default();
        assert!(!stop.is_stopping() && !stop.has_failed());
        stop.fail(1, FatalError::Io("open shard 3: bad segment header".into()));
        stop.fail(
            0,
            FatalError::Executor("the channel to core 1 is closed".into()),
        );
        assert!(stop.is_stopping() && stop.has_failed());
        let (core, error) = stop.take_fatal().expect("a fatal error was recorded");
        assert_eq!(core, 1);
        assert_eq!(error.exit_code(), 4, "{error}");
    }

    #[test]
    fn a_clean_stop_records_no_error() {
        let stop = NodeStop::default();
        stop.request();
        assert!(stop.is_stopping());
        assert!(stop.take_fatal().is_none());
    }
}
