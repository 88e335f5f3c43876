//! The simulated network between the nodes of a run, each holding a
//! replica of every shard of the run: every RPC and every answer may be
//! lost or delayed (so messages overtake each other), nodes on different
//! sides of a partition do not hear each other, and a node that is down
//! answers nothing. All of it is drawn from the run's seed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use rand_08::rngs::StdRng;
use rand_08::{Rng, SeedableRng};

use super::super::recovery::Recovery;
use super::super::{Member, NodeId, RaftShard, ShardConfig, ShardId};

/// What an RPC between simulated replicas fails with.
type RpcError<E> = RPCError<NodeId, Member, RaftError<NodeId, E>>;

/// Why a simulated RPC failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SimError(&'static str);

/// What the network knows: who is up, who hears whom, and how lossy it is.
struct State {
    rng: StdRng,
    /// The running replicas of each node that is up, by shard.
    up: BTreeMap<NodeId, BTreeMap<ShardId, Arc<RaftShard>>>,
    /// Each node's side of the current partition (all 0 when healed).
    side: BTreeMap<NodeId, u8>,
    /// Chance, per message, that it is lost.
    loss: f64,
    /// Nodes restarted empty and what they must reach before voting.
    recovery: BTreeMap<NodeId, Arc<Recovery>>,
    /// Nodes whose messages (either way) take at least this long: a slow
    /// link or disk, below the election timeout, so no election starts.
    slow: BTreeMap<NodeId, Duration>,
}

/// The network, shared by every node's RPC clients and by the harness.
#[derive(Clone)]
pub struct SimNet {
    state: Arc<Mutex<State>>,
}

impl SimNet {
    /// A healed, lossless network with nobody up, drawing from `seed`.
    pub fn new(seed: u64) -> Self {
        let state = State {
            rng: StdRng::seed_from_u64(seed),
            up: BTreeMap::new(),
            side: BTreeMap::new(),
            loss: 0.0,
            recovery: BTreeMap::new(),
            slow: BTreeMap::new(),
        };
        SimNet { state: Arc::new(Mutex::new(state)) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `node` is up and serves with `replicas`, one per shard.
    pub fn up(
        &self,
        node: NodeId,
        replicas: BTreeMap<ShardId, Arc<RaftShard>>,
        recovery: Option<Arc<Recovery>>,
    ) {
        let mut s = self.lock();
        s.up.insert(node, replicas);
        match recovery {
            Some(r) => s.recovery.insert(node, r),
            None => s.recovery.remove(&node),
        };
    }

    /// `node` is down: it neither sends nor answers. Returns the replicas
    /// it ran.
    pub fn down(&self, node: NodeId) -> Vec<Arc<RaftShard>> {
        self.lock().up.remove(&node).map(|r| r.into_values().collect()).unwrap_or_default()
    }

    /// Whether `node` is up.
    pub fn is_up(&self, node: NodeId) -> bool {
        self.lock().up.contains_key(&node)
    }

    /// `node`'s replica of `shard`, if it is up.
    pub fn replica(&self, node: NodeId, shard: ShardId) -> Option<Arc<RaftShard>> {
        self.lock().up.get(&node).and_then(|r| r.get(&shard)).cloned()
    }

    /// Every running replica of every shard.
    pub fn replicas(&self) -> Vec<Arc<RaftShard>> {
        self.lock().up.values().flat_map(|r| r.values().cloned()).collect()
    }

    /// Every running replica of `shard`.
    pub fn replicas_of(&self, shard: ShardId) -> Vec<Arc<RaftShard>> {
        self.lock().up.values().filter_map(|r| r.get(&shard).cloned()).collect()
    }

    /// Every replica that is rebuilding, with its node's rules.
    pub fn rebuilding(&self) -> Vec<(NodeId, Arc<RaftShard>, Arc<Recovery>)> {
        let s = self.lock();
        let mut out = Vec::new();
        for (n, r) in s.recovery.iter().filter(|(_, r)| !r.is_empty()) {
            let Some(replicas) = s.up.get(n) else { continue };
            for (shard, x) in replicas {
                if r.contains(*shard) {
                    out.push((*n, x.clone(), r.clone()));
                }
            }
        }
        out
    }

    /// Whether `from` hears `to` now: both up, on one side of any partition.
    pub fn linked(&self, from: NodeId, to: NodeId) -> bool {
        let s = self.lock();
        let side = |n: &NodeId| s.side.get(n).copied().unwrap_or(0);
        s.up.contains_key(&from) && s.up.contains_key(&to) && side(&from) == side(&to)
    }

    /// The running replicas of `shard` that `node` can reach now (its side
    /// of a partition).
    pub fn reachable(&self, node: NodeId, shard: ShardId) -> Vec<Arc<RaftShard>> {
        let s = self.lock();
        let side = |n: &NodeId| s.side.get(n).copied().unwrap_or(0);
        s.up.iter()
            .filter(|(n, _)| **n != node && side(n) == side(&node))
            .filter_map(|(_, r)| r.get(&shard).cloned())
            .collect()
    }

    /// Splits the nodes: those in `minority` hear only each other.
    pub fn partition(&self, minority: &BTreeSet<NodeId>) {
        let mut s = self.lock();
        s.side.clear();
        for n in minority {
            s.side.insert(*n, 1);
        }
    }

    /// Ends any partition and any slowness.
    pub fn heal(&self) {
        let mut s = self.lock();
        s.side.clear();
        s.slow.clear();
    }

    /// Every message from or to `node` takes at least `floor` from now on.
    pub fn slow(&self, node: NodeId, floor: Duration) {
        self.lock().slow.insert(node, floor);
    }

    /// Whether the network is partitioned now.
    pub fn partitioned(&self) -> bool {
        !self.lock().side.is_empty()
    }

    /// Sets the chance that a message is lost.
    pub fn set_loss(&self, loss: f64) {
        self.lock().loss = loss;
    }

    /// Whether a message from `from` to `to` gets through, and after how
    /// long: mostly a few milliseconds, sometimes far longer, so that later
    /// messages overtake it.
    fn roll(&self, from: NodeId, to: NodeId) -> (bool, Duration) {
        let mut guard = self.lock();
        let s = &mut *guard;
        let side = |n: NodeId| s.side.get(&n).copied().unwrap_or(0);
        let linked = side(from) == side(to) && s.up.contains_key(&from);
        let loss = s.loss;
        let lost = s.rng.gen_bool(loss);
        let delay = if s.rng.gen_ratio(1, 20) {
            Duration::from_micros(s.rng.gen_range(50_000..400_000))
        } else {
            Duration::from_micros(s.rng.gen_range(200..8_000))
        };
        let floor = [from, to].iter().filter_map(|n| s.slow.get(n)).max().copied();
        (linked && !lost, delay.max(floor.unwrap_or_default()))
    }

    /// Carries one RPC from `from` to `to` and its answer back. `gate` is
    /// the receiver's refusal (a rebuilding replica's rules), asked when
    /// the message arrives, as a real node asks it: asked when it was sent,
    /// a vote sent to a node that was down, or not yet wiped, reached it
    /// after it restarted empty and was granted (seed 70 once elected a
    /// leader missing committed entries that way).
    async fn carry<Resp, E, G, F, Fut>(
        &self,
        (from, to): (NodeId, NodeId),
        shard: ShardId,
        gate: G,
        call: F,
    ) -> Result<Resp, RpcError<E>>
    where
        E: std::error::Error,
        G: FnOnce(&SimNet, &RaftShard) -> Option<RpcError<E>>,
        F: FnOnce(Arc<RaftShard>) -> Fut,
        Fut: std::future::Future<Output = Result<Resp, RaftError<NodeId, E>>>,
    {
        let unreachable = |why| RPCError::Unreachable(Unreachable::new(&SimError(why)));
        let (through, delay) = self.roll(from, to);
        tokio::time::sleep(delay).await;
        if !through {
            return Err(unreachable("lost or partitioned"));
        }
        let Some(target) = self.replica(to, shard) else { return Err(unreachable("down")) };
        let answer = match gate(self, &target) {
            Some(refused) => Err(refused),
            None => call(target).await.map_err(|e| RPCError::RemoteError(RemoteError::new(to, e))),
        };
        let (back, delay) = self.roll(to, from);
        tokio::time::sleep(delay).await;
        if !back || self.replica(to, shard).is_none() {
            return Err(unreachable("answer lost"));
        }
        answer
    }

    /// Whether `node` may take entries from a leader of `term` ([`Recovery`]).
    fn may_append(&self, node: NodeId, replica: &RaftShard, term: u64) -> bool {
        let r = self.lock().recovery.get(&node).cloned();
        r.is_none_or(|r| r.may_append(replica.shard, term))
    }

    /// Whether `node` may vote for a candidate whose log ends at
    /// `candidate` ([`Recovery`]).
    fn may_vote(&self, node: NodeId, replica: &RaftShard, candidate: Option<(u64, u64)>) -> bool {
        let r = self.lock().recovery.get(&node).cloned();
        let applied = replica.raft.metrics().borrow().last_applied.map_or(0, |l| l.index);
        r.is_none_or(|r| r.may_vote(replica.shard, applied, candidate))
    }
}

/// One replica's RPC clients.
pub struct SimNetwork {
    /// The sending node.
    pub me: NodeId,
    /// The replica's shard.
    pub shard: ShardId,
    /// The network.
    pub net: SimNet,
}

impl RaftNetworkFactory<ShardConfig> for SimNetwork {
    type Network = SimLink;

    async fn new_client(&mut self, target: NodeId, _node: &Member) -> SimLink {
        SimLink { from: self.me, to: target, shard: self.shard, net: self.net.clone() }
    }
}

/// RPCs from one replica of a shard to another.
pub struct SimLink {
    from: NodeId,
    to: NodeId,
    shard: ShardId,
    net: SimNet,
}

/// The receiver's refusal (`why`) of a leader's entries or snapshot while
/// it rebuilds ([`Recovery::may_append`]): as unreachable, so that the
/// leader backs off instead of resending at once.
fn no_entries<E: std::error::Error>(
    to: NodeId,
    term: u64,
    why: &'static str,
) -> impl FnOnce(&SimNet, &RaftShard) -> Option<RpcError<E>> {
    move |net, replica| {
        (!net.may_append(to, replica, term))
            .then(|| RPCError::Unreachable(Unreachable::new(&SimError(why))))
    }
}

impl RaftNetwork<ShardConfig> for SimLink {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<ShardConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        let gate = no_entries(
            self.to,
            rpc.vote.leader_id().term,
            "rebuilding; no entries from this leader",
        );
        self.net
            .carry((self.from, self.to), self.shard, gate, |t| async move {
                t.raft.append_entries(rpc).await
            })
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<ShardConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Member, RaftError<NodeId, openraft::error::InstallSnapshotError>>,
    > {
        let gate = no_entries(
            self.to,
            rpc.vote.leader_id().term,
            "rebuilding; no snapshot from this leader",
        );
        self.net
            .carry((self.from, self.to), self.shard, gate, |t| async move {
                t.raft.install_snapshot(rpc).await
            })
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        let to = self.to;
        let candidate = rpc.last_log_id.map(|l| (l.leader_id.term, l.index));
        let gate = move |net: &SimNet, t: &RaftShard| {
            (!net.may_vote(to, t, candidate)).then(|| {
                let e = SimError("catching up after an empty start; no vote");
                RPCError::Network(NetworkError::new(&e))
            })
        };
        self.net
            .carry((self.from, to), self.shard, gate, |t| async move { t.raft.vote(rpc).await })
            .await
    }
}
