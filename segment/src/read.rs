//! Reading batches back: a read-ahead cursor over a file, and the chunk a read returns.

use std::io;

use runnel_core::batch::iter_batches;
use runnel_core::{BatchHeader, BatchView, Offset};

use crate::storage::{Storage, StorageFile};

/// Asks the log's batch cache for the file bytes `pos..end`: the piece holding them (a read
/// result) and the file position of its first byte.
pub(crate) type CacheLookup<'a, F> =
    &'a dyn Fn(u64, u64) -> Option<(u64, <F as StorageFile>::ReadBuf)>;

/// Reads a file in large pieces and serves smaller ranges from the last piece. With a cache
/// lookup, a range the batch cache holds is served from it instead of the disk.
pub(crate) struct ChunkReader<'a, F: StorageFile> {
    file: &'a F,
    read_ahead_bytes: usize,
    cached: Option<(u64, F::ReadBuf)>,
    cache: Option<CacheLookup<'a, F>>,
    /// The current piece came from the batch cache.
    from_cache: bool,
    /// Disk reads made.
    disk_reads: u64,
}

impl<'a, F: StorageFile> ChunkReader<'a, F> {
    pub(crate) fn new(file: &'a F, read_ahead_bytes: usize) -> Self {
        ChunkReader {
            file,
            read_ahead_bytes,
            cached: None,
            cache: None,
            from_cache: false,
            disk_reads: 0,
        }
    }

    /// A reader that asks `cache` before reading the disk.
    pub(crate) fn with_cache(
        file: &'a F,
        read_ahead_bytes: usize,
        cache: CacheLookup<'a, F>,
    ) -> Self {
        ChunkReader {
            cache: Some(cache),
            ..Self::new(file, read_ahead_bytes)
        }
    }

    /// Whether the current piece came from the batch cache.
    pub(crate) fn piece_from_cache(&self) -> bool {
        self.from_cache
    }

    /// Whether the current piece holds the file bytes `pos..end`.
    pub(crate) fn covers(&self, pos: u64, end: u64) -> bool {
        matches!(&self.cached, Some((start, buf)) if *start <= pos && start + buf.len() as u64 >= end)
    }

    /// Disk reads made so far.
    pub(crate) fn disk_reads(&self) -> u64 {
        self.disk_reads
    }

    /// Makes `[pos, pos + len)` (clipped to `limit`) available, reading when it is not cached.
    /// Returns the cached piece and where `pos` lies in it.
    pub(crate) async fn load(
        &mut self,
        pos: u64,
        len: usize,
        limit: u64,
    ) -> io::Result<(&F::ReadBuf, usize, usize)> {
        let want_end = (pos + len as u64).min(limit);
        if !self.covers(pos, want_end) {
            let from_cache = self.cache.and_then(|lookup| lookup(pos, want_end));
            self.from_cache = from_cache.is_some();
            match from_cache {
                Some(piece) => self.cached = Some(piece),
                None => {
                    let read_len = (len.max(self.read_ahead_bytes) as u64)
                        .min(limit.saturating_sub(pos)) as usize;
                    let buf = self.file.read_at(pos, read_len).await?;
                    self.disk_reads += 1;
                    self.cached = Some((pos, buf));
                }
            }
        }
        match &self.cached {
            Some((start, buf)) => {
                let at = (pos - start) as usize;
                let available = (buf.len() - at).min((want_end - pos) as usize);
                Ok((buf, at, available))
            }
            None => Err(io::Error::other("read cache is empty after a read")),
        }
    }

    /// The bytes `[pos, pos + len)` clipped to `limit` and to the end of the file.
    pub(crate) async fn bytes(&mut self, pos: u64, len: usize, limit: u64) -> io::Result<&[u8]> {
        let (buf, at, available) = self.load(pos, len, limit).await?;
        Ok(buf.get(at..at + available).unwrap_or_default())
    }

    /// Takes the cached piece if it covers `[pos, end)`.
    pub(crate) fn take_if_covers(&mut self, pos: u64, end: u64) -> Option<(F::ReadBuf, usize)> {
        match &self.cached {
            Some((start, buf)) if *start <= pos && start + buf.len() as u64 >= end => {
                let at = (pos - start) as usize;
                self.cached.take().map(|(_, buf)| (buf, at))
            }
            _ => None,
        }
    }
}

/// Batches returned by one read: whole batches, back to back, each already checked (header
/// and payload CRC). Records are read in place from the chunk's buffer.
pub struct ReadChunk<S: Storage> {
    pub(crate) buffer: Option<S::ReadBuf>,
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) next_offset: Offset,
    pub(crate) batch_count: usize,
}

impl<S: Storage> ReadChunk<S> {
    pub(crate) fn empty(next_offset: Offset) -> Self {
        ReadChunk {
            buffer: None,
            start: 0,
            end: 0,
            next_offset,
            batch_count: 0,
        }
    }

    /// The batches, in offset order. The first may start before the offset asked for (a batch
    /// is never split); skip its records below that offset.
    pub fn batches(&self) -> impl Iterator<Item = BatchView<'_>> + '_ {
        iter_batches(self.as_bytes()).map_while(Result::ok)
    }

    /// The raw bytes of the batches, ready to send as they are.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer
            .as_ref()
            .and_then(|b| b.get(self.start..self.end))
            .unwrap_or_default()
    }

    /// Drops the trailing batches that reach past `end` (their last record is at or after
    /// it), keeping at least the first batch. Returns whether every batch left ends by `end`.
    /// For a reader allowed fewer records than it read: it sends whole batches, not a batch
    /// of which it may deliver only the first records.
    pub fn keep_batches_ending_by(&mut self, end: Offset) -> bool {
        let mut pos = self.start;
        let mut kept = 0;
        let mut next_offset = self.next_offset;
        while kept < self.batch_count {
            let Some(header) = self
                .buffer
                .as_ref()
                .and_then(|buffer| buffer.get(pos..self.end))
                .and_then(|bytes| BatchHeader::decode(bytes).ok())
            else {
                break;
            };
            if header.next_offset() > end {
                break;
            }
            pos += header.batch_len as usize;
            next_offset = header.next_offset();
            kept += 1;
        }
        if kept == 0 {
            return false;
        }
        assert!(pos <= self.end, "kept batches lie within the chunk");
        self.end = pos;
        self.next_offset = next_offset;
        self.batch_count = kept;
        true
    }

    /// Number of batches.
    pub fn batch_count(&self) -> usize {
        self.batch_count
    }

    /// Whether no batch was returned (nothing at or after the offset within the bound).
    pub fn is_empty(&self) -> bool {
        self.batch_count == 0
    }

    /// The offset to read from next.
    pub fn next_offset(&self) -> Offset {
        self.next_offset
    }
}

impl<S: Storage> std::fmt::Debug for ReadChunk<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadChunk")
            .field("bytes", &(self.end - self.start))
            .field("batch_count", &self.batch_count)
            .field("next_offset", &self.next_offset)
            .finish()
    }
}
