//! Windows against a recomputation: for seeded out-of-order workloads with late records, the
//! engine's EMIT FINAL rows (TUMBLE and HOP) and its view (EMIT CHANGES, open windows included)
//! equal what a brute-force oracle computes from the definition: watermark = max event time
//! seen before the record − grace; a record goes to each of its windows `[start, end)` whose
//! end is above the watermark; a window is final, and emitted once, when the watermark ≥ end.

use std::collections::BTreeMap;

mod common;

use common::Lcg;
use runnel_query::{ChangeKind, Effect, Engine, Record, Sink};
use serde_json::{json, Value};

/// (window start, window end, key) -> (count, sum)
type Table = BTreeMap<(i64, i64, String), (i64, i64)>;

fn windows(ts: i64, size: i64, advance: i64) -> Vec<(i64, i64)> {
    let mut all = Vec::new();
    let mut start = ts.div_euclid(advance) * advance;
    while start + size > ts {
        all.push((start, start + size));
        start -= advance;
    }
    all
}

/// The definition, computed the slow way: returns every accepted window's totals, the windows
/// final at the end, and the number of records late for at least one window.
fn oracle(
    records: &[(i64, String, i64)],
    grace: i64,
    size: i64,
    advance: i64,
) -> (Table, Table, u64) {
    let mut table = Table::new();
    let mut max: Option<i64> = None;
    let mut late = 0;
    for (ts, key, v) in records {
        let watermark = max.map(|m| m - grace);
        let mut dropped = false;
        for (start, end) in windows(*ts, size, advance) {
            if watermark.is_some_and(|w| w >= end) {
                dropped = true;
                continue;
            }
            let entry = table.entry((start, end, key.clone())).or_default();
            entry.0 += 1;
            entry.1 += v;
        }
        late += u64::from(dropped);
        max = Some(max.map_or(*ts, |m| m.max(*ts)));
    }
    let watermark = max.map_or(i64::MIN, |m| m - grace);
    let finals = table
        .iter()
        .filter(|((_, end, _), _)| *end <= watermark)
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    (table, finals, late)
}

fn row_entry(row: &runnel_query::Row) -> ((i64, i64, String), (i64, i64)) {
    let int = |name: &str| {
        row.get(name)
            .as_i64()
            .unwrap_or_else(|| panic!("{name} in {row}"))
    };
    let key = row
        .get("k")
        .as_str()
        .unwrap_or_else(|| panic!("k in {row}"))
        .to_string();
    (
        (int("window_start"), int("window_end"), key),
        (int("n"), int("s")),
    )
}

#[test]
fn tumble_and_hop_equal_the_definition() {
    for seed in 1..=12u64 {
        let mut lcg = Lcg(seed);
        let grace = [0i64, 250, 1000, 3000][(seed % 4) as usize];
        let records: Vec<(i64, String, i64)> = (0..1500)
            .map(|i| {
                let jitter = lcg.next(2500) as i64 + if lcg.next(40) == 0 { 5000 } else { 0 };
                (
                    i * 20 - jitter,
                    format!("k{}", lcg.next(5)),
                    lcg.next(10) as i64,
                )
            })
            .collect();
        let mut engine = Engine::new();
        let setup = format!(
            "CREATE STREAM s WITH (TIMESTAMP = 'ts');
             SELECT k, COUNT(*) AS n, SUM(v) AS s, window_start, window_end FROM TUMBLE(s, INTERVAL 1 SECOND)
               GROUP BY k GRACE PERIOD INTERVAL {grace} MILLISECONDS EMIT FINAL;
             SELECT k, COUNT(*) AS n, SUM(v) AS s, window_start, window_end FROM HOP(s, INTERVAL 2 SECOND, INTERVAL 500 MILLISECOND)
               GROUP BY k GRACE PERIOD INTERVAL {grace} MILLISECONDS EMIT FINAL;
             CREATE VIEW v AS SELECT k, COUNT(*) AS n, SUM(v) AS s, window_start, window_end FROM TUMBLE(s, INTERVAL 1 SECOND)
               GROUP BY k GRACE PERIOD INTERVAL {grace} MILLISECONDS;"
        );
        engine.execute(&setup).expect("setup");
        let mut finals: [Table; 2] = [Table::new(), Table::new()];
        for (offset, (ts, key, v)) in records.iter().enumerate() {
            let record = Record {
                event_time_ms: 0,
                offset: offset as u64,
                value: json!({"ts": ts, "k": key, "v": v}),
            };
            for output in engine.push("s", 0, &record) {
                assert_eq!(output.sink, Sink::Client);
                assert_eq!(
                    output.change.kind,
                    ChangeKind::Insert,
                    "EMIT FINAL never retracts"
                );
                let (window, totals) = row_entry(&output.change.row);
                let table = &mut finals[(output.query - 1) as usize];
                assert!(
                    table.insert(window.clone(), totals).is_none(),
                    "seed {seed}: {window:?} emitted twice"
                );
            }
        }
        for (index, advance) in [(0usize, 1000i64), (1, 500)] {
            let size = if index == 0 { 1000 } else { 2000 };
            let (all, expected_finals, late) = oracle(&records, grace, size, advance);
            assert_eq!(
                finals[index],
                expected_finals,
                "seed {seed} grace {grace}: query {} finals",
                index + 1
            );
            let metrics = engine.metrics(index as u64 + 1).expect("metrics");
            assert_eq!(
                metrics.records_late,
                late,
                "seed {seed}: late count of query {}",
                index + 1
            );
            assert!(
                late > 0 || grace >= 3000,
                "seed {seed}: the workload should have late records"
            );
            if index == 0 {
                let Effect::Rows { rows, columns } =
                    &engine.execute("SELECT * FROM v;").expect("pull")[0]
                else {
                    panic!("pull returns rows")
                };
                let view: Table = rows
                    .iter()
                    .map(|r| {
                        runnel_query::Row(
                            columns
                                .iter()
                                .cloned()
                                .zip(r.iter().cloned())
                                .collect::<Vec<(String, Value)>>(),
                        )
                    })
                    .map(|r| row_entry(&r))
                    .collect();
                assert_eq!(
                    view, all,
                    "seed {seed}: the view is every accepted record, open windows included"
                );
            }
        }
    }
}

/// Feeds the records, then one far in the future that closes every session; returns the
/// rows the query emitted as (key, window_start, window_end, n).
fn emitted_sessions(
    engine: &mut Engine,
    records: &[(i64, String)],
) -> Vec<(String, i64, i64, i64)> {
    let mut rows = Vec::new();
    let flush = (1_000_000_000i64, "flush".to_string());
    for (offset, (ts, key)) in records.iter().chain([&flush]).enumerate() {
        let record = Record {
            event_time_ms: 0,
            offset: offset as u64,
            value: json!({"ts": ts, "k": key}),
        };
        for output in engine.push("s", 0, &record) {
            let row = &output.change.row;
            let int = |name: &str| row.get(name).as_i64().unwrap_or(i64::MIN);
            let key = row.get("k").as_str().unwrap_or_default().to_string();
            rows.push((key, int("window_start"), int("window_end"), int("n")));
        }
    }
    rows
}

/// Sessions of one key, the slow way: sort the times and cut where two neighbours are `gap`
/// or more apart; a session is `[first, last + gap)` with its count.
fn sessions(mut times: Vec<i64>, gap: i64) -> Vec<(i64, i64, i64)> {
    times.sort_unstable();
    let mut all: Vec<(i64, i64, i64)> = Vec::new();
    for t in times {
        match all.last_mut() {
            Some((_, end, n)) if t < *end => {
                *end = (*end).max(t + gap);
                *n += 1;
            }
            _ => all.push((t, t + gap, 1)),
        }
    }
    all
}

/// Session windows against the definition: records arrive out of order (never beyond the
/// grace, so none is late), sessions merge when a record bridges them, and in the end the
/// EMIT FINAL rows and the view (EMIT CHANGES with its retractions applied) both hold exactly
/// the sessions a sort of each key's times gives.
#[test]
fn sessions_equal_the_definition() {
    for seed in 1..=12u64 {
        let mut lcg = Lcg(seed);
        let gap = 300 + 100 * (seed as i64 % 4);
        let grace = 2000;
        // Out of order by less than the grace (none late), with a pause every 100 records so
        // sessions end as well as merge.
        let records: Vec<(i64, String)> = (0..1200)
            .map(|i| {
                let t = i * 25 + (i / 100) * 1000 - lcg.next(grace as u64 - 1) as i64;
                (t, format!("k{}", lcg.next(4)))
            })
            .filter(|(t, _)| *t >= 0)
            .collect();
        let mut engine = Engine::new();
        engine
            .execute(&format!(
                "CREATE STREAM s WITH (TIMESTAMP = 'ts', GRACE = INTERVAL {grace} MILLISECONDS);
                 SELECT k, COUNT(*) AS n, window_start, window_end FROM SESSION(s, INTERVAL {gap} MILLISECONDS) GROUP BY k EMIT FINAL;
                 CREATE VIEW v AS SELECT k, COUNT(*) AS n, window_start, window_end FROM SESSION(s, INTERVAL {gap} MILLISECONDS) GROUP BY k;"
            ))
            .expect("setup");
        let mut finals = emitted_sessions(&mut engine, &records);
        assert_eq!(
            engine.metrics(1).expect("query 1").records_late,
            0,
            "seed {seed}: nothing is late"
        );
        let mut by_key: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for (t, key) in &records {
            by_key.entry(key.clone()).or_default().push(*t);
        }
        let mut expected: Vec<(String, i64, i64, i64)> = by_key
            .into_iter()
            .flat_map(|(key, times)| {
                sessions(times, gap)
                    .into_iter()
                    .map(move |(s, e, n)| (key.clone(), s, e, n))
            })
            .collect();
        expected.sort();
        finals.sort();
        assert_eq!(
            finals, expected,
            "seed {seed} gap {gap}: EMIT FINAL sessions"
        );
        let Effect::Rows { rows, .. } = &engine
            .execute("SELECT k, window_start, window_end, n FROM v WHERE k <> 'flush';")
            .expect("pull")[0]
        else {
            panic!("pull returns rows")
        };
        let mut view: Vec<(String, i64, i64, i64)> = rows
            .iter()
            .map(|r| {
                (
                    r[0].as_str().unwrap_or_default().to_string(),
                    r[1].as_i64().unwrap_or(0),
                    r[2].as_i64().unwrap_or(0),
                    r[3].as_i64().unwrap_or(0),
                )
            })
            .collect();
        view.sort();
        assert_eq!(view, expected, "seed {seed} gap {gap}: the view's sessions");
        assert!(
            expected.len() > 20 && expected.iter().any(|s| s.3 > 3),
            "seed {seed}: the workload should make many and long sessions"
        );
    }
}

/// With records out of order by more than the grace, some are late; still, the sessions a key
/// emits never overlap (a record never reopens or extends a session already emitted), and
/// every record is either counted in exactly one emitted session or counted as late.
#[test]
fn late_records_never_make_overlapping_sessions() {
    for seed in 1..=12u64 {
        let mut lcg = Lcg(seed);
        let records: Vec<(i64, String)> = (0..1200)
            .map(|i| {
                (
                    i * 25 + (lcg.next(60) as i64) * 20 - lcg.next(1999) as i64,
                    format!("k{}", lcg.next(4)),
                )
            })
            .collect();
        let mut engine = Engine::new();
        engine
            .execute(
                "CREATE STREAM s WITH (TIMESTAMP = 'ts');
                 SELECT k, COUNT(*) AS n, window_start, window_end FROM SESSION(s, INTERVAL 400 MILLISECONDS)
                   GROUP BY k GRACE PERIOD INTERVAL 1 SECOND EMIT FINAL;",
            )
            .expect("setup");
        let mut emitted: BTreeMap<String, Vec<(i64, i64, i64)>> = BTreeMap::new();
        for (key, start, end, n) in emitted_sessions(&mut engine, &records) {
            emitted.entry(key).or_default().push((start, end, n));
        }
        let late = engine.metrics(1).expect("query 1").records_late;
        assert!(
            late > 0,
            "seed {seed}: the workload should have late records"
        );
        let mut counted = 0;
        for (key, mut sessions) in emitted {
            sessions.sort_unstable();
            for pair in sessions.windows(2) {
                assert!(
                    pair[0].1 <= pair[1].0,
                    "seed {seed}: {key}'s sessions {:?} and {:?} overlap",
                    pair[0],
                    pair[1]
                );
            }
            counted += sessions.iter().map(|s| s.2).sum::<i64>();
        }
        assert_eq!(
            counted as u64 + late,
            records.len() as u64,
            "seed {seed}: every record is in one session or late"
        );
    }
}
