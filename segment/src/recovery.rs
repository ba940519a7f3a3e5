//! Opening a log directory after a clean stop or a crash.
//!
//! A sealed segment with a valid index file (written when it was sealed) is taken from that
//! file; its batches are checked when read. Every other segment — always the last one — is
//! scanned from its first batch and every batch's CRCs are checked. In the
//! last segment, the first batch that does not check (or the first all-zero header) ends the
//! log — a torn tail — provided it lies at or beyond the segment's acknowledged-end checkpoint
//! (format version 2: everything below it was durable, and maybe acknowledged, so damage there
//! is never a torn write) and nothing but zeros lies beyond the torn-write window (the most
//! bytes one write could carry, recorded in the segment header). Anything else that fails a
//! check is corruption: a typed error, never data, and never a truncation of acknowledged
//! records whose offsets would then be handed out again.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use runnel_core::{BatchHeader, BatchView, Offset, BATCH_HEADER_LEN};

use crate::config::LogConfig;
use crate::config::BLOCK_BYTES;
use crate::error::LogError;
use crate::format::UNSYNCED_WRITES_MAX;
use crate::format::{
    decode_start, parse_segment_file_name, AckedCheckpoint, SegmentHeader, SEGMENT_DATA_START,
    SEGMENT_HEADER_LEN, START_FILE_NAME,
};
use crate::index::SparseIndex;
use crate::index_file::{self, index_file_name, SealedSegmentIndex, INDEX_EXTENSION};
use crate::log::remove_durably;
use crate::read::ChunkReader;
use crate::segment::Segment;
use crate::storage::{Storage, StorageFile};

/// The base offset in an index file name, or `None` for other files.
pub(crate) fn parse_index_file_name(name: &str) -> Option<Offset> {
    let stem = name.strip_suffix(INDEX_EXTENSION)?.strip_suffix('.')?;
    parse_segment_file_name(&format!("{stem}.seg"))
}

/// How much a recovery scan reads at once.
const SCAN_READ_BYTES: usize = 1 << 20;

/// What recovery found in a directory.
pub(crate) struct Recovered<F> {
    /// Segments in offset order; the last is where appends continue.
    pub segments: Vec<Segment<F>>,
    /// The logical start (from the start file, or the first segment).
    pub start: Offset,
    /// The last segment holds non-zero bytes after its last batch (a torn write) that must be
    /// zeroed before appending.
    pub dirty_tail: bool,
    /// The newest acknowledged-end checkpoint of the last segment (format version 2).
    pub acked: Option<AckedCheckpoint>,
    /// The offset reservation file's end: offsets below it may have been handed out.
    pub reserved: Option<Offset>,
}

pub(crate) fn corruption(
    path: &Path,
    position: u64,
    offset: Offset,
    reason: impl Into<String>,
) -> LogError {
    LogError::Corruption {
        path: path.to_owned(),
        position,
        offset,
        reason: reason.into(),
    }
}

pub(crate) async fn recover<S: Storage>(
    storage: &S,
    dir: &Path,
    config: &LogConfig,
) -> Result<Recovered<S::File>, LogError> {
    storage
        .create_dir_all(dir)
        .await
        .map_err(|e| LogError::io("create directory", dir, e))?;
    let mut names = storage
        .list(dir)
        .await
        .map_err(|e| LogError::io("list directory", dir, e))?;
    // A suffix truncation that a crash interrupted is finished first: its record was made
    // durable before any file changed, so the log is the truncated one from then on (and the
    // cut segment's checkpoints no longer claim what was removed).
    if let Some(record) = crate::truncate::read_record(storage, dir, &names).await? {
        crate::truncate::complete(storage, dir, &record).await?;
        names = storage
            .list(dir)
            .await
            .map_err(|e| LogError::io("list directory", dir, e))?;
    }
    let mut bases: Vec<Offset> = names
        .iter()
        .filter_map(|n| parse_segment_file_name(n))
        .collect();
    bases.sort();
    let start_from_file = read_start_file(storage, dir, &names).await?;
    let reserved = read_replaced_file(
        storage,
        dir,
        &names,
        crate::format::RESERVED_FILE_NAME,
        crate::format::RESERVED_FILE_LEN,
        crate::format::ReservedFile::decode,
    )
    .await?
    .map(|file| file.end);
    if let Some(last) = bases.last().copied() {
        if remove_unborn_segment(storage, dir, last).await? {
            bases.pop();
        }
    }
    remove_stale_indexes(storage, dir, &names, &bases).await?;

    let mut segments: Vec<Segment<S::File>> = Vec::with_capacity(bases.len());
    let mut dirty_tail = false;
    let mut acked = None;
    let last_index = bases.len().checked_sub(1);
    for (index, base) in bases.iter().enumerate() {
        let is_last = Some(index) == last_index;
        let path = dir.join(crate::format::segment_file_name(*base));
        let file = storage
            .open(&path)
            .await
            .map_err(|e| LogError::io("open segment", &path, e))?;
        let size = file
            .size()
            .await
            .map_err(|e| LogError::io("stat segment", &path, e))?;
        let head = file
            .read_at(0, BLOCK_BYTES)
            .await
            .map_err(|e| LogError::io("read segment header", &path, e))?;
        let header =
            SegmentHeader::decode(&head).map_err(|reason| corruption(&path, 0, *base, reason))?;
        let checkpoint = if header.version >= 2 {
            AckedCheckpoint::decode_newest(&head)
        } else {
            None
        };
        if header.base_offset != *base {
            return Err(corruption(
                &path,
                8,
                *base,
                format!(
                    "header says base offset {}, file name says {}",
                    header.base_offset, base
                ),
            ));
        }
        if let Some(previous) = segments.last() {
            // A lost range (offsets handed out under `memory` durability, then lost in a
            // crash) is the one gap allowed, and only as the segment's header declares it.
            if previous.next_offset.0 != base.0.saturating_sub(header.lost_before) {
                return Err(corruption(
                    &path,
                    0,
                    previous.next_offset,
                    format!(
                        "gap: previous segment ends at offset {}, this one starts at {}",
                        previous.next_offset, base
                    ),
                ));
            }
        }
        let file = Rc::new(file);
        if !is_last && !config.verify_sealed_segments_on_open {
            if let Some(sealed) = load_index(storage, dir, *base, size).await {
                segments.push(Segment {
                    base: *base,
                    file,
                    path,
                    data_end: sealed.data_end,
                    next_offset: sealed.next_offset,
                    max_timestamp_ms: sealed.max_timestamp_ms,
                    created_ms: sealed.created_ms,
                    write_bytes_max: sealed.write_bytes_max,
                    version: header.version,
                    reserved_bytes: size,
                    index: sealed.index,
                    lost_before: header.lost_before,
                });
                continue;
            }
        }
        let mut segment = Segment {
            base: *base,
            file,
            path: path.clone(),
            data_end: SEGMENT_DATA_START,
            next_offset: *base,
            max_timestamp_ms: i64::MIN,
            created_ms: header.created_ms,
            write_bytes_max: header.write_bytes_max,
            version: header.version,
            reserved_bytes: size,
            index: SparseIndex::default(),
            lost_before: header.lost_before,
        };
        let checkpoint = checkpoint.filter(|_| is_last);
        dirty_tail = scan_segment(&mut segment, size, is_last, checkpoint, config).await?;
        if is_last {
            acked = checkpoint;
        }
        segments.push(segment);
    }
    let first_base = segments.first().map(|s| s.base);
    let next = segments.last().map(|s| s.next_offset);
    let start = match (start_from_file, first_base) {
        (Some(start), Some(first)) => start.max(first),
        (Some(start), None) => start,
        (None, Some(first)) => first,
        (None, None) => Offset(0),
    };
    if let (Some(next), Some(from_file)) = (next, start_from_file) {
        if from_file > next {
            return Err(corruption(
                &dir.join(START_FILE_NAME),
                8,
                next,
                format!("start offset {from_file} is beyond the end of the log {next}"),
            ));
        }
    }
    Ok(Recovered {
        segments,
        start,
        dirty_tail,
        acked,
        reserved,
    })
}

/// A roll creates the new segment, writes its header and syncs it before any batch goes in,
/// so a crash during a roll can leave a last segment whose header is torn but which never
/// held a batch. Such a segment is removed. A bad header with anything but zeros after it is
/// corruption (or a format this build does not read), reported by the scan, never deleted.
async fn remove_unborn_segment<S: Storage>(
    storage: &S,
    dir: &Path,
    base: Offset,
) -> Result<bool, LogError> {
    let path = dir.join(crate::format::segment_file_name(base));
    let file = storage
        .open(&path)
        .await
        .map_err(|e| LogError::io("open segment", &path, e))?;
    let head = file
        .read_at(0, SEGMENT_HEADER_LEN)
        .await
        .map_err(|e| LogError::io("read segment header", &path, e))?;
    if SegmentHeader::decode(&head).is_ok() {
        return Ok(false);
    }
    let size = file
        .size()
        .await
        .map_err(|e| LogError::io("stat segment", &path, e))?;
    let mut reader = ChunkReader::new(&file, SCAN_READ_BYTES);
    let mut at = SEGMENT_DATA_START;
    while at < size {
        let bytes = reader
            .bytes(at, SCAN_READ_BYTES, size)
            .await
            .map_err(|e| LogError::io("read segment", &path, e))?;
        if bytes.is_empty() {
            break;
        }
        if bytes.iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += bytes.len() as u64;
    }
    drop(reader);
    drop(file);
    remove_durably(storage, dir, &path, "remove unborn segment").await?;
    Ok(true)
}

/// Removes index files that no longer describe a sealed segment: those of deleted segments and
/// the one of the last segment, which appends will grow. The removal is made durable before
/// anything is appended, so a stale index can never be trusted after a later crash.
async fn remove_stale_indexes<S: Storage>(
    storage: &S,
    dir: &Path,
    names: &[String],
    bases: &[Offset],
) -> Result<(), LogError> {
    let mut removed = false;
    for name in names {
        let Some(base) = parse_index_file_name(name) else {
            continue;
        };
        if bases.last() == Some(&base) || !bases.contains(&base) {
            let path = dir.join(name);
            storage
                .remove(&path)
                .await
                .map_err(|e| LogError::io("remove stale index", &path, e))?;
            removed = true;
        }
    }
    if removed {
        storage
            .sync_dir(dir)
            .await
            .map_err(|e| LogError::io("sync directory", dir, e))?;
    }
    Ok(())
}

/// The persisted index of the sealed segment at `base`, if there is a valid one that agrees
/// with the segment file's size.
async fn load_index<S: Storage>(
    storage: &S,
    dir: &Path,
    base: Offset,
    segment_size: u64,
) -> Option<SealedSegmentIndex> {
    let path = dir.join(index_file_name(base));
    let file = storage.open(&path).await.ok()?;
    let size = file.size().await.ok()?;
    let bytes = file.read_at(0, usize::try_from(size).ok()?).await.ok()?;
    let sealed = index_file::decode(&bytes).ok()?;
    let block = crate::config::BLOCK_BYTES as u64;
    let sealed_size = sealed.data_end.div_ceil(block) * block;
    (sealed.base_offset == base
        && sealed.data_end >= SEGMENT_DATA_START
        && sealed_size == segment_size)
        .then_some(sealed)
}

async fn read_start_file<S: Storage>(
    storage: &S,
    dir: &Path,
    names: &[String],
) -> Result<Option<Offset>, LogError> {
    read_replaced_file(
        storage,
        dir,
        names,
        START_FILE_NAME,
        crate::format::START_FILE_LEN,
        decode_start,
    )
    .await
}

/// Reads and decodes the first `len` bytes of the file `name` of `dir`, if `names` holds it. Such
/// a file (the start file, the truncation record) is only ever replaced by an atomic rename
/// after its contents were synced, so one that does not decode is corruption, not a torn write.
pub(crate) async fn read_replaced_file<S: Storage, T>(
    storage: &S,
    dir: &Path,
    names: &[String],
    name: &str,
    len: usize,
    decode: impl FnOnce(&[u8]) -> Result<T, String>,
) -> Result<Option<T>, LogError> {
    if !names.iter().any(|n| n == name) {
        return Ok(None);
    }
    let path: PathBuf = dir.join(name);
    let file = storage
        .open(&path)
        .await
        .map_err(|e| LogError::io("open file", &path, e))?;
    let bytes = file
        .read_at(0, len)
        .await
        .map_err(|e| LogError::io("read file", &path, e))?;
    decode(&bytes)
        .map(Some)
        .map_err(|reason| corruption(&path, 0, Offset(0), reason))
}

/// Scans a segment's batches, filling its index. Returns whether non-zero bytes follow the
/// last batch of the last segment (a torn tail to be zeroed). `acked` is the last segment's
/// acknowledged-end checkpoint: the scan must reach it, on a batch boundary holding its offset.
async fn scan_segment<F: StorageFile>(
    segment: &mut Segment<F>,
    size: u64,
    is_last: bool,
    acked: Option<AckedCheckpoint>,
    config: &LogConfig,
) -> Result<bool, LogError> {
    let file = Rc::clone(&segment.file);
    let mut reader = ChunkReader::new(&*file, SCAN_READ_BYTES);
    let path = segment.path.clone();
    let io_error = |e| LogError::io("read segment", &path, e);
    let mut pos = SEGMENT_DATA_START;
    // The offset the scan found at the checkpoint's position, once it got there.
    let mut offset_at_acked: Option<Offset> = None;
    let failure: Option<String> = loop {
        if acked.is_some_and(|a| a.position == pos) {
            offset_at_acked = Some(segment.next_offset);
        }
        if pos + BATCH_HEADER_LEN as u64 > size {
            break None;
        }
        let head = reader
            .bytes(pos, BATCH_HEADER_LEN, size)
            .await
            .map_err(io_error)?;
        if head.iter().all(|&b| b == 0) {
            break None;
        }
        let header = match BatchHeader::decode(head) {
            Ok(header) => header,
            Err(e) => break Some(e.to_string()),
        };
        let len = header.batch_len as usize;
        if pos + len as u64 > size {
            break Some(format!(
                "batch of {len} bytes runs past the end of the file"
            ));
        }
        let bytes = reader.bytes(pos, len, size).await.map_err(io_error)?;
        if let Err(e) = BatchView::check(bytes) {
            break Some(e.to_string());
        }
        if header.base_offset != segment.next_offset {
            break Some(format!(
                "batch has base offset {}, the log expects {}",
                header.base_offset, segment.next_offset
            ));
        }
        segment.note_batch(&header, pos, config.index_interval_bytes);
        pos += len as u64;
    };
    if !is_last {
        // Sealed segments were synced whole and cut after their last batch: anything that
        // does not check is damage.
        if let Some(reason) = failure {
            return Err(corruption(&segment.path, pos, segment.next_offset, reason));
        }
        return Ok(false);
    }
    if let Some(acked) = acked {
        // Everything below the checkpoint was durable before the checkpoint was written: a
        // failure there is damage to acknowledged records, never a torn write.
        let reason = match offset_at_acked {
            _ if pos < acked.position => Some(format!(
                "{}; the segment's acknowledged end is offset {} at byte {}, so \
                 acknowledged records are damaged",
                failure.as_deref().unwrap_or("the log ends early"),
                acked.offset,
                acked.position
            )),
            None => Some(format!(
                "the acknowledged-end checkpoint (offset {}, byte {}) is not on a batch boundary",
                acked.offset, acked.position
            )),
            Some(found) if found != acked.offset => Some(format!(
                "the acknowledged-end checkpoint says offset {} at byte {}, the batches say {}",
                acked.offset, acked.position, found
            )),
            Some(_) => None,
        };
        if let Some(reason) = reason {
            return Err(corruption(&segment.path, pos, segment.next_offset, reason));
        }
    }
    // The last segment: a power loss can only have torn the last writes, which
    // started at or before `pos`, and at most UNSYNCED_WRITES_MAX writes of at most
    // `write_bytes_max` bytes each can be unsynced.
    let window = u64::from(segment.write_bytes_max) * UNSYNCED_WRITES_MAX;
    let torn_end = (pos + window).min(size);
    let check_end = (pos + 2 * window).min(size);
    let mut dirty = false;
    let mut at = pos;
    while at < check_end {
        let len = ((check_end - at) as usize).min(SCAN_READ_BYTES);
        let bytes = reader.bytes(at, len, size).await.map_err(io_error)?;
        if bytes.is_empty() {
            break;
        }
        if let Some(nonzero) = bytes.iter().position(|&b| b != 0) {
            let nonzero_at = at + nonzero as u64;
            if nonzero_at >= torn_end {
                let reason = failure.unwrap_or_else(|| "a zeroed region".to_string());
                return Err(corruption(
                    &segment.path,
                    pos,
                    segment.next_offset,
                    format!("{reason}, and data follows at byte {nonzero_at}, beyond the torn-write window"),
                ));
            }
            dirty = true;
            // Skip to the end of the torn window; only what lies beyond it matters now.
            at = torn_end.max(at + 1);
            continue;
        }
        at += bytes.len() as u64;
    }
    Ok(dirty)
}
