//! Core 0's durable store of the metadata group: what [`GroupMember::ready`] hands out is
//! written here, and synced, before [`GroupMember::persisted`] is called; a restart rebuilds
//! the member's [`GroupStore`] from it.
//!
//! One directory, `<data_dir>/metadata-group/`, holding one file, `log`
//! (`docs/format/metadata-group.md`): a header, then CRC-framed records. The file starts with
//! the newest snapshot; entries, hard states and commit indexes are appended after it, one
//! write and one fdatasync per call. A snapshot (the leader's, or one taken by compaction)
//! rewrites the file: the snapshot, the entries after it and the hard state go to `log.tmp`,
//! which is synced and renamed over `log`, and the directory synced. One file and one rename,
//! so a crash leaves either the old log or the new one, never a snapshot with a log that
//! belongs to another.
//!
//! Recovery replays the frames in order. The frames of one write count only together; an
//! incomplete final write (never synced, so never acknowledged) is cut. A complete frame whose
//! checksum fails, anywhere, is damage: the node does not start ([`FatalError::Corruption`]).
//!
//! I/O goes through the runtime's buffered files on the calling executor (core 0); directory
//! entries are created, renamed and removed with the standard library, as the shard logs do.
//!
//! [`GroupMember::ready`]: runnel_replicate::group::GroupMember::ready
//! [`GroupMember::persisted`]: runnel_replicate::group::GroupMember::persisted

mod format;
#[cfg(test)]
mod tests;

use std::io;
use std::path::{Path, PathBuf};

use runnel_replicate::group::{Entry, GroupStore, HardState, Persist, StoredSnapshot};
use runnel_segment::runtime::file::{self, BufferedFile};

use crate::error::FatalError;
use crate::metadata_log::{AppendError, MetadataLog};

/// The group's directory under the data directory.
pub const GROUP_DIR: &str = "metadata-group";
/// The directory a new group log is built in before it gets its name.
const GROUP_DIR_TMP: &str = "metadata-group.tmp";
/// The log file.
const LOG_FILE: &str = "log";
/// A rewritten log before it replaces `log`.
const LOG_FILE_TMP: &str = "log.tmp";
/// Bytes read or written at a time: a large file (a snapshot of tens of MB) goes in pieces,
/// and other tasks of the executor run between them.
const IO_PIECE_BYTES: usize = 8 << 20;

/// What the file holds, without the snapshot's data: enough to rewrite it around a new
/// snapshot and to check the writes that come.
#[derive(Debug, Clone, Default)]
struct Image {
    hard_state: HardState,
    snapshot_index: u64,
    entries: Vec<Entry>,
}

impl Image {
    fn last_index(&self) -> u64 {
        self.entries.last().map_or(self.snapshot_index, |e| e.index)
    }

    fn from_store(store: &GroupStore) -> Image {
        Image {
            hard_state: store.hard_state().clone(),
            snapshot_index: store.snapshot().index,
            entries: store.entries().to_vec(),
        }
    }

    /// Entries from raft-rs follow the snapshot and leave no gap ([`GroupStore::append`]
    /// asserts the same).
    fn check_fits(&self, entries: &[Entry]) {
        let Some(first) = entries.first() else {
            return;
        };
        assert!(
            first.index > self.snapshot_index && first.index <= self.last_index() + 1,
            "entries from {} do not fit a log of {}..={}",
            first.index,
            self.snapshot_index + 1,
            self.last_index()
        );
    }

    /// [`GroupStore::append`].
    fn append(&mut self, entries: &[Entry]) {
        self.check_fits(entries);
        let Some(first) = entries.first() else {
            return;
        };
        let keep = (first.index - self.snapshot_index - 1) as usize;
        self.entries.truncate(keep);
        self.entries.extend_from_slice(entries);
    }

    /// [`GroupStore::install_snapshot`].
    fn install_snapshot(&mut self, snapshot: &StoredSnapshot) {
        assert!(
            snapshot.index >= self.snapshot_index,
            "a snapshot at {} older than the one held at {}",
            snapshot.index,
            self.snapshot_index
        );
        self.entries.clear();
        self.hard_state.commit = self.hard_state.commit.max(snapshot.index);
        self.hard_state.term = self.hard_state.term.max(snapshot.term);
        self.snapshot_index = snapshot.index;
    }

    /// [`GroupStore::keep_snapshot`], for a snapshot newer than the one held.
    fn keep_snapshot(&mut self, snapshot: &StoredSnapshot) {
        assert!(
            snapshot.index > self.snapshot_index && snapshot.index <= self.last_index(),
            "a compaction to {} outside the log {}..={}",
            snapshot.index,
            self.snapshot_index + 1,
            self.last_index()
        );
        self.entries
            .drain(..(snapshot.index - self.snapshot_index) as usize);
        self.hard_state.commit = self.hard_state.commit.max(snapshot.index);
        self.snapshot_index = snapshot.index;
    }
}

/// The metadata group's log on disk.
pub struct GroupLog {
    dir: PathBuf,
    file: BufferedFile,
    /// File position after the last complete, synced write: the next one goes here.
    end: u64,
    image: Image,
    /// A write failed in a way that leaves the file's state unknown: every later call fails.
    failed: bool,
    /// The file's blocks are allocated up to here (past `end`: see [`RESERVE_BYTES`]).
    reserved_to: u64,
}

/// Bytes kept allocated past the log's end (renewed when less than half is left), so that
/// metadata changes — the deletes that free space among them — can still be recorded when the
/// disk fills. Best effort: a disk already full, or a filesystem without `fallocate`, leaves
/// the log as it would be without.
pub const RESERVE_BYTES: u64 = 1 << 20;

fn is_no_space(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ENOSPC) | Some(libc::EDQUOT)
    ) || error.kind() == io::ErrorKind::StorageFull
}

fn metadata_error(what: &str, path: &Path, error: impl std::fmt::Display) -> FatalError {
    FatalError::Metadata(format!("{what} {}: {error}", path.display()))
}

/// A write failed: no room is an operating error, anything else is fatal.
fn write_error(path: &Path, error: io::Error) -> AppendError {
    if is_no_space(&error) {
        AppendError::NoSpace(format!(
            "the metadata group log {} has no room: {error}",
            path.display()
        ))
    } else {
        AppendError::Fatal(metadata_error("write to", path, error))
    }
}

/// Writes all of `bytes` at `position` (a buffered write may be short).
async fn write_all(file: &BufferedFile, bytes: &[u8], position: u64) -> io::Result<()> {
    let mut written = 0;
    while written < bytes.len() {
        let piece = bytes[written..].len().min(IO_PIECE_BYTES);
        let count = file
            .write_at(
                bytes[written..written + piece].to_vec(),
                position + written as u64,
            )
            .await?;
        if count == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("wrote nothing at {}", position + written as u64),
            ));
        }
        written += count;
    }
    Ok(())
}

/// fdatasync; a failure is always fatal (the page cache may have dropped the data).
async fn sync(file: &BufferedFile, path: &Path) -> Result<(), FatalError> {
    file.fdatasync()
        .await
        .map_err(|e| metadata_error("fdatasync", path, e))
}

/// Makes the directory's entries durable.
async fn sync_dir(dir: &Path) -> Result<(), FatalError> {
    let absolute = std::path::absolute(dir).map_err(|e| metadata_error("resolve", dir, e))?;
    file::sync_dir(&absolute)
        .await
        .map_err(|e| metadata_error("sync the directory", dir, e))
}

/// Creates `path` (which must not exist) for reading and writing.
async fn create_file(path: &Path) -> io::Result<BufferedFile> {
    BufferedFile::create_new(path).await
}

/// The bytes of a whole file: header, snapshot, entries, hard state, as one write.
fn file_bytes(snapshot: &StoredSnapshot, entries: &[Entry], hard_state: &HardState) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(snapshot.data.len() + 4096);
    bytes.extend_from_slice(&format::file_header());
    format::encode_snapshot(&mut bytes, snapshot, false);
    if !entries.is_empty() {
        format::encode_entries(&mut bytes, entries, false);
    }
    format::encode_hard_state(&mut bytes, hard_state, true);
    bytes
}

/// Writes `bytes` as the new file `path` and syncs it; no room removes it again.
async fn write_new_file(path: &Path, bytes: &[u8]) -> Result<BufferedFile, AppendError> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(AppendError::Fatal(metadata_error("remove", path, e))),
    }
    let file = create_file(path).await.map_err(|e| write_error(path, e))?;
    if let Err(error) = write_all(&file, bytes, 0).await {
        let _closed = file.close().await;
        if is_no_space(&error) {
            std::fs::remove_file(path)
                .map_err(|e| AppendError::Fatal(metadata_error("remove", path, e)))?;
        }
        return Err(write_error(path, error));
    }
    sync(&file, path).await.map_err(AppendError::Fatal)?;
    Ok(file)
}

impl GroupLog {
    /// Opens `<data_dir>/metadata-group/` if it exists: the store as on disk (snapshot, the
    /// entries after it, hard state with the last recorded commit index). `Ok(None)` if
    /// absent. An incomplete final write is cut (and the cut synced); damage is
    /// [`FatalError::Corruption`] naming the file and the position.
    pub async fn open(data_dir: &Path) -> Result<Option<(GroupLog, GroupStore)>, FatalError> {
        let dir = data_dir.join(GROUP_DIR);
        if !dir
            .try_exists()
            .map_err(|e| metadata_error("look for", &dir, e))?
        {
            return Ok(None);
        }
        // A rewrite that crashed before its rename: the old log is the truth.
        let tmp = dir.join(LOG_FILE_TMP);
        match std::fs::remove_file(&tmp) {
            Ok(()) => sync_dir(&dir).await?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(metadata_error("remove", &tmp, e)),
        }
        let path = dir.join(LOG_FILE);
        let file = BufferedFile::open(&path)
            .await
            .map_err(|e| metadata_error("open", &path, e))?;
        let size = file
            .file_size()
            .await
            .map_err(|e| metadata_error("read the size of", &path, e))?;
        let mut bytes = Vec::with_capacity(size as usize);
        while (bytes.len() as u64) < size {
            let read = file
                .read_at(bytes.len() as u64, IO_PIECE_BYTES)
                .await
                .map_err(|e| metadata_error("read", &path, e))?;
            if read.is_empty() {
                break;
            }
            bytes.extend_from_slice(&read);
        }
        let replayed = format::replay(&bytes).map_err(|damage| {
            FatalError::Corruption(format!(
                "the metadata group log {} is damaged at byte {}: {}",
                path.display(),
                damage.position,
                damage.reason
            ))
        })?;
        if replayed.torn {
            tracing::warn!(
                path = %path.display(),
                cut_at = replayed.end,
                size,
                "cutting an incomplete final write from the metadata group log"
            );
            file.truncate(replayed.end)
                .await
                .map_err(|e| metadata_error("cut the torn tail of", &path, e))?;
            sync(&file, &path).await?;
        }
        let store = GroupStore::restore(replayed.hard_state, replayed.snapshot, replayed.entries)
            .map_err(|e| {
            FatalError::Corruption(format!(
                "the metadata group log {} holds an impossible log: {e}",
                path.display()
            ))
        })?;
        let log = GroupLog {
            dir,
            file,
            end: replayed.end,
            image: Image::from_store(&store),
            failed: false,
            reserved_to: 0,
        };
        let mut log = log;
        log.keep_reserve();
        Ok(Some((log, store)))
    }

    /// Creates `<data_dir>/metadata-group/` holding `initial` (a founding, joining or migrated
    /// store), durably (file and directory entries synced) before returning. It is built in
    /// `metadata-group.tmp/` and renamed, so a crash leaves no group directory or a whole one.
    pub async fn create(data_dir: &Path, initial: &GroupStore) -> Result<GroupLog, FatalError> {
        let dir = data_dir.join(GROUP_DIR);
        if dir
            .try_exists()
            .map_err(|e| metadata_error("look for", &dir, e))?
        {
            return Err(metadata_error("create", &dir, "it exists already"));
        }
        let tmp_dir = data_dir.join(GROUP_DIR_TMP);
        match std::fs::remove_dir_all(&tmp_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(metadata_error("remove", &tmp_dir, e)),
        }
        std::fs::create_dir_all(&tmp_dir).map_err(|e| metadata_error("create", &tmp_dir, e))?;
        let bytes = file_bytes(initial.snapshot(), initial.entries(), initial.hard_state());
        let file = write_new_file(&tmp_dir.join(LOG_FILE), &bytes)
            .await
            .map_err(|error| match error {
                AppendError::NoSpace(message) => FatalError::Metadata(message),
                AppendError::Fatal(error) => error,
            })?;
        sync_dir(&tmp_dir).await?;
        std::fs::rename(&tmp_dir, &dir).map_err(|e| metadata_error("rename", &tmp_dir, e))?;
        sync_dir(data_dir).await?;
        let mut log = GroupLog {
            dir,
            file,
            end: bytes.len() as u64,
            image: Image::from_store(initial),
            failed: false,
            reserved_to: 0,
        };
        log.keep_reserve();
        Ok(log)
    }

    fn path(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    /// Renews the allocation past the end when less than half of [`RESERVE_BYTES`] is left.
    fn keep_reserve(&mut self) {
        if self.reserved_to.saturating_sub(self.end) >= RESERVE_BYTES / 2 {
            return;
        }
        match self.file.reserve(self.end, RESERVE_BYTES) {
            Ok(()) => self.reserved_to = self.end + RESERVE_BYTES,
            Err(error) => {
                self.reserved_to = self.end;
                tracing::debug!(%error, "cannot reserve room past the metadata group log's end");
            }
        }
    }

    /// Whether the log has its reserve: the blocks of `RESERVE_BYTES / 2` past its end are
    /// allocated.
    pub fn has_reserve(&self) -> bool {
        self.reserved_to.saturating_sub(self.end) >= RESERVE_BYTES / 2
    }

    fn check_usable(&self) -> Result<(), AppendError> {
        if self.failed {
            return Err(AppendError::Fatal(metadata_error(
                "write to",
                &self.path(),
                "an earlier write failed",
            )));
        }
        Ok(())
    }

    /// Makes `persist` durable in its order: the snapshot (which replaces everything before
    /// it: the file is rewritten), the entries (replacing any stored entry at or after the
    /// first one's index: raft's conflicting-suffix truncation), then the hard state. One
    /// write and one fdatasync for a call without a snapshot; nothing for an empty one.
    /// [`AppendError::NoSpace`] leaves the log as it was: the same write may be tried again.
    pub async fn write(&mut self, persist: &Persist) -> Result<(), AppendError> {
        self.check_usable()?;
        if let Some(snapshot) = &persist.snapshot {
            let mut image = self.image.clone();
            image.install_snapshot(snapshot);
            image.append(&persist.entries);
            if let Some(hard_state) = &persist.hard_state {
                image.hard_state = hard_state.clone();
            }
            return self.rewrite(snapshot, image).await;
        }
        let mut bytes = Vec::new();
        if !persist.entries.is_empty() {
            self.image.check_fits(&persist.entries);
            format::encode_entries(&mut bytes, &persist.entries, persist.hard_state.is_none());
        }
        if let Some(hard_state) = &persist.hard_state {
            format::encode_hard_state(&mut bytes, hard_state, true);
        }
        if bytes.is_empty() {
            return Ok(());
        }
        self.append(&bytes).await?;
        self.image.append(&persist.entries);
        if let Some(hard_state) = &persist.hard_state {
            self.image.hard_state = hard_state.clone();
        }
        Ok(())
    }

    /// Records a commit index learnt after the write (`Advanced::commit`), durably. One not
    /// above the recorded one changes nothing.
    pub async fn set_commit(&mut self, commit: u64) -> Result<(), AppendError> {
        self.check_usable()?;
        if commit <= self.image.hard_state.commit {
            return Ok(());
        }
        assert!(
            commit <= self.image.last_index(),
            "commit index {commit} past the last entry {}",
            self.image.last_index()
        );
        let mut bytes = Vec::new();
        format::encode_commit(&mut bytes, commit, true);
        self.append(&bytes).await?;
        self.image.hard_state.commit = commit;
        Ok(())
    }

    /// Writes a snapshot taken by compaction (`Advanced::compacted`) and drops the entries it
    /// covers: the file is rewritten around it, so it shrinks. A snapshot not newer than the
    /// one held changes nothing.
    pub async fn compact(&mut self, snapshot: &StoredSnapshot) -> Result<(), AppendError> {
        self.check_usable()?;
        if snapshot.index <= self.image.snapshot_index {
            return Ok(());
        }
        let mut image = self.image.clone();
        image.keep_snapshot(snapshot);
        self.rewrite(snapshot, image).await
    }

    /// Appends one write at the end, and syncs it.
    async fn append(&mut self, bytes: &[u8]) -> Result<(), AppendError> {
        let path = self.path();
        if let Err(error) = write_all(&self.file, bytes, self.end).await {
            // Cut what part of the write went in, so the next write follows the last whole
            // one directly (a cut needs no room).
            let no_space = is_no_space(&error);
            // (The cut also frees the blocks reserved past the end.)
            self.reserved_to = self.end;
            if !no_space || self.file.truncate(self.end).await.is_err() {
                self.failed = true;
            }
            return Err(write_error(&path, error));
        }
        if let Err(error) = sync(&self.file, &path).await {
            self.failed = true;
            return Err(AppendError::Fatal(error));
        }
        self.end += bytes.len() as u64;
        self.keep_reserve();
        Ok(())
    }

    /// Replaces the file with one holding `snapshot` and what `image` holds after it.
    async fn rewrite(
        &mut self,
        snapshot: &StoredSnapshot,
        image: Image,
    ) -> Result<(), AppendError> {
        assert_eq!(
            image.snapshot_index, snapshot.index,
            "the image follows the snapshot"
        );
        let bytes = file_bytes(snapshot, &image.entries, &image.hard_state);
        let tmp = self.dir.join(LOG_FILE_TMP);
        let file = write_new_file(&tmp, &bytes).await?;
        let path = self.path();
        let renamed = match std::fs::rename(&tmp, &path) {
            Ok(()) => sync_dir(&self.dir).await,
            Err(e) => Err(metadata_error("rename", &tmp, e)),
        };
        if let Err(error) = renamed {
            self.failed = true;
            return Err(AppendError::Fatal(error));
        }
        let old = std::mem::replace(&mut self.file, file);
        // The old file is gone from the directory; its descriptor only remains.
        let _closed = old.close().await;
        self.end = bytes.len() as u64;
        self.reserved_to = 0;
        self.keep_reserve();
        self.image = image;
        Ok(())
    }
}

/// If `<data_dir>/metadata` (the old [`MetadataLog`]) exists and `metadata-group` does not:
/// replays it, creates the group log holding one snapshot of that state at its applied index
/// (term 1, voters = `[node_id]`), and only once that is durable removes the old logs
/// (`metadata`, `metadata-snapshots`). Returns what [`GroupLog::open`] returns afterwards. A
/// node whose data predates the group keeps every stream, shard, subscription and progress.
/// A migration cut short by a crash after the group log became durable finishes here: the old
/// logs are removed then.
pub async fn migrate(
    data_dir: &Path,
    node_id: u64,
) -> Result<Option<(GroupLog, GroupStore)>, FatalError> {
    let old_commands = data_dir.join("metadata");
    let old_snapshots = data_dir.join("metadata-snapshots");
    let group_dir = data_dir.join(GROUP_DIR);
    let exists = |path: &Path| {
        path.try_exists()
            .map_err(|e| metadata_error("look for", path, e))
    };
    if !exists(&group_dir)? && exists(&old_commands)? {
        let (old_log, replayed) = MetadataLog::open(data_dir).await?;
        drop(old_log);
        let store = GroupStore::from_state(&replayed.state, &[node_id]);
        let created = GroupLog::create(data_dir, &store).await?;
        drop(created);
        tracing::info!(
            data_dir = %data_dir.display(),
            applied_index = replayed.state.applied_index(),
            "migrated the metadata log into the metadata group's log"
        );
    }
    let mut removed = false;
    for old in [&old_commands, &old_snapshots] {
        // Only once the group's log is durable do the old logs go.
        if exists(&group_dir)? && exists(old)? {
            std::fs::remove_dir_all(old).map_err(|e| metadata_error("remove", old, e))?;
            removed = true;
        }
    }
    if removed {
        sync_dir(data_dir).await?;
    }
    GroupLog::open(data_dir).await
}
