//! How a node stops: one flag every core polls, and the first fatal error, kept typed so that
//! the process exits with that error's code whichever core hit it.
//!
//! A core that hits a fatal fault records it here (`fail`) and the whole node stops: the other
//! cores see the flag within one poll interval, and `main` sees the recorded error. Later
//! errors are logged but do not replace the first: the first is the cause, the rest are
//! usually its consequences ("the channel to core 1 is closed").

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::error::FatalError;

/// The node-wide stop signal and the first fatal error.
#[derive(Debug, Default)]
pub struct NodeStop {
    stopping: AtomicBool,
    first_fatal: Mutex<Option<(u32, FatalError)>>,
}

impl NodeStop {
    /// Asks every core to stop cleanly (a signal, or the end of a test).
    pub fn request(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Whether the node is stopping, cleanly or not.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
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
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Whether some core recorded a fatal fault.
    pub fn has_failed(&self) -> bool {
        self.first_fatal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
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
    use super::*;

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
