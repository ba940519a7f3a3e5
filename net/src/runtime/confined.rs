//! Thread confinement: `Send + Sync` handles to `!Send` glommio objects, without `unsafe`.
//!
//! quinn requires its runtime, timers, sockets and pollers to be `Send` (and mostly `Sync`),
//! but glommio's timers, sockets and I/O futures hold `Rc`s into their executor and must never
//! leave its thread. Instead of claiming `Send` for them, the `!Send` value lives in a
//! thread-local table of the thread that created it, and quinn holds a [`Confined`] handle:
//! an [`Owner`] (the creating thread) and a key into that table. Those are plain data, so the
//! handle is `Send + Sync` by construction and no `unsafe impl` exists anywhere.
//!
//! Soundness does not even rest on the check: another thread has its own table and could never
//! reach the value. The [`Owner`] check turns that mistake into a clear panic (a broken
//! invariant of the caller) instead of a confusing "missing entry". A handle dropped on another
//! thread never touches the value; the value is dropped on its own thread, either by the
//! handle's `Drop` there or by the table's thread-local destructor when the thread exits.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::{self, ThreadId};

/// The start of every panic raised when a glommio runtime object is used off its thread.
pub const WRONG_THREAD: &str = "glommio QUIC runtime used off its executor thread";

/// Hands out one token per thread; tokens are never reused (a `u64` does not wrap).
static NEXT_THREAD_TOKEN: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's token. A plain `u64` has no destructor, so it stays readable while the
    /// thread's other thread-locals are being destroyed.
    static THREAD_TOKEN: u64 = NEXT_THREAD_TOKEN.fetch_add(1, Ordering::Relaxed);

    /// The `!Send` values of this thread, by key.
    static TABLE: Table = Table::default();
}

/// The `!Send` values created on one thread.
#[derive(Default)]
struct Table {
    next_key: Cell<u64>,
    values: RefCell<HashMap<u64, Rc<dyn Any>>>,
}

fn current_token() -> u64 {
    THREAD_TOKEN.with(|token| *token)
}

/// The thread a runtime object belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owner {
    token: u64,
    thread: ThreadId,
}

impl Owner {
    /// The calling thread.
    pub(crate) fn current() -> Owner {
        Owner {
            token: current_token(),
            thread: thread::current().id(),
        }
    }

    /// Whether the calling thread is this owner.
    pub(crate) fn is_current(&self) -> bool {
        current_token() == self.token
    }

    /// Panics unless the calling thread is this owner: using a glommio object from another
    /// thread is a broken invariant of the caller, not an operating error.
    #[track_caller]
    pub(crate) fn check(&self, operation: &'static str) {
        if !self.is_current() {
            self.refuse(operation);
        }
    }

    #[cold]
    #[track_caller]
    fn refuse(&self, operation: &'static str) -> ! {
        panic!(
            "{WRONG_THREAD}: {operation} called on thread {:?} ({}), but the runtime belongs to \
             thread {:?}; quinn endpoints, connections and streams of a glommio executor must \
             stay on that executor's thread",
            thread::current().id(),
            thread::current().name().unwrap_or("unnamed"),
            self.thread,
        );
    }
}

impl fmt::Debug for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.thread)
    }
}

/// A `Send + Sync` handle to a `T` that stays on its owner thread (see the module header).
pub(crate) struct Confined<T: 'static> {
    owner: Owner,
    key: u64,
    /// `fn() -> T` keeps the handle `Send + Sync` whatever `T` is: the handle never holds a
    /// `T`, only the key to one in its owner's table.
    _value: PhantomData<fn() -> T>,
}

impl<T: 'static> Confined<T> {
    /// Moves `value` into `owner`'s table; `owner` must be the calling thread.
    #[track_caller]
    pub(crate) fn new(owner: Owner, operation: &'static str, value: T) -> Confined<T> {
        owner.check(operation);
        let key = TABLE.with(|table| {
            let key = table.next_key.get();
            table.next_key.set(key + 1);
            let value: Rc<dyn Any> = Rc::new(RefCell::new(value));
            let previous = table.values.borrow_mut().insert(key, value);
            assert!(previous.is_none(), "confined key {key} handed out twice");
            key
        });
        Confined {
            owner,
            key,
            _value: PhantomData,
        }
    }

    /// Runs `f` on the value; panics if called off the owner thread.
    #[track_caller]
    pub(crate) fn with<R>(&self, operation: &'static str, f: impl FnOnce(&mut T) -> R) -> R {
        self.owner.check(operation);
        // Clone the entry out so that the table is not borrowed while `f` runs: `f` polls
        // glommio futures, which may create or drop other confined values.
        let entry = TABLE
            .try_with(|table| table.values.borrow().get(&self.key).cloned())
            .ok()
            .flatten();
        let Some(entry) = entry else {
            panic!(
                "{operation}: confined value {} is gone (thread-locals of {:?} already \
                 destroyed?)",
                self.key, self.owner
            );
        };
        let Ok(cell) = entry.downcast::<RefCell<T>>() else {
            panic!("{operation}: confined value {} has another type", self.key);
        };
        let Ok(mut value) = cell.try_borrow_mut() else {
            panic!(
                "{operation}: confined value {} re-entered while in use",
                self.key
            );
        };
        f(&mut value)
    }
}

impl<T: 'static> Drop for Confined<T> {
    fn drop(&mut self) {
        if self.owner.is_current() {
            // `try_with`: during thread exit the table may already be gone, and the value with
            // it. Drop the value after the table borrow ends (its destructor may touch the
            // table again).
            let removed = TABLE
                .try_with(|table| table.values.borrow_mut().remove(&self.key))
                .ok()
                .flatten();
            drop(removed);
        } else if !thread::panicking() {
            self.owner.refuse("drop");
        }
        // Dropped off-thread while already unwinding: leave the value where it is. Its own
        // thread drops it when that thread exits; it is never touched from here.
    }
}

impl<T: 'static> fmt::Debug for Confined<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Confined")
            .field("owner", &self.owner)
            .field("key", &self.key)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    /// The handle is `Send + Sync` even for a `!Send` value, with no `unsafe impl`.
    #[test]
    fn handle_is_send_and_sync_for_a_non_send_value() {
        assert_send_sync::<Confined<Rc<u8>>>();
    }

    /// A value is reachable on its own thread and dropped when its handle is.
    #[test]
    fn value_lives_on_its_thread_until_the_handle_drops() {
        let marker = Rc::new(());
        let handle = Confined::new(Owner::current(), "test", Rc::clone(&marker));
        assert_eq!(Rc::strong_count(&marker), 2);
        handle.with("test", |value| assert!(Rc::ptr_eq(value, &marker)));
        drop(handle);
        assert_eq!(Rc::strong_count(&marker), 1);
    }

    /// Another thread is refused with the documented message.
    #[test]
    fn another_thread_is_refused() {
        let handle = Confined::new(Owner::current(), "test", Rc::new(7_u8));
        let outcome = thread::scope(|scope| {
            scope
                .spawn(|| {
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        handle.with("poke", |value| **value)
                    }));
                    result
                        .err()
                        .and_then(|payload| payload.downcast::<String>().ok())
                })
                .join()
        });
        let message = outcome.ok().flatten().map(|message| *message);
        let message = message.unwrap_or_default();
        assert!(message.starts_with(WRONG_THREAD), "{message}");
        assert!(message.contains("poke"), "{message}");
        handle.with("test", |value| assert_eq!(**value, 7));
    }
}
