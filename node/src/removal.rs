//! `mlsd cluster remove`: asks the cluster group's leader to take a member
//! out of the cluster (decision D15), then waits until the map no longer
//! lists it: a live node is drained first (its replicas move to the other
//! members, then it leaves the map and its process exits), a dead one is
//! removed at once and its replicas are rebuilt from the survivors.

use std::path::Path;
use std::time::Duration;

use mlsd_transport::protocol::{ClusterError, NodeRequest, NodeResponse, OperatorRequest};
use mlsd_transport::{Response, WireError};

use crate::admin::{call_at, AdminError};
use crate::config::ClusterConfig;
use crate::shards::map::ClusterMap;
use crate::status::{cluster_map, cluster_map_at};

/// How often the map is read again while waiting.
const POLL: Duration = Duration::from_secs(1);

/// Removes `node` (taken for `dead`, or drained) and waits, at most
/// `within`, until the cluster's map no longer lists it; `progress` hears
/// what is left (replicas it holds, moves under way) on each look.
pub async fn remove(
    config: &ClusterConfig,
    certs: Option<&Path>,
    node: &str,
    dead: bool,
    within: Duration,
    progress: impl Fn(&str),
) -> Result<ClusterMap, AdminError> {
    let map = cluster_map(config, certs).await.ok_or_else(|| {
        AdminError::Invalid("no node of the file answered with the cluster's map".into())
    })?;
    if !map.is_member(node) {
        return Err(AdminError::Invalid(format!("{node} is not a member of the cluster")));
    }
    // The cluster group may be electing (its leader may be the dead node):
    // every member is asked again, once a second, for up to a minute.
    let asking_until = tokio::time::Instant::now() + within.min(Duration::from_secs(60));
    loop {
        match ask_leader(config, certs, &map, node, dead).await {
            Ok(()) => break,
            Err(
                e @ AdminError::Refused(WireError::Cluster(ClusterError::MembershipRefused(_))),
            ) => return Err(e),
            Err(e) if tokio::time::Instant::now() >= asking_until => return Err(e),
            Err(e) => {
                progress(&format!("asking again: {e}"));
                tokio::time::sleep(POLL).await;
            }
        }
    }
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let members: Vec<_> = map.members.iter().map(|(n, m)| (n.clone(), m.listen)).collect();
        if let Some(m) = cluster_map_at(config, certs, &members).await {
            if !m.is_member(node) {
                return Ok(m);
            }
            let held: usize = m.load(node).values().sum();
            progress(&format!(
                "{node} holds {held} replica(s); {} move(s) under way",
                m.moving.len()
            ));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(AdminError::Invalid(format!(
                "{node} is still a member after {within:?}; `mlsd cluster status` shows what is left"
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Sends the removal to the members of `map` (the cluster group's voters
/// first), following `NotLeader` answers, until one takes it; the dead
/// node itself is not asked. An error when none did.
async fn ask_leader(
    config: &ClusterConfig,
    certs: Option<&Path>,
    map: &ClusterMap,
    node: &str,
    dead: bool,
) -> Result<(), AdminError> {
    let mut order: Vec<String> = map.cluster.clone();
    order.extend(map.members.keys().filter(|n| !map.cluster.contains(n)).cloned());
    let mut asked = Vec::new();
    let mut last_err = AdminError::Invalid("no member leads the cluster group".into());
    while let Some(name) = order.first().cloned() {
        order.remove(0);
        if asked.contains(&name) || (dead && name == node) {
            continue;
        }
        asked.push(name.clone());
        let Some(member) = map.members.get(&name) else { continue };
        let req = NodeRequest::Operator(OperatorRequest::RemoveNode { node: node.into(), dead });
        match call_at(config, certs, &name, member.listen, req).await {
            Ok(Response::Node(NodeResponse::ClusterMap(_))) => return Ok(()),
            Err(AdminError::Refused(WireError::Cluster(ClusterError::NotLeader {
                leader: Some(l),
                ..
            }))) => order.insert(0, l),
            Err(
                e @ AdminError::Refused(WireError::Cluster(ClusterError::MembershipRefused(_))),
            ) => return Err(e),
            Err(e) => last_err = e,
            Ok(other) => last_err = AdminError::Invalid(format!("{name} answered {other:?}")),
        }
    }
    Err(last_err)
}
