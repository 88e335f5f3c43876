//! Which nodes replicate each shard: `replicas` of the nodes hosting the
//! shard's role, computed by every node alike from cluster.toml. The role's
//! nodes are put in an order of their own (a hash of role and node name, so
//! different roles start on different nodes), and shard `i` takes the
//! `replicas` nodes from position `i` on, wrapping: every node of a role
//! holds as many of its shards as any other, give or take one.

use mlsd_actors::replica::ShardId;
use mlsd_transport::Role;
use sha2::{Digest, Sha256};

use crate::config::{ClusterConfig, NodeConfig};

fn score(role: Role, node: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(b"mlsd-placement-v2\0");
    h.update(role.name().as_bytes());
    h.update([0]);
    h.update(node.as_bytes());
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().expect("sha256 has 32 bytes"))
}

/// The voters of `shard`, its preferred first (where a request goes when
/// no leader is known).
pub fn voters(config: &ClusterConfig, shard: ShardId) -> Vec<&NodeConfig> {
    let role = shard.role;
    let mut hosts: Vec<&NodeConfig> = config.nodes.iter().filter(|n| n.hosts(role)).collect();
    hosts.sort_by(|a, b| score(role, &a.name).cmp(&score(role, &b.name)).then(a.name.cmp(&b.name)));
    let n = hosts.len();
    let k = (config.replication.replicas as usize).min(n);
    (0..k).map(|j| hosts[(shard.index as usize + j) % n]).collect()
}

/// The shard of `key` for `role`.
pub fn shard_of(config: &ClusterConfig, role: Role, key: &[u8]) -> ShardId {
    ShardId::of(role, key, config.replication.shards)
}

/// Every shard of every role.
pub fn all(config: &ClusterConfig) -> impl Iterator<Item = ShardId> + '_ {
    Role::ALL.into_iter().flat_map(|r| ShardId::all(r, config.replication.shards))
}

/// The shards `node` replicates.
pub fn replicated_by<'a>(
    config: &'a ClusterConfig,
    node: &'a str,
) -> impl Iterator<Item = ShardId> + 'a {
    all(config).filter(move |s| voters(config, *s).iter().any(|n| n.name == node))
}

/// A config of `nodes` (name, roles as TOML list items) with `keys` in
/// `[cluster]`, for the placement and map tests.
#[cfg(test)]
pub(super) fn test_config(nodes: &[(&str, &str)], keys: &str) -> ClusterConfig {
    let mut text = format!("[cluster]\nname = \"t\"\ncerts_dir = \"c\"\n{keys}\n");
    for (i, (name, roles)) in nodes.iter().enumerate() {
        text.push_str(&format!(
            "[[node]]\nname = \"{name}\"\nlisten = \"127.0.0.1:{}\"\nroles = [{roles}]\ndata_dir = \"d{i}\"\n",
            4000 + i
        ));
    }
    ClusterConfig::parse(&text, std::path::Path::new("/tmp")).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::test_config as config;

    #[test]
    fn shards_spread_evenly_over_the_nodes_of_their_role() {
        let all = "\"as\", \"cs\", \"ids\", \"ods\", \"sds\"";
        let c = config(&[("a", all), ("b", all), ("c", "\"ods\"")], "replicas = 1\nshards = 4");
        for role in Role::ALL {
            let mut held = std::collections::HashMap::new();
            for s in ShardId::all(role, 4) {
                let v = voters(&c, s);
                assert_eq!(v.len(), 1);
                assert!(v[0].hosts(role));
                *held.entry(v[0].name.clone()).or_insert(0) += 1;
            }
            let hosts = c.nodes.iter().filter(|n| n.hosts(role)).count();
            assert_eq!(held.len(), hosts, "{role}: every host holds a shard: {held:?}");
            assert!(held.values().all(|&h| h == 4 / hosts || h == 4 / hosts + 1), "{held:?}");
        }
        let two = config(&[("n1", all), ("n2", "\"ods\"")], "replicas = 1");
        for hint in [[203u8, 230], [34, 149], [201, 112]] {
            let s = shard_of(&two, Role::Ods, &hint);
            eprintln!("{hint:?} -> {s} on {}", voters(&two, s)[0].name);
        }
        // Three replicas of a role hosted by two nodes: both, no repeats.
        let c = config(&[("a", all), ("b", all)], "");
        let v: Vec<_> = voters(&c, ShardId { role: Role::As, index: 1 })
            .iter()
            .map(|n| n.name.clone())
            .collect();
        assert_eq!(v.len(), 2);
        assert_ne!(v[0], v[1]);
    }
}
