//! [`BufferedProducer`]: batches records per shard and answers each record with an
//! [`AppendFuture`].
//!
//! The calling task encodes each record straight into its shard's open batch (a reused
//! buffer, `runnel_core::BatchEncoder`), so a record costs no allocation in steady state: not
//! an owned copy (records may be borrowed, [`BufferedProducer::send_borrowed`]), not a channel
//! message, not a reply channel (a record's future shares its batch's acknowledgement). A
//! background task sends the batches that are ready and completes their acknowledgements.
//!
//! Bounds: a shard's batch is sent when it holds `batch_records_max` records or about
//! `batch_bytes_max` bytes, or `linger_ms` after its first record if none of the shard's
//! batches is in flight and fewer than `partial_in_flight_max` batches sent before they were
//! full are (it keeps filling meanwhile); at most `in_flight_max` batches per shard are being
//! appended at once; records waiting or in flight hold at most
//! `buffer_bytes_max` bytes, and [`BufferedProducer::send`] waits (back-pressure) while the
//! buffer is full.
//!
//! Order: records of one key are stored in the order `send` was called (from one task) as long
//! as `in_flight_max` is 1, the default. With more batches in flight per shard, two batches
//! travel on independent QUIC streams and may be stored in either order.
//!
//! Failures: every record's future gets its id or its error. A batch is never appended twice
//! when it may have been stored ([`ClientError::OutcomeUnknown`]), unless the producer is
//! idempotent (`BufferedProducerConfig::idempotent`: the server recognises the copy); a batch
//! refused because the shards changed is routed again with fresh shards.

mod accumulator;
mod ack;
mod worker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use runnel_core::{BorrowedRecord, Limits, Record, StreamName};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;

use self::accumulator::{Accumulator, BatchBounds};
pub use self::ack::AppendFuture;
use self::worker::{Command, Core, Worker};
use crate::append::{record_estimate_bytes, BATCH_OVERHEAD_BYTES};
use crate::error::ClientError;
use crate::routing::ShardMap;
use crate::transport::Transport;

/// Flushes and closes queued between the handles and the worker.
const COMMANDS_MAX: usize = 64;
/// Longest linger time, in milliseconds.
const LINGER_MS_LIMIT: u64 = 60_000;
/// Most batches in flight per shard (each is one QUIC stream).
const IN_FLIGHT_LIMIT: usize = 64;
/// Largest buffer, in bytes (the buffer is a semaphore of bytes; one record takes at most
/// all of it, which must fit a u32).
const BUFFER_BYTES_LIMIT: u64 = u32::MAX as u64;

/// The bounds of a [`BufferedProducer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferedProducerConfig {
    /// Most records in one batch. Default 10 000.
    pub batch_records_max: usize,
    /// Most bytes in one batch, estimated before encoding (an upper bound of the encoded
    /// size). Lowered to the server's `batch_bytes_max` if larger. Default 1 MiB.
    pub batch_bytes_max: u64,
    /// How long a batch waits for more records after its first one, in milliseconds; 0 sends
    /// as soon as the shard has room in flight. Default 5, at most 60 000.
    pub linger_ms: u64,
    /// Most bytes of records waiting or in flight (by the same estimate); `send` waits while
    /// it is full. At least `batch_bytes_max`. Default 32 MiB, at most 4 GiB - 1.
    pub buffer_bytes_max: u64,
    /// Most batches of one shard being appended at once; above 1 the order of records of a
    /// shard is no longer guaranteed. Default 1, at most 64.
    pub in_flight_max: usize,
    /// Most batches sent by their linger time, before they were full, being appended at once
    /// over all shards. A batch that is not full also waits while one of its shard's batches
    /// is in flight: it keeps filling while the server works, so that a producer writing to
    /// many shards sends fewer, larger requests (full batches are held by neither rule).
    /// Default 4, at most 64.
    pub partial_in_flight_max: usize,
    /// Idempotent appends ([`Producer::idempotent`](crate::Producer::idempotent)): each batch
    /// carries a producer id and a per-shard sequence, the server stores a batch sent twice
    /// once, and appends with an unknown outcome are retried. One batch per shard is then in
    /// flight at a time, whatever `in_flight_max` says. Default false.
    pub idempotent: bool,
}

impl Default for BufferedProducerConfig {
    fn default() -> BufferedProducerConfig {
        BufferedProducerConfig {
            batch_records_max: 10_000,
            batch_bytes_max: 1 << 20,
            linger_ms: 5,
            buffer_bytes_max: 32 << 20,
            in_flight_max: 1,
            partial_in_flight_max: 4,
            idempotent: false,
        }
    }
}

impl BufferedProducerConfig {
    /// Checks every bound against itself and the server's `limits`; returns the bounds in
    /// force (`batch_bytes_max` lowered to the server's).
    fn bounds(&self, limits: &Limits) -> Result<BatchBounds, ClientError> {
        let invalid = |field, reason: String| Err(ClientError::InvalidOptions { field, reason });
        if self.batch_records_max == 0 || self.batch_records_max as u64 > limits.batch_records_max {
            return invalid(
                "batch_records_max",
                format!("must be 1 to {}", limits.batch_records_max),
            );
        }
        let batch_bytes_max = self.batch_bytes_max.min(limits.batch_bytes_max);
        let smallest = BATCH_OVERHEAD_BYTES + record_estimate_bytes((&Record::default()).into());
        if batch_bytes_max < smallest {
            return invalid(
                "batch_bytes_max",
                format!("must be at least {smallest} (one empty record)"),
            );
        }
        if self.linger_ms > LINGER_MS_LIMIT {
            return invalid("linger_ms", format!("must be at most {LINGER_MS_LIMIT}"));
        }
        if self.buffer_bytes_max < batch_bytes_max || self.buffer_bytes_max > BUFFER_BYTES_LIMIT {
            return invalid(
                "buffer_bytes_max",
                format!("must be {batch_bytes_max} (batch_bytes_max) to {BUFFER_BYTES_LIMIT}"),
            );
        }
        if self.in_flight_max == 0 || self.in_flight_max > IN_FLIGHT_LIMIT {
            return invalid("in_flight_max", format!("must be 1 to {IN_FLIGHT_LIMIT}"));
        }
        if self.partial_in_flight_max == 0 || self.partial_in_flight_max > IN_FLIGHT_LIMIT {
            return invalid(
                "partial_in_flight_max",
                format!("must be 1 to {IN_FLIGHT_LIMIT}"),
            );
        }
        Ok(BatchBounds {
            records_max: self.batch_records_max,
            bytes_max: batch_bytes_max,
            linger: Duration::from_millis(self.linger_ms),
            in_flight_max: self.in_flight_max,
            partial_in_flight_max: self.partial_in_flight_max,
        })
    }
}

/// Appends records to one stream in batches, from a background task. Cheap to clone; the
/// clones share the task and the buffer. Dropping every clone without [`close`] still sends
/// what was accepted.
///
/// [`close`]: BufferedProducer::close
#[derive(Clone)]
pub struct BufferedProducer {
    shared: Arc<Shared>,
}

/// What the handles share (the worker holds only `core`, so that dropping every handle
/// closes the command channel and the worker finishes).
struct Shared {
    core: Arc<Core>,
    commands: mpsc::Sender<Command>,
    buffer_bytes_max: u64,
    record_limits: Limits,
    closed: AtomicBool,
}

impl std::fmt::Debug for BufferedProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferedProducer")
            .field("stream", &self.shared.core.stream)
            .field(
                "buffer_bytes_free",
                &self.shared.core.buffer.available_permits(),
            )
            .finish_non_exhaustive()
    }
}

impl BufferedProducer {
    /// Checks `config` and starts the worker on the current tokio runtime.
    pub(crate) fn start(
        transport: Arc<dyn Transport>,
        stream: StreamName,
        config: BufferedProducerConfig,
    ) -> Result<BufferedProducer, ClientError> {
        let transport = crate::idempotence::idempotent(transport, config.idempotent);
        let limits = transport.limits();
        let bounds = config.bounds(&limits)?;
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| ClientError::InvalidOptions {
                field: "runtime",
                reason: "a buffered producer must be created within a tokio runtime".into(),
            })?;
        let (commands, receiver) = mpsc::channel(COMMANDS_MAX);
        // Fits: validated to at most u32::MAX, below tokio's semaphore limit.
        let buffer = Arc::new(Semaphore::new(config.buffer_bytes_max as usize));
        let core = Arc::new(Core::new(
            transport,
            stream,
            Accumulator::new(bounds, limits),
            buffer,
        ));
        runtime.spawn(Worker::new(Arc::clone(&core), receiver).run());
        Ok(BufferedProducer {
            shared: Arc::new(Shared {
                core,
                commands,
                buffer_bytes_max: config.buffer_bytes_max,
                record_limits: limits,
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// The stream records go to.
    pub fn stream(&self) -> &StreamName {
        &self.shared.core.stream
    }

    /// Queues `record`, waiting while the buffer is full; the returned future resolves to its
    /// id once stored (or its error). A record larger than the server's `record_bytes_max` is
    /// refused at once. Dropping the future does not withdraw the record. A record without a
    /// timestamp ([`Record::new`]) gets this producer's clock now, when it is queued.
    ///
    /// The record is encoded into its batch at once and dropped; to send without building an
    /// owned record, use [`Self::send_borrowed`].
    pub async fn send(&self, record: Record) -> Result<AppendFuture, ClientError> {
        self.send_borrowed(BorrowedRecord::from(&record)).await
    }

    /// [`Self::send`] for a record borrowed from the caller (key, value and headers are
    /// copied into the batch before this returns): no allocation per record.
    pub async fn send_borrowed(
        &self,
        mut record: BorrowedRecord<'_>,
    ) -> Result<AppendFuture, ClientError> {
        if record.timestamp_ms == Record::TIMESTAMP_UNSET {
            record.timestamp_ms = crate::append::now_ms();
        }
        let shared = &self.shared;
        let core = &*shared.core;
        if shared.closed.load(Ordering::Acquire) {
            return Err(ClientError::Closed);
        }
        shared.record_limits.check_record(0, record.size_bytes())?;
        let map = self.shard_map().await?;
        let buffer_bytes = record_estimate_bytes(record).min(shared.buffer_bytes_max);
        // At most buffer_bytes_max, validated to fit a u32.
        let held = core
            .buffer
            .acquire_many(buffer_bytes as u32)
            .await
            .map_err(|_| ClientError::Closed)?;
        let pushed = {
            let mut state = core.lock();
            if state.closing {
                Err(ClientError::Closed)
            } else {
                // Routed with the newest shards known (the map fetched above, unless an append
                // has found it stale since and a newer one was fetched).
                let map = state.map.clone().unwrap_or(map);
                match map.route(record.key) {
                    Ok(shard) => state
                        .accumulator
                        .push(shard.id, record, buffer_bytes, Instant::now())
                        .map_err(ClientError::from),
                    Err(error) => Err(error),
                }
            }
        };
        match pushed {
            Ok(pushed) => {
                // The worker gives the bytes back when the record's batch is done.
                held.forget();
                if pushed.wake {
                    core.wake.notify_one();
                }
                Ok(pushed.future)
            }
            Err(error) => {
                // `held` goes back to the buffer. The push may have sealed the shard's batch
                // before refusing the record: let the worker look.
                core.wake.notify_one();
                Err(error)
            }
        }
    }

    /// The shards to route with: the producer's, or fetched (the first time, or after an
    /// append found them stale).
    async fn shard_map(&self) -> Result<Arc<ShardMap>, ClientError> {
        let core = &*self.shared.core;
        if let Some(map) = &core.lock().map {
            return Ok(Arc::clone(map));
        }
        let map = core.transport.shard_map(&core.stream, None).await?;
        let mut state = core.lock();
        state
            .accumulator
            .retain_shards(|shard| map.shard(shard).is_some());
        Ok(Arc::clone(state.map.get_or_insert(map)))
    }

    /// Sends every buffered record now (without waiting for linger times) and waits until
    /// every record queued before this call is answered. Failures are reported by the
    /// records' own futures.
    pub async fn flush(&self) -> Result<(), ClientError> {
        let (waiter, done) = oneshot::channel();
        self.shared
            .commands
            .send(Command::Flush(waiter))
            .await
            .map_err(|_| ClientError::Closed)?;
        done.await.map_err(|_| ClientError::Closed)
    }

    /// Refuses further records, sends what is buffered, and waits until every record queued
    /// before is answered. Later `send`s (from any clone) fail with [`ClientError::Closed`].
    pub async fn close(&self) -> Result<(), ClientError> {
        self.shared.closed.store(true, Ordering::Release);
        let (waiter, done) = oneshot::channel();
        if self
            .shared
            .commands
            .send(Command::Close(waiter))
            .await
            .is_err()
        {
            return Ok(()); // The worker has stopped already: nothing left to answer.
        }
        let _ = done.await;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
