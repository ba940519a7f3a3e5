//! The log's configuration: every limit named with its unit, every default documented.

use runnel_core::Limits;

/// Size of a block of the segment files: O_DIRECT alignment and the unit of the tail buffer.
pub const BLOCK_BYTES: usize = 4096;

/// The first (smallest) step of a segment's disk reservation.
pub const RESERVE_STEP_BYTES_MIN: u64 = 64 << 10;

/// Reserved space is written with zeros ahead of the batches only while the log's writes
/// average less than this (since the previous reservation). A small write's fdatasync costs
/// about one device flush, which an extent conversion committed to the journal would double;
/// a large write's costs its bytes, which the zeros would double instead (the disk writes
/// them twice). About where a flush (~0.2 ms) moves as many bytes (~2 GB/s).
pub const ZERO_AHEAD_WRITE_BYTES_MAX: u64 = 256 << 10;

/// How a shard log sizes its files and buffers and what it keeps.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// A segment file is rolled (sealed, a new one started) before it would exceed this size.
    /// Default 1 GiB.
    pub segment_bytes_max: u64,
    /// A segment is rolled on the next append once it is this old. Default 7 days.
    pub segment_age_max_ms: u64,
    /// Capacity of the tail buffer, the most one group-commit write carries. Appends wait when
    /// it is full (back-pressure). Default 4 MiB; at least one largest batch plus one block.
    pub write_buffer_bytes: usize,
    /// One sparse index entry per this many bytes of batches. Default 64 KiB.
    pub index_interval_bytes: u64,
    /// Largest batch the log accepts. Record and batch limits as checked at ingress.
    pub limits: Limits,
    /// Segments whose newest record is older than this are deleted by retention. `None`: kept.
    pub retention_age_ms: Option<u64>,
    /// Oldest segments are deleted while the log is larger than this. `None`: no limit.
    pub retention_bytes: Option<u64>,
    /// Scan and check every batch of every sealed segment when opening, instead of trusting
    /// the index files written when they were sealed (their batches are checked on every read
    /// either way). Default false.
    pub verify_sealed_segments_on_open: bool,
    /// Reserve disk space for the active segment ahead of its writes (fallocate), in steps that
    /// double from 64 KiB up to `reserve_step_bytes_max` as the segment grows, so an empty
    /// shard costs one 4 KiB block and a full disk is met before a write, not during one; and
    /// write each step with zeros before batches reach it while the writes are small
    /// ([`ZERO_AHEAD_WRITE_BYTES_MAX`]), so that their fdatasync is the device's flush alone
    /// (no extent conversion for the journal to commit). Default true.
    pub preallocate: bool,
    /// Largest step of a reservation. Default 32 MiB.
    pub reserve_step_bytes_max: u64,
    /// After this long without a write, the log records its acknowledged end in the active
    /// segment's checkpoint (one 4 KiB write and fdatasync), so the last acknowledged batches
    /// are known to recovery even when nothing follows them. Writes record it anyway, for what
    /// was durable before them. Default 100 ms.
    pub acked_checkpoint_idle_ms: u64,
    /// Bytes of recently written buffers the log keeps to serve reads close behind its end
    /// (tailing readers and consumers) without disk I/O: its batch cache, counted by the
    /// buffers' allocations. 0 disables it. Default 16 MiB.
    pub read_cache_bytes: usize,
    /// Bytes the batch caches of all logs on one core may hold together; a log that would
    /// exceed it evicts its own oldest entries, or keeps nothing. Default 64 MiB.
    pub read_cache_core_bytes: usize,
    /// How many offsets beyond the next one an offset reservation covers, when appends may be
    /// acknowledged before they are durable ([`crate::ShardLog::reserve_offsets_durably`]):
    /// one replacement of the reservation file (two fdatasyncs) per this many offsets, and at
    /// most this many more offsets in the lost range a crash leaves. Default 65,536.
    pub offset_reserve_step: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes_max: 1 << 30,
            segment_age_max_ms: 7 * 24 * 3600 * 1000,
            write_buffer_bytes: 4 << 20,
            index_interval_bytes: 64 << 10,
            limits: Limits::DEFAULT,
            retention_age_ms: None,
            retention_bytes: None,
            verify_sealed_segments_on_open: false,
            preallocate: true,
            reserve_step_bytes_max: 32 << 20,
            acked_checkpoint_idle_ms: 100,
            read_cache_bytes: 16 << 20,
            read_cache_core_bytes: 64 << 20,
            offset_reserve_step: 1 << 16,
        }
    }
}

impl LogConfig {
    /// Largest batch that fits both the tail buffer and a segment.
    pub fn batch_bytes_max(&self) -> u64 {
        let buffer_room = (self.write_buffer_bytes - BLOCK_BYTES) as u64;
        let segment_room = self.segment_bytes_max - BLOCK_BYTES as u64;
        self.limits
            .batch_bytes_max
            .min(buffer_room)
            .min(segment_room)
    }

    /// Checks that the sizes fit together.
    pub fn validate(&self) -> Result<(), String> {
        if self.write_buffer_bytes < 4 * BLOCK_BYTES
            || !self.write_buffer_bytes.is_multiple_of(BLOCK_BYTES)
        {
            return Err(format!(
                "write_buffer_bytes must be a multiple of {BLOCK_BYTES} and at least {}",
                4 * BLOCK_BYTES
            ));
        }
        if self.segment_bytes_max < 4 * BLOCK_BYTES as u64
            || !self.segment_bytes_max.is_multiple_of(BLOCK_BYTES as u64)
        {
            return Err(format!(
                "segment_bytes_max must be a multiple of {BLOCK_BYTES} and at least {}",
                4 * BLOCK_BYTES
            ));
        }
        if self.segment_bytes_max > u64::from(u32::MAX) * 4 {
            return Err("segment_bytes_max must be below 16 GiB".into());
        }
        if self.reserve_step_bytes_max < RESERVE_STEP_BYTES_MIN {
            return Err(format!(
                "reserve_step_bytes_max must be at least {RESERVE_STEP_BYTES_MIN}"
            ));
        }
        if self.offset_reserve_step == 0 {
            return Err("offset_reserve_step must be positive".into());
        }
        if self.index_interval_bytes == 0 {
            return Err("index_interval_bytes must be positive".into());
        }
        Ok(())
    }
}
