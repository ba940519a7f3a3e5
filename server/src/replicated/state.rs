//! A replica's durable state beside its log: the epoch it is sealed at and a committed offset
//! it knew (`docs/format/replication.md`, "Replica state file").
//!
//! One 32-byte file, `replica-state`, in the shard's directory, replaced atomically: the new
//! contents go to `replica-state.tmp`, which is fsynced, renamed over the old file, and the
//! directory fsynced. A crash at any step leaves the old file or the new one (a leftover
//! `.tmp` is ignored and overwritten), so a seal once reported synced is never forgotten.
//!
//! The committed offset kept here is a lower bound of what the replica knew (it is written with
//! each seal and then from time to time): a lower committed offset after a restart is safe (a
//! replica's log below any committed offset it once knew is the committed log; knowing less
//! only makes its digests longer), a higher one would not be, so it is never written above
//! what the replica's own log holds durably.

use std::io::Write;
use std::path::{Path, PathBuf};

use runnel_replicate::shard::Epoch;

/// The file's name in the shard's directory.
pub const STATE_FILE: &str = "replica-state";
/// The temporary file a new state is written to before it replaces [`STATE_FILE`].
pub const STATE_TEMP_FILE: &str = "replica-state.tmp";
/// `b"RNRS"`, little-endian.
pub const STATE_MAGIC: u32 = u32::from_le_bytes(*b"RNRS");
/// The format's version.
pub const STATE_VERSION: u16 = 1;
/// The file's length.
pub const STATE_LEN: usize = 32;

/// What a replica keeps across restarts besides its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplicaState {
    /// The replica refuses every epoch below this one.
    pub sealed: Epoch,
    /// Offsets below this one were committed (a lower bound of what the replica knew).
    pub committed: u64,
}

/// Why a replica's state file cannot be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// Reading, writing or syncing failed.
    #[error("replica state {path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        error: std::io::Error,
    },
    /// The file exists but is not a replica state this build reads (damaged, or another
    /// format): the replica must not guess its sealed epoch.
    #[error("replica state {path} is damaged: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl ReplicaState {
    /// The file's 32 bytes.
    pub fn encode(&self) -> [u8; STATE_LEN] {
        let mut out = [0u8; STATE_LEN];
        out[0..4].copy_from_slice(&STATE_MAGIC.to_le_bytes());
        out[4..6].copy_from_slice(&STATE_VERSION.to_le_bytes());
        // 6..8 reserved, zero.
        out[8..16].copy_from_slice(&self.sealed.0.to_le_bytes());
        out[16..24].copy_from_slice(&self.committed.to_le_bytes());
        let crc = crc32fast::hash(&out[0..24]);
        out[24..28].copy_from_slice(&crc.to_le_bytes());
        // 28..32 reserved, zero.
        out
    }

    /// Decodes the file's bytes: `Err` with the reason when they are not a state.
    pub fn decode(bytes: &[u8]) -> Result<ReplicaState, String> {
        let bytes: &[u8; STATE_LEN] = bytes
            .try_into()
            .map_err(|_| format!("{} bytes, not {STATE_LEN}", bytes.len()))?;
        let word = |at: usize| -> u64 {
            let mut eight = [0u8; 8];
            eight.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(eight)
        };
        let magic = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        if magic != STATE_MAGIC {
            return Err(format!("magic {magic:#010x}"));
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version != STATE_VERSION {
            return Err(format!("version {version}"));
        }
        let stored = u32::from_le_bytes([bytes[24], bytes[25], bytes[26], bytes[27]]);
        let computed = crc32fast::hash(&bytes[0..24]);
        if stored != computed {
            return Err(format!("crc {stored:#010x}, computed {computed:#010x}"));
        }
        Ok(ReplicaState {
            sealed: Epoch(word(8)),
            committed: word(16),
        })
    }

    /// Reads the state of the replica in `dir`: the default (never sealed, nothing known
    /// committed) when there is no file yet.
    pub fn load(dir: &Path) -> Result<ReplicaState, StateError> {
        let path = dir.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                ReplicaState::decode(&bytes).map_err(|reason| StateError::Corrupt { path, reason })
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                Ok(ReplicaState::default())
            }
            Err(error) => Err(StateError::Io { path, error }),
        }
    }

    /// Replaces the state of the replica in `dir` durably (see the module documentation for
    /// the steps). Blocking: run it off the executor.
    pub fn store(&self, dir: &Path) -> Result<(), StateError> {
        self.store_steps(dir, Step::All)
    }

    fn store_steps(&self, dir: &Path, stop_after: Step) -> Result<(), StateError> {
        let temp = dir.join(STATE_TEMP_FILE);
        let path = dir.join(STATE_FILE);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |error| StateError::Io { path, error }
        };
        let mut file = std::fs::File::create(&temp).map_err(io(&temp))?;
        file.write_all(&self.encode()).map_err(io(&temp))?;
        if stop_after == Step::Written {
            return Ok(());
        }
        file.sync_all().map_err(io(&temp))?;
        drop(file);
        if stop_after == Step::Synced {
            return Ok(());
        }
        std::fs::rename(&temp, &path).map_err(io(&path))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
        Ok(())
    }
}

/// Where [`ReplicaState::store_steps`] stops (the tests' crash points).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Written,
    Synced,
    All,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().expect("test setup")
    }

    #[test]
    fn a_missing_file_is_the_empty_state() {
        let dir = dir();
        assert_eq!(
            ReplicaState::load(dir.path()).expect("test setup"),
            ReplicaState::default()
        );
    }

    #[test]
    fn a_stored_state_loads_back() {
        let dir = dir();
        let state = ReplicaState {
            sealed: Epoch(7),
            committed: 12_345,
        };
        state.store(dir.path()).expect("test setup");
        assert_eq!(ReplicaState::load(dir.path()).expect("test setup"), state);
        let newer = ReplicaState {
            sealed: Epoch(8),
            committed: 20_000,
        };
        newer.store(dir.path()).expect("test setup");
        assert_eq!(ReplicaState::load(dir.path()).expect("test setup"), newer);
    }

    /// A crash after each step of a replacement leaves the old state or the new one, never a
    /// damaged or empty file: the temporary file is ignored until it is renamed.
    #[test]
    fn a_crash_between_steps_keeps_the_old_state_or_the_new() {
        for step in [Step::Written, Step::Synced, Step::All] {
            let dir = dir();
            let old = ReplicaState {
                sealed: Epoch(3),
                committed: 40,
            };
            old.store(dir.path()).expect("test setup");
            let new = ReplicaState {
                sealed: Epoch(4),
                committed: 50,
            };
            new.store_steps(dir.path(), step).expect("test setup");
            let loaded = ReplicaState::load(dir.path()).expect("test setup");
            let expected = if step == Step::All { new } else { old };
            assert_eq!(loaded, expected, "crash after {step:?}");
            // The next replacement overwrites the leftover temporary file.
            let next = ReplicaState {
                sealed: Epoch(5),
                committed: 60,
            };
            next.store(dir.path()).expect("test setup");
            assert_eq!(ReplicaState::load(dir.path()).expect("test setup"), next);
        }
    }

    /// A damaged file is an error, never an empty state (that would forget a seal).
    #[test]
    fn a_damaged_file_is_refused() {
        let dir = dir();
        ReplicaState {
            sealed: Epoch(3),
            committed: 1,
        }
        .store(dir.path())
        .expect("test setup");
        let path = dir.path().join(STATE_FILE);
        let mut bytes = std::fs::read(&path).expect("test setup");
        bytes[9] ^= 1;
        std::fs::write(&path, &bytes).expect("test setup");
        assert!(matches!(
            ReplicaState::load(dir.path()),
            Err(StateError::Corrupt { .. })
        ));
        std::fs::write(&path, &bytes[..10]).expect("test setup");
        assert!(matches!(
            ReplicaState::load(dir.path()),
            Err(StateError::Corrupt { .. })
        ));
    }

    #[test]
    fn the_layout_is_as_documented() {
        let bytes = ReplicaState {
            sealed: Epoch(0x0102),
            committed: 0x0304,
        }
        .encode();
        assert_eq!(&bytes[0..4], b"RNRS");
        assert_eq!(&bytes[4..6], &[1, 0]);
        assert_eq!(&bytes[8..10], &[2, 1]);
        assert_eq!(&bytes[16..18], &[4, 3]);
        assert_eq!(&bytes[28..32], &[0, 0, 0, 0]);
    }
}
