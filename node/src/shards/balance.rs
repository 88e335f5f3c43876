//! Leaders spread over the nodes: each shard is led by the first of its
//! voters in placement order that is up and caught up (and not being
//! drained), and placement puts
//! each node first in as many shards as any other. So one node's death
//! costs only the shards it led an election, and no node does every
//! leader's work after elections left the leaders in one place.
//!
//! openraft 0.9 has no leadership transfer, so this node does it the way
//! Raft's thesis describes (§3.10), with what openraft offers: the leader
//! stops proposing and heartbeating the shard ([`RaftShard::hand_over`]) and
//! tells the preferred voter (`RaftRpc::TimeoutNow`), which campaigns as
//! soon as the followers' leader leases have run out, before any other
//! follower's election timer fires. The shard takes no writes for about a
//! lease (4/3 of the election timeout); requests meanwhile wait at the
//! entry node or the client, as in any election. One handover at a time
//! per node, and a shard whose handover failed is left alone for a while.

use mlsd_transport::protocol::{NodeRequest, NodeResponse, RaftCall, RaftRpc, ReplicationRequest};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mlsd_actors::replica::{NodeId, RaftShard, ShardId};
use mlsd_transport::codec;
use mlsd_transport::Response;
use tokio::time::Instant;

use super::Shards;

/// The voter `shard`'s leadership should move to, if any: the first voter
/// in placement order (`order`) that holds everything the leader holds
/// (`matched` is each voter's last replicated log index as the leader
/// knows it, `last_log` the leader's own), when that is not the leader `me`.
pub fn preferred(
    order: &[String],
    me: &str,
    last_log: u64,
    matched: &HashMap<String, Option<u64>>,
) -> Option<String> {
    for v in order {
        if v == me {
            return None;
        }
        if matched.get(v).copied().flatten() == Some(last_log) {
            return Some(v.clone());
        }
    }
    None
}

/// Each voter's replicated log index as the leader `r` knows it, by name.
pub(super) fn matched(r: &RaftShard) -> (u64, HashMap<String, Option<u64>>) {
    let m = r.raft.metrics().borrow().clone();
    let name = |id: &NodeId| m.membership_config.membership().get_node(id).map(|n| n.name.clone());
    let matched = m
        .replication
        .iter()
        .flatten()
        .filter_map(|(id, l)| Some((name(id)?, l.as_ref().map(|l| l.index))))
        .collect();
    (m.last_log_index.unwrap_or(0), matched)
}

/// Moves leaderships to their preferred voters, one at a time, for as
/// long as the node runs.
pub(super) async fn run(shards: Arc<Shards>) {
    let timeout = shards.config.replication.election_timeout;
    let mut left_alone: HashMap<ShardId, Instant> = HashMap::new();
    // Elections settle first after a start.
    tokio::time::sleep(timeout * 4).await;
    let mut tick = tokio::time::interval(timeout * 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Instant::now();
        let replicas = shards.replicas();
        let map = shards.map();
        let next = replicas.iter().find_map(|r| {
            if !r.leading() || left_alone.get(&r.shard).is_some_and(|t| now < *t) {
                return None;
            }
            // A shard being moved is the mover's: it may have just handed
            // the shard over away from a voter that is leaving it.
            if map.moving.contains_key(&r.shard) {
                return None;
            }
            let (last_log, matched) = matched(r);
            // A member being drained leads nothing it need not.
            let order: Vec<String> = shards
                .voters(r.shard)
                .into_iter()
                .filter(|v| !map.members.get(v).is_some_and(|m| m.leaving))
                .collect();
            preferred(&order, &shards.me, last_log, &matched).map(|p| (r, p))
        });
        let Some((r, to)) = next else { continue };
        left_alone.insert(r.shard, now + timeout * 20);
        tracing::info!(shard = %r.shard, to = %to, "handing the leadership over to its preferred voter");
        hand_over(&shards, r, &to).await;
    }
}

/// Hands the leadership of `r`, which this node leads, over to voter `to`
/// (caught up): stops proposing, tells `to` to campaign, and waits until
/// it did or the handover lapsed. Whether this node no longer leads.
pub(super) async fn hand_over(shards: &Shards, r: &RaftShard, to: &str) -> bool {
    let timeout = shards.config.replication.election_timeout;
    let heartbeat = shards.config.replication.heartbeat;
    // Long enough for the followers' leases (4/3 of the timeout) to run out
    // and the preferred voter's campaign to finish.
    let handover = timeout * 4;
    let term = r.raft.metrics().borrow().current_term;
    let Ok(body) = codec::encode(&term) else { return false };
    r.hand_over(handover);
    let call =
        RaftCall { role: r.shard.role, shard: r.shard.index, rpc: RaftRpc::TimeoutNow, body };
    let accepted = matches!(
        shards.peers.call(to, NodeRequest::Replication(ReplicationRequest::Raft(vec![call]))).await,
        Response::Node(NodeResponse::Raft(a)) if a.first().is_some_and(|b| codec::decode::<Result<(), String>>(b).is_ok_and(|r| r.is_ok()))
    );
    if accepted {
        while r.handing_over() && r.is_leader() {
            tokio::time::sleep(heartbeat).await;
        }
    }
    r.resume();
    if r.is_leader() {
        tracing::warn!(shard = %r.shard, to = %to, "the handover did not happen; leading on");
    }
    !r.is_leader()
}

/// Serves a leader's `TimeoutNow` for the replica `r`: campaigns once the
/// followers' leases (openraft's maximum election timeout) have run out
/// since the leader stopped its heartbeats, if still in the leader's
/// `term` then. Refused by a replica that is rebuilding or already leads.
pub(super) fn campaign(shards: &Shards, r: &RaftShard, term: u64) -> Result<(), String> {
    if shards.recovering.contains(r.shard) {
        return Err(format!("{} is rebuilding shard {}", shards.me, r.shard));
    }
    let m = r.raft.metrics().borrow().clone();
    if m.current_term != term || r.is_leader() {
        return Err(format!("{} is in term {}, not {term}", shards.me, m.current_term));
    }
    let lease = Duration::from_millis(r.raft.config().election_timeout_max);
    let wait = lease + shards.config.replication.heartbeat;
    let raft = r.raft.clone();
    tokio::spawn(async move {
        tokio::time::sleep(wait).await;
        if raft.metrics().borrow().current_term == term {
            let _ = raft.trigger().elect().await;
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> Vec<String> {
        ["n1", "n2", "n3"].map(String::from).to_vec()
    }

    fn matched(v: &[(&str, Option<u64>)]) -> HashMap<String, Option<u64>> {
        v.iter().map(|(n, i)| (n.to_string(), *i)).collect()
    }

    #[test]
    fn the_first_caught_up_voter_in_placement_order_leads() {
        let all = matched(&[("n1", Some(9)), ("n2", Some(9)), ("n3", Some(9))]);
        assert_eq!(preferred(&order(), "n1", 9, &all), None, "n1 is first and leads");
        assert_eq!(preferred(&order(), "n3", 9, &all).as_deref(), Some("n1"));
        assert_eq!(preferred(&order(), "n2", 9, &all).as_deref(), Some("n1"));
        // n1 lags (or is down): n2 is the best placed that holds everything.
        let lagging = matched(&[("n1", Some(7)), ("n2", Some(9)), ("n3", Some(9))]);
        assert_eq!(preferred(&order(), "n3", 9, &lagging).as_deref(), Some("n2"));
        assert_eq!(preferred(&order(), "n2", 9, &lagging), None, "n2 stays");
        let down = matched(&[("n1", None), ("n2", Some(9)), ("n3", Some(9))]);
        assert_eq!(preferred(&order(), "n2", 9, &down), None);
        assert_eq!(preferred(&order(), "n3", 9, &matched(&[])), None, "nothing known");
    }
}
