//! Consuming: create the stream and a subscription of it (if needed), join its consumer
//! group, print and ack records, and leave on Ctrl-C or after a number of records.
//!
//! Needs a running node:
//! `cargo run -p runnel-client --example consume -- [consumer-name] [records-max]`
//! (default name `example-worker`, default 1 000 records). Start several with different names
//! to see the shards spread over them; run `produce` meanwhile to have records to consume.

mod common;

use std::process::ExitCode;

use runnel_client::{ClientError, ConsumerOptions, ErrorCode, SubscriptionSpec, SubscriptionStart};

const SUBSCRIPTION: &str = "example-billing";

#[tokio::main]
async fn main() -> ExitCode {
    common::report(consume()).await
}

async fn consume() -> Result<(), ClientError> {
    let mut arguments = std::env::args().skip(1);
    let name = arguments.next().unwrap_or_else(|| "example-worker".into());
    let records_max: u64 = arguments
        .next()
        .and_then(|text| text.parse().ok())
        .unwrap_or(1_000);
    let client = common::connect("example-consume").await?;
    common::ensure_stream(&client).await?;

    let spec =
        SubscriptionSpec::new(SUBSCRIPTION, common::STREAM).start(SubscriptionStart::Earliest);
    match client.create_subscription(spec).await {
        Ok(info) => println!("created subscription {} (id {})", info.name, info.id),
        Err(error) if error.code() == Some(ErrorCode::SubscriptionExists) => {
            println!("subscription {SUBSCRIPTION} exists already")
        }
        Err(error) => return Err(error),
    }

    let mut consumer = client
        .consumer(SUBSCRIPTION, ConsumerOptions::new(name))
        .await?;
    println!(
        "joined as {} (member {}); Ctrl-C to leave",
        consumer.name(),
        consumer.member_id()
    );
    let mut assignment = Vec::new();
    let mut consumed = 0_u64;
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    while consumed < records_max {
        let delivery = tokio::select! {
            delivery = consumer.next() => delivery,
            _ = &mut stop => break,
        };
        let Some(delivery) = delivery else {
            println!("the consumer ended");
            break;
        };
        let delivery = delivery?;
        if consumer.assignment() != assignment {
            assignment = consumer.assignment();
            println!("holding shards {assignment:?}");
        }
        for item in delivery.records() {
            let (id, record) = item?;
            let marker = if delivery.is_redelivery() {
                " (again)"
            } else {
                ""
            };
            println!("{id}{marker}: {}", String::from_utf8_lossy(record.value()));
            consumed += 1;
        }
        consumer.ack_delivery(&delivery)?;
    }
    match consumer.flush_acks().await {
        Ok(summary) => println!(
            "acked {} records; committed {:?}",
            summary.records_acked, summary.committed_offsets
        ),
        // Refused acks are not lost records: those records are delivered again.
        Err(error @ ClientError::AckRefused { .. }) => eprintln!("{error}"),
        Err(error) => return Err(error),
    }
    let stats = consumer.stats();
    consumer.leave().await?;
    println!(
        "left after {} deliveries, {} records ({} redelivered), {} rejoins",
        stats.deliveries, stats.records, stats.redelivered_records, stats.rejoins
    );
    client.close().await;
    Ok(())
}
