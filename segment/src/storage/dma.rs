//! The production storage: glommio DMA files (O_DIRECT, io_uring).

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{self, Write};
use std::ops::Deref;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{DmaBuffer, DmaFile, OpenOptions, ReadResult};

use crate::runtime::Event;

use super::{ReadBuffer, Storage, StorageFile, WriteBuffer};

/// Bytes the device probe file holds.
const PROBE_FILE_BYTES: usize = 4096;

/// The largest single write of zeros ([`StorageFile::write_zeroes`]): longer ranges take
/// several, one after another. One buffer of zeros of this size is kept per thread and
/// shared by every write of zeros on it (the writes only read it).
pub const ZERO_WRITE_BYTES_MAX: usize = 1 << 20;

/// Where this thread stands with glommio's probe of one device.
enum Probe {
    /// One open is probing the device; every other DMA open or create on it waits for this
    /// event (glommio probes with every open until one answer is cached, and the last answer
    /// wins: a concurrent open of an empty file could overwrite the true one).
    InProgress(std::rc::Rc<Event>),
    /// glommio cached the true answer for this thread.
    Done,
}

thread_local! {
    /// The buffer of zeros writes of [`ZERO_WRITE_BYTES_MAX`] bytes share on this thread
    /// (never written to once filled).
    static ZEROS: RefCell<Option<Rc<DmaBuffer>>> = const { RefCell::new(None) };
    /// Devices (`st_dev`) whose polled-I/O support glommio has probed, or is probing, on this
    /// thread.
    static PROBED_DEVICES: RefCell<HashMap<u64, Probe>> = RefCell::new(HashMap::new());
}

/// Held by the one open that probes a device on this thread. Dropped without
/// [`ProbeGuard::succeeded`] (the open failed), the device counts as unprobed again, and the
/// next open probes it.
struct ProbeGuard {
    device: u64,
    event: std::rc::Rc<Event>,
    succeeded: bool,
}

impl ProbeGuard {
    /// The open holding this guard returned: glommio cached the answer it got from real data.
    fn succeeded(mut self) {
        self.succeeded = true;
    }
}

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        PROBED_DEVICES.with(|probed| {
            let mut probed = probed.borrow_mut();
            if self.succeeded {
                probed.insert(self.device, Probe::Done);
            } else {
                probed.remove(&self.device);
            }
        });
        self.event.notify();
    }
}

/// Makes glommio's once-per-thread, once-per-device probe for polled I/O see real data.
///
/// glommio decides whether a device supports polled I/O by reading block 0 of the first DMA
/// file opened on it from each thread, and caches the answer. When that file is empty (a new
/// file, or one left empty by a crash) the read succeeds without reaching the device, glommio
/// concludes "pollable", and every later read on the device fails with EOPNOTSUPP. So before
/// the first DMA open on a device, this thread opens a probe file holding one synced block of
/// real data in the same directory, and removes it — unless the file about to be opened
/// already holds a block of data (`opening_existing`): opening it is then the probe, and no
/// probe file is written (a full disk has no room for one, and must still open its logs);
/// the caller then holds the returned guard until that open returned.
///
/// Until the probe is done, every other DMA open or create on the device from this thread
/// waits: glommio probes with each open until an answer is cached, so a new empty file opened
/// meanwhile would probe too, and could leave "pollable" as the answer.
async fn probe_device(path: &Path, opening_existing: bool) -> io::Result<Option<ProbeGuard>> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let device = std::fs::metadata(dir)?.dev();
    loop {
        let probing = PROBED_DEVICES.with(|probed| match probed.borrow().get(&device) {
            None => Ok(()),
            Some(Probe::Done) => Err(None),
            Some(Probe::InProgress(event)) => Err(Some(std::rc::Rc::clone(event))),
        });
        match probing {
            Ok(()) => break,
            Err(None) => return Ok(None),
            // Nothing ran between the look and the listen: the notify cannot be missed.
            Err(Some(event)) => event.listen().await,
        }
    }
    let event = std::rc::Rc::new(Event::default());
    PROBED_DEVICES.with(|probed| {
        probed
            .borrow_mut()
            .insert(device, Probe::InProgress(std::rc::Rc::clone(&event)))
    });
    let guard = ProbeGuard {
        device,
        event,
        succeeded: false,
    };
    if opening_existing && std::fs::metadata(path).is_ok_and(|m| m.len() >= PROBE_FILE_BYTES as u64)
    {
        return Ok(Some(guard));
    }
    let thread = format!("{:?}", std::thread::current().id());
    let thread: String = thread.chars().filter(char::is_ascii_digit).collect();
    let probe = dir.join(format!(".runnel-io-probe-{}-{thread}", std::process::id()));
    let result = async {
        let mut file = std::fs::File::create(&probe)?;
        file.write_all(&[0u8; PROBE_FILE_BYTES])?;
        file.sync_data()?;
        drop(file);
        let file = DmaFile::open(&probe).await.map_err(to_io)?;
        file.close().await.map_err(to_io)
    }
    .await;
    let removed = std::fs::remove_file(&probe);
    result?;
    removed?;
    guard.succeeded();
    Ok(None)
}

/// A buffer of `len` zeros: this thread's shared one when `len` is [`ZERO_WRITE_BYTES_MAX`]
/// (filled once, so a steady stream of writes of zeros costs neither a fill nor fresh pages),
/// a new one otherwise (the first, smaller reservations of a segment).
fn zero_buffer(file: &DmaFile, len: usize) -> Rc<DmaBuffer> {
    let shared = len == ZERO_WRITE_BYTES_MAX;
    if shared {
        if let Some(zeros) = ZEROS.with(|zeros| zeros.borrow().clone()) {
            assert_eq!(
                zeros.len(),
                len,
                "the shared buffer of zeros keeps its size"
            );
            return zeros;
        }
    }
    let mut buffer = file.alloc_dma_buffer(len);
    buffer.as_bytes_mut().fill(0);
    let zeros = Rc::new(buffer);
    if shared {
        ZEROS.with(|cached| *cached.borrow_mut() = Some(Rc::clone(&zeros)));
    }
    zeros
}

/// Files on a real file system through glommio's DMA API. Must be used on a glommio executor.
#[derive(Debug, Clone, Copy, Default)]
pub struct DmaStorage;

/// A glommio DMA file and its path.
#[derive(Debug)]
pub struct DmaStorageFile {
    file: DmaFile,
    path: PathBuf,
}

/// A glommio DMA buffer. Shared (`Rc`) so a write can be issued from it while the log keeps
/// it for readers; the log fills it only before its write, while nothing else holds it.
#[derive(Debug)]
pub struct DmaWriteBuffer(Rc<DmaBuffer>);

impl DmaWriteBuffer {
    fn unshared(&mut self) -> &mut DmaBuffer {
        Rc::get_mut(&mut self.0).expect("a write buffer is filled only before it is written")
    }
}

/// Bytes read: a glommio read result (a zero-copy slice of a DMA buffer), or a range of a
/// buffer the log wrote (its batch cache), shared without a copy.
#[derive(Debug, Clone)]
pub enum DmaReadBuffer {
    /// Read from the file.
    File(ReadResult),
    /// Bytes `start..end` of a written buffer.
    Written {
        /// The buffer.
        buffer: Rc<DmaWriteBuffer>,
        /// First byte.
        start: usize,
        /// End (exclusive).
        end: usize,
    },
}

fn to_io(error: glommio::GlommioError<()>) -> io::Error {
    io::Error::from(error)
}

impl WriteBuffer for DmaWriteBuffer {
    fn as_slice(&self) -> &[u8] {
        self.0.as_bytes()
    }
    fn as_mut_slice(&mut self) -> &mut [u8] {
        self.unshared().as_bytes_mut()
    }
    fn truncate(&mut self, len: usize) {
        self.unshared().trim_to_size(len);
    }
}

impl Deref for DmaReadBuffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            DmaReadBuffer::File(result) => result,
            DmaReadBuffer::Written { buffer, start, end } => {
                buffer.as_slice().get(*start..*end).unwrap_or_default()
            }
        }
    }
}

impl ReadBuffer for DmaReadBuffer {}

impl Storage for DmaStorage {
    type File = DmaStorageFile;
    type Buffer = DmaWriteBuffer;
    type ReadBuf = DmaReadBuffer;

    async fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    async fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    async fn create(&self, path: &Path) -> io::Result<DmaStorageFile> {
        let probing = probe_device(path, false).await?;
        assert!(
            probing.is_none(),
            "a new file cannot stand in for the probe"
        );
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .dma_open(path)
            .await
            .map_err(to_io)?;
        Ok(DmaStorageFile {
            file,
            path: path.to_owned(),
        })
    }

    async fn open(&self, path: &Path) -> io::Result<DmaStorageFile> {
        let probing = probe_device(path, true).await?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .dma_open(path)
            .await
            .map_err(to_io)?;
        if let Some(guard) = probing {
            guard.succeeded();
        }
        Ok(DmaStorageFile {
            file,
            path: path.to_owned(),
        })
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        // glommio opens directories relative to no directory fd: a relative path fails with
        // EBADF, so it gets an absolute one.
        let dir = std::path::absolute(dir)?;
        let directory = glommio::io::Directory::open(&dir).await.map_err(to_io)?;
        directory.sync().await.map_err(to_io)?;
        directory.close().await.map_err(to_io)
    }
}

impl StorageFile for DmaStorageFile {
    type Buffer = DmaWriteBuffer;
    type ReadBuf = DmaReadBuffer;

    fn alloc(&self, len: usize) -> DmaWriteBuffer {
        // Not zeroed: touching every page of a large buffer on each group commit costs
        // milliseconds. The log zeroes exactly the bytes it writes without filling them.
        DmaWriteBuffer(Rc::new(self.file.alloc_dma_buffer(len)))
    }

    async fn write_at(&self, buffer: DmaWriteBuffer, pos: u64) -> io::Result<DmaWriteBuffer> {
        let len = buffer.0.len();
        let written = self
            .file
            .write_rc_at(Rc::clone(&buffer.0), pos)
            .await
            .map_err(to_io)?;
        if written != len {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {written} of {len} bytes at {pos}"),
            ));
        }
        Ok(buffer)
    }

    fn written_read(buffer: &Rc<DmaWriteBuffer>, start: usize, end: usize) -> DmaReadBuffer {
        assert!(
            start <= end && end <= buffer.as_slice().len(),
            "a cached read lies within its buffer"
        );
        DmaReadBuffer::Written {
            buffer: Rc::clone(buffer),
            start,
            end,
        }
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<DmaReadBuffer> {
        let result = self.file.read_at(pos, len).await.map_err(to_io)?;
        Ok(DmaReadBuffer::File(result))
    }

    async fn sync(&self) -> io::Result<()> {
        self.file.fdatasync().await.map_err(to_io)
    }

    async fn size(&self) -> io::Result<u64> {
        self.file.file_size().await.map_err(to_io)
    }

    async fn preallocate(&self, len: u64) -> io::Result<()> {
        if self.size().await? >= len {
            return Ok(());
        }
        self.file.pre_allocate(len, false).await.map_err(to_io)
    }

    async fn write_zeroes(&self, pos: u64, len: u64) -> io::Result<()> {
        // One piece at a time: the log's own writes and fdatasyncs, issued meanwhile, queue
        // behind one piece of zeros at most, never behind a whole step of them (with the
        // pieces of a 32 MiB step in flight at once, append p99 at a moderate rate was 2.6×
        // that of fallocated space without zeros; docs/benchmarks.md).
        let end = pos + len;
        let mut at = pos;
        while at < end {
            let piece = (end - at).min(ZERO_WRITE_BYTES_MAX as u64) as usize;
            let zeros = zero_buffer(&self.file, piece);
            let written = self.file.write_rc_at(zeros, at).await.map_err(to_io)?;
            if written != piece {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("short write of zeros: {written} of {piece} bytes at {at}"),
                ));
            }
            at += piece as u64;
        }
        Ok(())
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        self.file.truncate(len).await.map_err(to_io)
    }

    fn path(&self) -> &PathBuf {
        &self.path
    }
}
