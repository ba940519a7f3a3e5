//! Tasks on the current executor: spawned with a handle (awaited, or cancelled by dropping it)
//! or detached (running until they finish by themselves), and blocking work off the executor.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A task on the current executor. Awaiting the handle waits for the task's output; dropping
/// it cancels the task (use [`TaskHandle::detach`] or [`spawn_detached`] to let it run on).
#[must_use = "dropping a task handle cancels the task; detach it to let it run"]
pub struct TaskHandle<T>(glommio::Task<T>);

impl<T> TaskHandle<T> {
    /// Waits for the task's output.
    pub async fn join(self) -> T {
        self.0.await
    }

    /// Lets the task run to its end without anyone awaiting it.
    pub fn detach(self) {
        self.0.detach();
    }
}

impl<T> Future for TaskHandle<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        Pin::new(&mut self.0).poll(cx)
    }
}

/// Spawns a task on the current executor.
///
/// # Panics
///
/// Outside an executor.
pub fn spawn<T: 'static>(future: impl Future<Output = T> + 'static) -> TaskHandle<T> {
    TaskHandle(glommio::spawn_local(future))
}

/// Spawns a task on the current executor that runs until it finishes by itself.
///
/// # Panics
///
/// Outside an executor.
pub fn spawn_detached(future: impl Future<Output = ()> + 'static) {
    glommio::spawn_local(future).detach();
}

/// Runs `work` on a thread of the executor's blocking pool (a DNS lookup, a blocking file
/// operation) and waits for its result without blocking the executor.
///
/// # Panics
///
/// Outside an executor.
pub async fn spawn_blocking<R: Send + 'static>(work: impl FnOnce() -> R + Send + 'static) -> R {
    glommio::executor().spawn_blocking(work).await
}
