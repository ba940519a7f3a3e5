//! Questions one core asks another over the channel mesh, and the table of answers awaited.
//!
//! A question travels as `CoreMessage::Ask` with an id and the asking core; the asked core
//! computes the answer in a task of its own (it may await I/O) and sends `CoreMessage::Answer`
//! back. [`Pending`] holds the answers awaited by one core, for questions and for forwarded
//! metadata proposals alike. A wait ends when its answer arrives or the node stops.
//!
//! A question for a core of another node ([`Core::ask_at`](crate::core::Core::ask_at)) goes to
//! this node's core 0 over the mesh, which sends it to the other node's core 0 as a peer
//! request (`remote.rs`; its bytes in `wire.rs`), which asks its core over its own mesh.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use runnel_core::{Offset, ShardId};
use runnel_replicate::consumer::{MemberId, MemberInfo};
use runnel_replicate::metadata::SubscriptionId;
use runnel_segment::runtime::Event;

mod remote;
mod wire;

pub use remote::{answer_from_peer, ask_peer, ASK_METADATA_WAIT_MS, ASK_TIMEOUT_MS};
pub use wire::{decode_answer, decode_question, encode_answer, encode_question, AskWireError};

/// A question to another core (or to this one: then it is answered in place).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Question {
    /// Shard owner → hand `shard` of `subscription` to `member` (or to nobody), as decided
    /// by the coordinator's group created at `epoch`, at its `generation`. An older
    /// `(epoch, generation)` than the last applied is ignored: assignments sent concurrently
    /// may arrive out of order, and a group created later (the coordinator restarted, or moved
    /// to another node) supersedes an older one whose generations may be higher.
    Assign {
        /// The subscription.
        subscription: SubscriptionId,
        /// The shard, owned by the asked core.
        shard: ShardId,
        /// Its member now.
        member: Option<MemberId>,
        /// When the coordinator created its group, in ms since the Unix epoch.
        epoch: u64,
        /// The group generation of the decision.
        generation: u64,
    },
    /// Resolve where delivery starts on the asked core's shards of `subscription` and
    /// persist it, before a create is answered.
    Prepare {
        /// The subscription just created.
        subscription: SubscriptionId,
    },
    /// The progress of the asked core's shards of `subscription`.
    Progress {
        /// The subscription.
        subscription: SubscriptionId,
    },
    /// The coordinator's members of `subscription`.
    Members {
        /// The subscription.
        subscription: SubscriptionId,
    },
    /// The start and next offsets of the asked core's `shards` (shard lists and stream
    /// descriptions are answered by whichever core the request reached).
    Offsets {
        /// The shards, owned by the asked core.
        shards: Vec<ShardId>,
    },
}

/// The progress of one (subscription, shard) on the core owning the shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardProgress {
    /// The shard.
    pub shard: ShardId,
    /// Its committed offset, if delivery has a start yet.
    pub committed: Option<Offset>,
    /// Its readable end.
    pub end: Offset,
    /// Records delivered and not acked.
    pub unacked: u32,
}

/// The answer to a [`Question`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Done as asked.
    Done,
    /// Could not be done, and why (for the client's error message).
    Failed(String),
    /// Answer to [`Question::Progress`].
    Progress(Vec<ShardProgress>),
    /// Answer to [`Question::Members`].
    Members(Vec<MemberInfo>),
    /// Answer to [`Question::Offsets`]: `(shard, start offset, next offset)` of each shard
    /// asked about that the core owns; shards it does not own are left out.
    Offsets(Vec<(ShardId, Offset, Offset)>),
}

/// Answers awaited by one core, by id.
pub struct Pending<T> {
    slots: RefCell<HashMap<u64, Option<T>>>,
    changed: Event,
    next_id: Cell<u64>,
}

impl<T> Default for Pending<T> {
    fn default() -> Self {
        Pending {
            slots: RefCell::new(HashMap::new()),
            changed: Event::default(),
            next_id: Cell::new(1),
        }
    }
}

impl<T> Pending<T> {
    /// A new id whose answer will be awaited.
    pub fn register(&self) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        self.slots.borrow_mut().insert(id, None);
        id
    }

    /// The answer to `id` arrived. An answer nobody awaits (any more) is dropped.
    pub fn fulfil(&self, id: u64, answer: T) {
        if let Some(slot) = self.slots.borrow_mut().get_mut(&id) {
            *slot = Some(answer);
        }
        self.changed.notify();
    }

    /// Wakes every waiter (the node is stopping: they look at `stopping` again).
    pub fn wake_all(&self) {
        self.changed.notify();
    }

    /// Waits for the answer to `id`; `None` if `stopping()` became true first. Whoever makes
    /// `stopping()` true calls [`Pending::wake_all`] then: the wait sleeps until an answer
    /// arrives or that call, and looks at nothing in between.
    pub async fn wait(&self, id: u64, stopping: impl Fn() -> bool) -> Option<T> {
        // The slot goes however the wait ends, also when the waiter gives up (drops this
        // future): an answer that comes later then finds no slot and is dropped.
        let _forget = Forget { pending: self, id };
        loop {
            let changed = self.changed.listen();
            let done = self.slots.borrow_mut().get_mut(&id).and_then(Option::take);
            if let Some(answer) = done {
                return Some(answer);
            }
            if stopping() {
                return None;
            }
            changed.await;
        }
    }
}

/// Removes a wait's slot when the wait ends, however it ends.
struct Forget<'a, T> {
    pending: &'a Pending<T>,
    id: u64,
}

impl<T> Drop for Forget<'_, T> {
    fn drop(&mut self) {
        self.pending.slots.borrow_mut().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;
    use std::time::Duration;

    use runnel_segment::runtime::{first_of, sleep, spawn, yield_now, First};

    use super::Pending;

    /// A waiter that gives up (its future dropped, as a description that stops waiting for a
    /// slow node does) leaves no slot behind, and the late answer is dropped.
    #[test]
    fn a_wait_given_up_leaves_no_slot() {
        runnel_segment::runtime::run("pending-test", 1, || async {
            let pending: Pending<u32> = Pending::default();
            let id = pending.register();
            let waited = first_of(
                pending.wait(id, || false),
                sleep(Duration::from_millis(10)),
                std::future::pending::<()>(),
            )
            .await;
            assert!(matches!(waited, First::B(())), "nobody answered");
            assert!(
                pending.slots.borrow().is_empty(),
                "the slot went with the wait"
            );
            pending.fulfil(id, 7);
            assert!(
                pending.slots.borrow().is_empty(),
                "a late answer is dropped"
            );
        });
    }

    /// A wait ends when its waiter's stop condition becomes true and `wake_all` is called,
    /// with no tick: nothing else could end it (no answer ever comes).
    #[test]
    fn wake_all_ends_a_wait_whose_condition_holds() {
        runnel_segment::runtime::run("pending-wake-all", 1, || async {
            let pending: Rc<Pending<u32>> = Rc::default();
            let closing = Rc::new(Cell::new(false));
            let id = pending.register();
            let waiter = {
                let (pending, closing) = (Rc::clone(&pending), Rc::clone(&closing));
                spawn(async move { pending.wait(id, || closing.get()).await })
            };
            yield_now().await;
            closing.set(true);
            pending.wake_all();
            assert_eq!(waiter.await, None, "the wait ended without an answer");
            assert!(pending.slots.borrow().is_empty());
        });
    }
}
