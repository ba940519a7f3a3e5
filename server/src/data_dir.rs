//! Who owns a data directory: one process at a time, and one node forever.
//!
//! - `<data_dir>/lock`: an exclusive `flock` taken before anything else touches the directory
//!   and held until the process exits (the kernel drops it on exit, even on SIGKILL, so a
//!   crash never leaves a stale lock). The file holds the pid of the holder, for the message
//!   a second process prints.
//! - `<data_dir>/node`: the node id the data belongs to, written once (atomically: temporary
//!   file, fsync, rename, fsync of the directory) and checked on every start. Format in
//!   `docs/operations.md` ("The data directory"): four text lines, the last a CRC-32 of the
//!   first three, so a damaged file is refused rather than read as another id.
//! - `<data_dir>/removed`: written (atomically, like `node`) when the node learns it was
//!   removed from its cluster; a directory holding it is refused on every later start.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::FatalError;

/// The lock file, relative to the data directory.
pub const LOCK_FILE: &str = "lock";
/// The identity file, relative to the data directory.
pub const NODE_FILE: &str = "node";
/// The file that marks a removed node's data directory, relative to the data directory.
pub const REMOVED_FILE: &str = "removed";
/// The first line of the identity file.
const NODE_FILE_MAGIC: &str = "runnel node identity";
/// The identity file's format version.
const NODE_FILE_VERSION: u32 = 1;
/// An identity file is a few dozen bytes; anything much larger is not one.
const NODE_FILE_BYTES_MAX: u64 = 4096;

/// The data directory's lock, held while this value lives (keep it for the process's life).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Creates the data directory if needed and takes its exclusive lock, without waiting:
/// [`FatalError::DataDirLocked`] when another process holds it.
pub fn lock(data_dir: &Path) -> Result<DataDirLock, FatalError> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| FatalError::Io(format!("create {}: {e}", data_dir.display())))?;
    let path = data_dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(&path)
        .map_err(|e| FatalError::Io(format!("open {}: {e}", path.display())))?;
    if let Err(error) = try_lock_exclusive(&file) {
        if error.kind() == ErrorKind::WouldBlock {
            let mut text = String::new();
            // The holder's pid is a courtesy for the message: unreadable means unknown.
            let holder_pid = file
                .read_to_string(&mut text)
                .ok()
                .and_then(|_| text.trim().parse::<u32>().ok());
            return Err(FatalError::DataDirLocked {
                data_dir: data_dir.to_owned(),
                holder_pid,
            });
        }
        return Err(FatalError::Io(format!("lock {}: {error}", path.display())));
    }
    // Ours now: say who holds it. Not synced: after a crash the kernel has dropped the lock
    // and a stale pid only makes a message less precise.
    file.set_len(0)
        .and_then(|()| file.write_all(format!("{}\n", std::process::id()).as_bytes()))
        .map_err(|e| FatalError::Io(format!("write {}: {e}", path.display())))?;
    Ok(DataDirLock { _file: file, path })
}

/// `flock(LOCK_EX | LOCK_NB)`: std's `File::try_lock` is newer than the workspace's MSRV.
#[allow(unsafe_code)]
fn try_lock_exclusive(file: &File) -> std::io::Result<()> {
    // SAFETY: the descriptor is open for as long as `file` is borrowed; flock takes no pointer.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The identity file's text for `node_id`.
fn node_file_text(node_id: u64) -> String {
    let body = format!("{NODE_FILE_MAGIC}\nversion = {NODE_FILE_VERSION}\nnode_id = {node_id}\n");
    let crc = crc32fast::hash(body.as_bytes());
    format!("{body}crc32 = {crc:08x}\n")
}

/// Parses an identity file; `Err` says what is wrong with it.
fn parse_node_file(text: &str) -> Result<u64, String> {
    let lines: Vec<&str> = text.lines().collect();
    let [magic, version, node_id, crc] = lines.as_slice() else {
        return Err(format!("expected 4 lines, found {}", lines.len()));
    };
    if *magic != NODE_FILE_MAGIC {
        return Err(format!("first line is {magic:?}, not {NODE_FILE_MAGIC:?}"));
    }
    let value = |line: &str, key: &str| -> Result<String, String> {
        line.strip_prefix(key)
            .and_then(|rest| rest.strip_prefix(" = "))
            .map(str::to_owned)
            .ok_or_else(|| format!("expected `{key} = …`, found {line:?}"))
    };
    let body = format!("{magic}\n{version}\n{node_id}\n");
    let crc = u32::from_str_radix(&value(crc, "crc32")?, 16).map_err(|e| format!("crc32: {e}"))?;
    let actual = crc32fast::hash(body.as_bytes());
    if crc != actual {
        return Err(format!(
            "checksum mismatch: the file says {crc:08x}, its first three lines hash to {actual:08x}"
        ));
    }
    let version = value(version, "version")?;
    if version != NODE_FILE_VERSION.to_string() {
        return Err(format!(
            "version {version}, this build reads version {NODE_FILE_VERSION}"
        ));
    }
    let node_id: u64 = value(node_id, "node_id")?
        .parse()
        .map_err(|e| format!("node_id: {e}"))?;
    Ok(node_id)
}

/// The node id the data directory belongs to, if it has an identity file.
pub fn read_node_id(data_dir: &Path) -> Result<Option<u64>, FatalError> {
    let path = data_dir.join(NODE_FILE);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FatalError::Io(format!("open {}: {e}", path.display()))),
    };
    let mut text = String::new();
    file.take(NODE_FILE_BYTES_MAX)
        .read_to_string(&mut text)
        .map_err(|e| FatalError::Identity(format!("cannot read {}: {e}", path.display())))?;
    parse_node_file(&text).map(Some).map_err(|reason| {
        FatalError::Identity(format!(
            "{} is damaged ({reason}); if you know this data's node id, delete the file and start with that --node-id",
            path.display()
        ))
    })
}

/// Refuses to start node `node_id` on data that belongs to another node.
pub fn check_node_id(data_dir: &Path, node_id: u64) -> Result<(), FatalError> {
    match read_node_id(data_dir)? {
        Some(owner) if owner != node_id => Err(mismatch(data_dir, owner, node_id)),
        _ => Ok(()),
    }
}

/// The refusal to serve `owner`'s data as node `node_id`.
pub fn mismatch(data_dir: &Path, owner: u64, node_id: u64) -> FatalError {
    FatalError::Identity(format!(
        "data directory {} belongs to node {owner}, not node {node_id}: start it with --node-id {owner} (or node_id = {owner}), or give node {node_id} another data directory",
        data_dir.display()
    ))
}

/// Writes the identity file for `node_id` when there is none yet (atomically and durably).
pub fn write_node_id(data_dir: &Path, node_id: u64) -> Result<(), FatalError> {
    let path = data_dir.join(NODE_FILE);
    if path.exists() {
        return check_node_id(data_dir, node_id);
    }
    write_atomically(data_dir, NODE_FILE, &node_file_text(node_id))?;
    tracing::info!(node = node_id, file = %path.display(), "recorded this node's identity");
    Ok(())
}

/// Writes `text` to `<data_dir>/<name>` atomically and durably: a temporary file, fsync,
/// rename, fsync of the directory.
fn write_atomically(data_dir: &Path, name: &str, text: &str) -> Result<(), FatalError> {
    let path = data_dir.join(name);
    let temporary = data_dir.join(format!("{name}.tmp"));
    let io = |what: &str, p: &Path, e: std::io::Error| {
        FatalError::Io(format!("{what} {}: {e}", p.display()))
    };
    let mut file = File::create(&temporary).map_err(|e| io("create", &temporary, e))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| io("write", &temporary, e))?;
    std::fs::rename(&temporary, &path).map_err(|e| io("rename to", &path, e))?;
    File::open(data_dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| io("sync", data_dir, e))
}

/// Marks the data directory as a removed node's: every later start is refused.
pub fn mark_removed(data_dir: &Path, node_id: u64) -> Result<(), FatalError> {
    let text = format!(
        "node {node_id} was removed from its cluster (runnel node remove); this directory \
         cannot serve again\n"
    );
    write_atomically(data_dir, REMOVED_FILE, &text)
}

/// Refuses a data directory whose node was removed from its cluster.
pub fn check_not_removed(data_dir: &Path, node_id: u64) -> Result<(), FatalError> {
    if data_dir.join(REMOVED_FILE).exists() {
        return Err(removed(data_dir, node_id));
    }
    Ok(())
}

/// The reason a removed node stops, and the refusal of its data directory.
pub fn removed(data_dir: &Path, node_id: u64) -> FatalError {
    FatalError::Removed(format!(
        "node {node_id} was removed from its cluster (runnel node remove); its data directory \
         {} cannot serve again: to join the cluster as a new node, wipe the directory (or give \
         another --data-dir) and start it with seeds",
        data_dir.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().expect("temp dir");
        let held = lock(dir.path()).expect("the first lock");
        // flock locks belong to open file descriptions: a second open in this process
        // conflicts exactly as another process would.
        match lock(dir.path()) {
            Err(FatalError::DataDirLocked {
                data_dir,
                holder_pid,
            }) => {
                assert_eq!(data_dir, dir.path());
                assert_eq!(holder_pid, Some(std::process::id()));
            }
            other => panic!("expected DataDirLocked, got {other:?}"),
        }
        assert_eq!(held.path(), dir.path().join(LOCK_FILE));
        drop(held);
        lock(dir.path()).expect("free again once the holder is gone");
    }

    #[test]
    fn the_node_id_is_written_once_and_checked() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert_eq!(read_node_id(dir.path()).expect("no file"), None);
        check_node_id(dir.path(), 3).expect("fresh data belongs to nobody yet");
        write_node_id(dir.path(), 3).expect("write");
        assert_eq!(read_node_id(dir.path()).expect("read"), Some(3));
        check_node_id(dir.path(), 3).expect("the same node");
        let refused = check_node_id(dir.path(), 4).expect_err("another node");
        assert_eq!(refused.exit_code(), 8);
        assert!(refused
            .to_string()
            .contains("belongs to node 3, not node 4"));
        write_node_id(dir.path(), 4).expect_err("never overwritten with another id");
    }

    #[test]
    fn a_damaged_identity_file_is_refused_not_misread() {
        let text = node_file_text(12);
        assert_eq!(parse_node_file(&text), Ok(12));
        // Every single-character change of the id line is caught by the checksum.
        let flipped = text.replace("node_id = 12", "node_id = 13");
        let error = parse_node_file(&flipped).expect_err("another id, same checksum");
        assert!(error.contains("checksum"), "{error}");
        for broken in [
            "",
            "runnel node identity\n",
            &text.replace("version = 1", "version = 2"),
        ] {
            assert!(parse_node_file(broken).is_err(), "{broken:?}");
        }
    }

    /// A directory marked removed is refused on start, naming the way back in; an unmarked
    /// one is not.
    #[test]
    fn a_removed_nodes_directory_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        check_not_removed(dir.path(), 3).expect("not removed");
        mark_removed(dir.path(), 3).expect("marked");
        let error = check_not_removed(dir.path(), 3).expect_err("removed");
        assert_eq!(error.exit_code(), 10);
        assert!(error.to_string().contains("wipe the directory"), "{error}");
    }
}
