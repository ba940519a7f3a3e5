//! Unit tests of the subscription commands, their effects and each of their refusals, of a
//! stream delete meeting subscriptions, and of the subscription queries. The harness checks
//! after every step that the invariants hold and that a refused command changed nothing but the
//! applied index.

use runnel_core::{Offset, ShardId};

use super::*;
use crate::metadata::command::Command;
use crate::metadata::testing::{config, name, subscription_config, subscription_name, Harness};
use crate::metadata::{
    SubscriptionStart, ACK_TIMEOUT_MS_MAX, MAX_UNACKED_RECORDS_LIMIT, SHARD_COUNT_MAX,
};

fn create_stream(stream: &str, shard_count: u32) -> Command {
    Command::CreateStream {
        config: config(stream, shard_count),
        now_ms: 1_000,
        avoid: Vec::new(),
    }
}

fn create(subscription: &str, stream: &str) -> Command {
    Command::CreateSubscription {
        config: subscription_config(subscription, stream),
        now_ms: 5_000,
    }
}

fn delete(subscription: &str) -> Command {
    Command::DeleteSubscription {
        name: subscription_name(subscription),
    }
}

fn commit(subscription: u64, shard: u64, offset: u64) -> Command {
    Command::CommitProgress {
        subscription: SubscriptionId(subscription),
        shard: ShardId(shard),
        offset: Offset(offset),
    }
}

fn delete_stream(stream: &str, force: bool) -> Command {
    Command::DeleteStream {
        name: name(stream),
        force,
    }
}

/// The committed progress of `subscription`, as `(shard, offset)` pairs.
fn committed(harness: &Harness, subscription: &str) -> Vec<(u64, u64)> {
    harness
        .state
        .subscription(&subscription_name(subscription))
        .expect("subscription exists")
        .committed
        .iter()
        .map(|(shard, offset)| (shard.0, offset.0))
        .collect()
}

/// A harness with one node and stream `orders` of two shards (1, 2).
fn with_orders() -> Harness {
    let mut harness = Harness::with_nodes(1, 2);
    harness.ok(create_stream("orders", 2));
    harness
}

#[test]
fn create_subscription_allocates_an_id_and_records_the_stream() {
    let mut harness = with_orders();
    harness.ok(create_stream("clicks", 1)); // stream 2, shard 3
    let config = SubscriptionConfig {
        ack_timeout_ms: 30_000,
        max_unacked_records: 500,
        start: SubscriptionStart::Timestamp(-7),
        ..subscription_config("billing", "orders")
    };
    let Applied::SubscriptionCreated { subscription } = harness.ok(Command::CreateSubscription {
        config: config.clone(),
        now_ms: 42,
    }) else {
        panic!("not a subscription creation");
    };
    assert_eq!(subscription.id, SubscriptionId(1));
    assert_eq!(subscription.config, config);
    assert_eq!(subscription.stream, StreamId(1));
    assert_eq!(subscription.created_ms, 42);
    assert!(subscription.committed.is_empty());
    let billing = subscription_name("billing");
    assert_eq!(harness.state.subscription(&billing), Some(&subscription));
    assert_eq!(
        harness.state.subscription_by_id(SubscriptionId(1)),
        Some(&subscription)
    );

    let Applied::SubscriptionCreated { subscription } = harness.ok(create("audit", "clicks"))
    else {
        panic!("not a subscription creation");
    };
    assert_eq!(subscription.id, SubscriptionId(2));
    assert_eq!(subscription.stream, StreamId(2));
    harness.ok(create("zz-last", "orders"));
    harness.ok(create("analytics", "orders"));
    let names: Vec<&str> = harness
        .state
        .subscriptions()
        .map(|subscription| subscription.config.name.as_str())
        .collect();
    assert_eq!(names, vec!["analytics", "audit", "billing", "zz-last"]);
    assert_eq!(harness.state.next_subscription_id, 5);
}

#[test]
fn create_subscription_refuses_bad_configs_missing_streams_and_taken_names() {
    let mut harness = with_orders();
    let base = subscription_config("billing", "orders");
    for bad in [
        SubscriptionConfig {
            ack_timeout_ms: 0,
            ..base.clone()
        },
        SubscriptionConfig {
            ack_timeout_ms: ACK_TIMEOUT_MS_MAX + 1,
            ..base.clone()
        },
        SubscriptionConfig {
            max_unacked_records: 0,
            ..base.clone()
        },
        SubscriptionConfig {
            max_unacked_records: MAX_UNACKED_RECORDS_LIMIT + 1,
            ..base.clone()
        },
    ] {
        let refused = harness.refused(Command::CreateSubscription {
            config: bad,
            now_ms: 0,
        });
        assert!(
            matches!(&refused, MetadataError::InvalidSubscriptionConfig { name, .. } if name.as_str() == "billing"),
            "{refused:?}"
        );
    }
    assert_eq!(
        harness.refused(create("billing", "missing")),
        MetadataError::StreamNotFound {
            name: name("missing")
        }
    );
    harness.ok(create("billing", "orders"));
    // Names are unique in the cluster, not per stream.
    harness.ok(create_stream("clicks", 1));
    for stream in ["orders", "clicks"] {
        assert_eq!(
            harness.refused(create("billing", stream)),
            MetadataError::SubscriptionExists {
                name: subscription_name("billing")
            }
        );
    }
    // Refusals consume no id.
    let Applied::SubscriptionCreated { subscription } = harness.ok(create("audit", "clicks"))
    else {
        panic!("not a subscription creation");
    };
    assert_eq!(subscription.id, SubscriptionId(2));
}

#[test]
fn create_subscription_stops_at_the_limit_and_at_an_exhausted_counter() {
    let mut harness = with_orders();
    harness.state.next_subscription_id = u64::MAX;
    assert_eq!(
        harness.refused(create("billing", "orders")),
        MetadataError::CounterExhausted {
            counter: "subscription id"
        }
    );
    // Ids up to u64::MAX - 1 can be handed out; u64::MAX itself never is.
    harness.state.next_subscription_id = u64::MAX - 1;
    harness.ok(create("billing", "orders"));
    assert_eq!(
        harness
            .state
            .subscription(&subscription_name("billing"))
            .map(|s| s.id),
        Some(SubscriptionId(u64::MAX - 1))
    );
    assert!(matches!(
        harness.refused(create("audit", "orders")),
        MetadataError::CounterExhausted { .. }
    ));

    let mut harness = with_orders();
    for subscription in 0..SUBSCRIPTIONS_MAX {
        // Straight to the state: the harness's per-step checks would make this quadratic.
        let index = harness.state.applied_index() + 1;
        harness
            .state
            .apply(index, &create(&format!("s{subscription}"), "orders"))
            .expect("under the limit");
    }
    assert_eq!(
        harness.refused(create("one-more", "orders")),
        MetadataError::LimitExceeded {
            what: "subscriptions",
            max: SUBSCRIPTIONS_MAX as u64
        }
    );
    harness.ok(delete("s0"));
    harness.ok(create("one-more", "orders"));
}

#[test]
fn delete_subscription_removes_it_with_its_progress_and_retires_its_id() {
    let mut harness = with_orders();
    harness.ok(create("billing", "orders"));
    harness.ok(create("audit", "orders"));
    harness.ok(commit(1, 2, 7));
    let Applied::SubscriptionDeleted { subscription } = harness.ok(delete("billing")) else {
        panic!("not a subscription deletion");
    };
    assert_eq!(subscription.id, SubscriptionId(1));
    assert_eq!(
        subscription.committed.into_iter().collect::<Vec<_>>(),
        vec![(ShardId(2), Offset(7))]
    );
    let billing = subscription_name("billing");
    assert_eq!(harness.state.subscription(&billing), None);
    assert_eq!(harness.state.subscription_by_id(SubscriptionId(1)), None);
    assert!(harness
        .state
        .subscription(&subscription_name("audit"))
        .is_some());
    assert_eq!(
        harness.refused(delete("billing")),
        MetadataError::SubscriptionNotFound {
            name: billing.clone()
        }
    );

    // The name is free again; the id is not, and a late commit for the old one is refused
    // rather than applied to the new subscription.
    let Applied::SubscriptionCreated { subscription } = harness.ok(create("billing", "orders"))
    else {
        panic!("not a subscription creation");
    };
    assert_eq!(subscription.id, SubscriptionId(3));
    assert_eq!(
        harness.refused(commit(1, 2, 9)),
        MetadataError::SubscriptionIdNotFound {
            subscription: SubscriptionId(1)
        }
    );
    assert!(committed(&harness, "billing").is_empty());
}

#[test]
fn commit_progress_only_moves_forward() {
    let mut harness = with_orders();
    harness.ok(create("billing", "orders"));
    let progress = |committed: u64, previous: Option<u64>| Applied::ProgressCommitted {
        subscription: SubscriptionId(1),
        shard: ShardId(1),
        committed: Offset(committed),
        previous: previous.map(Offset),
    };
    assert_eq!(harness.ok(commit(1, 1, 10)), progress(10, None));
    // Late commits (another consumer's, a retry) are accepted and change nothing.
    let before = harness
        .state
        .subscription(&subscription_name("billing"))
        .cloned();
    assert_eq!(harness.ok(commit(1, 1, 4)), progress(10, Some(10)));
    assert_eq!(harness.ok(commit(1, 1, 10)), progress(10, Some(10)));
    assert_eq!(
        harness
            .state
            .subscription(&subscription_name("billing"))
            .cloned(),
        before
    );
    assert_eq!(harness.ok(commit(1, 1, 25)), progress(25, Some(10)));
    harness.ok(commit(1, 2, 0));
    assert_eq!(committed(&harness, "billing"), vec![(1, 25), (2, 0)]);
    assert_eq!(
        harness.ok(commit(1, 1, u64::MAX)),
        progress(u64::MAX, Some(25))
    );
}

#[test]
fn commit_progress_takes_sealed_shards_and_their_children() {
    let mut harness = with_orders();
    harness.ok(create("billing", "orders"));
    harness.ok(commit(1, 1, 3));
    harness.ok(Command::SplitShard {
        shard: ShardId(1),
        now_ms: 2_000,
    }); // 3, 4
    harness.ok(commit(1, 1, 8)); // the sealed parent's tail
    harness.ok(commit(1, 4, 1));
    harness.ok(Command::MergeShards {
        left: ShardId(4),
        right: ShardId(2),
        now_ms: 3_000,
    }); // 5
    harness.ok(commit(1, 5, 2));
    assert_eq!(committed(&harness, "billing"), vec![(1, 8), (4, 1), (5, 2)]);
}

#[test]
fn commit_progress_refuses_unknown_subscriptions_and_foreign_shards() {
    let mut harness = with_orders(); // shards 1, 2
    harness.ok(create_stream("clicks", 1)); // shard 3
    harness.ok(create_stream("scratch", 1)); // shard 4
    assert_eq!(
        harness.refused(commit(1, 1, 0)),
        MetadataError::SubscriptionIdNotFound {
            subscription: SubscriptionId(1)
        }
    );
    harness.ok(create("billing", "orders"));
    assert_eq!(
        harness.refused(commit(0, 1, 0)),
        MetadataError::SubscriptionIdNotFound {
            subscription: SubscriptionId(0)
        }
    );
    assert_eq!(
        harness.refused(commit(1, 99, 0)),
        MetadataError::ShardNotFound { shard: ShardId(99) }
    );
    assert_eq!(
        harness.refused(commit(1, 3, 0)),
        MetadataError::ShardNotInSubscription {
            subscription: SubscriptionId(1),
            shard: ShardId(3)
        }
    );
    harness.ok(delete_stream("scratch", false));
    assert_eq!(
        harness.refused(commit(1, 4, 0)),
        MetadataError::ShardNotFound { shard: ShardId(4) }
    );
    assert!(committed(&harness, "billing").is_empty());
}

#[test]
fn committed_offsets_stop_at_the_limit() {
    let mut harness = Harness::with_nodes(1, 1);
    harness.ok(create_stream("orders", SHARD_COUNT_MAX));
    // Fill the committed offsets to the limit straight in the state: a million commits through
    // the harness would check a million-entry state a million times.
    let subscriptions = COMMITTED_OFFSETS_MAX.div_ceil(SHARD_COUNT_MAX as usize);
    for subscription in 0..subscriptions {
        harness.ok(create(&format!("s{subscription:04}"), "orders"));
    }
    let mut left = COMMITTED_OFFSETS_MAX;
    for subscription in harness.state.subscriptions.values_mut() {
        for shard in 1..=u64::from(SHARD_COUNT_MAX) {
            if left == 0 {
                break;
            }
            subscription.committed.insert(ShardId(shard), Offset(1));
            left -= 1;
        }
    }
    assert_eq!(harness.state.committed_offsets(), COMMITTED_OFFSETS_MAX);
    let last = SubscriptionId(subscriptions as u64);
    let last_committed = harness
        .state
        .subscription_by_id(last)
        .map(|subscription| subscription.committed.len() as u64)
        .expect("exists");
    assert!(last_committed < u64::from(SHARD_COUNT_MAX));
    assert_eq!(
        harness.refused(commit(last.0, last_committed + 1, 5)),
        MetadataError::LimitExceeded {
            what: "committed offsets",
            max: COMMITTED_OFFSETS_MAX as u64
        }
    );
    // Moving progress that is already recorded needs no room.
    harness.ok(commit(last.0, 1, 5));
    // Deleting a subscription makes room.
    harness.ok(delete("s0000"));
    harness.ok(commit(last.0, last_committed + 1, 5));
}

#[test]
fn a_stream_with_subscriptions_is_deleted_only_when_forced() {
    let mut harness = with_orders();
    harness.ok(create_stream("clicks", 1)); // stream 2, shard 3
    harness.ok(create("zeta", "orders"));
    harness.ok(create("alpha", "orders"));
    harness.ok(create("other", "clicks"));
    harness.ok(commit(1, 2, 11));
    assert_eq!(
        harness.refused(delete_stream("orders", false)),
        MetadataError::StreamHasSubscriptions {
            name: name("orders"),
            subscriptions: vec![subscription_name("alpha"), subscription_name("zeta")]
        }
    );
    assert_eq!(
        harness.refused(delete_stream("missing", true)),
        MetadataError::StreamNotFound {
            name: name("missing")
        }
    );
    let Applied::StreamDeleted {
        stream,
        shards,
        subscriptions,
    } = harness.ok(delete_stream("orders", true))
    else {
        panic!("not a deletion");
    };
    assert_eq!(stream.id, StreamId(1));
    assert_eq!(shards.len(), 2);
    let deleted: Vec<(&str, u64, usize)> = subscriptions
        .iter()
        .map(|s| (s.config.name.as_str(), s.id.0, s.committed.len()))
        .collect();
    assert_eq!(deleted, vec![("alpha", 2, 0), ("zeta", 1, 1)]);
    let left: Vec<&str> = harness
        .state
        .subscriptions()
        .map(|subscription| subscription.config.name.as_str())
        .collect();
    assert_eq!(left, vec!["other"]);
    assert_eq!(harness.state.subscription_by_id(SubscriptionId(1)), None);

    // A stream recreated under the name starts with no subscriptions; the ids stay retired.
    harness.ok(create_stream("orders", 1));
    assert_eq!(harness.state.subscriptions_of(&name("orders")), Ok(vec![]));
    let Applied::SubscriptionCreated { subscription } = harness.ok(create("zeta", "orders")) else {
        panic!("not a subscription creation");
    };
    assert_eq!(subscription.id, SubscriptionId(4));

    // Forcing a stream without subscriptions is an ordinary delete.
    harness.ok(delete("zeta"));
    let Applied::StreamDeleted { subscriptions, .. } = harness.ok(delete_stream("orders", true))
    else {
        panic!("not a deletion");
    };
    assert!(subscriptions.is_empty());
}

#[test]
fn subscriptions_of_lists_a_streams_subscriptions_in_name_order() {
    let mut harness = with_orders();
    harness.ok(create_stream("clicks", 1));
    for (subscription, stream) in [("c", "orders"), ("b", "clicks"), ("a", "orders")] {
        harness.ok(create(subscription, stream));
    }
    let names = |stream: &str| -> Vec<String> {
        harness
            .state
            .subscriptions_of(&name(stream))
            .expect("stream exists")
            .iter()
            .map(|subscription| subscription.config.name.to_string())
            .collect()
    };
    assert_eq!(names("orders"), vec!["a", "c"]);
    assert_eq!(names("clicks"), vec!["b"]);
    assert_eq!(
        harness.state.subscriptions_of(&name("missing")),
        Err(MetadataError::StreamNotFound {
            name: name("missing")
        })
    );
}

#[test]
fn the_refusal_of_a_stream_delete_names_a_bounded_list() {
    let error = MetadataError::StreamHasSubscriptions {
        name: name("orders"),
        subscriptions: (1..=7)
            .map(|n| subscription_name(&format!("s{n}")))
            .collect(),
    };
    assert_eq!(
        error.to_string(),
        "stream orders has 7 subscription(s) (s1, s2, s3, s4, s5 and 2 more): delete them \
         first or force the delete"
    );
}
