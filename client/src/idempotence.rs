//! The idempotent producer: a [`Transport`] that stamps every batch with a producer id and a
//! per-shard sequence before it sends it, so that the server recognises a batch it stored
//! already and answers it with its first offsets (the crate documentation, "Idempotent
//! producer").
//!
//! Per shard, a **session**: a producer id and the sequence of the next record. A batch takes
//! its stamp when it is sent and keeps it across every retry of that send (the QUIC
//! transport retries a stamped batch whatever happened to the previous attempt: see
//! `retry.rs`, `Safety::Deduplicated`). A shard's batches are sent one at a time per
//! producer (the session is locked until the outcome is known), so the server sees each
//! producer's sequences in order and never a gap.
//!
//! After any failure the shard's session is replaced by a new one (a new producer id,
//! sequence 0): a batch that failed may still be stored (an unknown outcome, a log that failed
//! after taking it), and the next batch must never carry the same stamp with other records.
//! One refusal is answered by trying again at once with the new session: `OutOfOrderSequence`
//! for a batch no earlier attempt can have delivered (the server forgot the producer: it
//! restarted past its window, or a failover adopted a log without it), since nothing was
//! stored.
//!
//! Producer ids are random 64-bit numbers, not asked of the server: no broker-wide counter
//! exists, and a random id costs no round trip. Two sessions collide with probability about
//! n²/2⁶⁵ for n producers a shard remembers at once (4,096: below 10⁻¹²); 0 is never used
//! (it means "not idempotent").

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use runnel_core::batch::{stamp_producer, AlignedBytes};
use runnel_core::{BatchHeader, Limits, ProducerStamp, ShardId, StreamName};
use runnel_net::protocol::{AppendOk, ErrorCode, ShardInfo};

use crate::error::ClientError;
use crate::routing::ShardMap;
use crate::transport::{BoxFuture, Transport};

/// Most shard sessions one producer keeps; beyond it, idle ones are dropped (a dropped
/// session's shard starts a new one when next written, as after a failure).
const SESSIONS_MAX: usize = 65_536;

/// One shard's producer id and next sequence, and the buffer its batches are stamped in.
struct Session {
    producer_id: u64,
    next_sequence: u64,
    /// The stamped copy of the batch being sent (reused: no allocation per batch once grown).
    stamped: AlignedBytes,
}

impl Session {
    fn new() -> Session {
        Session {
            producer_id: random_producer_id(),
            next_sequence: 0,
            stamped: AlignedBytes::new(),
        }
    }

    /// A new producer id from sequence 0.
    fn renew(&mut self) {
        self.producer_id = random_producer_id();
        self.next_sequence = 0;
    }
}

/// A transport whose appends are idempotent: see the module documentation.
pub(crate) struct IdempotentTransport {
    inner: Arc<dyn Transport>,
    sessions: Mutex<HashMap<ShardId, Arc<tokio::sync::Mutex<Session>>>>,
}

impl IdempotentTransport {
    /// Idempotent appends over `inner`.
    pub fn new(inner: Arc<dyn Transport>) -> IdempotentTransport {
        IdempotentTransport {
            inner,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    fn session(&self, shard: ShardId) -> Arc<tokio::sync::Mutex<Session>> {
        // Plain values under the lock, never held across an await.
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        if sessions.len() >= SESSIONS_MAX && !sessions.contains_key(&shard) {
            // Keep the sessions with a send in progress; the others start anew when used.
            sessions.retain(|_, session| Arc::strong_count(session) > 1);
        }
        Arc::clone(
            sessions
                .entry(shard)
                .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(Session::new()))),
        )
    }

    async fn append_stamped(
        &self,
        stream: &StreamName,
        shard: &ShardInfo,
        batch: &[u8],
    ) -> Result<AppendOk, ClientError> {
        let record_count = BatchHeader::decode(batch)?.record_count;
        let session = self.session(shard.id);
        let mut session = session.lock().await;
        let mut renewed = false;
        loop {
            let stamp = ProducerStamp {
                producer_id: session.producer_id,
                sequence: session.next_sequence,
            };
            session.stamped.clear();
            session.stamped.extend_from_slice(batch);
            stamp_producer(&mut session.stamped, stamp)?;
            let outcome = self.inner.append(stream, shard, &session.stamped).await;
            match outcome {
                Ok(ok) => {
                    session.next_sequence += u64::from(record_count);
                    return Ok(ok);
                }
                Err(error) => {
                    session.renew();
                    // Only a refusal of an attempt no earlier attempt may have delivered
                    // reaches here as OutOfOrderSequence (else it is OutcomeUnknown).
                    if error.code() == Some(ErrorCode::OutOfOrderSequence) && !renewed {
                        tracing::debug!(%stream, shard = %shard.id, %error, "producer unknown to the shard: new producer id");
                        renewed = true;
                        continue;
                    }
                    return Err(error);
                }
            }
        }
    }
}

impl Transport for IdempotentTransport {
    fn limits(&self) -> Limits {
        self.inner.limits()
    }

    fn shard_map<'a>(
        &'a self,
        stream: &'a StreamName,
        stale: Option<&'a Arc<ShardMap>>,
    ) -> BoxFuture<'a, Result<Arc<ShardMap>, ClientError>> {
        self.inner.shard_map(stream, stale)
    }

    fn append<'a>(
        &'a self,
        stream: &'a StreamName,
        shard: &'a ShardInfo,
        batch: &'a [u8],
    ) -> BoxFuture<'a, Result<AppendOk, ClientError>> {
        Box::pin(self.append_stamped(stream, shard, batch))
    }

    fn plain(self: Arc<Self>) -> Arc<dyn Transport> {
        Arc::clone(&self.inner)
    }
}

/// `transport` with idempotent appends if `enabled` (over the plain transport underneath if
/// it was idempotent already, with new sessions), or plain.
pub(crate) fn idempotent(transport: Arc<dyn Transport>, enabled: bool) -> Arc<dyn Transport> {
    let plain = transport.plain();
    if enabled {
        Arc::new(IdempotentTransport::new(plain))
    } else {
        plain
    }
}

/// A random producer id, never 0: std's randomly keyed SipHash over a process-wide counter,
/// the process id and the time.
pub(crate) fn random_producer_id() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    hasher.write_u128(now);
    hasher.finish().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::tests::even_shards;
    use crate::testing::FakeTransport;
    use runnel_core::{BatchBuilder, BatchView, Record};

    fn batch(records: usize) -> AlignedBytes {
        let mut builder = BatchBuilder::new();
        for index in 0..records {
            builder.push(Record::at(vec![index as u8], 1));
        }
        builder.finish(&Limits::DEFAULT).expect("valid")
    }

    /// Each shard's batches carry one producer id and consecutive sequences; after a failure
    /// the shard continues with a new id from 0; ids are never 0 and differ.
    #[tokio::test]
    async fn stamps_run_per_shard_and_renew_after_a_failure() {
        let fake = Arc::new(FakeTransport::new(even_shards(2)));
        let transport = IdempotentTransport::new(Arc::clone(&fake) as Arc<dyn Transport>);
        let stream = StreamName::new("orders").expect("valid");
        let map = transport.shard_map(&stream, None).await.expect("map");
        let shard = map.shards()[0].clone();
        let mut stamps = Vec::new();
        for records in [3, 2] {
            transport
                .append(&stream, &shard, &batch(records))
                .await
                .expect("stored");
            stamps.push(fake.last_stamp());
        }
        fake.refuse_next(ErrorCode::StorageFault);
        transport
            .append(&stream, &shard, &batch(1))
            .await
            .expect_err("refused");
        transport
            .append(&stream, &shard, &batch(1))
            .await
            .expect("stored");
        stamps.push(fake.last_stamp());
        assert_ne!(stamps[0].producer_id, 0);
        assert_eq!(stamps[0].sequence, 0);
        assert_eq!(
            stamps[1],
            ProducerStamp {
                producer_id: stamps[0].producer_id,
                sequence: 3
            }
        );
        assert_ne!(
            stamps[2].producer_id, stamps[0].producer_id,
            "renewed after the failure"
        );
        assert_eq!(stamps[2].sequence, 0);
        // The caller's bytes are not changed: the stamp is on a copy.
        let original = batch(1);
        transport
            .append(&stream, &shard, &original)
            .await
            .expect("stored");
        let header = *BatchView::check(&original).expect("valid").header();
        assert_eq!(header.producer, ProducerStamp::default());
    }

    /// A shard that does not know the producer (OutOfOrderSequence on a first attempt) gets
    /// the batch again at once under a new producer id.
    #[tokio::test]
    async fn an_unknown_producer_starts_a_new_session() {
        let fake = Arc::new(FakeTransport::new(even_shards(1)));
        let transport = IdempotentTransport::new(Arc::clone(&fake) as Arc<dyn Transport>);
        let stream = StreamName::new("orders").expect("valid");
        let map = transport.shard_map(&stream, None).await.expect("map");
        let shard = map.shards()[0].clone();
        transport
            .append(&stream, &shard, &batch(2))
            .await
            .expect("stored");
        let first = fake.last_stamp();
        fake.refuse_next(ErrorCode::OutOfOrderSequence);
        transport
            .append(&stream, &shard, &batch(2))
            .await
            .expect("stored on the retry");
        let second = fake.last_stamp();
        assert_ne!(second.producer_id, first.producer_id);
        assert_eq!(second.sequence, 0);
        assert_eq!(fake.append_calls(), 3);
        assert_eq!(fake.stored_records(), 4);
    }
}
