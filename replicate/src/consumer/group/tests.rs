//! Unit tests of [`Group`]: joins and their refusals, rejoining with the previous id, leaving,
//! expiry by session timeout and heartbeats, balance and stickiness on small examples, shard
//! set changes, and the queries. Every step is followed by `check_invariants`.

use runnel_core::ShardId;

use super::*;

const TIMEOUT_MS: u64 = 1_000;

fn shards(ids: impl IntoIterator<Item = u64>) -> Vec<ShardId> {
    ids.into_iter().map(ShardId).collect()
}

fn join(group: &mut Group, name: &str, now_ms: u64) -> (MemberId, Vec<Change>) {
    let joined = group
        .join(name, None, TIMEOUT_MS, now_ms)
        .expect("the join is accepted");
    group.check_invariants();
    joined
}

fn change(shard: u64, from: Option<MemberId>, to: Option<MemberId>) -> Change {
    Change {
        shard: ShardId(shard),
        from,
        to,
    }
}

#[test]
fn the_first_member_gets_every_shard() {
    let mut group = Group::new(shards(0..4), 100);
    group.check_invariants();
    assert_eq!(group.owner_of(ShardId(0)), None);
    assert_eq!(group.next_deadline(), None);
    let (a, changes) = join(&mut group, "a", 0);
    assert_eq!(a, MemberId(100));
    assert_eq!(
        changes,
        (0..4)
            .map(|shard| change(shard, None, Some(a)))
            .collect::<Vec<_>>()
    );
    assert_eq!(group.assignment_of(a), shards(0..4));
    assert_eq!(group.generation(), 1);
}

#[test]
fn joins_and_leaves_move_the_fewest_shards() {
    let mut group = Group::new(shards(0..4), 1);
    let (a, _) = join(&mut group, "a", 0);
    // 4 shards, 2 members: 2 + 2, and only the two the newcomer takes move.
    let (b, changes) = join(&mut group, "b", 0);
    assert_eq!(
        changes,
        vec![change(2, Some(a), Some(b)), change(3, Some(a), Some(b))]
    );
    assert_eq!(
        (group.assignment_of(a), group.assignment_of(b)),
        (shards(0..2), shards(2..4))
    );
    // A third member takes exactly one shard, from a member over its new quota (ties go to the
    // lower id, so `a` keeps two).
    let (c, changes) = join(&mut group, "c", 0);
    assert_eq!(changes, vec![change(3, Some(b), Some(c))]);
    assert_eq!(group.assignment_of(a), shards(0..2));
    // A fourth member takes one from the only member with two.
    let (d, changes) = join(&mut group, "d", 0);
    assert_eq!(changes, vec![change(1, Some(a), Some(d))]);
    // A fifth gets nothing: there are only four shards.
    let (e, changes) = join(&mut group, "e", 0);
    assert_eq!((changes, group.assignment_of(e)), (vec![], vec![]));
    let generation = group.generation();
    // When one with a shard leaves, only its shard moves, to the member without one.
    assert_eq!(group.leave(b), vec![change(2, Some(b), Some(e))]);
    group.check_invariants();
    assert_eq!(group.generation(), generation + 1);
    // Unknown members change nothing.
    assert_eq!(group.leave(b), vec![]);
    assert_eq!(group.leave(MemberId(999)), vec![]);
    assert_eq!(group.generation(), generation + 1);
    for member in [c, d, e] {
        let held = group.assignment_of(member);
        let changes = group.leave(member);
        group.check_invariants();
        assert_eq!(changes.len(), held.len());
        assert!(changes.iter().all(|change| change.from == Some(member)));
    }
    assert_eq!(group.assignment_of(a), shards(0..4));
    // The last one leaving leaves every shard without a member.
    assert_eq!(
        group.leave(a),
        (0..4)
            .map(|shard| change(shard, Some(a), None))
            .collect::<Vec<_>>()
    );
    group.check_invariants();
    assert_eq!(group.member_count(), 0);
}

#[test]
fn a_name_in_use_is_refused_unless_its_holder_rejoins() {
    let mut group = Group::new(shards(0..3), 1);
    let (a, _) = join(&mut group, "a", 0);
    let (b, _) = join(&mut group, "b", 0);
    assert_eq!(
        group.join("a", None, TIMEOUT_MS, 5),
        Err(JoinError::NameInUse {
            name: "a".to_owned(),
            member: a
        })
    );
    assert_eq!(
        group.join("a", Some(b), TIMEOUT_MS, 5),
        Err(JoinError::NameInUse {
            name: "a".to_owned(),
            member: a
        })
    );
    let held = group.assignment_of(a);
    assert_eq!(held, shards(0..2));
    // The client reconnects under the same name with its previous id: it replaces the old
    // member and takes over its shards, and nothing else moves.
    let (a2, changes) = group.join("a", Some(a), TIMEOUT_MS, 10).expect("a rejoin");
    group.check_invariants();
    assert!(a2 > b);
    assert_eq!(
        changes,
        vec![change(0, Some(a), Some(a2)), change(1, Some(a), Some(a2))]
    );
    assert_eq!(group.member(a), None);
    assert_eq!(group.member_named("a"), Some(a2));
    assert_eq!(group.assignment_of(a2), held);
    assert_eq!(group.member_count(), 2);
    // A previous id that holds no name in use is a plain join.
    let (c, _) = group
        .join("c", Some(a), TIMEOUT_MS, 10)
        .expect("a plain join");
    group.check_invariants();
    assert_eq!(group.member_count(), 3);
    assert_eq!(group.assignment_of(c).len(), 1);
}

#[test]
fn invalid_joins_are_refused_and_change_nothing() {
    let mut group = Group::new(shards(0..2), 1);
    for (name, timeout, expected) in [
        ("", TIMEOUT_MS, JoinError::InvalidName { reason: "empty" }),
        (
            &*"x".repeat(MEMBER_NAME_BYTES_MAX + 1),
            TIMEOUT_MS,
            JoinError::InvalidName {
                reason: "longer than 255 bytes",
            },
        ),
        (
            "a",
            0,
            JoinError::InvalidSessionTimeout {
                session_timeout_ms: 0,
            },
        ),
        (
            "a",
            SESSION_TIMEOUT_MS_MAX + 1,
            JoinError::InvalidSessionTimeout {
                session_timeout_ms: SESSION_TIMEOUT_MS_MAX + 1,
            },
        ),
    ] {
        assert_eq!(group.join(name, None, timeout, 0), Err(expected));
        group.check_invariants();
        assert_eq!((group.member_count(), group.generation()), (0, 0));
    }
    let longest = "é".repeat(MEMBER_NAME_BYTES_MAX / 2);
    join(&mut group, &longest, 0);
    join(&mut group, "b", 0);
    let (_, changes) = group
        .join("c", None, SESSION_TIMEOUT_MS_MAX, 0)
        .expect("the longest timeout");
    assert_eq!(changes, vec![]);
}

#[test]
fn the_group_is_bounded_and_ids_are_not_reused() {
    let mut group = Group::new(shards(0..8), 1);
    let mut ids = Vec::new();
    for index in 0..MEMBERS_MAX {
        let (id, _) = group
            .join(&format!("m{index}"), None, TIMEOUT_MS, 0)
            .expect("room left");
        ids.push(id);
    }
    group.check_invariants();
    assert_eq!(
        group.join("one-more", None, TIMEOUT_MS, 0),
        Err(JoinError::GroupFull {
            members_max: MEMBERS_MAX
        })
    );
    // A full group still takes a rejoin, which replaces a member.
    let (rejoined, _) = group
        .join("m0", Some(ids[0]), TIMEOUT_MS, 0)
        .expect("a rejoin");
    assert!(!ids.contains(&rejoined));
    group.leave(ids[1]);
    let (again, _) = join(&mut group, "m1", 0);
    assert!(again > rejoined, "ids only grow");

    // The counter's end is refused, not wrapped.
    let mut group = Group::new(shards(0..1), u64::MAX - 1);
    let (last, _) = join(&mut group, "a", 0);
    assert_eq!(last, MemberId(u64::MAX - 1));
    assert_eq!(
        group.join("b", None, TIMEOUT_MS, 0),
        Err(JoinError::MemberIdsExhausted)
    );
}

#[test]
fn members_expire_unless_they_heartbeat() {
    let mut group = Group::new(shards(0..2), 1);
    let (a, _) = join(&mut group, "a", 0);
    let (b, _) = group.join("b", None, 500, 100).expect("joins");
    assert_eq!(group.next_deadline(), Some(600));
    assert!(group.heartbeat(b, 400));
    assert!(!group.heartbeat(MemberId(77), 400));
    assert_eq!(group.next_deadline(), Some(900));
    assert_eq!(group.expire(899), (vec![], vec![]));
    // `b` is expired at its deadline exactly; `a` is not yet.
    let (expired, changes) = group.expire(900);
    group.check_invariants();
    assert_eq!(expired, vec![b]);
    assert_eq!(changes, vec![change(1, Some(b), Some(a))]);
    assert!(!group.heartbeat(b, 901));
    assert!(group.heartbeat(a, 950));
    assert_eq!(group.expire(1_500), (vec![], vec![]));
    let (expired, changes) = group.expire(1_950);
    group.check_invariants();
    assert_eq!(expired, vec![a]);
    assert_eq!(changes.len(), 2);
    assert_eq!(group.next_deadline(), None);
}

#[test]
fn shard_changes_reassign_only_what_they_must() {
    let mut group = Group::new(shards(0..4), 1);
    // Without members, a shard change moves nobody.
    assert_eq!(group.set_shards(shards(0..3)), vec![]);
    let (a, _) = join(&mut group, "a", 0);
    let (b, _) = join(&mut group, "b", 0);
    assert_eq!(
        (group.assignment_of(a), group.assignment_of(b)),
        (shards(0..2), shards(2..3))
    );
    // Shard 1 is sealed and drained; shards 5 and 6 open.
    let changes = group.set_shards(shards([0, 2, 5, 6]));
    group.check_invariants();
    assert_eq!(
        changes,
        vec![
            change(1, Some(a), None),
            change(5, None, Some(a)),
            change(6, None, Some(b))
        ]
    );
    assert_eq!(group.owner_of(ShardId(1)), None);
    assert_eq!(group.shards().collect::<Vec<_>>(), shards([0, 2, 5, 6]));
    // The same shards again: no change, no new generation.
    let generation = group.generation();
    assert_eq!(group.set_shards(shards([6, 5, 2, 0])), vec![]);
    assert_eq!(group.generation(), generation);
}

#[test]
fn members_are_listed_in_id_order_with_their_shards() {
    let mut group = Group::new(shards(0..3), 10);
    let (b, _) = join(&mut group, "b", 5);
    let (a, _) = join(&mut group, "a", 7);
    assert!(group.heartbeat(b, 9));
    let listed: Vec<MemberInfo> = group.members().collect();
    assert_eq!(
        listed,
        vec![
            MemberInfo {
                id: b,
                name: "b".to_owned(),
                shards: shards(0..2),
                session_timeout_ms: TIMEOUT_MS,
                joined_ms: 5,
                last_seen_ms: 9,
            },
            MemberInfo {
                id: a,
                name: "a".to_owned(),
                shards: shards(2..3),
                session_timeout_ms: TIMEOUT_MS,
                joined_ms: 7,
                last_seen_ms: 7,
            },
        ]
    );
    assert_eq!(group.member(a).as_ref(), listed.get(1));
    assert_eq!(group.owner_of(ShardId(2)), Some(a));
    assert_eq!(group.assignment_of(MemberId(3)), vec![]);
}
