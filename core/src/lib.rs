//! `runnel-core`: the vocabulary every other Runnel crate speaks.
//!
//! Responsibility: identifiers (stream names, shard ids, offsets, epochs, record ids), the
//! 128-bit partition-key hash and key ranges, the record and the **batch format** (the one unit
//! of bytes that travels from producer to disk to consumer), limits, and the errors of all of
//! these.
//!
//! Invariants: every byte layout here is little-endian, versioned and checksummed, and drawn in
//! `docs/format/`. Decoders never panic on any input: bytes from a socket or a file are
//! validated (lengths, CRC-32, rkyv bytecheck) before a single record is handed out.
//!
//! Must never: do I/O, read a clock, spawn a thread, or depend on another Runnel crate.
//! Fault model: any byte of any input may be wrong; the answer is a typed error, never a panic.

pub mod batch;
pub mod error;
pub mod ids;
pub mod key;
pub mod limits;
pub mod name;
pub mod record;

pub use batch::{
    BatchBuilder, BatchEncoder, BatchHeader, BatchView, CheckedChunks, ProducerStamp,
    BATCH_ALIGNMENT, BATCH_FORMAT_VERSION, BATCH_HEADER_LEN, BATCH_MAGIC,
};
pub use error::{BatchError, IdError};
pub use ids::{Epoch, Offset, RecordId, ShardId};
pub use key::{hash128, KeyRange};
pub use limits::Limits;
pub use name::StreamName;
pub use record::{BorrowedRecord, Record, RecordHeader, RecordRef};
