//! The node's TLS identity: the configured certificate and key, or a self-signed pair created
//! once under `<data_dir>/tls/` and reused, so clients can pin it across restarts.

use std::path::{Path, PathBuf};

use runnel_net::Identity;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::NodeConfig;
use crate::error::FatalError;

/// Where a node without a configured certificate keeps its self-signed one.
pub fn self_signed_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("tls");
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// The configured identity, or the node's self-signed one (created on first start).
pub fn load_or_create(config: &NodeConfig) -> Result<(Identity, PathBuf), FatalError> {
    let (cert_path, key_path) = match (&config.tls_cert_path, &config.tls_key_path) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        _ => {
            let (cert, key) = self_signed_paths(&config.data_dir);
            if !cert.exists() || !key.exists() {
                create_self_signed(config, &cert, &key)?;
            }
            (cert, key)
        }
    };
    let fatal = |what: &str, path: &Path, e: String| {
        FatalError::Tls(format!("{what} {}: {e}", path.display()))
    };
    let cert_chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .map_err(|e| fatal("cannot read certificates from", &cert_path, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| fatal("invalid certificate in", &cert_path, e.to_string()))?;
    if cert_chain.is_empty() {
        return Err(fatal("no certificate in", &cert_path, "empty".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|e| fatal("cannot read the private key from", &key_path, e.to_string()))?;
    Ok((Identity { cert_chain, key }, cert_path))
}

fn create_self_signed(config: &NodeConfig, cert: &Path, key: &Path) -> Result<(), FatalError> {
    let mut names = vec!["localhost".to_string(), config.listen_address.to_string()];
    if !config.listen_address.is_loopback() {
        names.push("127.0.0.1".into());
    }
    let certified = rcgen::generate_simple_self_signed(names)
        .map_err(|e| FatalError::Tls(format!("cannot create a self-signed certificate: {e}")))?;
    if let Some(dir) = cert.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| FatalError::Io(format!("create {}: {e}", dir.display())))?;
    }
    write_private(key, certified.key_pair.serialize_pem().as_bytes())?;
    std::fs::write(cert, certified.cert.pem())
        .map_err(|e| FatalError::Io(format!("write {}: {e}", cert.display())))?;
    tracing::info!(certificate = %cert.display(), "created a self-signed certificate");
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), FatalError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| FatalError::Io(format!("create {}: {e}", path.display())))?;
    file.write_all(bytes)
        .map_err(|e| FatalError::Io(format!("write {}: {e}", path.display())))
}
