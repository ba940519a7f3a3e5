//! The engine the server drives: statements in, effects and rows out, records in, changes out,
//! and the whole state as a serde snapshot for checkpoints. No I/O: appends are effects the
//! caller performs, and the records it commits come back through [`Engine::push`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Position, SqlError};
use crate::expr::Context;
use crate::operator::{project, ContinuousQuery, Limits, QueryState};
use crate::parse::{self, ObjectKind, QueryControl, Select, Statement, StreamOptions};
use crate::plan::{self, Catalog, Plan, SourceInfo};
use crate::value::{total_order, truth, Change, ChangeKind, Record, Row};

/// Where a query's changes go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Sink {
    /// Appended to a stream (CREATE STREAM AS, INSERT SELECT): the caller appends
    /// [`Change::to_record`] (a retraction carries `"_retract": true`).
    Stream(String),
    /// Kept in a materialized view inside the engine.
    View(String),
    /// Streamed to the client that ran the push query.
    Client,
}

/// What a statement did, for the caller to carry out or show.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// A stream to create.
    CreateStream {
        /// Name.
        name: String,
        /// WITH options.
        options: StreamOptions,
    },
    /// A stream to delete.
    DropStream(String),
    /// Records to append (INSERT VALUES): JSON objects.
    Append {
        /// The stream.
        stream: String,
        /// The records.
        records: Vec<Value>,
    },
    /// A query started; feed it its sources from their first (or checkpointed) offsets.
    QueryStarted {
        /// Its id.
        id: u64,
        /// Where its changes go.
        sink: Sink,
    },
    /// A query stopped for good.
    QueryTerminated(u64),
    /// A query paused: stop feeding it (its offsets stay).
    QueryPaused(u64),
    /// A query resumed: feed it again from [`Engine::offsets`].
    QueryResumed(u64),
    /// A view dropped, with the query that kept it (stop feeding that query too).
    ViewDropped {
        /// The view.
        name: String,
        /// Its query, terminated with it.
        query: u64,
    },
    /// A table to show (pull query, SHOW, EXPLAIN).
    Rows {
        /// Column names.
        columns: Vec<String>,
        /// Rows.
        rows: Vec<Vec<Value>>,
    },
    /// Nothing happened (DROP ... IF EXISTS of something absent).
    Nothing,
}

/// A change of one query, with where it goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// The query.
    pub query: u64,
    /// Its sink.
    pub sink: Sink,
    /// The change.
    pub change: Change,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StreamEntry {
    options: StreamOptions,
    columns: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ViewTable {
    columns: Option<Vec<String>>,
    /// Keyed rows (aggregates), with the sequence of their first insert for a stable order.
    keyed: BTreeMap<String, (u64, Row)>,
    /// Appended rows (plain queries).
    appended: Vec<Row>,
    sequence: u64,
}

impl ViewTable {
    fn apply(&mut self, change: &Change) {
        match (&change.key, change.kind) {
            (Some(key), ChangeKind::Insert) => {
                let sequence = self
                    .keyed
                    .get(key)
                    .map(|(s, _)| *s)
                    .unwrap_or(self.sequence);
                self.sequence += 1;
                self.keyed
                    .insert(key.clone(), (sequence, change.row.clone()));
            }
            (Some(key), ChangeKind::Retract) => {
                self.keyed.remove(key);
            }
            (None, ChangeKind::Insert) => self.appended.push(change.row.clone()),
            (None, ChangeKind::Retract) => {
                if let Some(i) = self.appended.iter().position(|r| *r == change.row) {
                    self.appended.remove(i);
                }
            }
        }
    }

    fn rows(&self) -> Vec<Row> {
        let mut keyed: Vec<&(u64, Row)> = self.keyed.values().collect();
        keyed.sort_by_key(|(s, _)| *s);
        keyed
            .into_iter()
            .map(|(_, r)| r.clone())
            .chain(self.appended.iter().cloned())
            .collect()
    }
}

struct QueryEntry {
    sql: String,
    sink: Sink,
    paused: bool,
    query: ContinuousQuery,
}

/// The SQL engine: a catalog of streams, views and persistent queries, and their state.
#[derive(Default)]
pub struct Engine {
    streams: BTreeMap<String, StreamEntry>,
    views: BTreeMap<String, (u64, ViewTable)>,
    queries: BTreeMap<u64, QueryEntry>,
    next_query_id: u64,
    limits: Limits,
}

/// A checkpoint of the whole engine: catalog, query states (with their source offsets), views.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    streams: BTreeMap<String, StreamEntry>,
    views: BTreeMap<String, (u64, ViewTable)>,
    queries: Vec<QuerySnapshot>,
    next_query_id: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct QuerySnapshot {
    id: u64,
    sql: String,
    sink: Sink,
    paused: bool,
    state: QueryState,
}

impl Catalog for Engine {
    fn source(&self, name: &str) -> Option<SourceInfo> {
        if let Some(s) = self.streams.get(name) {
            return Some(SourceInfo {
                timestamp_column: s.options.timestamp_column.clone(),
                grace_ms: s.options.grace_ms,
                columns: s.columns.clone(),
                is_view: false,
            });
        }
        self.views.get(name).map(|(_, v)| SourceInfo {
            columns: v.columns.clone(),
            is_view: true,
            ..SourceInfo::default()
        })
    }
}

impl Engine {
    /// An empty engine.
    pub fn new() -> Self {
        Engine::default()
    }

    /// Sets the bounds of every query's state, now and for queries started later.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
        for entry in self.queries.values_mut() {
            entry.query.set_limits(limits);
        }
    }

    /// Runs the statements in `sql` (separated by `;`); one list of effects per statement. The
    /// first failing statement stops the run (earlier ones have taken effect).
    pub fn execute(&mut self, sql: &str) -> Result<Vec<Effect>, SqlError> {
        let mut effects = Vec::new();
        for (statement, text) in parse::parse_with_text(sql)? {
            effects.extend(self.run(statement, &text)?);
        }
        Ok(effects)
    }

    fn run(&mut self, statement: Statement, sql: &str) -> Result<Vec<Effect>, SqlError> {
        Ok(match statement {
            Statement::CreateStream {
                name,
                options,
                select,
            } => {
                if self.source(&name).is_some() {
                    return Err(SqlError::AlreadyExists {
                        kind: "stream",
                        name,
                    });
                }
                let mut effects = Vec::new();
                let mut columns = None;
                let mut started = None;
                if let Some(select) = select {
                    let plan = self.plan_persistent(&select)?;
                    columns = plan.columns();
                    started = Some(self.start(sql, plan, Sink::Stream(name.clone())));
                }
                self.streams.insert(
                    name.clone(),
                    StreamEntry {
                        options: options.clone(),
                        columns,
                    },
                );
                effects.push(Effect::CreateStream {
                    name: name.clone(),
                    options,
                });
                if let Some(id) = started {
                    effects.push(Effect::QueryStarted {
                        id,
                        sink: Sink::Stream(name),
                    });
                }
                effects
            }
            Statement::CreateView { name, select } => {
                if self.source(&name).is_some() {
                    return Err(SqlError::AlreadyExists { kind: "view", name });
                }
                let plan = self.plan_persistent(&select)?;
                let table = ViewTable {
                    columns: plan.columns(),
                    ..ViewTable::default()
                };
                let id = self.start(sql, plan, Sink::View(name.clone()));
                self.views.insert(name.clone(), (id, table));
                vec![Effect::QueryStarted {
                    id,
                    sink: Sink::View(name),
                }]
            }
            Statement::InsertValues {
                stream,
                position,
                rows,
            } => {
                self.writable(&stream, position)?;
                vec![Effect::Append {
                    stream,
                    records: rows,
                }]
            }
            Statement::InsertSelect {
                stream,
                position,
                select,
            } => {
                self.writable(&stream, position)?;
                let plan = self.plan_persistent(&select)?;
                let id = self.start(sql, plan, Sink::Stream(stream.clone()));
                vec![Effect::QueryStarted {
                    id,
                    sink: Sink::Stream(stream),
                }]
            }
            Statement::Select(select) => {
                if select.emit.is_some() {
                    let plan = self.plan_persistent(&select)?;
                    let id = self.start(sql, plan, Sink::Client);
                    vec![Effect::QueryStarted {
                        id,
                        sink: Sink::Client,
                    }]
                } else {
                    vec![self.pull(&select)?]
                }
            }
            Statement::Show(kind) => vec![self.show(kind)],
            Statement::Drop {
                kind,
                name,
                if_exists,
                position,
            } => vec![self.drop(kind, &name, if_exists, position)?],
            Statement::Control(control, id) => {
                let entry = self
                    .queries
                    .get_mut(&id)
                    .ok_or(SqlError::UnknownQuery(id))?;
                vec![match control {
                    QueryControl::Pause => {
                        entry.paused = true;
                        Effect::QueryPaused(id)
                    }
                    QueryControl::Resume => {
                        entry.paused = false;
                        Effect::QueryResumed(id)
                    }
                    QueryControl::Terminate => self.terminate(id),
                }]
            }
            Statement::Explain(inner) => {
                let select = match &*inner {
                    Statement::Select(s)
                    | Statement::CreateView { select: s, .. }
                    | Statement::InsertSelect { select: s, .. } => s,
                    Statement::CreateStream {
                        select: Some(s), ..
                    } => s,
                    _ => {
                        return Err(SqlError::unsupported(
                            Position::default(),
                            "EXPLAIN of a statement without SELECT",
                        ))
                    }
                };
                let plan = plan::plan(select, self)?;
                vec![Effect::Rows {
                    columns: vec!["plan".into()],
                    rows: vec![vec![Value::String(plan.explain())]],
                }]
            }
        })
    }

    fn writable(&self, stream: &str, position: Position) -> Result<(), SqlError> {
        if self.streams.contains_key(stream) {
            Ok(())
        } else {
            Err(SqlError::UnknownStream {
                name: stream.to_string(),
                position,
            })
        }
    }

    /// Plans the SELECT of a continuous query; its sources must be streams (views answer pulls).
    fn plan_persistent(&self, select: &Select) -> Result<Plan, SqlError> {
        let plan = plan::plan(select, self)?;
        for s in &plan.sources {
            if !self.streams.contains_key(&s.stream) {
                return Err(SqlError::unsupported(
                    select.position,
                    format!("`{}` is a view: continuous queries read streams", s.stream),
                ));
            }
        }
        Ok(plan)
    }

    fn start(&mut self, sql: &str, plan: Plan, sink: Sink) -> u64 {
        self.next_query_id += 1;
        let id = self.next_query_id;
        self.queries.insert(
            id,
            QueryEntry {
                sql: sql.trim().to_string(),
                sink,
                paused: false,
                query: {
                    let mut query = ContinuousQuery::new(plan);
                    query.set_limits(self.limits);
                    query
                },
            },
        );
        id
    }

    fn terminate(&mut self, id: u64) -> Effect {
        if let Some(entry) = self.queries.remove(&id) {
            if let Sink::View(name) = entry.sink {
                self.views.remove(&name);
            }
        }
        Effect::QueryTerminated(id)
    }

    fn drop(
        &mut self,
        kind: ObjectKind,
        name: &str,
        if_exists: bool,
        position: Position,
    ) -> Result<Effect, SqlError> {
        let absent = || {
            if if_exists {
                Ok(Effect::Nothing)
            } else {
                Err(SqlError::UnknownStream {
                    name: name.to_string(),
                    position,
                })
            }
        };
        match kind {
            ObjectKind::Stream => {
                if !self.streams.contains_key(name) {
                    return absent();
                }
                if let Some((id, _)) = self
                    .queries
                    .iter()
                    .find(|(_, q)| q.query.reads(name) || q.sink == Sink::Stream(name.to_string()))
                {
                    return Err(SqlError::InUse {
                        name: name.to_string(),
                        query: *id,
                    });
                }
                self.streams.remove(name);
                Ok(Effect::DropStream(name.to_string()))
            }
            ObjectKind::View => match self.views.get(name) {
                None => absent(),
                Some((id, _)) => {
                    let id = *id;
                    self.terminate(id);
                    Ok(Effect::ViewDropped {
                        name: name.to_string(),
                        query: id,
                    })
                }
            },
            ObjectKind::Query => {
                let id: u64 = name.trim_start_matches(['q', 'Q']).parse().unwrap_or(0);
                if !self.queries.contains_key(&id) {
                    return if if_exists {
                        Ok(Effect::Nothing)
                    } else {
                        Err(SqlError::UnknownQuery(id))
                    };
                }
                Ok(self.terminate(id))
            }
        }
    }

    fn show(&self, kind: ObjectKind) -> Effect {
        let (columns, rows): (Vec<&str>, Vec<Vec<Value>>) = match kind {
            ObjectKind::Stream => (
                vec!["name", "timestamp", "grace_ms"],
                self.streams
                    .iter()
                    .map(|(n, s)| {
                        vec![
                            Value::from(n.clone()),
                            s.options
                                .timestamp_column
                                .clone()
                                .map(Value::from)
                                .unwrap_or(Value::Null),
                            s.options.grace_ms.map(Value::from).unwrap_or(Value::Null),
                        ]
                    })
                    .collect(),
            ),
            ObjectKind::View => (
                vec!["name", "query"],
                self.views
                    .iter()
                    .map(|(n, (id, _))| vec![Value::from(n.clone()), Value::from(*id)])
                    .collect(),
            ),
            ObjectKind::Query => (
                vec!["id", "status", "sink", "sql"],
                self.queries
                    .iter()
                    .map(|(id, q)| {
                        let sink = match &q.sink {
                            Sink::Stream(s) => format!("stream {s}"),
                            Sink::View(v) => format!("view {v}"),
                            Sink::Client => "client".into(),
                        };
                        vec![
                            Value::from(*id),
                            Value::from(if q.paused { "paused" } else { "running" }),
                            Value::from(sink),
                            Value::from(q.sql.clone()),
                        ]
                    })
                    .collect(),
            ),
        };
        Effect::Rows {
            columns: columns.into_iter().map(String::from).collect(),
            rows,
        }
    }

    /// A pull query: SELECT over a view, with WHERE, ORDER BY, LIMIT.
    fn pull(&self, select: &Select) -> Result<Effect, SqlError> {
        let plan = plan::plan(select, self)?;
        let source = &plan.sources[0];
        let Some((_, table)) = self.views.get(&source.stream) else {
            return Err(SqlError::unsupported(
                select.position,
                format!(
                    "`{}` is a stream: add EMIT CHANGES for a push query, or SELECT from a view",
                    source.stream
                ),
            ));
        };
        if plan.aggregate.is_some() || plan.window.is_some() || plan.join.is_some() {
            return Err(SqlError::unsupported(
                select.position,
                "aggregates, windows and joins in a pull query (define a view)",
            ));
        }
        let mut rows = Vec::new();
        for row in table.rows() {
            let record = row.to_json();
            let sides = [Some(&record)];
            let context = Context {
                sides: &sides,
                ..Context::default()
            };
            if let Some(filter) = &plan.filter {
                if truth(&filter.eval(&context)?, "WHERE")? != Some(true) {
                    continue;
                }
            }
            // Star over a view keeps the view's column order.
            let projected = if matches!(
                plan.projection.as_slice(),
                [crate::plan::Projection::Star(_)]
            ) {
                row.clone()
            } else {
                project(&plan.projection, &context, &plan)?
            };
            rows.push(projected);
        }
        if !plan.order_by.is_empty() {
            let mut failure = None;
            rows.sort_by(|a, b| {
                let (ja, jb) = (a.to_json(), b.to_json());
                for (expr, ascending) in &plan.order_by {
                    let eval = |j: &Value| {
                        expr.eval(&Context {
                            sides: &[Some(j)],
                            ..Context::default()
                        })
                    };
                    match (eval(&ja), eval(&jb)) {
                        (Ok(x), Ok(y)) => {
                            let order = total_order(&x, &y);
                            if order.is_ne() {
                                return if *ascending { order } else { order.reverse() };
                            }
                        }
                        (Err(e), _) | (_, Err(e)) => failure = Some(e),
                    }
                }
                std::cmp::Ordering::Equal
            });
            if let Some(e) = failure {
                return Err(e);
            }
        }
        if let Some(limit) = plan.limit {
            rows.truncate(limit);
        }
        let columns = match plan.columns().or_else(|| table.columns.clone()) {
            Some(c) => c,
            None => rows
                .first()
                .map(|r| r.0.iter().map(|(n, _)| n.clone()).collect())
                .unwrap_or_default(),
        };
        let rows = rows
            .into_iter()
            .map(|r| columns.iter().map(|c| r.get(c).clone()).collect())
            .collect();
        Ok(Effect::Rows { columns, rows })
    }

    /// Feeds one committed record of `stream`'s shard to every running query that reads it;
    /// views are updated inside the engine, and the changes for streams and clients returned.
    pub fn push(&mut self, stream: &str, shard: u32, record: &Record) -> Vec<Output> {
        let mut outputs = Vec::new();
        for (id, entry) in self.queries.iter_mut() {
            if entry.paused || !entry.query.reads(stream) {
                continue;
            }
            for change in entry.query.push(stream, shard, record) {
                match &entry.sink {
                    Sink::View(name) => {
                        if let Some((_, table)) = self.views.get_mut(name) {
                            table.apply(&change);
                        }
                    }
                    sink => outputs.push(Output {
                        query: *id,
                        sink: sink.clone(),
                        change,
                    }),
                }
            }
        }
        outputs
    }

    /// The offsets a query has consumed, per stream and shard: resume feeding after them.
    pub fn offsets(&self, id: u64) -> Option<&BTreeMap<String, BTreeMap<u32, u64>>> {
        self.queries.get(&id).map(|q| &q.query.state().offsets)
    }

    /// The streams a query reads: feed it their shards.
    pub fn sources(&self, id: u64) -> Option<Vec<String>> {
        self.queries.get(&id).map(|q| {
            let mut streams: Vec<String> = q
                .query
                .plan()
                .sources
                .iter()
                .map(|s| s.stream.clone())
                .collect();
            streams.dedup();
            streams
        })
    }

    /// A query's counters (late and failed records).
    pub fn metrics(&self, id: u64) -> Option<&crate::operator::QueryMetrics> {
        self.queries.get(&id).map(|q| &q.query.state().metrics)
    }

    /// The running (not paused) queries and the streams each reads: what the server feeds.
    pub fn feeds(&self) -> Vec<(u64, Vec<String>)> {
        self.queries
            .iter()
            .filter(|(_, q)| !q.paused)
            .map(|(id, q)| {
                let mut streams: Vec<String> = q
                    .query
                    .plan()
                    .sources
                    .iter()
                    .map(|s| s.stream.clone())
                    .collect();
                streams.dedup();
                (*id, streams)
            })
            .collect()
    }

    /// Makes query `id` consume `stream`'s shard from `next_offset` on, as if it had consumed
    /// the records before it: a push query starts at its sources' tails. Never moves back.
    pub fn start_at(&mut self, id: u64, stream: &str, shard: u32, next_offset: u64) {
        let Some(last) = next_offset.checked_sub(1) else {
            return;
        };
        let Some(entry) = self.queries.get_mut(&id) else {
            return;
        };
        let consumed = entry.query.state().offsets.get(stream);
        if consumed
            .and_then(|shards| shards.get(&shard))
            .is_some_and(|&o| o >= last)
        {
            return;
        }
        let mut state = entry.query.state().clone();
        state
            .offsets
            .entry(stream.to_string())
            .or_default()
            .insert(shard, last);
        entry.query = ContinuousQuery::with_state(entry.query.plan().clone(), state);
    }

    /// Ends a push query (the client went away): no object is left behind.
    pub fn cancel(&mut self, id: u64) {
        if self
            .queries
            .get(&id)
            .is_some_and(|q| q.sink == Sink::Client)
        {
            self.queries.remove(&id);
        }
    }

    /// The engine's state for a checkpoint. Push queries (client sinks) are not included.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            streams: self.streams.clone(),
            views: self.views.clone(),
            queries: self
                .queries
                .iter()
                .filter(|(_, q)| q.sink != Sink::Client)
                .map(|(id, q)| QuerySnapshot {
                    id: *id,
                    sql: q.sql.clone(),
                    sink: q.sink.clone(),
                    paused: q.paused,
                    state: q.query.state().clone(),
                })
                .collect(),
            next_query_id: self.next_query_id,
        }
    }

    /// An engine resumed from a snapshot: queries are planned again from their SQL. Limits are
    /// not part of a snapshot (they are configuration): call [`Engine::set_limits`] after.
    pub fn restore(snapshot: Snapshot) -> Result<Engine, SqlError> {
        let mut engine = Engine {
            streams: snapshot.streams,
            views: snapshot.views,
            queries: BTreeMap::new(),
            next_query_id: snapshot.next_query_id,
            limits: Limits::default(),
        };
        for q in snapshot.queries {
            let select = parse::parse(&q.sql)?
                .into_iter()
                .next()
                .and_then(|s| match s {
                    Statement::CreateStream { select, .. } => select,
                    Statement::CreateView { select, .. }
                    | Statement::InsertSelect { select, .. } => Some(select),
                    _ => None,
                })
                .ok_or_else(|| {
                    SqlError::Checkpoint(format!("query {} has no SELECT: {}", q.id, q.sql))
                })?;
            let plan = plan::plan(&select, &engine)?;
            engine.queries.insert(
                q.id,
                QueryEntry {
                    sql: q.sql,
                    sink: q.sink,
                    paused: q.paused,
                    query: ContinuousQuery::with_state(plan, q.state),
                },
            );
        }
        Ok(engine)
    }
}
