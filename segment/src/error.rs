//! Operating errors of a shard log.

use std::path::PathBuf;
use std::sync::Arc;

use runnel_core::{BatchError, Offset};
use thiserror::Error;

/// Why a log operation failed.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum LogError {
    /// An I/O call failed. When it was a write or a sync, the log is poisoned as well.
    #[error("{op} failed on {path}: {source}")]
    Io {
        /// What the log was doing.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: Arc<std::io::Error>,
    },
    /// An earlier write or fdatasync failed; the log accepts and acknowledges nothing more.
    /// Reopen it (recovery decides what is durable) after the fault is fixed.
    #[error("the log is poisoned by an earlier I/O failure and accepts nothing more: {cause}")]
    Poisoned {
        /// The failure that poisoned it.
        cause: String,
    },
    /// Bytes on disk fail their checks where no crash can explain them.
    #[error("corruption in {path} at byte {position} (expected offset {offset}): {reason}")]
    Corruption {
        /// The segment file.
        path: PathBuf,
        /// Byte position in the file.
        position: u64,
        /// The offset the log expected to find there.
        offset: Offset,
        /// What was wrong.
        reason: String,
    },
    /// A batch handed to `append` is not a well-formed batch.
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] BatchError),
    /// A batch larger than the log can hold in one write.
    #[error("batch of {size} bytes exceeds the log's limit of {max} bytes")]
    BatchTooLarge {
        /// The batch size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The offset is before the log's start (trimmed or deleted by retention).
    #[error("offset {requested} was trimmed; the log starts at {start}")]
    Trimmed {
        /// The offset asked for.
        requested: Offset,
        /// The first offset still held.
        start: Offset,
    },
    /// The offset is beyond the end of the log.
    #[error("offset {requested} is beyond the end of the log (next offset {next})")]
    OffsetOutOfRange {
        /// The offset asked for.
        requested: Offset,
        /// The offset the next append will get.
        next: Offset,
    },
    /// The offset is in a lost range: it was handed out by an append acknowledged before it
    /// was durable (`memory` durability) and lost in a crash. It holds nothing, forever; the
    /// log continues at `to`. A notice for readers and consumers (skip to `to`, count the
    /// loss), not a failure of the log.
    #[error("offsets {from} to {to} (exclusive) were lost in a crash before they were durable; {requested} is among them")]
    LostRange {
        /// The offset asked for.
        requested: Offset,
        /// The first lost offset.
        from: Offset,
        /// The offset after the lost range: the next one that may hold a record.
        to: Offset,
    },
    /// An append at a given offset ([`crate::ShardLog::append_at`]) that is not the log's next
    /// offset: offsets stay dense. Nothing was appended.
    #[error("append at offset {requested} refused: the log's next offset is {next}")]
    NotNextOffset {
        /// The offset asked for.
        requested: Offset,
        /// The offset the next append gets.
        next: Offset,
    },
    /// A suffix truncation ([`crate::ShardLog::truncate_from`]) at an offset inside a batch:
    /// the log removes whole batches only. Nothing was changed.
    #[error("cannot truncate at offset {requested}: it lies inside the batch {batch_base}..{batch_next}")]
    NotBatchBoundary {
        /// The offset asked for.
        requested: Offset,
        /// Base offset of the batch holding it.
        batch_base: Offset,
        /// The offset after that batch.
        batch_next: Offset,
    },
    /// The configuration does not hold together.
    #[error("invalid log configuration: {0}")]
    InvalidConfig(String),
    /// The file system has no room for the log's next reservation of disk space. Nothing was
    /// written and the log is not poisoned: appends are refused until space is freed, while
    /// what is already buffered waits and is written once the reservation succeeds.
    #[error("no space left on the device for {path}: appends are refused until space is freed ({cause})")]
    NoSpace {
        /// The segment file that could not grow.
        path: PathBuf,
        /// The operating system's error.
        cause: String,
    },
    /// The log was closed.
    #[error("the log is closed")]
    Closed,
}

/// Whether an I/O error means the file system (or the user's quota) is full.
pub(crate) fn is_no_space(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ENOSPC) | Some(libc::EDQUOT)
    ) || error.kind() == std::io::ErrorKind::StorageFull
}

impl LogError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LogError::Io {
            op,
            path: path.into(),
            source: Arc::new(source),
        }
    }
}
