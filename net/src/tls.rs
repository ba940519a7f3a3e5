//! Certificates and TLS 1.3 configurations for QUIC, with rustls on *ring*.
//!
//! A node started without configuration serves a self-signed certificate ([`self_signed`]);
//! clients and peer nodes then trust exactly that certificate ([`client_config`]). Both sides
//! speak TLS 1.3 only (QUIC requires it) and announce [`ALPN_PROTOCOL`], so a stray QUIC
//! client of another protocol is refused during the handshake instead of sending us garbage.
//! The crypto provider is named explicitly: no process-wide default is installed or needed.

use std::sync::Arc;

use quinn::crypto::rustls::{NoInitialCipherSuite, QuicClientConfig, QuicServerConfig};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use thiserror::Error;

use crate::transport::TransportLimits;

/// The ALPN protocol id of Runnel's QUIC connections.
pub const ALPN_PROTOCOL: &[u8] = b"runnel/1";

/// Why a certificate or a TLS configuration could not be built.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TlsError {
    /// rcgen refused to make the self-signed certificate (e.g. an invalid name).
    #[error("cannot generate a self-signed certificate for {names:?}: {source}")]
    Certificate {
        /// The names asked for.
        names: Vec<String>,
        /// rcgen's reason.
        source: rcgen::Error,
    },
    /// rustls refused the certificates or key (malformed, unsupported or mismatched).
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
    /// The crypto provider offers no cipher suite QUIC's initial packets can use.
    #[error("TLS configuration unusable for QUIC: {0}")]
    NoInitialCipherSuite(#[from] NoInitialCipherSuite),
}

/// A certificate chain and its private key.
#[derive(Debug)]
pub struct Identity {
    /// The leaf certificate first, then any intermediates.
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
}

/// A fresh self-signed certificate (ECDSA P-256) for `names` (DNS names or IP addresses), as
/// a one-certificate chain and its PKCS#8 key.
pub fn self_signed(names: &[&str]) -> Result<Identity, TlsError> {
    let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    let certified = rcgen::generate_simple_self_signed(names.clone())
        .map_err(|source| TlsError::Certificate { names, source })?;
    let key = PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der());
    Ok(Identity {
        cert_chain: vec![certified.cert.der().clone()],
        key: PrivateKeyDer::Pkcs8(key),
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A QUIC server configuration presenting `identity`, with `limits` for every connection.
pub fn server_config(
    identity: Identity,
    limits: &TransportLimits,
) -> Result<quinn::ServerConfig, TlsError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(identity.cert_chain, identity.key)?;
    tls.alpn_protocols = vec![ALPN_PROTOCOL.to_vec()];
    let crypto = QuicServerConfig::try_from(tls)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(limits.transport_config());
    Ok(config)
}

/// A QUIC client configuration that trusts exactly the certificates in `trusted` (e.g. a
/// node's self-signed certificate), with `limits` for every connection.
pub fn client_config(
    trusted: &[CertificateDer<'static>],
    limits: &TransportLimits,
) -> Result<quinn::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in trusted {
        roots.add(certificate.clone())?;
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN_PROTOCOL.to_vec()];
    let crypto = QuicClientConfig::try_from(tls)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(limits.transport_config());
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed identity yields both configurations.
    #[test]
    fn self_signed_identity_configures_both_sides() -> Result<(), TlsError> {
        let identity = self_signed(&["localhost", "127.0.0.1"])?;
        assert_eq!(identity.cert_chain.len(), 1);
        let trusted = identity.cert_chain.clone();
        server_config(identity, &TransportLimits::DEFAULT)?;
        client_config(&trusted, &TransportLimits::DEFAULT)?;
        Ok(())
    }

    /// A name rcgen cannot encode is an error that says which name, not a panic.
    #[test]
    fn invalid_name_is_a_typed_error() {
        let outcome = self_signed(&["not-ascii-\u{e9}.example"]);
        assert!(
            matches!(outcome, Err(TlsError::Certificate { .. })),
            "{outcome:?}"
        );
    }

    /// Garbage bytes as a trusted certificate are rejected with rustls's reason.
    #[test]
    fn garbage_certificate_is_rejected() {
        let garbage = CertificateDer::from(vec![1_u8, 2, 3]);
        let outcome = client_config(&[garbage], &TransportLimits::DEFAULT);
        assert!(matches!(outcome, Err(TlsError::Rustls(_))), "{outcome:?}");
    }
}
