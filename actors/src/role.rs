//! What every role host shares, and the generic host: one actor per hosted
//! role per node, owning that role's state machine (the host side of
//! [`mlsd_roles::contract`]).
//!
//! The AS, CS and SDS run in the generic [`RoleActor`]; the IDS and ODS have
//! hosts of their own for what only they hold ([`crate::ids::host`]: the group
//! actors; [`crate::ods::host`]: live subscribers). All take [`RoleMsg`], so
//! the node calls every role the same way.
//!
//! A host is deliberately thin: it hands each request with a [`RoleContext`]
//! to its [`RoleLogic`], applies the writes the logic decided ([`Hosted`]),
//! and only then sends the response back and carries out the effects. When
//! the logic needs another role's answer first (the CS needs the AS binding),
//! it names that request in [`RoleLogic::prerequisite`]; the actor resolves
//! it through the [`Router`] in a separate task, so the actor keeps serving
//! meanwhile, and then feeds both to the logic. Everything a role decides
//! lives in its logic type, which tests drive without an actor runtime.

use mlsd_transport::protocol::{AuthError, EnqueueItem, NodeRequest};
use std::sync::Arc;
use std::time::SystemTime;

use mlsd_transport::{Request, Response, Role, WireError};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::replica::ShardStore;
use crate::router::{Router, Sink};
use mlsd_roles::contract::{Decision, Effect, RoleContext, RoleLogic};
use mlsd_roles::settings::RoleSettings;

/// The state machine for `role`, fresh; `None` for the IDS, whose state
/// machines are its groups' cores ([`crate::ids::host`]).
pub fn logic_for(role: Role, settings: &RoleSettings) -> Option<Box<dyn RoleLogic>> {
    Some(match role {
        Role::As => Box::new(mlsd_roles::r#as::AsLogic::new(settings.r#as.clone())),
        Role::Cs => Box::new(mlsd_roles::cs::CsLogic::new(settings.cs.clone())),
        Role::Ids => return None,
        Role::Ods => Box::new(mlsd_roles::ods::OdsLogic::new(settings.ods.clone())),
        Role::Sds => Box::new(mlsd_roles::sds::SdsLogic::new(settings.sds.clone())),
    })
}

/// Message of every role host.
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
    /// This node stopped leading the host's shard (or its lease ran out):
    /// sent by the node as soon as it notices, so that the host drops what
    /// belongs to the leader at once (the IDS its group actors, the ODS its
    /// live subscriptions, which close and are resumed at the new leader)
    /// rather than at the next request.
    Deposed,
}

/// Start-up arguments of a role host.
#[derive(Clone)]
pub struct RoleArgs {
    /// Hosting node's name.
    pub node: String,
    /// The role to host.
    pub role: Role,
    /// The shard this host serves: its state, and where its writes go
    /// (replicated, [`crate::replica`]).
    pub store: Arc<dyn ShardStore>,
    /// Settings from the cluster config.
    pub settings: Arc<RoleSettings>,
    /// The node's live handles (push queue, fan-out slots).
    pub services: Arc<crate::services::NodeServices>,
    /// How to reach other roles.
    pub router: Arc<dyn Router>,
}

impl RoleArgs {
    /// The context of a request arriving now.
    pub(crate) fn ctx(&self) -> RoleContext<'_> {
        context(&self.node, self.store.as_ref())
    }
}

/// The context of a request arriving now at a host on `node` reading
/// `store`: the shells' clock and the operating system's random generator
/// are read here, and only here, for the logic.
pub(crate) fn context<'a>(node: &'a str, store: &'a dyn crate::storage::View) -> RoleContext<'a> {
    RoleContext {
        node,
        store,
        now: SystemTime::now(),
        random: zeroize::Zeroizing::new(rand::random()),
    }
}

/// A role's logic with what its host needs to apply its decisions: the
/// state of the generic host, and part of the ODS host's.
pub struct Hosted {
    pub(crate) args: RoleArgs,
    pub(crate) logic: Box<dyn RoleLogic>,
    /// The leadership term the logic's in-memory state was built in.
    term: u64,
}

impl Hosted {
    /// The logic of `args.role` (not the IDS, which has none of its own).
    pub(crate) fn new(args: RoleArgs) -> Result<Self, ActorProcessingErr> {
        let logic = logic_for(args.role, &args.settings)
            .ok_or_else(|| format!("the {} has no role logic of its own", args.role))?;
        Ok(Hosted { args, logic, term: 0 })
    }

    pub(crate) fn refresh(&mut self) {
        if let Some(fresh) = logic_for(self.args.role, &self.args.settings) {
            self.logic = fresh;
        }
    }

    /// Confirms that this node leads the shard with its state complete, and
    /// returns the term to decide in; the logic starts afresh from storage
    /// in a new term (another leader may have changed the state it caches).
    /// Not leading is answered as the error the entry node follows.
    pub(crate) async fn ready(&mut self) -> Result<u64, Response> {
        let term = self.args.store.ready().await.map_err(|e| Response::Error(e.into()))?;
        if term != self.term {
            self.refresh();
            self.term = term;
        }
        Ok(term)
    }

    /// Makes `d`'s writes durable on the shard's replicas (or, for a reply
    /// without writes, confirms leadership) and returns its reply and
    /// effects. If that fails, the reply says why (retryable unless storage
    /// failed), no effect happens, and the logic starts afresh from storage
    /// (it decided as if the writes had landed).
    pub(crate) async fn apply(&mut self, term: u64, d: Decision) -> (Response, Vec<Effect>) {
        match self.args.store.commit(term, d.writes).await {
            Ok(()) => (d.response, d.effects),
            Err(e) => {
                tracing::warn!(error = %e, role = %self.args.role, "write not committed; nothing applied");
                self.refresh();
                (Response::Error(e.into()), Vec::new())
            }
        }
    }

    /// Readies, decides with `decide` and applies: one request, start to end.
    pub(crate) async fn serve(
        &mut self,
        decide: impl FnOnce(&mut dyn RoleLogic, &RoleContext<'_>) -> Decision,
    ) -> (Response, Vec<Effect>) {
        let term = match self.ready().await {
            Ok(t) => t,
            Err(r) => return (r, Vec::new()),
        };
        let d = decide(self.logic.as_mut(), &self.args.ctx());
        self.apply(term, d).await
    }
}

/// The generic host, of the AS, CS and SDS: requests (resolving
/// prerequisites first) and operator requests.
pub struct RoleActor;

impl Actor for RoleActor {
    type Msg = RoleMsg;
    type State = Hosted;
    type Arguments = RoleArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: RoleArgs,
    ) -> Result<Hosted, ActorProcessingErr> {
        Hosted::new(args)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: RoleMsg,
        state: &mut Hosted,
    ) -> Result<(), ActorProcessingErr> {
        // A caller that timed out and went away is not our failure: sends to
        // `reply` ignore errors. None of these roles has effects.
        match msg {
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
                    let r = state.serve(|l, ctx| l.handle(request, None, ctx)).await;
                    let _ = reply.send(r.0);
                }
            },
            RoleMsg::Prepared { request, pre, reply } => {
                let r = state.serve(|l, ctx| l.handle(request, Some(pre), ctx)).await;
                let _ = reply.send(r.0);
            }
            RoleMsg::Admin { request, reply } => {
                let r = state.serve(|l, ctx| l.admin(request, ctx)).await;
                let _ = reply.send(r.0);
            }
            RoleMsg::Subscribe { reply, .. } | RoleMsg::Enqueue { reply, .. } => {
                let _ = reply.send(not_here(state.args.role));
            }
            // The next request confirms leadership afresh anyway; the logic
            // starts from storage in whatever term comes next.
            RoleMsg::Deposed => state.refresh(),
        }
        Ok(())
    }
}

/// The answer to a message a role's host does not take (a subscription or
/// an enqueue sent to a role other than the ODS).
pub(crate) fn not_here(role: Role) -> Response {
    Response::Error(WireError::Auth(AuthError::NotAuthorized(format!(
        "the {role} takes no such request"
    ))))
}

/// The registry name of `role`'s actor on `node`; names include the node so
/// several nodes can share one process in tests.
pub fn actor_name(node: &str, role: Role) -> String {
    format!("{node}/{role}")
}

/// The registry name of the host of shard `index` of `role` on `node`.
pub fn shard_actor_name(node: &str, role: Role, index: u16) -> String {
    format!("{node}/{role}/{index}")
}
