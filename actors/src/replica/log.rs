//! One shard's Raft log, vote and log state, in the node's `raft` column
//! family under the shard's prefix. Every write is one atomic batch, synced
//! whatever `storage.sync_wal` says (openraft's contract: an entry or vote
//! reported flushed survives a kill or a power loss).
//!
//! Keys, after the shard's three-byte prefix: `l` + index (big-endian) for
//! each entry, `v` for the vote, `s` for the log state (last purged and last
//! present log id, kept beside the entries so that the last one is found
//! without a reverse scan).

// openraft's storage traits return its `StorageError` (over 200 bytes), and
// the helpers here hand theirs straight through.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use mlsd_transport::codec;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    Entry, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader, StorageError, Vote,
};
use serde::{Deserialize, Serialize};

use super::{io_err, NodeId, ShardConfig, ShardId};
use crate::storage::{Batch, Space, Store};

/// Entries read per scan when openraft asks for a range.
const READ_PAGE: usize = 256;

/// The Raft log of one shard.
#[derive(Clone)]
pub struct ShardLog {
    store: Arc<dyn Store>,
    shard: ShardId,
}

/// What `s` holds.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
struct Bounds {
    purged: Option<LogId<NodeId>>,
    last: Option<LogId<NodeId>>,
}

impl ShardLog {
    /// The log of `shard` in `store`.
    pub fn new(store: Arc<dyn Store>, shard: ShardId) -> Self {
        ShardLog { store, shard }
    }

    fn key(&self, tag: u8, rest: &[u8]) -> Vec<u8> {
        [&self.shard.raft_prefix()[..], &[tag], rest].concat()
    }

    fn entry_key(&self, index: u64) -> Vec<u8> {
        self.key(b'l', &index.to_be_bytes())
    }

    fn read<T: serde::de::DeserializeOwned>(
        &self,
        tag: u8,
        subject: ErrorSubject<NodeId>,
    ) -> Result<Option<T>, StorageError<NodeId>> {
        let v = self
            .store
            .get(Space::Raft, &self.key(tag, &[]))
            .map_err(|e| io_err(subject.clone(), ErrorVerb::Read, e))?;
        v.map(|v| codec::decode(&v).map_err(|e| io_err(subject, ErrorVerb::Read, e))).transpose()
    }

    fn bounds(&self) -> Result<Bounds, StorageError<NodeId>> {
        Ok(self.read(b's', ErrorSubject::Logs)?.unwrap_or_default())
    }

    /// The id of the last entry this replica holds (the last purged one when
    /// the log is empty after a snapshot): what it tells a peer rebuilding
    /// after losing its disk, which may have helped commit any entry up to
    /// it, applied here or not.
    pub fn last_log_id(&self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        let b = self.bounds()?;
        Ok(b.last.or(b.purged))
    }

    /// Writes `b` synced, on the blocking pool when the store waits on a
    /// disk ([`Store::blocks`]).
    async fn write(
        &self,
        b: Batch,
        subject: ErrorSubject<NodeId>,
    ) -> Result<(), StorageError<NodeId>> {
        let r = if self.store.blocks() {
            let store = self.store.clone();
            tokio::task::spawn_blocking(move || store.write_synced(b))
                .await
                .unwrap_or_else(|e| Err(crate::storage::StoreError::Db(e.to_string())))
        } else {
            self.store.write_synced(b)
        };
        r.map_err(|e| io_err(subject, ErrorVerb::Write, e))
    }

    fn put_bounds(&self, b: &mut Batch, bounds: Bounds) -> Result<(), StorageError<NodeId>> {
        let v =
            codec::encode(&bounds).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        b.put(Space::Raft, self.key(b's', &[]), v);
        Ok(())
    }

    /// Appends `entry` and records `vote` in one synced write, outside
    /// openraft (its node stopped): what [`super::unsafe_recovery`] does.
    pub fn force_append(
        &self,
        entry: Entry<ShardConfig>,
        vote: Vote<NodeId>,
    ) -> Result<(), StorageError<NodeId>> {
        let mut bounds = self.bounds()?;
        let mut b = Batch::new();
        let e =
            codec::encode(&entry).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        b.put(Space::Raft, self.entry_key(entry.log_id.index), e);
        bounds.last = Some(entry.log_id);
        self.put_bounds(&mut b, bounds)?;
        let v =
            codec::encode(&vote).map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        b.put(Space::Raft, self.key(b'v', &[]), v);
        self.store.write_synced(b).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))
    }

    /// Removes the whole log, vote and state of the shard (a replica that
    /// is dropped for good).
    pub fn wipe(&self, b: &mut Batch) {
        b.delete_prefix(Space::Raft, self.shard.raft_prefix().to_vec());
    }
}

impl RaftLogReader<ShardConfig> for ShardLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<ShardConfig>>, StorageError<NodeId>> {
        let mut next = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let prefix = self.key(b'l', &[]);
        let mut out = Vec::new();
        loop {
            let rows = self
                .store
                .scan_from(Space::Raft, &prefix, &self.entry_key(next), READ_PAGE)
                .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            let n = rows.len();
            for (k, v) in rows {
                let index = u64::from_be_bytes(
                    k[prefix.len()..]
                        .try_into()
                        .map_err(|_| io_err(ErrorSubject::Logs, ErrorVerb::Read, "bad log key"))?,
                );
                if !range.contains(&index) {
                    return Ok(out);
                }
                let e: Entry<ShardConfig> = codec::decode(&v)
                    .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
                out.push(e);
                next = index + 1;
            }
            if n < READ_PAGE {
                return Ok(out);
            }
        }
    }

    /// What a leader sends a follower after `prev_log_id = start - 1`:
    /// entries consecutive from `start`, ending at the first missing one,
    /// and none when `start` itself is gone. (`try_get_log_entries` may skip
    /// missing entries, as openraft's readers of the membership expect; an
    /// append whose entries do not follow its `prev_log_id` would stop a
    /// follower on openraft's debug assertion, and in a release build
    /// append them after a hole. openraft 0.9's replication can ask for
    /// entries it has already let be purged: see docs/decisions.md D13.)
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry<ShardConfig>>, StorageError<NodeId>> {
        let mut out = self.try_get_log_entries(start..end).await?;
        let consecutive = out.iter().zip(start..).take_while(|(e, i)| e.log_id.index == *i).count();
        out.truncate(consecutive);
        Ok(out)
    }
}

impl RaftLogStorage<ShardConfig> for ShardLog {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<ShardConfig>, StorageError<NodeId>> {
        let b = self.bounds()?;
        Ok(LogState { last_purged_log_id: b.purged, last_log_id: b.last.or(b.purged) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let v = codec::encode(vote).map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        let mut b = Batch::new();
        b.put(Space::Raft, self.key(b'v', &[]), v);
        self.write(b, ErrorSubject::Vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.read(b'v', ErrorSubject::Vote)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<ShardConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<ShardConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut bounds = self.bounds()?;
        let mut b = Batch::new();
        for e in entries {
            let v =
                codec::encode(&e).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
            b.put(Space::Raft, self.entry_key(e.log_id.index), v);
            bounds.last = Some(e.log_id);
        }
        self.put_bounds(&mut b, bounds)?;
        let r = self.write(b, ErrorSubject::Logs).await;
        callback.log_io_completed(match &r {
            Ok(()) => Ok(()),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        });
        r
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        // Entries from `log_id.index` on go; the one before becomes the last.
        let mut bounds = self.bounds()?;
        let mut b = Batch::new();
        b.delete_range(Space::Raft, self.entry_key(log_id.index), self.entry_key(u64::MAX));
        let before = match log_id.index.checked_sub(1) {
            Some(i) => {
                let mut me = self.clone();
                me.try_get_log_entries(i..=i).await?.pop().map(|e| e.log_id)
            }
            None => None,
        };
        bounds.last = before.or(bounds.purged);
        self.put_bounds(&mut b, bounds)?;
        self.write(b, ErrorSubject::Logs).await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut bounds = self.bounds()?;
        let mut b = Batch::new();
        b.delete_range(Space::Raft, self.entry_key(0), self.entry_key(log_id.index + 1));
        bounds.purged = Some(log_id);
        if bounds.last.is_none_or(|l| l.index < log_id.index) {
            bounds.last = Some(log_id);
        }
        self.put_bounds(&mut b, bounds)?;
        self.write(b, ErrorSubject::Logs).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use openraft::CommittedLeaderId;

    use super::*;
    use crate::storage::{Entries, MemStore, StoreError, View};
    use mlsd_transport::Role;

    /// A store opened with `sync_wal = false`, recording how each write was
    /// asked for.
    #[derive(Default)]
    struct Unsynced {
        inner: MemStore,
        calls: Mutex<Vec<&'static str>>,
    }

    impl View for Unsynced {
        fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.get(space, key)
        }
        fn scan_from(
            &self,
            space: Space,
            prefix: &[u8],
            start: &[u8],
            limit: usize,
        ) -> Result<Entries, StoreError> {
            self.inner.scan_from(space, prefix, start, limit)
        }
    }

    impl Store for Unsynced {
        fn read_at_once(
            &self,
            read: &mut dyn FnMut(&dyn View) -> Result<(), StoreError>,
        ) -> Result<(), StoreError> {
            self.inner.read_at_once(read)
        }
        fn write(&self, batch: Batch) -> Result<(), StoreError> {
            self.calls.lock().unwrap().push("as the node syncs");
            self.inner.write(batch)
        }
        fn write_synced(&self, batch: Batch) -> Result<(), StoreError> {
            self.calls.lock().unwrap().push("synced");
            self.inner.write(batch)
        }
    }

    #[tokio::test]
    async fn the_vote_and_log_are_synced_even_when_the_node_does_not_sync() {
        let store = Arc::new(Unsynced::default());
        let mut log = ShardLog::new(store.clone(), ShardId { role: Role::Ids, index: 1 });
        log.save_vote(&Vote::new(3, 1)).await.unwrap();
        log.truncate(LogId::new(CommittedLeaderId::new(3, 1), 5)).await.unwrap();
        log.purge(LogId::new(CommittedLeaderId::new(3, 1), 2)).await.unwrap();
        assert_eq!(*store.calls.lock().unwrap(), ["synced"; 3]);
        assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(3, 1)));
    }

    fn entry(index: u64) -> Entry<ShardConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(2, 1), index),
            payload: openraft::EntryPayload::Blank,
        }
    }

    /// What a leader sends never skips a missing entry: it starts at the
    /// start asked for and has no hole, or is empty. Other reads return
    /// the entries present in the range.
    #[tokio::test]
    async fn a_read_to_send_never_skips_purged_or_missing_entries() {
        let store = Arc::new(MemStore::default());
        let mut log = ShardLog::new(store.clone(), ShardId { role: Role::Ids, index: 1 });
        let mut b = Batch::new();
        for i in [1, 2, 3, 4, 6, 7] {
            b.put(Space::Raft, log.entry_key(i), codec::encode(&entry(i)).unwrap());
        }
        store.write(b).unwrap();
        let indexes = |v: Vec<Entry<ShardConfig>>| -> Vec<u64> {
            v.into_iter().map(|e| e.log_id.index).collect()
        };
        assert_eq!(indexes(log.limited_get_log_entries(2, 8).await.unwrap()), [2, 3, 4]);
        assert_eq!(indexes(log.limited_get_log_entries(6, 8).await.unwrap()), [6, 7]);
        assert_eq!(indexes(log.try_get_log_entries(2..8).await.unwrap()), [2, 3, 4, 6, 7]);
        log.purge(LogId::new(CommittedLeaderId::new(2, 1), 3)).await.unwrap();
        assert!(log.limited_get_log_entries(2, 8).await.unwrap().is_empty());
        assert!(log.limited_get_log_entries(5, 8).await.unwrap().is_empty());
        assert_eq!(indexes(log.limited_get_log_entries(4, 8).await.unwrap()), [4]);
        assert_eq!(indexes(log.try_get_log_entries(0..8).await.unwrap()), [4, 6, 7]);
    }
}
