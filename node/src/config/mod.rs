//! `cluster.toml`: which nodes exist, where they listen, which roles each
//! hosts, and per-cluster settings.
//!
//! Parsing is strict: every problem is refused with an error that names it,
//! because a node running on a config its peers disagree with would route
//! requests to the wrong owner.
//!
//! # Layout
//! - this file: the whole config, put together from its tables.
//! - [`nodes`]: the `[[node]]` blocks.
//! - [`limits`]: `[limits]`, sizes and timeouts.
//! - [`replication`]: the `[cluster]` keys of sharding and Raft.
//! - [`roles`]: `[as]`, `[cs]`, `[ods]`, `[ids]` and `[sds]`.
//! - [`tickets`]: the `[tickets]` table.
//! - [`runtime`]: the one-key tables `[storage]`, `[chaos]`, `[supervision]`.
//! - `check`: the checks every numeric setting goes through.
//!
//! A table is one file: its typed section, its raw keys and its `parse`.

mod check;
pub mod limits;
pub mod nodes;
pub mod replication;
pub mod roles;
pub mod runtime;
pub mod tickets;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use mlsd_transport::Role;
use serde::Deserialize;

use limits::RawLimits;
pub use limits::{Limits, DEFAULT_CALL_TIMEOUT};
pub use nodes::NodeConfig;
use nodes::RawNode;
pub use replication::Replication;
pub use roles::{AsConfig, CsConfig, IdsConfig, OdsConfig, SdsConfig};
use roles::{RawAs, RawCs, RawIds, RawOds, RawSds};
pub use runtime::{ChaosConfig, StorageConfig, SupervisionConfig};
use runtime::{RawChaos, RawStorage, RawSupervision};
use tickets::RawTickets;
pub use tickets::TicketsConfig;

/// Why a config was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {reason}")]
    Unreadable {
        /// The path given.
        path: String,
        /// The OS error.
        reason: String,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("invalid config: {0}")]
    Syntax(String),
    /// A node lists a role that does not exist.
    #[error("node {node}: unknown role {role:?} (roles are as, cs, ids, ods, sds)")]
    UnknownRole {
        /// The node.
        node: String,
        /// The unknown role.
        role: String,
    },
    /// Two nodes share a name.
    #[error("duplicate node name {0:?}")]
    DuplicateNodeName(String),
    /// Two nodes share a listen address.
    #[error("duplicate node address {0}")]
    DuplicateAddress(SocketAddr),
    /// No node hosts this role, so its requests could never be served.
    #[error("no node hosts role {0}")]
    RoleNotHosted(Role),
    /// No `[[node]]` table.
    #[error("the config lists no node")]
    NoNodes,
    /// A node name that cannot appear in a certificate.
    #[error("invalid node name {0:?}: use 1-63 letters, digits or '-', and not ca, as or operator (their files share the certs dir)")]
    InvalidNodeName(String),
    /// `--node` names a node the config does not list.
    #[error("no node named {0:?} in the config")]
    UnknownNode(String),
    /// A setting is out of range.
    #[error("invalid setting {key}: {reason}")]
    BadSetting {
        /// The key.
        key: &'static str,
        /// Why.
        reason: String,
    },
}

/// A whole cluster config, validated, with paths made absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Cluster name (for logs and operators).
    pub name: String,
    /// Directory of the CA and node certificates, absolute.
    pub certs_dir: PathBuf,
    /// The nodes, in file order.
    pub nodes: Vec<NodeConfig>,
    /// Wire and routing limits.
    pub limits: Limits,
    /// `[storage]`: how the store writes.
    pub storage: StorageConfig,
    /// AS settings (`[as]`).
    pub r#as: AsConfig,
    /// CS settings (`[cs]`).
    pub cs: CsConfig,
    /// ODS settings (`[ods]`).
    pub ods: OdsConfig,
    /// IDS settings (`[ids]`).
    pub ids: IdsConfig,
    /// SDS settings (`[sds]`).
    pub sds: SdsConfig,
    /// `[tickets]`: the quota tickets (decision D12).
    pub tickets: TicketsConfig,
    /// `[chaos]`: fault injection for chaos tests.
    pub chaos: ChaosConfig,
    /// `[supervision]`: restarts of failing role actors.
    pub supervision: SupervisionConfig,
    /// Replication (`[cluster] replicas`, `shards`, `heartbeat_ms`,
    /// `election_timeout_ms`; decision D13).
    pub replication: Replication,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    cluster: RawCluster,
    #[serde(default)]
    node: Vec<RawNode>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    storage: RawStorage,
    #[serde(default, rename = "as")]
    as_: RawAs,
    #[serde(default)]
    cs: RawCs,
    #[serde(default)]
    ods: RawOds,
    #[serde(default)]
    ids: RawIds,
    #[serde(default)]
    sds: RawSds,
    #[serde(default)]
    tickets: RawTickets,
    #[serde(default)]
    chaos: RawChaos,
    #[serde(default)]
    supervision: RawSupervision,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    name: String,
    certs_dir: PathBuf,
    replicas: Option<u32>,
    shards: Option<u32>,
    heartbeat_ms: Option<u64>,
    election_timeout_ms: Option<u64>,
    snapshot_logs: Option<u64>,
    balance_leaders: Option<bool>,
    max_moves: Option<u32>,
}

impl ClusterConfig {
    /// Reads and validates the config at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = if base.as_os_str().is_empty() { PathBuf::from(".") } else { base };
        let base = std::path::absolute(&base).unwrap_or(base);
        Self::parse(&text, &base)
    }

    /// Parses and validates config text; relative paths are taken relative to `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        let nodes = NodeConfig::parse_all(raw.node, base)?;
        let replication = Replication::parse(&raw.cluster)?;
        let limits = Limits::parse(&raw.limits)?;
        let r#as = AsConfig::parse(&raw.as_)?;
        let cs = CsConfig::parse(&raw.cs)?;
        let ods = OdsConfig::parse(&raw.ods, base)?;
        let ids = IdsConfig::parse(&raw.ids)?;
        let sds = SdsConfig::parse(&raw.sds)?;
        let tickets = TicketsConfig::parse(&raw.tickets)?;
        Ok(ClusterConfig {
            tickets,
            r#as,
            cs,
            ods,
            ids,
            sds,
            chaos: ChaosConfig::parse(&raw.chaos),
            supervision: SupervisionConfig::parse(&raw.supervision)?,
            replication,
            name: raw.cluster.name,
            certs_dir: base.join(raw.cluster.certs_dir),
            nodes,
            limits,
            storage: StorageConfig::parse(&raw.storage),
        })
    }

    /// The node called `name`, or the first node when `name` is `None`.
    pub fn node(&self, name: Option<&str>) -> Result<&NodeConfig, ConfigError> {
        match name {
            None => Ok(&self.nodes[0]),
            Some(n) => self
                .nodes
                .iter()
                .find(|c| c.name == n)
                .ok_or_else(|| ConfigError::UnknownNode(n.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, port: u16, roles: &str) -> String {
        format!(
            "[[node]]\nname = \"{name}\"\nlisten = \"127.0.0.1:{port}\"\nroles = [{roles}]\ndata_dir = \"d/{name}\"\n"
        )
    }
    const HEAD: &str = "[cluster]\nname = \"t\"\ncerts_dir = \"certs\"\n";
    const ALL: &str = "\"as\", \"cs\", \"ids\", \"ods\", \"sds\"";

    fn parse(s: &str) -> Result<ClusterConfig, ConfigError> {
        ClusterConfig::parse(s, Path::new("/etc/mlsd"))
    }

    #[test]
    fn valid_config_resolves_relative_paths_and_defaults() {
        let c = parse(&format!("{HEAD}{}", node("n1", 4433, ALL))).unwrap();
        assert_eq!(c.certs_dir, Path::new("/etc/mlsd/certs"));
        assert_eq!(c.nodes[0].data_dir, Path::new("/etc/mlsd/d/n1"));
        assert_eq!(c.limits.max_frame, mlsd_transport::limits::DEFAULT_MAX_FRAME);
        assert!(c.storage.sync_wal);
        assert_eq!(c.node(None).unwrap().name, "n1");
        assert_eq!(c.node(Some("n9")), Err(ConfigError::UnknownNode("n9".into())));
    }

    #[test]
    fn node_names_that_would_share_files_with_the_pki_are_refused() {
        for bad in ["operator", "as", "ca", "-n", "a.b", ""] {
            let e = parse(&format!("{HEAD}{}", node(bad, 4433, ALL))).unwrap_err();
            assert_eq!(e, ConfigError::InvalidNodeName(bad.into()));
        }
        assert!(parse(&format!("{HEAD}{}", node("operator-2", 4433, ALL))).is_ok());
    }

    #[test]
    fn the_one_key_tables_default_parse_and_refuse_zero_restarts() {
        let n = node("n1", 4433, ALL);
        let c = parse(&format!("{HEAD}{n}")).unwrap();
        assert_eq!(
            (c.storage.sync_wal, c.chaos.allow, c.supervision.max_restarts),
            (true, false, 10)
        );
        let set =
            "[storage]\nsync_wal = false\n[chaos]\nallow = true\n[supervision]\nmax_restarts = 3\n";
        let c = parse(&format!("{HEAD}{n}{set}")).unwrap();
        assert_eq!(
            (c.storage.sync_wal, c.chaos.allow, c.supervision.max_restarts),
            (false, true, 3)
        );
        let zero = parse(&format!("{HEAD}{n}[supervision]\nmax_restarts = 0\n")).unwrap_err();
        assert!(matches!(zero, ConfigError::BadSetting { key: "supervision.max_restarts", .. }));
        let typo = parse(&format!("{HEAD}{n}[chaos]\nallowed = true\n")).unwrap_err();
        assert!(matches!(typo, ConfigError::Syntax(_)), "{typo:?}");
    }

    #[test]
    fn the_repository_default_config_is_valid() {
        let text = include_str!("../../../cluster.toml");
        let c = parse(text).unwrap();
        assert_eq!(c.nodes.len(), 1);
        assert_eq!(c.nodes[0].name, "n1");
        assert_eq!(c.nodes[0].roles, Role::ALL.to_vec());
        assert_eq!(c.nodes[0].listen, "127.0.0.1:4433".parse().unwrap());
    }
}
