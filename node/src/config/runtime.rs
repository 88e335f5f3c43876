//! The one-key tables of how a node runs: `[storage]`, `[chaos]` and
//! `[supervision]`, each a typed section with its key's meaning and default.

use serde::Deserialize;

use super::check::positive;
use super::ConfigError;

/// `[storage]`: how the node's RocksDB store writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageConfig {
    /// `sync_wal`: writes that a reply acknowledges wait for the WAL to be
    /// synced (default on). Off, a host crash may lose acknowledged writes
    /// that no other replica holds yet.
    pub sync_wal: bool,
}

impl StorageConfig {
    /// The `[storage]` table.
    pub(super) fn parse(t: &RawStorage) -> StorageConfig {
        StorageConfig { sync_wal: t.sync_wal.unwrap_or(true) }
    }
}

/// `[chaos]`: fault injection for chaos tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChaosConfig {
    /// `allow`: accept chaos requests (kill actors) from the holder of the
    /// operator certificate. Off by default; only for chaos tests.
    pub allow: bool,
}

impl ChaosConfig {
    /// The `[chaos]` table.
    pub(super) fn parse(t: &RawChaos) -> ChaosConfig {
        ChaosConfig { allow: t.allow.unwrap_or(false) }
    }
}

/// `[supervision]`: how the node supervisor treats failing role actors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SupervisionConfig {
    /// `max_restarts`: restarts of one role actor tolerated within 30 s
    /// before the node stops (default 10; zero is refused, as it would stop
    /// the node at the first failure it could have restarted from).
    pub max_restarts: usize,
}

impl SupervisionConfig {
    /// The checked `[supervision]` table.
    pub(super) fn parse(t: &RawSupervision) -> Result<SupervisionConfig, ConfigError> {
        let n = positive("supervision.max_restarts", t.max_restarts.map(u64::from), 10)?;
        Ok(SupervisionConfig { max_restarts: n as usize })
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStorage {
    sync_wal: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawChaos {
    allow: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSupervision {
    max_restarts: Option<u32>,
}
