//! The building blocks of a [`RemoteService`](super::RemoteService)'s encodings: the bytes of
//! its requests and responses when they cross nodes, inside the peer frames `Ask` and
//! `Answered` (`docs/format/peer.md`, "Calls between nodes").
//!
//! Little-endian. An **option** is a flag byte (0 absent, 1 present) and always 8 value bytes
//! (0 when absent); a **list** a `u32` count, checked against the bytes left before anything
//! is allocated; a **string** a `u32` length and UTF-8 bytes. Decoding takes bytes from another
//! node and never panics: every rule broken is a [`WireError`] naming the field.

use thiserror::Error;

/// Why bytes are not an encoded request or response.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum WireError {
    /// The bytes end inside a field.
    #[error("an encoded request or response ends inside field {field}")]
    Truncated {
        /// The field being read.
        field: &'static str,
    },
    /// A tag or flag byte has a value this build does not know.
    #[error("field {field} of an encoded request or response has invalid value {value}")]
    InvalidValue {
        /// The field.
        field: &'static str,
        /// The value found.
        value: u64,
    },
    /// A list's count is more than the bytes left could hold.
    #[error("field {field} counts {count} entries, more than the {bytes_left} bytes left hold")]
    CountTooLarge {
        /// The list.
        field: &'static str,
        /// The count found.
        count: u64,
        /// Bytes left after the count.
        bytes_left: usize,
    },
    /// A string is not UTF-8.
    #[error("field {field} of an encoded request or response is not UTF-8")]
    InvalidUtf8 {
        /// The field.
        field: &'static str,
    },
    /// Bytes follow the last field.
    #[error("{bytes} bytes follow the last field of an encoded request or response")]
    TrailingBytes {
        /// How many.
        bytes: usize,
    },
}

/// Appends a `u32`.
pub fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

/// Appends a `u64`.
pub fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

/// Appends a list's count. Lists in requests and responses are bounded far below `u32::MAX`
/// (shards of a stream, members of a group, a frame's 16 MiB): a longer one is a broken
/// invariant.
pub fn put_count(out: &mut Vec<u8>, count: usize) {
    let count = u32::try_from(count).expect("a list of a request or response fits a u32 count");
    put_u32(out, count);
}

/// Appends an option: a flag byte (0 absent, 1 present) and always 8 value bytes.
pub fn put_option(out: &mut Vec<u8>, value: Option<u64>) {
    out.push(u8::from(value.is_some()));
    put_u64(out, value.unwrap_or(0));
}

/// Appends a string: a `u32` length and UTF-8 bytes.
pub fn put_string(out: &mut Vec<u8>, value: &str) {
    put_count(out, value.len());
    out.extend_from_slice(value.as_bytes());
}

/// Appends a byte string: a `u32` length and the bytes.
pub fn put_bytes(out: &mut Vec<u8>, value: &[u8]) {
    put_count(out, value.len());
    out.extend_from_slice(value);
}

/// A cursor over the encoded fields of one request or response.
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// Reads `bytes` from their start.
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }

    fn take<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], WireError> {
        let bytes: [u8; N] = self
            .bytes
            .get(self.at..self.at.saturating_add(N))
            .and_then(|slice| slice.try_into().ok())
            .ok_or(WireError::Truncated { field })?;
        self.at += N;
        Ok(bytes)
    }

    /// A byte.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, WireError> {
        self.take::<1>(field).map(|[byte]| byte)
    }

    /// A `u32`.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, WireError> {
        self.take(field).map(u32::from_le_bytes)
    }

    /// A `u64`.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, WireError> {
        self.take(field).map(u64::from_le_bytes)
    }

    fn left(&self) -> usize {
        self.bytes.len().saturating_sub(self.at)
    }

    /// A list's count, refused when `entry_bytes_min` bytes per entry would not fit in what
    /// is left (so a forged count allocates nothing).
    pub fn count(
        &mut self,
        field: &'static str,
        entry_bytes_min: usize,
    ) -> Result<usize, WireError> {
        let count = self.u32(field)?;
        let count_usize = count as usize;
        let left = self.left();
        if count_usize.saturating_mul(entry_bytes_min) > left {
            return Err(WireError::CountTooLarge {
                field,
                count: u64::from(count),
                bytes_left: left,
            });
        }
        Ok(count_usize)
    }

    /// A list of `u64`s, each read with `read`.
    pub fn u64_list<T>(
        &mut self,
        field: &'static str,
        read: impl Fn(u64) -> T,
    ) -> Result<Vec<T>, WireError> {
        let count = self.count(field, 8)?;
        let mut values = Vec::with_capacity(count);
        for _ in 0..count {
            values.push(read(self.u64(field)?));
        }
        Ok(values)
    }

    /// An option.
    pub fn option(&mut self, field: &'static str) -> Result<Option<u64>, WireError> {
        let present = self.u8(field)?;
        let value = self.u64(field)?;
        match (present, value) {
            (1, value) => Ok(Some(value)),
            (0, 0) => Ok(None),
            (0, value) => Err(WireError::InvalidValue { field, value }),
            (flag, _) => Err(WireError::InvalidValue {
                field,
                value: u64::from(flag),
            }),
        }
    }

    /// A string.
    pub fn string(&mut self, field: &'static str) -> Result<String, WireError> {
        let len = self.count(field, 1)?;
        let bytes = self
            .bytes
            .get(self.at..self.at + len)
            .ok_or(WireError::Truncated { field })?;
        self.at += len;
        String::from_utf8(bytes.to_vec()).map_err(|_| WireError::InvalidUtf8 { field })
    }

    /// A byte string (a `u32` length and the bytes), borrowed from the input.
    pub fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], WireError> {
        let len = self.count(field, 1)?;
        let bytes = self
            .bytes
            .get(self.at..self.at + len)
            .ok_or(WireError::Truncated { field })?;
        self.at += len;
        Ok(bytes)
    }

    /// Ends reading: every byte must have been read.
    pub fn finish(&self) -> Result<(), WireError> {
        match self.left() {
            0 => Ok(()),
            bytes => Err(WireError::TrailingBytes { bytes }),
        }
    }
}

/// Checks for the encodings of the services: every value round-trips, every strict prefix of
/// an encoding is an error (never a value or a panic), and one byte more is `TrailingBytes`.
#[cfg(test)]
pub(crate) fn check_encoding<T: PartialEq + std::fmt::Debug>(
    values: &[T],
    encode: impl Fn(&T, &mut Vec<u8>),
    decode: impl Fn(&[u8]) -> Result<T, WireError>,
) {
    for value in values {
        let mut bytes = Vec::new();
        encode(value, &mut bytes);
        assert_eq!(decode(&bytes).as_ref(), Ok(value), "{value:?} round-trips");
        for len in 0..bytes.len() {
            let prefix = bytes.get(..len).unwrap_or_default();
            assert!(decode(prefix).is_err(), "{len} bytes of {value:?}");
        }
        let longer = [bytes.as_slice(), &[0]].concat();
        assert_eq!(
            decode(&longer).err(),
            Some(WireError::TrailingBytes { bytes: 1 }),
            "{value:?} and one byte more"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bad flags, forged counts and broken UTF-8 are refused with the field.
    #[test]
    fn invalid_fields_are_named() {
        let mut flag = Vec::new();
        put_option(&mut flag, None);
        flag[0] = 2;
        assert_eq!(
            Reader::new(&flag).option("member"),
            Err(WireError::InvalidValue {
                field: "member",
                value: 2
            })
        );
        let mut absent_with_value = Vec::new();
        put_option(&mut absent_with_value, Some(5));
        absent_with_value[0] = 0;
        assert_eq!(
            Reader::new(&absent_with_value).option("member"),
            Err(WireError::InvalidValue {
                field: "member",
                value: 5
            })
        );
        let forged = u32::MAX.to_le_bytes();
        assert_eq!(
            Reader::new(&forged).u64_list("shards", |id| id),
            Err(WireError::CountTooLarge {
                field: "shards",
                count: u64::from(u32::MAX),
                bytes_left: 0
            })
        );
        let not_utf8 = [&2u32.to_le_bytes()[..], &[0xff, 0xfe]].concat();
        assert_eq!(
            Reader::new(&not_utf8).string("reason"),
            Err(WireError::InvalidUtf8 { field: "reason" })
        );
    }

    /// Strings (also empty and non-ASCII), options and lists round-trip through the helpers.
    #[test]
    fn fields_round_trip() -> Result<(), WireError> {
        let mut out = Vec::new();
        put_string(&mut out, "consumer-é");
        put_string(&mut out, "");
        put_option(&mut out, Some(u64::MAX));
        put_option(&mut out, None);
        put_count(&mut out, 2);
        put_u64(&mut out, 3);
        put_u64(&mut out, 4);
        put_u32(&mut out, 9);
        let mut reader = Reader::new(&out);
        assert_eq!(reader.string("a")?, "consumer-é");
        assert_eq!(reader.string("b")?, "");
        assert_eq!(reader.option("c")?, Some(u64::MAX));
        assert_eq!(reader.option("d")?, None);
        assert_eq!(reader.u64_list("e", |v| v)?, vec![3, 4]);
        assert_eq!(reader.u32("f")?, 9);
        reader.finish()
    }
}
