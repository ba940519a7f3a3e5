//! Replicated shards (R ≥ 2) on this node: every core named in a shard's replica set hosts a
//! replica of it over the shard's log, and the core metadata names sequencer of the shard's
//! epoch recovers it and sequences its appends (`docs/replication.md`, "In the server").
//!
//! - [`host`]: the driver of one shard's state machines on one core ([`ShardHost`]).
//! - [`wire`]: the messages' encoding between nodes (`docs/format/replication.md`).
//! - [`state`]: a replica's sealed epoch and committed offset on disk.
//!
//! This module keeps each core's hosts in step with the metadata (a task per core started with
//! the core, woken when commands apply), runs each host's tasks (storage, timer, one sender per
//! node), carries messages through the remote service `replica.deliver`, and appends to a
//! replicated shard through its sequencer ([`append`]). Shards with one replica keep the local
//! path of `crate::append`. Reads are served by any core hosting a replica ([`readable_log`]),
//! bounded by that replica's committed offset.
//!
//! Must never: acknowledge an append before its sequencer committed it (synced on W replicas
//! for `fsync`), let readers past a replica's committed offset, or run a sequencer for an epoch
//! its own replica already saw.

pub mod host;
pub mod state;
pub mod wire;

#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use runnel_core::batch::AlignedBytes;
use runnel_core::{BatchView, CheckedChunks, Limits, Offset, ShardId, StreamName};
use runnel_replicate::metadata::{Command, Durability, MetadataState, NodeId, Placement, Shard};
use runnel_replicate::shard::Epoch;
use runnel_segment::runtime::{first_of, sleep, spawn_detached, Event};
use runnel_segment::{DmaStorage, ShardLog};

use runnel_net::protocol::{ErrorCode, ErrorResponse};

use crate::append::{AppendError, Appended};
use crate::core::Core;
use crate::dedup::Dedup;
use crate::local::LocalShard;
use crate::mesh::codec::WireError;
use crate::mesh::{MeshError, RemoteService, Service};
use crate::ownership::{OwnedShard, ShardError, ShardFacts};

pub use host::ShardHost;
use wire::{decode_shard_messages, encode_shard_messages, ShardMessages};

/// The epoch the replication protocol runs for a shard whose metadata epoch is `epoch`: one
/// more, because the protocol's `Epoch(0)` means "no entry yet" (an empty log's last epoch)
/// while metadata numbers a shard's first sequencer 0. This is the only place the two meet
/// (with its inverse, [`stamped_epoch`]).
pub fn protocol_epoch(epoch: runnel_core::Epoch) -> Epoch {
    Epoch(
        epoch
            .0
            .checked_add(1)
            .expect("a metadata epoch below u64::MAX"),
    )
}

/// The epoch stamped into the header of a batch the protocol's epoch `epoch` assigned: the
/// metadata's number, as a shard with one replica stamps it ([`protocol_epoch`] inverted).
pub fn stamped_epoch(epoch: Epoch) -> runnel_core::Epoch {
    assert!(epoch.0 >= 1, "no entry is written by the empty log's epoch");
    runnel_core::Epoch(epoch.0 - 1)
}

/// A shard's replica set as the metadata gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaSet {
    /// The metadata epoch of the current sequencer.
    pub epoch: runnel_core::Epoch,
    /// Where the sequencer runs (one of `replicas`).
    pub sequencer: Placement,
    /// Every replica, the sequencer's included, on distinct nodes.
    pub replicas: Vec<Placement>,
    /// The stream's durability: `Stored` after a sync (`fsync`) or a write (`memory`).
    pub durability: Durability,
}

/// Why a replicated shard refused an append (or could not say whether it was stored).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicationError {
    /// This core is not (or no longer) the sequencer of the shard's epoch: nothing was
    /// stored; refresh the shard's owner and retry.
    #[error("shard {shard}: this core is not its sequencer now")]
    Deposed {
        /// The shard.
        shard: ShardId,
    },
    /// The sequencer is recovering the shard: retry shortly.
    #[error("shard {shard}: its sequencer is recovering")]
    Recovering {
        /// The shard.
        shard: ShardId,
    },
    /// Too many appends not yet committed: retry shortly.
    #[error("shard {shard}: {uncommitted} appends wait for a write quorum")]
    Backpressure {
        /// The shard.
        shard: ShardId,
        /// Entries not committed.
        uncommitted: usize,
    },
    /// The append was sent to the replicas but no write quorum held it in time, or its
    /// sequencer was deposed meanwhile: it may or may not be stored.
    #[error("shard {shard}: no write quorum confirmed the append; its outcome is unknown")]
    NoQuorum {
        /// The shard.
        shard: ShardId,
    },
    /// The shard's recovery found that replicas lost committed records (more than R−W
    /// replicas lost synced data): it refuses appends.
    #[error("shard {shard}: DATA LOSS, offsets below {committed} were committed but the replicas hold only up to {adopted_end}")]
    DataLoss {
        /// The shard.
        shard: ShardId,
        /// The committed offset a replica knew.
        committed: u64,
        /// Where the most up-to-date replica's log ends.
        adopted_end: u64,
    },
    /// This replica's storage failed.
    #[error("shard {shard}: replica storage failed: {reason}")]
    Storage {
        /// The shard.
        shard: ShardId,
        /// What failed.
        reason: String,
    },
}

/// The protocol's answer to a refused append of a replicated shard: "not the owner" when
/// nothing was stored and another sequencer may take it (the client refreshes the shards and
/// routes again), "unavailable, retry" while the shard recovers or waits for a quorum.
pub fn error_response(refusal: &ReplicationError) -> ErrorResponse {
    let (code, retry_after_ms) = match refusal {
        ReplicationError::Deposed { .. } => (ErrorCode::NotOwner, None),
        ReplicationError::Recovering { .. } => (ErrorCode::Unavailable, Some(100)),
        ReplicationError::Backpressure { .. } => (ErrorCode::Busy, Some(10)),
        ReplicationError::NoQuorum { .. } => (ErrorCode::Unavailable, Some(100)),
        ReplicationError::DataLoss { .. } | ReplicationError::Storage { .. } => {
            (ErrorCode::StorageFault, None)
        }
    };
    let mut response = ErrorResponse::new(code, refusal.to_string());
    response.retry_after_ms = retry_after_ms;
    response
}

/// How long an append waits for a write quorum before its outcome is reported unknown.
pub const APPEND_COMMIT_TIMEOUT_MS: u64 = 10_000;
/// Messages waiting for one node, at most: beyond, the oldest are dropped (the protocol
/// resends what matters), so a dead node costs bounded memory.
pub const OUTBOX_MESSAGES_MAX: usize = 8192;
/// How long a sender waits after a failed delivery before the next one, in milliseconds.
pub const DELIVERY_RETRY_MS: u64 = 100;
/// How often each core checks its hosts against the metadata even without a command, in
/// milliseconds.
pub const RECONCILE_INTERVAL_MS: u64 = 500;

/// The remote service carrying protocol messages to a shard's host on a core of any node.
pub struct Deliver;

impl Service for Deliver {
    const NAME: &'static str = "replica.deliver";
    type Request = ShardMessages;
    type Response = ();
}

impl RemoteService for Deliver {
    fn encode_request(request: &ShardMessages, out: &mut Vec<u8>) {
        encode_shard_messages(request, out);
    }

    fn decode_request(bytes: &[u8]) -> Result<ShardMessages, WireError> {
        decode_shard_messages(bytes)
    }

    fn encode_response(_response: &(), _out: &mut Vec<u8>) {}

    fn decode_response(bytes: &[u8]) -> Result<(), WireError> {
        match bytes.len() {
            0 => Ok(()),
            bytes => Err(WireError::TrailingBytes { bytes }),
        }
    }
}

/// The replicated shards hosted on one core.
#[derive(Default)]
pub struct ReplicatedShards {
    hosts: RefCell<HashMap<ShardId, Rc<ShardHost>>>,
    opening: RefCell<HashSet<ShardId>>,
    bumping: RefCell<HashSet<ShardId>>,
    changed: Event,
}

impl ReplicatedShards {
    /// The host of `shard` on this core, if it hosts a replica of it.
    pub fn host(&self, shard: ShardId) -> Option<Rc<ShardHost>> {
        self.hosts.borrow().get(&shard).cloned()
    }

    /// The metadata changed: check the hosts against it.
    pub fn metadata_changed(&self) {
        self.changed.notify();
    }

    /// Stops every host (the core closes).
    pub fn stop_all(&self) {
        for (_, host) in self.hosts.borrow_mut().drain() {
            host.stop();
        }
        self.changed.notify();
    }
}

/// The replica set of `shard` in `state`, when it has at least two replicas.
pub fn replica_set(state: &MetadataState, shard: &Shard) -> Option<ReplicaSet> {
    let replicas = replicas_of(shard);
    if replicas.len() < 2 {
        return None;
    }
    let stream = state.stream_by_id(shard.stream)?;
    Some(ReplicaSet {
        epoch: shard.epoch,
        sequencer: shard.placement,
        replicas,
        durability: stream.config.durability,
    })
}

/// Every replica of `shard`, its sequencer's included.
fn replicas_of(shard: &Shard) -> Vec<Placement> {
    shard.replicas.clone()
}

/// The log a read of `shard` is served from on this core, and the replica's host when the
/// shard is replicated: readers of a replicated shard see only its committed records, which
/// every replica holds alike, so any core hosting a replica serves them (bounded by that
/// replica's committed offset, [`ShardHost::visible_end`]); an unreplicated shard is read on
/// the core owning it. A replicated shard whose replica is not open here yet is refused with
/// [`ShardError::NotLocalYet`] (retry) rather than read past its committed offset.
pub async fn readable_log(
    core: &Core,
    stream: &StreamName,
    shard: ShardId,
) -> Result<(OwnedShard, Option<Rc<ShardHost>>), ShardError> {
    let host = core.replicated.host(shard);
    let facts = {
        let state = core.metadata.borrow();
        let stream_record = state
            .stream(stream)
            .ok_or_else(|| ShardError::UnknownStream {
                stream: stream.clone(),
            })?;
        let shard_record = state
            .shard(shard)
            .filter(|record| record.stream == stream_record.id)
            .ok_or_else(|| ShardError::UnknownShard {
                stream: stream.clone(),
                shard,
            })?;
        let replicated = replica_set(&state, shard_record).is_some();
        if replicated
            && host.is_none()
            && shard_record
                .replicas
                .iter()
                .any(|p| p.node == core.node_id() && p.core == core.index)
        {
            return Err(ShardError::NotLocalYet { shard });
        }
        ShardFacts {
            id: shard_record.id,
            key_range: shard_record.key_range,
            epoch: shard_record.epoch,
            open: shard_record.is_open(),
            durability: stream_record.config.durability,
            replicated,
        }
    };
    match host {
        Some(host) => Ok((
            OwnedShard {
                log: Rc::clone(host.log()),
                shard: facts,
            },
            Some(host),
        )),
        // Not a replica here: the owner's rules (this core, or "not owner" naming it).
        None => Ok((core.owned_log(stream, shard).await?, None)),
    }
}

/// Registers the service `replica.deliver` on `core`.
pub fn register(core: &Core) {
    core.mesh
        .register_remote::<Deliver, _, _>(|core, request| async move {
            if let Some(host) = core.replicated.host(request.shard) {
                host.deliver(request.from, request.messages);
            }
            // A shard not hosted here (yet): the messages are lost, and resent.
            Ok::<(), MeshError>(())
        });
}

/// Keeps this core's hosts in step with the metadata until the core closes (one task per core,
/// started with it).
pub async fn run(core: Rc<Core>) {
    if !core.wait_ready().await {
        return;
    }
    loop {
        if core.shutting_down() {
            core.replicated.stop_all();
            return;
        }
        let changed = core.replicated.changed.listen();
        reconcile(&core);
        let _ = first_of(
            changed,
            sleep(Duration::from_millis(RECONCILE_INTERVAL_MS)),
            core.until_stopping(),
        )
        .await;
    }
}

/// Opens, updates and stops this core's hosts to match the metadata.
fn reconcile(core: &Rc<Core>) {
    let here = |p: &Placement| p.node == core.node_id() && p.core == core.index;
    let wanted: HashMap<ShardId, (ReplicaSet, u64)> = {
        let state = core.metadata.borrow();
        state
            .shards()
            .filter_map(|shard| {
                let set = replica_set(&state, shard)?;
                let retention = state
                    .stream_by_id(shard.stream)
                    .map_or(u64::MAX, |s| s.config.retention_ms);
                set.replicas
                    .iter()
                    .any(here)
                    .then_some((shard.id, (set, retention)))
            })
            .collect()
    };
    let gone: Vec<ShardId> = core
        .replicated
        .hosts
        .borrow()
        .keys()
        .filter(|id| !wanted.contains_key(id))
        .copied()
        .collect();
    for id in gone {
        let removed = core.replicated.hosts.borrow_mut().remove(&id);
        if let Some(host) = removed {
            host.stop();
            let deleted = core.metadata.borrow().shard(id).is_none();
            if deleted {
                let core = Rc::clone(core);
                spawn_detached(async move { forget_deleted(&core, host).await });
            }
        }
    }
    for (id, (set, retention)) in wanted {
        match core.replicated.host(id) {
            Some(host) => {
                if host.set() != set {
                    host.update(set, core.index);
                }
                if host.needs_new_epoch() {
                    ask_for_new_epoch(core, &host);
                }
            }
            None => {
                if core.replicated.opening.borrow_mut().insert(id) {
                    let core = Rc::clone(core);
                    spawn_detached(async move {
                        open_host(&core, id, set, retention).await;
                        core.replicated.opening.borrow_mut().remove(&id);
                    });
                }
            }
        }
    }
}

/// Proposes `BumpEpoch` for a shard whose named sequencer (this core) finds its replica
/// already sealed at the shard's epoch: the same core, one epoch later (at most one proposal in
/// flight per shard; a refused one is fine: someone else bumped first).
fn ask_for_new_epoch(core: &Rc<Core>, host: &Rc<ShardHost>) {
    let shard = host.shard();
    if !core.replicated.bumping.borrow_mut().insert(shard) {
        return;
    }
    let set = host.set();
    let command = Command::BumpEpoch {
        shard,
        from: set.epoch,
        sequencer: set.sequencer,
    };
    let core = Rc::clone(core);
    spawn_detached(async move {
        tracing::info!(%shard, from = set.epoch.0, "asking metadata for a new epoch");
        if let Err(error) = core.propose(command).await {
            tracing::info!(%shard, error = %error.message, "epoch bump not applied");
            sleep(Duration::from_millis(RECONCILE_INTERVAL_MS)).await;
        }
        core.replicated.bumping.borrow_mut().remove(&shard);
        core.replicated.metadata_changed();
    });
}

/// After a shard was deleted: closes this core's replica log of it and removes its directory
/// (the core named in its placement does it in `Core::apply`; this is for the other replicas).
async fn forget_deleted(core: &Rc<Core>, host: Rc<ShardHost>) {
    let id = host.shard();
    drop(host);
    // The host's tasks end at their next wake-up and drop their hold of the log.
    sleep(Duration::from_millis(host::TICK_MS * 2)).await;
    let local = core.shards.borrow_mut().remove(&id);
    if let Some(local) = local {
        core.close_log(&local).await;
    }
    let dir = core.shard_dir(id);
    if dir.exists() {
        if let Err(error) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(shard = %id, %error, "removing a deleted shard's replica");
        }
    }
}

/// Opens the host of shard `id` on this core: its log (created if this node has none yet),
/// its replica restored, its tasks started.
async fn open_host(core: &Rc<Core>, id: ShardId, set: ReplicaSet, retention_ms: u64) {
    let dir = core.shard_dir(id);
    if !dir.exists() {
        if let Err(error) = ShardLog::create(&DmaStorage, &dir, &core.config.log_config()).await {
            tracing::error!(shard = %id, %error, "creating a replica's log");
            return;
        }
    }
    let local = {
        let mut shards = core.shards.borrow_mut();
        Rc::clone(
            shards
                .entry(id)
                .or_insert_with(|| Rc::new(LocalShard::new(id, retention_ms))),
        )
    };
    let log = match core.open_log(&local).await {
        Ok(log) => log,
        Err(error) => {
            tracing::error!(shard = %id, %error, "opening a replica's log");
            return;
        }
    };
    let host = match ShardHost::open(id, core.node_id(), core.index, dir, log, set).await {
        Ok(host) => host,
        Err(error) => {
            tracing::error!(shard = %id, %error, "restoring a replica");
            return;
        }
    };
    if core.shutting_down() {
        host.stop();
        return;
    }
    core.replicated
        .hosts
        .borrow_mut()
        .insert(id, Rc::clone(&host));
    spawn_detached(Rc::clone(&host).run_storage());
    spawn_detached(run_ticks(Rc::clone(&host)));
    spawn_detached(run_senders(Rc::clone(core), host));
    // The set may have changed while the host opened.
    core.replicated.metadata_changed();
}

/// The host's timer.
async fn run_ticks(host: Rc<ShardHost>) {
    while !host.is_stopped() {
        sleep(Duration::from_millis(host::TICK_MS)).await;
        host.collect_reads();
        host.tick();
    }
}

/// Starts one sender per node the host has messages for; each sends them in order, a delivery
/// at a time.
async fn run_senders(core: Rc<Core>, host: Rc<ShardHost>) {
    let sending: Rc<RefCell<HashSet<NodeId>>> = Rc::default();
    loop {
        host.outbox_changed().await;
        if host.is_stopped() {
            return;
        }
        for node in host.outbox_nodes() {
            if sending.borrow_mut().insert(node) {
                let (core, host, sending) =
                    (Rc::clone(&core), Rc::clone(&host), Rc::clone(&sending));
                spawn_detached(async move {
                    send_to(&core, &host, node).await;
                    sending.borrow_mut().remove(&node);
                });
            }
        }
        // Let the senders take what is queued before looking again.
        runnel_segment::runtime::yield_now().await;
    }
}

async fn send_to(core: &Rc<Core>, host: &ShardHost, node: NodeId) {
    loop {
        let messages = host.take_outbox(
            node,
            wire::MESSAGES_PER_DELIVERY_MAX,
            wire::DELIVERY_BYTES_MAX,
        );
        if messages.is_empty() || host.is_stopped() {
            return;
        }
        let Some(target) = host.core_of(node) else {
            continue; // Not a replica any more: drop.
        };
        let request = ShardMessages {
            shard: host.shard(),
            from: core.node_id(),
            messages,
        };
        if let Err(error) = core.call_at::<Deliver>(node, target, request).await {
            tracing::debug!(shard = %host.shard(), node = node.0, %error, "delivering replication messages");
            sleep(Duration::from_millis(DELIVERY_RETRY_MS)).await;
        }
    }
}

/// Appends a checked batch to a replicated shard whose sequencer runs on this core: joins its
/// chunks, validates its records (keys against the shard's range), judges its producer stamp
/// (`crate::dedup`, [`Core::dedup_replicated`]), hands it to the sequencer and returns once it
/// is committed.
///
/// A stamped batch whose commit is not confirmed in time while its epoch goes on may still
/// commit: its producer stays "in flight" (a retry is told to wait) until it does, and the
/// table then learns it, so the retry is answered as a duplicate with its offsets; if the
/// epoch ends first, the next epoch's table is rebuilt from the log recovery adopted, which
/// holds the batch or not.
pub async fn append<C: AsRef<[u8]>>(
    core: &Core,
    host: &Rc<ShardHost>,
    checked: &CheckedChunks<'_, C>,
    chunks: &[C],
    facts: &ShardFacts,
    stream: &StreamName,
    limits: &Limits,
) -> Result<Appended, AppendError> {
    let len = checked.len();
    let mut joined = AlignedBytes::with_capacity(len);
    for chunk in chunks {
        let left = len - joined.len();
        if left == 0 {
            break;
        }
        let bytes = chunk.as_ref();
        joined.extend_from_slice(bytes.get(..left.min(bytes.len())).unwrap_or_default());
    }
    let view = BatchView::validate_with(&joined, limits, |index, record| match record.key() {
        Some(key) if !facts.key_range.contains_key(key) => Err(AppendError::WrongShard {
            stream: stream.clone(),
            shard: facts.id,
            record: index,
        }),
        _ => Ok(()),
    })?;
    let header = view.header();
    let count = u64::from(view.record_count());
    let appended = |first: u64| Appended {
        shard: facts.id,
        base_offset: Offset(first),
        last_offset: Offset(first + count - 1),
    };
    let pending = match core
        .dedup_replicated(host, header.producer, header.record_count)
        .await?
    {
        Dedup::Store(pending) => pending,
        // Answered with its original offsets once they are committed (an adopted entry
        // commits with the epoch's first append): until then, "retry".
        Dedup::Duplicate {
            base_offset,
            last_offset,
        } => {
            let timeout = Duration::from_millis(APPEND_COMMIT_TIMEOUT_MS);
            let deadline = std::time::Instant::now() + timeout;
            while host.visible_end() <= last_offset {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() || host.is_stopped() {
                    return Err(ReplicationError::Recovering { shard: facts.id }.into());
                }
                host.wait_changed(left).await;
            }
            return Ok(Appended {
                shard: facts.id,
                base_offset,
                last_offset,
            });
        }
    };
    let (epoch, first) = host.sequence(Arc::from(view.as_bytes()), count)?;
    let timeout = Duration::from_millis(APPEND_COMMIT_TIMEOUT_MS);
    match host.wait_committed(epoch, first, count, timeout).await {
        Ok(()) => {
            pending.stored(Offset(first));
            Ok(appended(first))
        }
        Err(refusal) => {
            if header.producer.producer_id != 0 && still_sequencing(host, epoch) {
                let host = Rc::clone(host);
                spawn_detached(async move {
                    while still_sequencing(&host, epoch) {
                        if host
                            .wait_committed(epoch, first, count, timeout)
                            .await
                            .is_ok()
                        {
                            pending.stored(Offset(first));
                            return;
                        }
                    }
                    // The epoch ended: `pending` is dropped, and the next epoch's table is
                    // rebuilt from the adopted log.
                });
            }
            Err(refusal.into())
        }
    }
}

/// Whether `host` still sequences epoch `epoch`, sound (not stopped, no storage fault).
fn still_sequencing(host: &ShardHost, epoch: Epoch) -> bool {
    !host.is_stopped()
        && host.failure().is_none()
        && host.sequencing().is_ok_and(|(current, _)| current == epoch)
}
