//! The routing index: for each stream, its open shards by the start of their key range.
//!
//! Derived data: it is never encoded, and a decoded snapshot rebuilds it from the streams and
//! shards. `apply` keeps it up to date step by step; the invariant check compares it with a
//! rebuilt one, so the two ways cannot drift apart unnoticed.

use std::collections::BTreeMap;

use runnel_core::{ShardId, StreamName};

use super::shard::Shard;
use super::stream::{Stream, StreamId};

/// Stream names by id, and each stream's open shards by range start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Routing {
    /// The name of every live stream, by id.
    names: BTreeMap<StreamId, StreamName>,
    /// For every live stream, its open shards keyed by the first hash of their range.
    open: BTreeMap<StreamId, BTreeMap<u128, ShardId>>,
}

impl Routing {
    /// The index of `streams` and `shards`, built from scratch.
    pub(crate) fn rebuild<'a>(
        streams: impl IntoIterator<Item = &'a Stream>,
        shards: impl IntoIterator<Item = &'a Shard>,
    ) -> Routing {
        let mut routing = Routing::default();
        for stream in streams {
            routing.names.insert(stream.id, stream.config.name.clone());
        }
        for shard in shards.into_iter().filter(|shard| shard.is_open()) {
            routing.open_shard(shard);
        }
        routing
    }

    /// Records a new stream (its shards are opened one by one).
    pub(crate) fn add_stream(&mut self, stream: &Stream) {
        self.names.insert(stream.id, stream.config.name.clone());
    }

    /// Forgets a stream and all its open shards.
    pub(crate) fn remove_stream(&mut self, stream: StreamId) {
        self.names.remove(&stream);
        self.open.remove(&stream);
    }

    /// Records an open shard.
    pub(crate) fn open_shard(&mut self, shard: &Shard) {
        self.open
            .entry(shard.stream)
            .or_default()
            .insert(shard.key_range.start(), shard.id);
    }

    /// Forgets a shard that was sealed.
    pub(crate) fn close_shard(&mut self, shard: &Shard) {
        if let Some(open) = self.open.get_mut(&shard.stream) {
            open.remove(&shard.key_range.start());
        }
    }

    /// The name of stream `id`.
    pub(crate) fn stream_name(&self, id: StreamId) -> Option<&StreamName> {
        self.names.get(&id)
    }

    /// The open shards of `stream`, in key order.
    pub(crate) fn open_shards(&self, stream: StreamId) -> impl Iterator<Item = ShardId> + '_ {
        self.open
            .get(&stream)
            .into_iter()
            .flat_map(|open| open.values().copied())
    }

    /// The open shard of `stream` with the largest range start at or below `hash`: the one
    /// holding `hash`, since the open shards partition the key space.
    pub(crate) fn shard_for_hash(&self, stream: StreamId, hash: u128) -> Option<ShardId> {
        self.open
            .get(&stream)?
            .range(..=hash)
            .next_back()
            .map(|(_, &shard)| shard)
    }
}
