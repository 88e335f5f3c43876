//! The outbox: sends that have no final answer yet, kept in the home so they
//! are retried verbatim (same message id, so never delivered twice) by this
//! command or the next one.
//!
//! Order is kept within a group, not across groups: a send waits behind the
//! earlier sends of its own group only, so one group whose recipient's ODS
//! owner is down (or whose member's mailbox is full) never holds up another
//! group. Each send ends in a [`Report`]: every copy stored, some recipients
//! not served for good (named, with why), or refused as a whole.
//!
//! Nothing retries the outbox behind the application's back: an application
//! calls [`Client::flush_outbox`] before its other work (mlsc does so at the
//! start of every command). A commit accepted while a member's ODS was down
//! waits here for that member's copy, and until it is sent that member cannot
//! follow the group.

use mlsd_transport::protocol::IdsRequest;
use std::collections::HashSet;
use std::time::Duration;

use mlsd_transport::protocol::{Undeliverable, Undelivered};
use mlsd_transport::{Request, Response};
use serde::{Deserialize, Serialize};

use crate::retry::transient;
use crate::retry::Patience;
use crate::{Client, ClientError};

/// Answers naming a full mailbox after which a send stops waiting for that
/// recipient to make room and reports it as not served.
pub const MAX_FULL_TRIES: u32 = 3;

/// Home file of the outbox (a list of [`Entry`]).
const OUTBOX: &str = "outbox.v2";

/// Home file of the older outbox (a bare list of requests), read once and
/// converted.
const OLD_OUTBOX: &str = "outbox";

/// One waiting send.
#[derive(Clone, Serialize, Deserialize)]
struct Entry {
    /// The `Send`, exactly as first tried.
    request: Request,
    /// Answers so far that named a full mailbox.
    full_tries: u32,
}

/// What became of a send that has left the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every copy is stored.
    Delivered {
        /// Copies stored (recipients plus Welcomes).
        copies: u32,
    },
    /// Accepted, and some recipients will not get it: their mailbox is
    /// unknown, stayed full, or their copy could not be sealed.
    Partly {
        /// Copies in all.
        copies: u32,
        /// Copies not stored.
        failed: u32,
        /// Who was not served (client id, or what is known of them) and why.
        undelivered: Vec<(String, Undeliverable)>,
    },
    /// Refused as a whole (e.g. the group moved on): nobody got it, and it is
    /// not re-encrypted or sent again.
    Dropped(String),
}

/// The outcome of one send, for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Local name of the group.
    pub group: String,
    /// The send's message id.
    pub message_id: [u8; 32],
    /// What became of it.
    pub outcome: Outcome,
}

/// What one pass over the outbox did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Sends that left the outbox, each with its outcome.
    pub reports: Vec<Report>,
    /// Sends still waiting.
    pub pending: u32,
}

fn reason_text(r: Undeliverable) -> &'static str {
    match r {
        Undeliverable::UnknownMailbox => "unknown mailbox",
        Undeliverable::MailboxFull => "mailbox full",
        Undeliverable::TooLarge => "message too large",
        Undeliverable::Unsealable => "cannot be sealed for",
        Undeliverable::Unavailable => "server unavailable",
        Undeliverable::NoCapability => "no longer takes deliveries from this group",
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Delivered { copies } => write!(f, "delivered to {copies} of {copies}"),
            Outcome::Partly { copies, failed, undelivered } => {
                write!(f, "delivered to {} of {copies}", copies - failed.min(copies))?;
                for (who, why) in undelivered {
                    write!(f, "; {who}: {}", reason_text(*why))?;
                }
                let unnamed = (*failed as usize).saturating_sub(undelivered.len());
                if unnamed > 0 {
                    write!(f, "; {unnamed} more")?;
                }
                Ok(())
            }
            Outcome::Dropped(reason) => write!(f, "not sent: {reason}"),
        }
    }
}

/// Whether `e` means the cluster itself cannot be reached (so no other
/// group's send would get through either right now).
fn unreachable(e: &ClientError) -> bool {
    matches!(e, ClientError::Connect { .. } | ClientError::Call(_))
}

/// The message id of a `Send`.
pub fn message_id(req: &Request) -> Option<[u8; 32]> {
    match req {
        Request::Ids(IdsRequest::Send { body, .. }) => Some(body.message_id),
        _ => None,
    }
}

fn group_of(req: &Request) -> Vec<u8> {
    match req {
        Request::Ids(IdsRequest::Send { body, .. }) => body.group.clone(),
        _ => Vec::new(),
    }
}

/// What to do with a send after one answer.
enum Next {
    /// Try again later (and hold back the group's later sends).
    Retry,
    /// Done: report and remove.
    Done(Outcome),
}

impl Client {
    fn outbox(&self) -> Result<Vec<Entry>, ClientError> {
        let convert = |old: Vec<Request>| -> Vec<Entry> {
            old.into_iter().map(|request| Entry { request, full_tries: 0 }).collect()
        };
        Ok(self.home.load_converting(OUTBOX, OLD_OUTBOX, convert)?.unwrap_or_default())
    }

    fn save_outbox(&self, list: &[Entry]) -> Result<(), ClientError> {
        self.home.save(OUTBOX, &list)
    }

    /// Adds a prepared send to the outbox (before the first attempt).
    pub fn outbox_push(&self, req: Request) -> Result<(), ClientError> {
        let mut list = self.outbox()?;
        list.push(Entry { request: req, full_tries: 0 });
        self.save_outbox(&list)
    }

    /// Sends waiting in the outbox.
    pub fn outbox_len(&self) -> Result<usize, ClientError> {
        Ok(self.outbox()?.len())
    }

    /// What one answer to a send means for it.
    fn judge(&self, entry: &mut Entry, answer: Result<Response, ClientError>) -> Next {
        match answer {
            Ok(Response::Sent { copies }) => Next::Done(Outcome::Delivered { copies }),
            Ok(Response::PartlySent { copies, failed, undelivered }) => {
                let any = |r: Undeliverable| undelivered.iter().any(|u| u.reason == r);
                if any(Undeliverable::Unavailable) {
                    return Next::Retry;
                }
                if any(Undeliverable::MailboxFull) && entry.full_tries + 1 < MAX_FULL_TRIES {
                    entry.full_tries += 1;
                    return Next::Retry;
                }
                let gid = group_of(&entry.request);
                let undelivered = self.name_recipients(&gid, &undelivered);
                Next::Done(Outcome::Partly { copies, failed, undelivered })
            }
            Ok(other) => Next::Done(Outcome::Dropped(format!("unexpected answer {other:?}"))),
            Err(e) if transient(&e) => Next::Retry,
            Err(e) => Next::Done(Outcome::Dropped(e.to_string())),
        }
    }

    /// The undelivered recipients by client id where the group state knows
    /// their mailbox.
    fn name_recipients(&self, gid: &[u8], list: &[Undelivered]) -> Vec<(String, Undeliverable)> {
        let names = self.member_caps(gid);
        list.iter()
            .map(|u| {
                let who = names
                    .get(&u.cap.token)
                    .cloned()
                    .unwrap_or_else(|| "a recipient no longer in the group".into());
                (who, u.reason)
            })
            .collect()
    }

    /// Tries every waiting send once, in order; a send that must be retried
    /// holds back the later sends of its group (so order within a group is
    /// kept) and no other. Stops early only when the cluster cannot be
    /// reached at all.
    pub async fn flush_outbox(&mut self) -> Result<Flushed, ClientError> {
        let mut list = self.outbox()?;
        let mut out = Flushed::default();
        let mut held: HashSet<Vec<u8>> = HashSet::new();
        let mut i = 0;
        while i < list.len() {
            let gid = group_of(&list[i].request);
            if held.contains(&gid) {
                i += 1;
                continue;
            }
            let answer = self.connection().request(list[i].request.clone()).await;
            let stop = matches!(&answer, Err(e) if unreachable(e));
            let tries = list[i].full_tries;
            let changed = match self.judge(&mut list[i], answer) {
                Next::Retry => {
                    held.insert(gid);
                    i += 1;
                    list[i - 1].full_tries != tries
                }
                Next::Done(outcome) => {
                    let entry = list.remove(i);
                    out.reports.push(Report {
                        group: self.group_name(&gid),
                        message_id: message_id(&entry.request).unwrap_or_default(),
                        outcome,
                    });
                    true
                }
            };
            // Synced (file and directory) only when something changed: a
            // send still waiting as it was costs no write.
            if changed {
                self.save_outbox(&list)?;
            }
            if stop {
                break;
            }
        }
        out.pending = list.len() as u32;
        Ok(out)
    }

    /// Puts `req` in the outbox and retries the outbox (reconnecting as
    /// needed) until `req` has an outcome or `timeout` passes. Returns the
    /// reports of every send that left the outbox meanwhile (earlier ones
    /// too); `req`'s is among them unless it is still waiting.
    pub async fn send_reliably(
        &mut self,
        req: Request,
        timeout: Duration,
    ) -> Result<Vec<Report>, ClientError> {
        let id = message_id(&req);
        self.outbox_push(req)?;
        let patience = Patience::new(timeout);
        let mut reports = Vec::new();
        loop {
            match self.flush_outbox().await {
                Ok(f) => reports.extend(f.reports),
                Err(e) if transient(&e) => {}
                Err(e) => return Err(e),
            }
            let done = reports.iter().any(|r| Some(r.message_id) == id);
            if done || !patience.left() {
                return Ok(reports);
            }
            patience.pause().await;
            let _ = self.reconnect().await;
        }
    }
}
