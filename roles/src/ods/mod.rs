//! ODS (message delivery): durable per-recipient mailboxes of sealed envelopes
//! (step 7 of the brief).
//!
//! A mailbox is a random id and an authentication key; the ODS knows no
//! identity, group, epoch or sender. Envelopes arrive from the IDS in
//! `Enqueue` batches, idempotently per `(mailbox, delivery id)`, and get
//! per-mailbox sequence numbers; the client fetches after a sequence number and
//! acknowledges up to one, which deletes. Everything a reply acknowledges is
//! in one synced write batch.
//!
//! Storage (column family `ods`):
//! - `m/MAILBOX` → [`MailboxRecord`]: auth key, sealed push endpoint, counters.
//! - `q/MAILBOX/SEQ` → the serial of the capability it came with (8 bytes,
//!   BE; 0 before layout 2) and the envelope.
//! - `c/H(TOKEN)` and `n/MAILBOX`: delivery capabilities ([`caps`]).
//! - `e/WEEK/MAILBOX/DELIVERY` → SEQ: copies stored in that week (idempotent
//!   enqueue). WEEK is the enqueue time in weeks since 1970 (4 bytes, BE); a
//!   copy is recognized for the rest of its week and the week after (retries
//!   come within seconds, or when a sender comes back online), then the whole
//!   week goes in one range delete: the ODS does not keep a per-mailbox
//!   delivery history. (`d/MAILBOX/DELIVERY`, the unbounded older form, is
//!   dropped the same way.)
//!
//! # Layout
//! - this module: the ODS state machine ([`OdsLogic`]);
//! - [`caps`]: delivery capabilities (issue, revoke, check).
//!
//! The ODS role actor, which also holds the live subscribers, is
//! `mlsd_actors::ods`.

pub mod caps;

use mlsd_transport::protocol::{
    AuthError, BadFrame, Delivered, EnqueueItem, EnqueueResult, MailboxAuth, MailboxId,
    NodeResponse, OdsError, OdsRequest, OdsResponse, SealedPush,
};
use std::collections::HashMap;

use mlsd_transport::protocol::identity::signing_bytes;
use mlsd_transport::protocol::ods::{
    PageRoom, LABEL_ACK, LABEL_FETCH, LABEL_ISSUE, LABEL_REVOKE, LABEL_SUBSCRIBE,
    MAX_CAPS_PER_REQUEST, MAX_ENVELOPE,
};
use mlsd_transport::{Request, Response, Role, WireError};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::contract::{internal, not_mine, pong, Decision, Effect, RoleContext, RoleLogic};
use crate::record::{self, Stored};
use crate::settings::OdsSettings;
use crate::sig::{fresh, verify, verifying_key};
use crate::storage::{drop_weeks_before, Batch, Space};

pub(crate) const SPACE: Space = Space::Role(Role::Ods);

/// What the ODS keeps per mailbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MailboxRecord {
    /// Ed25519 key that signs fetches and acks.
    pub auth_key: Vec<u8>,
    /// Push endpoint, encrypted under a key the ODS does not keep.
    pub push: Option<SealedPush>,
    /// Sequence number of the next envelope (starts at 1).
    pub next_seq: u64,
    /// Highest acknowledged sequence number.
    pub acked: u64,
    /// Highest request counter used, for replay protection.
    pub last_counter: u64,
}

impl Stored for MailboxRecord {
    const KIND: &'static str = "ODS mailbox";
    const VERSION: u8 = 1;
}

impl MailboxRecord {
    fn queued(&self) -> u64 {
        self.next_seq.saturating_sub(1).saturating_sub(self.acked)
    }
}

/// The ODS state machine.
pub struct OdsLogic {
    settings: OdsSettings,
    /// The week whose expired delivery records this ODS has deleted.
    swept: Option<u32>,
}

impl OdsLogic {
    /// An ODS with these settings.
    pub fn new(settings: OdsSettings) -> Self {
        OdsLogic { settings, swept: None }
    }

    /// Adds to `batch` the deletion of delivery records older than last week,
    /// and of the legacy form, if there are any.
    fn sweep(&self, week: u32, batch: &mut Batch, ctx: &RoleContext<'_>) -> Result<(), WireError> {
        drop_weeks_before(ctx.store, SPACE, b"e/", week.saturating_sub(1), batch)
            .map_err(internal)?;
        if !ctx.store.scan_prefix(SPACE, b"d/", 1).map_err(internal)?.is_empty() {
            batch.delete_prefix(SPACE, b"d/".to_vec());
        }
        Ok(())
    }

    /// The delivery record of a copy already stored this week or last week.
    fn stored_seq(
        &self,
        week: u32,
        mailbox: &MailboxId,
        delivery: &[u8; 32],
        ctx: &RoleContext<'_>,
    ) -> Result<Option<u64>, WireError> {
        for w in [week, week.saturating_sub(1)] {
            if let Some(v) =
                ctx.store.get(SPACE, &delivery_key(w, mailbox, delivery)).map_err(internal)?
            {
                return v.as_slice().try_into().map(u64::from_be_bytes).map(Some).map_err(internal);
            }
        }
        Ok(None)
    }

    fn record(
        &self,
        mailbox: &MailboxId,
        ctx: &RoleContext<'_>,
    ) -> Result<MailboxRecord, WireError> {
        let v = ctx.store.get(SPACE, &mbox_key(mailbox)).map_err(internal)?;
        let v = v.ok_or(WireError::Ods(OdsError::UnknownMailbox))?;
        record::decode(&v)
    }

    fn open(
        &self,
        mailbox: MailboxId,
        auth_key: Vec<u8>,
        push: Option<SealedPush>,
        ctx: &RoleContext<'_>,
    ) -> Result<Decision, WireError> {
        verifying_key(&auth_key)?;
        if let Some(p) = &push {
            if p.nonce.len() != 24 || p.ciphertext.len() > crate::push::MAX_URL + 16 {
                return Err(WireError::Frame(BadFrame::Malformed("sealed push endpoint".into())));
            }
        }
        if let Some(v) = ctx.store.get(SPACE, &mbox_key(&mailbox)).map_err(internal)? {
            // The opener's own request again (its answer lost, or retried
            // at a new leader): the same key and push endpoint, answered as
            // the first time with nothing written. Anyone else: taken.
            let rec: MailboxRecord = record::decode(&v)?;
            if rec.auth_key == auth_key && rec.push == push {
                return Ok(Decision::reply(Response::Ods(OdsResponse::MailboxOpened)));
            }
            return Err(WireError::Ods(OdsError::MailboxTaken));
        }
        let rec = MailboxRecord { auth_key, push, next_seq: 1, acked: 0, last_counter: 0 };
        let mut b = Batch::new();
        b.put(SPACE, mbox_key(&mailbox), record::encode(&rec)?);
        Ok(Decision::write(Response::Ods(OdsResponse::MailboxOpened), b))
    }

    /// Checks a mailbox request's signature and counter; returns the record
    /// with the counter advanced (the caller writes it with its batch).
    ///
    /// The counter of the last request served is accepted again: that
    /// request, retried verbatim (its answer was lost, or an entry node sent
    /// it again after a leader change), runs once more, and every mailbox
    /// request changes nothing the second time (a fetch or subscription
    /// reads, an ack names the same point, issuing the same tokens keeps
    /// their serials, revoking them again revokes none). An older counter
    /// is a replay.
    fn authenticate<T: Serialize>(
        &self,
        auth: &MailboxAuth,
        label: &str,
        op: &T,
        ctx: &RoleContext<'_>,
    ) -> Result<MailboxRecord, WireError> {
        let mut rec = self.record(&auth.mailbox, ctx)?;
        let msg = signing_bytes(label, &(auth.mailbox, auth.counter, op));
        verify(&rec.auth_key, &msg, &auth.signature, "mailbox request")?;
        fresh(auth.counter / 1000, ctx.now)?;
        if auth.counter < rec.last_counter {
            return Err(WireError::Auth(AuthError::Replayed));
        }
        rec.last_counter = auth.counter;
        Ok(rec)
    }

    fn fetch(
        &self,
        auth: MailboxAuth,
        after: u64,
        limit: u32,
        ctx: &RoleContext<'_>,
    ) -> Result<Decision, WireError> {
        // Signed over the limit the client asked for; served up to our cap.
        let page = limit.clamp(1, self.settings.max_fetch);
        self.authenticated_page(auth, LABEL_FETCH, &(after, limit), after, page, ctx)
    }

    /// Authenticates a subscription and returns its backlog; the shell then
    /// registers the subscriber.
    fn subscribe(
        &self,
        auth: MailboxAuth,
        after: u64,
        ctx: &RoleContext<'_>,
    ) -> Result<Decision, WireError> {
        self.authenticated_page(auth, LABEL_SUBSCRIBE, &after, after, self.settings.max_fetch, ctx)
    }

    /// A signed read of the mailbox: checks `auth` over `(label, op)`, records
    /// its counter and returns up to `limit` envelopes after `after`.
    fn authenticated_page<T: Serialize>(
        &self,
        auth: MailboxAuth,
        label: &str,
        op: &T,
        after: u64,
        limit: u32,
        ctx: &RoleContext<'_>,
    ) -> Result<Decision, WireError> {
        let rec = self.authenticate(&auth, label, op, ctx)?;
        let out = self.page(&auth.mailbox, after, limit as usize, ctx)?;
        let mut b = Batch::new();
        b.put(SPACE, mbox_key(&auth.mailbox), record::encode(&rec)?);
        Ok(Decision::write(Response::Ods(OdsResponse::Envelopes(out)), b))
    }

    /// Up to `limit` stored envelopes after sequence number `after`, and no
    /// more than fit in a page of [`OdsSettings::page_bytes`] (the first one
    /// always does: envelopes are smaller than a page by construction). Read
    /// a few at a time, so a page of small envelopes costs no more memory
    /// than one of large ones.
    fn page(
        &self,
        mailbox: &MailboxId,
        after: u64,
        limit: usize,
        ctx: &RoleContext<'_>,
    ) -> Result<Vec<Delivered>, WireError> {
        const STEP: usize = 16;
        let prefix = queue_prefix(mailbox);
        let mut out = Vec::new();
        let mut room = PageRoom::new(self.settings.page_bytes);
        let mut next = after.saturating_add(1);
        while out.len() < limit {
            let start = queue_key(mailbox, next);
            let step = STEP.min(limit - out.len());
            let rows = ctx.store.scan_from(SPACE, &prefix, &start, step).map_err(internal)?;
            let got = rows.len();
            for (k, v) in rows {
                let seq = k[prefix.len()..].try_into().map(u64::from_be_bytes).map_err(internal)?;
                let d = queued(seq, v)?;
                if !room.take(&d) {
                    return Ok(out);
                }
                next = seq.saturating_add(1);
                out.push(d);
            }
            if got < step {
                break;
            }
        }
        Ok(out)
    }

    fn ack(
        &self,
        auth: MailboxAuth,
        up_to: u64,
        ctx: &RoleContext<'_>,
    ) -> Result<Decision, WireError> {
        let mut rec = self.authenticate(&auth, LABEL_ACK, &up_to, ctx)?;
        let up_to = up_to.min(rec.next_seq.saturating_sub(1));
        let mut b = Batch::new();
        for seq in rec.acked.saturating_add(1)..=up_to {
            b.delete(SPACE, queue_key(&auth.mailbox, seq));
        }
        rec.acked = rec.acked.max(up_to);
        b.put(SPACE, mbox_key(&auth.mailbox), record::encode(&rec)?);
        let remaining = rec.queued().min(u32::MAX as u64) as u32;
        Ok(Decision::write(Response::Ods(OdsResponse::Acked { remaining }), b))
    }

    /// Issues capabilities of the signing mailbox.
    fn issue(
        &self,
        auth: MailboxAuth,
        tokens: Vec<[u8; 32]>,
        push_key: Option<[u8; 32]>,
        ctx: &RoleContext<'_>,
    ) -> Result<Decision, WireError> {
        tokens_bounded(&tokens)?;
        let rec = self.authenticate(&auth, LABEL_ISSUE, &(&tokens, &push_key), ctx)?;
        let mut b = Batch::new();
        let max = self.settings.max_capabilities;
        let serials = caps::issue(&auth.mailbox, &tokens, push_key, max, &mut b, ctx)?;
        b.put(SPACE, mbox_key(&auth.mailbox), record::encode(&rec)?);
        Ok(Decision::write(Response::Ods(OdsResponse::CapabilitiesIssued { serials }), b))
    }

    /// Revokes capabilities of the signing mailbox.
    fn revoke(
        &self,
        auth: MailboxAuth,
        tokens: Vec<[u8; 32]>,
        ctx: &RoleContext<'_>,
    ) -> Result<Decision, WireError> {
        tokens_bounded(&tokens)?;
        let rec = self.authenticate(&auth, LABEL_REVOKE, &tokens, ctx)?;
        let mut b = Batch::new();
        let revoked = caps::revoke(&auth.mailbox, &tokens, &mut b, ctx)?;
        b.put(SPACE, mbox_key(&auth.mailbox), record::encode(&rec)?);
        Ok(Decision::write(Response::Ods(OdsResponse::CapabilitiesRevoked { revoked }), b))
    }

    fn store_items(
        &mut self,
        items: Vec<EnqueueItem>,
        ctx: &RoleContext<'_>,
    ) -> Result<Decision, WireError> {
        let mut batch = Batch::new();
        let week = week_of(ctx.now);
        if self.swept != Some(week) {
            self.sweep(week, &mut batch, ctx)?;
        }
        // Each mailbox's record is read once per batch and written once at
        // the end; `index` finds it again for later copies to that mailbox.
        let mut touched: Vec<(MailboxId, MailboxRecord)> = Vec::new();
        let mut index: HashMap<MailboxId, usize> = HashMap::new();
        let mut results = Vec::with_capacity(items.len());
        let mut stored = Vec::new();
        let mut in_batch: HashMap<Vec<u8>, u64> = HashMap::new();
        for item in items {
            if item.envelope.len() > MAX_ENVELOPE {
                results.push(EnqueueResult::TooLarge);
                continue;
            }
            // Nothing is read or written for a copy without a live capability.
            let Some(target) = caps::check(&item.cap.shard, &item.cap.token, ctx)? else {
                results.push(EnqueueResult::NoCapability);
                continue;
            };
            let mailbox = target.mailbox;
            if let Some(seq) = self.stored_seq(week, &mailbox, &item.delivery_id, ctx)? {
                results.push(EnqueueResult::Stored { seq });
                continue;
            }
            let dkey = delivery_key(week, &mailbox, &item.delivery_id);
            let idx = match index.get(&mailbox) {
                Some(i) => *i,
                None => match self.record(&mailbox, ctx) {
                    Ok(r) => {
                        touched.push((mailbox, r));
                        index.insert(mailbox, touched.len() - 1);
                        touched.len() - 1
                    }
                    Err(WireError::Ods(OdsError::UnknownMailbox)) => {
                        results.push(EnqueueResult::UnknownMailbox);
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            let rec = &mut touched[idx].1;
            if rec.queued() >= u64::from(self.settings.max_queue) {
                results.push(EnqueueResult::MailboxFull);
                continue;
            }
            // A copy repeated inside one batch is stored once too.
            if let Some(seq) = in_batch.get(&dkey) {
                results.push(EnqueueResult::Stored { seq: *seq });
                continue;
            }
            let seq = rec.next_seq;
            rec.next_seq += 1;
            let mut value = Vec::with_capacity(8 + item.envelope.len());
            value.extend_from_slice(&target.serial.to_be_bytes());
            value.extend_from_slice(&item.envelope);
            batch.put(SPACE, queue_key(&mailbox, seq), value);
            batch.put(SPACE, dkey.clone(), seq.to_be_bytes().to_vec());
            in_batch.insert(dkey, seq);
            results.push(EnqueueResult::Stored { seq });
            let push = match (&target.push_key, &rec.push) {
                (Some(key), Some(sealed)) => open_push(&Zeroizing::new(*key), &mailbox, sealed),
                _ => None,
            };
            let EnqueueItem { envelope, .. } = item;
            let delivered = Delivered { seq, via: target.serial, envelope };
            stored.push((mailbox, delivered, push));
        }
        for (m, rec) in &touched {
            batch.put(SPACE, mbox_key(m), record::encode(rec)?);
        }
        // Recorded now: if the batch fails, the host starts this logic afresh.
        self.swept = Some(week);
        // Live delivery or a notification only for what is durably stored
        // (the host applies the batch first), once per new copy.
        let effects = stored
            .into_iter()
            .map(|(mailbox, delivered, push)| Effect::Stored { mailbox, delivered, push })
            .collect();
        Ok(Decision {
            response: Response::Node(NodeResponse::Enqueued(results)),
            writes: batch,
            effects,
        })
    }
}

/// Decrypts a mailbox's push endpoint with the push key from an enqueue item.
fn open_push(
    key: &[u8; 32],
    mailbox: &MailboxId,
    sealed: &SealedPush,
) -> Option<Zeroizing<String>> {
    mlsd_transport::sealed::open_push(key, mailbox, sealed).ok()
}

/// Refuses an empty or oversized list of capability tokens.
fn tokens_bounded(tokens: &[[u8; 32]]) -> Result<(), WireError> {
    if tokens.is_empty() || tokens.len() > MAX_CAPS_PER_REQUEST {
        return Err(WireError::Frame(BadFrame::Malformed(format!(
            "1 to {MAX_CAPS_PER_REQUEST} capability tokens per request"
        ))));
    }
    Ok(())
}

/// A stored queue value (`serial || envelope`) as delivered.
fn queued(seq: u64, mut v: Vec<u8>) -> Result<Delivered, WireError> {
    if v.len() < 8 {
        return Err(internal("a queued envelope without its capability serial"));
    }
    let envelope = v.split_off(8);
    let via = u64::from_be_bytes(v.try_into().map_err(|_| internal("serial"))?);
    Ok(Delivered { seq, via, envelope })
}

fn mbox_key(m: &MailboxId) -> Vec<u8> {
    let mut k = b"m/".to_vec();
    k.extend_from_slice(m);
    k
}

fn queue_prefix(m: &MailboxId) -> Vec<u8> {
    let mut k = b"q/".to_vec();
    k.extend_from_slice(m);
    k.push(b'/');
    k
}

fn queue_key(m: &MailboxId, seq: u64) -> Vec<u8> {
    let mut k = queue_prefix(m);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Weeks since 1970 at `now`.
fn week_of(now: std::time::SystemTime) -> u32 {
    crate::storage::week(crate::sig::unix(now))
}

/// The bucket of delivery records stored in `week`.
fn week_prefix(week: u32) -> Vec<u8> {
    crate::storage::week_prefix(b"e/", week)
}

fn delivery_key(week: u32, m: &MailboxId, d: &[u8; 32]) -> Vec<u8> {
    let mut k = week_prefix(week);
    k.push(b'/');
    k.extend_from_slice(m);
    k.push(b'/');
    k.extend_from_slice(d);
    k
}

impl RoleLogic for OdsLogic {
    fn role(&self) -> Role {
        Role::Ods
    }

    fn handle(&mut self, req: Request, _pre: Option<Response>, ctx: &RoleContext<'_>) -> Decision {
        let req = match req {
            Request::Ping(_) => return Decision::reply(pong(Role::Ods, ctx)),
            Request::Ods(r) => r,
            other => return not_mine(Role::Ods, &other),
        };
        match req {
            OdsRequest::OpenMailbox { mailbox, auth_key, push } => {
                self.open(mailbox, auth_key, push, ctx)
            }
            OdsRequest::Fetch { auth, after, limit } => self.fetch(auth, after, limit, ctx),
            OdsRequest::Ack { auth, up_to } => self.ack(auth, up_to, ctx),
            OdsRequest::Subscribe { auth, after } => self.subscribe(auth, after, ctx),
            OdsRequest::IssueCapabilities { auth, tokens, push_key } => {
                self.issue(auth, tokens, push_key, ctx)
            }
            OdsRequest::RevokeCapabilities { auth, tokens } => self.revoke(auth, tokens, ctx),
        }
        .into()
    }

    fn enqueue(&mut self, items: Vec<EnqueueItem>, ctx: &RoleContext<'_>) -> Decision {
        self.store_items(items, ctx).into()
    }
}

#[cfg(test)]
mod tests;
