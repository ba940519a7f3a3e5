//! `node status`, `node list` and `cluster init`.

use runnel_client::Client;
use serde::Serialize;

use crate::args::OutputFormat;
use crate::error::CliError;
use crate::output::{NodeDocument, NodeListDocument, Output};

/// Prints the status of the node the client reached (the first of the URL's nodes that answered).
pub async fn status(client: &Client, output: &mut Output) -> Result<(), CliError> {
    let status = client.node_status().await?;
    // The URL's node the client reached; its host is how this node is reached from here.
    let document = NodeDocument::new(&status, client.server_address().host());
    match output.format() {
        OutputFormat::Table => {
            let (node, cores) = document.tables();
            output.text(&node.render())?;
            output.text("\n")?;
            output.text(&cores.render())
        }
        OutputFormat::Json => output.json(&document),
    }
}

/// Prints the cluster's nodes as the node at the URL sees them.
pub async fn list(client: &Client, output: &mut Output) -> Result<(), CliError> {
    let nodes = client.list_nodes().await?;
    let document = NodeListDocument::new(&nodes);
    match output.format() {
        OutputFormat::Table => output.text(&document.table().render()),
        OutputFormat::Json => output.json(&document),
    }
}

/// Founds the cluster on the node at the URL.
pub async fn init_cluster(client: &Client, output: &mut Output) -> Result<(), CliError> {
    client.init_cluster().await?;
    let node_id = client.server_info().node_id;
    match output.format() {
        OutputFormat::Table => output.text(&format!("initialised the cluster on node {node_id}\n")),
        OutputFormat::Json => {
            #[derive(Serialize)]
            struct Initialised {
                initialised: bool,
                node_id: u64,
            }
            output.json(&Initialised {
                initialised: true,
                node_id,
            })
        }
    }
}
