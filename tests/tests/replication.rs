//! Issue 11's data path on real processes: three `runnel-server` nodes on loopback, a stream
//! with three replicas (R=3, W=2, `fsync`). Appends are acknowledged once a write quorum holds
//! them, readers find exactly the acknowledged records; with one replica SIGKILLed appends
//! continue and the restarted replica catches up; with the sequencer's node SIGKILLed, once
//! metadata names a new sequencer, appends resume and every acknowledged record is still
//! there, at its offset, offsets dense.
//!
//! Needs `cargo build -p runnel-server -p runnel-cli` (the harness runs both binaries).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use runnel_client::{Client, Durability, ReadFrom, Record, RecordId, StreamSpec};
use runnel_tests::cluster::{runtime, LocalCluster};

/// Longest any wait may take before it fails the test (a liveness bound, not a measurement).
const PATIENCE: Duration = Duration::from_secs(60);

static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_cluster_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Appends `values` one request each; returns each acknowledged record's id and value.
async fn append(client: &Client, from: u32, to: u32) -> BTreeMap<RecordId, Vec<u8>> {
    let producer = client.producer("r3").expect("producer");
    let mut acknowledged = BTreeMap::new();
    for i in from..to {
        let value = format!("record-{i}").into_bytes();
        // A shard recovering, or a quorum not reached in time, answers "retry".
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let id = loop {
            match producer.send(Record::new(value.clone())).await {
                Ok(id) => break id,
                Err(error) if tokio::time::Instant::now() > deadline => {
                    panic!("append {i} never acknowledged: {error}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        acknowledged.insert(id, value);
    }
    acknowledged
}

/// Every record of the stream's one shard, from the earliest offset to the readable end.
async fn read_all(client: &Client) -> Result<BTreeMap<RecordId, Vec<u8>>, String> {
    let shards = client.list_shards("r3").await.map_err(|e| e.to_string())?;
    let shard = shards.first().ok_or("no shard")?;
    let mut reader = client
        .reader("r3", shard.id, ReadFrom::Earliest, None)
        .map_err(|e| e.to_string())?;
    let mut read = BTreeMap::new();
    while let Some(batch) = reader.next_batch().await.map_err(|e| e.to_string())? {
        for record in batch.records() {
            let (id, record) = record.map_err(|e| e.to_string())?;
            read.insert(id, record.value().to_vec());
        }
    }
    Ok(read)
}

/// Reads until every acknowledged record is there (the committed offset reaches replicas
/// within a tick), then checks: each at its offset with its value, offsets dense from 0.
async fn every_acknowledged_record_is_read(
    client: &Client,
    acknowledged: &BTreeMap<RecordId, Vec<u8>>,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let read = read_all(client).await;
        if let Ok(read) = &read {
            if acknowledged.keys().all(|id| read.contains_key(id)) {
                for (id, value) in acknowledged {
                    if read.get(id) != Some(value) {
                        return Err(format!("record {id} reads {:?}", read.get(id)));
                    }
                }
                for (expected, id) in read.keys().enumerate() {
                    if id.offset.0 != expected as u64 {
                        return Err(format!(
                            "offsets are not dense: {id} at position {expected}"
                        ));
                    }
                }
                return Ok(());
            }
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "after {PATIENCE:?}, {} acknowledged records, read: {:?}",
                acknowledged.len(),
                read.map(|r| r.len())
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The stream `r3` (one shard, R=3, fsync) and the node of its sequencer.
fn create(cluster: &mut LocalCluster, rt: &tokio::runtime::Runtime, client: &Client) -> u64 {
    let spec = StreamSpec::new("r3", Durability::Fsync)
        .shard_count(1)
        .replication_factor(3);
    let created = rt.block_on(client.create_stream(spec));
    cluster.or_panic_with_logs(created.map_err(|e| e.to_string()), "create r3");
    let shards = rt.block_on(client.list_shards("r3")).expect("list shards");
    shards.first().expect("one shard").node
}

/// Appends through the sequencer of R=3 are acknowledged and read back exactly; with one
/// replica killed appends continue (W=2); restarted, it catches up, and then the other
/// replica can die too without losing anything (the restarted one serves the quorum).
#[test]
fn appends_survive_the_loss_of_one_replica_and_it_catches_up() {
    let _serial = one_cluster_at_a_time();
    let mut cluster = LocalCluster::start(3, 1);
    cluster.wait_running(3, PATIENCE);
    let rt = runtime();
    let client = rt.block_on(cluster.client(1));
    let sequencer = create(&mut cluster, &rt, &client);
    let mut acknowledged = rt.block_on(append(&client, 0, 200));
    let checked = rt.block_on(every_acknowledged_record_is_read(&client, &acknowledged));
    cluster.or_panic_with_logs(checked, "read after appends");

    let others: Vec<u64> = cluster.ids().filter(|&k| k != sequencer).collect();
    let (first, second) = (others[0], others[1]);
    cluster.kill(first);
    acknowledged.extend(rt.block_on(append(&client, 200, 300)));
    let checked = rt.block_on(every_acknowledged_record_is_read(&client, &acknowledged));
    cluster.or_panic_with_logs(checked, "read with one replica down");

    cluster.restart(first);
    // The restarted replica must hold everything before the other one goes: appends acked
    // with `second` down need it in their quorum, and it catches up through NeedFrom first.
    cluster.kill(second);
    acknowledged.extend(rt.block_on(append(&client, 300, 350)));
    let checked = rt.block_on(every_acknowledged_record_is_read(&client, &acknowledged));
    cluster.or_panic_with_logs(checked, "read after the restarted replica caught up");
}

/// SIGKILL of the sequencer's node: once metadata names a new sequencer among the replicas, it
/// recovers, appends resume, and every acknowledged record is read at its offset, dense.
#[test]
fn the_sequencer_s_node_killed_a_new_sequencer_keeps_every_acknowledged_record() {
    let _serial = one_cluster_at_a_time();
    let mut cluster = LocalCluster::start(3, 1);
    cluster.wait_running(3, PATIENCE);
    let rt = runtime();
    let sequencer = {
        let client = rt.block_on(cluster.client(1));
        create(&mut cluster, &rt, &client)
    };
    let other = cluster
        .ids()
        .find(|&k| k != sequencer)
        .expect("another node");
    let client = rt.block_on(cluster.client(other));
    let mut acknowledged = rt.block_on(append(&client, 0, 300));
    cluster.kill(sequencer);
    let resumed = rt.block_on(async {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            // A new client each time: it learns the shard's new owner afresh.
            let fresh = cluster.client(other).await;
            let producer = fresh.producer("r3").expect("producer");
            let value = b"after the failover".to_vec();
            match producer.send(Record::new(value.clone())).await {
                Ok(id) => return Ok((id, value)),
                Err(error) if tokio::time::Instant::now() > deadline => {
                    return Err(format!("no append accepted after the failover: {error}"))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    let (id, value) = cluster.or_panic_with_logs(resumed, "append after the failover");
    acknowledged.insert(id, value);
    let reader = rt.block_on(cluster.client(other));
    let checked = rt.block_on(every_acknowledged_record_is_read(&reader, &acknowledged));
    cluster.or_panic_with_logs(checked, "read after the failover");
}
