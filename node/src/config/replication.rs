//! The `[cluster]` keys of replication: how many replicas and shards, the
//! Raft timings, snapshots, and whether leaderships are spread.

use std::time::Duration;

use super::{ConfigError, RawCluster};

/// How each role's keyspace is sharded and replicated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replication {
    /// `replicas`: voters per shard, default 3 (every node hosting the role
    /// when fewer do).
    pub replicas: u32,
    /// `shards`: shards per role, a power of two, default 4.
    pub shards: u32,
    /// `heartbeat_ms`: how often a leader tells its followers it lives,
    /// default 250; all shards' heartbeats to a peer go in one message.
    pub heartbeat: Duration,
    /// `election_timeout_ms`: how long a follower waits for a heartbeat
    /// before it stands for election (randomized up to 4/3 of this, after
    /// openraft's leader lease of 4/3 of this), default 1500; at least
    /// three heartbeats.
    pub election_timeout: Duration,
    /// `snapshot_logs`: entries after which a shard's replica snapshots its
    /// state and drops the log before it, default 10000 (a replica that
    /// falls further behind catches up by snapshot).
    pub snapshot_logs: u64,
    /// `balance_leaders`: whether a leader hands its shard over to the
    /// shard's best-placed caught-up voter (`shards::balance`), so
    /// leadership (and one node's death) is spread over the nodes. Default
    /// true; off, leadership stays wherever elections put it.
    pub balance_leaders: bool,
    /// `max_moves`: replica moves under way at once in the whole cluster
    /// while it rebalances (a node joined, or leaves), default 2, 1 to 64:
    /// each copies a shard to its new node, so more at once finish sooner
    /// and take more from the clients' share of disk and network.
    pub max_moves: u32,
}

impl Default for Replication {
    fn default() -> Self {
        Replication {
            replicas: 3,
            shards: 4,
            heartbeat: Duration::from_millis(250),
            election_timeout: Duration::from_millis(1500),
            snapshot_logs: 10_000,
            balance_leaders: true,
            max_moves: 2,
        }
    }
}

impl Replication {
    /// The `[cluster]` replication keys, checked.
    pub(super) fn parse(c: &RawCluster) -> Result<Replication, ConfigError> {
        let d = Replication::default();
        let bad = |key, reason: &str| ConfigError::BadSetting { key, reason: reason.into() };
        let replicas = c.replicas.unwrap_or(d.replicas);
        if !(1..=7).contains(&replicas) {
            return Err(bad("cluster.replicas", "must be between 1 and 7"));
        }
        let shards = c.shards.unwrap_or(d.shards);
        if !shards.is_power_of_two() || shards > mlsd_actors::replica::MAX_SHARDS {
            return Err(bad("cluster.shards", "must be a power of two, at most 4096"));
        }
        let heartbeat = c.heartbeat_ms.map_or(d.heartbeat, Duration::from_millis);
        const MAX_ELECTION_TIMEOUT: Duration = Duration::from_secs(60);
        let election_timeout =
            c.election_timeout_ms.map_or(d.election_timeout, Duration::from_millis);
        if heartbeat.is_zero() || election_timeout < heartbeat * 3 {
            return Err(bad(
                "cluster.election_timeout_ms",
                "must be at least three heartbeats (cluster.heartbeat_ms, positive)",
            ));
        }
        // Longer, a dead leader's shards wait that long for a new one.
        if election_timeout > MAX_ELECTION_TIMEOUT {
            return Err(bad("cluster.election_timeout_ms", "must be at most 60000"));
        }
        let snapshot_logs = c.snapshot_logs.unwrap_or(d.snapshot_logs);
        if snapshot_logs == 0 {
            return Err(bad("cluster.snapshot_logs", "must be positive"));
        }
        let balance_leaders = c.balance_leaders.unwrap_or(d.balance_leaders);
        let max_moves = c.max_moves.unwrap_or(d.max_moves);
        if !(1..=64).contains(&max_moves) {
            return Err(bad("cluster.max_moves", "must be between 1 and 64"));
        }
        Ok(Replication {
            replicas,
            shards,
            heartbeat,
            election_timeout,
            snapshot_logs,
            balance_leaders,
            max_moves,
        })
    }
}
