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
use super::shard::{Placement, Shard, ShardStatus};
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
        let expected = self.applied_index.saturating_add(1);
        if index != expected || index <= self.applied_index {
            return Err(MetadataError::OutOfOrder {
                expected,
                got: index,
            });
        }
        let outcome = match command {
            Command::RegisterNode { node } => self.register_node(node),
            Command::CreateStream { config, now_ms } => self.create_stream(config, *now_ms),
            Command::DeleteStream { name, force } => self.delete_stream(name, *force),
            Command::SplitShard { shard, now_ms } => self.split_shard(*shard, *now_ms),
            Command::MergeShards {
                left,
                right,
                now_ms,
            } => self.merge_shards(*left, *right, *now_ms),
            Command::BumpEpoch { shard } => self.bump_epoch(*shard),
            Command::CreateSubscription { config, now_ms } => {
                self.create_subscription(config, *now_ms)
            }
            Command::DeleteSubscription { name } => self.delete_subscription(name),
            Command::CommitProgress {
                subscription,
                shard,
                offset,
            } => self.commit_progress(*subscription, *shard, *offset),
        };
        self.applied_index = index;
        outcome
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

    fn register_node(&mut self, node: &Node) -> Result<Applied, MetadataError> {
        node.validate()?;
        let previous = self.nodes.get(&node.id).cloned();
        if previous.is_none() && self.nodes.len() >= NODES_MAX {
            return Err(MetadataError::LimitExceeded {
                what: "nodes",
                max: NODES_MAX as u64,
            });
        }
        self.nodes.insert(node.id, node.clone());
        // A node that now has fewer cores serves the shards of its missing cores on the cores
        // it has: `core % cores`, no data moves (shard files are per shard, not per core).
        let mut replaced = Vec::new();
        for shard in self.shards.values_mut() {
            if shard.placement.node == node.id && shard.placement.core >= node.cores {
                shard.placement.core %= node.cores;
                replaced.push(shard.clone());
            }
        }
        Ok(Applied::NodeRegistered {
            node: node.clone(),
            previous,
            replaced,
        })
    }

    fn create_stream(
        &mut self,
        config: &StreamConfig,
        now_ms: u64,
    ) -> Result<Applied, MetadataError> {
        config.validate()?;
        if self.streams.contains_key(&config.name) {
            return Err(MetadataError::StreamExists {
                name: config.name.clone(),
            });
        }
        let ring = self.core_ring()?;
        let nodes = self.nodes.len() as u64;
        if u64::from(config.replication_factor) > nodes {
            return Err(MetadataError::NotEnoughNodes {
                replication_factor: config.replication_factor,
                nodes,
            });
        }
        let shard_count = u64::from(config.shard_count);
        self.check_room_for_shards(shard_count)?;
        let stream_id = StreamId(self.next_stream_id);
        let next_stream_id =
            self.next_stream_id
                .checked_add(1)
                .ok_or(MetadataError::CounterExhausted {
                    counter: "stream id",
                })?;
        self.check_shard_ids(shard_count)?;
        let ranges =
            KeyRange::split_space(shard_count).map_err(|error| MetadataError::InvalidConfig {
                reason: error.to_string(),
            })?;

        // Accepted: from here on nothing fails.
        self.next_stream_id = next_stream_id;
        let shards: Vec<Shard> = ranges
            .into_iter()
            .map(|key_range| Shard {
                id: self.take_shard_id(),
                stream: stream_id,
                key_range,
                status: ShardStatus::Open,
                parents: Vec::new(),
                children: Vec::new(),
                epoch: Epoch(0),
                placement: self.place_next(&ring),
                created_ms: now_ms,
            })
            .collect();
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

    fn delete_stream(&mut self, name: &StreamName, force: bool) -> Result<Applied, MetadataError> {
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

    /// Moves the shard id counter past one id and returns it. Only for ids that
    /// [`Self::check_shard_ids`] accepted.
    pub(crate) fn take_shard_id(&mut self) -> ShardId {
        let id = ShardId(self.next_shard_id);
        self.next_shard_id += 1;
        id
    }

    /// The ring of registered cores.
    pub(crate) fn core_ring(&self) -> Result<CoreRing, MetadataError> {
        CoreRing::new(&self.nodes).ok_or(MetadataError::NoNodes)
    }

    /// The placement of the next shard, moving the cursor on.
    pub(crate) fn place_next(&mut self, ring: &CoreRing) -> Placement {
        let placement = ring.slot(self.placement_cursor);
        // The cursor only picks a slot, so wrapping (after 2^64 placements) is harmless.
        self.placement_cursor = self.placement_cursor.wrapping_add(1);
        placement
    }
}

#[cfg(test)]
mod tests;
