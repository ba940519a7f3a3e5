//! Core 0's durable metadata: accepted commands are appended, fsynced, to a Runnel log of its
//! own (`<data_dir>/metadata`), one record per command, a command's index being its record's
//! offset plus one. The proposer (`crate::proposer`) group-commits: the commands of one of its
//! batches are the records of one log batch, written with one fdatasync.
//!
//! Snapshots of the whole state go to a second log (`<data_dir>/metadata-snapshots`); only
//! then are the commands they cover trimmed, and older snapshots with them. A snapshot is due
//! ([`SinceSnapshot::due`]) once at least `metadata_snapshot_interval` commands *and* at least
//! half the last snapshot's size in command bytes were recorded after it: a snapshot of
//! 100,000 streams is large, and taking it every few hundred commands would make its cost per
//! command grow with the state. With the size rule, the snapshot bytes written per command
//! byte stay at most two, and a restart replays at most about half a snapshot's worth of
//! commands (plus one batch) after loading the newest snapshot.

use std::cell::Cell;
use std::path::{Path, PathBuf};

use runnel_core::{BatchBuilder, Epoch, Limits, Offset, Record};
use runnel_replicate::metadata::{decode_command, decode_snapshot, Command, MetadataState};
use runnel_segment::log::ReadBound;
use runnel_segment::{DmaStorage, LogConfig, LogError, ShardLog};

use crate::error::FatalError;

/// The metadata command log and its snapshots.
pub struct MetadataLog {
    commands: ShardLog<DmaStorage>,
    snapshots: ShardLog<DmaStorage>,
    dir: PathBuf,
    since_snapshot: Cell<SinceSnapshot>,
}

/// What was recorded since the newest snapshot, and that snapshot's size: what decides when
/// the next one is due.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinceSnapshot {
    /// Commands recorded after the newest snapshot.
    pub commands: u64,
    /// Their encoded bytes.
    pub command_bytes: u64,
    /// The newest snapshot's encoded bytes (0 before the first).
    pub snapshot_bytes: u64,
}

impl SinceSnapshot {
    /// Whether a snapshot is due: at least `commands_min` commands (the configured
    /// `metadata_snapshot_interval`) and at least half the last snapshot's bytes of commands
    /// were recorded since it. The second condition keeps the snapshot cost per command
    /// constant however large the state grows, and bounds what a restart replays.
    pub fn due(&self, commands_min: u64) -> bool {
        self.commands >= commands_min && self.command_bytes.saturating_mul(2) >= self.snapshot_bytes
    }

    /// After recording `commands` more commands of `bytes` encoded bytes.
    fn recorded(self, commands: u64, bytes: u64) -> SinceSnapshot {
        SinceSnapshot {
            commands: self.commands + commands,
            command_bytes: self.command_bytes + bytes,
            ..self
        }
    }
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

/// Largest batch of the command log (one proposer batch), header and framing included.
pub const COMMAND_BATCH_BYTES_MAX: u64 = 512 << 10;

fn command_log_config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 64 << 20,
        write_buffer_bytes: 1 << 20,
        limits: Limits {
            batch_bytes_max: COMMAND_BATCH_BYTES_MAX,
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

/// Appends `values` as the records of one batch, durably; returns the first one's offset.
async fn append_values(
    log: &ShardLog<DmaStorage>,
    config: &LogConfig,
    values: impl IntoIterator<Item = Vec<u8>>,
    now_ms: i64,
) -> Result<Offset, LogError> {
    let mut builder = BatchBuilder::new();
    for value in values {
        builder.push(Record::at(value, now_ms));
    }
    let count = builder.len() as u64;
    let batch = builder.finish(&config.limits)?;
    let appended = log.append_durable(&batch, Epoch(0)).await?;
    assert_eq!(
        appended.last_offset.0 + 1 - appended.base_offset.0,
        count,
        "a metadata batch got offsets for another number of records"
    );
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
        let mut since_snapshot = SinceSnapshot {
            snapshot_bytes: snapshot.as_ref().map_or(0, |bytes| bytes.len() as u64),
            ..SinceSnapshot::default()
        };
        // Every record of every batch, in offset order: a batch holds the commands of one
        // group commit.
        for (offset, bytes) in values(&commands, first, &dir).await? {
            let index = offset + 1;
            let command = decode_command(&bytes)
                .map_err(|e| metadata_error(&format!("decode command {index} in"), &dir, e))?;
            // A command in the log was accepted when written; applying it again gives the same
            // outcome, refusals included.
            let _refusal = state.apply(index, &command);
            replayed.push((index, command));
            since_snapshot = since_snapshot.recorded(1, bytes.len() as u64);
        }
        // Proposals take their indexes from the log's next offset: the replayed state must
        // end exactly there.
        if state.applied_index() != commands.next_offset().0 {
            return Err(metadata_error(
                "the replayed state does not end where the commands end in",
                &dir,
                format!(
                    "state at index {}, next offset {}",
                    state.applied_index(),
                    commands.next_offset()
                ),
            ));
        }
        Ok((
            MetadataLog {
                commands,
                snapshots,
                dir,
                since_snapshot: Cell::new(since_snapshot),
            },
            Replayed {
                state,
                snapshot,
                commands: replayed,
            },
        ))
    }

    /// Appends `commands` (each the bytes of [`encode_command`] of an accepted command, in
    /// order) durably as the records of one batch, with one fdatasync; returns the first one's
    /// index (the others follow it). A full disk refuses the whole batch cleanly
    /// ([`AppendError::NoSpace`]: no index was used).
    pub async fn append_batch(
        &self,
        commands: &[Vec<u8>],
        now_ms: i64,
    ) -> Result<u64, AppendError> {
        assert!(!commands.is_empty(), "an empty metadata batch");
        let bytes: u64 = commands.iter().map(|c| c.len() as u64).sum();
        let expected = self.next_index();
        let offset = append_values(
            &self.commands,
            &command_log_config(),
            commands.iter().cloned(),
            now_ms,
        )
        .await
        .map_err(|e| append_error("append commands to", &self.dir, e))?;
        let first = offset.0 + 1;
        assert_eq!(first, expected, "the metadata log moved under an append");
        self.since_snapshot.set(
            self.since_snapshot
                .get()
                .recorded(commands.len() as u64, bytes),
        );
        Ok(first)
    }

    /// What was recorded since the newest snapshot (see [`SinceSnapshot::due`]).
    pub fn since_snapshot(&self) -> SinceSnapshot {
        self.since_snapshot.get()
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
        // The snapshot covers every recorded command: nothing may be appended while it is
        // written (the proposer runs one batch at a time and snapshots between batches).
        assert_eq!(
            applied_index + 1,
            self.next_index(),
            "a snapshot that does not end where the command log does"
        );
        let snapshot_bytes = snapshot.len() as u64;
        let offset = append_values(&self.snapshots, &snapshot_log_config(), [snapshot], now_ms)
            .await
            .map_err(|e| append_error("append a snapshot to", &self.dir, e))?;
        self.since_snapshot.set(SinceSnapshot {
            snapshot_bytes,
            ..SinceSnapshot::default()
        });
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

#[cfg(test)]
mod tests {
    use super::{MetadataLog, SinceSnapshot};
    use crate::proposer::{BATCH_BYTES_MAX, BATCH_COMMANDS_MAX};

    /// The largest batch the proposer makes (its command and byte bounds both reached) is one
    /// batch of the command log, and replays record by record.
    #[test]
    fn a_full_proposer_batch_fits_the_command_log() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().to_owned();
        runnel_segment::runtime::run("metadata-log-test", 1, move || async move {
            let (log, _) = MetadataLog::open(&path).await.expect("open");
            let value_bytes = BATCH_BYTES_MAX / BATCH_COMMANDS_MAX;
            // Not decodable commands: the log stores bytes; only replay decodes.
            let values: Vec<Vec<u8>> = (0..BATCH_COMMANDS_MAX)
                .map(|i| vec![i as u8; value_bytes])
                .collect();
            let first = log.append_batch(&values, 0).await.expect("append");
            assert_eq!(first, 1);
            assert_eq!(log.next_index(), BATCH_COMMANDS_MAX as u64 + 1);
            let since = log.since_snapshot();
            assert_eq!(since.commands, BATCH_COMMANDS_MAX as u64);
            assert_eq!(
                since.command_bytes,
                (value_bytes * BATCH_COMMANDS_MAX) as u64
            );
        });
        drop(dir);
    }

    fn since(commands: u64, command_bytes: u64, snapshot_bytes: u64) -> SinceSnapshot {
        SinceSnapshot {
            commands,
            command_bytes,
            snapshot_bytes,
        }
    }

    /// The snapshot policy is by count *and* size: a snapshot is due after at least the
    /// configured number of commands, and only once the commands since the last snapshot are
    /// at least half its size, so a large state is not snapshotted every few hundred commands.
    #[test]
    fn a_snapshot_is_due_by_count_and_by_size() {
        // No snapshot yet: the count alone decides.
        assert!(!since(255, 1 << 20, 0).due(256));
        assert!(since(256, 256 * 80, 0).due(256));
        // A small state: the count decides, as before.
        assert!(since(256, 256 * 80, 4_000).due(256));
        // A state of 100,000 streams (~15 MB): 256 creates (~20 KB) are not enough…
        let large = 15_000_000;
        assert!(!since(256, 256 * 80, large).due(256));
        assert!(!since(90_000, large / 2 - 1, large).due(256));
        // …half the snapshot's size in commands is.
        assert!(since(93_750, large / 2, large).due(256));
        // Size alone is not enough either.
        assert!(!since(255, large, large).due(256));
        // No overflow on absurd counters.
        assert!(since(u64::MAX, u64::MAX, u64::MAX).due(1));
    }
}
