//! The AS's half of the quota tickets (decision D12): issuing an identity's
//! daily allowance blindly, and spending a ticket once, cluster-wide.
//!
//! Storage (column family `as`):
//! - `q/DAY/KIND/IDENTITY` → tickets issued to the identity that day (u32
//!   BE), kept for the current day only: counted at the identity's AS owner,
//!   so every entry node shares one allowance.
//! - `k/DAY/INPUT` → the [`bind`](mlsd_transport::protocol::tickets::bind)
//!   of the request the ticket paid for, kept for the ticket's day and the
//!   next (while it is good): spent at the AS owner of the input, so a
//!   ticket is spent once whichever node it enters.
//!
//! Nothing links the two: the AS sees blinded inputs when it issues and
//! clear ones when it spends, and cannot tell which blinded input a clear
//! one was.

use ed25519_dalek::Signer;
use mlsd_transport::protocol::identity::{signing_bytes, split_client_id};
use mlsd_transport::protocol::tickets::{
    day_of, Ticket, TicketBody, TicketKey, DAY_SECS, LABEL_TICKETS, LABEL_TICKET_KEY,
    MAX_TICKETS_PER_REQUEST,
};
use mlsd_transport::protocol::{AsResponse, AuthError, ClusterError, NodeResponse};
use mlsd_transport::ticket::TicketIssuer;
use mlsd_transport::{Response, WireError};
use zeroize::Zeroizing;

use super::devices::signer;
use super::SPACE;
use crate::contract::{internal, Decision, RoleContext};
use crate::settings::TicketAllowance;
use crate::sig::{fresh, unix};
use crate::storage::{drop_weeks_before, week_prefix, Batch};

/// Key tag of the issued-ticket counts.
const ISSUED: &[u8] = b"q";
/// Key tag of the spent tickets.
const SPENT: &[u8] = b"k";

/// The ticket key of this AS and its signed public half.
pub(super) struct Tickets {
    issuer: TicketIssuer,
    key: TicketKey,
    allowance: TicketAllowance,
}

impl Tickets {
    /// The ticket key derived from the AS signing key.
    pub(super) fn new(
        signing_key: &ed25519_dalek::SigningKey,
        allowance: TicketAllowance,
    ) -> Option<Self> {
        let secret = Zeroizing::new(signing_key.to_bytes());
        let issuer = TicketIssuer::from_as_secret(&secret).ok()?;
        let public = issuer.public_key();
        let signature =
            signing_key.sign(&signing_bytes(LABEL_TICKET_KEY, &public)).to_bytes().to_vec();
        Some(Tickets { issuer, key: TicketKey { key: public, signature }, allowance })
    }

    /// `IssueTickets`: checks the device's signature and live binding, then
    /// evaluates the blinded inputs if the identity's allowance of the kind
    /// for today has room for all of them.
    pub(super) fn issue(
        &self,
        body: TicketBody,
        signature: Vec<u8>,
        ctx: &RoleContext<'_>,
    ) -> Result<Decision, WireError> {
        let (identity, _) = split_client_id(&body.client)
            .ok_or_else(|| WireError::Auth(AuthError::InvalidClientId(body.client.clone())))?;
        fresh(body.timestamp, ctx.now)?;
        signer(&body.client, &signing_bytes(LABEL_TICKETS, &body), &signature, "tickets", ctx)?;
        let now = unix(ctx.now);
        let today = day_of(now);
        // Today, or the day of the request's own (fresh) timestamp: a device
        // whose clock is a little off around midnight UTC is not refused.
        if body.day != today && body.day != day_of(body.timestamp) {
            return Err(WireError::Auth(AuthError::BadTicket(format!(
                "tickets are issued for today (day {today}) only"
            ))));
        }
        let n = body.blinded.len();
        if n == 0 || n > MAX_TICKETS_PER_REQUEST {
            return Err(WireError::Auth(AuthError::BadTicket(format!(
                "ask for 1 to {MAX_TICKETS_PER_REQUEST} tickets"
            ))));
        }
        let key = issued_key(body.day, body.kind as u8, identity);
        let issued = ctx
            .store
            .get(SPACE, &key)
            .map_err(internal)?
            .and_then(|v| <[u8; 4]>::try_from(v.as_slice()).ok())
            .map(u32::from_be_bytes)
            .unwrap_or(0);
        let allowed = self.allowance.of(body.kind);
        if u64::from(issued) + n as u64 > u64::from(allowed) {
            // The allowance comes back at midnight UTC.
            let retry_after_ms = (DAY_SECS - now % DAY_SECS) * 1000;
            return Err(WireError::Cluster(ClusterError::RateLimited { retry_after_ms }));
        }
        let (evaluated, proof) = self
            .issuer
            .issue(body.kind, body.day, &body.blinded, &ctx.random)
            .map_err(|e| WireError::Auth(AuthError::BadTicket(e.to_string())))?;
        let mut batch = Batch::new();
        batch.put(SPACE, key, (issued + n as u32).to_be_bytes().to_vec());
        drop_weeks_before(ctx.store, SPACE, ISSUED, today.min(body.day), &mut batch)
            .map_err(internal)?;
        tracing::debug!(kind = %body.kind, n, "tickets issued");
        Ok(Decision::write(
            Response::As(AsResponse::TicketsIssued { evaluated, proof, key: self.key.clone() }),
            batch,
        ))
    }

    /// `Spend`: the ticket is good (issued by this key for its kind, on its
    /// day or the day before) and has paid for nothing but the request
    /// `bind` names.
    pub(super) fn spend(
        &self,
        ticket: Ticket,
        bind: [u8; 32],
        ctx: &RoleContext<'_>,
    ) -> Result<Decision, WireError> {
        let today = day_of(unix(ctx.now));
        // A day ahead too: issued minutes before midnight by this AS's clock
        // to a device whose clock is past it (see `issue`).
        if ticket.day > today.saturating_add(1) || ticket.day.saturating_add(1) < today {
            return Err(WireError::Auth(AuthError::BadTicket(format!(
                "issued for day {}, good until the end of the next (today is day {today})",
                ticket.day
            ))));
        }
        if !self.issuer.check(&ticket) {
            return Err(WireError::Auth(AuthError::BadTicket(format!(
                "not a {} ticket of this cluster's AS",
                ticket.kind
            ))));
        }
        let mut key = week_prefix(SPENT, ticket.day);
        key.extend_from_slice(&ticket.input);
        match ctx.store.get(SPACE, &key).map_err(internal)? {
            Some(b) if b == bind => Ok(Decision::reply(Response::Node(NodeResponse::Spent))),
            Some(_) => Err(WireError::Auth(AuthError::TicketSpent)),
            None => {
                let mut batch = Batch::new();
                batch.put(SPACE, key, bind.to_vec());
                drop_weeks_before(ctx.store, SPACE, SPENT, today.saturating_sub(1), &mut batch)
                    .map_err(internal)?;
                Ok(Decision::write(Response::Node(NodeResponse::Spent), batch))
            }
        }
    }
}

/// `q/DAY/KIND/IDENTITY`.
fn issued_key(day: u32, kind: u8, identity: &str) -> Vec<u8> {
    let mut k = week_prefix(ISSUED, day);
    k.push(kind);
    k.extend_from_slice(identity.as_bytes());
    k
}
