//! `sub create | list | describe | delete`: subscriptions (durable consumer groups) of a
//! stream. Consuming one is `consume` (`consume.rs`).

use std::time::Duration;

use runnel_client::{Client, SubscriptionSpec, SubscriptionStart};
use serde::Serialize;

use crate::args::{OutputFormat, SubscriptionCreateArgs};
use crate::error::CliError;
use crate::output::{
    consumer_table, subscription_settings_table, subscription_shard_table, subscription_table,
    Output, SubscriptionDocument,
};
use crate::position::SubscriptionOffset;

/// Creates the subscription and prints its row (or its document).
pub async fn create(
    client: &Client,
    args: SubscriptionCreateArgs,
    output: &mut Output,
) -> Result<(), CliError> {
    let start = match args.offset {
        SubscriptionOffset::Earliest => SubscriptionStart::Earliest,
        SubscriptionOffset::Latest => SubscriptionStart::Latest,
        SubscriptionOffset::Timestamp(ms) => SubscriptionStart::Timestamp(ms),
    };
    // The flags' defaults are sent as values, so the subscription has what `--help` says
    // whatever the node's defaults.
    let spec = SubscriptionSpec::new(args.name, args.stream)
        .ack_timeout(Duration::from_secs(u64::from(args.ack_timeout)))
        .max_unacked_records(args.max_unacked_records)
        .start(start);
    let info = client.create_subscription(spec).await?;
    match output.format() {
        OutputFormat::Table => {
            output.text(&subscription_table(std::slice::from_ref(&info)).render())
        }
        OutputFormat::Json => output.json(&SubscriptionDocument::new(&info, false)),
    }
}

/// Prints every subscription, or those of `stream`.
pub async fn list(
    client: &Client,
    stream: Option<&str>,
    output: &mut Output,
) -> Result<(), CliError> {
    let subscriptions = client.list_subscriptions(stream).await?;
    match output.format() {
        OutputFormat::Table => output.text(&subscription_table(&subscriptions).render()),
        OutputFormat::Json => {
            #[derive(Serialize)]
            struct Subscriptions {
                subscriptions: Vec<SubscriptionDocument>,
            }
            output.json(&Subscriptions {
                subscriptions: subscriptions
                    .iter()
                    .map(|info| SubscriptionDocument::new(info, false))
                    .collect(),
            })
        }
    }
}

/// Prints a subscription's settings, its progress on each shard and its consumers.
pub async fn describe(client: &Client, name: &str, output: &mut Output) -> Result<(), CliError> {
    let info = client.describe_subscription(name).await?;
    match output.format() {
        OutputFormat::Table => {
            output.text(&subscription_settings_table(&info).render())?;
            output.text("\n")?;
            output.text(&subscription_shard_table(&info.shards).render())?;
            output.text("\n")?;
            output.text(&consumer_table(&info.consumers).render())
        }
        OutputFormat::Json => output.json(&SubscriptionDocument::new(&info, true)),
    }
}

/// Deletes a subscription.
pub async fn delete(
    client: &Client,
    name: &str,
    force: bool,
    output: &mut Output,
) -> Result<(), CliError> {
    client.delete_subscription(name, force).await?;
    output.deleted("subscription", name)
}
