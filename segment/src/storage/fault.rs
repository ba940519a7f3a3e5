//! A fault-injecting in-memory file system for crash tests.
//!
//! Every file keeps two images: the *live* one (what reads see) and the *durable* one (what a
//! power loss leaves). Writes and size changes go to the live image and onto a pending list;
//! `sync` moves the pending list into the durable image. Directory entries work the same way
//! with `sync_dir`. [`FaultStorage::crash`] pulls the plug: it returns a new file system made of
//! the durable images plus a seeded random choice of the pending changes — each dropped, kept,
//! or (for writes) torn at 512-byte sectors, and a random prefix of the pending directory
//! changes. Failing writes and syncs are injected with [`FaultStorage::fail_syncs_after`] and
//! [`FaultStorage::fail_writes_after`]. Every call yields to the executor once, so other tasks
//! interleave with the I/O as they would with a real disk.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use runnel_core::batch::AlignedBytes;

use super::{ReadBuffer, Storage, StorageFile, WriteBuffer};
use crate::runtime::yield_now;

/// Sector size: the unit a torn write keeps or loses.
pub const SECTOR_BYTES: usize = 512;

/// A small deterministic generator (SplitMix64) so crash images replay from a seed.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A number in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }
}

#[derive(Debug, Clone)]
enum DataChange {
    Write { pos: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Default)]
struct FileImage {
    live: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<DataChange>,
    /// Ranges reserved by `preallocate` and not written since, sorted and disjoint: ext4's and
    /// xfs's *unwritten* extents. A write there makes a real file system's next fdatasync
    /// commit the extent conversion; this image only counts such writes (they read as zeros
    /// either way).
    unwritten: Vec<(u64, u64)>,
}

impl FileImage {
    /// Takes `[pos, end)` out of the unwritten ranges; whether it overlapped any.
    fn mark_written(&mut self, pos: u64, end: u64) -> bool {
        let overlapped = self.unwritten.iter().any(|&(a, b)| a < end && pos < b);
        if overlapped {
            self.unwritten = self
                .unwritten
                .iter()
                .flat_map(|&(a, b)| [(a, b.min(pos)), (a.max(end), b)])
                .filter(|&(a, b)| a < b)
                .collect();
        }
        overlapped
    }

    /// Cuts the unwritten ranges at `len` (a truncate).
    fn cut_unwritten(&mut self, len: u64) {
        self.unwritten = self
            .unwritten
            .iter()
            .map(|&(a, b)| (a, b.min(len)))
            .filter(|&(a, b)| a < b)
            .collect();
    }
}

fn apply(image: &mut Vec<u8>, change: &DataChange) {
    match change {
        DataChange::Write { pos, data } => {
            let pos = *pos as usize;
            if image.len() < pos + data.len() {
                image.resize(pos + data.len(), 0);
            }
            if let Some(target) = image.get_mut(pos..pos + data.len()) {
                target.copy_from_slice(data);
            }
        }
        DataChange::SetLen(len) => image.resize(*len as usize, 0),
    }
}

type Inode = Rc<RefCell<FileImage>>;

#[derive(Debug, Clone)]
enum NameChange {
    Link(PathBuf, Inode),
    Unlink(PathBuf),
    Rename(PathBuf, PathBuf),
}

fn apply_name(names: &mut BTreeMap<PathBuf, Inode>, change: &NameChange) {
    match change {
        NameChange::Link(path, inode) => {
            names.insert(path.clone(), inode.clone());
        }
        NameChange::Unlink(path) => {
            names.remove(path);
        }
        NameChange::Rename(from, to) => {
            if let Some(inode) = names.remove(from) {
                names.insert(to.clone(), inode);
            }
        }
    }
}

#[derive(Debug, Default)]
struct Faults {
    syncs_left: Option<u64>,
    writes_left: Option<u64>,
    /// The file system is full: growing a file (reserving or writing past its end) fails
    /// with ENOSPC.
    disk_full: bool,
}

#[derive(Debug, Default)]
struct FaultFs {
    live_names: BTreeMap<PathBuf, Inode>,
    durable_names: BTreeMap<PathBuf, Inode>,
    pending_names: Vec<NameChange>,
    faults: Faults,
    syncs: u64,
    writes: u64,
    /// Writes of data (`write_at`, not `write_zeroes`) that touched reserved, unwritten space.
    data_writes_into_unwritten: u64,
}

/// The in-memory, fault-injecting storage. Clones share one file system.
#[derive(Debug, Clone, Default)]
pub struct FaultStorage {
    fs: Rc<RefCell<FaultFs>>,
}

/// An open file of a [`FaultStorage`].
#[derive(Debug)]
pub struct FaultFile {
    image: Inode,
    fs: Rc<RefCell<FaultFs>>,
    path: PathBuf,
}

/// A write buffer of a [`FaultStorage`].
#[derive(Debug)]
pub struct FaultWriteBuffer(Vec<u8>);

/// A read result of a [`FaultStorage`]: a 16-byte aligned copy.
#[derive(Debug, Clone)]
pub struct FaultReadBuffer(Rc<AlignedBytes>);

impl WriteBuffer for FaultWriteBuffer {
    fn as_slice(&self) -> &[u8] {
        &self.0
    }
    fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.0
    }
    fn truncate(&mut self, len: usize) {
        self.0.truncate(len);
    }
}

impl Deref for FaultReadBuffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

impl ReadBuffer for FaultReadBuffer {}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("injected {what} failure (EIO)"))
}

fn no_space() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOSPC)
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

impl FaultStorage {
    /// An empty file system.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every sync after the next `count` successful ones fail.
    pub fn fail_syncs_after(&self, count: u64) {
        self.fs.borrow_mut().faults.syncs_left = Some(count);
    }

    /// Makes every write after the next `count` successful ones fail.
    pub fn fail_writes_after(&self, count: u64) {
        self.fs.borrow_mut().faults.writes_left = Some(count);
    }

    /// Makes the file system full (or frees it): growing any file fails with ENOSPC.
    pub fn set_disk_full(&self, full: bool) {
        self.fs.borrow_mut().faults.disk_full = full;
    }

    /// Writes of data (not of zeros) so far that landed, at least in part, in space reserved by
    /// `preallocate` and never written: on ext4 or xfs each would make the next fdatasync commit
    /// an extent conversion to the journal.
    pub fn data_writes_into_unwritten(&self) -> u64 {
        self.fs.borrow().data_writes_into_unwritten
    }

    /// Successful syncs and writes so far.
    pub fn io_counts(&self) -> (u64, u64) {
        let fs = self.fs.borrow();
        (fs.syncs, fs.writes)
    }

    /// Pulls the plug: a new file system holding what a power loss at this instant could
    /// leave, chosen by `seed`. This storage is untouched and may go on being used.
    pub fn crash(&self, seed: u64) -> FaultStorage {
        let mut random = SplitMix64::new(seed);
        let fs = self.fs.borrow();
        let mut names = fs.durable_names.clone();
        let kept = random.below(fs.pending_names.len() as u64 + 1) as usize;
        for change in fs.pending_names.iter().take(kept) {
            apply_name(&mut names, change);
        }
        let mut images: Vec<(*const RefCell<FileImage>, Inode)> = Vec::new();
        let mut live_names = BTreeMap::new();
        for (path, inode) in names {
            let key = Rc::as_ptr(&inode);
            let survivor = if let Some((_, done)) = images.iter().find(|(k, _)| *k == key) {
                done.clone()
            } else {
                let image = inode.borrow();
                let mut data = image.durable.clone();
                for change in &image.pending {
                    match (random.below(3), change) {
                        (0, _) => {}
                        (1, _) => apply(&mut data, change),
                        (_, DataChange::Write { pos, data: written }) => {
                            for (index, sector) in written.chunks(SECTOR_BYTES).enumerate() {
                                if random.below(2) == 0 {
                                    let at = *pos + (index * SECTOR_BYTES) as u64;
                                    apply(
                                        &mut data,
                                        &DataChange::Write {
                                            pos: at,
                                            data: sector.to_vec(),
                                        },
                                    );
                                }
                            }
                        }
                        (_, DataChange::SetLen(_)) => apply(&mut data, change),
                    }
                }
                let survivor = Rc::new(RefCell::new(FileImage {
                    live: data.clone(),
                    durable: data,
                    pending: Vec::new(),
                    unwritten: Vec::new(),
                }));
                images.push((key, survivor.clone()));
                survivor
            };
            live_names.insert(path, survivor);
        }
        FaultStorage {
            fs: Rc::new(RefCell::new(FaultFs {
                durable_names: live_names.clone(),
                live_names,
                ..FaultFs::default()
            })),
        }
    }

    /// The live bytes of a file, for tests that damage or inspect it.
    pub fn file_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        self.fs
            .borrow()
            .live_names
            .get(path)
            .map(|inode| inode.borrow().live.clone())
    }

    /// Overwrites bytes of a file in both images, as bit rot on a synced file would.
    pub fn corrupt(&self, path: &Path, pos: u64, bytes: &[u8]) -> bool {
        let fs = self.fs.borrow();
        let Some(inode) = fs.live_names.get(path) else {
            return false;
        };
        let mut image = inode.borrow_mut();
        let change = DataChange::Write {
            pos,
            data: bytes.to_vec(),
        };
        apply(&mut image.live, &change);
        apply(&mut image.durable, &change);
        true
    }

    /// Places a file with `bytes`, durable at once (a test's hand-made disk image).
    pub fn put_file(&self, path: &Path, bytes: &[u8]) {
        let inode: Inode = Rc::new(RefCell::new(FileImage {
            live: bytes.to_vec(),
            durable: bytes.to_vec(),
            pending: Vec::new(),
            unwritten: Vec::new(),
        }));
        let mut fs = self.fs.borrow_mut();
        fs.live_names.insert(path.to_owned(), inode.clone());
        fs.durable_names.insert(path.to_owned(), inode);
    }

    /// Removes a file from both images at once (a test's hand-made disk image).
    pub fn remove_now(&self, path: &Path) {
        let mut fs = self.fs.borrow_mut();
        fs.live_names.remove(path);
        fs.durable_names.remove(path);
    }

    /// Names of every file, in order.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.fs.borrow().live_names.keys().cloned().collect()
    }

    fn link(&self, path: &Path, inode: Inode) {
        let mut fs = self.fs.borrow_mut();
        let change = NameChange::Link(path.to_owned(), inode);
        apply_name(&mut fs.live_names, &change);
        fs.pending_names.push(change);
    }

    fn lookup(&self, path: &Path) -> io::Result<Inode> {
        self.fs
            .borrow()
            .live_names
            .get(path)
            .cloned()
            .ok_or_else(|| not_found(path))
    }
}

impl Storage for FaultStorage {
    type File = FaultFile;
    type Buffer = FaultWriteBuffer;
    type ReadBuf = FaultReadBuffer;

    async fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        yield_now().await;
        Ok(())
    }

    async fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        yield_now().await;
        let fs = self.fs.borrow();
        Ok(fs
            .live_names
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .filter_map(|path| path.file_name().and_then(|n| n.to_str()).map(str::to_owned))
            .collect())
    }

    async fn create(&self, path: &Path) -> io::Result<FaultFile> {
        yield_now().await;
        if self.fs.borrow().live_names.contains_key(path) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", path.display()),
            ));
        }
        let inode: Inode = Rc::default();
        self.link(path, inode.clone());
        Ok(FaultFile {
            image: inode,
            fs: self.fs.clone(),
            path: path.to_owned(),
        })
    }

    async fn open(&self, path: &Path) -> io::Result<FaultFile> {
        yield_now().await;
        Ok(FaultFile {
            image: self.lookup(path)?,
            fs: self.fs.clone(),
            path: path.to_owned(),
        })
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        yield_now().await;
        self.lookup(path)?;
        let mut fs = self.fs.borrow_mut();
        let change = NameChange::Unlink(path.to_owned());
        apply_name(&mut fs.live_names, &change);
        fs.pending_names.push(change);
        Ok(())
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        yield_now().await;
        self.lookup(from)?;
        let mut fs = self.fs.borrow_mut();
        let change = NameChange::Rename(from.to_owned(), to.to_owned());
        apply_name(&mut fs.live_names, &change);
        fs.pending_names.push(change);
        Ok(())
    }

    async fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        yield_now().await;
        let mut fs = self.fs.borrow_mut();
        let pending = std::mem::take(&mut fs.pending_names);
        for change in &pending {
            apply_name(&mut fs.durable_names, change);
        }
        Ok(())
    }
}

impl FaultFile {
    /// A write (of data, or of zeros) with the injected faults: a full disk refuses to grow
    /// the file, and failing writes fail.
    fn write_now(&self, data: Vec<u8>, pos: u64, is_data: bool) -> io::Result<()> {
        let end = pos + data.len() as u64;
        {
            let mut fs = self.fs.borrow_mut();
            if fs.faults.disk_full && end > self.image.borrow().live.len() as u64 {
                return Err(no_space());
            }
            if let Some(left) = fs.faults.writes_left.as_mut() {
                if *left == 0 {
                    return Err(injected("write"));
                }
                *left -= 1;
            }
            fs.writes += 1;
            if self.image.borrow_mut().mark_written(pos, end) && is_data {
                fs.data_writes_into_unwritten += 1;
            }
        }
        let change = DataChange::Write { pos, data };
        let mut image = self.image.borrow_mut();
        apply(&mut image.live, &change);
        image.pending.push(change);
        Ok(())
    }
}

impl StorageFile for FaultFile {
    type Buffer = FaultWriteBuffer;
    type ReadBuf = FaultReadBuffer;

    fn alloc(&self, len: usize) -> FaultWriteBuffer {
        // Garbage, not zeros, so a test catches any write of bytes the log did not fill.
        FaultWriteBuffer(vec![0xee; len])
    }

    async fn write_at(&self, buffer: FaultWriteBuffer, pos: u64) -> io::Result<FaultWriteBuffer> {
        yield_now().await;
        self.write_now(buffer.0.clone(), pos, true)?;
        Ok(buffer)
    }

    fn written_read(buffer: &Rc<FaultWriteBuffer>, start: usize, end: usize) -> FaultReadBuffer {
        // A copy: a `Vec<u8>` promises no 16-byte alignment, and tests read archives in place.
        let mut copy = AlignedBytes::with_capacity(end.saturating_sub(start));
        copy.extend_from_slice(
            buffer
                .0
                .get(start..end)
                .expect("a cached read lies within its buffer"),
        );
        FaultReadBuffer(Rc::new(copy))
    }

    async fn write_zeroes(&self, pos: u64, len: u64) -> io::Result<()> {
        yield_now().await;
        self.write_now(vec![0; len as usize], pos, false)
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<FaultReadBuffer> {
        yield_now().await;
        let image = self.image.borrow();
        let start = (pos as usize).min(image.live.len());
        let end = (start + len).min(image.live.len());
        let mut copy = AlignedBytes::with_capacity(end - start);
        copy.extend_from_slice(image.live.get(start..end).unwrap_or_default());
        Ok(FaultReadBuffer(Rc::new(copy)))
    }

    async fn sync(&self) -> io::Result<()> {
        yield_now().await;
        {
            let mut fs = self.fs.borrow_mut();
            if let Some(left) = fs.faults.syncs_left.as_mut() {
                if *left == 0 {
                    return Err(injected("fdatasync"));
                }
                *left -= 1;
            }
            fs.syncs += 1;
        }
        let mut image = self.image.borrow_mut();
        let pending = std::mem::take(&mut image.pending);
        for change in &pending {
            apply(&mut image.durable, change);
        }
        Ok(())
    }

    async fn size(&self) -> io::Result<u64> {
        yield_now().await;
        Ok(self.image.borrow().live.len() as u64)
    }

    async fn preallocate(&self, len: u64) -> io::Result<()> {
        yield_now().await;
        if self.fs.borrow().faults.disk_full && len > self.image.borrow().live.len() as u64 {
            return Err(no_space());
        }
        let mut image = self.image.borrow_mut();
        let size = image.live.len() as u64;
        if size < len {
            let change = DataChange::SetLen(len);
            apply(&mut image.live, &change);
            image.pending.push(change);
            image.unwritten.push((size, len));
        }
        Ok(())
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        yield_now().await;
        let mut image = self.image.borrow_mut();
        let change = DataChange::SetLen(len);
        apply(&mut image.live, &change);
        image.pending.push(change);
        image.cut_unwritten(len);
        Ok(())
    }

    fn path(&self) -> &PathBuf {
        &self.path
    }
}
