//! Scalar functions: HStreamDB's numeric, type-test, string and date functions, and SQL's NULL
//! helpers. Every function returns NULL for a NULL argument, except the NULL helpers.

use serde_json::Value;

use crate::error::SqlError;
use crate::value::{self, float, numeric, Numeric};

/// A scalar function. `docs/sql.md` lists them with their meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// ABS(x)
    Abs,
    /// CEIL(x)
    Ceil,
    /// FLOOR(x)
    Floor,
    /// ROUND(x)
    Round,
    /// SQRT(x)
    Sqrt,
    /// EXP(x)
    Exp,
    /// LN(x)
    Ln,
    /// LOG2(x)
    Log2,
    /// LOG10(x)
    Log10,
    /// SIGN(x)
    Sign,
    /// SIN(x)
    Sin,
    /// COS(x)
    Cos,
    /// TAN(x)
    Tan,
    /// IS_INT(x)
    IsInt,
    /// IS_FLOAT(x)
    IsFloat,
    /// IS_NUM(x)
    IsNum,
    /// IS_BOOL(x)
    IsBool,
    /// IS_STR(x)
    IsStr,
    /// IS_MAP(x)
    IsMap,
    /// IS_ARRAY(x)
    IsArray,
    /// TO_STR(x)
    ToStr,
    /// TO_LOWER(s), LOWER(s)
    ToLower,
    /// TO_UPPER(s), UPPER(s)
    ToUpper,
    /// TRIM(s)
    Trim,
    /// LEFT_TRIM(s), LTRIM(s)
    LeftTrim,
    /// RIGHT_TRIM(s), RTRIM(s)
    RightTrim,
    /// REVERSE(s)
    Reverse,
    /// STRLEN(s), LENGTH(s): characters.
    Strlen,
    /// CONCAT(a, b, …): NULLs skipped.
    Concat,
    /// SUBSTR(s, from[, len]): 1-based.
    Substr,
    /// COALESCE(a, b, …)
    Coalesce,
    /// IFNULL(a, b)
    IfNull,
    /// NULLIF(a, b)
    NullIf,
    /// DATE_STR(ms): 'YYYY-MM-DD' (UTC).
    DateStr,
    /// TIME_STR(ms): 'HH:MM:SS.mmm' (UTC).
    TimeStr,
    /// TIMESTAMP_STR(ms): 'YYYY-MM-DDTHH:MM:SS.mmmZ'.
    TimestampStr,
    /// YEAR(ms)
    Year,
    /// MONTH(ms)
    Month,
    /// DAY(ms)
    Day,
    /// HOUR(ms)
    Hour,
    /// MINUTE(ms)
    Minute,
    /// SECOND(ms)
    Second,
    /// DATE_TRUNC('second'|'minute'|'hour'|'day', ms)
    DateTrunc,
}

impl Function {
    /// The function of a name (case-insensitive) with its accepted argument counts.
    pub fn from_name(name: &str) -> Option<(Function, usize, usize)> {
        use Function::*;
        Some(match name.to_ascii_uppercase().as_str() {
            "ABS" => (Abs, 1, 1),
            "CEIL" | "CEILING" => (Ceil, 1, 1),
            "FLOOR" => (Floor, 1, 1),
            "ROUND" => (Round, 1, 1),
            "SQRT" => (Sqrt, 1, 1),
            "EXP" => (Exp, 1, 1),
            "LN" => (Ln, 1, 1),
            "LOG2" => (Log2, 1, 1),
            "LOG10" => (Log10, 1, 1),
            "SIGN" => (Sign, 1, 1),
            "SIN" => (Sin, 1, 1),
            "COS" => (Cos, 1, 1),
            "TAN" => (Tan, 1, 1),
            "IS_INT" => (IsInt, 1, 1),
            "IS_FLOAT" => (IsFloat, 1, 1),
            "IS_NUM" => (IsNum, 1, 1),
            "IS_BOOL" => (IsBool, 1, 1),
            "IS_STR" => (IsStr, 1, 1),
            "IS_MAP" => (IsMap, 1, 1),
            "IS_ARRAY" => (IsArray, 1, 1),
            "TO_STR" => (ToStr, 1, 1),
            "TO_LOWER" | "LOWER" => (ToLower, 1, 1),
            "TO_UPPER" | "UPPER" => (ToUpper, 1, 1),
            "TRIM" => (Trim, 1, 1),
            "LEFT_TRIM" | "LTRIM" => (LeftTrim, 1, 1),
            "RIGHT_TRIM" | "RTRIM" => (RightTrim, 1, 1),
            "REVERSE" => (Reverse, 1, 1),
            "STRLEN" | "LENGTH" | "CHAR_LENGTH" => (Strlen, 1, 1),
            "CONCAT" => (Concat, 1, 64),
            "SUBSTR" => (Substr, 2, 3),
            "COALESCE" => (Coalesce, 1, 64),
            "IFNULL" => (IfNull, 2, 2),
            "NULLIF" => (NullIf, 2, 2),
            "DATE_STR" => (DateStr, 1, 1),
            "TIME_STR" => (TimeStr, 1, 1),
            "TIMESTAMP_STR" => (TimestampStr, 1, 1),
            "YEAR" => (Year, 1, 1),
            "MONTH" => (Month, 1, 1),
            "DAY" => (Day, 1, 1),
            "HOUR" => (Hour, 1, 1),
            "MINUTE" => (Minute, 1, 1),
            "SECOND" => (Second, 1, 1),
            "DATE_TRUNC" => (DateTrunc, 2, 2),
            _ => return None,
        })
    }

    /// The SQL name (for error messages).
    pub fn name(self) -> String {
        let debug = format!("{self:?}");
        let mut name = String::new();
        for (i, c) in debug.chars().enumerate() {
            if c.is_uppercase() && i > 0 {
                name.push('_');
            }
            name.push(c.to_ascii_uppercase());
        }
        name
    }

    /// Applies the function to evaluated arguments (their count was checked at plan time).
    pub fn call(self, args: &[Value]) -> Result<Value, SqlError> {
        use Function::*;
        let name = self.name();
        let first = args.first().cloned().unwrap_or(Value::Null);
        match self {
            Coalesce => {
                return Ok(args
                    .iter()
                    .find(|v| !v.is_null())
                    .cloned()
                    .unwrap_or(Value::Null))
            }
            IfNull => {
                return Ok(if first.is_null() {
                    args.get(1).cloned().unwrap_or(Value::Null)
                } else {
                    first
                })
            }
            NullIf => {
                let second = args.get(1).cloned().unwrap_or(Value::Null);
                let equal =
                    value::compare(&first, &second, "NULLIF")? == Some(std::cmp::Ordering::Equal);
                return Ok(if equal { Value::Null } else { first });
            }
            Concat => {
                return Ok(Value::String(args.iter().filter_map(value::text).collect()));
            }
            _ => {}
        }
        if first.is_null() {
            return Ok(Value::Null);
        }
        Ok(match self {
            IsInt => Value::Bool(first.is_i64() || first.is_u64()),
            IsFloat => Value::Bool(first.is_f64()),
            IsNum => Value::Bool(first.is_number()),
            IsBool => Value::Bool(first.is_boolean()),
            IsStr => Value::Bool(first.is_string()),
            IsMap => Value::Bool(first.is_object()),
            IsArray => Value::Bool(first.is_array()),
            ToStr => Value::String(value::text(&first).unwrap_or_default()),
            ToLower | ToUpper | Trim | LeftTrim | RightTrim | Reverse | Strlen | Substr => {
                let Value::String(s) = &first else {
                    return Err(SqlError::mismatch(&name, "string", &first));
                };
                match self {
                    ToLower => Value::String(s.to_lowercase()),
                    ToUpper => Value::String(s.to_uppercase()),
                    Trim => Value::String(s.trim().to_string()),
                    LeftTrim => Value::String(s.trim_start().to_string()),
                    RightTrim => Value::String(s.trim_end().to_string()),
                    Reverse => Value::String(s.chars().rev().collect()),
                    Strlen => Value::from(s.chars().count() as u64),
                    _ => substr(s, &args[1..])?,
                }
            }
            Abs | Ceil | Floor | Round | Sign => match numeric(&first, &name)? {
                Some(Numeric::Int(i)) => match self {
                    Abs => i
                        .checked_abs()
                        .map(Value::from)
                        .ok_or_else(|| SqlError::Arithmetic("integer overflow in ABS".into()))?,
                    Sign => Value::from(i.signum()),
                    _ => Value::from(i),
                },
                Some(Numeric::Float(f)) => float(match self {
                    Abs => f.abs(),
                    Ceil => f.ceil(),
                    Floor => f.floor(),
                    Round => f.round(),
                    _ => f.signum(),
                }),
                None => Value::Null,
            },
            Sqrt | Exp | Ln | Log2 | Log10 | Sin | Cos | Tan => {
                let f = match numeric(&first, &name)? {
                    Some(Numeric::Int(i)) => i as f64,
                    Some(Numeric::Float(f)) => f,
                    None => return Ok(Value::Null),
                };
                float(match self {
                    Sqrt => f.sqrt(),
                    Exp => f.exp(),
                    Ln => f.ln(),
                    Log2 => f.log2(),
                    Log10 => f.log10(),
                    Sin => f.sin(),
                    Cos => f.cos(),
                    _ => f.tan(),
                })
            }
            DateStr | TimeStr | TimestampStr | Year | Month | Day | Hour | Minute | Second => {
                let ms = millis(&first, &name)?;
                let civil = Civil::from_ms(ms);
                match self {
                    DateStr => Value::String(format!(
                        "{:04}-{:02}-{:02}",
                        civil.year, civil.month, civil.day
                    )),
                    TimeStr => Value::String(format!(
                        "{:02}:{:02}:{:02}.{:03}",
                        civil.hour, civil.minute, civil.second, civil.millis
                    )),
                    TimestampStr => Value::String(format!(
                        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                        civil.year,
                        civil.month,
                        civil.day,
                        civil.hour,
                        civil.minute,
                        civil.second,
                        civil.millis
                    )),
                    Year => Value::from(civil.year),
                    Month => Value::from(civil.month),
                    Day => Value::from(civil.day),
                    Hour => Value::from(civil.hour),
                    Minute => Value::from(civil.minute),
                    _ => Value::from(civil.second),
                }
            }
            DateTrunc => {
                let unit_ms: i64 = match first.as_str().map(str::to_ascii_lowercase).as_deref() {
                    Some("second") => 1_000,
                    Some("minute") => 60_000,
                    Some("hour") => 3_600_000,
                    Some("day") => 86_400_000,
                    _ => {
                        return Err(SqlError::mismatch(
                            "DATE_TRUNC",
                            "'second', 'minute', 'hour' or 'day'",
                            &first,
                        ))
                    }
                };
                match args.get(1) {
                    Some(Value::Null) | None => Value::Null,
                    Some(v) => Value::from(millis(v, "DATE_TRUNC")?.div_euclid(unit_ms) * unit_ms),
                }
            }
            Coalesce | IfNull | NullIf | Concat => Value::Null,
        })
    }
}

fn substr(s: &str, args: &[Value]) -> Result<Value, SqlError> {
    let from = match args.first() {
        Some(Value::Null) | None => return Ok(Value::Null),
        Some(v) => v
            .as_i64()
            .ok_or_else(|| SqlError::mismatch("SUBSTR", "integer", v))?,
    };
    let len = match args.get(1) {
        None => i64::MAX,
        Some(Value::Null) => return Ok(Value::Null),
        Some(v) => v
            .as_i64()
            .ok_or_else(|| SqlError::mismatch("SUBSTR", "integer", v))?,
    };
    let skip = usize::try_from(from.max(1) - 1).unwrap_or(usize::MAX);
    let take = usize::try_from(len.max(0)).unwrap_or(usize::MAX);
    Ok(Value::String(s.chars().skip(skip).take(take).collect()))
}

fn millis(value: &Value, context: &str) -> Result<i64, SqlError> {
    value
        .as_i64()
        .ok_or_else(|| SqlError::mismatch(context, "milliseconds since the epoch (integer)", value))
}

/// A UTC civil date and time.
struct Civil {
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
    millis: i64,
}

impl Civil {
    fn from_ms(ms: i64) -> Civil {
        let days = ms.div_euclid(86_400_000);
        let in_day = ms.rem_euclid(86_400_000);
        // Days since 1970-01-01 to a proleptic Gregorian date (the era-based algorithm: 400-year
        // eras of 146,097 days, years starting in March so the leap day ends the year).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let day_of_era = z.rem_euclid(146_097);
        let year_of_era =
            (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let month_from_march = (5 * day_of_year + 2) / 153;
        let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
        let month = if month_from_march < 10 {
            month_from_march + 3
        } else {
            month_from_march - 9
        };
        let year = year_of_era + era * 400 + i64::from(month <= 2);
        Civil {
            year,
            month,
            day,
            hour: in_day / 3_600_000,
            minute: in_day / 60_000 % 60,
            second: in_day / 1000 % 60,
            millis: in_day % 1000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(f: Function, args: &[Value]) -> Value {
        f.call(args).unwrap_or_else(|e| panic!("{f:?}: {e}"))
    }

    /// Civil dates from milliseconds, including before the epoch and a leap day.
    #[test]
    fn dates_are_utc_civil_dates() {
        assert_eq!(
            call(Function::TimestampStr, &[Value::from(0)]),
            Value::from("1970-01-01T00:00:00.000Z")
        );
        assert_eq!(
            call(Function::TimestampStr, &[Value::from(-1)]),
            Value::from("1969-12-31T23:59:59.999Z")
        );
        assert_eq!(
            call(Function::DateStr, &[Value::from(951_782_400_000i64)]),
            Value::from("2000-02-29")
        );
        assert_eq!(
            call(Function::DateStr, &[Value::from(4_107_542_400_000i64)]),
            Value::from("2100-03-01")
        );
        assert_eq!(
            call(Function::DateTrunc, &[Value::from("hour"), Value::from(-1)]),
            Value::from(-3_600_000)
        );
        assert_eq!(call(Function::Year, &[Value::Null]), Value::Null);
    }

    #[test]
    fn null_helpers_and_strings() {
        assert_eq!(
            call(
                Function::Coalesce,
                &[Value::Null, Value::from(2), Value::from(3)]
            ),
            Value::from(2)
        );
        assert_eq!(
            call(Function::IfNull, &[Value::Null, Value::from("d")]),
            Value::from("d")
        );
        assert_eq!(
            call(Function::NullIf, &[Value::from(1), Value::from(1)]),
            Value::Null
        );
        assert_eq!(
            call(
                Function::Substr,
                &[Value::from("héllo"), Value::from(2), Value::from(2)]
            ),
            Value::from("él")
        );
        assert_eq!(
            call(Function::Strlen, &[Value::from("héllo")]),
            Value::from(5)
        );
        assert!(matches!(
            Function::ToUpper.call(&[Value::from(1)]),
            Err(SqlError::TypeMismatch { .. })
        ));
        assert_eq!(Function::IsFloat.name(), "IS_FLOAT");
    }
}
