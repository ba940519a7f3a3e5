//! The subscription messages (numbers 32–63) without a network: every request and response
//! round-trips through its envelope, and the values the protocol constrains (names, enums,
//! delivery ranges) are refused with typed errors when wrong.

// Ranges written by hand here are wire values, empty and inverted ones included on purpose.
#![allow(clippy::single_range_in_vec_init, clippy::reversed_empty_ranges)]

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use runnel_core::{Offset, ShardId, StreamName};
use runnel_net::protocol::*;

fn stream_name() -> impl Strategy<Value = StreamName> {
    "[A-Za-z0-9_][A-Za-z0-9_.-]{0,40}"
        .prop_map(|text| StreamName::new(text).expect("valid stream name"))
}

fn subscription_name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_][A-Za-z0-9_.-]{0,40}"
}

/// Consumer names: any printable text, including spaces and non-ASCII.
fn consumer_name() -> impl Strategy<Value = String> {
    "[^\\p{Cc}]{1,30}"
}

fn start() -> impl Strategy<Value = SubscriptionStart> {
    prop_oneof![
        Just(SubscriptionStart::Earliest),
        Just(SubscriptionStart::Latest),
        any::<i64>().prop_map(SubscriptionStart::Timestamp),
    ]
}

fn ranges() -> impl Strategy<Value = Vec<std::ops::Range<u64>>> {
    prop::collection::vec((any::<u64>(), any::<u64>()).prop_map(|(a, b)| a..b), 0..6)
}

/// Ascending, disjoint, non-empty ranges, as a delivery must name them.
fn delivery_ranges() -> impl Strategy<Value = Vec<std::ops::Range<u64>>> {
    prop::collection::vec((1_u64..1000, 1_u64..1000), 1..6).prop_map(|steps| {
        let mut at = 0_u64;
        steps
            .into_iter()
            .map(|(gap, len)| {
                let start = at + gap;
                at = start + len;
                start..at
            })
            .collect()
    })
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (
            subscription_name(),
            stream_name(),
            any::<u64>(),
            any::<u32>(),
            start()
        )
            .prop_map(
                |(name, stream, ack_timeout_ms, max_unacked_records, start)| {
                    Request::CreateSubscription(CreateSubscription {
                        name,
                        stream,
                        ack_timeout_ms,
                        max_unacked_records,
                        start,
                    })
                }
            ),
        (
            prop::option::of(subscription_name()),
            any::<u32>(),
            prop::option::of(stream_name())
        )
            .prop_map(|(start_after, limit, stream)| {
                Request::ListSubscriptions(ListSubscriptions {
                    start_after,
                    limit,
                    stream,
                })
            }),
        subscription_name()
            .prop_map(|name| Request::DescribeSubscription(DescribeSubscription { name })),
        (subscription_name(), any::<bool>()).prop_map(|(name, force)| {
            Request::DeleteSubscription(DeleteSubscription { name, force })
        }),
        (
            subscription_name(),
            consumer_name(),
            any::<Option<u64>>(),
            any::<u32>()
        )
            .prop_map(
                |(subscription, consumer, previous_member, session_timeout_ms)| {
                    Request::JoinSubscription(JoinSubscription {
                        subscription,
                        consumer,
                        previous_member,
                        session_timeout_ms,
                    })
                }
            ),
        Just(Request::Heartbeat),
        Just(Request::LeaveSubscription),
        (subscription_name(), any::<u64>(), any::<u64>()).prop_map(
            |(subscription, shard, member)| Request::Consume(Consume {
                subscription,
                shard: ShardId(shard),
                member,
            })
        ),
        (any::<u64>(), ranges())
            .prop_map(|(sequence, ranges)| Request::Ack(Ack { sequence, ranges })),
    ]
}

fn subscription_info() -> impl Strategy<Value = SubscriptionInfo> {
    let shard = (
        any::<u64>(),
        any::<Option<u64>>(),
        any::<Option<u64>>(),
        any::<Option<u32>>(),
        prop::option::of(consumer_name()),
    )
        .prop_map(
            |(shard, committed, end, unacked_records, consumer)| SubscriptionShard {
                shard: ShardId(shard),
                committed_offset: committed.map(Offset),
                end_offset: end.map(Offset),
                unacked_records,
                consumer,
            },
        );
    let consumer = (
        consumer_name(),
        any::<u64>(),
        prop::collection::vec(any::<u64>(), 0..4),
        any::<u64>(),
    )
        .prop_map(|(name, member, shards, joined_ms)| SubscriptionConsumer {
            name,
            member,
            shards: shards.into_iter().map(ShardId).collect(),
            joined_ms,
        });
    (
        (subscription_name(), any::<u64>(), stream_name()),
        (any::<u64>(), any::<u32>(), start(), any::<u64>()),
        prop::collection::vec(shard, 0..4),
        prop::collection::vec(consumer, 0..3),
    )
        .prop_map(
            |(
                (name, id, stream),
                (ack_timeout_ms, max_unacked_records, start, created_ms),
                shards,
                consumers,
            )| SubscriptionInfo {
                name,
                id,
                stream,
                ack_timeout_ms,
                max_unacked_records,
                start,
                created_ms,
                shards,
                consumers,
            },
        )
}

fn ack_refusal() -> impl Strategy<Value = AckRefusal> {
    prop::sample::select(vec![
        AckRefusal::NotDelivered,
        AckRefusal::AlreadyAcked,
        AckRefusal::NotAssignee,
        AckRefusal::InvalidRange,
    ])
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        subscription_info().prop_map(Response::SubscriptionInfo),
        (
            prop::collection::vec(subscription_info(), 0..3),
            any::<bool>()
        )
            .prop_map(|(subscriptions, more)| Response::SubscriptionList(
                SubscriptionList {
                    subscriptions,
                    more
                }
            )),
        subscription_name()
            .prop_map(|name| Response::DeleteSubscriptionOk(DeleteSubscriptionOk { name })),
        (any::<u64>(), any::<u32>(), any::<u32>()).prop_map(|(member, interval, timeout)| {
            Response::JoinOk(JoinOk {
                member,
                heartbeat_interval_ms: interval,
                session_timeout_ms: timeout,
            })
        }),
        (
            any::<u64>(),
            prop::collection::vec((any::<u64>(), any::<u64>(), any::<u32>()), 0..5)
        )
            .prop_map(|(generation, shards)| Response::Assignment(Assignment {
                generation,
                shards: shards
                    .into_iter()
                    .map(|(shard, node, core)| AssignedShard {
                        shard: ShardId(shard),
                        node,
                        core,
                    })
                    .collect(),
            })),
        (any::<u64>(), delivery_ranges(), any::<u32>(), any::<bool>()).prop_map(
            |(shard, ranges, batch_count, redelivery)| Response::Delivery(Delivery {
                shard: ShardId(shard),
                ranges,
                batch_count,
                redelivery,
            })
        ),
        (
            any::<u64>(),
            any::<u64>(),
            prop::collection::vec((any::<u64>(), any::<u64>(), ack_refusal()), 0..4),
            (any::<u64>(), any::<u64>())
        )
            .prop_map(
                |(sequence, acked, refused, (committed, refused_unlisted))| {
                    Response::AckResult(AckResult {
                        sequence,
                        acked,
                        refused: refused
                            .into_iter()
                            .map(|(start, end, reason)| (start..end, reason))
                            .collect(),
                        committed_offset: Offset(committed),
                        refused_unlisted,
                    })
                }
            ),
        prop::sample::select(vec![
            ConsumeEndReason::Revoked,
            ConsumeEndReason::SubscriptionDeleted,
            ConsumeEndReason::NodeStopping,
        ])
        .prop_map(|reason| Response::ConsumeEnd(ConsumeEnd { reason })),
        Just(Response::LeaveOk),
    ]
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Every subscription request decodes to itself, and is refused where a response is
    /// expected.
    #[test]
    fn subscription_requests_round_trip(request in request()) {
        let envelope = request.encode();
        prop_assert!(envelope.len() <= ENVELOPE_BYTES_MAX as usize);
        prop_assert_eq!(Request::decode(&envelope), Ok(request));
        let wrong_way = Response::decode(&envelope);
        prop_assert!(matches!(wrong_way, Err(ProtocolError::UnexpectedMessage { .. })), "{:?}", wrong_way);
    }

    /// Every subscription response decodes to itself, and is refused where a request is
    /// expected.
    #[test]
    fn subscription_responses_round_trip(response in response()) {
        let envelope = response.encode();
        prop_assert_eq!(Response::decode(&envelope), Ok(response));
        let wrong_way = Request::decode(&envelope);
        prop_assert!(matches!(wrong_way, Err(ProtocolError::UnexpectedMessage { .. })), "{:?}", wrong_way);
    }

    /// Subscription envelopes with bytes overwritten at random are refused or accepted,
    /// never a panic; whatever decodes re-encodes to the same message.
    #[test]
    fn mutated_subscription_envelopes_never_panic(
        request in request(),
        response in response(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        for mut envelope in [request.encode(), response.encode()] {
            for (at, value) in &edits {
                let at = at.index(envelope.len());
                envelope[at] = *value;
            }
            if let Ok(decoded) = Request::decode(&envelope) {
                prop_assert_eq!(Request::decode(&decoded.encode()), Ok(decoded));
            }
            if let Ok(decoded) = Response::decode(&envelope) {
                prop_assert_eq!(Response::decode(&decoded.encode()), Ok(decoded));
            }
        }
    }
}

/// The field a refusal names, or a panic with what decoded instead.
fn refused_field<T: std::fmt::Debug>(decoded: Result<T, ProtocolError>) -> &'static str {
    match decoded {
        Err(ProtocolError::InvalidField { field, .. }) => field,
        other => panic!("expected an invalid field, got {other:?}"),
    }
}

/// Names that break their rule are refused on decode, naming the field; the Rust types cannot
/// stop a sender from putting them on the wire, so the decoder must.
#[test]
fn bad_names_are_refused() {
    let join = |subscription: &str, consumer: &str| {
        Request::JoinSubscription(JoinSubscription {
            subscription: subscription.into(),
            consumer: consumer.into(),
            previous_member: None,
            session_timeout_ms: 0,
        })
        .encode()
    };
    assert!(Request::decode(&join("orders", "worker 1 — eu")).is_ok());
    assert_eq!(
        refused_field(Request::decode(&join("bad name", "w"))),
        "JoinSubscription.subscription"
    );
    assert_eq!(
        refused_field(Request::decode(&join("orders", ""))),
        "JoinSubscription.consumer"
    );
    assert_eq!(
        refused_field(Request::decode(&join("orders", "tab\there"))),
        "JoinSubscription.consumer"
    );
    assert_eq!(
        refused_field(Request::decode(&join("orders", &"x".repeat(256)))),
        "JoinSubscription.consumer"
    );
    let create = Request::CreateSubscription(CreateSubscription {
        name: "-starts-with-a-dash".into(),
        stream: StreamName::new("s").expect("name"),
        ack_timeout_ms: 0,
        max_unacked_records: 0,
        start: SubscriptionStart::Latest,
    });
    match Request::decode(&create.encode()) {
        Err(ProtocolError::InvalidField { field, reason }) => {
            assert_eq!(field, "CreateSubscription.name");
            assert!(reason.contains("subscription name"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A delivery whose ranges are empty, inverted, overlapping or out of order is refused: the
/// client counts and skips records by them, and must never yield a record twice.
#[test]
fn delivery_ranges_must_ascend_and_not_overlap() {
    let delivery = |ranges: Vec<std::ops::Range<u64>>| {
        Response::Delivery(Delivery {
            shard: ShardId(1),
            ranges,
            batch_count: 1,
            redelivery: false,
        })
        .encode()
    };
    assert!(Response::decode(&delivery(vec![0..2, 5..9])).is_ok());
    for bad in [vec![3..3], vec![4..2], vec![0..5, 4..8], vec![5..9, 0..2]] {
        assert_eq!(
            refused_field(Response::decode(&delivery(bad))),
            "Delivery.ranges"
        );
    }
    // A delivery carries batches: without a payload its frame is refused by the reader.
    assert!(Response::Delivery(Delivery {
        shard: ShardId(1),
        ranges: vec![0..1],
        batch_count: 1,
        redelivery: false,
    })
    .carries_payload());
}

/// Acks travel as the client wrote them, empty or inverted ranges included: the server
/// answers those with `InvalidRange` refusals instead of dropping the stream.
#[test]
fn ack_ranges_are_left_to_the_server() {
    let ack = Request::Ack(Ack {
        sequence: 7,
        ranges: vec![5..5, 9..3, 0..10],
    });
    assert_eq!(Request::decode(&ack.encode()), Ok(ack));
}
