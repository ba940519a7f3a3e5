//! The errors of the SQL layer: every one names where it happened and what was wrong.

use thiserror::Error;

/// A position in the statement text, 1-based (0 when the parser could not tell).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    /// Line, from 1.
    pub line: u64,
    /// Column, from 1.
    pub column: u64,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

impl From<sqlparser::tokenizer::Location> for Position {
    fn from(location: sqlparser::tokenizer::Location) -> Self {
        Position {
            line: location.line,
            column: location.column,
        }
    }
}

/// An operating error of the SQL layer (bad statement, unknown object, bad value).
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum SqlError {
    /// The text is not a statement we understand.
    #[error("syntax error at {position}: {message}")]
    Syntax {
        /// Where.
        position: Position,
        /// What the parser expected or found.
        message: String,
    },
    /// A statement names a stream or view that does not exist.
    #[error("unknown stream or view `{name}` at {position}")]
    UnknownStream {
        /// The name as written.
        name: String,
        /// Where.
        position: Position,
    },
    /// A statement names a column that its source does not have.
    #[error("unknown column `{name}` at {position}{hint}")]
    UnknownColumn {
        /// The name as written.
        name: String,
        /// Where.
        position: Position,
        /// Extra advice (", known columns: a, b"), possibly empty.
        hint: String,
    },
    /// An operator or function got a value of the wrong type.
    #[error("type mismatch in {context}: expected {expected}, found {found}")]
    TypeMismatch {
        /// The operator or function (`+`, `UPPER`, `CAST`).
        context: String,
        /// The type it needs.
        expected: String,
        /// The value it got.
        found: String,
    },
    /// Valid SQL that this engine does not run (yet), with the reason.
    #[error("unsupported at {position}: {what}")]
    Unsupported {
        /// What and why.
        what: String,
        /// Where.
        position: Position,
    },
    /// An arithmetic error: division by zero, overflow.
    #[error("arithmetic error: {0}")]
    Arithmetic(String),
    /// CREATE of a name that exists.
    #[error("{kind} `{name}` already exists")]
    AlreadyExists {
        /// "stream", "view".
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// A query id that does not exist.
    #[error("unknown query {0}")]
    UnknownQuery(u64),
    /// An object cannot be dropped while something depends on it.
    #[error("`{name}` is used by query {query}; terminate it first")]
    InUse {
        /// The stream or view.
        name: String,
        /// The query reading or writing it.
        query: u64,
    },
    /// A checkpoint could not be restored.
    #[error("bad checkpoint: {0}")]
    Checkpoint(String),
}

impl SqlError {
    /// A syntax error from sqlparser; its message carries "Line: l, Column: c" when it knows.
    pub(crate) fn from_parser(error: sqlparser::parser::ParserError, fallback: Position) -> Self {
        let message = match error {
            sqlparser::parser::ParserError::TokenizerError(m)
            | sqlparser::parser::ParserError::ParserError(m) => m,
            sqlparser::parser::ParserError::RecursionLimitExceeded => {
                "statement nested too deeply".to_string()
            }
        };
        let position = parse_position(&message).unwrap_or(fallback);
        let message = match message.find(" at Line: ") {
            Some(at) => message[..at].to_string(),
            None => message,
        };
        SqlError::Syntax { position, message }
    }

    pub(crate) fn syntax(position: Position, message: impl Into<String>) -> Self {
        SqlError::Syntax {
            position,
            message: message.into(),
        }
    }

    pub(crate) fn unsupported(position: Position, what: impl Into<String>) -> Self {
        SqlError::Unsupported {
            what: what.into(),
            position,
        }
    }

    pub(crate) fn mismatch(context: &str, expected: &str, found: &serde_json::Value) -> Self {
        SqlError::TypeMismatch {
            context: context.to_string(),
            expected: expected.to_string(),
            found: crate::value::describe(found),
        }
    }
}

fn parse_position(message: &str) -> Option<Position> {
    let rest = &message[message.find("Line: ")? + 6..];
    let comma = rest.find(',')?;
    let line = rest[..comma].trim().parse().ok()?;
    let rest = &rest[rest.find("Column: ")? + 8..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let column = rest[..end].parse().ok()?;
    Some(Position { line, column })
}
