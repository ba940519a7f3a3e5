//! One module per noun: `stream` (admin verbs), `append` and `read` (the data verbs of
//! `stream`), `shard`, `subscription` (the `sub` verbs), `consume`, `node` (and `cluster`). Each command connects, does its one job, prints through
//! [`Output`], and returns a [`CliError`] on failure.

mod append;
mod consume;
mod node;
mod read;
mod shard;
mod sql;
mod stream;
mod subscription;

use crate::args::{
    Cli, ClusterCommand, Command, NodeCommand, ShardCommand, StreamCommand, SubscriptionCommand,
};
use crate::connect::connect;
use crate::error::CliError;
use crate::output::Output;

/// Runs the parsed command line.
pub async fn run(cli: Cli, output: &mut Output) -> Result<(), CliError> {
    let client = connect(&cli.global).await?;
    let outcome = match cli.command {
        Command::Stream(StreamCommand::Create(args)) => stream::create(&client, args, output).await,
        Command::Stream(StreamCommand::List) => stream::list(&client, output).await,
        Command::Stream(StreamCommand::Describe { name }) => {
            stream::describe(&client, &name, output).await
        }
        Command::Stream(StreamCommand::Delete { name, force }) => {
            stream::delete(&client, &name, force, output).await
        }
        Command::Stream(StreamCommand::Append(args)) => append::run(&client, args, output).await,
        Command::Stream(StreamCommand::Read(args)) => read::run(&client, args, output).await,
        Command::Shard(ShardCommand::List { stream }) => {
            shard::list(&client, &stream, output).await
        }
        Command::Sub(SubscriptionCommand::Create(args)) => {
            subscription::create(&client, args, output).await
        }
        Command::Sub(SubscriptionCommand::List { stream }) => {
            subscription::list(&client, stream.as_deref(), output).await
        }
        Command::Sub(SubscriptionCommand::Describe { name }) => {
            subscription::describe(&client, &name, output).await
        }
        Command::Sub(SubscriptionCommand::Delete { name, force }) => {
            subscription::delete(&client, &name, force, output).await
        }
        Command::Consume(args) => consume::run(&client, args, output).await,
        Command::Node(NodeCommand::Status) => node::status(&client, output).await,
        Command::Node(NodeCommand::List) => node::list(&client, output).await,
        Command::Node(NodeCommand::Remove { id }) => node::remove(&client, id, output).await,
        Command::Cluster(ClusterCommand::Init) => node::init_cluster(&client, output).await,
        Command::Sql { execute } => sql::run(&client, execute, output).await,
    };
    let flushed = output.flush();
    client.close().await;
    outcome.and(flushed)
}
