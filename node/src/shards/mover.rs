//! Carrying out the moves the cluster map plans (decision D15), on the
//! node that leads each shard: the move is recorded as under way in the
//! map (so the node it adds opens a replica), the new node is added to
//! the shard's group as a learner and catches up (by snapshot when the
//! log before was dropped), then one membership change (joint consensus)
//! makes it a voter and drops the replica it replaces, and the move is
//! recorded as done (the old node then closes its replica).
//!
//! Every step is safe to interrupt: until the membership change commits,
//! the shard's voters are the old ones, with a majority among them; after,
//! the new ones. A leader that takes over a shard with a move under way
//! resumes it from what the group's membership says. Each step waits for
//! the one before, one move per shard at a time, at most `[cluster]
//! max_moves` in the whole cluster. A leader whose own replica goes hands
//! the shard to a voter that stays first (as leader balancing does), which
//! then finishes the move.
//!
//! A move waits for the node it adds: one that dies comes back and the move
//! resumes. When the operator removes it instead (`mlsd cluster remove
//! --dead`), a move it had not become a voter by is given up (its learner
//! dropped, the voters untouched) and the planner picks another node; one
//! it had is finished, and its replica then replaced like any other on a
//! node gone.

use std::collections::BTreeSet;
use std::sync::Arc;

use mlsd_actors::replica::{node_id, Member, NodeId, RaftShard, ShardId};
use mlsd_transport::protocol::{
    ClusterError, MoveStep, NodeRequest, ReplicationRequest, ShardMove,
};
use mlsd_transport::{Response, WireError};
use openraft::ChangeMembers;

use super::map::Move;
use super::{Shards, CAUGHT_UP};

/// Redirects a report to the cluster group follows to find its leader.
const MAX_REDIRECTS: usize = 4;

/// Moves the shards this node leads towards the map's plan, for as long as
/// the node runs.
pub(super) async fn run(shards: Arc<Shards>) {
    let mut tick = tokio::time::interval(shards.config.replication.election_timeout);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !shards.settled() {
            continue;
        }
        let map = shards.map();
        let max = shards.config.replication.max_moves as usize;
        let planned = map.plan(max);
        for r in shards.replicas().into_iter().filter(|r| !r.shard.is_cluster() && r.leading()) {
            let result = match map.moving.get(&r.shard) {
                Some(m) => step(&shards, &r, m).await,
                None => match planned.iter().find(|m| m.shard == r.shard) {
                    Some(m) => report(&shards, m, MoveStep::Begin).await,
                    None => continue,
                },
            };
            if let Err(why) = result {
                tracing::info!(shard = %r.shard, %why, "replica move waits");
            }
        }
    }
}

/// The next step of `m`, under way, as the membership of `r` (which this
/// node leads) says.
async fn step(shards: &Shards, r: &RaftShard, m: &Move) -> Result<(), String> {
    let metrics = r.raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership().clone();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let mut want = voters.clone();
    if let Some(a) = &m.add {
        want.insert(node_id(a));
    }
    if let Some(old) = &m.remove {
        want.remove(&node_id(old));
    }
    let joint = membership.get_joint_config().len() > 1;
    if voters == want && !joint {
        return report(shards, m, MoveStep::Done).await;
    }
    let timeout = shards.config.limits.call_timeout * 4;
    if let Some(a) = m.add.as_ref().filter(|a| !shards.map().is_member(a)) {
        // The node it adds was removed from the cluster (`--dead`) before
        // it became a voter: the learner goes and the move is given up;
        // the planner then picks another node. One that became a voter
        // already is finished below, then replaced like any replica on a
        // node gone.
        let id = node_id(a);
        if !voters.contains(&id) {
            if membership.get_node(&id).is_some() {
                let remove =
                    r.raft.change_membership(ChangeMembers::RemoveNodes([id].into()), false);
                tokio::time::timeout(timeout, remove)
                    .await
                    .map_err(|_| format!("removing learner {a} timed out"))?
                    .map_err(|e| format!("removing learner {a}: {e}"))?;
            }
            tracing::warn!(shard = %r.shard, mv = %m, "replica move given up: its node was removed");
            return report(shards, m, MoveStep::Abandoned).await;
        }
    }
    if let Some(a) = &m.add {
        let id = node_id(a);
        if membership.get_node(&id).is_none() {
            let add = r.raft.add_learner(id, Member { name: a.clone() }, false);
            tokio::time::timeout(timeout, add)
                .await
                .map_err(|_| format!("adding {a} as a learner timed out"))?
                .map_err(|e| format!("adding {a} as a learner: {e}"))?;
            tracing::info!(shard = %r.shard, node = %a, "a new replica catches up as a learner");
            return Ok(());
        }
        let matched = metrics
            .replication
            .as_ref()
            .and_then(|rep| rep.get(&id).cloned().flatten())
            .map_or(0, |l| l.index);
        let last = metrics.last_log_index.unwrap_or(0);
        // A voter already (the change was cut short): catching up no
        // longer matters to finish it.
        if !voters.contains(&id) && matched + CAUGHT_UP < last {
            return Err(format!("{a} has {matched} of {last} entries"));
        }
    }
    if m.remove.as_deref() == Some(shards.me.as_str()) {
        // This node's own replica goes: the shard is handed to a voter
        // that stays (caught up), which finishes the move, instead of
        // stepping down after the change and leaving the shard to wait
        // for an election timeout. With none caught up it does it itself.
        let (last_log, matched) = super::balance::matched(r);
        let to = shards.voters(r.shard).into_iter().find(|v| {
            *v != shards.me
                && m.add.as_ref() != Some(v)
                && matched.get(v).copied().flatten() == Some(last_log)
        });
        if let Some(to) = to {
            tracing::info!(shard = %r.shard, %to, "handing the shard over before moving its replica away");
            if super::balance::hand_over(shards, r, &to).await {
                return Ok(());
            }
        }
    }
    let change = r.raft.change_membership(ChangeMembers::ReplaceAllVoters(want), false);
    tokio::time::timeout(timeout, change)
        .await
        .map_err(|_| "the membership change timed out".to_string())?
        .map_err(|e| format!("membership change: {e}"))?;
    tracing::info!(shard = %r.shard, mv = %m, "the shard's voters changed");
    report(shards, m, MoveStep::Done).await
}

/// Tells the cluster group's leader where `m` stands.
async fn report(shards: &Shards, m: &Move, step: MoveStep) -> Result<(), String> {
    let mv = ShardMove {
        role: m.shard.role,
        shard: m.shard.index,
        add: m.add.clone(),
        remove: m.remove.clone(),
        step,
    };
    let mut to = shards.leader_hint(ShardId::CLUSTER);
    for _ in 0..MAX_REDIRECTS {
        let resp = if to == shards.me {
            match super::steward::record_move(shards, &mv).await {
                Ok(_) => return Ok(()),
                Err(e) => Response::Error(e),
            }
        } else {
            let req = NodeRequest::Replication(ReplicationRequest::Move(mv.clone()));
            shards.peers.call(&to, req).await
        };
        match resp {
            Response::Error(WireError::Cluster(ClusterError::NotLeader {
                leader: Some(l),
                ..
            })) if l != to => to = l,
            Response::Error(e) => return Err(e.to_string()),
            _ => return Ok(()),
        }
    }
    Err("the cluster group's leader was not found".into())
}
