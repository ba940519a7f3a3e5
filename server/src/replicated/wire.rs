//! The wire encoding of the replication protocol's messages (`replicate::shard::Message`), as
//! they travel between nodes inside the remote service `replica.deliver`
//! (`docs/format/replication.md` draws it byte by byte).
//!
//! Decoding takes bytes from another node: it never panics, allocates nothing for a forged
//! count (lists are checked against the bytes left), and checks each entry's batch bytes (header
//! CRC, payload CRC, record count) so that a corrupt batch is dropped like a lost message
//! rather than handed to a replica that would store it.

use std::sync::Arc;

use runnel_core::{BatchView, ShardId};
use runnel_replicate::metadata::NodeId;
use runnel_replicate::shard::{Entry, Epoch, Message};

use crate::mesh::codec::{put_bytes, put_count, put_option, put_u64, Reader, WireError};

/// Messages for one shard from one node, in the order it sent them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMessages {
    /// The shard.
    pub shard: ShardId,
    /// The sending node.
    pub from: NodeId,
    /// The messages, oldest first.
    pub messages: Vec<Message>,
}

/// Messages one delivery carries at most (a sender's queue beyond waits for the next one).
pub const MESSAGES_PER_DELIVERY_MAX: usize = 4096;
/// Batch bytes one delivery carries at most beyond its first message (a peer frame holds
/// 16 MiB).
pub const DELIVERY_BYTES_MAX: usize = 4 << 20;

const STORE: u8 = 1;
const STORED: u8 = 2;
const NEED_FROM: u8 = 3;
const SEALED: u8 = 4;
const SEAL: u8 = 5;
const DIGEST: u8 = 6;

/// Bytes of the smallest encoded message (a kind and an epoch): what a forged count is
/// checked against.
const MESSAGE_BYTES_MIN: usize = 9;
/// Bytes of the smallest encoded entry (three `u64`s and an empty byte string).
const ENTRY_BYTES_MIN: usize = 28;

/// Encodes `value` at the end of `out`.
pub fn encode_shard_messages(value: &ShardMessages, out: &mut Vec<u8>) {
    put_u64(out, value.shard.0);
    put_u64(out, value.from.0);
    put_count(out, value.messages.len());
    for message in &value.messages {
        encode_message(message, out);
    }
}

/// Decodes what [`encode_shard_messages`] wrote, every byte of it.
pub fn decode_shard_messages(bytes: &[u8]) -> Result<ShardMessages, WireError> {
    let mut reader = Reader::new(bytes);
    let shard = ShardId(reader.u64("shard")?);
    let from = NodeId(reader.u64("from")?);
    let count = reader.count("messages", MESSAGE_BYTES_MIN)?;
    let mut messages = Vec::with_capacity(count);
    for _ in 0..count {
        messages.push(decode_message(&mut reader)?);
    }
    reader.finish()?;
    Ok(ShardMessages {
        shard,
        from,
        messages,
    })
}

/// Encodes one message: its kind, the epoch it speaks for, then its fields.
pub fn encode_message(message: &Message, out: &mut Vec<u8>) {
    match message {
        Message::Store {
            epoch,
            entry,
            prev_epoch,
            committed,
        } => {
            out.push(STORE);
            put_u64(out, epoch.0);
            encode_entry(entry, out);
            put_option(out, prev_epoch.map(|e| e.0));
            put_u64(out, *committed);
        }
        Message::Stored { epoch, end } => {
            out.push(STORED);
            put_u64(out, epoch.0);
            put_u64(out, *end);
        }
        Message::NeedFrom { epoch, from } => {
            out.push(NEED_FROM);
            put_u64(out, epoch.0);
            put_u64(out, *from);
        }
        Message::Sealed { sealed } => {
            out.push(SEALED);
            put_u64(out, sealed.0);
        }
        Message::Seal { epoch } => {
            out.push(SEAL);
            put_u64(out, epoch.0);
        }
        Message::Digest {
            epoch,
            committed,
            tail,
            end,
            last_epoch,
        } => {
            out.push(DIGEST);
            put_u64(out, epoch.0);
            put_u64(out, *committed);
            put_count(out, tail.len());
            for entry in tail {
                encode_entry(entry, out);
            }
            put_u64(out, *end);
            put_u64(out, last_epoch.0);
        }
    }
}

/// Decodes one message at the reader's position.
pub fn decode_message(reader: &mut Reader<'_>) -> Result<Message, WireError> {
    let kind = reader.u8("message kind")?;
    let epoch = Epoch(reader.u64("epoch")?);
    Ok(match kind {
        STORE => Message::Store {
            epoch,
            entry: decode_entry(reader)?,
            prev_epoch: reader.option("prev_epoch")?.map(Epoch),
            committed: reader.u64("committed")?,
        },
        STORED => Message::Stored {
            epoch,
            end: reader.u64("end")?,
        },
        NEED_FROM => Message::NeedFrom {
            epoch,
            from: reader.u64("from")?,
        },
        SEALED => Message::Sealed { sealed: epoch },
        SEAL => Message::Seal { epoch },
        DIGEST => {
            let committed = reader.u64("committed")?;
            let count = reader.count("tail", ENTRY_BYTES_MIN)?;
            let mut tail = Vec::with_capacity(count);
            for _ in 0..count {
                tail.push(decode_entry(reader)?);
            }
            Message::Digest {
                epoch,
                committed,
                tail,
                end: reader.u64("end")?,
                last_epoch: Epoch(reader.u64("last_epoch")?),
            }
        }
        other => {
            return Err(WireError::InvalidValue {
                field: "message kind",
                value: u64::from(other),
            })
        }
    })
}

fn encode_entry(entry: &Entry, out: &mut Vec<u8>) {
    put_u64(out, entry.first);
    put_u64(out, entry.count);
    put_u64(out, entry.epoch.0);
    put_bytes(out, &entry.bytes);
}

/// An entry, its batch bytes checked (CRCs, one batch exactly, its record count).
fn decode_entry(reader: &mut Reader<'_>) -> Result<Entry, WireError> {
    let first = reader.u64("entry first")?;
    let count = reader.u64("entry count")?;
    let epoch = Epoch(reader.u64("entry epoch")?);
    let bytes = reader.bytes("entry bytes")?;
    let view = BatchView::check(bytes).map_err(|_| WireError::InvalidValue {
        field: "entry bytes",
        value: bytes.len() as u64,
    })?;
    if view.as_bytes().len() != bytes.len() || u64::from(view.record_count()) != count {
        return Err(WireError::InvalidValue {
            field: "entry count",
            value: count,
        });
    }
    if count == 0 || first.checked_add(count).is_none() {
        return Err(WireError::InvalidValue {
            field: "entry count",
            value: count,
        });
    }
    Ok(Entry {
        first,
        count,
        epoch,
        bytes: Arc::from(bytes),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::codec::check_encoding;
    use proptest::prelude::*;
    use runnel_core::{BatchBuilder, Limits, Record};

    fn batch(records: usize) -> Arc<[u8]> {
        let mut builder = BatchBuilder::new();
        for i in 0..records {
            builder.push(Record::new(format!("value {i}").into_bytes()));
        }
        let bytes = builder.finish(&Limits::default()).expect("test setup");
        Arc::from(bytes.as_slice())
    }

    fn entry(first: u64, records: usize, epoch: u64) -> Entry {
        Entry {
            first,
            count: records as u64,
            epoch: Epoch(epoch),
            bytes: batch(records),
        }
    }

    fn every_kind() -> Vec<ShardMessages> {
        let messages = vec![
            Message::Store {
                epoch: Epoch(3),
                entry: entry(10, 2, 2),
                prev_epoch: Some(Epoch(2)),
                committed: 10,
            },
            Message::Store {
                epoch: Epoch(3),
                entry: entry(0, 1, 3),
                prev_epoch: None,
                committed: 0,
            },
            Message::Stored {
                epoch: Epoch(3),
                end: 12,
            },
            Message::NeedFrom {
                epoch: Epoch(3),
                from: 4,
            },
            Message::Sealed { sealed: Epoch(9) },
            Message::Seal { epoch: Epoch(4) },
            Message::Digest {
                epoch: Epoch(4),
                committed: 10,
                tail: vec![entry(8, 2, 1), entry(10, 3, 2)],
                end: 13,
                last_epoch: Epoch(2),
            },
            Message::Digest {
                epoch: Epoch(4),
                committed: 0,
                tail: Vec::new(),
                end: 0,
                last_epoch: Epoch(0),
            },
        ];
        vec![
            ShardMessages {
                shard: ShardId(7),
                from: NodeId(2),
                messages: messages.clone(),
            },
            ShardMessages {
                shard: ShardId(u64::MAX),
                from: NodeId(1),
                messages: Vec::new(),
            },
        ]
        .into_iter()
        .chain(messages.into_iter().map(|m| ShardMessages {
            shard: ShardId(1),
            from: NodeId(3),
            messages: vec![m],
        }))
        .collect()
    }

    /// Every kind of message round-trips; every strict prefix and one byte more are errors.
    #[test]
    fn messages_round_trip_and_refuse_prefixes() {
        check_encoding(&every_kind(), encode_shard_messages, decode_shard_messages);
    }

    /// The example of `docs/format/replication.md`.
    #[test]
    fn stored_bytes_match_the_format_document() {
        let mut bytes = Vec::new();
        encode_message(
            &Message::Stored {
                epoch: Epoch(3),
                end: 12,
            },
            &mut bytes,
        );
        let expected: [u8; 17] = [2, 3, 0, 0, 0, 0, 0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(bytes, expected);
    }

    /// A store whose batch bytes were damaged on the way is refused, not handed to a replica.
    #[test]
    fn a_corrupt_batch_is_refused() {
        let value = ShardMessages {
            shard: ShardId(1),
            from: NodeId(2),
            messages: vec![Message::Store {
                epoch: Epoch(1),
                entry: entry(0, 3, 1),
                prev_epoch: None,
                committed: 0,
            }],
        };
        let mut bytes = Vec::new();
        encode_shard_messages(&value, &mut bytes);
        let last = bytes.len() - 30; // Inside the batch's payload (before the option/committed).
        if let Some(byte) = bytes.get_mut(last) {
            *byte ^= 0x5a;
        }
        assert!(decode_shard_messages(&bytes).is_err());
    }

    /// A store whose record count disagrees with its batch's header is refused.
    #[test]
    fn a_count_other_than_the_batch_s_is_refused() {
        let mut wrong = entry(0, 2, 1);
        wrong.count = 3;
        let value = ShardMessages {
            shard: ShardId(1),
            from: NodeId(2),
            messages: vec![Message::Store {
                epoch: Epoch(1),
                entry: wrong,
                prev_epoch: None,
                committed: 0,
            }],
        };
        let mut bytes = Vec::new();
        encode_shard_messages(&value, &mut bytes);
        assert!(decode_shard_messages(&bytes).is_err());
    }

    proptest! {
        /// Random bytes never panic the decoder.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_shard_messages(&bytes);
        }

        /// An encoding with random bytes flipped never panics the decoder.
        #[test]
        fn damaged_encodings_never_panic(
            which in 0usize..10,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        ) {
            let values = every_kind();
            let value = &values[which % values.len()];
            let mut bytes = Vec::new();
            encode_shard_messages(value, &mut bytes);
            for (at, mask) in flips {
                let len = bytes.len();
                if let Some(byte) = bytes.get_mut(at % len.max(1)) {
                    *byte ^= mask;
                }
            }
            let _ = decode_shard_messages(&bytes);
        }
    }
}
