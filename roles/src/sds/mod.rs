//! SDS (storage service): capability-addressed blobs (step 8 of the brief).
//!
//! A blob is addressed by a random 256-bit id chosen by the client; reading
//! needs only the id, writing the write capability whose SHA-256 the first
//! upload bound to it. No owner identity is stored. Blobs are uploaded and
//! read in chunks, so a large blob never needs one large frame.
//!
//! Storage (column family `sds`):
//! - `b/ID` → [`BlobRecord`].
//! - `c/ID/GEN/END` → the chunk of upload generation GEN that ends at byte
//!   END (exclusive, 8 bytes BE). Keyed by its end so that a read from
//!   `offset` seeks straight to the first chunk ending after it and reads only
//!   the chunks it returns. A new upload writes a new generation; the old one
//!   is deleted when the new one completes.
//! - `d/ID/GEN/INDEX` → chunk INDEX: the older layout, still read (a whole
//!   scan per read) for blobs uploaded before, and deleted with them.
//! - `s/DAY/ID` → GEN: an upload started on DAY (days since 1970, 4 bytes
//!   BE), so that one abandoned for `abandoned_upload_days` is collected
//!   ([`sweep`]).
//!
//! # Layout
//! - this module: the SDS state machine (upload, read, delete);
//! - [`sweep`]: collecting abandoned uploads.

pub mod sweep;

use mlsd_transport::limits::MAX_CHUNK;
use mlsd_transport::protocol::{SdsError, SdsRequest, SdsResponse};
use mlsd_transport::{Request, Response, Role, WireError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::contract::{internal, not_mine, pong, Decision, RoleContext, RoleLogic};
use crate::record::{self, Stored};
use crate::settings::SdsSettings;
use crate::storage::{Batch, Space};

const SPACE: Space = Space::Role(Role::Sds);

/// What the SDS keeps per blob.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlobRecord {
    /// SHA-256 of the write capability.
    pub cap_hash: [u8; 32],
    /// The readable content: generation and size, once an upload completed.
    pub current: Option<(u64, u64)>,
    /// An upload in progress: generation, total size, bytes written, chunks.
    pub upload: Option<Upload>,
    /// Last generation used.
    pub generation: u64,
}

impl Stored for BlobRecord {
    const KIND: &'static str = "SDS blob";
    const VERSION: u8 = 1;
}

/// An upload in progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Upload {
    /// Its generation.
    pub generation: u64,
    /// Announced size.
    pub total: u64,
    /// Bytes received.
    pub written: u64,
    /// Chunks received (no longer read: chunk keys now carry their end
    /// offset; kept so records of both layouts decode alike).
    pub chunks: u64,
}

/// The SDS state machine.
pub struct SdsLogic {
    settings: SdsSettings,
    /// The day whose abandoned uploads have all been collected.
    swept: Option<u32>,
}

pub(crate) fn blob_key(id: &[u8; 32]) -> Vec<u8> {
    let mut k = b"b/".to_vec();
    k.extend_from_slice(id);
    k
}

/// Keys of one generation's chunks in the older, index-keyed layout.
fn legacy_chunk_prefix(id: &[u8; 32], generation: u64) -> Vec<u8> {
    generation_prefix(b"d/", id, generation)
}

/// Keys of one generation's chunks, keyed by end offset.
fn chunk_prefix(id: &[u8; 32], generation: u64) -> Vec<u8> {
    generation_prefix(b"c/", id, generation)
}

fn generation_prefix(tag: &[u8], id: &[u8; 32], generation: u64) -> Vec<u8> {
    let mut k = tag.to_vec();
    k.extend_from_slice(id);
    k.push(b'/');
    k.extend_from_slice(&generation.to_be_bytes());
    k.push(b'/');
    k
}

/// The chunk of `generation` ending at byte `end`.
fn chunk_key(id: &[u8; 32], generation: u64, end: u64) -> Vec<u8> {
    let mut k = chunk_prefix(id, generation);
    k.extend_from_slice(&end.to_be_bytes());
    k
}

impl SdsLogic {
    /// An SDS with these settings.
    pub fn new(settings: SdsSettings) -> Self {
        SdsLogic { settings, swept: None }
    }

    pub(crate) fn record(
        &self,
        id: &[u8; 32],
        ctx: &RoleContext<'_>,
    ) -> Result<Option<BlobRecord>, WireError> {
        match ctx.store.get(SPACE, &blob_key(id)).map_err(internal)? {
            Some(v) => Ok(Some(record::decode(&v)?)),
            None => Ok(None),
        }
    }

    /// Deletes a generation's chunks with one range tombstone (not a scan
    /// that would load the whole blob), and those of the older layout if it
    /// has any (a tombstone costs later reads a little: none for nothing).
    pub(crate) fn delete_generation(
        &self,
        id: &[u8; 32],
        generation: u64,
        ctx: &RoleContext<'_>,
        b: &mut Batch,
    ) -> Result<(), WireError> {
        b.delete_prefix(SPACE, chunk_prefix(id, generation));
        let legacy = legacy_chunk_prefix(id, generation);
        if !ctx.store.scan_prefix(SPACE, &legacy, 1).map_err(internal)?.is_empty() {
            b.delete_prefix(SPACE, legacy);
        }
        Ok(())
    }

    fn put(
        &self,
        id: [u8; 32],
        cap: [u8; 32],
        offset: u64,
        total: u64,
        data: Vec<u8>,
        ctx: &RoleContext<'_>,
    ) -> Result<Decision, WireError> {
        if total > self.settings.max_blob {
            return Err(WireError::Sds(SdsError::BadBlob(format!(
                "larger than {} bytes",
                self.settings.max_blob
            ))));
        }
        if data.len() > MAX_CHUNK || (data.is_empty() && total > 0) {
            return Err(WireError::Sds(SdsError::BadBlob("chunk size".into())));
        }
        let cap_hash: [u8; 32] = Sha256::digest(cap).into();
        let mut rec = match self.record(&id, ctx)? {
            Some(r) if r.cap_hash != cap_hash => {
                return Err(WireError::Sds(SdsError::WrongCapability))
            }
            Some(r) => r,
            None => BlobRecord { cap_hash, current: None, upload: None, generation: 0 },
        };
        if let Some(written) = repeated_chunk(&id, &rec, offset, total, &data, ctx)? {
            return Ok(Decision::reply(Response::Sds(SdsResponse::BlobWritten { written })));
        }
        let mut b = Batch::new();
        if offset == 0 {
            // A new upload; an unfinished one is abandoned.
            if let Some(u) = rec.upload.take() {
                self.delete_generation(&id, u.generation, ctx, &mut b)?;
            }
            rec.generation += 1;
            rec.upload = Some(Upload { generation: rec.generation, total, written: 0, chunks: 0 });
            sweep::note_upload(&id, rec.generation, ctx, &mut b);
        }
        let mut up = rec
            .upload
            .take()
            .ok_or_else(|| WireError::Sds(SdsError::BadBlob("no upload in progress".into())))?;
        if up.total != total || up.written != offset || offset + data.len() as u64 > total {
            return Err(WireError::Sds(SdsError::BadBlob("chunk out of order".into())));
        }
        up.written += data.len() as u64;
        b.put(SPACE, chunk_key(&id, up.generation, up.written), data.clone());
        up.chunks += 1;
        let written = up.written;
        if up.written == up.total {
            if let Some((g, _)) = rec.current {
                self.delete_generation(&id, g, ctx, &mut b)?;
            }
            rec.current = Some((up.generation, up.total));
        } else {
            rec.upload = Some(up);
        }
        b.put(SPACE, blob_key(&id), record::encode(&rec)?);
        Ok(Decision::write(Response::Sds(SdsResponse::BlobWritten { written }), b))
    }

    fn get(
        &self,
        id: [u8; 32],
        offset: u64,
        max: u32,
        ctx: &RoleContext<'_>,
    ) -> Result<Response, WireError> {
        let rec = self.record(&id, ctx)?.ok_or(WireError::Sds(SdsError::UnknownBlob))?;
        let (generation, total) = rec.current.ok_or(WireError::Sds(SdsError::UnknownBlob))?;
        let max = (max as usize).min(MAX_CHUNK);
        if offset >= total || max == 0 {
            return Ok(Response::Sds(SdsResponse::Blob { total, data: Vec::new() }));
        }
        // The first chunk ending after `offset` holds it; read on from there
        // a few chunks at a time until `max` bytes are gathered.
        const STEP: usize = 4;
        let prefix = chunk_prefix(&id, generation);
        let mut data = Vec::new();
        let mut from = chunk_key(&id, generation, offset + 1);
        loop {
            let rows = ctx.store.scan_from(SPACE, &prefix, &from, STEP).map_err(internal)?;
            if rows.is_empty() && data.is_empty() {
                return self.get_legacy(id, generation, total, offset, max, ctx);
            }
            let got = rows.len();
            for (k, chunk) in rows {
                let end = k[prefix.len()..].try_into().map(u64::from_be_bytes).map_err(internal)?;
                let start = end.saturating_sub(chunk.len() as u64);
                let skip = offset.saturating_sub(start).min(chunk.len() as u64) as usize;
                let take = (chunk.len() - skip).min(max - data.len());
                data.extend_from_slice(&chunk[skip..skip + take]);
                if data.len() >= max {
                    return Ok(Response::Sds(SdsResponse::Blob { total, data }));
                }
                from = chunk_key(&id, generation, end + 1);
            }
            if got < STEP {
                return Ok(Response::Sds(SdsResponse::Blob { total, data }));
            }
        }
    }

    /// `GetBlob` of a blob stored in the older, index-keyed chunk layout.
    fn get_legacy(
        &self,
        id: [u8; 32],
        generation: u64,
        total: u64,
        offset: u64,
        max: usize,
        ctx: &RoleContext<'_>,
    ) -> Result<Response, WireError> {
        let mut data = Vec::new();
        let mut pos = 0u64;
        let limit = (self.settings.max_blob as usize / MAX_CHUNK) + 2;
        let prefix = legacy_chunk_prefix(&id, generation);
        for (_, chunk) in ctx.store.scan_prefix(SPACE, &prefix, limit).map_err(internal)? {
            let end = pos + chunk.len() as u64;
            if end > offset && data.len() < max {
                let from = offset.saturating_sub(pos) as usize;
                let take = (chunk.len() - from).min(max - data.len());
                data.extend_from_slice(&chunk[from..from + take]);
            }
            pos = end;
            if data.len() >= max {
                break;
            }
        }
        Ok(Response::Sds(SdsResponse::Blob { total, data }))
    }

    fn delete(
        &self,
        id: [u8; 32],
        cap: [u8; 32],
        ctx: &RoleContext<'_>,
    ) -> Result<Decision, WireError> {
        let rec = self.record(&id, ctx)?.ok_or(WireError::Sds(SdsError::UnknownBlob))?;
        if rec.cap_hash != <[u8; 32]>::from(Sha256::digest(cap)) {
            return Err(WireError::Sds(SdsError::WrongCapability));
        }
        let mut b = Batch::new();
        if let Some((g, _)) = rec.current {
            self.delete_generation(&id, g, ctx, &mut b)?;
        }
        if let Some(u) = &rec.upload {
            self.delete_generation(&id, u.generation, ctx, &mut b)?;
        }
        b.delete(SPACE, blob_key(&id));
        Ok(Decision::write(Response::Sds(SdsResponse::BlobDeleted), b))
    }
}

impl RoleLogic for SdsLogic {
    fn role(&self) -> Role {
        Role::Sds
    }

    fn handle(&mut self, req: Request, _pre: Option<Response>, ctx: &RoleContext<'_>) -> Decision {
        let req = match req {
            Request::Ping(_) => return Decision::reply(pong(Role::Sds, ctx)),
            Request::Sds(r) => r,
            other => return not_mine(Role::Sds, &other),
        };
        match req {
            SdsRequest::PutBlob { id, cap, offset, total, data } => {
                // Uploads are what leave abandoned uploads behind, so each
                // one collects a few (never the blob it writes).
                self.put(id, cap, offset, total, data, ctx).and_then(|mut d| {
                    self.sweep(&id, ctx, &mut d.writes)?;
                    Ok(d)
                })
            }
            SdsRequest::GetBlob { id, offset, max } => {
                self.get(id, offset, max, ctx).map(Decision::reply)
            }
            SdsRequest::DeleteBlob { id, cap } => self.delete(id, cap, ctx),
        }
        .into()
    }
}

/// Whether a `PutBlob` repeats the chunk that was written last, its answer
/// lost (or its entry node retried it after a leader change): the same
/// bytes ending where the upload (or the finished blob) ends now. Such a
/// chunk is answered as the first time and changes nothing; any other is
/// decided as usual.
fn repeated_chunk(
    id: &[u8; 32],
    rec: &BlobRecord,
    offset: u64,
    total: u64,
    data: &[u8],
    ctx: &RoleContext<'_>,
) -> Result<Option<u64>, WireError> {
    let end = offset + data.len() as u64;
    let generation = match (&rec.upload, rec.current) {
        (Some(up), _) if up.total == total && up.written == end => up.generation,
        (None, Some((g, t))) if t == total && end == total => g,
        _ => return Ok(None),
    };
    let stored = ctx.store.get(SPACE, &chunk_key(id, generation, end)).map_err(internal)?;
    Ok((stored.as_deref() == Some(data)).then_some(end))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::storage::{Entries, MemStore, Store, StoreError, View};

    /// A store that counts the bytes its scans return.
    struct Counting {
        inner: MemStore,
        scanned: AtomicUsize,
    }

    impl Store for Counting {
        fn read_at_once(
            &self,
            read: &mut dyn FnMut(&dyn View) -> Result<(), StoreError>,
        ) -> Result<(), StoreError> {
            self.inner.read_at_once(read)
        }
        fn write(&self, batch: Batch) -> Result<(), StoreError> {
            self.inner.write(batch)
        }
    }

    impl View for Counting {
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
            let rows = self.inner.scan_from(space, prefix, start, limit)?;
            let n: usize = rows.iter().map(|(_, v)| v.len()).sum();
            self.scanned.fetch_add(n, Ordering::Relaxed);
            Ok(rows)
        }
    }

    fn blob() -> Vec<u8> {
        (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn a_read_loads_only_the_chunks_it_returns_and_any_window_is_exact() {
        let store = Counting { inner: MemStore::new(), scanned: 0.into() };
        let ctx = RoleContext {
            node: "t",
            store: &store,
            now: std::time::SystemTime::now(),
            random: zeroize::Zeroizing::new([0; 32]),
        };
        let mut sds = SdsLogic::new(SdsSettings { max_blob: 1 << 20, abandoned_upload_days: 7 });
        let data = blob();
        let total = data.len() as u64;
        // Chunks of uneven sizes, 1 KiB to 3 KiB.
        let mut offset = 0;
        let mut n = 0;
        while offset < data.len() {
            let len = (1024 + (n * 977) % 2048).min(data.len() - offset);
            let chunk = data[offset..offset + len].to_vec();
            let r = sds.handle(
                Request::Sds(SdsRequest::PutBlob {
                    id: [1; 32],
                    cap: [2; 32],
                    offset: offset as u64,
                    total,
                    data: chunk,
                }),
                None,
                &ctx,
            );
            let r = r.applied(&store);
            assert!(matches!(r, Response::Sds(SdsResponse::BlobWritten { .. })), "{r:?}");
            offset += len;
            n += 1;
        }
        for (from, max) in [(0, 10), (0, 300_000), (1023, 2), (150_001, 5000), (299_999, 100)] {
            store.scanned.store(0, Ordering::Relaxed);
            let get = Request::Sds(SdsRequest::GetBlob { id: [1; 32], offset: from, max });
            let r = sds.handle(get, None, &ctx).applied(&store);
            let Response::Sds(SdsResponse::Blob { total: t, data: got }) = r else {
                panic!("{r:?}")
            };
            let end = (from as usize + max as usize).min(data.len());
            assert_eq!(t, total);
            assert_eq!(got, &data[from as usize..end], "window {from}+{max}");
            // At most one step of chunks (4 x 3 KiB) beyond what it returns.
            let scanned = store.scanned.load(Ordering::Relaxed);
            assert!(scanned <= got.len() + 4 * 3072, "{from}+{max}: read {scanned} bytes");
        }
    }

    /// Every chunk sent twice in a row (its answer lost, or retried by the
    /// entry node): the second gets the first's answer and changes nothing,
    /// the last chunk's repeat included; the blob reads back whole.
    #[test]
    fn a_chunk_sent_again_is_answered_as_the_first_time_and_changes_nothing() {
        let store = MemStore::new();
        let ctx = RoleContext {
            node: "t",
            store: &store,
            now: std::time::SystemTime::now(),
            random: zeroize::Zeroizing::new([0; 32]),
        };
        let mut sds = SdsLogic::new(SdsSettings { max_blob: 1 << 20, abandoned_upload_days: 7 });
        let data = blob();
        let total = data.len() as u64;
        let put = |offset: usize, len: usize| {
            Request::Sds(SdsRequest::PutBlob {
                id: [5; 32],
                cap: [6; 32],
                offset: offset as u64,
                total,
                data: data[offset..offset + len].to_vec(),
            })
        };
        for offset in (0..data.len()).step_by(100_000) {
            let len = 100_000.min(data.len() - offset);
            let first = sds.handle(put(offset, len), None, &ctx).applied(&store);
            let written = (offset + len) as u64;
            assert_eq!(first, Response::Sds(SdsResponse::BlobWritten { written }));
            let before = store.contents();
            let again = sds.handle(put(offset, len), None, &ctx);
            assert!(again.writes.ops.is_empty(), "a repeat writes nothing");
            assert_eq!(again.applied(&store), Response::Sds(SdsResponse::BlobWritten { written }));
            assert_eq!(store.contents(), before);
        }
        let get = Request::Sds(SdsRequest::GetBlob { id: [5; 32], offset: 0, max: 1 << 20 });
        let Response::Sds(SdsResponse::Blob { data: got, .. }) =
            sds.handle(get, None, &ctx).applied(&store)
        else {
            panic!("no blob")
        };
        // A read returns at most one chunk's worth; the first 100,000 bytes.
        assert_eq!(got, &data[..got.len()]);
        assert!(!got.is_empty());
        // Other bytes at the same place are not a repeat: refused (the
        // upload is finished), and nothing changes.
        let before = store.contents();
        let mut other = data[100_000..200_000].to_vec();
        other[0] ^= 1;
        let r = sds.handle(
            Request::Sds(SdsRequest::PutBlob {
                id: [5; 32],
                cap: [6; 32],
                offset: 100_000,
                total,
                data: other,
            }),
            None,
            &ctx,
        );
        assert_eq!(
            r.applied(&store),
            Response::Error(WireError::Sds(SdsError::BadBlob("no upload in progress".into())))
        );
        assert_eq!(store.contents(), before);
    }

    #[test]
    fn blobs_of_the_older_chunk_layout_are_still_read_and_deleted() {
        let store = MemStore::new();
        let ctx = RoleContext {
            node: "t",
            store: &store,
            now: std::time::SystemTime::now(),
            random: zeroize::Zeroizing::new([0; 32]),
        };
        let mut sds = SdsLogic::new(SdsSettings { max_blob: 1 << 20, abandoned_upload_days: 7 });
        let data = blob();
        let id = [3; 32];
        let cap_hash: [u8; 32] = Sha256::digest([4; 32]).into();
        let rec = BlobRecord {
            cap_hash,
            current: Some((1, data.len() as u64)),
            upload: None,
            generation: 1,
        };
        let mut b = Batch::new();
        b.put(SPACE, blob_key(&id), record::encode(&rec).unwrap());
        for (i, chunk) in data.chunks(100_000).enumerate() {
            let mut k = legacy_chunk_prefix(&id, 1);
            k.extend_from_slice(&(i as u64).to_be_bytes());
            b.put(SPACE, k, chunk.to_vec());
        }
        store.write(b).unwrap();
        let r = sds.handle(
            Request::Sds(SdsRequest::GetBlob { id, offset: 150_000, max: 100 }),
            None,
            &ctx,
        );
        let r = r.applied(&store);
        assert_eq!(
            r,
            Response::Sds(SdsResponse::Blob {
                total: data.len() as u64,
                data: data[150_000..150_100].to_vec()
            })
        );
        let r = sds
            .handle(Request::Sds(SdsRequest::DeleteBlob { id, cap: [4; 32] }), None, &ctx)
            .applied(&store);
        assert_eq!(r, Response::Sds(SdsResponse::BlobDeleted));
        assert!(store.scan_prefix(SPACE, b"d/", 10).unwrap().is_empty());
    }
}
