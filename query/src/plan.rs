//! Planning: a parsed SELECT becomes a [`Plan`] with resolved columns, a window, aggregates
//! and a projection, checked against the catalog (unknown streams and columns are errors here).

use sqlparser::ast::{self, Spanned};

use crate::aggregate::AggregateKind;
use crate::compile::{contains_aggregate, AggregateBuilder, Scope};
use crate::error::{Position, SqlError};
use crate::expr::{Context, Expr};
use crate::parse::{interval_ms, Emit, Select};

/// The largest k of `TOPK(x, k)`: each group keeps k values.
pub const TOPK_K_MAX: u32 = 1000;

/// The most windows a HOP puts one record in (size / advance): the work per record is bounded.
pub const HOP_WINDOWS_MAX: i64 = 1000;

/// What the planner needs to know about a stream or view.
#[derive(Debug, Clone, Default)]
pub struct SourceInfo {
    /// The event-time column, if the stream names one.
    pub timestamp_column: Option<String>,
    /// The stream's allowed lateness.
    pub grace_ms: Option<i64>,
    /// Known columns (views, streams made by a query without `*`); `None` for schemaless.
    pub columns: Option<Vec<String>>,
    /// Whether it is a view (pull queries read views).
    pub is_view: bool,
}

/// Where the planner looks names up.
pub trait Catalog {
    /// A stream or view by name.
    fn source(&self, name: &str) -> Option<SourceInfo>;
}

/// A source of a query: a stream read by FROM or JOIN.
#[derive(Debug, Clone)]
pub struct PlanSource {
    /// The stream (or view) name.
    pub stream: String,
    /// The name columns are qualified with (alias or stream name).
    pub alias: String,
    /// Event-time column, if any.
    pub timestamp_column: Option<String>,
    /// Known columns, if any.
    pub columns: Option<Vec<String>>,
}

/// A window in FROM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// `TUMBLE(s, size)`: `[k·size, (k+1)·size)`.
    Tumble {
        /// Size in milliseconds.
        size_ms: i64,
    },
    /// `HOP(s, size, advance)`: windows of `size` starting every `advance`.
    Hop {
        /// Size in milliseconds.
        size_ms: i64,
        /// Advance in milliseconds.
        advance_ms: i64,
    },
    /// `SESSION(s, gap)`: records closer than `gap` share a window `[first, last + gap)`.
    Session {
        /// Gap in milliseconds.
        gap_ms: i64,
    },
}

/// The kinds of stream-stream join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    /// Matched pairs only.
    Inner,
    /// And every unmatched left record, padded with NULLs.
    Left,
    /// And every unmatched right record.
    Right,
    /// Both.
    Full,
}

/// A stream-stream join: sources 0 (left) and 1 (right).
#[derive(Debug, Clone)]
pub struct JoinPlan {
    /// Inner or outer.
    pub kind: JoinKind,
    /// The ON condition.
    pub on: Expr,
    /// Records match when their event times differ by at most this much.
    pub within_ms: i64,
}

/// One aggregate call.
#[derive(Debug, Clone)]
pub struct AggregateCall {
    /// COUNT, SUM, ...
    pub kind: AggregateKind,
    /// Its argument (`None` for COUNT(*)).
    pub arg: Option<Expr>,
}

/// GROUP BY, the aggregates and HAVING.
#[derive(Debug, Clone, Default)]
pub struct AggregatePlan {
    /// GROUP BY expressions over the input.
    pub keys: Vec<Expr>,
    /// The aggregate calls in the projection and HAVING.
    pub calls: Vec<AggregateCall>,
    /// HAVING, over keys and aggregates.
    pub having: Option<Expr>,
}

/// One output column.
#[derive(Debug, Clone)]
pub enum Projection {
    /// `*` (all sources) or `s.*` (one): the record's fields.
    Star(Option<usize>),
    /// A named expression.
    Column(String, Expr),
}

/// A planned SELECT.
#[derive(Debug, Clone)]
pub struct Plan {
    /// FROM (and JOIN) sources.
    pub sources: Vec<PlanSource>,
    /// The join of sources 0 and 1, if any.
    pub join: Option<JoinPlan>,
    /// The window, if any.
    pub window: Option<Window>,
    /// Allowed lateness.
    pub grace_ms: i64,
    /// WHERE.
    pub filter: Option<Expr>,
    /// GROUP BY and aggregates, if any.
    pub aggregate: Option<AggregatePlan>,
    /// SELECT list.
    pub projection: Vec<Projection>,
    /// EMIT, if written.
    pub emit: Option<Emit>,
    /// ORDER BY (pull queries): expression over the output, ascending?
    pub order_by: Vec<(Expr, bool)>,
    /// LIMIT (pull queries).
    pub limit: Option<usize>,
}

impl Plan {
    /// Output column names, when known (no `*`).
    pub fn columns(&self) -> Option<Vec<String>> {
        self.projection
            .iter()
            .map(|p| match p {
                Projection::Column(name, _) => Some(name.clone()),
                Projection::Star(_) => None,
            })
            .collect()
    }

    /// A one-paragraph description (EXPLAIN).
    pub fn explain(&self) -> String {
        let mut parts = Vec::new();
        let names: Vec<&str> = self.sources.iter().map(|s| s.stream.as_str()).collect();
        parts.push(format!("source: {}", names.join(", ")));
        for s in &self.sources {
            parts.push(format!(
                "event time of {}: {}",
                s.stream,
                s.timestamp_column
                    .as_deref()
                    .map(|c| format!("column {c}"))
                    .unwrap_or_else(|| "record timestamp".into())
            ));
        }
        if let Some(j) = &self.join {
            parts.push(format!("join: {:?} within {} ms", j.kind, j.within_ms));
        }
        if self.filter.is_some() {
            parts.push("filter".into());
        }
        if let Some(w) = &self.window {
            parts.push(format!("window: {w:?}"));
        }
        parts.push(format!("grace: {} ms", self.grace_ms));
        if let Some(a) = &self.aggregate {
            let calls: Vec<String> = a.calls.iter().map(|c| format!("{:?}", c.kind)).collect();
            parts.push(format!(
                "aggregate: {} keys, [{}]{}",
                a.keys.len(),
                calls.join(", "),
                if a.having.is_some() { ", having" } else { "" }
            ));
        }
        parts.push(format!(
            "emit: {}",
            match self.emit {
                Some(Emit::Changes) => "changes",
                Some(Emit::Final) => "final",
                None => "none (pull)",
            }
        ));
        parts.join("; ")
    }
}

fn pos(node: &impl Spanned) -> Position {
    node.span().start.into()
}

/// Plans a SELECT against the catalog.
pub fn plan(select: &Select, catalog: &dyn Catalog) -> Result<Plan, SqlError> {
    let query = &select.query;
    let at = select.position;
    if query.with.is_some() {
        return Err(SqlError::unsupported(at, "WITH"));
    }
    let ast::SetExpr::Select(body) = &*query.body else {
        return Err(SqlError::unsupported(
            at,
            "only SELECT ... FROM ... (no UNION, VALUES)",
        ));
    };
    if body.distinct.is_some() {
        return Err(SqlError::unsupported(at, "DISTINCT"));
    }
    let [from] = body.from.as_slice() else {
        return Err(SqlError::unsupported(
            at,
            "FROM needs exactly one source (use JOIN for two)",
        ));
    };
    let mut sources = Vec::new();
    let window = source(&from.relation, catalog, &mut sources)?;
    let mut join = None;
    match from.joins.as_slice() {
        [] => {}
        [j] => {
            if window.is_some() {
                return Err(SqlError::unsupported(at, "a window over a join"));
            }
            if source(&j.relation, catalog, &mut sources)?.is_some() {
                return Err(SqlError::unsupported(
                    pos(&j.relation),
                    "a window on the right side of a join",
                ));
            }
            let (kind, constraint) = match &j.join_operator {
                ast::JoinOperator::Join(c) | ast::JoinOperator::Inner(c) => (JoinKind::Inner, c),
                ast::JoinOperator::Left(c) | ast::JoinOperator::LeftOuter(c) => (JoinKind::Left, c),
                ast::JoinOperator::Right(c) | ast::JoinOperator::RightOuter(c) => {
                    (JoinKind::Right, c)
                }
                ast::JoinOperator::FullOuter(c) => (JoinKind::Full, c),
                _ => return Err(SqlError::unsupported(pos(&j.relation), "this kind of join")),
            };
            let ast::JoinConstraint::On(on) = constraint else {
                return Err(SqlError::unsupported(pos(&j.relation), "joins need ON"));
            };
            let within_ms = *select.within_ms.first().ok_or_else(|| {
                SqlError::syntax(pos(on), "a stream-stream join needs WITHIN (INTERVAL ...)")
            })?;
            let mut scope = Scope {
                sources: &sources,
                windowed: false,
                aggregate: None,
            };
            join = Some(JoinPlan {
                kind,
                on: scope.compile(on)?,
                within_ms,
            });
        }
        _ => return Err(SqlError::unsupported(at, "more than one JOIN")),
    }
    let grace_ms = select
        .grace_ms
        .or_else(|| {
            sources
                .iter()
                .filter_map(|s| catalog.source(&s.stream).and_then(|i| i.grace_ms))
                .max()
        })
        .unwrap_or(0);
    if grace_ms < 0 {
        return Err(SqlError::syntax(at, "GRACE PERIOD must not be negative"));
    }
    let windowed = window.is_some();
    let filter = match &body.selection {
        Some(e) => Some(
            Scope {
                sources: &sources,
                windowed: false,
                aggregate: None,
            }
            .compile(e)?,
        ),
        None => None,
    };
    let group_by: Vec<&ast::Expr> = match &body.group_by {
        ast::GroupByExpr::Expressions(exprs, modifiers) if modifiers.is_empty() => {
            exprs.iter().collect()
        }
        _ => return Err(SqlError::unsupported(at, "GROUP BY ALL / modifiers")),
    };
    let mut aggregate_builder = AggregateBuilder {
        group_texts: group_by.iter().map(|e| e.to_string()).collect(),
        plan: AggregatePlan::default(),
    };
    for e in &group_by {
        let key = Scope {
            sources: &sources,
            windowed: false,
            aggregate: None,
        }
        .compile(e)?;
        aggregate_builder.plan.keys.push(key);
    }
    let has_aggregates = !group_by.is_empty()
        || body.having.is_some()
        || body.projection.iter().any(|item| match item {
            ast::SelectItem::UnnamedExpr(e) | ast::SelectItem::ExprWithAlias { expr: e, .. } => {
                contains_aggregate(e)
            }
            _ => false,
        });
    let mut projection = Vec::new();
    {
        let mut scope = Scope {
            sources: &sources,
            windowed,
            aggregate: has_aggregates.then_some(&mut aggregate_builder),
        };
        for item in &body.projection {
            match item {
                ast::SelectItem::UnnamedExpr(e) => {
                    let name = column_name(e);
                    projection.push(Projection::Column(name, scope.compile(e)?));
                }
                ast::SelectItem::ExprWithAlias { expr, alias } => {
                    projection.push(Projection::Column(
                        alias.value.clone(),
                        scope.compile(expr)?,
                    ));
                }
                ast::SelectItem::Wildcard(_) => {
                    if scope.aggregate.is_some() {
                        return Err(SqlError::unsupported(
                            pos(item),
                            "* with GROUP BY or aggregates",
                        ));
                    }
                    projection.push(Projection::Star(None));
                }
                ast::SelectItem::QualifiedWildcard(kind, _) => {
                    let name = kind.to_string();
                    let side = sources
                        .iter()
                        .position(|s| {
                            s.alias.eq_ignore_ascii_case(&name)
                                || s.stream.eq_ignore_ascii_case(&name)
                        })
                        .ok_or_else(|| SqlError::UnknownStream {
                            name: name.clone(),
                            position: pos(item),
                        })?;
                    projection.push(Projection::Star(Some(side)));
                }
                other => return Err(SqlError::unsupported(pos(other), "this SELECT item")),
            }
        }
        if let Some(h) = &body.having {
            let having = scope.compile(h)?;
            aggregate_builder.plan.having = Some(having);
        }
    }
    let aggregate = has_aggregates.then_some(aggregate_builder.plan);
    if select.emit == Some(Emit::Final) && (window.is_none() || aggregate.is_none()) {
        return Err(SqlError::unsupported(at, "EMIT FINAL needs a windowed aggregate (TUMBLE, HOP or SESSION with GROUP BY or aggregates)"));
    }
    if matches!(window, Some(Window::Session { .. })) && aggregate.is_none() {
        return Err(SqlError::unsupported(
            at,
            "SESSION windows need an aggregate",
        ));
    }
    // ORDER BY and LIMIT are read against the output row (side 0 of a pull query's result).
    let output = PlanSource {
        stream: String::new(),
        alias: String::new(),
        timestamp_column: None,
        columns: projection
            .iter()
            .map(|p| match p {
                Projection::Column(n, _) => Some(n.clone()),
                Projection::Star(_) => None,
            })
            .collect(),
    };
    let mut order_by = Vec::new();
    if let Some(o) = &query.order_by {
        let ast::OrderByKind::Expressions(exprs) = &o.kind else {
            return Err(SqlError::unsupported(at, "ORDER BY ALL"));
        };
        for e in exprs {
            let outputs = [output.clone()];
            let compiled = Scope {
                sources: &outputs,
                windowed: false,
                aggregate: None,
            }
            .compile(&e.expr)?;
            order_by.push((
                compiled,
                !matches!(e.options.sort, Some(ast::OrderBySort::Desc)),
            ));
        }
    }
    let limit = match &query.limit_clause {
        None => None,
        Some(ast::LimitClause::LimitOffset {
            limit: Some(l),
            offset: None,
            ..
        }) => {
            let v = constant(l)?;
            Some(
                v.as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| {
                        SqlError::syntax(pos(l), "LIMIT needs a non-negative integer")
                    })?,
            )
        }
        Some(_) => return Err(SqlError::unsupported(at, "OFFSET")),
    };
    Ok(Plan {
        sources,
        join,
        window,
        grace_ms,
        filter,
        aggregate,
        projection,
        emit: select.emit,
        order_by,
        limit,
    })
}

/// Evaluates an expression that must not read any input (INSERT VALUES, LIMIT).
pub fn constant(expr: &ast::Expr) -> Result<serde_json::Value, SqlError> {
    let compiled = Scope {
        sources: &[],
        windowed: false,
        aggregate: None,
    }
    .compile(expr)?;
    if !compiled.is_constant() {
        return Err(SqlError::syntax(
            pos(expr),
            format!("`{expr}` must be a constant"),
        ));
    }
    compiled.eval(&Context::default())
}

fn source(
    relation: &ast::TableFactor,
    catalog: &dyn Catalog,
    sources: &mut Vec<PlanSource>,
) -> Result<Option<Window>, SqlError> {
    let ast::TableFactor::Table {
        name, alias, args, ..
    } = relation
    else {
        return Err(SqlError::unsupported(pos(relation), "subqueries in FROM"));
    };
    let at = pos(relation);
    let (stream, stream_at, window) = match args {
        None => (name.to_string(), at, None),
        Some(args) => {
            let function = name.to_string().to_ascii_uppercase();
            let exprs: Vec<&ast::Expr> = args
                .args
                .iter()
                .map(|a| match a {
                    ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) => Ok(e),
                    _ => Err(SqlError::syntax(at, format!("bad argument to {function}"))),
                })
                .collect::<Result<_, _>>()?;
            let Some((first, rest)) = exprs.split_first() else {
                return Err(SqlError::syntax(at, format!("{function} needs a stream")));
            };
            let stream = match first {
                ast::Expr::Identifier(i) => i.value.clone(),
                other => {
                    return Err(SqlError::syntax(
                        pos(*other),
                        format!("{function}'s first argument is a stream name"),
                    ))
                }
            };
            let intervals = rest
                .iter()
                .map(|e| interval_ms(e))
                .collect::<Result<Vec<_>, _>>()?;
            let window = match (function.as_str(), intervals.as_slice()) {
                ("TUMBLE", [size_ms]) => Window::Tumble { size_ms: *size_ms },
                ("HOP", [size_ms, advance_ms]) => Window::Hop {
                    size_ms: *size_ms,
                    advance_ms: *advance_ms,
                },
                ("SESSION", [gap_ms]) => Window::Session { gap_ms: *gap_ms },
                ("TUMBLE" | "HOP" | "SESSION", _) => {
                    return Err(SqlError::syntax(
                        at,
                        format!(
                            "{function} takes a stream and {} interval(s)",
                            if function == "HOP" { 2 } else { 1 }
                        ),
                    ))
                }
                _ => {
                    return Err(SqlError::syntax(
                        at,
                        format!("unknown window function {function} (TUMBLE, HOP, SESSION)"),
                    ))
                }
            };
            let positive = match window {
                Window::Tumble { size_ms } => size_ms > 0,
                Window::Hop {
                    size_ms,
                    advance_ms,
                } => {
                    size_ms > 0
                        && advance_ms > 0
                        && advance_ms <= size_ms
                        && size_ms / advance_ms <= HOP_WINDOWS_MAX
                }
                Window::Session { gap_ms } => gap_ms > 0,
            };
            if !positive {
                return Err(SqlError::syntax(
                    at,
                    format!(
                        "window sizes must be positive (and a HOP's advance at most its size, \
                         at least 1/{HOP_WINDOWS_MAX} of it)"
                    ),
                ));
            }
            (stream, pos(*first), Some(window))
        }
    };
    let info = catalog
        .source(&stream)
        .ok_or_else(|| SqlError::UnknownStream {
            name: stream.clone(),
            position: stream_at,
        })?;
    sources.push(PlanSource {
        alias: alias
            .as_ref()
            .map(|a| a.name.value.clone())
            .unwrap_or_else(|| stream.clone()),
        stream,
        timestamp_column: info.timestamp_column,
        columns: info.columns,
    });
    Ok(window)
}

fn column_name(expr: &ast::Expr) -> String {
    match expr {
        ast::Expr::Identifier(i) => i.value.clone(),
        ast::Expr::CompoundIdentifier(parts) => {
            parts.last().map(|i| i.value.clone()).unwrap_or_default()
        }
        ast::Expr::Function(f) => f.name.to_string().to_lowercase(),
        ast::Expr::BinaryOp {
            right,
            op: ast::BinaryOperator::Arrow | ast::BinaryOperator::LongArrow,
            ..
        } => match &**right {
            ast::Expr::Value(v) => match &v.value {
                ast::Value::SingleQuotedString(s) => s.clone(),
                _ => expr.to_string(),
            },
            _ => expr.to_string(),
        },
        ast::Expr::Cast { expr, .. } | ast::Expr::Nested(expr) => column_name(expr),
        other => other.to_string(),
    }
}
