//! The background task of a [`BufferedProducer`](super::BufferedProducer): takes the batches
//! that are ready from the shared [`Accumulator`] (the sending tasks encode records into it
//! themselves), appends each in a task of its own (at most `in_flight_max` per shard),
//! completes each batch's acknowledgement, and gives the buffer's bytes and the batch's
//! buffer back when a batch is done.
//!
//! It ends when the producer is closed or every handle is dropped, after every record it
//! accepted has been answered.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use runnel_core::batch::AlignedBytes;
use runnel_core::{ShardId, StreamName};
use runnel_net::protocol::AppendOk;
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::accumulator::{Accumulator, SealedBatch};
use super::ack::BatchOutcome;
use crate::append::{append_once, check_acknowledged, is_stale, settle, EncodedBatch, Outcomes};
use crate::routing::ShardMap;
use crate::transport::Transport;

/// What the producer's handles ask of the worker besides records.
pub(crate) enum Command {
    /// Answer once every record sent before is done.
    Flush(oneshot::Sender<()>),
    /// Flush, then stop; answer when stopped.
    Close(oneshot::Sender<()>),
}

/// The state the sending tasks and the worker share, under one lock held only to route and
/// encode a record or to take and complete batches (never across an await).
pub(crate) struct State {
    pub accumulator: Accumulator,
    /// The stream's shards to route with; `None` until fetched, or after an append found
    /// them stale (fetched again, from the transport's cache, on next use).
    pub map: Option<Arc<ShardMap>>,
    /// No record is accepted any more.
    pub closing: bool,
}

/// What the handles and the worker share.
pub(crate) struct Core {
    pub transport: Arc<dyn Transport>,
    pub stream: StreamName,
    state: Mutex<State>,
    /// Wakes the worker: a batch was sealed or a new one opened (a new linger deadline).
    pub wake: Notify,
    /// The producer's buffer, in bytes: `send` takes, the worker gives back.
    pub buffer: Arc<Semaphore>,
}

impl Core {
    pub fn new(
        transport: Arc<dyn Transport>,
        stream: StreamName,
        accumulator: Accumulator,
        buffer: Arc<Semaphore>,
    ) -> Core {
        Core {
            transport,
            stream,
            state: Mutex::new(State {
                accumulator,
                map: None,
                closing: false,
            }),
            wake: Notify::new(),
            buffer,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        // The lock is held by code that does not panic on inputs; a poisoned lock means a
        // broken invariant (an assertion) that has already stopped the caller.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Gives `buffer_bytes` back to the producer's buffer.
    pub fn release(&self, buffer_bytes: u64) {
        // Each record holds at most buffer_bytes_max (validated to fit a u32), and batches
        // hold what their records held, so the sum fits the semaphore.
        self.buffer.add_permits(buffer_bytes as usize);
    }
}

/// What an append task hands back.
struct Done {
    shard: ShardId,
    batch_id: u64,
    partial: bool,
    buffer_bytes: u64,
    /// The batch's buffer, to encode a later batch into.
    buffer: Option<AlignedBytes>,
    /// The task found the shards stale and fetched newer ones.
    refreshed: bool,
}

/// The worker's state.
pub(crate) struct Worker {
    core: Arc<Core>,
    commands: mpsc::Receiver<Command>,
    tasks: JoinSet<Done>,
    ready: Vec<SealedBatch>,
    flush_waiters: Vec<(u64, oneshot::Sender<()>)>,
    close_waiters: Vec<oneshot::Sender<()>>,
    commands_ended: bool,
}

impl Worker {
    pub fn new(core: Arc<Core>, commands: mpsc::Receiver<Command>) -> Worker {
        Worker {
            core,
            commands,
            tasks: JoinSet::new(),
            ready: Vec::new(),
            flush_waiters: Vec::new(),
            close_waiters: Vec::new(),
            commands_ended: false,
        }
    }

    /// Runs until closed (or every handle dropped) and everything accepted is answered.
    pub async fn run(mut self) {
        loop {
            let core = Arc::clone(&self.core);
            let (deadline, stopped) = {
                let mut state = core.lock();
                state
                    .accumulator
                    .take_ready(Instant::now(), &mut self.ready);
                let mut index = 0;
                while let Some((barrier, _)) = self.flush_waiters.get(index) {
                    if state.accumulator.flushed(*barrier) {
                        let (_, waiter) = self.flush_waiters.swap_remove(index);
                        let _ = waiter.send(());
                    } else {
                        index += 1;
                    }
                }
                let stopped = state.closing && state.accumulator.is_idle();
                (state.accumulator.next_deadline(), stopped)
            };
            let map = self.core.lock().map.clone();
            for batch in std::mem::take(&mut self.ready) {
                self.start_append(batch, map.clone());
            }
            if stopped && self.tasks.is_empty() {
                break;
            }
            // Some branch is always enabled: commands flow until the handles are gone, and
            // after that everything is sealed, so whatever is not idle is a task in flight.
            tokio::select! {
                () = core.wake.notified() => {}
                command = self.commands.recv(), if !self.commands_ended => match command {
                    Some(command) => self.handle(command),
                    None => {
                        self.commands_ended = true;
                        self.start_closing();
                    }
                },
                Some(joined) = self.tasks.join_next() => self.finish(joined),
                () = sleep_until(deadline), if deadline.is_some() => {}
            }
        }
        self.core.buffer.close();
        for waiter in self.close_waiters.drain(..) {
            let _ = waiter.send(());
        }
        for (_, waiter) in self.flush_waiters.drain(..) {
            let _ = waiter.send(());
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Flush(waiter) => {
                let barrier = self.core.lock().accumulator.seal_all();
                self.flush_waiters.push((barrier, waiter));
            }
            Command::Close(waiter) => {
                self.close_waiters.push(waiter);
                self.start_closing();
            }
        }
    }

    fn start_closing(&mut self) {
        let mut state = self.core.lock();
        state.closing = true;
        state.accumulator.seal_all();
    }

    /// Appends `batch` in a task of its own; its records' futures learn the outcome.
    fn start_append(&mut self, batch: SealedBatch, known: Option<Arc<ShardMap>>) {
        let SealedBatch {
            id,
            shard,
            bytes,
            records,
            partial,
            ack,
            buffer_bytes,
        } = batch;
        let core = Arc::clone(&self.core);
        self.tasks.spawn(async move {
            let (outcome, buffer, refreshed) = match bytes {
                Err(error) => (BatchOutcome::Failed(error.into()), None, false),
                Ok(bytes) => {
                    let map = match known {
                        Some(map) => Ok(map),
                        None => core.transport.shard_map(&core.stream, None).await,
                    };
                    match map {
                        Err(error) => (BatchOutcome::Failed(error), Some(bytes), false),
                        Ok(map) => {
                            let (outcome, newest, bytes) =
                                append_sealed(&core, map.clone(), shard, bytes, records).await;
                            (outcome, bytes, !Arc::ptr_eq(&map, &newest))
                        }
                    }
                }
            };
            ack.complete(outcome);
            Done {
                shard,
                batch_id: id,
                partial,
                buffer_bytes,
                buffer,
                refreshed,
            }
        });
    }

    /// An append task ended: free its place, its bytes and its buffer; if it found the
    /// shards stale, route further records with the transport's newest shards.
    fn finish(&mut self, joined: Result<Done, tokio::task::JoinError>) {
        // The tasks never panic (no unwrap, no indexing on inputs) and are aborted only when
        // the worker itself is dropped; a join error is therefore a bug.
        let done = joined.unwrap_or_else(|error| panic!("an append task failed: {error}"));
        {
            let mut state = self.core.lock();
            state
                .accumulator
                .complete(done.shard, done.batch_id, done.partial, done.buffer);
            if done.refreshed {
                state.map = None;
            }
        }
        self.core.release(done.buffer_bytes);
    }
}

/// Appends one sealed batch of `records` records to `shard`: the batch's outcome, the newest
/// shard map seen, and the batch's buffer (unless it was routed again).
async fn append_sealed(
    core: &Core,
    map: Arc<ShardMap>,
    shard: ShardId,
    bytes: AlignedBytes,
    records: usize,
) -> (BatchOutcome, Arc<ShardMap>, Option<AlignedBytes>) {
    let transport = &*core.transport;
    let first = append_once(transport, &core.stream, &map, shard, &bytes).await;
    match first {
        Ok(ok) => (stored(shard, records, ok), map, Some(bytes)),
        Err(error) if !is_stale(&error) => (BatchOutcome::Failed(error), map, Some(bytes)),
        stale => {
            // The shards changed: the records go where they belong now, maybe to several
            // shards (rare: this path decodes and allocates per record).
            let mut outcomes = Outcomes::new(records);
            let batch = EncodedBatch {
                shard,
                bytes,
                positions: (0..records).collect(),
            };
            let newest = settle(transport, &core.stream, map, batch, stale, &mut outcomes).await;
            (
                BatchOutcome::PerRecord(outcomes.into_results()),
                newest,
                None,
            )
        }
    }
}

/// The outcome of a batch the server acknowledged, after checking that the acknowledgement
/// covers exactly the batch's records on its shard.
fn stored(shard: ShardId, records: usize, ok: AppendOk) -> BatchOutcome {
    match check_acknowledged(shard, records, &ok) {
        Ok(()) => BatchOutcome::Stored {
            shard,
            base_offset: ok.base_offset,
        },
        Err(error) => BatchOutcome::Failed(error),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
