//! Producing: one record at a time with `Producer`, then many with `BufferedProducer`.
//!
//! Needs a running node; creates the stream `example-orders` if it is missing:
//! `cargo run -p runnel-client --example produce`.

mod common;

use std::process::ExitCode;

use runnel_client::{BufferedProducerConfig, ClientError, Record};

#[tokio::main]
async fn main() -> ExitCode {
    common::report(produce()).await
}

async fn produce() -> Result<(), ClientError> {
    let client = common::connect("example-produce").await?;
    common::ensure_stream(&client).await?;

    // One request per record: simple, one round trip each. A record built without a
    // timestamp gets the producer's clock when sent.
    let producer = client.producer(common::STREAM)?;
    let id = producer
        .send(Record::new(br#"{"total": 12}"#.to_vec()).with_key(b"user-42".to_vec()))
        .await?;
    println!("stored as {id}");

    // Batched per shard in the background; `send` waits only when the buffer is full.
    let buffered = client.buffered_producer(
        common::STREAM,
        BufferedProducerConfig {
            linger_ms: 10,
            ..BufferedProducerConfig::default()
        },
    )?;
    let mut pending = Vec::new();
    for index in 0..1_000 {
        let key = format!("user-{}", index % 50);
        let value = format!(r#"{{"order": {index}}}"#);
        let record = Record::new(value.into_bytes()).with_key(key.into_bytes());
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
