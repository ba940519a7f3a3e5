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
