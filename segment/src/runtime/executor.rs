//! Executors: one thread each, running tasks that never leave it, optionally pinned to a CPU,
//! with `io_memory` sized so that every executor of the process fits the memlock limit.
//!
//! glommio pins about three times `io_memory` per executor (one registration per ring) against
//! `RLIMIT_MEMLOCK`; [`io_memory_bytes`] sizes it from the limit so that many executors fit
//! (tests run many at once). With too little, glommio runs without registered buffers.

use std::future::Future;

use glommio::{LocalExecutorBuilder, Placement};

use super::RuntimeError;

/// Smallest `io_memory` glommio accepts.
pub const IO_MEMORY_BYTES_MIN: usize = 64 << 10;
/// Largest `io_memory` worth registering.
pub const IO_MEMORY_BYTES_MAX: usize = 16 << 20;

/// The process's `RLIMIT_MEMLOCK` soft limit in bytes (`u64::MAX` when unlimited, 0 when it
/// cannot be read).
#[allow(unsafe_code)]
pub fn memlock_limit_bytes() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct we own and pass by pointer.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    if rc != 0 {
        return 0;
    }
    if limit.rlim_cur == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        limit.rlim_cur
    }
}

/// `io_memory` for one of `executors` executors sharing the memlock limit: a quarter of each
/// one's share (glommio pins ~3×), clamped to [64 KiB, 16 MiB].
pub fn io_memory_bytes(executors: usize) -> usize {
    let share = memlock_limit_bytes() / (4 * executors.max(1) as u64);
    (share.min(IO_MEMORY_BYTES_MAX as u64) as usize).max(IO_MEMORY_BYTES_MIN)
}

/// Where an executor's thread runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pinning {
    /// Wherever the kernel schedules it.
    Unbound,
    /// Always on this CPU.
    Cpu(usize),
}

/// A running executor: its thread, until [`Executor::join`].
pub struct Executor<T: Send + 'static> {
    name: String,
    thread: glommio::ExecutorJoinHandle<T>,
}

impl<T: Send + 'static> Executor<T> {
    /// Starts an executor named `name` on a new thread, placed as `pinning` says, with
    /// `io_memory_bytes` of registered I/O memory, running `make()`'s future to completion.
    pub fn start<F, Fut>(
        name: &str,
        pinning: Pinning,
        io_memory_bytes: usize,
        make: F,
    ) -> Result<Executor<T>, RuntimeError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        let placement = match pinning {
            Pinning::Unbound => Placement::Unbound,
            Pinning::Cpu(cpu) => Placement::Fixed(cpu),
        };
        let thread = LocalExecutorBuilder::new(placement)
            .name(name)
            .io_memory(io_memory_bytes)
            .spawn(make)
            .map_err(|error| RuntimeError::Start {
                name: name.to_owned(),
                reason: error.to_string(),
            })?;
        Ok(Executor {
            name: name.to_owned(),
            thread,
        })
    }

    /// Waits for the executor's future to complete and returns its output; an error if the
    /// thread panicked.
    pub fn join(self) -> Result<T, RuntimeError> {
        let name = self.name;
        self.thread
            .join()
            .map_err(|_| RuntimeError::Panicked { name })
    }
}

/// Runs `make()`'s future to completion on a new, unpinned executor on its own thread, sized
/// for `executors` executors in the process, and returns its output.
///
/// # Panics
///
/// If the executor cannot start or its future panics (tests and tools use it; the node starts
/// its cores with [`Executor::start`] and handles both).
pub fn run<T, F, Fut>(name: &str, executors: usize, make: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    Executor::start(name, Pinning::Unbound, io_memory_bytes(executors), make)
        .and_then(Executor::join)
        .unwrap_or_else(|error| panic!("{error}"))
}
