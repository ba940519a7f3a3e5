//! Where new shards go: round-robin over every core of every registered node.
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

    #[test]
    fn no_nodes_means_no_ring() {
        assert!(CoreRing::new(std::iter::empty()).is_none());
        assert!(CoreRing::new(nodes(&[(1, 0)]).values()).is_none());
    }
}
