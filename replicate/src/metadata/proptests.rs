//! Property tests over random command sequences, valid and invalid alike.
//!
//! They prove that (a) every state reached round-trips through a snapshot, and every command
//! through its encoding, to equal values and identical bytes; (b) replaying the commands logged
//! after a snapshot on the decoded snapshot reaches the same state as applying them all, byte
//! for byte; (c) after every step the invariants hold, a refused command changed nothing but
//! the applied index, no stream, shard or subscription id is ever handed out twice, and a live
//! subscription's committed progress never moves back or disappears; (d) the decoders never
//! panic, refuse any single changed byte and any truncation, and whatever they accept after a
//! re-signed mutation is canonical (re-encodes to the same bytes) and safe to apply to; (e)
//! `check` agrees with `apply` on every command of every sequence: same acceptance, same error,
//! same new shards, and it changes nothing.
//!
//! proptest prints the failing sequence, shrinks it, and records its seed under
//! `replicate/proptest-regressions/` so the next run replays it first.

use std::collections::BTreeSet;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use runnel_core::{Epoch, Offset, ShardId, StreamName};

use super::testing::{name, resign, subscription_name};
use super::{
    decode_command, decode_snapshot, encode_command, encode_snapshot, Applied, Command, Durability,
    MetadataError, MetadataState, Node, NodeId, Placement, ProgressCommit, Shard, StreamConfig,
    SubscriptionConfig, SubscriptionId, SubscriptionStart, ACK_TIMEOUT_MS_MAX,
    MAX_UNACKED_RECORDS_LIMIT, SHARD_COUNT_MAX,
};

/// Names the sequences draw from: few, so that creates collide and deletes hit.
const NAMES: [&str; 4] = ["orders", "clicks", "a.b-c_d", "9z"];

/// Subscription names the sequences draw from, for the same reason.
const SUBSCRIPTION_NAMES: [&str; 3] = ["billing", "audit", "x.y-z_0"];

/// A command before it meets a state: shard picks become real ids (or missing ones) then.
#[derive(Debug, Clone)]
enum Op {
    Register {
        node: u64,
        cores: u32,
        bad_address: bool,
    },
    Create {
        name: usize,
        shard_count: u32,
        replication_factor: u8,
        retention_ms: u64,
        memory: bool,
        now_ms: u64,
        /// Node ids (1 to 5) the create avoids.
        avoid: Vec<u64>,
    },
    Remove {
        node: u64,
    },
    Delete {
        name: usize,
        force: bool,
    },
    Split {
        pick: usize,
        now_ms: u64,
    },
    Merge {
        pick: usize,
        adjacent: bool,
        now_ms: u64,
    },
    Bump {
        pick: usize,
    },
    Subscribe {
        name: usize,
        /// Picks a live stream, or one time in eight any of [`NAMES`].
        stream: usize,
        ack_timeout_ms: u64,
        max_unacked_records: u32,
        start: SubscriptionStart,
        now_ms: u64,
    },
    Unsubscribe {
        name: usize,
    },
    Commit {
        subscription: usize,
        shard: usize,
        offset: u64,
    },
    /// A progress batch of up to 4 commits (0: the refused empty batch).
    CommitBatch {
        commits: Vec<(usize, usize, u64)>,
    },
}

fn register_strategy() -> impl Strategy<Value = Op> {
    let cores = prop_oneof![1 => Just(0u32), 6 => 1u32..=3];
    (1u64..=4, cores, proptest::bool::weighted(0.05)).prop_map(|(node, cores, bad_address)| {
        Op::Register {
            node,
            cores,
            bad_address,
        }
    })
}

fn create_strategy() -> impl Strategy<Value = Op> {
    let shard_count = prop_oneof![
        1 => Just(0u32),
        8 => 1u32..=4,
        1 => Just(SHARD_COUNT_MAX + 1),
    ];
    let replication_factor = prop_oneof![1 => Just(0u8), 9 => 1u8..=3];
    let retention_ms = prop_oneof![1 => Just(0u64), 9 => 1u64..];
    (
        0..NAMES.len(),
        shard_count,
        replication_factor,
        retention_ms,
        any::<bool>(),
        any::<u64>(),
        prop_oneof![3 => Just(Vec::new()), 1 => vec(1u64..=5, 1..4)],
    )
        .prop_map(
            |(name, shard_count, replication_factor, retention_ms, memory, now_ms, avoid)| {
                Op::Create {
                    name,
                    shard_count,
                    replication_factor,
                    retention_ms,
                    memory,
                    now_ms,
                    avoid,
                }
            },
        )
}

/// A subscription creation, now and then with a setting out of range or on a stream that may
/// not exist.
fn subscribe_strategy() -> impl Strategy<Value = Op> {
    let ack_timeout_ms = prop_oneof![
        1 => Just(0u64),
        38 => 1u64..=ACK_TIMEOUT_MS_MAX,
        1 => (ACK_TIMEOUT_MS_MAX + 1)..,
    ];
    let max_unacked_records = prop_oneof![
        1 => Just(0u32),
        38 => 1u32..=MAX_UNACKED_RECORDS_LIMIT,
        1 => (MAX_UNACKED_RECORDS_LIMIT + 1)..,
    ];
    let start = prop_oneof![
        Just(SubscriptionStart::Earliest),
        Just(SubscriptionStart::Latest),
        any::<i64>().prop_map(SubscriptionStart::Timestamp),
    ];
    (
        0..SUBSCRIPTION_NAMES.len(),
        any::<usize>(),
        ack_timeout_ms,
        max_unacked_records,
        start,
        any::<u64>(),
    )
        .prop_map(
            |(name, stream, ack_timeout_ms, max_unacked_records, start, now_ms)| Op::Subscribe {
                name,
                stream,
                ack_timeout_ms,
                max_unacked_records,
                start,
                now_ms,
            },
        )
}

/// A commit: small offsets, so that commits often arrive below the committed one.
fn commit_strategy() -> impl Strategy<Value = Op> {
    let offset = prop_oneof![9 => 0u64..16, 1 => any::<u64>()];
    (any::<usize>(), any::<usize>(), offset).prop_map(|(subscription, shard, offset)| Op::Commit {
        subscription,
        shard,
        offset,
    })
}

fn commit_batch_strategy() -> impl Strategy<Value = Op> {
    let offset = prop_oneof![9 => 0u64..16, 1 => any::<u64>()];
    vec((any::<usize>(), any::<usize>(), offset), 0..=4)
        .prop_map(|commits| Op::CommitBatch { commits })
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => commit_batch_strategy(),
        2 => register_strategy(),
        1 => (1u64..=5).prop_map(|node| Op::Remove { node }),
        3 => create_strategy(),
        1 => (0..NAMES.len(), any::<bool>()).prop_map(|(name, force)| Op::Delete { name, force }),
        4 => (any::<usize>(), any::<u64>()).prop_map(|(pick, now_ms)| Op::Split { pick, now_ms }),
        3 => (any::<usize>(), proptest::bool::weighted(0.8), any::<u64>())
            .prop_map(|(pick, adjacent, now_ms)| Op::Merge { pick, adjacent, now_ms }),
        1 => any::<usize>().prop_map(|pick| Op::Bump { pick }),
        3 => subscribe_strategy(),
        1 => (0..SUBSCRIPTION_NAMES.len()).prop_map(|name| Op::Unsubscribe { name }),
        4 => commit_strategy(),
    ]
}

/// A sequence of up to `len_max` commands. It usually opens with a few registrations,
/// stream creations and subscriptions, so that most later commands meet shards and
/// subscriptions to act on.
fn ops_strategy(len_max: usize) -> impl Strategy<Value = Vec<Op>> {
    (
        vec(register_strategy(), 1..4),
        vec(create_strategy(), 1..4),
        vec(subscribe_strategy(), 1..4),
        vec(op_strategy(), 0..len_max),
    )
        .prop_map(|(registers, creates, subscribes, rest)| {
            registers
                .into_iter()
                .chain(creates)
                .chain(subscribes)
                .chain(rest)
                .collect()
        })
}

/// A shard id for `pick`: usually a live shard, one time in eight (or when none lives) an id
/// that may not exist (never made, or deleted with its stream).
fn pick_shard(state: &MetadataState, pick: usize) -> ShardId {
    let live: Vec<ShardId> = state.shards().map(|shard| shard.id).collect();
    match live.get(pick % live.len().max(1)) {
        Some(&id) if !pick.is_multiple_of(8) => id,
        _ => ShardId((pick / 8) as u64 % (state.next_shard_id + 2)),
    }
}

/// A stream name for `pick`: usually a live stream, one time in eight (or when none lives) any
/// of [`NAMES`], which may not exist.
fn pick_stream(state: &MetadataState, pick: usize) -> StreamName {
    let live: Vec<&StreamName> = state.streams().map(|stream| &stream.config.name).collect();
    match live.get(pick % live.len().max(1)) {
        Some(&found) if !pick.is_multiple_of(8) => found.clone(),
        _ => name(NAMES[(pick / 8) % NAMES.len()]),
    }
}

/// A commit for `subscription` and `shard` picks: usually a live subscription and a shard of its
/// stream; one time in eight each, an id that may not exist or any shard id (maybe of another
/// stream, maybe missing).
fn pick_commit(
    state: &MetadataState,
    subscription: usize,
    shard: usize,
) -> (SubscriptionId, ShardId) {
    let live: Vec<_> = state.subscriptions().collect();
    let chosen = live
        .get(subscription % live.len().max(1))
        .filter(|_| !subscription.is_multiple_of(8));
    let Some(chosen) = chosen else {
        let id = (subscription / 8) as u64 % (state.next_subscription_id + 2);
        return (SubscriptionId(id), pick_shard(state, shard));
    };
    let own: Vec<ShardId> = state
        .shards()
        .filter(|found| found.stream == chosen.stream)
        .map(|found| found.id)
        .collect();
    match own.get(shard % own.len().max(1)) {
        Some(&id) if !shard.is_multiple_of(8) => (chosen.id, id),
        _ => (chosen.id, pick_shard(state, shard / 8)),
    }
}

fn to_command(op: &Op, state: &MetadataState) -> Command {
    match *op {
        Op::Register {
            node,
            cores,
            bad_address,
        } => Command::RegisterNode {
            node: Node {
                id: NodeId(node),
                cores,
                address: if bad_address {
                    "no port".to_string()
                } else {
                    format!("node-{node}:{}", 7000 + cores)
                },
            },
        },
        Op::Create {
            name: stream,
            shard_count,
            replication_factor,
            retention_ms,
            memory,
            now_ms,
            ref avoid,
        } => Command::CreateStream {
            config: StreamConfig {
                name: name(NAMES[stream]),
                shard_count,
                replication_factor,
                retention_ms,
                durability: if memory {
                    Durability::Memory
                } else {
                    Durability::Fsync
                },
            },
            now_ms,
            avoid: avoid.iter().map(|&id| NodeId(id)).collect(),
        },
        Op::Remove { node } => Command::RemoveNode { node: NodeId(node) },
        Op::Delete {
            name: stream,
            force,
        } => Command::DeleteStream {
            name: name(NAMES[stream]),
            force,
        },
        Op::Split { pick, now_ms } => Command::SplitShard {
            shard: pick_shard(state, pick),
            now_ms,
        },
        Op::Merge {
            pick,
            adjacent,
            now_ms,
        } => {
            let pairs: Vec<(ShardId, ShardId)> = state
                .streams()
                .flat_map(|stream| {
                    let open = state.open_shards(&stream.config.name).unwrap_or_default();
                    open.windows(2)
                        .map(|pair| (pair[0].id, pair[1].id))
                        .collect::<Vec<_>>()
                })
                .collect();
            let (left, right) = match pairs.get(pick % pairs.len().max(1)) {
                // Either order: the state sorts parents by key.
                Some(&(low, high)) if adjacent => {
                    if pick % 2 == 0 {
                        (low, high)
                    } else {
                        (high, low)
                    }
                }
                _ => (pick_shard(state, pick), pick_shard(state, pick / 3)),
            };
            Command::MergeShards {
                left,
                right,
                now_ms,
            }
        }
        Op::Bump { pick } => {
            let shard = pick_shard(state, pick);
            let found = state.shard(shard);
            if pick % 11 == 0 {
                return Command::BumpEpochUnconditionally { shard };
            }
            // Mostly a bump that applies: the current epoch and one of the replicas; now and
            // then a stale epoch or a placement that holds no replica.
            let epoch = found.map_or(Epoch(0), |found| found.epoch);
            let from = if pick % 5 == 0 {
                Epoch(epoch.0.wrapping_sub(1))
            } else {
                epoch
            };
            let sequencer = found
                .and_then(|found| found.replicas.get((pick / 3) % found.replicas.len().max(1)))
                .copied()
                .filter(|_| pick % 7 != 0)
                .unwrap_or(Placement {
                    node: NodeId((pick % 5) as u64),
                    core: 0,
                });
            Command::BumpEpoch {
                shard,
                from,
                sequencer,
            }
        }
        Op::Subscribe {
            name: subscription,
            stream,
            ack_timeout_ms,
            max_unacked_records,
            start,
            now_ms,
        } => Command::CreateSubscription {
            config: SubscriptionConfig {
                ack_timeout_ms,
                max_unacked_records,
                start,
                ..SubscriptionConfig::new(
                    subscription_name(SUBSCRIPTION_NAMES[subscription]),
                    pick_stream(state, stream),
                )
            },
            now_ms,
        },
        Op::Unsubscribe { name: subscription } => Command::DeleteSubscription {
            name: subscription_name(SUBSCRIPTION_NAMES[subscription]),
        },
        Op::Commit {
            subscription,
            shard,
            offset,
        } => {
            let (subscription, shard) = pick_commit(state, subscription, shard);
            Command::CommitProgress {
                subscription,
                shard,
                offset: Offset(offset),
            }
        }
        Op::CommitBatch { ref commits } => Command::CommitProgressBatch {
            commits: commits
                .iter()
                .map(|&(subscription, shard, offset)| {
                    let (subscription, shard) = pick_commit(state, subscription, shard);
                    ProgressCommit {
                        subscription,
                        shard,
                        offset: Offset(offset),
                    }
                })
                .collect(),
        },
    }
}

/// A sequence applied: the commands, and the state after each prefix (`states[k]` after `k`
/// commands).
struct Run {
    commands: Vec<Command>,
    states: Vec<MetadataState>,
}

impl Run {
    fn last(&self) -> &MetadataState {
        self.states
            .last()
            .expect("the initial state is always there")
    }
}

/// Applies `ops` at indexes 1, 2, …, checking property (c) after every step.
fn run(ops: &[Op]) -> Result<Run, TestCaseError> {
    let mut state = MetadataState::new();
    let mut states = vec![state.clone()];
    let mut commands = Vec::with_capacity(ops.len());
    let mut streams_made = BTreeSet::new();
    let mut shards_made = BTreeSet::new();
    let mut subscriptions_made = BTreeSet::new();
    for (position, op) in ops.iter().enumerate() {
        let command = to_command(op, &state);
        let index = position as u64 + 1;
        let before = state.clone();
        let checked = state.check(index, &command);
        prop_assert_eq!(&state, &before, "check of {:?} changed the state", command);
        let applied = state.apply(index, &command);
        check_agrees(&checked, &applied)?;
        let mut new_shards = Vec::new();
        match applied {
            Ok(Applied::StreamCreated { stream, shards }) => {
                prop_assert!(
                    streams_made.insert(stream.id),
                    "stream id {} reused",
                    stream.id
                );
                new_shards.extend(shards.iter().map(|shard| shard.id));
            }
            Ok(Applied::ShardSplit { children, .. }) => {
                new_shards.extend(children.iter().map(|shard| shard.id));
            }
            Ok(Applied::ShardsMerged { child, .. }) => new_shards.push(child.id),
            Ok(Applied::SubscriptionCreated { subscription }) => {
                prop_assert!(
                    subscriptions_made.insert(subscription.id),
                    "subscription id {} reused",
                    subscription.id
                );
            }
            Ok(Applied::ProgressCommitted {
                subscription,
                shard,
                committed,
                previous,
            }) => {
                prop_assert!(previous <= Some(committed));
                let now = state
                    .subscription_by_id(subscription)
                    .and_then(|found| found.committed.get(&shard));
                prop_assert_eq!(now, Some(&committed));
            }
            Ok(Applied::ProgressBatchCommitted { taken, skipped }) => {
                // The batch did exactly what its commits would have done one by one, the
                // refused ones skipped.
                let Command::CommitProgressBatch { commits } = &command else {
                    return Err(TestCaseError::fail("a batch result from another command"));
                };
                let mut one_by_one = before.clone();
                let mut refused = 0;
                for commit in commits {
                    let single = Command::CommitProgress {
                        subscription: commit.subscription,
                        shard: commit.shard,
                        offset: commit.offset,
                    };
                    if one_by_one
                        .apply(one_by_one.applied_index() + 1, &single)
                        .is_err()
                    {
                        refused += 1;
                    }
                }
                one_by_one.applied_index = index;
                prop_assert_eq!(taken + skipped.len(), commits.len());
                prop_assert_eq!(skipped.len(), refused);
                prop_assert_eq!(&state, &one_by_one, "batch {:?}", command);
            }
            Ok(_) => {}
            Err(error) => {
                prop_assert!(error.is_rejection(), "{}", error);
                let mut expected = before.clone();
                expected.applied_index = index;
                prop_assert_eq!(&state, &expected, "refused {:?} changed the state", command);
            }
        }
        for shard in new_shards {
            prop_assert!(shards_made.insert(shard), "shard id {} reused", shard);
        }
        prop_assert_eq!(state.applied_index(), index);
        if let Err(broken) = state.check_invariants() {
            return Err(TestCaseError::fail(format!("after {command:?}: {broken}")));
        }
        // Every live id was handed out by a command, once.
        prop_assert!(state
            .streams()
            .all(|stream| streams_made.contains(&stream.id)));
        prop_assert!(state.shards().all(|shard| shards_made.contains(&shard.id)));
        prop_assert!(state
            .subscriptions()
            .all(|subscription| subscriptions_made.contains(&subscription.id)));
        // Committed progress of a live subscription never moves back or disappears.
        for subscription in state.subscriptions() {
            if let Some(earlier) = before.subscription_by_id(subscription.id) {
                for (shard, offset) in &earlier.committed {
                    prop_assert!(
                        subscription.committed.get(shard) >= Some(offset),
                        "progress of subscription {} on shard {} moved back",
                        subscription.id,
                        shard
                    );
                }
            }
        }
        commands.push(command);
        states.push(state.clone());
    }
    Ok(Run { commands, states })
}

/// Property (e): `check` accepts exactly what `apply` accepts, refuses with the same error,
/// and names the shards `apply` creates, as it creates them.
fn check_agrees(
    checked: &Result<Vec<Shard>, MetadataError>,
    applied: &Result<Applied, MetadataError>,
) -> Result<(), TestCaseError> {
    let created: Result<Vec<Shard>, MetadataError> = match applied {
        Ok(Applied::StreamCreated { shards, .. }) => Ok(shards.clone()),
        Ok(Applied::ShardSplit { children, .. }) => Ok(children.clone()),
        Ok(Applied::ShardsMerged { child, .. }) => Ok(vec![child.clone()]),
        Ok(_) => Ok(Vec::new()),
        Err(error) => Err(error.clone()),
    };
    prop_assert_eq!(checked, &created, "check and apply disagree");
    Ok(())
}

/// Applies `commands` to `state` at the indexes after its applied index, ignoring refusals.
fn replay(state: &mut MetadataState, commands: &[Command]) {
    for command in commands {
        let index = state.applied_index().saturating_add(1);
        let _ = state.apply(index, command);
    }
}

/// Xors `edits` into the body of a frame (never its header or CRC) and re-signs it.
fn mutate_body(bytes: &[u8], edits: &[(Index, u8)]) -> Vec<u8> {
    let mut changed = bytes.to_vec();
    let body_len = changed.len() - super::codec::FRAME_OVERHEAD_LEN;
    for (at, xor) in edits {
        if body_len > 0 {
            changed[super::codec::FRAME_HEADER_LEN + at.index(body_len)] ^= xor;
        }
    }
    resign(&mut changed);
    changed
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// (a) and (c).
    #[test]
    fn states_and_commands_round_trip_byte_for_byte(ops in ops_strategy(48)) {
        let run = run(&ops)?;
        for command in &run.commands {
            let bytes = encode_command(command);
            let decoded = decode_command(&bytes);
            prop_assert_eq!(decoded.as_ref(), Ok(command));
            prop_assert_eq!(encode_command(command), bytes);
        }
        for state in &run.states {
            let bytes = encode_snapshot(state);
            let decoded = decode_snapshot(&bytes);
            prop_assert_eq!(decoded.as_ref(), Ok(state));
            if let Ok(decoded) = decoded {
                prop_assert_eq!(encode_snapshot(&decoded), bytes);
            }
        }
    }

    /// (b): a node that restores the snapshot taken at any index k and replays the log's
    /// later entries (decoded from their bytes) reaches the same state as one that applied
    /// everything.
    #[test]
    fn replay_after_any_snapshot_reaches_the_same_state(ops in ops_strategy(48)) {
        let run = run(&ops)?;
        let log: Vec<Vec<u8>> = run.commands.iter().map(encode_command).collect();
        let final_bytes = encode_snapshot(run.last());
        for (k, state) in run.states.iter().enumerate() {
            let mut restored = decode_snapshot(&encode_snapshot(state))?;
            prop_assert_eq!(restored.applied_index(), k as u64);
            let later: Vec<Command> = log[k..]
                .iter()
                .map(|bytes| decode_command(bytes))
                .collect::<Result<_, _>>()?;
            replay(&mut restored, &later);
            prop_assert_eq!(&restored, run.last());
            prop_assert_eq!(encode_snapshot(&restored), final_bytes.clone());
        }
    }

    /// (d): every single-byte change and every truncation of a command or snapshot is refused.
    #[test]
    fn any_changed_byte_or_truncation_is_refused(
        ops in ops_strategy(24),
        xor in 1u8..=255,
    ) {
        let run = run(&ops)?;
        for command in &run.commands {
            let bytes = encode_command(command);
            for at in 0..bytes.len() {
                let mut changed = bytes.clone();
                changed[at] ^= xor;
                prop_assert!(decode_command(&changed).is_err(), "byte {} of {:?}", at, command);
            }
            for len in 0..bytes.len() {
                prop_assert!(decode_command(&bytes[..len]).is_err());
            }
        }
        let bytes = encode_snapshot(run.last());
        for at in 0..bytes.len() {
            let mut changed = bytes.clone();
            changed[at] ^= xor;
            prop_assert!(decode_snapshot(&changed).is_err(), "snapshot byte {}", at);
        }
        for len in 0..bytes.len() {
            prop_assert!(decode_snapshot(&bytes[..len]).is_err());
        }
    }

    /// (d): arbitrary bytes, raw or framed with a valid header and CRC, never make a decoder
    /// panic.
    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(
        bytes in vec(any::<u8>(), 0..300),
        version in prop_oneof![Just(1u8), any::<u8>()],
    ) {
        let _ = decode_command(&bytes);
        let _ = decode_snapshot(&bytes);
        for magic in [b"RNLC", b"RNLM"] {
            let mut framed = magic.to_vec();
            framed.extend_from_slice(&[version, 1, 0, 0, 0, 0, 0, 0]);
            framed.extend_from_slice(&bytes);
            framed.extend_from_slice(&[0; 4]);
            resign(&mut framed);
            let _ = decode_command(&framed);
            let _ = decode_snapshot(&framed);
        }
    }

    /// (d): past the checksum, whatever a decoder accepts is canonical (it re-encodes to the
    /// very bytes given) and a decoded snapshot is a state that commands can be applied to.
    #[test]
    fn accepted_mutations_are_canonical_and_safe(
        ops in ops_strategy(24),
        edits in vec((any::<Index>(), 1u8..=255), 1..4),
    ) {
        let run = run(&ops)?;
        for command in &run.commands {
            let changed = mutate_body(&encode_command(command), &edits);
            if let Ok(decoded) = decode_command(&changed) {
                prop_assert_eq!(encode_command(&decoded), changed);
            }
        }
        let changed = mutate_body(&encode_snapshot(run.last()), &edits);
        if let Ok(mut decoded) = decode_snapshot(&changed) {
            prop_assert_eq!(encode_snapshot(&decoded), changed);
            replay(&mut decoded, &run.commands);
            prop_assert!(decoded.check_invariants().is_ok());
        }
    }
}
