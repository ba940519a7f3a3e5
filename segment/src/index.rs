//! Sparse in-memory indexes of one segment, by offset and by time.
//!
//! One entry per `index_interval_bytes` of batches (and always one for the first batch). An
//! entry holds a batch's base offset, its byte position, and the largest timestamp of every
//! batch *before* it, which only grows, so both lookups are binary searches.

use runnel_core::Offset;

/// One entry: where a batch starts and the largest timestamp of every batch before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub base_offset: Offset,
    pub position: u64,
    pub max_timestamp_before_ms: i64,
}

/// The sparse index of a segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SparseIndex {
    entries: Vec<IndexEntry>,
}

impl SparseIndex {
    /// An index from persisted entries; `None` unless offsets, positions and timestamps all
    /// grow (the lookups rely on it).
    pub(crate) fn from_entries(entries: Vec<IndexEntry>) -> Option<SparseIndex> {
        let ordered = entries.windows(2).all(|pair| match pair {
            [a, b] => {
                a.base_offset < b.base_offset
                    && a.position < b.position
                    && a.max_timestamp_before_ms <= b.max_timestamp_before_ms
            }
            _ => true,
        });
        ordered.then_some(SparseIndex { entries })
    }

    /// The entries, in order.
    pub(crate) fn entries(&self) -> &[IndexEntry] {
        &self.entries
    }

    /// Notes a batch at `position`; adds an entry when the last one is `interval_bytes` behind.
    pub(crate) fn note_batch(
        &mut self,
        base_offset: Offset,
        position: u64,
        max_timestamp_before_ms: i64,
        interval_bytes: u64,
    ) {
        let due = self
            .entries
            .last()
            .is_none_or(|last| position >= last.position + interval_bytes);
        if due {
            self.entries.push(IndexEntry {
                base_offset,
                position,
                max_timestamp_before_ms,
            });
        }
    }

    /// Position of the batch to start scanning from to find `offset`: the last indexed batch
    /// whose base offset is at most `offset`.
    pub(crate) fn position_for_offset(&self, offset: Offset) -> Option<u64> {
        self.entry_for_offset(offset).map(|e| e.position)
    }

    /// The last indexed batch whose base offset is at most `offset`: where a walk of batch
    /// headers to `offset` starts.
    pub(crate) fn entry_for_offset(&self, offset: Offset) -> Option<IndexEntry> {
        let after = self.entries.partition_point(|e| e.base_offset <= offset);
        after
            .checked_sub(1)
            .and_then(|i| self.entries.get(i))
            .copied()
    }

    /// Forgets the entries of batches at or after `position` (a suffix truncation).
    pub(crate) fn truncate_at(&mut self, position: u64) {
        let kept = self.entries.partition_point(|e| e.position < position);
        self.entries.truncate(kept);
    }

    /// Position of the batch to start scanning from to find the first batch whose largest
    /// timestamp is at least `timestamp_ms`.
    pub(crate) fn position_for_timestamp(&self, timestamp_ms: i64) -> Option<u64> {
        let after = self
            .entries
            .partition_point(|e| e.max_timestamp_before_ms < timestamp_ms);
        after
            .checked_sub(1)
            .and_then(|i| self.entries.get(i))
            .map(|e| e.position)
    }

    /// Number of entries.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_start_at_or_before_the_target() {
        let mut index = SparseIndex::default();
        // Batches of 10 records and 1000 bytes; timestamps 100, 90, 300, 200, ...
        let timestamps = [100, 90, 300, 200, 500, 400];
        let mut max_before = i64::MIN;
        for (i, ts) in timestamps.iter().enumerate() {
            index.note_batch(
                Offset(i as u64 * 10),
                4096 + i as u64 * 1000,
                max_before,
                2000,
            );
            max_before = max_before.max(*ts);
        }
        assert_eq!(index.len(), 3);
        assert_eq!(index.position_for_offset(Offset(0)), Some(4096));
        assert_eq!(index.position_for_offset(Offset(25)), Some(6096));
        assert_eq!(index.position_for_offset(Offset(1000)), Some(8096));
        // The first batch with max timestamp >= 250 is batch 2 at 6096; the entry there has
        // max_before 100, so scanning starts at 6096.
        assert_eq!(index.position_for_timestamp(250), Some(6096));
        assert_eq!(index.position_for_timestamp(50), Some(4096));
        assert_eq!(index.position_for_timestamp(450), Some(8096));
    }
}
