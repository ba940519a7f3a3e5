//! The metadata leader's **failover policy**: a shard whose sequencer's node is unavailable
//! gets a new sequencer among its replicas, by a `BumpEpoch` the leader proposes.
//!
//! The policy is level-triggered: at every refresh of the leader's view of the cluster
//! (`crate::group`, every few ticks), [`failovers`] lists, for every open shard with at least
//! two replicas whose sequencer's node the leader sees `Unavailable` or `Dead`, a bump to the
//! first of its replicas (in replica-set order) on a node it sees `Running`. A shard with no
//! such replica waits (nothing could serve it). A new leader therefore picks up where the
//! previous one stopped, and a bump lost with a leader change is proposed again.
//!
//! `BumpEpoch` is a compare-and-set on the epoch the leader saw, so a bump proposed twice
//! (by two leaders one after the other, or again before the first one applied) changes the
//! shard once: the second is refused as stale. The leader still remembers the bumps it has in
//! flight ([`Failovers`]) so as not to queue the same one at every refresh.
//!
//! Data is not this module's business: the new sequencer seals the old epoch on the replicas
//! and recovers the committed prefix (`runnel_replicate::shard::Recovery`) once it learns the
//! bump from the metadata.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;

use runnel_core::{Epoch, ShardId};
use runnel_net::protocol::ErrorResponse;
use runnel_replicate::metadata::{Command, MetadataState, NodeId, Placement};
use runnel_segment::runtime::spawn_detached;

use crate::cluster::{NodeState, NodeView};
use crate::core::Core;

/// Most failovers the leader has in flight at once; more wait for the next refresh. Bounds
/// the tasks and the proposer's queue when a node holding many sequencers dies.
pub const FAILOVERS_IN_FLIGHT_MAX: usize = 1024;

/// One failover to propose: shard `shard`, at epoch `from`, gets its sequencer at `sequencer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failover {
    /// The shard.
    pub shard: ShardId,
    /// Its epoch as the leader saw it.
    pub from: Epoch,
    /// The node (and core) that held the sequencer.
    pub previous: Placement,
    /// The replica that becomes sequencer.
    pub sequencer: Placement,
}

impl Failover {
    /// The command that performs it.
    pub fn command(&self) -> Command {
        Command::BumpEpoch {
            shard: self.shard,
            from: self.from,
            sequencer: self.sequencer,
        }
    }
}

/// Whether a node in `state` has failed as far as its sequencers go (not heard from for the
/// unavailable timeout).
fn failed(state: NodeState) -> bool {
    matches!(state, NodeState::Unavailable | NodeState::Dead)
}

/// The failovers `state` needs, seen with `nodes` (the leader's view), in shard id order: every
/// open shard with two replicas or more whose sequencer's node has failed, to the first of its
/// other replicas on a `Running` node. Empty (and cheap) while no node has failed.
pub fn failovers(state: &MetadataState, nodes: &[NodeView]) -> Vec<Failover> {
    let failed_nodes: BTreeSet<NodeId> = nodes
        .iter()
        .filter(|node| failed(node.state))
        .map(|node| NodeId(node.id))
        .collect();
    if failed_nodes.is_empty() {
        return Vec::new();
    }
    let running: BTreeSet<NodeId> = nodes
        .iter()
        .filter(|node| node.state == NodeState::Running)
        .map(|node| NodeId(node.id))
        .collect();
    state
        .shards()
        .filter(|shard| {
            shard.is_open()
                && shard.replicas.len() >= 2
                && failed_nodes.contains(&shard.placement.node)
        })
        .filter_map(|shard| {
            let sequencer = shard
                .replicas
                .iter()
                .find(|replica| running.contains(&replica.node))?;
            assert_ne!(
                sequencer.node, shard.placement.node,
                "a failed node is not running"
            );
            Some(Failover {
                shard: shard.id,
                from: shard.epoch,
                previous: shard.placement,
                sequencer: *sequencer,
            })
        })
        .collect()
}

/// The failovers the leader has proposed and not yet seen answered, by (shard, from epoch).
#[derive(Debug, Default)]
pub struct Failovers {
    in_flight: Rc<RefCell<BTreeSet<(ShardId, Epoch)>>>,
}

impl Failovers {
    /// Proposes the failovers `core`'s committed state needs as the cluster view shows it, each
    /// in its own task, skipping those in flight. Core 0 of the leader calls it.
    pub fn propose(&self, core: &Rc<Core>) {
        let needed = failovers(&core.metadata.borrow(), &core.cluster.nodes());
        for failover in needed {
            let key = (failover.shard, failover.from);
            {
                let mut in_flight = self.in_flight.borrow_mut();
                if in_flight.len() >= FAILOVERS_IN_FLIGHT_MAX || !in_flight.insert(key) {
                    continue;
                }
            }
            tracing::warn!(
                shard = %failover.shard,
                epoch = %failover.from,
                from_node = %failover.previous.node,
                to_node = %failover.sequencer.node,
                to_core = failover.sequencer.core,
                "failover: the sequencer's node is unavailable; proposing a new sequencer"
            );
            let (core, in_flight) = (Rc::clone(core), Rc::clone(&self.in_flight));
            spawn_detached(async move {
                let outcome = core
                    .bump_epoch(failover.shard, failover.from, failover.sequencer)
                    .await;
                log_outcome(&failover, &outcome);
                in_flight.borrow_mut().remove(&key);
            });
        }
    }
}

impl Core {
    /// Fails shard `shard` over to `sequencer` (one of its replicas) if it is still at epoch
    /// `from`: proposes `BumpEpoch` (through the leader, from any core of any node) and returns
    /// the shard's new epoch, `from + 1`, once the bump is committed and applied on this node.
    /// Refused (`InvalidRequest`, with the metadata's reason) when the shard moved past `from`
    /// already (`StaleEpoch`: someone else failed it over), `sequencer` holds no replica of it
    /// (`NotAReplica`), or it is sealed; `Unavailable` when the outcome is unknown (no leader,
    /// leadership moved).
    pub async fn bump_epoch(
        self: &Rc<Self>,
        shard: ShardId,
        from: Epoch,
        sequencer: Placement,
    ) -> Result<Epoch, ErrorResponse> {
        let next = next_epoch(from)?;
        self.propose(Command::BumpEpoch {
            shard,
            from,
            sequencer,
        })
        .await?;
        Ok(next)
    }
}

/// The epoch after `from`, or the refusal the metadata would give.
fn next_epoch(from: Epoch) -> Result<Epoch, ErrorResponse> {
    from.0.checked_add(1).map(Epoch).ok_or_else(|| {
        crate::core::metadata_error(
            &runnel_replicate::metadata::MetadataError::CounterExhausted { counter: "epoch" },
        )
    })
}

fn log_outcome(failover: &Failover, outcome: &Result<Epoch, ErrorResponse>) {
    match outcome {
        Ok(epoch) => tracing::warn!(
            shard = %failover.shard,
            epoch = %epoch,
            node = %failover.sequencer.node,
            core = failover.sequencer.core,
            "failover: new sequencer"
        ),
        Err(error) => tracing::info!(
            shard = %failover.shard,
            epoch = %failover.from,
            %error,
            "failover not applied (another bump came first, or leadership moved): the next \
             refresh looks again"
        ),
    }
}

#[cfg(test)]
mod tests {
    use runnel_replicate::metadata::{Durability, Node, StreamConfig};

    use super::*;

    /// Nodes 1, 2 and 3 in `states`.
    fn views(states: [NodeState; 3]) -> Vec<NodeView> {
        (1..)
            .zip(states)
            .map(|(id, state)| view(id, state))
            .collect()
    }

    fn view(id: u64, state: NodeState) -> NodeView {
        NodeView {
            id,
            state,
            address: format!("127.0.0.1:{}", 7000 + id),
            version: None,
            cores: 1,
            leader: id == 1,
            voter: true,
        }
    }

    /// Three one-core nodes, then `streams` (name, shard count, replication factor).
    fn state(streams: &[(&str, u32, u8)]) -> MetadataState {
        let mut state = MetadataState::new();
        let mut commands: Vec<Command> = (1..=3)
            .map(|id| Command::RegisterNode {
                node: Node {
                    id: NodeId(id),
                    cores: 1,
                    address: format!("127.0.0.1:{}", 7000 + id),
                },
            })
            .collect();
        for &(name, shard_count, replication_factor) in streams {
            commands.push(Command::CreateStream {
                config: StreamConfig {
                    name: runnel_core::StreamName::new(name).expect("name"),
                    shard_count,
                    replication_factor,
                    retention_ms: 60_000,
                    durability: Durability::Fsync,
                },
                now_ms: 1,
                avoid: Vec::new(),
            });
        }
        for (index, command) in (1..).zip(commands) {
            state.apply(index, &command).expect("accepted");
        }
        state
    }

    /// Applies `failovers` to `state` as the leader's proposals would.
    fn apply(state: &mut MetadataState, failovers: &[Failover]) {
        for failover in failovers {
            let index = state.applied_index() + 1;
            state
                .apply(index, &failover.command())
                .expect("the bump applies");
        }
    }

    /// With every node running nothing moves. With node 1 unavailable, every replicated open
    /// shard it sequences moves to its first running replica at the next epoch, once: the same
    /// bump again is refused as stale, and the next look finds nothing to do. Shards of R = 1
    /// stay (no other replica could serve them).
    #[test]
    fn sequencers_on_a_failed_node_move_to_the_first_running_replica() {
        let mut state = state(&[("r3", 3, 3), ("r1", 3, 1)]);
        let running = views([NodeState::Running, NodeState::Running, NodeState::Running]);
        assert_eq!(failovers(&state, &running), Vec::new());

        let one_down = views([
            NodeState::Unavailable,
            NodeState::Running,
            NodeState::Running,
        ]);
        let planned = failovers(&state, &one_down);
        let on_node_1: Vec<ShardId> = state
            .shards()
            .filter(|shard| shard.replicas.len() == 3 && shard.placement.node == NodeId(1))
            .map(|shard| shard.id)
            .collect();
        assert!(!on_node_1.is_empty());
        assert_eq!(
            planned.iter().map(|f| f.shard).collect::<Vec<_>>(),
            on_node_1
        );
        for failover in &planned {
            let shard = state.shard(failover.shard).expect("shard");
            let expected = shard
                .replicas
                .iter()
                .find(|replica| replica.node != NodeId(1))
                .expect("another replica");
            assert_eq!(failover.sequencer, *expected);
            assert_eq!(failover.from, shard.epoch);
        }
        apply(&mut state, &planned);
        for failover in &planned {
            let shard = state.shard(failover.shard).expect("shard");
            assert_eq!(shard.epoch, Epoch(failover.from.0 + 1));
            assert_eq!(shard.placement, failover.sequencer);
            let index = state.applied_index() + 1;
            assert!(matches!(
                state.apply(index, &failover.command()),
                Err(runnel_replicate::metadata::MetadataError::StaleEpoch { .. })
            ));
        }
        assert_eq!(failovers(&state, &one_down), Vec::new());
    }

    /// A replica on a node that is not `Running` (starting, or failed too) is skipped; with no
    /// running replica the shard waits.
    #[test]
    fn only_running_replicas_take_over() {
        let state = state(&[("r2", 3, 2)]);
        let sequenced_by_1: Vec<_> = state
            .shards()
            .filter(|shard| shard.placement.node == NodeId(1))
            .collect();
        assert!(!sequenced_by_1.is_empty());
        let nodes = views([NodeState::Dead, NodeState::Starting, NodeState::Unavailable]);
        assert_eq!(failovers(&state, &nodes), Vec::new());
        let nodes = views([NodeState::Dead, NodeState::Running, NodeState::Unavailable]);
        for failover in failovers(&state, &nodes) {
            assert_eq!(failover.sequencer.node, NodeId(2));
            let shard = state.shard(failover.shard).expect("shard");
            assert!(shard.placement.node != NodeId(2));
        }
    }
}
