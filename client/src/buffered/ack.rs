//! The acknowledgement of one batch of a [`BufferedProducer`](super::BufferedProducer),
//! shared by the futures of all its records: one allocation per batch, none per record.
//!
//! A record's [`AppendFuture`] holds the batch's [`BatchAck`] and its index in the batch;
//! its id is the batch's base offset plus that index. The append task sets the outcome once
//! and wakes the futures that waited.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll, Waker};

use runnel_core::{Offset, RecordId, ShardId};

use crate::error::ClientError;

/// How a batch ended.
#[derive(Debug)]
pub(crate) enum BatchOutcome {
    /// Every record stored, the batch's record `i` at `base_offset + i` of `shard`.
    Stored { shard: ShardId, base_offset: Offset },
    /// No record stored (or not known to be): every record gets this error.
    Failed(ClientError),
    /// The records went different ways (routed again after the shards changed): one result
    /// per record, in batch order.
    PerRecord(Vec<Result<RecordId, ClientError>>),
}

impl BatchOutcome {
    fn result(&self, index: usize) -> Result<RecordId, ClientError> {
        match self {
            BatchOutcome::Stored { shard, base_offset } => Ok(RecordId {
                shard: *shard,
                offset: Offset(base_offset.0 + index as u64),
            }),
            BatchOutcome::Failed(error) => Err(error.clone()),
            BatchOutcome::PerRecord(results) => results.get(index).cloned().unwrap_or_else(|| {
                Err(ClientError::UnexpectedResponse {
                    request: "Append",
                    response: format!("no result for record {index} of its batch"),
                })
            }),
        }
    }
}

/// The outcome of one batch, once known, and the futures waiting for it.
#[derive(Debug, Default)]
struct BatchAck {
    outcome: OnceLock<BatchOutcome>,
    waiting: Mutex<Vec<Waker>>,
}

impl BatchAck {
    /// Sets the outcome unless one is set, and wakes every future waiting for it.
    fn settle(&self, outcome: BatchOutcome) -> bool {
        let settled = self.outcome.set(outcome).is_ok();
        let waiting = std::mem::take(&mut *self.lock_waiting());
        for waker in waiting {
            waker.wake();
        }
        settled
    }

    fn lock_waiting(&self) -> std::sync::MutexGuard<'_, Vec<Waker>> {
        // A panic while holding this lock leaves a list of wakers, still consistent.
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The producer's side of a batch's acknowledgement: completed once with the outcome, or,
/// if dropped before (the producer's task ended without sending it), with
/// [`ClientError::Closed`], so that no record's future waits forever.
#[derive(Debug, Default)]
pub(crate) struct PendingAck(Arc<BatchAck>);

impl PendingAck {
    /// The future of the batch's record `index`.
    pub fn future(&self, index: usize) -> AppendFuture {
        AppendFuture::new(Arc::clone(&self.0), index)
    }

    /// Sets the outcome and wakes the records' futures.
    pub fn complete(self, outcome: BatchOutcome) {
        assert!(self.0.settle(outcome), "a batch acknowledged twice");
    }
}

impl Drop for PendingAck {
    fn drop(&mut self) {
        if self.0.outcome.get().is_none() {
            self.0.settle(BatchOutcome::Failed(ClientError::Closed));
        }
    }
}

/// The outcome of one record given to [`BufferedProducer::send`](super::BufferedProducer::send):
/// its id once stored. Shares its batch's acknowledgement (no allocation per record).
#[derive(Debug)]
#[must_use = "the record is sent either way; await this to learn whether it was stored"]
pub struct AppendFuture {
    ack: Arc<BatchAck>,
    index: usize,
    /// Where this future's waker sits in the batch's list, once it waited.
    registered: Option<usize>,
}

impl AppendFuture {
    fn new(ack: Arc<BatchAck>, index: usize) -> AppendFuture {
        AppendFuture {
            ack,
            index,
            registered: None,
        }
    }
}

impl Future for AppendFuture {
    type Output = Result<RecordId, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Some(outcome) = this.ack.outcome.get() {
            return Poll::Ready(outcome.result(this.index));
        }
        let mut waiting = this.ack.lock_waiting();
        // Checked again under the lock: `complete` sets the outcome before taking it.
        if let Some(outcome) = this.ack.outcome.get() {
            return Poll::Ready(outcome.result(this.index));
        }
        match this.registered.and_then(|slot| waiting.get_mut(slot)) {
            Some(waker) => waker.clone_from(cx.waker()),
            None => {
                this.registered = Some(waiting.len());
                waiting.push(cx.waker().clone());
            }
        }
        Poll::Pending
    }
}
