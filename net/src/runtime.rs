//! The `quinn::Runtime` for glommio: one QUIC endpoint per executor, thread-per-core.
//!
//! quinn is runtime-agnostic: it asks a [`quinn::Runtime`] for timers, for task spawning and
//! for an async UDP socket. [`GlommioRuntime`] answers with glommio's timer wheel, glommio's
//! `spawn_local`, and a quinn-udp socket whose readiness comes from glommio's io_uring (see
//! `socket.rs` for how, since glommio has no public fd-readiness API).
//!
//! Invariant (the Send/!Send story): quinn demands `Send + Sync` runtime objects, glommio's are
//! `!Send`. Every glommio object stays in a thread-local table of the executor thread that
//! created it and quinn only holds `Send` handles to it (`confined.rs`); there is no `unsafe`.
//! Every runtime, timer, socket and poller method checks the calling thread first and panics
//! with [`WRONG_THREAD`] elsewhere: quinn endpoints, connections and streams built on this
//! runtime belong to their executor's thread (move bytes between cores, not QUIC objects).
//!
//! Must never: block the executor, or touch a glommio object off its thread.

mod confined;
mod socket;
mod timer;

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub use confined::WRONG_THREAD;
pub use socket::{WRITABLE_RETRY_US_MAX, WRITABLE_RETRY_US_MIN};

use confined::Owner;
use socket::GlommioUdpSocket;
use timer::GlommioTimer;

/// Runs quinn on the glommio executor of the thread that created it.
///
/// Create it inside a glommio executor (`LocalExecutor::run` or a spawned executor's future);
/// glommio panics elsewhere. Use it, and everything quinn builds on it, only on that thread.
pub struct GlommioRuntime {
    owner: Owner,
    /// glommio's id of the executor that created the runtime (for diagnostics).
    executor_id: usize,
    stats: Arc<RuntimeStats>,
}

impl GlommioRuntime {
    /// A runtime bound to the calling thread's glommio executor.
    ///
    /// # Panics
    ///
    /// Outside a glommio executor (glommio's own panic).
    pub fn new() -> GlommioRuntime {
        GlommioRuntime {
            owner: Owner::current(),
            executor_id: glommio::executor().id(),
            stats: Arc::new(RuntimeStats::default()),
        }
    }

    /// What the runtime has done so far. The one method that may be called from any thread: it
    /// reads atomic counters and touches no glommio object.
    pub fn counters(&self) -> RuntimeCounters {
        self.stats.snapshot()
    }
}

impl Default for GlommioRuntime {
    /// Same as [`GlommioRuntime::new`].
    fn default() -> GlommioRuntime {
        GlommioRuntime::new()
    }
}

impl fmt::Debug for GlommioRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GlommioRuntime")
            .field("owner", &self.owner)
            .field("executor_id", &self.executor_id)
            .finish_non_exhaustive()
    }
}

impl quinn::Runtime for GlommioRuntime {
    fn new_timer(&self, deadline: Instant) -> Pin<Box<dyn quinn::AsyncTimer>> {
        self.owner.check("Runtime::new_timer");
        self.stats.timers_created.fetch_add(1, Ordering::Relaxed);
        Box::pin(GlommioTimer::new(self.owner, deadline))
    }

    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        self.owner.check("Runtime::spawn");
        self.stats.tasks_spawned.fetch_add(1, Ordering::Relaxed);
        // quinn's drivers run until their endpoint or connection is done; nobody joins them.
        glommio::spawn_local(future).detach();
    }

    fn wrap_udp_socket(
        &self,
        socket: std::net::UdpSocket,
    ) -> io::Result<Arc<dyn quinn::AsyncUdpSocket>> {
        self.owner.check("Runtime::wrap_udp_socket");
        let socket = GlommioUdpSocket::new(self.owner, socket, Arc::clone(&self.stats))?;
        Ok(Arc::new(socket))
    }

    fn now(&self) -> Instant {
        // Reading the clock is harmless anywhere, but quinn only asks for it while driving a
        // connection; a call from another thread means a QUIC object has left its executor.
        self.owner.check("Runtime::now");
        Instant::now()
    }
}

/// Counters shared by a runtime and the sockets it wrapped (atomics: the sockets must be `Sync`;
/// all writes come from the owner thread, so `Relaxed` suffices).
#[derive(Debug, Default)]
pub(crate) struct RuntimeStats {
    timers_created: AtomicU64,
    tasks_spawned: AtomicU64,
    recv_waits: AtomicU64,
    recv_calls: AtomicU64,
    recv_datagrams: AtomicU64,
    send_would_block: AtomicU64,
    send_splits: AtomicU64,
}

impl RuntimeStats {
    pub(crate) fn count_recv_wait(&self) {
        self.recv_waits.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_recv(&self, datagrams: u64) {
        self.recv_calls.fetch_add(1, Ordering::Relaxed);
        self.recv_datagrams.fetch_add(datagrams, Ordering::Relaxed);
    }

    pub(crate) fn count_send_would_block(&self) {
        self.send_would_block.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_send_split(&self) {
        self.send_splits.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> RuntimeCounters {
        RuntimeCounters {
            timers_created: self.timers_created.load(Ordering::Relaxed),
            tasks_spawned: self.tasks_spawned.load(Ordering::Relaxed),
            recv_waits: self.recv_waits.load(Ordering::Relaxed),
            recv_calls: self.recv_calls.load(Ordering::Relaxed),
            recv_datagrams: self.recv_datagrams.load(Ordering::Relaxed),
            send_would_block: self.send_would_block.load(Ordering::Relaxed),
            send_splits: self.send_splits.load(Ordering::Relaxed),
        }
    }
}

/// A snapshot of a [`GlommioRuntime`]'s counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RuntimeCounters {
    /// Timers quinn asked for (about one per connection).
    pub timers_created: u64,
    /// Tasks quinn spawned (one per endpoint and per connection).
    pub tasks_spawned: u64,
    /// Times a socket was found empty and a readability probe was armed on io_uring.
    pub recv_waits: u64,
    /// Receive syscalls that returned data.
    pub recv_calls: u64,
    /// Datagrams those calls returned, counting each GRO segment: well above `recv_calls`
    /// when GRO and `recvmmsg` batch well.
    pub recv_datagrams: u64,
    /// Sends refused because the socket's send buffer was full (each costs a timed retry).
    pub send_would_block: u64,
    /// GSO transmits too large for one `sendmsg` (segments of a large MTU), sent in several.
    pub send_splits: u64,
}
