//! What the leader of the cluster group ([`ShardId::CLUSTER`]) does besides
//! replicating the map: it writes the cluster's first map (the file's
//! placement, [`ClusterMap::bootstrap`]) when none was ever written, and
//! adds every member that does not follow the group yet as a learner, so
//! each member holds the map and routes by it; and it admits nodes that
//! ask to join ([`admit`]).

use std::sync::Arc;

use mlsd_actors::replica::{node_id, Member, ShardId, ShardStore};
use mlsd_transport::protocol::{ClusterError, Join};
use mlsd_transport::WireError;

use super::map::{ClusterMap, MemberRecord, MAX_MEMBERS};
use super::Shards;

/// Does the leader's duties whenever this node leads the cluster group,
/// for as long as the node runs.
pub(super) async fn run(shards: Arc<Shards>) {
    let mut tick = tokio::time::interval(shards.config.replication.election_timeout);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(r) = shards.replica(ShardId::CLUSTER).filter(|r| r.leading()) else {
            continue;
        };
        if let Err(why) = duties(&shards, &r).await {
            tracing::debug!(%why, "cluster group duties put off");
        }
    }
}

async fn duties(shards: &Shards, r: &mlsd_actors::replica::RaftShard) -> Result<(), String> {
    let writing = shards.map_writes.lock().await;
    let term = r.ready().await.map_err(|e| e.to_string())?;
    let map = match ClusterMap::read(r)? {
        Some(m) => m,
        None => {
            let first = ClusterMap::bootstrap(&shards.config);
            r.commit(term, first.write()?).await.map_err(|e| e.to_string())?;
            tracing::info!(members = first.members.len(), "wrote the cluster's first map");
            first
        }
    };
    drop(writing);
    let membership = r.raft.metrics().borrow().membership_config.clone();
    let followed: Vec<String> =
        membership.membership().nodes().map(|(_, n)| n.name.clone()).collect();
    for name in map.members.keys().filter(|n| !followed.contains(n)) {
        let member = Member { name: name.clone() };
        match r.raft.add_learner(node_id(name), member, false).await {
            Ok(_) => tracing::info!(node = %name, "the cluster group is followed by a new member"),
            Err(e) => return Err(format!("adding {name} as a learner: {e}")),
        }
    }
    Ok(())
}

/// Makes `join` a member (or updates its address and roles), as the
/// cluster group's leader: the map with it, committed. A member whose
/// record is already `join`'s gets the map as it is. Refused with
/// `NotLeader` by a node that does not lead the cluster group.
pub async fn admit(shards: &Shards, join: &Join) -> Result<ClusterMap, WireError> {
    let r = shards.replica(ShardId::CLUSTER).ok_or_else(|| {
        let leader = Some(shards.leader_hint(ShardId::CLUSTER)).filter(|l| *l != shards.me);
        WireError::Cluster(ClusterError::NotLeader { shard: ShardId::CLUSTER.to_string(), leader })
    })?;
    let _writing = shards.map_writes.lock().await;
    let term = r.ready().await?;
    let unavailable = || {
        WireError::Cluster(ClusterError::ShardUnavailable { shard: ShardId::CLUSTER.to_string() })
    };
    let mut map = ClusterMap::read(r.as_ref())
        .map_err(|why| WireError::Cluster(ClusterError::Unreadable(why)))?
        .ok_or_else(unavailable)?;
    let refused = |why: String| WireError::Cluster(ClusterError::MembershipRefused(why));
    if join.roles.is_empty() {
        return Err(refused(format!("{} names no role", join.node)));
    }
    if let Some((other, _)) =
        map.members.iter().find(|(n, m)| **n != join.node && m.listen == join.listen)
    {
        return Err(refused(format!("{} is where {other} listens", join.listen)));
    }
    let known = map.members.get(&join.node);
    if known.is_none() && map.members.len() >= MAX_MEMBERS {
        return Err(refused(format!("the cluster has its maximum of {MAX_MEMBERS} members")));
    }
    let record = MemberRecord {
        listen: join.listen,
        roles: join.roles.clone(),
        leaving: known.is_some_and(|m| m.leaving),
    };
    if known == Some(&record) {
        return Ok(map);
    }
    let new = known.is_none();
    map.members.insert(join.node.clone(), record);
    map.version += 1;
    r.commit(term, map.write().map_err(|e| WireError::Cluster(ClusterError::Internal(e)))?).await?;
    if new {
        tracing::info!(node = %join.node, version = map.version, "a node joined the cluster");
    } else {
        tracing::info!(node = %join.node, version = map.version, "a member's address or roles changed");
    }
    Ok(map)
}
