//! The continuous query: a plan plus its state, driven by `push(source, record)` and answering
//! with changes. No clock: time is the records' event time; the watermark is the highest event
//! time seen minus the allowed lateness, and it only moves forward.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::aggregate::Accumulator;
use crate::error::SqlError;
use crate::expr::Context;
use crate::parse::Emit;
use crate::plan::{AggregatePlan, JoinKind, Plan, Projection, Window};
use crate::value::{truth, Change, ChangeKind, Record, Row};

/// The largest event time (and interval) in milliseconds, about 35,700 years either side of
/// the epoch: with times and window sizes bounded by it, window arithmetic cannot overflow.
pub const TIME_MS_MAX: i64 = 1 << 50;

/// Counters of one query.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueryMetrics {
    /// Records consumed (duplicates by offset not counted).
    pub records_in: u64,
    /// Records dropped because a window they belong to was already final (counted once per
    /// record even when a HOP drops it for several windows).
    pub records_late: u64,
    /// Records skipped because an expression failed on them (type mismatch, bad time column).
    pub records_failed: u64,
    /// Records dropped because keeping them would pass a [`Limits`] bound (a new group, a
    /// join buffer entry).
    pub records_over_limit: u64,
    /// The last such failure.
    pub last_error: Option<String>,
}

/// One group of an aggregate: a window (if any) and GROUP BY values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Group {
    window: Option<(i64, i64)>,
    keys: Vec<Value>,
    accumulators: Vec<Accumulator>,
    /// The row last emitted for this group (to retract it, and to emit only real changes).
    emitted: Option<Row>,
}

/// A record waiting in a join buffer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Buffered {
    time_ms: i64,
    value: Value,
    matched: bool,
}

/// Everything a query must keep across a restart (serde): its checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueryState {
    /// The last offset consumed, per source stream and shard.
    pub offsets: BTreeMap<String, BTreeMap<u32, u64>>,
    /// The highest event time seen.
    pub max_event_time_ms: Option<i64>,
    /// Counters.
    pub metrics: QueryMetrics,
    groups: BTreeMap<String, Group>,
    /// Windowed groups by window end, to find the final ones.
    closing: BTreeSet<(i64, String)>,
    /// Open session windows per GROUP BY value (JSON text): `(start, end)`.
    sessions: BTreeMap<String, Vec<(i64, i64)>>,
    /// Per GROUP BY value (JSON text) of a session query: the end of its last final session.
    /// Open sessions start at or after it (sessions of a key never overlap), so a record before
    /// it would touch or bridge into a final session: it is late. One integer per value seen.
    session_final_until: BTreeMap<String, i64>,
    /// Join buffers: left, right.
    buffers: [Vec<Buffered>; 2],
}

/// The bounds of one query's state. A record that would pass one is dropped and counted in
/// `records_over_limit` (with the reason in `last_error`): the query goes on, visibly lossy,
/// instead of growing without end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Groups held at once (windows × GROUP BY values; closed windows are released).
    pub groups_max: usize,
    /// Records waiting in one side's join buffer.
    pub join_buffer_records_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            groups_max: 1_000_000,
            join_buffer_records_max: 1_000_000,
        }
    }
}

/// A planned query with its state.
#[derive(Debug, Clone)]
pub struct ContinuousQuery {
    /// Shared so the hot path can hold the plan while it changes the state.
    plan: Arc<Plan>,
    state: QueryState,
    limits: Limits,
}

impl ContinuousQuery {
    /// A query with empty state.
    pub fn new(plan: Plan) -> Self {
        ContinuousQuery {
            plan: Arc::new(plan),
            state: QueryState::default(),
            limits: Limits::default(),
        }
    }

    /// A query resumed from a checkpoint.
    pub fn with_state(plan: Plan, state: QueryState) -> Self {
        ContinuousQuery {
            plan: Arc::new(plan),
            state,
            limits: Limits::default(),
        }
    }

    /// Sets the bounds of the query's state (they apply to what comes next).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Counts a record dropped at a bound; `false` when `held` is still below `max`.
    fn over_limit(&mut self, held: usize, max: usize, what: &str) -> bool {
        if held < max {
            return false;
        }
        self.state.metrics.records_over_limit += 1;
        self.state.metrics.last_error = Some(format!("{what} limit of {max} reached"));
        true
    }

    /// The plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The state (what a checkpoint stores).
    pub fn state(&self) -> &QueryState {
        &self.state
    }

    /// The watermark: highest event time minus the allowed lateness.
    pub fn watermark_ms(&self) -> Option<i64> {
        self.state
            .max_event_time_ms
            .map(|m| m.saturating_sub(self.plan.grace_ms))
    }

    /// Whether the query reads this stream.
    pub fn reads(&self, stream: &str) -> bool {
        self.plan.sources.iter().any(|s| s.stream == stream)
    }

    /// Consumes one record of `stream`'s shard; returns the output changes. A record at or
    /// below the shard's consumed offset is ignored (a replay after restoring a checkpoint).
    pub fn push(&mut self, stream: &str, shard: u32, record: &Record) -> Vec<Change> {
        let mut out = Vec::new();
        let consumed = match self.state.offsets.get_mut(stream) {
            Some(shards) => shards,
            None => self.state.offsets.entry(stream.to_string()).or_default(),
        };
        if consumed
            .get(&shard)
            .is_some_and(|&last| record.offset <= last)
        {
            return out;
        }
        consumed.insert(shard, record.offset);
        self.state.metrics.records_in += 1;
        for side in 0..self.plan.sources.len() {
            if self.plan.sources[side].stream != stream {
                continue;
            }
            let time_ms = match &self.plan.sources[side].timestamp_column {
                None => record.event_time_ms,
                Some(column) => match record.value.get(column).and_then(Value::as_i64) {
                    Some(t) => t,
                    None => {
                        self.fail(SqlError::mismatch(
                            &format!("event time column `{column}`"),
                            "milliseconds (integer)",
                            record.value.get(column).unwrap_or(&Value::Null),
                        ));
                        continue;
                    }
                },
            };
            if !(-TIME_MS_MAX..=TIME_MS_MAX).contains(&time_ms) {
                self.fail(SqlError::mismatch(
                    "event time",
                    &format!("milliseconds within ±{TIME_MS_MAX}"),
                    &Value::from(time_ms),
                ));
                continue;
            }
            let result = if self.plan.join.is_some() {
                self.join(side, time_ms, &record.value, &mut out)
            } else {
                self.tuple(time_ms, &[Some(&record.value)], &mut out)
            };
            if let Err(e) = result {
                self.fail(e);
            }
            self.advance(time_ms, &mut out);
        }
        out
    }

    fn fail(&mut self, error: SqlError) {
        self.state.metrics.records_failed += 1;
        self.state.metrics.last_error = Some(error.to_string());
    }

    /// Moves the watermark with a record's event time and closes what became final.
    fn advance(&mut self, time_ms: i64, out: &mut Vec<Change>) {
        let before = self.watermark_ms();
        let max = self
            .state
            .max_event_time_ms
            .map_or(time_ms, |m| m.max(time_ms));
        self.state.max_event_time_ms = Some(max);
        let Some(watermark) = self.watermark_ms() else {
            return;
        };
        assert!(
            before.is_none_or(|b| b <= watermark),
            "watermark moved back: {before:?} -> {watermark}"
        );
        while let Some((end, id)) = self.state.closing.first().cloned() {
            if end > watermark {
                break;
            }
            self.state.closing.pop_first();
            // Every entry of `closing` is a live group: groups leave both together.
            let group = self
                .state
                .groups
                .remove(&id)
                .unwrap_or_else(|| panic!("closing window {id} has no group"));
            if let (Some(Window::Session { .. }), Some((start, end))) =
                (self.plan.window, group.window)
            {
                let session_key = key_text(&group.keys);
                if let Some(list) = self.state.sessions.get_mut(&session_key) {
                    list.retain(|w| *w != (start, end));
                    if list.is_empty() {
                        self.state.sessions.remove(&session_key);
                    }
                }
                let until = self
                    .state
                    .session_final_until
                    .entry(session_key)
                    .or_insert(end);
                *until = (*until).max(end);
            }
            if self.plan.emit == Some(Emit::Final) {
                match self.group_row(&group) {
                    Ok(Some(row)) => out.push(Change {
                        kind: ChangeKind::Insert,
                        key: Some(id),
                        row,
                    }),
                    Ok(None) => {}
                    Err(e) => self.fail(e),
                }
            }
        }
        if let Some(join) = &self.plan.join {
            let kind = join.kind;
            let within_ms = join.within_ms;
            for side in 0..2 {
                let (expired, kept): (Vec<Buffered>, Vec<Buffered>) =
                    std::mem::take(&mut self.state.buffers[side])
                        .into_iter()
                        .partition(|b| b.time_ms.saturating_add(within_ms) < watermark);
                self.state.buffers[side] = kept;
                let outer = match side {
                    0 => matches!(kind, JoinKind::Left | JoinKind::Full),
                    _ => matches!(kind, JoinKind::Right | JoinKind::Full),
                };
                for b in expired.into_iter().filter(|b| outer && !b.matched) {
                    let sides = if side == 0 {
                        [Some(&b.value), None]
                    } else {
                        [None, Some(&b.value)]
                    };
                    if let Err(e) = self.tuple(b.time_ms, &sides, out) {
                        self.fail(e);
                    }
                }
            }
        }
    }

    fn join(
        &mut self,
        side: usize,
        time_ms: i64,
        value: &Value,
        out: &mut Vec<Change>,
    ) -> Result<(), SqlError> {
        if self.watermark_ms().is_some_and(|w| time_ms < w) {
            self.state.metrics.records_late += 1;
            return Ok(());
        }
        let plan = Arc::clone(&self.plan);
        let Some(join) = &plan.join else {
            return Ok(());
        };
        let other = 1 - side;
        let mut matched = false;
        let mut pairs = Vec::new();
        for (index, b) in self.state.buffers[other].iter().enumerate() {
            if (b.time_ms - time_ms).abs() > join.within_ms {
                continue;
            }
            let sides = if side == 0 {
                [Some(value), Some(&b.value)]
            } else {
                [Some(&b.value), Some(value)]
            };
            let holds = join.on.eval(&Context {
                sides: &sides,
                ..Context::default()
            })?;
            if truth(&holds, "ON")? == Some(true) {
                pairs.push(index);
            }
        }
        for index in pairs {
            matched = true;
            self.state.buffers[other][index].matched = true;
            let b = self.state.buffers[other][index].clone();
            let sides = if side == 0 {
                [Some(value), Some(&b.value)]
            } else {
                [Some(&b.value), Some(value)]
            };
            self.tuple(time_ms.max(b.time_ms), &sides, out)?;
        }
        let held = self.state.buffers[side].len();
        if !self.over_limit(held, self.limits.join_buffer_records_max, "join buffer") {
            self.state.buffers[side].push(Buffered {
                time_ms,
                value: value.clone(),
                matched,
            });
        }
        Ok(())
    }

    /// One input tuple (a record, or a joined pair) through WHERE, the window, the aggregate
    /// and the projection.
    fn tuple(
        &mut self,
        time_ms: i64,
        sides: &[Option<&Value>],
        out: &mut Vec<Change>,
    ) -> Result<(), SqlError> {
        let input = Context {
            sides,
            ..Context::default()
        };
        if let Some(filter) = &self.plan.filter {
            if truth(&filter.eval(&input)?, "WHERE")? != Some(true) {
                return Ok(());
            }
        }
        let watermark = self.watermark_ms();
        let is_final = |end: i64| watermark.is_some_and(|w| w >= end);
        if let Some(Window::Session { gap_ms }) = self.plan.window {
            return self.session(time_ms, gap_ms, sides, is_final, out);
        }
        let windows: Vec<Option<(i64, i64)>> = match self.plan.window {
            None => vec![None],
            Some(Window::Tumble { size_ms }) => {
                let start = time_ms.div_euclid(size_ms) * size_ms;
                vec![Some((start, start + size_ms))]
            }
            Some(Window::Hop {
                size_ms,
                advance_ms,
            }) => {
                let mut start = time_ms.div_euclid(advance_ms) * advance_ms;
                let mut all = Vec::new();
                while start + size_ms > time_ms {
                    all.push(Some((start, start + size_ms)));
                    start -= advance_ms;
                }
                all.reverse();
                all
            }
            Some(Window::Session { .. }) => Vec::new(),
        };
        let open: Vec<Option<(i64, i64)>> = windows
            .iter()
            .copied()
            .filter(|w| !w.is_some_and(|(_, end)| is_final(end)))
            .collect();
        if open.len() < windows.len() {
            self.state.metrics.records_late += 1;
        }
        let plan = Arc::clone(&self.plan);
        let Some(aggregate) = &plan.aggregate else {
            for window in open {
                let row = project(
                    &self.plan.projection,
                    &Context {
                        sides,
                        window,
                        ..Context::default()
                    },
                    &self.plan,
                )?;
                out.push(Change {
                    kind: ChangeKind::Insert,
                    key: None,
                    row,
                });
            }
            return Ok(());
        };
        let (keys, args) = group_inputs(aggregate, &input)?;
        for window in open {
            let id = group_id(window, &keys);
            if !self.state.groups.contains_key(&id) {
                if self.over_limit(self.state.groups.len(), self.limits.groups_max, "groups") {
                    continue;
                }
                if let Some((_, end)) = window {
                    self.state.closing.insert((end, id.clone()));
                }
                let group = Group::new(window, &keys, aggregate);
                self.state.groups.insert(id.clone(), group);
            }
            if let Some(group) = self.state.groups.get_mut(&id) {
                for (accumulator, arg) in group.accumulators.iter_mut().zip(&args) {
                    accumulator.add(arg.as_ref())?;
                }
            }
            self.changed(&id, out)?;
        }
        Ok(())
    }

    fn session(
        &mut self,
        time_ms: i64,
        gap_ms: i64,
        sides: &[Option<&Value>],
        is_final: impl Fn(i64) -> bool,
        out: &mut Vec<Change>,
    ) -> Result<(), SqlError> {
        let plan = Arc::clone(&self.plan);
        let Some(aggregate) = &plan.aggregate else {
            return Ok(());
        };
        let input = Context {
            sides,
            ..Context::default()
        };
        let (keys, args) = group_inputs(aggregate, &input)?;
        let session_key = key_text(&keys);
        let (own_start, own_end) = (time_ms, time_ms.saturating_add(gap_ms));
        let existing = self
            .state
            .sessions
            .get(&session_key)
            .cloned()
            .unwrap_or_default();
        // A record joins every open session it is closer than `gap` to: it bridges them.
        let (overlapping, others): (Vec<Bounds>, Vec<Bounds>) = existing
            .into_iter()
            .partition(|&(start, end)| start < own_end && own_start < end);
        let start = overlapping
            .iter()
            .map(|w| w.0)
            .chain([own_start])
            .min()
            .unwrap_or(own_start);
        let end = overlapping
            .iter()
            .map(|w| w.1)
            .chain([own_end])
            .max()
            .unwrap_or(own_end);
        // Bridging into a final session would change a window already emitted: late.
        let touches_final = self
            .state
            .session_final_until
            .get(&session_key)
            .is_some_and(|&until| own_start < until);
        if is_final(end) || touches_final {
            self.state.metrics.records_late += 1;
            return Ok(());
        }
        // Sessions of a key never overlap: an accepted session starts after every final one.
        assert!(
            self.state
                .session_final_until
                .get(&session_key)
                .is_none_or(|&until| start >= until),
            "session [{start}, {end}) would overlap a final session"
        );
        if overlapping.is_empty()
            && self.over_limit(self.state.groups.len(), self.limits.groups_max, "groups")
        {
            return Ok(());
        }
        let id = group_id(Some((start, end)), &keys);
        let mut merged = Group::new(Some((start, end)), &keys, aggregate);
        for window in &overlapping {
            let old_id = group_id(Some(*window), &keys);
            self.state.closing.remove(&(window.1, old_id.clone()));
            let Some(old) = self.state.groups.remove(&old_id) else {
                continue;
            };
            for (into, from) in merged.accumulators.iter_mut().zip(&old.accumulators) {
                into.merge(from)?;
            }
            if old_id == id {
                merged.emitted = old.emitted;
            } else if let Some(row) = old.emitted {
                if self.plan.emit != Some(Emit::Final) {
                    out.push(Change {
                        kind: ChangeKind::Retract,
                        key: Some(old_id),
                        row,
                    });
                }
            }
        }
        for (accumulator, arg) in merged.accumulators.iter_mut().zip(&args) {
            accumulator.add(arg.as_ref())?;
        }
        let mut sessions = others;
        sessions.push((start, end));
        sessions.sort_unstable();
        self.state.sessions.insert(session_key, sessions);
        self.state.groups.insert(id.clone(), merged);
        self.state.closing.insert((end, id.clone()));
        self.changed(&id, out)
    }

    /// After a group changed: with EMIT CHANGES (and for views), its new row, or the
    /// retraction of its old one when HAVING no longer holds.
    fn changed(&mut self, id: &str, out: &mut Vec<Change>) -> Result<(), SqlError> {
        if self.plan.emit == Some(Emit::Final) {
            return Ok(());
        }
        let Some(group) = self.state.groups.get(id) else {
            return Ok(());
        };
        let row = self.group_row(group)?;
        let Some(group) = self.state.groups.get_mut(id) else {
            return Ok(());
        };
        match row {
            Some(row) if group.emitted.as_ref() != Some(&row) => {
                group.emitted = Some(row.clone());
                out.push(Change {
                    kind: ChangeKind::Insert,
                    key: Some(id.to_string()),
                    row,
                });
            }
            Some(_) => {}
            None => {
                if let Some(old) = group.emitted.take() {
                    out.push(Change {
                        kind: ChangeKind::Retract,
                        key: Some(id.to_string()),
                        row: old,
                    });
                }
            }
        }
        Ok(())
    }

    /// The group's output row, `None` when HAVING does not hold.
    fn group_row(&self, group: &Group) -> Result<Option<Row>, SqlError> {
        let aggregates: Vec<Value> = group.accumulators.iter().map(Accumulator::value).collect();
        let context = Context {
            sides: &[],
            window: group.window,
            keys: &group.keys,
            aggregates: &aggregates,
        };
        if let Some(having) = self.plan.aggregate.as_ref().and_then(|a| a.having.as_ref()) {
            if truth(&having.eval(&context)?, "HAVING")? != Some(true) {
                return Ok(None);
            }
        }
        project(&self.plan.projection, &context, &self.plan).map(Some)
    }
}

impl Group {
    fn new(window: Option<Bounds>, keys: &[Value], aggregate: &AggregatePlan) -> Group {
        Group {
            window,
            keys: keys.to_vec(),
            accumulators: aggregate
                .calls
                .iter()
                .map(|c| Accumulator::new(c.kind))
                .collect(),
            emitted: None,
        }
    }
}

/// The GROUP BY values and the aggregate arguments of one input tuple.
type GroupInputs = (Vec<Value>, Vec<Option<Value>>);

fn group_inputs(aggregate: &AggregatePlan, input: &Context<'_>) -> Result<GroupInputs, SqlError> {
    let keys = aggregate
        .keys
        .iter()
        .map(|k| k.eval(input))
        .collect::<Result<Vec<_>, _>>()?;
    let args = aggregate
        .calls
        .iter()
        .map(|c| c.arg.as_ref().map(|a| a.eval(input)).transpose())
        .collect::<Result<Vec<_>, _>>()?;
    Ok((keys, args))
}

/// A window's `(start, end)` in milliseconds.
type Bounds = (i64, i64);

fn key_text(keys: &[Value]) -> String {
    Value::Array(keys.to_vec()).to_string()
}

/// A group's identity: its window and GROUP BY values, as JSON text (the changes' key).
/// Written straight into one string: `[start,end,key…]` (the JSON array, without building it).
fn group_id(window: Option<(i64, i64)>, keys: &[Value]) -> String {
    use std::fmt::Write;
    let mut id = String::with_capacity(32);
    id.push('[');
    let mut first = true;
    if let Some((start, end)) = window {
        // Writing to a String cannot fail.
        let _ = write!(id, "{start},{end}");
        first = false;
    }
    for key in keys {
        if !first {
            id.push(',');
        }
        first = false;
        let _ = write!(id, "{key}");
    }
    id.push(']');
    id
}

/// Evaluates the SELECT list.
pub(crate) fn project(
    projection: &[Projection],
    context: &Context<'_>,
    plan: &Plan,
) -> Result<Row, SqlError> {
    let mut row = Vec::with_capacity(projection.len());
    for item in projection {
        match item {
            Projection::Column(name, expr) => row.push((name.clone(), expr.eval(context)?)),
            Projection::Star(only) => {
                let prefix = plan.sources.len() > 1;
                for (side, record) in context.sides.iter().enumerate() {
                    if only.is_some_and(|o| o != side) {
                        continue;
                    }
                    let alias = plan
                        .sources
                        .get(side)
                        .map(|s| s.alias.as_str())
                        .unwrap_or_default();
                    if let Some(Value::Object(map)) = record {
                        for (k, v) in map {
                            let name = if prefix {
                                format!("{alias}.{k}")
                            } else {
                                k.clone()
                            };
                            row.push((name, v.clone()));
                        }
                    }
                }
            }
        }
    }
    Ok(Row(row))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The group id is the JSON array of window bounds and keys (it keys views and changes).
    #[test]
    fn group_id_is_the_json_array() {
        let keys = [Value::from("a\"b"), Value::Null, Value::from(1.5)];
        let expected = serde_json::json!([-10, 0, "a\"b", null, 1.5]).to_string();
        assert_eq!(group_id(Some((-10, 0)), &keys), expected);
        assert_eq!(group_id(None, &keys), key_text(&keys));
        assert_eq!(group_id(None, &[]), "[]");
    }
}
