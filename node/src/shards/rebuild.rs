//! Rebuilding the replicas of a node that lost its data
//! ([`mlsd_actors::replica::recovery`] has the rules and keeps each
//! rebuilding shard's state in the store): the task that asks the other
//! voters, initializes new shards, and lets a replica vote and campaign
//! again once it has caught up.

use mlsd_transport::protocol::{NodeRequest, NodeResponse, ReplicationRequest, ShardLine};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub use mlsd_actors::replica::recovery::{clear, load, save};
use mlsd_actors::replica::recovery::{verdict, Position, Rebuild, Verdict};
use mlsd_actors::replica::{node_id, Member, NodeId, ShardId};
use mlsd_transport::Response;
use openraft::error::{InitializeError, RaftError};

use super::Shards;

/// How often a waiting replica asks its peers again.
const ASK_EVERY: Duration = Duration::from_millis(500);

/// What each other voter of each of this node's rebuilding shards holds:
/// its last log position, `None` when it holds nothing of the shard;
/// and the highest term any of them is in.
async fn ask(shards: &Shards) -> BTreeMap<ShardId, (Vec<Option<Position>>, u64)> {
    let mut out: BTreeMap<ShardId, (Vec<Option<Position>>, u64)> = BTreeMap::new();
    let states = shards.recovering.states();
    let mut nodes: Vec<String> =
        states.keys().flat_map(|s| shards.voters(*s)).filter(|n| *n != shards.me).collect();
    nodes.sort();
    nodes.dedup();
    for node in nodes {
        let call =
            shards.peers.call(&node, NodeRequest::Replication(ReplicationRequest::ShardStatus));
        let lines: Vec<ShardLine> =
            match tokio::time::timeout(shards.config.limits.connect_timeout, call).await {
                Ok(Response::Node(NodeResponse::ShardStatus(lines))) => lines,
                _ => continue,
            };
        for shard in states.keys() {
            if !shards.voters(*shard).contains(&node) {
                continue;
            }
            let line = lines.iter().find(|l| l.role == shard.role && l.shard == shard.index);
            // A replica that has applied its membership holds the shard, up
            // to its last log entry (applied or not); one whose log could not
            // be read is no answer.
            let held = match line {
                Some(l) if l.applied >= 1 => match l.last_log_term {
                    Some(term) => Some((term, l.last_log)),
                    None => continue,
                },
                _ => None,
            };
            let entry = out.entry(*shard).or_default();
            entry.0.push(held);
            entry.1 = entry.1.max(line.map_or(0, |l| l.term));
        }
    }
    out
}

/// Asks, decides and catches up whenever a replica of this node is
/// rebuilding (at start, or opened later on a node that started empty),
/// for as long as the node runs.
pub async fn run(shards: Arc<Shards>) {
    loop {
        let states = shards.recovering.states();
        if states.is_empty() {
            tokio::time::sleep(ASK_EVERY).await;
            continue;
        }
        let answers = if states.values().any(|s| *s == Rebuild::Waiting) {
            ask(&shards).await
        } else {
            BTreeMap::new()
        };
        for (shard, state) in states {
            let Some(r) = shards.replica(shard) else { continue };
            let state = match state {
                Rebuild::Waiting => {
                    let voters = shards.voters(shard);
                    let (got, term) =
                        answers.get(&shard).map_or((&[][..], 0), |(a, t)| (a.as_slice(), *t));
                    match verdict(voters.len(), got, term) {
                        Verdict::Wait => continue,
                        // A role's shard is new only by the cluster group's
                        // map: by a file's alone, a node added to the file
                        // of a running cluster would take shards it was
                        // never given for new, and serve them empty.
                        Verdict::NewShard if !shard.is_cluster() && !shards.settled() => continue,
                        // Only a voter starts a shard; a learner is added.
                        Verdict::NewShard if !voters.contains(&shards.me) => continue,
                        Verdict::NewShard => {
                            let members: BTreeMap<NodeId, Member> = voters
                                .iter()
                                .map(|n| (node_id(n), Member { name: n.clone() }))
                                .collect();
                            match r.raft.initialize(members).await {
                                Ok(())
                                | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                                Err(e) => {
                                    tracing::warn!(%shard, error = %e, "cannot initialize a new shard");
                                    continue;
                                }
                            }
                            finish(&shards, shard, &r);
                            continue;
                        }
                        Verdict::CatchUp(next) => {
                            tracing::warn!(%shard, ?next, "rebuilding: catching up before voting");
                            shards.recovering.set(shard, next);
                            if let Err(e) = save(shards.store.as_ref(), &[(shard, next)].into()) {
                                tracing::warn!(%shard, error = %e, "cannot record the rebuild target");
                            }
                            next
                        }
                    }
                }
                other => other,
            };
            let applied = r.raft.metrics().borrow().last_applied.map_or(0, |l| l.index);
            if let Rebuild::Strict(t, _) | Rebuild::AtLeast(t, _) = state {
                if applied >= t.1 {
                    finish(&shards, shard, &r);
                }
            }
        }
        tokio::time::sleep(ASK_EVERY).await;
    }
}

fn finish(shards: &Shards, shard: ShardId, r: &mlsd_actors::replica::RaftShard) {
    if let Err(e) = clear(shards.store.as_ref(), shard) {
        // Kept: the next start rebuilds again, which is safe.
        tracing::warn!(%shard, error = %e, "cannot clear the rebuild record");
    }
    shards.recovering.finish(shard);
    r.raft.runtime_config().elect(true);
}

/// What a rebuilding replica waits for, as `mlsd cluster status` says it.
pub fn describe(state: &Rebuild) -> String {
    match state {
        Rebuild::Waiting => "waiting for a majority of the other voters to say what they hold; \
                             no vote, no election"
            .to_string(),
        Rebuild::Strict((term, index), _) | Rebuild::AtLeast((term, index), _) => {
            format!("catching up to index {index} of term {term}; no vote before")
        }
    }
}
