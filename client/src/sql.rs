//! SQL through the server (`docs/sql.md`): [`Client::execute`] runs statements and returns
//! what they did and the table they showed; [`Client::sql`] also starts push queries
//! (`SELECT … EMIT CHANGES`), whose rows a [`PushQuery`] yields as they come until it is
//! dropped or cancelled, which ends the query on the server (nothing is left behind).
//!
//! SQL runs on core 0 of the node the client reached. A failing statement is
//! [`ClientError::Server`] with code [`ErrorCode::SqlError`] and the engine's message, which
//! names the position (`syntax error at 1:8: …`).

use std::collections::VecDeque;

use runnel_net::protocol::{
    ErrorCode, ExecuteSql, FrameReader, Request, Response, ShardOwner, SqlChange,
};
use serde_json::Value;

use crate::admin::unexpected;
use crate::retry::Safety;
use crate::{Client, ClientError};

/// What statements did, and the table they showed (pull query, SHOW, EXPLAIN).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SqlOutcome {
    /// What happened, in words.
    pub message: String,
    /// Column names (empty when no table was shown).
    pub columns: Vec<String>,
    /// Rows, values in column order.
    pub rows: Vec<Vec<Value>>,
}

/// A row of a push query.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlRow {
    /// The row no longer holds (a group's row retracted); else it is new, replacing its
    /// group's previous row.
    pub retract: bool,
    /// The row as JSON text: an object, its columns in SELECT order.
    pub json: String,
}

impl SqlRow {
    /// The row's value (a JSON object).
    pub fn value(&self) -> Value {
        serde_json::from_str(&self.json).unwrap_or(Value::Null)
    }
}

/// The answer to [`Client::sql`].
#[derive(Debug)]
pub enum SqlAnswer {
    /// The statements ran.
    Done(SqlOutcome),
    /// A push query runs: read its rows.
    Push(PushQuery),
}

/// A running push query: its rows as they come. Dropping it (or [`PushQuery::cancel`]) ends
/// the query on the server.
#[derive(Debug)]
pub struct PushQuery {
    /// The query's id on the server.
    pub id: u64,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    frames: FrameReader,
    pending: VecDeque<SqlChange>,
}

impl PushQuery {
    /// The next row; waits for it. `None` when the server ended the query (the node stops).
    pub async fn next(&mut self) -> Result<Option<SqlRow>, ClientError> {
        loop {
            if let Some(change) = self.pending.pop_front() {
                return Ok(Some(SqlRow {
                    retract: change.retract,
                    json: change.row,
                }));
            }
            match self.frames.read_response(&mut self.recv).await {
                Ok(Some((Response::SqlChanges(changes), _))) => {
                    self.pending.extend(changes.changes);
                }
                Ok(Some((Response::Error(error), _))) => {
                    return Err(ClientError::server("ExecuteSql", error))
                }
                Ok(Some((other, _))) => return Err(unexpected("ExecuteSql", &other)),
                Ok(None) => return Ok(None),
                Err(error) => return Err(ClientError::protocol("ExecuteSql", error)),
            }
        }
    }

    /// Ends the query on the server.
    pub fn cancel(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.send.reset(quinn::VarInt::from_u32(0));
        let _ = self.recv.stop(quinn::VarInt::from_u32(0));
    }
}

impl Drop for PushQuery {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Client {
    /// Runs SQL statements (separated by `;`) and returns what they did. A push query is
    /// refused here (it would end at once): use [`Client::sql`].
    pub async fn execute(&self, sql: &str) -> Result<SqlOutcome, ClientError> {
        match self.sql(sql).await? {
            SqlAnswer::Done(outcome) => Ok(outcome),
            SqlAnswer::Push(query) => {
                query.cancel();
                Err(ClientError::InvalidArgument {
                    what: "statement",
                    reason: "a push query (EMIT CHANGES) streams rows: use Client::sql".into(),
                })
            }
        }
    }

    /// Runs SQL statements; a push query's rows then come through the [`PushQuery`]. Not
    /// retried once sent (a statement may have taken effect).
    pub async fn sql(&self, sql: &str) -> Result<SqlAnswer, ClientError> {
        let nodes = &self.inner.nodes;
        let target = ShardOwner {
            node: nodes.hello().node_id,
            core: 0,
        };
        let request = Request::ExecuteSql(ExecuteSql {
            sql: sql.to_string(),
        });
        let (send, mut recv) = nodes
            .open_stream(target, &request, &[], None)
            .await
            .map_err(|failure| failure.into_error("ExecuteSql", Safety::AtMostOnce, false))?;
        let mut frames = FrameReader::new(nodes.frame_limits());
        let result = match frames.read_response(&mut recv).await {
            Ok(Some((Response::SqlResult(result), _))) => result,
            Ok(Some((Response::Error(error), _))) => {
                return Err(ClientError::server("ExecuteSql", error))
            }
            Ok(Some((other, _))) => return Err(unexpected("ExecuteSql", &other)),
            Ok(None) => {
                return Err(ClientError::Server {
                    request: "ExecuteSql",
                    code: ErrorCode::Internal,
                    message: "the stream ended without an answer".into(),
                    owner: None,
                    retry_after_ms: None,
                    start_offset: None,
                    next_offset: None,
                })
            }
            Err(error) => return Err(ClientError::protocol("ExecuteSql", error)),
        };
        if result.push {
            return Ok(SqlAnswer::Push(PushQuery {
                id: result.query,
                send,
                recv,
                frames,
                pending: VecDeque::new(),
            }));
        }
        let rows = result
            .rows
            .iter()
            .map(|row| match serde_json::from_str::<Value>(row) {
                Ok(Value::Array(values)) => Ok(values),
                _ => Err(ClientError::InvalidArgument {
                    what: "SqlResult row",
                    reason: format!("not a JSON array: {row}"),
                }),
            })
            .collect::<Result<_, _>>()?;
        Ok(SqlAnswer::Done(SqlOutcome {
            message: result.message,
            columns: result.columns,
            rows,
        }))
    }
}
