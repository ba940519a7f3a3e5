//! Stream–stream joins against a recomputation: with out-of-order and late records on both
//! sides, a FULL JOIN … WITHIN emits exactly every pair of accepted records with equal keys
//! whose event times differ by at most the interval (the edge included), plus every accepted
//! record that has no such partner, NULL-padded, once; a record below the watermark is late.

mod common;

use common::Lcg;
use runnel_query::{Engine, Record};
use serde_json::json;

#[test]
fn full_join_equals_the_definition() {
    for seed in 1..=12u64 {
        let mut lcg = Lcg(seed);
        let within = 100 * (1 + seed as i64 % 3);
        // (side, id, key, time): times step 20 ms, out of order by up to 600 ms.
        let records: Vec<(usize, usize, i64, i64)> = (0..800)
            .map(|i| {
                (
                    lcg.next(2) as usize,
                    i,
                    lcg.next(8) as i64,
                    i as i64 * 20 - lcg.next(600) as i64,
                )
            })
            .collect();
        let mut engine = Engine::new();
        engine
            .execute(&format!(
                "CREATE STREAM l WITH (TIMESTAMP = 't', GRACE = INTERVAL 300 MILLISECONDS);
                 CREATE STREAM r WITH (TIMESTAMP = 't');
                 SELECT l.id AS lid, r.id AS rid FROM l FULL JOIN r ON l.k = r.k WITHIN (INTERVAL {within} MILLISECONDS) EMIT CHANGES;"
            ))
            .expect("setup");
        let mut offsets = [0u64; 2];
        let mut actual = Vec::new();
        // Two far-future records (keys that never match) flush every buffer at the end.
        let flush = [
            (0usize, 10_000, -1i64, 1_000_000i64),
            (1, 10_001, -2, 1_000_000),
        ];
        for (side, id, key, t) in records.iter().chain(flush.iter()) {
            let stream = ["l", "r"][*side];
            let record = Record {
                event_time_ms: 0,
                offset: offsets[*side],
                value: json!({"id": id, "k": key, "t": t}),
            };
            offsets[*side] += 1;
            for output in engine.push(stream, 0, &record) {
                let id = |name: &str| output.change.row.get(name).as_i64();
                actual.push((id("lid"), id("rid")));
            }
        }
        // The definition: the watermark before each record, acceptance, then pairs.
        let mut accepted = Vec::new();
        let mut max: Option<i64> = None;
        let mut late = 0;
        for record in &records {
            let watermark = max.map(|m| m - 300);
            if watermark.is_some_and(|w| record.3 < w) {
                late += 1;
            } else {
                accepted.push(*record);
            }
            max = Some(max.map_or(record.3, |m| m.max(record.3)));
        }
        let mut expected = Vec::new();
        for a in accepted.iter().filter(|a| a.0 == 0) {
            for b in accepted.iter().filter(|b| b.0 == 1) {
                if a.2 == b.2 && (a.3 - b.3).abs() <= within {
                    expected.push((Some(a.1 as i64), Some(b.1 as i64)));
                }
            }
        }
        for a in &accepted {
            let matched = accepted
                .iter()
                .any(|b| b.0 != a.0 && b.2 == a.2 && (a.3 - b.3).abs() <= within);
            if !matched {
                expected.push(if a.0 == 0 {
                    (Some(a.1 as i64), None)
                } else {
                    (None, Some(a.1 as i64))
                });
            }
        }
        expected.sort();
        actual.sort();
        assert_eq!(actual, expected, "seed {seed} within {within}");
        assert_eq!(
            engine.metrics(1).expect("query 1").records_late,
            late,
            "seed {seed}: late records"
        );
        assert!(
            late > 0
                && expected
                    .iter()
                    .filter(|p| p.0.is_some() && p.1.is_some())
                    .count()
                    > 50,
            "seed {seed}: weak workload"
        );
    }
}
