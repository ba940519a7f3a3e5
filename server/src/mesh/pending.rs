//! The answers one core awaits from other cores, by call id.
//!
//! A call over the mesh registers a slot here, sends its request, and waits until the answer
//! fills the slot or this core closes. The slot goes however the wait ends, so an answer that
//! arrives after its caller gave up finds nothing and is dropped.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use runnel_segment::runtime::Event;

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

    /// Whether no answer is awaited.
    pub fn is_empty(&self) -> bool {
        self.slots.borrow().is_empty()
    }

    /// Wakes every waiter (the node is stopping: they look at `stopping` again).
    pub fn wake_all(&self) {
        self.changed.notify();
    }

    /// Waits for the answer to `id`; `None` if `stopping()` became true first.
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
