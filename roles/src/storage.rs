//! Node storage as the roles see it: a small key-value trait they program
//! against, and the in-memory store their tests (and the simulation) use.
//! The RocksDB store behind it in production is `mlsd_actors::storage`.
//!
//! One RocksDB instance per node, one column family per role (plus `meta` for
//! the node itself), so a role's keys never collide with another's and a
//! role's data can later be moved as a unit. A [`Batch`] is applied atomically;
//! with `sync` on (the default) it is durable in the WAL before `write`
//! returns, which is what lets a reply acknowledge a state change.

use mlsd_transport::Role;

mod mem;
pub use mem::MemStore;

/// A keyspace: one per role, one for node metadata, and one for the Raft
/// logs and state of the shards this node replicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Space {
    /// Data of one role.
    Role(Role),
    /// Node-level metadata (format version, node name).
    Meta,
    /// Raft logs, votes and applied state, keyed by shard
    /// (`mlsd_actors::replica`).
    Raft,
}

impl Space {
    /// Column family name.
    pub fn name(self) -> &'static str {
        match self {
            Space::Role(r) => r.name(),
            Space::Meta => "meta",
            Space::Raft => "raft",
        }
    }

    /// Every keyspace of a node.
    pub fn all() -> impl Iterator<Item = Space> {
        Role::ALL.into_iter().map(Space::Role).chain([Space::Meta, Space::Raft])
    }
}

/// Why a storage operation failed. Roles answer `Internal` and change nothing
/// else, since a failed batch is not applied at all.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database reported an error (I/O, corruption, lock held by another process).
    #[error("storage: {0}")]
    Db(String),
}

/// Seconds in a retention week.
pub const WEEK_SECS: u64 = 7 * 24 * 3600;

/// Weeks since 1970 of a Unix time in seconds. Records that expire are kept
/// in per-week buckets (keys starting with [`week_prefix`]) so that a role
/// drops a whole past week with one range delete instead of tracking each.
pub fn week(unix_secs: u64) -> u32 {
    (unix_secs / WEEK_SECS).min(u64::from(u32::MAX)) as u32
}

/// `tag` then `week` big-endian: the prefix of one week's bucket; buckets sort
/// by week, so `[week_prefix(tag, 0), week_prefix(tag, w))` is every week
/// before `w`.
pub fn week_prefix(tag: &[u8], week: u32) -> Vec<u8> {
    let mut k = tag.to_vec();
    k.extend_from_slice(&week.to_be_bytes());
    k
}

/// Adds to `batch` one range delete of every bucket of `tag` before `week`,
/// if any exists: a range tombstone costs every later lookup in its memtable
/// a little, so none is written for nothing.
pub fn drop_weeks_before(
    store: &dyn View,
    space: Space,
    tag: &[u8],
    week: u32,
    batch: &mut Batch,
) -> Result<(), StoreError> {
    let keep = week_prefix(tag, week);
    let oldest = store.scan_from(space, tag, &week_prefix(tag, 0), 1)?;
    if oldest.first().is_some_and(|(k, _)| *k < keep) {
        batch.delete_range(space, week_prefix(tag, 0), keep);
    }
    Ok(())
}

/// Key-value pairs returned by scans, in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// One write operation of a [`Batch`]. Batches are what a shard's Raft log
/// carries (decision D13), so they serialize; byte fields as one copy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Op {
    /// Set `key` to `value`.
    Put {
        /// Keyspace.
        space: Space,
        /// Key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// Value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Remove `key`.
    Delete {
        /// Keyspace.
        space: Space,
        /// Key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// Remove every key in `[from, to)`: one tombstone however many keys
    /// (RocksDB's range delete), for dropping expired records wholesale.
    DeleteRange {
        /// Keyspace.
        space: Space,
        /// First key removed.
        #[serde(with = "serde_bytes")]
        from: Vec<u8>,
        /// First key kept.
        #[serde(with = "serde_bytes")]
        to: Vec<u8>,
    },
}

/// Writes applied all together or not at all.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Batch {
    /// The operations, in order.
    pub ops: Vec<Op>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a put.
    pub fn put(&mut self, space: Space, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(Op::Put { space, key: key.into(), value: value.into() });
    }
    /// Adds a delete.
    pub fn delete(&mut self, space: Space, key: impl Into<Vec<u8>>) {
        self.ops.push(Op::Delete { space, key: key.into() });
    }
    /// Adds a delete of every key in `[from, to)`.
    pub fn delete_range(&mut self, space: Space, from: Vec<u8>, to: Vec<u8>) {
        self.ops.push(Op::DeleteRange { space, from, to });
    }
    /// Adds a delete of every key that starts with `prefix` (one range
    /// tombstone), whatever its last bytes: shard 255's prefix ends in 0xff.
    pub fn delete_prefix(&mut self, space: Space, prefix: Vec<u8>) {
        let end = prefix_end(&prefix);
        self.delete_range(space, prefix, end);
    }
}

/// The first key after every key that starts with `prefix`: the prefix
/// without its trailing 0xff bytes, its last byte incremented. A prefix of
/// only 0xff bytes (or none) has no such key; the end returned then is
/// past every key shorter than [`MAX_KEY_SCAN`] bytes, which all of ours are.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xff; MAX_KEY_SCAN]
}

/// Longest key a prefix delete of an all-0xff prefix is sure to reach.
pub const MAX_KEY_SCAN: usize = 4096;

/// What role logic may read: a view of the node's storage. Logic gets only
/// this, never the means to write; it returns its writes as a [`Batch`] and
/// its host applies them (later: proposes them to the shard's replicas).
pub trait View: Send + Sync {
    /// Reads one value.
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Up to `limit` entries whose key starts with `prefix`, in key order.
    fn scan_prefix(
        &self,
        space: Space,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Entries, StoreError> {
        self.scan_from(space, prefix, prefix, limit)
    }
    /// Up to `limit` entries whose key starts with `prefix` and is at least
    /// `start`, in key order.
    fn scan_from(
        &self,
        space: Space,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<Entries, StoreError>;
}

/// A node's storage: a [`View`] that hosts can also write. Implemented by
/// `mlsd_actors::RocksStore` and by [`MemStore`]; the
/// trait keeps RocksDB out of the state machines.
pub trait Store: View + 'static {
    /// Applies `batch` atomically (durably when the store syncs).
    fn write(&self, batch: Batch) -> Result<(), StoreError>;

    /// Applies `batch` atomically without waiting for the disk. It survives
    /// a process kill at once, and a power loss from the next synced write
    /// on (the WAL is one sequence: syncing it covers everything before).
    /// For writes that can be redone from something already durable, such
    /// as a shard's applied entries, which its synced log still holds: one
    /// fsync per batch instead of two.
    fn write_unsynced(&self, batch: Batch) -> Result<(), StoreError> {
        self.write(batch)
    }

    /// Whether a write may wait on a disk (a synced RocksDB write does):
    /// async callers then run it on the blocking pool, so that a slow disk
    /// does not hold up a runtime worker and the heartbeats and leadership
    /// checks on it. In-memory stores (the shard simulation's, whose one
    /// thread must stay deterministic) answer no and are written inline.
    fn blocks(&self) -> bool {
        false
    }

    /// Applies `batch` atomically and durably, whatever the node's
    /// `sync_wal` says: Raft's log and vote, which openraft's storage
    /// contract requires on disk before it is told they are (a vote or an
    /// entry forgotten in a power loss can elect two leaders in one term or
    /// lose a committed write).
    fn write_synced(&self, batch: Batch) -> Result<(), StoreError> {
        self.write(batch)
    }

    /// Runs `read` on the store as it is at this instant: writes made while
    /// it runs are not seen (a RocksDB snapshot). What a shard snapshot is
    /// built from, so that it holds one state, never half of an install.
    fn read_at_once(
        &self,
        read: &mut dyn FnMut(&dyn View) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;
}
