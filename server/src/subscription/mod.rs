//! Shared subscriptions on a node: the I/O around the sans-IO state machines of
//! `runnel_replicate::consumer`.
//!
//! Each subscription has one **coordinator** in the cluster, a (node, core) every node computes
//! alike from the metadata ([`coordinator`]: the registered nodes in id order, the id modulo
//! their count, then the id modulo that node's cores): there the
//! [`Group`](runnel_replicate::consumer::Group) admits members over their join streams and
//! assigns them shards (`coordinator.rs`); a join that reaches any other core is answered
//! `NotOwner` naming it. Each shard's owning core keeps one
//! [`ShardDispatch`](runnel_replicate::consumer::ShardDispatch) per subscription in a
//! [`DispatchSlot`] (`slot.rs`), serves the assignee's consume stream from the shard's log
//! without copying records (`consume.rs`), and persists the committed offset through the
//! metadata log (`progress.rs`). The coordinator tells owners about assignments with the mesh
//! service [`services::Assign`] ([`Core::call_at`]: over the mesh, or through core 0 and the
//! peer transport to an owner on another node), before it tells the member; `services.rs`
//! holds every service this feature answers.
//!
//! Invariants: a shard is delivered only to the member the coordinator assigned it to; a record
//! is never acked unless delivered; only acked records are ever committed, so a restart
//! redelivers, never skips.
//! Must never: block the core, or let a client's acks or frames panic it.

mod admin;
mod consume;
mod coordinator;
mod progress;
pub mod services;
mod slot;

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

use runnel_core::ShardId;
use runnel_net::protocol::{ErrorCode, ErrorResponse};
use runnel_replicate::metadata::{
    MetadataState, NodeId, StreamId, SubscriptionId, SubscriptionName,
};

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

/// The (node, core) that coordinates `subscription` in the cluster, computed alike on every
/// node from the metadata: the registered nodes in id order, the one at the subscription's id
/// modulo their count, and on it [`coordinator_core`]. With no node registered (never, once a
/// node serves), this node (`here`, of `here_cores` cores).
pub fn coordinator_of(
    state: &MetadataState,
    subscription: SubscriptionId,
    here: NodeId,
    here_cores: usize,
) -> (NodeId, u32) {
    let count = state.nodes().len() as u64;
    let chosen = state.nodes().nth((subscription.0 % count.max(1)) as usize);
    match chosen {
        Some(node) => (node.id, coordinator_core(subscription, node.cores as usize)),
        None => (here, coordinator_core(subscription, here_cores)),
    }
}

/// [`coordinator_of`] as `core` sees the metadata.
pub fn coordinator(core: &Core, subscription: SubscriptionId) -> (NodeId, u32) {
    coordinator_of(
        &core.metadata.borrow(),
        subscription,
        core.node_id(),
        core.config.cores,
    )
}

/// The (node, core) pairs owning shards of `stream`, each once, in order.
fn shard_owners(state: &MetadataState, stream: StreamId) -> BTreeSet<(NodeId, u32)> {
    state
        .shards()
        .filter(|shard| shard.stream == stream)
        .map(|shard| (shard.placement.node, shard.placement.core))
        .collect()
}

#[cfg(test)]
mod tests {
    use runnel_replicate::metadata::{Command, Node};

    use super::*;

    fn register(state: &mut MetadataState, index: u64, id: u64, cores: u32) {
        let node = Node {
            id: NodeId(id),
            cores,
            address: format!("127.0.0.1:{}", 7000 + id),
        };
        let applied = state.apply(index, &Command::RegisterNode { node });
        assert!(applied.is_ok(), "{applied:?}");
    }

    /// Every node computes the same coordinator: the nodes in id order, the subscription id
    /// modulo their count, then the id modulo that node's cores; alone, as before the cluster.
    #[test]
    fn the_coordinator_is_the_same_for_every_node() {
        let mut state = MetadataState::new();
        assert_eq!(
            coordinator_of(&state, SubscriptionId(5), NodeId(9), 4),
            (NodeId(9), 1),
            "no node registered: this node, id modulo its cores"
        );
        register(&mut state, 1, 30, 2);
        assert_eq!(
            coordinator_of(&state, SubscriptionId(5), NodeId(30), 2),
            (NodeId(30), 1),
            "a node alone coordinates every subscription, on the core it always did"
        );
        register(&mut state, 2, 10, 3);
        register(&mut state, 3, 20, 2);
        for here in [10, 20, 30] {
            // Nodes in id order: 10, 20, 30.
            assert_eq!(
                coordinator_of(&state, SubscriptionId(3), NodeId(here), 2),
                (NodeId(10), 0)
            );
            assert_eq!(
                coordinator_of(&state, SubscriptionId(4), NodeId(here), 2),
                (NodeId(20), 0)
            );
            assert_eq!(
                coordinator_of(&state, SubscriptionId(5), NodeId(here), 2),
                (NodeId(30), 1)
            );
            assert_eq!(
                coordinator_of(&state, SubscriptionId(7), NodeId(here), 2),
                (NodeId(20), 1)
            );
        }
    }
}
