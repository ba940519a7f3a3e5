//! Little-endian primitives: a writer that frames what it writes, and a reader that checks
//! every length against the bytes left before it takes anything.

use super::frame::{CHECKSUM_CRC32_IEEE, FRAME_HEADER_LEN};
use super::DecodeError;

/// Where the body length sits in the frame header.
const BODY_LEN_AT: usize = 8;

/// Appends little-endian fields to a frame.
pub(crate) struct Writer {
    bytes: Vec<u8>,
}

impl Writer {
    /// A writer that has written the frame header, its body length still unknown.
    pub(crate) fn framed(magic: u32, version: u8) -> Writer {
        let mut writer = Writer {
            bytes: Vec::with_capacity(256),
        };
        writer.u32(magic);
        writer.u8(version);
        writer.u8(CHECKSUM_CRC32_IEEE);
        writer.u16(0); // flags
        writer.u32(0); // body length, patched by finish_frame
        assert_eq!(writer.bytes.len(), FRAME_HEADER_LEN);
        writer
    }

    /// Patches the body length into the header, appends the CRC and returns the frame.
    pub(crate) fn finish_frame(mut self) -> Vec<u8> {
        let body_len = self.bytes.len() - FRAME_HEADER_LEN;
        self.patch_u32(BODY_LEN_AT, body_len);
        let crc = crc32fast::hash(&self.bytes);
        self.u32(crc);
        self.bytes
    }

    pub(crate) fn u8(&mut self, value: u8) {
        self.bytes.push(value);
    }

    pub(crate) fn u16(&mut self, value: u16) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    pub(crate) fn u32(&mut self, value: u32) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    pub(crate) fn u64(&mut self, value: u64) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    pub(crate) fn u128(&mut self, value: u128) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    /// A signed integer, two's complement.
    pub(crate) fn i64(&mut self, value: i64) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    /// A count of items or bytes, as a u32.
    pub(crate) fn count(&mut self, count: usize) {
        let count = u32::try_from(count).expect("metadata collections hold fewer than 2^32 items");
        self.u32(count);
    }

    /// A UTF-8 string: its byte count (u32), then its bytes.
    pub(crate) fn string(&mut self, value: &str) {
        self.count(value.len());
        self.bytes.extend_from_slice(value.as_bytes());
    }

    /// A section: `tag` (u16), its body length (u32), then what `body` writes.
    pub(crate) fn section(&mut self, tag: u16, body: impl FnOnce(&mut Writer)) {
        self.u16(tag);
        let length_at = self.bytes.len();
        self.u32(0); // patched below
        body(self);
        let body_len = self.bytes.len() - length_at - 4;
        self.patch_u32(length_at, body_len);
    }

    fn patch_u32(&mut self, at: usize, value: usize) {
        let value = u32::try_from(value).expect("a metadata frame is smaller than 4 GiB");
        if let Some(slot) = self.bytes.get_mut(at..at + 4) {
            slot.copy_from_slice(&value.to_le_bytes());
        }
    }
}

/// Takes little-endian fields from the front of a byte slice.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { rest: bytes }
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// The next `len` bytes.
    pub(crate) fn take(
        &mut self,
        len: usize,
        field: &'static str,
    ) -> Result<&'a [u8], DecodeError> {
        let (taken, rest) = self
            .rest
            .split_at_checked(len)
            .ok_or(DecodeError::Truncated {
                field,
                needed: len as u64,
                available: self.rest.len() as u64,
            })?;
        self.rest = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let taken = self.take(N, field)?;
        taken.try_into().map_err(|_| DecodeError::Truncated {
            field,
            needed: N as u64,
            available: taken.len() as u64,
        })
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.array::<1>(field).map(u8::from_le_bytes)
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.array(field).map(u16::from_le_bytes)
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.array(field).map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.array(field).map(u64::from_le_bytes)
    }

    pub(crate) fn u128(&mut self, field: &'static str) -> Result<u128, DecodeError> {
        self.array(field).map(u128::from_le_bytes)
    }

    pub(crate) fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        self.array(field).map(i64::from_le_bytes)
    }

    /// A count (u32) of items that take at least `item_bytes_min` bytes each, refused when the
    /// bytes left cannot hold that many: a count never makes the decoder allocate more than
    /// the input's size.
    pub(crate) fn count(
        &mut self,
        field: &'static str,
        item_bytes_min: usize,
    ) -> Result<usize, DecodeError> {
        let count = u64::from(self.u32(field)?);
        let needed = count.saturating_mul(item_bytes_min as u64);
        if needed > self.rest.len() as u64 {
            return Err(DecodeError::Truncated {
                field,
                needed,
                available: self.rest.len() as u64,
            });
        }
        usize::try_from(count).map_err(|_| DecodeError::Truncated {
            field,
            needed,
            available: self.rest.len() as u64,
        })
    }

    /// A string written by [`Writer::string`]; must be UTF-8.
    pub(crate) fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let len = self.count(field, 1)?;
        let bytes = self.take(len, field)?;
        String::from_utf8(bytes.to_vec()).map_err(|error| DecodeError::InvalidValue {
            field,
            reason: error.to_string(),
        })
    }

    /// Succeeds when every byte was read.
    pub(crate) fn finish(self, field: &'static str) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                field,
                count: self.rest.len() as u64,
            })
        }
    }
}
