//! The `[[node]]` blocks: which nodes exist, where each listens, which
//! roles it hosts and where its data lives, each setting's meaning beside
//! the key that sets it, and the checks of the whole list.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use mlsd_transport::Role;
use serde::Deserialize;

use super::ConfigError;

/// One node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// Unique name; also the name in its certificate.
    pub name: String,
    /// UDP address of its QUIC endpoint.
    pub listen: SocketAddr,
    /// Roles it hosts.
    pub roles: Vec<Role>,
    /// Directory of its RocksDB, absolute.
    pub data_dir: PathBuf,
}

impl NodeConfig {
    /// Whether this node hosts `role`.
    pub fn hosts(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

impl NodeConfig {
    /// The checked node list: at least one node, unique valid names and
    /// addresses, known roles, every role hosted somewhere; data dirs taken
    /// relative to `base`.
    pub(super) fn parse_all(
        raw: Vec<RawNode>,
        base: &Path,
    ) -> Result<Vec<NodeConfig>, ConfigError> {
        if raw.is_empty() {
            return Err(ConfigError::NoNodes);
        }
        let mut names = HashSet::new();
        let mut addrs = HashSet::new();
        let mut nodes = Vec::new();
        for n in raw {
            if !valid_node_name(&n.name) {
                return Err(ConfigError::InvalidNodeName(n.name));
            }
            if !names.insert(n.name.clone()) {
                return Err(ConfigError::DuplicateNodeName(n.name));
            }
            if !addrs.insert(n.listen) {
                return Err(ConfigError::DuplicateAddress(n.listen));
            }
            let mut roles = Vec::new();
            for r in &n.roles {
                let role = Role::from_name(r).ok_or_else(|| ConfigError::UnknownRole {
                    node: n.name.clone(),
                    role: r.clone(),
                })?;
                if !roles.contains(&role) {
                    roles.push(role);
                }
            }
            nodes.push(NodeConfig {
                name: n.name,
                listen: n.listen,
                roles,
                data_dir: base.join(n.data_dir),
            });
        }
        for role in Role::ALL {
            if !nodes.iter().any(|n| n.hosts(role)) {
                return Err(ConfigError::RoleNotHosted(role));
            }
        }
        Ok(nodes)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNode {
    name: String,
    listen: SocketAddr,
    roles: Vec<String>,
    data_dir: PathBuf,
}

/// Names whose `NAME.pem`/`NAME.key` would be the CA's, the AS key's or the
/// operator's files in the certs dir.
const RESERVED_NODE_NAMES: [&str; 3] = ["ca", "as", "operator"];

fn valid_node_name(n: &str) -> bool {
    !n.is_empty()
        && !RESERVED_NODE_NAMES.contains(&n)
        && n.len() <= 63
        && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !n.starts_with('-')
        && !n.ends_with('-')
}
