//! A consume stream: one member receiving one shard of a subscription, on the core owning the
//! shard (`docs/format/protocol.md`, "Subscriptions").
//!
//! One task serves the stream: it delivers what [`ShardDispatch::plan`] says — redeliveries
//! first, then new records within the unacked budget — as `Delivery` frames carrying the log's
//! batch bytes unchanged, and between deliveries reads the member's `Ack` frames and answers
//! each with an `AckResult`. It waits for whichever comes first: an ack, new records (only
//! while the budget has room), an ack deadline, a change of assignment, or the node stopping.
//!
//! A fresh delivery reads and sends only whole batches that end within the budget; when the
//! budget holds just the first records of the next batch, the task waits for acks to make room
//! for all of it (unless nothing is unacked, the batch is at the readable end, or it is larger
//! than any delivery may be: then its first records go), so no batch travels twice.
//!
//! [`ShardDispatch::plan`]: runnel_replicate::consumer::ShardDispatch::plan

use std::rc::Rc;
use std::time::Duration;

use runnel_net::protocol::{
    write_response, Ack, AckRefusal as WireRefusal, AckResult, Consume, ConsumeEnd,
    ConsumeEndReason, Delivery, ErrorCode, ErrorResponse, FrameLimits, FrameReader, Request,
    Response,
};
use runnel_replicate::consumer::{AckRefusal, MemberId};
use runnel_segment::log::ReadBound;
use runnel_segment::LogError;

use super::slot::{get_or_create, DispatchSlot};
use super::subscription_id;
use crate::core::{now_ms, Core};
use runnel_segment::runtime::{first_of, sleep, First};

/// Serves a `Consume` stream until the shard is revoked, the member goes away, the
/// subscription is deleted or the node stops.
pub async fn serve(
    core: Rc<Core>,
    consume: Consume,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    mut reader: FrameReader,
    limits: FrameLimits,
) {
    let slot = match open(&core, &consume).await {
        Ok(slot) => slot,
        Err(error) => {
            let _ = write_response(&mut send, &Response::Error(error), &[], &limits).await;
            let _ = send.finish();
            return;
        }
    };
    let member = MemberId(consume.member);
    let token = slot.attach();
    tracing::debug!(subscription = %slot.subscription, shard = %slot.shard, %member, "consume stream opened");
    let last = match serve_loop(
        &core,
        &slot,
        member,
        token,
        &mut send,
        &mut recv,
        &mut reader,
        &limits,
    )
    .await
    {
        Ok(reason) => Some(Response::ConsumeEnd(ConsumeEnd { reason })),
        Err(Some(error)) => Some(Response::Error(error)),
        Err(None) => None,
    };
    if let Some(last) = last {
        let _ = write_response(&mut send, &last, &[], &limits).await;
        let _ = send.finish();
    }
    tracing::debug!(subscription = %slot.subscription, shard = %slot.shard, %member, "consume stream closed");
}

/// The slot of the stream's (subscription, shard), after checking the member holds the shard.
async fn open(core: &Rc<Core>, consume: &Consume) -> Result<Rc<DispatchSlot>, ErrorResponse> {
    let id = subscription_id(core, &consume.subscription)?;
    let slot = get_or_create(core, id, consume.shard).await?;
    let assignee = slot.dispatch.borrow().assignee();
    if assignee != Some(MemberId(consume.member)) {
        return Err(ErrorResponse::new(
            ErrorCode::NotAssigned,
            format!(
                "shard {} of subscription {} is not assigned to member {}",
                consume.shard, consume.subscription, consume.member
            ),
        ));
    }
    Ok(slot)
}

/// What woke the loop while it waited.
enum Wake {
    /// A frame from the member (or the end of its side of the stream).
    Frame(Result<Option<Request>, String>),
    /// New records, an ack deadline, a change of the slot, or time to look at the node again.
    Look,
}

/// `Ok(reason)`: end with `ConsumeEnd`; `Err(Some)`: end with an error; `Err(None)`: the
/// member went away, nothing more to send.
#[allow(clippy::too_many_arguments)]
async fn serve_loop(
    core: &Rc<Core>,
    slot: &Rc<DispatchSlot>,
    member: MemberId,
    token: u64,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    reader: &mut FrameReader,
    limits: &FrameLimits,
) -> Result<ConsumeEndReason, Option<ErrorResponse>> {
    let log = &slot.log;
    // The configuration keeps deliveries within a frame; the clamp keeps it so even if not.
    let bytes_max = core
        .config
        .subscriptions
        .delivery_bytes_max
        .min(u64::from(limits.payload_bytes_max)) as usize;
    // Records a fresh delivery needs to send a whole batch: learnt when the budget fell short
    // of one, and kept (a stream's batches are alike), so the loop waits for acks instead of
    // reading a batch it cannot send yet.
    let mut whole_batch_records = 0u64;
    loop {
        if let Some(reason) = slot.ended() {
            return Ok(reason);
        }
        if core.shutting_down() {
            return Ok(ConsumeEndReason::NodeStopping);
        }
        if !slot.is_current(token) || slot.dispatch.borrow().assignee() != Some(member) {
            return Ok(ConsumeEndReason::Revoked);
        }
        let now = now_ms().max(0) as u64;
        slot.dispatch.borrow_mut().expire(now);
        let end = slot.end();
        let planned = slot.dispatch.borrow().plan(end);
        // A fresh delivery the budget cuts short of the next whole batch waits for acks.
        let planned = planned.filter(|planned| {
            planned.redelivery
                || planned.to >= end
                || planned.to.0 - planned.from.0 >= whole_batch_records
                || slot.dispatch.borrow().unacked() == 0
        });
        if let Some(planned) = planned {
            // Only the batches the plan may deliver are read (and sent): a delivery carries
            // whole batches, and bytes past its records would travel for nothing.
            let chunk = match log
                .read(
                    planned.from,
                    bytes_max,
                    ReadBound::Below(planned.to.min(end)),
                )
                .await
            {
                Ok(chunk) => chunk,
                Err(LogError::Trimmed { start, .. }) => {
                    let skipped = slot.dispatch.borrow_mut().skip_to(start);
                    tracing::warn!(
                        subscription = %slot.subscription, shard = %slot.shard, records = skipped,
                        "records expired before they were acked; delivery continues at {start}"
                    );
                    continue;
                }
                Err(LogError::LostRange { from, to, .. }) => {
                    let skipped = slot.dispatch.borrow_mut().skip_to(to);
                    tracing::warn!(
                        subscription = %slot.subscription, shard = %slot.shard, records = skipped,
                        "offsets {from} to {to} (exclusive) were lost in a crash before they \
                         were durable (memory durability); delivery continues at {to}"
                    );
                    continue;
                }
                Err(error) => return Err(Some(crate::handler::log_error(&error))),
            };
            let mut chunk = chunk;
            let mut wait_for_acks = false;
            if !planned.redelivery && !chunk.keep_batches_ending_by(planned.to) {
                // The budget left holds only the first records of the next batch. While
                // records are unacked, acks will make room for all of it: wait for them
                // rather than send the batch now for a few of its records and again later.
                // A batch larger than any delivery may be goes in pieces, as before.
                let whole = chunk.next_offset().0.saturating_sub(planned.from.0);
                let (unacked, config) = {
                    let dispatch = slot.dispatch.borrow();
                    (dispatch.unacked(), dispatch.config())
                };
                let most = config.unacked_records_max.min(config.delivery_records_max);
                // Only the budget can be waited for: at the readable end, the batch goes.
                if unacked > 0 && whole <= u64::from(most) && planned.to < end {
                    whole_batch_records = whole;
                    wait_for_acks = true;
                }
            }
            let delivery = if wait_for_acks {
                None
            } else {
                slot.dispatch.borrow_mut().deliver(
                    member,
                    planned,
                    chunk.next_offset(),
                    end,
                    now_ms().max(0) as u64,
                )
            };
            if let Some(delivery) = delivery {
                let frame = Response::Delivery(Delivery {
                    shard: slot.shard,
                    ranges: delivery.ranges,
                    batch_count: chunk.batch_count() as u32,
                    redelivery: delivery.redelivery,
                });
                if write_response(send, &frame, &[chunk.as_bytes()], limits)
                    .await
                    .is_err()
                {
                    return Err(None);
                }
                continue;
            }
            // The plan went stale while the log was read (acks arrived, the shard moved), or
            // waits for acks to make room for a whole batch: wait for the next event rather
            // than plan again at once.
        }
        match wait(core, slot, member, end, reader, recv).await {
            Wake::Look => {}
            Wake::Frame(Ok(Some(Request::Ack(ack)))) => {
                let result = apply_ack(slot, member, &ack);
                if write_response(send, &Response::AckResult(result), &[], limits)
                    .await
                    .is_err()
                {
                    return Err(None);
                }
            }
            Wake::Frame(Ok(Some(other))) => {
                return Err(Some(ErrorResponse::new(
                    ErrorCode::InvalidRequest,
                    format!("{} is not valid on a consume stream", other.kind()),
                )));
            }
            // The member finished its side or reset the stream: it is gone.
            Wake::Frame(Ok(None)) | Wake::Frame(Err(_)) => return Err(None),
        }
    }
}

/// Waits for the first of: a frame from the member, new records (only while the budget has
/// room, or the loop would spin on records it may not send), the next ack deadline, a change
/// of the slot (a new assignee or stream, the subscription deleted), or the node stopping.
async fn wait(
    core: &Core,
    slot: &DispatchSlot,
    member: MemberId,
    end: runnel_core::Offset,
    reader: &mut FrameReader,
    recv: &mut quinn::RecvStream,
) -> Wake {
    let (next, has_room, deadline) = {
        let dispatch = slot.dispatch.borrow();
        (
            dispatch.next_offset(),
            dispatch.assignee() == Some(member)
                && dispatch.unacked() < dispatch.config().unacked_records_max,
            dispatch.next_deadline(),
        )
    };
    let now = now_ms().max(0) as u64;
    let frame = async {
        reader
            .read_request(recv)
            .await
            .map(|frame| frame.map(|(request, _)| request))
            .map_err(|error| error.to_string())
    };
    let changed = slot.changed.listen();
    let records = async {
        // New records past `end` (the one the loop just saw), or nothing to wait for.
        if has_room && next >= end {
            slot.wait_for_records(end).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let ack_deadline = async {
        match deadline {
            Some(deadline) => {
                sleep(Duration::from_millis(deadline.saturating_sub(now).max(1))).await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    let others = async {
        let _ = first_of(records, changed, ack_deadline).await;
    };
    match first_of(frame, others, core.until_stopping()).await {
        First::A(frame) => Wake::Frame(frame),
        First::B(()) | First::C(()) => Wake::Look,
    }
}

/// Applies an ack and builds its answer.
fn apply_ack(slot: &DispatchSlot, member: MemberId, ack: &Ack) -> AckResult {
    let mut dispatch = slot.dispatch.borrow_mut();
    let outcome = dispatch.ack(member, &ack.ranges);
    AckResult {
        sequence: ack.sequence,
        acked: outcome.acked,
        refused: outcome
            .refused
            .into_iter()
            .map(|(range, reason)| (range, wire_refusal(reason)))
            .collect(),
        committed_offset: dispatch.committed(),
        refused_unlisted: outcome.refused_unlisted,
    }
}

fn wire_refusal(reason: AckRefusal) -> WireRefusal {
    match reason {
        AckRefusal::InvalidRange => WireRefusal::InvalidRange,
        AckRefusal::NotAssignee => WireRefusal::NotAssignee,
        AckRefusal::NotDelivered => WireRefusal::NotDelivered,
        AckRefusal::AlreadyAcked => WireRefusal::AlreadyAcked,
        // A reason this build's protocol cannot name yet: the closest it can.
        _ => WireRefusal::NotDelivered,
    }
}
