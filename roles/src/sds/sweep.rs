//! Collecting abandoned uploads. Anyone may start an upload of up to
//! `max_blob` bytes and never finish it; without collection its chunks stay
//! forever. Every upload start is noted under the day it began
//! (`s/DAY/ID` → generation); each later upload collects up to
//! [`SWEEP_BATCH`] noted uploads older than `abandoned_upload_days`: if the
//! blob's upload is still that generation, its chunks are deleted, and a
//! blob that never completed is forgotten (its id is free again). A finished
//! or replaced upload's note is just dropped. Bounded work per request, in
//! the same write as the upload that triggered it.

use crate::contract::{internal, RoleContext};
use crate::record;
use crate::sig::unix;
use crate::storage::Batch;

use super::{blob_key, SdsLogic, SPACE};

/// Noted uploads looked at per upload request.
pub const SWEEP_BATCH: usize = 32;

const DAY_SECS: u64 = 24 * 3600;

fn note_key(day: u32, id: &[u8; 32]) -> Vec<u8> {
    let mut k = b"s/".to_vec();
    k.extend_from_slice(&day.to_be_bytes());
    k.extend_from_slice(id);
    k
}

fn today(ctx: &RoleContext<'_>) -> u32 {
    (unix(ctx.now) / DAY_SECS).min(u32::MAX as u64) as u32
}

/// Notes that upload `generation` of blob `id` starts now.
pub(super) fn note_upload(id: &[u8; 32], generation: u64, ctx: &RoleContext<'_>, b: &mut Batch) {
    b.put(SPACE, note_key(today(ctx), id), generation.to_be_bytes().to_vec());
}

impl SdsLogic {
    /// Adds to `b` the collection of up to [`SWEEP_BATCH`] abandoned uploads,
    /// leaving blob `writing` (the request's own) alone.
    pub(super) fn sweep(
        &mut self,
        writing: &[u8; 32],
        ctx: &RoleContext<'_>,
        b: &mut Batch,
    ) -> Result<(), mlsd_transport::WireError> {
        let today = today(ctx);
        if self.swept == Some(today) {
            return Ok(());
        }
        let cutoff = today.saturating_sub(self.settings.abandoned_upload_days);
        let notes = ctx.store.scan_prefix(SPACE, b"s/", SWEEP_BATCH).map_err(internal)?;
        let mut more_due = notes.len() == SWEEP_BATCH;
        for (k, v) in notes {
            let (Some(day), Some(id), Ok(generation)) = (
                k.get(2..6).and_then(|d| d.try_into().ok()).map(u32::from_be_bytes),
                k.get(6..38).and_then(|i| <[u8; 32]>::try_from(i).ok()),
                v.as_slice().try_into().map(u64::from_be_bytes),
            ) else {
                b.delete(SPACE, k);
                continue;
            };
            if day >= cutoff {
                more_due = false;
                break;
            }
            if &id == writing {
                // Its own request rewrites the record; collect it next time.
                more_due = true;
                continue;
            }
            b.delete(SPACE, k);
            // An unreadable record is left as it is (and logged by decode).
            let Ok(Some(mut rec)) = self.record(&id, ctx) else { continue };
            if rec.upload.as_ref().is_some_and(|u| u.generation == generation) {
                self.delete_generation(&id, generation, ctx, b)?;
                rec.upload = None;
                if rec.current.is_some() {
                    b.put(SPACE, blob_key(&id), record::encode(&rec)?);
                } else {
                    b.delete(SPACE, blob_key(&id));
                }
            }
        }
        if !more_due {
            self.swept = Some(today);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use mlsd_transport::protocol::SdsResponse;
    use mlsd_transport::protocol::{SdsError, SdsRequest};
    use mlsd_transport::{Request, Response, WireError};

    use crate::contract::{RoleContext, RoleLogic};
    use crate::sds::SdsLogic;
    use crate::settings::SdsSettings;
    use crate::storage::MemStore;

    fn on(store: &MemStore, day: u64) -> RoleContext<'_> {
        RoleContext {
            node: "t",
            store,
            now: UNIX_EPOCH + Duration::from_secs(day * 86_400 + 5),
            random: zeroize::Zeroizing::new([0; 32]),
        }
    }

    fn put(id: u8, offset: u64, total: u64, len: usize) -> Request {
        Request::Sds(SdsRequest::PutBlob {
            id: [id; 32],
            cap: [id; 32],
            offset,
            total,
            data: vec![id; len],
        })
    }

    fn get(sds: &mut SdsLogic, store: &MemStore, id: u8, day: u64) -> Response {
        let req = Request::Sds(SdsRequest::GetBlob { id: [id; 32], offset: 0, max: 100 });
        sds.handle(req, None, &on(store, day)).applied(store)
    }

    #[test]
    fn uploads_abandoned_for_the_configured_days_are_collected() {
        let store = MemStore::new();
        let mut sds = SdsLogic::new(SdsSettings { max_blob: 1 << 20, abandoned_upload_days: 7 });
        let day0 = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() / 86_400;
        let mut run = |req, day| sds.handle(req, None, &on(&store, day)).applied(&store);
        // Day 0: blob 1 is abandoned after its first chunk; blob 2 completes;
        // blob 3 is complete and its replacement is abandoned.
        run(put(1, 0, 200, 100), day0);
        run(put(2, 0, 100, 100), day0);
        run(put(3, 0, 50, 50), day0);
        run(put(3, 0, 80, 40), day0);
        let sizes = |store: &MemStore| store.contents().values().map(Vec::len).sum::<usize>();
        let before = sizes(&store);
        // Day 6: not yet.
        run(put(9, 0, 10, 10), day0 + 6);
        assert!(matches!(
            run(put(1, 100, 200, 50), day0 + 6),
            Response::Sds(SdsResponse::BlobWritten { written: 150 })
        ));
        assert!(sizes(&store) > before);
        // Day 14 (7 days after blob 1's last activity does not matter: it is
        // the start that counts): every day-0 upload is collected.
        let r = sds.handle(put(8, 0, 10, 10), None, &on(&store, day0 + 14)).applied(&store);
        assert!(matches!(r, Response::Sds(SdsResponse::BlobWritten { .. })), "{r:?}");
        assert_eq!(
            get(&mut sds, &store, 1, day0 + 14),
            Response::Error(WireError::Sds(SdsError::UnknownBlob))
        );
        assert!(matches!(
            get(&mut sds, &store, 2, day0 + 14),
            Response::Sds(SdsResponse::Blob { total: 100, .. })
        ));
        // Blob 3 keeps its finished content; the abandoned replacement is gone.
        assert!(matches!(
            get(&mut sds, &store, 3, day0 + 14),
            Response::Sds(SdsResponse::Blob { total: 50, .. })
        ));
        let r = sds.handle(put(3, 40, 80, 40), None, &on(&store, day0 + 14)).applied(&store);
        assert!(matches!(r, Response::Error(WireError::Sds(SdsError::BadBlob(_)))), "{r:?}");
        // Blob 1's id is free again: anyone may start it anew.
        let fresh = Request::Sds(SdsRequest::PutBlob {
            id: [1; 32],
            cap: [5; 32],
            offset: 0,
            total: 1,
            data: vec![5],
        });
        assert!(matches!(
            sds.handle(fresh, None, &on(&store, day0 + 14)).applied(&store),
            Response::Sds(SdsResponse::BlobWritten { written: 1 })
        ));
        // Nothing of the collected chunks is left: only the notes of today.
        let notes: Vec<_> =
            store.contents().into_keys().map(|(_, k)| k).filter(|k| k.starts_with(b"s/")).collect();
        assert!(notes.len() <= 3, "{notes:?}");
    }
}
