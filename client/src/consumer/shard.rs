//! The consume stream of one assigned shard, in a task of its own: sends `Consume` to the
//! shard's core, hands each `Delivery` to the application through the consumer's bounded
//! channel, writes the `Ack` frames the worker gives it, and reports every `AckResult` and
//! how the stream ended to the worker.
//!
//! Back-pressure: while the channel to the application is full the task stops reading (QUIC
//! flow control, then `max_unacked_records`, hold the server back) but keeps writing acks,
//! so that acking the deliveries already taken frees the server's window.
//!
//! Ended by the worker by dropping its [`ShardTask`] (which aborts the task: the streams'
//! drop stops the receiving side with `Done` and finishes the sending side).

use std::sync::Arc;

use runnel_core::ShardId;
use runnel_net::protocol::{
    write_request, Ack, AckResult, Consume, ConsumeEndReason, FrameReader, Request, Response,
    ShardOwner,
};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::ack_frames::{AckFrame, ACKS_IN_FLIGHT_MAX};
use super::delivery::Delivery;
use super::shared::{Counters, Shared};
use crate::client::ClientInner;
use crate::error::ClientError;

/// What a shard's task tells the worker.
#[derive(Debug)]
pub(super) enum ShardEvent {
    /// The server accepted the `Consume` (its first delivery or ack answer arrived).
    Consuming,
    /// The answer to an ack.
    AckResult(AckResult),
    /// The stream ended with `ConsumeEnd` (the task ended).
    Ended(ConsumeEndReason),
    /// The server refused the `Consume` with an error frame (the task ended).
    Refused(ClientError),
    /// The stream could not be opened or failed (the task ended).
    Failed(ClientError),
}

/// A [`ShardEvent`] with the task it comes from (events of a task already replaced are
/// ignored).
#[derive(Debug)]
pub(super) struct TaskEvent {
    pub task: u64,
    pub shard: ShardId,
    pub event: ShardEvent,
}

/// What a shard's task needs.
pub(super) struct ShardContext {
    pub inner: Arc<ClientInner>,
    pub shared: Arc<Shared>,
    pub subscription: String,
    pub shard: ShardId,
    pub member: u64,
    /// The node and core that own the shard.
    pub owner: ShardOwner,
    pub deliveries: mpsc::Sender<Result<Delivery, ClientError>>,
    pub events: mpsc::Sender<TaskEvent>,
    /// This task's id, unique within the consumer.
    pub task: u64,
}

/// The worker's handle on a shard's task; dropping it ends the task.
pub(super) struct ShardTask {
    /// Unique within the consumer.
    pub id: u64,
    /// Where the worker puts `Ack` frames; never more than [`ACKS_IN_FLIGHT_MAX`].
    pub acks: mpsc::Sender<AckFrame>,
    abort: AbortHandle,
}

impl Drop for ShardTask {
    fn drop(&mut self) {
        self.abort.abort();
    }
}

/// Starts the task consuming `context.shard` as `context.member`.
pub(super) fn spawn(context: ShardContext) -> ShardTask {
    let id = context.task;
    let (acks, acks_received) = mpsc::channel(ACKS_IN_FLIGHT_MAX);
    let handle = tokio::spawn(async move {
        let mut acks_received = acks_received;
        if let Some(event) = consume(&context, &mut acks_received).await {
            let _ = context.event(event).await;
        }
    });
    ShardTask {
        id,
        acks,
        abort: handle.abort_handle(),
    }
}

/// Runs the consume stream; returns how it ended (`None`: the worker or the application
/// went away, nobody to tell).
async fn consume(
    context: &ShardContext,
    acks: &mut mpsc::Receiver<AckFrame>,
) -> Option<ShardEvent> {
    let node = &context.inner.nodes;
    let request = Request::Consume(Consume {
        subscription: context.subscription.clone(),
        shard: context.shard,
        member: context.member,
    });
    let deadline = Instant::now() + node.request_timeout();
    let (mut send, mut recv) = match node
        .open_stream(context.owner, &request, &[], Some(deadline))
        .await
    {
        Ok(streams) => streams,
        Err(failure) => return Some(ShardEvent::Failed(failure.error)),
    };
    let mut frames = FrameReader::new(node.frame_limits());
    let mut consuming = false;
    loop {
        // Reading a frame is cancel-safe (the reader keeps partial frames), so an ack to
        // write may interrupt it.
        let frame = tokio::select! {
            biased;
            ack = acks.recv() => {
                let ack = ack?;
                if let Err(error) = write_ack(context, &mut send, ack).await {
                    return Some(ShardEvent::Failed(error));
                }
                continue;
            }
            frame = frames.read_response(&mut recv) => frame,
        };
        let response = match frame {
            Ok(Some((Response::Delivery(header), payload))) => {
                if header.shard != context.shard {
                    return Some(ShardEvent::Failed(ClientError::UnexpectedResponse {
                        request: "Consume",
                        response: format!(
                            "a Delivery of shard {} on the stream of shard {}",
                            header.shard, context.shard
                        ),
                    }));
                }
                // The payload is taken, not copied: the reader allocates the next one.
                let bytes = std::mem::take(payload);
                let delivery = Delivery::new(
                    header.shard,
                    bytes,
                    header.batch_count,
                    header.ranges,
                    header.redelivery,
                );
                if let Ok(delivery) = &delivery {
                    count(&context.shared, delivery);
                }
                if !consuming {
                    consuming = true;
                    context.event(ShardEvent::Consuming).await?;
                }
                // A delivery whose batches fail their header checks is handed over as an
                // error; its records are delivered again after the ack timeout.
                hand_over(context, &mut send, acks, delivery).await?;
                continue;
            }
            Ok(Some((response, _))) => response,
            Ok(None) => {
                return Some(ShardEvent::Failed(ClientError::UnexpectedResponse {
                    request: "Consume",
                    response: "the stream ended without a ConsumeEnd".into(),
                }))
            }
            Err(error) => return Some(ShardEvent::Failed(ClientError::protocol("Consume", error))),
        };
        match response {
            Response::AckResult(result) => {
                if !consuming {
                    consuming = true;
                    context.event(ShardEvent::Consuming).await?;
                }
                context.event(ShardEvent::AckResult(result)).await?;
            }
            Response::ConsumeEnd(end) => return Some(ShardEvent::Ended(end.reason)),
            Response::Error(error) => {
                return Some(ShardEvent::Refused(ClientError::server("Consume", error)))
            }
            other => {
                return Some(ShardEvent::Failed(ClientError::UnexpectedResponse {
                    request: "Consume",
                    response: other.kind().into(),
                }))
            }
        }
    }
}

impl ShardContext {
    /// Tells the worker; `None` when it is gone.
    async fn event(&self, event: ShardEvent) -> Option<()> {
        self.events
            .send(TaskEvent {
                task: self.task,
                shard: self.shard,
                event,
            })
            .await
            .ok()
    }
}

/// Puts `delivery` in the application's channel, writing acks while it is full; `None` when
/// the consumer or the worker is gone.
async fn hand_over(
    context: &ShardContext,
    send: &mut quinn::SendStream,
    acks: &mut mpsc::Receiver<AckFrame>,
    delivery: Result<Delivery, ClientError>,
) -> Option<()> {
    loop {
        tokio::select! {
            biased;
            ack = acks.recv() => {
                let ack = ack?;
                if let Err(error) = write_ack(context, send, ack).await {
                    // The stream is broken: say so now rather than after the delivery
                    // (whose records will come again).
                    context.event(ShardEvent::Failed(error)).await?;
                    return None;
                }
            }
            permit = context.deliveries.reserve() => {
                permit.ok()?.send(delivery);
                return Some(());
            }
        }
    }
}

/// Counts a delivery received.
fn count(shared: &Shared, delivery: &Delivery) {
    let counters = &shared.counters;
    let records = delivery.len() as u64;
    Counters::add(&counters.deliveries, 1);
    Counters::add(&counters.records, records);
    if delivery.is_redelivery() {
        Counters::add(&counters.redelivered_records, records);
    }
}

/// Writes one `Ack` frame, within the request timeout.
async fn write_ack(
    context: &ShardContext,
    send: &mut quinn::SendStream,
    ack: AckFrame,
) -> Result<(), ClientError> {
    let node = &context.inner.nodes;
    let request = Request::Ack(Ack {
        sequence: ack.sequence,
        ranges: ack.ranges,
    });
    let timeout = node.request_timeout();
    let limits = node.frame_limits();
    match tokio::time::timeout(timeout, write_request(send, &request, &[], &limits)).await {
        Ok(Ok(())) => {
            Counters::add(&context.shared.counters.acks_sent, 1);
            Ok(())
        }
        Ok(Err(error)) => Err(ClientError::protocol("Ack", error)),
        Err(_) => Err(ClientError::Timeout {
            request: "Ack",
            timeout_ms: timeout.as_millis() as u64,
        }),
    }
}
