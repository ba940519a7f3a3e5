//! A full disk (issue 8), end to end: the real `runnel-server` on a small ext4 file system of
//! its own (a loop-mounted image, which needs root, as the test machines run).
//!
//! Regression: creating a stream on a full disk killed the node (the new shard's log failed to
//! open after the command was committed, a fatal error). Now the create is refused with a
//! clear error, the node keeps serving, and a restart with the disk still full serves reads.

use std::path::{Path, PathBuf};
use std::process::Command;

use runnel_client::{Durability, ErrorCode, Record, StreamSpec};
use runnel_tests::sdk::read_all_values;
use runnel_tests::server::{free_ports, TestServer};

/// A loop-mounted ext4 image, unmounted on drop.
struct SmallFileSystem {
    mount: PathBuf,
}

impl SmallFileSystem {
    fn new(root: &Path, megabytes: u32) -> SmallFileSystem {
        let image = root.join("fs.img");
        let mount = root.join("mnt");
        std::fs::create_dir_all(&mount).expect("mount point");
        let run = |program: &str, args: &[&str]| {
            let status = Command::new(program)
                .args(args)
                .status()
                .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
            assert!(status.success(), "{program} {args:?} failed: {status}");
        };
        run(
            "truncate",
            &[
                "-s",
                &format!("{megabytes}M"),
                image.to_str().expect("path"),
            ],
        );
        run("mkfs.ext4", &["-q", image.to_str().expect("path")]);
        run(
            "mount",
            &[
                "-o",
                "loop",
                image.to_str().expect("path"),
                mount.to_str().expect("path"),
            ],
        );
        SmallFileSystem { mount }
    }

    /// Writes a file until the file system refuses more; returns its path.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.mount.join("filler");
        let mut file = std::fs::File::create(&path).expect("filler");
        let block = vec![0x5a_u8; 64 << 10];
        let mut step = block.as_slice();
        loop {
            match file.write(step) {
                Ok(0) => break,
                Ok(_) => {}
                Err(_) if step.len() > 512 => step = &step[..step.len() / 2],
                Err(_) => break,
            }
        }
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallFileSystem {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

#[tokio::test]
async fn a_full_disk_refuses_creates_and_the_node_keeps_serving_and_restarts() {
    let temp = tempfile::tempdir().expect("temp dir");
    let fs = SmallFileSystem::new(temp.path(), 48);
    let data_dir = fs.mount.join("data");
    let mut server = TestServer::start_at(data_dir, free_ports(2), 2, Vec::new());
    let client = server.connect().await;
    client
        .create_stream(StreamSpec::new("kept", Durability::Fsync).shard_count(2))
        .await
        .expect("create while there is space");
    let producer = client.producer("kept").expect("producer");
    for i in 0..200u32 {
        producer
            .send(
                Record::at(format!("v{i}").into_bytes(), 1_700_000_000_000)
                    .with_key(i.to_le_bytes().to_vec()),
            )
            .await
            .expect("append while there is space");
    }

    let filler = fs.fill();
    // Creates are refused, each one cleanly, and the node goes on.
    for i in 0..5 {
        let error = client
            .create_stream(StreamSpec::new(format!("new{i}"), Durability::Fsync).shard_count(2))
            .await
            .expect_err("no space for a new stream");
        assert_eq!(error.code(), Some(ErrorCode::StorageFault), "{error}");
        assert!(error.to_string().contains("space"), "{error}");
    }
    let names: Vec<String> = client
        .list_streams()
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.name.to_string())
        .collect();
    assert_eq!(names, vec!["kept".to_string()], "no half-created stream");
    assert_eq!(read_all_values(&client, "kept").await.len(), 200);

    // A restart with the disk still full serves reads.
    drop(client);
    assert_eq!(server.stop(), Some(0), "a clean stop");
    server = TestServer::start_at(server.data_dir.clone(), server.base_port, 2, Vec::new());
    let client = server.connect().await;
    assert_eq!(read_all_values(&client, "kept").await.len(), 200);

    // Space freed: creates work again.
    std::fs::remove_file(filler).expect("free the space");
    client
        .create_stream(StreamSpec::new("after", Durability::Fsync).shard_count(2))
        .await
        .expect("create once space is back");
    drop(client);
    drop(server);
}

/// `count` creates of 2-shard streams `<prefix>0`, `<prefix>1`, … in flight at once.
fn spawn_creates(
    client: &runnel_client::Client,
    prefix: &str,
    count: usize,
) -> Vec<tokio::task::JoinHandle<Result<runnel_client::StreamInfo, runnel_client::ClientError>>> {
    (0..count)
        .map(|i| {
            let client = client.clone();
            let name = format!("{prefix}{i}");
            tokio::spawn(async move {
                client
                    .create_stream(StreamSpec::new(name, Durability::Fsync).shard_count(2))
                    .await
            })
        })
        .collect()
}

/// Regression guard for group commit: creates in flight at once on a full disk reach core 0
/// together and are staged as one batch, whose new shard logs cannot be created. The batch is
/// then run again one command at a time, so each create is refused cleanly on its own, and
/// deletes (which need no new log) in the same batch are not refused with it. No stream is
/// half created, the node keeps serving and restarts, and creates work again once there is
/// space.
#[tokio::test]
async fn creates_in_flight_on_a_full_disk_are_refused_one_by_one() {
    let temp = tempfile::tempdir().expect("temp dir");
    let fs = SmallFileSystem::new(temp.path(), 48);
    let data_dir = fs.mount.join("data");
    let mut server = TestServer::start_at(data_dir, free_ports(2), 2, Vec::new());
    let client = server.connect().await;
    let doomed: Vec<String> = (0..4).map(|i| format!("doomed{i}")).collect();
    for name in std::iter::once("kept").chain(doomed.iter().map(String::as_str)) {
        client
            .create_stream(StreamSpec::new(name, Durability::Fsync).shard_count(2))
            .await
            .expect("create while there is space");
    }
    let producer = client.producer("kept").expect("producer");
    for i in 0..50u32 {
        producer
            .send(Record::at(format!("v{i}").into_bytes(), 1_700_000_000_000))
            .await
            .expect("append while there is space");
    }

    let filler = fs.fill();
    // 16 creates and 4 deletes at once, interleaved.
    let creates = spawn_creates(&client, "new", 16);
    let deletes: Vec<_> = doomed
        .iter()
        .map(|name| {
            let (client, name) = (client.clone(), name.clone());
            tokio::spawn(async move { client.delete_stream(&name, false).await })
        })
        .collect();
    for delete in deletes {
        delete
            .await
            .expect("a delete task")
            .expect("a delete needs no new log: never refused with the creates beside it");
    }
    // Deleting frees a little space: a create run after a delete may fit. Each one either
    // succeeded or was refused for lack of space, on its own.
    let mut created = Vec::new();
    for (i, create) in creates.into_iter().enumerate() {
        match create.await.expect("a create task") {
            Ok(_) => created.push(format!("new{i}")),
            Err(error) => {
                assert_eq!(error.code(), Some(ErrorCode::StorageFault), "{error}");
                assert!(error.to_string().contains("space"), "{error}");
            }
        }
    }
    let mut expected: Vec<String> = std::iter::once("kept".to_string())
        .chain(created.iter().cloned())
        .collect();
    expected.sort();
    let names: Vec<String> = client
        .list_streams()
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.name.to_string())
        .collect();
    assert_eq!(names, expected, "no half-created stream");
    for name in &created {
        let info = client.describe_stream(name).await.expect("describe");
        assert_eq!(info.shards.len(), 2, "{name}");
    }
    assert_eq!(read_all_values(&client, "kept").await.len(), 50);

    // A restart with the disk still full serves the same streams.
    drop(client);
    assert_eq!(server.stop(), Some(0), "a clean stop");
    server = TestServer::start_at(server.data_dir.clone(), server.base_port, 2, Vec::new());
    let client = server.connect().await;
    let after: Vec<String> = client
        .list_streams()
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.name.to_string())
        .collect();
    assert_eq!(after, expected);
    assert_eq!(read_all_values(&client, "kept").await.len(), 50);

    // Space freed: creates in flight at once all succeed.
    std::fs::remove_file(filler).expect("free the space");
    let creates = spawn_creates(&client, "later", 8);
    for create in creates {
        create
            .await
            .expect("a create task")
            .expect("create once space is back");
    }
    drop(client);
    drop(server);
}
