//! From the global flags to a connected [`Client`]: which certificate to trust, how long to
//! wait. Trust is always an explicit choice: `--ca-cert`, else the certificate a node started
//! without configuration writes in the current directory, else `--insecure`; with none of
//! them the command stops with a usage error that says so.

use std::path::{Path, PathBuf};

use runnel_client::{Client, ClientError, ClientOptions};

use crate::args::{GlobalArgs, DEFAULT_CA_CERT};
use crate::error::CliError;

/// The client options the flags ask for; `default_ca_cert` is where to look for a
/// certificate when neither `--ca-cert` nor `--insecure` is given.
pub fn client_options(
    global: &GlobalArgs,
    default_ca_cert: &Path,
) -> Result<ClientOptions, CliError> {
    let ca_cert_path =
        match (&global.ca_cert, global.insecure) {
            // Checked here, not by clap: clap counts RUNNEL_INSECURE=0 as given.
            (Some(_), true) => return Err(CliError::usage(
                "--ca-cert (RUNNEL_CA_CERT) and --insecure (RUNNEL_INSECURE) exclude each other",
            )),
            (None, true) => None,
            (Some(path), false) => {
                if !path.is_file() {
                    return Err(CliError::usage(format!(
                        "--ca-cert {}: no such file",
                        path.display()
                    )));
                }
                Some(path.clone())
            }
            (None, false) if default_ca_cert.is_file() => Some(default_ca_cert.to_owned()),
            (None, false) => {
                return Err(CliError::usage(format!(
                    "no certificate to trust: pass --ca-cert PATH (the node's \
                 <data_dir>/tls/cert.pem), run from the directory holding ./{DEFAULT_CA_CERT}, \
                 or pass --insecure for local development"
                )))
            }
        };
    Ok(ClientOptions {
        ca_cert_path,
        insecure_skip_verify: global.insecure,
        client_name: format!("runnel-cli {}", env!("CARGO_PKG_VERSION")),
        // One deadline for reaching the node, retries included (the SDK's rule).
        connect_timeout_ms: u64::from(global.connect_timeout_ms),
        request_timeout_ms: u64::from(global.timeout_ms),
        // The keep-alive must stay below the idle timeout (the client's defaults: 10 s, 30 s);
        // a tailing read may idle for long, so the idle timeout stays the SDK's.
        ..ClientOptions::default()
    })
}

/// Connects to the node the flags name.
pub async fn connect(global: &GlobalArgs) -> Result<Client, CliError> {
    let options = client_options(global, &PathBuf::from(DEFAULT_CA_CERT))?;
    Client::connect(&global.url, options)
        .await
        .map_err(|error| match error {
            // Say which knob gives the node more time.
            ClientError::Unreachable { .. } => {
                let mut error = CliError::from(error);
                error.message.push_str(
                    "; allow longer with --connect-timeout-ms or RUNNEL_CONNECT_TIMEOUT_MS",
                );
                error
            }
            other => CliError::from(other),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::OutputFormat;

    fn global(ca_cert: Option<PathBuf>, insecure: bool) -> GlobalArgs {
        GlobalArgs {
            url: crate::args::DEFAULT_URL.into(),
            ca_cert,
            insecure,
            output: OutputFormat::Table,
            timeout_ms: 1_234,
            connect_timeout_ms: 567,
        }
    }

    /// The trust anchor: the flag, else the default file if present, else insecure, else a
    /// usage error naming the choices.
    #[test]
    fn trust_is_an_explicit_choice() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, "not read here").expect("write");
        let missing = dir.path().join("missing.pem");

        let options = client_options(&global(Some(cert.clone()), false), &missing).expect("ok");
        assert_eq!(options.ca_cert_path.as_deref(), Some(cert.as_path()));
        assert_eq!(options.connect_timeout_ms, 567);
        assert_eq!(options.request_timeout_ms, 1_234);

        let options = client_options(&global(None, false), &cert).expect("default file");
        assert_eq!(options.ca_cert_path.as_deref(), Some(cert.as_path()));

        let options = client_options(&global(None, true), &cert).expect("insecure");
        assert!(options.ca_cert_path.is_none() && options.insecure_skip_verify);
        options.validate().expect("valid options");

        let error = client_options(&global(None, false), &missing).expect_err("no trust");
        assert_eq!(error.exit, crate::error::ExitCode::Usage);
        assert!(error.message.contains("--insecure"), "{error}");

        let error = client_options(&global(Some(cert.clone()), true), &cert).expect_err("both");
        assert!(error.message.contains("exclude each other"), "{error}");

        let error = client_options(&global(Some(missing), false), &cert).expect_err("missing");
        assert!(error.message.contains("no such file"), "{error}");
    }
}
