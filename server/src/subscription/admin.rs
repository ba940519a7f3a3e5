//! Managing subscriptions: create, list, describe, delete. Any core of any node answers; what
//! only other cores know (the group on the coordinator, live progress on the shards' owners)
//! is asked with [`Core::call_at`] (the services of `services.rs`): over the mesh on this
//! node, through the peer transport on another.

use std::collections::BTreeMap;
use std::rc::Rc;

use runnel_core::ShardId;
use runnel_net::protocol::{
    CreateSubscription, DeleteSubscription, DeleteSubscriptionOk, ErrorCode, ErrorResponse,
    ListSubscriptions, Response, SubscriptionConsumer, SubscriptionInfo, SubscriptionList,
    SubscriptionShard, SubscriptionStart as WireStart,
};
use runnel_replicate::consumer::MemberInfo;
use runnel_replicate::metadata::{
    Command, MetadataState, Subscription, SubscriptionConfig, SubscriptionId, SubscriptionName,
    SubscriptionStart,
};

use super::services::{Members, Prepare, Progress, ShardProgress};
use super::{coordinator, shard_owners};
use crate::convert::SHARDS_PER_ENVELOPE_MAX;
use crate::core::{now_ms, Core};

/// Most subscriptions in one `SubscriptionList` answer.
const SUBSCRIPTIONS_PER_PAGE_MAX: usize = 100;
/// Most consumers described in one answer.
const CONSUMERS_PER_ENVELOPE_MAX: usize = 256;

type Answered = Result<Response, ErrorResponse>;

/// `CreateSubscription`: persists the subscription, then where delivery starts on each of its
/// shards, and answers with it.
pub async fn create(core: &Rc<Core>, create: CreateSubscription) -> Answered {
    let name = subscription_name(&create.name)?;
    let mut config = SubscriptionConfig::new(name.clone(), create.stream.clone());
    if create.ack_timeout_ms > 0 {
        config.ack_timeout_ms = create.ack_timeout_ms;
    }
    if create.max_unacked_records > 0 {
        config.max_unacked_records = create.max_unacked_records;
    }
    config.start = match create.start {
        WireStart::Earliest => SubscriptionStart::Earliest,
        WireStart::Latest => SubscriptionStart::Latest,
        WireStart::Timestamp(ms) => SubscriptionStart::Timestamp(ms),
    };
    core.propose(Command::CreateSubscription {
        config,
        now_ms: now_ms().max(0) as u64,
    })
    .await?;
    let (id, owners) = {
        let state = core.metadata.borrow();
        let subscription = existing(&state, &name)?;
        (subscription.id, shard_owners(&state, subscription.stream))
    };
    for (node, other) in owners {
        if let Err(reason) = core.call_at::<Prepare>(node, other, id).await {
            return Err(ErrorResponse::new(
                ErrorCode::Unavailable,
                format!(
                    "subscription {name} was created, but its start is not persisted yet: {reason}"
                ),
            ));
        }
    }
    let state = core.metadata.borrow();
    Ok(Response::SubscriptionInfo(info(
        existing(&state, &name)?,
        Vec::new(),
        Vec::new(),
    )))
}

/// `ListSubscriptions`: one page in name order, optionally of one stream.
pub fn list(core: &Core, list: ListSubscriptions) -> Answered {
    let state = core.metadata.borrow();
    let limit = (list.limit as usize).clamp(1, SUBSCRIPTIONS_PER_PAGE_MAX);
    let mut subscriptions = state
        .subscriptions()
        .filter(|sub| {
            list.start_after
                .as_deref()
                .is_none_or(|after| sub.config.name.as_str() > after)
        })
        .filter(|sub| list.stream.as_ref().is_none_or(|s| &sub.config.stream == s));
    let page: Vec<SubscriptionInfo> = subscriptions
        .by_ref()
        .take(limit)
        .map(|sub| info(sub, Vec::new(), Vec::new()))
        .collect();
    Ok(Response::SubscriptionList(SubscriptionList {
        subscriptions: page,
        more: subscriptions.next().is_some(),
    }))
}

/// `DescribeSubscription`: the subscription with each shard's progress and the consumers.
pub async fn describe(core: &Rc<Core>, name: &str) -> Answered {
    let name = subscription_name(name)?;
    let (id, owners) = {
        let state = core.metadata.borrow();
        let subscription = existing(&state, &name)?;
        (subscription.id, shard_owners(&state, subscription.stream))
    };
    let members = members(core, id).await?;
    let mut progress: BTreeMap<ShardId, ShardProgress> = BTreeMap::new();
    for (node, other) in owners {
        match core.call_at::<Progress>(node, other, id).await {
            Ok(shards) => progress.extend(shards.into_iter().map(|shard| (shard.shard, shard))),
            // Another node that does not answer leaves its shards' live progress unknown (the
            // committed offsets come from the metadata); this node's cores always answer.
            Err(reason) if node != core.node_id() => {
                tracing::warn!(subscription = %name, %node, core = other, %reason, "live progress unknown");
            }
            Err(reason) => {
                return Err(ErrorResponse::new(
                    ErrorCode::Unavailable,
                    reason.to_string(),
                ))
            }
        }
    }
    let owners: BTreeMap<ShardId, &str> = members
        .iter()
        .flat_map(|member| {
            member
                .shards
                .iter()
                .map(|shard| (*shard, member.name.as_str()))
        })
        .collect();
    let state = core.metadata.borrow();
    let subscription = existing(&state, &name)?;
    let shards = state
        .shards()
        .filter(|shard| shard.stream == subscription.stream)
        .take(SHARDS_PER_ENVELOPE_MAX)
        .map(|shard| {
            let live = progress.get(&shard.id);
            SubscriptionShard {
                shard: shard.id,
                committed_offset: live
                    .and_then(|live| live.committed)
                    .or_else(|| subscription.committed.get(&shard.id).copied()),
                end_offset: live.map(|live| live.end),
                unacked_records: live.map(|live| live.unacked),
                consumer: owners.get(&shard.id).map(|name| (*name).to_owned()),
            }
        })
        .collect();
    let consumers = members
        .iter()
        .take(CONSUMERS_PER_ENVELOPE_MAX)
        .map(|member| SubscriptionConsumer {
            name: member.name.clone(),
            member: member.id.0,
            shards: member.shards.clone(),
            joined_ms: member.joined_ms,
        })
        .collect();
    Ok(Response::SubscriptionInfo(info(
        subscription,
        shards,
        consumers,
    )))
}

/// `DeleteSubscription`: refused while consumers are joined, unless forced.
pub async fn delete(core: &Rc<Core>, delete: DeleteSubscription) -> Answered {
    let name = subscription_name(&delete.name)?;
    let id = existing(&core.metadata.borrow(), &name)?.id;
    if !delete.force {
        let members = members(core, id).await?;
        if !members.is_empty() {
            let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).take(10).collect();
            return Err(ErrorResponse::new(
                ErrorCode::SubscriptionInUse,
                format!(
                    "subscription {name} has {} consumer(s) joined ({}): stop them or delete with force",
                    members.len(),
                    names.join(", ")
                ),
            ));
        }
    }
    core.propose(Command::DeleteSubscription { name: name.clone() })
        .await?;
    Ok(Response::DeleteSubscriptionOk(DeleteSubscriptionOk {
        name: name.to_string(),
    }))
}

/// The members of `subscription`'s group, from its coordinator (on this node or another).
async fn members(core: &Rc<Core>, id: SubscriptionId) -> Result<Vec<MemberInfo>, ErrorResponse> {
    let (node, coordinator) = coordinator(core, id);
    core.call_at::<Members>(node, coordinator, id)
        .await
        .map_err(|reason| ErrorResponse::new(ErrorCode::Unavailable, reason.to_string()))
}

fn subscription_name(name: &str) -> Result<SubscriptionName, ErrorResponse> {
    SubscriptionName::new(name)
        .map_err(|error| ErrorResponse::new(ErrorCode::InvalidRequest, error.to_string()))
}

fn existing<'a>(
    state: &'a MetadataState,
    name: &SubscriptionName,
) -> Result<&'a Subscription, ErrorResponse> {
    state.subscription(name).ok_or_else(|| {
        ErrorResponse::new(
            ErrorCode::UnknownSubscription,
            format!("subscription {name} does not exist"),
        )
    })
}

fn info(
    subscription: &Subscription,
    shards: Vec<SubscriptionShard>,
    consumers: Vec<SubscriptionConsumer>,
) -> SubscriptionInfo {
    SubscriptionInfo {
        name: subscription.config.name.to_string(),
        id: subscription.id.0,
        stream: subscription.config.stream.clone(),
        ack_timeout_ms: subscription.config.ack_timeout_ms,
        max_unacked_records: subscription.config.max_unacked_records,
        start: match subscription.config.start {
            SubscriptionStart::Earliest => WireStart::Earliest,
            SubscriptionStart::Latest => WireStart::Latest,
            SubscriptionStart::Timestamp(ms) => WireStart::Timestamp(ms),
        },
        created_ms: subscription.created_ms,
        shards,
        consumers,
    }
}
