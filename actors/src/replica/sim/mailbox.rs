//! The ODS side of the simulation: the real ODS logic ([`OdsLogic`]) on
//! the simulated shard, served as its host serves it ([`super::role::host`]),
//! with clients that enqueue copies into a few mailboxes (as fan-outs do,
//! retrying a batch whose answer was lost) and fetch and acknowledge them
//! (as devices do), and the end check of what they were told: no two
//! copies acknowledged under one sequence number of a mailbox, a retried
//! copy stored once, every fetched copy the one acknowledged under its
//! number, and every acknowledged copy not yet acknowledged by its owner
//! still in its mailbox.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use ed25519_dalek::{Signer, SigningKey};
use mlsd_roles::ods::OdsLogic;
use mlsd_roles::settings::OdsSettings;
use mlsd_roles::{RoleContext, RoleLogic};
use mlsd_transport::protocol::identity::signing_bytes;
use mlsd_transport::protocol::ods::{LABEL_ACK, LABEL_FETCH, LABEL_ISSUE};
use mlsd_transport::protocol::{
    shard_of, DeliveryCap, EnqueueItem, EnqueueResult, MailboxAuth, MailboxId, OdsRequest,
    OdsResponse,
};
use mlsd_transport::{Request, Response};
use serde::Serialize;

use super::super::RaftShard;
use super::role::{host, reply_of, Hosts, Reply};
use super::NodeId;

/// Mailboxes of a run.
pub const MAILBOXES: u8 = 3;
/// Most envelopes one fetch returns.
pub const PAGE: u32 = 16;

/// Mailbox `k`'s id.
pub fn mailbox(k: u8) -> MailboxId {
    [k.wrapping_add(1); 32]
}

fn signer(k: u8) -> SigningKey {
    SigningKey::from_bytes(&[k.wrapping_add(0x40); 32])
}

/// The one delivery capability of mailbox `k`.
pub fn cap(k: u8) -> DeliveryCap {
    DeliveryCap { shard: shard_of(&mailbox(k)), token: [k.wrapping_add(0xA0); 32] }
}

/// The ODS's settings in the simulation: queues that never fill.
pub fn settings() -> OdsSettings {
    OdsSettings { max_queue: 1 << 20, max_fetch: PAGE, page_bytes: 1 << 20, max_capabilities: 4 }
}

/// A mailbox owner's next request counter at `now`: Unix milliseconds, or
/// one more than its last when that is later (two in one millisecond).
pub fn counter(now: SystemTime, last: u64) -> u64 {
    let ms = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    ms.max(last + 1)
}

/// Mailbox `k`'s signature over `op` under `counter`.
fn auth<T: Serialize>(k: u8, label: &str, counter: u64, op: &T) -> MailboxAuth {
    let m = mailbox(k);
    let msg = signing_bytes(label, &(m, counter, op));
    MailboxAuth { mailbox: m, counter, signature: signer(k).sign(&msg).to_bytes().to_vec() }
}

/// A request of the ODS's clients; a retry repeats it as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailOp {
    /// Open mailbox `k`.
    Open(u8),
    /// Issue mailbox `k`'s capability.
    Issue(u8, u64),
    /// Store copies: (mailbox, delivery id), the envelope being the id.
    Enqueue(Vec<(u8, u64)>),
    /// Store sealed copies as a fan-out made them ([`super::delivery`]).
    Copies(Vec<EnqueueItem>),
    /// Fetch mailbox `k` after a sequence number, under a counter.
    Fetch(u8, u64, u64),
    /// Acknowledge mailbox `k` up to a sequence number, under a counter.
    Ack(u8, u64, u64),
}

/// A copy's envelope: its delivery id, so a fetched copy names itself.
pub fn envelope(delivery: u64) -> Vec<u8> {
    delivery.to_be_bytes().to_vec()
}

fn delivery_id(delivery: u64) -> [u8; 32] {
    let mut d = [0; 32];
    d[..8].copy_from_slice(&delivery.to_be_bytes());
    d
}

impl MailOp {
    fn request(&self) -> Option<Request> {
        Some(Request::Ods(match *self {
            MailOp::Open(k) => OdsRequest::OpenMailbox {
                mailbox: mailbox(k),
                auth_key: signer(k).verifying_key().to_bytes().to_vec(),
                push: None,
            },
            MailOp::Issue(k, c) => {
                let tokens = vec![cap(k).token];
                let auth = auth(k, LABEL_ISSUE, c, &(&tokens, &None::<[u8; 32]>));
                OdsRequest::IssueCapabilities { auth, tokens, push_key: None }
            }
            MailOp::Fetch(k, after, c) => {
                let auth = auth(k, LABEL_FETCH, c, &(after, PAGE));
                OdsRequest::Fetch { auth, after, limit: PAGE }
            }
            MailOp::Ack(k, up_to, c) => {
                OdsRequest::Ack { auth: auth(k, LABEL_ACK, c, &up_to), up_to }
            }
            MailOp::Enqueue(_) | MailOp::Copies(_) => return None,
        }))
    }

    fn items(&self) -> Vec<EnqueueItem> {
        if let MailOp::Copies(items) = self {
            return items.clone();
        }
        let MailOp::Enqueue(copies) = self else { return Vec::new() };
        copies
            .iter()
            .map(|&(k, d)| EnqueueItem {
                cap: cap(k),
                delivery_id: delivery_id(d),
                envelope: envelope(d),
            })
            .collect()
    }
}

/// Serves `op` at `replica` of node `node`, as the ODS host does.
pub async fn serve(
    replica: &RaftShard,
    node: NodeId,
    hosts: &Hosts,
    op: &MailOp,
    think: std::time::Duration,
    now: SystemTime,
) -> Reply {
    let load = |_: &RoleContext<'_>| Ok(OdsLogic::new(settings()));
    let decide = |l: &mut OdsLogic, ctx: &RoleContext<'_>| match op.request() {
        Some(r) => l.handle(r, None, ctx),
        None => l.enqueue(op.items(), ctx),
    };
    let answer = host(replica, &hosts.ods, (node, Vec::new()), load, decide, think, now).await;
    reply_of(op, answer)
}

/// What the ODS's clients were told.
#[derive(Default)]
pub struct MailLedger {
    /// (mailbox, sequence number) → the delivery acknowledged under it.
    pub stored: BTreeMap<(u8, u64), u64>,
    /// Delivery → where it was acknowledged.
    pub at: BTreeMap<u64, (u8, u64)>,
    /// Per mailbox, the highest sequence number an ack was sent for (its
    /// copies up to there may be gone, whether or not it was answered).
    pub acked: BTreeMap<u8, u64>,
    /// What contradicted an earlier answer.
    pub anomalies: Vec<String>,
}

impl MailLedger {
    /// Records the answer to an enqueue of `copies`.
    pub fn enqueued(&mut self, copies: &[(u8, u64)], results: &[EnqueueResult]) {
        if results.len() != copies.len() {
            let n = results.len();
            return self.anomalies.push(format!("{n} results for {} copies", copies.len()));
        }
        for (&(k, d), r) in copies.iter().zip(results) {
            let EnqueueResult::Stored { seq } = *r else {
                self.anomalies.push(format!("copy {d:x} to mailbox {k} not stored: {r:?}"));
                continue;
            };
            match self.at.get(&d) {
                Some(&at) if at != (k, seq) => self
                    .anomalies
                    .push(format!("copy {d:x} stored at {at:?}, then again at {:?}", (k, seq))),
                _ => {}
            }
            match self.stored.insert((k, seq), d) {
                Some(other) if other != d => self.anomalies.push(format!(
                    "mailbox {k} seq {seq}: copies {other:x} and {d:x} both acknowledged"
                )),
                _ => {}
            }
            self.at.insert(d, (k, seq));
        }
    }

    /// Checks a fetched page of mailbox `k` against what was acknowledged.
    pub fn fetched(&mut self, k: u8, page: &[mlsd_transport::protocol::Delivered]) {
        for e in page {
            if let Some(&d) = self.stored.get(&(k, e.seq)) {
                if e.envelope != envelope(d) {
                    self.anomalies.push(format!(
                        "mailbox {k} seq {}: fetched {:x?}, acknowledged {d:x}",
                        e.seq, e.envelope
                    ));
                }
            }
        }
    }

    /// The copies acknowledged into mailbox `k` that its owner has not
    /// acknowledged: they must all be there at the end.
    pub fn owed(&self, k: u8) -> Vec<(u64, u64)> {
        let acked = self.acked.get(&k).copied().unwrap_or(0);
        self.stored.range((k, acked + 1)..=(k, u64::MAX)).map(|(&(_, s), &d)| (s, d)).collect()
    }
}

/// Fetches every copy of mailbox `k` after `after` from `view` through the
/// ODS logic (its read path), page by page; the writes it decides (the
/// request counter) are not made.
pub fn read_all(
    view: &dyn mlsd_roles::View,
    k: u8,
    mut after: u64,
    now: SystemTime,
) -> Result<Vec<mlsd_transport::protocol::Delivered>, String> {
    let ctx = RoleContext { node: "check", store: view, now, random: Default::default() };
    let mut logic = OdsLogic::new(settings());
    let mut all = Vec::new();
    // Ahead of every counter the owner used (those follow its clock).
    let mut last = counter(now, 0) + 60_000;
    loop {
        last += 1;
        let Some(request) = MailOp::Fetch(k, after, last).request() else { break };
        match logic.handle(request, None, &ctx).response {
            Response::Ods(OdsResponse::Envelopes(page)) if page.is_empty() => break,
            Response::Ods(OdsResponse::Envelopes(page)) => {
                after = page.last().map_or(after, |e| e.seq);
                all.extend(page);
            }
            other => return Err(format!("mailbox {k}: {other:?}")),
        }
    }
    Ok(all)
}
