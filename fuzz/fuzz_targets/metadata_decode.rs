//! Fuzz target: the metadata codec (`runnel_replicate::metadata`) — commands and snapshots.
//!
//! Each input is tried as given and re-signed (its CRC recomputed), so mutations reach the
//! body decoders past the checksum. Never a panic; anything that decodes re-encodes to the
//! same bytes (one encoding per value), and a decoded snapshot satisfies the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runnel_replicate::metadata::codec::FRAME_HEADER_LEN;
use runnel_replicate::metadata::{decode_command, decode_snapshot, encode_command, encode_snapshot};

/// Recomputes the frame's CRC (at `12 + body_len`, over every byte before it), if it fits.
fn resign(bytes: &[u8]) -> Option<Vec<u8>> {
    let body_len = u32::from_le_bytes(bytes.get(8..12)?.try_into().ok()?) as usize;
    let crc_at = FRAME_HEADER_LEN.checked_add(body_len)?;
    let mut copy = bytes.get(..crc_at.checked_add(4)?)?.to_vec();
    let crc = crc32fast::hash(&copy[..crc_at]);
    copy[crc_at..].copy_from_slice(&crc.to_le_bytes());
    Some(copy)
}

fuzz_target!(|data: &[u8]| {
    for bytes in std::iter::once(data.to_vec()).chain(resign(data)) {
        if let Ok(command) = decode_command(&bytes) {
            assert_eq!(encode_command(&command), bytes, "a command has two encodings");
        }
        if let Ok(state) = decode_snapshot(&bytes) {
            assert!(state.check_invariants().is_ok(), "a decoded snapshot breaks the invariants");
            assert_eq!(encode_snapshot(&state), bytes, "a snapshot has two encodings");
        }
    }
});
