//! A node that is not a member of the cluster yet, or whose record in the
//! cluster map is not what its `[[node]]` block says (its address or
//! roles changed), asks to be made one (decision D15).
//!
//! It asks the nodes it knows of (its file's, and the map's members once it
//! has one) for their cluster map, routes by the newest it is told of, and
//! sends its `Join` to the cluster group's leader, who checks that the
//! node's certificate (signed by the cluster's CA) names it and commits the
//! map with it as a member. The leader then adds it to the cluster group
//! as a learner ([`super::steward`]); once the group's map has applied on
//! the node, the map is settled here and the node opens the replicas the
//! map places on it. Nothing here needs the running nodes restarted.

use std::sync::Arc;
use std::time::Duration;

use mlsd_actors::replica::ShardId;
use mlsd_transport::protocol::{ClusterError, Join, NodeRequest, ReplicationRequest};
use mlsd_transport::{Response, WireError};

use super::map::ClusterMap;
use super::Shards;

/// How often a node that is not a member (yet) asks again.
const ASK_EVERY: Duration = Duration::from_millis(500);
/// Redirects a join follows to find the cluster group's leader.
const MAX_REDIRECTS: usize = 4;

/// Asks until the settled map lists this node as its file describes it.
pub(super) async fn run(shards: Arc<Shards>) {
    let me = shards.me_node.clone();
    let join = Join { node: me.name.clone(), listen: me.listen, roles: me.roles.clone() };
    loop {
        let map = shards.map();
        let listed = map.members.get(&me.name);
        let current = listed.is_some_and(|m| m.listen == me.listen && m.roles == me.roles);
        if shards.settled() && current {
            return;
        }
        if shards.settled() && listed.is_none() {
            tracing::error!(
                node = %me.name,
                "this node is no longer a member of the cluster (it was removed); it does not join again with the data it holds"
            );
            return;
        }
        if !shards.settled() {
            if let Some(told) = newest_map(&shards).await {
                shards.adopt(told);
            }
        }
        let map = shards.map();
        let listed = map.members.get(&me.name);
        let current = listed.is_some_and(|m| m.listen == me.listen && m.roles == me.roles);
        // A map from the cluster (not the file's) that lists this node
        // as it is: what is left is the group's entries reaching it.
        if !current && (shards.settled() || shards.told()) {
            match ask_to_join(&shards, &join).await {
                Ok(map) => {
                    tracing::info!(version = map.version, "the cluster admitted this node");
                    shards.adopt(map);
                }
                Err(e) => tracing::warn!(error = %e, "asking to join the cluster"),
            }
        }
        tokio::time::sleep(ASK_EVERY).await;
    }
}

/// The newest map the other nodes this node knows of have applied, if any
/// has one.
async fn newest_map(shards: &Shards) -> Option<ClusterMap> {
    let mut names: Vec<String> = shards.map().members.keys().cloned().collect();
    names.extend(shards.config.nodes.iter().map(|n| n.name.clone()));
    names.sort();
    names.dedup();
    let mut told = Vec::new();
    for name in names.iter().filter(|n| **n != shards.me) {
        let call =
            shards.peers.call(name, NodeRequest::Replication(ReplicationRequest::ClusterMap));
        if let Ok(resp) = tokio::time::timeout(shards.config.limits.connect_timeout, call).await {
            told.extend(ClusterMap::from_answer(&resp));
        }
    }
    ClusterMap::newest(told)
}

/// Sends `join` to the cluster group's leader, following redirects.
async fn ask_to_join(shards: &Shards, join: &Join) -> Result<ClusterMap, WireError> {
    let mut to = shards.leader_hint(ShardId::CLUSTER);
    for _ in 0..MAX_REDIRECTS {
        let req = NodeRequest::Replication(ReplicationRequest::Join(join.clone()));
        match shards.peers.call(&to, req).await {
            Response::Error(WireError::Cluster(ClusterError::NotLeader {
                leader: Some(l),
                ..
            })) if l != to && l != shards.me => to = l,
            Response::Error(e) => return Err(e),
            other => {
                return ClusterMap::from_answer(&other).ok_or_else(|| {
                    WireError::Cluster(ClusterError::Internal(format!("{to} answered no map")))
                })
            }
        }
    }
    Err(WireError::Cluster(ClusterError::ShardUnavailable { shard: ShardId::CLUSTER.to_string() }))
}
