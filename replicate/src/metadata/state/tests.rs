//! Unit tests of every command, its effects and each of its refusals, and of the queries.
//! The harness checks after every step that the invariants hold and that a refused command
//! changed nothing but the applied index.

use runnel_core::{hash128, Epoch, KeyRange, ShardId};

use super::*;
use crate::metadata::testing::{config, name, node, Harness};
use crate::metadata::{
    Durability, Placement, NODE_CORES_MAX, REPLICATION_FACTOR_MAX, SHARD_COUNT_MAX,
};

fn create(stream: &str, shard_count: u32) -> Command {
    Command::CreateStream {
        config: config(stream, shard_count),
        now_ms: 1_000,
        avoid: Vec::new(),
    }
}

fn split(shard: u64) -> Command {
    Command::SplitShard {
        shard: ShardId(shard),
        now_ms: 2_000,
    }
}

fn merge(left: u64, right: u64) -> Command {
    Command::MergeShards {
        left: ShardId(left),
        right: ShardId(right),
        now_ms: 3_000,
    }
}

fn placement(node: u64, core: u32) -> Placement {
    Placement {
        node: NodeId(node),
        core,
    }
}

fn open_ids(harness: &Harness, stream: &str) -> Vec<u64> {
    harness
        .state
        .open_shards(&name(stream))
        .expect("stream exists")
        .iter()
        .map(|shard| shard.id.0)
        .collect()
}

/// `check` is what a proposer asks before recording a command, instead of applying it to a copy
/// of the whole state: it must refuse what `apply` refuses and name the shards `apply` creates.
#[test]
fn check_names_the_shards_apply_creates_and_changes_nothing() {
    let mut state = MetadataState::new();
    let register = Command::RegisterNode { node: node(1, 2) };
    assert_eq!(state.check(1, &register), Ok(Vec::new()));
    assert_eq!(
        state.check(2, &register),
        Err(MetadataError::OutOfOrder {
            expected: 1,
            got: 2
        })
    );
    assert_eq!(state, MetadataState::new(), "check changed the state");
    state.apply(1, &register).expect("register");
    let checked = state.check(2, &create("orders", 3)).expect("accepted");
    assert_eq!(
        checked.iter().map(|shard| shard.id.0).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    match state.apply(2, &create("orders", 3)) {
        Ok(Applied::StreamCreated { shards, .. }) => assert_eq!(shards, checked),
        other => panic!("create: {other:?}"),
    }
    assert_eq!(
        state.check(3, &create("orders", 1)),
        Err(MetadataError::StreamExists {
            name: name("orders")
        })
    );
    let children = state.check(3, &split(2)).expect("split accepted");
    assert_eq!(
        children
            .iter()
            .map(|shard| (shard.id.0, shard.placement))
            .collect::<Vec<_>>(),
        vec![(4, placement(1, 1)), (5, placement(1, 0))]
    );
}

#[test]
fn wrong_indexes_are_refused_and_change_nothing() {
    let mut state = MetadataState::new();
    let command = Command::RegisterNode { node: node(1, 1) };
    for index in [0, 2, u64::MAX] {
        assert_eq!(
            state.apply(index, &command),
            Err(MetadataError::OutOfOrder {
                expected: 1,
                got: index
            })
        );
        assert_eq!(state, MetadataState::new());
    }
    state.apply(1, &command).expect("first index is 1");
    let after_one = state.clone();
    for index in [1, 3] {
        let error = state.apply(index, &command).expect_err("out of order");
        assert_eq!(
            error,
            MetadataError::OutOfOrder {
                expected: 2,
                got: index
            }
        );
        assert!(!error.is_rejection());
        assert_eq!(state, after_one);
    }

    // At the very end of the index space nothing is accepted, not even a replay of the last.
    state.applied_index = u64::MAX;
    let full = state.clone();
    for index in [0, u64::MAX] {
        assert!(matches!(
            state.apply(index, &command),
            Err(MetadataError::OutOfOrder { .. })
        ));
    }
    assert_eq!(state, full);
}

#[test]
fn a_refused_command_consumes_its_index_and_changes_nothing_else() {
    let mut state = MetadataState::new();
    let error = state
        .apply(1, &create("orders", 1))
        .expect_err("no nodes yet");
    assert_eq!(error, MetadataError::NoNodes);
    assert!(error.is_rejection());
    let mut expected = MetadataState::new();
    expected.applied_index = 1;
    assert_eq!(state, expected);
    // The log moves on: the next index is 2.
    state
        .apply(2, &Command::RegisterNode { node: node(1, 1) })
        .expect("accepted");
}

#[test]
fn register_node_adds_then_updates() {
    let mut harness = Harness::new();
    assert_eq!(
        harness.ok(Command::RegisterNode { node: node(5, 2) }),
        Applied::NodeRegistered {
            node: node(5, 2),
            previous: None,
            replaced: Vec::new(),
        }
    );
    let moved = Node {
        address: "[::1]:9000".to_string(),
        ..node(5, 8)
    };
    assert_eq!(
        harness.ok(Command::RegisterNode {
            node: moved.clone()
        }),
        Applied::NodeRegistered {
            node: moved.clone(),
            previous: Some(node(5, 2)),
            replaced: Vec::new(),
        }
    );
    harness.ok(Command::RegisterNode { node: node(2, 1) });
    let nodes: Vec<&Node> = harness.state.nodes().collect();
    assert_eq!(nodes, vec![&node(2, 1), &moved]);
    assert_eq!(harness.state.node(NodeId(5)), Some(&moved));
    assert_eq!(harness.state.node(NodeId(6)), None);
}

/// Regression: a node restarted with fewer cores kept its shards on the cores it no longer
/// had, and every request for them failed `UnknownCore`. Registering it again with fewer
/// cores re-places those shards on `core % cores`; more cores move nothing.
#[test]
fn register_node_with_fewer_cores_re_places_the_shards_of_missing_cores() {
    let mut harness = Harness::new();
    harness.ok(Command::RegisterNode { node: node(1, 3) });
    harness.ok(create("orders", 6));
    let cores = |harness: &Harness| -> Vec<u32> {
        harness.state.shards().map(|s| s.placement.core).collect()
    };
    assert_eq!(cores(&harness), vec![0, 1, 2, 0, 1, 2]);
    let Applied::NodeRegistered { replaced, .. } =
        harness.ok(Command::RegisterNode { node: node(1, 2) })
    else {
        panic!("a node registration");
    };
    let replaced: Vec<(u64, Placement)> = replaced.iter().map(|s| (s.id.0, s.placement)).collect();
    assert_eq!(replaced, vec![(3, placement(1, 0)), (6, placement(1, 0))]);
    assert_eq!(cores(&harness), vec![0, 1, 0, 0, 1, 0]);
    let Applied::NodeRegistered { replaced, .. } =
        harness.ok(Command::RegisterNode { node: node(1, 1) })
    else {
        panic!("a node registration");
    };
    assert_eq!(replaced.len(), 2, "the shards of core 1");
    assert_eq!(cores(&harness), vec![0; 6]);
    let Applied::NodeRegistered { replaced, .. } =
        harness.ok(Command::RegisterNode { node: node(1, 4) })
    else {
        panic!("a node registration");
    };
    assert!(replaced.is_empty(), "more cores move nothing");
    assert_eq!(cores(&harness), vec![0; 6]);
}

#[test]
fn register_node_refuses_invalid_nodes() {
    let mut harness = Harness::new();
    for bad in [
        node(1, 0),
        node(1, NODE_CORES_MAX + 1),
        Node {
            address: "no-port".to_string(),
            ..node(1, 1)
        },
    ] {
        assert!(matches!(
            harness.refused(Command::RegisterNode { node: bad }),
            MetadataError::InvalidNode {
                node: NodeId(1),
                ..
            }
        ));
    }
    // An invalid update leaves the registered node as it was.
    harness.ok(Command::RegisterNode { node: node(1, 4) });
    harness.refused(Command::RegisterNode { node: node(1, 0) });
    assert_eq!(harness.state.node(NodeId(1)), Some(&node(1, 4)));
}

#[test]
fn register_node_stops_at_the_node_limit_but_still_updates() {
    let mut harness = Harness::new();
    for id in 0..NODES_MAX as u64 {
        let index = harness.state.applied_index() + 1;
        harness
            .state
            .apply(index, &Command::RegisterNode { node: node(id, 1) })
            .expect("under the limit");
    }
    assert_eq!(
        harness.refused(Command::RegisterNode {
            node: node(NODES_MAX as u64, 1)
        }),
        MetadataError::LimitExceeded {
            what: "nodes",
            max: NODES_MAX as u64
        }
    );
    harness.ok(Command::RegisterNode { node: node(0, 2) });
}

#[test]
fn create_stream_allocates_ids_ranges_and_placements() {
    let mut harness = Harness::new();
    harness.ok(Command::RegisterNode { node: node(1, 2) });
    harness.ok(Command::RegisterNode { node: node(2, 1) });
    let config = StreamConfig {
        replication_factor: 2,
        durability: Durability::Memory,
        ..config("orders", 4)
    };
    let Applied::StreamCreated { stream, shards } = harness.ok(Command::CreateStream {
        config: config.clone(),
        now_ms: 1_234,
        avoid: Vec::new(),
    }) else {
        panic!("not a stream creation");
    };
    assert_eq!(stream.id, StreamId(1));
    assert_eq!(stream.config, config);
    assert_eq!(stream.created_ms, 1_234);
    assert_eq!(stream.shards, [1, 2, 3, 4].map(ShardId).to_vec());
    let ranges = KeyRange::split_space(4).expect("four ranges");
    // The core ring of nodes 1 (2 cores) and 2 (1 core): (1,0), (2,0), (1,1), then around.
    let placements = [
        placement(1, 0),
        placement(2, 0),
        placement(1, 1),
        placement(1, 0),
    ];
    for (index, shard) in shards.iter().enumerate() {
        assert_eq!(shard.id, ShardId(index as u64 + 1));
        assert_eq!(shard.stream, StreamId(1));
        assert_eq!(shard.key_range, ranges[index]);
        assert_eq!(shard.status, ShardStatus::Open);
        assert!(shard.parents.is_empty() && shard.children.is_empty());
        assert_eq!(shard.epoch, Epoch(0));
        assert_eq!(shard.placement, placements[index]);
        assert_eq!(shard.created_ms, 1_234);
        assert_eq!(harness.state.shard(shard.id), Some(shard));
    }
    assert_eq!(harness.state.stream(&name("orders")), Some(&stream));
    assert_eq!(harness.state.stream_by_id(StreamId(1)), Some(&stream));
    assert_eq!(open_ids(&harness, "orders"), vec![1, 2, 3, 4]);

    // The next stream continues the ids and the placement cursor.
    let Applied::StreamCreated { stream, shards } = harness.ok(create("clicks", 2)) else {
        panic!("not a stream creation");
    };
    assert_eq!(stream.id, StreamId(2));
    assert_eq!(stream.shards, vec![ShardId(5), ShardId(6)]);
    assert_eq!(shards[0].placement, placement(2, 0));
    assert_eq!(shards[1].placement, placement(1, 1));
}

#[test]
fn create_stream_refuses_invalid_configurations() {
    let mut harness = Harness::with_nodes(1, 1);
    for bad in [
        config("s", 0),
        config("s", SHARD_COUNT_MAX + 1),
        StreamConfig {
            replication_factor: 0,
            ..config("s", 1)
        },
        StreamConfig {
            replication_factor: REPLICATION_FACTOR_MAX + 1,
            ..config("s", 1)
        },
        StreamConfig {
            retention_ms: 0,
            ..config("s", 1)
        },
    ] {
        assert!(matches!(
            harness.refused(Command::CreateStream {
                config: bad,
                now_ms: 0,
                avoid: Vec::new(),
            }),
            MetadataError::InvalidConfig { .. }
        ));
    }
    harness.ok(Command::CreateStream {
        config: config("s", SHARD_COUNT_MAX),
        now_ms: 0,
        avoid: Vec::new(),
    });
}

#[test]
fn create_stream_refuses_a_taken_name() {
    let mut harness = Harness::with_nodes(1, 1);
    harness.ok(create("orders", 1));
    assert_eq!(
        harness.refused(create("orders", 2)),
        MetadataError::StreamExists {
            name: name("orders")
        }
    );
}

#[test]
fn create_stream_needs_nodes_for_its_replicas() {
    let mut harness = Harness::new();
    assert_eq!(harness.refused(create("orders", 1)), MetadataError::NoNodes);
    harness.ok(Command::RegisterNode { node: node(1, 4) });
    harness.ok(Command::RegisterNode { node: node(2, 4) });
    let three = StreamConfig {
        replication_factor: 3,
        ..config("orders", 1)
    };
    assert_eq!(
        harness.refused(Command::CreateStream {
            config: three.clone(),
            now_ms: 0,
            avoid: Vec::new(),
        }),
        MetadataError::NotEnoughNodes {
            replication_factor: 3,
            nodes: 2
        }
    );
    harness.ok(Command::RegisterNode { node: node(3, 1) });
    harness.ok(Command::CreateStream {
        config: three,
        now_ms: 0,
        avoid: Vec::new(),
    });
}

#[test]
fn create_stream_and_split_stop_at_the_shard_limit() {
    let mut harness = Harness::with_nodes(1, 1);
    let full_streams = SHARDS_MAX / SHARD_COUNT_MAX as usize;
    for stream in 0..full_streams {
        let index = harness.state.applied_index() + 1;
        harness
            .state
            .apply(index, &create(&format!("s{stream}"), SHARD_COUNT_MAX))
            .expect("under the limit");
    }
    let room = (SHARDS_MAX - harness.state.shards.len()) as u32;
    let limit = MetadataError::LimitExceeded {
        what: "shards",
        max: SHARDS_MAX as u64,
    };
    assert_eq!(harness.refused(create("big", room + 1)), limit);
    harness.ok(create("last", room - 1));
    assert_eq!(harness.refused(split(1)), limit);
    harness.ok(merge(1, 2));
    assert_eq!(harness.state.shards.len(), SHARDS_MAX);
    assert_eq!(harness.refused(merge(3, 4)), limit);
    assert_eq!(harness.refused(create("one", 1)), limit);
}

#[test]
fn exhausted_id_counters_refuse_new_ids() {
    let mut harness = Harness::with_nodes(1, 1);
    harness.state.next_stream_id = u64::MAX;
    assert_eq!(
        harness.refused(create("orders", 1)),
        MetadataError::CounterExhausted {
            counter: "stream id"
        }
    );
    harness.state.next_stream_id = 1;
    // Ids up to u64::MAX - 1 can be handed out; u64::MAX itself never is.
    harness.state.next_shard_id = u64::MAX - 3;
    let exhausted = MetadataError::CounterExhausted {
        counter: "shard id",
    };
    assert_eq!(harness.refused(create("orders", 4)), exhausted);
    harness.ok(create("orders", 2)); // MAX - 3, MAX - 2
    assert_eq!(harness.refused(split(u64::MAX - 3)), exhausted);
    harness.ok(merge(u64::MAX - 3, u64::MAX - 2)); // MAX - 1
    assert_eq!(harness.state.next_shard_id, u64::MAX);
    assert_eq!(harness.refused(create("other", 1)), exhausted);
    assert!(harness.state.shard(ShardId(u64::MAX - 1)).is_some());
}

#[test]
fn delete_stream_removes_every_shard_and_retires_the_ids() {
    let mut harness = Harness::with_nodes(2, 2);
    harness.ok(create("orders", 2));
    harness.ok(create("keep", 1));
    harness.ok(split(1)); // 4, 5
    harness.ok(merge(5, 2)); // 6
    let Applied::StreamDeleted {
        stream,
        shards,
        subscriptions,
    } = harness.ok(Command::DeleteStream {
        name: name("orders"),
        force: false,
    })
    else {
        panic!("not a deletion");
    };
    assert_eq!(stream.id, StreamId(1));
    assert!(subscriptions.is_empty());
    let deleted: Vec<u64> = shards.iter().map(|shard| shard.id.0).collect();
    assert_eq!(deleted, vec![1, 2, 4, 5, 6]);
    for id in deleted {
        assert_eq!(harness.state.shard(ShardId(id)), None);
    }
    assert_eq!(harness.state.stream(&name("orders")), None);
    assert_eq!(harness.state.stream_by_id(StreamId(1)), None);
    assert!(harness.state.shard(ShardId(3)).is_some());

    // The name is free again; the ids are not.
    let Applied::StreamCreated { stream, shards } = harness.ok(create("orders", 2)) else {
        panic!("not a stream creation");
    };
    assert_eq!(stream.id, StreamId(3));
    assert_eq!(shards[0].id, ShardId(7));
    assert_eq!(shards[1].id, ShardId(8));
}

#[test]
fn delete_stream_refuses_a_missing_stream() {
    let mut harness = Harness::with_nodes(1, 1);
    let missing = MetadataError::StreamNotFound {
        name: name("orders"),
    };
    let delete = Command::DeleteStream {
        name: name("orders"),
        force: false,
    };
    assert_eq!(harness.refused(delete.clone()), missing);
    harness.ok(create("orders", 1));
    harness.ok(delete.clone());
    assert_eq!(harness.refused(delete), missing);
}

#[test]
fn split_seals_the_parent_and_opens_two_halves() {
    let mut harness = Harness::with_nodes(2, 1);
    harness.ok(create("orders", 2)); // 1 on node 1, 2 on node 2
    let parent_range = harness.state.shard(ShardId(1)).expect("shard").key_range;
    let Applied::ShardSplit { parent, children } = harness.ok(split(1)) else {
        panic!("not a split");
    };
    let (low, high) = parent_range.split().expect("splits");
    assert_eq!(parent.status, ShardStatus::Sealed);
    assert_eq!(parent.children, vec![ShardId(3), ShardId(4)]);
    assert_eq!(harness.state.shard(ShardId(1)), Some(&parent));
    assert_eq!(children.len(), 2);
    for (child, (id, range, place)) in children.iter().zip([
        (ShardId(3), low, placement(1, 0)),
        (ShardId(4), high, placement(2, 0)),
    ]) {
        assert_eq!(child.id, id);
        assert_eq!(child.key_range, range);
        assert_eq!(child.parents, vec![ShardId(1)]);
        assert!(child.children.is_empty());
        assert_eq!(child.status, ShardStatus::Open);
        assert_eq!(child.epoch, Epoch(0));
        assert_eq!(child.placement, place);
        assert_eq!(child.created_ms, 2_000);
    }
    // The stream still lists the shards it was created with.
    let stream = harness.state.stream(&name("orders")).expect("stream");
    assert_eq!(stream.shards, vec![ShardId(1), ShardId(2)]);
    assert_eq!(open_ids(&harness, "orders"), vec![3, 4, 2]);
    let orders = name("orders");
    assert_eq!(
        harness.state.shard_for_hash(&orders, low.start()),
        Ok(ShardId(3))
    );
    assert_eq!(
        harness.state.shard_for_hash(&orders, high.start()),
        Ok(ShardId(4))
    );
    assert_eq!(
        harness.state.shard_for_hash(&orders, high.end()),
        Ok(ShardId(4))
    );
    assert_eq!(
        harness.state.shard_for_hash(&orders, u128::MAX),
        Ok(ShardId(2))
    );
}

#[test]
fn split_refuses_missing_sealed_and_single_hash_shards() {
    let mut harness = Harness::with_nodes(1, 1);
    assert_eq!(
        harness.refused(split(1)),
        MetadataError::ShardNotFound { shard: ShardId(1) }
    );
    harness.ok(create("orders", 1));
    harness.ok(split(1)); // 2, 3
    assert_eq!(
        harness.refused(split(1)),
        MetadataError::ShardSealed { shard: ShardId(1) }
    );
    // Keep halving the lowest shard: after 127 more splits it holds the single hash 0.
    let mut lowest = ShardId(2);
    for _ in 0..128 {
        let Applied::ShardSplit { children, .. } = harness.ok(split(lowest.0)) else {
            panic!("not a split");
        };
        lowest = children[0].id;
        if children[0].key_range.start() == children[0].key_range.end() {
            break;
        }
    }
    let single = harness.state.shard(lowest).expect("shard").key_range;
    assert_eq!((single.start(), single.end()), (0, 0));
    assert_eq!(
        harness.refused(split(lowest.0)),
        MetadataError::ShardTooSmall { shard: lowest }
    );
}

#[test]
fn merge_seals_both_parents_and_opens_their_union() {
    let mut harness = Harness::with_nodes(1, 3);
    harness.ok(create("orders", 3)); // 1, 2, 3 on cores 0, 1, 2
    let Applied::ShardsMerged { parents, child } = harness.ok(merge(3, 2)) else {
        panic!("not a merge");
    };
    let ranges = KeyRange::split_space(3).expect("ranges");
    // Parents are listed in key order whatever order the command gave.
    assert_eq!(
        parents.iter().map(|parent| parent.id).collect::<Vec<_>>(),
        vec![ShardId(2), ShardId(3)]
    );
    for parent in &parents {
        assert_eq!(parent.status, ShardStatus::Sealed);
        assert_eq!(parent.children, vec![ShardId(4)]);
    }
    assert_eq!(child.id, ShardId(4));
    assert_eq!(child.parents, vec![ShardId(2), ShardId(3)]);
    assert_eq!(
        child.key_range,
        ranges[1].merge(&ranges[2]).expect("adjacent")
    );
    assert_eq!(child.placement, placement(1, 0));
    assert_eq!(child.created_ms, 3_000);
    assert_eq!(child.epoch, Epoch(0));
    assert_eq!(open_ids(&harness, "orders"), vec![1, 4]);

    // A split undone by a merge restores the parent's range under a new id.
    let Applied::ShardSplit { children, parent } = harness.ok(split(4)) else {
        panic!("not a split");
    };
    let Applied::ShardsMerged { child, .. } = harness.ok(merge(children[0].id.0, children[1].id.0))
    else {
        panic!("not a merge");
    };
    assert_eq!(child.key_range, parent.key_range);
    assert_eq!(child.id, ShardId(7));
}

#[test]
fn merge_refuses_missing_sealed_and_non_adjacent_shards() {
    let mut harness = Harness::with_nodes(1, 1);
    harness.ok(create("orders", 3)); // 1, 2, 3
    harness.ok(create("clicks", 2)); // 4, 5
    assert_eq!(
        harness.refused(merge(9, 1)),
        MetadataError::ShardNotFound { shard: ShardId(9) }
    );
    assert_eq!(
        harness.refused(merge(1, 9)),
        MetadataError::ShardNotFound { shard: ShardId(9) }
    );
    let not_adjacent = |left, right| MetadataError::NotAdjacent {
        left: ShardId(left),
        right: ShardId(right),
    };
    assert_eq!(harness.refused(merge(1, 1)), not_adjacent(1, 1));
    assert_eq!(harness.refused(merge(1, 3)), not_adjacent(1, 3));
    // Shard 3 ends and shard 4 starts where streams' ranges touch, but they are two streams.
    assert_eq!(harness.refused(merge(3, 4)), not_adjacent(3, 4));
    assert_eq!(harness.refused(merge(2, 4)), not_adjacent(2, 4));
    harness.ok(merge(1, 2)); // 6
    assert_eq!(
        harness.refused(merge(1, 3)),
        MetadataError::ShardSealed { shard: ShardId(1) }
    );
    assert_eq!(
        harness.refused(merge(3, 2)),
        MetadataError::ShardSealed { shard: ShardId(2) }
    );
    harness.ok(merge(3, 6));
}

/// The bump of the first logs (tag 6) raises the epoch of open and sealed shards alike,
/// with no compare, and leaves the sequencer where it was.
#[test]
fn the_unconditional_bump_raises_the_epoch_of_open_and_sealed_shards() {
    let mut harness = Harness::with_nodes(1, 1);
    let bump = |shard| Command::BumpEpochUnconditionally {
        shard: ShardId(shard),
    };
    assert_eq!(
        harness.refused(bump(1)),
        MetadataError::ShardNotFound { shard: ShardId(1) }
    );
    harness.ok(create("orders", 1));
    let placed = harness.state.shard(ShardId(1)).map(|shard| shard.placement);
    for expected in 1..=3 {
        let Applied::EpochBumped { shard } = harness.ok(bump(1)) else {
            panic!("not an epoch bump");
        };
        assert_eq!(shard.epoch, Epoch(expected));
        assert_eq!(Some(shard.placement), placed);
        assert_eq!(harness.state.shard(ShardId(1)), Some(&shard));
    }
    harness.ok(split(1));
    harness.ok(bump(1));
    assert_eq!(
        harness.state.shard(ShardId(1)).map(|shard| shard.epoch),
        Some(Epoch(4))
    );
    if let Some(shard) = harness.state.shards.get_mut(&ShardId(2)) {
        shard.epoch = Epoch(u64::MAX);
    }
    assert_eq!(
        harness.refused(bump(2)),
        MetadataError::CounterExhausted { counter: "epoch" }
    );
}

#[test]
fn placement_follows_the_nodes_registered_when_a_shard_is_made() {
    let mut harness = Harness::with_nodes(1, 1);
    harness.ok(create("a", 2)); // node 1 core 0, twice; cursor 2
    harness.ok(Command::RegisterNode { node: node(1, 2) });
    harness.ok(Command::RegisterNode { node: node(2, 1) });
    // Ring (1,0), (2,0), (1,1); cursor 2 and 3 pick (1,1) and (1,0).
    let Applied::StreamCreated { shards, .. } = harness.ok(create("b", 2)) else {
        panic!("not a stream creation");
    };
    assert_eq!(shards[0].placement, placement(1, 1));
    assert_eq!(shards[1].placement, placement(1, 0));
    for id in [1, 2] {
        assert_eq!(
            harness
                .state
                .shard(ShardId(id))
                .map(|shard| shard.placement),
            Some(placement(1, 0))
        );
    }
}

#[test]
fn queries_list_in_order_and_route_every_key() {
    let mut harness = Harness::with_nodes(2, 2);
    for stream in ["zeta", "alpha", "mid"] {
        harness.ok(create(stream, 3));
    }
    let names: Vec<&str> = harness
        .state
        .streams()
        .map(|stream| stream.config.name.as_str())
        .collect();
    assert_eq!(names, vec!["alpha", "mid", "zeta"]);
    harness.ok(split(2));
    harness.ok(split(10));
    harness.ok(merge(11, 3));
    let zeta = name("zeta");
    let open = harness.state.open_shards(&zeta).expect("stream");
    for pair in open.windows(2) {
        assert_eq!(pair[0].key_range.end() + 1, pair[1].key_range.start());
    }
    for key in 0u32..500 {
        let key = key.to_le_bytes();
        let expected = open
            .iter()
            .find(|shard| shard.key_range.contains(hash128(&key)))
            .map(|shard| shard.id)
            .expect("covered");
        assert_eq!(harness.state.shard_for_key(&zeta, &key), Ok(expected));
    }
    let ids: Vec<u64> = harness.state.shards().map(|shard| shard.id.0).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted);
    let missing = MetadataError::StreamNotFound {
        name: name("missing"),
    };
    assert_eq!(
        harness.state.open_shards(&name("missing")).err(),
        Some(missing.clone())
    );
    assert_eq!(
        harness.state.shard_for_key(&name("missing"), b"k"),
        Err(missing)
    );
    assert_eq!(harness.state.stream_by_id(StreamId(99)), None);
}

fn create_avoiding(stream: &str, shard_count: u32, avoid: &[u64]) -> Command {
    Command::CreateStream {
        config: config(stream, shard_count),
        now_ms: 1_000,
        avoid: avoid.iter().map(|&id| NodeId(id)).collect(),
    }
}

/// A node that owns shards of a live stream (open or sealed) cannot be removed: the refusal
/// names how many shards and which streams; once the streams are deleted it can.
#[test]
fn remove_node_is_refused_while_it_owns_shards() {
    let mut harness = Harness::with_nodes(3, 1);
    // Shards 1-3 on nodes 1, 2, 3; shard 4 on node 1; shard 5 on node 2.
    harness.ok(create("orders", 3));
    harness.ok(create("clicks", 2));
    assert_eq!(
        harness.refused(Command::RemoveNode { node: NodeId(2) }),
        MetadataError::NodeOwnsShards {
            node: NodeId(2),
            shards: 2,
            streams: vec![name("clicks"), name("orders")],
        }
    );
    harness.ok(Command::DeleteStream {
        name: name("clicks"),
        force: false,
    });
    assert_eq!(
        harness.refused(Command::RemoveNode { node: NodeId(2) }),
        MetadataError::NodeOwnsShards {
            node: NodeId(2),
            shards: 1,
            streams: vec![name("orders")],
        }
    );
    harness.ok(Command::DeleteStream {
        name: name("orders"),
        force: false,
    });
    let Applied::NodeRemoved { node: removed } =
        harness.ok(Command::RemoveNode { node: NodeId(2) })
    else {
        panic!("not a removal");
    };
    assert_eq!(removed, node(2, 1));
    assert_eq!(harness.state.node(NodeId(2)), None);
    assert_eq!(
        harness.refused(Command::RemoveNode { node: NodeId(2) }),
        MetadataError::NodeNotFound { node: NodeId(2) }
    );
}

/// A removed node's cores leave the ring: new shards go to the others only. The last node
/// cannot be removed.
#[test]
fn removed_nodes_get_no_new_shards_and_the_last_stays() {
    let mut harness = Harness::with_nodes(3, 1);
    harness.ok(Command::RemoveNode { node: NodeId(2) });
    let Applied::StreamCreated { shards, .. } = harness.ok(create("orders", 4)) else {
        panic!("not a create");
    };
    assert!(shards.iter().all(|shard| shard.placement.node != NodeId(2)));
    harness.ok(Command::DeleteStream {
        name: name("orders"),
        force: false,
    });
    harness.ok(Command::RemoveNode { node: NodeId(1) });
    assert_eq!(
        harness.refused(Command::RemoveNode { node: NodeId(3) }),
        MetadataError::LastNode { node: NodeId(3) }
    );
}

/// A create places its shards only on nodes it does not avoid (what its proposer saw
/// unavailable), spreading them over what is left; ids of unknown nodes are ignored; a create
/// that avoids every node is refused, and `check` agrees with `apply` on all of it.
#[test]
fn placement_skips_the_nodes_a_create_avoids() {
    let mut harness = Harness::with_nodes(3, 2);
    let Applied::StreamCreated { shards, .. } = harness.ok(create_avoiding("orders", 4, &[2, 99]))
    else {
        panic!("not a create");
    };
    let nodes: Vec<u64> = shards.iter().map(|shard| shard.placement.node.0).collect();
    assert!(!nodes.contains(&2), "{nodes:?}");
    assert!(nodes.contains(&1) && nodes.contains(&3), "{nodes:?}");
    let Applied::StreamCreated { shards, .. } = harness.ok(create_avoiding("clicks", 3, &[1, 3]))
    else {
        panic!("not a create");
    };
    assert!(shards.iter().all(|shard| shard.placement.node == NodeId(2)));
    let index = harness.state.applied_index() + 1;
    let everything = create_avoiding("views", 1, &[3, 1, 2]);
    assert_eq!(
        harness.state.check(index, &everything),
        Err(MetadataError::NoAvailableNodes { avoided: 3 })
    );
    assert_eq!(
        harness.refused(everything),
        MetadataError::NoAvailableNodes { avoided: 3 }
    );
}

/// The cluster is named once: a second id, or 0, is refused and changes nothing.
#[test]
fn the_cluster_id_is_set_once() {
    let mut harness = Harness::with_nodes(1, 1);
    assert_eq!(harness.state.cluster_id(), None);
    assert!(matches!(
        harness.refused(Command::SetClusterId { id: 0 }),
        MetadataError::InvalidConfig { .. }
    ));
    assert_eq!(
        harness.ok(Command::SetClusterId { id: 7 }),
        Applied::ClusterIdSet { id: 7 }
    );
    assert_eq!(
        harness.refused(Command::SetClusterId { id: 8 }),
        MetadataError::ClusterIdSet { existing: 7 }
    );
    assert_eq!(harness.state.cluster_id(), Some(7));
}
