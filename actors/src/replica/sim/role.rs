//! The simulation's role: the real IDS logic ([`GroupLogic`]) with real MLS
//! messages, served the way its hosts serve it: one request at a time per
//! replica, decided only once [`ShardStore::ready`] confirmed a complete
//! state, by a group's logic loaded in the current term and kept while its
//! writes land (as a group actor keeps it), the term passed with the write
//! batch. The fan-out a send's decision names is not run here: the shard
//! layer under the IDS's decisions is what the simulation tests.
//!
//! Clients race commits for each epoch of two groups, send application
//! messages to a third group whose epoch never moves (so that every message
//! id acknowledged there must stay in storage for good), and create new
//! groups while the faults go on (a creation whose answer was lost is
//! asked again, and must be answered as the first time).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use mlsd_roles::ids::fixtures::{roster, Member};
use mlsd_roles::ids::logic::GroupLogic;
use mlsd_roles::{RoleContext, RoleLogic};
use mlsd_transport::protocol::ids::send_mac;
use mlsd_transport::protocol::{
    CommitExtras, DeliveryCap, IdsError, IdsRequest, IdsResponse, Recipients, RosterMode, SendBody,
};
use mlsd_transport::{Request, Response, WireError};

use super::super::view::{CommitError, ShardStore};
use super::super::{NodeId, RaftShard};

/// The group whose epoch never moves: writers' messages go there.
pub const WRITERS_GROUP: u32 = u32::MAX;

/// A request of the simulation's clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Create `group` (client mode, auth key `A(0)`); its creator's retry
    /// is answered as the first time.
    Create {
        /// The group.
        group: u32,
    },
    /// Commit `id` to `group` for `epoch`.
    Commit {
        /// The group.
        group: u32,
        /// The epoch the committer is in.
        epoch: u64,
        /// The commit's unique id (what a retry repeats).
        id: u64,
    },
    /// An application message `key` to [`WRITERS_GROUP`] at epoch 0: once
    /// acknowledged, its id stays accepted.
    Write {
        /// The message id (unique).
        key: u64,
    },
}

/// What a replica answered.
#[derive(Debug)]
pub enum Reply {
    /// Done: the send or creation is committed and applied.
    Done,
    /// The group is at `epoch`, not at the commit's: refused.
    Stale {
        /// The group's current epoch.
        epoch: u64,
    },
    /// Not here, not now: ask again (elsewhere).
    Retry(CommitError),
    /// Refused for good: a request of the simulation's clients never is,
    /// so the run reports it.
    Refused(String),
    /// The logic's answer, for the client to read (the ODS's requests).
    Answer(Response),
    /// An accepted send whose fan-out the sender's task now carries out
    /// ([`super::delivery`]).
    FanOut(Box<Accepted>),
}

/// A send the IDS accepted, its writes committed: the fan-out its decision
/// named, to be carried out as a group actor's fan-out does
/// ([`super::delivery`]), and what that needs to record its end.
pub struct Accepted {
    /// The node whose group actor accepted it.
    pub node: NodeId,
    /// The replica it was accepted at: a crash of the node replaces it,
    /// and the fan-out dies with it.
    pub replica: Arc<RaftShard>,
    /// The term its writes were proposed in; the end's writes are too.
    pub term: u64,
    /// The group.
    pub group: Vec<u8>,
    /// The copies to make, and what to keep if some go missing.
    pub fanout: mlsd_roles::ids::plan::FanOut,
}

impl std::fmt::Debug for Accepted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id = u64::from_be_bytes(self.fanout.plan.message_id[..8].try_into().unwrap_or([0; 8]));
        write!(f, "accepted {id:x} at {:x} in term {}", self.node, self.term)
    }
}

/// The MLS group id of simulation group `group`.
pub fn group_id(group: u32) -> Vec<u8> {
    match group {
        WRITERS_GROUP => b"sim-w".to_vec(),
        g => format!("sim-g{g}").into_bytes(),
    }
}

/// `A(epoch)` of `group`: known to every client of the simulation.
pub fn auth(group: u32, epoch: u64) -> [u8; 32] {
    let mut k = [0; 32];
    k[..4].copy_from_slice(&group.to_be_bytes());
    k[4..12].copy_from_slice(&epoch.to_be_bytes());
    k
}

/// The message id of a client's request `id`.
pub fn message_id(id: u64) -> [u8; 32] {
    let mut m = [0; 32];
    m[..8].copy_from_slice(&id.to_be_bytes());
    m
}

/// Real MLS messages, made once per process and shared by every run: per
/// group, a chain of commits (the commit for epoch e moves a member to
/// e + 1) and an application message of epoch 0. The IDS reads their
/// framing (group, epoch, content type), never their content.
struct Chain {
    member: Member,
    commits: Vec<Arc<Vec<u8>>>,
    message: Arc<Vec<u8>>,
}

fn chains() -> &'static Mutex<HashMap<u32, Chain>> {
    static CHAINS: OnceLock<Mutex<HashMap<u32, Chain>>> = OnceLock::new();
    CHAINS.get_or_init(Mutex::default)
}

/// A new application message of `group`'s epoch 0, unlike any made before
/// (the delivery run tells its copies apart by their bytes).
pub fn fresh_message(group: u32) -> Arc<Vec<u8>> {
    let mut all = chains().lock().unwrap_or_else(|p| p.into_inner());
    let chain = all.entry(group).or_insert_with(|| new_chain(group));
    Arc::new(chain.member.message(b"delivered"))
}

fn new_chain(group: u32) -> Chain {
    let mut member = Member::of(&group_id(group));
    let message = Arc::new(member.message(b"simulated"));
    Chain { member, commits: Vec::new(), message }
}

/// The commit of `group` for `epoch`, or its epoch-0 application message.
fn mls_message(group: u32, epoch: Option<u64>) -> Arc<Vec<u8>> {
    let mut all = chains().lock().unwrap_or_else(|p| p.into_inner());
    let chain = all.entry(group).or_insert_with(|| new_chain(group));
    let Some(epoch) = epoch else { return chain.message.clone() };
    while chain.commits.len() as u64 <= epoch {
        let next = chain.member.advance();
        chain.commits.push(Arc::new(next));
    }
    chain.commits[epoch as usize].clone()
}

impl Op {
    /// The IDS request of this operation, as a client makes it.
    pub fn request(self) -> IdsRequest {
        let send = |group: u32, epoch: u64, id: u64, commit: bool| {
            let message = mls_message(group, commit.then_some(epoch));
            let body = SendBody {
                group: group_id(group),
                message_id: message_id(id),
                message: message.as_ref().clone(),
                recipients: Recipients::Roster(roster()),
                skip: Some(DeliveryCap { shard: [1; 2], token: [1; 32] }),
                commit: commit.then(|| CommitExtras {
                    welcome: None,
                    welcome_to: Vec::new(),
                    next_auth_key: auth(group, epoch + 1),
                    next_roster: None,
                }),
            };
            let mac = send_mac(&auth(group, epoch), &body);
            IdsRequest::Send { body: Box::new(body), mac }
        };
        match self {
            Op::Create { group } => IdsRequest::CreateGroup {
                group: group_id(group),
                mode: RosterMode::Client,
                auth_key: auth(group, 0),
                roster: None,
            },
            Op::Commit { group, epoch, id } => send(group, epoch, id, true),
            Op::Write { key } => send(WRITERS_GROUP, 0, key, false),
        }
    }
}

/// The logic each node's role host holds, by node and key (a group for the
/// IDS, nothing for the ODS), with the leadership term it was loaded in:
/// what a node's group actors and role actors hold.
pub struct Hosted<L> {
    logic: Mutex<Loaded<L>>,
}

/// Logic by node and key, with the term it was loaded in.
type Loaded<L> = HashMap<(NodeId, Vec<u8>), (u64, L)>;

impl<L> Default for Hosted<L> {
    fn default() -> Self {
        Hosted { logic: Mutex::default() }
    }
}

/// What each node's role hosts hold, for every role a run may serve.
#[derive(Default)]
pub struct Hosts {
    /// The IDS's group logic, by group.
    pub ids: Hosted<GroupLogic>,
    /// The ODS's logic.
    pub ods: Hosted<mlsd_roles::ods::OdsLogic>,
    /// The AS's logic.
    pub auth: Hosted<mlsd_roles::r#as::AsLogic>,
    /// The CS's logic.
    pub cs: Hosted<mlsd_roles::cs::CsLogic>,
    /// The SDS's logic.
    pub sds: Hosted<mlsd_roles::sds::SdsLogic>,
}

/// What a host's decision came to once its writes landed: the answer, the
/// effects for the shell to carry out, and the term it was decided in.
pub struct Served {
    /// The logic's answer.
    pub response: Response,
    /// What the shell carries out next (a send's fan-out).
    pub effects: Vec<mlsd_roles::Effect>,
    /// The leadership term the writes were proposed in.
    pub term: u64,
}

/// Serves one request as a role host does: decided only once
/// [`ShardStore::ready`] confirmed the state, by the logic under `key`
/// loaded in the current term (else `load`ed from the replica's state, as
/// after a new term or a failed write), which takes `think` between
/// deciding and proposing (a real host checks signatures and opens
/// rosters there), time in which leadership can move. The logic is kept
/// only if its writes land: the answer with the decision's effects and
/// term. `Ok(Err(_))` when the logic cannot be loaded.
#[allow(clippy::too_many_arguments)]
pub async fn host<L: RoleLogic>(
    replica: &RaftShard,
    hosted: &Hosted<L>,
    key: (NodeId, Vec<u8>),
    load: impl FnOnce(&RoleContext<'_>) -> Result<L, WireError>,
    decide: impl FnOnce(&mut L, &RoleContext<'_>) -> mlsd_roles::Decision,
    think: std::time::Duration,
    now: SystemTime,
) -> Result<Result<Served, String>, CommitError> {
    let term = replica.ready().await?;
    let ctx = RoleContext { node: "sim", store: replica, now, random: Default::default() };
    let cached = hosted.lock().remove(&key);
    let mut logic = match cached {
        Some((t, logic)) if t == term => logic,
        _ => match load(&ctx) {
            Ok(l) => l,
            Err(e) => return Ok(Err(format!("cannot load the logic: {e:?}"))),
        },
    };
    let decision = decide(&mut logic, &ctx);
    tokio::time::sleep(think).await;
    if !decision.writes.ops.is_empty() {
        // On failure the logic is dropped: the next request loads it from
        // storage, as a host whose write failed restarts.
        replica.commit(term, decision.writes).await?;
    }
    hosted.lock().insert(key, (term, logic));
    Ok(Ok(Served { response: decision.response, effects: decision.effects, term }))
}

/// What the client of `op` is told of a host's answer ([`host`]): a
/// shard's error is tried again, a logic that cannot load or an error
/// answer is a refusal for good (which the run reports), anything else the
/// answer itself.
pub fn reply_of(
    op: &impl std::fmt::Debug,
    answer: Result<Result<Served, String>, CommitError>,
) -> Reply {
    match answer.map(|a| a.map(|s| s.response)) {
        Err(e) => Reply::Retry(e),
        Ok(Err(why)) => Reply::Refused(why),
        Ok(Ok(Response::Error(e))) => Reply::Refused(format!("{op:?}: {e:?}")),
        Ok(Ok(r)) => Reply::Answer(r),
    }
}

/// Serves `op` at `replica` of node `node`, as the IDS's hosts do; `now`
/// is the request's time ([`host`]).
pub async fn serve(
    replica: &RaftShard,
    node: NodeId,
    hosts: &Hosts,
    op: Op,
    think: std::time::Duration,
    now: SystemTime,
) -> Reply {
    let request = op.request();
    let group = mlsd_roles::ids::logic::group_of(&request).to_vec();
    let load = |ctx: &RoleContext<'_>| GroupLogic::load(&group, u32::MAX, ctx);
    let decide =
        move |l: &mut GroupLogic, ctx: &RoleContext<'_>| l.handle(Request::Ids(request), None, ctx);
    let key = (node, group.clone());
    match host(replica, &hosts.ids, key, load, decide, think, now)
        .await
        .map(|a| a.map(|s| s.response))
    {
        Err(e) => Reply::Retry(e),
        Ok(Err(why)) => Reply::Refused(why),
        Ok(Ok(
            Response::Ids(IdsResponse::Sent { .. }) | Response::Ids(IdsResponse::GroupCreated),
        )) => Reply::Done,
        Ok(Ok(Response::Error(WireError::Ids(IdsError::StaleEpoch { current })))) => {
            Reply::Stale { epoch: current }
        }
        Ok(Ok(other)) => Reply::Refused(format!("{other:?}")),
    }
}

impl<L> Hosted<L> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Loaded<L>> {
        self.logic.lock().unwrap_or_else(|p| p.into_inner())
    }
}
