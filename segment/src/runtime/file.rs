//! Buffered files (through the page cache) on the current executor's io_uring, for small logs
//! that are not shard segments (the metadata group's log). Segments go through the DMA storage
//! in `storage/dma.rs` instead. Every error is an [`io::Error`].

use std::io;
use std::ops::Deref;
use std::path::Path;

use glommio::io::{OpenOptions, ReadResult};

fn io_error(error: glommio::GlommioError<()>) -> io::Error {
    io::Error::from(error)
}

/// A file read and written through the page cache.
pub struct BufferedFile(glommio::io::BufferedFile);

impl BufferedFile {
    /// Creates `path`, which must not exist, for reading and writing.
    pub async fn create_new(path: &Path) -> io::Result<BufferedFile> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .buffered_open(path)
            .await
            .map(BufferedFile)
            .map_err(io_error)
    }

    /// Opens the existing file `path` for reading and writing.
    pub async fn open(path: &Path) -> io::Result<BufferedFile> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .buffered_open(path)
            .await
            .map(BufferedFile)
            .map_err(io_error)
    }

    /// Writes `bytes` at `position`; how many were written (a write may be short).
    pub async fn write_at(&self, bytes: Vec<u8>, position: u64) -> io::Result<usize> {
        self.0.write_at(bytes, position).await.map_err(io_error)
    }

    /// Reads up to `length` bytes at `position` (fewer at the end of the file, none past it).
    pub async fn read_at(&self, position: u64, length: usize) -> io::Result<FileBytes> {
        self.0
            .read_at(position, length)
            .await
            .map(FileBytes)
            .map_err(io_error)
    }

    /// The file's size in bytes.
    pub async fn file_size(&self) -> io::Result<u64> {
        self.0.file_size().await.map_err(io_error)
    }

    /// Cuts (or extends) the file to `size` bytes.
    pub async fn truncate(&self, size: u64) -> io::Result<()> {
        self.0.truncate(size).await.map_err(io_error)
    }

    /// Allocates the blocks of `[offset, offset + length)` without changing the file's size
    /// (`fallocate` with `FALLOC_FL_KEEP_SIZE`): later writes there need no free space.
    #[allow(unsafe_code)]
    pub fn reserve(&self, offset: u64, length: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(length)) =
            (libc::off_t::try_from(offset), libc::off_t::try_from(length))
        else {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        };
        // SAFETY: fallocate only acts on the descriptor this file owns for its lifetime.
        let rc = unsafe {
            libc::fallocate(
                self.0.as_raw_fd(),
                libc::FALLOC_FL_KEEP_SIZE,
                offset,
                length,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Makes the file's data durable (fdatasync).
    pub async fn fdatasync(&self) -> io::Result<()> {
        self.0.fdatasync().await.map_err(io_error)
    }

    /// Closes the file.
    pub async fn close(self) -> io::Result<()> {
        self.0.close().await.map_err(io_error)
    }
}

/// Bytes read from a [`BufferedFile`].
pub struct FileBytes(ReadResult);

impl Deref for FileBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

/// Makes the entries of the directory `dir` durable (an fsync of the directory).
pub async fn sync_dir(dir: &Path) -> io::Result<()> {
    let directory = glommio::io::Directory::open(dir).await.map_err(io_error)?;
    directory.sync().await.map_err(io_error)?;
    directory.close().await.map_err(io_error)
}
