//! Unit tests of [`ShardDispatch`]: the unacked budget, the delivery bounds, timeouts and
//! redelivery, reassignment, every ack refusal, the committed offset, the log start moving, and
//! stale plans. Every step is followed by `check_invariants` through the helpers.

// One-range lists of offsets are what acks and deliveries carry, not a mistyped `Vec<u64>`.
#![allow(clippy::single_range_in_vec_init)]

use std::ops::Range;

use runnel_core::Offset;

use super::*;

const A: MemberId = MemberId(1);
const B: MemberId = MemberId(2);
const TIMEOUT_MS: u64 = 100;

fn dispatch(unacked_records_max: u32, delivery_records_max: u32) -> ShardDispatch {
    let config = DispatchConfig {
        ack_timeout_ms: TIMEOUT_MS,
        unacked_records_max,
        delivery_records_max,
    };
    let dispatch = ShardDispatch::new(config, Offset(0));
    dispatch.check_invariants();
    dispatch
}

/// Plans, then delivers to `member` with everything readable up to `end`.
fn send(dispatch: &mut ShardDispatch, member: MemberId, end: u64, now_ms: u64) -> Option<Delivery> {
    let planned = dispatch.plan(Offset(end))?;
    let delivery = dispatch.deliver(member, planned, Offset(end), Offset(end), now_ms);
    dispatch.check_invariants();
    delivery
}

/// The ranges of a delivery that must happen.
fn sent(dispatch: &mut ShardDispatch, member: MemberId, end: u64, now_ms: u64) -> Vec<Range<u64>> {
    send(dispatch, member, end, now_ms)
        .expect("a delivery")
        .ranges
}

fn ack(dispatch: &mut ShardDispatch, member: MemberId, ranges: &[Range<u64>]) -> AckOutcome {
    let outcome = dispatch.ack(member, ranges);
    dispatch.check_invariants();
    outcome
}

fn accepted(acked: u64) -> AckOutcome {
    AckOutcome {
        acked,
        ..AckOutcome::default()
    }
}

#[test]
fn the_budget_pauses_fresh_deliveries_until_acks_free_room() {
    let mut dispatch = dispatch(5, 3);
    dispatch.assign(Some(A));
    assert_eq!(sent(&mut dispatch, A, 100, 0), vec![0..3]);
    // Two records of budget left: the delivery stops there, not at the delivery size.
    assert_eq!(sent(&mut dispatch, A, 100, 0), vec![3..5]);
    assert_eq!(dispatch.unacked(), 5);
    assert_eq!(dispatch.plan(Offset(100)), None);
    assert_eq!(ack(&mut dispatch, A, &[0..2]), accepted(2));
    assert_eq!(dispatch.committed(), Offset(2));
    assert_eq!(
        dispatch.plan(Offset(100)),
        Some(Planned {
            from: Offset(5),
            to: Offset(7),
            redelivery: false
        })
    );
    assert_eq!(sent(&mut dispatch, A, 100, 0), vec![5..7]);
    assert_eq!(dispatch.unacked(), 5);
    assert_eq!(dispatch.plan(Offset(100)), None);
    let stats = dispatch.stats();
    assert_eq!((stats.delivered_records, stats.acked_records), (7, 2));
}

#[test]
fn deliveries_stop_at_the_read_and_at_the_log_end() {
    let mut dispatch = dispatch(100, 10);
    dispatch.assign(Some(A));
    // Nothing readable: nothing to plan.
    assert_eq!(dispatch.plan(Offset(0)), None);
    let planned = dispatch.plan(Offset(8)).expect("fresh records");
    assert_eq!((planned.from, planned.to), (Offset(0), Offset(8)));
    // The read returned batches up to 20, but only 8 are readable.
    let delivery = dispatch
        .deliver(A, planned, Offset(20), Offset(8), 0)
        .expect("a delivery");
    assert_eq!((delivery.ranges, delivery.records), (vec![0..8], 8));
    assert_eq!(delivery.deadline_ms, TIMEOUT_MS);
    // The read covered less than the log end: the delivery stops at the read.
    let planned = dispatch.plan(Offset(30)).expect("fresh records");
    let delivery = dispatch
        .deliver(A, planned, Offset(11), Offset(30), 0)
        .expect("a delivery");
    assert_eq!(delivery.ranges, vec![8..11]);
    // A read that covered nothing sends nothing.
    let planned = dispatch.plan(Offset(30)).expect("fresh records");
    assert_eq!(
        dispatch.deliver(A, planned, Offset(11), Offset(30), 0),
        None
    );
    assert_eq!(dispatch.next_offset(), Offset(11));
    dispatch.check_invariants();
}

#[test]
fn timed_out_spans_are_redelivered_before_fresh_records() {
    let mut dispatch = dispatch(100, 3);
    dispatch.assign(Some(A));
    assert_eq!(sent(&mut dispatch, A, 100, 0), vec![0..3]);
    assert_eq!(sent(&mut dispatch, A, 100, 50), vec![3..6]);
    assert_eq!(dispatch.next_deadline(), Some(100));
    assert_eq!(dispatch.expire(99), 0);
    assert_eq!(dispatch.expire(100), 3);
    dispatch.check_invariants();
    assert_eq!(dispatch.next_deadline(), Some(150));
    let planned = dispatch.plan(Offset(100)).expect("a redelivery");
    assert_eq!(
        planned,
        Planned {
            from: Offset(0),
            to: Offset(3),
            redelivery: true
        }
    );
    // An ack of a pending offset is accepted, and that offset is not sent again.
    assert_eq!(ack(&mut dispatch, A, &[1..2]), accepted(1));
    let delivery = dispatch
        .deliver(A, planned, Offset(3), Offset(100), 120)
        .expect("a redelivery");
    dispatch.check_invariants();
    assert_eq!(delivery.ranges, vec![0..1, 2..3]);
    assert_eq!((delivery.records, delivery.redelivery), (2, true));
    assert_eq!(delivery.deadline_ms, 220);
    assert_eq!(dispatch.next_deadline(), Some(150));
    // Nothing pending any more: fresh records again.
    assert_eq!(sent(&mut dispatch, A, 100, 120), vec![6..9]);
    let stats = dispatch.stats();
    assert_eq!(
        (
            stats.delivered_records,
            stats.redelivered_records,
            stats.expired_records
        ),
        (9, 2, 3)
    );
}

#[test]
fn a_short_read_redelivers_part_of_a_pending_span_and_keeps_the_rest_pending() {
    let mut dispatch = dispatch(100, 8);
    dispatch.assign(Some(A));
    assert_eq!(sent(&mut dispatch, A, 8, 0), vec![0..8]);
    assert_eq!(ack(&mut dispatch, A, &[0..1, 3..4, 7..8]), accepted(3));
    assert_eq!(dispatch.expire(TIMEOUT_MS), 5);
    let planned = dispatch.plan(Offset(8)).expect("a redelivery");
    assert_eq!((planned.from, planned.to), (Offset(1), Offset(8)));
    // The read stopped at 4 (offset 3 is acked, so the cut moves on to 4).
    let delivery = dispatch
        .deliver(A, planned, Offset(4), Offset(8), 10)
        .expect("a redelivery");
    dispatch.check_invariants();
    assert_eq!(delivery.ranges, vec![1..3]);
    let planned = dispatch.plan(Offset(8)).expect("the rest");
    assert_eq!(
        planned,
        Planned {
            from: Offset(4),
            to: Offset(8),
            redelivery: true
        }
    );
    let delivery = dispatch
        .deliver(A, planned, Offset(8), Offset(8), 10)
        .expect("the rest");
    assert_eq!(delivery.ranges, vec![4..7]);
    dispatch.check_invariants();
    assert_eq!(dispatch.plan(Offset(8)), None);
}

#[test]
fn reassignment_makes_in_flight_records_pending_for_the_new_member() {
    let mut dispatch = dispatch(100, 4);
    assert_eq!(dispatch.plan(Offset(10)), None, "nobody to deliver to");
    assert_eq!(dispatch.assign(Some(A)), 0);
    assert_eq!(sent(&mut dispatch, A, 10, 0), vec![0..4]);
    assert_eq!(
        dispatch.assign(Some(A)),
        0,
        "the same member changes nothing"
    );
    assert_eq!(dispatch.next_deadline(), Some(TIMEOUT_MS));
    assert_eq!(dispatch.assign(Some(B)), 4);
    dispatch.check_invariants();
    assert_eq!(dispatch.assignee(), Some(B));
    assert_eq!(dispatch.next_deadline(), None);
    // A's late acks are refused; the records stay pending.
    let outcome = ack(&mut dispatch, A, &[0..4]);
    assert_eq!(outcome.refused, vec![(0..4, AckRefusal::NotAssignee)]);
    assert_eq!((outcome.acked, dispatch.unacked()), (0, 4));
    let planned = dispatch.plan(Offset(10)).expect("a redelivery");
    assert!(planned.redelivery);
    assert_eq!(
        dispatch.deliver(A, planned, Offset(10), Offset(10), 5),
        None
    );
    let delivery = dispatch
        .deliver(B, planned, Offset(10), Offset(10), 5)
        .expect("B gets them");
    assert_eq!((delivery.ranges, delivery.redelivery), (vec![0..4], true));
    assert_eq!(ack(&mut dispatch, B, &[0..4]), accepted(4));
    assert_eq!(dispatch.committed(), Offset(4));
    // Nobody: everything in flight waits.
    assert_eq!(sent(&mut dispatch, B, 10, 5), vec![4..8]);
    assert_eq!(dispatch.assign(None), 4);
    assert_eq!(dispatch.plan(Offset(10)), None);
    dispatch.check_invariants();
}

#[test]
fn refused_acks_say_why_and_change_nothing() {
    let mut dispatch = dispatch(100, 5);
    dispatch.assign(Some(A));
    assert_eq!(sent(&mut dispatch, A, 100, 0), vec![0..5]);
    assert_eq!(ack(&mut dispatch, A, &[0..2]), accepted(2));
    let before = (
        dispatch.committed(),
        dispatch.next_offset(),
        dispatch.unacked(),
    );
    // An inverted range, as a hostile client may send it.
    let inverted = Range { start: 4, end: 2 };
    for (member, ranges, expected) in [
        (A, vec![5..9], vec![(5..9, AckRefusal::NotDelivered)]),
        (A, vec![0..2], vec![(0..2, AckRefusal::AlreadyAcked)]),
        (B, vec![2..5], vec![(2..5, AckRefusal::NotAssignee)]),
        (
            A,
            vec![3..3, inverted.clone()],
            vec![
                (3..3, AckRefusal::InvalidRange),
                (inverted.clone(), AckRefusal::InvalidRange),
            ],
        ),
    ] {
        let outcome = ack(&mut dispatch, member, &ranges);
        assert_eq!(outcome.acked, 0);
        assert_eq!(outcome.refused, expected, "{member} acking {ranges:?}");
        assert_eq!(
            (
                dispatch.committed(),
                dispatch.next_offset(),
                dispatch.unacked()
            ),
            before
        );
    }
    // One range over all three kinds: accepted in the middle, merged refusals at both ends.
    assert_eq!(ack(&mut dispatch, A, &[3..4]), accepted(1));
    let outcome = ack(&mut dispatch, A, &[0..10]);
    assert_eq!(outcome.acked, 2);
    assert_eq!(
        outcome.refused,
        vec![
            (0..2, AckRefusal::AlreadyAcked),
            (3..4, AckRefusal::AlreadyAcked),
            (5..10, AckRefusal::NotDelivered)
        ]
    );
    assert_eq!(dispatch.committed(), Offset(5));
    // Acking twice is refused the second time.
    let outcome = ack(&mut dispatch, A, &[0..5]);
    assert_eq!(outcome.refused, vec![(0..5, AckRefusal::AlreadyAcked)]);
    let stats = dispatch.stats();
    assert_eq!(stats.acked_records, 5);
    assert_eq!(stats.invalid_ack_ranges, 2);
    assert_eq!(stats.refused_records, 4 + 2 + 3 + 2 + 1 + 5 + 5);
}

#[test]
fn hostile_acks_get_a_bounded_answer_quickly() {
    let mut dispatch = dispatch(100, 5);
    dispatch.assign(Some(A));
    assert_eq!(sent(&mut dispatch, A, 100, 0), vec![0..5]);
    let invalid: Vec<Range<u64>> = (0..100).map(|at| at..at).collect();
    let outcome = ack(&mut dispatch, A, &invalid);
    assert_eq!(outcome.refused.len(), REFUSED_RANGES_MAX);
    assert_eq!(outcome.refused_unlisted, 100 - REFUSED_RANGES_MAX as u64);
    // Alternating refusals cannot be merged: the list is cut at the limit.
    let alternating: Vec<Range<u64>> = (0..200).map(|at| at * 2 + 10..at * 2 + 11).collect();
    let outcome = ack(&mut dispatch, A, &alternating);
    assert_eq!(outcome.refused.len(), REFUSED_RANGES_MAX);
    assert_eq!(outcome.refused_unlisted, 200 - REFUSED_RANGES_MAX as u64);
    // A range over the whole offset space costs no more than the window.
    let outcome = ack(&mut dispatch, A, &[0..u64::MAX]);
    assert_eq!(outcome.acked, 5);
    assert_eq!(
        outcome.refused,
        vec![(5..u64::MAX, AckRefusal::NotDelivered)]
    );
    let outcome = ack(&mut dispatch, B, &[0..u64::MAX]);
    assert_eq!(
        outcome.refused,
        vec![(0..u64::MAX, AckRefusal::NotAssignee)]
    );
}

#[test]
fn committed_advances_only_over_the_contiguous_acked_prefix() {
    let mut dispatch = dispatch(100, 3);
    dispatch.assign(Some(A));
    for expected in [0..3, 3..6, 6..9] {
        assert_eq!(sent(&mut dispatch, A, 100, 0), vec![expected]);
    }
    assert_eq!(dispatch.span_count(), 3);
    assert_eq!(ack(&mut dispatch, A, &[4..6]), accepted(2));
    assert_eq!(dispatch.committed(), Offset(0));
    // The middle span is fully acked: it collapses but committed stays.
    assert_eq!(ack(&mut dispatch, A, &[3..4]), accepted(1));
    assert_eq!(dispatch.committed(), Offset(0));
    assert_eq!(dispatch.span_count(), 3);
    // The last span fully acked merges with the acked middle one.
    assert_eq!(ack(&mut dispatch, A, &[6..9]), accepted(3));
    assert_eq!(dispatch.span_count(), 2);
    assert_eq!(ack(&mut dispatch, A, &[1..3]), accepted(2));
    assert_eq!(dispatch.committed(), Offset(0));
    assert_eq!(ack(&mut dispatch, A, &[0..1]), accepted(1));
    assert_eq!(dispatch.committed(), Offset(9));
    assert_eq!((dispatch.span_count(), dispatch.unacked()), (0, 0));
    // Inside the front span, committed follows the acked prefix.
    assert_eq!(sent(&mut dispatch, A, 100, 0), vec![9..12]);
    assert_eq!(ack(&mut dispatch, A, &[9..10]), accepted(1));
    assert_eq!(dispatch.committed(), Offset(10));
    assert_eq!(ack(&mut dispatch, A, &[11..12]), accepted(1));
    assert_eq!(dispatch.committed(), Offset(10));
}

#[test]
fn skip_to_forgets_the_window_below_the_log_start() {
    let mut dispatch = dispatch(100, 4);
    dispatch.assign(Some(A));
    assert_eq!(sent(&mut dispatch, A, 100, 0), vec![0..4]);
    assert_eq!(sent(&mut dispatch, A, 100, 0), vec![4..8]);
    assert_eq!(ack(&mut dispatch, A, &[5..6]), accepted(1));
    assert_eq!(dispatch.skip_to(Offset(0)), 0);
    // 0..4 and 4 were never acked; 5 was.
    assert_eq!(dispatch.skip_to(Offset(6)), 5);
    dispatch.check_invariants();
    assert_eq!(
        (dispatch.committed(), dispatch.next_offset()),
        (Offset(6), Offset(8))
    );
    assert_eq!(dispatch.unacked(), 2);
    let outcome = ack(&mut dispatch, A, &[4..5]);
    assert_eq!(outcome.refused, vec![(4..5, AckRefusal::AlreadyAcked)]);
    // Past next: the whole window goes, and fresh delivery starts at the new log start.
    assert_eq!(dispatch.skip_to(Offset(20)), 2);
    dispatch.check_invariants();
    assert_eq!(
        (dispatch.committed(), dispatch.next_offset()),
        (Offset(20), Offset(20))
    );
    assert_eq!((dispatch.unacked(), dispatch.next_deadline()), (0, None));
    assert_eq!(sent(&mut dispatch, A, 30, 0), vec![20..24]);
    assert_eq!(
        dispatch.skip_to(Offset(3)),
        0,
        "an older start changes nothing"
    );
    assert_eq!(dispatch.stats().skipped_records, 7);
}

#[test]
fn skip_to_inside_a_span_keeps_its_rest() {
    let mut dispatch = dispatch(100, 8);
    dispatch.assign(Some(A));
    assert_eq!(sent(&mut dispatch, A, 100, 0), vec![0..8]);
    assert_eq!(dispatch.expire(TIMEOUT_MS), 8);
    assert_eq!(dispatch.skip_to(Offset(3)), 3);
    dispatch.check_invariants();
    let planned = dispatch.plan(Offset(100)).expect("the rest, redelivered");
    assert_eq!((planned.from, planned.redelivery), (Offset(3), true));
    let delivery = dispatch
        .deliver(A, planned, Offset(8), Offset(100), 0)
        .expect("a redelivery");
    assert_eq!(delivery.ranges, vec![3..8]);
    dispatch.check_invariants();
}

#[test]
fn stale_plans_deliver_nothing() {
    let mut dispatch = dispatch(100, 4);
    dispatch.assign(Some(A));
    let fresh = dispatch.plan(Offset(100)).expect("fresh records");
    assert_eq!(sent(&mut dispatch, A, 100, 0), vec![0..4]);
    // `next` moved since the plan.
    assert_eq!(
        dispatch.deliver(A, fresh, Offset(100), Offset(100), 0),
        None
    );
    dispatch.expire(TIMEOUT_MS);
    let redelivery = dispatch.plan(Offset(100)).expect("a redelivery");
    // A fresh plan while something is pending is refused too: redeliveries go first.
    let fresh = Planned {
        from: Offset(4),
        to: Offset(8),
        redelivery: false,
    };
    assert_eq!(
        dispatch.deliver(A, fresh, Offset(100), Offset(100), 0),
        None
    );
    assert_eq!(ack(&mut dispatch, A, &[0..4]), accepted(4));
    // Acks arrived meanwhile and nothing is left to send.
    assert_eq!(
        dispatch.deliver(A, redelivery, Offset(100), Offset(100), 0),
        None
    );
    dispatch.check_invariants();
    assert_eq!(dispatch.stats().redelivered_records, 0);
}

#[test]
fn configurations_out_of_range_are_refused() {
    let good = DispatchConfig {
        ack_timeout_ms: 1,
        unacked_records_max: 1,
        delivery_records_max: 1,
    };
    assert_eq!(good.validate(), Ok(()));
    let largest = DispatchConfig {
        ack_timeout_ms: ACK_TIMEOUT_MS_MAX,
        unacked_records_max: MAX_UNACKED_RECORDS_LIMIT,
        delivery_records_max: DELIVERY_RECORDS_MAX_LIMIT,
    };
    assert_eq!(largest.validate(), Ok(()));
    for (bad, expected) in [
        (
            DispatchConfig {
                ack_timeout_ms: 0,
                ..good
            },
            DispatchConfigError::AckTimeout { ack_timeout_ms: 0 },
        ),
        (
            DispatchConfig {
                unacked_records_max: MAX_UNACKED_RECORDS_LIMIT + 1,
                ..good
            },
            DispatchConfigError::UnackedRecordsMax {
                unacked_records_max: MAX_UNACKED_RECORDS_LIMIT + 1,
            },
        ),
        (
            DispatchConfig {
                delivery_records_max: 0,
                ..good
            },
            DispatchConfigError::DeliveryRecordsMax {
                delivery_records_max: 0,
            },
        ),
    ] {
        assert_eq!(bad.validate(), Err(expected));
    }
}

#[test]
#[should_panic(expected = "invalid dispatch configuration")]
fn a_dispatch_with_a_bad_configuration_is_a_bug() {
    let _ = ShardDispatch::new(
        DispatchConfig {
            ack_timeout_ms: 1,
            unacked_records_max: 0,
            delivery_records_max: 1,
        },
        Offset(0),
    );
}
