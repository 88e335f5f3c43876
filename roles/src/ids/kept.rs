//! Sends the IDS accepted whose fan-out left copies that a retry may still
//! store (an ODS owner was down, a mailbox was full): what a retry needs is
//! kept here beyond the [`ACCEPTED_EPOCHS`](super::group::ACCEPTED_EPOCHS)
//! window, so a retry completes however many commits came in between.
//!
//! Storage (column family `ids`):
//! - `k/GROUP/MESSAGE_ID` → [`KeptSend`]: the send's epoch, its digest, that
//!   epoch's auth key and (stored mode) sealed roster, and the week it was
//!   kept. Deleted when a retry stores every copy; dropped [`KEPT_WEEKS`]
//!   weeks on (by then the ODS no longer recognizes its copies, so a later
//!   retry could duplicate them; the sender has long given up).

use mlsd_transport::{Role, WireError};

use crate::contract::internal;
use crate::record::{self, Stored};
use crate::storage::{Batch, Space, View};

pub use super::plan::KeptSend;

const SPACE: Space = Space::Role(Role::Ids);

/// Weeks a kept send stays retryable: the ODS recognizes a stored copy for
/// one to two weeks, so a retry within this window stores nothing twice.
pub const KEPT_WEEKS: u32 = 1;

/// Most sends kept per group; past it a send is not kept (its retry then
/// completes only within the accepted-epochs window) and a warning is logged.
pub const MAX_KEPT: usize = 1024;

impl Stored for KeptSend {
    const KIND: &'static str = "IDS kept send";
    const VERSION: u8 = 1;
}

fn prefix(group: &[u8]) -> Vec<u8> {
    let mut k = b"k/".to_vec();
    k.extend_from_slice(&(group.len() as u8).to_be_bytes());
    k.extend_from_slice(group);
    k
}

fn key(group: &[u8], message_id: &[u8; 32]) -> Vec<u8> {
    let mut k = prefix(group);
    k.extend_from_slice(message_id);
    k
}

/// Adds to `batch` the deletion of every send kept for `group` (at most
/// [`MAX_KEPT`]; the length-prefixed key makes its prefix the group's alone).
pub fn forget_all(store: &dyn View, group: &[u8], batch: &mut Batch) -> Result<(), WireError> {
    for (k, _) in store.scan_prefix(SPACE, &prefix(group), MAX_KEPT + 1).map_err(internal)? {
        batch.delete(SPACE, k);
    }
    Ok(())
}

/// The kept send `message_id` of `group`, unless it expired by `week`.
pub fn load(
    store: &dyn View,
    group: &[u8],
    message_id: &[u8; 32],
    week: u32,
) -> Result<Option<KeptSend>, WireError> {
    let Some(v) = store.get(SPACE, &key(group, message_id)).map_err(internal)? else {
        return Ok(None);
    };
    let kept: KeptSend = record::decode(&v)?;
    Ok((kept.week + KEPT_WEEKS >= week).then_some(kept))
}

/// The writes that keep `send`, first dropping the group's expired ones, and
/// whether it is kept: not when the group holds [`MAX_KEPT`] live ones.
pub fn keep(
    store: &dyn View,
    group: &[u8],
    message_id: &[u8; 32],
    send: &KeptSend,
) -> Result<(Batch, bool), WireError> {
    let mut b = Batch::new();
    let mut live = 0;
    for (k, v) in store.scan_prefix(SPACE, &prefix(group), MAX_KEPT * 2).map_err(internal)? {
        match record::decode::<KeptSend>(&v) {
            Ok(old) if old.week + KEPT_WEEKS >= send.week => live += 1,
            // Expired, or unreadable: nothing a retry could use.
            _ => b.delete(SPACE, k),
        }
    }
    let room = live < MAX_KEPT;
    if room {
        b.put(SPACE, key(group, message_id), record::encode(send)?);
    }
    Ok((b, room))
}

/// The write that forgets a kept send once a retry stored every copy.
pub fn forget(group: &[u8], message_id: &[u8; 32]) -> Batch {
    let mut b = Batch::new();
    b.delete(SPACE, key(group, message_id));
    b
}
