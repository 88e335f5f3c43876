//! The delivery run: a message's whole path over both Raft commits. The
//! real IDS logic ([`GroupLogic`]) on one shard and the real ODS logic on
//! another, side by side on the same nodes; senders post real MLS
//! application messages to a group whose roster is three mailboxes; the
//! IDS accepts a send (its first commit), and the fan-out its decision
//! names is carried out as a group actor's fan-out carries it out: each
//! copy sealed under its recipient's key with its delivery id, the copies
//! enqueued at the ODS shard's leader (the second commit) within an entry
//! node's patience, the sender answered from the real [`Tally`], and the
//! send kept (or forgotten) by the IDS as [`GroupLogic::fanout_ended`]
//! decides, committed in the term it was accepted in. A crash of the
//! accepting node kills its fan-out: the sender hears nothing and posts
//! again, as it does after a partial answer.
//!
//! Mailbox owners fetch, open and acknowledge their copies. What the run
//! checks ([`DeliveryLedger`]):
//! - every copy a mailbox ever held opens under the mailbox's key to a
//!   message a sender posted;
//! - no mailbox holds a message twice (a retried send, a fan-out that
//!   died halfway, a copy whose enqueue answer was lost);
//! - every send answered `Sent` reached every mailbox: its owner read it,
//!   or it is still there at the end;
//! - the IDS still knows every send answered `Sent` as accepted.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use mlsd_roles::ids::logic::GroupLogic;
use mlsd_roles::ids::tally::Tally;
use mlsd_roles::{Effect, RoleContext, RoleLogic};
use mlsd_transport::envelope;
use mlsd_transport::protocol::ids::send_mac;
use mlsd_transport::protocol::{
    ClusterError, Delivered, EnqueueItem, EnqueueResult, IdsRequest, Recipients, RosterEntry,
    SendBody,
};
use mlsd_transport::{Request, Response};

use super::super::view::ShardStore;
use super::super::RaftShard;
use super::mailbox::{self, MAILBOXES};
use super::role::{self, host, Accepted, Hosts, Reply, Served};
use super::NodeId;
use crate::ids::anonymizer::delivery_id;

/// The group the senders post to: its epoch never moves, its roster is the
/// run's mailboxes.
pub const DELIVERY_GROUP: u32 = u32::MAX - 1;

/// How long a fan-out looks for the ODS shard's leader before it counts a
/// chunk's copies as unavailable: an entry node's call timeout.
pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

/// `K(r, e)` of mailbox `k` in the delivery group: its copies are sealed
/// under it.
pub fn key(k: u8) -> [u8; 32] {
    [k.wrapping_add(0x70); 32]
}

/// The delivery group's roster: every mailbox, with its capability and key.
pub fn roster() -> Vec<RosterEntry> {
    (0..MAILBOXES).map(|k| RosterEntry { cap: mailbox::cap(k), key: key(k) }).collect()
}

/// A message to the delivery group: its id, and its MLS bytes, which every
/// retry repeats.
#[derive(Clone)]
pub struct Post {
    /// The message id's key (unique).
    pub key: u64,
    /// The MLS application message.
    pub message: Arc<Vec<u8>>,
}

impl std::fmt::Debug for Post {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Post {:x}", self.key)
    }
}

impl Post {
    /// A new message under `key`.
    pub fn new(key: u64) -> Post {
        Post { key, message: role::fresh_message(DELIVERY_GROUP) }
    }

    /// The send, as a client makes it (the same for every retry).
    fn request(&self) -> IdsRequest {
        let body = SendBody {
            group: role::group_id(DELIVERY_GROUP),
            message_id: role::message_id(self.key),
            message: self.message.as_ref().clone(),
            recipients: Recipients::Roster(roster()),
            skip: None,
            commit: None,
        };
        let mac = send_mac(&role::auth(DELIVERY_GROUP, 0), &body);
        IdsRequest::Send { body: Box::new(body), mac }
    }
}

/// Serves `post` at `replica` of node `node` as the IDS's group actor does:
/// an accepted send, its writes committed, comes back as the fan-out to
/// carry out.
pub async fn serve(
    replica: &Arc<RaftShard>,
    node: NodeId,
    hosts: &Hosts,
    post: &Post,
    think: std::time::Duration,
    now: SystemTime,
) -> Reply {
    let group = role::group_id(DELIVERY_GROUP);
    let load = |ctx: &RoleContext<'_>| GroupLogic::load(&group, u32::MAX, ctx);
    let request = Request::Ids(post.request());
    let decide = move |l: &mut GroupLogic, ctx: &RoleContext<'_>| l.handle(request, None, ctx);
    let key = (node, group.clone());
    match host(replica, &hosts.ids, key, load, decide, think, now).await {
        Err(e) => Reply::Retry(e),
        Ok(Err(why)) => Reply::Refused(why),
        Ok(Ok(Served { mut effects, term, response })) => match effects.pop() {
            Some(Effect::FanOut(fanout)) => Reply::FanOut(Box::new(Accepted {
                node,
                replica: replica.clone(),
                term,
                group,
                fanout: *fanout,
            })),
            _ => Reply::Refused(format!("{post:?}: {response:?}")),
        },
    }
}

/// The copies of an accepted send, as its anonymizers seal them: under
/// each recipient's key, with the copy's fixed delivery id (the nonce is
/// drawn from it, so that a run replays exactly).
pub fn seal(accepted: &Accepted) -> Vec<EnqueueItem> {
    let plan = &accepted.fanout.plan;
    plan.recipients
        .iter()
        .map(|r| {
            let id = delivery_id(&plan.message_id, &r.cap, false);
            let nonce: [u8; 24] = id[..24].try_into().unwrap_or([0; 24]);
            let sealed = envelope::seal(&r.key, &plan.message, &nonce).unwrap_or_default();
            EnqueueItem { cap: r.cap.clone(), delivery_id: id, envelope: sealed }
        })
        .collect()
}

/// What the sender is told once the copies' enqueue came back (`None`: no
/// answer within the fan-out's patience), as the fan-out actor's tally
/// answers, and whether a retry could store more.
pub fn answer(items: Vec<EnqueueItem>, results: Option<Vec<EnqueueResult>>) -> (Response, bool) {
    let mut tally = Tally::default();
    for item in items {
        tally.sealed(item);
    }
    if let Some(chunk) = tally.take_chunk(true) {
        let caps = chunk.into_iter().map(|i| i.cap).collect();
        tally.enqueued(caps, results.unwrap_or_default());
    }
    // Every copy is sealed and back: the tally has its answer.
    tally.answer(true).unwrap_or_else(|| {
        let why = ClusterError::Internal("no answer".into());
        (Response::Error(why.into()), true)
    })
}

/// Records the end of the fan-out of `accepted` as its group actor does:
/// the writes [`GroupLogic::fanout_ended`] decides, committed in the term
/// the send was accepted in (a failure changes nothing: the group goes on).
pub async fn ended(accepted: &Accepted, complete: bool, now: SystemTime) {
    let replica = accepted.replica.as_ref();
    let ctx = RoleContext { node: "sim", store: replica, now, random: Default::default() };
    let Ok(logic) = GroupLogic::load(&accepted.group, u32::MAX, &ctx) else { return };
    let f = &accepted.fanout;
    let store: &dyn mlsd_roles::View = replica;
    if let Ok((writes, _)) =
        logic.fanout_ended(&f.plan.message_id, &f.keep, f.from_kept, complete, store)
    {
        if !writes.ops.is_empty() {
            let _ = replica.commit(accepted.term, writes).await;
        }
    }
}

/// What the delivery run's clients were told and saw.
#[derive(Default)]
pub struct DeliveryLedger {
    /// blake3 of each posted MLS message → its key.
    pub posted: HashMap<[u8; 32], u64>,
    /// Keys of the sends answered `Sent`.
    pub delivered: BTreeSet<u64>,
    /// (mailbox, key) → the sequence number its copy was read under.
    pub received: BTreeMap<(u8, u64), u64>,
    /// What contradicted the rules.
    pub anomalies: Vec<String>,
}

impl DeliveryLedger {
    /// Notes `post` before it is first sent.
    pub fn posting(&mut self, post: &Post) {
        self.posted.insert(*blake3::hash(&post.message).as_bytes(), post.key);
    }

    /// Checks copies read from mailbox `k`: each opens to a posted message,
    /// and none is a second copy of one already read under another number.
    pub fn received(&mut self, k: u8, page: &[Delivered]) {
        for e in page {
            let opened = envelope::open(&key(k), &e.envelope);
            let Some((_, message)) = opened.as_deref().ok().and_then(|p| envelope::unpad(p).ok())
            else {
                self.anomalies.push(format!("mailbox {k} seq {}: does not open", e.seq));
                continue;
            };
            let Some(&post) = self.posted.get(blake3::hash(message).as_bytes()) else {
                self.anomalies.push(format!("mailbox {k} seq {}: a message nobody sent", e.seq));
                continue;
            };
            match self.received.insert((k, post), e.seq) {
                Some(seq) if seq != e.seq => self.anomalies.push(format!(
                    "mailbox {k}: message {post:x} held twice, at {seq} and {}",
                    e.seq
                )),
                _ => {}
            }
        }
    }

    /// The end check, once each mailbox's remaining copies went through
    /// [`Self::received`] and `accepted` holds the message ids the IDS
    /// knows as accepted: the number of sends delivered.
    pub fn check(&self, accepted: &BTreeSet<[u8; 32]>) -> Result<usize, String> {
        if let Some(what) = self.anomalies.first() {
            return Err(what.clone());
        }
        for &post in &self.delivered {
            if !accepted.contains(&role::message_id(post)) {
                return Err(format!("message {post:x} was answered Sent, the IDS forgot it"));
            }
            for k in 0..MAILBOXES {
                if !self.received.contains_key(&(k, post)) {
                    return Err(format!(
                        "message {post:x} was answered Sent, mailbox {k} lacks it"
                    ));
                }
            }
        }
        Ok(self.delivered.len())
    }
}
