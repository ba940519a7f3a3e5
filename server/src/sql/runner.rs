//! The runner of a node's persistent queries, views and push queries, on core 0: in rounds, it
//! reads the committed records of every source shard on this node from the lowest offset a
//! running query still needs (the engine ignores, per query, offsets it has consumed, so
//! queries created later replay their sources from the start while others skip ahead), feeds
//! them to the engine, appends the outputs of `CREATE STREAM … AS` / `INSERT … SELECT` through
//! the append service, hands push queries' rows to their clients, and checkpoints the engine.
//!
//! Outputs are appended before the checkpoint that covers their inputs: after a crash between
//! the two, the replay appends them again (at-least-once output streams; views are exact,
//! since a view's rows live in the checkpoint with the offsets they reflect).

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use runnel_core::{ShardId, StreamName};
use runnel_query::{Engine, Record, Sink};
use runnel_segment::runtime::{first_of, sleep, spawn_blocking, First};
use serde_json::Value;

use super::checkpoint::{self, CheckpointError};
use super::services::{ReadRecords, ReadRequest};
use super::SqlNode;
use crate::core::Core;

/// Most bytes of batches read from one shard in one round.
const ROUND_BYTES_PER_SHARD_MAX: usize = 256 * 1024;
/// How long an idle runner waits before it looks for new records again (a statement that
/// starts a query wakes it at once).
const IDLE_POLL_MS: u64 = 20;
/// Least time between two checkpoints while records flow.
const CHECKPOINT_INTERVAL_MS: u64 = 200;

/// Core 0: loads the SQL checkpoint, serves SQL, and runs queries until the node stops.
pub async fn run(core: Rc<Core>) {
    let path = checkpoint::path(&core.config.data_dir);
    let loaded = {
        let path = path.clone();
        spawn_blocking(move || checkpoint::load(&path)).await
    };
    let engine = match loaded {
        Ok(None) => Engine::new(),
        Ok(Some(snapshot)) => match Engine::restore(snapshot) {
            Ok(engine) => engine,
            Err(error) => return unavailable(&core, format!("{}: {error}", path.display())),
        },
        Err(error) => return unavailable(&core, error.to_string()),
    };
    let node = Rc::new(SqlNode::new(engine));
    *core.sql.borrow_mut() = Some(Rc::clone(&node));
    let mut last_checkpoint = Instant::now();
    let mut dirty = false;
    loop {
        let consumed = match round(&core, &node).await {
            Ok(consumed) => consumed,
            Err(error) => {
                tracing::warn!(%error, "SQL runner round failed");
                0
            }
        };
        dirty |= consumed > 0;
        if dirty && last_checkpoint.elapsed() >= Duration::from_millis(CHECKPOINT_INTERVAL_MS) {
            let _turn = node.turn().await;
            match save(&core, &node).await {
                Ok(()) => {
                    dirty = false;
                    last_checkpoint = Instant::now();
                }
                Err(error) => tracing::warn!(%error, "SQL checkpoint failed"),
            }
        }
        if consumed > 0 {
            continue;
        }
        let changed = node.changed.listen();
        let idle = first_of(
            sleep(Duration::from_millis(IDLE_POLL_MS)),
            changed,
            core.until_stopping(),
        );
        if let First::C(()) = idle.await {
            break;
        }
    }
    if dirty {
        let _turn = node.turn().await;
        if let Err(error) = save(&core, &node).await {
            tracing::warn!(%error, "last SQL checkpoint failed");
        }
    }
}

fn unavailable(core: &Core, reason: String) {
    tracing::error!(%reason, "SQL is unavailable: its checkpoint cannot be restored");
    *core.sql_unavailable.borrow_mut() = Some(format!("SQL is unavailable: {reason}"));
}

/// Writes the engine's checkpoint (the caller holds the turn).
pub(crate) async fn save(core: &Core, node: &SqlNode) -> Result<(), CheckpointError> {
    let path = checkpoint::path(&core.config.data_dir);
    let bytes = serde_json::to_vec(&node.engine.borrow().snapshot()).map_err(|e| {
        CheckpointError::Damaged {
            path: path.clone(),
            reason: e.to_string(),
        }
    })?;
    spawn_blocking(move || checkpoint::store(&path, &bytes)).await
}

/// The shards of `stream` placed on this node, with their cores.
pub(crate) fn local_shards(core: &Core, stream: &str) -> Vec<(ShardId, u32)> {
    let Ok(name) = StreamName::new(stream) else {
        return Vec::new();
    };
    let state = core.metadata.borrow();
    let Some(record) = state.stream(&name) else {
        return Vec::new();
    };
    state
        .shards()
        .filter(|s| s.stream == record.id && s.placement.node == core.node_id())
        .map(|s| (s.id, s.placement.core))
        .collect()
}

/// One round: returns how many records were fed.
async fn round(core: &Rc<Core>, node: &SqlNode) -> Result<usize, String> {
    let _turn = node.turn().await;
    // The lowest offset any running query still needs, per source shard.
    let mut needed: BTreeMap<(String, ShardId), (u32, u64)> = BTreeMap::new();
    {
        let engine = node.engine.borrow();
        for (id, streams) in engine.feeds() {
            let offsets = engine.offsets(id);
            for stream in streams {
                for (shard, owner) in local_shards(core, &stream) {
                    let next = offsets
                        .and_then(|o| o.get(&stream))
                        .and_then(|shards| shards.get(&(shard.0 as u32)))
                        .map_or(0, |last| last + 1);
                    needed
                        .entry((stream.clone(), shard))
                        .and_modify(|(_, n)| *n = (*n).min(next))
                        .or_insert((owner, next));
                }
            }
        }
    }
    let mut consumed = 0;
    let mut appends: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for ((stream, shard), (owner, next)) in needed {
        let Ok(name) = StreamName::new(stream.as_str()) else {
            continue;
        };
        let records = core
            .call::<ReadRecords>(
                owner,
                ReadRequest {
                    stream: name,
                    shard,
                    from: next,
                    bytes_max: ROUND_BYTES_PER_SHARD_MAX,
                },
            )
            .await
            .map_err(|e| format!("reading {stream} shard {shard}: {e}"))?;
        for source in records {
            consumed += 1;
            let record = Record {
                event_time_ms: source.timestamp_ms,
                offset: source.offset,
                value: serde_json::from_slice(&source.value).unwrap_or(Value::Null),
            };
            let outputs = node
                .engine
                .borrow_mut()
                .push(&stream, shard.0 as u32, &record);
            let mut to_clients: BTreeMap<u64, Vec<runnel_query::Change>> = BTreeMap::new();
            for output in outputs {
                match output.sink {
                    Sink::Client => to_clients
                        .entry(output.query)
                        .or_default()
                        .push(output.change),
                    Sink::Stream(target) => appends
                        .entry(target)
                        .or_default()
                        .push(output.change.to_record()),
                    Sink::View(_) => {}
                }
            }
            for (id, changes) in to_clients {
                node.deliver(id, changes);
            }
        }
    }
    for (stream, values) in appends {
        super::append_values(core, node, &stream, &values)
            .await
            .map_err(|e| format!("appending to {stream}: {e}"))?;
    }
    Ok(consumed)
}
