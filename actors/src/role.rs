//! The generic role actor: one per hosted role per node, owning that role's
//! state machine.
//!
//! The actor is deliberately thin: it receives [`RoleMsg::Request`], hands the
//! request with a [`RoleContext`] to its [`RoleLogic`] and sends the response
//! back. Everything a role decides lives in its logic type, which tests drive
//! without an actor runtime.

use std::sync::Arc;
use std::time::SystemTime;

use mlsd_transport::{Request, Response, Role};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

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
    /// Handles one request. Must not panic on any input: bad input is an
    /// `Response::Error` and leaves storage unchanged.
    fn handle(&mut self, req: Request, ctx: &RoleContext<'_>) -> Response;
}

/// The state machine for `role`, fresh.
pub fn logic_for(role: Role) -> Box<dyn RoleLogic> {
    match role {
        Role::As => Box::new(crate::r#as::AsLogic::default()),
        Role::Cs => Box::new(crate::cs::CsLogic::default()),
        Role::Ids => Box::new(crate::ids::IdsLogic::default()),
        Role::Ods => Box::new(crate::ods::OdsLogic::default()),
        Role::Sds => Box::new(crate::sds::SdsLogic::default()),
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
}

/// The ractor shell around a [`RoleLogic`].
pub struct RoleActor;

/// State of a role actor.
pub struct RoleState {
    args: RoleArgs,
    logic: Box<dyn RoleLogic>,
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
        let logic = logic_for(args.role);
        Ok(RoleState { args, logic })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: RoleMsg,
        state: &mut RoleState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RoleMsg::Request { request, reply } => {
                let ctx = RoleContext {
                    node: &state.args.node,
                    store: state.args.store.as_ref(),
                    now: SystemTime::now(),
                };
                let response = state.logic.handle(request, &ctx);
                // The caller may have timed out and gone; that is not our failure.
                let _ = reply.send(response);
            }
        }
        Ok(())
    }
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
