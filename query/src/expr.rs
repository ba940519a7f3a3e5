//! Compiled scalar expressions and their evaluation over one input tuple.

use std::cmp::Ordering;

use serde_json::Value;

use crate::error::SqlError;
use crate::function::Function;
use crate::value::{self, arithmetic, compare, from_truth, truth, Arithmetic};

/// A scalar expression, resolved against a query's sources.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A constant.
    Literal(Value),
    /// A field of one source's record (`side` indexes the FROM/JOIN sources), by path
    /// (`a.b.c` reads field `a`, then `b`, then `c`); missing fields are NULL.
    Field {
        /// Which source.
        side: usize,
        /// Field names from the record's top level.
        path: Vec<String>,
    },
    /// The whole record of a source (`SELECT s.*`, `t` used as a value).
    Record(usize),
    /// `window_start` (milliseconds) of the window the tuple is in.
    WindowStart,
    /// `window_end` (milliseconds, exclusive).
    WindowEnd,
    /// The i-th GROUP BY value (in the projection and HAVING of an aggregate).
    GroupKey(usize),
    /// The i-th aggregate's current value.
    Aggregate(usize),
    /// `NOT e`
    Not(Box<Expr>),
    /// `-e`
    Negate(Box<Expr>),
    /// Arithmetic.
    Arithmetic(Arithmetic, Box<Expr>, Box<Expr>),
    /// `=`, `<>`, `<`, `<=`, `>`, `>=` (the accepted orderings).
    Compare(&'static str, Vec<Ordering>, Box<Expr>, Box<Expr>),
    /// `AND` (three-valued).
    And(Box<Expr>, Box<Expr>),
    /// `OR` (three-valued).
    Or(Box<Expr>, Box<Expr>),
    /// `||`
    Concat(Box<Expr>, Box<Expr>),
    /// `e -> k` (`text` false) and `e ->> k` (`text` true): field by name or element by index.
    JsonGet {
        /// The object or array.
        target: Box<Expr>,
        /// Field name or index.
        key: Box<Expr>,
        /// `->>`: the result as text.
        text: bool,
    },
    /// `e #> '{a,0,b}'` and `e #>> '{a,0,b}'`: a path of names and indexes.
    JsonPath {
        /// The object or array.
        target: Box<Expr>,
        /// The path, PostgreSQL's text-array form.
        path: Box<Expr>,
        /// `#>>`: the result as text.
        text: bool,
    },
    /// `e IS [NOT] NULL`
    IsNull(Box<Expr>, bool),
    /// `CASE [operand] WHEN … THEN … [ELSE …] END`
    Case {
        /// The simple-CASE operand.
        operand: Option<Box<Expr>>,
        /// Conditions (or values compared with the operand) and results.
        branches: Vec<(Expr, Expr)>,
        /// The ELSE result (NULL when absent).
        otherwise: Option<Box<Expr>>,
    },
    /// `CAST(e AS t)` and `e::t`.
    Cast(Box<Expr>, CastType),
    /// `e [NOT] IN (list)`
    InList(Box<Expr>, Vec<Expr>, bool),
    /// `e [NOT] BETWEEN low AND high`
    Between(Box<Expr>, Box<Expr>, Box<Expr>, bool),
    /// `e [NOT] LIKE pattern` (`%`, `_`), `ILIKE` when the flag says case-insensitive.
    Like {
        /// The string.
        target: Box<Expr>,
        /// The pattern.
        pattern: Box<Expr>,
        /// NOT LIKE.
        negated: bool,
        /// ILIKE.
        case_insensitive: bool,
    },
    /// A scalar function call.
    Call(Function, Vec<Expr>),
}

/// The target types of CAST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CastType {
    /// INTEGER, INT, BIGINT.
    Integer,
    /// DOUBLE, FLOAT, REAL, NUMERIC, DECIMAL.
    Double,
    /// STRING, TEXT, VARCHAR.
    String,
    /// BOOLEAN, BOOL.
    Boolean,
    /// JSON: a string is parsed as JSON text; other values stay as they are.
    Json,
}

/// What an expression reads: the sources' records (one per side, `None` for the missing side of
/// an outer join), the window, the group's keys and aggregate values.
#[derive(Debug, Clone, Copy, Default)]
pub struct Context<'a> {
    /// One record per source.
    pub sides: &'a [Option<&'a Value>],
    /// `[window_start, window_end)` in milliseconds.
    pub window: Option<(i64, i64)>,
    /// GROUP BY values.
    pub keys: &'a [Value],
    /// Aggregate values.
    pub aggregates: &'a [Value],
}

impl Expr {
    /// Evaluates the expression; NULL propagates, type errors are errors.
    pub fn eval(&self, context: &Context<'_>) -> Result<Value, SqlError> {
        Ok(match self {
            Expr::Literal(v) => v.clone(),
            Expr::Field { side, path } => {
                let mut current = match context.sides.get(*side).copied().flatten() {
                    Some(record) => record,
                    None => return Ok(Value::Null),
                };
                for name in path {
                    match current.get(name.as_str()) {
                        Some(next) => current = next,
                        None => return Ok(Value::Null),
                    }
                }
                current.clone()
            }
            Expr::Record(side) => context
                .sides
                .get(*side)
                .copied()
                .flatten()
                .cloned()
                .unwrap_or(Value::Null),
            Expr::WindowStart => context
                .window
                .map(|(start, _)| Value::from(start))
                .unwrap_or(Value::Null),
            Expr::WindowEnd => context
                .window
                .map(|(_, end)| Value::from(end))
                .unwrap_or(Value::Null),
            Expr::GroupKey(i) => context.keys.get(*i).cloned().unwrap_or(Value::Null),
            Expr::Aggregate(i) => context.aggregates.get(*i).cloned().unwrap_or(Value::Null),
            Expr::Not(e) => from_truth(truth(&e.eval(context)?, "NOT")?.map(|b| !b)),
            Expr::Negate(e) => {
                arithmetic(Arithmetic::Subtract, &Value::from(0), &e.eval(context)?)?
            }
            Expr::Arithmetic(op, l, r) => arithmetic(*op, &l.eval(context)?, &r.eval(context)?)?,
            Expr::Compare(symbol, accepted, l, r) => {
                let order = compare(&l.eval(context)?, &r.eval(context)?, symbol)?;
                from_truth(order.map(|o| accepted.contains(&o)))
            }
            Expr::And(l, r) => {
                let left = truth(&l.eval(context)?, "AND")?;
                if left == Some(false) {
                    return Ok(Value::Bool(false));
                }
                let right = truth(&r.eval(context)?, "AND")?;
                from_truth(match (left, right) {
                    (_, Some(false)) => Some(false),
                    (Some(true), Some(true)) => Some(true),
                    _ => None,
                })
            }
            Expr::Or(l, r) => {
                let left = truth(&l.eval(context)?, "OR")?;
                if left == Some(true) {
                    return Ok(Value::Bool(true));
                }
                let right = truth(&r.eval(context)?, "OR")?;
                from_truth(match (left, right) {
                    (_, Some(true)) => Some(true),
                    (Some(false), Some(false)) => Some(false),
                    _ => None,
                })
            }
            Expr::Concat(l, r) => match (
                value::text(&l.eval(context)?),
                value::text(&r.eval(context)?),
            ) {
                (Some(a), Some(b)) => Value::String(a + &b),
                _ => Value::Null,
            },
            Expr::JsonGet { target, key, text } => {
                let target = target.eval(context)?;
                let key = key.eval(context)?;
                let found = match (&target, &key) {
                    (Value::Object(map), Value::String(name)) => map.get(name).cloned(),
                    (Value::Array(items), Value::Number(n)) => n
                        .as_i64()
                        .and_then(|i| index(items.len(), i))
                        .and_then(|i| items.get(i).cloned()),
                    _ => None,
                };
                as_text(found.unwrap_or(Value::Null), *text)?
            }
            Expr::JsonPath { target, path, text } => {
                let mut current = target.eval(context)?;
                let path = path.eval(context)?;
                let Value::String(path) = path else {
                    return match path {
                        Value::Null => Ok(Value::Null),
                        other => Err(SqlError::mismatch(
                            "#>",
                            "a path string like '{a,0,b}'",
                            &other,
                        )),
                    };
                };
                let inner = path.trim().trim_start_matches('{').trim_end_matches('}');
                for step in inner.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    current = match current {
                        Value::Object(mut map) => map.remove(step).unwrap_or(Value::Null),
                        Value::Array(mut items) => step
                            .parse::<i64>()
                            .ok()
                            .and_then(|i| index(items.len(), i))
                            .map(|i| items.swap_remove(i))
                            .unwrap_or(Value::Null),
                        _ => Value::Null,
                    };
                }
                as_text(current, *text)?
            }
            Expr::IsNull(e, negated) => Value::Bool(e.eval(context)?.is_null() != *negated),
            Expr::Case {
                operand,
                branches,
                otherwise,
            } => {
                let operand = match operand {
                    Some(e) => Some(e.eval(context)?),
                    None => None,
                };
                for (condition, result) in branches {
                    let condition = condition.eval(context)?;
                    let holds = match &operand {
                        Some(value) => compare(value, &condition, "CASE")? == Some(Ordering::Equal),
                        None => truth(&condition, "CASE WHEN")? == Some(true),
                    };
                    if holds {
                        return result.eval(context);
                    }
                }
                match otherwise {
                    Some(e) => e.eval(context)?,
                    None => Value::Null,
                }
            }
            Expr::Cast(e, to) => cast(e.eval(context)?, *to)?,
            Expr::InList(e, list, negated) => {
                let value = e.eval(context)?;
                let mut unknown = value.is_null();
                let mut found = false;
                for item in list {
                    match compare(&value, &item.eval(context)?, "IN")? {
                        Some(Ordering::Equal) => found = true,
                        Some(_) => {}
                        None => unknown = true,
                    }
                }
                from_truth(if found {
                    Some(!negated)
                } else if unknown {
                    None
                } else {
                    Some(*negated)
                })
            }
            Expr::Between(e, low, high, negated) => {
                let value = e.eval(context)?;
                let above =
                    compare(&value, &low.eval(context)?, "BETWEEN")?.map(|o| o != Ordering::Less);
                let below = compare(&value, &high.eval(context)?, "BETWEEN")?
                    .map(|o| o != Ordering::Greater);
                let inside = match (above, below) {
                    (Some(false), _) | (_, Some(false)) => Some(false),
                    (Some(true), Some(true)) => Some(true),
                    _ => None,
                };
                from_truth(inside.map(|b| b != *negated))
            }
            Expr::Like {
                target,
                pattern,
                negated,
                case_insensitive,
            } => match (target.eval(context)?, pattern.eval(context)?) {
                (Value::String(s), Value::String(p)) => {
                    let matched = if *case_insensitive {
                        like(&s.to_lowercase(), &p.to_lowercase())
                    } else {
                        like(&s, &p)
                    };
                    Value::Bool(matched != *negated)
                }
                (Value::Null, _) | (_, Value::Null) => Value::Null,
                (other, _) => return Err(SqlError::mismatch("LIKE", "string", &other)),
            },
            Expr::Call(function, args) => {
                let mut values = Vec::with_capacity(args.len());
                for arg in args {
                    values.push(arg.eval(context)?);
                }
                function.call(&values)?
            }
        })
    }

    /// Whether the expression reads no input (so it can be evaluated once, at plan time).
    pub fn is_constant(&self) -> bool {
        let mut constant = true;
        self.visit(&mut |e| {
            if matches!(
                e,
                Expr::Field { .. }
                    | Expr::Record(_)
                    | Expr::WindowStart
                    | Expr::WindowEnd
                    | Expr::GroupKey(_)
                    | Expr::Aggregate(_)
            ) {
                constant = false;
            }
        });
        constant
    }

    /// Calls `f` on this expression and every subexpression.
    pub fn visit(&self, f: &mut impl FnMut(&Expr)) {
        f(self);
        match self {
            Expr::Not(e) | Expr::Negate(e) | Expr::IsNull(e, _) | Expr::Cast(e, _) => e.visit(f),
            Expr::Arithmetic(_, l, r)
            | Expr::Compare(_, _, l, r)
            | Expr::And(l, r)
            | Expr::Or(l, r)
            | Expr::Concat(l, r)
            | Expr::JsonGet {
                target: l, key: r, ..
            }
            | Expr::JsonPath {
                target: l, path: r, ..
            }
            | Expr::Like {
                target: l,
                pattern: r,
                ..
            } => {
                l.visit(f);
                r.visit(f);
            }
            Expr::Case {
                operand,
                branches,
                otherwise,
            } => {
                if let Some(e) = operand {
                    e.visit(f);
                }
                for (c, r) in branches {
                    c.visit(f);
                    r.visit(f);
                }
                if let Some(e) = otherwise {
                    e.visit(f);
                }
            }
            Expr::InList(e, list, _) => {
                e.visit(f);
                list.iter().for_each(|x| x.visit(f));
            }
            Expr::Between(e, l, h, _) => {
                e.visit(f);
                l.visit(f);
                h.visit(f);
            }
            Expr::Call(_, args) => args.iter().for_each(|x| x.visit(f)),
            Expr::Literal(_)
            | Expr::Field { .. }
            | Expr::Record(_)
            | Expr::WindowStart
            | Expr::WindowEnd
            | Expr::GroupKey(_)
            | Expr::Aggregate(_) => {}
        }
    }
}

/// A JSON array index, negative from the end (PostgreSQL's `->` does the same).
fn index(len: usize, i: i64) -> Option<usize> {
    let len = i64::try_from(len).ok()?;
    let i = if i < 0 { len + i } else { i };
    (0..len)
        .contains(&i)
        .then(|| usize::try_from(i).ok())
        .flatten()
}

fn as_text(value: Value, text: bool) -> Result<Value, SqlError> {
    Ok(if text {
        value::text(&value)
            .map(Value::String)
            .unwrap_or(Value::Null)
    } else {
        value
    })
}

/// CAST: NULL stays NULL; a string that does not parse is a type mismatch.
pub fn cast(value: Value, to: CastType) -> Result<Value, SqlError> {
    let fail = |v: &Value, t: &str| SqlError::mismatch("CAST", t, v);
    Ok(match (to, value) {
        (_, Value::Null) => Value::Null,
        // A string cast to JSON is parsed: `'{"a": 1}'::json` is an object.
        (CastType::Json, Value::String(s)) => match serde_json::from_str(&s) {
            Ok(v) => v,
            Err(_) => return Err(fail(&Value::String(s), "JSON text")),
        },
        (CastType::Json, v) => v,
        (CastType::Integer, Value::Number(n)) => match n.as_i64() {
            Some(i) => Value::from(i),
            None => {
                let f = n.as_f64().unwrap_or(f64::NAN).trunc();
                if f.is_finite() && f.abs() < 9.2e18 {
                    Value::from(f as i64)
                } else {
                    return Err(fail(&Value::Number(n), "integer"));
                }
            }
        },
        (CastType::Integer, Value::String(s)) => match s.trim().parse::<i64>() {
            Ok(i) => Value::from(i),
            Err(_) => return Err(fail(&Value::String(s), "integer")),
        },
        (CastType::Integer, Value::Bool(b)) => Value::from(i64::from(b)),
        (CastType::Double, Value::Number(n)) => value::float(n.as_f64().unwrap_or(f64::NAN)),
        (CastType::Double, Value::String(s)) => match s.trim().parse::<f64>() {
            Ok(f) => value::float(f),
            Err(_) => return Err(fail(&Value::String(s), "double")),
        },
        (CastType::String, v) => Value::String(value::text(&v).unwrap_or_default()),
        (CastType::Boolean, Value::Bool(b)) => Value::Bool(b),
        (CastType::Boolean, Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "t" | "yes" | "1" => Value::Bool(true),
            "false" | "f" | "no" | "0" => Value::Bool(false),
            _ => return Err(fail(&Value::String(s), "boolean")),
        },
        (CastType::Boolean, Value::Number(n)) => Value::Bool(n.as_f64() != Some(0.0)),
        (t, v) => return Err(fail(&v, &format!("{t:?}").to_lowercase())),
    })
}

/// SQL LIKE: `%` any run, `_` one character.
fn like(text: &str, pattern: &str) -> bool {
    let text: Vec<char> = text.chars().collect();
    let pattern: Vec<char> = pattern.chars().collect();
    // Iterative matching with one backtrack point (the last `%`), linear in practice.
    let (mut t, mut p) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '_' || pattern[p] == text[t]) && pattern[p] != '%' {
            t += 1;
            p += 1;
        } else if p < pattern.len() && pattern[p] == '%' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '%')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(v: Value) -> Box<Expr> {
        Box::new(Expr::Literal(v))
    }

    #[test]
    fn like_matches_sql_patterns() {
        for (text, pattern, expected) in [
            ("runnel", "run%", true),
            ("runnel", "%nel", true),
            ("runnel", "r_nn_l", true),
            ("runnel", "r%n%l", true),
            ("runnel", "run", false),
            ("", "%", true),
            ("abc", "a%c%", true),
            ("abc", "%b", false),
        ] {
            assert_eq!(like(text, pattern), expected, "{text} LIKE {pattern}");
        }
    }

    /// SQL's three-valued AND/OR: unknown AND false = false, unknown OR true = true.
    #[test]
    fn three_valued_logic() {
        let (t, f, n) = (Value::Bool(true), Value::Bool(false), Value::Null);
        let cases = [
            (n.clone(), f.clone(), f.clone(), n.clone()),
            (n.clone(), t.clone(), n.clone(), t.clone()),
            (n.clone(), n.clone(), n.clone(), n.clone()),
            (t.clone(), f.clone(), f.clone(), t.clone()),
        ];
        let context = Context::default();
        for (a, b, and, or) in cases {
            let e = Expr::And(lit(a.clone()), lit(b.clone()));
            assert_eq!(e.eval(&context), Ok(and), "{a} AND {b}");
            let e = Expr::Or(lit(a.clone()), lit(b.clone()));
            assert_eq!(e.eval(&context), Ok(or), "{a} OR {b}");
        }
        assert_eq!(Expr::Not(lit(n)).eval(&context), Ok(Value::Null));
    }

    #[test]
    fn missing_fields_are_null_and_paths_walk_objects() {
        let record = serde_json::json!({"a": {"b": [1, {"c": "x"}]}});
        let sides = [Some(&record)];
        let context = Context {
            sides: &sides,
            ..Context::default()
        };
        let field = |path: &[&str]| Expr::Field {
            side: 0,
            path: path.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(field(&["nope"]).eval(&context), Ok(Value::Null));
        assert_eq!(
            field(&["a", "nope", "deeper"]).eval(&context),
            Ok(Value::Null)
        );
        let path = Expr::JsonPath {
            target: Box::new(field(&["a"])),
            path: lit(Value::from("{b,1,c}")),
            text: true,
        };
        assert_eq!(path.eval(&context), Ok(Value::from("x")));
        let last = Expr::JsonGet {
            target: Box::new(field(&["a", "b"])),
            key: lit(Value::from(-2)),
            text: false,
        };
        assert_eq!(last.eval(&context), Ok(Value::from(1)));
    }

    #[test]
    fn casts() {
        assert_eq!(
            cast(Value::from("42"), CastType::Integer),
            Ok(Value::from(42))
        );
        assert_eq!(
            cast(Value::from(2.9), CastType::Integer),
            Ok(Value::from(2))
        );
        assert_eq!(
            cast(Value::from(1), CastType::Double),
            Ok(serde_json::json!(1.0))
        );
        assert_eq!(
            cast(Value::from("yes"), CastType::Boolean),
            Ok(Value::Bool(true))
        );
        assert_eq!(cast(Value::Null, CastType::Integer), Ok(Value::Null));
        assert_eq!(
            cast(Value::from("[1]"), CastType::Json),
            Ok(serde_json::json!([1]))
        );
        assert!(matches!(
            cast(Value::from("x"), CastType::Integer),
            Err(SqlError::TypeMismatch { .. })
        ));
    }
}
