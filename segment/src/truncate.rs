//! Suffix truncation on disk: removing every record at and after an offset, crash-safely.
//!
//! A replica truncates the uncommitted suffix of its log when a new sequencer recovers the
//! shard (ARCHITECTURE.md §6). On disk that touches several files (block 0 and the tail of the
//! segment holding the cut, every later segment, index files), which no single write can
//! change at once. So the truncation is a redo record: [`write_record`] makes the `truncate`
//! file durable (written to `truncate.tmp`, synced, renamed, directory synced) before anything
//! else changes; that rename is the commit point. [`complete`] then does every step, each one
//! idempotent, and removes the record last. Recovery that finds the record runs [`complete`]
//! again before it reads the log. A crash at any instant therefore leaves the old log (no
//! durable record yet) or the truncated one (the record is there and recovery finishes the
//! job), never a mix, and no old byte at or beyond the cut survives to be read back under a
//! reused offset.
//!
//! The cut segment's acknowledged-end checkpoints are lowered to the cut *before* its data is
//! cut, so that recovery never mistakes a deliberate truncation for damage below an
//! acknowledged end. Drawn in `docs/format/segment.md` ("Suffix truncation").

use std::path::Path;

use crate::config::BLOCK_BYTES;
use crate::error::LogError;
use crate::format::{
    parse_segment_file_name, segment_file_name, AckedCheckpoint, SegmentHeader, TruncationRecord,
    CHECKPOINT_SLOT_AT, TRUNCATE_FILE_LEN, TRUNCATE_FILE_NAME,
};
use crate::log::{align_down, align_up, remove_durably, replace_file, sync_directory};
use crate::recovery::{corruption, parse_index_file_name, read_replaced_file};
use crate::storage::{Storage, StorageFile, WriteBuffer};

/// Makes the truncation record durable: after this returns, the truncation happens, whatever
/// a crash interrupts.
pub(crate) async fn write_record<S: Storage>(
    storage: &S,
    dir: &Path,
    record: &TruncationRecord,
) -> Result<(), LogError> {
    let mut block = vec![0u8; BLOCK_BYTES];
    record.encode_into(&mut block);
    replace_file(storage, dir, TRUNCATE_FILE_NAME, &block).await
}

/// The truncation record of `dir`, if a truncation is under way (one that does not decode is
/// corruption).
pub(crate) async fn read_record<S: Storage>(
    storage: &S,
    dir: &Path,
    names: &[String],
) -> Result<Option<TruncationRecord>, LogError> {
    read_replaced_file(
        storage,
        dir,
        names,
        TRUNCATE_FILE_NAME,
        TRUNCATE_FILE_LEN,
        TruncationRecord::decode,
    )
    .await
}

/// Does every step of the truncation `record` describes, then removes the record. Each step
/// can be done again after a crash with the same result. Returns the checkpoint slots of the
/// cut segment as they now are on disk (index = slot).
///
/// 1. Block 0 of the cut segment: when a valid checkpoint slot claims an acknowledged end
///    beyond the cut, both slots are rewritten to claim `(cut, position)` with the next two
///    sequence numbers (the header's sector rewritten with the bytes it holds); fdatasync.
///    Every batch below the cut was durable (the log syncs everything before it writes the
///    record), so the claim holds for the old log and the truncated one alike.
/// 2. The cut segment's data: the file is cut to `align_up(position)` and the partial block
///    before it rewritten with zeros after `position`; fdatasync.
/// 3. Every segment with a greater base is removed, with its index file, and the cut
///    segment's index file (it is the last segment now, which has none); directory fsync.
/// 4. The record is removed; directory fsync.
pub(crate) async fn complete<S: Storage>(
    storage: &S,
    dir: &Path,
    record: &TruncationRecord,
) -> Result<[Option<AckedCheckpoint>; 2], LogError> {
    let path = dir.join(segment_file_name(record.segment_base));
    let missing = |_| {
        corruption(
            &path,
            0,
            record.cut,
            "the truncation record names a segment that does not exist",
        )
    };
    let file = storage.open(&path).await.map_err(missing)?;
    let head = file
        .read_at(0, BLOCK_BYTES)
        .await
        .map_err(|e| LogError::io("read segment header", &path, e))?;
    let header = SegmentHeader::decode(&head)
        .map_err(|reason| corruption(&path, 0, record.segment_base, reason))?;
    let size = file
        .size()
        .await
        .map_err(|e| LogError::io("stat segment", &path, e))?;
    if size < record.position {
        return Err(corruption(
            &path,
            size,
            record.cut,
            format!(
                "the segment ends at byte {size}, before the truncation's cut at byte {}",
                record.position
            ),
        ));
    }
    // 1. No checkpoint may claim more than the cut once the data is cut.
    let mut slots = if header.version >= 2 {
        AckedCheckpoint::decode_slots(&head)
    } else {
        [None, None]
    };
    if slots.iter().flatten().any(|c| c.offset > record.cut) {
        let sequence = slots
            .iter()
            .flatten()
            .map(|c| c.sequence)
            .max()
            .unwrap_or(0);
        let mut block = file.alloc(BLOCK_BYTES);
        block.as_mut_slice().fill(0);
        let header_sector = CHECKPOINT_SLOT_AT[0];
        if let (Some(target), Some(source)) = (
            block.as_mut_slice().get_mut(..header_sector),
            head.get(..header_sector),
        ) {
            target.copy_from_slice(source);
        }
        slots = [None, None];
        for step in 1..=2 {
            let checkpoint = AckedCheckpoint {
                sequence: sequence.saturating_add(step),
                offset: record.cut,
                position: record.position,
            };
            checkpoint.encode_into(block.as_mut_slice());
            if let Some(slot) = slots.get_mut(checkpoint.slot()) {
                *slot = Some(checkpoint);
            }
        }
        file.write_at(block, 0)
            .await
            .map_err(|e| LogError::io("write segment checkpoint", &path, e))?;
        file.sync()
            .await
            .map_err(|e| LogError::io("fdatasync segment", &path, e))?;
    }
    // 2. The data at and after the cut.
    cut_after(&file, &path, record.position).await?;
    // 3. Later segments and stale index files.
    let names = storage
        .list(dir)
        .await
        .map_err(|e| LogError::io("list directory", dir, e))?;
    for name in &names {
        let doomed = match parse_segment_file_name(name) {
            Some(base) => base > record.segment_base,
            None => parse_index_file_name(name).is_some_and(|base| base >= record.segment_base),
        };
        if doomed {
            let doomed_path = dir.join(name);
            storage
                .remove(&doomed_path)
                .await
                .map_err(|e| LogError::io("remove truncated file", &doomed_path, e))?;
        }
    }
    sync_directory(storage, dir).await?;
    // 4. Done: the record goes.
    let record_path = dir.join(TRUNCATE_FILE_NAME);
    remove_durably(storage, dir, &record_path, "remove truncation record").await?;
    Ok(slots)
}

/// Cuts `file` after byte `end`: the file ends at the block boundary after it, the bytes of
/// that last block after `end` are rewritten as zeros, and the file is synced. What lay beyond
/// can then never be read back, nor mistaken for data by a later recovery.
pub(crate) async fn cut_after<F: StorageFile>(
    file: &F,
    path: &Path,
    end: u64,
) -> Result<(), LogError> {
    let keep_from = align_down(end);
    let partial = (end - keep_from) as usize;
    file.truncate(align_up(end))
        .await
        .map_err(|e| LogError::io("truncate segment", path, e))?;
    if partial > 0 {
        let kept = file
            .read_at(keep_from, partial)
            .await
            .map_err(|e| LogError::io("read segment tail", path, e))?;
        let source = kept.get(..partial).ok_or_else(|| {
            let short = std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the file ends before byte {end}"),
            );
            LogError::io("read segment tail", path, short)
        })?;
        let mut block = file.alloc(BLOCK_BYTES);
        block.as_mut_slice().fill(0);
        if let Some(target) = block.as_mut_slice().get_mut(..partial) {
            target.copy_from_slice(source);
        }
        file.write_at(block, keep_from)
            .await
            .map_err(|e| LogError::io("rewrite last block", path, e))?;
    }
    file.sync()
        .await
        .map_err(|e| LogError::io("fdatasync segment", path, e))
}
