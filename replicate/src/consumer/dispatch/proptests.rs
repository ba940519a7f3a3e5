//! Property test of [`ShardDispatch`] against a reference model: a plain array holding the
//! state of every offset of a small log.
//!
//! Random sequences of appends, assignments (to three members or nobody), plans and deliveries
//! (current, stale or made-up plans; short reads; wrong members), acks (valid and invalid, from
//! every member), clock advances with expiry, and log-start moves. After every step: the
//! invariants hold; every offset's state (acked, in flight to whom until when, pending,
//! undelivered) agrees with the model, so no unacked offset in `[committed, next)` is ever
//! forgotten (at-least-once); `committed` is the model's contiguous acked prefix; the budget
//! holds; plans, deliveries, ack outcomes, expiries and skips are exactly what the model
//! predicts; first deliveries go out in strictly increasing offset order; an offset is acked
//! only after being delivered, and never twice.
//!
//! proptest prints the failing sequence, shrinks it, and records its seed under
//! `replicate/proptest-regressions/` so the next run replays it first (`PROPTEST_RNG_SEED`
//! fixes the seed of a fresh run).

// One-range lists of offsets are what acks and deliveries carry, not a mistyped `Vec<u64>`.
#![allow(clippy::single_range_in_vec_init)]

use std::ops::Range;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use runnel_core::Offset;

use super::{
    AckOutcome, AckRefusal, Delivery, DispatchConfig, OffsetState, Planned, ShardDispatch,
    REFUSED_RANGES_MAX,
};
use crate::consumer::MemberId;

/// The model's log never grows past this many offsets.
const LOG_LEN_MAX: u64 = 160;

/// Members 1 to 3 take part.
const MEMBERS: u64 = 3;

#[derive(Debug, Clone)]
enum Op {
    Append(u64),
    /// `None`: to nobody.
    Assign(Option<u64>),
    Plan,
    Deliver {
        /// 0: the assignee.
        member: u64,
        source: PlanSource,
        /// How far past `planned.from` the read got.
        read: u64,
    },
    Ack {
        /// 0: the assignee.
        member: u64,
        /// `(offset after committed - 3, length)`, a length of 0 is an empty range and a
        /// negative one an inverted range.
        ranges: Vec<(u64, i64)>,
    },
    Expire(u64),
    /// The log start moves to this many offsets past `committed - 2` (at most the log end).
    SkipTo(u64),
}

#[derive(Debug, Clone)]
enum PlanSource {
    /// What `plan` answers now.
    Current,
    /// The last plan a `Plan` step kept (possibly stale).
    Kept,
    /// Anything.
    MadeUp { from: u64, redelivery: bool },
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let member = 1..=MEMBERS;
    prop_oneof![
        3 => (0u64..12).prop_map(Op::Append),
        1 => prop::option::weighted(0.85, member.clone()).prop_map(Op::Assign),
        1 => Just(Op::Plan),
        8 => (
            prop_oneof![6 => Just(0), 1 => member.clone()],
            prop_oneof![
                6 => Just(PlanSource::Current),
                2 => Just(PlanSource::Kept),
                1 => (0u64..LOG_LEN_MAX, any::<bool>())
                    .prop_map(|(from, redelivery)| PlanSource::MadeUp { from, redelivery }),
            ],
            prop_oneof![1 => Just(0u64), 6 => 1u64..12, 2 => Just(1000)],
        )
            .prop_map(|(member, source, read)| Op::Deliver {
                member,
                source,
                read
            }),
        6 => (
            prop_oneof![6 => Just(0), 1 => member],
            vec((0u64..16, prop_oneof![8 => 1i64..8, 1 => Just(0), 1 => -3i64..0]), 1..5),
        )
            .prop_map(|(member, ranges)| Op::Ack { member, ranges }),
        2 => (0u64..40).prop_map(Op::Expire),
        1 => (0u64..10).prop_map(Op::SkipTo),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Undelivered,
    InFlight {
        member: MemberId,
        deadline_ms: u64,
    },
    Pending,
    Acked,
    /// Below a log start that moved past it.
    Forgotten,
}

struct Model {
    config: DispatchConfig,
    slots: Vec<Slot>,
    /// Deliveries per offset.
    deliveries: Vec<u32>,
    /// Whether a member acked the offset.
    acked: Vec<bool>,
    next: u64,
    end: u64,
    assignee: Option<MemberId>,
    now_ms: u64,
    last_fresh: Option<u64>,
    kept_plan: Option<Planned>,
    first_deliveries: u64,
    redeliveries: u64,
    acks: u64,
}

impl Model {
    /// Member `pick`, or the assignee (member 1 if none) for 0.
    fn member(&self, pick: u64) -> MemberId {
        match pick {
            0 => self.assignee.unwrap_or(MemberId(1)),
            _ => MemberId(pick),
        }
    }

    fn slot(&self, offset: u64) -> Slot {
        self.slots
            .get(offset as usize)
            .copied()
            .unwrap_or(Slot::Undelivered)
    }

    fn set(&mut self, offset: u64, slot: Slot) {
        self.slots[offset as usize] = slot;
    }

    fn committed(&self) -> u64 {
        (0..self.next)
            .find(|&offset| !matches!(self.slot(offset), Slot::Acked | Slot::Forgotten))
            .unwrap_or(self.next)
    }

    fn unacked(&self) -> u32 {
        self.slots
            .iter()
            .filter(|slot| matches!(slot, Slot::InFlight { .. } | Slot::Pending))
            .count() as u32
    }

    fn first_pending(&self) -> Option<u64> {
        (0..self.next).find(|&offset| self.slot(offset) == Slot::Pending)
    }

    fn fresh_end(&self, limit: u64) -> u64 {
        let budget = self.config.unacked_records_max - self.unacked();
        limit
            .min(self.next + u64::from(budget))
            .min(self.next + u64::from(self.config.delivery_records_max))
    }

    fn expected_plan(&self) -> Option<(u64, bool)> {
        self.assignee?;
        if let Some(from) = self.first_pending() {
            return Some((from, true));
        }
        let to = self.fresh_end(self.end);
        (to > self.next).then_some((self.next, false))
    }

    /// The outcome `ack` must give, computed offset by offset; applies it to the model.
    fn ack(
        &mut self,
        member: MemberId,
        ranges: &[Range<u64>],
    ) -> Result<AckOutcome, TestCaseError> {
        let mut expected = AckOutcome::default();
        let mut refuse = |range: Range<u64>, reason: AckRefusal| {
            if range.start < range.end && expected.refused_unlisted == 0 {
                if let Some((last, last_reason)) = expected.refused.last_mut() {
                    if *last_reason == reason && last.end == range.start {
                        last.end = range.end;
                        return;
                    }
                }
            }
            if expected.refused.len() < REFUSED_RANGES_MAX {
                expected.refused.push((range, reason));
            } else {
                expected.refused_unlisted += 1;
            }
        };
        let mut acked = 0;
        for range in ranges {
            if range.start >= range.end {
                refuse(range.clone(), AckRefusal::InvalidRange);
                continue;
            }
            if self.assignee != Some(member) {
                refuse(range.clone(), AckRefusal::NotAssignee);
                continue;
            }
            for offset in range.clone() {
                if offset >= self.next {
                    refuse(offset..offset + 1, AckRefusal::NotDelivered);
                    continue;
                }
                match self.slot(offset) {
                    Slot::Acked | Slot::Forgotten => {
                        refuse(offset..offset + 1, AckRefusal::AlreadyAcked)
                    }
                    Slot::InFlight { member: to, .. } => {
                        prop_assert_eq!(to, member, "in flight to a non-assignee");
                        acked += 1;
                    }
                    Slot::Pending => acked += 1,
                    Slot::Undelivered => {
                        return Err(TestCaseError::fail(format!(
                            "{offset} below next undelivered"
                        )))
                    }
                }
                if matches!(self.slot(offset), Slot::InFlight { .. } | Slot::Pending) {
                    prop_assert!(
                        self.deliveries[offset as usize] > 0,
                        "acked before delivered"
                    );
                    prop_assert!(!self.acked[offset as usize], "{} acked twice", offset);
                    self.acked[offset as usize] = true;
                    self.set(offset, Slot::Acked);
                }
            }
        }
        expected.acked = acked;
        self.acks += acked;
        Ok(expected)
    }

    /// Checks a delivery against the model and applies it.
    fn delivered(
        &mut self,
        member: MemberId,
        planned: Planned,
        readable_end: u64,
        delivery: &Delivery,
    ) -> Result<(), TestCaseError> {
        prop_assert_eq!(Some(member), self.assignee);
        prop_assert_eq!(delivery.redelivery, planned.redelivery);
        prop_assert_eq!(
            delivery.deadline_ms,
            self.now_ms + self.config.ack_timeout_ms
        );
        prop_assert!(delivery.records > 0);
        let mut offsets = Vec::new();
        let mut previous_end = None;
        for range in &delivery.ranges {
            prop_assert!(range.start < range.end, "empty range {:?}", range);
            if let Some(end) = previous_end {
                prop_assert!(range.start > end, "ranges not ascending and apart");
            }
            previous_end = Some(range.end);
            offsets.extend(range.clone());
        }
        prop_assert_eq!(offsets.len() as u32, delivery.records);
        let (&first, &last) = (
            offsets.first().expect("records"),
            offsets.last().expect("records"),
        );
        if planned.redelivery {
            prop_assert!(first >= planned.from.0 && last < readable_end);
            for offset in first..=last {
                let pending = self.slot(offset) == Slot::Pending;
                prop_assert_eq!(
                    pending,
                    offsets.contains(&offset),
                    "offset {} of a redelivery",
                    offset
                );
            }
            self.redeliveries += u64::from(delivery.records);
        } else {
            prop_assert_eq!(
                self.first_pending(),
                None,
                "fresh records while some are pending"
            );
            let to = self.fresh_end(readable_end.min(self.end));
            prop_assert_eq!(&delivery.ranges, &vec![self.next..to]);
            for &offset in &offsets {
                prop_assert!(
                    self.last_fresh < Some(offset),
                    "first deliveries out of order"
                );
                self.last_fresh = Some(offset);
            }
            self.next = to;
            self.first_deliveries += u64::from(delivery.records);
        }
        for offset in offsets {
            self.deliveries[offset as usize] += 1;
            self.set(
                offset,
                Slot::InFlight {
                    member,
                    deadline_ms: delivery.deadline_ms,
                },
            );
        }
        Ok(())
    }

    /// Compares everything observable of `dispatch` with the model.
    fn compare(&self, dispatch: &ShardDispatch) -> Result<(), TestCaseError> {
        dispatch.check_invariants();
        let committed = self.committed();
        prop_assert_eq!(dispatch.committed(), Offset(committed));
        prop_assert_eq!(dispatch.next_offset(), Offset(self.next));
        prop_assert_eq!(dispatch.unacked(), self.unacked());
        prop_assert!(dispatch.unacked() <= self.config.unacked_records_max);
        prop_assert_eq!(dispatch.assignee(), self.assignee);
        for offset in 0..LOG_LEN_MAX + 8 {
            let expected = match self.slot(offset) {
                Slot::Acked | Slot::Forgotten => OffsetState::Acked,
                Slot::InFlight {
                    member,
                    deadline_ms,
                } => OffsetState::InFlight {
                    member,
                    deadline_ms,
                },
                Slot::Pending => OffsetState::Pending,
                Slot::Undelivered => OffsetState::Undelivered,
            };
            prop_assert_eq!(dispatch.offset_state(offset), expected, "offset {}", offset);
            // At-least-once: nothing below next is left undelivered, nothing unacked forgotten.
            if (committed..self.next).contains(&offset) {
                prop_assert_ne!(self.slot(offset), Slot::Undelivered);
            }
        }
        let deadline = self
            .slots
            .iter()
            .filter_map(|slot| match slot {
                Slot::InFlight { deadline_ms, .. } => Some(*deadline_ms),
                _ => None,
            })
            .min();
        prop_assert_eq!(dispatch.next_deadline(), deadline);
        let stats = dispatch.stats();
        prop_assert_eq!(stats.delivered_records, self.first_deliveries);
        prop_assert_eq!(stats.redelivered_records, self.redeliveries);
        prop_assert_eq!(stats.acked_records, self.acks);
        Ok(())
    }
}

fn run(config: DispatchConfig, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut dispatch = ShardDispatch::new(config, Offset(0));
    let len = (LOG_LEN_MAX + 8) as usize;
    let mut model = Model {
        config,
        slots: vec![Slot::Undelivered; len],
        deliveries: vec![0; len],
        acked: vec![false; len],
        next: 0,
        end: 0,
        assignee: None,
        now_ms: 0,
        last_fresh: None,
        kept_plan: None,
        first_deliveries: 0,
        redeliveries: 0,
        acks: 0,
    };
    // Most runs start with a member; the ops reassign it at times.
    let ops = std::iter::once(&Op::Assign(Some(1))).chain(ops);
    for op in ops {
        match op {
            Op::Append(count) => model.end = (model.end + count).min(LOG_LEN_MAX),
            Op::Assign(member) => {
                let member = member.map(MemberId);
                let moved = dispatch.assign(member);
                let mut expected = 0;
                if member != model.assignee {
                    for offset in 0..model.next {
                        if matches!(model.slot(offset), Slot::InFlight { .. }) {
                            model.set(offset, Slot::Pending);
                            expected += 1;
                        }
                    }
                }
                model.assignee = member;
                prop_assert_eq!(moved, expected);
            }
            Op::Plan => {
                let planned = dispatch.plan(Offset(model.end));
                let expected = model.expected_plan();
                prop_assert_eq!(planned.map(|p| (p.from.0, p.redelivery)), expected);
                if let Some(planned) = planned {
                    prop_assert!(planned.from < planned.to);
                    prop_assert!(planned.to.0 <= model.end.max(model.next));
                }
                model.kept_plan = planned;
            }
            Op::Deliver {
                member,
                source,
                read,
            } => {
                let member = model.member(*member);
                let current = dispatch.plan(Offset(model.end));
                let planned = match source {
                    PlanSource::Current => current,
                    PlanSource::Kept => model.kept_plan,
                    PlanSource::MadeUp { from, redelivery } => Some(Planned {
                        from: Offset(*from),
                        to: Offset(from + 1),
                        redelivery: *redelivery,
                    }),
                };
                let Some(planned) = planned else { continue };
                let readable_end = planned.from.0 + read;
                let delivery = dispatch.deliver(
                    member,
                    planned,
                    Offset(readable_end),
                    Offset(model.end),
                    model.now_ms,
                );
                match &delivery {
                    Some(delivery) => model.delivered(member, planned, readable_end, delivery)?,
                    None => {
                        // A plan made now, for the assignee, with something read, delivers.
                        let must = current == Some(planned)
                            && model.assignee == Some(member)
                            && readable_end > planned.from.0
                            && (planned.redelivery || model.fresh_end(readable_end) > model.next);
                        prop_assert!(!must, "nothing delivered for {:?}", planned);
                    }
                }
            }
            Op::Ack { member, ranges } => {
                let base = model.committed().saturating_sub(3);
                let ranges: Vec<Range<u64>> = ranges
                    .iter()
                    .map(|&(at, length)| {
                        let start = base + at;
                        let end = start.saturating_add_signed(length);
                        start..end
                    })
                    .collect();
                let member = model.member(*member);
                let outcome = dispatch.ack(member, &ranges);
                let expected = model.ack(member, &ranges)?;
                prop_assert_eq!(outcome, expected, "acking {:?}", ranges);
            }
            Op::Expire(advance) => {
                model.now_ms += advance;
                let expired = dispatch.expire(model.now_ms);
                let mut expected = 0;
                for offset in 0..model.next {
                    if let Slot::InFlight { deadline_ms, .. } = model.slot(offset) {
                        if deadline_ms <= model.now_ms {
                            model.set(offset, Slot::Pending);
                            expected += 1;
                        }
                    }
                }
                prop_assert_eq!(expired, expected);
            }
            Op::SkipTo(delta) => {
                // The log's start never passes its end.
                let start = (model.committed().saturating_sub(2) + delta).min(model.end);
                let skipped = dispatch.skip_to(Offset(start));
                let mut expected = 0;
                if start > model.committed() {
                    for offset in 0..start {
                        if matches!(model.slot(offset), Slot::InFlight { .. } | Slot::Pending) {
                            expected += 1;
                        }
                        if model.slot(offset) != Slot::Acked {
                            model.set(offset, Slot::Forgotten);
                        }
                    }
                    model.next = model.next.max(start);
                }
                prop_assert_eq!(skipped, expected);
            }
        }
        model.compare(&dispatch)?;
    }
    Ok(())
}

fn config_strategy() -> impl Strategy<Value = DispatchConfig> {
    (1u64..40, 1u32..12, 1u32..8).prop_map(
        |(ack_timeout_ms, unacked_records_max, delivery_records_max)| DispatchConfig {
            ack_timeout_ms,
            unacked_records_max,
            delivery_records_max,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Everything the module documentation promises, against the model, after every step.
    #[test]
    fn dispatch_agrees_with_the_reference_model(
        config in config_strategy(),
        ops in vec(op_strategy(), 1..160),
    ) {
        run(config, &ops)?;
    }
}
