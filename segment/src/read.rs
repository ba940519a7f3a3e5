//! Reading batches back: a read-ahead cursor over a file, and the chunk a read returns.

use std::io;

use runnel_core::batch::iter_batches;
use runnel_core::{BatchView, Offset};

use crate::storage::{Storage, StorageFile};

/// Reads a file in large pieces and serves smaller ranges from the last piece.
pub(crate) struct ChunkReader<'a, F: StorageFile> {
    file: &'a F,
    read_ahead_bytes: usize,
    cached: Option<(u64, F::ReadBuf)>,
}

impl<'a, F: StorageFile> ChunkReader<'a, F> {
    pub(crate) fn new(file: &'a F, read_ahead_bytes: usize) -> Self {
        ChunkReader {
            file,
            read_ahead_bytes,
            cached: None,
        }
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
        let hit = matches!(&self.cached, Some((start, buf)) if *start <= pos && start + buf.len() as u64 >= want_end);
        if !hit {
            let read_len =
                (len.max(self.read_ahead_bytes) as u64).min(limit.saturating_sub(pos)) as usize;
            let buf = self.file.read_at(pos, read_len).await?;
            self.cached = Some((pos, buf));
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
