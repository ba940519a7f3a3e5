//! The group log on real files, on an executor of the runtime: against the in-memory store under
//! random writes, compactions and reopens; under a real member; torn tails, damage, and the
//! migration from the old metadata log.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use runnel_core::StreamName;
use runnel_replicate::group::{
    ConfState, Entry, EntryType, GroupMember, GroupStore, HardState, MemberConfig, Persist,
    StoredSnapshot,
};
use runnel_replicate::metadata::{
    encode_command, encode_snapshot, Command, Durability, MetadataState, Node, NodeId, StreamConfig,
};

use super::{migrate, GroupLog, GROUP_DIR, LOG_FILE};
use crate::error::FatalError;
use crate::metadata_log::MetadataLog;

/// Runs `test` on an executor with a fresh temporary data directory.
fn on_executor<F, Fut>(test: F)
where
    F: FnOnce(PathBuf) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().to_owned();
    runnel_segment::runtime::run("group-log-test", 1, move || test(path));
    drop(dir);
}

async fn reopen(data_dir: &Path) -> (GroupLog, GroupStore) {
    GroupLog::open(data_dir)
        .await
        .expect("open")
        .expect("the group log exists")
}

fn log_path(data_dir: &Path) -> PathBuf {
    data_dir.join(GROUP_DIR).join(LOG_FILE)
}

fn entry(index: u64, term: u64, kind: u8, data: &[u8]) -> Entry {
    Entry {
        entry_type: match kind % 3 {
            0 => EntryType::EntryNormal,
            1 => EntryType::EntryConfChange,
            _ => EntryType::EntryConfChangeV2,
        },
        term,
        index,
        context: index.to_le_bytes().to_vec().into(),
        data: data.to_vec().into(),
        ..Entry::default()
    }
}

fn persist(entries: Vec<Entry>, hard_state: Option<HardState>) -> Persist {
    Persist {
        hard_state,
        entries,
        ..Persist::default()
    }
}

fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
    HardState {
        term,
        vote,
        commit,
        ..HardState::default()
    }
}

/// One step of the property test, in raw numbers made valid against the model when run.
#[derive(Debug, Clone)]
enum Op {
    /// A write: maybe a leader's snapshot (how far past the held one, its data), entries
    /// from up to `back` before the end (a conflicting suffix), and maybe a hard state.
    Write {
        snapshot: Option<(u8, Vec<u8>)>,
        back: u8,
        entries: Vec<(u8, Vec<u8>)>,
        hard_state: Option<(u8, u8)>,
    },
    SetCommit(u8),
    Compact(u8, Vec<u8>),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let bytes = || proptest::collection::vec(any::<u8>(), 0..24);
    prop_oneof![
        6 => (
            proptest::option::weighted(0.15, (0u8..4, bytes())),
            0u8..4,
            proptest::collection::vec((any::<u8>(), bytes()), 0..5),
            proptest::option::of((any::<u8>(), any::<u8>())),
        )
            .prop_map(|(snapshot, back, entries, hard_state)| Op::Write {
                snapshot,
                back,
                entries,
                hard_state,
            }),
        2 => any::<u8>().prop_map(Op::SetCommit),
        1 => (any::<u8>(), bytes()).prop_map(|(at, data)| Op::Compact(at, data)),
        1 => Just(Op::Reopen),
    ]
}

fn last_index(store: &GroupStore) -> u64 {
    store.last_index()
}

/// A number in `[low, high]` picked by `pick`.
fn within(low: u64, high: u64, pick: u8) -> u64 {
    assert!(low <= high);
    low + u64::from(pick) % (high - low + 1)
}

/// Turns `op` into the calls it stands for, valid for `model` as raft-rs would make them:
/// committed entries are never replaced, commit indexes never go back.
fn concrete(op: &Op, model: &GroupStore) -> Option<Concrete> {
    let snapshot_index = model.snapshot().index;
    let commit = model.hard_state().commit;
    let term = model.hard_state().term.max(1);
    match op {
        Op::Write {
            snapshot,
            back,
            entries,
            hard_state: new_hard_state,
        } => {
            let mut after = model.clone();
            let snapshot = snapshot.as_ref().map(|(ahead, data)| StoredSnapshot {
                index: last_index(model).max(snapshot_index) + u64::from(*ahead),
                term,
                conf_state: ConfState {
                    voters: vec![1, 2, 3],
                    learners: vec![u64::from(*ahead) + 4],
                    ..ConfState::default()
                },
                data: data.clone(),
            });
            if let Some(snapshot) = &snapshot {
                after.install_snapshot(snapshot.clone());
            }
            let end = last_index(&after) + 1;
            let floor = after.hard_state().commit.max(after.snapshot().index) + 1;
            let first = end.saturating_sub(u64::from(*back)).max(floor).min(end);
            let entries: Vec<Entry> = entries
                .iter()
                .enumerate()
                .map(|(i, (kind, data))| {
                    entry(first + i as u64, term + u64::from(*kind % 2), *kind, data)
                })
                .collect();
            after.append(&entries);
            let hard_state = new_hard_state.map(|(vote, pick)| {
                let low = after.hard_state().commit.max(after.snapshot().index);
                hard_state(
                    term + u64::from(vote % 2),
                    u64::from(vote % 4),
                    within(low, last_index(&after), pick),
                )
            });
            Some(Concrete::Write(Persist {
                hard_state,
                snapshot,
                entries,
                send_now: Vec::new(),
            }))
        }
        Op::SetCommit(pick) => (commit < last_index(model))
            .then(|| Concrete::SetCommit(within(commit + 1, last_index(model), *pick))),
        Op::Compact(pick, data) => (snapshot_index < commit).then(|| {
            let index = within(snapshot_index + 1, commit, *pick);
            let term = model
                .entries()
                .iter()
                .find(|e| e.index == index)
                .map_or(1, |e| e.term);
            Concrete::Compact(StoredSnapshot {
                index,
                term,
                conf_state: ConfState {
                    voters: vec![1],
                    ..ConfState::default()
                },
                data: data.clone(),
            })
        }),
        Op::Reopen => Some(Concrete::Reopen),
    }
}

#[derive(Debug)]
enum Concrete {
    Write(Persist),
    SetCommit(u64),
    Compact(StoredSnapshot),
    Reopen,
}

/// Runs `ops` against a log on disk and an in-memory store given the same calls; after
/// every reopen (and at the end) the store read back must equal the model.
async fn check_against_model(data_dir: PathBuf, founding: bool, ops: Vec<Op>) {
    let mut model = if founding {
        GroupStore::founding(&[1, 2, 3])
    } else {
        GroupStore::joining()
    };
    let mut log = GroupLog::create(&data_dir, &model).await.expect("create");
    for op in ops.iter().chain([Op::Reopen].iter()) {
        let Some(call) = concrete(op, &model) else {
            continue;
        };
        match call {
            Concrete::Write(persist) => {
                log.write(&persist).await.expect("write");
                persist.write_to(&mut model);
            }
            Concrete::SetCommit(commit) => {
                log.set_commit(commit).await.expect("set_commit");
                model.set_commit(commit);
            }
            Concrete::Compact(snapshot) => {
                log.compact(&snapshot).await.expect("compact");
                model.keep_snapshot(snapshot);
            }
            Concrete::Reopen => {
                drop(log);
                let (reopened, store) = reopen(&data_dir).await;
                assert_eq!(store, model, "the store read back after {ops:?}");
                log = reopened;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Whatever raft-rs asks (snapshots, conflicting suffixes, commits, compactions), the
    /// log reads back as the in-memory store given the same calls.
    #[test]
    fn the_log_reads_back_as_the_store_given_the_same_calls(
        founding in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        on_executor(move |data_dir| check_against_model(data_dir, founding, ops));
    }
}

fn command(i: u64) -> Command {
    if i == 0 {
        return Command::RegisterNode {
            node: Node {
                id: NodeId(1),
                cores: 2,
                address: "127.0.0.1:7000".into(),
            },
        };
    }
    Command::CreateStream {
        config: StreamConfig {
            name: StreamName::new(format!("stream-{i}")).expect("a valid name"),
            shard_count: 2,
            replication_factor: 1,
            retention_ms: 3_600_000,
            durability: Durability::Fsync,
        },
        now_ms: 1_700_000_000_000 + i,
        avoid: Vec::new(),
    }
}

/// Persists every ready of `member` through `log`, as core 0 does.
async fn drive(member: &mut GroupMember, log: &mut GroupLog) {
    while let Some(persist) = member.ready() {
        log.write(&persist).await.expect("write");
        let advanced = member.persisted().expect("persisted");
        if let Some(commit) = advanced.commit {
            log.set_commit(commit).await.expect("set_commit");
        }
        if let Some(snapshot) = &advanced.compacted {
            log.compact(snapshot).await.expect("compact");
        }
    }
}

/// A group of one whose every ready went through the log restarts from the reopened log with
/// the same log and the same state, and goes on.
#[test]
fn a_member_restarted_from_the_reopened_log_has_the_same_state() {
    on_executor(|data_dir| async move {
        let config = MemberConfig {
            compact_after_entries: 4,
            ..MemberConfig::new(1)
        };
        let initial = GroupStore::founding(&[1]);
        let mut log = GroupLog::create(&data_dir, &initial).await.expect("create");
        let mut member = GroupMember::start(config, initial, 7).expect("start");
        member.campaign().expect("campaign");
        drive(&mut member, &mut log).await;
        assert!(member.is_leader());
        for i in 0..11 {
            member.propose(i, &command(i)).expect("propose");
            drive(&mut member, &mut log).await;
        }
        // Founding snapshot at 1, the leader's empty entry at 2, commands at 3..=13.
        assert_eq!(member.applied_index(), 13);
        assert!(member.store().snapshot().index >= 9, "compacted");
        let state = member.state().clone();
        let store = member.store().clone();
        drop((member, log));

        let (mut log, reopened) = reopen(&data_dir).await;
        assert_eq!(reopened, store);
        let mut member = GroupMember::start(config, reopened, 8).expect("restart");
        drive(&mut member, &mut log).await;
        assert_eq!(member.state(), &state);
        assert_eq!(
            encode_snapshot(member.state()),
            encode_snapshot(&state),
            "byte for byte"
        );

        // It goes on: a new term, one more command.
        member.campaign().expect("campaign");
        drive(&mut member, &mut log).await;
        member.propose(99, &command(99)).expect("propose");
        drive(&mut member, &mut log).await;
        assert_eq!(member.applied_index(), 15);
        let store = member.store().clone();
        drop((member, log));
        assert_eq!(reopen(&data_dir).await.1, store);
    });
}

/// A log after two writes.
struct TwoWrites {
    /// The store after the first write.
    after_first: GroupStore,
    /// The file's size after the first write.
    size_first: u64,
    /// The log file.
    path: PathBuf,
    /// Its bytes after the second.
    whole: Vec<u8>,
}

/// Creates a log and makes two writes.
async fn two_writes(data_dir: &Path) -> TwoWrites {
    let mut model = GroupStore::founding(&[1]);
    let mut log = GroupLog::create(data_dir, &model).await.expect("create");
    let first = persist(
        vec![entry(2, 2, 0, b""), entry(3, 2, 0, b"abc")],
        Some(hard_state(2, 1, 2)),
    );
    log.write(&first).await.expect("write");
    first.write_to(&mut model);
    let size_first = std::fs::metadata(log_path(data_dir)).expect("stat").len();
    let second = persist(
        vec![entry(4, 2, 2, b"defgh"), entry(5, 2, 0, b"ij")],
        Some(hard_state(2, 1, 4)),
    );
    log.write(&second).await.expect("write");
    let path = log_path(data_dir);
    let whole = std::fs::read(&path).expect("read");
    TwoWrites {
        after_first: model,
        size_first,
        path,
        whole,
    }
}

/// A final write cut anywhere (in its first frame, between its frames, in its last) or
/// followed by zeros was never synced: it is cut as a whole, and the log goes on after the
/// last complete write.
#[test]
fn an_incomplete_final_write_is_cut() {
    on_executor(|data_dir| async move {
        let TwoWrites {
            after_first,
            size_first,
            path,
            whole,
        } = two_writes(&data_dir).await;
        let mut tails: Vec<Vec<u8>> = (size_first..whole.len() as u64)
            .map(|cut| whole[..cut as usize].to_vec())
            .collect();
        let mut zeros = whole[..size_first as usize].to_vec();
        zeros.resize(size_first as usize + 4096, 0);
        tails.push(zeros);
        for bytes in tails {
            std::fs::write(&path, &bytes).expect("write the torn file");
            let (mut log, store) = reopen(&data_dir).await;
            assert_eq!(store, after_first, "cut at {}", bytes.len());
            assert_eq!(std::fs::metadata(&path).expect("stat").len(), size_first);
            // Appends go on right after the last complete write.
            log.write(&persist(
                vec![entry(4, 3, 0, b"x")],
                Some(hard_state(3, 1, 3)),
            ))
            .await
            .expect("write");
            drop(log);
            let (_, store) = reopen(&data_dir).await;
            assert_eq!(store.last_index(), 4);
            assert_eq!(store.hard_state(), &hard_state(3, 1, 3));
        }
    });
}

/// A bit flipped anywhere in the file, in the last write too, is refused as damage that
/// names the file, never cut: every byte is under a checksum.
#[test]
fn a_flipped_bit_anywhere_is_refused() {
    on_executor(|data_dir| async move {
        let TwoWrites { path, whole, .. } = two_writes(&data_dir).await;
        for position in 0..whole.len() {
            let mut bytes = whole.clone();
            bytes[position] ^= 1 << (position % 8);
            std::fs::write(&path, &bytes).expect("write the damaged file");
            match GroupLog::open(&data_dir).await {
                Err(FatalError::Corruption(message)) => {
                    assert!(message.contains(&path.display().to_string()), "{message}");
                    assert!(message.contains("at byte"), "{message}");
                }
                Err(other) => panic!("byte {position}: {other}"),
                Ok(_) => panic!("a flipped bit at byte {position} was accepted"),
            }
            // Nothing was cut.
            assert_eq!(std::fs::read(&path).expect("read"), bytes);
        }
        std::fs::write(&path, &whole).expect("restore");
        assert!(GroupLog::open(&data_dir).await.expect("open").is_some());
    });
}

/// Compaction rewrites the file around the new snapshot: it shrinks, and no temporary file
/// stays behind; a temporary file left by a crash is ignored and removed.
#[test]
fn compaction_shrinks_the_file() {
    on_executor(|data_dir| async move {
        let size = two_writes(&data_dir).await.whole.len() as u64;
        let (mut log, mut store) = reopen(&data_dir).await;
        let snapshot = StoredSnapshot {
            index: 4,
            term: 2,
            conf_state: store.snapshot().conf_state.clone(),
            data: vec![5; 8],
        };
        log.compact(&snapshot).await.expect("compact");
        store.keep_snapshot(snapshot);
        let path = log_path(&data_dir);
        assert!(std::fs::metadata(&path).expect("stat").len() < size);
        let dir = data_dir.join(GROUP_DIR);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(LOG_FILE)]);
        drop(log);
        std::fs::write(dir.join(super::LOG_FILE_TMP), b"half a rewrite").expect("write");
        assert_eq!(reopen(&data_dir).await.1, store);
        assert!(!dir.join(super::LOG_FILE_TMP).exists());
    });
}

/// No group directory: `open` says so; `create` refuses to overwrite one.
#[test]
fn open_finds_nothing_and_create_refuses_an_existing_log() {
    on_executor(|data_dir| async move {
        assert!(GroupLog::open(&data_dir).await.expect("open").is_none());
        let store = GroupStore::founding(&[1]);
        drop(GroupLog::create(&data_dir, &store).await.expect("create"));
        assert!(matches!(
            GroupLog::create(&data_dir, &store).await,
            Err(FatalError::Metadata(_))
        ));
        assert_eq!(reopen(&data_dir).await.1, store);
        assert!(!data_dir.join(super::GROUP_DIR_TMP).exists());
    });
}

/// A node whose metadata predates the group keeps it: the old log (a snapshot and commands
/// after it) becomes a group of one on the same state, and the old logs go.
#[test]
fn migration_keeps_the_old_metadata_log_state() {
    on_executor(|data_dir| async move {
        assert!(migrate(&data_dir, 1).await.expect("migrate").is_none());
        assert!(!data_dir.join("metadata").exists());
        {
            let (old, _) = MetadataLog::open(&data_dir).await.expect("open old");
            let mut state = MetadataState::new();
            let first: Vec<Vec<u8>> = (0..4).map(|i| encode_command(&command(i))).collect();
            assert_eq!(old.append_batch(&first, 0).await.expect("append"), 1);
            for i in 0..4 {
                assert!(state.apply(i + 1, &command(i)).is_ok());
            }
            old.snapshot(encode_snapshot(&state), 4, 0)
                .await
                .expect("snapshot");
            let after: Vec<Vec<u8>> = (4..7).map(|i| encode_command(&command(i))).collect();
            assert_eq!(old.append_batch(&after, 0).await.expect("append"), 5);
        }
        let (old, replayed) = MetadataLog::open(&data_dir).await.expect("reopen old");
        drop(old);
        assert_eq!(replayed.state.applied_index(), 7);

        let (mut log, store) = migrate(&data_dir, 1)
            .await
            .expect("migrate")
            .expect("migrated");
        assert_eq!(store, GroupStore::from_state(&replayed.state, &[1]));
        assert!(!data_dir.join("metadata").exists());
        assert!(!data_dir.join("metadata-snapshots").exists());
        // Migrating again finds the group and changes nothing.
        drop(log);
        let (again, store_again) = migrate(&data_dir, 1).await.expect("again").expect("log");
        assert_eq!(store_again, store);
        log = again;

        let mut member = GroupMember::start(MemberConfig::new(1), store, 3).expect("start");
        assert_eq!(member.state(), &replayed.state);
        member.campaign().expect("campaign");
        drive(&mut member, &mut log).await;
        member.propose(1, &command(7)).expect("propose");
        drive(&mut member, &mut log).await;
        // The new term's empty entry at 8, the command at 9.
        assert_eq!(member.applied_index(), 9);
        assert!(member
            .state()
            .stream(&StreamName::new("stream-7").expect("name"))
            .is_some());
    });
}

/// The log keeps room allocated past its end (its size unchanged), after creating, after
/// writes that use more than half of it, and after reopening; the blocks are really there.
#[test]
fn the_log_keeps_room_past_its_end() {
    on_executor(|data_dir| async move {
        let mut log = GroupLog::create(&data_dir, &GroupStore::founding(&[1]))
            .await
            .expect("create");
        assert!(log.has_reserve(), "reserved at creation");
        let path = log_path(&data_dir);
        let allocated = |path: &Path| {
            use std::os::unix::fs::MetadataExt;
            let metadata = std::fs::metadata(path).expect("stat");
            (metadata.len(), metadata.blocks() * 512)
        };
        let (size, blocks) = allocated(&path);
        assert!(
            blocks >= size + super::RESERVE_BYTES / 2,
            "{size} bytes in {blocks}"
        );
        // Entries of 64 KiB until more than the whole reserve was written.
        let data = vec![7u8; 64 << 10];
        let mut index = 2;
        while allocated(&path).0 < size + 2 * super::RESERVE_BYTES {
            log.write(&persist(vec![entry(index, 1, 0, &data)], None))
                .await
                .expect("write");
            assert!(
                log.has_reserve(),
                "renewed after the write of entry {index}"
            );
            index += 1;
        }
        let (size, blocks) = allocated(&path);
        assert!(
            blocks >= size + super::RESERVE_BYTES / 2,
            "{size} bytes in {blocks}"
        );
        drop(log);
        let (log, _) = reopen(&data_dir).await;
        assert!(log.has_reserve(), "reserved after reopening");
    });
}
