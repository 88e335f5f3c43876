//! `mlsd certs`: the cluster CA, one certificate per node, the operator's
//! certificate (`operator.pem`/`operator.key`, what `mlsd admin` authenticates
//! with; keep the key off the nodes) and the AS signing key (`as.key`, hex
//! Ed25519 seed; `as.pub`, hex public key that clients trust).
//!
//! Existing files are never overwritten: regenerating a CA would silently cut
//! every node and client off from the cluster. Keys are created with mode 0600.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use mlsd_transport::{tls, Role};

use crate::config::{ClusterConfig, NodeConfig};

/// Why certificates could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// Reading or writing a file failed.
    #[error("{path}: {reason}")]
    Io {
        /// The file or directory.
        path: String,
        /// The OS error.
        reason: String,
    },
    /// A node certificate is missing but the CA key is not there to sign one.
    #[error("cannot create {missing}: CA key {ca_key} is missing")]
    NoCaKey {
        /// The file that would have been created.
        missing: String,
        /// The expected CA key path.
        ca_key: String,
    },
    /// A file this node needs is missing from a certs dir that is not
    /// empty: never created afresh, since a new CA or AS key would split the
    /// cluster or invalidate every binding clients hold.
    #[error(
        "{missing} is missing: this node needs it ({why}); copy it from the cluster's certs, or run `mlsd certs` where the CA key is"
    )]
    Missing {
        /// The missing file.
        missing: String,
        /// Why this node needs it.
        why: &'static str,
    },
    /// Generation failed.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

fn io(path: &Path, e: std::io::Error) -> CertsError {
    CertsError::Io { path: path.display().to_string(), reason: e.to_string() }
}

fn write_new(path: &Path, content: &str, mode: u32) -> Result<(), CertsError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| io(path, e))?;
    f.write_all(content.as_bytes()).map_err(|e| io(path, e))?;
    f.sync_all().map_err(|e| io(path, e))
}

/// Creates whatever of the CA and node certificates is missing in the
/// config's `certs_dir`; returns the files it created (empty when all existed).
pub fn ensure_certs(config: &ClusterConfig) -> Result<Vec<PathBuf>, CertsError> {
    let dir = &config.certs_dir;
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let mut created = Vec::new();
    let ca_pem = dir.join("ca.pem");
    let ca_key = dir.join("ca.key");
    if !ca_pem.exists() && !ca_key.exists() {
        let ca = tls::generate_ca()?;
        write_new(&ca_key, &ca.key_pem, 0o600)?;
        write_new(&ca_pem, &ca.cert_pem, 0o644)?;
        created.extend([ca_key.clone(), ca_pem.clone()]);
    }
    let as_key = dir.join("as.key");
    let as_pub = dir.join("as.pub");
    if !as_key.exists() && !as_pub.exists() {
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        rand::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, seed.as_mut())
            .map_err(|e| io(&as_key, std::io::Error::other(e.to_string())))?;
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        let mut seed_hex = zeroize::Zeroizing::new(hex::encode(seed.as_ref()));
        seed_hex.push('\n');
        write_new(&as_key, &seed_hex, 0o600)?;
        write_new(&as_pub, &format!("{}\n", hex::encode(key.verifying_key().to_bytes())), 0o644)?;
        created.extend([as_key, as_pub]);
    }
    let names = config.nodes.iter().map(|n| Some(n.name.as_str()));
    for node in std::iter::once(None).chain(names) {
        let stem = node.unwrap_or("operator");
        let pem = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}.key"));
        if pem.exists() || key.exists() {
            continue;
        }
        let ca_key_pem = std::fs::read_to_string(&ca_key).map_err(|_| CertsError::NoCaKey {
            missing: pem.display().to_string(),
            ca_key: ca_key.display().to_string(),
        })?;
        let cert = match node {
            Some(name) => tls::generate_node_cert(name, &ca_key_pem)?,
            None => tls::generate_operator_cert(&ca_key_pem)?,
        };
        write_new(&key, &cert.key_pem, 0o600)?;
        write_new(&pem, &cert.cert_pem, 0o644)?;
        created.extend([key, pem]);
    }
    Ok(created)
}

/// What `mlsd run` does before a node starts. In an empty (or absent)
/// certs dir, the first start of a new cluster, it creates everything
/// ([`ensure_certs`]). Otherwise it only checks that the files this node
/// needs are there: `ca.pem`, its own certificate and key, and `as.key` when
/// it hosts the AS. It never creates a CA or AS key next to others' files;
/// the error names the missing file. Returns the files it created.
pub fn prepare(config: &ClusterConfig, me: &NodeConfig) -> Result<Vec<PathBuf>, CertsError> {
    let dir = &config.certs_dir;
    let empty = match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(io(dir, e)),
    };
    if empty {
        return ensure_certs(config);
    }
    let mut needed = vec![
        (dir.join("ca.pem"), "the cluster CA every peer is checked against"),
        (dir.join(format!("{}.pem", me.name)), "its node certificate"),
        (dir.join(format!("{}.key", me.name)), "its node key"),
    ];
    if me.hosts(Role::As) {
        needed.push((dir.join("as.key"), "it hosts the AS, which signs bindings with it"));
    }
    match needed.into_iter().find(|(p, _)| !p.exists()) {
        Some((p, why)) => Err(CertsError::Missing { missing: p.display().to_string(), why }),
        None => Ok(Vec::new()),
    }
}

/// Loads the AS signing key written by [`ensure_certs`].
pub fn load_as_key(certs_dir: &Path) -> Result<ed25519_dalek::SigningKey, CertsError> {
    let path = certs_dir.join("as.key");
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(&path).map_err(|e| io(&path, e))?);
    let mut seed = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut seed).map_err(|e| CertsError::Io {
        path: path.display().to_string(),
        reason: format!("not a hex Ed25519 seed: {e}"),
    })?;
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    zeroize::Zeroize::zeroize(&mut seed);
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_missing_files_once_with_private_keys_0600() {
        let dir = tempfile::tempdir().unwrap();
        let text = "[cluster]\nname = \"t\"\ncerts_dir = \"certs\"\n[[node]]\nname = \"n1\"\nlisten = \"127.0.0.1:1\"\nroles = [\"as\", \"cs\", \"ids\", \"ods\", \"sds\"]\ndata_dir = \"d\"\n";
        let cfg = ClusterConfig::parse(text, dir.path()).unwrap();
        let created = ensure_certs(&cfg).unwrap();
        assert_eq!(created.len(), 8);
        let ca_before = std::fs::read(cfg.certs_dir.join("ca.pem")).unwrap();
        for key in ["ca.key", "n1.key", "as.key", "operator.key"] {
            let mode = std::fs::metadata(cfg.certs_dir.join(key)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
        assert!(ensure_certs(&cfg).unwrap().is_empty());
        assert_eq!(std::fs::read(cfg.certs_dir.join("ca.pem")).unwrap(), ca_before);
        tls::NodeTls::load(&cfg.certs_dir, "n1").unwrap();
        tls::NodeTls::operator(&cfg.certs_dir).unwrap();
    }

    #[test]
    fn a_node_start_creates_only_in_an_empty_dir_and_names_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let text = "[cluster]\nname = \"t\"\ncerts_dir = \"certs\"\n[[node]]\nname = \"n1\"\nlisten = \"127.0.0.1:1\"\nroles = [\"as\", \"cs\", \"ids\", \"sds\"]\ndata_dir = \"d1\"\n[[node]]\nname = \"n2\"\nlisten = \"127.0.0.1:2\"\nroles = [\"ods\"]\ndata_dir = \"d2\"\n";
        let cfg = ClusterConfig::parse(text, dir.path()).unwrap();
        let (n1, n2) =
            (cfg.node(Some("n1")).unwrap().clone(), cfg.node(Some("n2")).unwrap().clone());
        // First start of a new cluster: everything is created.
        assert_eq!(prepare(&cfg, &n1).unwrap().len(), 10);
        let files = |d: &Path| {
            let mut v: Vec<_> =
                std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name()).collect();
            v.sort();
            v
        };
        // An AS node whose AS key is gone fails, naming it, and creates nothing.
        std::fs::remove_file(cfg.certs_dir.join("as.key")).unwrap();
        let before = files(&cfg.certs_dir);
        let e = prepare(&cfg, &n1).unwrap_err().to_string();
        assert!(e.contains("as.key is missing"), "{e}");
        assert_eq!(files(&cfg.certs_dir), before);
        // A host with only ca.pem and its own pair starts an ODS node.
        for f in ["ca.key", "as.pub", "n1.pem", "n1.key"] {
            std::fs::remove_file(cfg.certs_dir.join(f)).unwrap();
        }
        assert!(prepare(&cfg, &n2).unwrap().is_empty());
        // Without the CA certificate it does not start, and no CA appears.
        std::fs::remove_file(cfg.certs_dir.join("ca.pem")).unwrap();
        let e = prepare(&cfg, &n2).unwrap_err().to_string();
        assert!(e.contains("ca.pem is missing"), "{e}");
        assert!(!cfg.certs_dir.join("ca.key").exists() && !cfg.certs_dir.join("ca.pem").exists());
    }
}
