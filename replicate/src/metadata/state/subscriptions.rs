//! Subscriptions in the state: create, delete and commit progress, and the queries about them.
//!
//! Subscriptions are filed by name (listings come out in name order) and found by id through
//! `subscription_names`, a derived index that `apply` keeps up to date and a decoded snapshot
//! rebuilds. The invariant check compares it with a rebuilt one.
//!
//! Connected consumers, assignments and unacked records are not here: they are runtime state of
//! the nodes. Only what must survive a restart is: the configuration and committed progress.

use std::collections::BTreeMap;

use runnel_core::{Offset, ShardId, StreamName};

use super::MetadataState;
use crate::metadata::command::{Applied, ProgressCommit, PROGRESS_BATCH_MAX};
use crate::metadata::error::MetadataError;
use crate::metadata::stream::StreamId;
use crate::metadata::subscription::{
    Subscription, SubscriptionConfig, SubscriptionId, SubscriptionName, COMMITTED_OFFSETS_MAX,
    SUBSCRIPTIONS_MAX,
};

impl MetadataState {
    /// The live subscription named `name`.
    pub fn subscription(&self, name: &SubscriptionName) -> Option<&Subscription> {
        self.subscriptions.get(name)
    }

    /// The live subscription with id `id`.
    pub fn subscription_by_id(&self, id: SubscriptionId) -> Option<&Subscription> {
        self.subscription_names
            .get(&id)
            .and_then(|name| self.subscriptions.get(name))
    }

    /// Every live subscription, in name order.
    pub fn subscriptions(&self) -> impl ExactSizeIterator<Item = &Subscription> + '_ {
        self.subscriptions.values()
    }

    /// The subscriptions of the live stream `stream`, in name order.
    pub fn subscriptions_of(
        &self,
        stream: &StreamName,
    ) -> Result<Vec<&Subscription>, MetadataError> {
        let stream = self.existing_stream(stream)?;
        Ok(self.subscriptions_of_stream(stream.id).collect())
    }

    /// The subscriptions of stream `stream`, in name order. Scans every subscription: there are
    /// at most [`SUBSCRIPTIONS_MAX`], and only listings and stream deletes ask.
    pub(crate) fn subscriptions_of_stream(
        &self,
        stream: StreamId,
    ) -> impl Iterator<Item = &Subscription> + '_ {
        self.subscriptions
            .values()
            .filter(move |subscription| subscription.stream == stream)
    }

    /// Committed offsets held over all subscriptions. Scans every subscription: only a commit
    /// on a shard the subscription has not committed on before asks.
    pub(crate) fn committed_offsets(&self) -> usize {
        self.subscriptions
            .values()
            .map(|subscription| subscription.committed.len())
            .sum()
    }

    /// The checks of a `CreateSubscription`; returns the subscription's stream and id.
    pub(crate) fn check_create_subscription(
        &self,
        config: &SubscriptionConfig,
    ) -> Result<(StreamId, SubscriptionId), MetadataError> {
        config.validate()?;
        let stream = self.existing_stream(&config.stream)?.id;
        if self.subscriptions.contains_key(&config.name) {
            return Err(MetadataError::SubscriptionExists {
                name: config.name.clone(),
            });
        }
        if self.subscriptions.len() >= SUBSCRIPTIONS_MAX {
            return Err(MetadataError::LimitExceeded {
                what: "subscriptions",
                max: SUBSCRIPTIONS_MAX as u64,
            });
        }
        let id = SubscriptionId(self.next_subscription_id);
        if self.next_subscription_id.checked_add(1).is_none() {
            return Err(MetadataError::CounterExhausted {
                counter: "subscription id",
            });
        }
        Ok((stream, id))
    }

    pub(crate) fn create_subscription(
        &mut self,
        config: &SubscriptionConfig,
        now_ms: u64,
    ) -> Result<Applied, MetadataError> {
        let (stream, id) = self.check_create_subscription(config)?;

        // Accepted: from here on nothing fails.
        self.next_subscription_id = id.0 + 1;
        let subscription = Subscription {
            id,
            config: config.clone(),
            stream,
            created_ms: now_ms,
            committed: BTreeMap::new(),
        };
        self.subscription_names.insert(id, config.name.clone());
        self.subscriptions
            .insert(config.name.clone(), subscription.clone());
        Ok(Applied::SubscriptionCreated { subscription })
    }

    /// The checks of a `DeleteSubscription`.
    pub(crate) fn check_delete_subscription(
        &self,
        name: &SubscriptionName,
    ) -> Result<(), MetadataError> {
        if !self.subscriptions.contains_key(name) {
            return Err(MetadataError::SubscriptionNotFound { name: name.clone() });
        }
        Ok(())
    }

    pub(crate) fn delete_subscription(
        &mut self,
        name: &SubscriptionName,
    ) -> Result<Applied, MetadataError> {
        self.check_delete_subscription(name)?;

        // Accepted: from here on nothing fails.
        let subscription = self.remove_subscription(name);
        Ok(Applied::SubscriptionDeleted { subscription })
    }

    /// The checks of a `CommitProgress`; returns the progress committed on `shard` before.
    pub(crate) fn check_commit_progress(
        &self,
        id: SubscriptionId,
        shard: ShardId,
    ) -> Result<Option<Offset>, MetadataError> {
        let subscription = self
            .subscription_by_id(id)
            .ok_or(MetadataError::SubscriptionIdNotFound { subscription: id })?;
        let found = self
            .shards
            .get(&shard)
            .ok_or(MetadataError::ShardNotFound { shard })?;
        if found.stream != subscription.stream {
            return Err(MetadataError::ShardNotInSubscription {
                subscription: id,
                shard,
            });
        }
        let previous = subscription.committed.get(&shard).copied();
        if previous.is_none() && self.committed_offsets() >= COMMITTED_OFFSETS_MAX {
            return Err(MetadataError::LimitExceeded {
                what: "committed offsets",
                max: COMMITTED_OFFSETS_MAX as u64,
            });
        }
        Ok(previous)
    }

    pub(crate) fn commit_progress(
        &mut self,
        id: SubscriptionId,
        shard: ShardId,
        offset: Offset,
    ) -> Result<Applied, MetadataError> {
        let previous = self.check_commit_progress(id, shard)?;

        // Accepted: from here on nothing fails. A commit at or below the committed offset came
        // late (another consumer, a retry) and changes nothing.
        let committed = previous.map_or(offset, |previous| previous.max(offset));
        if previous != Some(committed) {
            let name = self
                .subscription_names
                .get(&id)
                .expect("the subscription was found above");
            self.subscriptions
                .get_mut(name)
                .expect("the id index names live subscriptions")
                .committed
                .insert(shard, committed);
        }
        Ok(Applied::ProgressCommitted {
            subscription: id,
            shard,
            committed,
            previous,
        })
    }

    /// The checks of a `CommitProgressBatch` as a whole: not empty, not too long. Each commit
    /// is checked when it is applied, and skipped if refused.
    pub(crate) fn check_progress_batch(commits: &[ProgressCommit]) -> Result<(), MetadataError> {
        if commits.is_empty() || commits.len() > PROGRESS_BATCH_MAX {
            return Err(MetadataError::LimitExceeded {
                what: "commits in a progress batch (1 or more)",
                max: PROGRESS_BATCH_MAX as u64,
            });
        }
        Ok(())
    }

    pub(crate) fn commit_progress_batch(
        &mut self,
        commits: &[ProgressCommit],
    ) -> Result<Applied, MetadataError> {
        Self::check_progress_batch(commits)?;
        let mut taken = 0;
        let mut skipped = Vec::new();
        for commit in commits {
            match self.commit_progress(commit.subscription, commit.shard, commit.offset) {
                Ok(_) => taken += 1,
                Err(error) => skipped.push((*commit, error)),
            }
        }
        Ok(Applied::ProgressBatchCommitted { taken, skipped })
    }

    /// The id index of `subscriptions`, built from scratch. (Two subscriptions with one id
    /// collapse into one entry; the invariant check refuses that separately.)
    pub(crate) fn index_subscriptions(
        subscriptions: &BTreeMap<SubscriptionName, Subscription>,
    ) -> BTreeMap<SubscriptionId, SubscriptionName> {
        subscriptions
            .values()
            .map(|subscription| (subscription.id, subscription.config.name.clone()))
            .collect()
    }

    /// Removes the live subscription `name` and returns it.
    pub(crate) fn remove_subscription(&mut self, name: &SubscriptionName) -> Subscription {
        let subscription = self
            .subscriptions
            .remove(name)
            .expect("only live subscriptions are removed");
        let indexed = self.subscription_names.remove(&subscription.id);
        assert_eq!(
            indexed.as_ref(),
            Some(name),
            "subscription index out of date for {name}"
        );
        subscription
    }
}

#[cfg(test)]
mod tests;
