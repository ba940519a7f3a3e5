//! `shard list`.

use runnel_client::Client;
use serde::Serialize;

use crate::args::OutputFormat;
use crate::error::CliError;
use crate::output::{shard_table, Output, ShardDocument};

/// Prints every shard of `stream`, open and sealed.
pub async fn list(client: &Client, stream: &str, output: &mut Output) -> Result<(), CliError> {
    let shards = client.list_shards(stream).await?;
    match output.format() {
        OutputFormat::Table => output.text(&shard_table(&shards).render()),
        OutputFormat::Json => {
            #[derive(Serialize)]
            struct Shards<'a> {
                stream: &'a str,
                shards: Vec<ShardDocument>,
            }
            output.json(&Shards {
                stream,
                shards: shards.iter().map(ShardDocument::new).collect(),
            })
        }
    }
}
