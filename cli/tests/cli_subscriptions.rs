//! Subscriptions through the `runnel` binary end to end, against a real `runnel-server` (two
//! cores, a stream of two shards): `sub create` (HStreamDB's columns, every flag, refusals),
//! `sub list` (with and without `--stream`), `sub describe` (settings, per-shard progress,
//! consumers), `consume --total` (exactly N records; a second consumer continues after the
//! acked ones, so nothing acked is delivered again after a clean leave), a consumer stopped by
//! Ctrl-C (SIGINT) or SIGTERM leaving its group, `sub delete` refused while a consumer is
//! joined and done after, and the exit codes of what is missing (4) or refused (1).
//!
//! Within one server run acks are exact (the server persists committed progress at most
//! every second and at a clean stop; this test never restarts it).
//!
//! Needs the `runnel-server` binary next to this test's (see `cli_e2e.rs`).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{table_rows, Node, Run, Shell};

/// Longest a background consumer may take to show up in `sub describe`.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The lines of a `consume` in table format: `(record id, key, value, redelivered)`.
fn consumed(run: &Run) -> Vec<(String, String, String, bool)> {
    run.stdout
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            let redelivered = match fields.get(3) {
                None => false,
                Some(&"(redelivered)") => true,
                Some(other) => panic!("unexpected fourth field {other:?} in {line:?}"),
            };
            assert!(matches!(fields.len(), 3 | 4), "{line:?}");
            (
                fields[0].to_owned(),
                fields[1].to_owned(),
                fields[2].to_owned(),
                redelivered,
            )
        })
        .collect()
}

/// The names of a `sub list --output json`.
fn listed_names(shell: &Shell<'_>, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["sub", "list", "--output", "json"];
    args.extend_from_slice(extra);
    shell.run(&args).ok("sub list json").json()["subscriptions"]
        .as_array()
        .expect("subscriptions")
        .iter()
        .map(|sub| sub["name"].as_str().expect("name").to_owned())
        .collect()
}

fn describe(shell: &Shell<'_>, name: &str) -> Value {
    shell
        .run(&["sub", "describe", name, "--output", "json"])
        .ok("sub describe json")
        .json()
}

/// Waits until `consumer` is a member of `subscription`'s group.
fn wait_for_member(shell: &Shell<'_>, subscription: &str, consumer: &str) {
    let deadline = Instant::now() + JOIN_TIMEOUT;
    loop {
        let described = describe(shell, subscription);
        let joined = described["consumers"]
            .as_array()
            .expect("consumers")
            .iter()
            .any(|member| member["name"] == consumer);
        if joined {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{consumer} did not join {subscription} within {JOIN_TIMEOUT:?}: {described}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every `sub` verb and `consume` against a real node, then what is missing or refused.
#[test]
fn subscriptions_from_create_to_delete() {
    let node = Node::start();
    let shell = node.shell();

    shell
        .run(&["stream", "create", "orders", "--shards", "2"])
        .ok("stream create");
    shell
        .run(&["stream", "create", "events"])
        .ok("stream create");
    // 20 records whose keys spread them over both shards.
    let stdin: String = (0..20)
        .map(|i| format!("user-{}:order {i}\n", i % 5))
        .collect();
    let appended = shell
        .run_with_stdin(
            &["stream", "append", "orders", "--key-separator", ":"],
            Some(&stdin),
        )
        .ok("append");
    let mut all_ids: BTreeSet<String> = appended.stdout.lines().map(str::to_owned).collect();
    assert_eq!(all_ids.len(), 20);
    let shards_used: BTreeSet<String> = all_ids
        .iter()
        .map(|id| id.split_once('-').expect("shard-offset").0.to_owned())
        .collect();
    assert_eq!(shards_used.len(), 2, "keys should reach both shards");

    // Create: HStreamDB's four columns, the defaults (60 s, 10 000), then every flag.
    let created = shell
        .run(&[
            "sub", "create", "billing", "--stream", "orders", "--offset", "earliest",
        ])
        .ok("sub create");
    assert_eq!(
        created.stdout.lines().nth(1),
        Some("| Subscription ID | Stream Name | Ack Timeout | Max Unacked Records |"),
        "{}",
        created.stdout
    );
    assert_eq!(
        created.table_rows(),
        vec![vec!["billing", "orders", "60s", "10000"]]
    );
    let timed = shell
        .run(&[
            "sub",
            "create",
            "timed",
            "--stream",
            "orders",
            "--ack-timeout",
            "30",
            "--max-unacked-records",
            "500",
            "--offset",
            "2026-12-01T10:00:00Z",
            "--output",
            "json",
        ])
        .ok("sub create json")
        .json();
    assert_eq!(timed["name"], "timed");
    assert_eq!(timed["stream"], "orders");
    assert_eq!(timed["ack_timeout_ms"], 30_000);
    assert_eq!(timed["ack_timeout"], "30s");
    assert_eq!(timed["max_unacked_records"], 500);
    assert_eq!(timed["start"], "timestamp");
    assert_eq!(timed["start_timestamp_ms"], 1_796_119_200_000_i64);
    assert!(timed["created_ms"].as_u64().is_some_and(|ms| ms > 0));
    // Default start: the latest records, those appended from now on.
    shell
        .run(&["sub", "create", "late", "--stream", "orders"])
        .ok("sub create latest");
    shell
        .run(&[
            "sub",
            "create",
            "audit",
            "--stream",
            "events",
            "--offset",
            "1796119200000",
        ])
        .ok("sub create at epoch ms");
    shell
        .run(&["sub", "create", "billing", "--stream", "orders"])
        .failed("sub create twice", 1, "runnel: SubscriptionExists: ");
    let missing = shell
        .run(&["sub", "create", "lost", "--stream", "missing"])
        .failed(
            "sub create on a missing stream",
            4,
            "runnel: UnknownStream: ",
        );
    assert!(missing.stderr.contains("missing"), "{}", missing.stderr);
    for bad in [
        &["--ack-timeout", "0"][..],
        &["--max-unacked-records", "0"],
        &["--offset", "yesterday"],
    ] {
        let mut args = vec!["sub", "create", "bad", "--stream", "orders"];
        args.extend_from_slice(bad);
        shell
            .run(&args)
            .failed("sub create with a bad flag", 2, "runnel: Usage: ");
    }

    // List: every subscription in name order, or one stream's.
    let listed = shell.run(&["sub", "list"]).ok("sub list");
    assert_eq!(
        listed.table_rows(),
        vec![
            vec!["audit", "events", "60s", "10000"],
            vec!["billing", "orders", "60s", "10000"],
            vec!["late", "orders", "60s", "10000"],
            vec!["timed", "orders", "30s", "500"],
        ]
    );
    assert_eq!(
        listed_names(&shell, &["--stream", "orders"]),
        vec!["billing", "late", "timed"]
    );
    assert_eq!(listed_names(&shell, &["--stream", "events"]), vec!["audit"]);

    // Describe: settings, both shards with nothing acked yet, no consumers.
    let described = shell.run(&["sub", "describe", "timed"]).ok("sub describe");
    let settings = described.table_rows();
    assert_eq!(
        settings[0][..5],
        ["timed", "orders", "30s", "500", "2026-12-01T10:00:00Z"]
    );
    assert!(described
        .stdout
        .contains("| Shard | Committed Offset | End Offset | Lag | Unacked | Consumer |"));
    assert!(described
        .stdout
        .contains("| Consumer | Member | Shards | Joined |"));
    let billing = describe(&shell, "billing");
    assert_eq!(billing["start"], "earliest");
    let shards = billing["shards"].as_array().expect("shards");
    assert_eq!(shards.len(), 2);
    let lag: u64 = shards
        .iter()
        .map(|shard| shard["lag"].as_u64().expect("lag known"))
        .sum();
    assert_eq!(lag, 20);
    assert_eq!(billing["consumers"], serde_json::json!([]));

    // Records appended after `late` was created: it gets those only, as JSON lines.
    let later = shell
        .run_with_stdin(
            &["stream", "append", "orders", "--key-separator", ":"],
            Some("user-9:later 1\nuser-8:later 2\nuser-7:later 3\n"),
        )
        .ok("append later");
    let later_ids: BTreeSet<String> = later.stdout.lines().map(str::to_owned).collect();
    all_ids.extend(later_ids.iter().cloned());
    let late = shell
        .run(&["consume", "late", "--total", "3", "--format", "json"])
        .ok("consume json");
    let late_ids: BTreeSet<String> = late
        .json_lines()
        .iter()
        .map(|record| record["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(late_ids, later_ids);
    assert!(late.stdout.lines().all(|line| !line.contains("redeliver")));

    // `consume --total 8` prints exactly 8 records and exits 0; a second consumer continues
    // after the acked ones: none of the first 8 again, and together they cover every record.
    let first = shell
        .run(&["consume", "billing", "--total", "8", "--name", "first"])
        .ok("consume 8");
    let first = consumed(&first);
    assert_eq!(first.len(), 8, "{first:?}");
    assert!(first.iter().all(|(_, key, value, redelivered)| {
        key.starts_with("user-") && !value.is_empty() && !redelivered
    }));
    let second = shell
        .run(&["consume", "billing", "--total", "15", "--name", "second"])
        .ok("consume 15");
    let second = consumed(&second);
    assert_eq!(second.len(), 15, "{second:?}");
    let first_ids: BTreeSet<String> = first.iter().map(|(id, ..)| id.clone()).collect();
    let second_ids: BTreeSet<String> = second.iter().map(|(id, ..)| id.clone()).collect();
    assert_eq!(first_ids.len(), 8);
    assert_eq!(second_ids.len(), 15);
    assert!(
        first_ids.is_disjoint(&second_ids),
        "acked records delivered again: {:?}",
        first_ids.intersection(&second_ids).collect::<Vec<_>>()
    );
    let together: BTreeSet<String> = first_ids.union(&second_ids).cloned().collect();
    assert_eq!(together, all_ids);
    // Every record acked: no lag, nothing unacked, nobody joined.
    let billing = describe(&shell, "billing");
    for shard in billing["shards"].as_array().expect("shards") {
        assert_eq!(shard["lag"], 0, "{billing}");
        assert_eq!(shard["committed_offset"], shard["end_offset"], "{billing}");
        assert_eq!(shard["unacked_records"], 0, "{billing}");
    }
    assert_eq!(billing["consumers"], serde_json::json!([]));

    // A consumer that stays joined: describe shows it, delete is refused, Ctrl-C (SIGINT)
    // makes it leave and exit 0.
    let holder = shell.start(&["consume", "billing", "--name", "holder"]);
    wait_for_member(&shell, "billing", "holder");
    let described = shell
        .run(&["sub", "describe", "billing"])
        .ok("sub describe with a consumer");
    let tables: Vec<&str> = described.stdout.split("\n\n").collect();
    assert_eq!(tables.len(), 3, "{}", described.stdout);
    let members = table_rows(tables[2]);
    assert_eq!(members.len(), 1, "{}", described.stdout);
    assert_eq!(members[0][0], "holder");
    let member_shards: BTreeSet<String> = members[0][2].split(',').map(str::to_owned).collect();
    assert_eq!(member_shards, shards_used);
    assert!(members[0][3].ends_with('Z'), "{}", described.stdout);
    let progress = table_rows(tables[1]);
    assert!(
        progress.iter().all(|row| row[5] == "holder"),
        "{}",
        described.stdout
    );
    shell.run(&["sub", "delete", "billing"]).failed(
        "sub delete while a consumer is joined",
        1,
        "runnel: SubscriptionInUse: ",
    );
    holder.signal("INT");
    let stopped = holder.finish().ok("consume stopped by SIGINT");
    assert_eq!(stopped.stdout, "", "everything was acked already");
    assert_eq!(
        describe(&shell, "billing")["consumers"],
        serde_json::json!([])
    );
    // SIGTERM (a supervisor's stop) leaves the group too.
    let holder = shell.start(&["consume", "billing", "--name", "holder-2"]);
    wait_for_member(&shell, "billing", "holder-2");
    holder.signal("TERM");
    holder.finish().ok("consume stopped by SIGTERM");
    assert_eq!(
        describe(&shell, "billing")["consumers"],
        serde_json::json!([])
    );

    // Delete; then the subscription is not found (exit 4) by every verb.
    let deleted = shell.run(&["sub", "delete", "billing"]).ok("sub delete");
    assert_eq!(deleted.stdout, "deleted subscription billing\n");
    let gone = shell.run(&["sub", "describe", "billing"]).failed(
        "describe a deleted subscription",
        4,
        "runnel: UnknownSubscription: ",
    );
    assert!(gone.stderr.contains("billing"), "{}", gone.stderr);
    shell.run(&["sub", "delete", "billing"]).failed(
        "delete twice",
        4,
        "runnel: UnknownSubscription: ",
    );
    shell.run(&["consume", "billing", "--total", "1"]).failed(
        "consume a deleted subscription",
        4,
        "runnel: UnknownSubscription: ",
    );
    shell.run(&["consume", "late", "--name", ""]).failed(
        "an empty consumer name",
        2,
        "runnel: InvalidOption: ",
    );
    let deleted = shell
        .run(&["sub", "delete", "timed", "--force", "--output", "json"])
        .ok("sub delete json")
        .json();
    assert_eq!(deleted["deleted"], "timed");
    assert_eq!(listed_names(&shell, &[]), vec!["audit", "late"]);
}
