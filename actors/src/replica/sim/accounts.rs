//! The accounts run: the real AS, CS and SDS logic on three shards that
//! every node of the run replicates, so that shards of several roles share
//! each node's store, its rebuild record and its faults. Each is served as
//! its host serves it ([`super::role::host`]); a CS request takes its AS
//! prerequisite (the identity's bindings) from the AS shard's leader, as a
//! node's router fetches it.
//!
//! The clients, and what the run checks of their answers:
//! - two parties race to register a device of each new identity, each with
//!   its own key: at most one is bound, the other's registration waits for
//!   a live device's approval (a stranger never gets a binding of an
//!   identity someone else was told is theirs), and no two clients get
//!   bindings with one serial;
//! - the winner publishes eight one-time KeyPackages and a last-resort one
//!   (real ones, from openmls) in a signed request its retries repeat as it
//!   was; fetchers fetch an identity's KeyPackages, each fetch paid with an
//!   id its retries repeat: no one-time KeyPackage goes to two fetches, a
//!   repeat is answered as the first time, and at the end every one-time
//!   KeyPackage published and not handed out is still there;
//! - a writer uploads blobs in one to three chunks, each chunk sent again as
//!   it was until answered, and a reader reads acknowledged ones back: each
//!   read and, at the end, each acknowledged blob is the data uploaded.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::{Signer, SigningKey};
use mlsd_roles::cs::CsLogic;
use mlsd_roles::r#as::AsLogic;
use mlsd_roles::sds::SdsLogic;
use mlsd_roles::settings::{AsSettings, CsSettings, Registration, SdsSettings, TicketAllowance};
use mlsd_roles::{RoleContext, RoleLogic, View};
use mlsd_transport::protocol::cs::{LABEL_COUNT, LABEL_PUBLISH};
use mlsd_transport::protocol::identity::signing_bytes;
use mlsd_transport::protocol::r#as::LABEL_REGISTER;
use mlsd_transport::protocol::{
    AsRequest, AsResponse, CountBody, CsRequest, CsResponse, FetchedKeyPackage, PublishBody,
    RegisterBody, SdsRequest, SdsResponse,
};
use mlsd_transport::{Request, Response, Role};

use super::super::view::CommitError;
use super::super::{NodeId, RaftShard, ShardId};
use super::net::SimNet;
use super::role::{host, reply_of, Hosts, Reply};

/// The AS shard of an accounts run.
pub const AS_SHARD: ShardId = ShardId { role: Role::As, index: 0 };
/// The CS shard of an accounts run.
pub const CS_SHARD: ShardId = ShardId { role: Role::Cs, index: 0 };
/// The SDS shard of an accounts run.
pub const SDS_SHARD: ShardId = ShardId { role: Role::Sds, index: 0 };
/// One-time KeyPackages a bound device publishes (and one last resort).
pub const ONE_TIME: usize = 8;
/// Bytes of a blob chunk.
pub const CHUNK: usize = 64;

/// A request of the accounts run's clients; a retry repeats it as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcctOp {
    /// Party `party` registers its device of `identity`, signed at `timestamp`.
    Register {
        /// The identity, `u{identity}`.
        identity: u32,
        /// Which of the racing parties (its device is `p{party}`).
        party: u8,
        /// Unix seconds, signed.
        timestamp: u64,
    },
    /// The bound device publishes its KeyPackages.
    Publish {
        /// The identity.
        identity: u32,
        /// The bound party.
        party: u8,
        /// Unix seconds, signed.
        timestamp: u64,
    },
    /// A paid fetch of `identity`'s KeyPackages.
    Fetch {
        /// The identity.
        identity: u32,
        /// Which paid fetch this is.
        paid: u64,
    },
    /// The bound device counts its one-time KeyPackages left.
    Count {
        /// The identity.
        identity: u32,
        /// The bound party.
        party: u8,
        /// Unix seconds, signed.
        timestamp: u64,
    },
    /// Chunk `chunk` of blob `blob`.
    Put {
        /// The blob.
        blob: u64,
        /// The chunk.
        chunk: u8,
    },
    /// Read blob `blob` whole.
    Get {
        /// The blob.
        blob: u64,
    },
}

/// Party `party`'s device of identity `identity`.
pub fn client(identity: u32, party: u8) -> String {
    format!("u{identity}/p{party}")
}

fn secret(identity: u32, party: u8) -> [u8; 32] {
    *blake3::hash(format!("sim device {identity} {party}").as_bytes()).as_bytes()
}

/// Party `party`'s signature key for `identity`.
pub fn signing_key(identity: u32, party: u8) -> SigningKey {
    SigningKey::from_bytes(&secret(identity, party))
}

/// A device's KeyPackages, [`ONE_TIME`] one-time ones then its last resort:
/// made once per process (openmls makes them from the wall clock and fresh
/// randomness, which no run's events depend on).
fn key_packages(identity: u32, party: u8) -> Arc<Vec<Vec<u8>>> {
    /// KeyPackages by device.
    type Made = HashMap<(u32, u8), Arc<Vec<Vec<u8>>>>;
    static MADE: OnceLock<Mutex<Made>> = OnceLock::new();
    let mut made = MADE.get_or_init(Mutex::default).lock().unwrap_or_else(|p| p.into_inner());
    made.entry((identity, party))
        .or_insert_with(|| {
            let c = client(identity, party);
            let s = secret(identity, party);
            Arc::new(
                (0..=ONE_TIME)
                    .filter_map(|_| mlsd_roles::cs_fixtures::key_package(&c, &s, 28 * 24 * 3600))
                    .collect(),
            )
        })
        .clone()
}

/// Chunks of blob `blob`: one to three.
pub fn chunks(blob: u64) -> u8 {
    (blob % 3) as u8 + 1
}

/// Blob `blob`'s content: [`chunks`] chunks of [`CHUNK`] bytes.
pub fn blob_data(blob: u64) -> Vec<u8> {
    let mut out = vec![0; usize::from(chunks(blob)) * CHUNK];
    blake3::Hasher::new().update(&blob.to_be_bytes()).finalize_xof().fill(&mut out);
    out
}

fn blob_id(blob: u64) -> [u8; 32] {
    *blake3::hash(format!("sim blob {blob}").as_bytes()).as_bytes()
}

fn blob_cap(blob: u64) -> [u8; 32] {
    *blake3::hash(format!("sim blob cap {blob}").as_bytes()).as_bytes()
}

fn paid_id(paid: u64) -> [u8; 32] {
    let mut p = [0; 32];
    p[..8].copy_from_slice(&paid.to_be_bytes());
    p
}

/// Unix seconds of `now`.
pub fn unix(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl AcctOp {
    /// The shard that serves it.
    pub fn shard(&self) -> ShardId {
        match self {
            AcctOp::Register { .. } => AS_SHARD,
            AcctOp::Publish { .. } | AcctOp::Fetch { .. } | AcctOp::Count { .. } => CS_SHARD,
            AcctOp::Put { .. } | AcctOp::Get { .. } => SDS_SHARD,
        }
    }

    /// The request, as a client makes it.
    pub fn request(&self) -> Request {
        match *self {
            AcctOp::Register { identity, party, timestamp } => {
                let body = RegisterBody {
                    client: client(identity, party),
                    signature_key: signing_key(identity, party).verifying_key().to_bytes().to_vec(),
                    timestamp,
                    token: None,
                };
                let proof = sign(identity, party, LABEL_REGISTER, &body);
                Request::As(AsRequest::Register { body, proof, rotation: None })
            }
            AcctOp::Publish { identity, party, timestamp } => {
                let kps = key_packages(identity, party);
                let (one_time, last) = kps.split_at(kps.len().saturating_sub(1));
                let body = PublishBody {
                    client: client(identity, party),
                    key_packages: one_time.to_vec(),
                    last_resort: last.first().cloned(),
                    timestamp,
                };
                let signature = sign(identity, party, LABEL_PUBLISH, &body);
                Request::Cs(CsRequest::PublishKeyPackages { body, signature })
            }
            AcctOp::Count { identity, party, timestamp } => {
                let body = CountBody { client: client(identity, party), timestamp };
                let signature = sign(identity, party, LABEL_COUNT, &body);
                Request::Cs(CsRequest::CountKeyPackages { body, signature })
            }
            AcctOp::Fetch { identity, paid } => Request::Cs(CsRequest::FetchPaid {
                identity: format!("u{identity}"),
                paid: paid_id(paid),
            }),
            AcctOp::Put { blob, chunk } => {
                let data = blob_data(blob);
                let at = usize::from(chunk) * CHUNK;
                Request::Sds(SdsRequest::PutBlob {
                    id: blob_id(blob),
                    cap: blob_cap(blob),
                    offset: at as u64,
                    total: data.len() as u64,
                    data: data[at..(at + CHUNK).min(data.len())].to_vec(),
                })
            }
            AcctOp::Get { blob } => {
                Request::Sds(SdsRequest::GetBlob { id: blob_id(blob), offset: 0, max: 4096 })
            }
        }
    }
}

/// Party `party`'s signature of `body` under `label`, for `identity`.
fn sign<T: serde::Serialize>(identity: u32, party: u8, label: &str, body: &T) -> Vec<u8> {
    signing_key(identity, party).sign(&signing_bytes(label, body)).to_bytes().to_vec()
}

/// The AS's settings in the simulation: open registration, long bindings.
fn as_settings() -> AsSettings {
    let plenty = 1 << 20;
    AsSettings {
        signing_key: Some(Arc::new(SigningKey::from_bytes(&[0xA5; 32]))),
        registration: Registration::Open,
        binding_lifetime: Duration::from_secs(30 * 24 * 3600),
        tickets: TicketAllowance { fetch: plenty, mailbox: plenty, group: plenty, blob: plenty },
    }
}

/// The CS's settings in the simulation: no fetch budget to run out of.
fn cs_settings() -> CsSettings {
    CsSettings {
        max_per_client: 16,
        max_lifetime: Duration::from_secs(90 * 24 * 3600),
        fetches_per_target_per_minute: 1 << 20,
    }
}

/// The SDS's settings in the simulation.
fn sds_settings() -> SdsSettings {
    SdsSettings { max_blob: 1 << 20, abandoned_upload_days: 7 }
}

/// The logic of the AS, the CS and the SDS, made afresh (as a host makes
/// it when it starts).
fn as_logic(_: &RoleContext<'_>) -> Result<AsLogic, mlsd_transport::WireError> {
    Ok(AsLogic::new(as_settings()))
}

fn cs_logic(_: &RoleContext<'_>) -> Result<CsLogic, mlsd_transport::WireError> {
    Ok(CsLogic::new(cs_settings()))
}

fn sds_logic(_: &RoleContext<'_>) -> Result<SdsLogic, mlsd_transport::WireError> {
    Ok(SdsLogic::new(sds_settings()))
}

/// The CS's prerequisite for `op` (the identity's bindings), asked of the
/// AS shard's leader as node `node`'s router asks it: `None` for a request
/// that needs none, `Err` when no AS leader answers (the client tries
/// again).
pub async fn prerequisite(
    net: &SimNet,
    node: NodeId,
    hosts: &Hosts,
    op: &AcctOp,
    now: SystemTime,
) -> Result<Option<Response>, CommitError> {
    // Only CS requests have one: the others' requests are not built twice.
    if op.shard() != CS_SHARD {
        return Ok(None);
    }
    let Some(ask) = CsLogic::new(cs_settings()).prerequisite(&op.request()) else {
        return Ok(None);
    };
    let unavailable =
        |why: &str| CommitError::Unavailable { shard: AS_SHARD.to_string(), why: why.into() };
    let local = net.replica(node, AS_SHARD).ok_or_else(|| unavailable("no AS replica"))?;
    let leader = local.raft.metrics().borrow().current_leader.unwrap_or(node);
    if leader != node && !net.linked(node, leader) {
        return Err(unavailable("the AS leader is out of reach"));
    }
    let at = net.replica(leader, AS_SHARD).ok_or_else(|| unavailable("the AS leader is down"))?;
    let decide = |l: &mut AsLogic, ctx: &RoleContext<'_>| l.handle(ask, None, ctx);
    match host(&at, &hosts.auth, (leader, Vec::new()), as_logic, decide, Duration::ZERO, now)
        .await?
    {
        Ok(served) => Ok(Some(served.response)),
        Err(why) => Err(unavailable(&why)),
    }
}

/// Serves `op` at `replica` of node `node`, as the role's host does, with
/// the prerequisite `pre` for a CS request.
pub async fn serve(
    replica: &RaftShard,
    node: NodeId,
    hosts: &Hosts,
    (op, pre): (&AcctOp, Option<Response>),
    think: Duration,
    now: SystemTime,
) -> Reply {
    let request = op.request();
    let key = (node, Vec::new());
    let answer = match op.shard().role {
        Role::As => {
            let decide = |l: &mut AsLogic, ctx: &RoleContext<'_>| l.handle(request, None, ctx);
            host(replica, &hosts.auth, key, as_logic, decide, think, now).await
        }
        Role::Cs => {
            let decide = |l: &mut CsLogic, ctx: &RoleContext<'_>| l.handle(request, pre, ctx);
            host(replica, &hosts.cs, key, cs_logic, decide, think, now).await
        }
        _ => {
            let decide = |l: &mut SdsLogic, ctx: &RoleContext<'_>| l.handle(request, None, ctx);
            host(replica, &hosts.sds, key, sds_logic, decide, think, now).await
        }
    };
    reply_of(op, answer)
}

/// What the accounts run's clients were told.
#[derive(Default)]
pub struct AcctLedger {
    /// Identity → the parties told they are bound.
    pub bound: BTreeMap<u32, BTreeSet<u8>>,
    /// (AS shard, binding serial) → the client it named: serials count
    /// per AS shard.
    pub serials: BTreeMap<(u32, u64), String>,
    /// Identity → the party whose publication was acknowledged.
    pub published: BTreeMap<u32, u8>,
    /// Paid fetches asked, with their identity.
    pub asked: BTreeMap<u64, u32>,
    /// Paid fetch → what it was first answered.
    pub fetched: BTreeMap<u64, Vec<FetchedKeyPackage>>,
    /// One-time KeyPackage (BLAKE3) → the paid fetch it went to.
    pub handed: BTreeMap<[u8; 32], u64>,
    /// Blobs whose last chunk was acknowledged.
    pub blobs: BTreeSet<u64>,
    /// What contradicted an earlier answer or a rule.
    pub anomalies: Vec<String>,
}

impl AcctLedger {
    /// Records party `party`'s answer to registering for `identity`, whose
    /// AS shard is `shard`; whether it is bound.
    pub fn registered(
        &mut self,
        (identity, shard): (u32, u32),
        party: u8,
        answer: &Response,
    ) -> bool {
        match answer {
            Response::As(AsResponse::Binding(b)) => {
                let parties = self.bound.entry(identity).or_default();
                parties.insert(party);
                if parties.len() > 1 {
                    self.anomalies.push(format!("u{identity} bound to two parties: {parties:?}"));
                }
                let c = &b.binding.client;
                match self.serials.insert((shard, b.binding.serial), c.clone()) {
                    Some(other) if &other != c => self
                        .anomalies
                        .push(format!("serial {} went to {other} and to {c}", b.binding.serial)),
                    _ => {}
                }
                true
            }
            Response::As(AsResponse::RegistrationPending { .. }) => false,
            other => {
                self.anomalies
                    .push(format!("{}: registration answered {other:?}", client(identity, party)));
                false
            }
        }
    }

    /// Records the answer to paid fetch `paid`.
    pub fn fetched(&mut self, paid: u64, kps: &[FetchedKeyPackage]) {
        if let Some(first) = self.fetched.get(&paid) {
            if first != kps {
                self.anomalies.push(format!("paid fetch {paid:x} answered twice, differently"));
            }
            return;
        }
        for kp in kps.iter().filter(|k| !k.last_resort) {
            let h = *blake3::hash(&kp.key_package).as_bytes();
            if let Some(other) = self.handed.insert(h, paid) {
                self.anomalies.push(format!(
                    "a KeyPackage of {} went to paid fetches {other:x} and {paid:x}",
                    kp.client
                ));
            }
        }
        self.fetched.insert(paid, kps.to_vec());
    }

    /// One-time KeyPackages of `client` handed out.
    fn handed_of(&self, client: &str) -> usize {
        self.fetched
            .values()
            .flatten()
            .filter(|k| !k.last_resort && k.client == client)
            .map(|k| *blake3::hash(&k.key_package).as_bytes())
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// Checks a read of blob `blob`.
    pub fn read(&mut self, blob: u64, answer: &Response) {
        match answer {
            Response::Sds(SdsResponse::Blob { data, .. }) if *data == blob_data(blob) => {}
            other => self.anomalies.push(format!("blob {blob:x} read as {other:?}")),
        }
    }
}

/// The views of the three shards, as their logic reads them.
pub struct Views<'a> {
    /// The AS shard's.
    pub auth: &'a dyn View,
    /// The CS shard's.
    pub cs: &'a dyn View,
    /// The SDS shard's.
    pub sds: &'a dyn View,
}

/// The end checks of an accounts run on the converged state: each identity
/// bound to the one party told so, every paid fetch that happened (answered
/// or not) handing out no KeyPackage another did, every one-time
/// KeyPackage not handed out still there, every acknowledged blob intact.
/// Returns how many writes were checked.
pub fn check(l: &mut AcctLedger, views: Views<'_>, now: SystemTime) -> Result<usize, String> {
    let ctx = |store| RoleContext { node: "check", store, now, random: Default::default() };
    let (actx, cctx, sctx) = (ctx(views.auth), ctx(views.cs), ctx(views.sds));
    let mut auth = AsLogic::new(as_settings());
    let lookup = |auth: &mut AsLogic, identity: u32| {
        let ask = Request::As(AsRequest::Lookup { identity: format!("u{identity}") });
        auth.handle(ask, None, &actx).response
    };
    for (identity, parties) in &l.bound {
        let Some(&party) = parties.iter().next() else { continue };
        let Response::As(AsResponse::Bindings(all)) = lookup(&mut auth, *identity) else {
            return Err(format!("u{identity}: no bindings to read"));
        };
        let key = signing_key(*identity, party).verifying_key().to_bytes().to_vec();
        if all.len() != 1
            || all[0].binding.client != client(*identity, party)
            || all[0].binding.signature_key != key
        {
            let names: Vec<_> = all.iter().map(|b| &b.binding.client).collect();
            return Err(format!("u{identity} was bound to p{party}, holds {names:?}"));
        }
    }
    // Paid fetches still unanswered: a stored answer means it happened.
    let mut cs = CsLogic::new(cs_settings());
    let unanswered: Vec<(u64, u32)> =
        l.asked.iter().filter(|(p, _)| !l.fetched.contains_key(p)).map(|(p, i)| (*p, *i)).collect();
    for (paid, identity) in unanswered {
        let pre = lookup(&mut auth, identity);
        let d = cs.handle(AcctOp::Fetch { identity, paid }.request(), Some(pre), &cctx);
        if let (Response::Cs(CsResponse::KeyPackages(kps)), true) =
            (&d.response, d.writes.ops.is_empty())
        {
            l.fetched(paid, kps);
        }
    }
    if let Some(what) = l.anomalies.first() {
        return Err(what.clone());
    }
    for (&identity, &party) in &l.published {
        let pre = lookup(&mut auth, identity);
        let ask = AcctOp::Count { identity, party, timestamp: unix(now) }.request();
        let left = match cs.handle(ask, Some(pre), &cctx).response {
            Response::Cs(CsResponse::KeyPackageCount { count, .. }) => count as usize,
            other => return Err(format!("u{identity}: cannot count: {other:?}")),
        };
        let handed = l.handed_of(&client(identity, party));
        if left + handed != ONE_TIME {
            return Err(format!(
                "{}: {left} one-time KeyPackages left and {handed} handed out of {ONE_TIME}",
                client(identity, party)
            ));
        }
    }
    let mut sds = SdsLogic::new(sds_settings());
    for &blob in &l.blobs {
        let r = sds.handle(AcctOp::Get { blob }.request(), None, &sctx).response;
        if !matches!(&r, Response::Sds(SdsResponse::Blob { data, .. }) if *data == blob_data(blob))
        {
            return Err(format!("acknowledged blob {blob:x} reads as {r:?}"));
        }
    }
    Ok(l.bound.len() + l.published.len() + l.blobs.len())
}
