//! The shards this node replicates (decision D13): one openraft group per
//! shard, started with the node, its log and state in the node's RocksDB,
//! its RPCs over the node connections ([`network`]); plus what every node
//! knows of every shard: its voters ([`placement`]) and a leader hint.
//!
//! # Layout
//! - [`map`]: the cluster map (members, replicas per shard) and the moves
//!   that rebalance it.
//! - [`placement`]: which nodes replicate a shard, from cluster.toml.
//! - [`network`]: Raft RPCs over the peer connections, batched per peer.
//! - [`rebuild`]: replicas of a node that lost its data, until caught up.
//! - [`balance`]: leaderships moved to their preferred voters.
//! - `following`: the cluster map as this node follows it, and the
//!   replicas it opens as the map places them.
//! - [`joining`]: a node that is not a member (yet) asks to become one.
//! - [`mover`]: the moves the map plans, carried out by each shard's leader.
//! - [`steward`]: the cluster group leader's duties: the first map, members
//!   followed as learners.
//! - [`unsafe_recovery`]: `mlsd cluster recover`, for shards that lost a
//!   majority of their voters for good.
//! - this file: starting the groups, the one heartbeat timer, serving
//!   peers' RPCs, leader hints and status.

pub mod balance;
mod following;
pub mod joining;
pub mod map;
pub mod mover;
pub mod network;
pub mod placement;
pub mod rebuild;
pub mod steward;
pub mod unsafe_recovery;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use mlsd_actors::replica::log::ShardLog;
use mlsd_actors::replica::machine::ShardMachine;
use mlsd_actors::replica::recovery::{Rebuild, Recovery};
use mlsd_actors::replica::{
    node_id, Member, NodeId, RaftShard, ShardConfig, ShardId, ShardRaft, ShardView,
};
use mlsd_actors::role::shard_actor_name;
use mlsd_actors::RoleMsg;
use mlsd_roles::Store;
use mlsd_transport::codec;
use mlsd_transport::protocol::{RaftCall, RaftRpc, ShardLine};
use openraft::error::{InitializeError, RaftError};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{Config, SnapshotPolicy};
use serde::Serialize;
use serde_bytes::ByteBuf;

use crate::config::{ClusterConfig, NodeConfig};
use crate::peers::Peers;
use map::ClusterMap;
use network::{Links, ShardNetwork};

/// Entries a learner may lack of its leader's log and still be made a
/// voter (of a shard, [`mover`], or of the cluster group, [`steward`]): it
/// is then as far behind as any follower under load.
const CAUGHT_UP: u64 = 64;

/// Why the shards could not start.
#[derive(Debug, thiserror::Error)]
pub enum ShardsError {
    /// openraft refused its configuration or failed to start a group.
    #[error("shard {shard}: {why}")]
    Start {
        /// The shard.
        shard: ShardId,
        /// What failed.
        why: String,
    },
}

/// This node's replicas and its view of all shards.
pub struct Shards {
    config: Arc<ClusterConfig>,
    me: String,
    /// This node's own `[[node]]` block: what it joins the cluster with.
    me_node: NodeConfig,
    /// The replicas this node holds; more are opened while it runs, as the
    /// cluster map places shards here ([`Shards::reconcile`]).
    local: RwLock<HashMap<ShardId, Arc<RaftShard>>>,
    /// Leaders other nodes told us of, for shards not replicated here.
    hints: Mutex<HashMap<ShardId, String>>,
    /// Replicas rebuilding after this node lost its data ([`rebuild`]):
    /// they campaign in no election and vote only as their state allows.
    recovering: Recovery,
    store: Arc<dyn Store>,
    peers: Arc<Peers>,
    /// What each replica is opened with.
    opener: Opener,
    /// Whether the store was empty when the node started (a new node, or
    /// one that lost its disk): every replica it opens is rebuilt first,
    /// and none but the cluster group's before the cluster map is known.
    started_empty: bool,
    /// The cluster map as this node last saw it.
    map: RwLock<Arc<ClusterMap>>,
    /// Whether `map` came from the cluster group; false while it is the
    /// file's first map, or one a member told of, before the group's has
    /// applied here. No replica takes a shard for new before then
    /// ([`rebuild`]).
    settled: AtomicBool,
    /// Whether the unsettled `map` is one another node told of.
    told: AtomicBool,
    /// The cluster replica's applied index when `map` was read.
    map_applied: AtomicU64,
    /// Held by the cluster group's leader from reading the map to
    /// committing its change, so two changes never build on one version.
    map_writes: tokio::sync::Mutex<()>,
    /// Set once a settled map no longer lists this node: it was removed.
    removed_flag: AtomicBool,
    /// Wakes [`Shards::removed`].
    removed: tokio::sync::Notify,
}

/// What every replica of this node is opened with.
struct Opener {
    links: Arc<Links>,
    raft: Arc<Config>,
    snapshots: std::path::PathBuf,
}

impl Shards {
    /// Opens every replica `me` holds and starts the node's replication
    /// tasks. A group never started before is initialized with its voters
    /// (each voter does so with the same voters, which openraft allows).
    /// A node that starts empty opens only its replica of the cluster
    /// group: its other replicas wait for the cluster's map.
    pub async fn start(
        config: Arc<ClusterConfig>,
        me: &NodeConfig,
        store: Arc<dyn Store>,
        peers: Arc<Peers>,
    ) -> Result<Arc<Shards>, ShardsError> {
        // The map the cluster group applied here, else the file's first map
        // until the group's arrives: identical on a new cluster, and what
        // every node placed shards by before the map existed.
        let cluster_view = ShardView { store: store.clone(), shard: ShardId::CLUSTER };
        let stored = ClusterMap::read(&cluster_view)
            .map_err(|why| ShardsError::Start { shard: ShardId::CLUSTER, why })?;
        let settled = stored.is_some();
        let map = stored.unwrap_or_else(|| ClusterMap::bootstrap(&config));
        let start_err = |shard: ShardId| {
            move |e: mlsd_roles::StoreError| ShardsError::Start { shard, why: e.to_string() }
        };
        // An empty store lost its data or never had any: every replica
        // rebuilds (recorded first, so a crash keeps the rule) until its
        // peers tell which. Otherwise those recorded as rebuilding go on.
        let empty = store
            .scan_from(mlsd_roles::Space::Raft, &[], &[], 1)
            .map(|r| r.is_empty())
            .unwrap_or(false);
        let mut mine: Vec<ShardId> = Vec::new();
        if map.is_member(&me.name) {
            mine.push(ShardId::CLUSTER);
        }
        if !empty {
            mine.extend(map.replicated_by(&me.name));
        }
        let mut recovering = BTreeMap::new();
        for shard in &mine {
            if empty {
                recovering.insert(*shard, Rebuild::Waiting);
            } else if let Some(state) =
                rebuild::load(store.as_ref(), *shard).map_err(start_err(*shard))?
            {
                recovering.insert(*shard, state);
            }
        }
        if empty && !recovering.is_empty() {
            rebuild::save(store.as_ref(), &recovering).map_err(start_err(mine[0]))?;
        }
        if !recovering.is_empty() {
            tracing::warn!(
                shards = recovering.len(),
                "rebuilding replicas: no vote and no election until the other voters say what they hold"
            );
        }
        let links = Links::new(peers.clone(), config.limits.max_frame);
        let opener = Opener {
            raft: raft_config(&config, links.budget()),
            links,
            snapshots: me.data_dir.join("snapshots"),
        };
        let shards = Arc::new(Shards {
            me: me.name.clone(),
            me_node: me.clone(),
            local: RwLock::default(),
            hints: Mutex::default(),
            recovering: Recovery::new(recovering),
            store,
            peers,
            opener,
            started_empty: empty,
            map: RwLock::new(Arc::new(map.clone())),
            settled: AtomicBool::new(settled),
            told: AtomicBool::new(false),
            map_applied: AtomicU64::new(0),
            map_writes: tokio::sync::Mutex::new(()),
            removed_flag: AtomicBool::new(false),
            removed: tokio::sync::Notify::new(),
            config,
        });
        shards.peers.learn(map.members.iter().map(|(n, m)| (n.clone(), m.listen)));
        for shard in mine {
            let r = shards.open(shard, map.voters(shard), true).await?;
            shards.local.write().unwrap_or_else(|p| p.into_inner()).insert(shard, r);
        }
        tokio::spawn(shards.clone().heartbeats());
        tokio::spawn(steward::run(shards.clone()));
        tokio::spawn(joining::run(shards.clone()));
        tokio::spawn(mover::run(shards.clone()));
        if shards.config.replication.balance_leaders {
            tokio::spawn(balance::run(shards.clone()));
        }
        tokio::spawn(rebuild::run(shards.clone()));
        Ok(shards)
    }

    /// Opens this node's replica of `shard`, whose voters are `voters`. At
    /// start (`starting`) a voter's group never started before is
    /// initialized; one opened later never is: a shard placed here while
    /// the node runs is new to the cluster only on a node that started
    /// empty ([`rebuild`] decides), and otherwise its leader adds it.
    async fn open(
        &self,
        shard: ShardId,
        voters: &[String],
        starting: bool,
    ) -> Result<Arc<RaftShard>, ShardsError> {
        let err = |why: String| ShardsError::Start { shard, why };
        let log = ShardLog::new(self.store.clone(), shard);
        let sm = ShardMachine::open(self.store.clone(), shard, &self.opener.snapshots)
            .await
            .map_err(|e| err(e.to_string()))?;
        let net = ShardNetwork { shard, links: self.opener.links.clone() };
        let raft = ShardRaft::new(node_id(&self.me), self.opener.raft.clone(), net, log, sm)
            .await
            .map_err(|e| err(e.to_string()))?;
        let members: BTreeMap<NodeId, Member> =
            voters.iter().map(|n| (node_id(n), Member { name: n.clone() })).collect();
        // A rebuilding replica is initialized only once its peers say the
        // shard is new ([`rebuild`]); until it has caught up it starts no
        // election (an empty log campaigning would disturb the others'
        // elections, and could win with another empty replica's vote).
        // A learner of the cluster group never initializes it: its leader
        // adds it ([`steward`]).
        if self.recovering.contains(shard) {
            raft.runtime_config().elect(false);
        } else if starting
            && voters.contains(&self.me)
            && !raft.is_initialized().await.map_err(|e| err(e.to_string()))?
        {
            match raft.initialize(members).await {
                Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(e) => return Err(err(e.to_string())),
            }
        }
        let timeout = self.config.limits.call_timeout;
        let s = RaftShard::new(shard, raft, node_id(&self.me), self.store.clone(), timeout)
            .with_max_frame(self.config.limits.max_frame);
        Ok(Arc::new(s))
    }

    /// The replica of `shard` on this node, if it is one.
    pub fn replica(&self, shard: ShardId) -> Option<Arc<RaftShard>> {
        self.local.read().unwrap_or_else(|p| p.into_inner()).get(&shard).cloned()
    }

    /// Every replica on this node.
    pub fn replicas(&self) -> Vec<Arc<RaftShard>> {
        self.local.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// Where to send a request of `shard` first: its leader as this node
    /// knows it, else its best-placed voter.
    pub fn leader_hint(&self, shard: ShardId) -> String {
        if let Some(l) = self.replica(shard).and_then(|r| r.leader()) {
            return l;
        }
        if let Some(l) = self.hints.lock().unwrap_or_else(|p| p.into_inner()).get(&shard) {
            return l.clone();
        }
        self.voters(shard).into_iter().next().unwrap_or_else(|| self.me.clone())
    }

    /// Remembers that `leader` leads `shard` (learned from a redirect).
    pub fn note_leader(&self, shard: ShardId, leader: &str) {
        let mut h = self.hints.lock().unwrap_or_else(|p| p.into_inner());
        h.insert(shard, leader.to_string());
    }

    /// The voters of `shard`, by name, as the cluster map places them.
    pub fn voters(&self, shard: ShardId) -> Vec<String> {
        self.map().voters(shard).to_vec()
    }

    /// The shard of `key` for `role`.
    pub fn shard_of(&self, role: mlsd_transport::Role, key: &[u8]) -> ShardId {
        self.map().shard_of(role, key)
    }

    /// One timer for every shard's heartbeats, so that those to one peer
    /// leave together and share a message ([`network`]). The same timer
    /// watches leadership: a shard this node stops leading (or whose lease
    /// ran out) has its host told at once ([`RoleMsg::Deposed`]).
    async fn heartbeats(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.config.replication.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut led: HashMap<ShardId, bool> = HashMap::new();
        loop {
            tick.tick().await;
            for r in self.replicas() {
                let shard = &r.shard;
                if r.is_leader() && !r.handing_over() {
                    let _ = r.raft.trigger().heartbeat().await;
                }
                let leading = r.leading();
                if led.insert(*shard, leading) == Some(true) && !leading {
                    tracing::info!(%shard, "no longer leading; its host lets go");
                    let name = shard_actor_name(&self.me, shard.role, shard.index);
                    if let Some(host) = ractor::registry::where_is(name) {
                        let _ =
                            ractor::ActorRef::<RoleMsg>::from(host).send_message(RoleMsg::Deposed);
                    }
                }
            }
            self.refresh_map();
            self.reconcile().await;
        }
    }

    /// Serves a peer's Raft RPCs, all at once (one shard's slow snapshot
    /// chunk does not hold another's heartbeat); one answer per call.
    pub async fn serve(&self, calls: Vec<RaftCall>) -> Vec<ByteBuf> {
        let futs: Vec<_> = calls.into_iter().map(|c| self.serve_one(c)).collect();
        crate::join::join_all(futs).await.into_iter().map(ByteBuf::from).collect()
    }

    async fn serve_one(&self, call: RaftCall) -> Vec<u8> {
        let shard = ShardId { role: call.role, index: call.shard };
        let Some(r) = self.replica(shard) else {
            return answer::<()>(Err(format!("{} does not replicate shard {shard}", self.me)));
        };
        let raft = &r.raft;
        let bad = |e: codec::CodecError| answer::<()>(Err(format!("bad raft rpc: {e}")));
        match call.rpc {
            RaftRpc::Append => match codec::decode::<AppendEntriesRequest<ShardConfig>>(&call.body)
            {
                Ok(req) if !self.recovering.may_append(shard, req.vote.leader_id().term) => {
                    answer::<()>(Err(self.rebuilding(shard)))
                }
                Ok(req) => answer(Ok(raft.append_entries(req).await)),
                Err(e) => bad(e),
            },
            RaftRpc::Vote => match codec::decode::<VoteRequest<NodeId>>(&call.body) {
                Ok(req) if !self.may_vote(&r, &req) => answer::<()>(Err(format!(
                    "{} is catching up shard {shard}; no vote for a candidate behind it",
                    self.me
                ))),
                Ok(req) => answer(Ok(raft.vote(req).await)),
                Err(e) => bad(e),
            },
            RaftRpc::Snapshot => {
                match codec::decode::<InstallSnapshotRequest<ShardConfig>>(&call.body) {
                    Ok(req) if !self.recovering.may_append(shard, req.vote.leader_id().term) => {
                        answer::<()>(Err(self.rebuilding(shard)))
                    }
                    Ok(req) => answer(Ok(raft.install_snapshot(req).await)),
                    Err(e) => bad(e),
                }
            }
            RaftRpc::TimeoutNow => match codec::decode::<u64>(&call.body) {
                Ok(term) => answer(balance::campaign(self, &r, term)),
                Err(e) => bad(e),
            },
        }
    }

    /// Why a rebuilding replica refused a leader's entries ([`Recovery::may_append`]).
    fn rebuilding(&self, shard: ShardId) -> String {
        format!("{} is rebuilding shard {shard}; no entries from this leader", self.me)
    }

    /// Whether `r` may grant `req` ([`Recovery`]).
    fn may_vote(&self, r: &RaftShard, req: &VoteRequest<NodeId>) -> bool {
        let applied = r.raft.metrics().borrow().last_applied.map_or(0, |l| l.index);
        let candidate = req.last_log_id.map(|l| (l.leader_id.term, l.index));
        self.recovering.may_vote(r.shard, applied, candidate)
    }

    /// This node's view of each shard it replicates.
    pub fn status(&self) -> Vec<ShardLine> {
        let rebuilding = self.recovering.states();
        let mut out: Vec<ShardLine> = self
            .replicas()
            .iter()
            .map(|r| {
                let m = r.raft.metrics().borrow().clone();
                let name = |id: &NodeId| {
                    m.membership_config
                        .membership()
                        .get_node(id)
                        .map_or_else(|| id.to_string(), |n| n.name.clone())
                };
                let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
                // The log's own last entry, not openraft's metrics: the
                // position a rebuilding peer is told ([`rebuild`]).
                let stored = r.last_log().ok();
                let matched = match &m.replication {
                    Some(rep) => voters
                        .iter()
                        .map(|v| (name(v), rep.get(v).and_then(|l| l.as_ref().map(|l| l.index))))
                        .collect(),
                    None => Vec::new(),
                };
                ShardLine {
                    role: r.shard.role,
                    shard: r.shard.index,
                    node: self.me.clone(),
                    voters: voters.iter().map(name).collect(),
                    leader: m.current_leader.as_ref().map(name),
                    term: m.current_term,
                    applied: m.last_applied.map_or(0, |l| l.index),
                    applied_term: m.last_applied.map_or(0, |l| l.leader_id.term),
                    last_log: stored.flatten().map_or(m.last_log_index.unwrap_or(0), |(_, i)| i),
                    last_log_term: stored.map(|p| p.map_or(0, |(t, _)| t)),
                    matched,
                    rebuilding: rebuilding.get(&r.shard).map(rebuild::describe),
                }
            })
            .collect();
        out.sort_by_key(|l| (l.role.name(), l.shard));
        out
    }

    /// Stops every group (the node is shutting down).
    pub async fn shutdown(&self) {
        for r in self.replicas() {
            let _ = r.raft.shutdown().await;
        }
    }
}

impl crate::routing::LeaderHints for Shards {
    fn leader_hint(&self, shard: ShardId) -> String {
        Shards::leader_hint(self, shard)
    }

    fn note_leader(&self, shard: ShardId, leader: &str) {
        Shards::note_leader(self, shard, leader)
    }

    fn voters(&self, shard: ShardId) -> Vec<String> {
        Shards::voters(self, shard)
    }
}

/// An RPC's answer as it goes back: the openraft result, or why the call
/// never reached a Raft group.
fn answer<T: Serialize>(r: Result<T, String>) -> Vec<u8> {
    codec::encode(&r)
        .unwrap_or_else(|e| codec::encode(&Err::<(), String>(e.to_string())).unwrap_or_default())
}

/// openraft's settings from `[cluster]`. Heartbeats are driven by
/// [`Shards::heartbeats`], not by each group's own timer.
fn raft_config(config: &ClusterConfig, budget: usize) -> Arc<Config> {
    let r = &config.replication;
    let ms = |d: Duration| d.as_millis() as u64;
    let c = Config {
        cluster_name: config.name.clone(),
        heartbeat_interval: ms(r.heartbeat),
        election_timeout_min: ms(r.election_timeout),
        // openraft makes the maximum also the leader lease a follower waits
        // out before it campaigns (lease + a random timeout in [min, max)):
        // a narrow range keeps a dead leader's shards leaderless for 3.5 to
        // 4 s at the defaults instead of 4.5 to 6.
        election_timeout_max: ms(r.election_timeout) * 4 / 3,
        enable_heartbeat: false,
        max_payload_entries: 256,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(r.snapshot_logs),
        max_in_snapshot_log_to_keep: (r.snapshot_logs / 4).min(1_000),
        snapshot_max_chunk_size: (budget / 2) as u64,
        install_snapshot_timeout: ms(config.limits.call_timeout).max(1000),
        ..Default::default()
    };
    Arc::new(c.validate().expect("the replication settings were checked with the config"))
}
