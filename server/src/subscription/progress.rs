//! Committed progress: each core persists, through the metadata log, the committed offset of
//! every (subscription, shard) it owns that moved — every `subscriptions.commit_interval_ms`,
//! and once more when the node stops, as one batch command per pass — and reports progress for
//! `DescribeSubscription`.
//!
//! A commit names an offset below which every record was acked, so persisting it late only
//! means redelivery after a crash, never loss.

use std::rc::Rc;
use std::time::Duration;

use runnel_core::Offset;
use runnel_replicate::metadata::{
    Command, Durability, ProgressCommit, SubscriptionId, PROGRESS_BATCH_MAX,
};

use super::services::ShardProgress;
use super::slot::{get_or_create, DispatchSlot};
use crate::core::{visible, Core};
use crate::mesh::MeshError;
use runnel_segment::runtime::sleep;

/// Persists moved progress every commit interval until the node stops.
pub async fn commit_progress(core: Rc<Core>) {
    let interval = Duration::from_millis(core.config.subscriptions.commit_interval_ms);
    while !core.shutting_down() {
        sleep(interval).await;
        commit_moved(&core).await;
    }
}

/// Proposes the commits of every slot of this core whose committed offset moved since its last
/// commit (or was never committed), as one `CommitProgressBatch` per up to
/// `PROGRESS_BATCH_MAX` slots: one metadata entry per core and interval, however many
/// subscriptions and shards moved. Returns how many commits were persisted.
pub async fn commit_moved(core: &Rc<Core>) -> usize {
    let moved: Vec<(Rc<DispatchSlot>, Offset)> = core
        .subscriptions
        .slots()
        .into_iter()
        .filter(|slot| slot.ended().is_none())
        .filter_map(|slot| {
            let committed = slot.dispatch.borrow().committed();
            let persisted = slot.persisted.get();
            (persisted.is_none_or(|persisted| persisted < committed)).then_some((slot, committed))
        })
        .collect();
    let mut persisted = 0;
    for chunk in moved.chunks(PROGRESS_BATCH_MAX) {
        let commits = chunk
            .iter()
            .map(|(slot, offset)| ProgressCommit {
                subscription: slot.subscription,
                shard: slot.shard,
                offset: *offset,
            })
            .collect();
        if let Err(error) = core.propose(Command::CommitProgressBatch { commits }).await {
            // Retried next pass (the batch is refused only when empty or too long, which
            // the chunks are not; this is the node stopping or the metadata log failing).
            tracing::debug!(%error, "progress batch not committed");
            continue;
        }
        // A commit the batch skipped (its subscription deleted meanwhile) did not take: only
        // those the metadata now holds count as persisted.
        let state = core.metadata.borrow();
        for (slot, offset) in chunk {
            let taken = state
                .subscription_by_id(slot.subscription)
                .and_then(|subscription| subscription.committed.get(&slot.shard))
                .is_some_and(|committed| committed >= offset);
            if taken {
                slot.persisted.set(Some(*offset));
                persisted += 1;
            }
        }
    }
    persisted
}

/// Commits `slot`'s committed offset if it moved; true if a commit was persisted.
async fn commit(core: &Rc<Core>, slot: &DispatchSlot) -> bool {
    let committed = slot.dispatch.borrow().committed();
    if slot
        .persisted
        .get()
        .is_some_and(|persisted| persisted >= committed)
    {
        return false;
    }
    let command = Command::CommitProgress {
        subscription: slot.subscription,
        shard: slot.shard,
        offset: committed,
    };
    match core.propose(command).await {
        Ok(()) => {
            slot.persisted.set(Some(committed));
            true
        }
        Err(error) => {
            // A subscription deleted meanwhile refuses; anything else is retried next pass.
            tracing::debug!(subscription = %slot.subscription, shard = %slot.shard, %error, "progress not committed");
            false
        }
    }
}

/// Resolves and persists where delivery starts on this core's shards of a subscription just
/// created, so that `Latest` means "after the create was answered" across restarts too.
pub async fn prepare(core: &Rc<Core>, subscription: SubscriptionId) -> Result<(), MeshError> {
    for shard in local_shards(core, subscription) {
        let slot = match get_or_create(core, subscription, shard).await {
            Ok(slot) => slot,
            Err(error) => return Err(MeshError::failed(error.message)),
        };
        if slot.persisted.get().is_none() && !commit(core, &slot).await {
            return Err(MeshError::failed(format!(
                "could not persist the start of shard {shard} of subscription {subscription}"
            )));
        }
    }
    Ok(())
}

/// The progress of this core's shards of `subscription`: from the live dispatch when there is
/// one, else from the metadata.
pub async fn local_progress(
    core: &Rc<Core>,
    subscription: SubscriptionId,
) -> Result<Vec<ShardProgress>, MeshError> {
    let mut progress = Vec::new();
    for shard in local_shards(core, subscription) {
        let Some(local) = core.local_shard(shard) else {
            continue;
        };
        let slot = core
            .subscriptions
            .dispatches
            .borrow()
            .get(&(subscription, shard))
            .cloned();
        progress.push(match slot {
            Some(slot) => {
                let dispatch = slot.dispatch.borrow();
                ShardProgress {
                    shard,
                    committed: Some(dispatch.committed()),
                    end: slot.end(),
                    unacked: dispatch.unacked(),
                }
            }
            None => {
                let (committed, bound) = {
                    let state = core.metadata.borrow();
                    let subscription = state.subscription_by_id(subscription);
                    let durability = subscription
                        .and_then(|sub| state.stream_by_id(sub.stream))
                        .map_or(Durability::Fsync, |stream| stream.config.durability);
                    (
                        subscription.and_then(|sub| sub.committed.get(&shard).copied()),
                        visible(durability),
                    )
                };
                // A replicated shard's end is its replica's committed offset.
                let replicated = core.replicated.host(shard).map(|host| host.visible_end());
                let end = match replicated.or_else(|| local.visible_end(bound)) {
                    Some(end) => end,
                    // Not known without opening the log (not opened since the start).
                    None => match core.shard_log(&local).await {
                        Ok(log) => crate::local::visible_end(&log, bound),
                        Err(error) => return Err(MeshError::failed(error.message)),
                    },
                };
                ShardProgress {
                    shard,
                    committed,
                    end,
                    unacked: 0,
                }
            }
        });
    }
    Ok(progress)
}

/// The shards of `subscription`'s stream this core owns, in id order.
fn local_shards(core: &Core, subscription: SubscriptionId) -> Vec<runnel_core::ShardId> {
    let state = core.metadata.borrow();
    let Some(stream) = state.subscription_by_id(subscription).map(|sub| sub.stream) else {
        return Vec::new();
    };
    state
        .shards()
        .filter(|shard| {
            shard.stream == stream
                && shard.placement.node == core.node_id()
                && shard.placement.core == core.index
        })
        .map(|shard| shard.id)
        .collect()
}
