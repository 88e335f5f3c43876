//! The node supervisor: parent of one role actor per shard this node
//! replicates (each serves while this node leads its shard).
//!
//! A role actor that dies (panic, error, or killed by a chaos test) is
//! restarted after a backoff that doubles with each recent restart. If one
//! role restarts more than [`MAX_RESTARTS`] times within [`RESTART_WINDOW`],
//! something is persistently wrong (e.g. storage failing): the supervisor
//! stops, and with it the node, rather than spin.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlsd_actors::ids::host::IdsHost;
use mlsd_actors::ods::OdsHost;
use mlsd_actors::replica::{ShardId, ShardStore};
use mlsd_actors::role::shard_actor_name;
use mlsd_actors::{NodeServices, RoleActor, RoleArgs, Router};
use mlsd_roles::RoleSettings;
use mlsd_transport::Role;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};

/// Default restarts of one role tolerated within [`RESTART_WINDOW`]
/// (`[supervision] max_restarts`).
pub const MAX_RESTARTS: usize = 10;
/// Window over which restarts are counted.
pub const RESTART_WINDOW: Duration = Duration::from_secs(30);
/// Backoff before the first restart; doubled per restart in the window, at most 1 s.
pub const RESTART_BACKOFF: Duration = Duration::from_millis(20);

/// Messages of the node supervisor.
pub enum SupervisorMsg {
    /// Spawn the host of this shard (after a backoff).
    Restart(ShardId),
    /// A replica this node took on while running (the cluster map placed
    /// a shard here): host it too.
    Host(ShardId, Arc<dyn ShardStore>),
    /// A replica this node closed (the shard moved away): stop its host
    /// for good.
    Unhost(ShardId),
    /// Stop every role actor, then the supervisor itself.
    Shutdown(ractor::RpcReplyPort<()>),
}

/// Start-up arguments.
pub struct SupervisorArgs {
    /// The node's name.
    pub node: String,
    /// The shards this node replicates: one role host each, which serves
    /// while this node leads the shard.
    pub shards: Vec<(ShardId, Arc<dyn ShardStore>)>,
    /// Role settings from the config.
    pub settings: Arc<RoleSettings>,
    /// The node's live handles the role hosts share.
    pub services: Arc<NodeServices>,
    /// Routes role actors' prerequisite requests.
    pub router: Arc<dyn Router>,
    /// Restarts of one role tolerated within [`RESTART_WINDOW`].
    pub max_restarts: usize,
}

/// The supervisor actor.
pub struct NodeSupervisor;

/// Its state.
pub struct SupervisorState {
    node: String,
    shards: HashMap<ShardId, Arc<dyn ShardStore>>,
    settings: Arc<RoleSettings>,
    services: Arc<NodeServices>,
    router: Arc<dyn Router>,
    max_restarts: usize,
    children: HashMap<ActorId, ShardId>,
    restarts: HashMap<ShardId, VecDeque<Instant>>,
    shutting_down: bool,
}

impl SupervisorState {
    async fn spawn_role(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        shard: ShardId,
    ) -> Result<(), ActorProcessingErr> {
        let role = shard.role;
        let store = self.shards.get(&shard).ok_or("not a shard of this node")?.clone();
        let args = RoleArgs {
            node: self.node.clone(),
            role,
            store,
            settings: self.settings.clone(),
            services: self.services.clone(),
            router: self.router.clone(),
        };
        let name = shard_actor_name(&self.node, role, shard.index);
        // Linked: our handle_supervisor_evt hears when it dies and restarts it.
        // The IDS and ODS have hosts of their own; all take the same messages.
        let cell = myself.get_cell();
        let (actor, _) = match role {
            Role::Ids => IdsHost::spawn_linked(Some(name), IdsHost, args, cell).await?,
            Role::Ods => OdsHost::spawn_linked(Some(name), OdsHost, args, cell).await?,
            Role::As | Role::Cs | Role::Sds => {
                RoleActor::spawn_linked(Some(name), RoleActor, args, cell).await?
            }
        };
        self.children.insert(actor.get_id(), shard);
        Ok(())
    }
}

impl Actor for NodeSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let mut st = SupervisorState {
            node: args.node,
            shards: args.shards.iter().cloned().collect(),
            settings: args.settings,
            services: args.services,
            router: args.router,
            max_restarts: args.max_restarts,
            children: HashMap::new(),
            restarts: HashMap::new(),
            shutting_down: false,
        };
        for (shard, _) in args.shards {
            st.spawn_role(&myself, shard).await?;
        }
        Ok(st)
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        st: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Restart(shard)
                if !st.shutting_down && st.shards.contains_key(&shard) =>
            {
                if let Err(e) = st.spawn_role(&myself, shard).await {
                    // The old name may still be registered for a moment; try again.
                    tracing::warn!(%shard, error = %e, "restart failed; retrying");
                    myself.send_after(RESTART_BACKOFF, move || SupervisorMsg::Restart(shard));
                } else {
                    tracing::info!(%shard, "role actor restarted");
                }
            }
            SupervisorMsg::Restart(_) => {}
            SupervisorMsg::Host(shard, store) if !st.shutting_down => {
                if st.shards.insert(shard, store).is_none() {
                    if let Err(e) = st.spawn_role(&myself, shard).await {
                        tracing::warn!(%shard, error = %e, "cannot host a new replica; retrying");
                        myself.send_after(RESTART_BACKOFF, move || SupervisorMsg::Restart(shard));
                    }
                }
            }
            SupervisorMsg::Host(..) => {}
            SupervisorMsg::Unhost(shard) => {
                st.shards.remove(&shard);
                st.restarts.remove(&shard);
                let child = st.children.iter().find(|(_, s)| **s == shard).map(|(id, _)| *id);
                if let Some(id) = child {
                    st.children.remove(&id);
                    let name = shard_actor_name(&st.node, shard.role, shard.index);
                    if let Some(host) = ractor::registry::where_is(name) {
                        host.stop(Some("the shard moved to other nodes".into()));
                    }
                }
            }
            SupervisorMsg::Shutdown(reply) => {
                st.shutting_down = true;
                myself.stop_children_and_wait(None, Some(Duration::from_secs(5))).await;
                let _ = reply.send(());
                myself.stop(None);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        evt: SupervisionEvent,
        st: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, reason) = match evt {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.unwrap_or_else(|| "stopped".into()))
            }
            SupervisionEvent::ActorFailed(cell, err) => (cell, err.to_string()),
            _ => return Ok(()),
        };
        let Some(role) = st.children.remove(&cell.get_id()) else { return Ok(()) };
        let shard = role;
        if st.shutting_down {
            return Ok(());
        }
        let now = Instant::now();
        let recent = st.restarts.entry(role).or_default();
        recent.retain(|t| now.duration_since(*t) < RESTART_WINDOW);
        if recent.len() >= st.max_restarts {
            tracing::error!(%role, %reason, "role actor died too often; stopping the node");
            myself.stop(Some(format!("{role} exceeded its restart intensity")));
            return Ok(());
        }
        recent.push_back(now);
        let backoff = RESTART_BACKOFF
            .saturating_mul(1 << (recent.len() - 1).min(6))
            .min(Duration::from_secs(1));
        tracing::warn!(%role, %reason, ?backoff, "role actor died; restarting");
        myself.send_after(backoff, move || SupervisorMsg::Restart(shard));
        Ok(())
    }
}
