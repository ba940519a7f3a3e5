//! Shared subscriptions on a node: the I/O around the sans-IO state machines of
//! `runnel_replicate::consumer`.
//!
//! Each subscription has one **coordinator core** (its id modulo the core count): there the
//! [`Group`](runnel_replicate::consumer::Group) admits members over their join streams and
//! assigns them shards (`coordinator.rs`). Each shard's owning core keeps one
//! [`ShardDispatch`](runnel_replicate::consumer::ShardDispatch) per subscription in a
//! [`DispatchSlot`] (`slot.rs`), serves the assignee's consume stream from the shard's log
//! without copying records (`consume.rs`), and persists the committed offset through the
//! metadata log (`progress.rs`). The coordinator tells owners about assignments with
//! [`Question::Assign`] over the mesh, before it tells the member.
//!
//! Invariants: a shard is delivered only to the member the coordinator assigned it to; a record
//! is never acked unless delivered; only acked records are ever committed, so a restart
//! redelivers, never skips.
//! Must never: block the core, or let a client's acks or frames panic it.

mod admin;
mod consume;
mod coordinator;
mod progress;
mod slot;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use runnel_core::ShardId;
use runnel_net::protocol::{ErrorCode, ErrorResponse};
use runnel_replicate::metadata::{SubscriptionId, SubscriptionName};

use crate::ask::{Answer, Question};
use crate::core::Core;

pub use admin::{create, delete, describe, list};
pub use consume::serve as serve_consume;
pub use coordinator::expire_members;
pub use coordinator::serve as serve_join;
pub use progress::{commit_moved as progress_commit_pass, commit_progress};
pub use slot::DispatchSlot;

use coordinator::GroupSlot;

/// One core's side of every subscription.
pub struct Subscriptions {
    /// Dispatch state of the (subscription, shard) pairs whose shard this core owns, created
    /// when first needed.
    dispatches: RefCell<HashMap<(SubscriptionId, ShardId), Rc<DispatchSlot>>>,
    /// The groups of the subscriptions this core coordinates, created at the first join.
    groups: RefCell<HashMap<SubscriptionId, Rc<GroupSlot>>>,
    /// The first member id of every group created here (the start time, in ms).
    first_member_id: u64,
}

impl Subscriptions {
    /// No subscription state yet; member ids start at `first_member_id`.
    pub fn new(first_member_id: u64) -> Subscriptions {
        Subscriptions {
            dispatches: RefCell::new(HashMap::new()),
            groups: RefCell::new(HashMap::new()),
            first_member_id,
        }
    }

    /// The subscription was deleted: end its consume and join streams, drop its state.
    pub fn forget(&self, subscription: SubscriptionId) {
        let ended: Vec<Rc<DispatchSlot>> = {
            let mut dispatches = self.dispatches.borrow_mut();
            let keys: Vec<_> = dispatches
                .keys()
                .filter(|(id, _)| *id == subscription)
                .copied()
                .collect();
            keys.iter()
                .filter_map(|key| dispatches.remove(key))
                .collect()
        };
        for slot in ended {
            slot.end_deleted();
        }
        let group = self.groups.borrow_mut().remove(&subscription);
        if let Some(group) = group {
            group.end_deleted();
        }
    }

    /// Every dispatch slot of this core.
    fn slots(&self) -> Vec<Rc<DispatchSlot>> {
        self.dispatches.borrow().values().cloned().collect()
    }

    /// Every group this core coordinates.
    fn groups(&self) -> Vec<Rc<GroupSlot>> {
        self.groups.borrow().values().cloned().collect()
    }
}

/// The id of the live subscription named `name`, or the `UnknownSubscription` error a client
/// gets (also for a name that breaks the naming rule: no subscription can have it).
fn subscription_id(core: &Core, name: &str) -> Result<SubscriptionId, ErrorResponse> {
    let found = SubscriptionName::new(name).ok().and_then(|name| {
        core.metadata
            .borrow()
            .subscription(&name)
            .map(|subscription| subscription.id)
    });
    found.ok_or_else(|| {
        ErrorResponse::new(
            ErrorCode::UnknownSubscription,
            format!("subscription {name} does not exist"),
        )
    })
}

/// The coordinator core of `subscription` on a node of `cores` cores.
pub fn coordinator_core(subscription: SubscriptionId, cores: usize) -> u32 {
    (subscription.0 % cores.max(1) as u64) as u32
}

/// Answers a question another core (or this one) asked: about subscriptions, or the offsets
/// of this core's shards.
pub async fn answer(core: &Rc<Core>, question: Question) -> Answer {
    match question {
        Question::Assign {
            subscription,
            shard,
            member,
            generation,
        } => match slot::get_or_create(core, subscription, shard).await {
            Ok(slot) => {
                slot.assign(member, generation);
                Answer::Done
            }
            Err(error) => Answer::Failed(error.message),
        },
        Question::Prepare { subscription } => progress::prepare(core, subscription).await,
        Question::Progress { subscription } => progress::local_progress(core, subscription).await,
        Question::Members { subscription } => {
            let group = core
                .subscriptions
                .groups
                .borrow()
                .get(&subscription)
                .cloned();
            Answer::Members(group.map(|group| group.members()).unwrap_or_default())
        }
        Question::Offsets { shards } => crate::convert::local_offsets(core, &shards).await,
    }
}
