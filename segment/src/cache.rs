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
//! `read_cache_core_bytes`: a log evicts its own oldest entries to stay within its bound, and
//! the core's oldest entries, of any log, to stay within the core's (so logs gone idle give
//! their room to active ones). The entries live in one cache per core (thread-local), under
//! each log's id. A log keeps entries of its
//! active segment only (a sealed segment is read from the disk, its CRCs checked), and drops
//! them all when it closes.
//!
//! Must never: serve bytes beyond what the log may read (the read path clips every range to
//! the written end and the read bound, as for the disk), or bytes of another segment.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::marker::PhantomData;
use std::rc::Rc;

use runnel_core::Offset;

thread_local! {
    /// The entries of every log's batch cache on this thread (core).
    static CORE: RefCell<CoreCache> = RefCell::new(CoreCache::default());
    /// The id the next batch cache on this thread gets.
    static NEXT_LOG: Cell<u64> = const { Cell::new(0) };
}

/// Bytes the batch caches of all logs on the calling thread hold.
pub fn core_cached_bytes() -> usize {
    CORE.with(|core| core.borrow().bytes)
}

/// One flushed write buffer.
struct Entry {
    /// Insertion order on the core.
    sequence: u64,
    /// Base offset of the segment written.
    segment: Offset,
    /// File position of the buffer's first byte.
    file_pos: u64,
    /// Bytes of batches from the buffer's start (the rest of the written length is padding).
    filled: usize,
    /// Bytes the buffer's allocation holds: what it counts against the bounds.
    charged: usize,
    /// The buffer (the log's storage's buffer type).
    buffer: Rc<dyn Any>,
}

/// The entries of one log, oldest first.
#[derive(Default)]
struct LogEntries {
    entries: VecDeque<Entry>,
    bytes: usize,
}

/// The batch caches of one core: each log's entries, and the oldest entry of each, so the
/// core's bound evicts the oldest entry of any log.
#[derive(Default)]
struct CoreCache {
    logs: HashMap<u64, LogEntries>,
    /// Sequence of each log's oldest entry → the log.
    fronts: BTreeMap<u64, u64>,
    bytes: usize,
    next_sequence: u64,
}

impl CoreCache {
    /// Removes `log`'s entries for which `doomed` holds.
    fn remove(&mut self, log: u64, doomed: impl Fn(&Entry) -> bool) {
        let Some(entries) = self.logs.get_mut(&log) else {
            return;
        };
        if let Some(front) = entries.entries.front() {
            self.fronts.remove(&front.sequence);
        }
        let mut released = 0;
        entries.entries.retain(|entry| {
            let doomed = doomed(entry);
            if doomed {
                released += entry.charged;
            }
            !doomed
        });
        assert!(released <= entries.bytes && released <= self.bytes);
        entries.bytes -= released;
        self.bytes -= released;
        match entries.entries.front() {
            Some(front) => {
                self.fronts.insert(front.sequence, log);
            }
            None => {
                self.logs.remove(&log);
            }
        }
    }

    /// Removes `log`'s oldest entry.
    fn pop_oldest(&mut self, log: u64) {
        let oldest = self
            .logs
            .get(&log)
            .and_then(|entries| entries.entries.front())
            .map(|entry| entry.sequence);
        if let Some(oldest) = oldest {
            self.remove(log, |entry| entry.sequence == oldest);
        }
    }
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

/// A log's batch cache: its entries live in the core's cache, under the log's id.
pub(crate) struct BatchCache<B> {
    log: u64,
    bytes_max: usize,
    core_bytes_max: usize,
    buffers: PhantomData<B>,
}

impl<B: 'static> BatchCache<B> {
    /// An empty cache of at most `bytes_max` bytes, within `core_bytes_max` for the core.
    pub(crate) fn new(bytes_max: usize, core_bytes_max: usize) -> Self {
        let log = NEXT_LOG.with(|next| {
            let log = next.get();
            next.set(log + 1);
            log
        });
        BatchCache {
            log,
            bytes_max,
            core_bytes_max,
            buffers: PhantomData,
        }
    }

    /// Keeps `buffer`, just written at `file_pos` of `segment` with `filled` bytes of batches
    /// from its start, its allocation being `charged` bytes. Evicts this log's oldest entries
    /// to stay within its bound, then the core's oldest entries (of any log) to stay within the
    /// core's; a buffer larger than either bound is not kept.
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
        CORE.with(|core| {
            let mut core = core.borrow_mut();
            while core
                .logs
                .get(&self.log)
                .is_some_and(|entries| entries.bytes + charged > self.bytes_max)
            {
                core.pop_oldest(self.log);
            }
            while core.bytes + charged > self.core_bytes_max {
                let Some((_, oldest_log)) = core.fronts.first_key_value() else {
                    break;
                };
                let oldest_log = *oldest_log;
                core.pop_oldest(oldest_log);
            }
            assert!(
                core.bytes + charged <= self.core_bytes_max,
                "the core's bound holds"
            );
            let sequence = core.next_sequence;
            core.next_sequence += 1;
            core.bytes += charged;
            let entries = core.logs.entry(self.log).or_default();
            let first = entries.entries.is_empty();
            entries.bytes += charged;
            entries.entries.push_back(Entry {
                sequence,
                segment,
                file_pos,
                filled,
                charged,
                buffer: Rc::new(buffer),
            });
            assert!(entries.bytes <= self.bytes_max, "the log's bound holds");
            if first {
                core.fronts.insert(sequence, self.log);
            }
        });
    }

    /// The newest buffer of `segment` holding the file bytes `pos..end` among its batches.
    pub(crate) fn get(&self, segment: Offset, pos: u64, end: u64) -> Option<Hit<B>> {
        CORE.with(|core| {
            let core = core.borrow();
            let entries = core.logs.get(&self.log)?;
            entries.entries.iter().rev().find_map(|entry| {
                let filled_end = entry.file_pos + entry.filled as u64;
                if entry.segment != segment || entry.file_pos > pos || end > filled_end {
                    return None;
                }
                let buffer = Rc::clone(&entry.buffer).downcast::<B>().ok()?;
                Some(Hit {
                    buffer,
                    at: (pos - entry.file_pos) as usize,
                    filled_end,
                })
            })
        })
    }

    /// Drops the entries of the segments for which `doomed` says so.
    pub(crate) fn forget(&mut self, doomed: impl Fn(Offset) -> bool) {
        CORE.with(|core| {
            core.borrow_mut()
                .remove(self.log, |entry| doomed(entry.segment))
        });
    }

    /// Drops every entry.
    pub(crate) fn clear(&mut self) {
        self.forget(|_| true);
    }

    /// Bytes the entries hold (by allocation).
    pub(crate) fn bytes(&self) -> usize {
        CORE.with(|core| {
            core.borrow()
                .logs
                .get(&self.log)
                .map_or(0, |entries| entries.bytes)
        })
    }
}

impl<B> Drop for BatchCache<B> {
    fn drop(&mut self) {
        // `try_with`: a log dropped while its thread ends has nothing left to release.
        let _ = CORE.try_with(|core| {
            if let Ok(mut core) = core.try_borrow_mut() {
                core.remove(self.log, |_| true);
            }
        });
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
    fn the_core_bound_evicts_the_oldest_entry_of_any_log() {
        let before = core_cached_bytes();
        let core_max = before + 2 * 4096;
        let mut first = BatchCache::new(1 << 20, core_max);
        let mut second = BatchCache::new(1 << 20, core_max);
        first.insert(Offset(0), 0, 100, 4096, vec![1u8; 4096]);
        first.insert(Offset(0), 4096, 100, 4096, vec![2u8; 4096]);
        // The core is full: the second log's buffer takes the place of the core's oldest
        // (an idle log does not keep the core's cache from an active one).
        second.insert(Offset(0), 0, 100, 4096, vec![3u8; 4096]);
        assert_eq!((first.bytes(), second.bytes()), (4096, 4096));
        assert!(first.get(Offset(0), 0, 10).is_none());
        assert!(first.get(Offset(0), 4096, 4106).is_some());
        assert!(second.get(Offset(0), 0, 10).is_some());
        assert_eq!(core_cached_bytes() - before, 2 * 4096);
        drop(first);
        assert_eq!(core_cached_bytes() - before, 4096);
        drop(second);
        assert_eq!(core_cached_bytes(), before);
    }
}
