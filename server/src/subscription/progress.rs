//! Committed progress: each core persists, through the metadata log, the committed offset of
//! every (subscription, shard) it owns that moved — every `subscriptions.commit_interval_ms`,
//! and once more when the node stops — and reports progress for `DescribeSubscription`.
//!
//! A commit names an offset below which every record was acked, so persisting it late only
//! means redelivery after a crash, never loss.

use std::rc::Rc;
use std::time::Duration;

use runnel_replicate::metadata::{Command, Durability, SubscriptionId};

use super::slot::{get_or_create, DispatchSlot};
use crate::ask::{Answer, ShardProgress};
use crate::core::{visible, Core};

/// Persists moved progress every commit interval until the node stops.
pub async fn commit_progress(core: Rc<Core>) {
    let interval = Duration::from_millis(core.config.subscriptions.commit_interval_ms);
    while !core.shutting_down() {
        glommio::timer::sleep(interval).await;
        commit_moved(&core).await;
    }
}

/// Proposes a commit for every slot of this core whose committed offset moved since its last
/// commit (or was never committed). Returns how many were persisted.
pub async fn commit_moved(core: &Rc<Core>) -> usize {
    let mut persisted = 0;
    for slot in core.subscriptions.slots() {
        if slot.ended().is_some() {
            continue;
        }
        if commit(core, &slot).await {
            persisted += 1;
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
pub async fn prepare(core: &Rc<Core>, subscription: SubscriptionId) -> Answer {
    for shard in local_shards(core, subscription) {
        let slot = match get_or_create(core, subscription, shard).await {
            Ok(slot) => slot,
            Err(error) => return Answer::Failed(error.message),
        };
        if slot.persisted.get().is_none() && !commit(core, &slot).await {
            return Answer::Failed(format!(
                "could not persist the start of shard {shard} of subscription {subscription}"
            ));
        }
    }
    Answer::Done
}

/// The progress of this core's shards of `subscription`: from the live dispatch when there is
/// one, else from the metadata.
pub async fn local_progress(core: &Rc<Core>, subscription: SubscriptionId) -> Answer {
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
                let end = match local.visible_end(bound) {
                    Some(end) => end,
                    // Not known without opening the log (not opened since the start).
                    None => match core.shard_log(&local).await {
                        Ok(log) => crate::local::visible_end(&log, bound),
                        Err(error) => return Answer::Failed(error.message),
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
    Answer::Progress(progress)
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
