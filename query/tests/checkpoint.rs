//! Checkpoints are exact: for every seed, running half of a workload, snapshotting the engine
//! to JSON, restoring a new engine from it and running the rest (re-sending the last records
//! before the snapshot, as a server replaying from slightly older offsets would) gives the same
//! outputs, the same view and the same counters as one uninterrupted run.

mod common;

use common::Lcg;
use runnel_query::{Effect, Engine, Record, Snapshot};
use serde_json::{json, Value};

const SETUP: &str = "
CREATE STREAM clicks WITH (TIMESTAMP = 'ts', GRACE = INTERVAL 3 SECOND);
CREATE STREAM pages WITH (TIMESTAMP = 'ts');
CREATE STREAM out_final AS SELECT user, COUNT(*) AS n, SUM(v) AS s, window_start
  FROM TUMBLE(clicks, INTERVAL 5 SECOND) GROUP BY user EMIT FINAL;
CREATE STREAM out_hop AS SELECT user, MAX(v) AS m, window_start
  FROM HOP(clicks, INTERVAL 6 SECOND, INTERVAL 2 SECOND) GROUP BY user;
CREATE STREAM out_session AS SELECT user, COUNT(*) AS n, window_start, window_end
  FROM SESSION(clicks, INTERVAL 2 SECOND) GROUP BY user;
CREATE STREAM out_having AS SELECT user, COUNT(*) AS n FROM clicks GROUP BY user HAVING COUNT(*) % 3 <> 0;
CREATE VIEW per_user AS SELECT user, COUNT(*) AS n, AVG(v) AS avg, window_start
  FROM TUMBLE(clicks, INTERVAL 5 SECOND) GROUP BY user;
CREATE STREAM out_join AS SELECT c.user AS user, c.v AS v, p.page AS page
  FROM clicks c FULL JOIN pages p ON c.user = p.user WITHIN (INTERVAL 1 SECOND);
";

/// (stream, shard, record): out of order by up to 2.5 s, some beyond the 3 s grace.
fn workload(seed: u64, count: usize) -> Vec<(&'static str, u32, Record)> {
    let mut lcg = Lcg(seed);
    let mut offsets = [[0u64; 2]; 2];
    (0..count)
        .map(|i| {
            let user = format!("u{}", lcg.next(4));
            let shard = u32::from(user.ends_with('1') || user.ends_with('3'));
            let ts = (i as i64) * 100 - lcg.next(3500) as i64
                + if lcg.next(50) == 0 { -6000 } else { 0 };
            let (stream, value) = if lcg.next(4) == 0 {
                (
                    "pages",
                    json!({"user": user, "page": format!("p{}", lcg.next(9)), "ts": ts}),
                )
            } else {
                (
                    "clicks",
                    json!({"user": user, "v": lcg.next(100), "ts": ts}),
                )
            };
            let which = usize::from(stream == "pages");
            let offset = &mut offsets[which][shard as usize];
            let record = Record {
                event_time_ms: 0,
                offset: *offset,
                value,
            };
            *offset += 1;
            (stream, shard, record)
        })
        .collect()
}

fn feed(engine: &mut Engine, records: &[(&str, u32, Record)], outputs: &mut Vec<String>) {
    for (stream, shard, record) in records {
        for output in engine.push(stream, *shard, record) {
            outputs.push(format!(
                "q{} {:?} {}",
                output.query, output.sink, output.change
            ));
        }
    }
}

fn observe(engine: &mut Engine) -> (Vec<Effect>, Vec<String>) {
    let view = engine
        .execute("SELECT * FROM per_user ORDER BY window_start, user;")
        .expect("pull");
    let metrics = (1..=6)
        .map(|id| format!("{:?}", engine.metrics(id)))
        .collect();
    (view, metrics)
}

#[test]
fn half_snapshot_restore_rest_equals_all() {
    for seed in 1..=8u64 {
        let records = workload(seed, 600);
        let mut whole = Engine::new();
        whole.execute(SETUP).expect("setup");
        let mut expected = Vec::new();
        feed(&mut whole, &records, &mut expected);

        let half = records.len() / 2;
        let mut first = Engine::new();
        first.execute(SETUP).expect("setup");
        let mut actual = Vec::new();
        feed(&mut first, &records[..half], &mut actual);
        let text = serde_json::to_string(&first.snapshot()).expect("serialise");
        drop(first);
        let snapshot: Snapshot = serde_json::from_str(&text).expect("deserialise");
        let mut resumed = Engine::restore(snapshot).expect("restore");
        // Replay from 25 records before the snapshot: those are skipped by offset.
        feed(&mut resumed, &records[half - 25..], &mut actual);

        assert_eq!(actual, expected, "seed {seed}: outputs differ");
        assert_eq!(
            observe(&mut resumed),
            observe(&mut whole),
            "seed {seed}: view or counters differ"
        );
        assert!(
            expected.len() > 300,
            "seed {seed}: workload too small to prove anything"
        );
    }
}

#[test]
fn workload_exercises_late_records_and_retractions() {
    let records = workload(3, 600);
    let mut engine = Engine::new();
    engine.execute(SETUP).expect("setup");
    let mut outputs = Vec::new();
    feed(&mut engine, &records, &mut outputs);
    let late = engine.metrics(1).expect("query 1").records_late;
    assert!(late > 0, "no late records: the lateness path is untested");
    assert!(outputs.iter().any(|o| o.contains(" - {")), "no retractions");
    assert!(
        outputs.iter().any(|o| o.contains("\"page\":null")),
        "no outer-join padding"
    );
    assert!(
        outputs.iter().any(|o| o.contains("\"v\":null")),
        "no right-side padding in the full join"
    );
    let Effect::Rows { rows, .. } = &engine.execute("SELECT * FROM per_user;").expect("pull")[0]
    else {
        panic!("a pull query returns rows");
    };
    assert!(rows.len() > 10);
    let _: &Value = &rows[0][0];
}
