//! Which nodes replicate each shard: `replicas` of the nodes hosting the
//! shard's role, by rendezvous hashing of the shard id, so every node
//! computes the same voters from cluster.toml and the shards of one role
//! spread over its nodes.

use mlsd_actors::replica::ShardId;
use mlsd_transport::Role;
use sha2::{Digest, Sha256};

use crate::config::{ClusterConfig, NodeConfig};

fn score(shard: ShardId, node: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(b"mlsd-placement-v1\0");
    h.update(shard.role.name().as_bytes());
    h.update(shard.index.to_be_bytes());
    h.update([0]);
    h.update(node.as_bytes());
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().expect("sha256 has 32 bytes"))
}

/// The voters of `shard`, best placed first.
pub fn voters(config: &ClusterConfig, shard: ShardId) -> Vec<&NodeConfig> {
    let mut hosts: Vec<&NodeConfig> = config.nodes.iter().filter(|n| n.hosts(shard.role)).collect();
    hosts.sort_by(|a, b| {
        score(shard, &b.name).cmp(&score(shard, &a.name)).then(a.name.cmp(&b.name))
    });
    hosts.truncate(config.replication.replicas as usize);
    hosts
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
