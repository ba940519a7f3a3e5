//! [`Consumer`]: a member of a subscription's consumer group. The server assigns it whole
//! shards (so per-key order holds), delivers their records at least once, and redelivers what
//! is not acked within the subscription's ack timeout.
//!
//! ```no_run
//! use runnel_client::{Client, ConsumerOptions};
//!
//! # async fn demo(client: Client) -> Result<(), runnel_client::ClientError> {
//! let mut consumer = client.consumer("billing", ConsumerOptions::new("worker-1")).await?;
//! while let Some(delivery) = consumer.next().await {
//!     let delivery = delivery?;
//!     for item in delivery.records() {
//!         let (id, record) = item?;
//!         println!("{id}: {} bytes", record.value().len());
//!     }
//!     consumer.ack_delivery(&delivery)?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Map: the handle and its statistics here; [`ConsumerOptions`] (`options.rs`); [`Delivery`]
//! (`delivery.rs`); ack queues and answers (`acks.rs`); what the handles share with the worker
//! (`shared.rs`); joining (`join.rs`); the worker that keeps the membership and rejoins
//! (`worker.rs`, `session.rs`) and turns queued acks into frames (`ack_frames.rs`); one task
//! per assigned shard's consume stream (`shard.rs`).
//!
//! Bounds: deliveries waiting for [`Consumer::next`] ≤ `deliveries_buffered_max`; acks queued
//! per shard are what was delivered and acked since the last send (the server delivers at
//! most a shard's share of `max_unacked_records` unacked), within `ACK_RANGES_QUEUED_MAX`
//! ranges; deliveries kept aside while [`Consumer::flush_acks`] waits ≤ `STASHED_MAX`.

mod ack_frames;
mod acks;
mod delivery;
mod join;
mod options;
mod session;
mod shard;
mod shared;
mod worker;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use runnel_core::{RecordId, ShardId};
use runnel_net::protocol::JoinSubscription;
use tokio::sync::{mpsc, oneshot};

pub use self::acks::{AckSummary, RefusedAck};
pub use self::delivery::Delivery;
pub use self::options::ConsumerOptions;

use self::ack_frames::AckBatching;
use self::shared::Shared;
use self::worker::{Command, Worker, WorkerParts};
use crate::client::Client;
use crate::error::ClientError;
use crate::subscription_admin::subscription_name;

/// Most deliveries [`Consumer::flush_acks`] keeps aside for [`Consumer::next`] while it
/// waits. It must take them: an ack's answer travels on the shard's stream behind the
/// deliveries sent before it, and a shard's task stops reading while the channel is full.
/// The server bounds what it sends meanwhile (a shard's share of `max_unacked_records`); past this
/// bound the flush stops taking deliveries and may time out.
const STASHED_MAX: usize = 4_096;

/// Counters of a [`Consumer`] since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerStats {
    /// Deliveries received.
    pub deliveries: u64,
    /// Records in them.
    pub records: u64,
    /// Records in deliveries marked as redeliveries.
    pub redelivered_records: u64,
    /// `Ack` frames sent.
    pub acks_sent: u64,
    /// Records the server newly acked.
    pub records_acked: u64,
    /// Records whose ack was refused, by the server or by the consumer (for a shard it does
    /// not hold); `AlreadyAcked` answers are not counted.
    pub records_refused: u64,
    /// Times the consumer joined its group again after losing its membership.
    pub rejoins: u64,
}

/// A member of a subscription's consumer group. Created by [`Client::consumer`].
///
/// Records arrive as [`Delivery`]s from [`next`](Consumer::next) (or the
/// [`futures_core::Stream`] implementation); ack them with [`ack`](Consumer::ack),
/// [`ack_delivery`](Consumer::ack_delivery) or an [`Acker`] from another task. Acks are
/// batched and sent in the background; [`flush_acks`](Consumer::flush_acks) sends them now
/// and reports the server's answers. [`leave`](Consumer::leave) leaves the group cleanly;
/// dropping the consumer leaves too, at best and without sending queued acks.
///
/// The consumer survives connection failures and server restarts: it rejoins and resumes,
/// and the server redelivers what was not acked. Acks of records received before a rejoin
/// are still sent and accepted.
pub struct Consumer {
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
    deliveries: Mutex<mpsc::Receiver<Result<Delivery, ClientError>>>,
    /// Deliveries taken by a flush while it waited, handed out first.
    stash: Mutex<VecDeque<Result<Delivery, ClientError>>>,
    /// One flush (or leave) at a time.
    flushing: tokio::sync::Mutex<()>,
    /// `next` returned `None`.
    ended: bool,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("subscription", &self.shared.subscription)
            .field("name", &self.shared.name)
            .field("member", &self.shared.member())
            .finish_non_exhaustive()
    }
}

/// Acks records of a [`Consumer`] from anywhere (another task or thread): cheap to clone.
/// Created by [`Consumer::acker`]; once the consumer ended, acks fail with
/// [`ClientError::Closed`].
#[derive(Clone)]
pub struct Acker {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Acker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acker")
            .field("subscription", &self.shared.subscription)
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl Acker {
    /// Queues the ack of one record, as [`Consumer::ack`].
    pub fn ack(&self, id: RecordId) -> Result<(), ClientError> {
        ack_one(&self.shared, id)
    }

    /// Queues the acks of every record of `delivery`, as [`Consumer::ack_delivery`].
    pub fn ack_delivery(&self, delivery: &Delivery) -> Result<(), ClientError> {
        self.shared.ack(delivery.shard(), delivery.ranges())
    }
}

fn ack_one(shared: &Shared, id: RecordId) -> Result<(), ClientError> {
    let offset = id.offset.0;
    let end = offset
        .checked_add(1)
        .ok_or_else(|| ClientError::InvalidArgument {
            what: "record id",
            reason: format!("{id} is past the last offset"),
        })?;
    shared.ack(id.shard, std::slice::from_ref(&(offset..end)))
}

impl Client {
    /// Joins `subscription`'s consumer group as `options.name`; returns once the server
    /// accepted the member (`JoinOk`), so an unknown subscription, a name in use or invalid
    /// options fail here. Transient failures of the join are retried within the client's
    /// retry policy. Must be called within a tokio runtime (the consumer runs a task).
    pub async fn consumer(
        &self,
        subscription: &str,
        options: ConsumerOptions,
    ) -> Result<Consumer, ClientError> {
        options.validate()?;
        let subscription = subscription_name(subscription)?;
        let join_request = JoinSubscription {
            subscription: subscription.clone(),
            consumer: options.name.clone(),
            previous_member: None,
            session_timeout_ms: options.session_timeout_ms.unwrap_or(0),
        };
        let joined = join::first_join(&self.inner, &join_request).await?;
        tracing::debug!(
            %subscription,
            consumer = %options.name,
            member = joined.ok.member,
            heartbeat_interval_ms = joined.ok.heartbeat_interval_ms,
            session_timeout_ms = joined.ok.session_timeout_ms,
            "joined"
        );
        let shared = Arc::new(Shared::new(
            options.name.clone(),
            subscription,
            options.ack_batch_records as u64,
            joined.ok.member,
        ));
        let (commands, commands_received) = mpsc::channel(worker::COMMANDS_MAX);
        let (deliveries_sender, deliveries) = mpsc::channel(options.deliveries_buffered_max);
        let worker = Worker::new(WorkerParts {
            inner: Arc::clone(&self.inner),
            shared: Arc::clone(&shared),
            join_request,
            joined,
            batching: AckBatching {
                records: options.ack_batch_records as u64,
                age: std::time::Duration::from_millis(options.ack_batch_age_ms),
            },
            commands: commands_received,
            deliveries: deliveries_sender,
        });
        tokio::spawn(worker.run());
        Ok(Consumer {
            shared,
            commands,
            deliveries: Mutex::new(deliveries),
            stash: Mutex::new(VecDeque::new()),
            flushing: tokio::sync::Mutex::new(()),
            ended: false,
        })
    }
}

impl Consumer {
    /// The consumer's name in its group.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The subscription joined.
    pub fn subscription(&self) -> &str {
        &self.shared.subscription
    }

    /// The member id now (a new one after each rejoin).
    pub fn member_id(&self) -> u64 {
        self.shared.member()
    }

    /// The shards held now, ascending: those of the last assignment received (kept while the
    /// consumer rejoins).
    pub fn assignment(&self) -> Vec<ShardId> {
        self.shared.assignment()
    }

    /// The next delivery, waiting for one; `None` once the consumer ended (it left, or it
    /// returned the error that stopped it). An error that does not stop the consumer (a
    /// delivery whose batches failed their checks: its records come again) is returned
    /// and the consumer goes on.
    pub async fn next(&mut self) -> Option<Result<Delivery, ClientError>> {
        std::future::poll_fn(|cx| self.poll_delivery(cx)).await
    }

    fn poll_delivery(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Delivery, ClientError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if let Some(item) = unpoisoned(self.stash.get_mut()).pop_front() {
            return Poll::Ready(Some(item));
        }
        match unpoisoned(self.deliveries.get_mut()).poll_recv(cx) {
            Poll::Ready(Some(item)) => Poll::Ready(Some(item)),
            Poll::Ready(None) => {
                // Every shard task and the worker are gone: the consumer ended.
                self.ended = true;
                Poll::Ready(self.shared.fatal().map(Err))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Queues the ack of one record; sent with others once `ack_batch_records` records are
    /// queued for its shard or `ack_batch_age_ms` after the oldest. Refused at once
    /// ([`ClientError::AckRefused`], `NotAssignee`) when the consumer does not hold the
    /// record's shard (it went to another member, who will get the record again).
    pub fn ack(&self, id: RecordId) -> Result<(), ClientError> {
        ack_one(&self.shared, id)
    }

    /// Queues the acks of every record of `delivery` (see [`Consumer::ack`]).
    pub fn ack_delivery(&self, delivery: &Delivery) -> Result<(), ClientError> {
        self.shared.ack(delivery.shard(), delivery.ranges())
    }

    /// A handle that acks from other tasks or threads.
    pub fn acker(&self) -> Acker {
        Acker {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Sends every queued ack now and waits for the server's answers to them and to every
    /// ack sent before (within the request timeout). Reports what the server answered since
    /// the previous flush: [`AckSummary`], or [`ClientError::AckRefused`] listing the
    /// refusals (those records were not acked and will be delivered again). Deliveries that
    /// arrive meanwhile are kept for [`Consumer::next`].
    pub async fn flush_acks(&self) -> Result<AckSummary, ClientError> {
        self.flush(true).await
    }

    async fn flush(&self, keep_deliveries: bool) -> Result<AckSummary, ClientError> {
        let _one_at_a_time = self.flushing.lock().await;
        let (reply, answer) = oneshot::channel();
        if self.commands.send(Command::Flush(reply)).await.is_err() {
            return Err(self.ended_error());
        }
        self.await_answer(answer, keep_deliveries).await
    }

    /// Waits for the worker's `answer`, taking deliveries off the channel meanwhile (kept for
    /// `next` when `keep_deliveries`, dropped otherwise) so that the shard streams keep
    /// reading.
    async fn await_answer<T>(
        &self,
        mut answer: oneshot::Receiver<Result<T, ClientError>>,
        keep_deliveries: bool,
    ) -> Result<T, ClientError> {
        let outcome = std::future::poll_fn(|cx| {
            if let Poll::Ready(outcome) = Pin::new(&mut answer).poll(cx) {
                return Poll::Ready(outcome);
            }
            let mut deliveries = unpoisoned(self.deliveries.lock());
            let mut stash = unpoisoned(self.stash.lock());
            while !keep_deliveries || stash.len() < STASHED_MAX {
                match deliveries.poll_recv(cx) {
                    Poll::Ready(Some(item)) if keep_deliveries => stash.push_back(item),
                    Poll::Ready(Some(_)) => {}
                    Poll::Ready(None) | Poll::Pending => break,
                }
            }
            Poll::Pending
        })
        .await;
        outcome.unwrap_or_else(|_| Err(self.ended_error()))
    }

    /// Flushes the acks, then leaves the group (`LeaveSubscription`, answered by `LeaveOk`):
    /// the shards go to the other members at once. Deliveries not yet taken are dropped (their
    /// records will be delivered to the others). Returns the flush's refusals, if any, once
    /// the consumer left.
    pub async fn leave(self) -> Result<(), ClientError> {
        let flushed = self.flush(false).await;
        let (reply, answer) = oneshot::channel();
        let left = if self.commands.send(Command::Leave(reply)).await.is_err() {
            Err(self.ended_error())
        } else {
            self.await_answer(answer, false).await
        };
        match (left, flushed) {
            (Err(error), _) | (Ok(()), Err(error)) => Err(error),
            (Ok(()), Ok(_)) => Ok(()),
        }
    }

    /// The counters now.
    pub fn stats(&self) -> ConsumerStats {
        self.shared.stats()
    }

    /// Why a request to the worker found it gone: its fatal error, or closed.
    fn ended_error(&self) -> ClientError {
        self.shared.fatal().unwrap_or(ClientError::Closed)
    }
}

impl futures_core::Stream for Consumer {
    type Item = Result<Delivery, ClientError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_delivery(cx)
    }
}

/// The guarded value even if a holder panicked (plain queues: nothing is left half-edited).
fn unpoisoned<T>(result: Result<T, std::sync::PoisonError<T>>) -> T {
    result.unwrap_or_else(std::sync::PoisonError::into_inner)
}
