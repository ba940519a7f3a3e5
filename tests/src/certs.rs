//! A cluster's certificate authority and its node certificates for tests, made with rcgen the
//! way `scripts/local-cluster` makes them with openssl: ECDSA P-256, the CA marked as one, each
//! node certificate valid for `127.0.0.1` and `localhost` and for both TLS roles (a node is the
//! server of its clients and the client and server of its peers: mutual TLS between nodes).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// The names every local node certificate carries.
const NODE_NAMES: [&str; 2] = ["127.0.0.1", "localhost"];

/// A certificate authority whose key stays in memory to sign node certificates.
pub struct CertificateAuthority {
    certificate: Certificate,
    key: KeyPair,
    /// Its certificate (PEM): what clients and nodes trust.
    pub ca_path: PathBuf,
}

/// A node's certificate and key files (PEM; the key PKCS#8).
#[derive(Debug, Clone)]
pub struct NodeCertificate {
    /// The certificate, signed by the cluster's CA.
    pub cert_path: PathBuf,
    /// Its private key.
    pub key_path: PathBuf,
}

impl CertificateAuthority {
    /// A fresh CA; its certificate is written to `dir/ca.pem`.
    pub fn create(dir: &Path) -> CertificateAuthority {
        let key = KeyPair::generate().expect("generate the CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params
            .distinguished_name
            .push(DnType::CommonName, "Runnel test cluster CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let certificate = params.self_signed(&key).expect("self-sign the CA");
        std::fs::create_dir_all(dir).expect("create the CA's directory");
        let ca_path = dir.join("ca.pem");
        std::fs::write(&ca_path, certificate.pem()).expect("write ca.pem");
        CertificateAuthority {
            certificate,
            key,
            ca_path,
        }
    }

    /// A certificate for node `node_id`, written as `dir/cert.pem` and `dir/key.pem`.
    pub fn issue_node(&self, dir: &Path, node_id: u64) -> NodeCertificate {
        let key = KeyPair::generate().expect("generate a node key");
        let names: Vec<String> = NODE_NAMES.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("node certificate parameters");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("runnel node {node_id}"));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let certificate = params
            .signed_by(&key, &self.certificate, &self.key)
            .expect("sign a node certificate");
        std::fs::create_dir_all(dir).expect("create the node's directory");
        let node = NodeCertificate {
            cert_path: dir.join("cert.pem"),
            key_path: dir.join("key.pem"),
        };
        std::fs::write(&node.cert_path, certificate.pem()).expect("write cert.pem");
        std::fs::write(&node.key_path, key.serialize_pem()).expect("write key.pem");
        node
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node certificate verifies against the CA for the loopback name clients dial, and not
    /// against another cluster's CA: what the SDK and the peers rely on.
    #[test]
    fn node_certificates_chain_to_their_ca_only() {
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

        let dir = tempfile::tempdir().expect("temp dir");
        let ca = CertificateAuthority::create(&dir.path().join("a"));
        let node = ca.issue_node(&dir.path().join("a/node-1"), 1);
        let other = CertificateAuthority::create(&dir.path().join("b"));

        let leaf = CertificateDer::from_pem_file(&node.cert_path).expect("read cert.pem");
        PrivateKeyDer::from_pem_file(&node.key_path).expect("key.pem is a PEM private key");
        let verify = |ca_path: &Path| {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_file(ca_path).expect("read ca.pem"))
                .expect("a root");
            let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
            let verifier =
                rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .expect("verifier");
            let name = ServerName::try_from("127.0.0.1").expect("a name");
            verifier.verify_server_cert(&leaf, &[], &name, &[], UnixTime::now())
        };
        assert!(verify(&ca.ca_path).is_ok(), "signed by its CA");
        assert!(verify(&other.ca_path).is_err(), "not by another");
    }
}
