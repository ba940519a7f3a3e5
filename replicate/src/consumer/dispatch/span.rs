//! A span of a dispatch window: contiguous offsets that went out in one delivery, what happens
//! to them now (in flight, pending redelivery, or all acked) and which of them are acked.
//!
//! The acked offsets of a live span are a bitset of `u64` words, allocated once when the span is
//! made (a delivery, or the split of a pending span that is redelivered in part) and never grown.
//! Bit `i` stands for the offset `start + i`; bits past the span's length stay zero. A span whose
//! offsets are all acked drops its bitset and becomes [`SpanState::Acked`], which costs no heap.

use crate::consumer::MemberId;

/// What the offsets of a span that are not acked are waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SpanState {
    /// Delivered to `member`, waiting for its acks until `deadline_ms`.
    InFlight { member: MemberId, deadline_ms: u64 },
    /// To be delivered again (the ack timeout passed or the member lost the shard).
    Pending,
    /// Every offset is acked.
    Acked,
}

/// One span; its first offset is its key in the window's map.
#[derive(Debug, Clone)]
pub(super) struct Span {
    /// First offset past the span.
    pub(super) end: u64,
    pub(super) state: SpanState,
    /// Which offsets are acked; empty once the span is [`SpanState::Acked`].
    pub(super) acks: AckBits,
}

/// The acked offsets of a span of `len` offsets.
#[derive(Debug, Clone, Default)]
pub(super) struct AckBits {
    words: Vec<u64>,
    len: u32,
    unacked: u32,
}

const WORD_BITS: u32 = u64::BITS;

impl AckBits {
    /// `len` offsets, none acked: one allocation.
    pub(super) fn new(len: u32) -> AckBits {
        assert!(len > 0, "a span holds at least one offset");
        AckBits {
            words: vec![0; len.div_ceil(WORD_BITS) as usize],
            len,
            unacked: len,
        }
    }

    /// How many offsets the bits stand for.
    pub(super) fn len(&self) -> u32 {
        self.len
    }

    /// How many of them are not acked.
    pub(super) fn unacked(&self) -> u32 {
        self.unacked
    }

    fn word(&self, index: u32) -> u64 {
        *self
            .words
            .get((index / WORD_BITS) as usize)
            .expect("bit index inside the span")
    }

    /// Whether bit `index` is set.
    pub(super) fn is_acked(&self, index: u32) -> bool {
        assert!(index < self.len, "bit {index} past a span of {}", self.len);
        self.word(index) >> (index % WORD_BITS) & 1 == 1
    }

    /// The first bit at or after `from` whose value is `acked`.
    pub(super) fn next(&self, from: u32, acked: bool) -> Option<u32> {
        let mut index = from;
        while index < self.len {
            let word = if acked {
                self.word(index)
            } else {
                !self.word(index)
            };
            let rest = word >> (index % WORD_BITS);
            if rest != 0 {
                let found = index + rest.trailing_zeros();
                return (found < self.len).then_some(found);
            }
            index = (index / WORD_BITS + 1) * WORD_BITS;
        }
        None
    }

    /// Sets the bits `[from, to)`, which must all be clear.
    pub(super) fn set(&mut self, from: u32, to: u32) {
        assert!(
            from < to && to <= self.len,
            "bits {from}..{to} of {}",
            self.len
        );
        let mut index = from;
        while index < to {
            let offset = index % WORD_BITS;
            let count = (WORD_BITS - offset).min(to - index);
            let mask = if count == WORD_BITS {
                u64::MAX
            } else {
                ((1u64 << count) - 1) << offset
            };
            let word = self
                .words
                .get_mut((index / WORD_BITS) as usize)
                .expect("bit index inside the span");
            assert_eq!(*word & mask, 0, "bits {from}..{to} set twice");
            *word |= mask;
            index += count;
        }
        self.unacked -= to - from;
    }

    /// Cuts the bits at `at`: keeps `[0, at)` and returns `[at, len)` as bits of their own (one
    /// allocation).
    pub(super) fn split_off(&mut self, at: u32) -> AckBits {
        assert!(0 < at && at < self.len, "split at {at} of {}", self.len);
        let mut tail = AckBits::new(self.len - at);
        let mut index = at;
        while index < self.len {
            let run_start = match self.next(index, true) {
                Some(found) => found,
                None => break,
            };
            let run_end = self.next(run_start, false).unwrap_or(self.len);
            tail.set(run_start - at, run_end - at);
            index = run_end;
        }
        self.words.truncate(at.div_ceil(WORD_BITS) as usize);
        if !at.is_multiple_of(WORD_BITS) {
            if let Some(last) = self.words.last_mut() {
                *last &= (1u64 << (at % WORD_BITS)) - 1;
            }
        }
        self.len = at;
        self.unacked = self.count_unacked();
        tail
    }

    /// Counts the clear bits the slow way, and checks that no bit past the length is set.
    pub(super) fn count_unacked(&self) -> u32 {
        assert_eq!(
            self.words.len(),
            self.len.div_ceil(WORD_BITS) as usize,
            "bitset of {} bits in {} words",
            self.len,
            self.words.len()
        );
        let spare = self.words.len() as u32 * WORD_BITS - self.len;
        if let Some(last) = self.words.last() {
            assert!(
                spare == 0 || last >> (WORD_BITS - spare) == 0,
                "bits past the end of a span are set"
            );
        }
        let acked: u32 = self.words.iter().map(|word| word.count_ones()).sum();
        self.len - acked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the bit scans, sets and splits agree with a plain array of booleans, across word
    /// boundaries.
    #[test]
    fn bits_agree_with_a_boolean_array() {
        let len = 200;
        let mut bits = AckBits::new(len);
        let mut plain = vec![false; len as usize];
        for (from, to) in [(0, 1), (5, 70), (127, 129), (150, 200), (100, 101)] {
            bits.set(from, to);
            for slot in &mut plain[from as usize..to as usize] {
                *slot = true;
            }
        }
        let check = |bits: &AckBits, plain: &[bool]| {
            assert_eq!(bits.len() as usize, plain.len());
            assert_eq!(
                bits.unacked() as usize,
                plain.iter().filter(|acked| !**acked).count()
            );
            assert_eq!(bits.count_unacked(), bits.unacked());
            for from in 0..plain.len() {
                assert_eq!(bits.is_acked(from as u32), plain[from]);
                for value in [false, true] {
                    let expected = (from..plain.len()).find(|&at| plain[at] == value);
                    assert_eq!(
                        bits.next(from as u32, value).map(|at| at as usize),
                        expected
                    );
                }
            }
        };
        check(&bits, &plain);
        let tail = bits.split_off(128);
        check(&bits, &plain[..128]);
        check(&tail, &plain[128..]);
        let mut head = bits;
        let middle = head.split_off(3);
        check(&head, &plain[..3]);
        check(&middle, &plain[3..128]);
    }

    /// Proves a full 64-bit word is set in one step (the shift that would overflow is avoided).
    #[test]
    fn whole_words_are_set() {
        let mut bits = AckBits::new(128);
        bits.set(0, 128);
        assert_eq!(bits.unacked(), 0);
        assert_eq!(bits.next(0, false), None);
    }
}
