//! The generic role actor: one per hosted role per node, owning that role's
//! state machine.
//!
//! The actor is deliberately thin: it hands each request with a
//! [`RoleContext`] to its [`RoleLogic`] and sends the response back. When the
//! logic needs another role's answer first (the CS needs the AS binding), it
//! names that request in [`RoleLogic::prerequisite`]; the actor resolves it
//! through the [`Router`] in a separate task, so the actor keeps serving
//! meanwhile, and then feeds both to the logic. Everything a role decides
//! lives in its logic type, which tests drive without an actor runtime.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use mlsd_transport::protocol::{Delivered, EnqueueItem, EnqueueResult, MailboxId, NodeRequest};
use mlsd_transport::{Request, Response, Role, WireError};
use std::collections::HashMap;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use crate::ids::group_actor::{GroupActor, GroupArgs, GroupMsg};

use crate::settings::RoleSettings;
use crate::storage::Store;

/// What a role's logic may use besides the request: who it is, the node's
/// storage and the current time (passed in, so tests control it).
pub struct RoleContext<'a> {
    /// Name of the hosting node, reported in replies such as `Pong`.
    pub node: &'a str,
    /// The node's storage.
    pub store: &'a dyn Store,
    /// Wall-clock time of this request.
    pub now: SystemTime,
}

/// A role's state machine. One instance per role actor; a restarted actor gets
/// a fresh instance that reloads what it needs from storage.
pub trait RoleLogic: Send + Sync + 'static {
    /// Which role this is.
    fn role(&self) -> Role;

    /// A request whose response `handle` needs for `req` (routed to its owner
    /// like any client request), or `None`.
    fn prerequisite(&self, _req: &Request) -> Option<Request> {
        None
    }

    /// Handles one request, with the response to its prerequisite if it had
    /// one. Must not panic on any input: bad input is a `Response::Error` and
    /// leaves storage unchanged.
    fn handle(&mut self, req: Request, pre: Option<Response>, ctx: &RoleContext<'_>) -> Response;

    /// Side effects the last call asked for (push notifications), which the
    /// actor shell carries out after the reply; the logic itself does no I/O.
    fn take_effects(&mut self) -> Vec<Effect> {
        Vec::new()
    }

    /// Handles an operator request that came over the node protocol
    /// (`mlsd admin enroll`).
    fn admin(&mut self, _req: NodeRequest, _ctx: &RoleContext<'_>) -> Response {
        Response::Error(WireError::NotAuthorized("no admin requests for this role".into()))
    }

    /// Stores envelopes the IDS fanned out (the ODS's hottest path, one
    /// group-committed batch per call); only the ODS takes them.
    fn enqueue(&mut self, _items: Vec<EnqueueItem>, _ctx: &RoleContext<'_>) -> Response {
        Response::Error(WireError::NotAuthorized("only the ODS stores envelopes".into()))
    }
}

/// I/O a role's logic asks its shell to do.
pub enum Effect {
    /// An envelope was durably stored: push it to the mailbox's live
    /// subscriber if it has one, otherwise POST a content-free UnifiedPush
    /// notification to `push` (the recipient's endpoint URL, a secret:
    /// zeroized on drop, never logged).
    Stored {
        /// The mailbox.
        mailbox: MailboxId,
        /// The envelope and its sequence number.
        delivered: Delivered,
        /// The decrypted push endpoint, when the enqueue carried the push key.
        push: Option<zeroize::Zeroizing<String>>,
    },
}

/// Where a live subscription's envelopes go.
pub type Sink = tokio::sync::mpsc::Sender<Vec<Delivered>>;

/// Routes a request to the node that owns it, as the node's server does for
/// clients. Implemented by the node crate; role actors use it for
/// prerequisites and the IDS for enqueueing, so they never know where other
/// roles run.
pub trait Router: Send + Sync + 'static {
    /// Serves `req` locally or at its owner.
    fn route(&self, req: Request) -> Pin<Box<dyn Future<Output = Response> + Send + '_>>;
    /// Hands envelopes to the ODS owners of their mailboxes, one shuffled
    /// batch per owner node; one result per item, in order.
    fn enqueue(
        &self,
        items: Vec<EnqueueItem>,
    ) -> Pin<Box<dyn Future<Output = Vec<EnqueueResult>> + Send + '_>>;
}

/// The state machine for `role`, fresh.
pub fn logic_for(role: Role, settings: &RoleSettings) -> Box<dyn RoleLogic> {
    match role {
        Role::As => Box::new(crate::r#as::AsLogic::new(settings.r#as.clone())),
        Role::Cs => Box::new(crate::cs::CsLogic::new(settings.cs.clone())),
        Role::Ids => Box::new(crate::ids::IdsLogic::default()),
        Role::Ods => Box::new(crate::ods::OdsLogic::new(settings.ods.clone())),
        Role::Sds => Box::new(crate::sds::SdsLogic::new(settings.sds.clone())),
    }
}

/// Message of every role actor.
pub enum RoleMsg {
    /// A routed client request owned by this node; the reply goes to `reply`.
    Request {
        /// The request.
        request: Request,
        /// Where the response goes.
        reply: RpcReplyPort<Response>,
    },
    /// A request whose prerequisite has been answered.
    Prepared {
        /// The request.
        request: Request,
        /// The prerequisite's response.
        pre: Response,
        /// Where the response goes.
        reply: RpcReplyPort<Response>,
    },
    /// `Subscribe`: like `Request`, and on success `sink` receives every
    /// envelope stored for the mailbox from then on.
    Subscribe {
        /// The `Subscribe` request.
        request: Request,
        /// Where live envelopes go.
        sink: Sink,
        /// The backlog, or why the subscription was refused.
        reply: RpcReplyPort<Response>,
    },
    /// A batch of envelopes from the IDS (after the node's coalescer).
    Enqueue {
        /// The envelopes, each for one mailbox.
        items: Vec<EnqueueItem>,
        /// `Enqueued` with one result per item.
        reply: RpcReplyPort<Response>,
    },
    /// An operator request that arrived over the node protocol.
    Admin {
        /// The request.
        request: NodeRequest,
        /// Where the response goes.
        reply: RpcReplyPort<Response>,
    },
}

/// Start-up arguments of a role actor.
#[derive(Clone)]
pub struct RoleArgs {
    /// Hosting node's name.
    pub node: String,
    /// The role to host.
    pub role: Role,
    /// The node's storage, shared by all its role actors.
    pub store: Arc<dyn Store>,
    /// Settings from the cluster config.
    pub settings: Arc<RoleSettings>,
    /// How to reach other roles.
    pub router: Arc<dyn Router>,
}

/// The ractor shell around a [`RoleLogic`].
pub struct RoleActor;

/// State of a role actor.
pub struct RoleState {
    args: RoleArgs,
    logic: Box<dyn RoleLogic>,
    /// IDS only: the live group actors, by group id and by actor id.
    groups: HashMap<Vec<u8>, ActorRef<GroupMsg>>,
    group_ids: HashMap<ActorId, Vec<u8>>,
    /// ODS only: live subscribers by mailbox (one per mailbox; a new one replaces the old).
    subscribers: HashMap<MailboxId, Sink>,
}

impl RoleState {
    /// The group actor of `group`, spawned (linked to us) if not running.
    async fn group(
        &mut self,
        me: &ActorRef<RoleMsg>,
        group: &[u8],
    ) -> Result<ActorRef<GroupMsg>, WireError> {
        if let Some(a) = self.groups.get(group) {
            return Ok(a.clone());
        }
        // Registered under a name, so there is never more than one actor per
        // group here: one that outlived a restart of this role actor is reused.
        let name = format!("{}/ids/group/{}", self.args.node, hex_id(group));
        if let Some(a) = ActorRef::<GroupMsg>::where_is(name.clone()) {
            return Ok(a);
        }
        let args = GroupArgs {
            node: Arc::from(self.args.node.as_str()),
            group: group.to_vec(),
            store: self.args.store.clone(),
            router: self.args.router.clone(),
            concurrency: self.args.settings.ids.anonymizer_concurrency,
            idle: self.args.settings.ids.group_idle,
            chaos_hooks: self.args.settings.ids.chaos_hooks,
        };
        // Linked: when it stops (idle) or dies, handle_supervisor_evt forgets
        // it; the next request for the group starts a new one from storage.
        let (a, _) = Actor::spawn_linked(Some(name), GroupActor, args, me.get_cell())
            .await
            .map_err(|e| match e {
                // Its group record could not be read: say why.
                ractor::SpawnErr::StartupFailed(e) => match e.downcast::<WireError>() {
                    Ok(e) => *e,
                    Err(e) => WireError::Internal(format!("group actor: {e}")),
                },
                e => WireError::Internal(format!("group actor: {e}")),
            })?;
        self.groups.insert(group.to_vec(), a.clone());
        self.group_ids.insert(a.get_id(), group.to_vec());
        Ok(a)
    }
}

impl RoleArgs {
    fn ctx(&self) -> RoleContext<'_> {
        RoleContext { node: &self.node, store: self.store.as_ref(), now: SystemTime::now() }
    }
}

impl Actor for RoleActor {
    type Msg = RoleMsg;
    type State = RoleState;
    type Arguments = RoleArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: RoleArgs,
    ) -> Result<RoleState, ActorProcessingErr> {
        let logic = logic_for(args.role, &args.settings);
        Ok(RoleState {
            args,
            logic,
            groups: HashMap::new(),
            group_ids: HashMap::new(),
            subscribers: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: RoleMsg,
        state: &mut RoleState,
    ) -> Result<(), ActorProcessingErr> {
        // A caller that timed out and went away is not our failure: sends to
        // `reply` ignore errors.
        match msg {
            RoleMsg::Request { request, reply } if is_group_request(&request) => {
                let group = request.shard().1.to_vec();
                if group.is_empty() || group.len() > crate::ids::group::MAX_GROUP_ID {
                    let _ =
                        reply.send(Response::Error(WireError::Malformed("group id length".into())));
                    return Ok(());
                }
                // A group whose record cannot be read (or whose actor cannot
                // start) is refused alone: this role actor keeps serving the
                // other groups instead of dying on every retry.
                let actor = match state.group(&myself, &group).await {
                    Ok(a) => a,
                    Err(e) => {
                        let _ = reply.send(Response::Error(e));
                        return Ok(());
                    }
                };
                let msg = match request {
                    Request::CreateGroup { mode, auth_key, roster, .. } => {
                        GroupMsg::Create { mode, auth_key, roster, reply }
                    }
                    Request::Send { body, mac } => GroupMsg::Send { body, mac, reply },
                    _ => unreachable!("is_group_request"),
                };
                // A group actor that is stopping drops the message; the sender retries.
                let _ = actor.send_message(msg);
            }
            RoleMsg::Request { request, reply } => match state.logic.prerequisite(&request) {
                Some(pre_req) => {
                    let router = state.args.router.clone();
                    tokio::spawn(async move {
                        let pre = router.route(pre_req).await;
                        if let Err(e) =
                            myself.send_message(RoleMsg::Prepared { request, pre, reply })
                        {
                            // The actor died meanwhile; the caller hears nothing and
                            // retries, as with any request lost in a crash.
                            drop(e);
                        }
                    });
                }
                None => {
                    let ctx = state.args.ctx();
                    let response = state.logic.handle(request, None, &ctx);
                    let _ = reply.send(response);
                }
            },
            RoleMsg::Prepared { request, pre, reply } => {
                let ctx = state.args.ctx();
                let response = state.logic.handle(request, Some(pre), &ctx);
                let _ = reply.send(response);
            }
            RoleMsg::Subscribe { request, sink, reply } => {
                let mailbox = match &request {
                    Request::Subscribe { auth, .. } => Some(auth.mailbox),
                    _ => None,
                };
                let ctx = state.args.ctx();
                let response = state.logic.handle(request, None, &ctx);
                if let (Response::Envelopes(_), Some(m)) = (&response, mailbox) {
                    state.subscribers.insert(m, sink);
                }
                let _ = reply.send(response);
            }
            RoleMsg::Admin { request, reply } => {
                let ctx = state.args.ctx();
                let response = state.logic.admin(request, &ctx);
                let _ = reply.send(response);
            }
            RoleMsg::Enqueue { items, reply } => {
                let ctx = state.args.ctx();
                let response = state.logic.enqueue(items, &ctx);
                let _ = reply.send(response);
            }
        }
        for effect in state.logic.take_effects() {
            match effect {
                Effect::Stored { mailbox, delivered, push } => {
                    let live = match state.subscribers.get(&mailbox) {
                        Some(sink) => match sink.try_send(vec![delivered]) {
                            Ok(()) => true,
                            // Gone or not keeping up: it resumes from its last
                            // ack on reconnect; meanwhile the device is offline.
                            Err(_) => {
                                state.subscribers.remove(&mailbox);
                                false
                            }
                        },
                        None => false,
                    };
                    if let (false, Some(url)) = (live, push) {
                        tokio::spawn(crate::push::notify(url));
                    }
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut RoleState,
    ) -> Result<(), ActorProcessingErr> {
        // Group actors stop when idle and may die; either way they are
        // forgotten and respawned from storage on the next request. Their
        // death must not take this role actor down (ractor's default).
        let id = match &evt {
            SupervisionEvent::ActorTerminated(c, _, _) | SupervisionEvent::ActorFailed(c, _) => {
                c.get_id()
            }
            _ => return Ok(()),
        };
        if let Some(g) = state.group_ids.remove(&id) {
            state.groups.remove(&g);
        }
        if let SupervisionEvent::ActorFailed(_, e) = evt {
            tracing::warn!(error = %e, "group actor failed; it restarts on the next request");
        }
        Ok(())
    }
}

fn hex_id(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn is_group_request(r: &Request) -> bool {
    matches!(r, Request::CreateGroup { .. } | Request::Send { .. })
}

/// The registry name of `role`'s actor on `node`; names include the node so
/// several nodes can share one process in tests.
pub fn actor_name(node: &str, role: Role) -> String {
    format!("{node}/{role}")
}

/// Answers `Ping` for any role: the reply names the node and role that handled
/// it, which is what routing tests and `mlsc ping` check.
pub(crate) fn pong(role: Role, ctx: &RoleContext<'_>) -> Response {
    Response::Pong { node: ctx.node.to_string(), role }
}
