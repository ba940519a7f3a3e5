//! [`DispatchSlot`]: one (subscription, shard) on the core owning the shard — its
//! [`ShardDispatch`], the shard's log, and what the consume stream and the progress task need.
//!
//! A slot is created when first needed (a consume stream, an assignment, a create's prepare).
//! Delivery starts at the committed offset the metadata holds; without one, where the
//! subscription's start says (the log's start, its readable end, or the first batch at a
//! timestamp), and that start is committed at the next progress pass.
//!
//! A replicated shard's slot (R ≥ 2) holds its replica's host on this core: deliveries stop at
//! the replica's committed offset ([`ShardHost::visible_end`]), never at the log's durable end,
//! so a record the sequencer stored but no write quorum confirmed is never delivered.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use runnel_core::{Offset, ShardId};
use runnel_net::protocol::{ConsumeEndReason, ErrorCode, ErrorResponse};
use runnel_replicate::consumer::{DispatchConfig, MemberId, ShardDispatch};
use runnel_replicate::metadata::{SubscriptionId, SubscriptionStart};
use runnel_segment::log::ReadBound;
use runnel_segment::runtime::Event;

use crate::core::{visible, Core};
use crate::local::{visible_end, OpenLog};
use crate::replicated::{replica_set, ShardHost};

/// One subscription's delivery of one shard owned by this core.
pub struct DispatchSlot {
    /// The subscription.
    pub subscription: SubscriptionId,
    /// The shard.
    pub shard: ShardId,
    /// The shard's log, held open while the slot lives.
    pub log: OpenLog,
    /// Which records are visible: durable ones for `fsync` streams, written ones for `memory`.
    pub bound: ReadBound,
    /// A replicated shard's host on this core: then only committed records are visible.
    pub replica: Option<Rc<ShardHost>>,
    /// What was delivered, to whom, and what is acked.
    pub dispatch: RefCell<ShardDispatch>,
    /// Notified when the assignee changes, acks arrive or the slot ends.
    pub changed: Event,
    /// The committed offset the metadata holds; `None` before the first commit.
    pub persisted: Cell<Option<Offset>>,
    /// Set once the subscription is deleted: streams end with this reason.
    ended: Cell<Option<ConsumeEndReason>>,
    /// The group epoch and generation of the last assignment applied.
    assign_generation: Cell<(u64, u64)>,
    /// Numbers the consume streams attached: only the newest one serves the assignee.
    stream_token: Cell<u64>,
}

impl DispatchSlot {
    /// The first offset not yet readable: the replica's committed offset for a replicated
    /// shard, else the durable or written end.
    pub fn end(&self) -> Offset {
        match &self.replica {
            Some(host) => host.visible_end(),
            None => visible_end(&self.log, self.bound),
        }
    }

    /// Waits until records past `end` may have become readable (or, for a replicated shard,
    /// its committed offset or role changed, or a second passed).
    pub async fn wait_for_records(&self, end: Offset) {
        match &self.replica {
            Some(host) => host.wait_changed(REPLICA_WAIT).await,
            None => {
                let _ = self.log.wait_for(end, self.bound).await;
            }
        }
    }

    /// Applies the assignment of generation `generation` of the coordinator's group created at
    /// `epoch`, unless a newer one was applied already (of a group created later, or of a
    /// later generation of the same group).
    pub fn assign(&self, member: Option<MemberId>, epoch: u64, generation: u64) {
        if (epoch, generation) < self.assign_generation.get() {
            return;
        }
        self.assign_generation.set((epoch, generation));
        let moved = self.dispatch.borrow_mut().assign(member);
        if moved > 0 {
            tracing::debug!(
                subscription = %self.subscription,
                shard = %self.shard,
                records = moved,
                ?member,
                "unacked records of the previous member are due for redelivery"
            );
        }
        self.changed.notify();
    }

    /// The subscription was deleted.
    pub fn end_deleted(&self) {
        self.ended.set(Some(ConsumeEndReason::SubscriptionDeleted));
        self.changed.notify();
    }

    /// Why streams of this slot must end, if they must.
    pub fn ended(&self) -> Option<ConsumeEndReason> {
        self.ended.get()
    }

    /// Registers a new consume stream; older ones of the slot stop serving.
    pub fn attach(&self) -> u64 {
        let token = self.stream_token.get() + 1;
        self.stream_token.set(token);
        self.changed.notify();
        token
    }

    /// Whether the stream registered as `token` is still the newest.
    pub fn is_current(&self, token: u64) -> bool {
        self.stream_token.get() == token
    }
}

/// How long a replicated slot's wait for records lasts before the consume loop looks again.
const REPLICA_WAIT: std::time::Duration = std::time::Duration::from_millis(1000);

/// The slot of (`subscription`, `shard`), created if needed. Errors are the answers a client
/// gets: unknown subscription or shard, a shard owned elsewhere.
pub async fn get_or_create(
    core: &Rc<Core>,
    subscription: SubscriptionId,
    shard: ShardId,
) -> Result<Rc<DispatchSlot>, ErrorResponse> {
    let key = (subscription, shard);
    if let Some(slot) = core.subscriptions.dispatches.borrow().get(&key) {
        return Ok(Rc::clone(slot));
    }
    let (config, start, committed, bound, replicated) = {
        let state = core.metadata.borrow();
        let sub = state.subscription_by_id(subscription).ok_or_else(|| {
            ErrorResponse::new(
                ErrorCode::UnknownSubscription,
                format!("subscription {subscription} does not exist"),
            )
        })?;
        let stream = state.stream_by_id(sub.stream).ok_or_else(|| {
            ErrorResponse::new(ErrorCode::Internal, "a subscription without its stream")
        })?;
        let shard_record = state
            .shard(shard)
            .filter(|record| record.stream == sub.stream)
            .ok_or_else(|| {
                ErrorResponse::new(
                    ErrorCode::UnknownShard,
                    format!("stream {} has no shard {shard}", stream.config.name),
                )
            })?;
        if shard_record.placement.node != core.node_id()
            || shard_record.placement.core != core.index
        {
            let mut error = ErrorResponse::new(
                ErrorCode::NotOwner,
                format!(
                    "shard {shard} is owned by node {} core {}",
                    shard_record.placement.node.0, shard_record.placement.core
                ),
            );
            error.owner = Some(runnel_net::protocol::ShardOwner {
                node: shard_record.placement.node.0,
                core: shard_record.placement.core,
            });
            return Err(error);
        }
        let shard_count = state.shards().filter(|s| s.stream == sub.stream).count();
        let config = DispatchConfig {
            ack_timeout_ms: sub.config.ack_timeout_ms,
            unacked_records_max: unacked_share(sub.config.max_unacked_records, shard_count),
            delivery_records_max: core.config.subscriptions.delivery_records_max,
        };
        let bound = visible(stream.config.durability);
        (
            config,
            sub.config.start,
            sub.committed.get(&shard).copied(),
            bound,
            replica_set(&state, shard_record).is_some(),
        )
    };
    // A replicated shard is delivered only through its replica's host (its committed offset):
    // until the host is open, the slot waits rather than read the log unbounded.
    let replica = match replicated {
        true => Some(core.replicated.host(shard).ok_or_else(|| {
            ErrorResponse::new(
                ErrorCode::Unavailable,
                format!("shard {shard}: its replica is not open on this core yet"),
            )
        })?),
        false => None,
    };
    let local = core.local_shard(shard).ok_or_else(|| {
        ErrorResponse::new(
            ErrorCode::Unavailable,
            format!("shard {shard} is not open on this core yet"),
        )
    })?;
    let log = core.shard_log(&local).await?;
    let first = match (committed, start) {
        (Some(offset), _) => offset,
        (None, SubscriptionStart::Earliest) => log.start_offset(),
        (None, SubscriptionStart::Latest) => match &replica {
            Some(host) => host.visible_end(),
            None => visible_end(&log, bound),
        },
        (None, SubscriptionStart::Timestamp(ms)) => {
            log.offset_for_timestamp(ms).await.map_err(|error| {
                ErrorResponse::new(
                    ErrorCode::StorageFault,
                    format!("finding timestamp {ms} in shard {shard}: {error}"),
                )
            })?
        }
    };
    let mut dispatch = ShardDispatch::new(config, first);
    let skipped = dispatch.skip_to(log.start_offset());
    if skipped > 0 {
        tracing::warn!(
            %subscription, %shard, records = skipped,
            "records past the committed offset expired before they were acked"
        );
    }
    // Another task may have created the slot while this one awaited the timestamp lookup.
    let mut dispatches = core.subscriptions.dispatches.borrow_mut();
    let slot = dispatches.entry(key).or_insert_with(|| {
        Rc::new(DispatchSlot {
            subscription,
            shard,
            log: Rc::clone(&log),
            bound,
            replica,
            dispatch: RefCell::new(dispatch),
            changed: Event::default(),
            persisted: Cell::new(committed),
            ended: Cell::new(None),
            assign_generation: Cell::new((0, 0)),
            stream_token: Cell::new(0),
        })
    });
    Ok(Rc::clone(slot))
}

/// Each shard's share of a subscription's unacked records: the limit split evenly over the
/// stream's shards, rounded up, so the whole subscription stays within the limit plus at most
/// one record per shard.
fn unacked_share(max_unacked_records: u32, shard_count: usize) -> u32 {
    let shards = u32::try_from(shard_count.max(1)).unwrap_or(u32::MAX);
    max_unacked_records.div_ceil(shards).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unacked_limit_is_split_over_the_shards() {
        assert_eq!(unacked_share(10_000, 1), 10_000);
        assert_eq!(unacked_share(10_000, 4), 2_500);
        assert_eq!(unacked_share(10, 4), 3);
        assert_eq!(unacked_share(1, 8), 1);
        assert_eq!(unacked_share(5, 0), 5);
    }
}
