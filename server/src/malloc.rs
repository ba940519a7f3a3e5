//! The process's allocator settings. Runnel allocates a few large buffers over and over: each
//! shard log's tail buffer (up to `log.write_buffer_bytes`, 4 MiB) is handed to the disk and
//! replaced on every group commit, and each request's payload buffer is as large as its batch
//! (1 MiB from the SDK's producers). glibc's malloc serves allocations above its mmap threshold
//! with fresh mappings that are unmapped on free, and trims freed memory at the top of its
//! heaps: each such buffer then costs a page fault and a zeroed page per 4 KiB touched, and an
//! unmap with TLB shootdowns when it goes. `runnel-bench node` (512 MiB appended, client and
//! server in one process, as the benchmark then ran) took 152,846 minor page faults without
//! these settings and 62,058 with them (set through glibc's `MALLOC_MMAP_THRESHOLD_` and
//! `MALLOC_TRIM_THRESHOLD_` environment variables, the same parameters).
//!
//! Raising both thresholds keeps such buffers in the heap, where a freed one is reused by the
//! next. The cost is memory the process keeps after a burst (at most the trim threshold of
//! free space at the top of each heap; freed chunks inside a heap were never returned anyway).

/// Allocations up to this size come from the heap, not from their own mapping.
pub const MMAP_THRESHOLD_BYTES: i32 = 64 << 20;

/// Free space at the top of a heap is returned to the system only beyond this size.
pub const TRIM_THRESHOLD_BYTES: i32 = 128 << 20;

/// Applies [`MMAP_THRESHOLD_BYTES`] and [`TRIM_THRESHOLD_BYTES`] (glibc only; other C
/// libraries keep their own policy). Call once at the start of the process, before threads
/// allocate. Returns whether both settings were taken.
#[allow(unsafe_code)]
pub fn tune() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes malloc's parameters; it takes plain integers.
        let mmap = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) };
        // SAFETY: as above.
        let trim = unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) };
        mmap == 1 && trim == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    /// glibc accepts both settings (a value it refused would silently keep the old policy).
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_settings() {
        assert!(super::tune());
    }
}
