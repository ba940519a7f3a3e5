//! SQL inside the server (ARCHITECTURE §7, `docs/sql.md`): the node's SQL service on core 0.
//!
//! `runnel_query::Engine` decides; this module does its I/O. A statement (`ExecuteSql`) runs
//! in the engine, and its effects are carried out here: `CREATE STREAM` / `DROP STREAM` become
//! metadata commands, `INSERT … VALUES` a batch appended through the append service, a push
//! query a stream of `SqlChanges` frames until the client stops it (`serve`). Persistent
//! queries and views run in the engine, fed by the runner (`runner.rs`) from the committed
//! records of their source shards on this node; their outputs are appended through the append
//! service; the engine's state with its source offsets is checkpointed to a file
//! (`checkpoint.rs`), so that after a crash the runner replays from those offsets and views end
//! exact.
//!
//! Invariants: statements and runner rounds take turns (`SqlNode::turn`), so a statement never
//! sees half a round and a checkpoint is one consistent state. Must never: block core 0 on a
//! client (a push query whose client falls `PUSH_BATCHES_MAX` batches behind is ended).
//! Fault model: a statement may be wrong (a typed `SqlError` answer with its position); a
//! damaged checkpoint leaves SQL unavailable with the reason, never silently empty.

pub mod checkpoint;
mod runner;
pub mod services;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use runnel_core::{BatchBuilder, Record as CoreRecord, StreamName};
use runnel_net::protocol::{
    write_response, ErrorCode, ErrorResponse, ExecuteSql, FrameLimits, Response, ShardOwner,
    SqlChange, SqlChanges, SqlResult,
};
use runnel_query::{Change, ChangeKind, Effect, Engine, Sink, SqlError, Statement};
use runnel_replicate::metadata::{Command, Durability, StreamConfig};
use runnel_segment::runtime::channel::{local, LocalReceiver, LocalSender};
use runnel_segment::runtime::{first_of, Event, First};
use serde_json::Value;

use crate::core::{now_ms, Core};

pub use runner::run;

/// Most batches of changes queued for one push query's client; past it the query ends.
pub const PUSH_BATCHES_MAX: usize = 1024;
/// Retention of a stream created by SQL without `DURATION`: 7 days, as `runnel stream create`.
const RETENTION_MS_DEFAULT: u64 = 7 * 24 * 3600 * 1000;

/// The SQL service of a node, on core 0.
pub struct SqlNode {
    engine: RefCell<Engine>,
    /// Push queries' clients, by query id.
    push: RefCell<HashMap<u64, LocalSender<Vec<Change>>>>,
    /// Held by a statement or a runner round.
    busy: Cell<bool>,
    turn_released: Event,
    /// A statement changed what the runner feeds.
    pub(crate) changed: Event,
    next_shard: Cell<usize>,
}

/// The turn of a statement or a runner round; released when dropped.
pub(crate) struct Turn<'a>(&'a SqlNode);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.0.busy.set(false);
        self.0.turn_released.notify();
    }
}

/// What a statement did: its answer, and the receiving end of a push query's changes.
pub struct Executed {
    /// The answer.
    pub result: SqlResult,
    /// A push query's id and changes.
    pub push: Option<(u64, LocalReceiver<Vec<Change>>)>,
}

impl SqlNode {
    fn new(engine: Engine) -> SqlNode {
        SqlNode {
            engine: RefCell::new(engine),
            push: RefCell::new(HashMap::new()),
            busy: Cell::new(false),
            turn_released: Event::default(),
            changed: Event::default(),
            next_shard: Cell::new(0),
        }
    }

    pub(crate) async fn turn(&self) -> Turn<'_> {
        loop {
            let released = self.turn_released.listen();
            if !self.busy.get() {
                self.busy.set(true);
                return Turn(self);
            }
            released.await;
        }
    }

    /// Ends a push query: its client went away. Nothing of it is left.
    pub fn cancel(&self, id: u64) {
        self.push.borrow_mut().remove(&id);
        self.engine.borrow_mut().cancel(id);
    }

    /// Hands changes to push query `id`'s client; ends the query when the client is gone or
    /// too far behind.
    fn deliver(&self, id: u64, changes: Vec<Change>) {
        let sent = match self.push.borrow().get(&id) {
            Some(sender) => sender.try_send(changes).is_ok(),
            None => false,
        };
        if !sent {
            self.cancel(id);
        }
    }
}

/// The wire error of an engine error: code `SqlError`, the engine's message and position.
pub fn sql_error(error: &SqlError) -> ErrorResponse {
    let position = match error {
        SqlError::Syntax { position, .. }
        | SqlError::UnknownStream { position, .. }
        | SqlError::UnknownColumn { position, .. }
        | SqlError::Unsupported { position, .. } => Some(*position),
        _ => None,
    };
    let mut response = ErrorResponse::new(ErrorCode::SqlError, error.to_string());
    response.sql_position = position.filter(|p| p.line > 0).map(|p| (p.line, p.column));
    response
}

/// Serves an `ExecuteSql` request stream: the answer, then a push query's changes until the
/// client stops the stream (or the node stops).
pub async fn serve(
    core: &Rc<Core>,
    execute: ExecuteSql,
    send: &mut quinn::SendStream,
    limits: &FrameLimits,
) {
    let sql = core.sql.borrow().clone();
    let answer = match sql {
        _ if core.index != 0 => {
            let mut refusal =
                ErrorResponse::new(ErrorCode::NotOwner, "SQL is served by core 0 of the node");
            refusal.owner = Some(ShardOwner {
                node: core.config.node_id,
                core: 0,
            });
            Err(refusal)
        }
        None => Err(ErrorResponse::new(
            ErrorCode::Unavailable,
            core.sql_unavailable
                .borrow()
                .clone()
                .unwrap_or_else(|| "the SQL service is starting".to_string()),
        )),
        Some(node) => execute_sql(core, &node, &execute.sql)
            .await
            .map(|executed| (node, executed)),
    };
    let (node, executed) = match answer {
        Ok(answer) => answer,
        Err(error) => {
            let _ = write_response(send, &Response::Error(error), &[], limits).await;
            return;
        }
    };
    if write_response(send, &Response::SqlResult(executed.result), &[], limits)
        .await
        .is_err()
    {
        if let Some((id, _)) = executed.push {
            node.cancel(id);
        }
        return;
    }
    let Some((id, changes)) = executed.push else {
        return;
    };
    // Until the query's channel closes, the client stops the stream, or the node stops.
    while let First::A(Some(batch)) =
        first_of(changes.recv(), send.stopped(), core.until_stopping()).await
    {
        let frame = Response::SqlChanges(SqlChanges {
            changes: batch.iter().map(wire_change).collect(),
        });
        if write_response(send, &frame, &[], limits).await.is_err() {
            break;
        }
    }
    node.cancel(id);
}

fn wire_change(change: &Change) -> SqlChange {
    SqlChange {
        retract: change.kind == ChangeKind::Retract,
        row: change.row.to_json().to_string(),
    }
}

/// Runs the statements of `sql` and carries out their effects (the caller's turn).
pub async fn execute_sql(
    core: &Rc<Core>,
    node: &SqlNode,
    sql: &str,
) -> Result<Executed, ErrorResponse> {
    let _turn = node.turn().await;
    sync_streams(core, node);
    let statements = runnel_query::parse(sql).map_err(|e| sql_error(&e))?;
    let creates: Vec<_> = statements
        .iter()
        .filter_map(|s| match s {
            Statement::CreateStream { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect();
    let effects = node
        .engine
        .borrow_mut()
        .execute(sql)
        .map_err(|e| sql_error(&e))?;
    // The queries that write streams this run creates: ended if the create is refused.
    let writers: Vec<(u64, String)> = effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::QueryStarted {
                id,
                sink: Sink::Stream(name),
            } => Some((*id, name.clone())),
            _ => None,
        })
        .collect();
    let mut result = SqlResult::default();
    let mut messages = Vec::new();
    let mut push = None;
    let mut changed = false;
    for effect in effects {
        match effect {
            Effect::CreateStream { name, options } => {
                if let Err(error) = create_stream(core, &name, &options).await {
                    // The metadata refused: the engine forgets the stream and its query.
                    let mut engine = node.engine.borrow_mut();
                    for (id, _) in writers.iter().filter(|(_, target)| *target == name) {
                        let _ = engine.execute(&format!("TERMINATE QUERY {id}"));
                    }
                    let _ = engine.execute(&format!("DROP STREAM IF EXISTS \"{name}\""));
                    return Err(error);
                }
                messages.push(format!("created stream {name}"));
                changed = true;
            }
            Effect::DropStream(name) => {
                let stream = stream_name(&name)?;
                core.propose(Command::DeleteStream {
                    name: stream,
                    force: false,
                })
                .await?;
                messages.push(format!("dropped stream {name}"));
                changed = true;
            }
            Effect::Append { stream, records } => {
                let count = records.len();
                append_values(core, node, &stream, &records).await?;
                messages.push(format!("inserted {count} record(s) into {stream}"));
            }
            Effect::QueryStarted {
                id,
                sink: Sink::Client,
            } => {
                let (sender, receiver) = local(PUSH_BATCHES_MAX);
                start_at_tail(core, node, id).await;
                node.push.borrow_mut().insert(id, sender);
                result.push = true;
                result.query = id;
                push = Some((id, receiver));
                messages.push(format!(
                    "push query {id}: rows follow (+ insert, - retract)"
                ));
            }
            Effect::QueryStarted { id, sink } => {
                let target = match sink {
                    Sink::View(name) => format!("view {name}"),
                    Sink::Stream(name) => format!("stream {name}"),
                    Sink::Client => "the client".to_string(),
                };
                messages.push(format!("started query {id} writing {target}"));
                changed = true;
            }
            Effect::QueryTerminated(id) => {
                messages.push(format!("terminated query {id}"));
                changed = true;
            }
            Effect::QueryPaused(id) => {
                messages.push(format!("paused query {id}"));
                changed = true;
            }
            Effect::QueryResumed(id) => {
                messages.push(format!("resumed query {id}"));
                changed = true;
            }
            Effect::ViewDropped { name, .. } => {
                messages.push(format!("dropped view {name}"));
                changed = true;
            }
            Effect::Rows { columns, rows } => {
                messages.push(format!("{} row(s)", rows.len()));
                result.columns = columns;
                result.rows = rows
                    .into_iter()
                    .map(|row| Value::Array(row).to_string())
                    .collect();
            }
            Effect::Nothing => messages.push("nothing to do".to_string()),
        }
    }
    if changed || !creates.is_empty() {
        runner::save(core, node)
            .await
            .map_err(|error| ErrorResponse::new(ErrorCode::StorageFault, error.to_string()))?;
        node.changed.notify();
    }
    result.message = messages.join("; ");
    Ok(Executed { result, push })
}

fn stream_name(name: &str) -> Result<StreamName, ErrorResponse> {
    StreamName::new(name).map_err(|e| {
        ErrorResponse::new(
            ErrorCode::InvalidRequest,
            format!("`{name}` is not a stream name: {e}"),
        )
    })
}

/// Makes the engine know the streams of the metadata (created with `runnel stream create`) and
/// forget those deleted outside SQL.
fn sync_streams(core: &Core, node: &SqlNode) {
    let known: Vec<String> = core
        .metadata
        .borrow()
        .streams()
        .map(|s| s.config.name.as_str().to_string())
        .collect();
    let mut engine = node.engine.borrow_mut();
    let listed = match engine.execute("SHOW STREAMS") {
        Ok(effects) => effects,
        Err(_) => return,
    };
    let mut in_engine = Vec::new();
    for effect in listed {
        if let Effect::Rows { rows, .. } = effect {
            in_engine.extend(
                rows.iter()
                    .filter_map(|r| r.first().and_then(Value::as_str).map(str::to_string)),
            );
        }
    }
    for name in known.iter().filter(|n| !in_engine.contains(n)) {
        let _ = engine.execute(&format!("CREATE STREAM \"{name}\""));
    }
    for name in in_engine.iter().filter(|n| !known.contains(n)) {
        let _ = engine.execute(&format!("DROP STREAM IF EXISTS \"{name}\""));
    }
}

async fn create_stream(
    core: &Rc<Core>,
    name: &str,
    options: &runnel_query::parse::StreamOptions,
) -> Result<(), ErrorResponse> {
    let config = StreamConfig {
        name: stream_name(name)?,
        shard_count: options.shards.unwrap_or(1),
        replication_factor: u8::try_from(options.replicate.unwrap_or(1)).unwrap_or(u8::MAX),
        retention_ms: options
            .duration_ms
            .and_then(|ms| u64::try_from(ms).ok())
            .unwrap_or(RETENTION_MS_DEFAULT),
        durability: Durability::Fsync,
    };
    core.propose(Command::CreateStream {
        config,
        now_ms: now_ms().max(0) as u64,
        avoid: Vec::new(),
    })
    .await
}

/// The stream's event-time column, if it names one.
fn timestamp_column(node: &SqlNode, stream: &str) -> Option<String> {
    let effects = node.engine.borrow_mut().execute("SHOW STREAMS").ok()?;
    effects.into_iter().find_map(|effect| match effect {
        Effect::Rows { rows, .. } => rows.into_iter().find_map(|row| {
            (row.first().and_then(Value::as_str) == Some(stream))
                .then(|| row.get(1).and_then(Value::as_str).map(str::to_string))
                .flatten()
        }),
        _ => None,
    })
}

/// Appends JSON objects to `stream` as one batch, on an open shard of this node (round robin),
/// through the append service of the shard's core. A record's timestamp is now, or the
/// stream's time column when the value holds one (milliseconds).
pub(crate) async fn append_values(
    core: &Rc<Core>,
    node: &SqlNode,
    stream: &str,
    values: &[Value],
) -> Result<(), ErrorResponse> {
    if values.is_empty() {
        return Ok(());
    }
    let name = stream_name(stream)?;
    let column = timestamp_column(node, stream);
    let now = now_ms();
    let mut builder = BatchBuilder::new();
    for value in values {
        let timestamp = column
            .as_deref()
            .and_then(|c| value.get(c))
            .and_then(Value::as_i64)
            .unwrap_or(now);
        builder.push(CoreRecord::at(value.to_string().into_bytes(), timestamp));
    }
    let batch = builder
        .finish(&core.config.limits())
        .map_err(|e| ErrorResponse::new(ErrorCode::BatchTooLarge, e.to_string()))?;
    let (shard, owner) = {
        let state = core.metadata.borrow();
        let record = state.stream(&name).ok_or_else(|| {
            ErrorResponse::new(
                ErrorCode::UnknownStream,
                format!("stream {stream} does not exist"),
            )
        })?;
        let open: Vec<_> = state
            .shards()
            .filter(|s| s.stream == record.id && s.is_open())
            .filter(|s| s.placement.node == core.node_id())
            .map(|s| (s.id, s.placement.core))
            .collect();
        if open.is_empty() {
            return Err(ErrorResponse::new(
                ErrorCode::Unavailable,
                format!("stream {stream} has no open shard on this node (SQL writes the shards of its own node)"),
            ));
        }
        let pick = node.next_shard.get() % open.len();
        node.next_shard.set(pick + 1);
        open[pick]
    };
    core.call::<services::AppendRecords>(
        owner,
        services::AppendBatch {
            stream: name,
            shard,
            batch: batch.to_vec(),
        },
    )
    .await
    .map_err(|e| ErrorResponse::new(ErrorCode::Internal, format!("append to {stream}: {e}")))
}

/// A push query reads from its sources' tails: it consumes nothing appended before it started.
async fn start_at_tail(core: &Rc<Core>, node: &SqlNode, id: u64) {
    let streams = node
        .engine
        .borrow()
        .feeds()
        .into_iter()
        .find(|(query, _)| *query == id)
        .map(|(_, streams)| streams)
        .unwrap_or_default();
    for stream in streams {
        for (shard, owner) in runner::local_shards(core, &stream) {
            let offsets = core
                .call::<crate::convert::ShardOffsets>(owner, vec![shard])
                .await
                .unwrap_or_default();
            if let Some((_, _, next)) = offsets.first() {
                node.engine
                    .borrow_mut()
                    .start_at(id, &stream, shard.0 as u32, next.0);
            }
        }
    }
}
