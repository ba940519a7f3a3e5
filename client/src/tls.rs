//! The client's TLS 1.3 configuration: trust exactly the certificates of a PEM file, or — as a
//! logged opt-in for local development — skip verifying the server's certificate.
//!
//! Even when skipping verification, the handshake's signatures are checked with the provider's
//! algorithms, so the session is bound to the certificate the server presented; only the
//! question "is this the right server" is left unanswered.

use std::sync::Arc;

use quinn::crypto::rustls::QuicClientConfig;
use quinn::rustls;
use runnel_net::{TransportLimits, ALPN_PROTOCOL};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::error::ClientError;
use crate::options::ClientOptions;

/// Largest CA file read, in bytes: a certificate bundle, not an arbitrary file.
const CA_FILE_BYTES_MAX: u64 = 4 << 20;

/// The QUIC client configuration for `options` (which must have passed `validate`).
pub(crate) fn client_config(options: &ClientOptions) -> Result<quinn::ClientConfig, ClientError> {
    let limits = options.transport_limits();
    match &options.ca_cert_path {
        Some(path) => {
            let certificates = load_certificates(path)?;
            runnel_net::tls::client_config(&certificates, &limits).map_err(|error| {
                ClientError::Tls {
                    reason: format!("certificates of {}: {error}", path.display()),
                }
            })
        }
        None => {
            assert!(
                options.insecure_skip_verify,
                "validated options name a CA or skip verification"
            );
            tracing::warn!(
                "insecure_skip_verify: the server's certificate is NOT verified; \
                 use this only for local development"
            );
            insecure_config(&limits)
        }
    }
}

/// Every certificate in the PEM file at `path`; at least one.
pub(crate) fn load_certificates(
    path: &std::path::Path,
) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let context = || format!("cannot read the CA file {}", path.display());
    let size = std::fs::metadata(path)
        .map_err(|error| ClientError::io(context(), error))?
        .len();
    if size > CA_FILE_BYTES_MAX {
        return Err(ClientError::Tls {
            reason: format!("{} is larger than 4 MiB", path.display()),
        });
    }
    let pem = std::fs::read(path).map_err(|error| ClientError::io(context(), error))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| ClientError::Tls {
            reason: format!("{} is not valid PEM: {error}", path.display()),
        })?;
    if certificates.is_empty() {
        return Err(ClientError::Tls {
            reason: format!("{} holds no certificate", path.display()),
        });
    }
    Ok(certificates)
}

fn insecure_config(limits: &TransportLimits) -> Result<quinn::ClientConfig, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls_error = |error: &dyn std::fmt::Display| ClientError::Tls {
        reason: error.to_string(),
    };
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|error| tls_error(&error))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SkipServerVerification { provider }))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN_PROTOCOL.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).map_err(|error| tls_error(&error))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(limits.transport_config());
    Ok(config)
}

/// Accepts any certificate chain; still verifies handshake signatures.
#[derive(Debug)]
struct SkipServerVerification {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for SkipServerVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options_with_ca(path: &std::path::Path) -> ClientOptions {
        ClientOptions {
            ca_cert_path: Some(path.to_owned()),
            ..ClientOptions::default()
        }
    }

    /// A PEM certificate (as a self-signed node writes it) configures the client.
    #[test]
    fn loads_a_pem_certificate() -> Result<(), Box<dyn std::error::Error>> {
        let directory = tempfile::tempdir()?;
        let path = directory.path().join("cert.pem");
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
        std::fs::write(&path, certified.cert.pem())?;
        assert_eq!(load_certificates(&path)?.len(), 1);
        client_config(&options_with_ca(&path))?;
        Ok(())
    }

    /// A missing file, a file without certificates and garbage are typed errors.
    #[test]
    fn bad_ca_files_are_refused() -> Result<(), Box<dyn std::error::Error>> {
        let directory = tempfile::tempdir()?;
        let missing = directory.path().join("missing.pem");
        assert!(matches!(
            client_config(&options_with_ca(&missing)),
            Err(ClientError::Io { .. })
        ));
        let empty = directory.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n")?;
        assert!(matches!(
            client_config(&options_with_ca(&empty)),
            Err(ClientError::Tls { .. })
        ));
        let garbage = directory.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )?;
        assert!(matches!(
            client_config(&options_with_ca(&garbage)),
            Err(ClientError::Tls { .. })
        ));
        Ok(())
    }

    /// The insecure opt-in builds a configuration (and logs a warning).
    #[test]
    fn insecure_mode_builds() {
        let options = ClientOptions {
            insecure_skip_verify: true,
            ..ClientOptions::default()
        };
        assert!(client_config(&options).is_ok());
    }
}
