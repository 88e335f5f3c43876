//! `mlsd cluster status`: every node's view of the shards it replicates,
//! put together into one line per shard, and whether the cluster is whole:
//! every shard has a leader and every voter has applied all its leader
//! held when first asked (a voter behind is asked again for about a
//! second, since under steady writes a follower is always a few entries
//! behind the leader's log of the moment).

use mlsd_transport::protocol::{NodeRequest, NodeResponse, ReplicationRequest, ShardLine};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use mlsd_transport::Response;

use mlsd_actors::replica::ShardId;
use mlsd_transport::Role;

use crate::admin::call_at;
use crate::config::ClusterConfig;
use crate::shards::map::{ClusterMap, Move};

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
    /// Voters of the shard's membership that the map no longer places (a
    /// drained or dead member the group still counts a vote for): until
    /// they are gone, losing one more voter can cost the majority.
    pub unplaced: Vec<String>,
}

impl ShardReport {
    /// Whether the shard is whole: a leader, every voter caught up.
    pub fn healthy(&self) -> bool {
        self.leader.is_some()
            && self.behind == Some(0)
            && self.rebuilding.is_empty()
            && self.unplaced.is_empty()
    }
}

/// One member of the cluster, as the status report prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberReport {
    /// Its name.
    pub name: String,
    /// The roles it hosts.
    pub roles: Vec<Role>,
    /// Whether it is being drained.
    pub leaving: bool,
    /// How many replicas of each role the map places on it.
    pub replicas: BTreeMap<Role, usize>,
}

/// The whole report: members, shards, moves, and the nodes that did not
/// answer.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Every member of the cluster map.
    pub members: Vec<MemberReport>,
    /// The cluster group, then one per shard of every role.
    pub shards: Vec<ShardReport>,
    /// Replica moves the map still needs for an even spread (none while
    /// it is balanced).
    pub pending_moves: Vec<Move>,
    /// Whether the map came from the cluster (false: no node had one, and
    /// this is the file's first map).
    pub from_cluster: bool,
    /// Nodes that could not be asked, with why.
    pub unreachable: Vec<(String, String)>,
}

impl Report {
    /// Whether every shard is whole and no move is pending.
    pub fn healthy(&self) -> bool {
        self.shards.iter().all(ShardReport::healthy) && self.pending_moves.is_empty()
    }

    /// The report as printed: one line per member, one per shard, then a
    /// summary.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if !self.from_cluster {
            let _ = writeln!(out, "no node has a cluster map yet: placement from the file");
        }
        for m in &self.members {
            let roles: Vec<&str> = m.roles.iter().map(|r| r.name()).collect();
            let replicas: Vec<String> =
                m.replicas.iter().map(|(r, n)| format!("{}={n}", r.name())).collect();
            let _ = writeln!(
                out,
                "node {:<8} roles={:<20} replicas {}{}",
                m.name,
                roles.join(","),
                if replicas.is_empty() { "none".to_string() } else { replicas.join(" ") },
                if m.leaving { " (leaving)" } else { "" }
            );
        }
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
            for n in &s.unplaced {
                let _ = writeln!(out, "       {n} still votes, but the map no longer places it");
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
        for m in &self.pending_moves {
            let _ = writeln!(
                out,
                "move pending: {} {}{}",
                m.shard,
                m.add.as_deref().map_or_else(String::new, |a| format!("+{a} ")),
                m.remove.as_deref().map_or_else(String::new, |r| format!("-{r}")),
            );
        }
        let _ = writeln!(
            out,
            "{} shards: {led} with a leader, {whole} with every voter caught up{reduced}; {} moves pending; {}",
            self.shards.len(),
            self.pending_moves.len(),
            if self.healthy() { "healthy" } else { "NOT healthy" }
        );
        out
    }
}

/// How many times the status asks again after voters were found behind,
/// and how long it waits before each: under steady writes a follower is
/// always a few entries behind the leader's log as it was when asked, so a
/// lagging voter counts as caught up once it has applied all the leader
/// held at the first ask. One that does not get there in this time lags.
const SECOND_LOOKS: usize = 5;
const SECOND_LOOK_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);

/// Every node's shard lines, by (shard, node), and the nodes that could not
/// be asked, with why.
type Lines = (BTreeMap<(String, String), ShardLine>, Vec<(String, String)>);

/// The newest cluster map the nodes of `config` hold, if any has one.
pub async fn cluster_map(config: &ClusterConfig, certs: Option<&Path>) -> Option<ClusterMap> {
    let nodes: Vec<_> = config.nodes.iter().map(|n| (n.name.clone(), n.listen)).collect();
    cluster_map_at(config, certs, &nodes).await
}

/// The newest cluster map `nodes` (name, address) hold, if any has one
/// (all asked at once: a dead node costs one connect timeout, not one
/// each).
pub async fn cluster_map_at(
    config: &ClusterConfig,
    certs: Option<&Path>,
    nodes: &[(String, std::net::SocketAddr)],
) -> Option<ClusterMap> {
    let asks: Vec<_> = nodes
        .iter()
        .map(|(name, listen)| {
            let req = NodeRequest::Replication(ReplicationRequest::ClusterMap);
            call_at(config, certs, name, *listen, req)
        })
        .collect();
    let answers = crate::join::join_all(asks).await;
    ClusterMap::newest(answers.iter().flatten().filter_map(ClusterMap::from_answer))
}

/// Asks every member of `map` but those in `skip` (found unreachable
/// before) for the shards it replicates, all at once.
async fn ask_all(
    config: &ClusterConfig,
    map: &ClusterMap,
    certs: Option<&Path>,
    skip: &[(String, String)],
) -> Lines {
    let mut lines: BTreeMap<(String, String), ShardLine> = BTreeMap::new();
    let mut unreachable = Vec::new();
    let members: Vec<(&String, std::net::SocketAddr)> = map
        .members
        .iter()
        .filter(|(n, _)| !skip.iter().any(|(s, _)| s == *n))
        .map(|(n, m)| (n, m.listen))
        .collect();
    let asks: Vec<_> = members
        .iter()
        .map(|(name, listen)| {
            let req = NodeRequest::Replication(ReplicationRequest::ShardStatus);
            call_at(config, certs, name, *listen, req)
        })
        .collect();
    for ((name, _), answer) in members.iter().zip(crate::join::join_all(asks).await) {
        let name = (*name).clone();
        match answer {
            Ok(Response::Node(NodeResponse::ShardStatus(ls))) => {
                for l in ls {
                    let shard = ShardId { role: l.role, index: l.shard };
                    lines.insert((shard.to_string(), l.node.clone()), l);
                }
            }
            Ok(other) => unreachable.push((name, format!("{other:?}"))),
            Err(e) => unreachable.push((name, e.to_string())),
        }
    }
    (lines, unreachable)
}

/// Asks the nodes for the cluster map and every member for its shards, and
/// puts the answers together; voters behind their leader's log are asked
/// again, a few times, until they have applied what the leader held when
/// first asked ([`SECOND_LOOKS`]).
pub async fn status(config: &ClusterConfig, certs: Option<&Path>) -> Report {
    let told = cluster_map(config, certs).await;
    let from_cluster = told.is_some();
    let map = told.unwrap_or_else(|| ClusterMap::bootstrap(config));
    let (lines, unreachable) = ask_all(config, &map, certs, &[]).await;
    // The highest applied index each (shard, voter) reached in a second look.
    let mut later: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut report = put_together(&map, &lines, &later);
    for _ in 0..SECOND_LOOKS {
        let lagging = report.shards.iter().any(|s| s.leader.is_some() && !s.lagging.is_empty());
        if !lagging {
            break;
        }
        tokio::time::sleep(SECOND_LOOK_PAUSE).await;
        // A node that did not answer the first look is not asked again:
        // it cannot have caught up, and each ask would wait out its
        // connect timeout.
        let (again, _) = ask_all(config, &map, certs, &unreachable).await;
        for (key, l) in again {
            let best = later.entry(key).or_default();
            *best = (*best).max(l.applied);
        }
        report = put_together(&map, &lines, &later);
    }
    report.unreachable = unreachable;
    report.from_cluster = from_cluster;
    report
}

/// The report of `lines` (the first look), each voter's applied index
/// raised to what `later` looks saw.
fn put_together(
    map: &ClusterMap,
    lines: &BTreeMap<(String, String), ShardLine>,
    later: &BTreeMap<(String, String), u64>,
) -> Report {
    let mut report = Report {
        members: map
            .members
            .iter()
            .map(|(name, m)| MemberReport {
                name: name.clone(),
                roles: m.roles.clone(),
                leaving: m.leaving,
                replicas: map.load(name),
            })
            .collect(),
        // Moves under way, then the ones the map still plans (which
        // count those under way as done).
        pending_moves: map.moving.values().cloned().chain(map.plan(usize::MAX)).collect(),
        ..Report::default()
    };
    let shards = std::iter::once(ShardId::CLUSTER).chain(map.shards.keys().copied());
    for shard in shards {
        let id = shard.to_string();
        let placed: Vec<String> = map.voters(shard).to_vec();
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
        let unplaced = leader_line
            .map(|l| l.voters.iter().filter(|v| !placed.contains(v)).cloned().collect())
            .unwrap_or_default();
        let applied_of = |v: &String| {
            let key = (id.clone(), v.clone());
            let first = lines.get(&key).map(|x| x.applied)?;
            Some(later.get(&key).map_or(first, |l| first.max(*l)))
        };
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
            unplaced,
        });
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three nodes serving every role, three replicas of one shard each.
    fn config() -> ClusterConfig {
        let mut text =
            "[cluster]\nname = \"t\"\ncerts_dir = \"c\"\nreplicas = 3\nshards = 1\n".to_string();
        for (i, n) in ["n1", "n2", "n3"].iter().enumerate() {
            text += &format!(
                "[[node]]\nname = \"{n}\"\nlisten = \"127.0.0.1:{}\"\nroles = [\"as\", \"cs\", \"ids\", \"ods\", \"sds\"]\ndata_dir = \"d/{n}\"\n",
                4433 + i
            );
        }
        ClusterConfig::parse(&text, Path::new("/tmp")).unwrap()
    }

    /// What `node` says of shard as/0: n1 leads, its log ends at `last`.
    fn line(node: &str, applied: u64, last: u64) -> ((String, String), ShardLine) {
        let line = ShardLine {
            role: Role::As,
            shard: 0,
            node: node.into(),
            voters: vec!["n1".into(), "n2".into(), "n3".into()],
            leader: Some("n1".into()),
            term: 2,
            applied,
            applied_term: 2,
            last_log: last,
            last_log_term: Some(2),
            matched: Vec::new(),
            rebuilding: None,
        };
        (("as/0".to_string(), node.to_string()), line)
    }

    #[test]
    fn a_voter_behind_is_caught_up_once_it_applied_what_the_leader_held_at_the_first_ask() {
        let c = config();
        let first: BTreeMap<_, _> =
            [line("n1", 100, 100), line("n2", 100, 100), line("n3", 97, 97)].into_iter().collect();
        let as0 = |later: &BTreeMap<(String, String), u64>| {
            let r = put_together(&ClusterMap::bootstrap(&c), &first, later);
            r.shards.into_iter().find(|s| s.shard == "as/0").unwrap()
        };
        let r = as0(&BTreeMap::new());
        assert_eq!(r.behind, Some(3));
        assert_eq!(r.lagging, vec![("n3".to_string(), Some(97))]);
        assert!(!r.healthy());
        // Asked again: n3 applied 99 (short of the first look's 100), then
        // 104 (the leader moved on meanwhile: not held against it).
        let r = as0(&[(("as/0".to_string(), "n3".to_string()), 99)].into());
        assert_eq!(r.behind, Some(1), "still short of 100");
        assert!(!r.healthy());
        let r = as0(&[(("as/0".to_string(), "n3".to_string()), 104)].into());
        assert_eq!((r.behind, r.lagging.len()), (Some(0), 0));
        assert!(r.healthy());
    }

    #[test]
    fn a_move_under_way_is_pending_even_when_the_plan_counts_it_done() {
        let c = config();
        let mut map = ClusterMap::bootstrap(&c);
        assert!(put_together(&map, &BTreeMap::new(), &BTreeMap::new()).pending_moves.is_empty());
        let m = Move {
            shard: ShardId { role: Role::As, index: 0 },
            add: None,
            remove: Some("n3".into()),
        };
        map.moving.insert(m.shard, m.clone());
        let r = put_together(&map, &BTreeMap::new(), &BTreeMap::new());
        assert_eq!(r.pending_moves, vec![m]);
        assert!(!r.healthy());
    }

    #[test]
    fn a_voter_the_map_no_longer_places_keeps_the_shard_from_being_whole() {
        // The drain-then-dead failure: the cluster group still counted a
        // vote for a drained node that had exited, status said healthy,
        // and losing one more node left the group without a majority.
        let c = config();
        let lines = |voters: Vec<&str>| -> BTreeMap<_, _> {
            ["n1", "n2", "n3"]
                .iter()
                .map(|n| {
                    let (key, mut l) = line(n, 100, 100);
                    l.voters = voters.iter().map(|v| v.to_string()).collect();
                    (key, l)
                })
                .collect()
        };
        let as0 = |lines: &BTreeMap<_, _>| {
            let r = put_together(&ClusterMap::bootstrap(&c), lines, &BTreeMap::new());
            r.shards.into_iter().find(|s| s.shard == "as/0").unwrap()
        };
        let r = as0(&lines(vec!["n1", "n2", "n3", "n4"]));
        assert_eq!(r.unplaced, vec!["n4".to_string()]);
        assert!(!r.healthy());
        assert!(as0(&lines(vec!["n1", "n2", "n3"])).healthy());
    }
}
