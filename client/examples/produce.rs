//! Producing: one record at a time with `Producer`, then many with `BufferedProducer`.
//!
//! Needs a running node and the stream of the `admin` example:
//! `cargo run -p runnel-client --example produce`.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use runnel_client::{BufferedProducerConfig, ClientError, Record};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let client = common::connect("example-produce").await?;

    // One request per record: simple, one round trip each.
    let producer = client.producer("example-orders")?;
    let id = producer
        .send(Record::new(br#"{"total": 12}"#.to_vec(), now_ms()).with_key(b"user-42".to_vec()))
        .await?;
    println!("stored as {id}");

    // Batched per shard in the background; `send` waits only when the buffer is full.
    let buffered = client.buffered_producer(
        "example-orders",
        BufferedProducerConfig {
            linger_ms: 10,
            ..BufferedProducerConfig::default()
        },
    )?;
    let mut pending = Vec::new();
    for index in 0..1_000 {
        let key = format!("user-{}", index % 50);
        let value = format!(r#"{{"order": {index}}}"#);
        let record = Record::new(value.into_bytes(), now_ms()).with_key(key.into_bytes());
        pending.push(buffered.send(record).await?);
    }
    buffered.close().await?;
    let mut stored = 0;
    for future in pending {
        match future.await {
            Ok(_) => stored += 1,
            // Stored or not: do not blindly resend, or it may be stored twice.
            Err(error @ ClientError::OutcomeUnknown { .. }) => eprintln!("unknown: {error}"),
            Err(error) => eprintln!("failed: {error}"),
        }
    }
    println!("{stored} of 1000 records stored");
    client.close().await;
    Ok(())
}
