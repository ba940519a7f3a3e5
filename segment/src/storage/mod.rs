//! The I/O seam of the log: what it needs from a file system, and nothing more.
//!
//! Production runs over [`dma::DmaStorage`] (glommio DMA files: O_DIRECT through io_uring);
//! tests run over [`fault::FaultStorage`], which keeps the durable image apart from the
//! unsynced one so a test can pull the plug at any instant and inject failing writes or syncs.
//! Everything is single-threaded (one executor per core), so the traits use `async fn` without
//! `Send` bounds.

#![allow(async_fn_in_trait)]

use std::io;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::rc::Rc;

pub mod dma;
pub mod fault;

/// A buffer the storage can write with O_DIRECT: block-aligned, owned, filled by the log.
pub trait WriteBuffer {
    /// The whole buffer.
    fn as_slice(&self) -> &[u8];
    /// The whole buffer, writable.
    fn as_mut_slice(&mut self) -> &mut [u8];
    /// Shortens the buffer to `len` bytes (what a write then writes).
    fn truncate(&mut self, len: usize);
}

/// Bytes read from a file; the slice starts at the requested position and is 16-byte aligned
/// when that position is.
pub trait ReadBuffer: Deref<Target = [u8]> {}

/// A directory of files as the log needs it.
pub trait Storage: Clone + 'static {
    /// An open file.
    type File: StorageFile<Buffer = Self::Buffer, ReadBuf = Self::ReadBuf> + 'static;
    /// Write buffers of this storage.
    type Buffer: WriteBuffer + 'static;
    /// Read results of this storage.
    type ReadBuf: ReadBuffer + 'static;

    /// Creates the directory and its parents.
    async fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names of the files directly in `dir`.
    async fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Creates a new, empty file; fails if it exists.
    async fn create(&self, path: &Path) -> io::Result<Self::File>;
    /// Opens an existing file for reading and writing.
    async fn open(&self, path: &Path) -> io::Result<Self::File>;
    /// Removes a file.
    async fn remove(&self, path: &Path) -> io::Result<()>;
    /// Renames a file, replacing the target atomically.
    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, removals, renames) durable.
    async fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// An open file as the log needs it. Positions and lengths of writes are block-aligned.
pub trait StorageFile {
    /// Write buffers for this file.
    type Buffer: WriteBuffer;
    /// Read results of this file.
    type ReadBuf: ReadBuffer;

    /// A block-aligned write buffer of `len` bytes. Its contents are unspecified: the caller
    /// writes every byte it then writes to the file.
    fn alloc(&self, len: usize) -> Self::Buffer;
    /// Writes the whole buffer at `pos` (both block-aligned) and gives it back, unchanged, so
    /// the log can keep the bytes it wrote for readers (its batch cache).
    async fn write_at(&self, buffer: Self::Buffer, pos: u64) -> io::Result<Self::Buffer>;
    /// Bytes `start..end` of a buffer this storage wrote, as a read result, without I/O (and
    /// without a copy where the read result type can share the buffer). `start` keeps the
    /// 16-byte alignment [`ReadBuffer`] promises when it is a multiple of 16.
    fn written_read(buffer: &Rc<Self::Buffer>, start: usize, end: usize) -> Self::ReadBuf;
    /// Reads up to `len` bytes at `pos`; fewer at the end of the file.
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Self::ReadBuf>;
    /// fdatasync: everything written so far survives a power loss once this returns Ok.
    async fn sync(&self) -> io::Result<()>;
    /// The file's size in bytes.
    async fn size(&self) -> io::Result<u64>;
    /// Grows the file to `len` bytes of zeros (allocating the space); never shrinks it.
    async fn preallocate(&self, len: u64) -> io::Result<()>;
    /// Writes zeros over `[pos, pos + len)` (both block-aligned), as [`Self::write_at`] with a
    /// buffer of zeros would. The log writes zeros over reserved space ahead of its batches:
    /// on file systems that reserve with *unwritten* extents (ext4, xfs), a write into such
    /// space makes the next fdatasync also commit the extent conversion to the journal; over
    /// written blocks it is the device's flush alone.
    async fn write_zeroes(&self, pos: u64, len: u64) -> io::Result<()>;
    /// Cuts or extends (with zeros) the file to `len` bytes.
    async fn truncate(&self, len: u64) -> io::Result<()>;
    /// The path the file was opened with.
    fn path(&self) -> &PathBuf;
}
