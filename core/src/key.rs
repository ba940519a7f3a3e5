//! The partition-key hash and key ranges of the 128-bit hash space.
//!
//! A record's shard is the one whose range holds `hash128(partition key)`. The hash is
//! XXH3-128 with seed 0 over the key bytes, as drawn in `docs/format/keyhash.md`; the SDK and
//! the server both call this function so they always agree.

use std::fmt;

use crate::error::IdError;

/// The fixed partition-key hash: XXH3-128 (seed 0) of the key bytes.
pub fn hash128(key: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(key)
}

/// The most ranges one split may produce (a stream's shard count is far below this).
pub const KEY_RANGE_SPLIT_MAX: u64 = 1 << 16;

/// A contiguous, non-empty range `[start, end]` of the 128-bit key-hash space (both ends
/// inclusive, so the whole space `[0, u128::MAX]` is one range).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyRange {
    start: u128,
    end: u128,
}

impl KeyRange {
    /// The whole hash space.
    pub const FULL: KeyRange = KeyRange {
        start: 0,
        end: u128::MAX,
    };

    /// The range `[start, end]`, or `None` when `start > end`.
    pub fn new(start: u128, end: u128) -> Option<KeyRange> {
        (start <= end).then_some(KeyRange { start, end })
    }

    /// First hash in the range.
    pub fn start(&self) -> u128 {
        self.start
    }

    /// Last hash in the range (inclusive).
    pub fn end(&self) -> u128 {
        self.end
    }

    /// Whether `hash` lies in the range.
    pub fn contains(&self, hash: u128) -> bool {
        self.start <= hash && hash <= self.end
    }

    /// Whether the range holds `key`'s hash.
    pub fn contains_key(&self, key: &[u8]) -> bool {
        self.contains(hash128(key))
    }

    /// Splits the whole space into `count` ranges of equal width (the last one takes the
    /// remainder), in ascending order.
    pub fn split_space(count: u64) -> Result<Vec<KeyRange>, IdError> {
        Self::FULL.split_even(count)
    }

    /// Splits this range into `count` adjacent ranges of equal width (the last takes the
    /// remainder). Fails when `count` is 0 or larger than the number of hashes in the range.
    pub fn split_even(&self, count: u64) -> Result<Vec<KeyRange>, IdError> {
        if count == 0 || count > KEY_RANGE_SPLIT_MAX {
            return Err(IdError::InvalidRangeCount {
                count,
                max: KEY_RANGE_SPLIT_MAX,
            });
        }
        let width_minus_one = self.end - self.start;
        // Number of hashes is width_minus_one + 1, which may not fit in u128.
        if u128::from(count) - 1 > width_minus_one {
            return Err(IdError::RangeTooSmall {
                range: self.to_string(),
                parts: count,
            });
        }
        if count == 1 {
            return Ok(vec![*self]);
        }
        // step = floor(size / count), computed without overflowing when size = 2^128.
        let count = u128::from(count);
        let step = width_minus_one / count + u128::from(width_minus_one % count == count - 1);
        let mut ranges = Vec::with_capacity(count as usize);
        let mut start = self.start;
        for index in 0..count {
            let end = if index == count - 1 {
                self.end
            } else {
                start + step - 1
            };
            ranges.push(KeyRange { start, end });
            start = end.wrapping_add(1);
        }
        Ok(ranges)
    }

    /// Splits the range into two halves, as `split_even(2)` does: when the range holds an odd
    /// number of hashes, the upper half holds one more.
    pub fn split(&self) -> Result<(KeyRange, KeyRange), IdError> {
        match self.split_even(2)?.as_slice() {
            [low, high] => Ok((*low, *high)),
            _ => unreachable!("split_even(2) returns two ranges"),
        }
    }

    /// Merges two adjacent ranges (in either order) into one.
    pub fn merge(&self, other: &KeyRange) -> Result<KeyRange, IdError> {
        let (low, high) = if self.start <= other.start {
            (self, other)
        } else {
            (other, self)
        };
        if low.end.checked_add(1) != Some(high.start) {
            return Err(IdError::RangesNotAdjacent {
                first: low.to_string(),
                second: high.to_string(),
            });
        }
        Ok(KeyRange {
            start: low.start,
            end: high.end,
        })
    }

    /// Index of the range holding `hash` among `ranges`, which must be sorted by start and
    /// not overlap (as a stream's open shards are). `None` when no range holds it.
    pub fn find(ranges: &[KeyRange], hash: u128) -> Option<usize> {
        let index = ranges.partition_point(|range| range.end < hash);
        ranges
            .get(index)
            .filter(|range| range.contains(hash))
            .map(|_| index)
    }
}

impl fmt::Display for KeyRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#034x}, {:#034x}]", self.start, self.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hash_is_the_documented_xxh3_128() {
        // Known answers pinned here and in docs/format/keyhash.md: a change of hash function
        // would move every key to another shard.
        assert_eq!(hash128(b""), 0x99aa06d3014798d86001c324468d497f);
        assert_eq!(hash128(b"runnel"), hash128(b"runnel"));
        assert_ne!(hash128(b"a"), hash128(b"b"));
    }

    #[test]
    fn split_space_covers_everything_without_gaps() {
        for count in [1u64, 2, 3, 7, 16, 1000] {
            let ranges = KeyRange::split_space(count).expect("valid count");
            assert_eq!(ranges.len() as u64, count);
            assert_eq!(ranges.first().map(|r| r.start()), Some(0));
            assert_eq!(ranges.last().map(|r| r.end()), Some(u128::MAX));
            for pair in ranges.windows(2) {
                assert_eq!(pair[0].end() + 1, pair[1].start());
            }
        }
        assert!(KeyRange::split_space(0).is_err());
        assert!(KeyRange::split_space(KEY_RANGE_SPLIT_MAX).is_ok());
        assert!(KeyRange::split_space(KEY_RANGE_SPLIT_MAX + 1).is_err());
        assert!(KeyRange::split_space(u64::MAX).is_err());
        let two = KeyRange::split_space(2).expect("two");
        assert_eq!(two[0].end(), u128::MAX / 2);
    }

    #[test]
    fn tiny_ranges_refuse_to_split() {
        let one = KeyRange::new(5, 5).expect("range");
        assert!(one.split().is_err());
        assert!(one.split_even(2).is_err());
        let three = KeyRange::new(5, 7).expect("range");
        let (low, high) = three.split().expect("split");
        assert_eq!(
            (low, high),
            (
                KeyRange::new(5, 5).expect("r"),
                KeyRange::new(6, 7).expect("r")
            )
        );
        assert_eq!(three.split_even(3).expect("split").len(), 3);
        assert!(three.split_even(4).is_err());
    }

    proptest! {
        #[test]
        fn split_then_merge_is_identity(a: u128, b: u128) {
            let range = KeyRange::new(a.min(b), a.max(b)).expect("ordered");
            if let Ok((low, high)) = range.split() {
                prop_assert_eq!(low.end() + 1, high.start());
                prop_assert_eq!(low.merge(&high), Ok(range));
                prop_assert_eq!(high.merge(&low), Ok(range));
                prop_assert!(high.end() - high.start() - (low.end() - low.start()) <= 1);
                prop_assert_eq!(range.split_even(2).expect("splits"), vec![low, high]);
            }
        }

        #[test]
        fn every_key_has_exactly_one_range(count in 1u64..64, key: Vec<u8>) {
            let ranges = KeyRange::split_space(count).expect("valid");
            let hash = hash128(&key);
            let found = KeyRange::find(&ranges, hash).expect("space is covered");
            prop_assert!(ranges[found].contains(hash));
            prop_assert_eq!(ranges.iter().filter(|r| r.contains(hash)).count(), 1);
        }

        #[test]
        fn non_adjacent_ranges_do_not_merge(a in 0u128..1000, gap in 2u128..1000) {
            let low = KeyRange::new(0, a).expect("range");
            let high = KeyRange::new(a + gap, a + gap + 10).expect("range");
            prop_assert!(low.merge(&high).is_err());
        }
    }
}
