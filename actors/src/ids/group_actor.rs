//! The group actor: the serializer of one group's logic
//! ([`GroupLogic`]), so a group's sends and commits are decided one at a
//! time. It hands each request to the logic with the time, commits the
//! writes the logic decided to the group's shard, and carries out the
//! fan-out the decision names, one fan-out actor per accepted message. It
//! stops itself after being idle; its state is in storage and the next
//! request brings it back.
//!
//! When its node stops leading the group's shard (a failover, a leadership
//! handover) it retires: it decides nothing more, but lets its running
//! fan-outs finish before it stops. Stopping at once would kill them (an
//! actor's children die with it) after some copies left and before the
//! rest did; their sender's retry then reaches members who moved on many
//! epochs since, and whose keys no longer open the late copies.

use std::sync::Arc;
use std::time::Duration;

use mlsd_transport::protocol::{ChaosTarget, ClusterError, IdsRequest};
use mlsd_transport::{Request, Response, WireError};
use std::collections::HashMap;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use super::fanout::{Fanout, FanoutArgs, DONE};
use super::slots::{FanoutSlot, FanoutSlots};
use crate::replica::ShardStore;
use crate::role::context;
use crate::router::Router;
use crate::storage::Batch;
use mlsd_roles::ids::logic::{Collected, GroupLogic};
use mlsd_roles::ids::plan::{FanOut, KeptSend};
use mlsd_roles::{Decision, Effect, RoleLogic};

/// Messages of a group actor.
pub enum GroupMsg {
    /// `CreateGroup` or `Send` for this group. A send's reply is answered
    /// by its fan-out, once every copy is enqueued.
    Request {
        /// The request.
        request: IdsRequest,
        /// Reply.
        reply: RpcReplyPort<Response>,
    },
    /// Stop if nothing arrived since generation `.0`.
    IdleCheck(u64),
    /// The node no longer leads the shard: refuse new requests, stop once
    /// the running fan-outs are done.
    Retire,
    /// Delete the group if it was last active on or before day `cutoff`
    /// (the host's sweep found its idle-index entry under `day`).
    Collect {
        /// The entry's day.
        day: u32,
        /// The last day of activity that counts as idle.
        cutoff: u32,
    },
}

impl GroupMsg {
    /// Answers the request this message carries with `e`, without a group
    /// actor (its group id is malformed, or its actor cannot start).
    pub fn refuse(self, e: WireError) {
        match self {
            GroupMsg::Request { reply, .. } => {
                let _ = reply.send(Response::Error(e));
            }
            GroupMsg::IdleCheck(_) | GroupMsg::Collect { .. } | GroupMsg::Retire => {}
        }
    }
}

/// Start-up arguments.
pub struct GroupArgs {
    /// Hosting node (names the process groups its actors join).
    pub node: Arc<str>,
    /// MLS group id.
    pub group: Vec<u8>,
    /// The IDS shard of the group: its state, and where its writes go.
    pub store: Arc<dyn ShardStore>,
    /// The leadership term the group is loaded in: its writes are
    /// proposed in it, and refused once the shard has moved on.
    pub term: u64,
    /// Reaches the ODS.
    pub router: Arc<dyn Router>,
    /// Anonymizers per fan-out at once.
    pub concurrency: usize,
    /// Idle time before the actor stops.
    pub idle: Duration,
    /// Join process groups for chaos requests (see `IdsSettings::chaos_hooks`).
    pub chaos_hooks: bool,
    /// Copies per second this group may make ([`Budget`]).
    pub copies_per_second: u32,
    /// The node's fan-outs at once, shared by its groups.
    pub slots: Arc<FanoutSlots>,
}

/// State of a group actor.
pub struct GroupState {
    /// The group's logic, with the copies it may still make (rebuilt full
    /// when the actor restarts, which an idle group does after `idle`
    /// anyway).
    logic: GroupLogic,
    args: GroupArgs,
    generation: u64,
    /// Running fan-outs: their message id, what to keep if they end with
    /// copies missing, whether they retry a kept send, and their node slot.
    fanouts: HashMap<ActorId, ([u8; 32], KeptSend, bool, FanoutSlot)>,
    /// A write failed: the core is ahead of storage.
    stale: bool,
    /// Retired ([`GroupMsg::Retire`]): stops once `fanouts` is empty.
    retired: bool,
}

impl GroupState {
    /// Starts the fan-out of an accepted send, linked so we hear of its end:
    /// one that leaves copies a retry may store (or dies) has its send kept,
    /// so that retry completes however many commits come first.
    async fn fan_out(
        &mut self,
        me: &ActorRef<GroupMsg>,
        fanout: FanOut,
        reply: RpcReplyPort<Response>,
        slot: FanoutSlot,
    ) -> Result<(), ActorProcessingErr> {
        let FanOut { plan, keep, from_kept } = fanout;
        let tracked = (plan.message_id, keep, from_kept, slot);
        let args = FanoutArgs {
            node: self.args.node.clone(),
            plan,
            router: self.args.router.clone(),
            reply,
            concurrency: self.args.concurrency,
            chaos_hooks: self.args.chaos_hooks,
        };
        let (f, _) = Actor::spawn_linked(None, Fanout, args, me.get_cell()).await?;
        self.fanouts.insert(f.get_id(), tracked);
        Ok(())
    }

    /// Makes the logic's writes durable. If they fail, nothing of them is
    /// applied, the request is refused (it can be retried), and the actor
    /// ends after this message (the core had moved on as if they had
    /// landed); the next request starts it again from storage.
    async fn write(&mut self, writes: Batch) -> Result<(), WireError> {
        if writes.ops.is_empty() {
            return Ok(());
        }
        self.args.store.commit(self.args.term, writes).await.map_err(|e| {
            tracing::warn!(error = %e, "group write not committed; nothing applied");
            self.stale = true;
            WireError::from(e)
        })
    }
}

/// The group actor.
pub struct GroupActor;

impl Actor for GroupActor {
    type Msg = GroupMsg;
    type State = GroupState;
    type Arguments = GroupArgs;

    async fn pre_start(
        &self,
        me: ActorRef<GroupMsg>,
        args: GroupArgs,
    ) -> Result<GroupState, ActorProcessingErr> {
        let logic = GroupLogic::load(
            &args.group,
            args.copies_per_second,
            &context(&args.node, args.store.as_ref()),
        )?;
        if args.chaos_hooks {
            let name = super::process_group(&args.node, ChaosTarget::Group);
            ractor::pg::join(name, vec![me.get_cell()]);
        }
        me.send_after(args.idle, || GroupMsg::IdleCheck(0));
        Ok(GroupState {
            logic,
            args,
            generation: 0,
            fanouts: HashMap::new(),
            stale: false,
            retired: false,
        })
    }

    async fn handle(
        &self,
        me: ActorRef<GroupMsg>,
        msg: GroupMsg,
        st: &mut GroupState,
    ) -> Result<(), ActorProcessingErr> {
        if st.retired {
            // Asked again at the shard's leader, which loads the group afresh.
            let shard = st.args.store.shard().map_or_else(|| "ids".into(), |s| s.to_string());
            msg.refuse(WireError::Cluster(ClusterError::NotLeader { shard, leader: None }));
            return Ok(());
        }
        match msg {
            GroupMsg::Retire => {
                st.retired = true;
                if st.fanouts.is_empty() {
                    me.stop(Some("leadership moved".into()));
                }
                return Ok(());
            }
            GroupMsg::IdleCheck(g) => {
                // A running fan-out is not idleness (stopping would kill
                // it); its end schedules the next check.
                if g == st.generation && st.fanouts.is_empty() {
                    me.stop(Some("idle".into()));
                }
                return Ok(());
            }
            GroupMsg::Collect { day, cutoff } => {
                // A group with a fan-out running is not idle; the next sweep
                // looks again.
                if !st.fanouts.is_empty() {
                    return Ok(());
                }
                let store = st.args.store.clone();
                match st.logic.collect(day, cutoff, store.as_ref() as &dyn mlsd_roles::View) {
                    Ok(Collected::Gone(writes)) => {
                        if st.write(writes).await.is_ok() {
                            tracing::info!("collected a group idle since day {day}");
                            me.stop(Some("collected".into()));
                            return Ok(());
                        }
                    }
                    Ok(Collected::StaleEntry(writes)) => {
                        let _ = st.write(writes).await;
                    }
                    Ok(Collected::Active) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot collect an idle group"),
                }
            }
            GroupMsg::Request { request, reply } => {
                // A send holds one of the node's fan-out slots until its
                // fan-out ends; a refused one changes nothing.
                let slot = match &request {
                    IdsRequest::Send { .. } => match st.args.slots.acquire() {
                        Ok(s) => Some(s),
                        Err(e) => {
                            let _ = reply.send(Response::Error(e));
                            return Ok(());
                        }
                    },
                    IdsRequest::CreateGroup { .. } => None,
                };
                let Decision { response, writes, mut effects } = {
                    let ctx = context(&st.args.node, st.args.store.as_ref());
                    st.logic.handle(Request::Ids(request), None, &ctx)
                };
                // Durable before any copy leaves, with the day's activity.
                if let Err(e) = st.write(writes).await {
                    let _ = reply.send(Response::Error(e));
                } else {
                    match (effects.pop(), slot) {
                        (Some(Effect::FanOut(fanout)), Some(slot)) => {
                            st.fan_out(&me, *fanout, reply, slot).await?
                        }
                        _ => drop(reply.send(response)),
                    }
                }
            }
        }
        if st.stale {
            return Err("a group write failed; the group restarts from storage".into());
        }
        st.generation += 1;
        let g = st.generation;
        me.send_after(st.args.idle, move || GroupMsg::IdleCheck(g));
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        me: ActorRef<GroupMsg>,
        evt: SupervisionEvent,
        st: &mut GroupState,
    ) -> Result<(), ActorProcessingErr> {
        let (id, done) = match evt {
            SupervisionEvent::ActorTerminated(c, _, reason) => {
                (c.get_id(), reason.as_deref() == Some(DONE))
            }
            SupervisionEvent::ActorFailed(c, e) => {
                tracing::warn!(error = %e, "fan-out failed; its sender will retry");
                (c.get_id(), false)
            }
            _ => return Ok(()),
        };
        // The slot is released when this entry drops, at the end.
        let Some((message_id, keep, from_kept, _slot)) = st.fanouts.remove(&id) else {
            return Ok(());
        };
        let store = st.args.store.as_ref() as &dyn mlsd_roles::View;
        let writes = st.logic.fanout_ended(&message_id, &keep, from_kept, done, store).map(
            |(writes, room)| {
                if !room {
                    tracing::warn!("too many sends with missing copies kept for one group");
                }
                writes
            },
        );
        // These writes change no core state: a failure leaves the group as is.
        let r = match writes {
            Ok(w) if w.ops.is_empty() => Ok(()),
            Ok(w) => st.args.store.commit(st.args.term, w).await.map_err(WireError::from),
            Err(e) => Err(e),
        };
        // Failing to keep it costs only the retry beyond the accepted-epochs
        // window; the group goes on.
        if let Err(e) = r {
            tracing::warn!(error = %e, "cannot keep a send with missing copies");
        }
        if st.fanouts.is_empty() {
            if st.retired {
                me.stop(Some("leadership moved".into()));
            } else {
                let g = st.generation;
                me.send_after(st.args.idle, move || GroupMsg::IdleCheck(g));
            }
        }
        Ok(())
    }
}
