//! Signed AS and CS requests take effect at most once.
//!
//! A signed request stays valid for the timestamp window (±300 s), and a
//! copy sent again within it must not act again: a replayed `Approve` would
//! bind a device its identity revoked meanwhile, a replayed `Revoke` or
//! `Register` would redo what the owner undid. A decision that writes nothing
//! (a read, or a repeat that is idempotent anyway, like registering the same
//! key) is answered as usual. A decision that would write, when its
//! signature (Ed25519, checked strictly, so it names one signed message) was
//! served before, changes nothing and is answered with the first answer,
//! kept beside the signature: retries are routine (a lost answer, an entry
//! node following a leader change), and a write that happened must not look
//! like a failure. A first answer too long to keep, or served before answers
//! were kept, is answered `Replayed`. The signatures' SHA-256 live in
//! per-week buckets `u/WEEK/HASH` (decision D4), the current and the
//! previous week, which covers the window.

use mlsd_transport::codec;
use mlsd_transport::protocol::identity::TIMESTAMP_WINDOW_SECS;
use mlsd_transport::protocol::AuthError;
use mlsd_transport::Response;
use sha2::{Digest, Sha256};

use crate::contract::{internal, Decision, RoleContext};
use crate::sig::unix;
use crate::storage::{drop_weeks_before, week, week_prefix, Space};

/// Key tag of the served-signature buckets.
const TAG: &[u8] = b"u";

/// Most bytes of a first answer kept for its repeats (every answer of a
/// signed write is far smaller: a binding, a count).
const MAX_KEPT_ANSWER: usize = 4096;

/// What a repeat of a served request is told: the first answer, if kept.
fn repeat_answer(first: &[u8]) -> Response {
    let replayed = || Response::Error(AuthError::Replayed.into());
    if first.is_empty() {
        return replayed();
    }
    codec::decode(first).unwrap_or_else(|_| replayed())
}

/// `decision` for a request authorized by `signature`, unless it would
/// write and that signature was served already: then the first answer,
/// and nothing written.
pub(crate) fn at_most_once(
    space: Space,
    signature: Option<&[u8]>,
    mut decision: Decision,
    ctx: &RoleContext<'_>,
) -> Decision {
    let Some(signature) = signature else { return decision };
    if decision.writes.ops.is_empty() {
        return decision;
    }
    let hash = Sha256::digest(signature);
    let now = unix(ctx.now);
    let this_week = week(now);
    let key = |w: u32| {
        let mut k = week_prefix(TAG, w);
        k.extend_from_slice(&hash);
        k
    };
    let mut weeks = vec![this_week];
    // First served at most one window before the timestamp, replayed at most
    // one after it.
    if week(now.saturating_sub(2 * TIMESTAMP_WINDOW_SECS)) != this_week {
        weeks.push(this_week.saturating_sub(1));
    }
    for w in weeks {
        match ctx.store.get(space, &key(w)) {
            Ok(None) => {}
            Ok(Some(first)) => return Decision::reply(repeat_answer(&first)),
            Err(e) => return Decision::reply(Response::Error(internal(e))),
        }
    }
    let first = codec::encode(&decision.response)
        .ok()
        .filter(|v| v.len() <= MAX_KEPT_ANSWER)
        .unwrap_or_default();
    decision.writes.put(space, key(this_week), first);
    if let Err(e) =
        drop_weeks_before(ctx.store, space, TAG, this_week.saturating_sub(1), &mut decision.writes)
    {
        return Decision::reply(Response::Error(internal(e)));
    }
    decision
}
