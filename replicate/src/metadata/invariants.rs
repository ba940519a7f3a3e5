//! The invariants of the metadata state, checked as a whole.
//!
//! `apply` keeps them by construction; this check proves it in the property tests (after
//! every step) and guards the decoder, which refuses a snapshot that breaks any of them (a
//! snapshot with a valid checksum can still come from a buggy or foreign writer).

use std::collections::{BTreeMap, BTreeSet};

use runnel_core::{KeyRange, ShardId};

use super::node::NODES_MAX;
use super::routing::Routing;
use super::shard::{Shard, ShardStatus};
use super::state::{MetadataState, SHARDS_MAX};
use super::stream::{Stream, StreamId};
use super::subscription::{COMMITTED_OFFSETS_MAX, SUBSCRIPTIONS_MAX};

impl MetadataState {
    /// Checks every invariant of the state and describes the first one broken:
    ///
    /// - nodes, stream configurations and counts are within their limits and rules;
    /// - ids are at least 1 and below their counters (so they were allocated, never reused);
    /// - each stream's initial shards exist, have no parents and hold `split_space(shard_count)`;
    /// - every shard belongs to a live stream; its replicas are R (the stream's replication
    ///   factor) on distinct registered nodes, or just `[placement]` (placed before replica
    ///   sets), and its sequencer's placement is one of them;
    /// - lineage is symmetric, parents are older (smaller ids) than children, a sealed shard has
    ///   children and an open one none, children of a split cover their parent's range and the
    ///   parents of a merge cover their child's;
    /// - the open shards of each stream partition the whole key space, no gap and no overlap;
    /// - every subscription has a valid configuration, an id in `1..next_subscription_id`
    ///   that no other live subscription has, belongs to a live stream of the name its
    ///   configuration gives, and holds committed offsets only for shards of that stream;
    ///   subscriptions and committed offsets are within their limits;
    /// - the routing index and the subscription id index equal ones rebuilt from scratch.
    ///
    /// Costs O(n log n) in shards and committed offsets.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.check_nodes()?;
        let (streams_by_id, initial_shards) = self.check_streams()?;
        self.check_shards(&streams_by_id, &initial_shards)?;
        self.check_open_shards_partition_the_key_space()?;
        if self.routing != Routing::rebuild(self.streams.values(), self.shards.values()) {
            return Err("the routing index differs from one rebuilt from scratch".to_string());
        }
        self.check_subscriptions(&streams_by_id)?;
        Ok(())
    }

    fn check_nodes(&self) -> Result<(), String> {
        if self.nodes.len() > NODES_MAX {
            return Err(format!("{} nodes, over {NODES_MAX}", self.nodes.len()));
        }
        for (id, node) in &self.nodes {
            if *id != node.id {
                return Err(format!("node {} is filed under id {id}", node.id));
            }
            node.validate().map_err(|error| error.to_string())?;
        }
        Ok(())
    }

    /// Checks the streams; returns them by id, and the ids of the shards made with them.
    fn check_streams(&self) -> Result<(BTreeMap<StreamId, &Stream>, BTreeSet<ShardId>), String> {
        if self.next_stream_id == 0 || self.next_shard_id == 0 {
            return Err("id counters start at 1".to_string());
        }
        let mut by_id = BTreeMap::new();
        let mut initial_shards = BTreeSet::new();
        for (name, stream) in &self.streams {
            if *name != stream.config.name {
                return Err(format!(
                    "stream {} is filed under name {name}",
                    stream.config.name
                ));
            }
            stream
                .config
                .validate()
                .map_err(|error| format!("stream {name}: {error}"))?;
            if stream.id.0 == 0 || stream.id.0 >= self.next_stream_id {
                return Err(format!(
                    "stream {name} has id {}, not in 1..{}",
                    stream.id, self.next_stream_id
                ));
            }
            if by_id.insert(stream.id, stream).is_some() {
                return Err(format!("two streams have id {}", stream.id));
            }
            let ranges = KeyRange::split_space(u64::from(stream.config.shard_count))
                .map_err(|error| format!("stream {name}: {error}"))?;
            if stream.shards.len() != ranges.len() {
                return Err(format!(
                    "stream {name} lists {} initial shards, its shard count is {}",
                    stream.shards.len(),
                    stream.config.shard_count
                ));
            }
            for (id, range) in stream.shards.iter().zip(ranges) {
                let shard = self
                    .shards
                    .get(id)
                    .ok_or_else(|| format!("stream {name} lists missing shard {id}"))?;
                if shard.stream != stream.id
                    || !shard.parents.is_empty()
                    || shard.key_range != range
                {
                    return Err(format!(
                        "shard {id} is not an initial shard of stream {name} holding {range}"
                    ));
                }
                initial_shards.insert(*id);
            }
        }
        Ok((by_id, initial_shards))
    }

    fn check_shards(
        &self,
        streams_by_id: &BTreeMap<StreamId, &Stream>,
        initial_shards: &BTreeSet<ShardId>,
    ) -> Result<(), String> {
        if self.shards.len() > SHARDS_MAX {
            return Err(format!("{} shards, over {SHARDS_MAX}", self.shards.len()));
        }
        for (id, shard) in &self.shards {
            if *id != shard.id {
                return Err(format!("shard {} is filed under id {id}", shard.id));
            }
            if id.0 == 0 || id.0 >= self.next_shard_id {
                return Err(format!("shard {id} is not in 1..{}", self.next_shard_id));
            }
            let stream = streams_by_id
                .get(&shard.stream)
                .ok_or_else(|| format!("shard {id} belongs to missing stream {}", shard.stream))?;
            self.check_replicas(shard, stream.config.replication_factor)?;
            if (shard.status == ShardStatus::Sealed) == shard.children.is_empty() {
                return Err(format!(
                    "shard {id} is {:?} with {} children",
                    shard.status,
                    shard.children.len()
                ));
            }
            if shard.parents.is_empty() && !initial_shards.contains(id) {
                return Err(format!(
                    "shard {id} has no parent and is not an initial shard of its stream"
                ));
            }
            self.check_lineage(shard)?;
        }
        Ok(())
    }

    /// Checks a shard's replica set: `replication_factor` replicas on distinct registered
    /// nodes, the sequencer's among them. A set of exactly `[placement]` is also accepted
    /// whatever the factor: a shard placed before replica sets existed decodes so.
    fn check_replicas(&self, shard: &Shard, replication_factor: u8) -> Result<(), String> {
        let id = shard.id;
        if !shard.replicas.contains(&shard.placement) {
            return Err(format!(
                "shard {id}'s sequencer {:?} is not one of its replicas {:?}",
                shard.placement, shard.replicas
            ));
        }
        let legacy = shard.replicas == [shard.placement];
        if shard.replicas.len() != usize::from(replication_factor) && !legacy {
            return Err(format!(
                "shard {id} has {} replicas, its stream's replication factor is {replication_factor}",
                shard.replicas.len()
            ));
        }
        let mut nodes = BTreeSet::new();
        for replica in &shard.replicas {
            if !self.nodes.contains_key(&replica.node) {
                return Err(format!(
                    "shard {id} has a replica on unregistered node {}",
                    replica.node
                ));
            }
            if !nodes.insert(replica.node) {
                return Err(format!(
                    "shard {id} has two replicas on node {}",
                    replica.node
                ));
            }
        }
        Ok(())
    }

    /// Checks a shard's links both ways, and that split and merge ranges fit together.
    fn check_lineage(&self, shard: &Shard) -> Result<(), String> {
        let id = shard.id;
        let relatives = |ids: &[ShardId], what: &str| -> Result<Vec<&Shard>, String> {
            if ids.len() > 2 {
                return Err(format!("shard {id} has {} {what}", ids.len()));
            }
            ids.iter()
                .map(|relative| {
                    self.shards
                        .get(relative)
                        .filter(|found| found.stream == shard.stream)
                        .ok_or_else(|| {
                            format!("shard {id} lists {relative} among its {what}, not a shard of its stream")
                        })
                })
                .collect()
        };
        let parents = relatives(&shard.parents, "parents")?;
        let children = relatives(&shard.children, "children")?;
        for parent in &parents {
            if parent.id >= id || !parent.children.contains(&id) {
                return Err(format!(
                    "parent {} of shard {id} does not list it as a younger child",
                    parent.id
                ));
            }
        }
        for child in &children {
            if child.id <= id || !child.parents.contains(&id) {
                return Err(format!(
                    "child {} of shard {id} does not list it as an older parent",
                    child.id
                ));
            }
        }
        let ranges = |shards: &[&Shard]| -> Vec<KeyRange> {
            shards.iter().map(|shard| shard.key_range).collect()
        };
        let broken = |what: &str| Err(format!("shard {id}: {what}"));
        match (parents.as_slice(), children.as_slice()) {
            (_, [_, _]) if !covers(&ranges(&children), shard.key_range) => {
                broken("its two children do not split its range in key order")
            }
            (_, [_, _]) if children.iter().any(|child| child.parents != [id]) => {
                broken("a child of its split has other parents")
            }
            (_, [child]) if child.parents.len() != 2 => broken("its only child is no merge"),
            ([_, _], _) if !covers(&ranges(&parents), shard.key_range) => {
                broken("its two parents do not merge into its range in key order")
            }
            ([_, _], _) if parents.iter().any(|parent| parent.children != [id]) => {
                broken("a parent of its merge has other children")
            }
            ([parent], _) if parent.children.len() != 2 => broken("its only parent was no split"),
            _ => Ok(()),
        }
    }

    fn check_subscriptions(
        &self,
        streams_by_id: &BTreeMap<StreamId, &Stream>,
    ) -> Result<(), String> {
        if self.next_subscription_id == 0 {
            return Err("the subscription id counter starts at 1".to_string());
        }
        if self.subscriptions.len() > SUBSCRIPTIONS_MAX {
            return Err(format!(
                "{} subscriptions, over {SUBSCRIPTIONS_MAX}",
                self.subscriptions.len()
            ));
        }
        let mut ids = BTreeSet::new();
        let mut committed_offsets = 0usize;
        for (name, subscription) in &self.subscriptions {
            let id = subscription.id;
            if *name != subscription.config.name {
                return Err(format!(
                    "subscription {} is filed under name {name}",
                    subscription.config.name
                ));
            }
            subscription
                .config
                .validate()
                .map_err(|error| error.to_string())?;
            if id.0 == 0 || id.0 >= self.next_subscription_id {
                return Err(format!(
                    "subscription {name} has id {id}, not in 1..{}",
                    self.next_subscription_id
                ));
            }
            if !ids.insert(id) {
                return Err(format!("two subscriptions have id {id}"));
            }
            let stream = streams_by_id.get(&subscription.stream).ok_or_else(|| {
                format!(
                    "subscription {name} belongs to missing stream {}",
                    subscription.stream
                )
            })?;
            if stream.config.name != subscription.config.stream {
                return Err(format!(
                    "subscription {name} names stream {} but belongs to stream {} ({})",
                    subscription.config.stream, stream.id, stream.config.name
                ));
            }
            for shard in subscription.committed.keys() {
                if self
                    .shards
                    .get(shard)
                    .is_none_or(|found| found.stream != subscription.stream)
                {
                    return Err(format!(
                        "subscription {name} has committed progress on shard {shard}, not a \
                         shard of its stream"
                    ));
                }
            }
            committed_offsets = committed_offsets.saturating_add(subscription.committed.len());
        }
        if committed_offsets > COMMITTED_OFFSETS_MAX {
            return Err(format!(
                "{committed_offsets} committed offsets, over {COMMITTED_OFFSETS_MAX}"
            ));
        }
        if self.subscription_names != Self::index_subscriptions(&self.subscriptions) {
            return Err(
                "the subscription id index differs from one rebuilt from scratch".to_string(),
            );
        }
        Ok(())
    }

    fn check_open_shards_partition_the_key_space(&self) -> Result<(), String> {
        let mut open: BTreeMap<StreamId, Vec<KeyRange>> = BTreeMap::new();
        for shard in self.shards.values().filter(|shard| shard.is_open()) {
            open.entry(shard.stream).or_default().push(shard.key_range);
        }
        for stream in self.streams.values() {
            let mut ranges = open.remove(&stream.id).unwrap_or_default();
            ranges.sort();
            if !covers(&ranges, KeyRange::FULL) {
                return Err(format!(
                    "the open shards of stream {} do not partition the key space",
                    stream.config.name
                ));
            }
        }
        match open.keys().next() {
            Some(orphan) => Err(format!("open shards of missing stream {orphan}")),
            None => Ok(()),
        }
    }
}

/// Whether `parts`, in this order, are adjacent and together exactly `whole`.
fn covers(parts: &[KeyRange], whole: KeyRange) -> bool {
    let (Some(first), Some(last)) = (parts.first(), parts.last()) else {
        return false;
    };
    first.start() == whole.start()
        && last.end() == whole.end()
        && parts.windows(2).all(|pair| match pair {
            [low, high] => low.end().checked_add(1) == Some(high.start()),
            _ => false,
        })
}
