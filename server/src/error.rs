//! Fatal errors: the node stops with one of these as its reason (fail-stop, never half-alive).

use std::path::PathBuf;

use thiserror::Error;

/// Why the node cannot start or must stop.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum FatalError {
    /// The configuration was refused.
    #[error("configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// TLS material could not be loaded or created.
    #[error("TLS: {0}")]
    Tls(String),
    /// A file or socket operation failed.
    #[error("I/O: {0}")]
    Io(String),
    /// The metadata log could not be opened, replayed or written.
    #[error("metadata: {0}")]
    Metadata(String),
    /// An executor could not start or stopped with an error.
    #[error("executor: {0}")]
    Executor(String),
    /// Another process holds the data directory's lock.
    #[error(
        "data directory {} is in use by another runnel-server{}: stop it, or give this one another --data-dir",
        data_dir.display(),
        holder_pid.map_or(String::new(), |pid| format!(" (pid {pid})"))
    )]
    DataDirLocked {
        /// The data directory.
        data_dir: PathBuf,
        /// The process holding the lock, as it wrote into the lock file, when readable.
        holder_pid: Option<u32>,
    },
    /// The data directory belongs to another node (or its identity file is unreadable).
    #[error("identity: {0}")]
    Identity(String),
    /// A shard's log holds damage no crash can explain (for example bit rot below its
    /// acknowledged end): the node does not start over it, and changes nothing on disk.
    #[error("corruption: {0}")]
    Corruption(String),
    /// The node was removed from its cluster (`runnel node remove`): it stopped when it
    /// learnt so, and its data directory is refused from then on.
    #[error("removed: {0}")]
    Removed(String),
}

impl FatalError {
    /// The process exit code for this reason.
    pub fn exit_code(&self) -> i32 {
        match self {
            FatalError::Config(_) => 2,
            FatalError::Tls(_) => 3,
            FatalError::Io(_) => 4,
            FatalError::Metadata(_) => 5,
            FatalError::Executor(_) => 6,
            FatalError::DataDirLocked { .. } => 7,
            FatalError::Identity(_) => 8,
            FatalError::Corruption(_) => 9,
            FatalError::Removed(_) => 10,
        }
    }
}
