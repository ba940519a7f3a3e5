//! Reading: every shard of a stream from the earliest record, then tailing one shard.
//!
//! Needs a running node; creates the stream `example-orders` if it is missing (then it reads
//! nothing until `produce` runs): `cargo run -p runnel-client --example read`.

mod common;

use std::process::ExitCode;
use std::time::Duration;

use futures_core::Stream;
use runnel_client::{ClientError, ReadFrom};

#[tokio::main]
async fn main() -> ExitCode {
    common::report(read()).await
}

async fn read() -> Result<(), ClientError> {
    let client = common::connect("example-read").await?;
    common::ensure_stream(&client).await?;
    let shards = client.list_shards(common::STREAM).await?;

    for shard in &shards {
        let mut reader = client.reader(common::STREAM, shard.id, ReadFrom::Earliest, None)?;
        let mut count = 0;
        while let Some(batch) = reader.next_batch().await? {
            for item in batch.records() {
                let (id, record) = item?;
                if count < 3 {
                    println!("{id}: {}", String::from_utf8_lossy(record.value()));
                }
                count += 1;
            }
        }
        println!(
            "shard {}: {count} records, ended {:?}",
            shard.id,
            reader.end()
        );
    }

    // Tail the first shard for a few seconds, as a stream of owned records.
    if let Some(shard) = shards.first() {
        let reader = client
            .reader(common::STREAM, shard.id, ReadFrom::Latest, None)?
            .tail(true);
        let mut records = reader.into_stream();
        let deadline = tokio::time::sleep(Duration::from_secs(5));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                item = next(&mut records) => match item {
                    Some(Ok((id, record))) => println!("new {id}: {} bytes", record.value.len()),
                    Some(Err(error)) => return Err(error),
                    None => break,
                },
                () = &mut deadline => break,
            }
        }
    }
    client.close().await;
    Ok(())
}

/// The next item of a stream (what `StreamExt::next` does, without the extra dependency).
async fn next<S: Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *stream).poll_next(cx)).await
}
