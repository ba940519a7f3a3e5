//! A batch as the network delivers it: the chunks a QUIC stream was received in, not joined.
//!
//! Ingress checks such a batch in two steps, so that its bytes are copied once, from the
//! received chunks straight into their place in the log's tail buffer:
//!
//! 1. [`CheckedChunks::check`] walks the chunks: the header (gathered into an array when it
//!    spans chunks) with its CRC, the limits, the length, the zero padding and the payload CRC
//!    (computed incrementally). Only this builds a [`CheckedChunks`].
//! 2. [`CheckedChunks::copy_into`] copies the batch into its destination and validates the
//!    archive there (rkyv bytecheck needs contiguous, aligned bytes), the records against the
//!    limits and the caller's check, and the header's timestamps.
//!
//! Together they accept and refuse exactly what [`BatchView::validate_with`] does on the
//! joined bytes, with the same errors (a property test splits batches at every kind of place).

use super::{check_batch_limits, BatchHeader, BatchView, BATCH_HEADER_LEN};
use crate::error::BatchError;
use crate::limits::Limits;
use crate::record::RecordRef;

/// A batch received in chunks whose header, limits, length, padding and payload CRC were
/// checked ([`Self::check`]); its archive is validated as it is copied ([`Self::copy_into`]).
/// Bytes after the batch in the last chunks are ignored, as [`BatchView::check`] ignores them.
#[derive(Debug)]
pub struct CheckedChunks<'a, C> {
    header: BatchHeader,
    chunks: &'a [C],
}

impl<'a, C: AsRef<[u8]>> CheckedChunks<'a, C> {
    /// Checks the batch that `chunks`, joined, start with: the first half of
    /// [`BatchView::validate_with`], with the same errors in the same order.
    pub fn check(chunks: &'a [C], limits: &Limits) -> Result<CheckedChunks<'a, C>, BatchError> {
        let mut head = [0u8; BATCH_HEADER_LEN];
        let gathered = gather(chunks, &mut head);
        // Fewer than a header's bytes in all: `decode` reports the truncation with the total.
        let header = BatchHeader::decode(head.get(..gathered).unwrap_or_default())?;
        check_batch_limits(&header, limits)?;
        let batch_len = header.batch_len as usize;
        let total: usize = chunks.iter().map(|chunk| chunk.as_ref().len()).sum();
        if total < batch_len {
            return Err(BatchError::Truncated {
                needed: batch_len as u64,
                available: total as u64,
            });
        }
        let payload_end = BATCH_HEADER_LEN + header.payload_len as usize;
        let mut payload_crc = crc32fast::Hasher::new();
        let mut padding_is_zero = true;
        let mut start = 0;
        for chunk in chunks {
            if start >= batch_len {
                break;
            }
            let bytes = chunk.as_ref();
            let payload = part(bytes, start, BATCH_HEADER_LEN, payload_end);
            payload_crc.update(payload);
            let padding = part(bytes, start, payload_end, batch_len);
            padding_is_zero &= padding.iter().all(|&byte| byte == 0);
            start += bytes.len();
        }
        if !padding_is_zero {
            return Err(BatchError::BadLength {
                reason: "padding after the payload is not zero".into(),
            });
        }
        let computed = payload_crc.finalize();
        if computed != header.payload_crc {
            return Err(BatchError::PayloadChecksumMismatch {
                expected: header.payload_crc,
                actual: computed,
            });
        }
        Ok(CheckedChunks { header, chunks })
    }

    /// The decoded header (base offset and epoch as the producer sent them).
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// Bytes of the batch, header to padding: what [`Self::copy_into`] needs.
    pub fn len(&self) -> usize {
        self.header.batch_len as usize
    }

    /// Always false: a checked batch holds at least its header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Copies the batch into `target` (exactly [`Self::len`] bytes at a 16-byte aligned
    /// address: a place in a log's tail buffer), then validates it there: the second half of
    /// [`BatchView::validate_with`], which hands each record to `check`. On an error `target`
    /// holds the refused bytes; the caller must not keep them.
    pub fn copy_into<'b, E: From<BatchError>>(
        &self,
        target: &'b mut [u8],
        limits: &Limits,
        check: impl FnMut(usize, RecordRef<'b>) -> Result<(), E>,
    ) -> Result<BatchView<'b>, E> {
        assert_eq!(
            target.len(),
            self.len(),
            "a batch is copied into exactly its own length"
        );
        let mut start = 0;
        for chunk in self.chunks {
            let bytes = chunk.as_ref();
            let Some(source) = bytes.get(..bytes.len().min(target.len() - start)) else {
                break;
            };
            if let Some(place) = target.get_mut(start..start + source.len()) {
                place.copy_from_slice(source);
            }
            start += source.len();
            if start == target.len() {
                break;
            }
        }
        // `check` saw at least this many bytes in the chunks.
        assert_eq!(start, target.len(), "the chunks hold the whole batch");
        let view = BatchView {
            header: self.header,
            bytes: target,
        };
        view.validate_records(limits, check)
    }
}

/// Copies the first bytes of the joined `chunks` into `head`; returns how many there were.
fn gather<C: AsRef<[u8]>>(chunks: &[C], head: &mut [u8; BATCH_HEADER_LEN]) -> usize {
    let mut filled = 0;
    for chunk in chunks {
        let bytes = chunk.as_ref();
        let take = bytes.len().min(BATCH_HEADER_LEN - filled);
        if let (Some(target), Some(source)) =
            (head.get_mut(filled..filled + take), bytes.get(..take))
        {
            target.copy_from_slice(source);
        }
        filled += take;
        if filled == BATCH_HEADER_LEN {
            break;
        }
    }
    filled
}

/// The bytes of `chunk` (which starts at `chunk_start` of the joined bytes) that fall within
/// `[from, to)` of the joined bytes.
fn part(chunk: &[u8], chunk_start: usize, from: usize, to: usize) -> &[u8] {
    let chunk_end = chunk_start + chunk.len();
    let (from, to) = (from.max(chunk_start), to.min(chunk_end));
    if from >= to {
        return &[];
    }
    chunk
        .get(from - chunk_start..to - chunk_start)
        .unwrap_or_default()
}
