//! `runnel-bench subscribe`: shared subscriptions on a node over QUIC on loopback, in one run.
//!
//! 1. **Backlog consume throughput**: a backlog of 1 KiB records is appended (buffered
//!    producers, `fsync`), then one consumer of a subscription starting at the earliest record
//!    receives and acks all of it; records/s and MB/s from the join to the last record. The
//!    same backlog is then read by stateless readers, one per shard in turn, and the ratio
//!    consume / read says what delivery, acks and progress cost over a plain read.
//! 2. **End-to-end latency** at a fixed rate (default 20k records/s of 1 KiB, `fsync`): each
//!    request of records is scheduled on a fixed timetable and carries its scheduled time in
//!    its values; the consumer records, for every record, the time from its scheduled append
//!    to its delivery (so coordinated omission is corrected: a late append counts its delay).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use runnel_client::{
    Client, ConsumerOptions, Durability, ReadFrom, Record, StreamSpec, SubscriptionSpec,
    SubscriptionStart,
};

use crate::args::SubscribeArgs;
use crate::in_process_node::BenchNode;
use crate::systems::runnel::throughput;
use crate::systems::Workload;

const MB: f64 = 1_000_000.0;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn max_unacked(args: &SubscribeArgs) -> Result<u32, String> {
    u32::try_from(args.max_unacked_records).map_err(|_| "--max-unacked-records is too large".into())
}

/// Bytes this process has read from block devices so far (`read_bytes` of `/proc/self/io`;
/// the node runs in this process, and its O_DIRECT reads count). `None` where not available.
fn disk_read_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|line| line.strip_prefix("read_bytes:"))
        .and_then(|value| value.trim().parse().ok())
}

/// MiB read from the disk since `before` (a `disk_read_bytes` figure), for printing.
fn disk_read_mib(before: Option<u64>) -> String {
    match (before, disk_read_bytes()) {
        (Some(before), Some(after)) => {
            format!(
                "{:.1} MiB",
                after.saturating_sub(before) as f64 / (1 << 20) as f64
            )
        }
        _ => "unknown".into(),
    }
}

/// Phase 1: appends the backlog, then consumes and acks it with one consumer, and reads it
/// with readers: consume first in even rounds, read first in odd ones, so that neither always
/// meets the disk still busy with the appends.
async fn backlog(
    client: &Client,
    args: &SubscribeArgs,
    shards: u32,
    round: usize,
) -> Result<Backlog, String> {
    let stream = &format!("bench-backlog-{round}");
    let subscription = &format!("bench-backlog-sub-{round}");
    client
        .create_stream(StreamSpec::new(stream, Durability::Fsync).shard_count(shards))
        .await
        .map_err(|e| format!("create {stream}: {e}"))?;
    let workload = Workload {
        record_bytes: args.record_bytes,
        records: args.bytes / args.record_bytes as u64,
        producers: args.producers,
        in_flight: args.in_flight,
        batch_records: 500,
    };
    let elapsed = throughput(client, &[stream.to_string()], workload).await?;
    let records = workload.records_per_producer() * workload.producers as u64;
    let produce_mb = (records * args.record_bytes as u64) as f64 / MB / elapsed.as_secs_f64();
    println!(
        "backlog appended: {records} records ({} MiB) at {produce_mb:.1} MB/s",
        (records * args.record_bytes as u64) >> 20
    );
    client
        .create_subscription(
            SubscriptionSpec::new(subscription, stream)
                .start(SubscriptionStart::Earliest)
                .max_unacked_records(max_unacked(args)?),
        )
        .await
        .map_err(|e| format!("create subscription: {e}"))?;
    let (consumed, read) = if round.is_multiple_of(2) {
        let consumed = consume(client, subscription, records).await?;
        (consumed, read(client, stream).await?)
    } else {
        let read = read(client, stream).await?;
        (consume(client, subscription, records).await?, read)
    };
    let (received, bytes, seconds, redelivered, consume_disk) = consumed;
    let (read, read_seconds, read_disk) = read;
    Ok(Backlog {
        records_per_second: received as f64 / seconds,
        mb_per_second: bytes as f64 / MB / seconds,
        redelivered,
        read_records_per_second: read as f64 / read_seconds,
        consume_disk,
        read_disk,
    })
}

/// One consumer receives and acks `records` records of `subscription`: (records, value bytes,
/// seconds, records redelivered, read from the disk meanwhile).
async fn consume(
    client: &Client,
    subscription: &str,
    records: u64,
) -> Result<(u64, u64, f64, u64, String), String> {
    let disk = disk_read_bytes();
    let started = Instant::now();
    let mut consumer = client
        .consumer(subscription, ConsumerOptions::new("bench"))
        .await
        .map_err(|e| format!("join: {e}"))?;
    let mut received = 0u64;
    let mut bytes = 0u64;
    while received < records {
        let delivery = consumer
            .next()
            .await
            .ok_or("the consumer ended")?
            .map_err(|e| format!("consume: {e}"))?;
        for item in delivery.records() {
            let (_, record) = item.map_err(|e| e.to_string())?;
            bytes += record.value().len() as u64;
            received += 1;
        }
        consumer
            .ack_delivery(&delivery)
            .map_err(|e| format!("ack: {e}"))?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let disk = disk_read_mib(disk);
    let redelivered = consumer.stats().redelivered_records;
    consumer
        .flush_acks()
        .await
        .map_err(|e| format!("acks: {e}"))?;
    consumer.leave().await.map_err(|e| format!("leave: {e}"))?;
    Ok((received, bytes, seconds, redelivered, disk))
}

/// Readers read every shard of `stream`, one after the other: (records, seconds, read from the
/// disk meanwhile).
async fn read(client: &Client, stream: &str) -> Result<(u64, f64, String), String> {
    let disk = disk_read_bytes();
    let started = Instant::now();
    let mut read = 0u64;
    for shard in client
        .list_shards(stream)
        .await
        .map_err(|e| e.to_string())?
    {
        let mut reader = client
            .reader(stream, shard.id, ReadFrom::Earliest, None)
            .map_err(|e| e.to_string())?;
        while let Some(batch) = reader.next_batch().await.map_err(|e| e.to_string())? {
            for item in batch.records() {
                item.map_err(|e| e.to_string())?;
                read += 1;
            }
        }
    }
    Ok((read, started.elapsed().as_secs_f64(), disk_read_mib(disk)))
}

/// What the backlog phase measured.
struct Backlog {
    records_per_second: f64,
    mb_per_second: f64,
    redelivered: u64,
    /// The same backlog read by readers, one shard after the other.
    read_records_per_second: f64,
    /// Read from the disk while consuming, and while reading.
    consume_disk: String,
    read_disk: String,
}

/// Phase 2: append-to-delivery latency at a fixed rate.
async fn latency(
    client: &Client,
    args: &SubscribeArgs,
    shards: u32,
) -> Result<(Histogram<u64>, Histogram<u64>, f64), String> {
    let stream = "bench-latency";
    client
        .create_stream(StreamSpec::new(stream, Durability::Fsync).shard_count(shards))
        .await
        .map_err(|e| format!("create {stream}: {e}"))?;
    client
        .create_subscription(
            SubscriptionSpec::new("bench-latency-sub", stream)
                .max_unacked_records(max_unacked(args)?),
        )
        .await
        .map_err(|e| format!("create subscription: {e}"))?;
    let mut consumer = client
        .consumer("bench-latency-sub", ConsumerOptions::new("bench"))
        .await
        .map_err(|e| format!("join: {e}"))?;
    // Wait until the consumer holds every shard, so no record waits for an assignment.
    let deadline = Instant::now() + Duration::from_secs(10);
    while consumer.assignment().len() < shards as usize {
        if Instant::now() > deadline {
            return Err("the consumer was never assigned every shard".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let batch = args.latency_batch_records;
    let interval = Duration::from_secs_f64(batch as f64 / args.rate_records_per_second as f64);
    let requests = (args.latency_seconds as f64 / interval.as_secs_f64()) as u64;
    let total = requests * batch as u64;
    let base = Instant::now() + Duration::from_millis(50);
    let histogram = Arc::new(Mutex::new(
        Histogram::<u64>::new(3).map_err(|e| e.to_string())?,
    ));
    let tail_disk = disk_read_bytes();
    let receiving = {
        let histogram = Arc::clone(&histogram);
        tokio::spawn(async move {
            let mut received = 0u64;
            while received < total {
                let delivery = match consumer.next().await {
                    Some(Ok(delivery)) => delivery,
                    Some(Err(error)) => return Err(format!("consume: {error}")),
                    None => return Err("the consumer ended".into()),
                };
                let arrived = base.elapsed().as_micros() as u64;
                let mut histogram = histogram.lock().map_err(|e| e.to_string())?;
                for item in delivery.records() {
                    let (_, record) = item.map_err(|e| e.to_string())?;
                    let scheduled = record
                        .value()
                        .get(..8)
                        .and_then(|b| b.try_into().ok())
                        .map(u64::from_le_bytes)
                        .ok_or("a record without its scheduled time")?;
                    let _ = histogram.record(arrived.saturating_sub(scheduled));
                    received += 1;
                }
                drop(histogram);
                consumer
                    .ack_delivery(&delivery)
                    .map_err(|e| e.to_string())?;
            }
            consumer.leave().await.map_err(|e| e.to_string())?;
            Ok::<(), String>(())
        })
    };
    let producer = client.producer(stream).map_err(|e| e.to_string())?;
    let appends = Arc::new(Mutex::new(
        Histogram::<u64>::new(3).map_err(|e| e.to_string())?,
    ));
    let mut tasks = Vec::with_capacity(requests as usize);
    for i in 0..requests {
        let scheduled = base + interval * i as u32;
        tokio::time::sleep_until(scheduled.into()).await;
        let micros = (scheduled - base).as_micros() as u64;
        let records: Vec<Record> = (0..batch)
            .map(|_| {
                let mut value = vec![0x5au8; args.record_bytes.max(8)];
                value[..8].copy_from_slice(&micros.to_le_bytes());
                // One key per request: a request goes to one shard, as a keyed producer's.
                Record::at(value, now_ms()).with_key(format!("key-{}", i % 1000).into_bytes())
            })
            .collect();
        let producer = producer.clone();
        let appends = Arc::clone(&appends);
        tasks.push(tokio::spawn(async move {
            producer
                .send_batch(records)
                .await
                .map_err(|e| e.to_string())?;
            if let Ok(mut appends) = appends.lock() {
                let _ = appends.record(scheduled.elapsed().as_micros() as u64);
            }
            Ok::<(), String>(())
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    let offered_seconds = base.elapsed().as_secs_f64();
    receiving.await.map_err(|e| e.to_string())??;
    println!(
        "read from the disk while the consumer tailed the stream: {} (the batch cache serves it)",
        disk_read_mib(tail_disk)
    );
    let achieved = total as f64 / offered_seconds;
    let histogram = histogram.lock().map_err(|e| e.to_string())?.clone();
    let appends = appends.lock().map_err(|e| e.to_string())?.clone();
    Ok((histogram, appends, achieved))
}

pub fn run(args: SubscribeArgs) -> Result<(), String> {
    let node = BenchNode::start(args.dir.clone(), args.server_cores, |_| {})?;
    let shards = args.server_cores as u32 * 2;
    println!(
        "runnel-bench subscribe: {} MiB backlog of {}-byte records, {shards} shards, {} server core(s), one consumer, QUIC on loopback",
        args.bytes >> 20,
        args.record_bytes,
        args.server_cores
    );
    let result = node.runtime.block_on(async {
        let client = node.connect().await?;
        let mut ratios = Vec::new();
        for round in 0..args.rounds {
            let backlog = backlog(&client, &args, shards, round).await?;
            let ratio = backlog.records_per_second / backlog.read_records_per_second;
            ratios.push(ratio);
            println!(
                "consume throughput of the backlog (receive + ack): {:>8.1} MB/s {:>10.0} records/s ({} redelivered; {} read from the disk)",
                backlog.mb_per_second, backlog.records_per_second, backlog.redelivered, backlog.consume_disk
            );
            println!(
                "read throughput of the same backlog (readers):     {:>8.1} MB/s {:>10.0} records/s ({} read from the disk); ratio consume / read {ratio:.2}",
                backlog.read_records_per_second * args.record_bytes as f64 / MB,
                backlog.read_records_per_second,
                backlog.read_disk,
            );
        }
        if ratios.len() > 1 {
            let rounds: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
            let mut sorted = ratios.clone();
            sorted.sort_by(f64::total_cmp);
            let middle = sorted.len() / 2;
            let median = if sorted.len().is_multiple_of(2) {
                (sorted[middle - 1] + sorted[middle]) / 2.0
            } else {
                sorted[middle]
            };
            println!(
                "ratio consume / read: median {median:.2} of {} rounds ({})",
                ratios.len(),
                rounds.join(", ")
            );
        }
        let (histogram, appends, achieved) = latency(&client, &args, shards).await?;
        println!(
            "append-to-delivery latency (fsync) at {} records/s offered ({achieved:.0} achieved, {}-record requests): p50 {} µs, p99 {} µs, p999 {} µs, max {} µs ({} records)   (target p99 <= 5 ms)",
            args.rate_records_per_second,
            args.latency_batch_records,
            histogram.value_at_quantile(0.5),
            histogram.value_at_quantile(0.99),
            histogram.value_at_quantile(0.999),
            histogram.max(),
            histogram.len()
        );
        println!(
            "  of which the append (scheduled time to acknowledgement): p50 {} µs, p99 {} µs, p999 {} µs, max {} µs",
            appends.value_at_quantile(0.5),
            appends.value_at_quantile(0.99),
            appends.value_at_quantile(0.999),
            appends.max()
        );
        client.close().await;
        Ok::<(), String>(())
    });
    let stopped = node.stop();
    result?;
    stopped
}
