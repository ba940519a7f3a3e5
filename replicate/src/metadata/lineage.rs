//! Changes to a stream's shards after its creation: split, merge, and epoch bumps.
//!
//! Splitting seals an open shard and opens two children with the halves of its range
//! ([`KeyRange::split`]); merging seals two adjacent open shards and opens one child with their
//! union ([`KeyRange::merge`]). Data is never moved: sealed shards stay readable and record
//! their children, and children record their parents, so a per-key reader can walk from the
//! oldest shard to the newest. Children start at epoch 0 and are placed like new shards.

use runnel_core::{Epoch, KeyRange, ShardId};

use super::command::Applied;
use super::error::MetadataError;
use super::placement::CoreRing;
use super::shard::{Shard, ShardStatus};
use super::state::MetadataState;
use super::stream::StreamId;

impl MetadataState {
    pub(crate) fn split_shard(
        &mut self,
        shard: ShardId,
        now_ms: u64,
    ) -> Result<Applied, MetadataError> {
        let parent = self.open_shard(shard)?;
        let (low, high) = parent
            .key_range
            .split()
            .map_err(|_| MetadataError::ShardTooSmall { shard })?;
        let stream = parent.stream;
        self.check_room_for_shards(2)?;
        self.check_shard_ids(2)?;
        let ring = self.core_ring()?;

        // Accepted: from here on nothing fails.
        let children: Vec<Shard> = [low, high]
            .into_iter()
            .map(|key_range| self.new_child(stream, key_range, vec![shard], &ring, now_ms))
            .collect();
        let parent = self.seal(shard, children.iter().map(|child| child.id).collect());
        for child in &children {
            self.routing.open_shard(child);
            self.shards.insert(child.id, child.clone());
        }
        Ok(Applied::ShardSplit { parent, children })
    }

    pub(crate) fn merge_shards(
        &mut self,
        left: ShardId,
        right: ShardId,
        now_ms: u64,
    ) -> Result<Applied, MetadataError> {
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
        let stream = left_shard.stream;
        let parents = if left_shard.key_range.start() < right_shard.key_range.start() {
            vec![left, right]
        } else {
            vec![right, left]
        };
        self.check_room_for_shards(1)?;
        self.check_shard_ids(1)?;
        let ring = self.core_ring()?;

        // Accepted: from here on nothing fails.
        let child = self.new_child(stream, key_range, parents.clone(), &ring, now_ms);
        let parents = parents
            .into_iter()
            .map(|parent| self.seal(parent, vec![child.id]))
            .collect();
        self.routing.open_shard(&child);
        self.shards.insert(child.id, child.clone());
        Ok(Applied::ShardsMerged { parents, child })
    }

    pub(crate) fn bump_epoch(&mut self, shard: ShardId) -> Result<Applied, MetadataError> {
        let epoch = self.existing_shard(shard)?.epoch;
        let next = epoch
            .0
            .checked_add(1)
            .ok_or(MetadataError::CounterExhausted { counter: "epoch" })?;

        // Accepted: from here on nothing fails.
        let shard = self
            .shards
            .get_mut(&shard)
            .expect("the shard was found above");
        shard.epoch = Epoch(next);
        Ok(Applied::EpochBumped {
            shard: shard.clone(),
        })
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

    /// A new open shard of `stream`, with a fresh id and the next placement. Not inserted.
    fn new_child(
        &mut self,
        stream: StreamId,
        key_range: KeyRange,
        parents: Vec<ShardId>,
        ring: &CoreRing,
        now_ms: u64,
    ) -> Shard {
        Shard {
            id: self.take_shard_id(),
            stream,
            key_range,
            status: ShardStatus::Open,
            parents,
            children: Vec::new(),
            epoch: Epoch(0),
            placement: self.place_next(ring),
            created_ms: now_ms,
        }
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
