//! The SQL engine's checkpoint: one JSON file, `<data dir>/sql/checkpoint.json`, holding the
//! whole engine (`runnel_query::Snapshot`: the SQL catalog of streams, views and persistent
//! queries, each query's operator state with the source offsets it consumed, and the views'
//! rows). It is replaced atomically: written to `checkpoint.json.tmp`, fdatasynced, renamed
//! over the old one, and the directory synced, so a crash leaves the old or the new file,
//! never a mix. State and offsets are one snapshot, so a restart that replays the sources
//! after the offsets ends where an uninterrupted run would.

use std::io::Write;
use std::path::{Path, PathBuf};

use runnel_query::Snapshot;

/// The checkpoint file of a data directory.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("sql").join("checkpoint.json")
}

/// Why a checkpoint could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The file system refused.
    #[error("SQL checkpoint {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not a checkpoint this version reads.
    #[error("SQL checkpoint {path} is damaged: {reason}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The checkpoint at `path`, or `None` when there is none yet.
pub fn load(path: &Path) -> Result<Option<Snapshot>, CheckpointError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CheckpointError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| CheckpointError::Damaged {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

/// Replaces the checkpoint at `path` with `bytes`, atomically (blocking file I/O: run it with
/// `spawn_blocking`).
pub fn store(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let io = |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let temporary = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&temporary).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_data().map_err(io)?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored checkpoint loads as the engine it came from; a damaged one is refused, not
    /// read as empty.
    #[test]
    fn checkpoints_round_trip_and_damage_is_refused() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = path(dir.path());
        assert!(load(&path).expect("no checkpoint yet").is_none());
        let mut engine = runnel_query::Engine::new();
        engine
            .execute("CREATE STREAM s; CREATE VIEW v AS SELECT a, COUNT(*) AS n FROM s GROUP BY a;")
            .expect("statements run");
        let bytes = serde_json::to_vec(&engine.snapshot()).expect("snapshot serialises");
        store(&path, &bytes).expect("stored");
        let loaded = load(&path).expect("loads").expect("present");
        let restored = runnel_query::Engine::restore(loaded).expect("restores");
        assert_eq!(restored.feeds().len(), 1);
        std::fs::write(&path, b"{ not json").expect("damage");
        assert!(matches!(load(&path), Err(CheckpointError::Damaged { .. })));
    }
}
