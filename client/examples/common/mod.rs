//! Shared by the examples: where the node is and how to trust it, from the environment; the
//! stream they all use, created when missing; errors printed as sentences.
//!
//! - `RUNNEL_URL`: the node, default `runnel://127.0.0.1:6570`;
//! - `RUNNEL_CA_CERT`: the node's certificate (PEM), default `runnel-data/tls/cert.pem`
//!   (where a node started without configuration writes its self-signed one);
//! - `RUNNEL_INSECURE=1`: skip certificate verification instead (local development only).

// Each example uses only some of these.
#![allow(dead_code)]

use std::future::Future;
use std::process::ExitCode;

use runnel_client::{Client, ClientError, ClientOptions, Durability, ErrorCode, StreamSpec};

/// The stream every example uses.
pub const STREAM: &str = "example-orders";

/// Runs an example's body and prints its error, if any, as a sentence on stderr (not as the
/// Debug dump a `main` returning `Result` prints), exiting 1.
pub async fn report(body: impl Future<Output = Result<(), ClientError>>) -> ExitCode {
    match body.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Connects as the environment says.
pub async fn connect(client_name: &str) -> Result<Client, ClientError> {
    let url = std::env::var("RUNNEL_URL").unwrap_or_else(|_| "runnel://127.0.0.1:6570".into());
    let insecure = std::env::var("RUNNEL_INSECURE").is_ok_and(|value| value == "1");
    let ca_cert_path = (!insecure).then(|| {
        std::env::var("RUNNEL_CA_CERT")
            .unwrap_or_else(|_| "runnel-data/tls/cert.pem".into())
            .into()
    });
    let options = ClientOptions {
        ca_cert_path,
        insecure_skip_verify: insecure,
        client_name: client_name.to_owned(),
        ..ClientOptions::default()
    };
    Client::connect(&url, options).await
}

/// Creates [`STREAM`] (4 shards) unless it exists already, so each example runs on a fresh
/// node.
pub async fn ensure_stream(client: &Client) -> Result<(), ClientError> {
    let spec = StreamSpec::new(STREAM, Durability::Fsync).shard_count(4);
    match client.create_stream(spec).await {
        Ok(info) => {
            println!("created {} with {} shards", info.name, info.shards.len());
            Ok(())
        }
        Err(error) if error.code() == Some(ErrorCode::StreamExists) => Ok(()),
        Err(error) => Err(error),
    }
}
