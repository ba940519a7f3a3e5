//! Key routing: which shard of a stream takes a record (`docs/format/keyhash.md`).
//!
//! A record with a key goes to the open shard whose key range holds `hash128(key)` — the same
//! function and the same `KeyRange::find` the server checks with, so a correctly routed append
//! is never refused as `WrongShard` unless the shards changed. A record without a key goes to
//! the open shards in turn (round robin). A [`ShardMap`] is one snapshot of a stream's shards;
//! it is replaced, never edited, when the server says the snapshot is stale.

use std::sync::atomic::{AtomicUsize, Ordering};

use runnel_core::{hash128, KeyRange, ShardId, StreamName};
use runnel_net::protocol::{ShardInfo, ShardStatus};

use crate::error::ClientError;

/// A snapshot of a stream's shards, indexed for routing.
#[derive(Debug)]
pub(crate) struct ShardMap {
    stream: StreamName,
    /// Every shard (open and sealed), in id order.
    shards: Vec<ShardInfo>,
    /// Indexes into `shards` of the open shards, sorted by key-range start.
    open: Vec<usize>,
    /// The key ranges of `open`, in the same order (what `KeyRange::find` searches).
    open_ranges: Vec<KeyRange>,
    /// The next open shard (index into `open`) for a record without a key.
    round_robin: AtomicUsize,
}

impl ShardMap {
    /// Indexes `shards`. Refuses open shards whose key ranges overlap: the server must never
    /// list such a set, and routing on it would be ambiguous.
    pub fn new(stream: StreamName, mut shards: Vec<ShardInfo>) -> Result<ShardMap, ClientError> {
        shards.sort_by_key(|shard| shard.id);
        if shards.windows(2).any(|pair| pair[0].id == pair[1].id) {
            return Err(inconsistent(&stream, "a shard id is listed twice".into()));
        }
        let mut open: Vec<usize> = (0..shards.len())
            .filter(|&index| shards[index].status == ShardStatus::Open)
            .collect();
        open.sort_by_key(|&index| shards[index].key_range.start());
        let open_ranges: Vec<KeyRange> =
            open.iter().map(|&index| shards[index].key_range).collect();
        for pair in open_ranges.windows(2) {
            if pair[0].end() >= pair[1].start() {
                return Err(inconsistent(
                    &stream,
                    format!("open shards overlap: {} and {}", pair[0], pair[1]),
                ));
            }
        }
        Ok(ShardMap {
            stream,
            shards,
            open,
            open_ranges,
            round_robin: AtomicUsize::new(0),
        })
    }

    /// Every shard, in id order.
    #[cfg(test)]
    pub fn shards(&self) -> &[ShardInfo] {
        &self.shards
    }

    /// The shard with `id`, open or sealed.
    pub fn shard(&self, id: ShardId) -> Option<&ShardInfo> {
        self.shards
            .binary_search_by_key(&id, |shard| shard.id)
            .ok()
            .and_then(|index| self.shards.get(index))
    }

    /// The open shard whose range holds `hash`.
    pub fn shard_for_hash(&self, hash: u128) -> Option<&ShardInfo> {
        KeyRange::find(&self.open_ranges, hash)
            .and_then(|position| self.open.get(position))
            .and_then(|&index| self.shards.get(index))
    }

    /// The shard a record goes to: by its key's hash, or the next open shard in turn.
    pub fn route(&self, key: Option<&[u8]>) -> Result<&ShardInfo, ClientError> {
        match key {
            Some(key) => self.shard_for_hash(hash128(key)).ok_or_else(|| ClientError::NoRoute {
                stream: self.stream.to_string(),
                reason: format!(
                    "no open shard holds key hash {:#034x} (the open shards do not cover the key space)",
                    hash128(key)
                ),
            }),
            None => {
                if self.open.is_empty() {
                    return Err(ClientError::NoRoute {
                        stream: self.stream.to_string(),
                        reason: "the stream has no open shard".into(),
                    });
                }
                let turn = self.round_robin.fetch_add(1, Ordering::Relaxed) % self.open.len();
                self.open
                    .get(turn)
                    .and_then(|&index| self.shards.get(index))
                    .ok_or_else(|| inconsistent(&self.stream, "round robin out of range".into()))
            }
        }
    }
}

fn inconsistent(stream: &StreamName, reason: String) -> ClientError {
    ClientError::NoRoute {
        stream: stream.to_string(),
        reason: format!("inconsistent shard list: {reason}"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use runnel_core::Epoch;

    /// A shard on core `core` owning `range`.
    pub(crate) fn shard(id: u64, range: KeyRange, status: ShardStatus, core: u32) -> ShardInfo {
        ShardInfo {
            id: ShardId(id),
            key_range: range,
            status,
            node: 1,
            core,
            epoch: Epoch(1),
            start_offset: None,
            next_offset: None,
            parents: Vec::new(),
            children: Vec::new(),
            replicas: vec![runnel_net::protocol::ReplicaPlacement { node: 1, core }],
        }
    }

    /// A new stream's shards: `count` open shards dividing the space evenly, ids from 1.
    pub(crate) fn even_shards(count: u64) -> Vec<ShardInfo> {
        KeyRange::split_space(count)
            .expect("valid count")
            .into_iter()
            .enumerate()
            .map(|(index, range)| shard(index as u64 + 1, range, ShardStatus::Open, index as u32))
            .collect()
    }

    fn name() -> StreamName {
        StreamName::new("orders").expect("valid")
    }

    /// Even shards, with `splits` of them split into halves (the parent sealed, children
    /// open), listed in a shuffled order: what a stream looks like after some splits.
    fn split_shards(count: u64, splits: &[usize], shuffle: u64) -> Vec<ShardInfo> {
        let mut shards = even_shards(count);
        let mut next_id = count + 1;
        for &which in splits {
            let open: Vec<usize> = (0..shards.len())
                .filter(|&i| shards[i].status == ShardStatus::Open)
                .collect();
            let index = open[which % open.len()];
            if let Ok((low, high)) = shards[index].key_range.split() {
                shards[index].status = ShardStatus::Sealed;
                shards.push(shard(next_id, low, ShardStatus::Open, 0));
                shards.push(shard(next_id + 1, high, ShardStatus::Open, 1));
                next_id += 2;
            }
        }
        let len = shards.len();
        if len > 1 {
            shards.rotate_left((shuffle as usize) % len);
        }
        shards
    }

    proptest! {
        /// Every key maps to exactly one open shard, the one `KeyRange::find` over the open
        /// ranges names and whose range contains `hash128(key)` — also after splits, with
        /// the shards listed in any order.
        #[test]
        fn every_key_maps_to_exactly_one_open_shard(
            count in 1u64..24,
            splits in proptest::collection::vec(0usize..64, 0..6),
            shuffle: u64,
            keys in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..40),
        ) {
            let shards = split_shards(count, &splits, shuffle);
            let map = ShardMap::new(name(), shards.clone()).expect("consistent");
            let mut open: Vec<&ShardInfo> =
                shards.iter().filter(|s| s.status == ShardStatus::Open).collect();
            open.sort_by_key(|s| s.key_range.start());
            let ranges: Vec<KeyRange> = open.iter().map(|s| s.key_range).collect();
            for key in &keys {
                let hash = hash128(key);
                let routed = map.route(Some(key)).expect("the open shards cover the space");
                prop_assert_eq!(routed.status, ShardStatus::Open);
                prop_assert!(routed.key_range.contains(hash));
                let holders: Vec<ShardId> = shards
                    .iter()
                    .filter(|s| s.status == ShardStatus::Open && s.key_range.contains(hash))
                    .map(|s| s.id)
                    .collect();
                prop_assert_eq!(holders, vec![routed.id]);
                let found = KeyRange::find(&ranges, hash).expect("covered");
                prop_assert_eq!(open[found].id, routed.id);
            }
        }
    }

    /// The documented known answers route to the documented halves of a two-shard stream.
    #[test]
    fn known_answers_route_to_their_half() {
        let map = ShardMap::new(name(), even_shards(2)).expect("consistent");
        // hash128("runnel") = 0x6ebb… < 2^127: the low half (shard 1).
        assert_eq!(map.route(Some(b"runnel")).expect("routed").id, ShardId(1));
        // hash128("a") = 0xa96f… >= 2^127: the high half (shard 2).
        assert_eq!(map.route(Some(b"a")).expect("routed").id, ShardId(2));
        // hash128("") = 0x99aa…: high half.
        assert_eq!(map.route(Some(b"")).expect("routed").id, ShardId(2));
    }

    /// Records without a key visit the open shards in turn and never a sealed one.
    #[test]
    fn keyless_records_round_robin_over_open_shards() {
        let shards = split_shards(3, &[1], 0);
        let map = ShardMap::new(name(), shards).expect("consistent");
        let visited: Vec<ShardId> = (0..8)
            .map(|_| map.route(None).expect("routed").id)
            .collect();
        // Open shards by range start: 1, then the children 4 and 5 of shard 2, then 3.
        let expected: Vec<ShardId> = [1, 4, 5, 3, 1, 4, 5, 3].into_iter().map(ShardId).collect();
        assert_eq!(visited, expected);
    }

    /// Overlapping open shards and duplicate ids are refused; a gap leaves keys unroutable.
    #[test]
    fn inconsistent_shard_lists_are_refused() {
        let full = KeyRange::FULL;
        let overlapping = vec![
            shard(1, full, ShardStatus::Open, 0),
            shard(2, KeyRange::new(5, 9).expect("range"), ShardStatus::Open, 0),
        ];
        assert!(matches!(
            ShardMap::new(name(), overlapping),
            Err(ClientError::NoRoute { .. })
        ));
        let twice = vec![
            shard(1, full, ShardStatus::Open, 0),
            shard(1, full, ShardStatus::Sealed, 0),
        ];
        assert!(ShardMap::new(name(), twice).is_err());
        let low_half = KeyRange::split_space(2).expect("split")[0];
        let gap = ShardMap::new(name(), vec![shard(1, low_half, ShardStatus::Open, 0)])
            .expect("a gap is not an overlap");
        assert!(gap.route(Some(b"runnel")).is_ok());
        assert!(matches!(
            gap.route(Some(b"a")),
            Err(ClientError::NoRoute { .. })
        ));
        let sealed = ShardMap::new(name(), vec![shard(1, full, ShardStatus::Sealed, 0)])
            .expect("consistent");
        assert!(sealed.route(None).is_err());
        assert_eq!(sealed.shard(ShardId(1)).map(|s| s.id), Some(ShardId(1)));
        assert!(sealed.shard(ShardId(2)).is_none());
    }
}
