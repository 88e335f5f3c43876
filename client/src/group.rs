//! Groups: creating them, adding and removing members, sending and receiving
//! (steps 5-7 of the brief, client side).
//!
//! The client computes everything the IDS needs from its MLS group state:
//! rosters (`{mailbox id, K(r, e), push key}` from members' mailbox
//! references), the roster key `R(e)` and the epoch auth key `A(e)`, all from
//! the MLS exporter. A committer computes the next epoch's values from its
//! staged commit before sending it, so commit, Welcome and next roster travel
//! in one request.

use mlsd_transport::envelope::{
    self, GroupSettings, Kind, MailboxRef, GROUP_SETTINGS_EXTENSION, MAILBOX_REF_EXTENSION,
};
use mlsd_transport::protocol::group::{
    send_mac, EXPORT_AUTH, EXPORT_DATA_CAP, EXPORT_DATA_ID, EXPORT_DATA_KEY, EXPORT_ENVELOPE,
    EXPORT_ROSTER,
};
use mlsd_transport::protocol::{
    CommitExtras, Recipients, RosterEntry, RosterMode, SealedRoster, SendBody, Undeliverable,
    WelcomeCopy,
};
use mlsd_transport::{codec, Request, Response, WireError};
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::{
    BasicCredential, Capabilities, CredentialWithKey, Extension, ExtensionType, Extensions,
    GroupId, KeyPackage, LeafNode, LeafNodeIndex, MlsGroup, MlsGroupCreateConfig,
    MlsGroupJoinConfig, MlsMessageBodyIn, MlsMessageIn, ProcessedMessageContent, StagedWelcome,
    UnknownExtension, PURE_CIPHERTEXT_WIRE_FORMAT_POLICY,
};
use openmls_traits::OpenMlsProvider;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::client::{now_secs, Client};
use crate::{ClientError, CIPHERSUITE};

/// Past epochs whose envelope keys and MLS secrets are kept per group: an
/// application message accepted by the IDS just before a commit may reach a
/// member after that commit (fan-outs run concurrently), and a copy the IDS
/// delivers again on its sender's retry may come up to
/// `ACCEPTED_EPOCHS` (8) epochs late; it must still open. (A harsh chaos run
/// lost one acknowledged copy when this was 5.)
const KEPT_EPOCHS: usize = 8;

/// How long a commit is retried while the cluster cannot be reached.
const COMMIT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// How long an accepted commit is sent again, before the call returns, while
/// some members' ODS is unavailable (a node restarting): a member without
/// its copy cannot follow the group, so the copy is worth a short wait. What
/// is still missing after it is left to the outbox.
const COPY_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// Home file of envelopes that no key of ours opened yet (see `receive`),
/// each with the Unix time it was first kept.
const DEFERRED: &str = "deferred.v2";

/// The older form of [`DEFERRED`] (envelopes only), read once and converted.
const OLD_DEFERRED: &str = "deferred_envelopes";

/// Most such envelopes kept. They are acknowledged at the ODS, so they are
/// never evicted to make room: when this many wait, `receive` stops before
/// the next envelope that would have to wait too, leaving it (and what
/// follows) at the ODS until keys arrive or old ones expire.
const MAX_DEFERRED: usize = 4096;

/// How long a kept envelope waits for a key: longer than any sender retries
/// or a commit's copy can be delayed; one that no key opened by then was
/// never for a group we are in.
const DEFERRED_SECS: u64 = 14 * 24 * 3600;

/// Home file of our commits whose outcome is not known yet (see `settle`).
const UNSETTLED: &str = "unsettled_commits";

/// How often a change is retried after losing an epoch race.
const MAX_RETRIES: usize = 5;

/// What the client keeps about a group besides the MLS state.
#[derive(Clone, Serialize, Deserialize)]
pub struct GroupMeta {
    /// Local name.
    pub name: String,
    /// MLS group id.
    pub id: Vec<u8>,
    /// Roster mode at the IDS.
    pub mode: RosterMode,
    /// `K(me, e)` for recent epochs, newest last.
    pub keys: Vec<(u64, Zeroizing<[u8; 32]>)>,
    /// Whether we are still a member.
    pub active: bool,
}

/// Something `receive` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// We were added to a group.
    Joined {
        /// Local name of the group.
        group: String,
    },
    /// An application message.
    Message {
        /// Local name of the group.
        group: String,
        /// Sender's client id.
        sender: String,
        /// The text.
        text: String,
    },
    /// A commit moved a group to a new epoch.
    Commit {
        /// Local name of the group.
        group: String,
        /// The new epoch.
        epoch: u64,
    },
    /// A member of a group is not vouched for by the AS (its client id has
    /// no live binding to its key): sends to the group are refused until it
    /// is removed.
    Unverified {
        /// Local name of the group.
        group: String,
        /// The client id it claims.
        member: String,
        /// Why it failed.
        reason: String,
    },
    /// We were removed from a group.
    Removed {
        /// Local name of the group.
        group: String,
    },
    /// A file was announced but could not be downloaded or failed its check.
    FileFailed {
        /// Local name of the group.
        group: String,
        /// Sender's client id.
        sender: String,
        /// The file's name.
        name: String,
        /// What went wrong.
        reason: String,
    },
    /// A file arrived, was downloaded, decrypted, checked and saved.
    File {
        /// Local name of the group.
        group: String,
        /// Sender's client id.
        sender: String,
        /// Where it was saved.
        path: std::path::PathBuf,
    },
}

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
}

/// Leaf capabilities of every mlsd client: our ciphersuite, last-resort
/// KeyPackages and the mailbox reference extension. Public so that tools
/// (and tests playing a modified client) build leaves mlsd groups accept.
pub fn capabilities() -> Capabilities {
    Capabilities::new(
        None,
        Some(&[CIPHERSUITE]),
        Some(&[
            ExtensionType::LastResort,
            ExtensionType::Unknown(MAILBOX_REF_EXTENSION),
            ExtensionType::Unknown(GROUP_SETTINGS_EXTENSION),
        ]),
        None,
        None,
    )
}

/// The leaf extension carrying `r`: where the IDS delivers that member's
/// copies. Public for the same reason as [`capabilities`].
pub fn mailbox_extension(r: &MailboxRef) -> Result<Extensions<LeafNode>, ClientError> {
    let bytes = codec::encode(r).map_err(|e| ClientError::Crypto(e.to_string()))?;
    Extensions::single(Extension::Unknown(MAILBOX_REF_EXTENSION, UnknownExtension(bytes)))
        .map_err(|e| ClientError::Crypto(e.to_string()))
}

/// The mailbox reference in a leaf node, if it has a valid one.
pub fn mailbox_ref_of(leaf: &LeafNode) -> Option<MailboxRef> {
    let ext = leaf.extensions().unknown(MAILBOX_REF_EXTENSION)?;
    codec::decode(&ext.0).ok()
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
                mailbox: r.mailbox,
                key: exp.export(p, EXPORT_ENVELOPE, &r.mailbox)?,
                push_key: r.push_key,
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
        let me = self.mailbox.as_ref().ok_or(ClientError::NotRegistered)?.id;
        let key = Zeroizing::new(export32(group, &self.provider, EXPORT_ENVELOPE, &me)?);
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

    /// Client id of every member by mailbox id, from the group's current
    /// state (the outbox names undelivered recipients with it).
    pub(crate) fn member_mailboxes(
        &self,
        gid: &[u8],
    ) -> std::collections::HashMap<mlsd_transport::protocol::MailboxId, String> {
        let Ok(group) = self.load_group(gid) else { return Default::default() };
        members(&group).into_iter().filter_map(|(_, c, r)| Some((r?.mailbox, c))).collect()
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

    /// Creates a group of one (us) and registers it at the IDS.
    pub async fn create_group(&mut self, name: &str, mode: RosterMode) -> Result<(), ClientError> {
        if self.groups.values().any(|g| g.name == name) {
            return Err(ClientError::Home(format!("a group named {name:?} exists")));
        }
        let id = self.identity.as_ref().ok_or(ClientError::NotRegistered)?;
        let mref = self.mailbox.as_ref().ok_or(ClientError::NotRegistered)?.reference();
        let cwk = CredentialWithKey {
            credential: BasicCredential::new(id.client.as_bytes().to_vec()).into(),
            signature_key: id.public_key.clone().into(),
        };
        let settings =
            GroupSettings { name: name.to_string(), stored_roster: mode == RosterMode::Stored };
        let settings = codec::encode(&settings).map_err(|e| ClientError::Crypto(e.to_string()))?;
        let gc_ext = Extensions::single(Extension::Unknown(
            GROUP_SETTINGS_EXTENSION,
            UnknownExtension(settings),
        ))
        .map_err(|e| ClientError::Crypto(e.to_string()))?;
        let config = MlsGroupCreateConfig::builder()
            .ciphersuite(CIPHERSUITE)
            .with_group_context_extensions(gc_ext)
            .use_ratchet_tree_extension(true)
            .wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
            .max_past_epochs(KEPT_EPOCHS)
            .capabilities(capabilities())
            .with_leaf_node_extensions(mailbox_extension(&mref)?)
            .map_err(|e| ClientError::Crypto(e.to_string()))?
            .build();
        let group_id = GroupId::from_slice(&random32()[..16]);
        let signer = self.signer()?;
        let group = MlsGroup::new_with_group_id(&self.provider, &signer, &config, group_id, cwk)
            .map_err(|e| ClientError::Crypto(e.to_string()))?;
        let gid = group.group_id().as_slice().to_vec();
        let auth_key = export32(&group, &self.provider, EXPORT_AUTH, &[])?;
        let roster = match mode {
            RosterMode::Stored => {
                let r = roster(&[mref], &Exporter::Current(&group), &self.provider)?;
                let k = Zeroizing::new(export32(&group, &self.provider, EXPORT_ROSTER, &[])?);
                Some(seal_roster(&k, &gid, &r)?)
            }
            RosterMode::Client => None,
        };
        match self
            .conn
            .request(Request::CreateGroup { group: gid.clone(), mode, auth_key, roster })
            .await?
        {
            Response::GroupCreated => {}
            other => return Err(ClientError::Unexpected(format!("{other:?}"))),
        }
        self.groups.insert(
            gid.clone(),
            GroupMeta { name: name.to_string(), id: gid, mode, keys: Vec::new(), active: true },
        );
        self.remember_epoch(&group)?;
        self.save_groups()?;
        self.store_group_data(&group, name).await
    }

    /// Step 8: stores the group's data for the current epoch in the SDS,
    /// encrypted, at an id only members of the epoch can derive.
    async fn store_group_data(&self, group: &MlsGroup, name: &str) -> Result<(), ClientError> {
        let id = export32(group, &self.provider, EXPORT_DATA_ID, &[])?;
        let key = Zeroizing::new(export32(group, &self.provider, EXPORT_DATA_KEY, &[])?);
        let cap = Zeroizing::new(export32(group, &self.provider, EXPORT_DATA_CAP, &[])?);
        let plain = codec::encode(&GroupData { name: name.to_string() })
            .map_err(|e| ClientError::Crypto(e.to_string()))?;
        let sealed = crate::blob::seal(&key, &id, &plain)?;
        crate::blob::put(&self.conn, id, *cap, &sealed).await
    }

    /// Step 8: reads the group's data of the current epoch from the SDS.
    async fn read_group_data(&self, group: &MlsGroup) -> Result<Option<String>, ClientError> {
        let id = export32(group, &self.provider, EXPORT_DATA_ID, &[])?;
        let key = Zeroizing::new(export32(group, &self.provider, EXPORT_DATA_KEY, &[])?);
        let sealed = match crate::blob::get(&self.conn, id, 1 << 20).await {
            Ok(s) => s,
            Err(ClientError::Server(WireError::UnknownBlob)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let plain = crate::blob::open(&key, &id, &sealed)?;
        let data: GroupData =
            codec::decode(&plain).map_err(|e| ClientError::Crypto(e.to_string()))?;
        Ok(Some(data.name))
    }

    /// The SDS id of a group's data in its current epoch (tests check that a
    /// removed member cannot derive the next one).
    pub fn group_data_id(&self, name: &str) -> Result<[u8; 32], ClientError> {
        let g = self.load_group(&self.group_meta(name)?.id)?;
        export32(&g, &self.provider, EXPORT_DATA_ID, &[])
    }

    /// Encrypts a file with a fresh key, uploads it to the SDS and sends its
    /// reference (id, key, name, size, hash) as an application message.
    pub async fn send_file(
        &mut self,
        name: &str,
        path: &std::path::Path,
    ) -> Result<u32, ClientError> {
        let req = self.prepare_file(name, path).await?;
        sent_copies(self.send_request(req).await?)
    }

    /// Uploads the file and prepares the `Send` that announces it.
    pub async fn prepare_file(
        &mut self,
        name: &str,
        path: &std::path::Path,
    ) -> Result<Request, ClientError> {
        let _ = self.check_members(name).await;
        self.refuse_unverified(&self.group_meta(name)?.id, name)?;
        let data = Zeroizing::new(
            std::fs::read(path)
                .map_err(|e| ClientError::Home(format!("{}: {e}", path.display())))?,
        );
        if data.len() as u64 > MAX_FILE {
            return Err(ClientError::Home(format!(
                "{} is larger than {MAX_FILE} bytes",
                path.display()
            )));
        }
        let id = random32();
        let key = Zeroizing::new(random32());
        let cap = Zeroizing::new(random32());
        let sealed = crate::blob::seal(&key, &id, &data)?;
        crate::blob::put(&self.conn, id, *cap, &sealed).await?;
        let file = FileRef {
            id,
            key,
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "file".into()),
            size: data.len() as u64,
            sha256: sha256(&data),
        };
        self.prepare_payload(name, &Payload::File(file))
    }

    async fn download(
        &self,
        group: String,
        sender: String,
        file: FileRef,
    ) -> Result<Event, ClientError> {
        let sealed = crate::blob::get(&self.conn, file.id, MAX_FILE + 64).await?;
        let plain = crate::blob::open(&file.key, &file.id, &sealed)?;
        if sha256(&plain) != file.sha256 || plain.len() as u64 != file.size {
            return Err(ClientError::Crypto(format!("file {} does not match its hash", file.name)));
        }
        let dir = self.home.dir().join("files");
        std::fs::create_dir_all(&dir).map_err(|e| ClientError::Home(e.to_string()))?;
        // Only the last path component of the sender's name, never a path.
        let base: String = std::path::Path::new(&file.name)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .unwrap_or_else(|| "file".into());
        let mut path = dir.join(&base);
        let mut n = 2;
        while path.exists() {
            path = dir.join(format!("{n}-{base}"));
            n += 1;
        }
        std::fs::write(&path, &plain[..]).map_err(|e| ClientError::Home(e.to_string()))?;
        Ok(Event::File { group, sender, path })
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

    /// Sends a text message to the group.
    pub async fn send_text(&mut self, name: &str, text: &str) -> Result<u32, ClientError> {
        // Members still unchecked (the AS was unreachable) get checked now.
        let _ = self.check_members(name).await;
        let req = self.prepare_text(name, text)?;
        sent_copies(self.send_request(req).await?)
    }

    /// Sends a prepared `Send`, retrying with the same message id while the
    /// IDS is unavailable.
    pub async fn send_request(&self, req: Request) -> Result<Response, ClientError> {
        let mut last = None;
        for _ in 0..3 {
            match self.conn.request(req.clone()).await {
                Ok(r) => return Ok(r),
                Err(ClientError::Server(WireError::Unavailable { node })) => {
                    last = Some(ClientError::Server(WireError::Unavailable { node }));
                    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(ClientError::Unexpected("no attempt".into())))
    }

    /// The `Send` request for a text message, MAC'd for the current epoch,
    /// without sending it (the outbox and tests keep it to retry verbatim).
    pub fn prepare_text(&mut self, name: &str, text: &str) -> Result<Request, ClientError> {
        self.prepare_payload(name, &Payload::Text(text.to_string()))
    }

    /// Like [`Client::prepare_text`] under a message id of the caller's
    /// choosing, for tools and tests that check what the IDS does with a
    /// reused id (an honest client never reuses one).
    pub fn prepare_text_with_id(
        &mut self,
        name: &str,
        text: &str,
        message_id: [u8; 32],
    ) -> Result<Request, ClientError> {
        self.prepare_payload_as(name, &Payload::Text(text.to_string()), message_id)
    }

    fn prepare_payload(&mut self, name: &str, payload: &Payload) -> Result<Request, ClientError> {
        self.prepare_payload_as(name, payload, random32())
    }

    fn prepare_payload_as(
        &mut self,
        name: &str,
        payload: &Payload,
        message_id: [u8; 32],
    ) -> Result<Request, ClientError> {
        let meta = self.group_meta(name)?;
        self.refuse_unverified(&meta.id, name)?;
        let mut group = self.load_group(&meta.id)?;
        let signer = self.signer()?;
        let payload =
            Zeroizing::new(codec::encode(payload).map_err(|e| ClientError::Crypto(e.to_string()))?);
        let msg = group
            .create_message(&self.provider, &signer, &payload)
            .map_err(|e| ClientError::Crypto(e.to_string()))?;
        let bytes = msg.tls_serialize_detached().map_err(|e| ClientError::Crypto(e.to_string()))?;
        let body = SendBody {
            group: meta.id.clone(),
            message_id,
            message: bytes,
            recipients: self.recipients(&group, meta.mode)?,
            skip: self.mailbox.as_ref().map(|m| m.id),
            commit: None,
        };
        self.save_groups()?;
        self.send_request_for(&group, body)
    }

    /// The `Send` for `body`, MAC'd under the group's current epoch auth key.
    fn send_request_for(&self, group: &MlsGroup, body: SendBody) -> Result<Request, ClientError> {
        let mac = send_mac(&export32(group, &self.provider, EXPORT_AUTH, &[])?, &body);
        Ok(Request::Send { body: Box::new(body), mac })
    }

    /// This device's mailbox keys (tests and tools inspect raw envelopes with them).
    pub fn mailbox_keys(&self) -> Option<&crate::mailbox::MailboxKeys> {
        self.mailbox.as_ref()
    }

    /// `K(me, e)` of every epoch this device keeps, over all its groups.
    pub fn envelope_keys(&self) -> Vec<[u8; 32]> {
        self.groups.values().flat_map(|g| g.keys.iter().map(|(_, k)| **k)).collect()
    }

    /// Adds every current device of `identities` (KeyPackages fetched and
    /// verified as in steps 3-4) in one commit.
    pub async fn add_members(
        &mut self,
        name: &str,
        identities: &[&str],
    ) -> Result<u64, ClientError> {
        let mut kps: Vec<KeyPackage> = Vec::new();
        for identity in identities {
            let (ok, rejected) = self.fetch_key_packages(identity).await?;
            if ok.is_empty() {
                return Err(ClientError::Home(format!(
                    "no verified KeyPackage for {identity}: {rejected:?}"
                )));
            }
            kps.extend(ok.into_iter().map(|k| k.key_package));
        }
        self.commit(name, Change::Add(kps)).await
    }

    /// Adds KeyPackages obtained elsewhere in one commit, without the AS check
    /// [`Client::add_members`] makes. Any member can do this with a modified
    /// client (the IDS cannot see inside commits), which is why every member
    /// checks the members it learns ([`crate::members`]); tests use it to
    /// play that member. mlsc never calls it.
    pub async fn add_unverified_key_packages(
        &mut self,
        name: &str,
        key_packages: Vec<KeyPackage>,
    ) -> Result<u64, ClientError> {
        self.commit(name, Change::Add(key_packages)).await
    }

    /// Removes every device of each entry of `identities` (an identity), or
    /// the one device an entry names (a client id), in one commit.
    pub async fn remove_members(
        &mut self,
        name: &str,
        identities: &[&str],
    ) -> Result<u64, ClientError> {
        self.commit(name, Change::Remove(identities.iter().map(|s| s.to_string()).collect())).await
    }

    /// Updates this device's leaf (fresh encryption key) in one commit, for
    /// post-compromise security. Returns the new epoch.
    pub async fn self_update(&mut self, name: &str) -> Result<u64, ClientError> {
        self.commit(name, Change::Update).await
    }

    /// Commits `change`, retrying after processing a competing commit when the
    /// IDS answers `StaleEpoch`. Returns the new epoch.
    async fn commit(&mut self, name: &str, change: Change) -> Result<u64, ClientError> {
        for _ in 0..MAX_RETRIES {
            match self.try_commit(name, &change).await {
                Err(ClientError::Server(WireError::StaleEpoch { .. })) => {
                    let events = self.receive().await?;
                    self.pending_events.extend(events);
                }
                other => return other,
            }
        }
        Err(ClientError::Server(WireError::StaleEpoch { current: self.group_epoch(name)? }))
    }

    async fn try_commit(&mut self, name: &str, change: &Change) -> Result<u64, ClientError> {
        let meta = self.group_meta(name)?;
        self.settle(&meta.id).await?;
        let mut group = self.load_group(&meta.id)?;
        let signer = self.signer()?;
        let before: Vec<_> = members(&group);
        let (commit, welcome, welcome_to, after_refs) = match change {
            Change::Add(kps) => {
                // An identity's client that is a member already (for instance
                // through an earlier commit that `settle` just merged).
                for kp in kps {
                    let who = BasicCredential::try_from(kp.leaf_node().credential().clone())
                        .map(|c| String::from_utf8_lossy(c.identity()).into_owned())
                        .unwrap_or_default();
                    if before.iter().any(|(_, c, _)| *c == who) {
                        return Err(ClientError::Home(format!("{who} is already a member")));
                    }
                }
                let (c, w, _) = group
                    .add_members(&self.provider, &signer, kps)
                    .map_err(|e| ClientError::Crypto(e.to_string()))?;
                let mut to = Vec::new();
                let mut refs: Vec<MailboxRef> =
                    before.iter().filter_map(|(_, _, r)| r.clone()).collect();
                for kp in kps {
                    let r = mailbox_ref_of_kp(kp).ok_or_else(|| {
                        ClientError::Home("a KeyPackage has no mailbox reference".into())
                    })?;
                    to.push(WelcomeCopy {
                        mailbox: r.mailbox,
                        hpke_key: r.hpke_public.clone(),
                        push_key: r.push_key,
                    });
                    refs.push(r);
                }
                (c, Some(w), to, refs)
            }
            Change::Update => {
                let bundle = group
                    .self_update(
                        &self.provider,
                        &signer,
                        openmls::prelude::LeafNodeParameters::default(),
                    )
                    .map_err(|e| ClientError::Crypto(e.to_string()))?;
                let refs = before.iter().filter_map(|(_, _, r)| r.clone()).collect();
                (bundle.commit().clone(), None, Vec::new(), refs)
            }
            Change::Remove(ids) => {
                let gone: Vec<LeafNodeIndex> = before
                    .iter()
                    // An identity removes all its devices; a client id only that one.
                    .filter(|(_, c, _)| {
                        ids.iter().any(|i| *c == *i || c.split('/').next() == Some(i.as_str()))
                    })
                    .map(|(i, _, _)| *i)
                    .collect();
                if gone.is_empty() {
                    return Err(ClientError::Home(format!("none of {ids:?} is in the group")));
                }
                let (c, _, _) = group
                    .remove_members(&self.provider, &signer, &gone)
                    .map_err(|e| ClientError::Crypto(e.to_string()))?;
                let refs = before
                    .iter()
                    .filter(|(i, _, _)| !gone.contains(i))
                    .filter_map(|(_, _, r)| r.clone())
                    .collect();
                (c, None, Vec::new(), refs)
            }
        };
        let staged = group
            .pending_commit()
            .ok_or_else(|| ClientError::Crypto("no pending commit".into()))?;
        let next = Exporter::Staged(staged);
        let next_auth_key = next.export(&self.provider, EXPORT_AUTH, &[])?;
        let next_roster = match meta.mode {
            RosterMode::Stored => {
                let r = roster(&after_refs, &next, &self.provider)?;
                let k = Zeroizing::new(next.export(&self.provider, EXPORT_ROSTER, &[])?);
                Some(seal_roster(&k, &meta.id, &r)?)
            }
            RosterMode::Client => None,
        };
        let welcome = match welcome {
            Some(w) => {
                Some(w.tls_serialize_detached().map_err(|e| ClientError::Crypto(e.to_string()))?)
            }
            None => None,
        };
        let body = SendBody {
            group: meta.id.clone(),
            message_id: random32(),
            message: commit
                .tls_serialize_detached()
                .map_err(|e| ClientError::Crypto(e.to_string()))?,
            recipients: self.recipients(&group, meta.mode)?,
            skip: self.mailbox.as_ref().map(|m| m.id),
            commit: Some(CommitExtras { welcome, welcome_to, next_auth_key, next_roster }),
        };
        let req = self.send_request_for(&group, body)?;
        // The same commit (same message id) until the IDS answers for sure:
        // if it accepted the commit and only its answer was lost, a new commit
        // would be refused for the old epoch, and we get no copy of our own.
        let start = std::time::Instant::now();
        let result = loop {
            let answer = self.conn.request(req.clone()).await;
            let again = match &answer {
                Err(e) => crate::outbox::transient(e) && start.elapsed() < COMMIT_PATIENCE,
                // Accepted, but copies to an unavailable ODS are missing: the
                // same commit again stores only those (the IDS recognizes it).
                Ok(Response::PartlySent { undelivered, .. }) => {
                    undelivered.iter().any(|u| u.reason == Undeliverable::Unavailable)
                        && start.elapsed() < COPY_PATIENCE
                }
                Ok(_) => false,
            };
            if !again {
                break answer;
            }
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            let _ = self.reconnect().await;
        };
        match result {
            Ok(answer @ (Response::Sent { .. } | Response::PartlySent { .. })) => {
                self.merge_accepted(&mut group, &answer, &req)?;
                self.save_groups()?;
                // Members we added came from KeyPackages we verified; this
                // records them (one lookup per identity), and rechecks none.
                let _ = self.check_group(&meta.id).await;
                // Best effort: a member who cannot read it keeps the name
                // from the group context.
                let _ = self.store_group_data(&group, &meta.name).await;
                Ok(group.epoch().as_u64())
            }
            Ok(other) => Err(ClientError::Unexpected(format!("{other:?}"))),
            // The IDS may have accepted it (only the answer was lost, or some
            // copies were not enqueued yet): keep it, and send it again before
            // anything else happens in this group (see `settle`).
            Err(e) if crate::outbox::transient(&e) => {
                let mut list = self.unsettled()?;
                list.push((meta.id.clone(), req));
                self.home.save(UNSETTLED, &list)?;
                self.save_groups()?;
                Err(e)
            }
            Err(e) => {
                let _ = group.clear_pending_commit(self.provider.storage());
                Err(e)
            }
        }
    }

    /// Merges our pending commit, which the IDS accepted with `answer`. If
    /// some members have no copy yet (`PartlySent`), the outbox sends it
    /// again (the IDS recognizes the retry) and reports who stays unserved;
    /// the group's later sends wait behind it.
    fn merge_accepted(
        &mut self,
        group: &mut MlsGroup,
        answer: &Response,
        commit: &Request,
    ) -> Result<(), ClientError> {
        group
            .merge_pending_commit(&self.provider)
            .map_err(|e| ClientError::Crypto(e.to_string()))?;
        self.remember_epoch(group)?;
        if matches!(answer, Response::PartlySent { .. }) {
            self.outbox_push(commit.clone())?;
        }
        Ok(())
    }

    fn unsettled(&self) -> Result<Vec<(Vec<u8>, Request)>, ClientError> {
        Ok(self.home.load(UNSETTLED)?.unwrap_or_default())
    }

    /// Settles a commit of ours in group `gid` whose outcome was unknown, by
    /// sending it again verbatim (same message id): the IDS answers `Sent` if
    /// it had accepted it, and we merge it (no copy of our own commit ever
    /// reaches us, so dropping it would leave us an epoch behind for good);
    /// `StaleEpoch` or another refusal means it never took effect. Until this
    /// succeeds nothing else is done in the group: envelopes of the epoch our
    /// commit may have started would not open yet.
    async fn settle(&mut self, gid: &[u8]) -> Result<(), ClientError> {
        let mut list = self.unsettled()?;
        let Some(pos) = list.iter().position(|(g, _)| g == gid) else { return Ok(()) };
        let mut group = self.load_group(gid)?;
        match self.conn.request(list[pos].1.clone()).await {
            Ok(answer @ (Response::Sent { .. } | Response::PartlySent { .. }))
                if group.pending_commit().is_some() =>
            {
                self.merge_accepted(&mut group, &answer, &list[pos].1)?;
            }
            Err(e) if crate::outbox::transient(&e) => return Err(e),
            _ => {
                let _ = group.clear_pending_commit(self.provider.storage());
            }
        }
        list.remove(pos);
        self.home.save(UNSETTLED, &list)?;
        self.save_groups()
    }

    /// Settles every unsettled commit (see `settle`).
    async fn settle_all(&mut self) -> Result<(), ClientError> {
        let groups: Vec<Vec<u8>> = self.unsettled()?.into_iter().map(|(g, _)| g).collect();
        for g in groups {
            self.settle(&g).await?;
        }
        Ok(())
    }

    /// Subscribes to this device's mailbox from its last acknowledged envelope.
    pub async fn subscribe(
        &mut self,
    ) -> Result<(crate::mailbox::Subscription, usize), ClientError> {
        let keys = self.mailbox.as_ref().ok_or(ClientError::NotRegistered)?;
        let (sub, backlog) =
            crate::mailbox::subscribe(&self.conn, keys, &mut self.counter, keys.acked).await?;
        Ok((sub, backlog.len()))
    }

    /// Fetches everything waiting in the mailbox, processes it in order
    /// (Welcomes, commits, messages) and acknowledges it.
    pub async fn receive(&mut self) -> Result<Vec<Event>, ClientError> {
        self.settle_all().await?;
        let mut events = std::mem::take(&mut self.pending_events);
        let mut deferred = self.load_deferred()?;
        let mut tried_with = None;
        loop {
            let keys = self.mailbox.as_ref().ok_or(ClientError::NotRegistered)?;
            let after = keys.acked;
            let batch = match crate::mailbox::fetch(&self.conn, keys, &mut self.counter, after, 256)
                .await
            {
                Ok(b) => b,
                Err(e) => {
                    // What was processed stays; the next receive returns it.
                    self.pending_events = events;
                    return Err(e);
                }
            };
            if batch.is_empty() {
                break;
            }
            let mut last = after;
            let mut followups = Vec::new();
            let mut full = false;
            for d in batch {
                // An envelope that does not open or process (not for us any
                // more, or malformed) is skipped; it must not block the rest.
                match self.open_and_process(&d.envelope, &mut followups) {
                    Ok(Some(ev)) => events.extend(ev),
                    // No key of ours opens it yet: perhaps a message of an
                    // epoch whose commit reaches us later (its copy to us was
                    // delayed). Kept, and tried again as keys arrive; if no
                    // room is left it stays unacknowledged at the ODS.
                    Ok(None) if deferred.len() >= MAX_DEFERRED => {
                        full = true;
                        break;
                    }
                    Ok(None) => deferred.push((now_secs(), d.envelope)),
                    Err(_) => {}
                }
                last = d.seq;
            }
            // Retry what did not open whenever our keys changed since the last
            // try (a commit or Welcome processed above, or a settled commit of
            // ours, gives a new epoch's key); no trial decryption otherwise.
            while !deferred.is_empty() && tried_with != Some(self.key_fingerprint()) {
                tried_with = Some(self.key_fingerprint());
                let mut still = Vec::new();
                for (since, env) in std::mem::take(&mut deferred) {
                    match self.open_and_process(&env, &mut followups) {
                        Ok(Some(ev)) => events.extend(ev),
                        Ok(None) => still.push((since, env)),
                        Err(_) => {}
                    }
                }
                deferred = still;
            }
            // MLS state and our position are durable before anything else can
            // fail, so a processed envelope is never processed twice.
            let keys = self.mailbox.as_mut().ok_or(ClientError::NotRegistered)?;
            keys.acked = last;
            self.save_groups()?;
            self.home.save(DEFERRED, &deferred)?;
            let keys = self.mailbox.as_ref().ok_or(ClientError::NotRegistered)?;
            self.home.save("mailbox", keys)?;
            // A lost ack is harmless: the next one covers it, and we fetch
            // after `acked` anyway.
            let _ = crate::mailbox::ack(&self.conn, keys, &mut self.counter, last).await;
            for f in followups {
                match f {
                    Followup::ReadGroupData(gid) => {
                        // Step 8: the name the creator stored; ours stays if it
                        // clashes or the SDS cannot be reached.
                        let Ok(group) = self.load_group(&gid) else { continue };
                        if let Ok(Some(name)) = self.read_group_data(&group).await {
                            let clash = self.groups.values().any(|g| g.name == name && g.id != gid);
                            if let (false, Some(meta)) = (clash, self.groups.get_mut(&gid)) {
                                meta.name = name;
                            }
                        }
                    }
                    Followup::CheckMembers(gid) => {
                        // Unreachable AS: the members stay unchecked, which
                        // refuses sends until a later check passes.
                        let name = self.group_name(&gid);
                        for (member, reason) in self.check_group(&gid).await.unwrap_or_default() {
                            events.push(Event::Unverified { group: name.clone(), member, reason });
                        }
                    }
                    Followup::Download { group, sender, file } => {
                        let name = file.name.clone();
                        match self.download(group.clone(), sender.clone(), file).await {
                            Ok(e) => events.push(e),
                            Err(e) => events.push(Event::FileFailed {
                                group,
                                sender,
                                name,
                                reason: e.to_string(),
                            }),
                        }
                    }
                }
            }
            self.save_groups()?;
            if full {
                // Nothing more fits until keys arrive or kept ones expire.
                break;
            }
        }
        Ok(events)
    }

    /// The envelopes waiting for a key, without those past [`DEFERRED_SECS`].
    fn load_deferred(&self) -> Result<Vec<(u64, Vec<u8>)>, ClientError> {
        let now = now_secs();
        let convert = |old: Vec<Vec<u8>>| -> Vec<(u64, Vec<u8>)> {
            old.into_iter().map(|e| (now, e)).collect()
        };
        let list = self.home.load_converting(DEFERRED, OLD_DEFERRED, convert)?.unwrap_or_default();
        Ok(list.into_iter().filter(|(since, _)| since + DEFERRED_SECS > now).collect())
    }

    /// Changes whenever an envelope key is added or dropped (the sum over
    /// every kept key of its epoch + 1: new keys are of newer epochs than the
    /// ones they push out), or a group becomes inactive (a Welcome kept for
    /// it can now be taken).
    fn key_fingerprint(&self) -> u64 {
        let keys: u64 = self.groups.values().flat_map(|g| g.keys.iter().map(|(e, _)| e + 1)).sum();
        let inactive = self.groups.values().filter(|g| !g.active).count() as u64;
        keys.wrapping_add(inactive << 40)
    }

    /// Opens one envelope by trial decryption and processes what it holds;
    /// `None` when no key of ours opens it (yet).
    fn open_and_process(
        &mut self,
        env: &[u8],
        followups: &mut Vec<Followup>,
    ) -> Result<Option<Vec<Event>>, ClientError> {
        let me = self.mailbox.as_ref().ok_or(ClientError::NotRegistered)?;
        let mut opened = None;
        'outer: for g in self.groups.values() {
            for (_, k) in g.keys.iter().rev() {
                if let Ok(p) = envelope::open(k, &me.id, env) {
                    opened = Some(p);
                    break 'outer;
                }
            }
        }
        let plain = match opened {
            Some(p) => p,
            None => match me.open_welcome(env) {
                Some(p) => p,
                None => return Ok(None),
            },
        };
        let (kind, msg) =
            envelope::unpad(&plain).map_err(|e| ClientError::Crypto(e.to_string()))?;
        let msg = MlsMessageIn::tls_deserialize_exact(msg)
            .map_err(|e| ClientError::Crypto(e.to_string()))?;
        match (kind, msg.extract()) {
            (Kind::Welcome, MlsMessageBodyIn::Welcome(w)) => {
                // For a group we still hold: kept (see `join`).
                let Some((event, gid)) = self.join(w)? else { return Ok(None) };
                followups.push(Followup::ReadGroupData(gid.clone()));
                followups.push(Followup::CheckMembers(gid));
                Ok(Some(vec![event]))
            }
            (Kind::Message, MlsMessageBodyIn::PrivateMessage(m)) => {
                self.process(m.into(), followups).map(Some)
            }
            (Kind::Message, MlsMessageBodyIn::PublicMessage(m)) => {
                self.process(m.into(), followups).map(Some)
            }
            _ => Ok(Some(Vec::new())),
        }
    }

    /// Joins by `welcome`; `None` when it is for a group we are still an
    /// active member of. That Welcome re-adds us after a removal whose commit
    /// has not reached us yet (its copy to us is still in the committer's
    /// outbox): it is kept with the envelopes waiting for a key and taken
    /// once that commit makes the group inactive. (Replacing a live group on
    /// any Welcome instead would let anyone who fetched one of our
    /// KeyPackages clobber it.)
    fn join(
        &mut self,
        welcome: openmls::prelude::Welcome,
    ) -> Result<Option<(Event, Vec<u8>)>, ClientError> {
        let cfg = MlsGroupJoinConfig::builder()
            .max_past_epochs(KEPT_EPOCHS)
            .use_ratchet_tree_extension(true)
            .wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
            .build();
        let err = |e: openmls::group::WelcomeError<_>| ClientError::Crypto(format!("welcome: {e}"));
        // Opening a Welcome consumes its KeyPackage's private key; a Welcome
        // kept for later must find it again (restored below).
        let before = self.provider.storage().values.read().map(|v| v.clone()).ok();
        let builder =
            StagedWelcome::build_from_welcome(&self.provider, &cfg, welcome).map_err(err)?;
        // Added again to a group we were removed from: the old, inactive state
        // gives way. A Welcome for a group we are still in is refused by
        // openmls (GroupAlreadyExists), so it cannot clobber a live group.
        let wanted = builder.processed_welcome().unverified_group_info().group_id().as_slice();
        if self.groups.get(wanted).is_some_and(|g| g.active) {
            if let (Some(before), Ok(mut now)) = (before, self.provider.storage().values.write()) {
                *now = before;
            }
            return Ok(None);
        }
        let rejoin = self.groups.get(wanted).is_some_and(|g| !g.active);
        let builder = if rejoin { builder.replace_old_group() } else { builder };
        let group = builder.build().and_then(|s| s.into_group(&self.provider)).map_err(err)?;
        let gid = group.group_id().as_slice().to_vec();
        let settings: Option<GroupSettings> = group
            .extensions()
            .unknown(GROUP_SETTINGS_EXTENSION)
            .and_then(|e| codec::decode(&e.0).ok());
        let Some(settings) = settings else {
            return Err(ClientError::Crypto("group without mlsd settings".into()));
        };
        let mode = if settings.stored_roster { RosterMode::Stored } else { RosterMode::Client };
        // Our local name: the creator's, suffixed if it clashes with one of ours.
        let mut name = settings.name.clone();
        let mut n = 2;
        while self.groups.values().any(|g| g.name == name && g.id != gid) {
            name = format!("{}-{n}", settings.name);
            n += 1;
        }
        self.groups.insert(
            gid.clone(),
            GroupMeta { name: name.clone(), id: gid.clone(), mode, keys: Vec::new(), active: true },
        );
        self.remember_epoch(&group)?;
        Ok(Some((Event::Joined { group: name }, gid)))
    }

    fn process(
        &mut self,
        m: openmls::prelude::ProtocolMessage,
        followups: &mut Vec<Followup>,
    ) -> Result<Vec<Event>, ClientError> {
        let gid = m.group_id().as_slice().to_vec();
        let Some(meta) = self.groups.get(&gid).cloned() else { return Ok(Vec::new()) };
        let mut group = self.load_group(&gid)?;
        let processed = match group.process_message(&self.provider, m) {
            Ok(p) => p,
            // Our own commit echoed back, or a message for an epoch we left.
            Err(_) => return Ok(Vec::new()),
        };
        let sender = BasicCredential::try_from(processed.credential().clone())
            .map(|c| String::from_utf8_lossy(c.identity()).into_owned())
            .unwrap_or_default();
        let mut events = Vec::new();
        match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(a) => {
                match codec::decode::<Payload>(&Zeroizing::new(a.into_bytes())) {
                    Ok(Payload::Text(text)) => {
                        events.push(Event::Message { group: meta.name.clone(), sender, text })
                    }
                    Ok(Payload::File(file)) => followups.push(Followup::Download {
                        group: meta.name.clone(),
                        sender,
                        file,
                    }),
                    Err(_) => {}
                }
            }
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                group
                    .merge_staged_commit(&self.provider, *staged)
                    .map_err(|e| ClientError::Crypto(e.to_string()))?;
                if group.is_active() {
                    self.remember_epoch(&group)?;
                    followups.push(Followup::CheckMembers(gid.clone()));
                    events.push(Event::Commit {
                        group: meta.name.clone(),
                        epoch: group.epoch().as_u64(),
                    });
                } else {
                    if let Some(g) = self.groups.get_mut(&gid) {
                        g.active = false;
                    }
                    self.forget_checks(&gid);
                    events.push(Event::Removed { group: meta.name.clone() });
                }
            }
            _ => {}
        }
        Ok(events)
    }
}

enum Change {
    Add(Vec<KeyPackage>),
    Remove(Vec<String>),
    Update,
}

/// The copies of a send that stored every copy; a partial delivery is
/// [`ClientError::Undelivered`] (the outbox retries and reports those).
fn sent_copies(r: Response) -> Result<u32, ClientError> {
    match r {
        Response::Sent { copies } => Ok(copies),
        Response::PartlySent { copies, failed, undelivered } => {
            Err(ClientError::Undelivered { copies, failed, undelivered })
        }
        other => Err(ClientError::Unexpected(format!("{other:?}"))),
    }
}

fn mailbox_ref_of_kp(kp: &KeyPackage) -> Option<MailboxRef> {
    mailbox_ref_of(kp.leaf_node())
}

fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}
