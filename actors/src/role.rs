//! The generic role actor: one per hosted role per node, owning that role's
//! state machine (the host side of [`crate::contract`]).
//!
//! The actor is deliberately thin: it hands each request with a
//! [`RoleContext`] to its [`RoleLogic`], applies the writes the logic decided,
//! and only then sends the response back and carries out the effects. When the
//! logic needs another role's answer first (the CS needs the AS binding), it
//! names that request in [`RoleLogic::prerequisite`]; the actor resolves it
//! through the [`Router`] in a separate task, so the actor keeps serving
//! meanwhile, and then feeds both to the logic. Everything a role decides
//! lives in its logic type, which tests drive without an actor runtime.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use mlsd_transport::protocol::{EnqueueItem, MailboxId, NodeRequest};
use mlsd_transport::{Request, Response, Role, WireError};

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use crate::contract::{Decision, Effect, RoleContext, RoleLogic, Router, Sink};
use crate::ids::group_actor::{GroupActor, GroupArgs, GroupMsg};
use crate::settings::RoleSettings;
use crate::storage::Store;

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

impl RoleState {
    /// Makes `d`'s writes durable and returns its reply and effects; if the
    /// writes fail, the reply is `Internal`, no effect happens, and the logic
    /// starts afresh from storage (it decided as if they had landed).
    fn apply(&mut self, d: Decision) -> (Response, Vec<Effect>) {
        match d.apply(self.args.store.as_ref()) {
            Ok(done) => done,
            Err(e) => {
                tracing::warn!(error = %e, role = %self.args.role, "write failed; nothing applied");
                self.logic = logic_for(self.args.role, &self.args.settings);
                (Response::Error(WireError::Internal(e.to_string())), Vec::new())
            }
        }
    }

    /// Carries out effects of durable writes: a stored envelope goes to the
    /// mailbox's live subscriber, or else becomes a push notification.
    fn run(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Stored { mailbox, delivered, push } => {
                    let live = match self.subscribers.get(&mailbox) {
                        Some(sink) => match sink.try_send(vec![delivered]) {
                            Ok(()) => true,
                            // Gone or not keeping up: it resumes from its last
                            // ack on reconnect; meanwhile the device is offline.
                            Err(_) => {
                                self.subscribers.remove(&mailbox);
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
                    let d = state.logic.handle(request, None, &state.args.ctx());
                    let (response, effects) = state.apply(d);
                    let _ = reply.send(response);
                    state.run(effects);
                }
            },
            RoleMsg::Prepared { request, pre, reply } => {
                let d = state.logic.handle(request, Some(pre), &state.args.ctx());
                let (response, effects) = state.apply(d);
                let _ = reply.send(response);
                state.run(effects);
            }
            RoleMsg::Subscribe { request, sink, reply } => {
                let mailbox = match &request {
                    Request::Subscribe { auth, .. } => Some(auth.mailbox),
                    _ => None,
                };
                let d = state.logic.handle(request, None, &state.args.ctx());
                let (response, effects) = state.apply(d);
                if let (Response::Envelopes(_), Some(m)) = (&response, mailbox) {
                    state.subscribers.insert(m, sink);
                }
                let _ = reply.send(response);
                state.run(effects);
            }
            RoleMsg::Admin { request, reply } => {
                let d = state.logic.admin(request, &state.args.ctx());
                let (response, effects) = state.apply(d);
                let _ = reply.send(response);
                state.run(effects);
            }
            RoleMsg::Enqueue { items, reply } => {
                let d = state.logic.enqueue(items, &state.args.ctx());
                let (response, effects) = state.apply(d);
                let _ = reply.send(response);
                state.run(effects);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStore;
    use mlsd_transport::protocol::EnqueueResult;
    use std::future::Future;
    use std::pin::Pin;

    /// The ODS asks no other role anything; this router is never used.
    struct Nowhere;

    impl Router for Nowhere {
        fn route(&self, _req: Request) -> Pin<Box<dyn Future<Output = Response> + Send + '_>> {
            Box::pin(async {
                Response::Error(WireError::Internal("no router in this test".into()))
            })
        }
        fn enqueue(
            &self,
            items: Vec<EnqueueItem>,
        ) -> Pin<Box<dyn Future<Output = Vec<EnqueueResult>> + Send + '_>> {
            Box::pin(async move { vec![EnqueueResult::UnknownMailbox; items.len()] })
        }
    }

    #[tokio::test]
    async fn a_failed_write_is_refused_applies_nothing_and_the_role_goes_on() {
        let store = Arc::new(MemStore::new());
        let args = RoleArgs {
            node: "t".into(),
            role: Role::Ods,
            store: store.clone(),
            settings: Arc::new(RoleSettings::default()),
            router: Arc::new(Nowhere),
        };
        let (actor, handle) = Actor::spawn(None, RoleActor, args).await.unwrap();
        let auth_key =
            ed25519_dalek::SigningKey::from_bytes(&[1; 32]).verifying_key().to_bytes().to_vec();
        let open = Request::OpenMailbox { mailbox: [5; 32], auth_key, push: None };
        async fn ask(actor: &ActorRef<RoleMsg>, request: Request) -> Response {
            ractor::call!(actor, |reply| RoleMsg::Request { request, reply }).unwrap()
        }
        store.fail_writes(true);
        let r = ask(&actor, open.clone()).await;
        assert!(matches!(r, Response::Error(WireError::Internal(_))), "{r:?}");
        assert!(store.contents().is_empty(), "a failed batch applies nothing");
        store.fail_writes(false);
        // The same request now succeeds: nothing of the failed one remained.
        assert_eq!(ask(&actor, open.clone()).await, Response::MailboxOpened);
        assert_eq!(ask(&actor, open).await, Response::Error(WireError::MailboxTaken));
        actor.stop(None);
        handle.await.unwrap();
    }
}
