//! The disk's own latency, measured before an append-latency phase on the same file system as
//! the data directory, so that the append latency can be printed as a multiple of it:
//! each sample is one 4 KiB O_DIRECT `pwrite` followed by `fdatasync`, one at a time.
//!
//! Two kinds of file, because they cost differently on ext4 and xfs:
//! - **written**: sequential writes over a file written (zeros) and synced beforehand, as
//!   `dd oflag=direct,dsync` into a preallocated file: fdatasync is the device's flush alone,
//!   the floor no log can beat, and the yardstick of the latency targets;
//! - **reserved**: sequential writes into space reserved with `fallocate` (unwritten extents),
//!   as a shard's log writes into its reserved segment today: each fdatasync also commits the
//!   extent conversion to the file system's journal, which every other writer on the file
//!   system shares.
//!
//! And a **concurrent writer** ([`DiskWriter`]): a thread that writes through the page cache
//! at a set rate and syncs every 16 MiB, to slow fdatasync down for the "latency under a
//! slowed disk" measurement.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::stats::new_histogram;

/// One probe write: a 4 KiB block, the unit of O_DIRECT on these disks.
pub const BLOCK_BYTES: usize = 4096;
/// Space reserved for the sequential probe into fallocated space; the probe stops early when
/// it is used up.
const RESERVED_BYTES: u64 = 256 << 20;
/// Size of the written file the other probe cycles over.
const WRITTEN_BYTES: u64 = 16 << 20;

/// Which file the probe writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeFile {
    /// Sequential blocks into `fallocate`d space, as the log appends today.
    Reserved,
    /// Sequential blocks over a file written beforehand: the device flush alone.
    Written,
}

impl ProbeFile {
    /// The name printed beside the figures.
    pub fn label(self) -> &'static str {
        match self {
            ProbeFile::Reserved => {
                "4 KiB O_DIRECT write + fdatasync, sequential into fallocated space"
            }
            ProbeFile::Written => {
                "4 KiB O_DIRECT write + fdatasync, sequential over written blocks"
            }
        }
    }
}

/// A 4 KiB-aligned block of bytes inside a larger vector (O_DIRECT needs aligned memory; the
/// workspace forbids `unsafe`, so the alignment is found rather than requested).
struct AlignedBlock {
    storage: Vec<u8>,
    start: usize,
}

impl AlignedBlock {
    fn new(fill: u8) -> AlignedBlock {
        let storage = vec![fill; 2 * BLOCK_BYTES];
        let start = storage.as_ptr().align_offset(BLOCK_BYTES);
        assert!(start < BLOCK_BYTES, "a 4 KiB-aligned block fits in 8 KiB");
        AlignedBlock { storage, start }
    }

    fn bytes(&self) -> &[u8] {
        &self.storage[self.start..self.start + BLOCK_BYTES]
    }
}

fn open_direct(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .map_err(|e| format!("open {} with O_DIRECT: {e}", path.display()))
}

/// Reserves `bytes` of `path` with the `fallocate` command (util-linux): the workspace forbids
/// `unsafe`, so no direct call. Falls back to a sparse file where the command is missing.
fn reserve(file: &File, path: &Path, bytes: u64) -> Result<&'static str, String> {
    let reserved = std::process::Command::new("fallocate")
        .arg("-l")
        .arg(bytes.to_string())
        .arg(path)
        .status()
        .is_ok_and(|status| status.success());
    if reserved {
        Ok("fallocate")
    } else {
        file.set_len(bytes)
            .map_err(|e| format!("extend {}: {e}", path.display()))?;
        Ok("sparse (no fallocate command)")
    }
}

/// Measures write + fdatasync of 4 KiB blocks into a new file under `dir` for `duration` (at
/// most `samples_max` samples); returns the latencies in microseconds. The file is removed.
pub fn probe(
    dir: &Path,
    kind: ProbeFile,
    duration: Duration,
    samples_max: u64,
) -> Result<Histogram<u64>, String> {
    let path = dir.join(match kind {
        ProbeFile::Reserved => "disk-probe-reserved",
        ProbeFile::Written => "disk-probe-written",
    });
    let file = open_direct(&path)?;
    let block = AlignedBlock::new(0xa5);
    match kind {
        ProbeFile::Reserved => {
            reserve(&file, &path, RESERVED_BYTES)?;
        }
        ProbeFile::Written => {
            let zeros = AlignedBlock::new(0);
            for offset in (0..WRITTEN_BYTES).step_by(BLOCK_BYTES) {
                file.write_all_at(zeros.bytes(), offset)
                    .map_err(|e| format!("write {}: {e}", path.display()))?;
            }
        }
    }
    file.sync_all()
        .map_err(|e| format!("fsync {}: {e}", path.display()))?;
    let mut histogram = new_histogram();
    let deadline = Instant::now() + duration;
    let mut offset = 0u64;
    while Instant::now() < deadline && histogram.len() < samples_max {
        let started = Instant::now();
        file.write_all_at(block.bytes(), offset)
            .map_err(|e| format!("write {}: {e}", path.display()))?;
        file.sync_data()
            .map_err(|e| format!("fdatasync {}: {e}", path.display()))?;
        let _ = histogram.record(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
        offset += BLOCK_BYTES as u64;
        match kind {
            ProbeFile::Reserved if offset >= RESERVED_BYTES => break,
            ProbeFile::Written if offset >= WRITTEN_BYTES => offset = 0,
            _ => {}
        }
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(histogram)
}

/// A thread writing through the page cache at a fixed rate, syncing every 16 MiB: it makes
/// fdatasync of everyone else on the disk slower. Stops when dropped.
pub struct DiskWriter {
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
    path: PathBuf,
}

/// The writer's file wraps around at this size.
const WRITER_FILE_BYTES: u64 = 1 << 30;
/// The writer's chunk and sync interval.
const WRITER_CHUNK_BYTES: usize = 1 << 20;
const WRITER_SYNC_BYTES: u64 = 16 << 20;

impl DiskWriter {
    /// Starts writing `rate_bytes_per_second` into a file under `dir`.
    pub fn start(dir: &Path, rate_bytes_per_second: u64) -> Result<DiskWriter, String> {
        assert!(rate_bytes_per_second > 0, "a disk writer needs a rate");
        let path = dir.join("disk-writer");
        let file = File::create(&path).map_err(|e| format!("create {}: {e}", path.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, written, path) = (Arc::clone(&stop), Arc::clone(&written), path.clone());
            std::thread::Builder::new()
                .name("disk-writer".into())
                .spawn(move || {
                    let chunk = vec![0x3cu8; WRITER_CHUNK_BYTES];
                    let started = Instant::now();
                    let mut total = 0u64;
                    let mut since_sync = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let due = started
                            + Duration::from_secs_f64(total as f64 / rate_bytes_per_second as f64);
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep((due - now).min(Duration::from_millis(50)));
                            continue;
                        }
                        file.write_all_at(&chunk, total % WRITER_FILE_BYTES)
                            .map_err(|e| format!("write {}: {e}", path.display()))?;
                        total += chunk.len() as u64;
                        since_sync += chunk.len() as u64;
                        written.store(total, Ordering::Relaxed);
                        if since_sync >= WRITER_SYNC_BYTES {
                            file.sync_data()
                                .map_err(|e| format!("fdatasync {}: {e}", path.display()))?;
                            since_sync = 0;
                        }
                    }
                    Ok(())
                })
                .map_err(|e| format!("disk writer thread: {e}"))?
        };
        Ok(DiskWriter {
            stop,
            written,
            thread: Some(thread),
            path,
        })
    }

    /// Bytes written so far.
    pub fn written_bytes(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Stops the writer, removes its file, and returns its error if it failed.
    pub fn stop(mut self) -> Result<u64, String> {
        self.finish()
    }

    fn finish(&mut self) -> Result<u64, String> {
        self.stop.store(true, Ordering::Relaxed);
        let result = match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| "the disk writer panicked".to_string())
                .and_then(|r| r),
            None => Ok(()),
        };
        let _ = std::fs::remove_file(&self.path);
        result.map(|()| self.written_bytes())
    }
}

impl Drop for DiskWriter {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_blocks_are_aligned() {
        for fill in 0..8u8 {
            let block = AlignedBlock::new(fill);
            assert_eq!(block.bytes().len(), BLOCK_BYTES);
            assert_eq!(block.bytes().as_ptr().align_offset(BLOCK_BYTES), 0);
            assert!(block.bytes().iter().all(|&b| b == fill));
        }
    }

    #[test]
    fn a_probe_takes_samples_and_removes_its_file() {
        let dir = tempfile::tempdir().expect("temporary directory");
        for kind in [ProbeFile::Reserved, ProbeFile::Written] {
            match probe(dir.path(), kind, Duration::from_secs(5), 3) {
                Ok(histogram) => assert_eq!(histogram.len(), 3),
                // tmpfs and some overlay file systems refuse O_DIRECT: nothing to measure there.
                Err(error) => assert!(error.contains("O_DIRECT"), "{error}"),
            }
        }
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 0);
    }
}
