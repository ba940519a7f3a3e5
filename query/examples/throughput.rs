//! In-process throughput of the engine's operators (no I/O, one thread): events/s for a filter
//! and for a tumbling-window count, over records built in memory beforehand.
//!
//! `cargo run --release -p runnel-query --example throughput [records]`
//! (the library reads no clock; this example does, to time it.)

use std::time::Instant;

use runnel_query::{Engine, Record};
use serde_json::json;

fn main() {
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    // Nexmark-like bids: auction, bidder, price, event time 1 ms apart.
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            event_time_ms: i as i64,
            offset: i as u64,
            value: json!({
                "auction": (i * 7919) % 1000,
                "bidder": (i * 104729) % 5000,
                "price": (i * 31) % 1000,
                "ts": i,
            }),
        })
        .collect();
    for (name, query) in [
        ("filter", "SELECT auction, price FROM bids WHERE price > 900 EMIT CHANGES;"),
        ("project", "SELECT auction, price * 0.908 AS euros FROM bids EMIT CHANGES;"),
        (
            "tumbling count",
            "SELECT auction, COUNT(*) AS n FROM TUMBLE(bids, INTERVAL 10 SECOND) GROUP BY auction EMIT FINAL;",
        ),
    ] {
        let mut engine = Engine::new();
        engine.execute("CREATE STREAM bids WITH (TIMESTAMP = 'ts');").expect("create");
        engine.execute(query).expect("query");
        let started = Instant::now();
        let mut outputs = 0usize;
        for record in &records {
            outputs += engine.push("bids", 0, record).len();
        }
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{name:>15}: {count} events in {seconds:.3} s = {:.0} events/s ({outputs} outputs)",
            count as f64 / seconds
        );
    }
}
