//! `node status`.

use runnel_client::{Client, ServerAddress};

use crate::args::OutputFormat;
use crate::error::CliError;
use crate::output::{NodeDocument, Output};

/// Prints the status of the node at `url`.
pub async fn status(client: &Client, url: &str, output: &mut Output) -> Result<(), CliError> {
    let status = client.node_status().await?;
    // The URL parsed when connecting; its host is how this node is reached from here.
    let address = ServerAddress::parse(url)?;
    let document = NodeDocument::new(&status, address.host());
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
