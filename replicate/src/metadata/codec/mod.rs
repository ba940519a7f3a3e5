//! Bytes of the metadata log: one encoded [`Command`] per log record, and snapshots of the
//! whole [`MetadataState`].
//!
//! Both are framed alike: a 12-byte header (magic, version, checksum id, flags, body length),
//! the body, and a CRC-32 of everything before it. All integers are little-endian; every
//! variable-length item carries its length. The layout is drawn byte by byte in
//! `docs/format/metadata.md`.
//!
//! Decoders never panic and never trust a length before checking it against the bytes left;
//! every failure is a [`DecodeError`]. A decoded snapshot must also pass
//! [`MetadataState::check_invariants`]. Encoding is deterministic: equal states give equal
//! bytes, because every collection is written in key order.

mod command;
mod frame;
mod items;
mod snapshot;
mod wire;

#[cfg(test)]
mod replica_set_tests;
#[cfg(test)]
mod tests;

use thiserror::Error;

use super::command::Command;
use super::state::MetadataState;

pub use frame::{CHECKSUM_CRC32_IEEE, FRAME_HEADER_LEN, FRAME_OVERHEAD_LEN};

/// Magic of an encoded command: ASCII `RNLC`.
pub const COMMAND_MAGIC: u32 = u32::from_le_bytes(*b"RNLC");

/// Magic of an encoded snapshot: ASCII `RNLM`.
pub const SNAPSHOT_MAGIC: u32 = u32::from_le_bytes(*b"RNLM");

/// The command format version this build writes and reads.
pub const COMMAND_FORMAT_VERSION: u8 = 1;

/// The snapshot format version this build writes and reads.
pub const SNAPSHOT_FORMAT_VERSION: u8 = 1;

/// Encodes `command` as the value of one metadata log record.
pub fn encode_command(command: &Command) -> Vec<u8> {
    let mut writer = wire::Writer::framed(COMMAND_MAGIC, COMMAND_FORMAT_VERSION);
    command::write(&mut writer, command);
    writer.finish_frame()
}

/// Decodes a command written by [`encode_command`].
pub fn decode_command(bytes: &[u8]) -> Result<Command, DecodeError> {
    let body = frame::open(bytes, COMMAND_MAGIC, COMMAND_FORMAT_VERSION)?;
    let mut reader = wire::Reader::new(body);
    let command = command::read(&mut reader)?;
    reader.finish("command")?;
    Ok(command)
}

/// Encodes the whole state, applied index included.
pub fn encode_snapshot(state: &MetadataState) -> Vec<u8> {
    let mut writer = wire::Writer::framed(SNAPSHOT_MAGIC, SNAPSHOT_FORMAT_VERSION);
    snapshot::write(&mut writer, state);
    writer.finish_frame()
}

/// Decodes a snapshot written by [`encode_snapshot`] and checks the state's invariants.
pub fn decode_snapshot(bytes: &[u8]) -> Result<MetadataState, DecodeError> {
    let body = frame::open(bytes, SNAPSHOT_MAGIC, SNAPSHOT_FORMAT_VERSION)?;
    let state = snapshot::read(wire::Reader::new(body))?;
    state
        .check_invariants()
        .map_err(|reason| DecodeError::Inconsistent { reason })?;
    Ok(state)
}

/// Why bytes are not a valid command or snapshot. Checked in this order: frame length, magic,
/// version, checksum id, flags, body length, CRC, then the body field by field.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes end before a field does.
    #[error("metadata truncated in {field}: need {needed} bytes, have {available}")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Bytes the field needs.
        needed: u64,
        /// Bytes left.
        available: u64,
    },
    /// The first four bytes are not the expected magic.
    #[error("not metadata of this kind: magic {found:#010x}, expected {expected:#010x}")]
    BadMagic {
        /// The value found.
        found: u32,
        /// The magic expected.
        expected: u32,
    },
    /// A format version this build does not read.
    #[error("unsupported metadata format version {found} (this build reads {supported})")]
    UnsupportedVersion {
        /// The version found.
        found: u8,
        /// The version this build reads.
        supported: u8,
    },
    /// A checksum algorithm id this build does not know.
    #[error("unknown checksum algorithm id {found}")]
    UnknownChecksum {
        /// The id found.
        found: u8,
    },
    /// Flag bits are set; no flag is defined.
    #[error("unsupported metadata flags {found:#06x}")]
    UnsupportedFlags {
        /// The flags found.
        found: u16,
    },
    /// The body length in the header disagrees with the bytes given.
    #[error("metadata body length is {body_len} bytes, but {available} bytes hold the body")]
    BadLength {
        /// The length in the header.
        body_len: u64,
        /// The bytes between header and CRC.
        available: u64,
    },
    /// The CRC does not match the bytes.
    #[error("metadata checksum mismatch: stored {expected:#010x}, computed {actual:#010x}")]
    ChecksumMismatch {
        /// CRC stored after the body.
        expected: u32,
        /// CRC computed over header and body.
        actual: u32,
    },
    /// A command tag this build does not know (a newer command, or damage).
    #[error("unknown metadata command tag {tag}")]
    UnknownCommand {
        /// The tag found.
        tag: u16,
    },
    /// A snapshot section this build does not know (a newer section, or damage).
    #[error("unknown snapshot section tag {tag}")]
    UnknownSection {
        /// The tag found.
        tag: u16,
    },
    /// Snapshot sections must appear once each, in ascending tag order.
    #[error("snapshot section {tag} follows section {previous}: sections must ascend")]
    SectionOutOfOrder {
        /// The tag found.
        tag: u16,
        /// The tag of the section before it.
        previous: u16,
    },
    /// A section every snapshot of this version holds is missing.
    #[error("snapshot section {tag} is missing")]
    MissingSection {
        /// The missing section's tag.
        tag: u16,
    },
    /// A field holds a value outside its domain (an enum code, a name, a key range).
    #[error("invalid {field}: {reason}")]
    InvalidValue {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Bytes are left after the last field of an item.
    #[error("{count} unexpected bytes after the {field}")]
    TrailingBytes {
        /// The item that should have ended.
        field: &'static str,
        /// Bytes left over.
        count: u64,
    },
    /// A well-formed snapshot whose state breaks an invariant.
    #[error("snapshot state is inconsistent: {reason}")]
    Inconsistent {
        /// The first invariant broken.
        reason: String,
    },
}
