//! The fault model: any statement text and any record may be wrong, and the answer is a typed
//! error or a counted record, never a panic. Seeded soups of SQL tokens go through `execute`,
//! and records of every JSON shape (huge numbers, wrong types, deep nesting) through queries
//! that use every operator kind.

mod common;

use common::Lcg;
use runnel_query::{Engine, Record};
use serde_json::{json, Value};

const WORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP",
    "BY",
    "HAVING",
    "EMIT",
    "CHANGES",
    "FINAL",
    "CREATE",
    "STREAM",
    "VIEW",
    "AS",
    "INSERT",
    "INTO",
    "VALUES",
    "DROP",
    "IF",
    "EXISTS",
    "SHOW",
    "STREAMS",
    "QUERIES",
    "TERMINATE",
    "PAUSE",
    "RESUME",
    "QUERY",
    "EXPLAIN",
    "TUMBLE",
    "HOP",
    "SESSION",
    "INTERVAL",
    "SECOND",
    "GRACE",
    "PERIOD",
    "WITHIN",
    "JOIN",
    "LEFT",
    "FULL",
    "ON",
    "WITH",
    "CAST",
    "INTEGER",
    "COUNT",
    "SUM",
    "TOPK",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "NULL",
    "AND",
    "OR",
    "NOT",
    "IS",
    "s",
    "v",
    "x",
    "k",
    "ts",
    "(",
    ")",
    ",",
    ";",
    "*",
    "+",
    "-",
    "/",
    "%",
    "=",
    "<",
    ">",
    "<>",
    "->",
    "->>",
    "#>",
    "::",
    "'10'",
    "'{a,0}'",
    "0",
    "1",
    "-9223372036854775808",
    "9223372036854775807",
    "1e308",
    "'x'",
    "LIMIT",
    "ORDER",
];

#[test]
fn token_soups_never_panic() {
    let mut lcg = Lcg(7);
    let mut engine = Engine::new();
    engine
        .execute(
            "CREATE STREAM s WITH (TIMESTAMP = 'ts'); CREATE STREAM x;
             CREATE VIEW v AS SELECT k, COUNT(*) AS n FROM s GROUP BY k;",
        )
        .expect("setup");
    let mut accepted = 0;
    for _ in 0..20_000 {
        let length = 1 + lcg.next(24) as usize;
        let text: Vec<&str> = (0..length)
            .map(|_| WORDS[lcg.next(WORDS.len() as u64) as usize])
            .collect();
        if engine.execute(&text.join(" ")).is_ok() {
            accepted += 1;
        }
    }
    // Well-formed statements still run after 20,000 bad ones.
    engine
        .execute("SELECT * FROM v;")
        .expect("the engine still answers");
    assert!(
        accepted > 0,
        "no soup was a statement: the vocabulary is too poor to test much"
    );
}

fn value(lcg: &mut Lcg, depth: u32) -> Value {
    match lcg.next(if depth > 2 { 9 } else { 11 }) {
        0 => Value::Null,
        1 => json!(i64::MAX),
        2 => json!(i64::MIN),
        3 => json!(u64::MAX),
        4 => json!(1e300),
        5 => json!(-0.5),
        6 => json!(lcg.next(1000) as i64 - 500),
        7 => json!("x%_é"),
        8 => json!(lcg.next(2) == 0),
        9 => Value::Array((0..lcg.next(4)).map(|_| value(lcg, depth + 1)).collect()),
        _ => json!({"a": value(lcg, depth + 1), "k": value(lcg, depth + 1)}),
    }
}

#[test]
fn records_of_any_shape_never_panic() {
    let mut engine = Engine::new();
    engine
        .execute(
            "CREATE STREAM s WITH (TIMESTAMP = 'ts', GRACE = INTERVAL 1 SECOND);
             CREATE STREAM o WITH (TIMESTAMP = 'ts');
             SELECT v + 1 AS a, v * v AS b, -v AS c, v / 3 AS d, v % 7 AS e, ABS(v) AS f, CAST(v AS INTEGER) AS g,
                    v::string AS h, UPPER(v) AS i, v->'a' AS j, v#>>'{a,0}' AS l, DATE_STR(v) AS m, DATE_TRUNC('day', v) AS n,
                    SUBSTR(v, v, v) AS p, v LIKE '%x' AS q, v IN (1, 'x') AS r, CASE WHEN v > 0 THEN 1 END AS t
             FROM s EMIT CHANGES;
             SELECT k, COUNT(v), SUM(v), AVG(v), MIN(v), MAX(v), TOPK(v, 2) FROM TUMBLE(s, INTERVAL 1 SECOND) GROUP BY k EMIT FINAL;
             SELECT k, SUM(v) FROM SESSION(s, INTERVAL 1 SECOND) GROUP BY k HAVING SUM(v) > 0 EMIT CHANGES;
             SELECT s.v, o.v FROM s FULL JOIN o ON s.k = o.k WITHIN (INTERVAL 1 SECOND) EMIT CHANGES;",
        )
        .expect("setup");
    let mut lcg = Lcg(11);
    for offset in 0..20_000u64 {
        let ts = match lcg.next(20) {
            0 => value(&mut lcg, 0),
            1 => json!(i64::MAX - lcg.next(10) as i64),
            2 => json!(i64::MIN + lcg.next(10) as i64),
            _ => json!(offset as i64 * 10 - lcg.next(3000) as i64),
        };
        let record = Record {
            event_time_ms: 0,
            offset,
            value: json!({"ts": ts, "v": value(&mut lcg, 0), "k": value(&mut lcg, 2)}),
        };
        let stream = if lcg.next(3) == 0 { "o" } else { "s" };
        let _ = engine.push(stream, 0, &record);
    }
    let failed: u64 = (1..=4)
        .map(|q| engine.metrics(q).expect("metrics").records_failed)
        .sum();
    assert!(failed > 0, "bad records must be counted as failed");
}
