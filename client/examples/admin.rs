//! Admin calls: create a stream, list and describe streams, node status, delete.
//!
//! Needs a running node: `cargo run -p runnel-client --example admin [-- --delete]`
//! (see `common/mod.rs` for `RUNNEL_URL`, `RUNNEL_CA_CERT`, `RUNNEL_INSECURE`).

mod common;

use std::process::ExitCode;

use runnel_client::{ClientError, Durability, ErrorCode, StreamSpec};

#[tokio::main]
async fn main() -> ExitCode {
    common::report(admin()).await
}

async fn admin() -> Result<(), ClientError> {
    let client = common::connect("example-admin").await?;
    let server = client.server_info();
    println!(
        "connected to node {} ({} cores, server {})",
        server.node_id, server.core_count, server.server_version
    );

    let spec = StreamSpec::new(common::STREAM, Durability::Fsync).shard_count(4);
    match client.create_stream(spec).await {
        Ok(info) => println!("created {} with {} shards", info.name, info.shards.len()),
        Err(error) if error.code() == Some(ErrorCode::StreamExists) => {
            println!("{} exists already", common::STREAM)
        }
        Err(error) => return Err(error),
    }

    for stream in client.list_streams().await? {
        println!(
            "stream {}: {} shards, replication {}, retention {} ms, {:?}",
            stream.name,
            stream.shard_count,
            stream.replication_factor,
            stream.retention_ms,
            stream.durability
        );
    }
    for shard in client.describe_stream(common::STREAM).await?.shards {
        println!(
            "  shard {} {:?} {} on node {} core {}",
            shard.id, shard.status, shard.key_range, shard.node, shard.core
        );
    }

    let status = client.node_status().await?;
    println!("node {} up for {} ms", status.node_id, status.uptime_ms);

    if std::env::args().any(|arg| arg == "--delete") {
        client.delete_stream(common::STREAM, false).await?;
        println!("deleted {}", common::STREAM);
    }
    client.close().await;
    Ok(())
}
