//! The bytes of a [`Question`] and an [`Answer`] when they cross nodes, inside the peer
//! frames `Ask` and `Answered` (`docs/format/peer.md`, "Questions between nodes").
//!
//! Little-endian; a tag byte first, then the variant's fields. Lists carry a `u32` count that
//! is checked against the bytes left before anything is allocated; strings a `u32` length.
//! Decoding takes bytes from another node and never panics: every rule broken is an
//! [`AskWireError`] naming the field.

use runnel_core::{Offset, ShardId};
use runnel_replicate::consumer::{MemberId, MemberInfo};
use runnel_replicate::metadata::SubscriptionId;
use thiserror::Error;

use super::{Answer, Question, ShardProgress};

/// Question tags (the first byte of an encoded [`Question`]).
mod question_tag {
    pub const ASSIGN: u8 = 1;
    pub const PREPARE: u8 = 2;
    pub const PROGRESS: u8 = 3;
    pub const MEMBERS: u8 = 4;
    pub const OFFSETS: u8 = 5;
}

/// Answer tags (the first byte of an encoded [`Answer`]).
mod answer_tag {
    pub const DONE: u8 = 1;
    pub const FAILED: u8 = 2;
    pub const PROGRESS: u8 = 3;
    pub const MEMBERS: u8 = 4;
    pub const OFFSETS: u8 = 5;
}

/// Bytes of one encoded [`ShardProgress`]: shard, committed option, end, unacked.
const SHARD_PROGRESS_BYTES: usize = 8 + 9 + 8 + 4;
/// Bytes of one `(shard, start, next)` of an `Offsets` answer.
const SHARD_OFFSETS_BYTES: usize = 8 + 8 + 8;
/// The fewest bytes of one encoded [`MemberInfo`] (empty name, no shards).
const MEMBER_BYTES_MIN: usize = 8 + 4 + 4 + 8 + 8 + 8;

/// Why bytes are not an encoded question or answer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AskWireError {
    /// The bytes end inside a field.
    #[error("an encoded question or answer ends inside field {field}")]
    Truncated {
        /// The field being read.
        field: &'static str,
    },
    /// A tag or flag byte has a value this build does not know.
    #[error("field {field} of an encoded question or answer has invalid value {value}")]
    InvalidValue {
        /// The field.
        field: &'static str,
        /// The value found.
        value: u64,
    },
    /// A list's count is more than the bytes left could hold.
    #[error("field {field} counts {count} entries, more than the {bytes_left} bytes left hold")]
    CountTooLarge {
        /// The list.
        field: &'static str,
        /// The count found.
        count: u64,
        /// Bytes left after the count.
        bytes_left: usize,
    },
    /// A string is not UTF-8.
    #[error("field {field} of an encoded question or answer is not UTF-8")]
    InvalidUtf8 {
        /// The field.
        field: &'static str,
    },
    /// Bytes follow the last field.
    #[error("{bytes} bytes follow the last field of an encoded question or answer")]
    TrailingBytes {
        /// How many.
        bytes: usize,
    },
}

/// Appends the encoding of `question` to `out`.
pub fn encode_question(out: &mut Vec<u8>, question: &Question) {
    match question {
        Question::Assign {
            subscription,
            shard,
            member,
            epoch,
            generation,
        } => {
            out.push(question_tag::ASSIGN);
            put_u64(out, subscription.0);
            put_u64(out, shard.0);
            put_option(out, member.map(|member| member.0));
            put_u64(out, *epoch);
            put_u64(out, *generation);
        }
        Question::Prepare { subscription } => {
            out.push(question_tag::PREPARE);
            put_u64(out, subscription.0);
        }
        Question::Progress { subscription } => {
            out.push(question_tag::PROGRESS);
            put_u64(out, subscription.0);
        }
        Question::Members { subscription } => {
            out.push(question_tag::MEMBERS);
            put_u64(out, subscription.0);
        }
        Question::Offsets { shards } => {
            out.push(question_tag::OFFSETS);
            put_count(out, shards.len());
            for shard in shards {
                put_u64(out, shard.0);
            }
        }
    }
}

/// The question `bytes` encode (all of them).
pub fn decode_question(bytes: &[u8]) -> Result<Question, AskWireError> {
    let mut fields = Fields { bytes, at: 0 };
    let question = match fields.u8("question")? {
        question_tag::ASSIGN => Question::Assign {
            subscription: SubscriptionId(fields.u64("subscription")?),
            shard: ShardId(fields.u64("shard")?),
            member: fields.option("member")?.map(MemberId),
            epoch: fields.u64("epoch")?,
            generation: fields.u64("generation")?,
        },
        question_tag::PREPARE => Question::Prepare {
            subscription: SubscriptionId(fields.u64("subscription")?),
        },
        question_tag::PROGRESS => Question::Progress {
            subscription: SubscriptionId(fields.u64("subscription")?),
        },
        question_tag::MEMBERS => Question::Members {
            subscription: SubscriptionId(fields.u64("subscription")?),
        },
        question_tag::OFFSETS => {
            let count = fields.count("shards", 8)?;
            let mut shards = Vec::with_capacity(count);
            for _ in 0..count {
                shards.push(ShardId(fields.u64("shards")?));
            }
            Question::Offsets { shards }
        }
        other => {
            return Err(AskWireError::InvalidValue {
                field: "question",
                value: u64::from(other),
            })
        }
    };
    fields.finish()?;
    Ok(question)
}

/// Appends the encoding of `answer` to `out`.
pub fn encode_answer(out: &mut Vec<u8>, answer: &Answer) {
    match answer {
        Answer::Done => out.push(answer_tag::DONE),
        Answer::Failed(reason) => {
            out.push(answer_tag::FAILED);
            put_string(out, reason);
        }
        Answer::Progress(shards) => {
            out.push(answer_tag::PROGRESS);
            put_count(out, shards.len());
            for shard in shards {
                put_u64(out, shard.shard.0);
                put_option(out, shard.committed.map(|offset| offset.0));
                put_u64(out, shard.end.0);
                out.extend_from_slice(&shard.unacked.to_le_bytes());
            }
        }
        Answer::Members(members) => {
            out.push(answer_tag::MEMBERS);
            put_count(out, members.len());
            for member in members {
                put_u64(out, member.id.0);
                put_string(out, &member.name);
                put_count(out, member.shards.len());
                for shard in &member.shards {
                    put_u64(out, shard.0);
                }
                put_u64(out, member.session_timeout_ms);
                put_u64(out, member.joined_ms);
                put_u64(out, member.last_seen_ms);
            }
        }
        Answer::Offsets(offsets) => {
            out.push(answer_tag::OFFSETS);
            put_count(out, offsets.len());
            for (shard, start, next) in offsets {
                put_u64(out, shard.0);
                put_u64(out, start.0);
                put_u64(out, next.0);
            }
        }
    }
}

/// The answer `bytes` encode (all of them).
pub fn decode_answer(bytes: &[u8]) -> Result<Answer, AskWireError> {
    let mut fields = Fields { bytes, at: 0 };
    let answer = match fields.u8("answer")? {
        answer_tag::DONE => Answer::Done,
        answer_tag::FAILED => Answer::Failed(fields.string("reason")?),
        answer_tag::PROGRESS => {
            let count = fields.count("progress", SHARD_PROGRESS_BYTES)?;
            let mut shards = Vec::with_capacity(count);
            for _ in 0..count {
                shards.push(ShardProgress {
                    shard: ShardId(fields.u64("shard")?),
                    committed: fields.option("committed")?.map(Offset),
                    end: Offset(fields.u64("end")?),
                    unacked: fields.u32("unacked")?,
                });
            }
            Answer::Progress(shards)
        }
        answer_tag::MEMBERS => {
            let count = fields.count("members", MEMBER_BYTES_MIN)?;
            let mut members = Vec::with_capacity(count);
            for _ in 0..count {
                let id = MemberId(fields.u64("member")?);
                let name = fields.string("name")?;
                let shard_count = fields.count("member shards", 8)?;
                let mut shards = Vec::with_capacity(shard_count);
                for _ in 0..shard_count {
                    shards.push(ShardId(fields.u64("member shards")?));
                }
                members.push(MemberInfo {
                    id,
                    name,
                    shards,
                    session_timeout_ms: fields.u64("session_timeout_ms")?,
                    joined_ms: fields.u64("joined_ms")?,
                    last_seen_ms: fields.u64("last_seen_ms")?,
                });
            }
            Answer::Members(members)
        }
        answer_tag::OFFSETS => {
            let count = fields.count("offsets", SHARD_OFFSETS_BYTES)?;
            let mut offsets = Vec::with_capacity(count);
            for _ in 0..count {
                offsets.push((
                    ShardId(fields.u64("shard")?),
                    Offset(fields.u64("start")?),
                    Offset(fields.u64("next")?),
                ));
            }
            Answer::Offsets(offsets)
        }
        other => {
            return Err(AskWireError::InvalidValue {
                field: "answer",
                value: u64::from(other),
            })
        }
    };
    fields.finish()?;
    Ok(answer)
}

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

/// A list's length. Lists in questions and answers are bounded far below `u32::MAX` (shards
/// of a stream, members of a group, a frame's 16 MiB): a longer one is a broken invariant.
fn put_count(out: &mut Vec<u8>, count: usize) {
    let count = u32::try_from(count).expect("a list of a question or answer fits a u32 count");
    out.extend_from_slice(&count.to_le_bytes());
}

/// An option: a flag byte (0 absent, 1 present) and always 8 value bytes (0 when absent).
fn put_option(out: &mut Vec<u8>, value: Option<u64>) {
    out.push(u8::from(value.is_some()));
    put_u64(out, value.unwrap_or(0));
}

/// A string: a `u32` length and UTF-8 bytes.
fn put_string(out: &mut Vec<u8>, value: &str) {
    put_count(out, value.len());
    out.extend_from_slice(value.as_bytes());
}

/// A cursor over encoded fields.
struct Fields<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Fields<'_> {
    fn take<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], AskWireError> {
        let bytes: [u8; N] = self
            .bytes
            .get(self.at..self.at.saturating_add(N))
            .and_then(|slice| slice.try_into().ok())
            .ok_or(AskWireError::Truncated { field })?;
        self.at += N;
        Ok(bytes)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, AskWireError> {
        self.take::<1>(field).map(|[byte]| byte)
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, AskWireError> {
        self.take(field).map(u32::from_le_bytes)
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, AskWireError> {
        self.take(field).map(u64::from_le_bytes)
    }

    fn left(&self) -> usize {
        self.bytes.len().saturating_sub(self.at)
    }

    /// A list's count, refused when `entry_bytes_min` bytes per entry would not fit in what
    /// is left (so a forged count allocates nothing).
    fn count(
        &mut self,
        field: &'static str,
        entry_bytes_min: usize,
    ) -> Result<usize, AskWireError> {
        let count = self.u32(field)?;
        let count_usize = count as usize;
        let left = self.left();
        if count_usize.saturating_mul(entry_bytes_min) > left {
            return Err(AskWireError::CountTooLarge {
                field,
                count: u64::from(count),
                bytes_left: left,
            });
        }
        Ok(count_usize)
    }

    fn option(&mut self, field: &'static str) -> Result<Option<u64>, AskWireError> {
        let present = self.u8(field)?;
        let value = self.u64(field)?;
        match (present, value) {
            (1, value) => Ok(Some(value)),
            (0, 0) => Ok(None),
            (0, value) => Err(AskWireError::InvalidValue { field, value }),
            (flag, _) => Err(AskWireError::InvalidValue {
                field,
                value: u64::from(flag),
            }),
        }
    }

    fn string(&mut self, field: &'static str) -> Result<String, AskWireError> {
        let len = self.count(field, 1)?;
        let bytes = self
            .bytes
            .get(self.at..self.at + len)
            .ok_or(AskWireError::Truncated { field })?;
        self.at += len;
        String::from_utf8(bytes.to_vec()).map_err(|_| AskWireError::InvalidUtf8 { field })
    }

    fn finish(&self) -> Result<(), AskWireError> {
        match self.left() {
            0 => Ok(()),
            bytes => Err(AskWireError::TrailingBytes { bytes }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_question() -> Vec<Question> {
        vec![
            Question::Assign {
                subscription: SubscriptionId(7),
                shard: ShardId(12),
                member: Some(MemberId(1_700_000_000_001)),
                epoch: 1_700_000_000_000,
                generation: 3,
            },
            Question::Assign {
                subscription: SubscriptionId(7),
                shard: ShardId(12),
                member: None,
                epoch: 1_700_000_000_000,
                generation: 4,
            },
            Question::Prepare {
                subscription: SubscriptionId(1),
            },
            Question::Progress {
                subscription: SubscriptionId(2),
            },
            Question::Members {
                subscription: SubscriptionId(u64::MAX),
            },
            Question::Offsets {
                shards: vec![ShardId(1), ShardId(5)],
            },
            Question::Offsets { shards: Vec::new() },
        ]
    }

    fn every_answer() -> Vec<Answer> {
        vec![
            Answer::Done,
            Answer::Failed("shard 4 is not open on this core yet".into()),
            Answer::Failed(String::new()),
            Answer::Progress(vec![
                ShardProgress {
                    shard: ShardId(3),
                    committed: Some(Offset(10)),
                    end: Offset(20),
                    unacked: 4,
                },
                ShardProgress {
                    shard: ShardId(4),
                    committed: None,
                    end: Offset(0),
                    unacked: 0,
                },
            ]),
            Answer::Members(vec![MemberInfo {
                id: MemberId(9),
                name: "consumer-é".into(),
                shards: vec![ShardId(1), ShardId(2)],
                session_timeout_ms: 10_000,
                joined_ms: 1_700_000_000_000,
                last_seen_ms: 1_700_000_000_500,
            }]),
            Answer::Members(Vec::new()),
            Answer::Offsets(vec![(ShardId(1), Offset(0), Offset(600))]),
        ]
    }

    fn question_bytes(question: &Question) -> Vec<u8> {
        let mut out = Vec::new();
        encode_question(&mut out, question);
        out
    }

    fn answer_bytes(answer: &Answer) -> Vec<u8> {
        let mut out = Vec::new();
        encode_answer(&mut out, answer);
        out
    }

    /// Every question and answer decodes to itself.
    #[test]
    fn every_question_and_answer_round_trips() -> Result<(), AskWireError> {
        for question in every_question() {
            assert_eq!(decode_question(&question_bytes(&question))?, question);
        }
        for answer in every_answer() {
            assert_eq!(decode_answer(&answer_bytes(&answer))?, answer);
        }
        Ok(())
    }

    /// The bytes of an `Assign` as `docs/format/peer.md` draws them.
    #[test]
    fn assign_bytes_match_the_format_document() {
        let bytes = question_bytes(&Question::Assign {
            subscription: SubscriptionId(7),
            shard: ShardId(12),
            member: Some(MemberId(5)),
            epoch: 9,
            generation: 3,
        });
        let expected: Vec<u8> = [
            &[1][..],
            &7u64.to_le_bytes(),
            &12u64.to_le_bytes(),
            &[1],
            &5u64.to_le_bytes(),
            &9u64.to_le_bytes(),
            &3u64.to_le_bytes(),
        ]
        .concat();
        assert_eq!(bytes, expected);
    }

    /// Every strict prefix of an encoding is an error, never a value or a panic; one more
    /// byte is `TrailingBytes`.
    #[test]
    fn truncated_and_extended_encodings_are_errors() {
        for question in every_question() {
            let bytes = question_bytes(&question);
            for len in 0..bytes.len() {
                let prefix = bytes.get(..len).unwrap_or_default();
                assert!(
                    decode_question(prefix).is_err(),
                    "{len} bytes of {question:?}"
                );
            }
            let longer = [bytes.as_slice(), &[0]].concat();
            assert_eq!(
                decode_question(&longer),
                Err(AskWireError::TrailingBytes { bytes: 1 })
            );
        }
        for answer in every_answer() {
            let bytes = answer_bytes(&answer);
            for len in 0..bytes.len() {
                let prefix = bytes.get(..len).unwrap_or_default();
                assert!(decode_answer(prefix).is_err(), "{len} bytes of {answer:?}");
            }
        }
    }

    /// Unknown tags, bad flags, forged counts and broken UTF-8 are refused with the field.
    #[test]
    fn invalid_fields_are_named() {
        assert_eq!(
            decode_question(&[9]),
            Err(AskWireError::InvalidValue {
                field: "question",
                value: 9
            })
        );
        assert_eq!(
            decode_answer(&[0]),
            Err(AskWireError::InvalidValue {
                field: "answer",
                value: 0
            })
        );
        let mut assign = question_bytes(&Question::Assign {
            subscription: SubscriptionId(1),
            shard: ShardId(2),
            member: None,
            epoch: 1,
            generation: 1,
        });
        assign[17] = 2;
        assert_eq!(
            decode_question(&assign),
            Err(AskWireError::InvalidValue {
                field: "member",
                value: 2
            })
        );
        let forged = [&[question_tag::OFFSETS][..], &u32::MAX.to_le_bytes()].concat();
        assert_eq!(
            decode_question(&forged),
            Err(AskWireError::CountTooLarge {
                field: "shards",
                count: u64::from(u32::MAX),
                bytes_left: 0
            })
        );
        let not_utf8 = [
            &[answer_tag::FAILED][..],
            &2u32.to_le_bytes(),
            &[0xff, 0xfe],
        ]
        .concat();
        assert_eq!(
            decode_answer(&not_utf8),
            Err(AskWireError::InvalidUtf8 { field: "reason" })
        );
    }
}
