//! [`Group`]: the members of one subscription and which shards each holds, on the
//! subscription's coordinator core.
//!
//! Members join under a name unique in the group, stay by heartbeats within their session
//! timeout, and leave or are expelled. Every change of membership or of the stream's shards
//! rebalances the assignment by one rule: whole shards; every shard assigned while the group has
//! a member; balanced by count (each member holds ⌊n/m⌋ or ⌈n/m⌉ of n shards); and **sticky**
//! (a shard keeps its member unless that member left or is over its quota, so a rebalance moves
//! the fewest shards possible). The ⌈n/m⌉ quotas go to the members holding most shards, ties to
//! the lower member id; a member over quota gives up its highest shards; free shards go, in id
//! order, to the members under quota, in id order. Everything iterates ordered maps, so the same
//! calls give the same assignment on every run.
//!
//! Bounds: at most [`MEMBERS_MAX`] members, names of at most [`MEMBER_NAME_BYTES_MAX`] bytes,
//! at most [`SHARDS_MAX`] shards (the metadata's own bound).

use std::collections::{BTreeMap, BTreeSet};

use runnel_core::ShardId;
use thiserror::Error;

use super::MemberId;
use crate::metadata::SHARDS_MAX;

/// Most members a group admits.
pub const MEMBERS_MAX: usize = 1024;

/// Longest member name, in bytes.
pub const MEMBER_NAME_BYTES_MAX: usize = 255;

/// Longest session timeout a member may ask for: one hour. (The shortest is 1 ms.)
pub const SESSION_TIMEOUT_MS_MAX: u64 = 3_600_000;

/// One shard whose member changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Change {
    /// The shard.
    pub shard: ShardId,
    /// Who held it before (`None`: nobody, or the shard is new).
    pub from: Option<MemberId>,
    /// Who holds it now (`None`: nobody, or the shard is gone).
    pub to: Option<MemberId>,
}

/// Why [`Group::join`] refused a member.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum JoinError {
    /// Another member holds the name (and `previous` did not name it).
    #[error("member name {name:?} is in use by member {member}")]
    NameInUse {
        /// The name asked for.
        name: String,
        /// The member holding it.
        member: MemberId,
    },
    /// The group has [`MEMBERS_MAX`] members already.
    #[error("the group is full ({members_max} members)")]
    GroupFull {
        /// The limit.
        members_max: usize,
    },
    /// The name is empty or longer than [`MEMBER_NAME_BYTES_MAX`] bytes.
    #[error("invalid member name: {reason}")]
    InvalidName {
        /// Which rule it broke.
        reason: &'static str,
    },
    /// The session timeout is 0 or above [`SESSION_TIMEOUT_MS_MAX`].
    #[error("session timeout must be between 1 and {SESSION_TIMEOUT_MS_MAX} ms, got {session_timeout_ms}")]
    InvalidSessionTimeout {
        /// The value given.
        session_timeout_ms: u64,
    },
    /// The member id counter reached its end.
    #[error("member ids are exhausted")]
    MemberIdsExhausted,
}

/// What [`Group::members`] and [`Group::member`] tell about a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// Its id.
    pub id: MemberId,
    /// Its name, unique in the group.
    pub name: String,
    /// The shards it holds, ascending.
    pub shards: Vec<ShardId>,
    /// It is expelled when not heard from for this long, in milliseconds.
    pub session_timeout_ms: u64,
    /// When it joined, in milliseconds.
    pub joined_ms: u64,
    /// When it was last heard from (join or heartbeat), in milliseconds.
    pub last_seen_ms: u64,
}

#[derive(Debug, Clone)]
struct Member {
    name: String,
    session_timeout_ms: u64,
    joined_ms: u64,
    last_seen_ms: u64,
    shards: BTreeSet<ShardId>,
}

impl Member {
    fn deadline_ms(&self) -> u64 {
        self.last_seen_ms.saturating_add(self.session_timeout_ms)
    }
}

/// The membership and shard assignment of one subscription. See the module documentation.
#[derive(Debug, Clone)]
pub struct Group {
    members: BTreeMap<MemberId, Member>,
    /// Member names to ids: the names index.
    names: BTreeMap<String, MemberId>,
    /// Every shard of the stream and its member (`None` only while the group has no member).
    owners: BTreeMap<ShardId, Option<MemberId>>,
    /// The next member id to hand out.
    next_member_id: u64,
    generation: u64,
}

impl Group {
    /// A group without members over `shards`. Member ids are allocated from `first_member_id`
    /// up (the server seeds it from its start time, so ids from before a restart are not
    /// reused).
    ///
    /// # Panics
    ///
    /// With more than [`SHARDS_MAX`] shards, which no stream has.
    pub fn new(shards: impl IntoIterator<Item = ShardId>, first_member_id: u64) -> Group {
        let owners: BTreeMap<_, _> = shards.into_iter().map(|shard| (shard, None)).collect();
        assert!(owners.len() <= SHARDS_MAX, "{} shards", owners.len());
        Group {
            members: BTreeMap::new(),
            names: BTreeMap::new(),
            owners,
            next_member_id: first_member_id,
            generation: 0,
        }
    }

    /// A consumer named `name` joins, to be expelled if not heard from for
    /// `session_timeout_ms`. A name in use is refused unless `previous` is the id of the member
    /// holding it (a client rejoining after a reconnect): that member is then replaced, and the
    /// new one takes over its shards as they are. Returns the new member's id and the
    /// assignment changes.
    pub fn join(
        &mut self,
        name: &str,
        previous: Option<MemberId>,
        session_timeout_ms: u64,
        now_ms: u64,
    ) -> Result<(MemberId, Vec<Change>), JoinError> {
        if name.is_empty() {
            return Err(JoinError::InvalidName { reason: "empty" });
        }
        if name.len() > MEMBER_NAME_BYTES_MAX {
            return Err(JoinError::InvalidName {
                reason: "longer than 255 bytes",
            });
        }
        if !(1..=SESSION_TIMEOUT_MS_MAX).contains(&session_timeout_ms) {
            return Err(JoinError::InvalidSessionTimeout { session_timeout_ms });
        }
        let replaced = match self.names.get(name) {
            Some(&holder) if previous == Some(holder) => Some(holder),
            Some(&holder) => {
                return Err(JoinError::NameInUse {
                    name: name.to_owned(),
                    member: holder,
                })
            }
            None => None,
        };
        if replaced.is_none() && self.members.len() >= MEMBERS_MAX {
            return Err(JoinError::GroupFull {
                members_max: MEMBERS_MAX,
            });
        }
        if self.next_member_id == u64::MAX {
            return Err(JoinError::MemberIdsExhausted);
        }
        let id = MemberId(self.next_member_id);
        self.next_member_id += 1;
        let before = self.owners.clone();
        let shards = match replaced {
            Some(old) => self
                .remove_member(old)
                .map(|old| old.shards)
                .unwrap_or_default(),
            None => BTreeSet::new(),
        };
        for &shard in &shards {
            self.owners.insert(shard, Some(id));
        }
        self.members.insert(
            id,
            Member {
                name: name.to_owned(),
                session_timeout_ms,
                joined_ms: now_ms,
                last_seen_ms: now_ms,
                shards,
            },
        );
        self.names.insert(name.to_owned(), id);
        Ok((id, self.rebalance(&before)))
    }

    /// `member` was heard from at `now_ms`; false if it is not a member.
    pub fn heartbeat(&mut self, member: MemberId, now_ms: u64) -> bool {
        match self.members.get_mut(&member) {
            Some(found) => {
                found.last_seen_ms = found.last_seen_ms.max(now_ms);
                true
            }
            None => false,
        }
    }

    /// `member` leaves; its shards go to the others. No changes for an unknown member.
    pub fn leave(&mut self, member: MemberId) -> Vec<Change> {
        if !self.members.contains_key(&member) {
            return Vec::new();
        }
        let before = self.owners.clone();
        self.remove_member(member);
        self.rebalance(&before)
    }

    /// Removes the members not heard from within their session timeout at `now_ms`; returns
    /// them (ascending) and the changes.
    pub fn expire(&mut self, now_ms: u64) -> (Vec<MemberId>, Vec<Change>) {
        let expired: Vec<MemberId> = self
            .members
            .iter()
            .filter(|(_, member)| member.deadline_ms() <= now_ms)
            .map(|(&id, _)| id)
            .collect();
        if expired.is_empty() {
            return (expired, Vec::new());
        }
        let before = self.owners.clone();
        for &id in &expired {
            self.remove_member(id);
        }
        let changes = self.rebalance(&before);
        (expired, changes)
    }

    /// The earliest time a member expires, for the server's timer.
    pub fn next_deadline(&self) -> Option<u64> {
        self.members.values().map(Member::deadline_ms).min()
    }

    /// The stream's shards are now `shards`: shards gone lose their member, new ones are
    /// assigned.
    ///
    /// # Panics
    ///
    /// With more than [`SHARDS_MAX`] shards, which no stream has.
    pub fn set_shards(&mut self, shards: impl IntoIterator<Item = ShardId>) -> Vec<Change> {
        let shards: BTreeSet<ShardId> = shards.into_iter().collect();
        assert!(shards.len() <= SHARDS_MAX, "{} shards", shards.len());
        let before = self.owners.clone();
        for (shard, owner) in &before {
            if !shards.contains(shard) {
                self.owners.remove(shard);
                if let Some(owner) = owner {
                    let member = self.members.get_mut(owner).expect("owners are members");
                    member.shards.remove(shard);
                }
            }
        }
        for shard in shards {
            self.owners.entry(shard).or_insert(None);
        }
        self.rebalance(&before)
    }

    /// The shards `member` holds, ascending (none for an unknown member).
    pub fn assignment_of(&self, member: MemberId) -> Vec<ShardId> {
        self.members
            .get(&member)
            .map(|found| found.shards.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The member holding `shard`.
    pub fn owner_of(&self, shard: ShardId) -> Option<MemberId> {
        self.owners.get(&shard).copied().flatten()
    }

    /// The shards of the stream, ascending.
    pub fn shards(&self) -> impl Iterator<Item = ShardId> + '_ {
        self.owners.keys().copied()
    }

    /// The members, in id order.
    pub fn members(&self) -> impl Iterator<Item = MemberInfo> + '_ {
        self.members.iter().map(|(&id, member)| info(id, member))
    }

    /// How many members the group has.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// What the group knows about `member`.
    pub fn member(&self, member: MemberId) -> Option<MemberInfo> {
        self.members.get(&member).map(|found| info(member, found))
    }

    /// The member named `name`.
    pub fn member_named(&self, name: &str) -> Option<MemberId> {
        self.names.get(name).copied()
    }

    /// Bumped on every change of the assignment.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Checks the names index, the two views of the assignment, coverage and balance.
    ///
    /// # Panics
    ///
    /// If an invariant is broken: that is a bug.
    pub fn check_invariants(&self) {
        assert!(self.members.len() <= MEMBERS_MAX, "too many members");
        assert!(self.owners.len() <= SHARDS_MAX, "too many shards");
        assert_eq!(self.names.len(), self.members.len(), "names index size");
        for (name, id) in &self.names {
            let member = self.members.get(id).expect("the names index names members");
            assert_eq!(&member.name, name, "names index of member {id}");
        }
        let mut held = 0;
        for (&id, member) in &self.members {
            assert!(
                id.0 < self.next_member_id,
                "member {id} from past the counter"
            );
            assert!(!member.name.is_empty() && member.name.len() <= MEMBER_NAME_BYTES_MAX);
            assert!((1..=SESSION_TIMEOUT_MS_MAX).contains(&member.session_timeout_ms));
            for shard in &member.shards {
                assert_eq!(self.owners.get(shard), Some(&Some(id)), "owner of {shard}");
            }
            held += member.shards.len();
        }
        if self.members.is_empty() {
            assert!(
                self.owners.values().all(Option::is_none),
                "owner without members"
            );
        } else {
            assert_eq!(
                held,
                self.owners.len(),
                "a shard without exactly one member"
            );
            let counts = self.members.values().map(|member| member.shards.len());
            let most = counts.clone().max().unwrap_or(0);
            let least = counts.min().unwrap_or(0);
            assert!(most - least <= 1, "unbalanced: {least} to {most} shards");
        }
    }

    /// Takes `member` out of the group; its shards are left without a member.
    fn remove_member(&mut self, member: MemberId) -> Option<Member> {
        let removed = self.members.remove(&member)?;
        let named = self.names.remove(&removed.name);
        assert_eq!(named, Some(member), "names index of member {member}");
        for shard in &removed.shards {
            self.owners.insert(*shard, None);
        }
        Some(removed)
    }

    /// Restores coverage and balance with the fewest moves, then returns the changes since
    /// `before` and bumps the generation if there are any.
    fn rebalance(&mut self, before: &BTreeMap<ShardId, Option<MemberId>>) -> Vec<Change> {
        if !self.members.is_empty() {
            self.assign_balanced();
        }
        let changes = changes_between(before, &self.owners);
        if !changes.is_empty() {
            self.generation += 1;
        }
        changes
    }

    fn assign_balanced(&mut self) {
        let shard_count = self.owners.len();
        let member_count = self.members.len();
        let base = shard_count / member_count;
        let extra = shard_count % member_count;
        // The larger quotas go to the members holding most, so that the fewest shards move.
        let mut ranked: Vec<(usize, MemberId)> = self
            .members
            .iter()
            .map(|(&id, member)| (member.shards.len(), id))
            .collect();
        ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let quotas: BTreeMap<MemberId, usize> = ranked
            .iter()
            .enumerate()
            .map(|(rank, &(_, id))| (id, base + usize::from(rank < extra)))
            .collect();
        let quota_of = |id: &MemberId| *quotas.get(id).expect("every member has a quota");
        let mut free: BTreeSet<ShardId> = self
            .owners
            .iter()
            .filter(|(_, owner)| owner.is_none())
            .map(|(&shard, _)| shard)
            .collect();
        for (id, member) in &mut self.members {
            while member.shards.len() > quota_of(id) {
                let shard = member.shards.pop_last().expect("over quota holds shards");
                self.owners.insert(shard, None);
                free.insert(shard);
            }
        }
        let mut free = free.into_iter();
        for (&id, member) in &mut self.members {
            while member.shards.len() < quota_of(&id) {
                let shard = free.next().expect("quotas add up to the shard count");
                member.shards.insert(shard);
                self.owners.insert(shard, Some(id));
            }
        }
        assert!(free.next().is_none(), "a shard left without a member");
    }
}

fn info(id: MemberId, member: &Member) -> MemberInfo {
    MemberInfo {
        id,
        name: member.name.clone(),
        shards: member.shards.iter().copied().collect(),
        session_timeout_ms: member.session_timeout_ms,
        joined_ms: member.joined_ms,
        last_seen_ms: member.last_seen_ms,
    }
}

/// Every shard whose member differs between `before` and `after`, in shard order; a shard only
/// in one of them counts as held by nobody in the other.
fn changes_between(
    before: &BTreeMap<ShardId, Option<MemberId>>,
    after: &BTreeMap<ShardId, Option<MemberId>>,
) -> Vec<Change> {
    let shards: BTreeSet<ShardId> = before.keys().chain(after.keys()).copied().collect();
    shards
        .into_iter()
        .filter_map(|shard| {
            let from = before.get(&shard).copied().flatten();
            let to = after.get(&shard).copied().flatten();
            (from != to).then_some(Change { shard, from, to })
        })
        .collect()
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
