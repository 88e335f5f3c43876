//! The outbox: sends that have no final answer yet, kept in the home so they
//! are retried verbatim (same message id, so never delivered twice) by this
//! command or the next one.
//!
//! Order is kept within a group, not across groups: a send waits behind the
//! earlier sends of its own group only, so one group whose recipient's ODS
//! owner is down (or whose member's mailbox is full) never holds up another
//! group. Each send ends in a [`Report`]: every copy stored, some recipients
//! not served for good (named, with why), refused as a whole, or of unknown
//! outcome (an earlier try got no answer, and the group has moved on too
//! far for the IDS to recognize it).
//!
//! Nothing retries the outbox behind the application's back: an application
//! calls [`Client::flush_outbox`] before its other work (mlsc does so at the
//! start of every command). A commit accepted while a member's ODS was down
//! waits here for that member's copy, and until it is sent that member cannot
//! follow the group. A commit that members' full mailboxes keep refusing is
//! owed to them ([`crate::owed`]): it stays here, sent again at every flush,
//! without holding the group's later sends.

use mlsd_transport::protocol::{
    BadFrame, ClusterError, IdsError, IdsRequest, IdsResponse, Undeliverable, Undelivered,
};
use mlsd_transport::WireError;
use std::collections::HashSet;
use std::time::Duration;

use mlsd_transport::{Request, Response};
use serde::{Deserialize, Serialize};

use crate::owed::is_commit;
use crate::retry::transient;
use crate::retry::Patience;
use crate::{Client, ClientError};

/// Answers naming a full mailbox after which a send stops waiting for that
/// recipient to make room and reports it as not served.
pub const MAX_FULL_TRIES: u32 = 3;

/// Home file of the outbox (a list of [`Entry`]).
const OUTBOX: &str = "outbox.v3";

/// Home file of the outbox before `Entry::unanswered` ([`EntryV2`]), read
/// once and converted.
const OUTBOX_V2: &str = "outbox.v2";

/// Home file of the oldest outbox (a bare list of requests), read once and
/// converted.
const OLD_OUTBOX: &str = "outbox";

/// One waiting send.
#[derive(Clone, Serialize, Deserialize)]
struct Entry {
    /// The `Send`, exactly as first tried.
    request: Request,
    /// Answers so far that named a full mailbox.
    full_tries: u32,
    /// A try may have reached the IDS and got no answer (the connection
    /// dropped, a forwarded call timed out): if the IDS then says the group
    /// has moved on, the send may still have been delivered.
    unanswered: bool,
}

/// One waiting send as `outbox.v2` kept it.
#[derive(Clone, Serialize, Deserialize)]
struct EntryV2 {
    request: Request,
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
    /// An earlier try got no answer, and by the retry the group had moved
    /// on further than the IDS remembers accepted messages: it may have been
    /// delivered, or not. It is not sent again (which could deliver it
    /// twice).
    Unknown(String),
    /// A commit of ours that some members' full mailboxes kept refusing
    /// (their Welcome, or the commit): it stays in the outbox and is sent
    /// again at every flush, without holding the group's later sends,
    /// until every copy is stored or those members left the group
    /// ([`crate::owed`]). Reported once.
    Owed {
        /// Copies in all.
        copies: u32,
        /// Copies not stored.
        failed: u32,
        /// Who is owed (client id, or what is known of them) and why.
        undelivered: Vec<(String, Undeliverable)>,
    },
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
            Outcome::Owed { copies, failed, undelivered } => {
                let partly = Outcome::Partly {
                    copies: *copies,
                    failed: *failed,
                    undelivered: undelivered.clone(),
                };
                write!(
                    f,
                    "{partly}; owed: sent again by every later command until stored, or until \
                     they leave the group"
                )
            }
            Outcome::Dropped(reason) => write!(f, "not sent: {reason}"),
            Outcome::Unknown(reason) => write!(f, "outcome unknown: {reason}"),
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

/// Whether a try that failed with `e` may have reached the IDS and been
/// accepted there: its answer was lost, or a node the try was forwarded
/// to did not answer in time. (A refused connection, or a replica that is
/// not the leader, decided nothing.)
fn may_have_arrived(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Call(_)
            | ClientError::Server(WireError::Cluster(ClusterError::Unavailable { .. }))
            | ClientError::Server(WireError::Cluster(ClusterError::ShardUnavailable { .. }))
            | ClientError::Server(WireError::Ids(IdsError::Incomplete { .. }))
            | ClientError::Server(WireError::Frame(BadFrame::Timeout))
    )
}

/// The outbox in `home`, converting the older forms once each: a bare list
/// of requests, then entries that did not record unanswered tries (taken
/// as unanswered: nobody knows).
fn load_outbox(home: &crate::home::Home) -> Result<Vec<Entry>, ClientError> {
    if let Some(list) = home.load(OUTBOX)? {
        return Ok(list);
    }
    let from_v1 = |old: Vec<Request>| -> Vec<EntryV2> {
        old.into_iter().map(|request| EntryV2 { request, full_tries: 0 }).collect()
    };
    let _: Option<Vec<EntryV2>> = home.load_converting(OUTBOX_V2, OLD_OUTBOX, from_v1)?;
    let from_v2 = |old: Vec<EntryV2>| -> Vec<Entry> {
        old.into_iter()
            .map(|e| Entry { request: e.request, full_tries: e.full_tries, unanswered: true })
            .collect()
    };
    Ok(home.load_converting(OUTBOX, OUTBOX_V2, from_v2)?.unwrap_or_default())
}

/// What a failed try of `entry` means for it.
fn judge_error(entry: &mut Entry, e: ClientError) -> Next {
    if transient(&e) {
        entry.unanswered |= may_have_arrived(&e);
        return Next::Retry;
    }
    match e {
        ClientError::Server(WireError::Ids(IdsError::StaleEpoch { current }))
            if entry.unanswered =>
        {
            Next::Done(Outcome::Unknown(format!(
                "an earlier try got no answer, and the group is at epoch {current} now, past \
                 what the server remembers; it may have been delivered, and is not sent again"
            )))
        }
        e => Next::Done(Outcome::Dropped(e.to_string())),
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
    /// Keep, owed to members whose mailboxes are full, without holding the
    /// group back; report the first time.
    Owe(Option<Outcome>),
}

impl Client {
    fn outbox(&self) -> Result<Vec<Entry>, ClientError> {
        load_outbox(&self.home)
    }

    fn save_outbox(&self, list: &[Entry]) -> Result<(), ClientError> {
        self.home.save(OUTBOX, &list)
    }

    /// Adds a prepared send to the outbox (before the first attempt).
    pub fn outbox_push(&self, req: Request) -> Result<(), ClientError> {
        let mut list = self.outbox()?;
        list.push(Entry { request: req, full_tries: 0, unanswered: false });
        self.save_outbox(&list)
    }

    /// Sends waiting in the outbox.
    pub fn outbox_len(&self) -> Result<usize, ClientError> {
        Ok(self.outbox()?.len())
    }

    /// What one answer to a send means for it.
    fn judge(&self, entry: &mut Entry, answer: Result<Response, ClientError>) -> Next {
        match answer {
            Ok(Response::Ids(IdsResponse::Sent { copies })) => {
                Next::Done(Outcome::Delivered { copies })
            }
            Ok(Response::Ids(IdsResponse::PartlySent { copies, failed, undelivered })) => {
                let any = |r: Undeliverable| undelivered.iter().any(|u| u.reason == r);
                if any(Undeliverable::Unavailable) {
                    return Next::Retry;
                }
                let gid = group_of(&entry.request);
                if any(Undeliverable::MailboxFull) {
                    entry.full_tries = entry.full_tries.saturating_add(1);
                    if entry.full_tries < MAX_FULL_TRIES {
                        return Next::Retry;
                    }
                    // A commit stays owed to members still in the group.
                    let id = message_id(&entry.request).unwrap_or_default();
                    if is_commit(&entry.request) && self.still_owes(&gid, &id) {
                        let first = entry.full_tries == MAX_FULL_TRIES;
                        let undelivered = self.name_recipients(&gid, &undelivered);
                        return Next::Owe(first.then_some(Outcome::Owed {
                            copies,
                            failed,
                            undelivered,
                        }));
                    }
                }
                let undelivered = self.name_recipients(&gid, &undelivered);
                Next::Done(Outcome::Partly { copies, failed, undelivered })
            }
            Ok(other) => Next::Done(Outcome::Dropped(format!("unexpected answer {other:?}"))),
            Err(e) => judge_error(entry, e),
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
            // An owed commit whose members all left the group is not sent
            // again (it would hand a Welcome to someone removed since).
            let id = message_id(&list[i].request).unwrap_or_default();
            if list[i].full_tries >= MAX_FULL_TRIES
                && is_commit(&list[i].request)
                && !self.still_owes(&gid, &id)
            {
                list.remove(i);
                self.forget_owed(&id)?;
                self.save_outbox(&list)?;
                continue;
            }
            let answer = self.connection().request(list[i].request.clone()).await;
            if let Ok(Response::Ids(IdsResponse::PartlySent { undelivered, .. })) = &answer {
                self.note_owed(&list[i].request, undelivered)?;
            }
            let stop = matches!(&answer, Err(e) if unreachable(e));
            let before = (list[i].full_tries, list[i].unanswered);
            let changed = match self.judge(&mut list[i], answer) {
                Next::Retry => {
                    held.insert(gid);
                    i += 1;
                    (list[i - 1].full_tries, list[i - 1].unanswered) != before
                }
                Next::Owe(report) => {
                    if let Some(outcome) = report {
                        out.reports.push(Report {
                            group: self.group_name(&gid),
                            message_id: message_id(&list[i].request).unwrap_or_default(),
                            outcome,
                        });
                    }
                    i += 1;
                    (list[i - 1].full_tries, list[i - 1].unanswered) != before
                }
                Next::Done(outcome) => {
                    let entry = list.remove(i);
                    self.forget_owed(&message_id(&entry.request).unwrap_or_default())?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use mlsd_transport::endpoint::CallError;
    use mlsd_transport::protocol::{Ping, Role};

    fn entry() -> Entry {
        Entry {
            request: Request::Ping(Ping { role: Role::Ids, key: Vec::new() }),
            full_tries: 0,
            unanswered: false,
        }
    }

    fn stale() -> ClientError {
        ClientError::Server(WireError::Ids(IdsError::StaleEpoch { current: 20 }))
    }

    fn shard_unavailable() -> ClientError {
        ClientError::Server(WireError::Cluster(ClusterError::ShardUnavailable {
            shard: "ids/0".into(),
        }))
    }

    /// A send whose first try got no answer (the call timed out, or the
    /// node it was forwarded to did not answer) and whose retry finds the
    /// group moved on past what the IDS remembers may have been delivered:
    /// its outcome is unknown, not "not sent".
    #[test]
    fn a_retry_refused_stale_after_an_unanswered_try_is_of_unknown_outcome() {
        for lost in [ClientError::Call(CallError::Timeout), shard_unavailable()] {
            let mut e = entry();
            assert!(matches!(judge_error(&mut e, lost), Next::Retry));
            assert!(e.unanswered);
            match judge_error(&mut e, stale()) {
                Next::Done(Outcome::Unknown(why)) => assert!(why.contains("epoch 20"), "{why}"),
                _ => panic!("not reported as of unknown outcome"),
            }
        }
    }

    /// An outbox of the two older forms is read once and converted: the
    /// sends and their full-mailbox counts kept, their tries taken as
    /// unanswered, the old file gone.
    #[test]
    fn older_outboxes_are_converted_once() {
        let dir = tempfile::tempdir().unwrap();
        let home = crate::home::Home::open(dir.path()).unwrap();
        let req = entry().request;
        home.save(OUTBOX_V2, &vec![EntryV2 { request: req.clone(), full_tries: 2 }]).unwrap();
        let list = load_outbox(&home).unwrap();
        assert_eq!(list.len(), 1);
        assert!(list[0].request == req && list[0].full_tries == 2 && list[0].unanswered);
        assert!(!dir.path().join("outbox.v2.bin").exists());
        assert!(dir.path().join("outbox.v3.bin").exists());
        let dir = tempfile::tempdir().unwrap();
        let home = crate::home::Home::open(dir.path()).unwrap();
        home.save(OLD_OUTBOX, &vec![req.clone()]).unwrap();
        let list = load_outbox(&home).unwrap();
        assert!(list.len() == 1 && list[0].request == req && list[0].unanswered);
        assert!(
            !dir.path().join("outbox.bin").exists() && !dir.path().join("outbox.v2.bin").exists()
        );
    }

    /// Tries that reached no IDS (no connection, a replica that does not
    /// lead) leave a stale refusal what it is: nobody got it.
    #[test]
    fn a_stale_refusal_after_tries_that_decided_nothing_is_not_sent() {
        let refused_connection = ClientError::Connect {
            server: "127.0.0.1:1".parse().unwrap(),
            reason: "refused".into(),
        };
        let not_leader = ClientError::Server(WireError::Cluster(ClusterError::NotLeader {
            shard: "ids/0".into(),
            leader: None,
        }));
        let mut e = entry();
        assert!(matches!(judge_error(&mut e, refused_connection), Next::Retry));
        assert!(matches!(judge_error(&mut e, not_leader), Next::Retry));
        assert!(!e.unanswered);
        assert!(matches!(judge_error(&mut e, stale()), Next::Done(Outcome::Dropped(_))));
    }
}
