//! Regressions of what a newcomer met using `runnel` against a real node (issue 8): an
//! unreachable node, offsets of shards owned by core 1, a bad name's message, and a read that
//! reaches a corrupt batch. Each test says the bug it guards against.
//!
//! Needs the `runnel-server` binary next to this test's (`cargo build -p runnel-server`, or
//! `cargo test --workspace`, builds it).

mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use runnel_tests::server::free_ports;
use serde_json::Value;

use common::{Node, Running};

/// Regression (issue 8, item 11): against a dead node the command tried 4 times for
/// `--timeout-ms` each (20 s by default) and said only "connect: no answer within 5000 ms".
/// Now one deadline covers every attempt, set by `--connect-timeout-ms` or
/// `RUNNEL_CONNECT_TIMEOUT_MS`, and the error names the address and the deadline (exit 3).
#[test]
fn an_unreachable_node_is_reported_with_its_address_and_the_deadline() {
    let temp = tempfile::tempdir().expect("temp dir");
    let nobody = format!("runnel://127.0.0.1:{}", free_ports(1));

    let by_flag = Running::start(
        temp.path(),
        &[
            "--url",
            &nobody,
            "--insecure",
            "--connect-timeout-ms",
            "400",
            "stream",
            "list",
        ],
        None,
    )
    .finish()
    .failed("unreachable, by flag", 3, "runnel: Unreachable: ");
    let expected =
        format!("cannot reach the node at {nobody} within 400 ms (the connect deadline)");
    assert!(by_flag.stderr.contains(&expected), "{}", by_flag.stderr);
    assert!(
        by_flag.stderr.contains("--connect-timeout-ms"),
        "the message says how to wait longer: {}",
        by_flag.stderr
    );
    assert_eq!(by_flag.stderr.lines().count(), 1, "{}", by_flag.stderr);

    let by_env = Running::start_with_env(
        temp.path(),
        &["--url", &nobody, "--insecure", "node", "status"],
        &[("RUNNEL_CONNECT_TIMEOUT_MS", "300")],
        None,
    )
    .finish()
    .failed("unreachable, by variable", 3, "runnel: Unreachable: ");
    assert!(
        by_env
            .stderr
            .contains("within 300 ms (the connect deadline)"),
        "{}",
        by_env.stderr
    );
}

/// The shards of `stream` as `shard list --output json` prints them.
fn shards(node: &Node, stream: &str) -> Vec<Value> {
    let listed = node
        .shell()
        .run(&["shard", "list", stream, "--output", "json"])
        .ok("shard list")
        .json();
    listed["shards"].as_array().expect("a shard array").clone()
}

/// Regression (issue 8, item 10): `shard list` and `stream describe` showed `-` for the start
/// and next offsets of every shard owned by core 1: the core the request reached answered
/// only for its own shards. Single-shard streams land on both cores of a two-core node; every
/// one must show its offsets, in `shard list`, `stream describe` and `stream create`. (And
/// a bad name's message, below, on the same node.)
#[test]
fn offsets_of_shards_on_every_core_are_shown() {
    let node = Node::start();
    let shell = node.shell();
    let mut cores_seen = std::collections::BTreeSet::new();
    for index in 0..4 {
        let name = format!("single-{index}");
        let created = shell
            .run(&["stream", "create", &name, "--output", "json"])
            .ok("create")
            .json();
        let shard = &created["shards"][0];
        assert_eq!(
            shard["next_offset"], 0,
            "create shows the offsets: {created}"
        );
        shell
            .run_with_stdin(
                &["stream", "append", &name],
                Some(&format!("a-{index}\nb-{index}\n")),
            )
            .ok("append");
        for shard in shards(&node, &name) {
            cores_seen.insert(shard["core"].as_u64().expect("a core"));
            assert_eq!(shard["start_offset"], 0, "shard list of {name}: {shard}");
            assert_eq!(shard["next_offset"], 2, "shard list of {name}: {shard}");
        }
        let described = shell
            .run(&["stream", "describe", &name, "--output", "json"])
            .ok("describe")
            .json();
        assert_eq!(described["shards"][0]["next_offset"], 2, "{described}");
        // The table shows them too, not `-`.
        let table = shell.run(&["shard", "list", &name]).ok("shard list table");
        let row = &table.table_rows()[0];
        assert_eq!(&row[7..9], &["0".to_owned(), "2".to_owned()], "{row:?}");
    }
    assert!(
        cores_seen.contains(&1),
        "no stream landed on core 1, the test proves nothing: {cores_seen:?}"
    );

    // Regression (issue 8, item 12): a bad stream name printed "invalid stream name: invalid
    // stream name …"; the message now says it once, then the name and the rule it breaks.
    let refused = shell.run(&["stream", "describe", "no spaces"]).failed(
        "bad name",
        2,
        "runnel: InvalidArgument: ",
    );
    assert_eq!(
        refused.stderr.trim_end(),
        "runnel: InvalidArgument: invalid stream name: \"no spaces\" may hold only letters, \
         digits, '_', '-' and '.'"
    );
}

/// The files under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// Regression (issue 8, item 12): when a read reached a corrupt batch, the records read
/// before it in the same chunk were dropped and only the error was printed. The sound batches
/// before the corrupt one are now printed first, then the node's error (exit 1: the node
/// refuses to serve the damaged batch).
#[test]
fn a_read_prints_the_records_before_a_corrupt_batch_then_the_error() {
    // Without its batch cache: the node would serve these just-written batches from memory,
    // where the damage done to the file below does not reach; this test is about damage read
    // from the disk.
    let node = Node::start_with_config(Some("[log]\nread_cache_bytes = 0\n"));
    let shell = node.shell();
    shell.run(&["stream", "create", "damaged"]).ok("create");
    // One append, one batch each: two sound batches, then the one to damage.
    for line in ["first", "second", "third-MARKED-FOR-DAMAGE"] {
        shell
            .run_with_stdin(&["stream", "append", "damaged"], Some(&format!("{line}\n")))
            .ok("append");
    }
    // Flip a byte of the third record's value on disk, under the running node: its batch's
    // checksum no longer matches (reads bypass the page cache, so the node sees it).
    // Segment files are preallocated: only their first MiB is searched.
    let marker = b"MARKED-FOR-DAMAGE";
    let (path, at) = files_under(&node.server.data_dir)
        .into_iter()
        .find_map(|path| {
            let mut head = Vec::new();
            std::fs::File::open(&path)
                .ok()?
                .take(1 << 20)
                .read_to_end(&mut head)
                .ok()?;
            let at = head.windows(marker.len()).position(|w| w == marker)?;
            Some((path, at as u64))
        })
        .expect("the record's value is in a segment file");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open segment");
    file.seek(SeekFrom::Start(at)).expect("seek");
    file.write_all(b"m").expect("flip a byte");
    file.sync_all().expect("sync");
    drop(file);

    let read = shell
        .run(&["stream", "read", "damaged", "--from", "earliest"])
        .failed(
            "read past damage",
            1,
            "runnel: StorageFault: corruption in ",
        );
    let values: Vec<&str> = read
        .stdout
        .lines()
        .map(|line| line.rsplit('\t').next().unwrap_or(line))
        .collect();
    assert_eq!(values, ["first", "second"], "stderr: {}", read.stderr);
    assert!(read.stderr.contains("checksum mismatch"), "{}", read.stderr);
}
