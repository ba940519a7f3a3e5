//! A transcript runner: the engine driven like the server drives it, in memory, for golden
//! tests and the examples of `docs/sql.md`. It is also the reference for the server's loop:
//! run a statement, perform its effects (appends get offsets and come back through `push`),
//! route the outputs (stream sinks are appended and fed back, client sinks shown).
//!
//! Format: statements end with `;` at the end of a line; lines starting with `-->` are output
//! (ignored when read, written by the runner); other `--` lines and blank lines are kept.
//! Directives: `-- @time <ms>` sets the timestamp of the records appended next, `-- @restart`
//! checkpoints the engine to JSON and restores a new one from it, `-- @metrics <query>` shows a
//! query's counters.

use std::collections::BTreeMap;
use std::collections::VecDeque;

use serde_json::Value;

use crate::engine::{Effect, Engine, Sink, Snapshot};
use crate::value::Record;

/// An engine with a pretend log: per-stream offsets and a record timestamp.
#[derive(Default)]
pub struct Script {
    engine: Engine,
    log: BTreeMap<String, Vec<Record>>,
    time_ms: i64,
}

impl Script {
    /// A fresh session.
    pub fn new() -> Self {
        Script::default()
    }

    /// Runs a transcript and returns it with fresh output lines.
    pub fn run(&mut self, text: &str) -> String {
        let mut out = String::new();
        let mut statement = String::new();
        for line in text.lines() {
            let trimmed = line.trim();
            if trimmed.starts_with("-->") {
                continue;
            }
            out.push_str(line);
            out.push('\n');
            if statement.is_empty() && (trimmed.is_empty() || trimmed.starts_with("--")) {
                self.directive(trimmed, &mut out);
                continue;
            }
            statement.push_str(line);
            statement.push('\n');
            if trimmed.ends_with(';') {
                self.statement(&std::mem::take(&mut statement), &mut out);
            }
        }
        out
    }

    fn directive(&mut self, line: &str, out: &mut String) {
        let mut words = line.trim_start_matches("--").split_whitespace();
        match words.next() {
            Some("@time") => {
                self.time_ms = words
                    .next()
                    .and_then(|w| w.parse().ok())
                    .unwrap_or(self.time_ms)
            }
            Some("@restart") => {
                let text = serde_json::to_string(&self.engine.snapshot()).unwrap_or_default();
                let restored = serde_json::from_str::<Snapshot>(&text)
                    .map_err(|e| e.to_string())
                    .and_then(|s| Engine::restore(s).map_err(|e| e.to_string()));
                match restored {
                    Ok(engine) => self.engine = engine,
                    Err(e) => out.push_str(&format!("--> restore failed: {e}\n")),
                }
            }
            Some("@metrics") => {
                let id = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
                match self.engine.metrics(id) {
                    Some(m) => out.push_str(&format!(
                        "--> query {id}: in {}, late {}, failed {}{}\n",
                        m.records_in,
                        m.records_late,
                        m.records_failed,
                        m.last_error
                            .as_ref()
                            .map(|e| format!(" ({e})"))
                            .unwrap_or_default()
                    )),
                    None => out.push_str(&format!("--> no query {id}\n")),
                }
            }
            _ => {}
        }
    }

    fn statement(&mut self, sql: &str, out: &mut String) {
        let effects = match self.engine.execute(sql) {
            Ok(effects) => effects,
            Err(e) => {
                out.push_str(&format!("--> error: {e}\n"));
                return;
            }
        };
        for effect in effects {
            match effect {
                Effect::Append { stream, records } => self.append(&stream, records, out),
                Effect::QueryStarted { id, .. } => out.push_str(&format!("--> query {id}\n")),
                Effect::Rows { columns, rows } => {
                    out.push_str(&format!("--> {}\n", columns.join(" | ")));
                    for row in rows {
                        let cells: Vec<String> = row.iter().map(Value::to_string).collect();
                        out.push_str(&format!("--> {}\n", cells.join(" | ")));
                    }
                }
                Effect::QueryTerminated(id) => {
                    out.push_str(&format!("--> query {id} terminated\n"))
                }
                Effect::QueryPaused(id) => out.push_str(&format!("--> query {id} paused\n")),
                Effect::QueryResumed(id) => {
                    out.push_str(&format!("--> query {id} resumed\n"));
                    // The server feeds a resumed query from its offsets; replaying the whole log
                    // does the same, since every query skips offsets it has consumed.
                    let log: Vec<(String, Record)> = self
                        .log
                        .iter()
                        .flat_map(|(s, rs)| rs.iter().map(move |r| (s.clone(), r.clone())))
                        .collect();
                    let mut pending = VecDeque::new();
                    for (stream, record) in log {
                        self.feed(&stream, &record, &mut pending, out);
                    }
                    self.drain(pending, out);
                }
                Effect::CreateStream { .. }
                | Effect::DropStream(_)
                | Effect::ViewDropped { .. }
                | Effect::Nothing => {}
            }
        }
    }

    /// Appends records as the server would, and feeds them (and what queries append in turn)
    /// back to the engine, breadth first.
    fn append(&mut self, stream: &str, records: Vec<Value>, out: &mut String) {
        let pending: VecDeque<(String, Value)> = records
            .into_iter()
            .map(|r| (stream.to_string(), r))
            .collect();
        self.drain(pending, out);
    }

    /// Appends what is pending and feeds it, and what the queries append in turn.
    fn drain(&mut self, mut pending: VecDeque<(String, Value)>, out: &mut String) {
        while let Some((stream, value)) = pending.pop_front() {
            let log = self.log.entry(stream.clone()).or_default();
            let record = Record {
                event_time_ms: self.time_ms,
                offset: log.len() as u64,
                value,
            };
            log.push(record.clone());
            self.feed(&stream, &record, &mut pending, out);
        }
    }

    fn feed(
        &mut self,
        stream: &str,
        record: &Record,
        pending: &mut VecDeque<(String, Value)>,
        out: &mut String,
    ) {
        {
            for output in self.engine.push(stream, 0, record) {
                match &output.sink {
                    Sink::Client => {
                        out.push_str(&format!("--> q{} {}\n", output.query, output.change))
                    }
                    Sink::Stream(target) => {
                        out.push_str(&format!(
                            "--> q{} -> {target} {}\n",
                            output.query, output.change
                        ));
                        let json = output.change.to_record();
                        pending.push_back((target.clone(), json));
                    }
                    Sink::View(_) => {}
                }
            }
        }
    }
}
