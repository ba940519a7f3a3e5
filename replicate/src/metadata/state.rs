//! The metadata state, the queries the server asks of it, and the one way to change it: apply
//! the next command of the log. Nodes and streams are handled here, shard changes in
//! `lineage.rs`, subscriptions in `state/subscriptions.rs`.
//!
//! Every command handler first checks everything that can refuse the command, then changes the
//! state; nothing fails after the first change, so a refused command leaves the state exactly
//! as it was (apart from the consumed log index).

use std::collections::{BTreeMap, BTreeSet};

use runnel_core::{hash128, Epoch, KeyRange, ShardId, StreamName};

use super::command::{Applied, Command};
use super::error::MetadataError;
use super::node::{Node, NodeId, NODES_MAX};
use super::placement::CoreRing;
use super::routing::Routing;
use super::shard::{Shard, ShardStatus};
use super::stream::{Stream, StreamConfig, StreamId};
use super::subscription::{Subscription, SubscriptionId, SubscriptionName};

mod subscriptions;

/// Most shards (open and sealed, over all streams) the metadata holds. Bounds the snapshot and
/// the work of every command. Sealed shards count until their stream is deleted.
pub const SHARDS_MAX: usize = 100_000;

/// The replicated metadata: nodes, streams, shards, subscriptions and the counters that
/// allocate ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataState {
    /// Log index of the last command applied (accepted or rejected); 0 before any.
    pub(crate) applied_index: u64,
    /// The id the next stream gets. Starts at 1 and only grows.
    pub(crate) next_stream_id: u64,
    /// The id the next shard gets. Starts at 1 and only grows.
    pub(crate) next_shard_id: u64,
    /// Placements made so far: the next shard goes to slot `placement_cursor % slots`.
    pub(crate) placement_cursor: u64,
    /// Registered nodes.
    pub(crate) nodes: BTreeMap<NodeId, Node>,
    /// Live streams, by name.
    pub(crate) streams: BTreeMap<StreamName, Stream>,
    /// Shards of live streams, open and sealed.
    pub(crate) shards: BTreeMap<ShardId, Shard>,
    /// The id the next subscription gets. Starts at 1 and only grows.
    pub(crate) next_subscription_id: u64,
    /// Live subscriptions, by name.
    pub(crate) subscriptions: BTreeMap<SubscriptionName, Subscription>,
    /// The cluster's id, once a leader named it (`SetClusterId`).
    pub(crate) cluster_id: Option<u64>,
    /// Derived from `streams` and `shards`; never encoded.
    pub(crate) routing: Routing,
    /// The name of every live subscription, by id. Derived from `subscriptions`; never
    /// encoded.
    pub(crate) subscription_names: BTreeMap<SubscriptionId, SubscriptionName>,
}

impl Default for MetadataState {
    fn default() -> Self {
        Self::new()
    }
}

impl MetadataState {
    /// The state before the first command: no node, no stream, ids starting at 1.
    pub fn new() -> Self {
        MetadataState {
            applied_index: 0,
            next_stream_id: 1,
            next_shard_id: 1,
            placement_cursor: 0,
            cluster_id: None,
            nodes: BTreeMap::new(),
            streams: BTreeMap::new(),
            shards: BTreeMap::new(),
            next_subscription_id: 1,
            subscriptions: BTreeMap::new(),
            routing: Routing::default(),
            subscription_names: BTreeMap::new(),
        }
    }

    /// Log index of the last command applied, accepted or rejected; 0 before any.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// Applies the command at log index `index`, which must be `applied_index() + 1`.
    ///
    /// - Wrong index: [`MetadataError::OutOfOrder`], and nothing changes.
    /// - Command refused by the state (any other error): the index is consumed
    ///   (`applied_index()` becomes `index`) and nothing else changes. Every replica refuses it
    ///   the same way, so the log can move on; the error goes back to whoever proposed it.
    /// - Accepted: the state changes and [`Applied`] says how.
    pub fn apply(&mut self, index: u64, command: &Command) -> Result<Applied, MetadataError> {
        self.check_index(index)?;
        let outcome = match command {
            Command::RegisterNode { node } => self.register_node(node),
            Command::RemoveNode { node } => self.remove_node(*node),
            Command::SetClusterId { id } => self.set_cluster_id(*id),
            Command::CreateStream {
                config,
                now_ms,
                avoid,
            } => self.create_stream(config, *now_ms, avoid),
            Command::DeleteStream { name, force } => self.delete_stream(name, *force),
            Command::SplitShard { shard, now_ms } => self.split_shard(*shard, *now_ms),
            Command::MergeShards {
                left,
                right,
                now_ms,
            } => self.merge_shards(*left, *right, *now_ms),
            Command::BumpEpoch {
                shard,
                from,
                sequencer,
            } => self.bump_epoch(*shard, *from, *sequencer),
            Command::BumpEpochUnconditionally { shard } => self.bump_epoch_unconditionally(*shard),
            Command::CreateSubscription { config, now_ms } => {
                self.create_subscription(config, *now_ms)
            }
            Command::DeleteSubscription { name } => self.delete_subscription(name),
            Command::CommitProgress {
                subscription,
                shard,
                offset,
            } => self.commit_progress(*subscription, *shard, *offset),
            Command::CommitProgressBatch { commits } => self.commit_progress_batch(commits),
        };
        self.applied_index = index;
        outcome
    }

    /// Consumes log index `index` (which must be `applied_index() + 1`) that holds no metadata
    /// command: a Raft leader's empty entry of a new term, or a change of the group's members.
    /// Nothing else changes.
    pub fn skip(&mut self, index: u64) -> Result<(), MetadataError> {
        self.check_index(index)?;
        self.applied_index = index;
        Ok(())
    }

    /// Whether [`Self::apply`] would accept `command` at `index`, without changing anything
    /// and without copying the state: the refusal `apply` would give, or the shards the command
    /// would create (a created stream's shards, a split's or a merge's children), exactly as
    /// `apply` would create them, so a proposer can prepare their logs before recording the
    /// command. Costs what the command's own checks cost (lookups, and the shards it makes),
    /// never a pass over the whole state.
    ///
    /// `apply` runs the same checks through the same functions before it changes anything, so
    /// the two agree by construction; the property tests check it on random sequences.
    pub fn check(&self, index: u64, command: &Command) -> Result<Vec<Shard>, MetadataError> {
        self.check_index(index)?;
        match command {
            Command::RegisterNode { node } => self.check_register_node(node).map(|_| Vec::new()),
            Command::RemoveNode { node } => self.check_remove_node(*node).map(|_| Vec::new()),
            Command::SetClusterId { id } => self.check_set_cluster_id(*id).map(|_| Vec::new()),
            Command::CreateStream {
                config,
                now_ms,
                avoid,
            } => self
                .plan_create_stream(config, *now_ms, avoid)
                .map(|(_, shards)| shards),
            Command::DeleteStream { name, force } => {
                self.check_delete_stream(name, *force).map(|_| Vec::new())
            }
            Command::SplitShard { shard, now_ms } => self.plan_split(*shard, *now_ms),
            Command::MergeShards {
                left,
                right,
                now_ms,
            } => self
                .plan_merge(*left, *right, *now_ms)
                .map(|(_, child)| vec![child]),
            Command::BumpEpoch {
                shard,
                from,
                sequencer,
            } => self
                .check_bump_epoch(*shard, *from, *sequencer)
                .map(|_| Vec::new()),
            Command::BumpEpochUnconditionally { shard } => {
                self.next_epoch(*shard).map(|_| Vec::new())
            }
            Command::CreateSubscription { config, .. } => {
                self.check_create_subscription(config).map(|_| Vec::new())
            }
            Command::DeleteSubscription { name } => {
                self.check_delete_subscription(name).map(|_| Vec::new())
            }
            Command::CommitProgress {
                subscription,
                shard,
                ..
            } => self
                .check_commit_progress(*subscription, *shard)
                .map(|_| Vec::new()),
            Command::CommitProgressBatch { commits } => {
                Self::check_progress_batch(commits).map(|_| Vec::new())
            }
        }
    }

    fn check_index(&self, index: u64) -> Result<(), MetadataError> {
        let expected = self.applied_index.saturating_add(1);
        if index != expected || index <= self.applied_index {
            return Err(MetadataError::OutOfOrder {
                expected,
                got: index,
            });
        }
        Ok(())
    }

    /// The node with id `id`.
    pub fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes.get(&id)
    }

    /// Every registered node, in id order.
    pub fn nodes(&self) -> impl ExactSizeIterator<Item = &Node> + '_ {
        self.nodes.values()
    }

    /// The live stream named `name`.
    pub fn stream(&self, name: &StreamName) -> Option<&Stream> {
        self.streams.get(name)
    }

    /// The live stream with id `id`.
    pub fn stream_by_id(&self, id: StreamId) -> Option<&Stream> {
        self.routing
            .stream_name(id)
            .and_then(|name| self.streams.get(name))
    }

    /// Every live stream, in name order.
    pub fn streams(&self) -> impl ExactSizeIterator<Item = &Stream> + '_ {
        self.streams.values()
    }

    /// The shard with id `id` (open or sealed), while its stream lives.
    pub fn shard(&self, id: ShardId) -> Option<&Shard> {
        self.shards.get(&id)
    }

    /// Every shard of every live stream, open and sealed, in id order.
    pub fn shards(&self) -> impl ExactSizeIterator<Item = &Shard> + '_ {
        self.shards.values()
    }

    /// The open shards of stream `name`, in key order; together their ranges cover the whole
    /// key-hash space.
    pub fn open_shards(&self, name: &StreamName) -> Result<Vec<&Shard>, MetadataError> {
        let stream = self.existing_stream(name)?;
        Ok(self
            .routing
            .open_shards(stream.id)
            .filter_map(|id| self.shards.get(&id))
            .collect())
    }

    /// The open shard of stream `name` that takes records with partition key `key`: the one
    /// whose range holds [`hash128`]`(key)`.
    pub fn shard_for_key(&self, name: &StreamName, key: &[u8]) -> Result<ShardId, MetadataError> {
        self.shard_for_hash(name, hash128(key))
    }

    /// The open shard of stream `name` whose range holds `hash`.
    pub fn shard_for_hash(&self, name: &StreamName, hash: u128) -> Result<ShardId, MetadataError> {
        let stream = self.existing_stream(name)?;
        let shard = self
            .routing
            .shard_for_hash(stream.id, hash)
            .expect("the open shards of a stream cover the whole key space");
        assert!(
            self.shards
                .get(&shard)
                .is_some_and(|found| found.is_open() && found.key_range.contains(hash)),
            "routing index out of date for shard {shard}"
        );
        Ok(shard)
    }

    fn existing_stream(&self, name: &StreamName) -> Result<&Stream, MetadataError> {
        self.streams
            .get(name)
            .ok_or_else(|| MetadataError::StreamNotFound { name: name.clone() })
    }

    /// The checks of a `RegisterNode`; returns the node as registered before, if it was.
    fn check_register_node(&self, node: &Node) -> Result<Option<&Node>, MetadataError> {
        node.validate()?;
        let previous = self.nodes.get(&node.id);
        if previous.is_none() && self.nodes.len() >= NODES_MAX {
            return Err(MetadataError::LimitExceeded {
                what: "nodes",
                max: NODES_MAX as u64,
            });
        }
        Ok(previous)
    }

    fn register_node(&mut self, node: &Node) -> Result<Applied, MetadataError> {
        let previous = self.check_register_node(node)?.cloned();

        // Accepted: from here on nothing fails.
        self.nodes.insert(node.id, node.clone());
        // A node that now has fewer cores serves the shards of its missing cores on the cores
        // it has: `core % cores`, no data moves (shard files are per shard, not per core).
        let mut replaced = Vec::new();
        for shard in self.shards.values_mut() {
            let mut moved = false;
            for replica in shard.replicas.iter_mut().chain([&mut shard.placement]) {
                if replica.node == node.id && replica.core >= node.cores {
                    replica.core %= node.cores;
                    moved = true;
                }
            }
            if moved {
                replaced.push(shard.clone());
            }
        }
        Ok(Applied::NodeRegistered {
            node: node.clone(),
            previous,
            replaced,
        })
    }

    /// The checks of a `RemoveNode`; returns the node.
    fn check_remove_node(&self, id: NodeId) -> Result<&Node, MetadataError> {
        let node = self
            .nodes
            .get(&id)
            .ok_or(MetadataError::NodeNotFound { node: id })?;
        let mut shards = 0u64;
        let mut streams = BTreeSet::new();
        for shard in self.shards.values() {
            if shard.has_replica_on(id) {
                shards += 1;
                if let Some(name) = self.routing.stream_name(shard.stream) {
                    streams.insert(name.clone());
                }
            }
        }
        if shards > 0 {
            return Err(MetadataError::NodeOwnsShards {
                node: id,
                shards,
                streams: streams.into_iter().collect(),
            });
        }
        if self.nodes.len() == 1 {
            return Err(MetadataError::LastNode { node: id });
        }
        Ok(node)
    }

    /// The checks of a `SetClusterId`.
    fn check_set_cluster_id(&self, id: u64) -> Result<(), MetadataError> {
        if let Some(existing) = self.cluster_id {
            return Err(MetadataError::ClusterIdSet { existing });
        }
        if id == 0 {
            return Err(MetadataError::InvalidConfig {
                reason: "a cluster id is not 0".into(),
            });
        }
        Ok(())
    }

    fn set_cluster_id(&mut self, id: u64) -> Result<Applied, MetadataError> {
        self.check_set_cluster_id(id)?;
        self.cluster_id = Some(id);
        Ok(Applied::ClusterIdSet { id })
    }

    /// The cluster's id, once a leader named it.
    pub fn cluster_id(&self) -> Option<u64> {
        self.cluster_id
    }

    fn remove_node(&mut self, id: NodeId) -> Result<Applied, MetadataError> {
        self.check_remove_node(id)?;

        // Accepted: from here on nothing fails.
        let node = self.nodes.remove(&id).expect("the node was found above");
        Ok(Applied::NodeRemoved { node })
    }

    /// The checks of a `CreateStream`; returns the stream's id and its shards as it would
    /// create them.
    fn plan_create_stream(
        &self,
        config: &StreamConfig,
        now_ms: u64,
        avoid: &[NodeId],
    ) -> Result<(StreamId, Vec<Shard>), MetadataError> {
        config.validate()?;
        if self.streams.contains_key(&config.name) {
            return Err(MetadataError::StreamExists {
                name: config.name.clone(),
            });
        }
        let ring = self.core_ring_avoiding(avoid)?;
        check_replication_factor(&ring, config.replication_factor)?;
        let shard_count = u64::from(config.shard_count);
        self.check_room_for_shards(shard_count)?;
        let stream_id = StreamId(self.next_stream_id);
        if self.next_stream_id.checked_add(1).is_none() {
            return Err(MetadataError::CounterExhausted {
                counter: "stream id",
            });
        }
        self.check_shard_ids(shard_count)?;
        let ranges =
            KeyRange::split_space(shard_count).map_err(|error| MetadataError::InvalidConfig {
                reason: error.to_string(),
            })?;
        let shards = ranges
            .into_iter()
            .zip(0u64..)
            .map(|(key_range, nth)| {
                self.planned_shard(
                    nth,
                    &ring,
                    (stream_id, config.replication_factor),
                    key_range,
                    Vec::new(),
                    now_ms,
                )
            })
            .collect();
        Ok((stream_id, shards))
    }

    fn create_stream(
        &mut self,
        config: &StreamConfig,
        now_ms: u64,
        avoid: &[NodeId],
    ) -> Result<Applied, MetadataError> {
        let (stream_id, shards) = self.plan_create_stream(config, now_ms, avoid)?;

        // Accepted: from here on nothing fails.
        self.next_stream_id = stream_id.0 + 1;
        self.take_planned(&shards);
        let stream = Stream {
            id: stream_id,
            config: config.clone(),
            created_ms: now_ms,
            shards: shards.iter().map(|shard| shard.id).collect(),
        };
        self.routing.add_stream(&stream);
        for shard in &shards {
            self.routing.open_shard(shard);
            self.shards.insert(shard.id, shard.clone());
        }
        self.streams.insert(config.name.clone(), stream.clone());
        Ok(Applied::StreamCreated { stream, shards })
    }

    /// The checks of a `DeleteStream`; returns the stream and the subscriptions a forced
    /// delete deletes with it.
    fn check_delete_stream(
        &self,
        name: &StreamName,
        force: bool,
    ) -> Result<(&Stream, Vec<SubscriptionName>), MetadataError> {
        let stream = self.existing_stream(name)?;
        let subscriptions: Vec<SubscriptionName> = self
            .subscriptions_of_stream(stream.id)
            .map(|subscription| subscription.config.name.clone())
            .collect();
        if !subscriptions.is_empty() && !force {
            return Err(MetadataError::StreamHasSubscriptions {
                name: name.clone(),
                subscriptions,
            });
        }
        Ok((stream, subscriptions))
    }

    fn delete_stream(&mut self, name: &StreamName, force: bool) -> Result<Applied, MetadataError> {
        let (stream, subscriptions) = self.check_delete_stream(name, force)?;
        // Every shard of a stream descends from the shards it was created with.
        let mut lineage = BTreeSet::new();
        let mut pending = stream.shards.clone();
        while let Some(id) = pending.pop() {
            if lineage.insert(id) {
                if let Some(shard) = self.shards.get(&id) {
                    pending.extend(shard.children.iter().copied());
                }
            }
        }

        // Accepted: from here on nothing fails.
        let stream = self
            .streams
            .remove(name)
            .expect("the stream was found above");
        self.routing.remove_stream(stream.id);
        let shards = lineage
            .into_iter()
            .filter_map(|id| self.shards.remove(&id))
            .collect();
        let subscriptions = subscriptions
            .iter()
            .map(|name| self.remove_subscription(name))
            .collect();
        Ok(Applied::StreamDeleted {
            stream,
            shards,
            subscriptions,
        })
    }

    /// Checks that `count` more shards fit under [`SHARDS_MAX`].
    pub(crate) fn check_room_for_shards(&self, count: u64) -> Result<(), MetadataError> {
        if (self.shards.len() as u64).saturating_add(count) > SHARDS_MAX as u64 {
            return Err(MetadataError::LimitExceeded {
                what: "shards",
                max: SHARDS_MAX as u64,
            });
        }
        Ok(())
    }

    /// Checks that `count` more shard ids can be allocated (the counter stays below
    /// `u64::MAX`), without allocating them.
    pub(crate) fn check_shard_ids(&self, count: u64) -> Result<(), MetadataError> {
        match self.next_shard_id.checked_add(count) {
            Some(_) => Ok(()),
            None => Err(MetadataError::CounterExhausted {
                counter: "shard id",
            }),
        }
    }

    /// The `nth` shard a command that passed its checks (and [`Self::check_shard_ids`], and
    /// [`check_replication_factor`] on `ring`) would create for `(stream, replication factor)`:
    /// the next ids and placements, in order. Changes nothing; [`Self::take_planned`] consumes
    /// them when the command is applied.
    pub(crate) fn planned_shard(
        &self,
        nth: u64,
        ring: &CoreRing,
        (stream, replication_factor): (StreamId, u8),
        key_range: KeyRange,
        parents: Vec<ShardId>,
        now_ms: u64,
    ) -> Shard {
        // The cursor only picks a slot, so wrapping (after 2^64 placements) is harmless.
        let replicas = ring
            .replica_set(
                self.placement_cursor.wrapping_add(nth),
                usize::from(replication_factor),
            )
            .expect("the replication factor was checked against the ring");
        let sequencer = *replicas
            .first()
            .expect("a replica set holds at least one replica");
        Shard {
            id: ShardId(self.next_shard_id + nth),
            stream,
            key_range,
            status: ShardStatus::Open,
            parents,
            children: Vec::new(),
            epoch: Epoch(0),
            placement: sequencer,
            replicas,
            created_ms: now_ms,
        }
    }

    /// Moves the shard id counter and the placement cursor past `shards`, planned by
    /// [`Self::planned_shard`] on this state.
    pub(crate) fn take_planned(&mut self, shards: &[Shard]) {
        for (shard, nth) in shards.iter().zip(0u64..) {
            assert_eq!(
                shard.id.0,
                self.next_shard_id + nth,
                "shard {} was not planned on this state",
                shard.id
            );
        }
        let count = shards.len() as u64;
        self.next_shard_id += count;
        self.placement_cursor = self.placement_cursor.wrapping_add(count);
    }

    /// The ring of registered cores.
    pub(crate) fn core_ring(&self) -> Result<CoreRing, MetadataError> {
        self.core_ring_avoiding(&[])
    }

    /// The ring of the cores of registered nodes not in `avoid`.
    pub(crate) fn core_ring_avoiding(&self, avoid: &[NodeId]) -> Result<CoreRing, MetadataError> {
        if self.nodes.is_empty() {
            return Err(MetadataError::NoNodes);
        }
        CoreRing::new(self.nodes.values().filter(|node| !avoid.contains(&node.id))).ok_or(
            MetadataError::NoAvailableNodes {
                avoided: self.nodes.len() as u64,
            },
        )
    }
}

/// Checks that `ring` has `replication_factor` distinct nodes for a replica set: every shard
/// a command creates has its R replicas on R distinct nodes, or the command is refused.
pub(crate) fn check_replication_factor(
    ring: &CoreRing,
    replication_factor: u8,
) -> Result<(), MetadataError> {
    let nodes = ring.node_count();
    if usize::from(replication_factor) > nodes {
        return Err(MetadataError::NotEnoughNodes {
            replication_factor,
            nodes: nodes as u64,
        });
    }
    Ok(())
}

#[cfg(test)]
mod replica_tests;
#[cfg(test)]
mod tests;
