//! Property test of [`Group`] over random sequences of joins (new names, names in use, rejoins
//! with the right or a wrong previous id, invalid ones), leaves, heartbeats, clock advances with
//! expiry, and shard set changes.
//!
//! After every step: the invariants hold; every shard has exactly one owner while the group has
//! members and none otherwise; the assignment is balanced (max − min ≤ 1); names are unique;
//! member ids are never reused; the returned changes are exactly the difference between the
//! assignments before and after; the generation moves iff something changed; expiry removes
//! exactly the members past their session timeout; and the rebalance is minimal: a new member's
//! join moves only the shards it receives, a rejoin only hands the old member's shards to the
//! new one, a leave or an expiry moves only the shards the leavers held.
//!
//! proptest prints the failing sequence, shrinks it, and records its seed under
//! `replicate/proptest-regressions/` so the next run replays it first (`PROPTEST_RNG_SEED`
//! fixes the seed of a fresh run).

use std::collections::{BTreeMap, BTreeSet};

use proptest::collection::{btree_set, vec};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use runnel_core::ShardId;

use super::{Change, Group, JoinError};
use crate::consumer::MemberId;

/// Names the sequences draw from: few, so that joins collide.
const NAMES: [&str; 6] = ["a", "b", "c", "d", "e", ""];

#[derive(Debug, Clone)]
enum Op {
    Join {
        name: usize,
        previous: Previous,
        session_timeout_ms: u64,
    },
    /// Picks a live member, or an unknown id if `unknown`.
    Leave {
        pick: Index,
        unknown: bool,
    },
    Heartbeat {
        pick: Index,
        unknown: bool,
    },
    Expire {
        advance_ms: u64,
    },
    SetShards(BTreeSet<u64>),
}

#[derive(Debug, Clone)]
enum Previous {
    None,
    /// The id of the member holding the name (if any).
    Holder,
    /// Some live member's id.
    Other(Index),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (
            0..NAMES.len(),
            prop_oneof![
                2 => Just(Previous::None),
                2 => Just(Previous::Holder),
                1 => any::<Index>().prop_map(Previous::Other),
            ],
            prop_oneof![8 => 1u64..200, 1 => Just(0)],
        )
            .prop_map(|(name, previous, session_timeout_ms)| Op::Join {
                name,
                previous,
                session_timeout_ms
            }),
        2 => (any::<Index>(), prop::bool::weighted(0.1))
            .prop_map(|(pick, unknown)| Op::Leave { pick, unknown }),
        3 => (any::<Index>(), prop::bool::weighted(0.1))
            .prop_map(|(pick, unknown)| Op::Heartbeat { pick, unknown }),
        3 => (0u64..80).prop_map(|advance_ms| Op::Expire { advance_ms }),
        1 => btree_set(0u64..16, 0..12).prop_map(Op::SetShards),
    ]
}

/// The assignment as the queries show it: every shard and its owner.
fn owners(group: &Group) -> BTreeMap<ShardId, Option<MemberId>> {
    group
        .shards()
        .map(|shard| (shard, group.owner_of(shard)))
        .collect()
}

fn pick(group: &Group, pick: &Index, unknown: bool) -> MemberId {
    let ids: Vec<MemberId> = group.members().map(|member| member.id).collect();
    if unknown || ids.is_empty() {
        MemberId(1_000_000)
    } else {
        ids[pick.index(ids.len())]
    }
}

fn check(
    group: &Group,
    before: &BTreeMap<ShardId, Option<MemberId>>,
    changes: &[Change],
    generation_before: u64,
) -> Result<(), TestCaseError> {
    group.check_invariants();
    let after = owners(group);
    let members: Vec<_> = group.members().collect();
    // Ownership and balance.
    for (shard, owner) in &after {
        match owner {
            Some(owner) => {
                prop_assert!(!members.is_empty());
                prop_assert!(group.assignment_of(*owner).contains(shard));
            }
            None => prop_assert!(members.is_empty(), "shard {} without a member", shard),
        }
    }
    let held: usize = members.iter().map(|member| member.shards.len()).sum();
    if !members.is_empty() {
        prop_assert_eq!(held, after.len(), "a shard held twice or not at all");
        let counts = members.iter().map(|member| member.shards.len());
        let most = counts.clone().max().unwrap_or(0);
        let least = counts.min().unwrap_or(0);
        prop_assert!(most - least <= 1, "unbalanced: {} to {}", least, most);
    }
    // Names unique.
    let names: BTreeSet<&str> = members.iter().map(|member| member.name.as_str()).collect();
    prop_assert_eq!(names.len(), members.len());
    // The changes are exactly the difference, in shard order.
    let shards: BTreeSet<ShardId> = before.keys().chain(after.keys()).copied().collect();
    let expected: Vec<Change> = shards
        .into_iter()
        .filter_map(|shard| {
            let from = before.get(&shard).copied().flatten();
            let to = after.get(&shard).copied().flatten();
            (from != to).then_some(Change { shard, from, to })
        })
        .collect();
    prop_assert_eq!(changes, &expected[..]);
    let bumped = group.generation() != generation_before;
    prop_assert_eq!(bumped, !changes.is_empty());
    if bumped {
        prop_assert_eq!(group.generation(), generation_before + 1);
    }
    Ok(())
}

fn run(shard_count: u64, first_member_id: u64, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut group = Group::new((0..shard_count).map(ShardId), first_member_id);
    group.check_invariants();
    let mut ids_made: BTreeSet<MemberId> = BTreeSet::new();
    // When each member was last heard from, and its session timeout.
    let mut seen: BTreeMap<MemberId, (u64, u64)> = BTreeMap::new();
    let mut now_ms = 0u64;
    for op in ops {
        let before = owners(&group);
        let generation = group.generation();
        let changes = match op {
            Op::Join {
                name,
                previous,
                session_timeout_ms,
            } => {
                let name = NAMES[*name];
                let holder = group.member_named(name);
                let previous = match previous {
                    Previous::None => None,
                    Previous::Holder => holder,
                    Previous::Other(index) => Some(pick(&group, index, false)),
                };
                match group.join(name, previous, *session_timeout_ms, now_ms) {
                    Ok((id, changes)) => {
                        prop_assert!(!name.is_empty() && *session_timeout_ms > 0);
                        prop_assert!(id.0 >= first_member_id);
                        prop_assert!(
                            ids_made.iter().all(|made| *made < id),
                            "id {} reused or older",
                            id
                        );
                        ids_made.insert(id);
                        let received = group.assignment_of(id);
                        match holder {
                            Some(old) => {
                                prop_assert_eq!(previous, Some(old));
                                prop_assert!(group.member(old).is_none());
                                seen.remove(&old);
                                // A rejoin hands over the old member's shards, nothing more.
                                let held: Vec<ShardId> = before
                                    .iter()
                                    .filter(|(_, owner)| **owner == Some(old))
                                    .map(|(&shard, _)| shard)
                                    .collect();
                                prop_assert_eq!(&received, &held);
                                prop_assert!(changes.iter().all(|change| change.from == Some(old)));
                            }
                            None => {
                                // A new member: only the shards it receives move.
                                prop_assert_eq!(changes.len(), received.len());
                            }
                        }
                        prop_assert!(changes.iter().all(|change| change.to == Some(id)));
                        seen.insert(id, (now_ms, *session_timeout_ms));
                        changes
                    }
                    Err(JoinError::NameInUse { member, .. }) => {
                        prop_assert_eq!(Some(member), holder);
                        prop_assert_ne!(previous, holder);
                        Vec::new()
                    }
                    Err(JoinError::InvalidName { .. }) => {
                        prop_assert!(name.is_empty());
                        Vec::new()
                    }
                    Err(JoinError::InvalidSessionTimeout { .. }) => {
                        prop_assert_eq!(*session_timeout_ms, 0);
                        Vec::new()
                    }
                    Err(other) => return Err(TestCaseError::fail(format!("{other}"))),
                }
            }
            Op::Leave {
                pick: index,
                unknown,
            } => {
                let member = pick(&group, index, *unknown);
                let held = group.assignment_of(member);
                let changes = group.leave(member);
                seen.remove(&member);
                prop_assert_eq!(changes.len(), held.len());
                prop_assert!(changes.iter().all(|change| change.from == Some(member)));
                prop_assert!(group.member(member).is_none());
                changes
            }
            Op::Heartbeat {
                pick: index,
                unknown,
            } => {
                let member = pick(&group, index, *unknown);
                let known = group.heartbeat(member, now_ms);
                prop_assert_eq!(known, seen.contains_key(&member));
                if let Some((last_seen_ms, _)) = seen.get_mut(&member) {
                    *last_seen_ms = now_ms;
                }
                Vec::new()
            }
            Op::Expire { advance_ms } => {
                now_ms += advance_ms;
                let held: BTreeMap<MemberId, usize> = group
                    .members()
                    .map(|member| (member.id, member.shards.len()))
                    .collect();
                let (expired, changes) = group.expire(now_ms);
                let expected: Vec<MemberId> = seen
                    .iter()
                    .filter(|(_, (last_seen_ms, timeout_ms))| last_seen_ms + timeout_ms <= now_ms)
                    .map(|(&id, _)| id)
                    .collect();
                prop_assert_eq!(&expired, &expected);
                let moved: usize = expired
                    .iter()
                    .map(|id| held.get(id).copied().unwrap_or(0))
                    .sum();
                prop_assert_eq!(changes.len(), moved);
                prop_assert!(changes
                    .iter()
                    .all(|change| change.from.is_some_and(|from| expired.contains(&from))));
                for id in &expired {
                    seen.remove(id);
                }
                prop_assert_eq!(
                    group.next_deadline(),
                    seen.values().map(|(s, t)| s + t).min()
                );
                changes
            }
            Op::SetShards(shards) => group.set_shards(shards.iter().copied().map(ShardId)),
        };
        check(&group, &before, &changes, generation)?;
        let live: BTreeSet<MemberId> = group.members().map(|member| member.id).collect();
        prop_assert_eq!(&live, &seen.keys().copied().collect::<BTreeSet<_>>());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Everything the module documentation promises, after every step.
    #[test]
    fn group_assignment_is_covering_balanced_sticky_and_exact(
        shard_count in 0u64..12,
        first_member_id in prop_oneof![Just(1u64), 1u64..1u64 << 40],
        ops in vec(op_strategy(), 1..80),
    ) {
        run(shard_count, first_member_id, &ops)?;
    }
}
