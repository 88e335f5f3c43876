//! Groups: creating them, adding and removing members, sending and receiving
//! (steps 5-7 of the brief, client side).
//!
//! The client computes everything the IDS needs from its MLS group state:
//! rosters (`{capability, K(r, e)}` from members' mailbox
//! references), the roster key `R(e)` and the epoch auth key `A(e)`, all from
//! the MLS exporter. A committer computes the next epoch's values from its
//! staged commit before sending it, so commit, Welcome and next roster travel
//! in one request.
//!
//! # Layout
//! - this module: the group state shared by the rest (metadata, exporter
//!   secrets, rosters, the payloads inside MLS messages);
//! - `create`: creating a group, and its group data in the SDS (step 8);
//! - `commit`: adding, removing, self-updates, and settling a commit whose
//!   answer was lost;
//! - `send`: application messages;
//! - `files`: attachments;
//! - `receive`: fetching, opening and processing what the mailbox holds.

use mlsd_transport::envelope::{self, GroupSettings, Kind, MailboxRef, GROUP_SETTINGS_EXTENSION};
use mlsd_transport::protocol::ids::{
    send_mac, EXPORT_AUTH, EXPORT_DATA_CAP, EXPORT_DATA_ID, EXPORT_DATA_KEY, EXPORT_ENVELOPE,
    EXPORT_ROSTER,
};
use mlsd_transport::protocol::{
    CommitExtras, IdsRequest, IdsResponse, Recipients, RosterEntry, RosterMode, SealedRoster,
    SendBody, Undeliverable, WelcomeCopy,
};
use mlsd_transport::{codec, Request, Response, WireError};
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::{
    BasicCredential, CredentialWithKey, Extension, Extensions, GroupId, KeyPackage, LeafNodeIndex,
    MlsGroup, MlsGroupCreateConfig, MlsGroupJoinConfig, MlsMessageBodyIn, MlsMessageIn,
    ProcessedMessageContent, StagedWelcome, UnknownExtension, PURE_CIPHERTEXT_WIRE_FORMAT_POLICY,
};
use openmls_traits::OpenMlsProvider;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

mod commit;
mod create;
mod files;
mod receive;
mod send;

pub use crate::leaf::{capabilities, mailbox_extension, mailbox_ref_of};
pub use crate::state::{Event, GroupMeta};

use crate::client::Client;
use crate::leaf::mailbox_ref_of_kp;
use crate::retry::{self, Patience};
use crate::state::now_secs;
use crate::{ClientError, CIPHERSUITE};

/// Past epochs whose envelope keys and MLS secrets are kept per group: an
/// application message accepted by the IDS just before a commit may reach a
/// member after that commit (fan-outs run concurrently), and a copy the IDS
/// delivers again on its sender's retry may come up to
/// `ACCEPTED_EPOCHS` (8) epochs late; it must still open. (A harsh chaos run
/// lost one acknowledged copy when this was 5.)
const KEPT_EPOCHS: usize = 8;

/// Application payloads inside MLS application messages.
#[derive(Serialize, Deserialize)]
enum Payload {
    Text(String),
    File(FileRef),
}

/// An attachment: where it is in the SDS and how to read it.
#[derive(Clone, Serialize, Deserialize)]
struct FileRef {
    id: [u8; 32],
    key: Zeroizing<[u8; 32]>,
    name: String,
    size: u64,
    sha256: [u8; 32],
}

/// What the creator and every committer store in the SDS for the epoch (step 8).
#[derive(Serialize, Deserialize)]
struct GroupData {
    name: String,
}

/// Largest attachment accepted, bytes.
pub const MAX_FILE: u64 = 64 * 1024 * 1024;

/// Work `receive` does after a batch: things that need the network.
enum Followup {
    ReadGroupData(Vec<u8>),
    /// Check the group's members against the AS (after a Welcome or commit).
    CheckMembers(Vec<u8>),
    Download {
        group: String,
        sender: String,
        file: FileRef,
    },
    /// Revoke, once sends from before the removal can no longer be retried,
    /// the capability our leaf delivered with in a group we were removed
    /// from: its other members hold it, and nothing later of that group is
    /// for us.
    RevokeCap([u8; 32]),
}

fn export32(
    group: &MlsGroup,
    provider: &impl OpenMlsProvider,
    label: &str,
    ctx: &[u8],
) -> Result<[u8; 32], ClientError> {
    let v = Zeroizing::new(
        group
            .export_secret(provider.crypto(), label, ctx, 32)
            .map_err(|e| ClientError::Crypto(e.to_string()))?,
    );
    v.as_slice().try_into().map_err(|_| ClientError::Crypto("exporter length".into()))
}

fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    rand::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut b).expect("OS randomness");
    b
}

fn seal_roster(
    key: &[u8; 32],
    group: &[u8],
    roster: &[RosterEntry],
) -> Result<SealedRoster, ClientError> {
    let nonce = random32();
    let nonce: [u8; 24] = std::array::from_fn(|i| nonce[i]);
    mlsd_transport::sealed::seal_roster(key, &nonce, group, roster)
        .map_err(|_| ClientError::Crypto("sealing the roster".into()))
}

/// `(leaf index, client id, mailbox reference)` of every member.
fn members(group: &MlsGroup) -> Vec<(LeafNodeIndex, String, Option<MailboxRef>)> {
    group
        .members()
        .map(|m| {
            let client = BasicCredential::try_from(m.credential.clone())
                .map(|c| String::from_utf8_lossy(c.identity()).into_owned())
                .unwrap_or_default();
            let r = group.public_group().leaf(m.index).and_then(mailbox_ref_of);
            (m.index, client, r)
        })
        .collect()
}

/// Our own leaf's capability in `group`: what members deliver to us with,
/// what our envelope keys are derived for, and what we skip in our sends.
pub(crate) fn own_cap(group: &MlsGroup) -> Option<mlsd_transport::protocol::DeliveryCap> {
    group.own_leaf_node().and_then(mailbox_ref_of).map(|r| r.cap)
}

/// Exports per epoch: from the current group or from a staged commit.
enum Exporter<'a> {
    Current(&'a MlsGroup),
    Staged(&'a openmls::prelude::StagedCommit),
}

impl Exporter<'_> {
    fn export(
        &self,
        p: &impl OpenMlsProvider,
        label: &str,
        ctx: &[u8],
    ) -> Result<[u8; 32], ClientError> {
        let v = match self {
            Exporter::Current(g) => return export32(g, p, label, ctx),
            Exporter::Staged(s) => s.export_secret(p.crypto(), label, ctx, 32),
        };
        let v = Zeroizing::new(v.map_err(|e| ClientError::Crypto(e.to_string()))?);
        v.as_slice().try_into().map_err(|_| ClientError::Crypto("exporter length".into()))
    }
}

fn roster(
    refs: &[MailboxRef],
    exp: &Exporter<'_>,
    p: &impl OpenMlsProvider,
) -> Result<Vec<RosterEntry>, ClientError> {
    refs.iter()
        .map(|r| {
            Ok(RosterEntry {
                cap: r.cap.clone(),
                key: exp.export(p, EXPORT_ENVELOPE, &r.cap.token)?,
            })
        })
        .collect()
}

impl Client {
    pub(crate) fn group_meta(&self, name: &str) -> Result<GroupMeta, ClientError> {
        self.groups
            .values()
            .find(|g| g.name == name)
            .cloned()
            .ok_or_else(|| ClientError::Home(format!("no group named {name:?}")))
    }

    pub(crate) fn load_group(&self, id: &[u8]) -> Result<MlsGroup, ClientError> {
        MlsGroup::load(self.provider.storage(), &GroupId::from_slice(id))
            .map_err(|e| ClientError::Home(format!("MLS state: {e:?}")))?
            .ok_or_else(|| ClientError::Home("MLS state of the group is missing".into()))
    }

    fn save_groups(&self) -> Result<(), ClientError> {
        self.home.save_storage(self.provider.storage())?;
        let list: Vec<&GroupMeta> = self.groups.values().collect();
        self.home.save("groups", &list)
    }

    /// Records `K(me, e)` of the group's current epoch.
    fn remember_epoch(&mut self, group: &MlsGroup) -> Result<(), ClientError> {
        let me = own_cap(group).ok_or_else(|| {
            ClientError::Home("our leaf in the group has no mailbox reference".into())
        })?;
        let key = Zeroizing::new(export32(group, &self.provider, EXPORT_ENVELOPE, &me.token)?);
        let epoch = group.epoch().as_u64();
        let meta =
            self.groups.get_mut(group.group_id().as_slice()).ok_or(ClientError::NotRegistered)?;
        if !meta.keys.iter().any(|(e, _)| *e == epoch) {
            meta.keys.push((epoch, key));
        }
        while meta.keys.len() > KEPT_EPOCHS {
            meta.keys.remove(0);
        }
        Ok(())
    }

    /// Client id of every member by capability token, from the group's
    /// current state (the outbox names undelivered recipients with it).
    pub(crate) fn member_caps(&self, gid: &[u8]) -> std::collections::HashMap<[u8; 32], String> {
        let Ok(group) = self.load_group(gid) else { return Default::default() };
        members(&group).into_iter().filter_map(|(_, c, r)| Some((r?.cap.token, c))).collect()
    }

    /// The name of each active group by the token of our capability in it.
    pub fn group_caps(&self) -> std::collections::HashMap<[u8; 32], String> {
        self.groups
            .values()
            .filter(|g| g.active)
            .filter_map(|g| {
                let group = self.load_group(&g.id).ok()?;
                Some((own_cap(&group)?.token, g.name.clone()))
            })
            .collect()
    }

    /// The local name of group `gid` (hex of its id if it is not known).
    pub(crate) fn group_name(&self, gid: &[u8]) -> String {
        self.groups.get(gid).map(|g| g.name.clone()).unwrap_or_else(|| hex::encode(gid))
    }

    /// Names of this client's groups.
    pub fn group_names(&self) -> Vec<String> {
        let mut v: Vec<_> =
            self.groups.values().filter(|g| g.active).map(|g| g.name.clone()).collect();
        v.sort();
        v
    }

    /// Client ids of a group's members.
    pub fn group_members(&self, name: &str) -> Result<Vec<String>, ClientError> {
        let g = self.load_group(&self.group_meta(name)?.id)?;
        Ok(members(&g).into_iter().map(|(_, c, _)| c).collect())
    }

    /// The MLS group id of a named group.
    pub fn group_id(&self, name: &str) -> Result<Vec<u8>, ClientError> {
        Ok(self.group_meta(name)?.id)
    }

    /// The current epoch of a named group.
    pub fn group_epoch(&self, name: &str) -> Result<u64, ClientError> {
        Ok(self.load_group(&self.group_meta(name)?.id)?.epoch().as_u64())
    }

    /// The recipients for a send in the group's current epoch.
    fn recipients(&self, group: &MlsGroup, mode: RosterMode) -> Result<Recipients, ClientError> {
        Ok(match mode {
            RosterMode::Stored => {
                Recipients::RosterKey(export32(group, &self.provider, EXPORT_ROSTER, &[])?)
            }
            RosterMode::Client => {
                let refs: Vec<MailboxRef> =
                    members(group).into_iter().filter_map(|(_, _, r)| r).collect();
                Recipients::Roster(roster(&refs, &Exporter::Current(group), &self.provider)?)
            }
        })
    }

    /// The `Send` for `body`, MAC'd under the group's current epoch auth key.
    fn send_request_for(&self, group: &MlsGroup, body: SendBody) -> Result<Request, ClientError> {
        let mac = send_mac(&export32(group, &self.provider, EXPORT_AUTH, &[])?, &body);
        Ok(Request::Ids(IdsRequest::Send { body: Box::new(body), mac }))
    }

    /// This device's mailbox keys (tests and tools inspect raw envelopes with them).
    pub fn mailbox_keys(&self) -> Option<&crate::mailbox::MailboxKeys> {
        self.mailbox.as_ref()
    }

    /// `K(me, e)` of every epoch this device keeps, over all its groups.
    pub fn envelope_keys(&self) -> Vec<[u8; 32]> {
        self.groups.values().flat_map(|g| g.keys.iter().map(|(_, k)| **k)).collect()
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

/// The copies of a send that stored every copy; a partial delivery is
/// [`ClientError::Undelivered`] (the outbox retries and reports those).
fn sent_copies(r: Response) -> Result<u32, ClientError> {
    match r {
        Response::Ids(IdsResponse::Sent { copies }) => Ok(copies),
        Response::Ids(IdsResponse::PartlySent { copies, failed, undelivered }) => {
            Err(ClientError::Undelivered { copies, failed, undelivered })
        }
        other => Err(ClientError::Unexpected(format!("{other:?}"))),
    }
}
