//! Where a key lives: the shard of the key ([`crate::shards::placement`])
//! and that shard's voters. Every node computes the same answer from the
//! same config, so a request can enter the cluster anywhere; which voter
//! leads is found at run time (the entry node follows `NotLeader`).

use mlsd_transport::Role;

use crate::config::{ClusterConfig, NodeConfig};
use crate::shards::placement;

/// The best-placed voter of the shard of `key` for `role`: where a request
/// for it is sent first when no leader is known, and, in a cluster whose
/// shards have one replica, the one node that holds it. `None` when no node
/// hosts the role (which a validated config rules out).
pub fn owner<'a>(config: &'a ClusterConfig, role: Role, key: &[u8]) -> Option<&'a NodeConfig> {
    placement::voters(config, placement::shard_of(config, role, key)).into_iter().next()
}

/// Every voter of the shard of `key` for `role`, best placed first.
pub fn voters<'a>(config: &'a ClusterConfig, role: Role, key: &[u8]) -> Vec<&'a NodeConfig> {
    placement::voters(config, placement::shard_of(config, role, key))
}
