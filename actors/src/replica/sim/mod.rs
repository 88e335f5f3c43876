//! A deterministic simulation of the shard layer (fault 5 of the
//! replication issue): the real openraft, the real shard log, state machine
//! and [`RaftShard`], over a simulated network ([`net`]), clock (tokio's
//! paused clock on one thread) and storage ([`MemStore`], which a crash
//! keeps and a disk wipe replaces), with the real roles' logic served as
//! their hosts serve it. Each seed makes four runs ([`Run`]): the IDS's
//! logic with real MLS messages on one shard ([`role`]), the ODS's on one
//! shard ([`mailbox`]), the AS's, CS's and SDS's on three shards that
//! every node replicates side by side on one store ([`accounts`]), and a
//! message's whole path, from the IDS's commit through its fan-out to the
//! ODS's commit and the recipients' fetches, on an IDS and an ODS shard
//! side by side ([`delivery`]).
//!
//! A run draws everything from its seed: message loss, delays (so messages
//! overtake each other), partitions, crashes, disk wipes, the clients'
//! choices and openraft's election timeouts ([`super::runtime`]). The same
//! seed gives the same run, event for event ([`Outcome::trace`]). At the end
//! the network heals, every node comes back, and the run checks:
//! - one commit per epoch: no two clients were told their commits for the
//!   same group and epoch were accepted, every group is past the epochs of
//!   its acknowledged commits, and of the epochs the IDS still remembers,
//!   each holds exactly the one commit acknowledged for it (if any was);
//! - no acknowledged message is missing from any replica, and no request of
//!   the clients was refused for good;
//! - the ODS: no two copies acknowledged under one sequence number of a
//!   mailbox, a retried copy stored once, every fetched copy the one
//!   acknowledged under its number, every acknowledged copy its owner has
//!   not acknowledged still in its mailbox;
//! - the AS, CS and SDS: an identity bound to one party only, no serial
//!   given twice, no one-time KeyPackage handed to two fetches and none
//!   lost, every acknowledged blob intact ([`accounts`]);
//! - a message's path: every send answered `Sent` is in every recipient's
//!   mailbox (or was read by it), none twice, and every copy opens to a
//!   message a sender posted ([`delivery`]);
//! - the replicas of each shard converge: the same keys and values on
//!   every node;
//! - the shards make progress again once healed.
//!
//! `cargo test -p mlsd-actors sim` runs a couple of hundred seeds; `mlsd
//! sim --seeds N` runs more, and `mlsd sim --seed S --verbose` replays one.
//!
//! # Layout
//! - this file: one run: its nodes, clients, fault schedule and checks.
//! - [`net`]: the simulated network.
//! - [`role`]: the real IDS logic as its hosts serve it, and the clients'
//!   requests; [`mailbox`]: the same for the ODS; [`accounts`]: for the AS,
//!   CS and SDS; [`delivery`]: the fan-out between the IDS and the ODS.
//! - `clients`: the clients' tasks, and how a request is sent and retried.
//! - `faults`: the faults injected while the clients write.
//! - `check`: convergence and the end checks.

pub mod accounts;
mod check;
mod clients;
pub mod delivery;
mod faults;
pub mod mailbox;
pub mod net;
pub mod role;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mlsd_transport::{Response, Role};
use openraft::{Config, SnapshotPolicy};
use rand_08::rngs::StdRng;
use rand_08::{Rng, SeedableRng};
use tokio::time::Instant;

use super::log::ShardLog;
use super::machine::ShardMachine;
use super::recovery::{Rebuild, Recovery};
use super::view::ShardStore;
use super::{node_id, Member, NodeId, RaftShard, ShardId, ShardRaft};
use crate::storage::{MemStore, Space, Store};
use clients::{group_clients, mailbox_clients, Clients};
use net::{SimNet, SimNetwork};
use role::{Op, Reply, WRITERS_GROUP};

/// The one shard an IDS run replicates.
const IDS_SHARD: ShardId = ShardId { role: Role::Ids, index: 0 };
/// The one shard an ODS run replicates.
const ODS_SHARD: ShardId = ShardId { role: Role::Ods, index: 0 };
/// Groups the commit clients contend for (two clients each).
const GROUPS: u32 = 2;
/// Clients that only write.
const WRITERS: u64 = 2;
/// The first group the creating client creates.
const CREATED_FROM: u32 = 1_000;
/// How long a replica waits for a proposal or a leadership confirmation: a
/// round trip over a slow link (see `inject`) takes longer.
const CALL_TIMEOUT: Duration = Duration::from_millis(350);
/// How long faults are injected, in simulated time.
const FAULTY: Duration = Duration::from_secs(12);
/// How long the healed cluster has to make progress and converge.
const SETTLE: Duration = Duration::from_secs(30);

/// What a run did, for the record and for comparing two runs of one seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// Replicas in the run.
    pub nodes: usize,
    /// Every event in order, with its simulated time.
    pub events: Vec<String>,
    /// blake3 of `events`: equal for two runs of one seed.
    pub trace: [u8; 32],
    /// Commits acknowledged.
    pub commits: usize,
    /// Writes acknowledged.
    pub writes: usize,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u32>,
}

/// An invariant that did not hold.
#[derive(Debug, Clone, thiserror::Error)]
#[error("seed {seed}: {what} (replay: mlsd sim --seed {seed} --trace)")]
pub struct Violation {
    /// The seed that shows it.
    pub seed: u64,
    /// What went wrong.
    pub what: String,
    /// The run's events up to the check that failed.
    pub events: Vec<String>,
}

/// What one run of a seed serves: the shards its nodes replicate and the
/// clients that use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    /// One IDS shard: committers racing for epochs, writers, a creator of
    /// groups.
    Ids,
    /// One ODS shard: enqueuers, and mailbox owners fetching and acking.
    Ods,
    /// An AS, a CS and an SDS shard on the same nodes ([`accounts`]):
    /// parties racing for identities, KeyPackages published and fetched,
    /// blobs uploaded and read.
    Accounts,
    /// An IDS and an ODS shard on the same nodes ([`delivery`]): senders
    /// whose sends fan out to mailboxes, and the mailboxes' owners.
    Delivery,
}

impl Run {
    /// Every run a seed makes, in order.
    pub const ALL: [Run; 4] = [Run::Ids, Run::Ods, Run::Accounts, Run::Delivery];

    /// The run called `name` (`ids`, `ods`, `accounts` or `delivery`).
    pub fn named(name: &str) -> Option<Run> {
        Run::ALL.into_iter().find(|r| format!("{r:?}").eq_ignore_ascii_case(name))
    }

    /// The shards the run's nodes replicate.
    fn shards(self) -> Vec<ShardId> {
        match self {
            Run::Ids => vec![IDS_SHARD],
            Run::Ods => vec![ODS_SHARD],
            Run::Accounts => vec![accounts::AS_SHARD, accounts::CS_SHARD, accounts::SDS_SHARD],
            Run::Delivery => vec![IDS_SHARD, ODS_SHARD],
        }
    }
}

/// Runs the simulation of `seed`: each of [`Run::ALL`] on a fresh
/// single-thread runtime with a paused clock (each with its own nodes,
/// faults and clients, all drawn from the seed); the outcome adds them up,
/// their events in order.
pub fn run(seed: u64) -> Result<Outcome, Violation> {
    run_kinds(seed, &Run::ALL)
}

/// Runs the simulation of `seed`, making only the runs `kinds` (in order).
pub fn run_kinds(seed: u64, kinds: &[Run]) -> Result<Outcome, Violation> {
    let mut total = Outcome {
        seed,
        nodes: 0,
        events: Vec::new(),
        trace: [0; 32],
        commits: 0,
        writes: 0,
        faults: BTreeMap::new(),
    };
    for &kind in kinds {
        let out = run_one(seed, kind)?;
        total.nodes = out.nodes;
        total.events.extend(out.events);
        total.commits += out.commits;
        total.writes += out.writes;
        for (k, v) in out.faults {
            *total.faults.entry(k).or_default() += v;
        }
    }
    total.trace = *blake3::hash(total.events.join("\n").as_bytes()).as_bytes();
    Ok(total)
}

/// One run of `seed` of kind `kind`.
fn run_one(seed: u64, kind: Run) -> Result<Outcome, Violation> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(|e| Violation { seed, what: format!("no runtime: {e}"), events: Vec::new() })?;
    super::runtime::seed_thread(seed);
    rt.block_on(simulate(seed, kind))
}

/// The events of a run, stamped with simulated time.
#[derive(Clone)]
struct Trace {
    start: Instant,
    events: Arc<Mutex<Vec<String>>>,
}

impl Trace {
    /// The wall-clock time of this instant of the run: the run starts at
    /// day 20,000 since 1970, and its clock moves with simulated time.
    fn now(&self) -> std::time::SystemTime {
        std::time::UNIX_EPOCH + Duration::from_secs(20_000 * 24 * 3600) + self.start.elapsed()
    }

    fn note(&self, what: impl std::fmt::Display) {
        let ms = self.start.elapsed().as_millis();
        self.events.lock().unwrap_or_else(|p| p.into_inner()).push(format!("{ms:>6} {what}"));
    }

    fn all(&self) -> Vec<String> {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// What clients were told was done.
#[derive(Default)]
struct Ledger {
    /// (group, epoch) → ids acknowledged for it (more than one: a violation).
    commits: BTreeMap<(u32, u64), BTreeSet<u64>>,
    writes: BTreeSet<u64>,
    /// Groups whose creation was acknowledged.
    created: BTreeSet<u32>,
    /// Requests refused for good, with the answer.
    refused: Vec<String>,
    /// What the ODS's clients were told.
    mail: mailbox::MailLedger,
    /// What the accounts run's clients were told.
    accounts: accounts::AcctLedger,
    /// What the delivery run's clients were told and read.
    delivery: delivery::DeliveryLedger,
}

/// One node: its storage (kept across a crash) and, while up, its replica.
struct Node {
    id: NodeId,
    name: String,
    store: Arc<MemStore>,
    dir: PathBuf,
    /// How many times its disk was wiped (each wipe gets a fresh dir).
    wipes: u32,
    /// Role hosts serve one request at a time per replica.
    serial: Arc<tokio::sync::Mutex<()>>,
}

struct Sim {
    seed: u64,
    /// What the run serves.
    kind: Run,
    /// The shards every node replicates (their roles' logic is served).
    shards: Vec<ShardId>,
    root: tempfile::TempDir,
    config: Arc<Config>,
    members: BTreeMap<NodeId, Member>,
    nodes: Vec<Node>,
    net: SimNet,
    trace: Trace,
    ledger: Arc<Mutex<Ledger>>,
}

fn raft_config() -> Arc<Config> {
    let c = Config {
        cluster_name: "sim".into(),
        heartbeat_interval: 50,
        election_timeout_min: 200,
        election_timeout_max: 400,
        enable_heartbeat: false,
        max_payload_entries: 16,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(24),
        max_in_snapshot_log_to_keep: 4,
        install_snapshot_timeout: 500,
        ..Default::default()
    };
    Arc::new(c.validate().expect("the simulation's Raft settings are valid"))
}

impl Sim {
    fn violation(&self, what: impl Into<String>) -> Violation {
        Violation { seed: self.seed, what: what.into(), events: self.trace.all() }
    }

    /// Starts node `i` on its storage, with a replica of every shard of
    /// the run. A node with empty storage while others hold data catches
    /// up before it votes, as in a real node.
    async fn start(&mut self, i: usize, first: bool) -> Result<(), Violation> {
        let n = &self.nodes[i];
        let store: Arc<dyn Store> = n.store.clone();
        let stored = |e| self.violation(format!("{}: {e}", n.name));
        // As a node does ([`super::recovery`], `node/src/shards/rebuild.rs`):
        // an empty store rebuilds every shard, recorded first; a recorded
        // rebuild goes on after a crash; a rebuilding replica starts no
        // election.
        let empty = !first && !n.store.contents().keys().any(|(space, _)| space == "raft");
        let mut rebuilds = BTreeMap::new();
        for &shard in &self.shards {
            if empty {
                rebuilds.insert(shard, Rebuild::Waiting);
            } else if let Some(state) =
                super::recovery::load(store.as_ref(), shard).map_err(stored)?
            {
                rebuilds.insert(shard, state);
            }
        }
        if empty {
            super::recovery::save(store.as_ref(), &rebuilds).map_err(stored)?;
        }
        let mut replicas = BTreeMap::new();
        for &shard in &self.shards {
            let log = ShardLog::new(store.clone(), shard);
            let dir = n.dir.join(shard.to_string());
            let sm = ShardMachine::open(store.clone(), shard, &dir)
                .await
                .map_err(|e| self.violation(format!("{} cannot open {shard}: {e}", n.name)))?;
            let network = SimNetwork { me: n.id, shard, net: self.net.clone() };
            let raft = ShardRaft::new(n.id, self.config.clone(), network, log, sm)
                .await
                .map_err(|e| self.violation(format!("{} cannot start {shard}: {e}", n.name)))?;
            if first {
                let _ = raft.initialize(self.members.clone()).await;
            }
            if let Some(rebuild) = rebuilds.get(&shard) {
                raft.runtime_config().elect(false);
                self.trace.note(format_args!("{} rebuilds {shard}: {rebuild:?}", n.name));
            }
            replicas.insert(
                shard,
                Arc::new(RaftShard::new(shard, raft, n.id, store.clone(), CALL_TIMEOUT)),
            );
        }
        let recovery = (!rebuilds.is_empty()).then(|| Arc::new(Recovery::new(rebuilds)));
        self.net.up(n.id, replicas, recovery);
        Ok(())
    }

    /// Stops node `i` at once: what it wrote stays, what was in flight is lost.
    async fn crash(&mut self, i: usize) {
        for r in self.net.down(self.nodes[i].id) {
            let _ = r.raft.shutdown().await;
        }
    }

    /// Each running replica's Raft state, for a violation's message.
    fn replicas_state(&self) -> String {
        let name = |id: Option<NodeId>| {
            id.and_then(|id| self.nodes.iter().find(|n| n.id == id)).map(|n| n.name.clone())
        };
        self.net
            .replicas()
            .iter()
            .map(|r| {
                let m = r.raft.metrics().borrow().clone();
                format!(
                    "{} {:?}: {:?} term {} leader {:?} log {:?} applied {:?}",
                    r.shard,
                    name(Some(m.id)),
                    m.state,
                    m.current_term,
                    name(m.current_leader),
                    m.last_log_index,
                    m.last_applied.map(|l| l.index)
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn is_up(&self, i: usize) -> bool {
        self.net.is_up(self.nodes[i].id)
    }

    /// Replaces the storage of node `i` (down) with an empty one.
    fn wipe(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.wipes += 1;
        n.store = Arc::new(MemStore::new());
        n.dir = self.root.path().join(format!("{}-{}", n.name, n.wipes));
    }
}

/// What a node's rebuild task does ([`super::recovery`]), every 500 ms:
/// each rebuilding replica asks the replicas it can reach what they hold,
/// moves on as the verdict says, and votes and campaigns again once it has
/// applied up to its target.
async fn rebuilder(net: SimNet, trace: Trace, voters: usize, stop: Arc<AtomicBool>) {
    use super::recovery::{verdict, Verdict};
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        for (node, replica, recovery) in net.rebuilding() {
            let shard = replica.shard;
            let Some(mut state) = recovery.states().get(&shard).copied() else { continue };
            let store = replica.local();
            if state == Rebuild::Waiting {
                let peers = net.reachable(node, shard);
                // As a node answers (`ShardLine::last_log`): a replica that
                // applied its membership holds the shard, up to its last
                // log entry.
                let answers: Vec<_> = peers
                    .iter()
                    .filter_map(|r| {
                        let held =
                            r.raft.metrics().borrow().last_applied.is_some_and(|l| l.index >= 1);
                        // A log that cannot be read is no answer.
                        if held {
                            r.last_log().ok()
                        } else {
                            Some(None)
                        }
                    })
                    .collect();
                let term =
                    peers.iter().map(|r| r.raft.metrics().borrow().current_term).max().unwrap_or(0);
                match verdict(voters, &answers, term) {
                    Verdict::Wait => continue,
                    // Every other replica it reaches holds nothing: cannot
                    // happen once the shard has data, and is no reason to
                    // start over here.
                    Verdict::NewShard => continue,
                    Verdict::CatchUp(next) => {
                        trace.note(format_args!("replica {node:x} rebuilds {shard}: {next:?}"));
                        let _ = super::recovery::save(store.as_ref(), &[(shard, next)].into());
                        recovery.set(shard, next);
                        state = next;
                    }
                }
            }
            let applied = replica.raft.metrics().borrow().last_applied.map_or(0, |l| l.index);
            if let Rebuild::Strict(t, _) | Rebuild::AtLeast(t, _) = state {
                if applied >= t.1 {
                    trace.note(format_args!("replica {node:x} rebuilt {shard} at {applied}"));
                    let _ = super::recovery::clear(store.as_ref(), shard);
                    recovery.finish(shard);
                    replica.raft.runtime_config().elect(true);
                }
            }
        }
    }
}

/// Heartbeats of the leaders, from one timer, as the node's shard layer
/// sends them.
async fn heartbeats(net: SimNet, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        for r in net.replicas() {
            if r.is_leader() {
                let _ = r.raft.trigger().heartbeat().await;
            }
        }
    }
}

/// `count` nodes named s1, s2, ... with empty storage under `root`.
fn fresh_nodes(root: &tempfile::TempDir, count: usize) -> Vec<Node> {
    (1..=count)
        .map(|k| {
            let name = format!("s{k}");
            Node {
                id: node_id(&name),
                dir: root.path().join(format!("{name}-0")),
                name,
                store: Arc::new(MemStore::new()),
                wipes: 0,
                serial: Arc::default(),
            }
        })
        .collect()
}

async fn simulate(seed: u64, kind: Run) -> Result<Outcome, Violation> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x51_3D);
    let count = if seed % 4 == 3 { 5 } else { 3 };
    let root = tempfile::tempdir().map_err(|e| Violation {
        seed,
        what: format!("no temp dir: {e}"),
        events: Vec::new(),
    })?;
    let nodes = fresh_nodes(&root, count);
    let members =
        nodes.iter().map(|n| (n.id, Member { name: n.name.clone() })).collect::<BTreeMap<_, _>>();
    let mut sim = Sim {
        seed,
        kind,
        shards: kind.shards(),
        root,
        config: raft_config(),
        members,
        nodes,
        net: SimNet::new(seed),
        trace: Trace { start: Instant::now(), events: Arc::default() },
        ledger: Arc::default(),
    };
    for i in 0..count {
        sim.start(i, true).await?;
    }
    let stop_clients = Arc::new(AtomicBool::new(false));
    let stop_beats = Arc::new(AtomicBool::new(false));
    tokio::spawn(heartbeats(sim.net.clone(), stop_beats.clone()));
    tokio::spawn(rebuilder(sim.net.clone(), sim.trace.clone(), count, stop_beats.clone()));
    let shared = Clients {
        seed,
        net: sim.net.clone(),
        serials: sim.nodes.iter().map(|n| (n.id, n.serial.clone())).collect(),
        ledger: sim.ledger.clone(),
        trace: sim.trace.clone(),
        stop: stop_clients.clone(),
        hosts: Arc::default(),
    };
    let clients = match kind {
        Run::Ods => mailbox_clients(&sim, &shared).await?,
        Run::Ids => group_clients(&sim, &shared).await?,
        Run::Accounts => clients::account_clients(&shared),
        Run::Delivery => clients::delivery_clients(&sim, &shared).await?,
    };

    let faults = faults::inject(&mut sim, &mut rng).await?;

    // Healed: every node back, no loss; clients go on for a while.
    sim.net.heal();
    sim.net.set_loss(0.0);
    for i in 0..count {
        if !sim.is_up(i) {
            sim.trace.note(format_args!("restart {}", sim.nodes[i].name));
            sim.start(i, false).await?;
        }
    }
    sim.trace.note("healed");
    let before = acknowledged(&sim.ledger);
    let healed = Instant::now();
    while acknowledged(&sim.ledger) < before + 5 {
        if healed.elapsed() > SETTLE {
            return Err(sim.violation(format!(
                "no progress within 30 s of healing: {}",
                sim.replicas_state()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_clients.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    check::converge(&sim, healed).await?;
    let out = check::check(&sim)?;
    stop_beats.store(true, Ordering::Relaxed);
    for r in sim.net.replicas() {
        let _ = r.raft.shutdown().await;
    }
    let events = sim.trace.all();
    let trace = *blake3::hash(events.join("\n").as_bytes()).as_bytes();
    Ok(Outcome { seed, nodes: count, events, trace, commits: out.0, writes: out.1, faults })
}

fn acknowledged(ledger: &Mutex<Ledger>) -> usize {
    let l = ledger.lock().unwrap_or_else(|p| p.into_inner());
    let a = &l.accounts;
    let d = l.delivery.delivered.len();
    l.commits.len() + l.writes.len() + l.mail.stored.len() + a.bound.len() + a.blobs.len() + d
}

#[cfg(test)]
mod tests;
