//! Flatbuffers tables of the subscription messages to typed values, checking every value the
//! protocol constrains (names, non-zero enums, delivery ranges). The envelope has passed the
//! verifier before anything here runs (`super::super::decode`).

use flatbuffers::Vector;

use super::super::{Request, Response};
use super::*;
use crate::protocol::error::ProtocolError;
use crate::protocol::generated as wire;

/// Decodes the subscription request in `root`; `None` when its body is another kind.
pub(crate) fn request(root: &wire::Request<'_>) -> Option<Result<Request, ProtocolError>> {
    let absent = || ProtocolError::invalid("Request.body", "absent for its type");
    let body = root.body_type();
    let decoded = match body {
        wire::RequestBody::CreateSubscription => (|| {
            let create = root.body_as_create_subscription().ok_or_else(absent)?;
            Ok(Request::CreateSubscription(CreateSubscription {
                name: subscription_name("CreateSubscription.name", create.name())?,
                stream: stream_name("CreateSubscription.stream", create.stream())?,
                ack_timeout_ms: create.ack_timeout_ms(),
                max_unacked_records: create.max_unacked_records(),
                start: start("CreateSubscription.start", create.start())?,
            }))
        })(),
        wire::RequestBody::ListSubscriptions => (|| {
            let list = root.body_as_list_subscriptions().ok_or_else(absent)?;
            Ok(Request::ListSubscriptions(ListSubscriptions {
                start_after: list
                    .start_after()
                    .map(|name| subscription_name("ListSubscriptions.start_after", name))
                    .transpose()?,
                limit: list.limit(),
                stream: list
                    .stream()
                    .map(|name| stream_name("ListSubscriptions.stream", name))
                    .transpose()?,
            }))
        })(),
        wire::RequestBody::DescribeSubscription => (|| {
            let describe = root.body_as_describe_subscription().ok_or_else(absent)?;
            Ok(Request::DescribeSubscription(DescribeSubscription {
                name: subscription_name("DescribeSubscription.name", describe.name())?,
            }))
        })(),
        wire::RequestBody::DeleteSubscription => (|| {
            let delete = root.body_as_delete_subscription().ok_or_else(absent)?;
            Ok(Request::DeleteSubscription(DeleteSubscription {
                name: subscription_name("DeleteSubscription.name", delete.name())?,
                force: delete.force(),
            }))
        })(),
        wire::RequestBody::JoinSubscription => (|| {
            let join = root.body_as_join_subscription().ok_or_else(absent)?;
            Ok(Request::JoinSubscription(JoinSubscription {
                subscription: subscription_name(
                    "JoinSubscription.subscription",
                    join.subscription(),
                )?,
                consumer: consumer_name("JoinSubscription.consumer", join.consumer())?,
                previous_member: join.previous_member(),
                session_timeout_ms: join.session_timeout_ms(),
            }))
        })(),
        wire::RequestBody::Heartbeat => root
            .body_as_heartbeat()
            .ok_or_else(absent)
            .map(|_| Request::Heartbeat),
        wire::RequestBody::LeaveSubscription => root
            .body_as_leave_subscription()
            .ok_or_else(absent)
            .map(|_| Request::LeaveSubscription),
        wire::RequestBody::Consume => (|| {
            let consume = root.body_as_consume().ok_or_else(absent)?;
            Ok(Request::Consume(Consume {
                subscription: subscription_name("Consume.subscription", consume.subscription())?,
                shard: ShardId(consume.shard()),
                member: consume.member(),
            }))
        })(),
        wire::RequestBody::Ack => (|| {
            let ack = root.body_as_ack().ok_or_else(absent)?;
            Ok(Request::Ack(Ack {
                sequence: ack.sequence(),
                ranges: ack
                    .ranges()
                    .iter()
                    .map(|range| range.start()..range.end())
                    .collect(),
            }))
        })(),
        _ => return None,
    };
    Some(decoded)
}

/// Decodes the subscription response in `root`; `None` when its body is another kind.
pub(crate) fn response(root: &wire::Response<'_>) -> Option<Result<Response, ProtocolError>> {
    let absent = || ProtocolError::invalid("Response.body", "absent for its type");
    let decoded = match root.body_type() {
        wire::ResponseBody::SubscriptionInfo => root
            .body_as_subscription_info()
            .ok_or_else(absent)
            .and_then(|info| subscription_info(&info))
            .map(Response::SubscriptionInfo),
        wire::ResponseBody::SubscriptionList => (|| {
            let list = root.body_as_subscription_list().ok_or_else(absent)?;
            let subscriptions = list
                .subscriptions()
                .into_iter()
                .flatten()
                .map(|info| subscription_info(&info))
                .collect::<Result<_, _>>()?;
            Ok(Response::SubscriptionList(SubscriptionList {
                subscriptions,
                more: list.more(),
            }))
        })(),
        wire::ResponseBody::DeleteSubscriptionOk => (|| {
            let ok = root.body_as_delete_subscription_ok().ok_or_else(absent)?;
            Ok(Response::DeleteSubscriptionOk(DeleteSubscriptionOk {
                name: subscription_name("DeleteSubscriptionOk.name", ok.name())?,
            }))
        })(),
        wire::ResponseBody::JoinOk => root.body_as_join_ok().ok_or_else(absent).map(|ok| {
            Response::JoinOk(JoinOk {
                member: ok.member(),
                heartbeat_interval_ms: ok.heartbeat_interval_ms(),
                session_timeout_ms: ok.session_timeout_ms(),
            })
        }),
        wire::ResponseBody::Assignment => {
            root.body_as_assignment()
                .ok_or_else(absent)
                .map(|assignment| {
                    let shards = assignment
                        .shards()
                        .into_iter()
                        .flatten()
                        .map(|assigned| AssignedShard {
                            shard: ShardId(assigned.shard()),
                            node: assigned.node(),
                            core: assigned.core(),
                        })
                        .collect();
                    Response::Assignment(Assignment {
                        generation: assignment.generation(),
                        shards,
                    })
                })
        }
        wire::ResponseBody::Delivery => (|| {
            let delivery = root.body_as_delivery().ok_or_else(absent)?;
            let ranges: Vec<Range<u64>> = delivery
                .ranges()
                .iter()
                .map(|range| range.start()..range.end())
                .collect();
            check_delivery_ranges(&ranges)?;
            Ok(Response::Delivery(Delivery {
                shard: ShardId(delivery.shard()),
                ranges,
                batch_count: delivery.batch_count(),
                redelivery: delivery.redelivery(),
            }))
        })(),
        wire::ResponseBody::AckResult => (|| {
            let result = root.body_as_ack_result().ok_or_else(absent)?;
            let refused = result
                .refused()
                .into_iter()
                .flatten()
                .map(|refused| {
                    Ok((
                        refused.start()..refused.end(),
                        ack_refusal(refused.reason())?,
                    ))
                })
                .collect::<Result<_, ProtocolError>>()?;
            Ok(Response::AckResult(AckResult {
                sequence: result.sequence(),
                acked: result.acked(),
                refused,
                committed_offset: Offset(result.committed_offset()),
                refused_unlisted: result.refused_unlisted(),
            }))
        })(),
        wire::ResponseBody::ConsumeEnd => (|| {
            let end = root.body_as_consume_end().ok_or_else(absent)?;
            Ok(Response::ConsumeEnd(ConsumeEnd {
                reason: consume_end_reason(end.reason())?,
            }))
        })(),
        wire::ResponseBody::LeaveOk => root
            .body_as_leave_ok()
            .ok_or_else(absent)
            .map(|_| Response::LeaveOk),
        _ => return None,
    };
    Some(decoded)
}

/// A delivery names ascending, disjoint, non-empty ranges: a client can then count and skip
/// records without sorting, and a range can never make it yield a record twice.
fn check_delivery_ranges(ranges: &[Range<u64>]) -> Result<(), ProtocolError> {
    let mut previous_end = None;
    for range in ranges {
        if range.start >= range.end {
            return Err(ProtocolError::invalid(
                "Delivery.ranges",
                format!("empty or inverted range {}..{}", range.start, range.end),
            ));
        }
        if previous_end.is_some_and(|end| range.start < end) {
            return Err(ProtocolError::invalid(
                "Delivery.ranges",
                format!(
                    "range {}..{} overlaps or precedes the one before",
                    range.start, range.end
                ),
            ));
        }
        previous_end = Some(range.end);
    }
    Ok(())
}

fn subscription_info(info: &wire::SubscriptionInfo<'_>) -> Result<SubscriptionInfo, ProtocolError> {
    let shards = info
        .shards()
        .into_iter()
        .flatten()
        .map(|shard| {
            Ok(SubscriptionShard {
                shard: ShardId(shard.shard()),
                committed_offset: shard.committed_offset().map(Offset),
                end_offset: shard.end_offset().map(Offset),
                unacked_records: shard.unacked_records(),
                consumer: shard
                    .consumer()
                    .map(|name| consumer_name("SubscriptionShard.consumer", name))
                    .transpose()?,
            })
        })
        .collect::<Result<_, ProtocolError>>()?;
    let consumers = info
        .consumers()
        .into_iter()
        .flatten()
        .map(|consumer| {
            Ok(SubscriptionConsumer {
                name: consumer_name("SubscriptionConsumer.name", consumer.name())?,
                member: consumer.member(),
                shards: shard_ids(consumer.shards()),
                joined_ms: consumer.joined_ms(),
            })
        })
        .collect::<Result<_, ProtocolError>>()?;
    Ok(SubscriptionInfo {
        name: subscription_name("SubscriptionInfo.name", info.name())?,
        id: info.id(),
        stream: stream_name("SubscriptionInfo.stream", info.stream())?,
        ack_timeout_ms: info.ack_timeout_ms(),
        max_unacked_records: info.max_unacked_records(),
        start: start("SubscriptionInfo.start", info.start())?,
        created_ms: info.created_ms(),
        shards,
        consumers,
    })
}

fn shard_ids(ids: Option<Vector<'_, u64>>) -> Vec<ShardId> {
    ids.into_iter().flatten().map(ShardId).collect()
}

fn start(
    field: &'static str,
    start: wire::SubscriptionStart<'_>,
) -> Result<SubscriptionStart, ProtocolError> {
    match start.kind() {
        wire::SubscriptionStartKind::Earliest => Ok(SubscriptionStart::Earliest),
        wire::SubscriptionStartKind::Latest => Ok(SubscriptionStart::Latest),
        wire::SubscriptionStartKind::Timestamp => {
            Ok(SubscriptionStart::Timestamp(start.timestamp_ms()))
        }
        other => Err(ProtocolError::invalid(
            field,
            format!("unknown subscription start kind {}", other.0),
        )),
    }
}

fn ack_refusal(reason: wire::AckRefusal) -> Result<AckRefusal, ProtocolError> {
    match reason {
        wire::AckRefusal::NotDelivered => Ok(AckRefusal::NotDelivered),
        wire::AckRefusal::AlreadyAcked => Ok(AckRefusal::AlreadyAcked),
        wire::AckRefusal::NotAssignee => Ok(AckRefusal::NotAssignee),
        wire::AckRefusal::InvalidRange => Ok(AckRefusal::InvalidRange),
        other => Err(ProtocolError::invalid(
            "RefusedRange.reason",
            format!("unknown ack refusal {}", other.0),
        )),
    }
}

fn consume_end_reason(reason: wire::ConsumeEndReason) -> Result<ConsumeEndReason, ProtocolError> {
    match reason {
        wire::ConsumeEndReason::Revoked => Ok(ConsumeEndReason::Revoked),
        wire::ConsumeEndReason::SubscriptionDeleted => Ok(ConsumeEndReason::SubscriptionDeleted),
        wire::ConsumeEndReason::NodeStopping => Ok(ConsumeEndReason::NodeStopping),
        other => Err(ProtocolError::invalid(
            "ConsumeEnd.reason",
            format!("unknown consume end reason {}", other.0),
        )),
    }
}

fn stream_name(field: &'static str, name: &str) -> Result<StreamName, ProtocolError> {
    StreamName::new(name).map_err(|error| ProtocolError::invalid(field, error.to_string()))
}

/// Subscription names follow the stream naming rule.
fn subscription_name(field: &'static str, name: &str) -> Result<String, ProtocolError> {
    match StreamName::new(name) {
        Ok(valid) => Ok(valid.as_str().to_owned()),
        Err(error) => Err(ProtocolError::invalid(
            field,
            error
                .to_string()
                .replace("stream name", "subscription name"),
        )),
    }
}

fn consumer_name(field: &'static str, name: &str) -> Result<String, ProtocolError> {
    check_consumer_name(name)
        .map(|()| name.to_owned())
        .map_err(|reason| ProtocolError::invalid(field, format!("consumer name {reason}")))
}
