//! The `runnel` binary end to end: a real `runnel-server` (two cores, free loopback ports, a
//! temporary data directory) driven only through the command line, as a user would — every
//! verb in table and JSON output, records appended from stdin and read back, and the exit
//! codes of the failures a user meets first (unknown stream or shard: 4, bad arguments: 2,
//! unreachable node: 3, refused: 1).
//!
//! Needs the `runnel-server` binary next to this test's (`cargo build -p runnel-server`, or
//! `cargo test --workspace`, builds it): `cargo test -p runnel-cli` builds only this package's
//! binaries.

mod common;

use std::collections::BTreeSet;

use runnel_tests::server::free_ports;
use serde_json::Value;

use common::{runnel, Node};

/// Every verb against a real node, then the failures and their exit codes.
#[test]
fn every_command_against_a_real_server() {
    let node = Node::start();
    let (server, cwd) = (&node.server, &node.cwd);
    let shell = node.shell();

    // Create: the table of `describe`, then a refusal for the same name (exit 1).
    let created = shell
        .run(&[
            "stream",
            "create",
            "orders",
            "--shards",
            "2",
            "--retention",
            "1h",
        ])
        .ok("create");
    assert_eq!(
        created.table_rows()[0],
        vec!["orders", "1", "1h", "2", "fsync"]
    );
    shell
        .run(&["stream", "create", "orders"])
        .failed("create twice", 1, "runnel: StreamExists: ");
    shell
        .run(&[
            "stream",
            "create",
            "events",
            "--durability",
            "memory",
            "--output",
            "json",
        ])
        .ok("create json");

    // List, as a table and as one JSON document.
    let listed = shell.run(&["stream", "list"]).ok("list");
    assert!(
        listed.stdout.lines().nth(1).is_some_and(|header| header
            == "| Stream Name | Replica | Retention Time | Shard Count | Durability |"),
        "{}",
        listed.stdout
    );
    assert_eq!(
        listed.table_rows(),
        vec![
            vec!["events", "1", "7d", "1", "memory"],
            vec!["orders", "1", "1h", "2", "fsync"],
        ]
    );
    let listed = shell
        .run(&["stream", "list", "--output", "json"])
        .ok("list json")
        .json();
    let streams = listed["streams"].as_array().expect("streams");
    assert_eq!(streams.len(), 2);
    assert_eq!(streams[1]["name"], "orders");
    assert_eq!(streams[1]["shard_count"], 2);
    assert_eq!(streams[1]["retention_ms"], 3_600_000);
    assert_eq!(streams[0]["durability"], "memory");

    // Describe and shard list agree on the two shards, which split the hash space.
    let described = shell
        .run(&["stream", "describe", "orders", "--output", "json"])
        .ok("describe")
        .json();
    let shard_ids: Vec<u64> = described["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .map(|shard| shard["id"].as_u64().expect("id"))
        .collect();
    assert_eq!(shard_ids.len(), 2);
    assert!(shell
        .run(&["stream", "describe", "orders"])
        .ok("describe table")
        .stdout
        .contains("| Shard ID "));
    let shards = shell.run(&["shard", "list", "orders"]).ok("shard list");
    let rows = shards.table_rows();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0][1], "00000000000000000000000000000000");
    assert_eq!(rows[1][2], "ffffffffffffffffffffffffffffffff");
    assert!(rows.iter().all(|row| row[3] == "open"));
    let shards = shell
        .run(&["shard", "list", "orders", "--output", "json"])
        .ok("shard list json")
        .json();
    let listed_ids: Vec<u64> = shards["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .map(|shard| shard["id"].as_u64().expect("id"))
        .collect();
    assert_eq!(listed_ids, shard_ids);

    // Append keyed records (and one without a key) from stdin; one id per record.
    let mut input: Vec<(Option<String>, String)> = (0..20)
        .map(|i| {
            (
                Some(format!("user-{}", i % 5)),
                format!("{{\"order\": {i}}}"),
            )
        })
        .collect();
    input.push((None, "no key here".into()));
    let stdin: String = input
        .iter()
        .map(|(key, value)| match key {
            Some(key) => format!("{key}:{value}\n"),
            None => format!("{value}\n"),
        })
        .collect::<String>()
        + "\n"; // an empty line is skipped
    let appended = shell
        .run_with_stdin(
            &["stream", "append", "orders", "--key-separator", ":"],
            Some(&stdin),
        )
        .ok("append");
    let ids: BTreeSet<String> = appended.stdout.lines().map(str::to_owned).collect();
    assert_eq!(ids.len(), input.len(), "{}", appended.stdout);
    assert!(ids.iter().all(|id| id
        .split_once('-')
        .is_some_and(|(shard, _)| shard_ids.contains(&shard.parse().expect("shard")))));
    let counted = shell
        .run_with_stdin(
            &[
                "stream",
                "append",
                "events",
                "--count",
                "--batch-records",
                "2",
            ],
            Some("a\nb\nc\n"),
        )
        .ok("append count");
    assert_eq!(counted.stdout, "appended 3 records to events\n");

    // Read everything back: the same ids, keys and values.
    let read = shell
        .run(&[
            "stream",
            "read",
            "orders",
            "--from",
            "earliest",
            "--total",
            &input.len().to_string(),
        ])
        .ok("read");
    let mut read_ids = BTreeSet::new();
    let mut read_records = BTreeSet::new();
    for line in read.stdout.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        assert_eq!(fields.len(), 3, "{line:?}");
        read_ids.insert(fields[0].to_owned());
        let key = (!fields[1].is_empty()).then(|| fields[1].to_owned());
        read_records.insert((key, fields[2].to_owned()));
    }
    assert_eq!(read_ids, ids);
    assert_eq!(read_records, input.iter().cloned().collect());
    let read = shell
        .run(&[
            "stream", "read", "orders", "--from", "earliest", "--total", "3", "--output", "json",
        ])
        .ok("read json");
    let lines: Vec<Value> = read
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(lines
        .iter()
        .all(|record| ids.contains(record["id"].as_str().expect("id"))));
    assert!(lines
        .iter()
        .all(|record| record["timestamp_ms"].as_i64().is_some()));
    // One shard only, from an offset.
    let shard = shard_ids[0].to_string();
    let one_shard = shell
        .run(&["stream", "read", "orders", "--from", "1", "--shard", &shard])
        .ok("read one shard");
    let expected: BTreeSet<String> = ids
        .iter()
        .filter(|id| id.starts_with(&format!("{shard}-")) && !id.ends_with("-0"))
        .cloned()
        .collect();
    let got: BTreeSet<String> = one_shard
        .stdout
        .lines()
        .map(|line| line.split('\t').next().expect("id").to_owned())
        .collect();
    assert_eq!(got, expected);

    // The node.
    let status = shell.run(&["node", "status"]).ok("node status");
    assert_eq!(status.table_rows()[0][1], "Running");
    let status = shell
        .run(&["node", "status", "--output", "json"])
        .ok("node status json")
        .json();
    assert_eq!(status["node_id"], 1);
    assert_eq!(status["core_count"], 2);
    assert_eq!(status["cores"].as_array().expect("cores").len(), 2);
    assert_eq!(status["base_port"], server.base_port);

    // Not found: exit 4 and a message naming what is missing.
    let missing = shell.run(&["stream", "describe", "nope"]).failed(
        "describe unknown",
        4,
        "runnel: UnknownStream: ",
    );
    assert!(missing.stderr.contains("nope"), "{}", missing.stderr);
    shell
        .run(&["stream", "read", "nope", "--from", "earliest"])
        .failed("read unknown", 4, "runnel: UnknownStream: ");
    shell
        .run_with_stdin(&["stream", "append", "nope"], Some("x\n"))
        .failed("append unknown", 4, "runnel: UnknownStream: ");
    shell
        .run(&[
            "stream", "read", "orders", "--from", "earliest", "--shard", "999",
        ])
        .failed("read unknown shard", 4, "runnel: UnknownShard: ");
    shell
        .run(&["shard", "list", "nope"])
        .failed("shards of unknown", 4, "runnel: UnknownStream: ");

    // Usage errors: exit 2, nothing sent.
    shell
        .run(&["stream", "create", "bad", "--shards", "0"])
        .failed("zero shards", 2, "runnel: Usage: ");
    shell
        .run(&["stream", "read", "orders"])
        .failed("no --from", 2, "runnel: Usage: ");
    shell
        .run(&["stream", "read", "orders", "--from", "yesterday"])
        .failed("bad --from", 2, "runnel: Usage: ");
    shell
        .run(&["stream", "create", "-bad-name"])
        .failed("bad name", 2, "runnel: ");
    runnel(cwd, &["--url", &server.url(), "node", "status"], None).failed(
        "no certificate to trust",
        2,
        "runnel: Usage: no certificate to trust",
    );
    runnel(
        cwd,
        &[
            "--url",
            "http://127.0.0.1:1",
            "--insecure",
            "node",
            "status",
        ],
        None,
    )
    .failed("bad url", 2, "runnel: InvalidUrl: ");
    // Skipping verification is an explicit, working choice.
    runnel(
        cwd,
        &["--url", &server.url(), "--insecure", "node", "status"],
        None,
    )
    .ok("insecure");

    // Unreachable node: exit 3, quickly with a short timeout.
    let started = std::time::Instant::now();
    let nobody = format!("runnel://127.0.0.1:{}", free_ports(1));
    runnel(
        cwd,
        &[
            "--url",
            &nobody,
            "--insecure",
            "--timeout-ms",
            "200",
            "stream",
            "list",
        ],
        None,
    )
    .failed("unreachable", 3, "runnel: ");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));

    // Delete: gone from the list, and a second delete is "not found".
    shell.run(&["stream", "delete", "orders"]).ok("delete");
    shell
        .run(&["stream", "delete", "orders"])
        .failed("delete twice", 4, "runnel: UnknownStream: ");
    let deleted = shell
        .run(&["stream", "delete", "events", "--force", "--output", "json"])
        .ok("delete json")
        .json();
    assert_eq!(deleted["deleted"], "events");
    let listed = shell
        .run(&["stream", "list", "--output", "json"])
        .ok("list")
        .json();
    assert_eq!(listed["streams"], serde_json::json!([]));
}
