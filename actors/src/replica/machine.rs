//! One shard's state machine: committed write batches applied to the
//! node's storage under the shard's key prefix, and snapshots of the shard
//! as files.
//!
//! Applying a run of entries is one atomic write: the batches, with the
//! applied log id and membership beside them (`a` in the `raft` column
//! family), so a replica killed at any point restarts with its state and
//! its applied index in agreement. It is not synced: the log the entries
//! came from is, so one fsync per batch of proposals covers both.
//!
//! A snapshot is every key of the shard, streamed from storage to a file
//! (length-prefixed keys and values) and from the file to a replica that
//! fell behind or is new; no shard is ever held in memory. It is built while
//! entries go on being applied, from a point-in-time view of the store
//! ([`Store::read_at_once`]): its keys and its log id are of one instant.
//! Building and installing exclude each other, so a snapshot never holds
//! half of an install, and a snapshot never replaces a newer one's record.

// openraft's storage traits return its `StorageError` (over 200 bytes), and
// the helpers here hand theirs straight through.
#![allow(clippy::result_large_err)]

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mlsd_transport::codec;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt, BufReader};

use super::file::SnapshotFile;
use super::view::prefixed;
use super::{io_err, Applied, Member, NodeId, ShardConfig, ShardId};
use crate::storage::{Batch, Space, Store, View};

/// Keys read per page while building a snapshot.
const SCAN_PAGE: usize = 512;
/// Bytes of keys and values written per batch while installing one.
const INSTALL_BATCH: usize = 1 << 20;
/// Longest key or value a snapshot file may hold (a frame's worth).
const MAX_RECORD: u32 = 64 << 20;

type Meta = SnapshotMeta<NodeId, Member>;
type Membership = StoredMembership<NodeId, Member>;

/// What `a` holds: the last applied log id and the membership in force.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct AppliedState {
    last: Option<LogId<NodeId>>,
    membership: Membership,
}

/// What `n` holds: the current snapshot's meta and file name.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Current {
    meta: Meta,
    file: String,
}

/// The state machine of one shard on this node.
pub struct ShardMachine {
    store: Arc<dyn Store>,
    shard: ShardId,
    dir: PathBuf,
    /// The file a snapshot from the leader is being received into.
    receiving: Option<PathBuf>,
    /// Held while a snapshot is built or installed: never both at once.
    snapshots: Arc<tokio::sync::Mutex<()>>,
}

fn sm_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError<NodeId> {
    io_err(ErrorSubject::StateMachine, verb, e)
}

fn snap_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError<NodeId> {
    io_err(ErrorSubject::Snapshot(None), verb, e)
}

impl ShardMachine {
    /// The state machine of `shard`, with snapshot files in `dir`. An
    /// install that a kill interrupted is finished first.
    pub async fn open(
        store: Arc<dyn Store>,
        shard: ShardId,
        dir: &Path,
    ) -> Result<Self, StorageError<NodeId>> {
        std::fs::create_dir_all(dir).map_err(|e| snap_err(ErrorVerb::Write, e))?;
        let mut m = ShardMachine {
            store,
            shard,
            dir: dir.to_path_buf(),
            receiving: None,
            snapshots: Arc::default(),
        };
        if let Some((meta, file)) = m.get::<(Meta, String)>(b'i')? {
            let path = m.dir.join(&file);
            tracing::warn!(%shard, "finishing a snapshot install that was interrupted");
            let f = SnapshotFile::open(&path).map_err(|e| snap_err(ErrorVerb::Read, e))?;
            m.install(&meta, f, &path).await?;
        }
        Ok(m)
    }

    fn key(&self, tag: u8) -> Vec<u8> {
        [&self.shard.raft_prefix()[..], &[tag]].concat()
    }

    fn get<T: serde::de::DeserializeOwned>(
        &self,
        tag: u8,
    ) -> Result<Option<T>, StorageError<NodeId>> {
        let v =
            self.store.get(Space::Raft, &self.key(tag)).map_err(|e| sm_err(ErrorVerb::Read, e))?;
        v.map(|v| codec::decode(&v).map_err(|e| sm_err(ErrorVerb::Read, e))).transpose()
    }

    fn put<T: Serialize>(&self, b: &mut Batch, tag: u8, v: &T) -> Result<(), StorageError<NodeId>> {
        let v = codec::encode(v).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        b.put(Space::Raft, self.key(tag), v);
        Ok(())
    }

    fn write(&self, b: Batch) -> Result<(), StorageError<NodeId>> {
        self.store.write(b).map_err(|e| sm_err(ErrorVerb::Write, e))
    }

    fn applied(&self) -> Result<AppliedState, StorageError<NodeId>> {
        Ok(self.get(b'a')?.unwrap_or_default())
    }

    /// The current snapshot's record, if any.
    fn current(&self) -> Result<Option<Current>, StorageError<NodeId>> {
        self.get(b'n')
    }

    /// Removes the shard's data, applied state and snapshot record from
    /// `b`'s target, for a replica dropped for good.
    pub fn wipe(&self, b: &mut Batch) {
        b.delete_prefix(Space::Role(self.shard.role), self.shard.data_prefix().to_vec());
    }

    fn file_name(&self, what: &str) -> String {
        let r: u64 = rand::random();
        format!("{}-{}-{what}-{r:016x}.snap", self.shard.role, self.shard.index)
    }

    /// Makes `path` (holding `meta`'s data) the current snapshot, and
    /// removes the file of the one before.
    fn set_current(
        &self,
        b: &mut Batch,
        meta: &Meta,
        path: &Path,
    ) -> Result<Option<PathBuf>, StorageError<NodeId>> {
        let old = self.current()?.map(|c| self.dir.join(c.file));
        let file = path
            .file_name()
            .and_then(|f| f.to_str())
            .ok_or_else(|| snap_err(ErrorVerb::Write, "snapshot file name"))?
            .to_string();
        self.put(b, b'n', &Current { meta: meta.clone(), file })?;
        Ok(old.filter(|o| o != path))
    }

    /// Replaces the shard's data by the snapshot in `file`: the shard is
    /// emptied and marked installing in one write, filled in batches, and
    /// given the snapshot's applied state in the last write.
    async fn install(
        &mut self,
        meta: &Meta,
        file: SnapshotFile,
        path: &Path,
    ) -> Result<(), StorageError<NodeId>> {
        let space = Space::Role(self.shard.role);
        let name = path.file_name().and_then(|f| f.to_str()).unwrap_or_default().to_string();
        let mut b = Batch::new();
        self.wipe(&mut b);
        b.delete(Space::Raft, self.key(b'a'));
        self.put(&mut b, b'i', &(meta.clone(), name))?;
        self.write(b)?;

        let mut r = BufReader::new(file);
        r.seek(SeekFrom::Start(0)).await.map_err(|e| snap_err(ErrorVerb::Read, e))?;
        let mut b = Batch::new();
        let mut bytes = 0usize;
        while let Some(key) = read_record(&mut r).await? {
            let value = read_record(&mut r)
                .await?
                .ok_or_else(|| snap_err(ErrorVerb::Read, "snapshot ends inside a record"))?;
            bytes += key.len() + value.len();
            b.put(space, key, value);
            if bytes >= INSTALL_BATCH {
                self.write(prefixed(self.shard, std::mem::take(&mut b)))?;
                bytes = 0;
            }
        }
        let mut last = prefixed(self.shard, b);
        let st = AppliedState { last: meta.last_log_id, membership: meta.last_membership.clone() };
        self.put(&mut last, b'a', &st)?;
        let old = self.set_current(&mut last, meta, path)?;
        last.delete(Space::Raft, self.key(b'i'));
        self.write(last)?;
        if let Some(old) = old {
            let _ = std::fs::remove_file(old);
        }
        tracing::info!(shard = %self.shard, last = ?meta.last_log_id, "snapshot installed");
        Ok(())
    }
}

/// One length-prefixed field of a snapshot file; `None` at its end.
async fn read_record<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
) -> Result<Option<Vec<u8>>, StorageError<NodeId>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(snap_err(ErrorVerb::Read, e)),
    }
    let len = u32::from_be_bytes(len);
    if len > MAX_RECORD {
        return Err(snap_err(ErrorVerb::Read, "snapshot record too long"));
    }
    let mut v = vec![0u8; len as usize];
    r.read_exact(&mut v).await.map_err(|e| snap_err(ErrorVerb::Read, e))?;
    Ok(Some(v))
}

/// Builds snapshots of one shard (a handle beside the state machine, so
/// building does not stop applying).
pub struct ShardSnapshotter {
    m: ShardMachine,
}

/// Writes every key of `shard` in `view`, with the applied state beside
/// them, to `w`; returns that applied state.
fn write_snapshot(
    view: &dyn View,
    shard: ShardId,
    w: &mut impl std::io::Write,
) -> Result<AppliedState, crate::storage::StoreError> {
    use crate::storage::StoreError;
    let io = |e: std::io::Error| StoreError::Db(format!("snapshot file: {e}"));
    let key = [&shard.raft_prefix()[..], b"a"].concat();
    let st = match view.get(Space::Raft, &key)? {
        Some(v) => codec::decode(&v).map_err(|e| StoreError::Db(e.to_string()))?,
        None => AppliedState::default(),
    };
    let prefix = shard.data_prefix();
    let space = Space::Role(shard.role);
    let mut start = prefix.to_vec();
    loop {
        let rows = view.scan_from(space, &prefix, &start, SCAN_PAGE)?;
        let n = rows.len();
        for (k, v) in rows {
            for field in [&k[prefix.len()..], &v[..]] {
                w.write_all(&(field.len() as u32).to_be_bytes()).map_err(io)?;
                w.write_all(field).map_err(io)?;
            }
            start = [&k[..], &[0]].concat();
        }
        if n < SCAN_PAGE {
            break;
        }
    }
    w.flush().map_err(io)?;
    Ok(st)
}

impl RaftSnapshotBuilder<ShardConfig> for ShardSnapshotter {
    async fn build_snapshot(&mut self) -> Result<Snapshot<ShardConfig>, StorageError<NodeId>> {
        let m = &self.m;
        let _alone = m.snapshots.clone().lock_owned().await;
        let path = m.dir.join(m.file_name("built"));
        // Reading the whole shard, writing and syncing the file: disk work,
        // done on the blocking pool when the store waits on a disk.
        let (store, shard, dir, file) = (m.store.clone(), m.shard, m.dir.clone(), path.clone());
        let write = move || -> Result<AppliedState, StorageError<NodeId>> {
            let f = std::fs::File::create(&file).map_err(|e| snap_err(ErrorVerb::Write, e))?;
            let mut w = std::io::BufWriter::new(f);
            let mut st = AppliedState::default();
            store
                .read_at_once(&mut |view| {
                    st = write_snapshot(view, shard, &mut w)?;
                    Ok(())
                })
                .map_err(|e| sm_err(ErrorVerb::Read, e))?;
            let f =
                w.into_inner().map_err(|e| snap_err(ErrorVerb::Write, e.error().to_string()))?;
            f.sync_all().map_err(|e| snap_err(ErrorVerb::Write, e))?;
            super::file::sync_dir(&dir).map_err(|e| snap_err(ErrorVerb::Write, e))?;
            Ok(st)
        };
        let st = if m.store.blocks() {
            tokio::task::spawn_blocking(write)
                .await
                .map_err(|e| snap_err(ErrorVerb::Write, e))??
        } else {
            write()?
        };
        if let Some(c) = m.current()?.filter(|c| c.meta.last_log_id > st.last) {
            // A newer snapshot (installed meanwhile) stays current.
            let _ = std::fs::remove_file(&path);
            let f = SnapshotFile::open(&m.dir.join(&c.file))
                .map_err(|e| snap_err(ErrorVerb::Read, e))?;
            return Ok(Snapshot { meta: c.meta, snapshot: Box::new(f) });
        }
        let id = match st.last {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, path.display()),
            None => format!("empty-{}", path.display()),
        };
        let meta = Meta { last_log_id: st.last, last_membership: st.membership, snapshot_id: id };
        let mut b = Batch::new();
        let old = m.set_current(&mut b, &meta, &path)?;
        m.write(b)?;
        if let Some(old) = old {
            let _ = std::fs::remove_file(old);
        }
        let f = SnapshotFile::open(&path).map_err(|e| snap_err(ErrorVerb::Read, e))?;
        Ok(Snapshot { meta, snapshot: Box::new(f) })
    }
}

impl RaftStateMachine<ShardConfig> for ShardMachine {
    type SnapshotBuilder = ShardSnapshotter;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, Membership), StorageError<NodeId>> {
        let st = self.applied()?;
        Ok((st.last, st.membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<ShardConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut st = self.applied()?;
        let mut b = Batch::new();
        let mut out = Vec::new();
        for e in entries {
            st.last = Some(e.log_id);
            out.push(match e.payload {
                EntryPayload::Blank => Applied { written: true },
                EntryPayload::Normal(w) => {
                    let current = w.term == e.log_id.leader_id.term;
                    if current {
                        b.ops.extend(prefixed(self.shard, w.batch).ops);
                    }
                    Applied { written: current }
                }
                EntryPayload::Membership(m) => {
                    st.membership = StoredMembership::new(Some(e.log_id), m);
                    Applied { written: true }
                }
            });
        }
        self.put(&mut b, b'a', &st)?;
        // Unsynced: the entries are durable in the log, which keeps them
        // until a snapshot covers them, and that snapshot's synced write
        // makes this one durable too. After a power loss the replica
        // restarts at an older applied index and applies them again.
        self.store.write_unsynced(b).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        ShardSnapshotter {
            m: ShardMachine {
                store: self.store.clone(),
                shard: self.shard,
                dir: self.dir.clone(),
                receiving: None,
                snapshots: self.snapshots.clone(),
            },
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<SnapshotFile>, StorageError<NodeId>> {
        if let Some(old) = self.receiving.take() {
            let _ = std::fs::remove_file(old);
        }
        let path = self.dir.join(self.file_name("received"));
        let f = SnapshotFile::create_new(&path).map_err(|e| snap_err(ErrorVerb::Write, e))?;
        self.receiving = Some(path);
        Ok(Box::new(f))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<SnapshotFile>,
    ) -> Result<(), StorageError<NodeId>> {
        let path = self
            .receiving
            .take()
            .ok_or_else(|| snap_err(ErrorVerb::Write, "no snapshot was being received"))?;
        let f = *snapshot;
        let _alone = self.snapshots.clone().lock_owned().await;
        // The install marker names the file: the file's name must be as
        // durable as the marker before it is written.
        let dir = self.dir.clone();
        let sync = move || -> Result<SnapshotFile, StorageError<NodeId>> {
            f.sync_all().map_err(|e| snap_err(ErrorVerb::Write, e))?;
            super::file::sync_dir(&dir).map_err(|e| snap_err(ErrorVerb::Write, e))?;
            Ok(f)
        };
        let f = if self.store.blocks() {
            tokio::task::spawn_blocking(sync).await.map_err(|e| snap_err(ErrorVerb::Write, e))??
        } else {
            sync()?
        };
        self.install(meta, f, &path).await
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<ShardConfig>>, StorageError<NodeId>> {
        let Some(c) = self.current()? else { return Ok(None) };
        match SnapshotFile::open(&self.dir.join(&c.file)) {
            Ok(f) => Ok(Some(Snapshot { meta: c.meta, snapshot: Box::new(f) })),
            // A data dir copied without its snapshot files: openraft builds one.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(snap_err(ErrorVerb::Read, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::replica::{ShardView, ShardWrite};
    use crate::storage::MemStore;
    use mlsd_transport::Role;

    fn entry(index: u64, batch: Batch) -> Entry<ShardConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(ShardWrite { term: 1, batch }),
        }
    }

    /// Sends `snap` to `to` and installs it there, as openraft does.
    async fn send(snap: Snapshot<ShardConfig>, to: &mut ShardMachine) {
        let mut into = to.begin_receiving_snapshot().await.unwrap();
        let mut from = *snap.snapshot;
        let mut bytes = Vec::new();
        from.seek(SeekFrom::Start(0)).await.unwrap();
        from.read_to_end(&mut bytes).await.unwrap();
        into.write_all(&bytes).await.unwrap();
        into.flush().await.unwrap();
        to.install_snapshot(&snap.meta, into).await.unwrap();
    }

    fn keys(store: &Arc<dyn Store>, shard: ShardId) -> Vec<(Vec<u8>, Vec<u8>)> {
        let view = ShardView { store: store.clone(), shard };
        view.scan_prefix(Space::Role(shard.role), &[], 100).unwrap()
    }

    /// Shard 255's prefixes end in 0xff (`[0x00, 0xff]` for its data,
    /// `[role, 0x00, 0xff]` in the raft family): a snapshot install empties
    /// exactly that shard, and leaves shard 256 (`[0x01, 0x00]`) alone.
    #[tokio::test]
    async fn shard_255_installs_a_snapshot_and_its_neighbour_keeps_its_keys() {
        let sp = Space::Role(Role::Ods);
        let s255 = ShardId { role: Role::Ods, index: 255 };
        let s256 = ShardId { role: Role::Ods, index: 256 };
        let dir = tempfile::tempdir().unwrap();

        let leader: Arc<dyn Store> = Arc::new(MemStore::new());
        let mut a = ShardMachine::open(leader.clone(), s255, &dir.path().join("a")).await.unwrap();
        let mut w = Batch::new();
        w.put(sp, b"m/1".to_vec(), b"leader".to_vec());
        w.put(sp, b"m/2".to_vec(), b"leader".to_vec());
        a.apply([entry(1, w)]).await.unwrap();
        let snap = a.get_snapshot_builder().await.build_snapshot().await.unwrap();

        let follower: Arc<dyn Store> = Arc::new(MemStore::new());
        let mut b =
            ShardMachine::open(follower.clone(), s255, &dir.path().join("b")).await.unwrap();
        let mut stale = Batch::new();
        stale.put(sp, b"m/0".to_vec(), b"stale".to_vec());
        follower.write(prefixed(s255, stale)).unwrap();
        let mut other = Batch::new();
        other.put(sp, b"m/9".to_vec(), b"shard 256".to_vec());
        follower.write(prefixed(s256, other)).unwrap();

        send(snap, &mut b).await;

        assert_eq!(keys(&follower, s255), keys(&leader, s255));
        assert_eq!(keys(&follower, s256), vec![(b"m/9".to_vec(), b"shard 256".to_vec())]);
        assert_eq!(b.applied_state().await.unwrap().0, Some(entry(1, Batch::new()).log_id));
    }

    /// The keys a snapshot file holds.
    async fn records(snap: Snapshot<ShardConfig>) -> Vec<Vec<u8>> {
        let mut r = BufReader::new(*snap.snapshot);
        r.seek(SeekFrom::Start(0)).await.unwrap();
        let mut keys = Vec::new();
        while let Some(k) = read_record(&mut r).await.unwrap() {
            read_record(&mut r).await.unwrap().unwrap();
            keys.push(k);
        }
        keys
    }

    /// Snapshots built again and again while a replica installs one from
    /// its leader each hold one state: the old one under the old log id, or
    /// the installed one under its log id, never half of each; and the
    /// installed snapshot stays the current one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_built_during_an_install_holds_one_whole_state() {
        let sp = Space::Role(Role::Ods);
        let shard = ShardId { role: Role::Ods, index: 2 };
        let dir = tempfile::tempdir().unwrap();
        let leader: Arc<dyn Store> = Arc::new(MemStore::new());
        let mut a = ShardMachine::open(leader, shard, &dir.path().join("a")).await.unwrap();
        // Three installs' batches' worth, so the install takes several writes.
        let mut w = Batch::new();
        for k in 0..3000u32 {
            w.put(sp, [b"new/", &k.to_be_bytes()[..]].concat(), vec![7; 1024]);
        }
        a.apply([entry(1, Batch::new()), entry(2, w)]).await.unwrap();
        let snap = a.get_snapshot_builder().await.build_snapshot().await.unwrap();
        let new_id = snap.meta.last_log_id;

        let follower: Arc<dyn Store> = Arc::new(MemStore::new());
        let mut b = ShardMachine::open(follower, shard, &dir.path().join("b")).await.unwrap();
        let mut old = Batch::new();
        for k in 0..10u32 {
            old.put(sp, [b"old/", &k.to_be_bytes()[..]].concat(), vec![1; 16]);
        }
        b.apply([entry(1, old)]).await.unwrap();
        let old_id = Some(entry(1, Batch::new()).log_id);

        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut builder = b.get_snapshot_builder().await;
        let building = tokio::spawn({
            let done = done.clone();
            async move {
                let mut built = Vec::new();
                while !done.load(std::sync::atomic::Ordering::Acquire) {
                    let s = builder.build_snapshot().await.unwrap();
                    built.push((s.meta.last_log_id, records(s).await));
                    tokio::task::yield_now().await;
                }
                built
            }
        });
        send(snap, &mut b).await;
        done.store(true, std::sync::atomic::Ordering::Release);
        let built = building.await.unwrap();
        assert!(!built.is_empty());
        for (id, keys) in &built {
            let prefix: &[u8] = if *id == new_id { b"new/" } else { b"old/" };
            assert!(*id == new_id || *id == old_id, "a snapshot under {id:?}");
            let n = if *id == new_id { 3000 } else { 10 };
            assert_eq!(keys.len(), n, "snapshot {id:?} holds {} keys", keys.len());
            assert!(keys.iter().all(|k| k.starts_with(prefix)), "snapshot {id:?} mixes states");
        }
        let current = b.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta.last_log_id, new_id, "the installed snapshot stays current");
        assert_eq!(records(current).await.len(), 3000);
    }
}
