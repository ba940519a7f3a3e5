//! [`ShardDispatch`]: the delivery of one shard to one subscription, on the core that owns the
//! shard.
//!
//! It keeps the **window** `[committed, next)`: every offset below `committed` is acked (that is
//! what gets persisted, and where delivery resumes after a restart); `next` is the first offset
//! never delivered. Each offset of the window is acked, in flight to the shard's assignee until a
//! deadline, or pending (its deadline passed or its member lost the shard) and redelivered before
//! any fresh record. The window is a map of spans, one per delivery (see `span.rs`).
//!
//! Bounds: `unacked()` never exceeds `unacked_records_max` (fresh deliveries stop at it). Every
//! live span (in flight or pending) holds at least one unacked offset, the front span is live and
//! no two fully acked spans are adjacent (they merge), so the window holds at most
//! `2 × unacked()` ≤ `2 × unacked_records_max` spans, each with a bitset of at most
//! ⌈`delivery_records_max` / 64⌉ words. Memory is O(unacked records); no allocation per record.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use runnel_core::Offset;
use thiserror::Error;

use super::MemberId;
use crate::metadata::{ACK_TIMEOUT_MS_MAX, MAX_UNACKED_RECORDS_LIMIT};

mod span;

use span::{AckBits, Span, SpanState};

/// Most records one delivery may carry ([`DispatchConfig::delivery_records_max`] at most this).
/// It bounds a span's bitset to 64 words (512 bytes).
pub const DELIVERY_RECORDS_MAX_LIMIT: u32 = 4096;

/// Most refused ranges an [`AckOutcome`] lists; further ones are only counted, so that a hostile
/// ack cannot make the answer large.
pub const REFUSED_RANGES_MAX: usize = 64;

/// How a subscription delivers one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DispatchConfig {
    /// How long a delivered record may stay unacked before it is delivered again, in
    /// milliseconds: 1 to [`ACK_TIMEOUT_MS_MAX`].
    pub ack_timeout_ms: u64,
    /// Most records of the shard delivered and not yet acked (in flight or pending): 1 to
    /// [`MAX_UNACKED_RECORDS_LIMIT`].
    pub unacked_records_max: u32,
    /// Most records in one delivery: 1 to [`DELIVERY_RECORDS_MAX_LIMIT`].
    pub delivery_records_max: u32,
}

/// A [`DispatchConfig`] value out of its range.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DispatchConfigError {
    /// `ack_timeout_ms` is 0 or above [`ACK_TIMEOUT_MS_MAX`].
    #[error("ack timeout must be between 1 and {ACK_TIMEOUT_MS_MAX} ms, got {ack_timeout_ms}")]
    AckTimeout {
        /// The value given.
        ack_timeout_ms: u64,
    },
    /// `unacked_records_max` is 0 or above [`MAX_UNACKED_RECORDS_LIMIT`].
    #[error(
        "unacked records max must be between 1 and {MAX_UNACKED_RECORDS_LIMIT}, got {unacked_records_max}"
    )]
    UnackedRecordsMax {
        /// The value given.
        unacked_records_max: u32,
    },
    /// `delivery_records_max` is 0 or above [`DELIVERY_RECORDS_MAX_LIMIT`].
    #[error(
        "delivery records max must be between 1 and {DELIVERY_RECORDS_MAX_LIMIT}, got {delivery_records_max}"
    )]
    DeliveryRecordsMax {
        /// The value given.
        delivery_records_max: u32,
    },
}

impl DispatchConfig {
    /// Checks every value against its range.
    pub fn validate(&self) -> Result<(), DispatchConfigError> {
        if !(1..=ACK_TIMEOUT_MS_MAX).contains(&self.ack_timeout_ms) {
            return Err(DispatchConfigError::AckTimeout {
                ack_timeout_ms: self.ack_timeout_ms,
            });
        }
        if !(1..=MAX_UNACKED_RECORDS_LIMIT).contains(&self.unacked_records_max) {
            return Err(DispatchConfigError::UnackedRecordsMax {
                unacked_records_max: self.unacked_records_max,
            });
        }
        if !(1..=DELIVERY_RECORDS_MAX_LIMIT).contains(&self.delivery_records_max) {
            return Err(DispatchConfigError::DeliveryRecordsMax {
                delivery_records_max: self.delivery_records_max,
            });
        }
        Ok(())
    }
}

/// What the server should read next to feed the assignee, from [`ShardDispatch::plan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    /// The first offset to send; the read starts at the batch holding it.
    pub from: Offset,
    /// The end (exclusive) of what would be sent if the read reaches it.
    pub to: Offset,
    /// Whether these records were delivered before (a pending span) or are fresh.
    pub redelivery: bool,
}

/// What [`ShardDispatch::deliver`] marked in flight: the server sends exactly these records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The offsets to send: ascending, disjoint, without the offsets already acked.
    pub ranges: Vec<Range<u64>>,
    /// How many offsets `ranges` hold.
    pub records: u32,
    /// Whether the records were delivered before.
    pub redelivery: bool,
    /// When they become pending again unless acked, in milliseconds.
    pub deadline_ms: u64,
}

/// Why [`ShardDispatch::ack`] refused some offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error)]
#[non_exhaustive]
pub enum AckRefusal {
    /// The range is empty or inverted (`start >= end`).
    #[error("empty or inverted range")]
    InvalidRange,
    /// The acking member does not hold the shard (any more).
    #[error("the member does not hold the shard")]
    NotAssignee,
    /// The offsets were never delivered (at or past `next`).
    #[error("not delivered")]
    NotDelivered,
    /// The offsets are acked already (below `committed`, or acked in the window).
    #[error("already acked")]
    AlreadyAcked,
}

/// The answer to [`ShardDispatch::ack`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AckOutcome {
    /// How many offsets were acked by this call.
    pub acked: u64,
    /// The refused ranges with their reasons, in the order met (ascending within one given
    /// range); adjacent refused offsets with the same reason are merged. At most
    /// [`REFUSED_RANGES_MAX`] entries.
    pub refused: Vec<(Range<u64>, AckRefusal)>,
    /// How many more refused ranges there were, not listed because `refused` was full.
    pub refused_unlisted: u64,
}

/// Counters since a [`ShardDispatch`] was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DispatchStats {
    /// Records delivered for the first time.
    pub delivered_records: u64,
    /// Records delivered again (after a timeout or a reassignment).
    pub redelivered_records: u64,
    /// Records acked.
    pub acked_records: u64,
    /// Offsets refused by acks (saturating: a hostile range may be huge).
    pub refused_records: u64,
    /// Empty or inverted ranges refused by acks.
    pub invalid_ack_ranges: u64,
    /// Records whose ack deadline passed.
    pub expired_records: u64,
    /// Records forgotten unacked because the log's start moved past them.
    pub skipped_records: u64,
}

/// The delivery state of one (subscription, shard). See the module documentation.
#[derive(Debug, Clone)]
pub struct ShardDispatch {
    config: DispatchConfig,
    /// The end of the contiguous acked prefix.
    committed: u64,
    /// The first offset never delivered.
    next: u64,
    assignee: Option<MemberId>,
    /// The window's spans by first offset. They cover `[first start, next)` without a gap; the
    /// first may start below `committed` (its offsets there are acked).
    spans: BTreeMap<u64, Span>,
    /// Starts of the pending spans: the redelivery queue, lowest offset first.
    pending: BTreeSet<u64>,
    /// `(deadline_ms, start)` of the in-flight spans: the timer queue.
    deadlines: BTreeSet<(u64, u64)>,
    /// Offsets of the window not acked.
    unacked: u32,
    stats: DispatchStats,
}

/// The refusals of one [`ShardDispatch::ack`] call, merged and bounded as they come.
#[derive(Default)]
struct Refusals {
    outcome: AckOutcome,
    records: u64,
    invalid: u64,
}

impl Refusals {
    fn refuse(&mut self, range: Range<u64>, reason: AckRefusal) {
        if range.start >= range.end {
            self.invalid += 1;
        } else {
            self.records = self.records.saturating_add(range.end - range.start);
            if self.outcome.refused_unlisted == 0 {
                if let Some((last, last_reason)) = self.outcome.refused.last_mut() {
                    if *last_reason == reason && last.end == range.start {
                        last.end = range.end;
                        return;
                    }
                }
            }
        }
        if self.outcome.refused.len() < REFUSED_RANGES_MAX {
            self.outcome.refused.push((range, reason));
        } else {
            self.outcome.refused_unlisted += 1;
        }
    }
}

impl ShardDispatch {
    /// A dispatch whose window is empty at `start` (`committed = next = start`), with no
    /// assignee.
    ///
    /// # Panics
    ///
    /// If `config` fails [`DispatchConfig::validate`]: the server builds it from a subscription
    /// configuration the metadata validated, so a bad one is a bug.
    pub fn new(config: DispatchConfig, start: Offset) -> Self {
        if let Err(error) = config.validate() {
            panic!("invalid dispatch configuration: {error}");
        }
        ShardDispatch {
            config,
            committed: start.0,
            next: start.0,
            assignee: None,
            spans: BTreeMap::new(),
            pending: BTreeSet::new(),
            deadlines: BTreeSet::new(),
            unacked: 0,
            stats: DispatchStats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> DispatchConfig {
        self.config
    }

    /// Every offset below this one is acked: the progress to persist.
    pub fn committed(&self) -> Offset {
        Offset(self.committed)
    }

    /// The first offset never delivered.
    pub fn next_offset(&self) -> Offset {
        Offset(self.next)
    }

    /// Offsets of the window not acked (in flight or pending).
    pub fn unacked(&self) -> u32 {
        self.unacked
    }

    /// How many spans the window holds (at most `2 × unacked()`), for metrics.
    pub fn span_count(&self) -> usize {
        self.spans.len()
    }

    /// The member the shard is assigned to.
    pub fn assignee(&self) -> Option<MemberId> {
        self.assignee
    }

    /// Counters since creation.
    pub fn stats(&self) -> DispatchStats {
        self.stats
    }

    /// Gives the shard to `member`, or to nobody. Everything in flight to the previous member
    /// becomes pending, to be redelivered first to the new one; returns how many records that
    /// is. The same member again changes nothing.
    pub fn assign(&mut self, member: Option<MemberId>) -> u32 {
        if member == self.assignee {
            return 0;
        }
        let mut moved = 0;
        for (_, start) in std::mem::take(&mut self.deadlines) {
            moved += self.make_pending(start);
        }
        self.assignee = member;
        moved
    }

    /// Where the server should read next to feed the assignee: the first pending span (lowest
    /// offset first) from its first unacked offset, else fresh records at `next` if `next < end`
    /// and the unacked budget allows. `None` when there is no assignee, nothing to send, or the
    /// budget is used up. `end` is the first offset not yet readable.
    pub fn plan(&self, end: Offset) -> Option<Planned> {
        self.assignee?;
        if let Some(&start) = self.pending.first() {
            let span = self
                .spans
                .get(&start)
                .expect("pending spans are in the window");
            return Some(Planned {
                from: Offset(start + u64::from(first_unacked(span))),
                to: Offset(span.end),
                redelivery: true,
            });
        }
        let to = self.fresh_end(end.0);
        (to > self.next).then_some(Planned {
            from: Offset(self.next),
            to: Offset(to),
            redelivery: false,
        })
    }

    /// After the server read whole batches from `planned.from` up to `readable_end`
    /// (exclusive), marks what it will send as in flight to `member` until
    /// `now_ms + ack_timeout_ms`, and returns it.
    ///
    /// A redelivery sends the unacked offsets of the pending span at `planned.from`, cut at
    /// `readable_end` if the read covered less (the rest stays pending as a span of its own;
    /// `end` is not consulted, as those offsets were readable when first sent). A
    /// fresh delivery sends `[next, min(readable_end, end, next + budget left,
    /// next + delivery_records_max))`, and only while nothing is pending. `None`, changing
    /// nothing, if the situation changed since the plan: `member` is not the assignee, the span
    /// is no longer pending, `next` moved, or nothing is left to send.
    pub fn deliver(
        &mut self,
        member: MemberId,
        planned: Planned,
        readable_end: Offset,
        end: Offset,
        now_ms: u64,
    ) -> Option<Delivery> {
        if self.assignee != Some(member) {
            return None;
        }
        let deadline_ms = now_ms.saturating_add(self.config.ack_timeout_ms);
        let delivery = if planned.redelivery {
            self.redeliver(member, planned.from.0, readable_end.0, deadline_ms)?
        } else {
            self.deliver_fresh(
                member,
                planned.from.0,
                readable_end.0.min(end.0),
                deadline_ms,
            )?
        };
        assert!(delivery.records > 0, "an empty delivery");
        assert!(self.unacked <= self.config.unacked_records_max);
        Some(delivery)
    }

    /// Acks from `member`. An offset is accepted if `member` is the assignee and the offset is
    /// in the window and not acked yet (it is then in flight to `member` or pending); every
    /// other one is refused with its reason and changes nothing. `committed` advances over the
    /// contiguous acked prefix.
    pub fn ack(&mut self, member: MemberId, ranges: &[Range<u64>]) -> AckOutcome {
        let mut refusals = Refusals::default();
        let mut acked = 0;
        for range in ranges {
            if range.start >= range.end {
                refusals.refuse(range.clone(), AckRefusal::InvalidRange);
                continue;
            }
            if self.assignee != Some(member) {
                refusals.refuse(range.clone(), AckRefusal::NotAssignee);
                continue;
            }
            let below = range.start..range.end.min(self.committed);
            if below.start < below.end {
                refusals.refuse(below, AckRefusal::AlreadyAcked);
            }
            let window = range.start.max(self.committed)..range.end.min(self.next);
            if window.start < window.end {
                acked += self.ack_window(window, &mut refusals);
            }
            let beyond = range.start.max(self.next)..range.end;
            if beyond.start < beyond.end {
                refusals.refuse(beyond, AckRefusal::NotDelivered);
            }
            self.settle();
        }
        self.stats.acked_records += acked;
        self.stats.refused_records = self.stats.refused_records.saturating_add(refusals.records);
        self.stats.invalid_ack_ranges += refusals.invalid;
        AckOutcome {
            acked,
            ..refusals.outcome
        }
    }

    /// Spans in flight whose deadline is at or before `now_ms` become pending; returns how many
    /// records that is.
    pub fn expire(&mut self, now_ms: u64) -> u32 {
        let mut expired = 0;
        while let Some(&(deadline_ms, start)) = self.deadlines.first() {
            if deadline_ms > now_ms {
                break;
            }
            self.deadlines.pop_first();
            expired += self.make_pending(start);
        }
        self.stats.expired_records += u64::from(expired);
        expired
    }

    /// The earliest deadline in flight, for the server's timer.
    pub fn next_deadline(&self) -> Option<u64> {
        self.deadlines.first().map(|&(deadline_ms, _)| deadline_ms)
    }

    /// The log's start moved to `start` (retention or trim deleted records): forgets the window
    /// below it; `committed` and `next` move up to at least `start`. Returns how many offsets
    /// were forgotten without having been acked.
    pub fn skip_to(&mut self, start: Offset) -> u64 {
        let start = start.0;
        if start <= self.committed {
            return 0;
        }
        let mut skipped = 0u64;
        if start >= self.next {
            skipped = u64::from(self.unacked);
            self.spans.clear();
            self.pending.clear();
            self.deadlines.clear();
            self.unacked = 0;
            self.next = start;
            self.committed = start;
        } else {
            while let Some(entry) = self.spans.first_entry() {
                if entry.get().end > start {
                    break;
                }
                let (first, span) = entry.remove_entry();
                self.forget_queued(first, span.state);
                skipped += u64::from(span.acks.unacked());
            }
            self.unacked -= u32::try_from(skipped).expect("at most unacked_records_max");
            let (&first, span) = self
                .spans
                .first_key_value()
                .expect("the window reaches past start");
            if first < start && span.state != SpanState::Acked {
                skipped += u64::from(self.ack_bits(first, 0, (start - first) as u32));
            }
            self.settle();
        }
        assert!(self.committed >= start && self.next >= start);
        self.stats.skipped_records += skipped;
        skipped
    }

    /// Checks every invariant of the window, the queues and the counters.
    ///
    /// # Panics
    ///
    /// If one is broken: that is a bug.
    pub fn check_invariants(&self) {
        assert!(self.config.validate().is_ok(), "invalid configuration");
        assert!(self.committed <= self.next, "committed past next");
        assert!(
            self.unacked <= self.config.unacked_records_max,
            "{} unacked records, limit {}",
            self.unacked,
            self.config.unacked_records_max
        );
        let mut pending = BTreeSet::new();
        let mut deadlines = BTreeSet::new();
        let mut unacked = 0u32;
        let mut expected_start: Option<u64> = None;
        let mut previous_acked = false;
        for (&start, span) in &self.spans {
            match expected_start {
                Some(expected) => assert_eq!(start, expected, "a gap or overlap in the window"),
                None => {
                    assert!(start <= self.committed, "the window starts past committed");
                    assert_ne!(span.state, SpanState::Acked, "an acked span at the front");
                    let first = start + u64::from(first_unacked(span));
                    assert_eq!(first, self.committed, "committed is not the first unacked");
                }
            }
            assert!(start < span.end, "an empty span at {start}");
            if span.state == SpanState::Acked {
                assert!(!previous_acked, "two adjacent acked spans at {start}");
                assert_eq!(span.acks.len(), 0, "an acked span keeps its bits");
            } else {
                assert_eq!(
                    u64::from(span.acks.len()),
                    span.end - start,
                    "bits and span"
                );
                assert!(span.acks.len() <= self.config.delivery_records_max);
                let counted = span.acks.count_unacked();
                assert_eq!(
                    counted,
                    span.acks.unacked(),
                    "unacked count of span {start}"
                );
                assert!(
                    counted > 0,
                    "a live span at {start} without unacked offsets"
                );
                unacked += counted;
            }
            match span.state {
                SpanState::InFlight {
                    member,
                    deadline_ms,
                } => {
                    assert_eq!(Some(member), self.assignee, "in flight to a non-assignee");
                    deadlines.insert((deadline_ms, start));
                }
                SpanState::Pending => {
                    pending.insert(start);
                }
                SpanState::Acked => {}
            }
            previous_acked = span.state == SpanState::Acked;
            expected_start = Some(span.end);
        }
        match expected_start {
            Some(end) => assert_eq!(end, self.next, "the window does not end at next"),
            None => assert_eq!(self.committed, self.next, "an empty window not at next"),
        }
        assert_eq!(unacked, self.unacked, "unacked counter");
        assert!(
            self.spans.len() <= 2 * self.unacked as usize,
            "{} spans for {} unacked records",
            self.spans.len(),
            self.unacked
        );
        assert_eq!(pending, self.pending, "redelivery queue out of date");
        assert_eq!(deadlines, self.deadlines, "timer queue out of date");
    }

    /// What the window says about `offset`, for the tests' reference model.
    #[cfg(test)]
    pub(crate) fn offset_state(&self, offset: u64) -> OffsetState {
        if offset < self.committed {
            return OffsetState::Acked;
        }
        if offset >= self.next {
            return OffsetState::Undelivered;
        }
        let (&start, span) = self
            .spans
            .range(..=offset)
            .next_back()
            .expect("the window is covered");
        assert!(offset < span.end);
        match span.state {
            SpanState::Acked => OffsetState::Acked,
            _ if span.acks.is_acked((offset - start) as u32) => OffsetState::Acked,
            SpanState::InFlight {
                member,
                deadline_ms,
            } => OffsetState::InFlight {
                member,
                deadline_ms,
            },
            SpanState::Pending => OffsetState::Pending,
        }
    }

    /// Offsets a fresh delivery could cover now: `[next, returned)`, bounded by `limit`, the
    /// budget left and the delivery size.
    fn fresh_end(&self, limit: u64) -> u64 {
        let budget = self.config.unacked_records_max - self.unacked;
        let size = budget.min(self.config.delivery_records_max);
        limit.min(self.next.saturating_add(u64::from(size)))
    }

    fn deliver_fresh(
        &mut self,
        member: MemberId,
        from: u64,
        limit: u64,
        deadline_ms: u64,
    ) -> Option<Delivery> {
        if from != self.next || !self.pending.is_empty() {
            return None;
        }
        let to = self.fresh_end(limit);
        if to <= from {
            return None;
        }
        let records = u32::try_from(to - from).expect("bounded by the delivery size");
        self.spans.insert(
            from,
            Span {
                end: to,
                state: SpanState::InFlight {
                    member,
                    deadline_ms,
                },
                acks: AckBits::new(records),
            },
        );
        self.deadlines.insert((deadline_ms, from));
        self.next = to;
        self.unacked += records;
        self.stats.delivered_records += u64::from(records);
        Some(Delivery {
            // One range: fresh records are contiguous.
            ranges: std::iter::once(from..to).collect(),
            records,
            redelivery: false,
            deadline_ms,
        })
    }

    fn redeliver(
        &mut self,
        member: MemberId,
        from: u64,
        readable_end: u64,
        deadline_ms: u64,
    ) -> Option<Delivery> {
        let (&start, span) = self.spans.range_mut(..=from).next_back()?;
        if span.end <= from || span.state != SpanState::Pending {
            return None;
        }
        let first = start + u64::from(first_unacked(span));
        if first < from || readable_end <= first {
            return None;
        }
        let cut = if readable_end >= span.end {
            span.end
        } else {
            let index = (readable_end - start) as u32;
            span.acks
                .next(index, false)
                .map_or(span.end, |found| start + u64::from(found))
        };
        if cut < span.end {
            let rest = Span {
                end: span.end,
                state: SpanState::Pending,
                acks: span.acks.split_off((cut - start) as u32),
            };
            span.end = cut;
            assert!(self.spans.insert(cut, rest).is_none(), "span {cut} exists");
            self.pending.insert(cut);
        }
        let span = self.spans.get_mut(&start).expect("the span just cut");
        let mut ranges = Vec::new();
        let mut index = (first - start) as u32;
        while let Some(run_start) = span.acks.next(index, false) {
            let run_end = span.acks.next(run_start, true).unwrap_or(span.acks.len());
            ranges.push(start + u64::from(run_start)..start + u64::from(run_end));
            index = run_end;
        }
        let records = span.acks.unacked();
        span.state = SpanState::InFlight {
            member,
            deadline_ms,
        };
        assert!(self.pending.remove(&start), "span {start} was pending");
        self.deadlines.insert((deadline_ms, start));
        self.stats.redelivered_records += u64::from(records);
        Some(Delivery {
            ranges,
            records,
            redelivery: true,
            deadline_ms,
        })
    }

    /// Acks the offsets of `window` (inside `[committed, next)`), refusing those acked already;
    /// returns how many it acked.
    fn ack_window(&mut self, window: Range<u64>, refusals: &mut Refusals) -> u64 {
        let mut acked = 0u64;
        let mut at = window.start;
        while at < window.end {
            let (&start, span) = self
                .spans
                .range(..=at)
                .next_back()
                .expect("the window is covered by spans");
            assert!(at < span.end, "offset {at} outside the window's spans");
            let stop = span.end.min(window.end);
            if span.state == SpanState::Acked {
                refusals.refuse(at..stop, AckRefusal::AlreadyAcked);
            } else {
                let mut index = (at - start) as u32;
                let last = (stop - start) as u32;
                while index < last {
                    let live = self
                        .spans
                        .get(&start)
                        .filter(|span| span.state != SpanState::Acked);
                    let Some(span) = live else {
                        // The span collapsed: all it has left is acked.
                        refusals.refuse(start + u64::from(index)..stop, AckRefusal::AlreadyAcked);
                        break;
                    };
                    let acked_run = span.acks.is_acked(index);
                    let run_end = span
                        .acks
                        .next(index, !acked_run)
                        .map_or(last, |found| found.min(last));
                    if acked_run {
                        let run = start + u64::from(index)..start + u64::from(run_end);
                        refusals.refuse(run, AckRefusal::AlreadyAcked);
                    } else {
                        acked += u64::from(self.ack_bits(start, index, run_end));
                    }
                    index = run_end;
                }
            }
            at = stop;
        }
        acked
    }

    /// Sets every clear bit in `[from, to)` of the live span at `start`, collapses the span if
    /// nothing is left unacked, and returns how many bits it set.
    fn ack_bits(&mut self, start: u64, from: u32, to: u32) -> u32 {
        let span = self.spans.get_mut(&start).expect("a live span");
        assert_ne!(span.state, SpanState::Acked);
        let mut set = 0;
        let mut index = from;
        while let Some(run_start) = span.acks.next(index, false) {
            if run_start >= to {
                break;
            }
            let run_end = span
                .acks
                .next(run_start, true)
                .map_or(to, |found| found.min(to));
            span.acks.set(run_start, run_end);
            set += run_end - run_start;
            index = run_end;
        }
        let done = span.acks.unacked() == 0;
        self.unacked -= set;
        if done {
            self.collapse(start);
        }
        set
    }

    /// The live span at `start` has no unacked offset left: it drops its bits, leaves its queue
    /// and merges with acked neighbours.
    fn collapse(&mut self, start: u64) {
        let span = self.spans.get_mut(&start).expect("the span to collapse");
        let state = std::mem::replace(&mut span.state, SpanState::Acked);
        span.acks = AckBits::default();
        let mut end = span.end;
        self.forget_queued(start, state);
        if let Some(right) = self.spans.get(&end) {
            if right.state == SpanState::Acked {
                let right_end = right.end;
                self.spans.remove(&end);
                end = right_end;
            }
        }
        let left = self
            .spans
            .range_mut(..start)
            .next_back()
            .filter(|(_, left)| left.state == SpanState::Acked);
        if let Some((_, left)) = left {
            assert_eq!(left.end, start, "a gap before span {start}");
            left.end = end;
            self.spans.remove(&start);
        } else {
            self.spans.get_mut(&start).expect("the collapsed span").end = end;
        }
    }

    /// Drops acked spans from the front and sets `committed` to the first unacked offset.
    fn settle(&mut self) {
        while let Some(entry) = self.spans.first_entry() {
            if entry.get().state != SpanState::Acked {
                break;
            }
            entry.remove();
        }
        let committed = match self.spans.first_key_value() {
            Some((&start, span)) => start + u64::from(first_unacked(span)),
            None => self.next,
        };
        assert!(committed >= self.committed, "committed moved back");
        self.committed = committed;
    }

    /// The in-flight span at `start` (already out of the timer queue) becomes pending; returns
    /// its unacked count.
    fn make_pending(&mut self, start: u64) -> u32 {
        let span = self
            .spans
            .get_mut(&start)
            .expect("in-flight spans are in the window");
        assert!(
            matches!(span.state, SpanState::InFlight { .. }),
            "span {start} in flight"
        );
        span.state = SpanState::Pending;
        self.pending.insert(start);
        span.acks.unacked()
    }

    /// Takes the span at `start`, whose state was `state`, out of its queue.
    fn forget_queued(&mut self, start: u64, state: SpanState) {
        match state {
            SpanState::InFlight { deadline_ms, .. } => {
                assert!(
                    self.deadlines.remove(&(deadline_ms, start)),
                    "timer of {start}"
                );
            }
            SpanState::Pending => {
                assert!(self.pending.remove(&start), "queue entry of {start}");
            }
            SpanState::Acked => {}
        }
    }
}

/// The index of the first unacked offset of a live span.
fn first_unacked(span: &Span) -> u32 {
    span.acks
        .next(0, false)
        .expect("a live span holds an unacked offset")
}

/// One offset as [`ShardDispatch::offset_state`] sees it.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OffsetState {
    /// Below `next` and acked (or below `committed`).
    Acked,
    /// Delivered to `member`, waiting for its ack until `deadline_ms`.
    InFlight { member: MemberId, deadline_ms: u64 },
    /// Waiting to be delivered again.
    Pending,
    /// At or past `next`.
    Undelivered,
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
