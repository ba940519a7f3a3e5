//! `runnel-query`: Runnel's SQL — parse, plan, streaming operators, materialized views.
//!
//! Responsibility: turn statements into typed effects and continuous queries, and turn the
//! records of source streams into output changes (inserts and retractions), exactly by event
//! time: windows are half-open `[start, end)` aligned to the epoch, the watermark is the
//! highest event time seen minus the allowed lateness and never moves back, a window is final
//! when the watermark reaches its end, and a record for a final window is dropped and counted.
//!
//! Invariants: a query's state (groups, windows, join buffers, consumed offsets) serialises
//! with serde, so a checkpoint plus a replay from its offsets equals an uninterrupted run.
//!
//! Must never: do I/O, read a clock, spawn a thread or draw random numbers (ARCHITECTURE.md
//! §2): time and inputs are arguments, effects are returned values.
//! Fault model: any statement text and any record value may be wrong; the answer is a typed
//! error (statements) or a counted, skipped record (queries), never a panic.
#![deny(missing_docs)]

pub mod aggregate;
mod compile;
pub mod engine;
pub mod error;
pub mod expr;
pub mod function;
pub mod operator;
pub mod parse;
pub mod plan;
pub mod script;
pub mod value;

pub use engine::{Effect, Engine, Output, Sink, Snapshot};
pub use error::{Position, SqlError};
pub use operator::{ContinuousQuery, Limits, QueryMetrics, QueryState};
pub use parse::{parse, Emit, Statement};
pub use value::{Change, ChangeKind, Record, Row};
