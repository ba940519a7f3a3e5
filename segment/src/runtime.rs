//! The one place that knows glommio's executor API, so another io_uring runtime can replace it.
//!
//! glommio pins about three times `io_memory` per executor (one registration per ring) against
//! `RLIMIT_MEMLOCK`; [`io_memory_bytes`] sizes it from the limit so that many executors fit
//! (tests run many at once). With too little, glommio runs without registered buffers.

use std::future::Future;

use glommio::{LocalExecutorBuilder, Placement};

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

/// Runs `make()`'s future to completion on a new, unpinned glommio executor on its own
/// thread, sized for `executors` executors in the process, and returns its output.
pub fn run<T, F, Fut>(name: &str, executors: usize, make: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    let handle = LocalExecutorBuilder::new(Placement::Unbound)
        .name(name)
        .io_memory(io_memory_bytes(executors))
        .spawn(make)
        .unwrap_or_else(|e| panic!("cannot start glommio executor {name}: {e}"));
    handle
        .join()
        .unwrap_or_else(|e| panic!("glommio executor {name} failed: {e}"))
}

/// A background task on the current executor; dropping the handle cancels the task.
pub struct TaskHandle<T>(glommio::Task<T>);

impl<T> TaskHandle<T> {
    /// Waits for the task's output.
    pub async fn join(self) -> T {
        self.0.await
    }
}

/// Spawns a task on the current executor.
pub fn spawn<T: 'static>(future: impl Future<Output = T> + 'static) -> TaskHandle<T> {
    TaskHandle(glommio::spawn_local(future))
}

/// Sleeps on the current executor's timer wheel.
pub async fn sleep(duration: std::time::Duration) {
    glommio::timer::sleep(duration).await;
}

/// Runs two futures concurrently on the current task and returns both outputs.
pub async fn both<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    let mut a_out = None;
    let mut b_out = None;
    std::future::poll_fn(|cx| {
        if a_out.is_none() {
            if let std::task::Poll::Ready(v) = a.as_mut().poll(cx) {
                a_out = Some(v);
            }
        }
        if b_out.is_none() {
            if let std::task::Poll::Ready(v) = b.as_mut().poll(cx) {
                b_out = Some(v);
            }
        }
        match (a_out.take(), b_out.take()) {
            (Some(a), Some(b)) => std::task::Poll::Ready((a, b)),
            (a_done, b_done) => {
                a_out = a_done;
                b_out = b_done;
                std::task::Poll::Pending
            }
        }
    })
    .await
}
