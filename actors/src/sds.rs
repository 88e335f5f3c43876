//! SDS (storage service): capability-addressed blobs (step 8 of the brief).
//!
//! A blob is addressed by a random 256-bit id chosen by the client; reading
//! needs only the id, writing the write capability whose SHA-256 the first
//! upload bound to it. No owner identity is stored. Blobs are uploaded and
//! read in chunks, so a large blob never needs one large frame.
//!
//! Storage (column family `sds`):
//! - `b/ID` → [`BlobRecord`].
//! - `d/ID/GEN/INDEX` → chunk INDEX of upload generation GEN. A new upload
//!   writes a new generation; the old one is deleted when the new one completes.

use mlsd_transport::limits::MAX_CHUNK;
use mlsd_transport::{codec, Request, Response, Role, WireError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::r#as::internal;
use crate::role::{pong, RoleContext, RoleLogic};
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

/// An upload in progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Upload {
    /// Its generation.
    pub generation: u64,
    /// Announced size.
    pub total: u64,
    /// Bytes received.
    pub written: u64,
    /// Chunks received.
    pub chunks: u64,
}

/// The SDS state machine.
pub struct SdsLogic {
    settings: SdsSettings,
}

fn blob_key(id: &[u8; 32]) -> Vec<u8> {
    let mut k = b"b/".to_vec();
    k.extend_from_slice(id);
    k
}

fn chunk_prefix(id: &[u8; 32], generation: u64) -> Vec<u8> {
    let mut k = b"d/".to_vec();
    k.extend_from_slice(id);
    k.push(b'/');
    k.extend_from_slice(&generation.to_be_bytes());
    k.push(b'/');
    k
}

fn chunk_key(id: &[u8; 32], generation: u64, index: u64) -> Vec<u8> {
    let mut k = chunk_prefix(id, generation);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

impl SdsLogic {
    /// An SDS with these settings.
    pub fn new(settings: SdsSettings) -> Self {
        SdsLogic { settings }
    }

    fn record(
        &self,
        id: &[u8; 32],
        ctx: &RoleContext<'_>,
    ) -> Result<Option<BlobRecord>, WireError> {
        match ctx.store.get(SPACE, &blob_key(id)).map_err(internal)? {
            Some(v) => Ok(Some(codec::decode(&v).map_err(internal)?)),
            None => Ok(None),
        }
    }

    fn delete_generation(
        &self,
        id: &[u8; 32],
        generation: u64,
        ctx: &RoleContext<'_>,
        b: &mut Batch,
    ) -> Result<(), WireError> {
        let limit = (self.settings.max_blob as usize / MAX_CHUNK) + 2;
        for (k, _) in
            ctx.store.scan_prefix(SPACE, &chunk_prefix(id, generation), limit).map_err(internal)?
        {
            b.delete(SPACE, k);
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
    ) -> Result<Response, WireError> {
        if total > self.settings.max_blob {
            return Err(WireError::BadBlob(format!(
                "larger than {} bytes",
                self.settings.max_blob
            )));
        }
        if data.len() > MAX_CHUNK || (data.is_empty() && total > 0) {
            return Err(WireError::BadBlob("chunk size".into()));
        }
        let cap_hash: [u8; 32] = Sha256::digest(cap).into();
        let mut rec = match self.record(&id, ctx)? {
            Some(r) if r.cap_hash != cap_hash => return Err(WireError::WrongCapability),
            Some(r) => r,
            None => BlobRecord { cap_hash, current: None, upload: None, generation: 0 },
        };
        let mut b = Batch::new();
        if offset == 0 {
            // A new upload; an unfinished one is abandoned.
            if let Some(u) = rec.upload.take() {
                self.delete_generation(&id, u.generation, ctx, &mut b)?;
            }
            rec.generation += 1;
            rec.upload = Some(Upload { generation: rec.generation, total, written: 0, chunks: 0 });
        }
        let mut up =
            rec.upload.take().ok_or_else(|| WireError::BadBlob("no upload in progress".into()))?;
        if up.total != total || up.written != offset || offset + data.len() as u64 > total {
            return Err(WireError::BadBlob("chunk out of order".into()));
        }
        b.put(SPACE, chunk_key(&id, up.generation, up.chunks), data.clone());
        up.written += data.len() as u64;
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
        b.put(SPACE, blob_key(&id), codec::encode(&rec).map_err(internal)?);
        ctx.store.write(b).map_err(internal)?;
        Ok(Response::BlobWritten { written })
    }

    fn get(
        &self,
        id: [u8; 32],
        offset: u64,
        max: u32,
        ctx: &RoleContext<'_>,
    ) -> Result<Response, WireError> {
        let rec = self.record(&id, ctx)?.ok_or(WireError::UnknownBlob)?;
        let (generation, total) = rec.current.ok_or(WireError::UnknownBlob)?;
        let max = (max as usize).min(MAX_CHUNK);
        let mut data = Vec::new();
        let mut pos = 0u64;
        let limit = (self.settings.max_blob as usize / MAX_CHUNK) + 2;
        for (_, chunk) in
            ctx.store.scan_prefix(SPACE, &chunk_prefix(&id, generation), limit).map_err(internal)?
        {
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
        Ok(Response::Blob { total, data })
    }

    fn delete(
        &self,
        id: [u8; 32],
        cap: [u8; 32],
        ctx: &RoleContext<'_>,
    ) -> Result<Response, WireError> {
        let rec = self.record(&id, ctx)?.ok_or(WireError::UnknownBlob)?;
        if rec.cap_hash != <[u8; 32]>::from(Sha256::digest(cap)) {
            return Err(WireError::WrongCapability);
        }
        let mut b = Batch::new();
        if let Some((g, _)) = rec.current {
            self.delete_generation(&id, g, ctx, &mut b)?;
        }
        if let Some(u) = &rec.upload {
            self.delete_generation(&id, u.generation, ctx, &mut b)?;
        }
        b.delete(SPACE, blob_key(&id));
        ctx.store.write(b).map_err(internal)?;
        Ok(Response::BlobDeleted)
    }
}

impl RoleLogic for SdsLogic {
    fn role(&self) -> Role {
        Role::Sds
    }

    fn handle(&mut self, req: Request, _pre: Option<Response>, ctx: &RoleContext<'_>) -> Response {
        let r = match req {
            Request::Ping { .. } => Ok(pong(Role::Sds, ctx)),
            Request::PutBlob { id, cap, offset, total, data } => {
                self.put(id, cap, offset, total, data, ctx)
            }
            Request::GetBlob { id, offset, max } => self.get(id, offset, max, ctx),
            Request::DeleteBlob { id, cap } => self.delete(id, cap, ctx),
            other => Err(WireError::Internal(format!("SDS cannot serve {other:?}"))),
        };
        r.unwrap_or_else(Response::Error)
    }
}
