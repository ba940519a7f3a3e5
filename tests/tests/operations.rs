//! Every operation of a node, end to end: the real `runnel-server` binary on loopback, driven
//! through the SDK.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use runnel_client::{
    BufferedProducerConfig, Client, ClientError, Durability, ErrorCode, Offset, ReadFrom, Record,
    RecordId, StreamSpec,
};
use runnel_tests::server::TestServer;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Reads a whole shard from `from` to its current end; returns (record id, key, value, ts).
async fn read_shard(
    client: &Client,
    stream: &str,
    shard: runnel_client::ShardId,
    from: ReadFrom,
    until: Option<Offset>,
) -> Result<Vec<(RecordId, Option<Vec<u8>>, Vec<u8>, i64)>, ClientError> {
    let mut reader = client.reader(stream, shard, from, until)?;
    let mut out = Vec::new();
    while let Some(batch) = reader.next_batch().await? {
        for record in batch.records() {
            let (id, record) = record?;
            out.push((
                id,
                record.key().map(<[u8]>::to_vec),
                record.value().to_vec(),
                record.timestamp_ms(),
            ));
        }
    }
    Ok(out)
}

#[tokio::test]
async fn every_operation_of_a_node() {
    let temp = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(temp.path(), 2);
    let client = server.connect().await;

    // Create, list, describe.
    let info = client
        .create_stream(
            StreamSpec::new("orders", Durability::Fsync)
                .shard_count(4)
                .retention(Duration::from_secs(3600)),
        )
        .await
        .expect("create");
    assert_eq!(info.shard_count, 4);
    assert_eq!(info.shards.len(), 4);
    assert!(
        info.shards.iter().any(|s| s.core == 0) && info.shards.iter().any(|s| s.core == 1),
        "shards spread over both cores"
    );
    let exists = client
        .create_stream(StreamSpec::new("orders", Durability::Fsync))
        .await;
    assert_eq!(
        exists.err().and_then(|e| e.code()),
        Some(ErrorCode::StreamExists)
    );
    client
        .create_stream(StreamSpec::new("clicks", Durability::Memory).shard_count(1))
        .await
        .expect("create a memory stream");
    let names: Vec<String> = client
        .list_streams()
        .await
        .expect("list")
        .iter()
        .map(|s| s.name.to_string())
        .collect();
    assert_eq!(names, vec!["clicks".to_string(), "orders".to_string()]);
    let shards = client.list_shards("orders").await.expect("shards");
    assert_eq!(shards.len(), 4);

    // Append keyed records one by one and buffered; every key lands in the shard holding its hash.
    let producer = client.producer("orders").expect("producer");
    let mut sent = Vec::new();
    let start_ms = now_ms();
    for i in 0..40u32 {
        let key = format!("user-{}", i % 7).into_bytes();
        let value = format!("order-{i}").into_bytes();
        let id = producer
            .send(Record::at(value.clone(), start_ms + i64::from(i)).with_key(key.clone()))
            .await
            .expect("send");
        let shard = shards
            .iter()
            .find(|s| s.id == id.shard)
            .expect("a shard of the stream");
        assert!(
            shard.key_range.contains_key(&key),
            "record routed to the shard holding its key"
        );
        sent.push((id, key, value));
    }
    let buffered = client
        .buffered_producer(
            "orders",
            BufferedProducerConfig {
                linger_ms: 2,
                ..BufferedProducerConfig::default()
            },
        )
        .expect("buffered producer");
    let mut pending = Vec::new();
    for i in 40..1040u32 {
        let key = format!("user-{}", i % 7).into_bytes();
        let value = format!("order-{i}").into_bytes();
        pending.push((
            buffered
                .send(Record::at(value.clone(), start_ms + i64::from(i)).with_key(key.clone()))
                .await
                .expect("queue"),
            key,
            value,
        ));
    }
    buffered.close().await.expect("flush");
    for (future, key, value) in pending {
        sent.push((future.await.expect("acknowledged"), key, value));
    }

    // Read every shard back from earliest: exactly what was acknowledged, at its offset.
    let mut read_back = Vec::new();
    for shard in &shards {
        let records = read_shard(&client, "orders", shard.id, ReadFrom::Earliest, None)
            .await
            .expect("read");
        for window in records.windows(2) {
            assert_eq!(
                window[1].0.offset.0,
                window[0].0.offset.0 + 1,
                "dense offsets"
            );
        }
        read_back.extend(records);
    }
    assert_eq!(read_back.len(), sent.len());
    for (id, key, value) in &sent {
        let found = read_back
            .iter()
            .find(|r| r.0 == *id)
            .expect("every acknowledged record is readable");
        assert_eq!(
            (found.1.as_deref(), found.2.as_slice()),
            (Some(key.as_slice()), value.as_slice())
        );
    }

    // From an offset, until a bound, from a time, latest.
    let shard = shards[0].id;
    let all = read_shard(&client, "orders", shard, ReadFrom::Earliest, None)
        .await
        .expect("read");
    assert!(all.len() > 10);
    let middle = all[all.len() / 2].0.offset;
    let from_middle = read_shard(&client, "orders", shard, ReadFrom::Offset(middle), None)
        .await
        .expect("read");
    assert_eq!(from_middle.first().map(|r| r.0.offset), Some(middle));
    assert_eq!(from_middle.len(), all.len() - all.len() / 2);
    let bounded = read_shard(
        &client,
        "orders",
        shard,
        ReadFrom::Earliest,
        Some(Offset(5)),
    )
    .await
    .expect("read");
    assert_eq!(bounded.len(), 5, "until is exclusive");
    let cutoff = all[all.len() / 3].3;
    let from_time = read_shard(&client, "orders", shard, ReadFrom::Timestamp(cutoff), None)
        .await
        .expect("read");
    assert!(
        from_time.iter().all(|r| r.3 >= cutoff) || from_time.first().is_some_and(|r| r.3 <= cutoff)
    );
    assert!(from_time.iter().any(|r| r.3 == cutoff));
    let latest = read_shard(&client, "orders", shard, ReadFrom::Latest, None)
        .await
        .expect("read");
    assert!(latest.is_empty(), "nothing after latest");

    // A tailing reader sees a record appended after it started.
    let mut tail = client
        .reader(
            "clicks",
            client.list_shards("clicks").await.expect("shards")[0].id,
            ReadFrom::Latest,
            None,
        )
        .expect("reader")
        .tail(true);
    let clicks = client.producer("clicks").expect("producer");
    let appended = tokio::spawn({
        let clicks = clicks.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            clicks.send(Record::at(b"click".to_vec(), now_ms())).await
        }
    });
    let batch = tokio::time::timeout(Duration::from_secs(20), tail.next_batch())
        .await
        .expect("tail wakes")
        .expect("read")
        .expect("a batch");
    assert_eq!(
        batch
            .to_records()
            .expect("records")
            .first()
            .map(|r| r.1.value.clone()),
        Some(b"click".to_vec())
    );
    appended.await.expect("task").expect("append");

    // Trim: the start moves, reads below it are refused with the new start.
    let trimmed_to = all[3].0.offset;
    let start = client
        .trim("orders", shard, trimmed_to)
        .await
        .expect("trim");
    assert_eq!(start, trimmed_to);
    let below = read_shard(&client, "orders", shard, ReadFrom::Offset(Offset(0)), None).await;
    assert_eq!(below.err().and_then(|e| e.code()), Some(ErrorCode::Trimmed));

    // Node status.
    let status = client.node_status().await.expect("status");
    assert_eq!(status.core_count, 2);
    assert_eq!(status.cores.iter().map(|c| c.shard_count).sum::<u32>(), 5);

    // Delete, then the stream is gone.
    client.delete_stream("orders", false).await.expect("delete");
    let gone = client.describe_stream("orders").await;
    assert_eq!(
        gone.err().and_then(|e| e.code()),
        Some(ErrorCode::UnknownStream)
    );
    let unknown = read_shard(&client, "nope", shard, ReadFrom::Earliest, None).await;
    assert!(unknown.is_err());
}

/// Metadata and data survive a clean restart; appends continue at the next offsets.
#[tokio::test]
async fn a_restarted_node_keeps_streams_and_records() {
    let temp = tempfile::tempdir().expect("temp dir");
    let mut server = TestServer::start(temp.path(), 2);
    let ids = {
        let client = server.connect().await;
        client
            .create_stream(StreamSpec::new("events", Durability::Fsync).shard_count(2))
            .await
            .expect("create");
        let producer = client.producer("events").expect("producer");
        let mut ids = Vec::new();
        for i in 0..20u32 {
            ids.push(
                producer
                    .send(
                        Record::at(format!("e{i}").into_bytes(), now_ms()).with_key(vec![i as u8]),
                    )
                    .await
                    .expect("send"),
            );
        }
        ids
    };
    assert_eq!(server.stop(), Some(0), "a clean stop exits 0");
    server.restart();
    let client = server.connect().await;
    let info = client
        .describe_stream("events")
        .await
        .expect("the stream survived");
    let mut count = 0;
    for shard in &info.shards {
        count += read_shard(&client, "events", shard.id, ReadFrom::Earliest, None)
            .await
            .expect("read")
            .len();
    }
    assert_eq!(count, ids.len());
    let id = client
        .producer("events")
        .expect("producer")
        .send(Record::at(b"after".to_vec(), now_ms()).with_key(vec![0]))
        .await
        .expect("send");
    let before = ids
        .iter()
        .filter(|i| i.shard == id.shard)
        .map(|i| i.offset.0)
        .max()
        .expect("records in that shard");
    assert_eq!(
        id.offset.0,
        before + 1,
        "offsets continue densely after a restart"
    );
}

/// The metadata survives SIGKILL whether it comes from snapshots or from the command log:
/// with a snapshot every 3 commands, streams created and deleted before and after the last
/// snapshot are all exactly as they were.
#[tokio::test]
async fn metadata_snapshots_and_commands_survive_sigkill() {
    let temp = tempfile::tempdir().expect("temp dir");
    let mut server = TestServer::start_with(temp.path(), 2, &["--metadata-snapshot-interval", "3"]);
    {
        let client = server.connect().await;
        for i in 0..7 {
            client
                .create_stream(StreamSpec::new(format!("s{i}"), Durability::Fsync).shard_count(2))
                .await
                .expect("create");
        }
        client.delete_stream("s1", false).await.expect("delete");
        client.delete_stream("s5", false).await.expect("delete");
        client
            .producer("s6")
            .expect("producer")
            .send(Record::at(b"kept".to_vec(), now_ms()).with_key(b"k".to_vec()))
            .await
            .expect("send");
    }
    assert!(
        server.data_dir.join("metadata-group").join("log").exists(),
        "the metadata group's log was written"
    );
    server.restart();
    let client = server.connect().await;
    let names: Vec<String> = client
        .list_streams()
        .await
        .expect("list")
        .iter()
        .map(|s| s.name.to_string())
        .collect();
    assert_eq!(names, vec!["s0", "s2", "s3", "s4", "s6"]);
    let mut found = 0;
    for shard in client.list_shards("s6").await.expect("shards") {
        found += read_shard(&client, "s6", shard.id, ReadFrom::Earliest, None)
            .await
            .expect("read")
            .len();
    }
    assert_eq!(
        found, 1,
        "the record of a stream recovered from a snapshot is there"
    );
    client
        .create_stream(StreamSpec::new("after", Durability::Fsync))
        .await
        .expect("commands continue after a restart");
    server.restart();
    let client = server.connect().await;
    assert_eq!(client.list_streams().await.expect("list").len(), 6);
}
