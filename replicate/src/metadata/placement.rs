//! Where new shards go: round-robin over every core of every registered node.
//!
//! A shard's replica set is R consecutive slots of the ring on R distinct nodes: it starts at
//! the shard's slot (its sequencer) and takes the following slots, skipping those of nodes it
//! holds already. Sequencers therefore spread exactly as single replicas did, and the other
//! replicas of consecutive shards shift along the ring with them.
//!
//! The cores form a ring ordered by core index first and node id second:
//! `(n1, 0), (n2, 0), (n3, 0), (n1, 1), (n2, 1), …` (a node with fewer cores drops out of the
//! later rounds). Consecutive shards therefore land on different nodes before they share one.
//! The state keeps a cursor that counts placements; shard *k* goes to slot `cursor % slots`.
//! Registering a node or changing its cores reshapes the ring; shards already placed stay put.
//! A command may name nodes to avoid (those its proposer saw unavailable): the ring of that
//! command leaves them out.

use super::node::{Node, NodeId};
use super::shard::Placement;

/// The ring of core slots of the nodes registered when a command is applied.
pub(crate) struct CoreRing {
    /// Every node with its core count, in id order.
    nodes: Vec<(NodeId, u32)>,
    /// `round_sizes[r]`: how many nodes have more than `r` cores (the size of round `r`).
    round_sizes: Vec<u64>,
    /// Total slots: the sum of all cores.
    slot_count: u64,
}

impl CoreRing {
    /// The ring of `nodes` (in id order), or `None` when they offer no core at all.
    pub(crate) fn new<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> Option<CoreRing> {
        let nodes: Vec<(NodeId, u32)> = nodes
            .into_iter()
            .map(|node| (node.id, node.cores))
            .collect();
        let cores_max = nodes.iter().map(|&(_, cores)| cores).max()?;
        // with_exactly[c]: nodes with exactly c cores; round r holds the nodes with > r cores.
        let mut with_exactly = vec![0u64; usize::try_from(cores_max).ok()? + 1];
        for &(_, cores) in &nodes {
            if let Some(count) = usize::try_from(cores)
                .ok()
                .and_then(|cores| with_exactly.get_mut(cores))
            {
                *count += 1;
            }
        }
        let mut round_sizes: Vec<u64> = with_exactly
            .iter()
            .skip(1)
            .rev()
            .scan(0u64, |running, count| {
                *running += count;
                Some(*running)
            })
            .collect();
        round_sizes.reverse();
        let slot_count = round_sizes.iter().sum();
        (slot_count > 0).then_some(CoreRing {
            nodes,
            round_sizes,
            slot_count,
        })
    }

    /// How many distinct nodes offer a core: the largest replica set the ring can hold.
    pub(crate) fn node_count(&self) -> usize {
        self.nodes.iter().filter(|&&(_, cores)| cores > 0).count()
    }

    /// The replica set of a shard placed at `cursor`: `count` slots from `slot(cursor)` on,
    /// on distinct nodes, the first being `slot(cursor)` (the sequencer). `None` when fewer
    /// than `count` nodes offer a core.
    pub(crate) fn replica_set(&self, cursor: u64, count: usize) -> Option<Vec<Placement>> {
        if count == 0 || count > self.node_count() {
            return None;
        }
        let mut replicas: Vec<Placement> = Vec::with_capacity(count);
        // Every node appears in round 0, so one turn of the ring meets every node.
        for step in 0..self.slot_count {
            let slot = self.slot(cursor.wrapping_add(step));
            if replicas.iter().all(|replica| replica.node != slot.node) {
                replicas.push(slot);
                if replicas.len() == count {
                    return Some(replicas);
                }
            }
        }
        unreachable!("one turn of the ring meets all {} nodes", self.node_count())
    }

    /// The slot a shard placed at `cursor` takes.
    pub(crate) fn slot(&self, cursor: u64) -> Placement {
        let mut rank = cursor % self.slot_count;
        for (round, &size) in self.round_sizes.iter().enumerate() {
            if rank < size {
                let core = u32::try_from(round).expect("rounds are fewer than a node's cores");
                let node = self
                    .nodes
                    .iter()
                    .filter(|&&(_, cores)| cores > core)
                    .nth(usize::try_from(rank).expect("a round has at most NODES_MAX slots"))
                    .map(|&(node, _)| node)
                    .expect("round sizes count the nodes with more cores than the round");
                return Placement { node, core };
            }
            rank -= size;
        }
        unreachable!("rank < slot_count, the sum of all round sizes")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn nodes(cores: &[(u64, u32)]) -> BTreeMap<NodeId, Node> {
        cores
            .iter()
            .map(|&(id, cores)| {
                (
                    NodeId(id),
                    Node {
                        id: NodeId(id),
                        cores,
                        address: "h:1".to_string(),
                    },
                )
            })
            .collect()
    }

    fn place(node: u64, core: u32) -> Placement {
        Placement {
            node: NodeId(node),
            core,
        }
    }

    #[test]
    fn ring_interleaves_nodes_before_filling_cores() {
        let ring = CoreRing::new(nodes(&[(7, 3), (2, 1), (5, 2)]).values()).expect("cores");
        let slots: Vec<Placement> = (0..7).map(|cursor| ring.slot(cursor)).collect();
        assert_eq!(
            slots,
            vec![
                place(2, 0),
                place(5, 0),
                place(7, 0),
                place(5, 1),
                place(7, 1),
                place(7, 2),
                place(2, 0),
            ]
        );
        assert_eq!(ring.slot(u64::MAX), ring.slot(u64::MAX % 6));
    }

    /// Replica sets take consecutive slots on distinct nodes, starting at the sequencer's; the
    /// sequencers are the slots single replicas had, so routing does not change with R.
    #[test]
    fn replica_sets_take_consecutive_slots_on_distinct_nodes() {
        let ring = CoreRing::new(nodes(&[(7, 3), (2, 1), (5, 2)]).values()).expect("cores");
        assert_eq!(ring.node_count(), 3);
        // Slots: (2,0) (5,0) (7,0) (5,1) (7,1) (7,2), then again.
        assert_eq!(
            ring.replica_set(0, 3),
            Some(vec![place(2, 0), place(5, 0), place(7, 0)])
        );
        assert_eq!(
            ring.replica_set(3, 3),
            Some(vec![place(5, 1), place(7, 1), place(2, 0)])
        );
        assert_eq!(ring.replica_set(4, 2), Some(vec![place(7, 1), place(2, 0)]));
        for cursor in 0..12 {
            for count in 1..=3 {
                let set = ring.replica_set(cursor, count).expect("three nodes");
                assert_eq!(set.len(), count);
                assert_eq!(set[0], ring.slot(cursor));
                let mut nodes: Vec<NodeId> = set.iter().map(|replica| replica.node).collect();
                nodes.sort();
                nodes.dedup();
                assert_eq!(nodes.len(), count, "cursor {cursor}: {set:?}");
            }
        }
        assert_eq!(ring.replica_set(0, 4), None);
        assert_eq!(ring.replica_set(0, 0), None);
    }

    /// With as many shards as slots, every node holds replicas of as many shards as every
    /// other (up to one), and every node leads some.
    #[test]
    fn replica_sets_spread_over_the_nodes() {
        let ring = CoreRing::new(nodes(&[(1, 2), (2, 2), (3, 2), (4, 2)]).values()).expect("cores");
        let mut held = BTreeMap::<NodeId, usize>::new();
        let mut led = BTreeMap::<NodeId, usize>::new();
        for cursor in 0..8 {
            let set = ring.replica_set(cursor, 3).expect("four nodes");
            *led.entry(set[0].node).or_default() += 1;
            for replica in set {
                *held.entry(replica.node).or_default() += 1;
            }
        }
        assert_eq!(led.values().copied().collect::<Vec<_>>(), vec![2, 2, 2, 2]);
        assert_eq!(held.values().copied().collect::<Vec<_>>(), vec![6, 6, 6, 6]);
    }

    #[test]
    fn no_nodes_means_no_ring() {
        assert!(CoreRing::new(std::iter::empty()).is_none());
        assert!(CoreRing::new(nodes(&[(1, 0)]).values()).is_none());
    }
}
