//! [`AckFrames`]: one shard's acks from the moment they leave its queue as `Ack` frames to
//! the server's answer, and [`AckBatching`], the rule that decides when a queue leaves.
//!
//! A frame is *unsent* (it waits for the shard's stream: none yet, or the last one failed
//! before its answer) or *sent* with a sequence, until the `AckResult` of that sequence.
//! Frames are numbered in creation order across the consumer (`id`), so a flush can wait for
//! "every frame up to id n" however streams come and go. Pure bookkeeping: no I/O, no clock.
//!
//! Bounds: a shard has at most [`ACKS_IN_FLIGHT_MAX`] frames sent and unanswered; frames are
//! taken from the queue only while there is room, except by a flush, which takes the whole
//! queue (at most `ACK_RANGES_QUEUED_MAX / ACK_FRAME_RANGES_MAX` frames more).

use std::collections::VecDeque;
use std::ops::Range;
use std::time::Duration;

use tokio::time::Instant;

use super::acks::{AckRanges, ACK_FRAME_RANGES_MAX};

/// Most `Ack` frames of one shard sent and not yet answered (the capacity of a shard task's
/// ack channel, too: no more are ever outstanding).
pub(super) const ACKS_IN_FLIGHT_MAX: usize = 16;

/// One `Ack` frame to write on a shard's stream.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct AckFrame {
    pub sequence: u64,
    pub ranges: Vec<Range<u64>>,
}

/// One frame's worth of acks, until its answer.
#[derive(Debug)]
pub(super) struct PendingAck {
    /// Unique within the consumer, in creation order.
    pub id: u64,
    /// The sequence of the frame that carries it; `None`: to send on the shard's next stream.
    pub sequence: Option<u64>,
    pub ranges: Vec<Range<u64>>,
}

/// The frames of one shard, oldest first.
#[derive(Debug, Default)]
pub(super) struct AckFrames {
    frames: VecDeque<PendingAck>,
}

/// Numbers handed out across a consumer: frame ids and sequences.
#[derive(Debug, Default)]
pub(super) struct Counters {
    /// The id of the last frame made.
    pub last_id: u64,
    /// The last sequence sent.
    pub last_sequence: u64,
}

impl AckFrames {
    /// Whether a new frame may be taken from the queue (fewer than [`ACKS_IN_FLIGHT_MAX`]
    /// frames wait).
    pub fn has_room(&self) -> bool {
        self.frames.len() < ACKS_IN_FLIGHT_MAX
    }

    /// Whether no frame waits.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// The id of the oldest frame waiting.
    pub fn oldest_id(&self) -> Option<u64> {
        self.frames.front().map(|frame| frame.id)
    }

    /// Takes `queue` as frames of at most [`ACK_FRAME_RANGES_MAX`] ranges: while there is
    /// room, or all of it when `everything`. Returns whether it took any.
    pub fn take_from(
        &mut self,
        queue: &mut AckRanges,
        counters: &mut Counters,
        everything: bool,
    ) -> bool {
        let mut took = false;
        while !queue.is_empty() && (everything || self.has_room()) {
            counters.last_id += 1;
            self.frames.push_back(PendingAck {
                id: counters.last_id,
                sequence: None,
                ranges: queue.take_front(ACK_FRAME_RANGES_MAX),
            });
            took = true;
        }
        took
    }

    /// Gives the unsent frames sequences, oldest first, as long as fewer than
    /// [`ACKS_IN_FLIGHT_MAX`] are sent; returns them to write.
    pub fn send_next(&mut self, counters: &mut Counters) -> Vec<AckFrame> {
        let sent = self
            .frames
            .iter()
            .filter(|frame| frame.sequence.is_some())
            .count();
        let room = ACKS_IN_FLIGHT_MAX.saturating_sub(sent);
        let mut out = Vec::new();
        for frame in self
            .frames
            .iter_mut()
            .filter(|frame| frame.sequence.is_none())
            .take(room)
        {
            counters.last_sequence += 1;
            frame.sequence = Some(counters.last_sequence);
            out.push(AckFrame {
                sequence: counters.last_sequence,
                ranges: frame.ranges.clone(),
            });
        }
        out
    }

    /// The frame `sequence` answers, taken out; `None` for a sequence never sent (or whose
    /// stream was replaced since).
    pub fn answered(&mut self, sequence: u64) -> Option<PendingAck> {
        let index = self
            .frames
            .iter()
            .position(|frame| frame.sequence == Some(sequence))?;
        self.frames.remove(index)
    }

    /// The stream is gone before answering: every frame is to be sent again on the next one
    /// (a frame the server applied is then answered `AlreadyAcked`, which is harmless).
    pub fn unsend_all(&mut self) {
        for frame in &mut self.frames {
            frame.sequence = None;
        }
    }

    /// Takes out the unsent frames (a shard given up cannot send them any more).
    pub fn take_unsent(&mut self) -> Vec<PendingAck> {
        let (sent, unsent): (VecDeque<PendingAck>, VecDeque<PendingAck>) =
            std::mem::take(&mut self.frames)
                .into_iter()
                .partition(|frame| frame.sequence.is_some());
        self.frames = sent;
        unsent.into()
    }

    /// Takes out every frame.
    pub fn take_all(&mut self) -> Vec<PendingAck> {
        std::mem::take(&mut self.frames).into()
    }
}

/// When a shard's queued acks become frames.
#[derive(Debug, Clone, Copy)]
pub(super) struct AckBatching {
    /// A queue covering this many records is due.
    pub records: u64,
    /// Every queue is due once the oldest queued ack is this old.
    pub age: Duration,
}

impl AckBatching {
    /// Whether the queues are due by age: the oldest ack was queued at `oldest`.
    pub fn aged(&self, oldest: Option<Instant>, now: Instant) -> bool {
        oldest.is_some_and(|oldest| now >= oldest + self.age)
    }

    /// Whether a queue of `records` records is due now (`aged`: by age).
    pub fn due(&self, records: u64, aged: bool) -> bool {
        records > 0 && (aged || records >= self.records)
    }
}

#[cfg(test)]
// Vectors of one range are what the tests mean.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    fn queue_of(ranges: &[Range<u64>]) -> AckRanges {
        let mut queue = AckRanges::default();
        for range in ranges {
            queue.insert(range.clone());
        }
        queue
    }

    /// A queue is due once it covers the batch's records, or once the oldest ack is as old as
    /// the batch age; an empty one never is.
    #[test]
    fn acks_are_batched_by_count_and_age() {
        let batching = AckBatching {
            records: 256,
            age: Duration::from_millis(10),
        };
        let start = Instant::now();
        assert!(!batching.aged(None, start));
        assert!(!batching.aged(Some(start), start + Duration::from_millis(9)));
        assert!(batching.aged(Some(start), start + Duration::from_millis(10)));
        assert!(!batching.due(255, false));
        assert!(batching.due(256, false));
        assert!(batching.due(1, true));
        assert!(!batching.due(0, true));
        // Age 0: every ack is due as soon as it is queued.
        let at_once = AckBatching {
            records: 256,
            age: Duration::ZERO,
        };
        assert!(at_once.due(1, at_once.aged(Some(start), start)));
    }

    /// Frames are cut at the range bound, taken only while there is room (except for a
    /// flush), sent oldest first within the in-flight bound, and answered by sequence.
    #[test]
    fn frames_are_bounded_sent_in_order_and_answered_by_sequence() {
        let mut counters = Counters::default();
        let mut frames = AckFrames::default();
        // ACK_FRAME_RANGES_MAX + 1 separate ranges: two frames.
        let scattered: Vec<Range<u64>> = (0..=ACK_FRAME_RANGES_MAX as u64)
            .map(|index| index * 2..index * 2 + 1)
            .collect();
        let mut queue = queue_of(&scattered);
        assert!(frames.take_from(&mut queue, &mut counters, false));
        assert!(queue.is_empty());
        assert_eq!(counters.last_id, 2);
        let sent = frames.send_next(&mut counters);
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0].ranges.len(), ACK_FRAME_RANGES_MAX);
        assert_eq!(sent[1].ranges, vec![4096..4097]);
        assert_eq!((sent[0].sequence, sent[1].sequence), (1, 2));
        assert!(frames.send_next(&mut counters).is_empty(), "sent once");
        // Answers come by sequence, in any order.
        assert_eq!(frames.answered(2).map(|frame| frame.id), Some(2));
        assert!(frames.answered(2).is_none());
        assert!(frames.answered(77).is_none());
        assert_eq!(frames.oldest_id(), Some(1));
        assert_eq!(frames.answered(1).map(|frame| frame.id), Some(1));
        assert!(frames.is_empty());

        // Room: at most ACKS_IN_FLIGHT_MAX frames wait, unless a flush takes everything.
        let mut frames = AckFrames::default();
        let many = (ACKS_IN_FLIGHT_MAX * ACK_FRAME_RANGES_MAX) as u64 + 10;
        let mut queue = queue_of(&(0..many).map(|i| i * 2..i * 2 + 1).collect::<Vec<_>>());
        frames.take_from(&mut queue, &mut counters, false);
        assert!(!frames.has_room());
        assert_eq!(queue.range_count(), 10);
        assert!(!frames.take_from(&mut queue, &mut counters, false));
        assert!(frames.take_from(&mut queue, &mut counters, true));
        assert!(queue.is_empty());
        // Only ACKS_IN_FLIGHT_MAX are sent; the extra one waits for an answer.
        let sent = frames.send_next(&mut counters);
        assert_eq!(sent.len(), ACKS_IN_FLIGHT_MAX);
        assert!(frames.send_next(&mut counters).is_empty());
        let first = sent[0].sequence;
        frames.answered(first);
        let next = frames.send_next(&mut counters);
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].ranges.len(), 10);
    }

    /// A lost stream makes every frame unsent again, oldest first, with new sequences; a
    /// shard given up hands out its unsent frames and keeps those awaiting an answer.
    #[test]
    fn frames_of_a_lost_stream_are_sent_again() {
        let mut counters = Counters::default();
        let mut frames = AckFrames::default();
        frames.take_from(&mut queue_of(&[0..5]), &mut counters, false);
        frames.take_from(&mut queue_of(&[5..9]), &mut counters, false);
        let sent = frames.send_next(&mut counters);
        assert_eq!(
            sent.iter().map(|f| f.sequence).collect::<Vec<_>>(),
            vec![1, 2]
        );
        frames.unsend_all();
        assert!(
            frames.answered(1).is_none(),
            "answers of the old stream are stale"
        );
        let again = frames.send_next(&mut counters);
        assert_eq!(
            again,
            vec![
                AckFrame {
                    sequence: 3,
                    ranges: vec![0..5]
                },
                AckFrame {
                    sequence: 4,
                    ranges: vec![5..9]
                }
            ]
        );
        frames.take_from(&mut queue_of(&[20..21]), &mut counters, false);
        let unsent = frames.take_unsent();
        assert_eq!(unsent.len(), 1);
        assert_eq!(unsent[0].ranges, vec![20..21]);
        assert_eq!(frames.take_all().len(), 2);
        assert!(frames.is_empty());
    }
}
