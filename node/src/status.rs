//! `mlsd cluster status`: every node's view of the shards it replicates,
//! put together into one line per shard, and whether the cluster is whole:
//! every shard has a leader and every voter has applied all its leader
//! holds.

use mlsd_transport::protocol::{NodeRequest, NodeResponse, ReplicationRequest, ShardLine};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use mlsd_transport::Response;

use crate::admin::call_node;
use crate::config::ClusterConfig;
use crate::shards::placement;

/// One shard, as the status report prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardReport {
    /// `role/index`.
    pub shard: String,
    /// Its voters, best placed first.
    pub voters: Vec<String>,
    /// The leader the voters agree on (reported by the leader itself).
    pub leader: Option<String>,
    /// The leader's applied index.
    pub applied: u64,
    /// How many entries the furthest-behind voter lacks of the leader's
    /// log; `None` when a voter did not answer.
    pub behind: Option<u64>,
    /// The voters that lag, with their applied index (`None`: no answer).
    pub lagging: Vec<(String, Option<u64>)>,
    /// Voters rebuilding the shard after losing their data, with what they
    /// wait for.
    pub rebuilding: Vec<(String, String)>,
    /// Nodes placement makes voters that the shard's membership no longer
    /// has (an unsafe recovery dropped them).
    pub dropped: Vec<String>,
}

impl ShardReport {
    /// Whether the shard is whole: a leader, every voter caught up.
    pub fn healthy(&self) -> bool {
        self.leader.is_some() && self.behind == Some(0) && self.rebuilding.is_empty()
    }
}

/// The whole report: shards, and the nodes that did not answer.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// One per shard of every role.
    pub shards: Vec<ShardReport>,
    /// Nodes that could not be asked, with why.
    pub unreachable: Vec<(String, String)>,
}

impl Report {
    /// Whether every shard is whole.
    pub fn healthy(&self) -> bool {
        self.shards.iter().all(ShardReport::healthy)
    }

    /// The report as printed: one line per shard, then a summary.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for s in &self.shards {
            let _ = writeln!(
                out,
                "{:<6} voters={:<20} leader={:<8} applied={:<8} behind-by={}{}",
                s.shard,
                s.voters.join(","),
                s.leader.as_deref().unwrap_or("-"),
                s.applied,
                s.behind.map_or_else(|| "?".to_string(), |b| b.to_string()),
                s.lagging
                    .iter()
                    .map(|(n, a)| match a {
                        Some(a) => format!(" {n}:{a}"),
                        None => format!(" {n}:?"),
                    })
                    .collect::<String>(),
            );
            for (n, why) in &s.rebuilding {
                let _ = writeln!(out, "       {n} rebuilding: {why}");
            }
            for n in &s.dropped {
                let _ = writeln!(
                    out,
                    "       {n} dropped by an unsafe recovery: no longer a voter (delete its data dir before it starts again)"
                );
            }
        }
        for (n, why) in &self.unreachable {
            let _ = writeln!(out, "node {n} did not answer: {why}");
        }
        let led = self.shards.iter().filter(|s| s.leader.is_some()).count();
        let whole = self.shards.iter().filter(|s| s.healthy()).count();
        let reduced = self.shards.iter().filter(|s| !s.dropped.is_empty()).count();
        let reduced = match reduced {
            0 => String::new(),
            n => format!(", {n} with voters dropped by an unsafe recovery"),
        };
        let _ = writeln!(
            out,
            "{} shards: {led} with a leader, {whole} with every voter caught up{reduced}; {}",
            self.shards.len(),
            if self.healthy() { "healthy" } else { "NOT healthy" }
        );
        out
    }
}

/// Asks every node of `config` for its shards and puts the answers together.
pub async fn status(config: &ClusterConfig, certs: Option<&Path>) -> Report {
    let mut lines: BTreeMap<(String, String), ShardLine> = BTreeMap::new();
    let mut report = Report::default();
    for n in &config.nodes {
        match call_node(
            config,
            certs,
            &n.name,
            NodeRequest::Replication(ReplicationRequest::ShardStatus),
        )
        .await
        {
            Ok(Response::Node(NodeResponse::ShardStatus(ls))) => {
                for l in ls {
                    lines.insert((format!("{}/{}", l.role, l.shard), l.node.clone()), l);
                }
            }
            Ok(other) => report.unreachable.push((n.name.clone(), format!("{other:?}"))),
            Err(e) => report.unreachable.push((n.name.clone(), e.to_string())),
        }
    }
    for shard in placement::all(config) {
        let id = shard.to_string();
        let placed: Vec<String> =
            placement::voters(config, shard).into_iter().map(|n| n.name.clone()).collect();
        // The leader is the voter that says it leads, in the highest term.
        let leader_line = placed
            .iter()
            .filter_map(|v| lines.get(&(id.clone(), v.clone())))
            .filter(|l| l.leader.as_deref() == Some(l.node.as_str()))
            .max_by_key(|l| l.term);
        // The voters are those of the leader's membership: fewer than
        // placement's after an unsafe recovery (`mlsd cluster recover`).
        let voters: Vec<String> = match leader_line {
            Some(l) => placed.iter().filter(|v| l.voters.contains(v)).cloned().collect(),
            None => placed.clone(),
        };
        let dropped = placed.iter().filter(|v| !voters.contains(v)).cloned().collect();
        let applied_of = |v: &String| lines.get(&(id.clone(), v.clone())).map(|x| x.applied);
        let (leader, applied, behind, lagging) = match leader_line {
            Some(l) => {
                let behind = voters
                    .iter()
                    .map(|v| applied_of(v).map(|a| l.last_log.saturating_sub(a)))
                    .try_fold(0u64, |acc, b| b.map(|b| acc.max(b)));
                let lagging = voters
                    .iter()
                    .map(|v| (v.clone(), applied_of(v)))
                    .filter(|(_, a)| a.is_none_or(|a| a < l.last_log))
                    .collect();
                (Some(l.node.clone()), l.applied, behind, lagging)
            }
            None => (None, 0, None, Vec::new()),
        };
        let rebuilding = voters
            .iter()
            .filter_map(|v| {
                let why = lines.get(&(id.clone(), v.clone()))?.rebuilding.clone()?;
                Some((v.clone(), why))
            })
            .collect();
        report.shards.push(ShardReport {
            shard: id,
            voters,
            leader,
            applied,
            behind,
            lagging,
            rebuilding,
            dropped,
        });
    }
    report
}
