//! TLS for both ALPNs, and the cluster PKI (CA and node certificates).
//!
//! One quinn endpoint serves both ALPNs, but rustls decides client
//! authentication before ALPN is known. So the server *accepts* a client
//! certificate (which must then chain to the cluster CA) without requiring
//! one, and the node layer refuses an `mlsd-node/1` connection whose peer did
//! not present a certificate naming a configured node ([`peer_node_name`]).

use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use crate::protocol::{ALPN_CLIENT, ALPN_NODE};

/// Server name clients verify: every node certificate carries it, so a client
/// knows it reached *a* node of its cluster without knowing which.
pub const CLUSTER_SERVER_NAME: &str = "mlsd";

/// Why TLS material could not be loaded, built or generated.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file is missing, unreadable or holds no usable item.
    #[error("cannot read {path}: {reason}")]
    Pem {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// rustls or quinn refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Generate(String),
}

/// DNS name in a node certificate that identifies node `node`; dialing nodes
/// verify it so a forwarded request reaches the node it was meant for.
pub fn node_dns_name(node: &str) -> String {
    format!("{node}.node.mlsd")
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// DNS name in the operator certificate (`operator.pem`). Only a peer
/// presenting it may send operator requests (`mlsd admin`, chaos); it names
/// no node, so it cannot forward client requests or hand envelopes to an
/// ODS, and a node certificate cannot act as the operator.
pub const OPERATOR_DNS_NAME: &str = "operator.mlsd";

/// Loads every certificate from a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_err = |reason: String| TlsError::Pem { path: path.display().to_string(), reason };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_err("no certificate in file".into()));
    }
    Ok(certs)
}

/// Loads the private key from a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| TlsError::Pem { path: path.display().to_string(), reason: e.to_string() })
}

fn roots(ca: &[CertificateDer<'static>]) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for c in ca {
        store.add(c.clone()).map_err(|e| TlsError::Config(e.to_string()))?;
    }
    Ok(Arc::new(store))
}

/// A node's identity: its certificate chain and key, and the CA it trusts.
#[derive(Debug)]
pub struct NodeTls {
    /// The cluster CA certificate(s).
    pub ca: Vec<CertificateDer<'static>>,
    /// This node's certificate chain.
    pub chain: Vec<CertificateDer<'static>>,
    /// This node's private key.
    pub key: PrivateKeyDer<'static>,
}

impl NodeTls {
    /// Loads `ca.pem`, `NODE.pem` and `NODE.key` from `certs_dir`.
    pub fn load(certs_dir: &Path, node: &str) -> Result<Self, TlsError> {
        Ok(NodeTls {
            ca: load_certs(&certs_dir.join("ca.pem"))?,
            chain: load_certs(&certs_dir.join(format!("{node}.pem")))?,
            key: load_key(&certs_dir.join(format!("{node}.key")))?,
        })
    }

    /// Loads `ca.pem`, `operator.pem` and `operator.key` from `certs_dir`:
    /// what `mlsd admin` dials the cluster with. Same shape as a node's
    /// identity, a different certificate ([`OPERATOR_DNS_NAME`]).
    pub fn operator(certs_dir: &Path) -> Result<Self, TlsError> {
        Self::load(certs_dir, "operator")
    }
}

/// The rustls server config of a node: TLS 1.3, both ALPNs, optional client
/// certificates that must chain to the cluster CA.
pub fn server_config(tls: &NodeTls) -> Result<rustls::ServerConfig, TlsError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(&tls.ca)?, provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(tls.chain.clone(), tls.key.clone_key())
        .map_err(|e| TlsError::Config(e.to_string()))?;
    cfg.alpn_protocols = vec![ALPN_CLIENT.to_vec(), ALPN_NODE.to_vec()];
    Ok(cfg)
}

/// The rustls config of a client: verifies the node against the CA, presents
/// no certificate, speaks `mlsd-client/1`.
pub fn client_config(ca: &[CertificateDer<'static>]) -> Result<rustls::ClientConfig, TlsError> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots(ca)?)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![ALPN_CLIENT.to_vec()];
    Ok(cfg)
}

/// The rustls config a node dials other nodes with: mutual TLS, `mlsd-node/1`.
pub fn node_client_config(tls: &NodeTls) -> Result<rustls::ClientConfig, TlsError> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots(&tls.ca)?)
        .with_client_auth_cert(tls.chain.clone(), tls.key.clone_key())
        .map_err(|e| TlsError::Config(e.to_string()))?;
    cfg.alpn_protocols = vec![ALPN_NODE.to_vec()];
    Ok(cfg)
}

/// Which of `nodes` the peer's (already CA-verified) certificate names, if any.
/// `None` means the peer is not a cluster node and must be refused.
pub fn peer_node_name<'a>(
    peer_chain: &[CertificateDer<'static>],
    nodes: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let leaf = peer_chain.first()?;
    let cert = webpki::EndEntityCert::try_from(leaf).ok()?;
    nodes.into_iter().find_map(|n| {
        let name = ServerName::try_from(node_dns_name(n)).ok()?;
        cert.verify_is_valid_for_subject_name(&name).ok().map(|_| n.to_string())
    })
}

/// Whether the peer's (already CA-verified) certificate is the operator's.
pub fn peer_is_operator(peer_chain: &[CertificateDer<'static>]) -> bool {
    let Some(leaf) = peer_chain.first() else { return false };
    let Ok(cert) = webpki::EndEntityCert::try_from(leaf) else { return false };
    let Ok(name) = ServerName::try_from(OPERATOR_DNS_NAME) else { return false };
    cert.verify_is_valid_for_subject_name(&name).is_ok()
}

/// A freshly generated certificate and its key, both PEM.
pub struct GeneratedCert {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Private key, PEM (PKCS#8). Written with mode 0600 by the caller.
    pub key_pem: String,
}

fn ca_params() -> Result<CertificateParams, TlsError> {
    let mut p = CertificateParams::new(Vec::<String>::new())
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    p.distinguished_name.push(DnType::CommonName, "mlsd cluster CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(p)
}

/// Generates a new cluster CA (ECDSA P-256, ten years).
pub fn generate_ca() -> Result<GeneratedCert, TlsError> {
    let key = KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
    let mut params = ca_params()?;
    params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    let cert = params.self_signed(&key).map_err(|e| TlsError::Generate(e.to_string()))?;
    Ok(GeneratedCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// Generates a certificate for node `node`, signed by the CA whose key is
/// `ca_key_pem`. It is valid for client and server auth, so the same
/// certificate serves clients and dials other nodes.
pub fn generate_node_cert(node: &str, ca_key_pem: &str) -> Result<GeneratedCert, TlsError> {
    let gen = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(gen)?;
    let issuer = Issuer::new(ca_params()?, ca_key);
    let key = KeyPair::generate().map_err(gen)?;
    let mut params =
        CertificateParams::new(vec![CLUSTER_SERVER_NAME.to_string(), node_dns_name(node)])
            .map_err(gen)?;
    params.distinguished_name.push(DnType::CommonName, format!("mlsd node {node}"));
    params.extended_key_usages =
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    let cert = params.signed_by(&key, &issuer).map_err(gen)?;
    Ok(GeneratedCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// Generates the operator certificate, signed by the CA whose key is
/// `ca_key_pem`: client auth only, naming [`OPERATOR_DNS_NAME`] and no node
/// (so it can neither serve clients nor pass as a node).
pub fn generate_operator_cert(ca_key_pem: &str) -> Result<GeneratedCert, TlsError> {
    let gen = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(gen)?;
    let issuer = Issuer::new(ca_params()?, ca_key);
    let key = KeyPair::generate().map_err(gen)?;
    let mut params = CertificateParams::new(vec![OPERATOR_DNS_NAME.to_string()]).map_err(gen)?;
    params.distinguished_name.push(DnType::CommonName, "mlsd operator");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    let cert = params.signed_by(&key, &issuer).map_err(gen)?;
    Ok(GeneratedCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pem: &str) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<_, _>>().unwrap()
    }

    #[test]
    fn node_cert_names_its_node_only() {
        let ca = generate_ca().unwrap();
        let n1 = generate_node_cert("n1", &ca.key_pem).unwrap();
        let chain = parse(&n1.cert_pem);
        assert_eq!(peer_node_name(&chain, ["n2", "n1"]).as_deref(), Some("n1"));
        assert_eq!(peer_node_name(&chain, ["n2", "n3"]), None);
        assert_eq!(peer_node_name(&[], ["n1"]), None);
        assert!(!peer_is_operator(&chain));
    }

    #[test]
    fn operator_cert_names_no_node() {
        let ca = generate_ca().unwrap();
        let op = parse(&generate_operator_cert(&ca.key_pem).unwrap().cert_pem);
        assert!(peer_is_operator(&op));
        assert_eq!(peer_node_name(&op, ["n1", "operator"]), None);
        assert!(!peer_is_operator(&[]));
    }
}
