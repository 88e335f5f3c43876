//! The IDS group state machine: one group's epoch, auth keys, accepted
//! commits and (stored mode) sealed rosters ([`super::logic`] runs it).
//!
//! Storage (column family `ids`):
//! - `g/GROUP` → [`GroupRecord`].
//! - `r/GROUP/EPOCH` → [`SealedRoster`] of that epoch (stored mode; the last
//!   [`ACCEPTED_EPOCHS`] are kept for retries).
//! - `a/GROUP/EPOCH/MESSAGE_ID` → SHA-256 of the accepted send's body:
//!   messages and commits accepted in the last [`ACCEPTED_EPOCHS`] epochs, so
//!   a retry is delivered again, not refused, and only if it is identical to
//!   what was accepted (an empty value, from before digests were kept, checks
//!   the MAC only).
//! - `k/...`: sends kept beyond that window while copies are missing
//!   ([`super::kept`]).

use mlsd_transport::protocol::ids::{send_mac, MAX_ROSTER};
use mlsd_transport::protocol::{
    AuthError, BadFrame, ClusterError, DeliveryCap, IdsError, Recipients, RosterEntry, RosterMode,
    SealedRoster, SendBody,
};
use mlsd_transport::{codec, Role, WireError};
use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::{ContentType, MlsMessageBodyIn, MlsMessageIn};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::kept;
use super::plan::{FanOut, FanoutPlan, KeptSend};
use crate::contract::internal;
use crate::record::{self, Stored};
use crate::storage::{Batch, Space, View};

const SPACE: Space = Space::Role(Role::Ids);

/// What the IDS keeps per group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupRecord {
    /// Roster mode, fixed at creation.
    pub mode: RosterMode,
    /// Current epoch.
    pub epoch: u64,
    /// `A(epoch)`.
    pub auth_key: [u8; 32],
    /// `A(e)` of the last [`ACCEPTED_EPOCHS`] epochs, to check retries of
    /// messages accepted then.
    pub past_auth: Vec<(u64, [u8; 32])>,
}

impl Stored for GroupRecord {
    const KIND: &'static str = "IDS group";
    const VERSION: u8 = 1;
}

impl Stored for SealedRoster {
    const KIND: &'static str = "IDS sealed roster";
    const VERSION: u8 = 1;
}

/// An accepted send: what to fan out, and the writes that must be durable
/// first.
pub struct Accepted {
    /// The fan-out, with what the group keeps if it leaves copies a retry
    /// may still store.
    pub fanout: FanOut,
    /// What must be durable before any copy leaves: the accepted message id,
    /// and for a commit the next epoch's record and roster.
    pub writes: Batch,
}

/// One group's state machine.
pub struct GroupCore {
    group: Vec<u8>,
    record: Option<GroupRecord>,
    /// The day of the group's last creation or accepted send, as stored
    /// under `t/GROUP` (`None`: never noted, as for groups from before).
    active: Option<u32>,
}

fn group_key(g: &[u8]) -> Vec<u8> {
    let mut k = b"g/".to_vec();
    k.extend_from_slice(g);
    k
}

/// `t/GROUP` → the day (since 1970, 4 bytes BE) the group was last active.
fn active_key(g: &[u8]) -> Vec<u8> {
    let mut k = b"t/".to_vec();
    k.extend_from_slice(g);
    k
}

/// Prefix of the idle index: `i/DAY/LEN/GROUP` → nothing, one entry per
/// group under the day it was last active, so the oldest come first. The
/// length byte keeps one group's entry from being a prefix of another's.
pub const IDLE_INDEX: &[u8] = b"i/";

fn idle_key(day: u32, g: &[u8]) -> Vec<u8> {
    let mut k = IDLE_INDEX.to_vec();
    k.extend_from_slice(&day.to_be_bytes());
    k.push(g.len() as u8);
    k.extend_from_slice(g);
    k
}

/// The day and group of an idle-index key ([`IDLE_INDEX`]).
pub fn parse_idle_key(k: &[u8]) -> Option<(u32, Vec<u8>)> {
    let rest = k.strip_prefix(IDLE_INDEX)?;
    let day = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    let len = *rest.get(4)? as usize;
    let group = rest.get(5..)?;
    (group.len() == len).then(|| (day, group.to_vec()))
}

/// Days since 1970 at `now`.
pub fn day_of(now: std::time::SystemTime) -> u32 {
    (crate::sig::unix(now) / (24 * 3600)) as u32
}

fn roster_key(g: &[u8], epoch: u64) -> Vec<u8> {
    let mut k = b"r/".to_vec();
    k.extend_from_slice(g);
    k.push(b'/');
    k.extend_from_slice(&epoch.to_be_bytes());
    k
}

fn accepted_prefix(g: &[u8], epoch: u64) -> Vec<u8> {
    let mut k = b"a/".to_vec();
    k.extend_from_slice(g);
    k.push(b'/');
    k.extend_from_slice(&epoch.to_be_bytes());
    k
}

fn accepted_key(g: &[u8], epoch: u64, message_id: &[u8; 32]) -> Vec<u8> {
    let mut k = accepted_prefix(g, epoch);
    k.extend_from_slice(message_id);
    k
}

/// Epochs for which accepted message ids are remembered.
pub const ACCEPTED_EPOCHS: u64 = 8;

/// Most bytes of a group id.
pub const MAX_GROUP_ID: usize = 64;

/// What the IDS reads of a send's MLS message: the epoch it belongs to and
/// whether it is a commit. Nothing else of the message is looked at (the
/// content is encrypted or signed for the members, not for the IDS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    /// The message's epoch.
    pub epoch: u64,
    /// Whether it is a commit (one per epoch is accepted).
    pub is_commit: bool,
}

/// Parses the MLS framing of a send (an `MLSMessage` holding a public or
/// private message) and checks it names `group`. Network input: any bytes
/// give a `Framing` or an `InvalidMessage`, never a panic (fuzzed in fuzz/).
pub fn read_framing(message: &[u8], group: &[u8]) -> Result<Framing, WireError> {
    let msg = MlsMessageIn::tls_deserialize_exact(message)
        .map_err(|e| WireError::Ids(IdsError::InvalidMessage(e.to_string())))?;
    let proto = msg
        .try_into_protocol_message()
        .map_err(|_| WireError::Ids(IdsError::InvalidMessage("not a protocol message".into())))?;
    if proto.group_id().as_slice() != group {
        return Err(WireError::Ids(IdsError::InvalidMessage(
            "group id differs from the request".into(),
        )));
    }
    Ok(Framing {
        epoch: proto.epoch().as_u64(),
        is_commit: proto.content_type() == ContentType::Commit,
    })
}

/// Checks that a commit's Welcome is an MLS Welcome before it is fanned out.
pub fn check_welcome(bytes: &[u8]) -> Result<(), WireError> {
    let parsed = MlsMessageIn::tls_deserialize_exact(bytes)
        .map_err(|e| WireError::Ids(IdsError::InvalidMessage(format!("welcome: {e}"))))?;
    if !matches!(parsed.extract(), MlsMessageBodyIn::Welcome(_)) {
        return Err(WireError::Ids(IdsError::InvalidMessage("welcome is not a Welcome".into())));
    }
    Ok(())
}

/// Opens a sealed roster with `key` (aad = group id).
pub fn open_roster(
    key: &[u8; 32],
    group: &[u8],
    sealed: &SealedRoster,
) -> Result<Vec<RosterEntry>, WireError> {
    use mlsd_transport::sealed::SealError;
    mlsd_transport::sealed::open_roster(key, group, sealed).map_err(|e| match e {
        SealError::Malformed => {
            WireError::Frame(BadFrame::Malformed("roster: not a roster".into()))
        }
        _ => {
            WireError::Auth(AuthError::NotAuthorized("roster key does not open the roster".into()))
        }
    })
}

/// The message ids the group accepted in `epoch`, if that epoch is still
/// within the last [`ACCEPTED_EPOCHS`] (older ones are forgotten): what a
/// checker of one commit per epoch reads.
pub fn accepted_ids(
    group: &[u8],
    epoch: u64,
    store: &dyn View,
) -> Result<Vec<[u8; 32]>, WireError> {
    let prefix = accepted_prefix(group, epoch);
    let rows = store.scan_prefix(SPACE, &prefix, 100_000).map_err(internal)?;
    Ok(rows.into_iter().filter_map(|(k, _)| k[prefix.len()..].try_into().ok()).collect())
}

impl GroupCore {
    /// Loads group `group` from storage (or none yet).
    pub fn load(group: &[u8], store: &dyn View) -> Result<Self, WireError> {
        let record = match store.get(SPACE, &group_key(group)).map_err(internal)? {
            Some(v) => Some(record::decode(&v)?),
            None => None,
        };
        let active = match store.get(SPACE, &active_key(group)).map_err(internal)? {
            Some(v) => Some(u32::from_be_bytes(v.as_slice().try_into().map_err(internal)?)),
            None => None,
        };
        Ok(GroupCore { group: group.to_vec(), record, active })
    }

    /// Adds to `writes` the note that the group was active on `day` (its
    /// creation or an accepted send), unless that day is noted already: at
    /// most one extra write per group per day.
    pub fn touch(&mut self, day: u32, writes: &mut Batch) {
        if self.record.is_none() || self.active == Some(day) {
            return;
        }
        if let Some(old) = self.active {
            writes.delete(SPACE, idle_key(old, &self.group));
        }
        writes.put(SPACE, idle_key(day, &self.group), Vec::new());
        writes.put(SPACE, active_key(&self.group), day.to_be_bytes().to_vec());
        self.active = Some(day);
    }

    /// The deletion of idle-index entry `day` of this group when it is stale
    /// (the group is gone, or was active on another day since): a sweep that
    /// finds one removes it instead of finding it again forever.
    pub fn stale_index_entry(&self, day: u32) -> Option<Batch> {
        if self.record.is_some() && self.active == Some(day) {
            return None;
        }
        let mut b = Batch::new();
        b.delete(SPACE, idle_key(day, &self.group));
        Some(b)
    }

    /// The writes that delete the group, if it was last active on or before
    /// day `cutoff`: its record, rosters, accepted message ids and kept
    /// sends, read by exact key (group ids vary in length, so a prefix of
    /// one group's keys may hold another's). `None` when the group is not
    /// idle, was never noted active, or does not exist. The core forgets
    /// the group at once; the caller must make the writes durable.
    pub fn collect(&mut self, cutoff: u32, store: &dyn View) -> Result<Option<Batch>, WireError> {
        let (Some(rec), Some(day)) = (&self.record, self.active) else { return Ok(None) };
        if day > cutoff {
            return Ok(None);
        }
        let mut b = Batch::new();
        // Older epochs' rosters and ids went with the commits that left them.
        for epoch in rec.epoch.saturating_sub(ACCEPTED_EPOCHS)..=rec.epoch {
            b.delete(SPACE, roster_key(&self.group, epoch));
            let prefix = accepted_prefix(&self.group, epoch);
            for (k, _) in store.scan_prefix(SPACE, &prefix, 100_000).map_err(internal)? {
                if k.len() == prefix.len() + 32 {
                    b.delete(SPACE, k);
                }
            }
        }
        kept::forget_all(store, &self.group, &mut b)?;
        b.delete(SPACE, group_key(&self.group));
        b.delete(SPACE, active_key(&self.group));
        b.delete(SPACE, idle_key(day, &self.group));
        self.record = None;
        self.active = None;
        Ok(Some(b))
    }

    /// The current epoch, if the group exists.
    pub fn epoch(&self) -> Option<u64> {
        self.record.as_ref().map(|r| r.epoch)
    }

    /// `CreateGroup`: first come, first served. Returns the writes that
    /// create it; the core counts the group as created from now on, so a host
    /// whose write fails loads the core again. The creator's own request
    /// again (its answer was lost, or its entry node retried it after a
    /// leader change) finds the group as it created it, at epoch 0 with its
    /// mode and auth key, and is answered as the first time, with nothing to
    /// write; anyone else gets `GroupTaken`. (Only the creator and members
    /// know the auth key, and a member's copy changes nothing.)
    pub fn create(
        &mut self,
        mode: RosterMode,
        auth_key: [u8; 32],
        roster: Option<SealedRoster>,
    ) -> Result<Batch, WireError> {
        if self.group.is_empty() || self.group.len() > MAX_GROUP_ID {
            return Err(WireError::Frame(BadFrame::Malformed("group id length".into())));
        }
        if let Some(r) = &self.record {
            // The creator's retry (it holds epoch 0's auth key), also after
            // the group moved on, within the epochs whose keys are kept.
            let created_with = |k: &[u8; 32]| *k == auth_key;
            let creator = (r.epoch == 0 && created_with(&r.auth_key))
                || r.past_auth.iter().any(|(e, k)| *e == 0 && created_with(k));
            if creator && r.mode == mode {
                return Ok(Batch::new());
            }
            return Err(WireError::Ids(IdsError::GroupTaken));
        }
        let record = GroupRecord { mode, epoch: 0, auth_key, past_auth: Vec::new() };
        let mut b = Batch::new();
        match (mode, roster) {
            (RosterMode::Stored, Some(r)) => {
                b.put(SPACE, roster_key(&self.group, 0), record::encode(&r)?)
            }
            (RosterMode::Stored, None) => {
                return Err(WireError::Frame(BadFrame::Malformed(
                    "stored mode needs a sealed roster".into(),
                )))
            }
            (RosterMode::Client, Some(_)) => {
                return Err(WireError::Frame(BadFrame::Malformed(
                    "client mode takes no stored roster".into(),
                )))
            }
            (RosterMode::Client, None) => {}
        }
        b.put(SPACE, group_key(&self.group), record::encode(&record)?);
        self.record = Some(record);
        Ok(b)
    }

    fn recipients(
        &self,
        rec: &GroupRecord,
        epoch: u64,
        recipients: &Recipients,
        skip: Option<&DeliveryCap>,
        store: &dyn View,
    ) -> Result<(Vec<RosterEntry>, Option<SealedRoster>), WireError> {
        let sealed = match rec.mode {
            RosterMode::Stored => Some(self.stored_roster(epoch, store)?),
            RosterMode::Client => None,
        };
        let list = self.recipients_from(rec, sealed.as_ref(), recipients, skip)?;
        Ok((list, sealed))
    }

    fn stored_roster(&self, epoch: u64, store: &dyn View) -> Result<SealedRoster, WireError> {
        let sealed = store
            .get(SPACE, &roster_key(&self.group, epoch))
            .map_err(internal)?
            .ok_or_else(|| {
                WireError::Cluster(ClusterError::Internal("no roster stored for this epoch".into()))
            })?;
        record::decode(&sealed)
    }

    /// The recipients of a send, from the sealed roster of its epoch (stored
    /// mode) or the send itself (client mode), minus `skip`.
    fn recipients_from(
        &self,
        rec: &GroupRecord,
        sealed: Option<&SealedRoster>,
        recipients: &Recipients,
        skip: Option<&DeliveryCap>,
    ) -> Result<Vec<RosterEntry>, WireError> {
        let mut list = match (rec.mode, recipients, sealed) {
            (RosterMode::Stored, Recipients::RosterKey(k), Some(sealed)) => {
                open_roster(k, &self.group, sealed)?
            }
            (RosterMode::Client, Recipients::Roster(r), _) => r.clone(),
            _ => {
                return Err(WireError::Frame(BadFrame::Malformed(
                    "recipients do not match the roster mode".into(),
                )))
            }
        };
        if list.len() > MAX_ROSTER {
            return Err(WireError::Frame(BadFrame::Malformed("roster too large".into())));
        }
        if let Some(skip) = skip {
            list.retain(|e| e.cap.token != skip.token);
        }
        Ok(list)
    }

    /// `Send`: checks the MAC and the MLS framing, enforces one commit per
    /// epoch and returns what to fan out, with the writes the host must make
    /// durable before anything is fanned out. The core moves to the next
    /// epoch at once, so a host whose write fails loads the core again. `now`
    /// dates a kept send's expiry.
    pub fn accept_send(
        &mut self,
        body: &SendBody,
        mac: &[u8; 32],
        store: &dyn View,
        now: std::time::SystemTime,
    ) -> Result<Accepted, WireError> {
        let rec = self.record.clone().ok_or(WireError::Ids(IdsError::UnknownGroup))?;
        let Framing { epoch, is_commit } = read_framing(&body.message, &body.group)?;
        if is_commit != body.commit.is_some() {
            return Err(WireError::Ids(IdsError::InvalidMessage(
                "commit extras must come with commits only".into(),
            )));
        }
        let message = std::sync::Arc::new(body.message.clone());
        let digest = send_digest(body)?;
        let week = crate::storage::week(crate::sig::unix(now));

        // A retry of a message or commit accepted in a recent epoch (its
        // sender lost our answer, or some copies were missing): deliver it
        // again with that epoch's roster; the ODS stores each copy once, and a
        // committer learns its commit won.
        if epoch <= rec.epoch && epoch + ACCEPTED_EPOCHS > rec.epoch {
            let key = accepted_key(&self.group, epoch, &body.message_id);
            if let Some(accepted) = store.get(SPACE, &key).map_err(internal)? {
                if !accepted.is_empty() && accepted != digest {
                    return Err(reused_id());
                }
                let auth = if epoch == rec.epoch {
                    Some(rec.auth_key)
                } else {
                    rec.past_auth.iter().find(|(e, _)| *e == epoch).map(|(_, k)| *k)
                };
                let auth = auth.ok_or(WireError::Ids(IdsError::BadMac))?;
                if !constant_eq(&send_mac(&auth, body), mac) {
                    return Err(WireError::Ids(IdsError::BadMac));
                }
                let (recipients, roster) =
                    self.recipients(&rec, epoch, &body.recipients, body.skip.as_ref(), store)?;
                let keep = KeptSend { epoch, digest, auth_key: auth, roster, week };
                return Ok(self.plan(body, message, recipients, keep, false));
            }
        }
        // Older than that: a send kept because copies were missing.
        if epoch < rec.epoch {
            if let Some(k) = kept::load(store, &self.group, &body.message_id, week)? {
                if k.epoch != epoch || k.digest != digest {
                    return Err(reused_id());
                }
                if !constant_eq(&send_mac(&k.auth_key, body), mac) {
                    return Err(WireError::Ids(IdsError::BadMac));
                }
                let recipients = self.recipients_from(
                    &rec,
                    k.roster.as_ref(),
                    &body.recipients,
                    body.skip.as_ref(),
                )?;
                return Ok(self.plan(body, message, recipients, k, true));
            }
        }
        // A member behind (or a commit that lost the race for its epoch) learns
        // the current epoch so it can catch up; nothing is changed either way.
        if epoch != rec.epoch {
            return Err(WireError::Ids(IdsError::StaleEpoch { current: rec.epoch }));
        }
        if !constant_eq(&send_mac(&rec.auth_key, body), mac) {
            return Err(WireError::Ids(IdsError::BadMac));
        }
        let (recipients, roster) =
            self.recipients(&rec, epoch, &body.recipients, body.skip.as_ref(), store)?;
        // The message id is remembered (durably, before any copy leaves) so
        // a retry is recognized even after the group moved on.
        let mut b = Batch::new();
        b.put(SPACE, accepted_key(&self.group, epoch, &body.message_id), digest.to_vec());
        if let Some(extras) = &body.commit {
            if let Some(w) = &extras.welcome {
                check_welcome(w)?;
            }
            match (rec.mode, &extras.next_roster) {
                (RosterMode::Stored, Some(r)) => {
                    b.put(SPACE, roster_key(&self.group, epoch + 1), record::encode(r)?)
                }
                (RosterMode::Stored, None) => {
                    return Err(WireError::Frame(BadFrame::Malformed(
                        "stored mode commit needs the next roster".into(),
                    )))
                }
                (RosterMode::Client, _) => {}
            }
            if epoch + 1 >= ACCEPTED_EPOCHS {
                // Rosters and message ids this old are no longer needed for retries.
                let old = epoch + 1 - ACCEPTED_EPOCHS;
                b.delete(SPACE, roster_key(&self.group, old));
                for (k, _) in store
                    .scan_prefix(SPACE, &accepted_prefix(&self.group, old), 100_000)
                    .map_err(internal)?
                {
                    b.delete(SPACE, k);
                }
            }
            let mut past_auth = rec.past_auth.clone();
            past_auth.push((epoch, rec.auth_key));
            let keep = past_auth.len().saturating_sub(ACCEPTED_EPOCHS as usize);
            past_auth.drain(..keep);
            let next = GroupRecord {
                mode: rec.mode,
                epoch: epoch + 1,
                auth_key: extras.next_auth_key,
                past_auth,
            };
            b.put(SPACE, group_key(&self.group), record::encode(&next)?);
            self.record = Some(next);
        }
        let keep = KeptSend { epoch, digest, auth_key: rec.auth_key, roster, week };
        let mut accepted = self.plan(body, message, recipients, keep, false);
        accepted.writes = b;
        Ok(accepted)
    }

    fn plan(
        &self,
        body: &SendBody,
        message: std::sync::Arc<Vec<u8>>,
        recipients: Vec<RosterEntry>,
        keep: KeptSend,
        from_kept: bool,
    ) -> Accepted {
        let welcome = body.commit.as_ref().and_then(|c| {
            c.welcome.as_ref().map(|w| (std::sync::Arc::new(w.clone()), c.welcome_to.clone()))
        });
        let plan = FanoutPlan { message_id: body.message_id, message, recipients, welcome };
        Accepted { fanout: FanOut { plan, keep, from_kept }, writes: Batch::new() }
    }

    /// The group id.
    pub fn group(&self) -> &[u8] {
        &self.group
    }
}

/// SHA-256 of a send's whole body (message, recipients, commit extras): a
/// retry under an accepted message id must be this send, byte for byte.
fn send_digest(body: &SendBody) -> Result<[u8; 32], WireError> {
    use sha2::Digest;
    let bytes = Zeroizing::new(codec::encode(body).map_err(internal)?);
    Ok(sha2::Sha256::digest(&bytes[..]).into())
}

fn reused_id() -> WireError {
    WireError::Ids(IdsError::InvalidMessage(
        "this message id was accepted with a different send; a retry must be identical".into(),
    ))
}

fn constant_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
