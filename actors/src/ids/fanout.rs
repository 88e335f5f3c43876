//! The fan-out actor: one per accepted message. Spawns one anonymizer per
//! recipient (at most `concurrency` at a time), hands the envelopes to the ODS
//! owners through the router as they are sealed (so enqueueing overlaps
//! sealing), answers the sender only when every copy is durably enqueued, and
//! stops.
//!
//! Hand-off works like a group commit: while nothing is on its way to the
//! ODS, as few as [`ENQUEUE_FIRST`] sealed copies leave at once; otherwise
//! copies gather until the chunk in flight comes back or [`ENQUEUE_CHUNK`]
//! are ready. The ODS, the one serial stage, thus starts early and finds the
//! next chunk waiting, while each synced write (about 0.1 ms of fixed cost)
//! still carries as many copies as were sealed during the previous one.
//!
//! Supervision: an anonymizer that dies before reporting is started again for
//! the same recipient (up to [`MAX_ATTEMPTS`] times), since its job is
//! idempotent (the delivery id is fixed). If the fan-out itself dies, the
//! sender hears nothing and retries with the same message id; the ODS then
//! stores no copy twice.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use mlsd_transport::protocol::{ChaosTarget, DeliveryCap, EnqueueResult, Undeliverable};
use mlsd_transport::Response;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use zeroize::Zeroizing;

use super::anonymizer::{AnonState, Anonymizer, Job, KeyGuard, Sealing};
use crate::router::Router;
use mlsd_roles::ids::plan::FanoutPlan;
use mlsd_roles::ids::tally::Tally;

/// Attempts per recipient before the fan-out gives up on it.
pub const MAX_ATTEMPTS: u32 = 3;

// When copies leave is the tally's decision; the sizes are named here too
// because the bench and tests know them as the fan-out's.
pub use mlsd_roles::ids::tally::{ENQUEUE_CHUNK, ENQUEUE_FIRST};

/// The stop reason of a fan-out after which no retry can store more: every
/// copy stored, or the missing ones are missing for good. Any other end (a
/// retryable copy missing, or the fan-out died) makes its group actor keep
/// the send for a retry ([`super::kept`]).
pub const DONE: &str = "done";

/// Messages of the fan-out actor. Anonymizers report through their final
/// state (see [`AnonState`]); enqueue tasks report here.
pub enum FanoutMsg {
    /// A chunk came back from the ODS owners: each copy's capability with its
    /// result, or no result if the chunk's task failed (then every copy of
    /// the chunk counts as unavailable).
    Enqueued(Vec<DeliveryCap>, Vec<EnqueueResult>),
}

/// Start-up arguments.
pub struct FanoutArgs {
    /// Hosting node (names the process groups its actors join).
    pub node: Arc<str>,
    /// What to fan out.
    pub plan: FanoutPlan,
    /// Reaches the ODS owners.
    pub router: Arc<dyn Router>,
    /// The sender's reply.
    pub reply: RpcReplyPort<Response>,
    /// Anonymizers alive at once.
    pub concurrency: usize,
    /// Join process groups for chaos requests (see `IdsSettings::chaos_hooks`).
    pub chaos_hooks: bool,
}

/// A recipient not yet sealed: what its anonymizer needs, kept until it reports.
struct Pending {
    cap: DeliveryCap,
    key: Option<Zeroizing<[u8; 32]>>,
    hpke: Option<Vec<u8>>,
    attempts: u32,
}

/// State of a fan-out.
pub struct FanoutState {
    /// The process group anonymizers join, with chaos hooks on.
    anonymizer_group: Option<String>,
    message_id: [u8; 32],
    message: Arc<Vec<u8>>,
    welcome: Option<Arc<Vec<u8>>>,
    pending: HashMap<usize, Pending>,
    queue: VecDeque<usize>,
    running: HashMap<ActorId, usize>,
    /// What is sealed, in flight and back (decides hand-offs and the answer).
    tally: Tally,
    router: Arc<dyn Router>,
    reply: Option<RpcReplyPort<Response>>,
    concurrency: usize,
}

/// The fan-out actor.
pub struct Fanout;

impl FanoutState {
    async fn spawn_next(&mut self, me: &ActorRef<FanoutMsg>) -> Result<(), ActorProcessingErr> {
        while self.running.len() < self.concurrency {
            let Some(index) = self.queue.pop_front() else { break };
            let Some(p) = self.pending.get_mut(&index) else { continue };
            p.attempts += 1;
            let (sealing, message) = match (&p.key, &p.hpke, &self.welcome) {
                (Some(k), _, _) => (Sealing::Envelope(KeyGuard(k.clone())), self.message.clone()),
                (None, Some(pk), Some(w)) => (Sealing::Welcome(pk.clone()), w.clone()),
                _ => continue,
            };
            let job = Job {
                index,
                message_id: self.message_id,
                message,
                cap: p.cap.clone(),
                sealing,
                group: self.anonymizer_group.clone(),
            };
            // Linked: if it dies before reporting, handle_supervisor_evt re-queues it.
            let (a, _) = Actor::spawn_linked(None, Anonymizer, job, me.get_cell()).await?;
            self.running.insert(a.get_id(), index);
        }
        Ok(())
    }

    /// Every copy sealed (or given up on).
    fn all_sealed(&self) -> bool {
        self.pending.is_empty() && self.running.is_empty()
    }

    /// Hands the sealed copies gathered so far to the ODS owners when the
    /// tally says it is time; the outcome comes back as
    /// [`FanoutMsg::Enqueued`].
    fn flush(&mut self, me: &ActorRef<FanoutMsg>) {
        let Some(chunk) = self.tally.take_chunk(self.all_sealed()) else { return };
        let caps: Vec<DeliveryCap> = chunk.iter().map(|i| i.cap.clone()).collect();
        let router = self.router.clone();
        let me = me.clone();
        tokio::spawn(async move {
            // Run apart so a panic in the router reaches us as a failed chunk.
            let results =
                tokio::spawn(async move { router.enqueue(chunk).await }).await.unwrap_or_default();
            // Fails only if the fan-out is gone; its sender then retries.
            let _ = me.cast(FanoutMsg::Enqueued(caps, results));
        });
    }

    /// Answers the sender once every copy is sealed and back from the ODS.
    fn finish_if_done(&mut self, me: &ActorRef<FanoutMsg>) {
        self.flush(me);
        let Some((response, retryable)) = self.tally.answer(self.all_sealed()) else { return };
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(response);
        }
        me.stop(Some(if retryable { "retryable" } else { DONE }.into()));
    }
}

impl Actor for Fanout {
    type Msg = FanoutMsg;
    type State = FanoutState;
    type Arguments = FanoutArgs;

    async fn pre_start(
        &self,
        me: ActorRef<FanoutMsg>,
        args: FanoutArgs,
    ) -> Result<FanoutState, ActorProcessingErr> {
        let FanoutArgs { node, mut plan, router, reply, concurrency, chaos_hooks } = args;
        if chaos_hooks {
            ractor::pg::join(super::process_group(&node, ChaosTarget::Fanout), vec![me.get_cell()]);
        }
        let mut pending = HashMap::new();
        for (i, r) in plan.recipients.drain(..).enumerate() {
            let key = Zeroizing::new(r.key);
            pending
                .insert(i, Pending { cap: r.cap.clone(), key: Some(key), hpke: None, attempts: 0 });
        }
        let mut welcome = None;
        if let Some((w, to)) = plan.welcome.take() {
            let base = pending.len();
            for (j, c) in to.into_iter().enumerate() {
                pending.insert(
                    base + j,
                    Pending { cap: c.cap, key: None, hpke: Some(c.hpke_key), attempts: 0 },
                );
            }
            welcome = Some(w);
        }
        let n = pending.len();
        Ok(FanoutState {
            anonymizer_group: chaos_hooks
                .then(|| super::process_group(&node, ChaosTarget::Anonymizer)),
            message_id: plan.message_id,
            message: plan.message.clone(),
            welcome,
            queue: (0..n).collect(),
            pending,
            running: HashMap::new(),
            tally: Tally::default(),
            router,
            reply: Some(reply),
            concurrency: concurrency.max(1),
        })
    }

    async fn post_start(
        &self,
        me: ActorRef<FanoutMsg>,
        st: &mut FanoutState,
    ) -> Result<(), ActorProcessingErr> {
        st.spawn_next(&me).await?;
        st.finish_if_done(&me);
        Ok(())
    }

    async fn handle(
        &self,
        me: ActorRef<FanoutMsg>,
        msg: FanoutMsg,
        st: &mut FanoutState,
    ) -> Result<(), ActorProcessingErr> {
        let FanoutMsg::Enqueued(caps, results) = msg;
        st.tally.enqueued(caps, results);
        st.finish_if_done(&me);
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        me: ActorRef<FanoutMsg>,
        evt: SupervisionEvent,
        st: &mut FanoutState,
    ) -> Result<(), ActorProcessingErr> {
        let (id, outcome) = match evt {
            SupervisionEvent::ActorTerminated(c, Some(mut state), _) => {
                (c.get_id(), state.take::<AnonState>().ok())
            }
            SupervisionEvent::ActorTerminated(c, None, _) => (c.get_id(), None),
            SupervisionEvent::ActorFailed(c, _) => (c.get_id(), None),
            _ => return Ok(()),
        };
        if let Some(AnonState::Done { index, result }) = outcome {
            st.running.remove(&id);
            if let Some(p) = st.pending.remove(&index) {
                match result {
                    Ok(item) => st.tally.sealed(item),
                    Err(reason) => {
                        tracing::warn!(%reason, "a copy could not be sealed");
                        st.tally.not_stored(p.cap, Undeliverable::Unsealable);
                    }
                }
            }
        } else if let Some(index) = st.running.remove(&id) {
            // Still pending means it died before reporting: try again.
            if let Some(p) = st.pending.get(&index) {
                if p.attempts < MAX_ATTEMPTS {
                    st.queue.push_back(index);
                } else if let Some(p) = st.pending.remove(&index) {
                    st.tally.not_stored(p.cap, Undeliverable::Unavailable);
                }
            }
        }
        st.spawn_next(&me).await?;
        st.finish_if_done(&me);
        Ok(())
    }
}
