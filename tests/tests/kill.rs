//! Kill test: while producers append with `fsync` durability, the server is killed with
//! SIGKILL and restarted, several times. A checker then verifies that every acknowledged
//! record is readable exactly once at its acknowledged offset, and that offsets are dense.
//!
//! SIGKILL loses what the process held in memory, not what it had handed to the kernel, so
//! this checks the server's process-crash contract (acknowledged means stored and recovered).
//! What a power loss does to unsynced writes is the subject of the storage engine's crash
//! tests on the fault-injecting storage (`segment/tests/crash.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runnel_client::{Durability, ReadFrom, Record, RecordId, StreamSpec};
use runnel_tests::sdk::{connect_impatient, now_ms};
use runnel_tests::server::TestServer;

const CYCLES: usize = 4;
const PRODUCERS: usize = 16;

/// What the producers were told: record id → value.
type Acknowledged = Arc<Mutex<HashMap<RecordId, Vec<u8>>>>;

#[tokio::test]
async fn acknowledged_records_survive_sigkill() {
    let temp = tempfile::tempdir().expect("temp dir");
    let mut server = TestServer::start(temp.path(), 2);
    {
        let client = connect_impatient(&server).await;
        client
            .create_stream(StreamSpec::new("kill", Durability::Fsync).shard_count(4))
            .await
            .expect("create");
    }
    let acknowledged: Acknowledged = Arc::default();
    let mut failed_or_unknown = 0usize;
    let mut sequence = 0u64;
    for cycle in 0..CYCLES {
        let client = connect_impatient(&server).await;
        let mut tasks = Vec::new();
        for producer_index in 0..PRODUCERS {
            let producer = client.producer("kill").expect("producer");
            let acknowledged = Arc::clone(&acknowledged);
            let first = sequence + producer_index as u64 * 1_000_000;
            tasks.push(tokio::spawn(async move {
                let mut failures = 0usize;
                for n in 0..u64::MAX {
                    let value = format!("c{cycle}-p{producer_index}-{}", first + n).into_bytes();
                    let key = (first + n).to_le_bytes().to_vec();
                    match producer
                        .send(Record::at(value.clone(), now_ms()).with_key(key))
                        .await
                    {
                        Ok(id) => {
                            acknowledged.lock().expect("lock").insert(id, value);
                        }
                        Err(_) => {
                            failures += 1;
                            return failures;
                        }
                    }
                }
                failures
            }));
        }
        sequence += 10_000_000;
        // Let them write for a while, then pull the plug mid-stream.
        tokio::time::sleep(Duration::from_millis(700)).await;
        server.kill();
        for task in tasks {
            failed_or_unknown += task.await.expect("producer task");
        }
        drop(client);
        server.restart();
    }
    let client = connect_impatient(&server).await;
    let shards = client.list_shards("kill").await.expect("shards");
    let mut seen: HashMap<RecordId, Vec<u8>> = HashMap::new();
    for shard in &shards {
        let mut reader = client
            .reader("kill", shard.id, ReadFrom::Earliest, None)
            .expect("reader");
        let mut expected_offset = None;
        loop {
            let batch = match reader.next_batch().await {
                Ok(Some(batch)) => batch,
                Ok(None) => break,
                Err(error) => panic!("read after restart failed: {error}"),
            };
            for record in batch.records() {
                let (id, record) = record.expect("record");
                if let Some(expected) = expected_offset {
                    assert_eq!(
                        id.offset.0, expected,
                        "offsets are dense in shard {}",
                        shard.id
                    );
                }
                expected_offset = Some(id.offset.0 + 1);
                let previous = seen.insert(id, record.value().to_vec());
                assert!(previous.is_none(), "record {id} read twice");
            }
        }
    }
    let acknowledged = acknowledged.lock().expect("lock");
    assert!(
        acknowledged.len() > 100,
        "the producers got {} acknowledgements",
        acknowledged.len()
    );
    for (id, value) in acknowledged.iter() {
        match seen.get(id) {
            Some(found) => assert_eq!(found, value, "record {id} holds what was acknowledged"),
            None => panic!("acknowledged record {id} was lost"),
        }
    }
    // Each value was sent once, so it may appear at most once.
    let mut values: Vec<&Vec<u8>> = seen.values().collect();
    values.sort();
    values.dedup();
    assert_eq!(values.len(), seen.len(), "no value is stored twice");
    eprintln!(
        "kill test: {CYCLES} SIGKILL cycles, {} acknowledged records all readable, {} stored in total, {failed_or_unknown} sends failed or unknown at a kill",
        acknowledged.len(),
        seen.len()
    );
}
