//! Parsing: sqlparser's tokenizer and its parser for the standard clauses, under a thin
//! statement loop of our own for the streaming ones (ARCHITECTURE.md §7).
//!
//! The loop tokenizes a statement, lifts the streaming clauses sqlparser does not know out of
//! the token list (`EMIT CHANGES | FINAL`, `GRACE PERIOD <interval>`, `WITHIN (<interval>)`, at
//! parenthesis depth 0), hands what is left to sqlparser, and parses our own statements
//! (`CREATE STREAM`, `SHOW`, `DROP`, `TERMINATE`/`PAUSE`/`RESUME QUERY`) word by word.
//! Windows in FROM (`TUMBLE(s, INTERVAL 10 SECOND)`) are table functions to sqlparser already.

use sqlparser::ast::{self, Spanned};
use sqlparser::dialect::Dialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use crate::error::{Position, SqlError};

/// Our dialect: PostgreSQL's identifiers (so `#>` is an operator, not part of a name), the
/// rest of sqlparser's defaults.
#[derive(Debug, Default)]
pub struct RunnelDialect;

impl Dialect for RunnelDialect {
    fn is_identifier_start(&self, ch: char) -> bool {
        ch.is_alphabetic() || ch == '_'
    }

    fn is_identifier_part(&self, ch: char) -> bool {
        ch.is_alphanumeric() || ch == '_' || ch == '$'
    }

    fn supports_group_by_expr(&self) -> bool {
        true
    }
}

/// How a push query emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emit {
    /// Every change, as it happens.
    Changes,
    /// One row per window and group, when the window is final.
    Final,
}

/// A SELECT with the streaming clauses lifted out of it.
#[derive(Debug, Clone)]
pub struct Select {
    /// The standard part, as sqlparser read it.
    pub query: Box<ast::Query>,
    /// `EMIT CHANGES | FINAL`, if written.
    pub emit: Option<Emit>,
    /// `GRACE PERIOD <interval>`: this query's allowed lateness, overriding its streams'.
    pub grace_ms: Option<i64>,
    /// `WITHIN (<interval>)` of each JOIN, in order.
    pub within_ms: Vec<i64>,
    /// Where the SELECT starts.
    pub position: Position,
}

/// Options of `CREATE STREAM s WITH (...)`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StreamOptions {
    /// `SHARDS = n`
    pub shards: Option<u32>,
    /// `REPLICATE = r`
    pub replicate: Option<u32>,
    /// `DURATION = INTERVAL …`: retention in milliseconds.
    pub duration_ms: Option<i64>,
    /// `TIMESTAMP = 'column'`: event time is this column (milliseconds), not the record time.
    pub timestamp_column: Option<String>,
    /// `GRACE = INTERVAL …`: allowed lateness of queries over this stream.
    pub grace_ms: Option<i64>,
}

/// The objects that SHOW and DROP name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// Streams.
    Stream,
    /// Materialized views.
    View,
    /// Persistent queries.
    Query,
}

/// What TERMINATE, PAUSE and RESUME do to a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryControl {
    /// Stop and forget it.
    Terminate,
    /// Stop consuming; its state and offsets stay.
    Pause,
    /// Consume again from its offsets.
    Resume,
}

/// One statement, typed.
#[derive(Debug, Clone)]
pub enum Statement {
    /// `CREATE STREAM s [WITH (...)] [AS SELECT ...]`
    CreateStream {
        /// The name.
        name: String,
        /// The WITH options.
        options: StreamOptions,
        /// `AS SELECT`: a persistent query writing the new stream.
        select: Option<Select>,
    },
    /// `CREATE VIEW v AS SELECT ...`
    CreateView {
        /// The name.
        name: String,
        /// Its query.
        select: Select,
    },
    /// `INSERT INTO s [(cols)] VALUES (...), ...`: JSON objects to append.
    InsertValues {
        /// The stream.
        stream: String,
        /// Where the stream is named.
        position: Position,
        /// One object per row.
        rows: Vec<serde_json::Value>,
    },
    /// `INSERT INTO s SELECT ...`: a persistent query writing an existing stream.
    InsertSelect {
        /// The stream.
        stream: String,
        /// Where the stream is named.
        position: Position,
        /// The query.
        select: Select,
    },
    /// `SELECT ... EMIT ...` (push) or a plain SELECT over a view (pull).
    Select(Select),
    /// `SHOW STREAMS | VIEWS | QUERIES`
    Show(ObjectKind),
    /// `DROP STREAM | VIEW | QUERY x [IF EXISTS]` (also `DROP ... IF EXISTS x`).
    Drop {
        /// What kind of object.
        kind: ObjectKind,
        /// Its name (a query's id as text).
        name: String,
        /// IF EXISTS: no error when absent.
        if_exists: bool,
        /// Where the name is.
        position: Position,
    },
    /// `TERMINATE | PAUSE | RESUME QUERY id`
    Control(QueryControl, u64),
    /// `EXPLAIN statement`
    Explain(Box<Statement>),
}

/// Parses one or more statements separated by `;`.
pub fn parse(sql: &str) -> Result<Vec<Statement>, SqlError> {
    Ok(parse_with_text(sql)?.into_iter().map(|(s, _)| s).collect())
}

/// Parses one or more statements, each with its own text (what a persistent query stores).
pub fn parse_with_text(sql: &str) -> Result<Vec<(Statement, String)>, SqlError> {
    let tokens = Tokenizer::new(&RunnelDialect, sql)
        .tokenize_with_location()
        .map_err(|e| {
            SqlError::syntax(
                Position {
                    line: e.location.line,
                    column: e.location.column,
                },
                e.message,
            )
        })?;
    let mut statements = Vec::new();
    let mut current = Vec::new();
    for token in tokens {
        if token.token == Token::SemiColon {
            if has_words(&current) {
                let text = text_of(&current);
                statements.push((parse_one(std::mem::take(&mut current))?, text));
            }
            current.clear();
        } else {
            current.push(token);
        }
    }
    if has_words(&current) {
        let text = text_of(&current);
        statements.push((parse_one(current)?, text));
    }
    Ok(statements)
}

/// The statement's text: its tokens, whitespace and comments included, print as written.
fn text_of(tokens: &[TokenWithSpan]) -> String {
    let text: String = tokens.iter().map(|t| t.token.to_string()).collect();
    text.trim().to_string()
}

fn has_words(tokens: &[TokenWithSpan]) -> bool {
    tokens
        .iter()
        .any(|t| !matches!(t.token, Token::Whitespace(_) | Token::EOF))
}

/// Streaming clauses lifted out of a statement's tokens.
#[derive(Default)]
struct Lifted {
    emit: Option<Emit>,
    grace_ms: Option<i64>,
    within_ms: Vec<i64>,
}

fn word_is(token: &TokenWithSpan, word: &str) -> bool {
    matches!(&token.token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

fn position_of(token: &TokenWithSpan) -> Position {
    token.span.start.into()
}

/// Takes `EMIT ...`, `GRACE PERIOD ...` and `WITHIN (...)` out of the tokens (depth 0 only).
fn lift(tokens: Vec<TokenWithSpan>) -> Result<(Vec<TokenWithSpan>, Lifted), SqlError> {
    let mut lifted = Lifted::default();
    let mut kept = Vec::with_capacity(tokens.len());
    let significant: Vec<TokenWithSpan> = tokens
        .into_iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .collect();
    let mut depth = 0usize;
    let mut i = 0;
    while i < significant.len() {
        let token = &significant[i];
        match token.token {
            Token::LParen => depth += 1,
            Token::RParen => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth == 0 && word_is(token, "EMIT") {
            let next = significant.get(i + 1);
            lifted.emit = Some(match next {
                Some(t) if word_is(t, "CHANGES") => Emit::Changes,
                Some(t) if word_is(t, "FINAL") => Emit::Final,
                _ => {
                    return Err(SqlError::syntax(
                        position_of(token),
                        "expected CHANGES or FINAL after EMIT",
                    ))
                }
            });
            i += 2;
            continue;
        }
        if depth == 0
            && word_is(token, "GRACE")
            && significant.get(i + 1).is_some_and(|t| word_is(t, "PERIOD"))
        {
            // The interval runs to EMIT or the end of the statement.
            let start = i + 2;
            let mut end = start;
            while end < significant.len()
                && !word_is(&significant[end], "EMIT")
                && significant[end].token != Token::EOF
            {
                end += 1;
            }
            lifted.grace_ms = Some(interval_of_tokens(
                &significant[start..end],
                position_of(token),
            )?);
            i = end;
            continue;
        }
        if depth == 0
            && word_is(token, "WITHIN")
            && significant
                .get(i + 1)
                .is_some_and(|t| t.token == Token::LParen)
        {
            let start = i + 2;
            let mut end = start;
            let mut inner = 1usize;
            while end < significant.len() {
                match significant[end].token {
                    Token::LParen => inner += 1,
                    Token::RParen => {
                        inner -= 1;
                        if inner == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                end += 1;
            }
            if end >= significant.len() {
                return Err(SqlError::syntax(
                    position_of(token),
                    "WITHIN ( without its closing )",
                ));
            }
            lifted.within_ms.push(interval_of_tokens(
                &significant[start..end],
                position_of(token),
            )?);
            i = end + 1;
            continue;
        }
        kept.push(token.clone());
        i += 1;
    }
    Ok((kept, lifted))
}

fn interval_of_tokens(tokens: &[TokenWithSpan], at: Position) -> Result<i64, SqlError> {
    let mut parser = Parser::new(&RunnelDialect).with_tokens_with_locations(tokens.to_vec());
    let expr = parser
        .parse_expr()
        .map_err(|e| SqlError::from_parser(e, at))?;
    if parser.peek_token().token != Token::EOF {
        return Err(SqlError::syntax(
            position_of(&parser.peek_token()),
            "expected the end of the interval",
        ));
    }
    interval_ms(&expr)
}

/// Milliseconds of `INTERVAL 10 SECOND`, `INTERVAL '10' SECOND` or `INTERVAL '10 seconds'`.
pub fn interval_ms(expr: &ast::Expr) -> Result<i64, SqlError> {
    let at: Position = expr.span().start.into();
    let ast::Expr::Interval(interval) = expr else {
        return Err(SqlError::syntax(
            at,
            format!("expected an INTERVAL, found `{expr}`"),
        ));
    };
    let (amount, unit) = match (&*interval.value, &interval.leading_field) {
        (ast::Expr::Value(v), Some(field)) => {
            let amount = match &v.value {
                ast::Value::Number(n, _) => n.clone(),
                ast::Value::SingleQuotedString(s) => s.trim().to_string(),
                other => {
                    return Err(SqlError::syntax(
                        at,
                        format!("bad interval amount `{other}`"),
                    ))
                }
            };
            (amount, field.to_string())
        }
        (ast::Expr::Value(v), None) => match &v.value {
            ast::Value::SingleQuotedString(s) => {
                let mut parts = s.split_whitespace();
                let amount = parts.next().unwrap_or_default().to_string();
                let unit = parts.next().unwrap_or_default().to_string();
                (amount, unit)
            }
            other => {
                return Err(SqlError::syntax(
                    at,
                    format!("interval `{other}` needs a unit"),
                ))
            }
        },
        _ => {
            return Err(SqlError::syntax(
                at,
                format!("unsupported interval `{expr}`"),
            ))
        }
    };
    let unit_ms: i64 = match unit.to_ascii_uppercase().trim_end_matches('S') {
        "MILLISECOND" => 1,
        "SECOND" => 1_000,
        "MINUTE" => 60_000,
        "HOUR" => 3_600_000,
        "DAY" => 86_400_000,
        "WEEK" => 7 * 86_400_000,
        other => {
            return Err(SqlError::syntax(
                at,
                format!("unknown interval unit `{other}`"),
            ))
        }
    };
    let amount: i64 = amount.parse().map_err(|_| {
        SqlError::syntax(at, format!("interval amount `{amount}` is not an integer"))
    })?;
    amount
        .checked_mul(unit_ms)
        .filter(|ms| ms.abs() <= crate::operator::TIME_MS_MAX)
        .ok_or_else(|| SqlError::syntax(at, "interval too large (at most 2^50 ms)"))
}

fn parse_one(tokens: Vec<TokenWithSpan>) -> Result<Statement, SqlError> {
    let start = tokens
        .iter()
        .find(|t| !matches!(t.token, Token::Whitespace(_)))
        .map(position_of)
        .unwrap_or_default();
    let (tokens, lifted) = lift(tokens)?;
    let end: Position = tokens.last().map(|t| t.span.end.into()).unwrap_or(start);
    let mut lifted = Some(lifted);
    let mut parser = Parser::new(&RunnelDialect).with_tokens_with_locations(tokens);
    // sqlparser reports no position at the end of the input: point just past the last token.
    let statement = statement(&mut parser, &mut lifted, end)?;
    let next = parser.peek_token();
    if next.token != Token::EOF {
        return Err(SqlError::syntax(
            position_of(&next),
            format!("unexpected `{}`", next.token),
        ));
    }
    if let Some(l) = lifted {
        if l.emit.is_some() || l.grace_ms.is_some() || !l.within_ms.is_empty() {
            return Err(SqlError::syntax(
                start,
                "EMIT, GRACE PERIOD and WITHIN belong to a SELECT",
            ));
        }
    }
    Ok(statement)
}

fn err(at: Position) -> impl Fn(sqlparser::parser::ParserError) -> SqlError {
    move |e| SqlError::from_parser(e, at)
}

fn select(
    parser: &mut Parser<'_>,
    lifted: &mut Option<Lifted>,
    at: Position,
) -> Result<Select, SqlError> {
    let position = position_of(&parser.peek_token());
    let query = parser.parse_query().map_err(err(at))?;
    let lifted = lifted.take().unwrap_or_default();
    Ok(Select {
        query,
        emit: lifted.emit,
        grace_ms: lifted.grace_ms,
        within_ms: lifted.within_ms,
        position,
    })
}

fn name(parser: &mut Parser<'_>, at: Position) -> Result<(String, Position), SqlError> {
    let position = position_of(&parser.peek_token());
    let ident = parser.parse_identifier().map_err(err(at))?;
    Ok((ident.value, position))
}

fn statement(
    parser: &mut Parser<'_>,
    lifted: &mut Option<Lifted>,
    at: Position,
) -> Result<Statement, SqlError> {
    let first = parser.peek_token();
    let word = match &first.token {
        Token::Word(w) => w.value.to_ascii_uppercase(),
        Token::LParen => "SELECT".to_string(),
        other => {
            return Err(SqlError::syntax(
                position_of(&first),
                format!("expected a statement, found `{other}`"),
            ))
        }
    };
    match word.as_str() {
        "SELECT" | "WITH" | "VALUES" => Ok(Statement::Select(select(parser, lifted, at)?)),
        "EXPLAIN" => {
            parser.next_token();
            Ok(Statement::Explain(Box::new(statement(parser, lifted, at)?)))
        }
        "CREATE" => {
            parser.next_token();
            if parser.parse_keyword(Keyword::STREAM) {
                let (name, _) = name(parser, at)?;
                let options = if parser.parse_keyword(Keyword::WITH) {
                    stream_options(parser, at)?
                } else {
                    StreamOptions::default()
                };
                let select = if parser.parse_keyword(Keyword::AS) {
                    Some(select(parser, lifted, at)?)
                } else {
                    None
                };
                Ok(Statement::CreateStream {
                    name,
                    options,
                    select,
                })
            } else if parser.parse_keyword(Keyword::VIEW) {
                let (name, _) = name(parser, at)?;
                parser.expect_keyword(Keyword::AS).map_err(err(at))?;
                Ok(Statement::CreateView {
                    name,
                    select: select(parser, lifted, at)?,
                })
            } else {
                Err(SqlError::syntax(
                    position_of(&parser.peek_token()),
                    "expected STREAM or VIEW after CREATE",
                ))
            }
        }
        "INSERT" => {
            parser.next_token();
            parser.expect_keyword(Keyword::INTO).map_err(err(at))?;
            let (stream, position) = name(parser, at)?;
            let mut columns = Vec::new();
            if parser.peek_token().token == Token::LParen {
                // `(a, b) VALUES` or `(SELECT ...)`: look past the parenthesis.
                let is_select = matches!(&parser.peek_nth_token(1).token, Token::Word(w) if w.keyword == Keyword::SELECT);
                if !is_select {
                    parser.next_token();
                    columns = parser
                        .parse_comma_separated(|p| p.parse_identifier())
                        .map_err(err(at))?
                        .into_iter()
                        .map(|i| i.value)
                        .collect();
                    parser.expect_token(&Token::RParen).map_err(err(at))?;
                }
            }
            if parser.parse_keyword(Keyword::VALUES) {
                let rows = parser
                    .parse_comma_separated(|p| {
                        p.expect_token(&Token::LParen)?;
                        let values = p.parse_comma_separated(|p| p.parse_expr())?;
                        p.expect_token(&Token::RParen)?;
                        Ok(values)
                    })
                    .map_err(err(at))?;
                let rows = rows
                    .into_iter()
                    .map(|values| insert_row(&columns, values, position))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Statement::InsertValues {
                    stream,
                    position,
                    rows,
                })
            } else {
                if !columns.is_empty() {
                    return Err(SqlError::unsupported(
                        position,
                        "a column list with INSERT ... SELECT (the SELECT names the columns)",
                    ));
                }
                Ok(Statement::InsertSelect {
                    stream,
                    position,
                    select: select(parser, lifted, at)?,
                })
            }
        }
        "SHOW" => {
            parser.next_token();
            let kind = object_kinds(parser, true)?;
            Ok(Statement::Show(kind))
        }
        "DROP" => {
            parser.next_token();
            let kind = object_kinds(parser, false)?;
            let mut if_exists = parser.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
            let token = parser.next_token();
            let name = match &token.token {
                Token::Word(w) => w.value.clone(),
                Token::Number(n, _) => n.clone(),
                other => {
                    return Err(SqlError::syntax(
                        position_of(&token),
                        format!("expected a name, found `{other}`"),
                    ))
                }
            };
            if_exists |= parser.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
            Ok(Statement::Drop {
                kind,
                name,
                if_exists,
                position: position_of(&token),
            })
        }
        "TERMINATE" | "PAUSE" | "RESUME" => {
            parser.next_token();
            let control = match word.as_str() {
                "TERMINATE" => QueryControl::Terminate,
                "PAUSE" => QueryControl::Pause,
                _ => QueryControl::Resume,
            };
            parser.expect_keyword(Keyword::QUERY).map_err(err(at))?;
            let token = parser.next_token();
            let id = match &token.token {
                Token::Number(n, _) => n.parse().ok(),
                Token::Word(w) => w.value.trim_start_matches(['q', 'Q']).parse().ok(),
                _ => None,
            };
            let id =
                id.ok_or_else(|| SqlError::syntax(position_of(&token), "expected a query id"))?;
            Ok(Statement::Control(control, id))
        }
        other => Err(SqlError::syntax(
            position_of(&first),
            format!("unknown statement `{other}`"),
        )),
    }
}

fn object_kinds(parser: &mut Parser<'_>, plural: bool) -> Result<ObjectKind, SqlError> {
    let token = parser.next_token();
    let word = match &token.token {
        Token::Word(w) => w.value.to_ascii_uppercase(),
        _ => String::new(),
    };
    let kind = match (word.as_str(), plural) {
        ("STREAMS", true) | ("STREAM", false) => ObjectKind::Stream,
        ("VIEWS", true) | ("VIEW", false) => ObjectKind::View,
        ("QUERIES", true) | ("QUERY", false) => ObjectKind::Query,
        _ => {
            let expected = if plural {
                "STREAMS, VIEWS or QUERIES"
            } else {
                "STREAM, VIEW or QUERY"
            };
            return Err(SqlError::syntax(
                position_of(&token),
                format!("expected {expected}"),
            ));
        }
    };
    Ok(kind)
}

fn stream_options(parser: &mut Parser<'_>, at: Position) -> Result<StreamOptions, SqlError> {
    parser.expect_token(&Token::LParen).map_err(err(at))?;
    let mut options = StreamOptions::default();
    loop {
        let key_position = position_of(&parser.peek_token());
        let key = parser
            .parse_identifier()
            .map_err(err(at))?
            .value
            .to_ascii_uppercase();
        parser.expect_token(&Token::Eq).map_err(err(at))?;
        let value = parser.parse_expr().map_err(err(at))?;
        let count = |value: &ast::Expr| -> Result<u32, SqlError> {
            match value {
                ast::Expr::Value(v) => match &v.value {
                    ast::Value::Number(n, _) => n.parse().ok(),
                    _ => None,
                },
                _ => None,
            }
            .ok_or_else(|| {
                SqlError::syntax(key_position, format!("{key} needs a positive integer"))
            })
        };
        match key.as_str() {
            "SHARDS" => options.shards = Some(count(&value)?),
            "REPLICATE" => options.replicate = Some(count(&value)?),
            "DURATION" => options.duration_ms = Some(interval_ms(&value)?),
            "GRACE" => options.grace_ms = Some(interval_ms(&value)?),
            "TIMESTAMP" => match &value {
                ast::Expr::Value(v) => match &v.value {
                    ast::Value::SingleQuotedString(s) => options.timestamp_column = Some(s.clone()),
                    _ => {
                        return Err(SqlError::syntax(
                            key_position,
                            "TIMESTAMP needs a column name in quotes",
                        ))
                    }
                },
                ast::Expr::Identifier(i) => options.timestamp_column = Some(i.value.clone()),
                _ => {
                    return Err(SqlError::syntax(
                        key_position,
                        "TIMESTAMP needs a column name",
                    ))
                }
            },
            _ => {
                return Err(SqlError::syntax(
                    key_position,
                    format!(
                    "unknown stream option `{key}` (SHARDS, REPLICATE, DURATION, TIMESTAMP, GRACE)"
                ),
                ))
            }
        }
        if parser.consume_token(&Token::Comma) {
            continue;
        }
        parser.expect_token(&Token::RParen).map_err(err(at))?;
        return Ok(options);
    }
}

/// One VALUES row as a JSON object; values must be constants.
fn insert_row(
    columns: &[String],
    values: Vec<ast::Expr>,
    at: Position,
) -> Result<serde_json::Value, SqlError> {
    if columns.len() != values.len() {
        return Err(SqlError::syntax(
            at,
            format!("{} columns but {} values", columns.len(), values.len()),
        ));
    }
    let mut object = serde_json::Map::new();
    for (column, value) in columns.iter().zip(values) {
        let expr = crate::plan::constant(&value)?;
        object.insert(column.clone(), expr);
    }
    Ok(serde_json::Value::Object(object))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(sql: &str) -> Statement {
        let mut all = parse(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(all.len(), 1, "{sql}");
        all.remove(0)
    }

    fn select_of(sql: &str) -> Select {
        match one(sql) {
            Statement::Select(s) => s,
            other => panic!("{sql}: not a SELECT: {other:?}"),
        }
    }

    /// Both INTERVAL spellings users write (HStreamDB's docs and grammar disagree) and the
    /// PostgreSQL one mean the same milliseconds.
    #[test]
    fn interval_spellings_agree() {
        for text in [
            "INTERVAL 10 SECOND",
            "INTERVAL '10' SECOND",
            "INTERVAL '10 seconds'",
            "INTERVAL 10000 MILLISECONDS",
        ] {
            let s = select_of(&format!("SELECT 1 FROM s GRACE PERIOD {text} EMIT CHANGES"));
            assert_eq!(s.grace_ms, Some(10_000), "{text}");
        }
        let s = select_of("SELECT 1 FROM s GRACE PERIOD INTERVAL 2 DAY");
        assert_eq!(s.grace_ms, Some(172_800_000));
        assert_eq!(s.emit, None);
    }

    /// EMIT, GRACE PERIOD and WITHIN are lifted at depth 0 only: a column named `emit` inside
    /// parentheses is left to sqlparser.
    #[test]
    fn streaming_clauses_are_lifted() {
        let s =
            select_of("SELECT * FROM a JOIN b ON a.k = b.k WITHIN (INTERVAL 3 SECOND) EMIT FINAL");
        assert_eq!(s.within_ms, vec![3000]);
        assert_eq!(s.emit, Some(Emit::Final));
        let s = select_of("SELECT COALESCE(\"emit\", 1) FROM s EMIT CHANGES");
        assert_eq!(s.emit, Some(Emit::Changes));
    }

    #[test]
    fn statements_parse_into_their_kinds() {
        assert!(matches!(
            one("SHOW QUERIES"),
            Statement::Show(ObjectKind::Query)
        ));
        assert!(matches!(
            one("DROP VIEW v IF EXISTS"),
            Statement::Drop {
                kind: ObjectKind::View,
                if_exists: true,
                ..
            }
        ));
        assert!(matches!(
            one("drop stream if exists s"),
            Statement::Drop {
                kind: ObjectKind::Stream,
                if_exists: true,
                ..
            }
        ));
        assert!(matches!(
            one("PAUSE QUERY 7"),
            Statement::Control(QueryControl::Pause, 7)
        ));
        assert!(matches!(
            one("EXPLAIN SELECT 1 FROM s EMIT CHANGES"),
            Statement::Explain(_)
        ));
        match one(
            "CREATE STREAM s WITH (TIMESTAMP = 'ts', SHARDS = 2) AS SELECT * FROM t EMIT CHANGES",
        ) {
            Statement::CreateStream {
                options,
                select: Some(select),
                ..
            } => {
                assert_eq!(options.timestamp_column.as_deref(), Some("ts"));
                assert_eq!(options.shards, Some(2));
                assert_eq!(select.emit, Some(Emit::Changes));
            }
            other => panic!("{other:?}"),
        }
        match one("INSERT INTO s (a, b) VALUES (1, 'x'), (NULL, -2.5)") {
            Statement::InsertValues { rows, .. } => {
                assert_eq!(
                    rows,
                    vec![
                        serde_json::json!({"a": 1, "b": "x"}),
                        serde_json::json!({"a": null, "b": -2.5})
                    ]
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(parse("SHOW STREAMS; SHOW VIEWS;").map(|v| v.len()), Ok(2));
    }

    #[test]
    fn errors_name_the_position() {
        let error = parse("SELECT a\n  FROM s EMIT LATER").err();
        assert_eq!(
            error,
            Some(SqlError::Syntax {
                position: Position {
                    line: 2,
                    column: 10
                },
                message: "expected CHANGES or FINAL after EMIT".into()
            })
        );
        assert!(matches!(
            parse("SELEC 1"),
            Err(SqlError::Syntax {
                position: Position { line: 1, column: 1 },
                ..
            })
        ));
        assert!(matches!(
            parse("INSERT INTO s (a) VALUES (1, 2)"),
            Err(SqlError::Syntax { .. })
        ));
        assert!(matches!(
            parse("SELECT 1 FROM s GRACE PERIOD INTERVAL 1 FORTNIGHT"),
            Err(SqlError::Syntax { .. })
        ));
    }
}
