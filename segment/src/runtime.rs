//! The runtime: the one module that knows glommio's executor API, so that a maintained fork or
//! another io_uring runtime can replace it by rewriting this module (and the storage backend in
//! `storage/dma.rs`) without touching the server.
//!
//! What it offers, thread-per-core: start an executor on its own thread, pinned or not, with
//! its `io_memory` sized from `RLIMIT_MEMLOCK` ([`executor`]); spawn tasks on the current
//! executor, detached or with a handle, and run blocking work off it ([`task`]); sleep and
//! deadlines ([`time`]); wait for the first or both of several futures ([`select`]); wake-ups
//! within one executor ([`Event`]) and across threads ([`Latch`]); channels between tasks of
//! one executor and the mesh of channels between executors ([`channel`]); buffered files for
//! small logs that are not segments ([`file`]).
//!
//! Invariants: everything here except [`Latch`] and the [`channel::Mesh`] builder is `!Send`
//! and used on the executor that created it. A [`Latch`] is the only way one thread wakes tasks
//! of another: it stores the wakers of its waiters and wakes them from the raising thread (an
//! executor routes a wake from a foreign thread through its own notification fd), so a waiter
//! needs no polling tick however the latch is raised.
//!
//! Must never: block an executor thread (blocking work goes to [`spawn_blocking`]), or let a
//! glommio type out of this module (the QUIC adapter in `runnel-net` and the DMA storage keep
//! their own, since `net` and `segment` may not depend on each other).

pub mod channel;
mod event;
pub mod executor;
pub mod file;
mod latch;
mod select;
mod task;
pub mod time;

pub use event::{yield_now, Event, Listen, YieldNow};
pub use executor::{io_memory_bytes, memlock_limit_bytes, run, Executor, Pinning};
pub use executor::{IO_MEMORY_BYTES_MAX, IO_MEMORY_BYTES_MIN};
pub use latch::{Latch, LatchWait};
pub use select::{both, first_of, First};
pub use task::{spawn, spawn_blocking, spawn_detached, TaskHandle};
pub use time::{sleep, sleep_until, timeout, Elapsed};

/// Why the runtime could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// An executor could not be started (its thread, its io_uring rings, its pinning).
    #[error("cannot start executor {name}: {reason}")]
    Start {
        /// The executor's name.
        name: String,
        /// What the runtime said.
        reason: String,
    },
    /// An executor's thread ended with a panic.
    #[error("executor {name} panicked")]
    Panicked {
        /// The executor's name.
        name: String,
    },
    /// An executor could not join the mesh of channels between executors.
    #[error("cannot join the mesh: {reason}")]
    Mesh {
        /// What the runtime said.
        reason: String,
    },
}
