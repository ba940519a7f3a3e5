//! Validated stream names.

use std::fmt;

use crate::error::IdError;

/// Longest stream name, in bytes.
pub const STREAM_NAME_BYTES_MAX: usize = 255;

/// A stream name: 1 to 255 ASCII characters from `[A-Za-z0-9_.-]`, starting with a letter,
/// a digit or `_`. The same rule as HStreamDB's resource names, so names move across.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamName(String);

impl StreamName {
    /// Checks `name` against the naming rule.
    pub fn new(name: impl Into<String>) -> Result<Self, IdError> {
        let name = name.into();
        let invalid = |reason| IdError::InvalidStreamName {
            name: name.chars().take(64).collect(),
            reason,
        };
        if name.is_empty() {
            return Err(invalid("must not be empty"));
        }
        if name.len() > STREAM_NAME_BYTES_MAX {
            return Err(invalid("must be at most 255 characters"));
        }
        let mut chars = name.chars();
        if let Some(first) = chars.next() {
            if !(first.is_ascii_alphanumeric() || first == '_') {
                return Err(invalid("must start with a letter, a digit or '_'"));
            }
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(invalid("may hold only letters, digits, '_', '-' and '.'"));
        }
        Ok(Self(name))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for StreamName {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_usual_names_and_rejects_bad_ones() {
        for good in ["a", "orders", "orders-2024.eu_west", "_internal", "9lives"] {
            assert_eq!(
                StreamName::new(good).map(|n| n.to_string()),
                Ok(good.to_string())
            );
        }
        for bad in ["", "-x", ".x", "a b", "a/b", "ü", &"x".repeat(256)] {
            assert!(StreamName::new(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(StreamName::new("x".repeat(255)).is_ok());
    }
}
