//! The coordinator of a subscription's consumer group, on the subscription's coordinator
//! (one node and core of the cluster): join streams, heartbeats, expiry, and handing each
//! assignment to the shards' owners (on this node or another) before telling the members.
//!
//! A member is expelled when its join stream ends without `LeaveSubscription` (its connection
//! closed), or when it is not heard from within its session timeout; either way its shards go
//! to the other members at once, and what it had in flight is redelivered to them.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use runnel_core::ShardId;
use runnel_net::protocol::{
    write_response, AssignedShard, Assignment, ErrorCode, ErrorResponse, FrameLimits, FrameReader,
    JoinOk, JoinSubscription, Request, Response, ShardOwner,
};
use runnel_replicate::consumer::{Change, Group, JoinError, MemberId, MemberInfo};
use runnel_replicate::metadata::SubscriptionId;
use runnel_segment::runtime::{first_of, spawn, Event, First};

use super::services::{self, Assign};
use super::{coordinator, subscription_id};
use crate::core::{now_ms, Core};

/// How often each core looks for members past their session timeout (a real deadline: a
/// session ends at most this late).
const EXPIRY_CHECK_MS: u64 = 250;

/// What a join stream's task needs to hear about its member.
#[derive(Default)]
struct MemberHandle {
    /// The member's shards changed, it was expelled, or the subscription was deleted.
    changed: Event,
    /// The member is no longer in the group (expired, or replaced by its own rejoin).
    expelled: Cell<bool>,
}

/// The group of one subscription this core coordinates.
pub struct GroupSlot {
    subscription: SubscriptionId,
    /// When this group was created, in ms since the Unix epoch: owners let the assignments of
    /// a group created later supersede this one's (see [`services::Assignment`]).
    epoch: u64,
    group: RefCell<Group>,
    handles: RefCell<HashMap<MemberId, Rc<MemberHandle>>>,
    deleted: Cell<bool>,
}

impl GroupSlot {
    /// The members, in name order.
    pub fn members(&self) -> Vec<MemberInfo> {
        let mut members: Vec<MemberInfo> = self.group.borrow().members().collect();
        members.sort_by(|a, b| a.name.cmp(&b.name));
        members
    }

    /// The subscription was deleted: every join stream ends.
    pub fn end_deleted(&self) {
        self.deleted.set(true);
        for handle in self.handles.borrow().values() {
            handle.changed.notify();
        }
    }

    /// Marks the handles of members no longer in the group as expelled.
    fn expel_departed(&self) {
        let group = self.group.borrow();
        let mut handles = self.handles.borrow_mut();
        handles.retain(|member, handle| {
            let present = group.member(*member).is_some();
            if !present {
                handle.expelled.set(true);
                handle.changed.notify();
            }
            present
        });
    }
}

/// The group of `subscription`, created over its stream's shards at the first join.
fn group_slot(core: &Core, subscription: SubscriptionId) -> Result<Rc<GroupSlot>, ErrorResponse> {
    if let Some(slot) = core.subscriptions.groups.borrow().get(&subscription) {
        return Ok(Rc::clone(slot));
    }
    let state = core.metadata.borrow();
    let stream = state
        .subscription_by_id(subscription)
        .map(|sub| sub.stream)
        .ok_or_else(|| {
            ErrorResponse::new(
                ErrorCode::UnknownSubscription,
                format!("subscription {subscription} does not exist"),
            )
        })?;
    let shards: Vec<ShardId> = state
        .shards()
        .filter(|shard| shard.stream == stream)
        .map(|shard| shard.id)
        .collect();
    let slot = Rc::new(GroupSlot {
        subscription,
        epoch: now_ms().max(0) as u64,
        group: RefCell::new(Group::new(shards, core.subscriptions.first_member_id)),
        handles: RefCell::new(HashMap::new()),
        deleted: Cell::new(false),
    });
    core.subscriptions
        .groups
        .borrow_mut()
        .insert(subscription, Rc::clone(&slot));
    Ok(slot)
}

/// Hands each changed shard to its new member on the shard's owning node and core (all owners
/// at once), then wakes the join streams of the members concerned (so an `Assignment` reaches
/// a member only after its shards' owners know).
async fn apply(core: &Rc<Core>, slot: &GroupSlot, changes: &[Change]) {
    let generation = slot.group.borrow().generation();
    // The owners are asked at once (one task per changed shard, at most the stream's shards),
    // so an owner on a slow or unreachable node delays the others by nothing.
    let asking: Vec<_> = changes
        .iter()
        .filter_map(|change| {
            let owner = core
                .metadata
                .borrow()
                .shard(change.shard)
                .map(|shard| shard.placement)?;
            let assignment = services::Assignment {
                subscription: slot.subscription,
                shard: change.shard,
                member: change.to,
                epoch: slot.epoch,
                generation,
            };
            let (core, subscription, shard) = (Rc::clone(core), slot.subscription, change.shard);
            Some(spawn(async move {
                if let Err(reason) = core
                    .call_at::<Assign>(owner.node, owner.core, assignment)
                    .await
                {
                    tracing::warn!(%subscription, %shard, node = %owner.node, core = owner.core, %reason, "assignment not applied");
                }
            }))
        })
        .collect();
    for task in asking {
        task.await;
    }
    slot.expel_departed();
    let handles = slot.handles.borrow();
    for member in changes
        .iter()
        .flat_map(|change| [change.from, change.to])
        .flatten()
    {
        if let Some(handle) = handles.get(&member) {
            handle.changed.notify();
        }
    }
}

/// Expels, on every group this core coordinates, the members past their session timeout.
/// Runs until the node stops.
pub async fn expire_members(core: Rc<Core>) {
    while core
        .sleep_unless_stopping(Duration::from_millis(EXPIRY_CHECK_MS))
        .await
    {
        for slot in core.subscriptions.groups() {
            let (expelled, changes) = slot.group.borrow_mut().expire(now_ms().max(0) as u64);
            if expelled.is_empty() {
                continue;
            }
            tracing::info!(subscription = %slot.subscription, members = ?expelled, "members expelled: not heard from within their session timeout");
            apply(&core, &slot, &changes).await;
        }
    }
}

/// Serves a `JoinSubscription` stream for as long as the member stays.
pub async fn serve(
    core: Rc<Core>,
    join: JoinSubscription,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    mut reader: FrameReader,
    limits: FrameLimits,
) {
    let last = match run(&core, &join, &mut send, &mut recv, &mut reader, &limits).await {
        Ok(()) => Some(Response::LeaveOk),
        Err(error) => error.map(Response::Error),
    };
    if let Some(last) = last {
        let _ = write_response(&mut send, &last, &[], &limits).await;
    }
    let _ = send.finish();
}

/// `Ok`: the member left; `Err(Some)`: end with this error; `Err(None)`: the client is gone.
async fn run(
    core: &Rc<Core>,
    join: &JoinSubscription,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    reader: &mut FrameReader,
    limits: &FrameLimits,
) -> Result<(), Option<ErrorResponse>> {
    let (slot, member, session_timeout_ms) = admit(core, join).await.map_err(Some)?;
    let handle = slot
        .handles
        .borrow()
        .get(&member)
        .cloned()
        .unwrap_or_default();
    let ok = Response::JoinOk(JoinOk {
        member: member.0,
        heartbeat_interval_ms: (session_timeout_ms / 3).max(1),
        session_timeout_ms,
    });
    let outcome = async {
        write_response(send, &ok, &[], limits)
            .await
            .map_err(|_| None)?;
        let mut sent: Option<Vec<ShardId>> = None;
        loop {
            if slot.deleted.get() {
                return Err(Some(ErrorResponse::new(
                    ErrorCode::UnknownSubscription,
                    format!("subscription {} was deleted", join.subscription),
                )));
            }
            if handle.expelled.get() {
                return Err(Some(ErrorResponse::new(
                    ErrorCode::NotAssigned,
                    format!(
                        "member {member} was expelled (not heard from within {session_timeout_ms} ms, or replaced): join again"
                    ),
                )));
            }
            if core.shutting_down() {
                let mut error = ErrorResponse::new(ErrorCode::Unavailable, "the node is stopping");
                error.retry_after_ms = Some(1000);
                return Err(Some(error));
            }
            let shards = slot.group.borrow().assignment_of(member);
            if sent.as_ref() != Some(&shards) {
                let assignment = assignment(core, &slot, &shards);
                write_response(send, &Response::Assignment(assignment), &[], limits)
                    .await
                    .map_err(|_| None)?;
                sent = Some(shards);
            }
            let frame = async {
                reader
                    .read_request(recv)
                    .await
                    .map(|frame| frame.map(|(request, _)| request))
            };
            // Every other reason to look again (an assignment, an expulsion, the subscription
            // deleted) notifies `changed`; the node stopping ends the wait from any thread.
            let stopping = core.until_stopping();
            match first_of(frame, handle.changed.listen(), stopping).await {
                First::A(Ok(Some(Request::Heartbeat))) => {
                    slot.group
                        .borrow_mut()
                        .heartbeat(member, now_ms().max(0) as u64);
                }
                First::A(Ok(Some(Request::LeaveSubscription))) => return Ok(()),
                First::A(Ok(Some(other))) => {
                    return Err(Some(ErrorResponse::new(
                        ErrorCode::InvalidRequest,
                        format!("{} is not valid on a join stream", other.kind()),
                    )))
                }
                // The client finished or reset its side, or its connection closed.
                First::A(Ok(None)) | First::A(Err(_)) => return Err(None),
                First::B(()) | First::C(()) => {}
            }
        }
    }
    .await;
    // Whatever ended the stream, the member is gone (unless expelled or replaced already).
    let changes = slot.group.borrow_mut().leave(member);
    slot.handles.borrow_mut().remove(&member);
    if !changes.is_empty() {
        apply(core, &slot, &changes).await;
    }
    tracing::debug!(subscription = %join.subscription, consumer = %join.consumer, %member, "member left");
    outcome
}

/// Admits the joining member (checking the subscription, the core, the name) and applies the
/// rebalance its arrival causes.
async fn admit(
    core: &Rc<Core>,
    join: &JoinSubscription,
) -> Result<(Rc<GroupSlot>, MemberId, u32), ErrorResponse> {
    let id = subscription_id(core, &join.subscription)?;
    let (node, coordinator) = coordinator(core, id);
    if node != core.node_id() || coordinator != core.index {
        let mut error = ErrorResponse::new(
            ErrorCode::NotOwner,
            format!(
                "subscription {} is coordinated by node {node} core {coordinator}",
                join.subscription
            ),
        );
        error.owner = Some(ShardOwner {
            node: node.0,
            core: coordinator,
        });
        return Err(error);
    }
    let settings = &core.config.subscriptions;
    let session_timeout_ms = if join.session_timeout_ms == 0 {
        settings.session_timeout_ms
    } else {
        join.session_timeout_ms.clamp(
            settings.session_timeout_ms_min,
            settings.session_timeout_ms_max,
        )
    };
    let slot = group_slot(core, id)?;
    let joined = slot.group.borrow_mut().join(
        &join.consumer,
        join.previous_member.map(MemberId),
        u64::from(session_timeout_ms),
        now_ms().max(0) as u64,
    );
    let (member, changes) = joined.map_err(|error| {
        let code = match &error {
            JoinError::NameInUse { .. } => ErrorCode::ConsumerNameInUse,
            JoinError::GroupFull { .. } => ErrorCode::Busy,
            JoinError::InvalidName { .. } | JoinError::InvalidSessionTimeout { .. } => {
                ErrorCode::InvalidRequest
            }
            _ => ErrorCode::Internal,
        };
        ErrorResponse::new(
            code,
            format!("cannot join subscription {}: {error}", join.subscription),
        )
    })?;
    slot.handles
        .borrow_mut()
        .insert(member, Rc::new(MemberHandle::default()));
    tracing::debug!(subscription = %join.subscription, consumer = %join.consumer, %member, "member joined");
    apply(core, &slot, &changes).await;
    Ok((slot, member, session_timeout_ms))
}

/// The member's shards with the node and core that own each.
fn assignment(core: &Core, slot: &GroupSlot, shards: &[ShardId]) -> Assignment {
    let state = core.metadata.borrow();
    Assignment {
        generation: slot.group.borrow().generation(),
        shards: shards
            .iter()
            .filter_map(|id| state.shard(*id))
            .map(|shard| AssignedShard {
                shard: shard.id,
                node: shard.placement.node.0,
                core: shard.placement.core,
            })
            .collect(),
    }
}
