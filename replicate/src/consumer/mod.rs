//! **Shared subscriptions** (consumer groups) at run time, as two sans-IO state machines.
//!
//! [`Group`] runs on the subscription's coordinator core: it admits and expels the members (the
//! connected consumer instances) and assigns them whole shards, balanced and sticky.
//! [`ShardDispatch`] runs on the core that owns a shard, one per (subscription, shard): it
//! decides what to deliver to the shard's assignee, tracks every delivered record until it is
//! acked or its ack timeout passes, and yields the committed offset to persist.
//!
//! Invariants: delivery is at-least-once (every offset in a dispatch window that is not acked is
//! in flight or pending redelivery, never forgotten); `committed` only covers acked offsets; every
//! shard of a group has exactly one owner while the group has members. Both check theirs in
//! `check_invariants`, which the tests call after every step.
//!
//! Must never: read a clock, a socket, a file, a thread or a random source. Time (`now_ms`) and
//! ids come in as arguments. Every structure has a documented bound; no allocation per record.
//!
//! Fault model: acks and joins come from clients and may be stale, duplicated or hostile; the
//! answer is a typed refusal that changes nothing. A broken internal invariant is an `assert!`
//! and stops the process.

use std::fmt;

mod dispatch;
mod group;

pub use dispatch::{
    AckOutcome, AckRefusal, Delivery, DispatchConfig, DispatchConfigError, DispatchStats, Planned,
    ShardDispatch, DELIVERY_RECORDS_MAX_LIMIT, REFUSED_RANGES_MAX,
};
pub use group::{
    Change, Group, JoinError, MemberInfo, MEMBERS_MAX, MEMBER_NAME_BYTES_MAX,
    SESSION_TIMEOUT_MS_MAX,
};

/// A member of a consumer group: one connected consumer instance. Allocated by [`Group::join`]
/// from a counter that only grows, so an id is never reused within a group's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberId(pub u64);

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
