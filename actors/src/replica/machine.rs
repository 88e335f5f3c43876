//! One shard's state machine: committed write batches applied to the
//! node's storage under the shard's key prefix, and snapshots of the shard
//! as files.
//!
//! Applying a run of entries is one atomic write: the batches, with the
//! applied log id and membership beside them (`a` in the `raft` column
//! family), so a replica killed at any point restarts with its state and
//! its applied index in agreement.
//!
//! A snapshot is every key of the shard, streamed from storage to a file
//! (length-prefixed keys and values) and from the file to a replica that
//! fell behind or is new; no shard is ever held in memory. It is built while
//! entries go on being applied, so it may hold some writes newer than its
//! log id. That is harmless: every batch sets or removes keys outright, so
//! applying the entries after the log id on top of it ends in the same
//! state as on the leader (each key ends with the last write to it).

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
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufReader, BufWriter};

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
        let mut m = ShardMachine { store, shard, dir: dir.to_path_buf(), receiving: None };
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
        let old = self.get::<Current>(b'n')?.map(|c| self.dir.join(c.file));
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
    store: Arc<dyn Store>,
    shard: ShardId,
    dir: PathBuf,
}

impl RaftSnapshotBuilder<ShardConfig> for ShardSnapshotter {
    async fn build_snapshot(&mut self) -> Result<Snapshot<ShardConfig>, StorageError<NodeId>> {
        let m = ShardMachine {
            store: self.store.clone(),
            shard: self.shard,
            dir: self.dir.clone(),
            receiving: None,
        };
        // The log id first: the data read after it is at least as new.
        let st = m.applied()?;
        let path = self.dir.join(m.file_name("built"));
        let f = SnapshotFile::create(&path).map_err(|e| snap_err(ErrorVerb::Write, e))?;
        let mut w = BufWriter::new(f);
        let view = super::ShardView { store: self.store.clone(), shard: self.shard };
        let space = Space::Role(self.shard.role);
        let mut start = Vec::new();
        loop {
            let rows = view
                .scan_from(space, &[], &start, SCAN_PAGE)
                .map_err(|e| sm_err(ErrorVerb::Read, e))?;
            let n = rows.len();
            for (k, v) in rows {
                for field in [&k, &v] {
                    w.write_all(&(field.len() as u32).to_be_bytes())
                        .await
                        .map_err(|e| snap_err(ErrorVerb::Write, e))?;
                    w.write_all(field).await.map_err(|e| snap_err(ErrorVerb::Write, e))?;
                }
                start = [&k[..], &[0]].concat();
            }
            if n < SCAN_PAGE {
                break;
            }
        }
        w.flush().await.map_err(|e| snap_err(ErrorVerb::Write, e))?;
        let f = w.into_inner();
        f.sync_all().map_err(|e| snap_err(ErrorVerb::Write, e))?;
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
        self.write(b)?;
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        ShardSnapshotter { store: self.store.clone(), shard: self.shard, dir: self.dir.clone() }
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
        f.sync_all().map_err(|e| snap_err(ErrorVerb::Write, e))?;
        self.install(meta, f, &path).await
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<ShardConfig>>, StorageError<NodeId>> {
        let Some(c) = self.get::<Current>(b'n')? else { return Ok(None) };
        match SnapshotFile::open(&self.dir.join(&c.file)) {
            Ok(f) => Ok(Some(Snapshot { meta: c.meta, snapshot: Box::new(f) })),
            // A data dir copied without its snapshot files: openraft builds one.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(snap_err(ErrorVerb::Read, e)),
        }
    }
}
