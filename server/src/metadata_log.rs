//! Core 0's durable metadata: every accepted command is appended, fsynced, to a Runnel log of
//! its own (`<data_dir>/metadata`), one command per batch, the command's index being its
//! offset + 1. On start the log is replayed into a fresh state machine.
//!
//! Snapshots are not written yet: replay reads every command since the node was created,
//! which is small for metadata (a command per stream created or deleted).

use std::path::Path;

use runnel_core::{BatchBuilder, Epoch, Limits, Offset, Record};
use runnel_replicate::metadata::{decode_command, encode_command, Command, MetadataState};
use runnel_segment::log::ReadBound;
use runnel_segment::{DmaStorage, LogConfig, ShardLog};

use crate::error::FatalError;

/// The metadata command log.
pub struct MetadataLog {
    log: ShardLog<DmaStorage>,
}

fn metadata_log_config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 64 << 20,
        write_buffer_bytes: 1 << 20,
        index_interval_bytes: 64 << 10,
        limits: Limits {
            batch_bytes_max: 512 << 10,
            ..Limits::DEFAULT
        },
        ..LogConfig::default()
    }
}

impl MetadataLog {
    /// Opens the log and replays it; returns the log, the state and the replayed commands (to
    /// hand to the other cores).
    pub async fn open(
        data_dir: &Path,
    ) -> Result<(MetadataLog, MetadataState, Vec<(u64, Command)>), FatalError> {
        let dir = data_dir.join("metadata");
        let log = ShardLog::open(DmaStorage, &dir, metadata_log_config())
            .await
            .map_err(|e| FatalError::Metadata(format!("open {}: {e}", dir.display())))?;
        let mut state = MetadataState::new();
        let mut commands = Vec::new();
        let mut next = log.start_offset();
        loop {
            let chunk = log
                .read(next, 1 << 20, ReadBound::Durable)
                .await
                .map_err(|e| FatalError::Metadata(format!("read {}: {e}", dir.display())))?;
            if chunk.is_empty() {
                break;
            }
            for batch in chunk.batches() {
                let records = batch.records().map_err(|e| {
                    FatalError::Metadata(format!("metadata batch at {}: {e}", batch.base_offset()))
                })?;
                for (i, record) in records.enumerate() {
                    let index = batch.base_offset().0 + i as u64 + 1;
                    let command = decode_command(record.value()).map_err(|e| {
                        FatalError::Metadata(format!("metadata command {index}: {e}"))
                    })?;
                    // A command in the log was accepted when it was written; applying it
                    // again must give the same outcome, refusals included.
                    let _ = state.apply(index, &command);
                    commands.push((index, command));
                }
            }
            next = chunk.next_offset();
        }
        Ok((MetadataLog { log }, state, commands))
    }

    /// Appends `command` durably; returns its index.
    pub async fn append(&self, command: &Command, now_ms: i64) -> Result<u64, FatalError> {
        let mut builder = BatchBuilder::new();
        builder.push(Record::new(encode_command(command), now_ms));
        let batch = builder
            .finish(&metadata_log_config().limits)
            .map_err(|e| FatalError::Metadata(format!("encode command: {e}")))?;
        let appended = self
            .log
            .append_durable(&batch, Epoch(0))
            .await
            .map_err(|e| FatalError::Metadata(format!("append command: {e}")))?;
        Ok(appended.base_offset.0 + 1)
    }

    /// The index the next command gets.
    pub fn next_index(&self) -> u64 {
        let Offset(next) = self.log.next_offset();
        next + 1
    }

    /// Flushes and closes the log.
    pub async fn close(self) -> Result<(), FatalError> {
        self.log
            .close()
            .await
            .map_err(|e| FatalError::Metadata(format!("close: {e}")))
    }
}
