//! The device's wallet of quota tickets (decision D12): requests that
//! create something costly (a KeyPackage fetch, a mailbox, a group, a blob
//! chunk) pay with one, and the AS issues them blindly, a batch at a time,
//! so it cannot tell which of its tickets pays for what.
//!
//! The wallet is the home file `tickets`; tickets past their last good day
//! are dropped. The AS's ticket key is checked against the AS key's
//! signature and pinned in the home file `ticket_key` the first time: an AS
//! that handed this device a key of its own (to recognise its tickets
//! later) would have to keep doing so, and a changed key is refused.

use ed25519_dalek::Signature;
use mlsd_transport::protocol::identity::signing_bytes;
use mlsd_transport::protocol::tickets::{
    day_of, Ticket, TicketBody, TicketKey, TicketKind, LABEL_TICKETS, LABEL_TICKET_KEY,
    MAX_TICKETS_PER_REQUEST,
};
use mlsd_transport::protocol::{AsRequest, AsResponse, AuthError, ClusterError};
use mlsd_transport::{Request, Response, WireError};

use crate::client::unexpected;
use crate::state::now_secs;
use crate::{Client, ClientError};

/// Home file of the unspent tickets.
const WALLET: &str = "tickets";

/// The paid request whose answer never came, with the ticket it paid
/// with: asked again, the same request pays with the same ticket, which
/// the entry node takes as spent for it and the role answers as the first
/// time (a paid KeyPackage fetch hands out nothing more), so a lost answer
/// costs neither a ticket nor the KeyPackages it carried. Another request
/// of the kind tries the ticket too ([`Client::paid_request`]).
const UNANSWERED: &str = "unanswered_paid";
/// Home file of the pinned ticket key.
const KEY: &str = "ticket_key";
/// Most tickets the wallet keeps (one full batch of each kind, twice).
const MAX_WALLET: usize = 8 * MAX_TICKETS_PER_REQUEST;

/// Whether `t` is still good on `today`: tickets are good on their day and
/// the next.
fn good_on(t: &Ticket, today: u32) -> bool {
    t.day.saturating_add(1) >= today
}

/// How many tickets of `kind` to ask for when the wallet has none: enough
/// that most uses do not ask at all (and that the AS cannot time a ticket's
/// use by its issue), few enough not to waste the day's allowance.
fn batch(kind: TicketKind) -> usize {
    match kind {
        TicketKind::Fetch => 16,
        TicketKind::Mailbox => 1,
        TicketKind::Group => 8,
        TicketKind::Blob => 32,
    }
}

impl Client {
    /// `n` unspent tickets of `kind`, taken out of the wallet (asked of the
    /// AS when the wallet holds too few). A ticket taken is gone, whether
    /// the request it pays for succeeds or not.
    pub async fn take_tickets(
        &self,
        kind: TicketKind,
        n: usize,
    ) -> Result<Vec<Ticket>, ClientError> {
        let today = day_of(now_secs());
        let mut wallet: Vec<Ticket> = self.home.load(WALLET)?.unwrap_or_default();
        // The oldest are spent first.
        wallet.retain(|t| good_on(t, today));
        wallet.sort_by_key(|t| t.day);
        let mut have = wallet.iter().filter(|t| t.kind == kind).count();
        while have < n {
            let need = (n - have).min(MAX_TICKETS_PER_REQUEST);
            let want = need.max(batch(kind)).min(MAX_TICKETS_PER_REQUEST);
            let fresh = match self.issue_tickets(kind, today, want).await {
                // Near the end of the allowance a full batch does not fit
                // where what is needed now may.
                Err(ClientError::Server(WireError::Cluster(ClusterError::RateLimited {
                    ..
                }))) if want > need => self.issue_tickets(kind, today, need).await?,
                other => other?,
            };
            have += fresh.len();
            wallet.extend(fresh);
        }
        let mut taken = Vec::with_capacity(n);
        wallet.retain(|t| {
            if t.kind == kind && taken.len() < n {
                taken.push(t.clone());
                false
            } else {
                true
            }
        });
        if wallet.len() > MAX_WALLET {
            wallet.drain(..wallet.len() - MAX_WALLET);
        }
        self.home.save(WALLET, &wallet)?;
        Ok(taken)
    }

    /// Sends `req`, paying with a ticket of the kind it needs, if it needs
    /// one: for requests this type does not wrap.
    ///
    /// A ticket kept for a request whose answer never came pays for this
    /// one if it is of the same kind, even when the request differs (the
    /// earlier one was given up): if that request had reached the AS after
    /// all, the ticket is refused as spent for it, and this request pays
    /// again with a fresh one. A kept ticket of another kind goes back to
    /// the wallet. So a request that never arrived costs no ticket.
    pub async fn paid_request(&self, req: Request) -> Result<Response, ClientError> {
        self.paid(req).await.map(|(answer, _)| answer)
    }

    /// [`Client::paid_request`], with the ticket the answer was paid with:
    /// a caller whose next step fails before it can use the answer keeps
    /// the ticket for the retry ([`Client::keep_unanswered`]), which the
    /// role then answers as the first time.
    pub(crate) async fn paid(
        &self,
        req: Request,
    ) -> Result<(Response, Option<Ticket>), ClientError> {
        let Some(kind) = req.rules().ticket else {
            return Ok((self.conn.request_paid(req, None).await?, None));
        };
        let kept: Option<Option<(Request, Ticket)>> = self.home.load(UNANSWERED)?;
        let today = day_of(now_secs());
        let (ticket, reused) = match kept.flatten() {
            Some((r, t)) if t.kind == kind && good_on(&t, today) => (t, r != req),
            Some((_, t)) => {
                self.return_ticket(t)?;
                (self.take_ticket(kind).await?, false)
            }
            None => (self.take_ticket(kind).await?, false),
        };
        let spent = |a: &Result<Response, ClientError>| {
            matches!(a, Err(ClientError::Server(WireError::Auth(AuthError::TicketSpent))))
        };
        let answer = self.pay_with(&req, ticket.clone()).await;
        if reused && spent(&answer) {
            let fresh = self.take_ticket(kind).await?;
            return Ok((self.pay_with(&req, fresh.clone()).await?, Some(fresh)));
        }
        Ok((answer?, Some(ticket)))
    }

    /// Keeps `ticket` for `req` as if its answer had been lost: the next
    /// time `req` is asked, it pays with `ticket` and gets the first answer
    /// again.
    pub(crate) fn keep_unanswered(&self, req: &Request, ticket: Ticket) -> Result<(), ClientError> {
        self.home.save(UNANSWERED, &Some((req.clone(), ticket)))
    }

    /// Sends `req` with `ticket`, kept in the home until it is answered.
    async fn pay_with(&self, req: &Request, ticket: Ticket) -> Result<Response, ClientError> {
        self.home.save(UNANSWERED, &Some((req.clone(), ticket.clone())))?;
        let answer = self.conn.request_paid(req.clone(), Some(ticket)).await;
        if !matches!(&answer, Err(e) if crate::retry::transient(e)) {
            self.home.save(UNANSWERED, &None::<(Request, Ticket)>)?;
        }
        answer
    }

    /// Puts back a ticket taken but perhaps not spent (if it was, its next
    /// use is refused as spent, and that request pays anew).
    fn return_ticket(&self, ticket: Ticket) -> Result<(), ClientError> {
        let mut wallet: Vec<Ticket> = self.home.load(WALLET)?.unwrap_or_default();
        if good_on(&ticket, day_of(now_secs())) && wallet.len() < MAX_WALLET {
            wallet.push(ticket);
            self.home.save(WALLET, &wallet)?;
        }
        self.home.save(UNANSWERED, &None::<(Request, Ticket)>)
    }

    /// One ticket of `kind` (see [`Client::take_tickets`]).
    pub async fn take_ticket(&self, kind: TicketKind) -> Result<Ticket, ClientError> {
        let mut t = self.take_tickets(kind, 1).await?;
        t.pop().ok_or_else(|| ClientError::Unexpected("no ticket".into()))
    }

    /// How many unspent tickets of each kind the wallet holds.
    pub fn ticket_counts(&self) -> Result<Vec<(TicketKind, usize)>, ClientError> {
        let today = day_of(now_secs());
        let wallet: Vec<Ticket> = self.home.load(WALLET)?.unwrap_or_default();
        Ok(TicketKind::ALL
            .iter()
            .map(|k| {
                let n = wallet.iter().filter(|t| t.kind == *k && good_on(t, today)).count();
                (*k, n)
            })
            .collect())
    }

    /// Asks the AS for `n` fresh tickets of `kind` for `day`, blinded.
    async fn issue_tickets(
        &self,
        kind: TicketKind,
        day: u32,
        n: usize,
    ) -> Result<Vec<Ticket>, ClientError> {
        let client = self.client_id().ok_or(ClientError::NotRegistered)?.to_string();
        let (pending, blinded) =
            mlsd_transport::ticket::blind(n).map_err(|e| ClientError::Crypto(e.to_string()))?;
        let body = TicketBody { client, kind, day, blinded, timestamp: now_secs() };
        let signature = self.sign(LABEL_TICKETS, &body)?;
        let (evaluated, proof, key) = match self
            .conn
            .request(Request::As(AsRequest::IssueTickets { body, signature }))
            .await?
        {
            Response::As(AsResponse::TicketsIssued { evaluated, proof, key }) => {
                (evaluated, proof, key)
            }
            other => return Err(unexpected(other)),
        };
        let key = self.check_ticket_key(&key)?;
        mlsd_transport::ticket::finalize(kind, day, &pending, &evaluated, &proof, &key)
            .map_err(|e| ClientError::Crypto(format!("tickets from the AS: {e}")))
    }

    /// The ticket key, if the AS key signed it and it is the one pinned.
    fn check_ticket_key(&self, k: &TicketKey) -> Result<[u8; 32], ClientError> {
        let sig = Signature::from_slice(&k.signature)
            .map_err(|_| ClientError::Crypto("malformed ticket key signature".into()))?;
        self.as_key
            .verify_strict(&signing_bytes(LABEL_TICKET_KEY, &k.key), &sig)
            .map_err(|_| ClientError::Crypto("the ticket key is not signed by the AS".into()))?;
        match self.home.load::<[u8; 32]>(KEY)? {
            Some(pinned) if pinned != k.key => Err(ClientError::Crypto(
                "the AS's ticket key changed; refusing tickets that could tell this device apart"
                    .into(),
            )),
            Some(_) => Ok(k.key),
            None => {
                self.home.save(KEY, &k.key)?;
                Ok(k.key)
            }
        }
    }
}
