//! The bytes of the metadata group's log file (`docs/format/metadata-group.md`): the file
//! header, the four kinds of frame, and the replay that rebuilds what the file holds.
//!
//! Pure: no I/O. Every byte handed to [`replay`] may be wrong; the answer is a [`Damage`] with
//! the position of the first bad byte, never a panic.

use runnel_replicate::group::{ConfState, Entry, EntryType, HardState, StoredSnapshot};

/// The first bytes of the file: ASCII `RNGL`.
pub const FILE_MAGIC: [u8; 4] = *b"RNGL";
/// Version of the layout this build writes and reads.
pub const FILE_VERSION: u16 = 1;
/// Bytes of the file header.
pub const FILE_HEADER_LEN: usize = 16;
/// Bytes of a frame's header (before its payload).
pub const FRAME_HEADER_LEN: usize = 12;
/// Bytes of the CRC after a frame's payload.
pub const FRAME_CRC_LEN: usize = 4;
/// Largest payload a frame may declare: a snapshot of the largest state fits with room.
pub const FRAME_PAYLOAD_BYTES_MAX: u32 = 1 << 30;
/// Flag bit: this frame is the last of its write (the frames of one write count only
/// together).
pub const FLAG_END_OF_WRITE: u8 = 1;

/// Frame kinds.
pub const KIND_SNAPSHOT: u8 = 1;
/// Entries appended, replacing any held at or after the first one's index.
pub const KIND_ENTRIES: u8 = 2;
/// A new hard state (term, vote, commit).
pub const KIND_HARD_STATE: u8 = 3;
/// A commit index learnt after the write that carried the entries.
pub const KIND_COMMIT: u8 = 4;

/// Bytes of one entry's fixed fields in an entries frame (type, term, index, context and data
/// lengths).
const ENTRY_FIXED_LEN: usize = 1 + 8 + 8 + 4 + 4;

/// The file header: magic, version, reserved, CRC of the first 12 bytes.
pub fn file_header() -> [u8; FILE_HEADER_LEN] {
    let mut header = [0u8; FILE_HEADER_LEN];
    header[..4].copy_from_slice(&FILE_MAGIC);
    header[4..6].copy_from_slice(&FILE_VERSION.to_le_bytes());
    let crc = crc32fast::hash(&header[..12]);
    header[12..].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Appends one frame whose payload `write_payload` writes.
fn frame(
    out: &mut Vec<u8>,
    kind: u8,
    end_of_write: bool,
    write_payload: impl FnOnce(&mut Vec<u8>),
) {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_LEN]);
    write_payload(out);
    let payload_len = out.len() - start - FRAME_HEADER_LEN;
    assert!(
        payload_len <= FRAME_PAYLOAD_BYTES_MAX as usize,
        "a metadata group frame of {payload_len} bytes"
    );
    let payload_crc = crc32fast::hash(&out[start + FRAME_HEADER_LEN..]);
    let header = &mut out[start..start + FRAME_HEADER_LEN];
    header[..4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    header[4] = kind;
    header[5] = if end_of_write { FLAG_END_OF_WRITE } else { 0 };
    let header_crc = crc32fast::hash(&header[..8]);
    header[8..].copy_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(&payload_crc.to_le_bytes());
}

fn put_ids(out: &mut Vec<u8>, ids: &[u64]) {
    out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
    for id in ids {
        out.extend_from_slice(&id.to_le_bytes());
    }
}

/// Appends a snapshot frame.
pub fn encode_snapshot(out: &mut Vec<u8>, snapshot: &StoredSnapshot, end_of_write: bool) {
    frame(out, KIND_SNAPSHOT, end_of_write, |out| {
        out.extend_from_slice(&snapshot.index.to_le_bytes());
        out.extend_from_slice(&snapshot.term.to_le_bytes());
        let members = &snapshot.conf_state;
        put_ids(out, &members.voters);
        put_ids(out, &members.learners);
        put_ids(out, &members.voters_outgoing);
        put_ids(out, &members.learners_next);
        out.push(u8::from(members.auto_leave));
        out.extend_from_slice(&snapshot.data);
    });
}

/// Appends an entries frame (`entries` not empty).
pub fn encode_entries(out: &mut Vec<u8>, entries: &[Entry], end_of_write: bool) {
    assert!(!entries.is_empty(), "an empty entries frame");
    frame(out, KIND_ENTRIES, end_of_write, |out| {
        out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        for entry in entries {
            out.push(entry.entry_type as u8);
            out.extend_from_slice(&entry.term.to_le_bytes());
            out.extend_from_slice(&entry.index.to_le_bytes());
            out.extend_from_slice(&(entry.context.len() as u32).to_le_bytes());
            out.extend_from_slice(&(entry.data.len() as u32).to_le_bytes());
            out.extend_from_slice(&entry.context);
            out.extend_from_slice(&entry.data);
        }
    });
}

/// Appends a hard-state frame.
pub fn encode_hard_state(out: &mut Vec<u8>, hard_state: &HardState, end_of_write: bool) {
    frame(out, KIND_HARD_STATE, end_of_write, |out| {
        out.extend_from_slice(&hard_state.term.to_le_bytes());
        out.extend_from_slice(&hard_state.vote.to_le_bytes());
        out.extend_from_slice(&hard_state.commit.to_le_bytes());
    });
}

/// Appends a commit frame.
pub fn encode_commit(out: &mut Vec<u8>, commit: u64, end_of_write: bool) {
    frame(out, KIND_COMMIT, end_of_write, |out| {
        out.extend_from_slice(&commit.to_le_bytes());
    });
}

/// Damage found in the file: the byte position of the frame (or header) it is in, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// File position of the damaged frame (0: the file header).
    pub position: u64,
    /// What is wrong.
    pub reason: String,
}

fn damage(position: usize, reason: impl Into<String>) -> Damage {
    Damage {
        position: position as u64,
        reason: reason.into(),
    }
}

/// What the file holds, rebuilt frame by frame.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Replayed {
    /// The last hard state written, with the commit frames after it applied.
    pub hard_state: HardState,
    /// The snapshot the file starts with.
    pub snapshot: StoredSnapshot,
    /// The entries after it.
    pub entries: Vec<Entry>,
    /// Where the last complete write ends: appends go on from here.
    pub end: u64,
    /// An incomplete final write was found at `end` (never synced, so never acknowledged):
    /// the bytes from `end` to the end of the file are to be cut.
    pub torn: bool,
}

impl Replayed {
    fn last_index(&self) -> u64 {
        self.entries.last().map_or(self.snapshot.index, |e| e.index)
    }
}

/// A little-endian reader over a payload; every read is checked.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < len {
            return None;
        }
        let (taken, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Some(taken)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    }

    fn ids(&mut self) -> Option<Vec<u64>> {
        let count = self.u32()? as usize;
        // Bounded by the payload: each id takes 8 bytes.
        if count > self.bytes.len() / 8 {
            return None;
        }
        (0..count).map(|_| self.u64()).collect()
    }
}

fn decode_snapshot(payload: &[u8]) -> Option<StoredSnapshot> {
    let mut reader = Reader { bytes: payload };
    let index = reader.u64()?;
    let term = reader.u64()?;
    let conf_state = ConfState {
        voters: reader.ids()?,
        learners: reader.ids()?,
        voters_outgoing: reader.ids()?,
        learners_next: reader.ids()?,
        auto_leave: match reader.u8()? {
            0 => false,
            1 => true,
            _ => return None,
        },
        ..ConfState::default()
    };
    Some(StoredSnapshot {
        index,
        term,
        conf_state,
        data: reader.bytes.to_vec(),
    })
}

fn decode_entries(payload: &[u8]) -> Option<Vec<Entry>> {
    let mut reader = Reader { bytes: payload };
    let count = reader.u32()? as usize;
    if count == 0 || count > reader.bytes.len() / ENTRY_FIXED_LEN {
        return None;
    }
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let entry_type = match reader.u8()? {
            0 => EntryType::EntryNormal,
            1 => EntryType::EntryConfChange,
            2 => EntryType::EntryConfChangeV2,
            _ => return None,
        };
        let term = reader.u64()?;
        let index = reader.u64()?;
        let context_len = reader.u32()? as usize;
        let data_len = reader.u32()? as usize;
        let context = reader.take(context_len)?.to_vec();
        let data = reader.take(data_len)?.to_vec();
        entries.push(Entry {
            entry_type,
            term,
            index,
            context: context.into(),
            data: data.into(),
            ..Entry::default()
        });
    }
    reader.bytes.is_empty().then_some(entries)
}

fn decode_u64s<const N: usize>(payload: &[u8]) -> Option<[u64; N]> {
    if payload.len() != 8 * N {
        return None;
    }
    let mut reader = Reader { bytes: payload };
    let mut values = [0u64; N];
    for value in &mut values {
        *value = reader.u64()?;
    }
    Some(values)
}

/// One decoded frame.
enum Frame {
    Snapshot(StoredSnapshot),
    Entries(Vec<Entry>),
    HardState(HardState),
    Commit(u64),
}

/// What is at `position`: a whole frame with its end, or the end of the file's good part.
enum Scanned {
    /// A frame, its end-of-write flag, and the position after it.
    Frame(Frame, bool, usize),
    /// Nothing more: the file ends here.
    End,
    /// An incomplete final write starts at or before here: a frame header cut short, a frame
    /// running past the end of the file, or nothing but zeros to the end.
    Torn,
}

fn scan(bytes: &[u8], position: usize) -> Result<Scanned, Damage> {
    let rest = bytes.get(position..).unwrap_or_default();
    if rest.is_empty() {
        return Ok(Scanned::End);
    }
    if rest.len() < FRAME_HEADER_LEN || rest.iter().all(|&b| b == 0) {
        return Ok(Scanned::Torn);
    }
    let header = &rest[..FRAME_HEADER_LEN];
    let stored_header_crc = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if crc32fast::hash(&header[..8]) != stored_header_crc {
        return Err(damage(position, "frame header checksum mismatch"));
    }
    let payload_len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let (kind, flags) = (header[4], header[5]);
    if header[6] != 0 || header[7] != 0 || flags & !FLAG_END_OF_WRITE != 0 {
        return Err(damage(position, "frame header with reserved bits set"));
    }
    if payload_len > FRAME_PAYLOAD_BYTES_MAX {
        return Err(damage(
            position,
            format!("frame of {payload_len} bytes, above the limit"),
        ));
    }
    let payload_len = payload_len as usize;
    let frame_len = FRAME_HEADER_LEN + payload_len + FRAME_CRC_LEN;
    if rest.len() < frame_len {
        return Ok(Scanned::Torn);
    }
    let payload = &rest[FRAME_HEADER_LEN..FRAME_HEADER_LEN + payload_len];
    let crc = &rest[FRAME_HEADER_LEN + payload_len..frame_len];
    if crc32fast::hash(payload) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
        return Err(damage(position, "frame payload checksum mismatch"));
    }
    let frame = match kind {
        KIND_SNAPSHOT => decode_snapshot(payload).map(Frame::Snapshot),
        KIND_ENTRIES => decode_entries(payload).map(Frame::Entries),
        KIND_HARD_STATE => decode_u64s::<3>(payload).map(|[term, vote, commit]| {
            Frame::HardState(HardState {
                term,
                vote,
                commit,
                ..HardState::default()
            })
        }),
        KIND_COMMIT => decode_u64s::<1>(payload).map(|[commit]| Frame::Commit(commit)),
        other => return Err(damage(position, format!("unknown frame kind {other}"))),
    };
    let frame =
        frame.ok_or_else(|| damage(position, format!("frame of kind {kind} does not decode")))?;
    Ok(Scanned::Frame(
        frame,
        flags & FLAG_END_OF_WRITE != 0,
        position + frame_len,
    ))
}

/// Applies one frame of a complete write to what was replayed so far.
/// The caller checked that a snapshot frame comes first, and only first.
fn apply(replayed: &mut Replayed, frame: Frame, position: usize) -> Result<(), Damage> {
    match frame {
        Frame::Snapshot(snapshot) => replayed.snapshot = snapshot,
        Frame::Entries(entries) => {
            let first_index = entries[0].index;
            if first_index <= replayed.snapshot.index || first_index > replayed.last_index() + 1 {
                return Err(damage(
                    position,
                    format!(
                        "entries from index {first_index} do not fit a log of {}..={}",
                        replayed.snapshot.index + 1,
                        replayed.last_index()
                    ),
                ));
            }
            if let Some(pair) = entries.windows(2).find(|w| w[1].index != w[0].index + 1) {
                return Err(damage(
                    position,
                    format!("entry {} follows entry {}", pair[1].index, pair[0].index),
                ));
            }
            let keep = (first_index - replayed.snapshot.index - 1) as usize;
            replayed.entries.truncate(keep);
            replayed.entries.extend(entries);
        }
        Frame::HardState(hard_state) => replayed.hard_state = hard_state,
        Frame::Commit(commit) => {
            replayed.hard_state.commit = replayed.hard_state.commit.max(commit);
        }
    }
    Ok(())
}

/// Replays a whole file. The frames of one write (up to the one flagged end-of-write) count
/// only together: an incomplete final write is left out entirely, and reported as `torn` for
/// the caller to cut. The file's first write (its header's snapshot, entries and hard state)
/// was synced before the file got its name, so an incomplete first write is damage.
pub fn replay(bytes: &[u8]) -> Result<Replayed, Damage> {
    if bytes.len() < FILE_HEADER_LEN {
        return Err(damage(
            0,
            format!("{} bytes, shorter than the file header", bytes.len()),
        ));
    }
    let header = &bytes[..FILE_HEADER_LEN];
    if header[..4] != FILE_MAGIC {
        return Err(damage(0, "not a metadata group log (magic)"));
    }
    let version = u16::from_le_bytes([header[4], header[5]]);
    if version != FILE_VERSION {
        return Err(damage(
            0,
            format!("format version {version}, this build reads {FILE_VERSION}"),
        ));
    }
    let stored_crc = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
    if crc32fast::hash(&header[..12]) != stored_crc || header[6..12].iter().any(|&b| b != 0) {
        return Err(damage(0, "file header checksum mismatch"));
    }
    let mut replayed = Replayed {
        end: FILE_HEADER_LEN as u64,
        ..Replayed::default()
    };
    let mut write: Vec<(Frame, usize)> = Vec::new();
    let mut position = FILE_HEADER_LEN;
    loop {
        match scan(bytes, position)? {
            Scanned::Frame(frame, end_of_write, next) => {
                write.push((frame, position));
                position = next;
                if end_of_write {
                    for (frame, at) in write.drain(..) {
                        if (at == FILE_HEADER_LEN) != matches!(frame, Frame::Snapshot(_)) {
                            return Err(damage(
                                at,
                                "a snapshot frame comes first in the file, and only first",
                            ));
                        }
                        apply(&mut replayed, frame, at)?;
                    }
                    replayed.end = position as u64;
                }
            }
            Scanned::End | Scanned::Torn => {
                if replayed.end == FILE_HEADER_LEN as u64 {
                    return Err(damage(
                        FILE_HEADER_LEN,
                        "the file's first write (its snapshot) is incomplete",
                    ));
                }
                replayed.torn = replayed.end < bytes.len() as u64;
                break;
            }
        }
    }
    let last = replayed.last_index();
    if replayed.hard_state.commit > last {
        return Err(damage(
            replayed.end as usize,
            format!(
                "commit index {} past the last entry {last}",
                replayed.hard_state.commit
            ),
        ));
    }
    Ok(replayed)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use runnel_replicate::group::{Entry, HardState};

    use super::{encode_commit, encode_entries, encode_hard_state, file_header, replay};

    fn hex(text: &str) -> Vec<u8> {
        text.split_whitespace()
            .map(|byte| u8::from_str_radix(byte, 16).expect("hex"))
            .collect()
    }

    /// The examples of docs/format/metadata-group.md are the bytes this build writes.
    #[test]
    fn the_documented_bytes_are_the_bytes_written() {
        assert_eq!(
            file_header().to_vec(),
            hex("52 4e 47 4c 01 00 00 00 00 00 00 00 41 dc c1 a7")
        );
        let mut entries = Vec::new();
        let entry = Entry {
            term: 2,
            index: 3,
            context: 7u64.to_le_bytes().to_vec().into(),
            data: b"abc".to_vec().into(),
            ..Entry::default()
        };
        encode_entries(&mut entries, &[entry], false);
        assert_eq!(
            entries,
            hex("28 00 00 00 02 00 00 00 01 6e b8 e5 01 00 00 00 00
                 02 00 00 00 00 00 00 00 03 00 00 00 00 00 00 00 08 00 00 00 03 00 00 00
                 07 00 00 00 00 00 00 00 61 62 63 4b 51 f3 4a")
        );
        let mut hard_state = Vec::new();
        let state = HardState {
            term: 2,
            vote: 1,
            commit: 4,
            ..HardState::default()
        };
        encode_hard_state(&mut hard_state, &state, true);
        assert_eq!(
            hard_state,
            hex("18 00 00 00 03 01 00 00 2e 30 0b d9 02 00 00 00 00 00 00 00
                 01 00 00 00 00 00 00 00 04 00 00 00 00 00 00 00 44 99 d8 50")
        );
        let mut commit = Vec::new();
        encode_commit(&mut commit, 5, true);
        assert_eq!(
            commit,
            hex("08 00 00 00 04 01 00 00 bc 39 67 38 05 00 00 00 00 00 00 00 0d d1 c2 2d")
        );
    }

    proptest! {
        /// Any bytes after a valid header replay to a log or to damage, never a panic.
        #[test]
        fn replay_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut bytes = file_header().to_vec();
            bytes.extend_from_slice(&tail);
            let _outcome = replay(&bytes);
            let _outcome = replay(&tail);
        }
    }
}
