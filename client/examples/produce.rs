//! Producing: one record at a time with `Producer`, then many with `BufferedProducer`.
//!
//! Needs a running node; creates the stream `example-orders` if it is missing:
//! `cargo run -p runnel-client --example produce`.

mod common;

use std::io::Write;
use std::process::ExitCode;

use runnel_client::{BorrowedRecord, BufferedProducerConfig, ClientError, Record};

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

    // Batched per shard in the background; `send` waits only when the buffer is full. Each
    // record is encoded into its batch at once, so it can be borrowed: the key and value
    // buffers below are reused, and the producer allocates nothing per record.
    let buffered = client.buffered_producer(
        common::STREAM,
        BufferedProducerConfig {
            linger_ms: 10,
            ..BufferedProducerConfig::default()
        },
    )?;
    let mut pending = Vec::new();
    let (mut key, mut value) = (Vec::new(), Vec::new());
    for index in 0..1_000 {
        key.clear();
        value.clear();
        write!(key, "user-{}", index % 50).expect("writing to a vector");
        write!(value, r#"{{"order": {index}}}"#).expect("writing to a vector");
        let record = BorrowedRecord::new(&value).with_key(&key);
        pending.push(buffered.send_borrowed(record).await?);
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
