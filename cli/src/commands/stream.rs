//! `stream create | list | describe | delete`.

use runnel_client::{Client, Durability, StreamSpec};
use serde::Serialize;

use crate::args::{CreateArgs, DurabilityArg, OutputFormat};
use crate::error::CliError;
use crate::output::{shard_table, stream_table, Output, StreamDocument};

/// Creates the stream and prints it as `describe` does.
pub async fn create(
    client: &Client,
    args: CreateArgs,
    output: &mut Output,
) -> Result<(), CliError> {
    // Explicit at the call site, as every durability choice is.
    let durability = match args.durability {
        DurabilityArg::Fsync => Durability::Fsync,
        DurabilityArg::Memory => Durability::Memory,
    };
    let spec = StreamSpec::new(args.name, durability)
        .shard_count(args.shards)
        .replication_factor(args.replication_factor)
        .retention(args.retention);
    let info = client.create_stream(spec).await?;
    print_stream(&info, output)
}

/// Prints every stream.
pub async fn list(client: &Client, output: &mut Output) -> Result<(), CliError> {
    let streams = client.list_streams().await?;
    match output.format() {
        OutputFormat::Table => output.text(&stream_table(&streams).render()),
        OutputFormat::Json => {
            #[derive(Serialize)]
            struct Streams {
                streams: Vec<StreamDocument>,
            }
            output.json(&Streams {
                streams: streams
                    .iter()
                    .map(|stream| StreamDocument::new(stream, false))
                    .collect(),
            })
        }
    }
}

/// Prints a stream's settings and shards.
pub async fn describe(client: &Client, name: &str, output: &mut Output) -> Result<(), CliError> {
    let info = client.describe_stream(name).await?;
    print_stream(&info, output)
}

fn print_stream(info: &runnel_client::StreamInfo, output: &mut Output) -> Result<(), CliError> {
    match output.format() {
        OutputFormat::Table => {
            output.text(&stream_table(std::slice::from_ref(info)).render())?;
            output.text("\n")?;
            output.text(&shard_table(&info.shards).render())
        }
        OutputFormat::Json => output.json(&StreamDocument::new(info, true)),
    }
}

/// Deletes a stream.
pub async fn delete(
    client: &Client,
    name: &str,
    force: bool,
    output: &mut Output,
) -> Result<(), CliError> {
    client.delete_stream(name, force).await?;
    output.deleted("stream", name)
}
