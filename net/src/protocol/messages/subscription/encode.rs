//! Subscription messages to flatbuffers tables: one function per union member, called by
//! `messages/encode.rs`, which writes the envelope around it.

use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};

use super::*;
use crate::protocol::generated as wire;

pub(crate) fn create_subscription<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    create: &CreateSubscription,
) -> WIPOffset<UnionWIPOffset> {
    let name = Some(fbb.create_string(&create.name));
    let stream = Some(fbb.create_string(create.stream.as_str()));
    let start = Some(start(fbb, create.start));
    let args = wire::CreateSubscriptionArgs {
        name,
        stream,
        ack_timeout_ms: create.ack_timeout_ms,
        max_unacked_records: create.max_unacked_records,
        start,
    };
    let table = wire::CreateSubscription::create(fbb, &args);
    table.as_union_value()
}

pub(crate) fn list_subscriptions<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    list: &ListSubscriptions,
) -> WIPOffset<UnionWIPOffset> {
    let start_after = list
        .start_after
        .as_ref()
        .map(|name| fbb.create_string(name));
    let stream = list
        .stream
        .as_ref()
        .map(|stream| fbb.create_string(stream.as_str()));
    let args = wire::ListSubscriptionsArgs {
        start_after,
        limit: list.limit,
        stream,
    };
    let table = wire::ListSubscriptions::create(fbb, &args);
    table.as_union_value()
}

pub(crate) fn describe_subscription<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    describe: &DescribeSubscription,
) -> WIPOffset<UnionWIPOffset> {
    let name = Some(fbb.create_string(&describe.name));
    let args = wire::DescribeSubscriptionArgs { name };
    let table = wire::DescribeSubscription::create(fbb, &args);
    table.as_union_value()
}

pub(crate) fn delete_subscription<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    delete: &DeleteSubscription,
) -> WIPOffset<UnionWIPOffset> {
    let name = Some(fbb.create_string(&delete.name));
    let args = wire::DeleteSubscriptionArgs {
        name,
        force: delete.force,
    };
    let table = wire::DeleteSubscription::create(fbb, &args);
    table.as_union_value()
}

pub(crate) fn join_subscription<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    join: &JoinSubscription,
) -> WIPOffset<UnionWIPOffset> {
    let subscription = Some(fbb.create_string(&join.subscription));
    let consumer = Some(fbb.create_string(&join.consumer));
    let args = wire::JoinSubscriptionArgs {
        subscription,
        consumer,
        previous_member: join.previous_member,
        session_timeout_ms: join.session_timeout_ms,
    };
    let table = wire::JoinSubscription::create(fbb, &args);
    table.as_union_value()
}

pub(crate) fn heartbeat(fbb: &mut FlatBufferBuilder<'_>) -> WIPOffset<UnionWIPOffset> {
    let table = wire::Heartbeat::create(fbb, &wire::HeartbeatArgs {});
    table.as_union_value()
}

pub(crate) fn leave_subscription(fbb: &mut FlatBufferBuilder<'_>) -> WIPOffset<UnionWIPOffset> {
    let table = wire::LeaveSubscription::create(fbb, &wire::LeaveSubscriptionArgs {});
    table.as_union_value()
}

pub(crate) fn consume<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    consume: &Consume,
) -> WIPOffset<UnionWIPOffset> {
    let subscription = Some(fbb.create_string(&consume.subscription));
    let args = wire::ConsumeArgs {
        subscription,
        shard: consume.shard.0,
        member: consume.member,
    };
    let table = wire::Consume::create(fbb, &args);
    table.as_union_value()
}

pub(crate) fn ack<'a>(fbb: &mut FlatBufferBuilder<'a>, ack: &Ack) -> WIPOffset<UnionWIPOffset> {
    let ranges = Some(offset_ranges(fbb, &ack.ranges));
    let args = wire::AckArgs {
        sequence: ack.sequence,
        ranges,
    };
    let table = wire::Ack::create(fbb, &args);
    table.as_union_value()
}

pub(crate) fn subscription_info_body<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    info: &SubscriptionInfo,
) -> WIPOffset<UnionWIPOffset> {
    subscription_info(fbb, info).as_union_value()
}

pub(crate) fn subscription_list<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    list: &SubscriptionList,
) -> WIPOffset<UnionWIPOffset> {
    let subscriptions: Vec<_> = list
        .subscriptions
        .iter()
        .map(|info| subscription_info(fbb, info))
        .collect();
    let subscriptions = Some(fbb.create_vector(&subscriptions));
    let args = wire::SubscriptionListArgs {
        subscriptions,
        more: list.more,
    };
    let table = wire::SubscriptionList::create(fbb, &args);
    table.as_union_value()
}

pub(crate) fn delete_subscription_ok<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    ok: &DeleteSubscriptionOk,
) -> WIPOffset<UnionWIPOffset> {
    let name = Some(fbb.create_string(&ok.name));
    let args = wire::DeleteSubscriptionOkArgs { name };
    let table = wire::DeleteSubscriptionOk::create(fbb, &args);
    table.as_union_value()
}

pub(crate) fn join_ok<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    ok: &JoinOk,
) -> WIPOffset<UnionWIPOffset> {
    let args = wire::JoinOkArgs {
        member: ok.member,
        heartbeat_interval_ms: ok.heartbeat_interval_ms,
        session_timeout_ms: ok.session_timeout_ms,
    };
    let table = wire::JoinOk::create(fbb, &args);
    table.as_union_value()
}

pub(crate) fn assignment<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    assignment: &Assignment,
) -> WIPOffset<UnionWIPOffset> {
    let shards: Vec<_> = assignment
        .shards
        .iter()
        .map(|assigned| {
            let args = wire::AssignedShardArgs {
                shard: assigned.shard.0,
                node: assigned.node,
                core: assigned.core,
            };
            wire::AssignedShard::create(fbb, &args)
        })
        .collect();
    let shards = Some(fbb.create_vector(&shards));
    let args = wire::AssignmentArgs {
        generation: assignment.generation,
        shards,
    };
    let table = wire::Assignment::create(fbb, &args);
    table.as_union_value()
}

pub(crate) fn delivery<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    delivery: &Delivery,
) -> WIPOffset<UnionWIPOffset> {
    let ranges = Some(offset_ranges(fbb, &delivery.ranges));
    let args = wire::DeliveryArgs {
        shard: delivery.shard.0,
        ranges,
        batch_count: delivery.batch_count,
        redelivery: delivery.redelivery,
    };
    let table = wire::Delivery::create(fbb, &args);
    table.as_union_value()
}

pub(crate) fn ack_result<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    result: &AckResult,
) -> WIPOffset<UnionWIPOffset> {
    let refused: Vec<wire::RefusedRange> = result
        .refused
        .iter()
        .map(|(range, reason)| {
            wire::RefusedRange::new(range.start, range.end, ack_refusal(*reason))
        })
        .collect();
    let refused = Some(fbb.create_vector(&refused));
    let args = wire::AckResultArgs {
        sequence: result.sequence,
        acked: result.acked,
        refused,
        committed_offset: result.committed_offset.0,
        refused_unlisted: result.refused_unlisted,
    };
    let table = wire::AckResult::create(fbb, &args);
    table.as_union_value()
}

pub(crate) fn consume_end<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    end: &ConsumeEnd,
) -> WIPOffset<UnionWIPOffset> {
    let args = wire::ConsumeEndArgs {
        reason: consume_end_reason(end.reason),
    };
    let table = wire::ConsumeEnd::create(fbb, &args);
    table.as_union_value()
}

pub(crate) fn leave_ok(fbb: &mut FlatBufferBuilder<'_>) -> WIPOffset<UnionWIPOffset> {
    let table = wire::LeaveOk::create(fbb, &wire::LeaveOkArgs {});
    table.as_union_value()
}

fn subscription_info<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    info: &SubscriptionInfo,
) -> WIPOffset<wire::SubscriptionInfo<'a>> {
    let name = Some(fbb.create_string(&info.name));
    let stream = Some(fbb.create_string(info.stream.as_str()));
    let start = Some(start(fbb, info.start));
    let shards: Vec<_> = info
        .shards
        .iter()
        .map(|shard| {
            let consumer = shard.consumer.as_ref().map(|name| fbb.create_string(name));
            let args = wire::SubscriptionShardArgs {
                shard: shard.shard.0,
                committed_offset: shard.committed_offset.map(|offset| offset.0),
                end_offset: shard.end_offset.map(|offset| offset.0),
                unacked_records: shard.unacked_records,
                consumer,
            };
            wire::SubscriptionShard::create(fbb, &args)
        })
        .collect();
    let shards = Some(fbb.create_vector(&shards));
    let consumers: Vec<_> = info
        .consumers
        .iter()
        .map(|consumer| {
            let name = Some(fbb.create_string(&consumer.name));
            let shard_ids: Vec<u64> = consumer.shards.iter().map(|shard| shard.0).collect();
            let shards = Some(fbb.create_vector(&shard_ids));
            let args = wire::SubscriptionConsumerArgs {
                name,
                member: consumer.member,
                shards,
                joined_ms: consumer.joined_ms,
            };
            wire::SubscriptionConsumer::create(fbb, &args)
        })
        .collect();
    let consumers = Some(fbb.create_vector(&consumers));
    let args = wire::SubscriptionInfoArgs {
        name,
        id: info.id,
        stream,
        ack_timeout_ms: info.ack_timeout_ms,
        max_unacked_records: info.max_unacked_records,
        start,
        created_ms: info.created_ms,
        shards,
        consumers,
    };
    wire::SubscriptionInfo::create(fbb, &args)
}

fn start<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    start: SubscriptionStart,
) -> WIPOffset<wire::SubscriptionStart<'a>> {
    let (kind, timestamp_ms) = match start {
        SubscriptionStart::Earliest => (wire::SubscriptionStartKind::Earliest, 0),
        SubscriptionStart::Latest => (wire::SubscriptionStartKind::Latest, 0),
        SubscriptionStart::Timestamp(ms) => (wire::SubscriptionStartKind::Timestamp, ms),
    };
    let args = wire::SubscriptionStartArgs { kind, timestamp_ms };
    wire::SubscriptionStart::create(fbb, &args)
}

fn offset_ranges<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    ranges: &[Range<u64>],
) -> WIPOffset<flatbuffers::Vector<'a, wire::OffsetRange>> {
    let ranges: Vec<wire::OffsetRange> = ranges
        .iter()
        .map(|range| wire::OffsetRange::new(range.start, range.end))
        .collect();
    fbb.create_vector(&ranges)
}

fn ack_refusal(reason: AckRefusal) -> wire::AckRefusal {
    match reason {
        AckRefusal::NotDelivered => wire::AckRefusal::NotDelivered,
        AckRefusal::AlreadyAcked => wire::AckRefusal::AlreadyAcked,
        AckRefusal::NotAssignee => wire::AckRefusal::NotAssignee,
        AckRefusal::InvalidRange => wire::AckRefusal::InvalidRange,
    }
}

fn consume_end_reason(reason: ConsumeEndReason) -> wire::ConsumeEndReason {
    match reason {
        ConsumeEndReason::Revoked => wire::ConsumeEndReason::Revoked,
        ConsumeEndReason::SubscriptionDeleted => wire::ConsumeEndReason::SubscriptionDeleted,
        ConsumeEndReason::NodeStopping => wire::ConsumeEndReason::NodeStopping,
    }
}
