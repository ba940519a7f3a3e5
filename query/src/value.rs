//! Values, records, rows and changes: schemaless JSON with SQL's NULL and three-valued logic.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};

use crate::error::SqlError;

/// One record of a source stream, as the server hands it to a query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The record's timestamp (milliseconds since the Unix epoch): its event time unless the
    /// stream names a time column.
    pub event_time_ms: i64,
    /// Its offset in its shard; a query ignores offsets it has already consumed.
    pub offset: u64,
    /// The payload: a JSON object (anything else is read as an object without fields).
    pub value: Value,
}

/// An output row: named columns in SELECT order.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Row(pub Vec<(String, Value)>);

impl Row {
    /// The value of a column, NULL when absent.
    pub fn get(&self, name: &str) -> &Value {
        self.0
            .iter()
            .find(|(column, _)| column == name)
            .map(|(_, value)| value)
            .unwrap_or(&Value::Null)
    }

    /// The row as a JSON object (what a persistent query appends to its output stream).
    pub fn to_json(&self) -> Value {
        Value::Object(self.0.iter().cloned().collect())
    }
}

impl std::fmt::Display for Row {
    /// `{"a":1,"b":"x"}` with the columns in SELECT order.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{{")?;
        for (index, (name, value)) in self.0.iter().enumerate() {
            if index > 0 {
                write!(f, ",")?;
            }
            write!(f, "{}:{}", Value::String(name.clone()), value)?;
        }
        write!(f, "}}")
    }
}

/// Whether a change adds a row or takes one back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeKind {
    /// The row is new; for a keyed change, it replaces the key's previous row (upsert).
    Insert,
    /// The key's row no longer holds (HAVING stopped holding, a session was merged away).
    Retract,
}

/// One output change of a continuous query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// Insert or retract.
    pub kind: ChangeKind,
    /// For aggregates: the group (window bounds and GROUP BY values, as JSON text); a row with
    /// a key replaces the previous row of that key. `None` for plain (append-only) results.
    pub key: Option<String>,
    /// The row.
    pub row: Row,
}

/// The column that marks a retraction in an output stream's record.
pub const RETRACT_COLUMN: &str = "_retract";

impl Change {
    /// The record a persistent query appends for this change: the row as a JSON object, with
    /// `"_retract": true` added for a retraction.
    pub fn to_record(&self) -> Value {
        let mut record = self.row.to_json();
        if self.kind == ChangeKind::Retract {
            if let Value::Object(map) = &mut record {
                map.insert(RETRACT_COLUMN.to_string(), Value::Bool(true));
            }
        }
        record
    }
}

impl std::fmt::Display for Change {
    /// `+ {row}` for an insert, `- {row}` for a retraction: the CLI's and the wire's form.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = match self.kind {
            ChangeKind::Insert => '+',
            ChangeKind::Retract => '-',
        };
        write!(f, "{sign} {}", self.row)
    }
}

/// A short description of a value for error messages: its type and the value.
pub fn describe(value: &Value) -> String {
    let kind = match value {
        Value::Null => return "NULL".to_string(),
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "double",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let mut text = value.to_string();
    if text.len() > 40 {
        let mut cut = 40;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    format!("{kind} {text}")
}

/// SQL truth of a value: NULL is unknown (`None`); only booleans are truths.
pub fn truth(value: &Value, context: &str) -> Result<Option<bool>, SqlError> {
    match value {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(*b)),
        other => Err(SqlError::mismatch(context, "boolean", other)),
    }
}

/// A value from a truth (unknown is NULL).
pub fn from_truth(truth: Option<bool>) -> Value {
    truth.map(Value::Bool).unwrap_or(Value::Null)
}

/// An integer or a double, for arithmetic.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Numeric {
    Int(i64),
    Float(f64),
}

pub(crate) fn numeric(value: &Value, context: &str) -> Result<Option<Numeric>, SqlError> {
    match value {
        Value::Null => Ok(None),
        Value::Number(n) => Ok(Some(match n.as_i64() {
            Some(i) => Numeric::Int(i),
            None => Numeric::Float(n.as_f64().unwrap_or(f64::NAN)),
        })),
        other => Err(SqlError::mismatch(context, "number", other)),
    }
}

/// A JSON number from a double; NaN and infinities (not representable in JSON) become NULL.
pub fn float(f: f64) -> Value {
    Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

fn as_f64(n: Numeric) -> f64 {
    match n {
        Numeric::Int(i) => i as f64,
        Numeric::Float(f) => f,
    }
}

/// The arithmetic operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arithmetic {
    /// `+`
    Add,
    /// `-`
    Subtract,
    /// `*`
    Multiply,
    /// `/` (integer division on two integers, like PostgreSQL)
    Divide,
    /// `%`
    Modulo,
}

/// `left op right` with NULL propagation; integers stay integers, overflow is an error.
pub fn arithmetic(op: Arithmetic, left: &Value, right: &Value) -> Result<Value, SqlError> {
    let symbol = match op {
        Arithmetic::Add => "+",
        Arithmetic::Subtract => "-",
        Arithmetic::Multiply => "*",
        Arithmetic::Divide => "/",
        Arithmetic::Modulo => "%",
    };
    let (Some(l), Some(r)) = (numeric(left, symbol)?, numeric(right, symbol)?) else {
        return Ok(Value::Null);
    };
    if let (Numeric::Int(a), Numeric::Int(b)) = (l, r) {
        let result = match op {
            Arithmetic::Add => a.checked_add(b),
            Arithmetic::Subtract => a.checked_sub(b),
            Arithmetic::Multiply => a.checked_mul(b),
            Arithmetic::Divide | Arithmetic::Modulo if b == 0 => {
                return Err(SqlError::Arithmetic("division by zero".into()))
            }
            Arithmetic::Divide => a.checked_div(b),
            Arithmetic::Modulo => a.checked_rem(b),
        };
        return result
            .map(|i| Value::Number(i.into()))
            .ok_or_else(|| SqlError::Arithmetic(format!("integer overflow in {a} {symbol} {b}")));
    }
    let (a, b) = (as_f64(l), as_f64(r));
    if matches!(op, Arithmetic::Divide | Arithmetic::Modulo) && b == 0.0 {
        return Err(SqlError::Arithmetic("division by zero".into()));
    }
    Ok(float(match op {
        Arithmetic::Add => a + b,
        Arithmetic::Subtract => a - b,
        Arithmetic::Multiply => a * b,
        Arithmetic::Divide => a / b,
        Arithmetic::Modulo => a % b,
    }))
}

/// SQL comparison: `None` when either side is NULL; numbers compare as numbers, strings,
/// booleans and JSON arrays/objects among their own kind; other mixes are type mismatches.
pub fn compare(left: &Value, right: &Value, context: &str) -> Result<Option<Ordering>, SqlError> {
    match (left, right) {
        (Value::Null, _) | (_, Value::Null) => Ok(None),
        (Value::Number(a), Value::Number(b)) => Ok(Some(compare_numbers(a, b))),
        (Value::String(a), Value::String(b)) => Ok(Some(a.cmp(b))),
        (Value::Bool(a), Value::Bool(b)) => Ok(Some(a.cmp(b))),
        (Value::Array(_), Value::Array(_)) | (Value::Object(_), Value::Object(_)) => {
            Ok(Some(left.to_string().cmp(&right.to_string())))
        }
        (a, b) => Err(SqlError::TypeMismatch {
            context: context.to_string(),
            expected: format!("a value comparable with {}", describe(a)),
            found: describe(b),
        }),
    }
}

fn compare_numbers(a: &Number, b: &Number) -> Ordering {
    match (a.as_i64(), b.as_i64()) {
        (Some(x), Some(y)) => x.cmp(&y),
        _ => {
            let (x, y) = (
                a.as_f64().unwrap_or(f64::NAN),
                b.as_f64().unwrap_or(f64::NAN),
            );
            x.partial_cmp(&y).unwrap_or(Ordering::Equal)
        }
    }
}

/// A total order for ORDER BY and MIN/MAX: NULL first, then booleans, numbers, strings, JSON.
pub fn total_order(left: &Value, right: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Number(_) => 2,
            Value::String(_) => 3,
            Value::Array(_) => 4,
            Value::Object(_) => 5,
        }
    }
    match compare(left, right, "ORDER BY") {
        Ok(Some(order)) => order,
        _ => rank(left).cmp(&rank(right)),
    }
}

/// The text of a value for string functions and `->>`: strings without quotes, others as JSON.
pub fn text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}
