//! Aggregate accumulators. Sources are append-only logs, so accumulators only add and merge
//! (session windows merge two groups' accumulators); retractions come from HAVING, not inputs.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::SqlError;
use crate::value::{arithmetic, float, total_order, Arithmetic};

/// The aggregate functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AggregateKind {
    /// COUNT(*) counts records; COUNT(x) counts non-NULL x.
    Count,
    /// SUM(x): NULL until a non-NULL x; integers stay integers.
    Sum,
    /// AVG(x): a double; NULL until a non-NULL x.
    Avg,
    /// MIN(x) over non-NULL values.
    Min,
    /// MAX(x) over non-NULL values.
    Max,
    /// TOPK(x, k): the k greatest non-NULL values, greatest first, as an array (HStreamDB's).
    TopK(u32),
}

/// The running state of one aggregate in one group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Accumulator {
    /// Records or non-NULL values counted.
    Count(i64),
    /// The sum so far (NULL before the first value).
    Sum(Value),
    /// Sum and count of the values.
    Avg {
        /// Sum of the values.
        sum: f64,
        /// How many.
        count: i64,
    },
    /// The least value so far (NULL before the first).
    Min(Value),
    /// The greatest value so far (NULL before the first).
    Max(Value),
    /// The k greatest values so far, greatest first.
    TopK {
        /// How many to keep.
        k: u32,
        /// At most k values, in descending order.
        values: Vec<Value>,
    },
}

impl Accumulator {
    /// An empty accumulator.
    pub fn new(kind: AggregateKind) -> Self {
        match kind {
            AggregateKind::Count => Accumulator::Count(0),
            AggregateKind::Sum => Accumulator::Sum(Value::Null),
            AggregateKind::Avg => Accumulator::Avg { sum: 0.0, count: 0 },
            AggregateKind::Min => Accumulator::Min(Value::Null),
            AggregateKind::Max => Accumulator::Max(Value::Null),
            AggregateKind::TopK(k) => Accumulator::TopK {
                k,
                values: Vec::new(),
            },
        }
    }

    /// Adds one input: `None` is COUNT(*)'s row without an argument.
    pub fn add(&mut self, arg: Option<&Value>) -> Result<(), SqlError> {
        let value = match arg {
            None => {
                if let Accumulator::Count(n) = self {
                    *n += 1;
                }
                return Ok(());
            }
            Some(Value::Null) => return Ok(()),
            Some(v) => v,
        };
        match self {
            Accumulator::Count(n) => *n += 1,
            Accumulator::Sum(sum) => {
                if !value.is_number() {
                    return Err(SqlError::mismatch("SUM", "number", value));
                }
                *sum = if sum.is_null() {
                    value.clone()
                } else {
                    arithmetic(Arithmetic::Add, sum, value)?
                };
            }
            Accumulator::Avg { sum, count } => {
                let f = value
                    .as_f64()
                    .ok_or_else(|| SqlError::mismatch("AVG", "number", value))?;
                *sum += f;
                *count += 1;
            }
            Accumulator::Min(min) => {
                if min.is_null() || total_order(value, min).is_lt() {
                    *min = value.clone();
                }
            }
            Accumulator::Max(max) => {
                if max.is_null() || total_order(value, max).is_gt() {
                    *max = value.clone();
                }
            }
            Accumulator::TopK { k, values } => {
                // Equal values keep their arrival order: the new one goes after them.
                let at = values.partition_point(|v| total_order(v, value).is_ge());
                let k = usize::try_from(*k).unwrap_or(usize::MAX);
                if at < k {
                    values.insert(at, value.clone());
                    values.truncate(k);
                }
                assert!(values.len() <= k, "TOPK keeps at most k values");
            }
        }
        Ok(())
    }

    /// Folds another accumulator of the same kind into this one (session merges).
    pub fn merge(&mut self, other: &Accumulator) -> Result<(), SqlError> {
        match (self, other) {
            (Accumulator::Count(a), Accumulator::Count(b)) => *a += b,
            (Accumulator::Avg { sum, count }, Accumulator::Avg { sum: s, count: c }) => {
                *sum += s;
                *count += c;
            }
            (me @ Accumulator::Sum(_), Accumulator::Sum(v))
            | (me @ Accumulator::Min(_), Accumulator::Min(v))
            | (me @ Accumulator::Max(_), Accumulator::Max(v)) => {
                if !v.is_null() {
                    me.add(Some(v))?;
                }
            }
            (me @ Accumulator::TopK { .. }, Accumulator::TopK { values, .. }) => {
                for v in values {
                    me.add(Some(v))?;
                }
            }
            (me, other) => panic!("merging accumulators of different kinds: {me:?} and {other:?}"),
        }
        Ok(())
    }

    /// The aggregate's current value.
    pub fn value(&self) -> Value {
        match self {
            Accumulator::Count(n) => Value::from(*n),
            Accumulator::Sum(v) | Accumulator::Min(v) | Accumulator::Max(v) => v.clone(),
            Accumulator::Avg { count: 0, .. } => Value::Null,
            Accumulator::Avg { sum, count } => float(*sum / *count as f64),
            Accumulator::TopK { values, .. } => Value::Array(values.clone()),
        }
    }
}
