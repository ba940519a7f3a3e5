//! Three replicas of one shard, each a [`ShardHost`] over a real log in its own temporary
//! directory, on one real executor; a router moves the hosts' outboxes between them (the
//! messages' encoding is tested in `wire.rs`, the transport by the cluster tests). A node is
//! "down" while the router neither delivers its messages nor to it, and ticks it not.

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use runnel_core::{BatchBuilder, Limits, Record, ShardId};
use runnel_replicate::metadata::{Durability, NodeId, Placement};
use runnel_replicate::shard::Epoch;
use runnel_segment::runtime::{sleep, spawn, spawn_detached};
use runnel_segment::{DmaStorage, LogConfig, ShardLog};

use super::host::{read_entries, ShardHost};
use super::{protocol_epoch, stamped_epoch, ReplicaSet, ReplicationError};

const SHARD: ShardId = ShardId(1);

fn on_a_core<F, Fut>(test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    runnel_segment::runtime::run("replicated-test", 1, test);
}

fn set(epoch: u64, sequencer: u64, durability: Durability) -> ReplicaSet {
    let at = |node| Placement {
        node: NodeId(node),
        core: 0,
    };
    ReplicaSet {
        epoch: runnel_core::Epoch(epoch),
        sequencer: at(sequencer),
        replicas: vec![at(1), at(2), at(3)],
        durability,
    }
}

fn batch(tag: u64, records: usize) -> Arc<[u8]> {
    let mut builder = BatchBuilder::new();
    for i in 0..records {
        builder.push(Record::new(format!("batch {tag} record {i}").into_bytes()));
    }
    let bytes = builder.finish(&Limits::default()).expect("a batch");
    Arc::from(bytes.as_slice())
}

/// The cluster: hosts by node id (1..=3), their directories, the nodes down.
struct Cluster {
    dirs: Vec<tempfile::TempDir>,
    hosts: RefCell<Vec<Option<Rc<ShardHost>>>>,
    down: RefCell<HashSet<NodeId>>,
    durability: Durability,
}

async fn open(dir: &std::path::Path, node: u64, set: ReplicaSet) -> Rc<ShardHost> {
    let config = LogConfig {
        segment_bytes_max: 1 << 20,
        ..LogConfig::default()
    };
    let log = ShardLog::open(DmaStorage, dir.join("log"), config)
        .await
        .expect("a log");
    let host = ShardHost::open(SHARD, NodeId(node), 0, dir.to_path_buf(), Rc::new(log), set)
        .await
        .expect("a host");
    spawn_detached(Rc::clone(&host).run_storage());
    host
}

/// A host whose storage operations only [`ShardHost::perform_queued`] performs.
async fn open_without_storage(dir: &std::path::Path, node: u64, set: ReplicaSet) -> Rc<ShardHost> {
    let log = ShardLog::open(DmaStorage, dir.join("log"), LogConfig::default())
        .await
        .expect("a log");
    ShardHost::open(SHARD, NodeId(node), 0, dir.to_path_buf(), Rc::new(log), set)
        .await
        .expect("a host")
}

impl Cluster {
    async fn new(durability: Durability) -> Rc<Cluster> {
        let dirs: Vec<_> = (0..3)
            .map(|_| tempfile::tempdir().expect("a temporary directory"))
            .collect();
        let mut hosts = Vec::new();
        for (index, dir) in dirs.iter().enumerate() {
            hosts.push(Some(
                open(dir.path(), index as u64 + 1, set(0, 1, durability)).await,
            ));
        }
        let cluster = Rc::new(Cluster {
            dirs,
            hosts: RefCell::new(hosts),
            down: RefCell::new(HashSet::new()),
            durability,
        });
        let router = Rc::clone(&cluster);
        spawn_detached(async move { router.route().await });
        cluster
    }

    fn host(&self, node: u64) -> Rc<ShardHost> {
        let hosts = self.hosts.borrow();
        let host = hosts.get(node as usize - 1).and_then(Option::as_ref);
        Rc::clone(host.expect("a host that is open"))
    }

    /// Moves messages and ticks until every host stopped.
    async fn route(&self) {
        loop {
            let hosts: Vec<Option<Rc<ShardHost>>> = self.hosts.borrow().clone();
            if hosts.iter().flatten().all(|h| h.is_stopped()) {
                return;
            }
            for (index, host) in hosts.iter().enumerate() {
                let Some(host) = host else { continue };
                let from = NodeId(index as u64 + 1);
                if self.down.borrow().contains(&from) {
                    continue;
                }
                for to in host.outbox_nodes() {
                    let messages = host.take_outbox(to, 1024, 1 << 20);
                    let target = hosts.get(to.0 as usize - 1).and_then(Option::as_ref);
                    if let Some(target) = target.filter(|_| !self.down.borrow().contains(&to)) {
                        target.deliver(from, messages);
                    }
                }
                host.collect_reads();
                host.tick();
            }
            sleep(Duration::from_millis(2)).await;
        }
    }

    fn stop(&self) {
        for host in self.hosts.borrow().iter().flatten() {
            host.stop();
        }
    }

    async fn until(&self, what: &str, done: impl Fn() -> bool) {
        for _ in 0..5_000 {
            if done() {
                return;
            }
            sleep(Duration::from_millis(2)).await;
        }
        panic!("never: {what}");
    }
}

/// Appends `count` batches of two records through `node`'s sequencer, concurrently; returns
/// each batch's first offset, in the order appended.
async fn append_many(host: &Rc<ShardHost>, tag: u64, count: u64) -> Vec<(u64, Arc<[u8]>)> {
    let tasks: Vec<_> = (0..count)
        .map(|i| {
            let host = Rc::clone(host);
            let bytes = batch(tag * 1000 + i, 2);
            spawn(async move {
                let first = host
                    .append(Arc::clone(&bytes), 2, Duration::from_secs(30))
                    .await
                    .expect("an acknowledged append");
                (first, bytes)
            })
        })
        .collect();
    let mut acked = Vec::new();
    for task in tasks {
        acked.push(task.await);
    }
    acked
}

/// Every acknowledged batch is in `host`'s log at its offset, with its records.
async fn holds(host: &ShardHost, acked: &[(u64, Arc<[u8]>)]) {
    let entries = read_entries(host.log(), 0, u64::MAX)
        .await
        .expect("the log reads");
    for (first, bytes) in acked {
        let entry = entries
            .iter()
            .find(|e| e.first == *first)
            .unwrap_or_else(|| {
                let held: Vec<(u64, u64)> = entries.iter().map(|e| (e.first, e.count)).collect();
                panic!(
                    "offset {first} is not in the log (next {}, failure {:?}, committed {}, sequenced {:?}): {held:?}",
                    host.log().next_offset(), host.failure(), host.visible_end(), host.sequenced()
                )
            });
        // The header differs by the stamped offset and epoch; the payload (and its CRC) not.
        let payload = |b: &[u8]| b.get(runnel_core::BATCH_HEADER_LEN..).map(<[u8]>::to_vec);
        assert_eq!(payload(&entry.bytes), payload(bytes), "offset {first}");
        assert_eq!(entry.count, 2);
    }
}

/// Offsets are dense: the entries of the log follow each other from 0.
async fn dense(host: &ShardHost) -> u64 {
    let entries = read_entries(host.log(), 0, u64::MAX)
        .await
        .expect("the log reads");
    let mut next = 0;
    for entry in &entries {
        assert_eq!(entry.first, next, "a hole or an overlap at {next}");
        next = entry.end();
    }
    next
}

/// R=3 with fsync: appends through the sequencer are acknowledged, every replica learns the
/// committed offset and holds the same records; with one replica down appends continue (W=2).
#[test]
fn appends_commit_on_a_quorum_and_every_replica_holds_them() {
    on_a_core(|| async {
        let cluster = Cluster::new(Durability::Fsync).await;
        let sequencer = cluster.host(1);
        cluster
            .until("node 1 sequences", || sequencer.is_sequencing())
            .await;
        let mut acked = append_many(&sequencer, 1, 40).await;
        let end = 80;
        for node in 1..=3 {
            let host = cluster.host(node);
            cluster
                .until("every replica learns the commit", || {
                    host.visible_end().0 >= end
                })
                .await;
            holds(&host, &acked).await;
            assert_eq!(dense(&host).await, end);
        }
        cluster.down.borrow_mut().insert(NodeId(3));
        acked.extend(append_many(&sequencer, 2, 20).await);
        for node in 1..=2 {
            holds(&cluster.host(node), &acked).await;
        }
        // Node 3 comes back and catches up through NeedFrom / resends.
        cluster.down.borrow_mut().remove(&NodeId(3));
        let host = cluster.host(3);
        cluster
            .until("node 3 catches up", || host.visible_end().0 >= 120)
            .await;
        holds(&host, &acked).await;
        cluster.stop();
    });
}

/// Failover: the sequencer's node goes down; metadata names node 2 for the next epoch; it
/// recovers (sealing node 3 and itself) and every acknowledged record stays at its offset,
/// offsets dense. The old sequencer, back, acknowledges nothing more.
#[test]
fn a_new_sequencer_recovers_every_acknowledged_record() {
    on_a_core(|| async {
        let cluster = Cluster::new(Durability::Fsync).await;
        let old = cluster.host(1);
        cluster
            .until("node 1 sequences", || old.is_sequencing())
            .await;
        let mut acked = append_many(&old, 1, 30).await;
        cluster.down.borrow_mut().insert(NodeId(1));
        let new = cluster.host(2);
        for node in 1..=3 {
            cluster.host(node).update(set(1, 2, cluster.durability), 0);
        }
        cluster
            .until("node 2 recovers and sequences", || new.is_sequencing())
            .await;
        acked.extend(append_many(&new, 2, 30).await);
        holds(&new, &acked).await;
        assert_eq!(dense(&new).await, 120);
        assert!(new.sealed() >= protocol_epoch(runnel_core::Epoch(1)));
        // The old sequencer wakes up believing it still sequences epoch 0 (its metadata is
        // stale): its append is never acknowledged.
        let stale = cluster.host(1);
        stale.update(set(0, 1, cluster.durability), 0);
        cluster.down.borrow_mut().remove(&NodeId(1));
        let refused = stale.append(batch(9, 2), 2, Duration::from_secs(30)).await;
        assert!(
            refused.is_err(),
            "a deposed sequencer acknowledged {refused:?}"
        );
        let host = cluster.host(1);
        cluster
            .until("node 1 catches up as a replica", || {
                host.visible_end().0 >= 120
            })
            .await;
        holds(&host, &acked).await;
        cluster.stop();
    });
}

/// A replica restarted from its files knows its sealed epoch and committed offset again; named
/// sequencer of the epoch it already saw, it refuses to run it and asks for a new epoch.
#[test]
fn a_restarted_sequencer_does_not_run_its_epoch_again() {
    on_a_core(|| async {
        let cluster = Cluster::new(Durability::Fsync).await;
        let first = cluster.host(1);
        cluster
            .until("node 1 sequences", || first.is_sequencing())
            .await;
        let acked = append_many(&first, 1, 10).await;
        cluster
            .until("node 1 learns the commit", || first.visible_end().0 >= 20)
            .await;
        // The node stops: its host and its log go (the host's tasks end with it).
        first.stop();
        first.log().sync_all().await.expect("a sync");
        drop(first);
        let taken = cluster.hosts.borrow_mut()[0].take();
        drop(taken);
        sleep(Duration::from_millis(50)).await;
        let dir = cluster.dirs[0].path().to_path_buf();
        let again = open(&dir, 1, set(0, 1, cluster.durability)).await;
        cluster.hosts.borrow_mut()[0] = Some(Rc::clone(&again));
        assert_eq!(again.sealed(), protocol_epoch(runnel_core::Epoch(0)));
        assert!(again.needs_new_epoch());
        assert!(matches!(
            again.append(batch(5, 2), 2, Duration::from_secs(1)).await,
            Err(ReplicationError::Deposed { .. })
        ));
        holds(&again, &acked).await;
        // Metadata bumps the epoch: the same node recovers epoch 1 and continues densely.
        for node in 1..=3 {
            cluster.host(node).update(set(1, 1, cluster.durability), 0);
        }
        cluster
            .until("node 1 sequences epoch 1", || again.is_sequencing())
            .await;
        let more = append_many(&again, 2, 5).await;
        assert_eq!(more.iter().map(|(f, _)| *f).min(), Some(20));
        assert_eq!(dense(&again).await, 30);
        cluster.stop();
    });
}

/// Issue 11, Jepsen R = 3: a replica's first store from a new sequencer seals it, truncates a
/// divergent uncommitted suffix and appends; the seal's state file used to record the committed
/// offset the replica had just learnt, above the truncation still queued. A crash between the
/// two left a log whose old suffix the restored replica took for committed: readers saw it,
/// and the new sequencer's stores never matched again (`NeedFrom` forever, the shard stuck).
/// Readers, and the state file, only get a committed offset the performed operations agree
/// with (the Jepsen run's "read during the run as p2#10, elsewhere as p0#10").
#[test]
fn a_crash_between_a_seal_and_its_truncation_keeps_no_divergent_suffix_committed() {
    on_a_core(|| async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let replica_set = set(1, 1, Durability::Fsync);
        let host = open_without_storage(dir.path(), 3, replica_set.clone()).await;
        let entry = |first: u64, epoch: u64, tag: u64| runnel_replicate::shard::Entry {
            first,
            count: 1,
            epoch: Epoch(epoch),
            bytes: batch(tag, 1),
        };
        let store = |epoch: u64, entry, prev_epoch: Option<u64>, committed| {
            runnel_replicate::shard::Message::Store {
                epoch: Epoch(epoch),
                entry,
                prev_epoch: prev_epoch.map(Epoch),
                committed,
            }
        };
        // Epoch 1's sequencer (node 1) stores two entries here; the first is committed.
        host.deliver(NodeId(1), vec![store(1, entry(0, 1, 10), None, 0)]);
        host.deliver(NodeId(1), vec![store(1, entry(1, 1, 11), Some(1), 1)]);
        host.perform_queued(usize::MAX).await.expect("stored");
        assert_eq!(host.log().next_offset().0, 2);
        // Epoch 2's sequencer (node 2) adopted another log: its entry at 1 replaces this one's,
        // and offsets below 2 are committed in its log.
        host.deliver(NodeId(2), vec![store(2, entry(1, 2, 21), Some(1), 2)]);
        // The seal is performed, then the node crashes before the truncation. Until then
        // readers must not see offset 1: the log still holds epoch 1's entry there.
        host.perform_queued(1).await.expect("sealed");
        assert!(
            host.visible_end().0 <= 1,
            "readers see below {} while offset 1 holds a never-committed entry",
            host.visible_end().0
        );
        host.stop();
        host.log().sync_all().await.expect("a sync");
        drop(host);
        sleep(Duration::from_millis(50)).await;
        let again = open_without_storage(dir.path(), 3, replica_set).await;
        let entries = read_entries(again.log(), 0, u64::MAX)
            .await
            .expect("the log reads");
        let at_one = entries.iter().find(|e| e.first == 1).map(|e| e.epoch);
        assert_eq!(at_one, Some(Epoch(1)), "the old suffix is still on disk");
        assert!(
            again.visible_end().0 <= 1,
            "offset 1 holds epoch 1's entry, never committed, yet readers see below {}",
            again.visible_end().0
        );
        assert_eq!(again.sealed(), Epoch(2), "the seal survived");
        again.stop();
    });
}

/// A sequencer deposed by a newer epoch it had not heard of, then named again for a later one
/// in one metadata update (the two bumps applied before its core looked): it recovers that
/// epoch and sequences. It used to take the new epoch for the one it was deposed in and stay
/// deposed, the shard refusing appends for good.
#[test]
fn a_deposed_sequencer_named_again_in_a_later_epoch_recovers_it() {
    on_a_core(|| async {
        let cluster = Cluster::new(Durability::Fsync).await;
        let first = cluster.host(1);
        cluster
            .until("node 1 sequences", || first.is_sequencing())
            .await;
        let acked = append_many(&first, 1, 3).await;
        // Epoch 1 names node 2; node 1 does not hear of it.
        for node in [2, 3] {
            cluster.host(node).update(set(1, 2, cluster.durability), 0);
        }
        let second = cluster.host(2);
        cluster
            .until("node 2 sequences epoch 1", || second.is_sequencing())
            .await;
        let refused = first.append(batch(9, 2), 2, Duration::from_secs(5)).await;
        assert!(
            refused.is_err(),
            "a deposed sequencer acknowledged {refused:?}"
        );
        cluster
            .until("node 1 is deposed", || !first.is_sequencing())
            .await;
        // Epoch 2 names node 1 again; node 1 learns epochs 1 and 2 at once.
        for node in 1..=3 {
            cluster.host(node).update(set(2, 1, cluster.durability), 0);
        }
        cluster
            .until("node 1 sequences epoch 2", || first.is_sequencing())
            .await;
        let more = append_many(&first, 2, 2).await;
        holds(&first, &acked).await;
        holds(&first, &more).await;
        dense(&first).await;
        cluster.stop();
    });
}

#[test]
fn the_epoch_mapping_round_trips() {
    for epoch in [0, 1, 7, u64::MAX - 1] {
        let metadata = runnel_core::Epoch(epoch);
        assert_eq!(stamped_epoch(protocol_epoch(metadata)), metadata);
    }
    assert_eq!(protocol_epoch(runnel_core::Epoch(0)), Epoch(1));
}
