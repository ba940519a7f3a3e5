//! Core 0's durable metadata: every accepted command is appended, fsynced, to a Runnel log of
//! its own (`<data_dir>/metadata`), one command per batch, the command's index being its
//! offset + 1. Every `metadata_snapshot_interval` commands a snapshot of the whole state is
//! appended to a second log (`<data_dir>/metadata-snapshots`); only then are the commands it
//! covers trimmed, and older snapshots with them. On start the newest snapshot is loaded and
//! the commands after it are replayed.

use std::path::{Path, PathBuf};

use runnel_core::{BatchBuilder, Epoch, Limits, Offset, Record};
use runnel_replicate::metadata::{
    decode_command, decode_snapshot, encode_command, Command, MetadataState,
};
use runnel_segment::log::ReadBound;
use runnel_segment::{DmaStorage, LogConfig, LogError, ShardLog};

use crate::error::FatalError;

/// The metadata command log and its snapshots.
pub struct MetadataLog {
    commands: ShardLog<DmaStorage>,
    snapshots: ShardLog<DmaStorage>,
    dir: PathBuf,
}

/// What a restart finds: the newest snapshot (encoded) and the commands after it.
pub struct Replayed {
    /// The state: the snapshot with the commands applied.
    pub state: MetadataState,
    /// The newest snapshot's bytes, if there is one.
    pub snapshot: Option<Vec<u8>>,
    /// The commands after the snapshot, with their indexes.
    pub commands: Vec<(u64, Command)>,
}

fn command_log_config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 64 << 20,
        write_buffer_bytes: 1 << 20,
        limits: Limits {
            batch_bytes_max: 512 << 10,
            ..Limits::DEFAULT
        },
        ..LogConfig::default()
    }
}

/// Snapshots hold every stream and shard: allow large records.
fn snapshot_log_config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 256 << 20,
        write_buffer_bytes: 64 << 20,
        limits: Limits {
            record_bytes_max: 48 << 20,
            batch_bytes_max: 60 << 20,
            ..Limits::DEFAULT
        },
        ..LogConfig::default()
    }
}

fn metadata_error(what: &str, dir: &Path, error: impl std::fmt::Display) -> FatalError {
    FatalError::Metadata(format!("{what} {}: {error}", dir.display()))
}

/// Every record value of a log from `from`, with its offset.
async fn values(
    log: &ShardLog<DmaStorage>,
    from: Offset,
    dir: &Path,
) -> Result<Vec<(u64, Vec<u8>)>, FatalError> {
    let mut out = Vec::new();
    let mut next = from.max(log.start_offset());
    loop {
        let chunk = log
            .read(next, 1 << 20, ReadBound::Durable)
            .await
            .map_err(|e| metadata_error("read", dir, e))?;
        if chunk.is_empty() {
            return Ok(out);
        }
        for batch in chunk.batches() {
            let records = batch
                .records()
                .map_err(|e| metadata_error("read a batch of", dir, e))?;
            for (i, record) in records.enumerate() {
                let offset = batch.base_offset().0 + i as u64;
                if offset >= next.0 {
                    out.push((offset, record.value().to_vec()));
                }
            }
        }
        next = chunk.next_offset();
    }
}

/// Why a metadata append failed.
#[derive(Debug)]
pub enum AppendError {
    /// The disk is full: nothing was recorded (the log gave no index), the node goes on.
    NoSpace(String),
    /// Anything else is fatal to the node.
    Fatal(FatalError),
}

impl std::fmt::Display for AppendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppendError::NoSpace(message) => f.write_str(message),
            AppendError::Fatal(error) => error.fmt(f),
        }
    }
}

async fn append_value(
    log: &ShardLog<DmaStorage>,
    config: &LogConfig,
    value: Vec<u8>,
    now_ms: i64,
) -> Result<Offset, LogError> {
    let mut builder = BatchBuilder::new();
    builder.push(Record::at(value, now_ms));
    let batch = builder.finish(&config.limits)?;
    let appended = log.append_durable(&batch, Epoch(0)).await?;
    Ok(appended.base_offset)
}

fn append_error(what: &str, dir: &Path, error: LogError) -> AppendError {
    match error {
        LogError::NoSpace { .. } => AppendError::NoSpace(format!(
            "the metadata log in {} has no room: {error}",
            dir.display()
        )),
        other => AppendError::Fatal(metadata_error(what, dir, other)),
    }
}

impl MetadataLog {
    /// Opens both logs and replays them.
    pub async fn open(data_dir: &Path) -> Result<(MetadataLog, Replayed), FatalError> {
        let dir = data_dir.join("metadata");
        let commands = ShardLog::open(DmaStorage, &dir, command_log_config())
            .await
            .map_err(|e| metadata_error("open", &dir, e))?;
        let snapshot_dir = data_dir.join("metadata-snapshots");
        let snapshots = ShardLog::open(DmaStorage, &snapshot_dir, snapshot_log_config())
            .await
            .map_err(|e| metadata_error("open", &snapshot_dir, e))?;
        let snapshot = values(&snapshots, snapshots.start_offset(), &snapshot_dir)
            .await?
            .pop()
            .map(|(_, bytes)| bytes);
        let mut state = match &snapshot {
            Some(bytes) => decode_snapshot(bytes)
                .map_err(|e| metadata_error("decode the newest snapshot in", &snapshot_dir, e))?,
            None => MetadataState::new(),
        };
        // Commands up to the snapshot's index are in it; index = offset + 1.
        let first = Offset(state.applied_index());
        if commands.start_offset() > first {
            return Err(metadata_error(
                "commands after the snapshot are missing from",
                &dir,
                format!(
                    "the log starts at {} but the snapshot ends at index {}",
                    commands.start_offset(),
                    first
                ),
            ));
        }
        let mut replayed = Vec::new();
        for (offset, bytes) in values(&commands, first, &dir).await? {
            let index = offset + 1;
            let command = decode_command(&bytes)
                .map_err(|e| metadata_error(&format!("decode command {index} in"), &dir, e))?;
            // A command in the log was accepted when written; applying it again gives the same
            // outcome, refusals included.
            let _refusal = state.apply(index, &command);
            replayed.push((index, command));
        }
        Ok((
            MetadataLog {
                commands,
                snapshots,
                dir,
            },
            Replayed {
                state,
                snapshot,
                commands: replayed,
            },
        ))
    }

    /// Appends `command` durably; returns its index. A full disk refuses it cleanly
    /// ([`AppendError::NoSpace`]: no index was used).
    pub async fn append(&self, command: &Command, now_ms: i64) -> Result<u64, AppendError> {
        let offset = append_value(
            &self.commands,
            &command_log_config(),
            encode_command(command),
            now_ms,
        )
        .await
        .map_err(|e| append_error("append a command to", &self.dir, e))?;
        Ok(offset.0 + 1)
    }

    /// Writes a snapshot (the bytes of
    /// [`runnel_replicate::metadata::encode_snapshot`] of the state at `applied_index`)
    /// durably, then trims the commands and the older snapshots it makes unnecessary.
    /// A full disk refuses the snapshot cleanly ([`AppendError::NoSpace`]); the command log
    /// still holds everything, and a later snapshot can try again.
    pub async fn snapshot(
        &self,
        snapshot: Vec<u8>,
        applied_index: u64,
        now_ms: i64,
    ) -> Result<(), AppendError> {
        let offset = append_value(&self.snapshots, &snapshot_log_config(), snapshot, now_ms)
            .await
            .map_err(|e| append_error("append a snapshot to", &self.dir, e))?;
        self.snapshots.trim(offset).await.map_err(|e| {
            AppendError::Fatal(metadata_error("trim the snapshots of", &self.dir, e))
        })?;
        self.commands
            .trim(Offset(applied_index))
            .await
            .map_err(|e| AppendError::Fatal(metadata_error("trim the commands of", &self.dir, e)))
    }

    /// The index the next command gets.
    pub fn next_index(&self) -> u64 {
        self.commands.next_offset().0 + 1
    }
}
