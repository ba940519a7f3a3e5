//! The append service: how anything running on a core appends a batch to a shard it owns.
//!
//! ARCHITECTURE §3: append is a service any code on a core calls (the QUIC handler today;
//! replication, SQL output and an HTTP API later), not code inside one request handler. Every
//! caller goes through [`Core::append`], so every batch is validated the same way, once:
//!
//! 1. the shard must be this core's ([`Core::owned_log`]; else [`ShardError::NotOwner`] naming
//!    the owner, and nothing else is looked at);
//! 2. the batch's header, limits, length, padding and payload CRC are checked over the chunks
//!    it arrived in ([`CheckedChunks::check`], the only way to build the type the log takes);
//! 3. the shard must be open (not sealed by a split or a merge);
//! 4. the log copies the batch once, from those chunks into its tail buffer, and validates the
//!    archive there, checking each record's key against the shard's range in the same pass
//!    ([`runnel_segment::ShardLog::append_chunks`]); refused at any step, nothing is appended;
//! 5. for a stream with `fsync` durability, the answer waits until the batch is durable; with
//!    `memory` durability the log hands out only offsets covered by its durable offset
//!    reservation ([`runnel_segment::ShardLog::reserve_offsets_durably`]), so none of them is
//!    handed out again after a crash.
//!
//! A batch with a producer stamp (an idempotent producer's) is judged between 3 and 4
//! ([`crate::dedup`]): a duplicate is answered with the offsets it got the first time (once
//! they are as durable as the stream promises), a sequence the shard cannot place is refused
//! ([`AppendError::Sequence`]), and a stored batch is recorded.
//!
//! A batch built in-process is one chunk ([`Core::append_batch`]): it takes the same path. The
//! service allocates nothing on success; errors are typed ([`AppendError`]) and the QUIC
//! handler turns them into the protocol's `ErrorResponse` in one place.

use runnel_core::{BatchError, CheckedChunks, Offset, ShardId, StreamName};
use runnel_replicate::metadata::Durability;
use runnel_segment::LogError;

use crate::core::Core;
use crate::dedup::{Dedup, DedupError};
use crate::ownership::ShardError;

#[cfg(test)]
pub(crate) mod tests;

/// One batch for one shard: the batch's bytes in the chunks they arrived in (a QUIC stream's
/// received chunks, not joined), or in one chunk for a batch built in-process.
#[derive(Debug, Clone, Copy)]
pub struct AppendRequest<'a, C> {
    /// The stream the shard belongs to.
    pub stream: &'a StreamName,
    /// The shard.
    pub shard: ShardId,
    /// The batch, joined, is these chunks' start (bytes after it are ignored).
    pub batch: &'a [C],
}

/// An acknowledged append: as durable as its stream promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The shard appended to.
    pub shard: ShardId,
    /// The offset of the batch's first record.
    pub base_offset: Offset,
    /// The offset of its last record.
    pub last_offset: Offset,
}

/// Why an append was refused. Nothing of the batch was appended, except for
/// [`AppendError::Log`] after the batch was taken (a failed fdatasync): then the log is
/// poisoned and the batch never acknowledged.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// This core does not serve the shard (unknown, owned elsewhere, not ready here).
    #[error(transparent)]
    Shard(#[from] ShardError),
    /// The shard was sealed by a split or a merge: its children take the appends.
    #[error("shard {shard} is sealed")]
    Sealed {
        /// The shard.
        shard: ShardId,
    },
    /// A record's key hashes outside the shard's key range.
    #[error("record {record}'s key does not belong to shard {shard} of stream {stream}")]
    WrongShard {
        /// The stream.
        stream: StreamName,
        /// The shard.
        shard: ShardId,
        /// The record's index in the batch.
        record: usize,
    },
    /// The batch is malformed, corrupt or over a limit.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// Bytes follow the batch: one append carries exactly one batch (the rest would be
    /// dropped while the append was acknowledged).
    #[error("{payload_bytes} bytes hold a batch of {batch_bytes} bytes and more: an append carries exactly one batch")]
    NotOneBatch {
        /// The batch's length, from its header.
        batch_bytes: usize,
        /// The bytes given.
        payload_bytes: usize,
    },
    /// The log refused the batch or failed to make it durable.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A replicated shard's sequencer refused the batch, or could not confirm it.
    #[error(transparent)]
    Replication(#[from] crate::replicated::ReplicationError),
    /// The batch's producer stamp cannot be placed: nothing was stored (`crate::dedup`).
    #[error(transparent)]
    Sequence(#[from] runnel_replicate::producers::SequenceError),
}

impl From<DedupError> for AppendError {
    fn from(error: DedupError) -> AppendError {
        match error {
            DedupError::Sequence(error) => AppendError::Sequence(error),
            DedupError::Log(error) => AppendError::Log(error),
            DedupError::Replication(error) => AppendError::Replication(error),
        }
    }
}

impl Core {
    /// Appends one batch to a shard this core owns and returns its offsets once it is as
    /// durable as its stream promises: see the module documentation for the checks, in order.
    pub async fn append<C: AsRef<[u8]>>(
        &self,
        request: AppendRequest<'_, C>,
    ) -> Result<Appended, AppendError> {
        let AppendRequest {
            stream,
            shard,
            batch,
        } = request;
        let owned = self.owned_log(stream, shard).await?;
        let facts = owned.shard;
        let limits = self.config.limits();
        let checked = CheckedChunks::check(batch, &limits)?;
        let payload_bytes: usize = batch.iter().map(|chunk| chunk.as_ref().len()).sum();
        if payload_bytes != checked.len() {
            return Err(AppendError::NotOneBatch {
                batch_bytes: checked.len(),
                payload_bytes,
            });
        }
        if !facts.open {
            return Err(AppendError::Sealed { shard: facts.id });
        }
        if let Some(host) = self.replicated.host(facts.id) {
            // A replicated shard: its sequencer assigns the offsets and W replicas store it.
            return crate::replicated::append(
                self, &host, &checked, batch, &facts, stream, &limits,
            )
            .await;
        }
        if facts.replicated {
            // Its replica is not open on this core yet (a restart, a new set): the log is
            // the protocol's, and an append straight to it would be acknowledged by this
            // replica alone, at offsets no sequencer assigned.
            return Err(crate::replicated::ReplicationError::Recovering { shard: facts.id }.into());
        }
        let header = checked.header();
        if facts.durability == Durability::Memory {
            // Acknowledged before it is durable: the offset must be reserved durably first, so
            // a crash can never hand it out again (ARCHITECTURE §6, contract point 2).
            owned.log.reserve_offsets_durably();
        }
        let pending =
            match (self.dedup(facts.id, &owned.log, header.producer, header.record_count)).await? {
                Dedup::Store(pending) => pending,
                Dedup::Duplicate {
                    base_offset,
                    last_offset,
                } => {
                    if facts.durability == Durability::Fsync {
                        owned.log.wait_durable(last_offset).await?;
                    }
                    return Ok(Appended {
                        shard: facts.id,
                        base_offset,
                        last_offset,
                    });
                }
            };
        let appended = owned
            .log
            .append_chunks(
                &checked,
                facts.epoch,
                &limits,
                |index, record| match record.key() {
                    Some(key) if !facts.key_range.contains_key(key) => {
                        Err(AppendError::WrongShard {
                            stream: stream.clone(),
                            shard: facts.id,
                            record: index,
                        })
                    }
                    _ => Ok(()),
                },
            )
            .await?;
        pending.stored(appended.base_offset);
        assert!(
            appended.base_offset <= appended.last_offset,
            "an appended batch holds at least one record"
        );
        if facts.durability == Durability::Fsync {
            owned.log.wait_durable(appended.last_offset).await?;
        }
        Ok(Appended {
            shard: facts.id,
            base_offset: appended.base_offset,
            last_offset: appended.last_offset,
        })
    }

    /// Appends a batch built in-process (e.g. by `BatchBuilder::finish`): [`Core::append`]
    /// with the batch as one chunk, validated the same way as one from the network.
    pub async fn append_batch(
        &self,
        stream: &StreamName,
        shard: ShardId,
        batch: &[u8],
    ) -> Result<Appended, AppendError> {
        self.append(AppendRequest {
            stream,
            shard,
            batch: std::slice::from_ref(&batch),
        })
        .await
    }
}
