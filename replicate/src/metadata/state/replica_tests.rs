//! Unit tests of replica sets: how creates, splits and merges place R replicas on distinct
//! nodes, what they refuse, and how node changes treat replicas that are not sequencers.

use std::collections::{BTreeMap, BTreeSet};

use runnel_core::ShardId;

use super::*;
use crate::metadata::testing::{config, node, Harness};
use crate::metadata::Placement;

fn create_replicated(stream: &str, shard_count: u32, factor: u8, avoid: &[u64]) -> Command {
    Command::CreateStream {
        config: StreamConfig {
            replication_factor: factor,
            ..config(stream, shard_count)
        },
        now_ms: 1_000,
        avoid: avoid.iter().copied().map(NodeId).collect(),
    }
}

fn shards_of(applied: Applied) -> Vec<Shard> {
    match applied {
        Applied::StreamCreated { shards, .. } => shards,
        Applied::ShardSplit { children, .. } => children,
        Applied::ShardsMerged { child, .. } => vec![child],
        other => panic!("no new shards: {other:?}"),
    }
}

/// Asserts what every new shard's set must be: R replicas on distinct nodes, led by the
/// sequencer.
fn assert_replica_set(shard: &Shard, factor: usize) {
    assert_eq!(shard.replicas.len(), factor, "{shard:?}");
    assert_eq!(shard.replicas[0], shard.placement, "{shard:?}");
    let nodes: BTreeSet<NodeId> = shard.replicas.iter().map(|replica| replica.node).collect();
    assert_eq!(nodes.len(), factor, "{shard:?}");
}

/// R = 3 on four two-core nodes: every shard has three replicas on distinct nodes, the
/// sequencers are where single replicas would be, and replicas spread evenly.
#[test]
fn a_create_places_r_replicas_on_distinct_nodes() {
    let mut single = Harness::with_nodes(4, 2);
    let sequencers: Vec<Placement> = shards_of(single.ok(create_replicated("s", 8, 1, &[])))
        .iter()
        .map(|shard| shard.placement)
        .collect();

    let mut harness = Harness::with_nodes(4, 2);
    let shards = shards_of(harness.ok(create_replicated("orders", 8, 3, &[])));
    let mut held = BTreeMap::<NodeId, usize>::new();
    for shard in &shards {
        assert_replica_set(shard, 3);
        for replica in &shard.replicas {
            *held.entry(replica.node).or_default() += 1;
        }
    }
    let placed: Vec<Placement> = shards.iter().map(|shard| shard.placement).collect();
    assert_eq!(placed, sequencers, "R does not move the sequencers");
    assert_eq!(held.values().copied().collect::<Vec<_>>(), vec![6, 6, 6, 6]);
}

/// Avoided nodes get no replica; a factor above the nodes left is refused with the count of
/// nodes that could take replicas, and `check` agrees.
#[test]
fn replicas_avoid_nodes_and_need_enough_of_the_rest() {
    let mut harness = Harness::with_nodes(4, 1);
    for shard in shards_of(harness.ok(create_replicated("orders", 4, 3, &[2]))) {
        assert_replica_set(&shard, 3);
        assert!(!shard.has_replica_on(NodeId(2)), "{shard:?}");
    }
    let too_many = create_replicated("clicks", 1, 3, &[1, 3]);
    let refusal = MetadataError::NotEnoughNodes {
        replication_factor: 3,
        nodes: 2,
    };
    let index = harness.state.applied_index() + 1;
    assert_eq!(harness.state.check(index, &too_many), Err(refusal.clone()));
    assert_eq!(harness.refused(too_many), refusal);
    harness.ok(create_replicated("clicks", 1, 2, &[1, 3]));
}

/// Children of splits and merges get replica sets of their stream's factor. (A ring too small
/// for the factor cannot happen here: every shard's R replicas sit on registered nodes, and a
/// node holding one cannot be removed.)
#[test]
fn splits_and_merges_give_children_replica_sets() {
    let mut harness = Harness::with_nodes(3, 2);
    shards_of(harness.ok(create_replicated("orders", 2, 3, &[])));
    let children = shards_of(harness.ok(Command::SplitShard {
        shard: ShardId(1),
        now_ms: 2,
    }));
    assert_eq!(children.len(), 2);
    for child in &children {
        assert_replica_set(child, 3);
    }
    let merged = shards_of(harness.ok(Command::MergeShards {
        left: ShardId(3),
        right: ShardId(4),
        now_ms: 3,
    }));
    assert_replica_set(&merged[0], 3);
}

/// A node holding only non-sequencer replicas still owns shards: it cannot be removed.
#[test]
fn a_node_with_replicas_cannot_be_removed() {
    let mut harness = Harness::with_nodes(3, 1);
    shards_of(harness.ok(create_replicated("orders", 1, 2, &[])));
    let shard = harness.state.shard(ShardId(1)).expect("shard").clone();
    let follower = shard.replicas[1].node;
    assert_ne!(follower, shard.placement.node);
    assert!(matches!(
        harness.refused(Command::RemoveNode { node: follower }),
        MetadataError::NodeOwnsShards { shards: 1, .. }
    ));
}

/// A node that comes back with fewer cores moves every replica on a missing core, not only
/// sequencers, to `core % cores`, and reports the shards it touched.
#[test]
fn fewer_cores_move_every_replica_on_a_missing_core() {
    let mut harness = Harness::with_nodes(2, 2);
    let shards = shards_of(harness.ok(create_replicated("orders", 4, 2, &[])));
    let on_core_1: Vec<ShardId> = shards
        .iter()
        .filter(|shard| {
            shard.replicas.contains(&Placement {
                node: NodeId(2),
                core: 1,
            })
        })
        .map(|shard| shard.id)
        .collect();
    assert!(!on_core_1.is_empty());
    let Applied::NodeRegistered { replaced, .. } =
        harness.ok(Command::RegisterNode { node: node(2, 1) })
    else {
        panic!("not a registration");
    };
    let replaced: Vec<ShardId> = replaced.iter().map(|shard| shard.id).collect();
    for id in &on_core_1 {
        assert!(replaced.contains(id), "{id} not reported");
    }
    for shard in harness.state.shards() {
        assert!(shard
            .replicas
            .iter()
            .all(|replica| replica.node != NodeId(2) || replica.core == 0));
        assert_replica_set(shard, 2);
    }
}

fn bump(shard: u64, from: u64, sequencer: Placement) -> Command {
    Command::BumpEpoch {
        shard: ShardId(shard),
        from: runnel_core::Epoch(from),
        sequencer,
    }
}

/// `BumpEpoch` is a compare-and-set: it applies at the epoch it names, moves the sequencer to
/// the replica it names and raises the epoch by one; the same bump again (a second proposer
/// that saw the same failure) is refused as stale, and so is one from an older epoch.
#[test]
fn bump_epoch_is_a_compare_and_set_that_moves_the_sequencer() {
    let mut harness = Harness::with_nodes(3, 1);
    let shard = shards_of(harness.ok(create_replicated("orders", 1, 3, &[]))).remove(0);
    let next = shard.replicas[1];
    let index = harness.state.applied_index() + 1;
    assert_eq!(
        harness.state.check(index, &bump(1, 0, next)),
        Ok(Vec::new())
    );
    let Applied::EpochBumped { shard: bumped } = harness.ok(bump(1, 0, next)) else {
        panic!("not an epoch bump");
    };
    assert_eq!(bumped.epoch, runnel_core::Epoch(1));
    assert_eq!(bumped.placement, next);
    assert_eq!(bumped.replicas, shard.replicas, "the replica set stays");
    assert_eq!(harness.state.shard(ShardId(1)), Some(&bumped));
    assert_eq!(
        harness.refused(bump(1, 0, shard.replicas[2])),
        MetadataError::StaleEpoch {
            shard: ShardId(1),
            from: runnel_core::Epoch(0),
            current: runnel_core::Epoch(1),
        }
    );
    assert_eq!(
        harness.refused(bump(1, 2, next)),
        MetadataError::StaleEpoch {
            shard: ShardId(1),
            from: runnel_core::Epoch(2),
            current: runnel_core::Epoch(1),
        }
    );
    // Back to the first replica, at the new epoch.
    harness.ok(bump(1, 1, shard.replicas[0]));
    assert_eq!(
        harness
            .state
            .shard(ShardId(1))
            .map(|shard| (shard.epoch, shard.placement)),
        Some((runnel_core::Epoch(2), shard.replicas[0]))
    );
}

/// A bump naming a placement that holds no replica is refused (another core of a replica's
/// node included), as is one of a sealed or unknown shard.
#[test]
fn bump_epoch_needs_a_replica_and_an_open_shard() {
    let mut harness = Harness::with_nodes(3, 2);
    shards_of(harness.ok(create_replicated("orders", 1, 2, &[])));
    let shard = harness.state.shard(ShardId(1)).expect("shard").clone();
    let outsider = harness
        .state
        .nodes()
        .map(|node| node.id)
        .find(|&node| !shard.has_replica_on(node))
        .expect("three nodes, two replicas");
    for sequencer in [
        Placement {
            node: outsider,
            core: 0,
        },
        Placement {
            node: shard.replicas[1].node,
            core: 1 - shard.replicas[1].core,
        },
    ] {
        assert_eq!(
            harness.refused(bump(1, 0, sequencer)),
            MetadataError::NotAReplica {
                shard: ShardId(1),
                sequencer
            }
        );
    }
    harness.ok(Command::SplitShard {
        shard: ShardId(1),
        now_ms: 2,
    });
    assert_eq!(
        harness.refused(bump(1, 0, shard.replicas[1])),
        MetadataError::ShardSealed { shard: ShardId(1) }
    );
    assert_eq!(
        harness.refused(bump(9, 0, shard.replicas[1])),
        MetadataError::ShardNotFound { shard: ShardId(9) }
    );
}
