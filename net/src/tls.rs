//! Certificates and TLS 1.3 configurations for QUIC, with rustls on *ring*.
//!
//! A node started without configuration serves a self-signed certificate ([`self_signed`]);
//! clients and peer nodes then trust exactly that certificate ([`client_config`]). Both sides
//! speak TLS 1.3 only (QUIC requires it) and announce [`ALPN_PROTOCOL`], so a stray QUIC
//! client of another protocol is refused during the handshake instead of sending us garbage.
//! The crypto provider is named explicitly: no process-wide default is installed or needed.
//!
//! Nodes of a cluster talk to each other with mutual TLS: a cluster has one certificate
//! authority ([`CertificateAuthority`], or a CA PEM file read by [`load_ca`]) that signs every
//! node's certificate. A node with a CA serves [`cluster_server_config`], which announces both
//! [`ALPN_PROTOCOL`] (clients, no certificate needed) and [`PEER_ALPN`] (nodes), and verifies a
//! client certificate against the CA when one is presented; the server refuses a
//! [`PEER_ALPN`] connection without a verified certificate. A node dials its peers with
//! [`peer_client_config`]: its own certificate as client authentication, the CA as only root.

use std::sync::Arc;

use quinn::crypto::rustls::{NoInitialCipherSuite, QuicClientConfig, QuicServerConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use thiserror::Error;

use crate::transport::TransportLimits;

/// The ALPN protocol id of Runnel's QUIC connections.
pub const ALPN_PROTOCOL: &[u8] = b"runnel/1";

/// The ALPN protocol id of node-to-node connections (`docs/format/peer.md`).
pub const PEER_ALPN: &[u8] = b"runnel-peer/1";

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
    /// rustls refused to build the client-certificate verifier (e.g. no usable CA).
    #[error("cannot verify client certificates: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// A PEM file could not be read or held no certificate.
    #[error("cannot read certificates from {path}: {reason}")]
    Pem {
        /// The file.
        path: std::path::PathBuf,
        /// What was wrong.
        reason: String,
    },
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
    quic_server(tls, limits)
}

/// A QUIC client configuration that trusts exactly the certificates in `trusted` (e.g. a
/// node's self-signed certificate), with `limits` for every connection.
pub fn client_config(
    trusted: &[CertificateDer<'static>],
    limits: &TransportLimits,
) -> Result<quinn::ClientConfig, TlsError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(root_store(trusted)?)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN_PROTOCOL.to_vec()];
    quic_client(tls, limits)
}

/// The certificates of a cluster's CA from a PEM file (one or more `CERTIFICATE` blocks).
pub fn load_ca(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |reason: String| TlsError::Pem {
        path: path.to_path_buf(),
        reason,
    };
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error(e.to_string()))?;
    if certificates.is_empty() {
        return Err(pem_error("no CERTIFICATE block".into()));
    }
    Ok(certificates)
}

/// The certificates of a CA from PEM text (one or more `CERTIFICATE` blocks).
pub fn ca_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |reason: String| TlsError::Pem {
        path: "<memory>".into(),
        reason,
    };
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error(e.to_string()))?;
    if certificates.is_empty() {
        return Err(pem_error("no CERTIFICATE block".into()));
    }
    Ok(certificates)
}

fn quic_server(
    tls: rustls::ServerConfig,
    limits: &TransportLimits,
) -> Result<quinn::ServerConfig, TlsError> {
    let crypto = QuicServerConfig::try_from(tls)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(limits.transport_config());
    Ok(config)
}

fn quic_client(
    tls: rustls::ClientConfig,
    limits: &TransportLimits,
) -> Result<quinn::ClientConfig, TlsError> {
    let crypto = QuicClientConfig::try_from(tls)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(limits.transport_config());
    Ok(config)
}

fn root_store(trusted: &[CertificateDer<'static>]) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in trusted {
        roots.add(certificate.clone())?;
    }
    Ok(roots)
}

/// A QUIC server configuration for a node of a cluster: presents `identity`, announces
/// [`ALPN_PROTOCOL`] and [`PEER_ALPN`], and verifies client certificates against `ca`
/// *optionally*: a client without a certificate is let in (SDK clients have none), one with a
/// certificate the CA did not sign is refused during the handshake. Whether a [`PEER_ALPN`]
/// connection presented a certificate is for the server to check
/// ([`has_verified_client_certificate`]).
pub fn cluster_server_config(
    identity: Identity,
    ca: &[CertificateDer<'static>],
    limits: &TransportLimits,
) -> Result<quinn::ServerConfig, TlsError> {
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(root_store(ca)?),
        provider(),
    )
    .allow_unauthenticated()
    .build()?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.cert_chain, identity.key)?;
    tls.alpn_protocols = vec![ALPN_PROTOCOL.to_vec(), PEER_ALPN.to_vec()];
    quic_server(tls, limits)
}

/// A QUIC client configuration with which a node dials its peers: presents `identity` (signed
/// by the cluster's CA) as client authentication, trusts `ca` only, and announces [`PEER_ALPN`].
pub fn peer_client_config(
    identity: Identity,
    ca: &[CertificateDer<'static>],
    limits: &TransportLimits,
) -> Result<quinn::ClientConfig, TlsError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(root_store(ca)?)
        .with_client_auth_cert(identity.cert_chain, identity.key)?;
    tls.alpn_protocols = vec![PEER_ALPN.to_vec()];
    quic_client(tls, limits)
}

/// The ALPN protocol a connection negotiated (None before the handshake or without ALPN).
pub fn negotiated_alpn(connection: &quinn::Connection) -> Option<Vec<u8>> {
    connection
        .handshake_data()?
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?
        .protocol
}

/// Whether the client of this (server-side) connection presented a certificate, which the
/// server configuration's verifier then checked against the CA (an unverifiable one fails the
/// handshake, so a connection that exists with a certificate has a verified one).
pub fn has_verified_client_certificate(connection: &quinn::Connection) -> bool {
    connection
        .peer_identity()
        .and_then(|identity| identity.downcast::<Vec<CertificateDer<'static>>>().ok())
        .is_some_and(|chain| !chain.is_empty())
}

/// A cluster's certificate authority made with rcgen, for tests and tools (e.g. a script that
/// starts a cluster on one machine): it signs node certificates valid as both TLS server and
/// TLS client ([`CertificateAuthority::sign_node`]).
pub struct CertificateAuthority {
    certificate: rcgen::Certificate,
    key: rcgen::KeyPair,
}

/// A node's certificate signed by a [`CertificateAuthority`], and its key.
#[derive(Debug, Clone)]
pub struct NodeCertificate {
    /// The certificate (DER).
    pub certificate: CertificateDer<'static>,
    /// The certificate (PEM), for a `tls_cert_path` file.
    pub certificate_pem: String,
    /// The private key (PKCS#8 PEM), for a `tls_key_path` file.
    pub key_pem: String,
    key_der: Vec<u8>,
}

impl NodeCertificate {
    /// The certificate and key as a TLS identity.
    pub fn identity(&self) -> Identity {
        Identity {
            cert_chain: vec![self.certificate.clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone())),
        }
    }
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// A fresh CA (ECDSA P-256) whose subject's common name is `name`.
    pub fn new(name: &str) -> Result<CertificateAuthority, TlsError> {
        let failed = |source| TlsError::Certificate {
            names: vec![name.to_owned()],
            source,
        };
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().map_err(failed)?;
        let certificate = params.self_signed(&key).map_err(failed)?;
        Ok(CertificateAuthority { certificate, key })
    }

    /// The CA's certificate (DER): what peers and clients trust.
    pub fn certificate(&self) -> CertificateDer<'static> {
        self.certificate.der().clone()
    }

    /// The CA's certificate (PEM), for a `tls_ca_path` file or a client's trusted CA.
    pub fn certificate_pem(&self) -> String {
        self.certificate.pem()
    }

    /// A certificate for a node reachable as `names` (DNS names or IP addresses, e.g.
    /// `["127.0.0.1", "localhost"]`), signed by this CA, usable as TLS server and client.
    pub fn sign_node(&self, names: &[&str]) -> Result<NodeCertificate, TlsError> {
        let owned: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let failed = |source| TlsError::Certificate {
            names: owned.clone(),
            source,
        };
        let mut params = rcgen::CertificateParams::new(owned.clone()).map_err(failed)?;
        if let Some(first) = names.first() {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, *first);
        }
        params.is_ca = rcgen::IsCa::ExplicitNoCa;
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = rcgen::KeyPair::generate().map_err(failed)?;
        let certificate = params
            .signed_by(&key, &self.certificate, &self.key)
            .map_err(failed)?;
        Ok(NodeCertificate {
            certificate: certificate.der().clone(),
            certificate_pem: certificate.pem(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        })
    }
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

    /// A CA signs node certificates for IP and DNS names; both cluster configurations build
    /// from them, and the CA's PEM reads back as the same certificate.
    #[test]
    fn ca_signs_node_certificates_that_configure_both_sides() -> Result<(), TlsError> {
        let ca = CertificateAuthority::new("runnel test cluster")?;
        let node = ca.sign_node(&["127.0.0.1", "localhost"])?;
        assert!(node.certificate_pem.contains("BEGIN CERTIFICATE"));
        assert!(node.key_pem.contains("PRIVATE KEY"));
        let trusted = ca_from_pem(&ca.certificate_pem())?;
        assert_eq!(trusted, vec![ca.certificate()]);
        cluster_server_config(node.identity(), &trusted, &TransportLimits::DEFAULT)?;
        peer_client_config(node.identity(), &trusted, &TransportLimits::DEFAULT)?;
        Ok(())
    }

    /// The node certificate chains to its CA for both uses (server and client), checked with
    /// webpki as rustls will; a certificate of another CA does not.
    #[test]
    fn node_certificate_verifies_against_its_ca_only() -> Result<(), TlsError> {
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::{ServerName, UnixTime};
        let ca = CertificateAuthority::new("cluster a")?;
        let other = CertificateAuthority::new("cluster b")?;
        let node = ca.sign_node(&["127.0.0.1", "localhost"])?;
        let stranger = other.sign_node(&["127.0.0.1"])?;
        let roots = Arc::new(root_store(&[ca.certificate()])?);
        let servers =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots.clone(), provider())
                .build()
                .map_err(|e| TlsError::Pem {
                    path: "<test>".into(),
                    reason: e.to_string(),
                })?;
        let now = UnixTime::now();
        for name in ["127.0.0.1", "localhost"] {
            let name = ServerName::try_from(name).map_err(|e| TlsError::Pem {
                path: "<test>".into(),
                reason: e.to_string(),
            })?;
            servers.verify_server_cert(&node.certificate, &[], &name, &[], now)?;
        }
        let ip = ServerName::try_from("127.0.0.1").map_err(|e| TlsError::Pem {
            path: "<test>".into(),
            reason: e.to_string(),
        })?;
        assert!(servers
            .verify_server_cert(&stranger.certificate, &[], &ip, &[], now)
            .is_err());
        let clients =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider())
                .build()?;
        clients.verify_client_cert(&node.certificate, &[], now)?;
        assert!(clients
            .verify_client_cert(&stranger.certificate, &[], now)
            .is_err());
        Ok(())
    }

    /// A CA file without a certificate, or missing, is a typed error naming the file.
    #[test]
    fn ca_file_without_certificates_is_an_error() -> Result<(), Box<dyn std::error::Error>> {
        let dir = std::env::temp_dir().join(format!("runnel-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n")?;
        assert!(matches!(load_ca(&empty), Err(TlsError::Pem { .. })));
        assert!(matches!(
            load_ca(&dir.join("missing.pem")),
            Err(TlsError::Pem { .. })
        ));
        let ca = CertificateAuthority::new("file")?;
        let good = dir.join("ca.pem");
        std::fs::write(&good, ca.certificate_pem())?;
        assert_eq!(load_ca(&good)?, vec![ca.certificate()]);
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    /// Garbage bytes as a trusted certificate are rejected with rustls's reason.
    #[test]
    fn garbage_certificate_is_rejected() {
        let garbage = CertificateDer::from(vec![1_u8, 2, 3]);
        let outcome = client_config(&[garbage], &TransportLimits::DEFAULT);
        assert!(matches!(outcome, Err(TlsError::Rustls(_))), "{outcome:?}");
    }
}
