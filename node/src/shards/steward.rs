//! What the leader of the cluster group ([`ShardId::CLUSTER`]) does besides
//! replicating the map: it writes the cluster's first map (the file's
//! placement, [`ClusterMap::bootstrap`]) when none was ever written, and
//! adds every member that does not follow the group yet as a learner, so
//! each member holds the map and routes by it; and it admits nodes that
//! ask to join ([`admit`]), the moves shards' leaders begin and finish
//! ([`record_move`]) and members the operator removes ([`remove`]): a
//! drained one leaves the map once it holds no replica, and the group's
//! membership follows the map's members and voters.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use mlsd_actors::replica::{node_id, Member, NodeId, ShardId, ShardStore};
use mlsd_transport::protocol::{ClusterError, Join, MoveStep, ShardMove};
use mlsd_transport::WireError;
use openraft::ChangeMembers;

use super::map::{ClusterMap, MemberRecord, Move, MAX_CLUSTER_VOTERS, MAX_MEMBERS};
use super::Shards;

/// Does the leader's duties whenever this node leads the cluster group,
/// for as long as the node runs.
pub(super) async fn run(shards: Arc<Shards>) {
    let mut tick = tokio::time::interval(shards.config.replication.election_timeout);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lingering = HashMap::new();
    loop {
        tick.tick().await;
        let Some(r) = shards.replica(ShardId::CLUSTER).filter(|r| r.leading()) else {
            continue;
        };
        if let Err(why) = duties(&shards, &r, &mut lingering).await {
            tracing::debug!(%why, "cluster group duties put off");
        }
    }
}

async fn duties(
    shards: &Shards,
    r: &mlsd_actors::replica::RaftShard,
    lingering: &mut HashMap<NodeId, tokio::time::Instant>,
) -> Result<(), String> {
    let writing = shards.map_writes.lock().await;
    let term = r.ready().await.map_err(|e| e.to_string())?;
    let mut map = match ClusterMap::read(r)? {
        Some(m) => m,
        None => {
            let first = ClusterMap::bootstrap(&shards.config);
            r.commit(term, first.write()?).await.map_err(|e| e.to_string())?;
            tracing::info!(members = first.members.len(), "wrote the cluster's first map");
            first
        }
    };
    // A drained member that holds nothing any more, and no longer votes in
    // the cluster group, leaves the map (and then its process exits: were
    // it still a voter, the group would count a vote that will never come,
    // and the next member lost would leave it without a majority).
    let cluster_voters: BTreeSet<NodeId> =
        r.raft.metrics().borrow().membership_config.membership().voter_ids().collect();
    let drained: Vec<String> = map
        .members
        .iter()
        .filter(|(n, m)| m.leaving && map.load(n).is_empty())
        .filter(|(n, _)| !cluster_voters.contains(&node_id(n)))
        .filter(|(n, _)| {
            !map.moving
                .values()
                .any(|mv| mv.add.as_ref() == Some(n) || mv.remove.as_ref() == Some(n))
        })
        .map(|(n, _)| n.clone())
        .collect();
    if !drained.is_empty() {
        for n in &drained {
            forget(&mut map, n);
        }
        r.commit(term, map.write()?).await.map_err(|e| e.to_string())?;
        tracing::warn!(nodes = ?drained, version = map.version, "drained members left the cluster");
    }
    drop(writing);
    follow_map(shards, r, &map, lingering).await
}

/// How long a former member that does not catch up (dead) is still
/// followed by the cluster group.
const LINGER: std::time::Duration = std::time::Duration::from_secs(30);

/// Makes the cluster group's membership what `map` says: every member
/// follows it (a learner), its voters are the map's, and no one else once
/// it holds the map without it. `lingering`: since when each former member
/// has been waited for.
async fn follow_map(
    shards: &Shards,
    r: &mlsd_actors::replica::RaftShard,
    map: &ClusterMap,
    lingering: &mut HashMap<NodeId, tokio::time::Instant>,
) -> Result<(), String> {
    let membership = r.raft.metrics().borrow().membership_config.membership().clone();
    let followed: Vec<String> = membership.nodes().map(|(_, n)| n.name.clone()).collect();
    for name in map.members.keys().filter(|n| !followed.contains(n)) {
        let member = Member { name: name.clone() };
        r.raft
            .add_learner(node_id(name), member, false)
            .await
            .map_err(|e| format!("adding {name} as a learner: {e}"))?;
        tracing::info!(node = %name, "the cluster group is followed by a new member");
    }
    if membership.get_joint_config().len() > 1 {
        return Ok(());
    }
    // The map's voters that vote already, and those that follow close
    // enough to vote: a voter is never added before it caught up (so a
    // group an unsafe recovery left with its survivors keeps them alone
    // until the others are back and caught up).
    let metrics = r.raft.metrics().borrow().clone();
    let last = metrics.last_log_index.unwrap_or(0);
    let caught_up_to = |id: &NodeId, index: u64| {
        metrics
            .replication
            .as_ref()
            .and_then(|rep| rep.get(id).cloned().flatten())
            .is_some_and(|l| l.index >= index)
    };
    let caught_up = |id: &NodeId| caught_up_to(id, last.saturating_sub(super::CAUGHT_UP));
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let want: BTreeSet<NodeId> = map
        .cluster
        .iter()
        .map(|n| node_id(n))
        .filter(|id| voters.contains(id) || caught_up(id))
        .collect();
    if !want.is_empty() && voters != want {
        let me = node_id(&shards.me);
        if voters.contains(&me) && !want.contains(&me) {
            // This leader no longer votes (it is being drained): the group
            // is handed to a voter that stays, caught up, which makes the
            // change, instead of this one stepping down after it.
            let to = map
                .cluster
                .iter()
                .map(|n| (n, node_id(n)))
                .find(|(_, id)| voters.contains(id) && want.contains(id) && caught_up_to(id, last))
                .map(|(n, _)| n);
            if let Some(to) = to {
                tracing::info!(%to, "handing the cluster group over: this node no longer votes");
                if super::balance::hand_over(shards, r, to).await {
                    return Ok(());
                }
            }
        }
        r.raft
            .change_membership(ChangeMembers::ReplaceAllVoters(want), false)
            .await
            .map_err(|e| format!("changing the cluster group's voters: {e}"))?;
        tracing::info!(voters = ?map.cluster, "the cluster group's voters changed");
        return Ok(());
    }
    // A former member is followed until it holds the map that removed it
    // (it learns so from its own replica, and stops), or for
    // [`LINGER`] when it does not catch up (it is dead).
    let now = tokio::time::Instant::now();
    lingering.retain(|id, _| membership.get_node(id).is_some());
    let strangers: BTreeSet<NodeId> = membership
        .nodes()
        .filter(|(id, n)| !map.is_member(&n.name) && !voters.contains(id))
        .map(|(id, _)| *id)
        .filter(|id| {
            let since = *lingering.entry(*id).or_insert(now);
            caught_up_to(id, last) || now.duration_since(since) >= LINGER
        })
        .collect();
    if !strangers.is_empty() {
        r.raft
            .change_membership(ChangeMembers::RemoveNodes(strangers), false)
            .await
            .map_err(|e| format!("removing former members from the cluster group: {e}"))?;
    }
    Ok(())
}

/// Changes the map as the cluster group's leader, serialized with every
/// other change: `change` gets the map as committed and refuses, leaves it
/// or edits it (bumping its version); an edited map is committed before
/// the answer. The map, and whether it changed.
async fn change_map(
    shards: &Shards,
    change: impl FnOnce(&mut ClusterMap) -> Result<(), WireError>,
) -> Result<(ClusterMap, bool), WireError> {
    let r = shards.replica(ShardId::CLUSTER).ok_or_else(|| {
        let leader = Some(shards.leader_hint(ShardId::CLUSTER)).filter(|l| *l != shards.me);
        WireError::Cluster(ClusterError::NotLeader { shard: ShardId::CLUSTER.to_string(), leader })
    })?;
    let _writing = shards.map_writes.lock().await;
    let term = r.ready().await?;
    let mut map = ClusterMap::read(r.as_ref())
        .map_err(|why| WireError::Cluster(ClusterError::Unreadable(why)))?
        .ok_or_else(|| {
            WireError::Cluster(ClusterError::ShardUnavailable {
                shard: ShardId::CLUSTER.to_string(),
            })
        })?;
    let before = map.version;
    change(&mut map)?;
    let changed = map.version != before;
    if changed {
        let write = map.write().map_err(|e| WireError::Cluster(ClusterError::Internal(e)))?;
        r.commit(term, write).await?;
    }
    Ok((map, changed))
}

fn refused(why: String) -> WireError {
    WireError::Cluster(ClusterError::MembershipRefused(why))
}

/// Makes `join` a member (or updates its address and roles), as the
/// cluster group's leader: the map with it, committed. A member whose
/// record is already `join`'s gets the map as it is. Refused with
/// `NotLeader` by a node that does not lead the cluster group.
pub async fn admit(shards: &Shards, join: &Join) -> Result<ClusterMap, WireError> {
    let mut new = false;
    let (map, changed) = change_map(shards, |map| {
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
            return Ok(());
        }
        new = known.is_none();
        map.members.insert(join.node.clone(), record);
        map.version += 1;
        Ok(())
    })
    .await?;
    if changed && new {
        tracing::info!(node = %join.node, version = map.version, "a node joined the cluster");
    } else if changed {
        tracing::info!(node = %join.node, version = map.version, "a member's address or roles changed");
    }
    Ok(map)
}

/// Records, as the cluster group's leader, that `mv` begins (when it is a
/// move the map plans now, at most `[cluster] max_moves` at once), is done
/// or is given up (when it was under way): the map that says so,
/// committed.
pub async fn record_move(shards: &Shards, mv: &ShardMove) -> Result<ClusterMap, WireError> {
    let m = Move {
        shard: ShardId { role: mv.role, index: mv.shard },
        add: mv.add.clone(),
        remove: mv.remove.clone(),
    };
    let max = shards.config.replication.max_moves as usize;
    let (map, changed) = change_map(shards, |map| {
        match mv.step {
            MoveStep::Begin => map.begin(&m, max),
            MoveStep::Done => map.finish(&m),
            MoveStep::Abandoned => map.abandon(&m),
        }
        .map_err(refused)
    })
    .await?;
    if changed {
        let what = match mv.step {
            MoveStep::Begin => "begins",
            MoveStep::Done => "done",
            MoveStep::Abandoned => "given up (the node it added was removed)",
        };
        tracing::info!(shard = %m, version = map.version, "replica move {what}");
    }
    Ok(map)
}

/// Takes `node` out of the cluster, as the cluster group's leader: a live
/// one is marked leaving (its replicas then move away and [`duties`]
/// removes it once it holds none), a dead one is removed at once (its
/// replicas are then replaced from the survivors). Refused when no other
/// member would host one of its roles.
pub async fn remove(shards: &Shards, node: &str, dead: bool) -> Result<ClusterMap, WireError> {
    let (map, changed) = change_map(shards, |map| {
        let Some(record) = map.members.get(node).cloned() else {
            return Err(refused(format!("{node} is not a member")));
        };
        for role in &record.roles {
            if !map.members.iter().any(|(n, m)| n != node && m.takes(*role)) {
                return Err(refused(format!("no other member would host {role}")));
            }
        }
        if dead {
            forget(map, node);
        } else if !record.leaving {
            map.members.insert(node.to_string(), MemberRecord { leaving: true, ..record });
            seat_cluster_voters(map);
            map.version += 1;
        }
        Ok(())
    })
    .await?;
    if changed {
        let how = if dead { "removed (dead)" } else { "leaving (drained first)" };
        tracing::warn!(%node, version = map.version, "a member is {how}");
    }
    Ok(map)
}

/// `map` without member `node`; the cluster group's voters are made up
/// again from the other members. Moves that add it stay under way: only
/// the shard's leader knows whether it became a voter already (the move is
/// then finished, and the planner replaces it like any replica on a node
/// gone) or not (the move is given up, [`ClusterMap::abandon`]).
fn forget(map: &mut ClusterMap, node: &str) {
    map.members.remove(node);
    seat_cluster_voters(map);
    map.version += 1;
}

/// The cluster group's voters without members gone or leaving, filled up
/// from the other members (in name order) to [`MAX_CLUSTER_VOTERS`]: a
/// member being drained stops voting at once, long before it exits.
fn seat_cluster_voters(map: &mut ClusterMap) {
    let staying = |map: &ClusterMap, n: &String| map.members.get(n).is_some_and(|m| !m.leaving);
    let kept: Vec<String> = map.cluster.iter().filter(|v| staying(map, v)).cloned().collect();
    map.cluster = kept;
    let spare: Vec<String> = map
        .members
        .keys()
        .filter(|n| staying(map, n) && !map.cluster.contains(n))
        .cloned()
        .collect();
    for n in spare {
        if map.cluster.len() >= MAX_CLUSTER_VOTERS {
            break;
        }
        map.cluster.push(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(nodes: usize) -> ClusterMap {
        let names: Vec<String> = (1..=nodes).map(|i| format!("n{i}")).collect();
        let every = r#""as", "cs", "ids", "ods", "sds""#;
        let nodes: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), every)).collect();
        ClusterMap::bootstrap(&super::super::placement::test_config(&nodes, "replicas = 3"))
    }

    #[test]
    fn a_member_being_drained_stops_voting_in_the_cluster_group_at_once() {
        let mut m = map(4);
        assert_eq!(m.cluster, ["n1", "n2", "n3", "n4"]);
        m.members.get_mut("n1").unwrap().leaving = true;
        seat_cluster_voters(&mut m);
        assert_eq!(m.cluster, ["n2", "n3", "n4"], "n1 may exit without costing a vote");
        forget(&mut m, "n2");
        assert_eq!(m.cluster, ["n3", "n4"]);
    }

    #[test]
    fn a_member_lost_is_replaced_among_the_cluster_voters_by_one_that_stays() {
        let mut m = map(7);
        assert_eq!(m.cluster.len(), MAX_CLUSTER_VOTERS);
        m.members.get_mut("n6").unwrap().leaving = true;
        forget(&mut m, "n1");
        assert_eq!(m.cluster, ["n2", "n3", "n4", "n5", "n7"]);
    }
}
