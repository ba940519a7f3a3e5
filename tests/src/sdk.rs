//! SDK helpers shared by the end-to-end tests.

use std::time::{SystemTime, UNIX_EPOCH};

use runnel_client::{Client, ClientOptions, ReadFrom};

use crate::server::TestServer;

/// Milliseconds since the Unix epoch (record timestamps).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A client for tests that kill the server: one attempt per request and short timeouts, so a
/// request in flight to a killed server fails quickly.
pub async fn connect_impatient(server: &TestServer) -> Client {
    let options = ClientOptions {
        ca_cert_path: Some(server.certificate()),
        request_attempts_max: 1,
        request_timeout_ms: 2_000,
        idle_timeout_ms: 2_000,
        keep_alive_interval_ms: 500,
        ..ClientOptions::default()
    };
    Client::connect(&server.url(), options)
        .await
        .expect("connect")
}

/// Every record value in every shard of `stream`, from the earliest offset to the current end,
/// sorted (shards are read one after another, so their interleaving means nothing).
pub async fn read_all_values(client: &Client, stream: &str) -> Vec<Vec<u8>> {
    let mut values = Vec::new();
    for shard in client.list_shards(stream).await.expect("shards") {
        let mut reader = client
            .reader(stream, shard.id, ReadFrom::Earliest, None)
            .expect("reader");
        while let Some(batch) = reader.next_batch().await.expect("read") {
            for record in batch.records() {
                let (_, record) = record.expect("record");
                values.push(record.value().to_vec());
            }
        }
    }
    values.sort();
    values
}
