//! The SQL feature's services on the core mesh: the SQL core reads the committed records of a
//! query's source shards, and appends results and inserted rows, on the cores that own those
//! shards (ARCHITECTURE §3: a shard's log lives on one core; append is a service). Calls stay
//! inside the node: SQL reads and writes the shards placed on its own node (docs/sql.md,
//! "Limits").

use std::rc::Rc;

use runnel_core::{Offset, ShardId, StreamName};
use runnel_segment::log::ReadBound;

use crate::core::Core;
use crate::local::visible_end;
use crate::mesh::{MeshError, Service};
use crate::ownership::OwnedShard;

/// `sql.read`, to a shard's owner: committed records of the shard from an offset.
pub struct ReadRecords;

/// The request of [`ReadRecords`].
#[derive(Debug, Clone)]
pub struct ReadRequest {
    /// The stream.
    pub stream: StreamName,
    /// The shard, owned by the called core.
    pub shard: ShardId,
    /// The first offset wanted (a trimmed start is skipped to the shard's first offset).
    pub from: u64,
    /// About this many bytes of batches at most (whole batches; at least one).
    pub bytes_max: usize,
}

/// One committed record of a source shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRecord {
    /// Its offset.
    pub offset: u64,
    /// Its timestamp, ms since the Unix epoch.
    pub timestamp_ms: i64,
    /// Its value (a JSON object for SQL).
    pub value: Vec<u8>,
}

impl Service for ReadRecords {
    const NAME: &'static str = "sql.read";
    type Request = ReadRequest;
    type Response = Vec<SourceRecord>;
}

/// `sql.append`, to a shard's owner: append one batch built by the SQL core.
pub struct AppendRecords;

/// The request of [`AppendRecords`].
#[derive(Debug, Clone)]
pub struct AppendBatch {
    /// The stream.
    pub stream: StreamName,
    /// The shard, owned by the called core.
    pub shard: ShardId,
    /// One batch (`BatchBuilder::finish`).
    pub batch: Vec<u8>,
}

impl Service for AppendRecords {
    const NAME: &'static str = "sql.append";
    type Request = AppendBatch;
    type Response = ();
}

/// Registers the SQL services on `core`.
pub fn register(core: &Core) {
    core.mesh
        .register::<ReadRecords, _, _>(|core, request| async move { read(&core, request).await });
    core.mesh
        .register::<AppendRecords, _, _>(|core, request| async move {
            core.append_batch(&request.stream, request.shard, &request.batch)
                .await
                .map(|_| ())
                .map_err(|error| MeshError::failed(error.to_string()))
        });
}

async fn read(core: &Rc<Core>, request: ReadRequest) -> Result<Vec<SourceRecord>, MeshError> {
    let OwnedShard { log, shard } = core
        .owned_log(&request.stream, request.shard)
        .await
        .map_err(|e| MeshError::failed(e.to_string()))?;
    let visible = visible_end(&log, crate::core::visible(shard.durability));
    let from = Offset(request.from.max(log.start_offset().0));
    if from >= visible {
        return Ok(Vec::new());
    }
    let chunk = log
        .read(from, request.bytes_max, ReadBound::Below(visible))
        .await
        .map_err(|e| MeshError::failed(e.to_string()))?;
    let mut records = Vec::new();
    for batch in chunk.batches() {
        let base = batch.base_offset().0;
        for (index, record) in batch
            .records()
            .map_err(|e| MeshError::failed(e.to_string()))?
            .enumerate()
        {
            let offset = base + index as u64;
            if offset < from.0 || offset >= visible.0 {
                continue;
            }
            records.push(SourceRecord {
                offset,
                timestamp_ms: record.timestamp_ms(),
                value: record.value().to_vec(),
            });
        }
    }
    Ok(records)
}
