//! A cluster of nodes inside this process, in a temporary directory, on free
//! loopback ports: what `mlsd demo` and `mlsd bench` run on (real QUIC, real
//! RocksDB, the same `Node` as `mlsd run`).

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;

use mlsd_client::ClientConfig;

use mlsd_node::{ClusterConfig, Node};

/// A running in-process cluster; its directory is removed on drop.
pub struct InprocCluster {
    /// The nodes, in layout order.
    pub nodes: Vec<Node>,
    /// The parsed config (for routing questions).
    pub config: ClusterConfig,
    dir: tempfile::TempDir,
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?)
}

/// A temporary directory holding `cluster.toml` for `layout` (node name,
/// TOML role list; free loopback ports) with `extra` appended to the
/// `[cluster]` table, and the cluster's certificates; the parsed config.
/// What an in-process cluster starts from, and what `mlsd bench` hands to
/// `mlsd run` processes.
pub fn prepare(
    name: &str,
    layout: &[(&str, &str)],
    extra: &str,
) -> anyhow::Result<(tempfile::TempDir, ClusterConfig)> {
    let dir = tempfile::tempdir()?;
    let mut text = format!("[cluster]\nname = \"{name}\"\ncerts_dir = \"certs\"\n{extra}\n");
    for (node, roles) in layout {
        text.push_str(&format!(
            "[[node]]\nname = \"{node}\"\nlisten = \"{}\"\nroles = [{roles}]\ndata_dir = \"data/{node}\"\n",
            free_addr()?
        ));
    }
    std::fs::write(dir.path().join("cluster.toml"), &text)?;
    let config = ClusterConfig::parse(&text, dir.path())?;
    mlsd_node::certs::ensure_certs(&config)?;
    Ok((dir, config))
}

impl InprocCluster {
    /// Starts `layout` (node name, TOML role list) with `extra` config appended.
    pub async fn start(name: &str, layout: &[(&str, &str)], extra: &str) -> anyhow::Result<Self> {
        let (dir, config) = prepare(name, layout, extra)?;
        let mut nodes = Vec::new();
        for (node, _) in layout {
            nodes.push(Node::start(config.clone(), Some(node)).await?);
        }
        Ok(InprocCluster { nodes, config, dir })
    }

    /// Adds node `name` hosting `roles` (a TOML role list) to the running
    /// cluster as an operator does: its `[[node]]` block appended to the
    /// file, its certificate made from the cluster CA, the node started
    /// (it asks a member to join; nobody else is restarted).
    pub async fn join(&mut self, name: &str, roles: &str) -> anyhow::Result<()> {
        let path = self.dir.path().join("cluster.toml");
        let mut text = std::fs::read_to_string(&path)?;
        text.push_str(&format!(
            "[[node]]\nname = \"{name}\"\nlisten = \"{}\"\nroles = [{roles}]\ndata_dir = \"data/{name}\"\n",
            free_addr()?
        ));
        std::fs::write(&path, &text)?;
        self.config = ClusterConfig::parse(&text, self.dir.path())?;
        mlsd_node::certs::ensure_certs(&self.config)?;
        self.nodes.push(Node::start(self.config.clone(), Some(name)).await?);
        Ok(())
    }

    /// The cluster's directory.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Client settings for home `home` entering at node number `via`.
    pub fn client_config(&self, home: &str, via: usize) -> ClientConfig {
        ClientConfig {
            home: self.dir.path().join("homes").join(home),
            server: self.nodes[via].addr(),
            ca: self.dir.path().join("certs/ca.pem"),
            as_key: self.dir.path().join("certs/as.pub"),
        }
    }

    /// Each shard's highest term over the nodes: between two readings,
    /// the sum of the growth is the number of elections held.
    pub fn shard_terms(&self) -> std::collections::BTreeMap<String, u64> {
        let mut terms = std::collections::BTreeMap::new();
        for (shard, term) in self.nodes.iter().flat_map(|n| n.shard_terms()) {
            let t = terms.entry(shard).or_insert(0);
            *t = term.max(*t);
        }
        terms
    }

    /// Elections held since `before` ([`InprocCluster::shard_terms`]).
    pub fn elections_since(&self, before: &std::collections::BTreeMap<String, u64>) -> u64 {
        let now = self.shard_terms();
        now.iter().map(|(s, t)| t.saturating_sub(before.get(s).copied().unwrap_or(*t))).sum()
    }

    /// Stops every node.
    pub async fn shutdown(self) {
        for n in self.nodes {
            n.shutdown().await;
        }
    }
}
