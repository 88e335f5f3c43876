//! The rebalance stage of `mlsd bench` (the elastic-cluster issue): what a
//! join costs. Three nodes, every role on each, three replicas of each
//! shard, are filled with blobs (shard data); two senders send to
//! 10-member rosters, two lanes each; then a fourth node joins and the
//! stage times the rebalance until the cluster is whole again (every move
//! done, every voter caught up). It reports the seconds per GB of shard
//! data the new node took (the blobs of its SDS shards; its data dir, with
//! Raft logs, snapshots and RocksDB's own files, is printed beside), and the
//! copies per second during the rebalance against the window before it,
//! from sends prepared before the clock starts.

use super::*;

/// Members of each send's roster.
const MEMBERS: usize = 10;
/// Sends in flight per sender.
const LANES: usize = 2;
/// How long the throughput before the join is measured.
const BEFORE: Duration = Duration::from_secs(10);
/// How long the rebalance may take before the stage gives up.
const PATIENCE: Duration = Duration::from_secs(900);

/// What the stage measured.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rebalance {
    /// Blob bytes loaded into the cluster before the join.
    pub(super) loaded: u64,
    /// Bytes in the new node's data dir once the rebalance was over.
    pub(super) received: u64,
    /// Blob bytes of the SDS shards the new node took (each SDS shard
    /// holds its share of the load): the shard data moved.
    pub(super) shard_bytes: u64,
    /// Replicas the new node holds afterwards.
    pub(super) replicas: usize,
    /// From the join to the cluster whole again, seconds.
    pub(super) secs: f64,
    /// Copies per second before the join.
    pub(super) before: f64,
    /// Copies per second during the rebalance (over `during_secs`: the
    /// whole rebalance, or as long as the prepared sends lasted).
    pub(super) during: f64,
    /// See `during`.
    pub(super) during_secs: f64,
}

impl Rebalance {
    /// Seconds per GB of shard data moved.
    pub(super) fn secs_per_gb(&self) -> f64 {
        self.secs / (self.shard_bytes as f64 / 1e9)
    }
}

/// Loads `megabytes` of blobs, measures, joins a node, measures.
/// `sends` prepared sends per lane.
pub(super) async fn rebalance(megabytes: usize, sends: usize) -> anyhow::Result<Rebalance> {
    let keys = format!("replicas = 3\nbalance_leaders = false\n{BENCH_CONFIG}");
    let layout = [("b1", ALL), ("b2", ALL), ("b3", ALL)];
    let mut c = InprocCluster::start("bench-rebalance", &layout, &keys).await?;
    whole(&c.config, None).await?;
    let loaded = load_blobs(&c, megabytes).await?;

    let ca = c.client_config("x", 0).ca;
    let conn = Connection::connect(c.nodes[0].addr(), &ca).await?;
    let mut roster = Vec::with_capacity(MEMBERS);
    for _ in 0..MEMBERS {
        roster.push(RosterEntry {
            cap: super::cluster::mailbox_with_cap(&conn).await?.1,
            key: rand32(),
        });
    }
    let text = "x".repeat(MESSAGE);
    let mut lanes = Vec::new();
    for s in 0..2 {
        let mut sender = Client::open(&c.client_config(&format!("sender{s}"), s)).await?;
        sender.register(&format!("bench{s}/sender"), None).await?;
        sender.create_group("bench", RosterMode::Client).await?;
        let mut prepared = Vec::with_capacity(sends * LANES);
        for _ in 0..sends * LANES {
            prepared.push(send_to_roster(&mut sender, "bench", &text, &roster)?);
        }
        let sender = std::sync::Arc::new(sender);
        for l in 0..LANES {
            let mine: Vec<Request> = prepared.iter().skip(l).step_by(LANES).cloned().collect();
            lanes.push((sender.clone(), mine.into_iter()));
        }
    }

    let (before, _, lanes) = copies_per_second(lanes, Timed::For(BEFORE)).await?;
    let done = std::sync::Arc::new(tokio::sync::Notify::new());
    let t = Instant::now();
    let sending = {
        let done = done.clone();
        tokio::spawn(copies_per_second(lanes, Timed::Until(done)))
    };
    c.join("b4", ALL).await?;
    let report = whole(&c.config, Some("b4")).await?;
    let secs = t.elapsed().as_secs_f64();
    done.notify_one();
    let (during, during_secs, _) = sending.await??;
    let took = report.members.iter().find(|m| m.name == "b4").map(|m| m.replicas.clone());
    let replicas = took.as_ref().map_or(0, |r| r.values().sum());
    let sds = took.and_then(|r| r.get(&mlsd_transport::Role::Sds).copied()).unwrap_or(0);
    let shard_bytes = loaded * sds as u64 / u64::from(c.config.replication.shards.max(1));
    let received = dir_bytes(&c.dir().join("data/b4"));
    c.shutdown().await;
    Ok(Rebalance { loaded, received, shard_bytes, replicas, secs, before, during, during_secs })
}

/// How long a throughput window lasts.
enum Timed {
    For(Duration),
    Until(std::sync::Arc<tokio::sync::Notify>),
}

type Lane = (std::sync::Arc<Client>, std::vec::IntoIter<Request>);

/// Copies per second over `window` (and its length in seconds), the lanes
/// sending their prepared sends until it ends or they run out; the lanes
/// with what is left of their sends.
async fn copies_per_second(
    lanes: Vec<Lane>,
    window: Timed,
) -> anyhow::Result<(f64, f64, Vec<Lane>)> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let t = Instant::now();
    let all = mlsd_node::join::join_all(
        lanes.into_iter().map(|lane| send_until(lane, stop.clone())).collect(),
    );
    let timer = async {
        match window {
            Timed::For(d) => tokio::time::sleep(d).await,
            Timed::Until(n) => n.notified().await,
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    };
    let (ends, ()) = tokio::join!(all, timer);
    let secs = t.elapsed().as_secs_f64();
    let (mut sent, mut lanes) = (0, Vec::new());
    for end in ends {
        let (n, lane) = end?;
        sent += n;
        lanes.push(lane);
    }
    Ok(((sent * MEMBERS) as f64 / secs, secs, lanes))
}

/// Sends `lane`'s prepared sends one at a time until `stop` (or none are
/// left), each retried until acknowledged: how many, and the lane.
async fn send_until(
    mut lane: Lane,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<(usize, Lane)> {
    let mut n = 0usize;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let Some(send) = lane.1.next() else { break };
        // A shard whose leader moves away is unavailable for an election:
        // the same request again (the IDS knows its message id), as a
        // client does, within the client's patience.
        let deadline = Instant::now() + mlsd_client::retry::SHARD;
        while let Err(e) = send_expecting(&lane.0, send.clone(), MEMBERS).await {
            anyhow::ensure!(Instant::now() < deadline, "a send was refused for good: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        n += 1;
    }
    Ok((n, lane))
}

/// `megabytes` of random blobs of 1 MiB, four uploads at a time; the bytes.
async fn load_blobs(c: &InprocCluster, megabytes: usize) -> anyhow::Result<u64> {
    let ca = c.client_config("x", 0).ca;
    let mut lanes = Vec::new();
    for l in 0..4 {
        let conn = Connection::connect(c.nodes[l % c.nodes.len()].addr(), &ca).await?;
        lanes.push(async move {
            for _ in (l..megabytes).step_by(4) {
                let data: Vec<u8> = (0..1 << 20).map(|_| rand::random::<u8>()).collect();
                mlsd_client::blob::put(&conn, rand32(), rand32(), &data, Vec::new()).await?;
            }
            anyhow::Ok(())
        });
    }
    for done in mlsd_node::join::join_all(lanes).await {
        done?;
    }
    Ok((megabytes as u64) << 20)
}

/// Waits until the cluster is whole (and `member`, if given, holds
/// replicas); the status report then.
async fn whole(
    config: &mlsd_node::ClusterConfig,
    member: Option<&str>,
) -> anyhow::Result<mlsd_node::status::Report> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let report = mlsd_node::status::status(config, None).await;
        let holds = member
            .is_none_or(|m| report.members.iter().any(|r| r.name == m && !r.replicas.is_empty()));
        if report.healthy() && holds && !report.shards.is_empty() {
            return Ok(report);
        }
        anyhow::ensure!(Instant::now() < deadline, "the cluster was not whole within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The bytes of every file under `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}
