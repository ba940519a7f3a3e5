//! How a node starts on a data directory, end to end against the real binary: one process at a
//! time (the lock), one node id (the identity file), any core count (shards re-placed), and
//! fail-stop with the right exit code when a non-zero core cannot start.

use std::path::{Path, PathBuf};

use runnel_client::{Client, Durability, Record, StreamSpec};
use runnel_tests::sdk::read_all_values;
use runnel_tests::server::{free_ports, run_to_exit, TestServer};

/// Appends `count` keyed records to `stream` (keys spread over its shards); returns their values.
async fn append(client: &Client, stream: &str, prefix: &str, count: u32) -> Vec<Vec<u8>> {
    let producer = client.producer(stream).expect("producer");
    let mut values = Vec::new();
    for i in 0..count {
        let value = format!("{prefix}-{i}").into_bytes();
        producer
            .send(
                Record::at(value.clone(), 1_700_000_000_000 + i64::from(i))
                    .with_key(format!("key-{i}").into_bytes()),
            )
            .await
            .expect("append");
        values.push(value);
    }
    values
}

/// Regression (issue 8, item 2): a second `runnel-server` on the same data directory started,
/// acknowledged appends into the same files, and acknowledged records were lost. Now it exits
/// at once with code 7, naming the directory and the holder's pid, and the first one serves on.
#[tokio::test]
async fn a_second_process_on_the_same_data_directory_is_refused() {
    let temp = tempfile::tempdir().expect("temp dir");
    let mut first = TestServer::start(temp.path(), 1);
    let client = first.connect().await;
    client
        .create_stream(StreamSpec::new("orders", Durability::Fsync).shard_count(1))
        .await
        .expect("create");

    let second = run_to_exit(&first.data_dir, free_ports(1), 1, &[]);
    eprintln!(
        "second process: exit {:?} after {:?}",
        second.code, second.elapsed
    );
    assert_eq!(second.code, Some(7), "{}", second.output);
    let pid = first.pid().expect("the first server runs");
    assert!(
        second
            .output
            .contains(&first.data_dir.display().to_string())
            && second.output.contains(&format!("pid {pid}"))
            && second.output.contains("in use by another runnel-server"),
        "the message names the directory and the holder:\n{}",
        second.output
    );

    // The first node is untouched and serves on.
    let sent = append(&client, "orders", "a", 20).await;
    assert_eq!(read_all_values(&client, "orders").await.len(), sent.len());
    drop(client);

    // The lock dies with its holder, even a killed one: no stale lock blocks the next start.
    first.kill();
    first.restart();
    let client = first.connect().await;
    assert_eq!(read_all_values(&client, "orders").await.len(), sent.len());
}

/// Regression (issue 8, item 3): a restart on existing data with another `--node-id` started,
/// and then every read and append failed `NotOwner`. Now the data directory records its node
/// id and another one is refused with code 8, also for data written before that record existed
/// (checked against the metadata).
#[tokio::test]
async fn another_node_id_on_existing_data_is_refused() {
    let temp = tempfile::tempdir().expect("temp dir");
    let mut server = TestServer::start(temp.path(), 1);
    let client = server.connect().await;
    client
        .create_stream(StreamSpec::new("orders", Durability::Fsync).shard_count(1))
        .await
        .expect("create");
    let sent = append(&client, "orders", "a", 10).await;
    drop(client);
    assert_eq!(server.stop(), Some(0));
    let node_file = server.data_dir.join("node");
    let recorded = std::fs::read_to_string(&node_file).expect("the node file exists");
    assert!(recorded.contains("node_id = 1"), "{recorded}");

    let refused = run_to_exit(&server.data_dir, server.base_port, 1, &["--node-id", "2"]);
    eprintln!(
        "another node id: exit {:?} after {:?}",
        refused.code, refused.elapsed
    );
    assert_eq!(refused.code, Some(8), "{}", refused.output);
    assert!(
        refused.output.contains("belongs to node 1, not node 2"),
        "{}",
        refused.output
    );

    // Data from before the identity file: the metadata says whose it is.
    std::fs::remove_file(&node_file).expect("remove the node file");
    let refused = run_to_exit(&server.data_dir, server.base_port, 1, &["--node-id", "2"]);
    assert_eq!(refused.code, Some(8), "{}", refused.output);
    assert!(!node_file.exists(), "a refused start records nothing");

    // A damaged identity file is refused, not read as some other id.
    std::fs::write(&node_file, recorded.replace("node_id = 1", "node_id = 3"))
        .expect("damage the node file");
    let refused = run_to_exit(&server.data_dir, server.base_port, 1, &[]);
    assert_eq!(refused.code, Some(8), "{}", refused.output);
    assert!(refused.output.contains("checksum"), "{}", refused.output);
    std::fs::remove_file(&node_file).expect("remove the damaged node file");

    // The right id starts, records itself again, and serves everything.
    server.restart();
    assert_eq!(
        std::fs::read_to_string(&node_file).expect("written again"),
        recorded
    );
    let client = server.connect().await;
    let mut expected = sent;
    expected.sort();
    assert_eq!(read_all_values(&client, "orders").await, expected);
}

/// Regression (issue 8, item 3): a restart with fewer `--cores` than shards were placed on
/// started, then every request for a shard of a missing core failed `UnknownCore`. Now the
/// shards of missing cores are re-placed on `core % cores`: every shard is served, readable
/// and appendable, and growing the core count again keeps serving them.
#[tokio::test]
async fn a_restart_with_fewer_cores_serves_every_shard() {
    let temp = tempfile::tempdir().expect("temp dir");
    let mut server = TestServer::start(temp.path(), 3);
    let client = server.connect().await;
    client
        .create_stream(StreamSpec::new("orders", Durability::Fsync).shard_count(6))
        .await
        .expect("create");
    let cores: Vec<u32> = client
        .list_shards("orders")
        .await
        .expect("shards")
        .iter()
        .map(|s| s.core)
        .collect();
    assert_eq!(
        cores,
        vec![0, 1, 2, 0, 1, 2],
        "shards spread over three cores"
    );
    let mut sent = append(&client, "orders", "three", 60).await;
    drop(client);
    assert_eq!(server.stop(), Some(0));

    let mut server = TestServer::start_at(server.data_dir.clone(), server.base_port, 1, Vec::new());
    let client = server.connect().await;
    let shards = client.list_shards("orders").await.expect("shards");
    assert!(
        shards.iter().all(|s| s.core == 0),
        "every shard on the one core left: {:?}",
        shards.iter().map(|s| (s.id, s.core)).collect::<Vec<_>>()
    );
    sent.extend(append(&client, "orders", "one", 60).await);
    sent.sort();
    assert_eq!(read_all_values(&client, "orders").await, sent);
    drop(client);
    assert_eq!(server.stop(), Some(0));

    // Two cores: nothing moves back, everything is still served.
    let server = TestServer::start_at(server.data_dir.clone(), server.base_port, 2, Vec::new());
    let client = server.connect().await;
    sent.extend(append(&client, "orders", "two", 30).await);
    sent.sort();
    assert_eq!(read_all_values(&client, "orders").await, sent);
}

/// Creates a 2-core node with a stream whose shards cover both cores, stops it cleanly, and
/// returns its data directory, base port and the shard owned by core 1.
async fn node_with_a_core_1_shard(root: &Path) -> (PathBuf, u16, u64) {
    let mut server = TestServer::start(root, 2);
    let client = server.connect().await;
    client
        .create_stream(StreamSpec::new("orders", Durability::Fsync).shard_count(2))
        .await
        .expect("create");
    append(&client, "orders", "a", 20).await;
    let shard = client
        .list_shards("orders")
        .await
        .expect("shards")
        .into_iter()
        .find(|s| s.core == 1)
        .expect("a shard on core 1");
    drop(client);
    assert_eq!(server.stop(), Some(0));
    (server.data_dir.clone(), server.base_port, shard.id.0)
}

/// The first segment file of a shard.
fn first_segment(data_dir: &Path, shard: u64) -> PathBuf {
    let dir = data_dir.join("shards").join(shard.to_string());
    let mut segments: Vec<(u64, PathBuf)> = std::fs::read_dir(&dir)
        .expect("the shard's directory")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "seg"))
        .filter_map(|path| {
            let base = path.file_stem()?.to_str()?.parse().ok()?;
            Some((base, path))
        })
        .collect();
    segments.sort();
    segments
        .into_iter()
        .next()
        .map(|(_, path)| path)
        .expect("a segment file")
}

/// Regression (issue 8, item 4): when a core-1 shard could not be opened at start, the log
/// said "stopping the node core=1" and the process hung (core 0 waited forever for core 1 to
/// acknowledge the replay), or exited 6 "core 1 stopped unexpectedly": the reason was lost.
/// Now it exits with the reason's code (9, corruption: a bad header on a segment with data) and
/// a message naming the shard and the cause.
#[tokio::test]
async fn a_core_1_shard_with_a_damaged_segment_header_stops_the_node_with_its_reason() {
    let temp = tempfile::tempdir().expect("temp dir");
    let (data_dir, base_port, shard) = node_with_a_core_1_shard(temp.path()).await;
    let segment = first_segment(&data_dir, shard);
    let mut bytes = std::fs::read(&segment).expect("read the segment");
    bytes[..8].copy_from_slice(&[0xAB; 8]);
    std::fs::write(&segment, &bytes).expect("damage the segment header");

    let exited = run_to_exit(&data_dir, base_port, 2, &[]);
    eprintln!(
        "damaged core-1 segment: exit {:?} after {:?}",
        exited.code, exited.elapsed
    );
    assert_eq!(exited.code, Some(9), "{}", exited.output);
    assert!(
        exited.output.contains(&format!("open shard {shard}")) && exited.output.contains("magic"),
        "the message names the shard and the cause:\n{}",
        exited.output
    );
    assert!(
        !exited.output.contains("stopped unexpectedly"),
        "{}",
        exited.output
    );
}

/// Regression (issue 8, item 1), end to end: one byte flipped inside acknowledged records of
/// a shard's active segment (the node stopped) made the restarted node truncate the shard
/// there and hand the acknowledged offsets out again. Now the node refuses to start, with the
/// corruption exit code and a message saying acknowledged records are damaged, and the segment
/// is left as it was.
#[tokio::test]
async fn a_flipped_byte_in_acknowledged_records_is_reported_not_truncated() {
    let temp = tempfile::tempdir().expect("temp dir");
    let (data_dir, base_port, shard) = node_with_a_core_1_shard(temp.path()).await;
    let segment = first_segment(&data_dir, shard);
    let mut bytes = std::fs::read(&segment).expect("read the segment");
    bytes[4096 + 100] ^= 0xff;
    std::fs::write(&segment, &bytes).expect("flip a byte");

    let exited = run_to_exit(&data_dir, base_port, 2, &[]);
    assert_eq!(exited.code, Some(9), "{}", exited.output);
    assert!(
        exited.output.contains(&format!("open shard {shard}"))
            && exited.output.contains("acknowledged records are damaged"),
        "the message names the shard and the damage:\n{}",
        exited.output
    );
    assert_eq!(
        std::fs::read(&segment).expect("read again"),
        bytes,
        "a refused start changes nothing on disk"
    );
}

/// Regression (issue 8, item 4), another way a core-1 shard cannot open (the disk refuses):
/// its directory is a file. Same promise: exit 4 naming the shard, never a hang.
#[tokio::test]
async fn a_core_1_shard_the_disk_refuses_stops_the_node_with_its_reason() {
    let temp = tempfile::tempdir().expect("temp dir");
    let (data_dir, base_port, shard) = node_with_a_core_1_shard(temp.path()).await;
    let dir = data_dir.join("shards").join(shard.to_string());
    std::fs::remove_dir_all(&dir).expect("remove the shard's directory");
    std::fs::write(&dir, b"not a directory").expect("put a file in its place");

    let exited = run_to_exit(&data_dir, base_port, 2, &[]);
    assert_eq!(exited.code, Some(4), "{}", exited.output);
    assert!(
        exited.output.contains(&format!("open shard {shard}")),
        "{}",
        exited.output
    );
}

/// Core 1 cannot listen (its port is taken): the node exits with that reason (4), naming the
/// core and the address, instead of serving on core 0 alone.
#[tokio::test]
async fn a_core_1_that_cannot_listen_stops_the_node_with_its_reason() {
    let temp = tempfile::tempdir().expect("temp dir");
    let base_port = free_ports(2);
    let taken =
        std::net::UdpSocket::bind(("127.0.0.1", base_port + 1)).expect("take core 1's port");
    let exited = run_to_exit(&temp.path().join("data"), base_port, 2, &[]);
    drop(taken);
    assert_eq!(exited.code, Some(4), "{}", exited.output);
    assert!(
        exited.output.contains("core 1 cannot listen"),
        "{}",
        exited.output
    );
}

/// `--base-port 0` is refused as a configuration error (2) before anything starts: core i
/// listens on base_port + i, so core 1 bound port 1.
#[test]
fn base_port_zero_is_refused() {
    let temp = tempfile::tempdir().expect("temp dir");
    let exited = run_to_exit(&temp.path().join("data"), 0, 2, &[]);
    assert_eq!(exited.code, Some(2), "{}", exited.output);
    assert!(exited.output.contains("base_port"), "{}", exited.output);
}
