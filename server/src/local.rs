//! The shard logs a core owns: opened when first used, closed when idle.
//!
//! A node may own far more shards than it can hold open: an open log holds a file descriptor
//! per segment, a tail buffer and a flusher task, and the open-files limit of a process is
//! typically in the tens of thousands. So a shard's log is not opened when the shard is created
//! or when the node starts; the first request that needs it opens it (running its recovery),
//! and a log nobody holds is closed again after `log.idle_close_ms`, or sooner when the core
//! holds `log.open_logs_max` open logs and must make room for another.
//!
//! A closed log remembers its start and next offsets (nothing can change them while it is
//! closed: this process holds the data directory's lock) and when retention would next delete
//! one of its segments, so descriptions and retention do not reopen it.
//!
//! At start every core opens and closes each of its logs once in the background
//! ([`verify_logs`]): recovery checks each log, so damage to acknowledged records is found and
//! stops the node (exit code 9) within seconds of the start, not only when a client reads the
//! damaged shard; and the offsets of every shard become known.

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use runnel_core::{Offset, ShardId};
use runnel_net::protocol::ErrorResponse;
use runnel_segment::log::ReadBound;
use runnel_segment::runtime::{spawn, Event};
use runnel_segment::{DmaStorage, LogError, ShardLog};

use crate::core::Core;
use crate::error::FatalError;

/// An open shard log, shared by the requests and consumers using it.
pub type OpenLog = Rc<ShardLog<DmaStorage>>;

/// Why a shard's log could not be opened. Damage to acknowledged records and I/O failures
/// also stop the node ([`Core::fail`]); the request that met them gets [`OpenError::Storage`].
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The shard was deleted while the request waited for its log.
    #[error("shard {shard} was deleted")]
    Deleted {
        /// The shard.
        shard: ShardId,
    },
    /// The process is out of file descriptors or memory now: retry later.
    #[error("{message}")]
    Unavailable {
        /// What failed, with the shard and its directory.
        message: String,
    },
    /// The disk is full, or the log is damaged or unreadable.
    #[error("{message}")]
    Storage {
        /// What failed, with the shard and its directory.
        message: String,
    },
}

/// Logs a core opens at once when it opens many (the check at start).
pub const OPENS_IN_FLIGHT_MAX: usize = 64;
/// How often each core closes the shard logs idle for long enough, in milliseconds.
pub const IDLE_CLOSE_INTERVAL_MS: u64 = 1_000;

/// A shard owned by this core, and its log, open or not.
pub struct LocalShard {
    /// The shard.
    pub id: ShardId,
    /// Its stream's retention, for the log's configuration.
    retention_ms: u64,
    slot: RefCell<Slot>,
    /// The slot changed (an open or a close finished).
    changed: Event,
    /// When a request last took the log.
    last_used: Cell<Instant>,
    /// The shard was deleted: an open that finishes now closes what it opened.
    deleted: Cell<bool>,
    /// Its idempotent producers (`crate::dedup`), built when first needed.
    pub producers: crate::dedup::ProducerSlot,
}

enum Slot {
    /// Not open: what the log held when it was last closed; `None` when it was not open since
    /// the node started (or its close failed), so its offsets are unknown.
    Closed(Option<ClosedLog>),
    Opening,
    Open(OpenLog),
    Closing,
}

/// What a closed log held; nothing changes it until it is opened again.
#[derive(Debug, Clone, Copy)]
struct ClosedLog {
    start: Offset,
    next: Offset,
    /// [`ShardLog::retention_due_ms`] at the close.
    retention_due_ms: Option<i64>,
}

/// The first offset readers bounded by `bound` may not see yet.
pub fn visible_end(log: &ShardLog<DmaStorage>, bound: ReadBound) -> Offset {
    match bound {
        ReadBound::Durable => log.durable_offset(),
        ReadBound::Written => log.written_offset(),
        ReadBound::Below(offset) => offset.min(log.written_offset()),
    }
}

impl LocalShard {
    /// A shard whose log is not open.
    pub fn new(id: ShardId, retention_ms: u64) -> LocalShard {
        LocalShard {
            id,
            retention_ms,
            slot: RefCell::new(Slot::Closed(None)),
            changed: Event::default(),
            last_used: Cell::new(Instant::now()),
            deleted: Cell::new(false),
            producers: crate::dedup::ProducerSlot::default(),
        }
    }

    /// A shard whose log was just created, empty: its offsets are known without opening it.
    pub fn new_empty(id: ShardId, retention_ms: u64) -> LocalShard {
        let shard = LocalShard::new(id, retention_ms);
        *shard.slot.borrow_mut() = Slot::Closed(Some(ClosedLog {
            start: Offset(0),
            next: Offset(0),
            retention_due_ms: None,
        }));
        shard
    }

    /// The log, if it is open now.
    pub fn open_log(&self) -> Option<OpenLog> {
        match &*self.slot.borrow() {
            Slot::Open(log) => Some(Rc::clone(log)),
            _ => None,
        }
    }

    /// Whether the log is open.
    pub fn is_open(&self) -> bool {
        matches!(&*self.slot.borrow(), Slot::Open(_))
    }

    /// The start and next offsets, when known without opening the log.
    pub fn offsets(&self) -> Option<(Offset, Offset)> {
        match &*self.slot.borrow() {
            Slot::Open(log) => Some((log.start_offset(), log.next_offset())),
            Slot::Closed(Some(closed)) => Some((closed.start, closed.next)),
            _ => None,
        }
    }

    /// The first offset readers bounded by `bound` may not see yet, when known without opening
    /// the log (everything in a closed log is durable).
    pub fn visible_end(&self, bound: ReadBound) -> Option<Offset> {
        match &*self.slot.borrow() {
            Slot::Open(log) => Some(visible_end(log, bound)),
            Slot::Closed(Some(closed)) => Some(match bound {
                ReadBound::Below(offset) => offset.min(closed.next),
                ReadBound::Durable | ReadBound::Written => closed.next,
            }),
            _ => None,
        }
    }

    /// Whether retention has something to delete in this log at `now_ms`: always asked of an
    /// open log; a closed one only once the time its close recorded has come.
    pub fn retention_due(&self, now_ms: i64) -> bool {
        match &*self.slot.borrow() {
            Slot::Open(_) => true,
            Slot::Closed(Some(closed)) => closed.retention_due_ms.is_some_and(|due| due < now_ms),
            _ => false,
        }
    }

    /// Whether the log has not been taken since `since`.
    fn idle_since(&self, since: Instant) -> bool {
        self.last_used.get() <= since
    }
}

impl Core {
    /// The most logs this core keeps open: `log.open_logs_max`, or, when that is 0, a share of
    /// the open-files limit (half of it, split over the cores, after 1,024 for sockets and
    /// the rest; a log with many segments holds more than one descriptor).
    pub fn open_logs_max(&self) -> usize {
        if let Some(max) = self.open_logs_max.get() {
            return max;
        }
        let max = if self.config.log.open_logs_max > 0 {
            self.config.log.open_logs_max
        } else {
            // The node raised its soft limit to the hard one before the cores started.
            let files = crate::open_files::limits().map_or(1024, |(soft, _)| soft);
            let share = files.saturating_sub(1024) / 2 / self.config.cores.max(1) as u64;
            usize::try_from(share).unwrap_or(usize::MAX).max(16)
        };
        self.open_logs_max.set(Some(max));
        max
    }

    /// [`Core::open_log`], its error in the protocol's terms.
    pub async fn shard_log(&self, local: &LocalShard) -> Result<OpenLog, ErrorResponse> {
        self.open_log(local).await.map_err(ErrorResponse::from)
    }

    /// The shard's log, opened (and recovered) if it is not open. Damage to acknowledged
    /// records stops the node (exit code 9), like any I/O failure but running out of
    /// descriptors or space, which fail this request only.
    pub async fn open_log(&self, local: &LocalShard) -> Result<OpenLog, OpenError> {
        let previous = loop {
            let changed = local.changed.listen();
            {
                let mut slot = local.slot.borrow_mut();
                match &*slot {
                    Slot::Open(log) => {
                        local.last_used.set(Instant::now());
                        return Ok(Rc::clone(log));
                    }
                    Slot::Closed(closed) => {
                        let closed = *closed;
                        *slot = Slot::Opening;
                        break closed;
                    }
                    Slot::Opening | Slot::Closing => {}
                }
            }
            changed.await;
        };
        if local.deleted.get() {
            *local.slot.borrow_mut() = Slot::Closed(previous);
            local.changed.notify();
            return Err(deleted(local.id));
        }
        self.make_room().await;
        let dir = self.shard_dir(local.id);
        let opened = ShardLog::open(DmaStorage, &dir, self.log_config(local.retention_ms)).await;
        let log = match opened {
            Ok(log) => Rc::new(log),
            Err(error) => {
                *local.slot.borrow_mut() = Slot::Closed(previous);
                local.changed.notify();
                if local.deleted.get() {
                    return Err(deleted(local.id));
                }
                return Err(self.open_failed(local.id, &dir, error));
            }
        };
        local.last_used.set(Instant::now());
        *local.slot.borrow_mut() = Slot::Open(Rc::clone(&log));
        self.open_logs.borrow_mut().insert(local.id);
        local.changed.notify();
        if local.deleted.get() {
            drop(log);
            self.close_log(local).await;
            return Err(deleted(local.id));
        }
        Ok(log)
    }

    fn open_failed(&self, shard: ShardId, dir: &Path, error: LogError) -> OpenError {
        let message = format!("open shard {shard} at {}: {error}", dir.display());
        let fatal = match &error {
            LogError::Corruption { .. } => FatalError::Corruption(message.clone()),
            LogError::NoSpace { .. } => return OpenError::Storage { message },
            LogError::Io { source, .. }
                if matches!(
                    source.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM)
                ) =>
            {
                tracing::warn!(core = self.index, %shard, %error, "cannot open a shard log now");
                return OpenError::Unavailable { message };
            }
            _ => FatalError::Io(message.clone()),
        };
        self.fail(fatal);
        OpenError::Storage { message }
    }

    /// Closes the shard's log if it is open and nobody holds it; true if it closed it. A
    /// poisoned log stays open (refusing appends) until the node stops: opening it again would
    /// let recovery decide what is durable, which is the operator's call after a write or
    /// fdatasync failure, not an idle timer's.
    pub async fn close_log(&self, local: &LocalShard) -> bool {
        let closing_node = self.closing.get();
        let log = {
            let mut slot = local.slot.borrow_mut();
            match &*slot {
                Slot::Open(log)
                    if Rc::strong_count(log) == 1 && (closing_node || log.poisoned().is_none()) => {
                }
                _ => return false,
            }
            match std::mem::replace(&mut *slot, Slot::Closing) {
                Slot::Open(log) => log,
                other => {
                    *slot = other;
                    return false;
                }
            }
        };
        self.open_logs.borrow_mut().remove(&local.id);
        let closed = ClosedLog {
            start: log.start_offset(),
            next: log.next_offset(),
            retention_due_ms: log.retention_due_ms(),
        };
        let result = match Rc::try_unwrap(log) {
            Ok(log) => log.close().await,
            Err(log) => {
                // Taken between the check and here: it stays open.
                *local.slot.borrow_mut() = Slot::Open(log);
                self.open_logs.borrow_mut().insert(local.id);
                local.changed.notify();
                return false;
            }
        };
        let state = match result {
            Ok(()) => Some(closed),
            Err(error) => {
                // A poisoned log: what its recovery finds decides when it is opened again.
                tracing::warn!(core = self.index, shard = %local.id, %error, "closing a shard log");
                None
            }
        };
        *local.slot.borrow_mut() = Slot::Closed(state);
        local.changed.notify();
        true
    }

    /// Before an open: when this core holds its most open logs, closes the least recently
    /// used idle ones (a sixteenth of the limit at once, so that the scan is not paid per
    /// open). Opens go on if none is idle: the open-files limit is the last word.
    async fn make_room(&self) {
        let max = self.open_logs_max();
        if self.open_logs.borrow().len() < max {
            return;
        }
        let mut idle: Vec<(Instant, Rc<LocalShard>)> = {
            let shards = self.shards.borrow();
            self.open_logs
                .borrow()
                .iter()
                .filter_map(|id| shards.get(id))
                .filter(|local| {
                    matches!(&*local.slot.borrow(), Slot::Open(log) if Rc::strong_count(log) == 1)
                })
                .map(|local| (local.last_used.get(), Rc::clone(local)))
                .collect()
        };
        idle.sort_by_key(|(used, _)| *used);
        for (_, local) in idle.into_iter().take((max / 16).max(1)) {
            self.close_log(&local).await;
        }
    }

    /// Closes this core's logs that nobody took for `log.idle_close_ms`.
    pub async fn close_idle_logs(&self) -> usize {
        let idle_for = Duration::from_millis(self.config.log.idle_close_ms);
        let Some(since) = Instant::now().checked_sub(idle_for) else {
            return 0;
        };
        let idle: Vec<Rc<LocalShard>> = {
            let shards = self.shards.borrow();
            self.open_logs
                .borrow()
                .iter()
                .filter_map(|id| shards.get(id))
                .filter(|local| local.idle_since(since))
                .cloned()
                .collect()
        };
        let mut closed = 0;
        for local in idle {
            if self.close_log(&local).await {
                closed += 1;
            }
        }
        closed
    }

    /// Marks a shard deleted and closes its log if it is open and idle (a request holding it
    /// keeps it until it lets go).
    pub async fn forget_shard(&self, local: &LocalShard) {
        local.deleted.set(true);
        self.close_log(local).await;
        self.open_logs.borrow_mut().remove(&local.id);
    }

    /// Opens this core's logs of unknown state, then closes them again unless a request took
    /// them meanwhile: see the module documentation.
    pub async fn verify_logs(self: &Rc<Self>) {
        let pending: Vec<Rc<LocalShard>> = self
            .shards
            .borrow()
            .values()
            .filter(|local| matches!(&*local.slot.borrow(), Slot::Closed(None)))
            .cloned()
            .collect();
        if pending.is_empty() {
            return;
        }
        let started = Instant::now();
        tracing::info!(
            core = self.index,
            logs = pending.len(),
            "checking shard logs"
        );
        let mut checked = 0usize;
        // Opens in flight all pass `make_room` before any of them counts as open: keep them
        // well within the limit of open logs.
        let in_flight = OPENS_IN_FLIGHT_MAX.min(self.open_logs_max() / 2).max(1);
        for window in pending.chunks(in_flight) {
            if self.shutting_down() {
                return;
            }
            let tasks: Vec<_> = window
                .iter()
                .map(|local| {
                    let core = Rc::clone(self);
                    let local = Rc::clone(local);
                    spawn(async move {
                        match core.open_log(&local).await {
                            Ok(log) => {
                                // Closed unless a request holds it now.
                                drop(log);
                                core.close_log(&local).await;
                                true
                            }
                            Err(error) => {
                                tracing::warn!(core = core.index, shard = %local.id, %error, "checking a shard log");
                                false
                            }
                        }
                    })
                })
                .collect();
            for task in tasks {
                if task.await {
                    checked += 1;
                }
            }
        }
        tracing::info!(
            core = self.index,
            logs = checked,
            seconds = started.elapsed().as_secs_f64(),
            "shard logs checked"
        );
    }

    /// Closes idle logs every [`IDLE_CLOSE_INTERVAL_MS`] until the node stops.
    pub async fn close_idle_logs_loop(self: Rc<Self>) {
        let tick = Duration::from_millis(IDLE_CLOSE_INTERVAL_MS);
        while self.sleep_unless_stopping(tick).await {
            let closed = self.close_idle_logs().await;
            if closed > 0 {
                tracing::debug!(core = self.index, closed, "closed idle shard logs");
            }
        }
    }
}

fn deleted(shard: ShardId) -> OpenError {
    OpenError::Deleted { shard }
}
