//! Changes to a stream's shards after its creation: split, merge, and epoch bumps (failover).
//!
//! Splitting seals an open shard and opens two children with the halves of its range
//! ([`KeyRange::split`]); merging seals two adjacent open shards and opens one child with their
//! union ([`KeyRange::merge`]). Data is never moved: sealed shards stay readable and record
//! their children, and children record their parents, so a per-key reader can walk from the
//! oldest shard to the newest. Children start at epoch 0 and are placed like new shards, with
//! replica sets of their stream's replication factor.

use runnel_core::{Epoch, ShardId};

use super::command::Applied;
use super::error::MetadataError;
use super::shard::{Placement, Shard, ShardStatus};
use super::state::{check_replication_factor, MetadataState};
use super::stream::StreamId;

impl MetadataState {
    /// The checks of a `SplitShard`; returns the two children as it would create them.
    pub(crate) fn plan_split(
        &self,
        shard: ShardId,
        now_ms: u64,
    ) -> Result<Vec<Shard>, MetadataError> {
        let parent = self.open_shard(shard)?;
        let (low, high) = parent
            .key_range
            .split()
            .map_err(|_| MetadataError::ShardTooSmall { shard })?;
        let stream = self.stream_and_replication_factor(parent);
        self.check_room_for_shards(2)?;
        self.check_shard_ids(2)?;
        let ring = self.core_ring()?;
        check_replication_factor(&ring, stream.1)?;
        Ok([low, high]
            .into_iter()
            .zip(0u64..)
            .map(|(key_range, nth)| {
                self.planned_shard(nth, &ring, stream, key_range, vec![shard], now_ms)
            })
            .collect())
    }

    pub(crate) fn split_shard(
        &mut self,
        shard: ShardId,
        now_ms: u64,
    ) -> Result<Applied, MetadataError> {
        let children = self.plan_split(shard, now_ms)?;

        // Accepted: from here on nothing fails.
        self.take_planned(&children);
        let parent = self.seal(shard, children.iter().map(|child| child.id).collect());
        for child in &children {
            self.routing.open_shard(child);
            self.shards.insert(child.id, child.clone());
        }
        Ok(Applied::ShardSplit { parent, children })
    }

    /// The checks of a `MergeShards`; returns the parents in key order and the child as it
    /// would create it.
    pub(crate) fn plan_merge(
        &self,
        left: ShardId,
        right: ShardId,
        now_ms: u64,
    ) -> Result<(Vec<ShardId>, Shard), MetadataError> {
        let not_adjacent = MetadataError::NotAdjacent { left, right };
        let left_shard = self.existing_shard(left)?;
        let right_shard = self.existing_shard(right)?;
        if left == right {
            return Err(not_adjacent);
        }
        for shard in [left_shard, right_shard] {
            if !shard.is_open() {
                return Err(MetadataError::ShardSealed { shard: shard.id });
            }
        }
        if left_shard.stream != right_shard.stream {
            return Err(not_adjacent);
        }
        let key_range = left_shard
            .key_range
            .merge(&right_shard.key_range)
            .map_err(|_| not_adjacent)?;
        let stream = self.stream_and_replication_factor(left_shard);
        let parents = if left_shard.key_range.start() < right_shard.key_range.start() {
            vec![left, right]
        } else {
            vec![right, left]
        };
        self.check_room_for_shards(1)?;
        self.check_shard_ids(1)?;
        let ring = self.core_ring()?;
        check_replication_factor(&ring, stream.1)?;
        let child = self.planned_shard(0, &ring, stream, key_range, parents.clone(), now_ms);
        Ok((parents, child))
    }

    pub(crate) fn merge_shards(
        &mut self,
        left: ShardId,
        right: ShardId,
        now_ms: u64,
    ) -> Result<Applied, MetadataError> {
        let (parents, child) = self.plan_merge(left, right, now_ms)?;

        // Accepted: from here on nothing fails.
        self.take_planned(std::slice::from_ref(&child));
        let parents = parents
            .into_iter()
            .map(|parent| self.seal(parent, vec![child.id]))
            .collect();
        self.routing.open_shard(&child);
        self.shards.insert(child.id, child.clone());
        Ok(Applied::ShardsMerged { parents, child })
    }

    /// The epoch after `shard`'s current one, whatever its status.
    pub(crate) fn next_epoch(&self, shard: ShardId) -> Result<Epoch, MetadataError> {
        let epoch = self.existing_shard(shard)?.epoch;
        epoch
            .0
            .checked_add(1)
            .map(Epoch)
            .ok_or(MetadataError::CounterExhausted { counter: "epoch" })
    }

    /// The checks of a `BumpEpoch`, in this order: the shard exists, is open, is still at
    /// epoch `from`, and has a replica at `sequencer`; returns the epoch it gets.
    pub(crate) fn check_bump_epoch(
        &self,
        shard: ShardId,
        from: Epoch,
        sequencer: Placement,
    ) -> Result<Epoch, MetadataError> {
        let found = self.open_shard(shard)?;
        if found.epoch != from {
            return Err(MetadataError::StaleEpoch {
                shard,
                from,
                current: found.epoch,
            });
        }
        if !found.replicas.contains(&sequencer) {
            return Err(MetadataError::NotAReplica { shard, sequencer });
        }
        self.next_epoch(shard)
    }

    pub(crate) fn bump_epoch(
        &mut self,
        shard: ShardId,
        from: Epoch,
        sequencer: Placement,
    ) -> Result<Applied, MetadataError> {
        let next = self.check_bump_epoch(shard, from, sequencer)?;

        // Accepted: from here on nothing fails.
        let shard = self
            .shards
            .get_mut(&shard)
            .expect("the shard was found above");
        shard.epoch = next;
        shard.placement = sequencer;
        Ok(Applied::EpochBumped {
            shard: shard.clone(),
        })
    }

    pub(crate) fn bump_epoch_unconditionally(
        &mut self,
        shard: ShardId,
    ) -> Result<Applied, MetadataError> {
        let next = self.next_epoch(shard)?;

        // Accepted: from here on nothing fails.
        let shard = self
            .shards
            .get_mut(&shard)
            .expect("the shard was found above");
        shard.epoch = next;
        Ok(Applied::EpochBumped {
            shard: shard.clone(),
        })
    }

    /// The stream of `shard` with its replication factor: what its children are placed by.
    fn stream_and_replication_factor(&self, shard: &Shard) -> (StreamId, u8) {
        let stream = self
            .stream_by_id(shard.stream)
            .expect("a shard's stream lives (an invariant)");
        (stream.id, stream.config.replication_factor)
    }

    fn existing_shard(&self, shard: ShardId) -> Result<&Shard, MetadataError> {
        self.shards
            .get(&shard)
            .ok_or(MetadataError::ShardNotFound { shard })
    }

    fn open_shard(&self, shard: ShardId) -> Result<&Shard, MetadataError> {
        let found = self.existing_shard(shard)?;
        if !found.is_open() {
            return Err(MetadataError::ShardSealed { shard });
        }
        Ok(found)
    }

    /// Seals the open shard `id` with its `children`, and returns it as it is now.
    fn seal(&mut self, id: ShardId, children: Vec<ShardId>) -> Shard {
        let shard = self
            .shards
            .get_mut(&id)
            .expect("the shard was checked to exist and be open");
        assert!(shard.is_open(), "shard {id} is sealed twice");
        shard.status = ShardStatus::Sealed;
        shard.children = children;
        let shard = shard.clone();
        self.routing.close_shard(&shard);
        shard
    }
}
