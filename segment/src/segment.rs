//! One segment file: where its batches are, what offsets and times they cover.

use std::path::PathBuf;
use std::rc::Rc;

use runnel_core::{BatchHeader, Offset};

use crate::index::SparseIndex;

/// A segment of the log: a file and what the log knows of its contents.
#[derive(Debug)]
pub(crate) struct Segment<F> {
    /// Offset of its first batch.
    pub base: Offset,
    /// The open file.
    pub file: Rc<F>,
    /// Its path.
    pub path: PathBuf,
    /// Byte position just after its last batch.
    pub data_end: u64,
    /// The offset after its last batch.
    pub next_offset: Offset,
    /// The largest record timestamp in it (`i64::MIN` while empty).
    pub max_timestamp_ms: i64,
    /// When it was created (wall clock, ms).
    pub created_ms: i64,
    /// The torn-write window its writer used.
    pub write_bytes_max: u32,
    /// Its layout version (`SegmentHeader::version`): 1 has no acknowledged-end checkpoints.
    pub version: u16,
    /// Bytes of the file reserved on disk (its size): appends reserve more in steps.
    pub reserved_bytes: u64,
    /// Sparse offset and time index.
    pub index: SparseIndex,
    /// Offsets just below `base` that are a lost range (from its header; 0: none).
    pub lost_before: u64,
}

impl<F> Segment<F> {
    /// Records a batch appended at `position`.
    pub(crate) fn note_batch(&mut self, header: &BatchHeader, position: u64, interval_bytes: u64) {
        assert_eq!(
            header.base_offset, self.next_offset,
            "offsets must stay dense"
        );
        assert_eq!(position, self.data_end, "batches must be back to back");
        self.index.note_batch(
            header.base_offset,
            position,
            self.max_timestamp_ms,
            interval_bytes,
        );
        self.data_end = position + u64::from(header.batch_len);
        self.next_offset = header.next_offset();
        self.max_timestamp_ms = self.max_timestamp_ms.max(header.max_timestamp_ms);
    }

    /// Whether it holds no batch.
    pub(crate) fn is_empty(&self) -> bool {
        self.next_offset == self.base
    }
}
