//! The batch cache: the last write buffers a log flushed, kept to serve tailing reads without
//! disk I/O.
//!
//! A group commit writes the tail buffer from its first block to the end of its batches; every
//! batch lies whole in the buffer it was appended to (the kept partial block is copied into the
//! next buffer). So the newest buffers hold the newest batches, byte for byte as the file does,
//! and a reader close behind the writer finds its batches there. Entries are whole buffers,
//! shared with readers through `Rc` (no copy); the oldest goes first.
//!
//! Bounds: each log keeps at most `read_cache_bytes` of buffers (counted by their allocation,
//! not by the bytes written), and all logs of a core together at most
//! `read_cache_core_bytes`: a log evicts its own oldest entries to make room, and does not
//! cache a buffer that does not fit (it never evicts another log's). A log keeps entries of its
//! active segment only (a sealed segment is read from the disk, its CRCs checked), and drops
//! them all when it closes.
//!
//! Must never: serve bytes beyond what the log may read (the read path clips every range to
//! the written end and the read bound, as for the disk), or bytes of another segment.

use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;

use runnel_core::Offset;

thread_local! {
    /// Bytes of buffers the batch caches of every log on this thread (core) hold.
    static CORE_CACHED_BYTES: Cell<usize> = const { Cell::new(0) };
}

/// Bytes the batch caches of all logs on the calling thread hold.
pub fn core_cached_bytes() -> usize {
    CORE_CACHED_BYTES.with(Cell::get)
}

/// One flushed write buffer.
struct Entry<B> {
    /// Base offset of the segment written.
    segment: Offset,
    /// File position of the buffer's first byte.
    file_pos: u64,
    /// Bytes of batches from the buffer's start (the rest of the written length is padding).
    filled: usize,
    /// Bytes the buffer's allocation holds: what it counts against the bounds.
    charged: usize,
    buffer: Rc<B>,
}

/// A hit: the buffer and where the asked position lies in it.
pub(crate) struct Hit<B> {
    /// The cached buffer.
    pub buffer: Rc<B>,
    /// Index of the asked position in the buffer.
    pub at: usize,
    /// File position of the end of the buffer's batches.
    pub filled_end: u64,
}

/// A log's batch cache.
pub(crate) struct BatchCache<B> {
    entries: VecDeque<Entry<B>>,
    /// Sum of the entries' `charged`.
    bytes: usize,
    bytes_max: usize,
    core_bytes_max: usize,
}

impl<B> BatchCache<B> {
    /// An empty cache of at most `bytes_max` bytes, within `core_bytes_max` for the core.
    pub(crate) fn new(bytes_max: usize, core_bytes_max: usize) -> Self {
        BatchCache {
            entries: VecDeque::new(),
            bytes: 0,
            bytes_max,
            core_bytes_max,
        }
    }

    /// Keeps `buffer`, just written at `file_pos` of `segment` with `filled` bytes of batches
    /// from its start, its allocation being `charged` bytes. Evicts this log's oldest entries
    /// to stay within both bounds; when it still does not fit, the buffer is not kept.
    pub(crate) fn insert(
        &mut self,
        segment: Offset,
        file_pos: u64,
        filled: usize,
        charged: usize,
        buffer: B,
    ) {
        assert!(
            filled <= charged,
            "the batches of a buffer lie within its allocation"
        );
        if filled == 0 || charged > self.bytes_max || charged > self.core_bytes_max {
            return;
        }
        while let Some(oldest) = self.entries.front() {
            let over_log = self.bytes + charged > self.bytes_max;
            let over_core = core_cached_bytes() + charged > self.core_bytes_max;
            if !over_log && !over_core {
                break;
            }
            let charged = oldest.charged;
            self.entries.pop_front();
            self.release(charged);
        }
        if core_cached_bytes() + charged > self.core_bytes_max {
            return;
        }
        self.bytes += charged;
        CORE_CACHED_BYTES.with(|core| core.set(core.get() + charged));
        self.entries.push_back(Entry {
            segment,
            file_pos,
            filled,
            charged,
            buffer: Rc::new(buffer),
        });
        assert!(
            self.bytes <= self.bytes_max,
            "the cache stays within its bound"
        );
    }

    /// The newest buffer of `segment` holding the file bytes `pos..end` among its batches.
    pub(crate) fn get(&self, segment: Offset, pos: u64, end: u64) -> Option<Hit<B>> {
        self.entries.iter().rev().find_map(|entry| {
            let filled_end = entry.file_pos + entry.filled as u64;
            (entry.segment == segment && entry.file_pos <= pos && end <= filled_end).then(|| Hit {
                buffer: Rc::clone(&entry.buffer),
                at: (pos - entry.file_pos) as usize,
                filled_end,
            })
        })
    }

    /// Drops the entries of the segments for which `doomed` says so.
    pub(crate) fn forget(&mut self, doomed: impl Fn(Offset) -> bool) {
        let mut released = 0;
        self.entries.retain(|entry| {
            let keep = !doomed(entry.segment);
            if !keep {
                released += entry.charged;
            }
            keep
        });
        self.release(released);
    }

    /// Drops every entry.
    pub(crate) fn clear(&mut self) {
        self.forget(|_| true);
    }

    /// Bytes the entries hold (by allocation).
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    fn release(&mut self, bytes: usize) {
        assert!(bytes <= self.bytes, "released bytes were cached");
        self.bytes -= bytes;
        CORE_CACHED_BYTES.with(|core| {
            assert!(bytes <= core.get(), "the core's count covers each log's");
            core.set(core.get() - bytes);
        });
    }
}

impl<B> Drop for BatchCache<B> {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_covering_buffer_is_found_and_nothing_past_its_batches() {
        let mut cache = BatchCache::new(1 << 20, 1 << 30);
        cache.insert(Offset(0), 4096, 5000, 8192, vec![1u8; 8192]);
        cache.insert(Offset(0), 8192, 3000, 8192, vec![2u8; 8192]);
        let hit = cache.get(Offset(0), 8200, 9000).expect("cached");
        assert_eq!(
            (hit.at, hit.filled_end, hit.buffer.first()),
            (8, 11192, Some(&2))
        );
        let older = cache.get(Offset(0), 4096, 9096).expect("cached");
        assert_eq!((older.at, older.buffer.first()), (0, Some(&1)));
        assert!(
            cache.get(Offset(0), 8192, 11193).is_none(),
            "past the batches"
        );
        assert!(
            cache.get(Offset(7), 8192, 9000).is_none(),
            "another segment"
        );
        assert!(
            cache.get(Offset(0), 0, 4100).is_none(),
            "before the buffers"
        );
    }

    #[test]
    fn the_oldest_go_first_and_the_bounds_hold() {
        let before = core_cached_bytes();
        let mut cache = BatchCache::new(3 * 4096, 1 << 30);
        for i in 0..5u64 {
            cache.insert(Offset(0), i * 4096, 4096, 4096, vec![0u8; 4096]);
            assert!(cache.bytes() <= 3 * 4096);
        }
        assert!(cache.get(Offset(0), 0, 10).is_none());
        assert!(cache.get(Offset(0), 4 * 4096, 4 * 4096 + 10).is_some());
        assert_eq!(core_cached_bytes() - before, 3 * 4096);
        // Too big for the log's bound: not kept, nothing evicted.
        cache.insert(Offset(0), 0, 10, 4 * 4096, vec![0u8; 4 * 4096]);
        assert_eq!(cache.bytes(), 3 * 4096);
        drop(cache);
        assert_eq!(core_cached_bytes(), before);
    }

    #[test]
    fn the_core_bound_is_shared_by_the_logs_of_a_core() {
        let before = core_cached_bytes();
        let core_max = before + 2 * 4096;
        let mut first = BatchCache::new(1 << 20, core_max);
        let mut second = BatchCache::new(1 << 20, core_max);
        first.insert(Offset(0), 0, 100, 4096, vec![0u8; 4096]);
        first.insert(Offset(0), 4096, 100, 4096, vec![0u8; 4096]);
        // The core is full: the second log evicts none of the first's, and keeps nothing.
        second.insert(Offset(0), 0, 100, 4096, vec![0u8; 4096]);
        assert_eq!((first.bytes(), second.bytes()), (2 * 4096, 0));
        first.forget(|segment| segment == Offset(0));
        second.insert(Offset(0), 0, 100, 4096, vec![0u8; 4096]);
        assert_eq!((first.bytes(), second.bytes()), (0, 4096));
        drop(second);
        assert_eq!(core_cached_bytes(), before);
    }
}
