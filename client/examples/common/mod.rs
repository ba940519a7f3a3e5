//! Shared by the examples: where the node is and how to trust it, from the environment.
//!
//! - `RUNNEL_URL`: the node, default `runnel://127.0.0.1:6570`;
//! - `RUNNEL_CA_CERT`: the node's certificate (PEM), default `runnel-data/tls/cert.pem`
//!   (where a node started without configuration writes its self-signed one);
//! - `RUNNEL_INSECURE=1`: skip certificate verification instead (local development only).

use runnel_client::{Client, ClientError, ClientOptions};

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
