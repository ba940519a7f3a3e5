//! SDK helpers shared by the end-to-end tests.

use runnel_client::{Client, ReadFrom};

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
