//! SQL through the server, end to end against the real binary: the flow of the acceptance
//! check (`shared/checks/09-sql`: create a stream and a view, insert, pull, push), a view that
//! ends exact after SIGKILL and restarts under appends (compared with a recomputation from
//! the source stream), and a push query that ends with its client and leaves nothing behind.
//!
//! Waits are for conditions (a view reaching its expected rows, a query gone), each bounded by
//! `WAIT_MS_MAX` only so that a bug fails the test instead of hanging it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use runnel_client::{Client, PushQuery, Record, SqlAnswer};
use runnel_tests::sdk::{connect_impatient, now_ms, read_all_values};
use runnel_tests::server::TestServer;
use serde_json::{json, Value};

/// Longest a condition is waited for before the test fails.
const WAIT_MS_MAX: u64 = 60_000;

/// The rows of a pull query, as JSON arrays.
async fn rows(client: &Client, sql: &str) -> Vec<Vec<Value>> {
    client.execute(sql).await.expect("pull query").rows
}

/// Waits until `sql` answers `expected` (returns the last answer either way).
async fn wait_for_rows(client: &Client, sql: &str, expected: &[Vec<Value>]) -> Vec<Vec<Value>> {
    let deadline = Instant::now() + Duration::from_millis(WAIT_MS_MAX);
    loop {
        let answer = rows(client, sql).await;
        if answer == expected || Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts a push query.
async fn push_query(client: &Client, sql: &str) -> PushQuery {
    match client.sql(sql).await.expect("push query") {
        SqlAnswer::Push(query) => query,
        SqlAnswer::Done(outcome) => panic!("a push query must stream, got {outcome:?}"),
    }
}

/// The acceptance flow: CREATE STREAM, CREATE VIEW, INSERT, a pull query over the view, a
/// push query that streams exactly the matching rows inserted after it started, and a
/// statement error that names its position.
#[tokio::test]
async fn statements_views_pull_and_push_queries() {
    let temp = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(temp.path(), 2);
    let client = connect_impatient(&server).await;
    client
        .execute("CREATE STREAM weather;")
        .await
        .expect("create stream");
    client
        .execute("CREATE VIEW hot AS SELECT city, COUNT(*) AS n FROM weather WHERE temp > 30 GROUP BY city;")
        .await
        .expect("create view");
    for t in [31, 35, 20] {
        client
            .execute(&format!(
                "INSERT INTO weather (city, temp) VALUES ('x', {t});"
            ))
            .await
            .expect("insert");
    }
    let hot = wait_for_rows(&client, "SELECT * FROM hot;", &[vec![json!("x"), json!(2)]]).await;
    assert_eq!(hot, vec![vec![json!("x"), json!(2)]]);

    let mut push = push_query(
        &client,
        "SELECT * FROM weather WHERE temp > 40 EMIT CHANGES;",
    )
    .await;
    for t in [41, 10, 45] {
        client
            .execute(&format!(
                "INSERT INTO weather (city, temp) VALUES ('y', {t});"
            ))
            .await
            .expect("insert");
    }
    let mut streamed = Vec::new();
    for _ in 0..2 {
        let row = push.next().await.expect("row").expect("the query runs");
        assert!(!row.retract);
        streamed.push(row.value());
    }
    assert_eq!(
        streamed,
        vec![
            json!({"city": "y", "temp": 41}),
            json!({"city": "y", "temp": 45})
        ]
    );
    drop(push);

    let error = client
        .execute("SELECT FROM WHERE;")
        .await
        .expect_err("bad SQL");
    assert_eq!(error.code(), Some(runnel_client::ErrorCode::SqlError));
    assert!(error.to_string().contains("1:"), "{error}");
    let error = client
        .execute("SELECT * FROM nowhere;")
        .await
        .expect_err("unknown stream");
    assert!(error.to_string().contains("nowhere"), "{error}");
}

/// A push query ends when its client stops it: SHOW QUERIES lists only the view afterwards,
/// and the push query's rows went to nobody else (no stream, no view was created).
#[tokio::test]
async fn a_push_query_ends_with_its_client_and_leaves_nothing() {
    let temp = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(temp.path(), 1);
    let client = connect_impatient(&server).await;
    client
        .execute("CREATE STREAM events;")
        .await
        .expect("create");
    let mut push = push_query(&client, "SELECT a FROM events EMIT CHANGES;").await;
    client
        .execute("INSERT INTO events (a) VALUES (1);")
        .await
        .expect("insert");
    let row = push.next().await.expect("row").expect("running");
    assert_eq!(row.value(), json!({"a": 1}));
    let running = rows(&client, "SHOW QUERIES;").await;
    assert_eq!(running.len(), 1, "{running:?}");
    push.cancel();
    let left = wait_for_rows(&client, "SHOW QUERIES;", &[]).await;
    assert!(left.is_empty(), "the push query was left behind: {left:?}");
    assert!(rows(&client, "SHOW VIEWS;").await.is_empty());
    let streams = rows(&client, "SHOW STREAMS;").await;
    assert_eq!(streams.len(), 1, "{streams:?}");
}

/// The view's expected rows, recomputed from the source stream's records.
fn recompute(values: &[Vec<u8>]) -> Vec<Vec<Value>> {
    let mut groups: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for value in values {
        let record: Value = serde_json::from_slice(value).expect("JSON record");
        let k = record["k"].as_i64().expect("k");
        let x = record["x"].as_i64().expect("x");
        let group = groups.entry(k).or_default();
        group.0 += 1;
        group.1 += x;
    }
    groups
        .into_iter()
        .map(|(k, (n, total))| vec![json!(k), json!(n), json!(total)])
        .collect()
}

/// A view stays exact across SIGKILLs under appends: after every restart it resumes from its
/// checkpoint (state with source offsets) and replays the rest, and finally holds exactly
/// what a recomputation from the source stream's committed records gives.
#[tokio::test]
async fn a_view_ends_exact_after_sigkill_and_restart_under_appends() {
    let temp = tempfile::tempdir().expect("temp dir");
    let mut server = TestServer::start(temp.path(), 2);
    {
        let client = connect_impatient(&server).await;
        client
            .execute("CREATE STREAM readings WITH (SHARDS = 2);")
            .await
            .expect("create");
        client
            .execute("CREATE VIEW totals AS SELECT k, COUNT(*) AS n, SUM(x) AS total FROM readings GROUP BY k;")
            .await
            .expect("view");
    }
    let mut next = 0i64;
    for _cycle in 0..3 {
        let client = connect_impatient(&server).await;
        let producer = client.producer("readings").expect("producer");
        let appends = tokio::spawn(async move {
            let mut n = next;
            loop {
                let value = json!({"k": n % 7, "x": n}).to_string().into_bytes();
                let key = n.to_le_bytes().to_vec();
                if producer
                    .send(Record::at(value, now_ms()).with_key(key))
                    .await
                    .is_err()
                {
                    return n;
                }
                n += 1;
            }
        });
        // Wait until the view has taken in some of this cycle's records, then kill.
        let deadline = Instant::now() + Duration::from_millis(WAIT_MS_MAX);
        loop {
            let seen: i64 = rows(&client, "SELECT n FROM totals;")
                .await
                .iter()
                .filter_map(|r| r.first().and_then(Value::as_i64))
                .sum();
            if seen > next + 50 || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.kill();
        next = appends.await.expect("producer task") + 1;
        drop(client);
        server.restart();
    }
    let client = connect_impatient(&server).await;
    let expected = recompute(&read_all_values(&client, "readings").await);
    assert!(!expected.is_empty());
    let answer = wait_for_rows(&client, "SELECT * FROM totals ORDER BY k;", &expected).await;
    assert_eq!(answer, expected, "the view is not exact after restarts");
}
