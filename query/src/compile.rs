//! Expression compilation: sqlparser's expressions become our [`Expr`], with columns resolved
//! against the query's sources, aggregates collected, and constant parts evaluated at once
//! (so their type errors are reported when the statement is planned).

use sqlparser::ast::{self, Spanned};

use crate::aggregate::AggregateKind;
use crate::error::{Position, SqlError};
use crate::expr::{CastType, Context, Expr};
use crate::function::Function;
use crate::plan::{constant, AggregateCall, AggregatePlan, PlanSource, TOPK_K_MAX};
use crate::value::Arithmetic;

fn pos(node: &impl Spanned) -> Position {
    node.span().start.into()
}

pub(crate) fn aggregate_kind(f: &ast::Function) -> Option<AggregateKind> {
    Some(match f.name.to_string().to_ascii_uppercase().as_str() {
        "COUNT" => AggregateKind::Count,
        "SUM" => AggregateKind::Sum,
        "AVG" => AggregateKind::Avg,
        "MIN" => AggregateKind::Min,
        "MAX" => AggregateKind::Max,
        // k is read from the second argument; 0 until then.
        "TOPK" => AggregateKind::TopK(0),
        _ => return None,
    })
}

pub(crate) fn contains_aggregate(expr: &ast::Expr) -> bool {
    let text = expr.to_string().to_ascii_uppercase();
    ["COUNT(", "SUM(", "AVG(", "MIN(", "MAX(", "TOPK("]
        .iter()
        .any(|f| text.contains(f))
}

/// GROUP BY texts (to recognise them in SELECT and HAVING) and the plan being built.
pub(crate) struct AggregateBuilder {
    pub(crate) group_texts: Vec<String>,
    pub(crate) plan: AggregatePlan,
}

/// What names resolve to while compiling: the sources, whether a window is in scope, and the
/// aggregate being built (in SELECT and HAVING of an aggregate query).
pub(crate) struct Scope<'a> {
    pub(crate) sources: &'a [PlanSource],
    pub(crate) windowed: bool,
    pub(crate) aggregate: Option<&'a mut AggregateBuilder>,
}

impl Scope<'_> {
    fn field(&self, parts: &[ast::Ident], at: Position) -> Result<Expr, SqlError> {
        let names: Vec<String> = parts.iter().map(|i| i.value.clone()).collect();
        if let [only] = names.as_slice() {
            let lower = only.to_ascii_lowercase();
            if self.windowed && (lower == "window_start" || lower == "window_end") {
                return Ok(if lower == "window_start" {
                    Expr::WindowStart
                } else {
                    Expr::WindowEnd
                });
            }
        }
        // `s.a.b` where `s` names a source: that source's field `a.b`.
        if names.len() > 1 && self.sources.len() > 1 {
            if let Some(side) = self
                .sources
                .iter()
                .position(|s| s.alias.eq_ignore_ascii_case(&names[0]))
            {
                return self.checked(side, names[1..].to_vec(), at);
            }
        }
        if names.len() > 1
            && self.sources.len() == 1
            && self.sources[0].alias.eq_ignore_ascii_case(&names[0])
        {
            return self.checked(0, names[1..].to_vec(), at);
        }
        match self.sources.len() {
            0 => Err(SqlError::UnknownColumn {
                name: names.join("."),
                position: at,
                hint: " (no source here)".into(),
            }),
            1 => self.checked(0, names, at),
            _ => {
                let known: Vec<usize> = (0..self.sources.len())
                    .filter(|&i| {
                        self.sources[i]
                            .columns
                            .as_ref()
                            .is_some_and(|c| c.contains(&names[0]))
                    })
                    .collect();
                match known.as_slice() {
                    [side] => self.checked(*side, names, at),
                    _ => Err(SqlError::UnknownColumn {
                        name: names.join("."),
                        position: at,
                        hint: " (qualify it with a stream name in a join: s.column)".into(),
                    }),
                }
            }
        }
    }

    fn checked(&self, side: usize, path: Vec<String>, at: Position) -> Result<Expr, SqlError> {
        if let (Some(columns), Some(first)) = (&self.sources[side].columns, path.first()) {
            if !columns.contains(first) {
                return Err(SqlError::UnknownColumn {
                    name: first.clone(),
                    position: at,
                    hint: format!(", known columns: {}", columns.join(", ")),
                });
            }
        }
        Ok(Expr::Field { side, path })
    }

    fn boxed(&mut self, e: &ast::Expr) -> Result<Box<Expr>, SqlError> {
        Ok(Box::new(self.compile(e)?))
    }

    /// Compiles an expression; a part that reads no input is evaluated now, so its type errors
    /// are reported when the statement is planned.
    pub(crate) fn compile(&mut self, e: &ast::Expr) -> Result<Expr, SqlError> {
        let compiled = self.compile_inner(e)?;
        if compiled.is_constant() && !matches!(compiled, Expr::Literal(_)) {
            return Ok(Expr::Literal(compiled.eval(&Context::default())?));
        }
        Ok(compiled)
    }

    fn compile_inner(&mut self, e: &ast::Expr) -> Result<Expr, SqlError> {
        let at = pos(e);
        if let Some(builder) = self.aggregate.as_deref() {
            if let Some(i) = builder.group_texts.iter().position(|t| *t == e.to_string()) {
                return Ok(Expr::GroupKey(i));
            }
        }
        Ok(match e {
            ast::Expr::Identifier(i) => {
                if self.aggregate.is_some()
                    && !(self.windowed
                        && ["window_start", "window_end"]
                            .contains(&i.value.to_ascii_lowercase().as_str()))
                {
                    return Err(SqlError::UnknownColumn {
                        name: i.value.clone(),
                        position: at,
                        hint: " (not in GROUP BY nor inside an aggregate)".into(),
                    });
                }
                self.field(std::slice::from_ref(i), at)?
            }
            ast::Expr::CompoundIdentifier(parts) => {
                if self.aggregate.is_some() {
                    return Err(SqlError::UnknownColumn {
                        name: e.to_string(),
                        position: at,
                        hint: " (not in GROUP BY nor inside an aggregate)".into(),
                    });
                }
                self.field(parts, at)?
            }
            ast::Expr::Value(v) => literal(&v.value, at)?,
            ast::Expr::Nested(inner) => self.compile(inner)?,
            ast::Expr::UnaryOp { op, expr } => match op {
                ast::UnaryOperator::Not => Expr::Not(self.boxed(expr)?),
                ast::UnaryOperator::Minus => Expr::Negate(self.boxed(expr)?),
                ast::UnaryOperator::Plus => self.compile(expr)?,
                other => return Err(SqlError::unsupported(at, format!("operator {other}"))),
            },
            ast::Expr::BinaryOp { left, op, right } => {
                use ast::BinaryOperator as B;
                use std::cmp::Ordering::*;
                let (l, r) = (self.boxed(left)?, self.boxed(right)?);
                match op {
                    B::Plus => Expr::Arithmetic(Arithmetic::Add, l, r),
                    B::Minus => Expr::Arithmetic(Arithmetic::Subtract, l, r),
                    B::Multiply => Expr::Arithmetic(Arithmetic::Multiply, l, r),
                    B::Divide => Expr::Arithmetic(Arithmetic::Divide, l, r),
                    B::Modulo => Expr::Arithmetic(Arithmetic::Modulo, l, r),
                    B::Eq => Expr::Compare("=", vec![Equal], l, r),
                    B::NotEq => Expr::Compare("<>", vec![Less, Greater], l, r),
                    B::Lt => Expr::Compare("<", vec![Less], l, r),
                    B::LtEq => Expr::Compare("<=", vec![Less, Equal], l, r),
                    B::Gt => Expr::Compare(">", vec![Greater], l, r),
                    B::GtEq => Expr::Compare(">=", vec![Greater, Equal], l, r),
                    B::And => Expr::And(l, r),
                    B::Or => Expr::Or(l, r),
                    B::StringConcat => Expr::Concat(l, r),
                    B::Arrow => Expr::JsonGet {
                        target: l,
                        key: r,
                        text: false,
                    },
                    B::LongArrow => Expr::JsonGet {
                        target: l,
                        key: r,
                        text: true,
                    },
                    B::HashArrow => Expr::JsonPath {
                        target: l,
                        path: r,
                        text: false,
                    },
                    B::HashLongArrow => Expr::JsonPath {
                        target: l,
                        path: r,
                        text: true,
                    },
                    other => return Err(SqlError::unsupported(at, format!("operator {other}"))),
                }
            }
            ast::Expr::IsNull(inner) => Expr::IsNull(self.boxed(inner)?, false),
            ast::Expr::IsNotNull(inner) => Expr::IsNull(self.boxed(inner)?, true),
            ast::Expr::Case {
                operand,
                conditions,
                else_result,
                ..
            } => {
                let operand = match operand {
                    Some(o) => Some(self.boxed(o)?),
                    None => None,
                };
                let mut branches = Vec::new();
                for c in conditions {
                    branches.push((self.compile(&c.condition)?, self.compile(&c.result)?));
                }
                let otherwise = match else_result {
                    Some(e) => Some(self.boxed(e)?),
                    None => None,
                };
                Expr::Case {
                    operand,
                    branches,
                    otherwise,
                }
            }
            ast::Expr::Cast {
                expr, data_type, ..
            } => {
                let text = data_type.to_string().to_ascii_uppercase();
                let base = text
                    .split('(')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                let to = match base.as_str() {
                    "INT" | "INTEGER" | "BIGINT" | "SMALLINT" | "INT8" | "INT4" => {
                        CastType::Integer
                    }
                    "DOUBLE" | "DOUBLE PRECISION" | "FLOAT" | "REAL" | "NUMERIC" | "DECIMAL"
                    | "FLOAT8" => CastType::Double,
                    "STRING" | "TEXT" | "VARCHAR" | "CHAR" => CastType::String,
                    "BOOLEAN" | "BOOL" => CastType::Boolean,
                    "JSON" | "JSONB" => CastType::Json,
                    _ => return Err(SqlError::unsupported(at, format!("CAST to {text}"))),
                };
                Expr::Cast(self.boxed(expr)?, to)
            }
            ast::Expr::In {
                expr,
                target: ast::InTarget::List(list),
                negated,
                ..
            } => {
                let list = list
                    .iter()
                    .map(|x| self.compile(x))
                    .collect::<Result<_, _>>()?;
                Expr::InList(self.boxed(expr)?, list, *negated)
            }
            ast::Expr::Between {
                expr,
                negated,
                low,
                high,
            } => Expr::Between(
                self.boxed(expr)?,
                self.boxed(low)?,
                self.boxed(high)?,
                *negated,
            ),
            ast::Expr::Like {
                negated,
                expr,
                pattern,
                escape_char: None,
                ..
            }
            | ast::Expr::ILike {
                negated,
                expr,
                pattern,
                escape_char: None,
                ..
            } => Expr::Like {
                target: self.boxed(expr)?,
                pattern: self.boxed(pattern)?,
                negated: *negated,
                case_insensitive: matches!(e, ast::Expr::ILike { .. }),
            },
            ast::Expr::Function(f) => self.function(f, at)?,
            ast::Expr::Substring {
                expr,
                substring_from,
                substring_for,
                ..
            } => {
                let mut args = vec![self.compile(expr)?];
                args.push(match substring_from {
                    Some(from) => self.compile(from)?,
                    None => Expr::Literal(serde_json::Value::from(1)),
                });
                if let Some(length) = substring_for {
                    args.push(self.compile(length)?);
                }
                Expr::Call(Function::Substr, args)
            }
            ast::Expr::Ceil {
                expr,
                field: ast::CeilFloorKind::DateTimeField(ast::DateTimeField::NoDateTime),
            } => Expr::Call(Function::Ceil, vec![self.compile(expr)?]),
            ast::Expr::Floor {
                expr,
                field: ast::CeilFloorKind::DateTimeField(ast::DateTimeField::NoDateTime),
            } => Expr::Call(Function::Floor, vec![self.compile(expr)?]),
            ast::Expr::Trim {
                expr,
                trim_where: None,
                trim_what: None,
                trim_characters: None,
            } => Expr::Call(Function::Trim, vec![self.compile(expr)?]),
            other => return Err(SqlError::unsupported(at, format!("expression `{other}`"))),
        })
    }

    fn function(&mut self, f: &ast::Function, at: Position) -> Result<Expr, SqlError> {
        let name = f.name.to_string();
        let args: Vec<&ast::FunctionArgExpr> = match &f.args {
            ast::FunctionArguments::None => Vec::new(),
            ast::FunctionArguments::List(list) => {
                if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
                    return Err(SqlError::unsupported(
                        at,
                        format!("DISTINCT or clauses in {name}(...)"),
                    ));
                }
                list.args
                    .iter()
                    .map(|a| match a {
                        ast::FunctionArg::Unnamed(e) => Ok(e),
                        _ => Err(SqlError::unsupported(at, "named arguments")),
                    })
                    .collect::<Result<_, _>>()?
            }
            ast::FunctionArguments::Subquery(_) => {
                return Err(SqlError::unsupported(at, "subqueries"))
            }
        };
        if f.over.is_some() || f.filter.is_some() {
            return Err(SqlError::unsupported(at, "OVER / FILTER"));
        }
        if let Some(mut kind) = aggregate_kind(f) {
            if self.aggregate.is_none() {
                return Err(SqlError::unsupported(
                    at,
                    format!("{name} here (aggregates belong in SELECT and HAVING)"),
                ));
            }
            let mut args = args.as_slice();
            if let (AggregateKind::TopK(_), [value, ast::FunctionArgExpr::Expr(k)]) = (kind, args) {
                let k = constant(k)?
                    .as_u64()
                    .and_then(|k| u32::try_from(k).ok())
                    .filter(|k| (1..=TOPK_K_MAX).contains(k))
                    .ok_or_else(|| {
                        SqlError::syntax(at, format!("TOPK's k is an integer in 1..={TOPK_K_MAX}"))
                    })?;
                kind = AggregateKind::TopK(k);
                args = std::slice::from_ref(value);
            }
            let arg = match args {
                [ast::FunctionArgExpr::Wildcard] if kind == AggregateKind::Count => None,
                [ast::FunctionArgExpr::Expr(e)] if kind != AggregateKind::TopK(0) => {
                    // The argument reads the input record, not the group.
                    let sources = self.sources;
                    Some(
                        Scope {
                            sources,
                            windowed: self.windowed,
                            aggregate: None,
                        }
                        .compile(e)?,
                    )
                }
                _ if matches!(kind, AggregateKind::TopK(_)) => {
                    return Err(SqlError::syntax(at, "TOPK takes a value and k: TOPK(x, 3)"))
                }
                _ => return Err(SqlError::syntax(at, format!("{name} takes one argument"))),
            };
            let calls = &mut self.aggregate.as_deref_mut().map(|b| &mut b.plan.calls);
            let Some(calls) = calls else {
                return Err(SqlError::unsupported(
                    at,
                    "aggregate outside an aggregate query",
                ));
            };
            calls.push(AggregateCall { kind, arg });
            return Ok(Expr::Aggregate(calls.len() - 1));
        }
        let (function, min, max) = Function::from_name(&name)
            .ok_or_else(|| SqlError::syntax(at, format!("unknown function {name}")))?;
        if args.len() < min || args.len() > max {
            return Err(SqlError::syntax(
                at,
                format!("{name} takes {min}..{max} arguments, got {}", args.len()),
            ));
        }
        let mut compiled = Vec::new();
        for a in args {
            match a {
                ast::FunctionArgExpr::Expr(e) => compiled.push(self.compile(e)?),
                _ => return Err(SqlError::syntax(at, format!("bad argument to {name}"))),
            }
        }
        Ok(Expr::Call(function, compiled))
    }
}

fn literal(v: &ast::Value, at: Position) -> Result<Expr, SqlError> {
    Ok(Expr::Literal(match v {
        ast::Value::Number(n, _) => match n.parse::<i64>() {
            Ok(i) => serde_json::Value::from(i),
            Err(_) => crate::value::float(
                n.parse::<f64>()
                    .map_err(|_| SqlError::syntax(at, format!("bad number {n}")))?,
            ),
        },
        ast::Value::SingleQuotedString(s) | ast::Value::DoubleQuotedString(s) => {
            serde_json::Value::String(s.clone())
        }
        ast::Value::Boolean(b) => serde_json::Value::Bool(*b),
        ast::Value::Null => serde_json::Value::Null,
        other => return Err(SqlError::unsupported(at, format!("literal {other}"))),
    }))
}
