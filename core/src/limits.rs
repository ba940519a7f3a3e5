//! Size limits shared by producers, the server and the log.

use crate::error::BatchError;

/// Limits on records and batches. Every limit is in bytes unless its name says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest record: key + value + header names and values. Default 1 MiB.
    pub record_bytes_max: u64,
    /// Largest batch, header and padding included. Default 2 MiB (a 1 MiB record fits, and
    /// a batch fits the log's default 4 MiB write buffer).
    pub batch_bytes_max: u64,
    /// Most records in one batch. Default 1,000,000.
    pub batch_records_max: u64,
}

impl Limits {
    /// The default limits: 1 MiB records, 2 MiB batches, a million records a batch.
    pub const DEFAULT: Limits = Limits {
        record_bytes_max: 1 << 20,
        batch_bytes_max: 2 << 20,
        batch_records_max: 1_000_000,
    };
}

impl Limits {
    /// Checks the size of record `index` (key + value + headers) against `record_bytes_max`.
    pub fn check_record(&self, index: usize, size: u64) -> Result<(), BatchError> {
        if size > self.record_bytes_max {
            return Err(BatchError::RecordTooLarge {
                index,
                size,
                max: self.record_bytes_max,
            });
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}
