//! Bounded state: a query at its group or join-buffer limit drops the records that would pass
//! it, counts them, says why, and goes on with the groups it has.

use runnel_query::{Engine, Limits, Record};
use serde_json::json;

fn record(offset: u64, value: serde_json::Value) -> Record {
    Record {
        event_time_ms: 0,
        offset,
        value,
    }
}

#[test]
fn a_new_group_past_the_limit_is_dropped_and_counted() {
    let mut engine = Engine::new();
    engine.set_limits(Limits {
        groups_max: 2,
        join_buffer_records_max: 10,
    });
    engine
        .execute("CREATE STREAM s; SELECT k, COUNT(*) AS n FROM s GROUP BY k EMIT CHANGES;")
        .expect("setup");
    let mut rows = Vec::new();
    for (offset, key) in ["a", "b", "c", "a"].into_iter().enumerate() {
        for output in engine.push("s", 0, &record(offset as u64, json!({"k": key}))) {
            rows.push(output.change.row.to_string());
        }
    }
    assert_eq!(
        rows,
        [
            r#"{"k":"a","n":1}"#,
            r#"{"k":"b","n":1}"#,
            r#"{"k":"a","n":2}"#
        ]
    );
    let metrics = engine.metrics(1).expect("query 1");
    assert_eq!(metrics.records_over_limit, 1);
    assert_eq!(
        metrics.last_error.as_deref(),
        Some("groups limit of 2 reached")
    );
}

#[test]
fn closed_windows_release_their_groups() {
    let mut engine = Engine::new();
    // Two groups at once: the open window and the next one, created before the record that
    // creates it closes the previous (a record is counted, then the watermark moves).
    engine.set_limits(Limits {
        groups_max: 2,
        join_buffer_records_max: 10,
    });
    engine
        .execute(
            "CREATE STREAM s WITH (TIMESTAMP = 'ts');
             SELECT COUNT(*) AS n, window_start FROM TUMBLE(s, INTERVAL 1 SECOND) EMIT FINAL;",
        )
        .expect("setup");
    let mut rows = Vec::new();
    for (offset, ts) in [0, 500, 1000, 2000, 3000, 3500].into_iter().enumerate() {
        for output in engine.push("s", 0, &record(offset as u64, json!({"ts": ts}))) {
            rows.push(output.change.row.to_string());
        }
    }
    assert_eq!(
        rows,
        [
            r#"{"n":2,"window_start":0}"#,
            r#"{"n":1,"window_start":1000}"#,
            r#"{"n":1,"window_start":2000}"#
        ]
    );
    assert_eq!(engine.metrics(1).expect("query 1").records_over_limit, 0);
}

#[test]
fn a_full_join_buffer_drops_the_record_from_the_buffer_only() {
    let mut engine = Engine::new();
    engine
        .execute(
            "CREATE STREAM a WITH (TIMESTAMP = 't'); CREATE STREAM b WITH (TIMESTAMP = 't');
             SELECT a.k AS k FROM a JOIN b ON a.k = b.k WITHIN (INTERVAL 1 MINUTE) EMIT CHANGES;",
        )
        .expect("setup");
    engine.set_limits(Limits {
        groups_max: 10,
        join_buffer_records_max: 1,
    });
    assert!(engine
        .push("a", 0, &record(0, json!({"k": 1, "t": 0})))
        .is_empty());
    assert!(engine
        .push("a", 0, &record(1, json!({"k": 2, "t": 0})))
        .is_empty());
    // b's record still meets what a buffered (k = 1) but k = 2 was never kept.
    assert_eq!(
        engine
            .push("b", 0, &record(0, json!({"k": 1, "t": 0})))
            .len(),
        1
    );
    assert!(engine
        .push("b", 0, &record(1, json!({"k": 2, "t": 0})))
        .is_empty());
    let metrics = engine.metrics(1).expect("query 1");
    assert_eq!(
        metrics.records_over_limit, 2,
        "a's k = 2 and b's second record"
    );
}
