//! The IDS host: the node's IDS role actor. It has no state machine of its
//! own: it routes `CreateGroup` and `Send` to the group's actor (spawned on
//! demand, linked to it), answers `Ping`, and forgets a group actor that
//! stopped or died; the next request for that group starts it again from
//! storage. Each `CreateGroup` also sweeps: the oldest few groups of the
//! idle index, if idle longer than `idle_group_days`, are told to collect
//! themselves (each by its own actor, the one writer of its group).

use mlsd_transport::protocol::{BadFrame, ClusterError, IdsRequest};
use std::collections::HashMap;
use std::sync::Arc;

use mlsd_transport::{Request, Role, WireError};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};

use super::group_actor::{GroupActor, GroupArgs, GroupMsg};
use crate::role::{not_here, RoleArgs, RoleMsg};
use mlsd_roles::contract::{not_mine, pong, Decision};
use mlsd_roles::ids::group::MAX_GROUP_ID;
use mlsd_roles::ids::logic::{forget_idle_entry, group_of, idle_groups, IdleGroup};

/// The IDS role actor.
pub struct IdsHost;

/// Its state: the live group actors, by group id and by actor id.
pub struct IdsState {
    args: RoleArgs,
    groups: HashMap<Vec<u8>, ActorRef<GroupMsg>>,
    group_ids: HashMap<ActorId, Vec<u8>>,
    /// The leadership term the running group actors were loaded in.
    term: u64,
}

impl IdsState {
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
        let index = self.args.store.shard().map_or(0, |s| s.index);
        let name = format!("{}/ids/{index}/group/{}", self.args.node, hex_id(group));
        if let Some(a) = ActorRef::<GroupMsg>::where_is(name.clone()) {
            return Ok(a);
        }
        let ids = &self.args.settings.ids;
        let args = GroupArgs {
            node: Arc::from(self.args.node.as_str()),
            group: group.to_vec(),
            store: self.args.store.clone(),
            term: self.term,
            router: self.args.router.clone(),
            concurrency: ids.anonymizer_concurrency,
            idle: ids.group_idle,
            chaos_hooks: ids.chaos_hooks,
            copies_per_second: ids.group_copies_per_second,
            slots: self.args.services.fanout_slots.clone(),
        };
        // Linked: when it stops (idle) or dies, handle_supervisor_evt forgets
        // it; the next request for the group starts a new one from storage.
        let (a, _) = Actor::spawn_linked(Some(name), GroupActor, args, me.get_cell())
            .await
            .map_err(|e| match e {
                // Its group record could not be read: say why.
                ractor::SpawnErr::StartupFailed(e) => match e.downcast::<WireError>() {
                    Ok(e) => *e,
                    Err(e) => {
                        WireError::Cluster(ClusterError::Internal(format!("group actor: {e}")))
                    }
                },
                e => WireError::Cluster(ClusterError::Internal(format!("group actor: {e}"))),
            })?;
        self.groups.insert(group.to_vec(), a.clone());
        self.group_ids.insert(a.get_id(), group.to_vec());
        Ok(a)
    }
}

impl Actor for IdsHost {
    type Msg = RoleMsg;
    type State = IdsState;
    type Arguments = RoleArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<RoleMsg>,
        args: RoleArgs,
    ) -> Result<IdsState, ActorProcessingErr> {
        Ok(IdsState { args, groups: HashMap::new(), group_ids: HashMap::new(), term: 0 })
    }

    async fn handle(
        &self,
        myself: ActorRef<RoleMsg>,
        msg: RoleMsg,
        state: &mut IdsState,
    ) -> Result<(), ActorProcessingErr> {
        let (request, reply) = match msg {
            RoleMsg::Request { request, reply } | RoleMsg::Prepared { request, reply, .. } => {
                (request, reply)
            }
            RoleMsg::Subscribe { reply, .. }
            | RoleMsg::Enqueue { reply, .. }
            | RoleMsg::Admin { reply, .. } => {
                let _ = reply.send(not_here(Role::Ids));
                return Ok(());
            }
            RoleMsg::Deposed => {
                // In-flight sends answer a retryable error; the next leader
                // loads the groups afresh.
                state.stop_groups();
                return Ok(());
            }
        };
        let request = match request {
            Request::Ids(r) => r,
            other => {
                let ctx = state.args.ctx();
                let decision = match other {
                    Request::Ping(_) => Decision::reply(pong(Role::Ids, &ctx)),
                    other => not_mine(Role::Ids, &other),
                };
                let _ = reply.send(decision.response);
                return Ok(());
            }
        };
        // Groups are served by the shard's leader only, from state loaded in
        // its current term: group actors of an earlier term are stopped (their
        // writes would be refused anyway).
        let term = match state.args.store.ready().await {
            Ok(t) => t,
            Err(e) => {
                state.stop_groups();
                let _ = reply.send(mlsd_transport::Response::Error(e.into()));
                return Ok(());
            }
        };
        if term != state.term {
            state.stop_groups();
            state.term = term;
        }
        let creates = matches!(request, IdsRequest::CreateGroup { .. });
        let group = group_of(&request).to_vec();
        let msg = GroupMsg::Request { request, reply };
        if group.is_empty() || group.len() > MAX_GROUP_ID {
            msg.refuse(WireError::Frame(BadFrame::Malformed("group id length".into())));
            return Ok(());
        }
        // A group whose record cannot be read (or whose actor cannot start)
        // is refused alone: this role actor keeps serving the other groups
        // instead of dying on every retry.
        match state.group(&myself, &group).await {
            // A group actor that is stopping drops the message; the sender retries.
            Ok(actor) => drop(actor.send_message(msg)),
            Err(e) => msg.refuse(e),
        }
        if creates {
            state.sweep(&myself).await;
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<RoleMsg>,
        evt: SupervisionEvent,
        state: &mut IdsState,
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

/// Idle-index entries a group creation looks at: sweeping costs each
/// creation one bounded read, and collection keeps pace with creation.
const COLLECT_PER_CREATE: usize = 8;

impl IdsState {
    /// Retires every group actor (leadership moved): each refuses new
    /// requests retryably (`NotLeader`) and stops once its running fan-outs
    /// are done ([`GroupMsg::Retire`]); the next leader loads the groups
    /// afresh.
    fn stop_groups(&mut self) {
        for (_, a) in self.groups.drain() {
            let _ = a.send_message(GroupMsg::Retire);
        }
        self.group_ids.clear();
    }

    /// Tells the groups at the head of the idle index that have been idle
    /// longer than `idle_group_days` to collect themselves.
    async fn sweep(&mut self, me: &ActorRef<RoleMsg>) {
        let days = self.args.settings.ids.idle_group_days;
        let idle = match idle_groups(&self.args.ctx(), days, COLLECT_PER_CREATE) {
            Ok(idle) => idle,
            Err(e) => return tracing::warn!(error = %e, "cannot read the idle-group index"),
        };
        for IdleGroup { day, group, entry, cutoff } in idle {
            match self.group(me, &group).await {
                Ok(actor) => drop(actor.send_message(GroupMsg::Collect { day, cutoff })),
                Err(e) => {
                    tracing::warn!(error = %e, "an idle group cannot be loaded to collect it");
                    let _ = self.args.store.commit(self.term, forget_idle_entry(entry)).await;
                }
            }
        }
    }
}

fn hex_id(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
