//! A node owns more shards than it keeps logs open (issue 8, item 7): a shard's log opens when
//! a request first needs it and closes when idle, or when the core holds `log.open_logs_max`
//! open logs and needs room. Descriptors stay within the limit whatever the number of streams,
//! every record stays readable, offsets carry on after closes and restarts.

use std::path::Path;
use std::time::{Duration, Instant};

use runnel_client::{Client, Durability, Record, StreamSpec};
use runnel_tests::sdk::read_all_values;
use runnel_tests::server::TestServer;

const STREAMS: usize = 48;
const OPEN_LOGS_MAX: usize = 6;

/// Open file descriptors of a process.
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the server's /proc/<pid>/fd")
        .count()
}

/// What a process's descriptors point at, for failure messages.
fn describe_files(pid: u32) -> String {
    let mut targets: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the server's /proc/<pid>/fd")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .map(|target| target.display().to_string())
        .collect();
    targets.sort();
    targets.join("\n")
}

fn config_file(root: &Path) -> String {
    let path = root.join("runnel.toml");
    std::fs::write(
        &path,
        format!("[log]\nopen_logs_max = {OPEN_LOGS_MAX}\nidle_close_ms = 300\n"),
    )
    .expect("write the config");
    path.display().to_string()
}

fn value(stream: usize, i: usize) -> Vec<u8> {
    format!("s{stream}-r{i}").into_bytes()
}

async fn append(client: &Client, stream: usize, records: std::ops::Range<usize>) -> Vec<u64> {
    let producer = client.producer(&format!("s{stream}")).expect("producer");
    let mut offsets = Vec::new();
    for i in records {
        let id = producer
            .send(Record::new(value(stream, i)))
            .await
            .expect("append");
        offsets.push(id.offset.0);
    }
    offsets
}

/// Waits (polling, up to a generous deadline) until `check` holds; false if it never did.
async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    check()
}

#[tokio::test]
async fn a_core_keeps_at_most_its_open_logs_max_and_loses_nothing() {
    let temp = tempfile::tempdir().expect("temp dir");
    let config = config_file(temp.path());
    let mut server = TestServer::start_with(temp.path(), 1, &["--config", &config]);
    let pid = server.pid().expect("pid");
    let client = server.connect().await;
    let baseline = open_files(pid);

    for s in 0..STREAMS {
        client
            .create_stream(StreamSpec::new(format!("s{s}"), Durability::Fsync).shard_count(1))
            .await
            .expect("create");
    }
    // Creating a stream opens nothing: its log opens when first used.
    let after_creates = open_files(pid);
    assert!(
        after_creates <= baseline + 2,
        "{STREAMS} creates left {after_creates} descriptors open (baseline {baseline})"
    );

    let mut peak = 0;
    for s in 0..STREAMS {
        assert_eq!(append(&client, s, 0..3).await, vec![0, 1, 2], "stream s{s}");
        peak = peak.max(open_files(pid));
    }
    // One descriptor per open log (one segment each), and at most OPEN_LOGS_MAX open logs.
    assert!(
        peak <= baseline + OPEN_LOGS_MAX + 2,
        "appending to {STREAMS} streams peaked at {peak} descriptors (baseline {baseline}, \
         open_logs_max {OPEN_LOGS_MAX})"
    );
    for s in 0..STREAMS {
        let expected: Vec<Vec<u8>> = (0..3).map(|i| value(s, i)).collect();
        assert_eq!(read_all_values(&client, &format!("s{s}")).await, expected);
    }

    // Idle logs close after idle_close_ms; a closed log still knows its offsets.
    assert!(
        eventually(|| open_files(pid) <= baseline + 1).await,
        "idle logs stayed open: {} descriptors (baseline {baseline}):\n{}",
        open_files(pid),
        describe_files(pid)
    );
    for s in [0, STREAMS / 2, STREAMS - 1] {
        let info = client
            .describe_stream(&format!("s{s}"))
            .await
            .expect("describe");
        let shard = info.shards.first().expect("a shard");
        assert_eq!(shard.start_offset.map(|o| o.0), Some(0));
        assert_eq!(shard.next_offset.map(|o| o.0), Some(3), "stream s{s}");
    }
    // Reopened logs carry on where they were: no offset is handed out twice.
    for s in 0..STREAMS {
        assert_eq!(append(&client, s, 3..4).await, vec![3], "stream s{s}");
    }

    // After a restart the logs are not opened all at once, and nothing is lost.
    server.restart();
    let pid = server.pid().expect("pid");
    let client = server.connect().await;
    let info = client
        .describe_stream(&format!("s{}", STREAMS - 1))
        .await
        .expect("describe after restart");
    assert_eq!(
        info.shards.first().and_then(|s| s.next_offset).map(|o| o.0),
        Some(4)
    );
    for s in 0..STREAMS {
        assert_eq!(append(&client, s, 4..5).await, vec![4], "stream s{s}");
        let expected: Vec<Vec<u8>> = (0..5).map(|i| value(s, i)).collect();
        assert_eq!(read_all_values(&client, &format!("s{s}")).await, expected);
    }
    assert!(
        open_files(pid) <= baseline + OPEN_LOGS_MAX + 2,
        "{} descriptors after the restart (baseline {baseline})",
        open_files(pid)
    );
    assert_eq!(server.stop(), Some(0));
}
