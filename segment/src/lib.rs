//! `runnel-segment`: a shard's durable log on disk.
//!
//! Responsibility: append batches (assigning dense offsets, or at the offset a sequencer gave
//! a replica), make them durable with group commit (one write + fdatasync carries everything
//! that arrived meanwhile), read them back by offset or timestamp without copying records, tail
//! new data, trim, apply retention, truncate an uncommitted suffix (a replica's recovery), and
//! recover after a crash.
//!
//! Invariants: offsets are dense and each offset holds one batch's record forever; a batch is
//! reported durable only after the fdatasync that covers it returned success; every batch read
//! back passed its CRCs (on the read from disk, or on append for the bytes the batch cache serves
//! from memory); recovery yields exactly a prefix of what was appended, containing every
//! batch that was durable.
//!
//! Must never: acknowledge after a failed write or sync (an I/O error poisons the log: every
//! later append and durability wait fails), return bytes that fail a checksum, or panic on what
//! it reads from disk.
//!
//! Fault model: power loss at any instant (unsynced writes may be lost or torn at 512-byte
//! sectors; synced data survives), bit rot (detected by CRC, reported as corruption), and
//! failing writes or syncs. The I/O goes through the [`storage::Storage`] seam: glommio DMA
//! files (O_DIRECT on io_uring) in production, [`storage::fault::FaultStorage`] in tests.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

pub mod cache;
pub mod config;
pub mod error;
mod format;
mod index;
mod index_file;
pub mod log;
mod read;
mod recovery;
pub mod runtime;
mod segment;
pub mod storage;
mod truncate;

pub use config::LogConfig;
pub use error::LogError;
pub use log::{Appended, BatchEpoch, LogStats, ReadBound, ShardLog};
pub use read::ReadChunk;
pub use storage::{dma::DmaStorage, fault::FaultStorage, Storage};
