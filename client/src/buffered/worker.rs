//! The background task of a [`BufferedProducer`](super::BufferedProducer): receives records,
//! routes them, batches them in an [`Accumulator`], appends ready batches (each in its own
//! task, at most `in_flight_max` per shard), answers each record's future, and gives the
//! buffer's bytes back when a batch is done.
//!
//! It ends when the producer is closed or every handle is dropped, after every record it
//! accepted has been answered.

use std::sync::Arc;

use runnel_core::{Limits, Record, RecordId, ShardId, StreamName};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::accumulator::{Accumulator, SealedBatch};
use crate::append::{append_batch, EncodedBatch, Outcomes};
use crate::error::ClientError;
use crate::routing::ShardMap;
use crate::transport::Transport;

/// Where a record's result goes.
pub(crate) type Reply = oneshot::Sender<Result<RecordId, ClientError>>;

/// What the producer's handles ask of the worker.
pub(crate) enum Command {
    /// Route, batch and append a record; it holds `buffer_bytes` of the buffer.
    Record {
        record: Record,
        reply: Reply,
        buffer_bytes: u64,
    },
    /// Answer once every record sent before is done.
    Flush(oneshot::Sender<()>),
    /// Flush, then stop; answer when stopped.
    Close(oneshot::Sender<()>),
}

/// What an append task hands back.
struct Done {
    shard: ShardId,
    batch_id: u64,
    buffer_bytes: u64,
    /// The task found the shards stale and fetched newer ones.
    refreshed: bool,
}

/// The worker's state.
pub(crate) struct Worker {
    transport: Arc<dyn Transport>,
    stream: StreamName,
    limits: Limits,
    commands: mpsc::Receiver<Command>,
    buffer: Arc<Semaphore>,
    accumulator: Accumulator<Reply>,
    map: Option<Arc<ShardMap>>,
    tasks: JoinSet<Done>,
    flush_waiters: Vec<(u64, oneshot::Sender<()>)>,
    close_waiters: Vec<oneshot::Sender<()>>,
    closing: bool,
    commands_ended: bool,
}

impl Worker {
    pub fn new(
        transport: Arc<dyn Transport>,
        stream: StreamName,
        commands: mpsc::Receiver<Command>,
        buffer: Arc<Semaphore>,
        accumulator: Accumulator<Reply>,
    ) -> Worker {
        Worker {
            limits: transport.limits(),
            transport,
            stream,
            commands,
            buffer,
            accumulator,
            map: None,
            tasks: JoinSet::new(),
            flush_waiters: Vec::new(),
            close_waiters: Vec::new(),
            closing: false,
            commands_ended: false,
        }
    }

    /// Runs until closed (or every handle dropped) and everything accepted is answered.
    pub async fn run(mut self) {
        loop {
            for batch in self.accumulator.take_ready(Instant::now()) {
                self.start_append(batch);
            }
            self.answer_flushes();
            if self.closing && self.accumulator.is_idle() && self.tasks.is_empty() {
                break;
            }
            let deadline = self.accumulator.next_deadline();
            // Some branch is always enabled: commands flow until the handles are gone, and
            // after that everything is sealed, so whatever is not idle is a task in flight.
            tokio::select! {
                command = self.commands.recv(), if !self.commands_ended => match command {
                    Some(command) => self.handle(command).await,
                    None => {
                        self.commands_ended = true;
                        self.start_closing();
                    }
                },
                Some(joined) = self.tasks.join_next() => self.finish(joined),
                () = sleep_until(deadline), if deadline.is_some() => {}
            }
        }
        self.buffer.close();
        for waiter in self.close_waiters.drain(..) {
            let _ = waiter.send(());
        }
        for (_, waiter) in self.flush_waiters.drain(..) {
            let _ = waiter.send(());
        }
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Record {
                record,
                reply,
                buffer_bytes,
            } => {
                if self.closing {
                    self.refuse(reply, ClientError::Closed, buffer_bytes);
                    return;
                }
                match self.route(&record).await {
                    Ok(shard) => {
                        self.accumulator
                            .push(shard, record, reply, buffer_bytes, Instant::now());
                    }
                    Err(error) => self.refuse(reply, error, buffer_bytes),
                }
            }
            Command::Flush(waiter) => {
                let barrier = self.accumulator.seal_all();
                self.flush_waiters.push((barrier, waiter));
            }
            Command::Close(waiter) => {
                self.close_waiters.push(waiter);
                self.start_closing();
            }
        }
    }

    fn start_closing(&mut self) {
        self.closing = true;
        self.accumulator.seal_all();
    }

    /// The shard `record` goes to, with the newest shards known (fetched on first use).
    async fn route(&mut self, record: &Record) -> Result<ShardId, ClientError> {
        let map = match &self.map {
            Some(map) => Arc::clone(map),
            None => {
                let map = self.transport.shard_map(&self.stream, None).await?;
                self.map = Some(Arc::clone(&map));
                map
            }
        };
        map.route(record.key.as_deref()).map(|shard| shard.id)
    }

    /// Answers `reply` with `error` and gives its buffer bytes back.
    fn refuse(&self, reply: Reply, error: ClientError, buffer_bytes: u64) {
        let _ = reply.send(Err(error));
        self.release(buffer_bytes);
    }

    fn release(&self, buffer_bytes: u64) {
        // Each record holds at most buffer_bytes_max (validated to fit a u32), and batches
        // hold what their records held, so the sum fits the semaphore.
        self.buffer.add_permits(buffer_bytes as usize);
    }

    /// Encodes `batch` and appends it in a task of its own.
    fn start_append(&mut self, batch: SealedBatch<Reply>) {
        let SealedBatch {
            id,
            shard,
            builder,
            replies,
            buffer_bytes,
        } = batch;
        let transport = Arc::clone(&self.transport);
        let stream = self.stream.clone();
        let known = self.map.clone();
        let encoded = builder.finish(&self.limits);
        self.tasks.spawn(async move {
            let refreshed = match (encoded, known) {
                (Err(error), _) => {
                    answer_all(replies, &ClientError::from(error));
                    false
                }
                (Ok(bytes), known) => {
                    let map = match known {
                        Some(map) => Ok(map),
                        None => transport.shard_map(&stream, None).await,
                    };
                    match map {
                        Err(error) => {
                            answer_all(replies, &error);
                            false
                        }
                        Ok(map) => {
                            let mut outcomes = Outcomes::new(replies.len());
                            let batch = EncodedBatch {
                                shard,
                                bytes,
                                positions: (0..replies.len()).collect(),
                            };
                            let newest = append_batch(
                                &*transport,
                                &stream,
                                Arc::clone(&map),
                                batch,
                                &mut outcomes,
                            )
                            .await;
                            for (reply, result) in replies.into_iter().zip(outcomes.into_results())
                            {
                                let _ = reply.send(result);
                            }
                            !Arc::ptr_eq(&map, &newest)
                        }
                    }
                }
            };
            Done {
                shard,
                batch_id: id,
                buffer_bytes,
                refreshed,
            }
        });
    }

    /// An append task ended: free its place and its bytes; if it found the shards stale,
    /// route further records with the transport's newest shards.
    fn finish(&mut self, joined: Result<Done, tokio::task::JoinError>) {
        // The tasks never panic (no unwrap, no indexing on inputs) and are aborted only when
        // the worker itself is dropped; a join error is therefore a bug.
        let done = joined.unwrap_or_else(|error| panic!("an append task failed: {error}"));
        self.accumulator.complete(done.shard, done.batch_id);
        self.release(done.buffer_bytes);
        if done.refreshed {
            // Fetched again (from the transport's cache, which holds the newest) on next use.
            self.map = None;
        }
    }

    fn answer_flushes(&mut self) {
        let mut still_waiting = Vec::new();
        for (barrier, waiter) in self.flush_waiters.drain(..) {
            if self.accumulator.flushed(barrier) {
                let _ = waiter.send(());
            } else {
                still_waiting.push((barrier, waiter));
            }
        }
        self.flush_waiters = still_waiting;
    }
}

/// Answers every record of a batch with `error`.
fn answer_all(replies: Vec<Reply>, error: &ClientError) {
    for reply in replies {
        let _ = reply.send(Err(error.clone()));
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
