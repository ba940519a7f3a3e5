//! The SQL messages (request and response numbers 64–95, `docs/sql.md`): `ExecuteSql` runs
//! statements on the node's SQL service and is answered by a [`SqlResult`]; a push query's
//! result is followed by [`SqlChanges`] frames until the client stops the stream. Rows travel
//! as JSON text (a row of a table is a JSON array in column order, a change's row a JSON
//! object): records are schemaless JSON, so the protocol does not type their columns.

use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};

use super::{Request, Response};
use crate::protocol::error::ProtocolError;
use crate::protocol::generated as wire;

/// Runs the statements of `sql` (separated by `;`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecuteSql {
    /// The statement text.
    pub sql: String,
}

/// What the statements of an `ExecuteSql` did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SqlResult {
    /// What happened, in words ("created stream weather").
    pub message: String,
    /// Column names of the table shown, if any.
    pub columns: Vec<String>,
    /// Rows of the table shown: each a JSON array of values in column order.
    pub rows: Vec<String>,
    /// A push query started: [`SqlChanges`] frames follow.
    pub push: bool,
    /// The push query's id (when `push`).
    pub query: u64,
}

/// One change of a push query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlChange {
    /// The row no longer holds (else it is inserted, replacing its group's previous row).
    pub retract: bool,
    /// The row: a JSON object, its columns in SELECT order.
    pub row: String,
}

/// Changes of a push query, as they come.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SqlChanges {
    /// The changes, in order.
    pub changes: Vec<SqlChange>,
}

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

pub(crate) fn execute_sql(
    fbb: &mut FlatBufferBuilder<'_>,
    execute: &ExecuteSql,
) -> WIPOffset<UnionWIPOffset> {
    let sql = Some(fbb.create_string(&execute.sql));
    wire::ExecuteSql::create(fbb, &wire::ExecuteSqlArgs { sql }).as_union_value()
}

pub(crate) fn sql_result(
    fbb: &mut FlatBufferBuilder<'_>,
    result: &SqlResult,
) -> WIPOffset<UnionWIPOffset> {
    let message = Some(fbb.create_string(&result.message));
    let columns: Vec<_> = result
        .columns
        .iter()
        .map(|c| fbb.create_string(c))
        .collect();
    let columns = Some(fbb.create_vector(&columns));
    let rows: Vec<_> = result.rows.iter().map(|r| fbb.create_string(r)).collect();
    let rows = Some(fbb.create_vector(&rows));
    let args = wire::SqlResultArgs {
        message,
        columns,
        rows,
        push_: result.push,
        query: result.query,
    };
    wire::SqlResult::create(fbb, &args).as_union_value()
}

pub(crate) fn sql_changes(
    fbb: &mut FlatBufferBuilder<'_>,
    changes: &SqlChanges,
) -> WIPOffset<UnionWIPOffset> {
    let list: Vec<_> = changes
        .changes
        .iter()
        .map(|change| {
            let row = Some(fbb.create_string(&change.row));
            wire::SqlChange::create(
                fbb,
                &wire::SqlChangeArgs {
                    retract: change.retract,
                    row,
                },
            )
        })
        .collect();
    let changes = Some(fbb.create_vector(&list));
    wire::SqlChanges::create(fbb, &wire::SqlChangesArgs { changes }).as_union_value()
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

/// Decodes the SQL request in `root`; `None` when its body is another kind.
pub(crate) fn decode_request(root: &wire::Request<'_>) -> Option<Result<Request, ProtocolError>> {
    let absent = || ProtocolError::invalid("Request.body", "absent for its type");
    let decoded = match root.body_type() {
        wire::RequestBody::ExecuteSql => {
            root.body_as_execute_sql()
                .ok_or_else(absent)
                .map(|execute| {
                    Request::ExecuteSql(ExecuteSql {
                        sql: execute.sql().to_owned(),
                    })
                })
        }
        _ => return None,
    };
    Some(decoded)
}

/// Decodes the SQL response in `root`; `None` when its body is another kind.
pub(crate) fn decode_response(
    root: &wire::Response<'_>,
) -> Option<Result<Response, ProtocolError>> {
    let absent = || ProtocolError::invalid("Response.body", "absent for its type");
    let strings = |list: Option<flatbuffers::Vector<'_, flatbuffers::ForwardsUOffset<&str>>>| {
        list.into_iter()
            .flatten()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let decoded = match root.body_type() {
        wire::ResponseBody::SqlResult => root.body_as_sql_result().ok_or_else(absent).map(|r| {
            Response::SqlResult(SqlResult {
                message: r.message().to_owned(),
                columns: strings(r.columns()),
                rows: strings(r.rows()),
                push: r.push_(),
                query: r.query(),
            })
        }),
        wire::ResponseBody::SqlChanges => root.body_as_sql_changes().ok_or_else(absent).map(|c| {
            Response::SqlChanges(SqlChanges {
                changes: c
                    .changes()
                    .iter()
                    .map(|change| SqlChange {
                        retract: change.retract(),
                        row: change.row().to_owned(),
                    })
                    .collect(),
            })
        }),
        _ => return None,
    };
    Some(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every SQL message survives a round trip, empty lists and retractions included.
    #[test]
    fn sql_messages_round_trip() {
        let request = Request::ExecuteSql(ExecuteSql {
            sql: "SELECT * FROM hot;".into(),
        });
        assert_eq!(Request::decode(&request.encode()), Ok(request));
        for response in [
            Response::SqlResult(SqlResult {
                message: "1 row".into(),
                columns: vec!["city".into(), "n".into()],
                rows: vec![r#"["x",2]"#.into()],
                push: false,
                query: 0,
            }),
            Response::SqlResult(SqlResult {
                message: "push query 3".into(),
                push: true,
                query: 3,
                ..SqlResult::default()
            }),
            Response::SqlChanges(SqlChanges {
                changes: vec![
                    SqlChange {
                        retract: false,
                        row: r#"{"a":1}"#.into(),
                    },
                    SqlChange {
                        retract: true,
                        row: r#"{"a":1}"#.into(),
                    },
                ],
            }),
            Response::SqlChanges(SqlChanges::default()),
        ] {
            assert_eq!(Response::decode(&response.encode()), Ok(response));
        }
    }
}
