//! Regression test for offsets reused after a crash under `memory` durability (found by the
//! Jepsen-style run, `RUNNEL_JEPSEN_DURABILITY=memory`, seed 3: offset `1-134` acknowledged as
//! one record, later read as another). `memory` durability acknowledges a batch before its
//! fdatasync, so SIGKILL may lose acknowledged records; that is allowed. What is not allowed
//! (ARCHITECTURE §6, contract point 2) is handing their offsets to new records: a consumer that
//! committed such an offset would skip a different record, and a reader that cached it would
//! see it change.
//!
//! Producers append to a real server with `memory` durability; it is killed with SIGKILL
//! mid-stream and restarted several times, and new records are appended after every restart.
//! Then every shard is read from its start: each acknowledged offset holds the record it was
//! acknowledged for, or lies in a lost range the reader was told about — never another record.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use runnel_client::{Client, ClientOptions, Durability, ReadFrom, Record, RecordId, StreamSpec};
use runnel_core::Offset;
use runnel_tests::server::TestServer;

const CYCLES: usize = 5;
const PRODUCERS: usize = 16;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

async fn connect(server: &TestServer) -> Client {
    let options = ClientOptions {
        ca_cert_path: Some(server.certificate()),
        request_attempts_max: 1,
        // A killed server never answers: give up on an in-flight request quickly.
        request_timeout_ms: 2_000,
        idle_timeout_ms: 2_000,
        keep_alive_interval_ms: 500,
        ..ClientOptions::default()
    };
    Client::connect(&server.url(), options)
        .await
        .expect("connect")
}

/// What the producers were told: record id → every value acknowledged at it (one, unless an
/// offset was handed out twice).
type Acknowledged = Arc<Mutex<HashMap<RecordId, Vec<Vec<u8>>>>>;

/// Runs `PRODUCERS` producers for `run` (each stops at its first failure), then `end` (a kill,
/// or nothing) while they still send.
async fn produce(
    server: &mut TestServer,
    acknowledged: &Acknowledged,
    round: usize,
    run: Duration,
    kill: bool,
) {
    let client = connect(server).await;
    let mut tasks = Vec::new();
    for producer_index in 0..PRODUCERS {
        let producer = client.producer("memory-kill").expect("producer");
        let acknowledged = Arc::clone(acknowledged);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop_here = Arc::clone(&stop);
        tasks.push((
            stop,
            tokio::spawn(async move {
                for n in 0u64.. {
                    if stop_here.load(std::sync::atomic::Ordering::Relaxed) {
                        return;
                    }
                    let value = format!("r{round}-p{producer_index}-{n}").into_bytes();
                    let key =
                        (round as u64 * 1_000_000_000 + producer_index as u64 * 1_000_000 + n)
                            .to_le_bytes()
                            .to_vec();
                    match producer
                        .send(Record::at(value.clone(), now_ms()).with_key(key))
                        .await
                    {
                        Ok(id) => {
                            let mut acknowledged = acknowledged.lock().expect("lock");
                            acknowledged.entry(id).or_default().push(value);
                        }
                        Err(_) => return,
                    }
                }
            }),
        ));
    }
    tokio::time::sleep(run).await;
    if kill {
        // Pull the plug mid-stream: what `memory` durability acknowledged and had not written
        // yet is lost with the process.
        server.kill();
    }
    for (stop, task) in tasks {
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        task.await.expect("producer task");
    }
}

#[tokio::test]
async fn memory_durability_never_gives_an_acknowledged_offset_to_another_record() {
    let temp = tempfile::tempdir().expect("temp dir");
    let mut server = TestServer::start(temp.path(), 2);
    {
        let client = connect(&server).await;
        client
            .create_stream(StreamSpec::new("memory-kill", Durability::Memory).shard_count(2))
            .await
            .expect("create");
    }
    let acknowledged: Acknowledged = Arc::default();
    for round in 0..CYCLES {
        produce(
            &mut server,
            &acknowledged,
            round,
            Duration::from_millis(700),
            true,
        )
        .await;
        server.restart();
    }
    // New records after the last crash: where would they go?
    produce(
        &mut server,
        &acknowledged,
        CYCLES,
        Duration::from_millis(500),
        false,
    )
    .await;

    let client = connect(&server).await;
    let shards = client.list_shards("memory-kill").await.expect("shards");
    let mut seen: HashMap<RecordId, Vec<u8>> = HashMap::new();
    let mut lost: HashMap<u64, Vec<Range<Offset>>> = HashMap::new();
    for shard in &shards {
        let mut reader = client
            .reader("memory-kill", shard.id, ReadFrom::Earliest, None)
            .expect("reader");
        let mut expected_offset: Option<u64> = None;
        loop {
            let batch = match reader.next_batch().await {
                Ok(Some(batch)) => batch,
                Ok(None) => break,
                Err(error) => panic!("read after restart failed: {error}"),
            };
            for record in batch.records() {
                let (id, record) = record.expect("record");
                if let Some(expected) = expected_offset {
                    // Offsets are dense, except where the reader was told of a lost range.
                    if id.offset.0 != expected {
                        assert!(
                            reader
                                .lost_ranges()
                                .iter()
                                .any(|r| r.start.0 == expected && r.end == id.offset),
                            "offsets jump from {expected} to {} in shard {} without a lost range ({:?})",
                            id.offset,
                            shard.id,
                            reader.lost_ranges()
                        );
                    }
                }
                expected_offset = Some(id.offset.0 + 1);
                let previous = seen.insert(id, record.value().to_vec());
                assert!(previous.is_none(), "record {id} read twice");
            }
        }
        lost.insert(shard.id.0, reader.lost_ranges().to_vec());
    }
    let acknowledged = acknowledged.lock().expect("lock");
    assert!(
        acknowledged.len() > 100,
        "the producers got {} acknowledgements",
        acknowledged.len()
    );
    let mut lost_acknowledged = 0usize;
    let reused: Vec<String> = acknowledged
        .iter()
        .filter(|(_, values)| values.len() > 1)
        .take(5)
        .map(|(id, values)| {
            let values: Vec<_> = values.iter().map(|v| String::from_utf8_lossy(v)).collect();
            format!("{id}: {values:?}")
        })
        .collect();
    assert!(
        reused.is_empty(),
        "offsets acknowledged for two different records, e.g. {reused:?}"
    );
    for (id, values) in acknowledged.iter() {
        let Some(value) = values.first() else {
            continue;
        };
        match seen.get(id) {
            Some(found) => assert_eq!(
                String::from_utf8_lossy(found),
                String::from_utf8_lossy(value),
                "acknowledged offset {id} holds another record"
            ),
            None => {
                let reported = lost
                    .get(&id.shard.0)
                    .is_some_and(|ranges| ranges.iter().any(|r| r.contains(&id.offset)));
                assert!(
                    reported,
                    "acknowledged record {id} is gone and no lost range covers it"
                );
                lost_acknowledged += 1;
            }
        }
    }
    let lost_ranges: usize = lost.values().map(Vec::len).sum();
    eprintln!(
        "memory kill test: {CYCLES} SIGKILL cycles, {} acknowledged, {lost_acknowledged} of them \
         lost in {lost_ranges} reported lost ranges, none reused; {} stored in total",
        acknowledged.len(),
        seen.len()
    );
}
