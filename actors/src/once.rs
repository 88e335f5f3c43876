//! Signed AS and CS requests take effect at most once.
//!
//! A signed request stays valid for the timestamp window (±300 s), and a
//! copy sent again within it must not act again: a replayed `Approve` would
//! bind a device its identity revoked meanwhile, a replayed `Revoke` or
//! `Register` would redo what the owner undid. A decision that writes nothing
//! (a read, or a repeat that is idempotent anyway, like registering the same
//! key) is answered as usual, so a client whose answer was lost may still
//! send its request again. A decision that would write is refused
//! `Replayed` when its signature (Ed25519, checked strictly, so it names one
//! signed message) was served before. The signatures' SHA-256 live in
//! per-week buckets `u/WEEK/HASH` (decision D4), the current and the
//! previous week, which covers the window.

use mlsd_transport::protocol::identity::TIMESTAMP_WINDOW_SECS;
use mlsd_transport::protocol::AuthError;
use mlsd_transport::Response;
use sha2::{Digest, Sha256};

use crate::contract::{internal, Decision, RoleContext};
use crate::sig::unix;
use crate::storage::{drop_weeks_before, week, week_prefix, Space};

/// Key tag of the served-signature buckets.
const TAG: &[u8] = b"u";

/// `decision` for a request authorized by `signature`, unless it would
/// write and that signature was served already.
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
            Ok(Some(_)) => return Decision::reply(Response::Error(AuthError::Replayed.into())),
            Err(e) => return Decision::reply(Response::Error(internal(e))),
        }
    }
    decision.writes.put(space, key(this_week), Vec::new());
    if let Err(e) =
        drop_weeks_before(ctx.store, space, TAG, this_week.saturating_sub(1), &mut decision.writes)
    {
        return Decision::reply(Response::Error(internal(e)));
    }
    decision
}
