//! Copies of this client's commits that a recipient's full mailbox refused:
//! a Welcome to a member it added, or a commit to a member it already had.
//!
//! Anyone holding one of a member's delivery capabilities can fill its
//! mailbox, so a refused Welcome must not be lost (the member would be
//! listed in the group and never get in). The outbox keeps such a commit
//! and sends it again (same message id: the IDS keeps what a retry needs
//! for a week and the ODS stores each copy once) at every flush, without
//! holding the group's later sends, until every copy is stored or none of
//! the members it still owes is in the group. This file remembers whom
//! each such commit still owes, so the adder sees who has not joined.

use mlsd_transport::protocol::{IdsRequest, Undeliverable, Undelivered};
use mlsd_transport::Request;
use serde::{Deserialize, Serialize};

use crate::{Client, ClientError};

/// Home file of the owed copies (a list of [`Owed`]).
const OWED: &str = "owed.v1";

/// The members one of our commits still owes a copy to.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Owed {
    /// The group.
    group: Vec<u8>,
    /// The commit's message id.
    message_id: [u8; 32],
    /// The capability token of each member owed, and whether what it is
    /// owed is its Welcome (else the commit).
    caps: Vec<([u8; 32], bool)>,
}

/// What a member is owed, as the member list shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owes {
    /// Its Welcome: it has not joined yet.
    Welcome,
    /// A commit: it is behind the group's epoch.
    Commit,
}

/// The capability tokens a `Send` carries Welcomes to.
fn welcomed(req: &Request) -> Vec<[u8; 32]> {
    match req {
        Request::Ids(IdsRequest::Send { body, .. }) => body
            .commit
            .as_ref()
            .map(|c| c.welcome_to.iter().map(|w| w.cap.token).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Whether `req` is a commit (what a full mailbox must not make anyone lose).
pub(crate) fn is_commit(req: &Request) -> bool {
    matches!(req, Request::Ids(IdsRequest::Send { body, .. }) if body.commit.is_some())
}

impl Client {
    fn owed(&self) -> Result<Vec<Owed>, ClientError> {
        Ok(self.home.load(OWED)?.unwrap_or_default())
    }

    /// Records whom commit `req` still owes after an answer naming
    /// `undelivered` (nothing for a send that is not a commit); an empty
    /// list forgets it.
    pub(crate) fn note_owed(
        &self,
        req: &Request,
        undelivered: &[Undelivered],
    ) -> Result<(), ClientError> {
        let Request::Ids(IdsRequest::Send { body, .. }) = req else { return Ok(()) };
        if body.commit.is_none() {
            return Ok(());
        }
        let welcome = welcomed(req);
        let caps: Vec<([u8; 32], bool)> = undelivered
            .iter()
            .filter(|u| u.reason == Undeliverable::MailboxFull)
            .map(|u| (u.cap.token, welcome.contains(&u.cap.token)))
            .collect();
        let mut list = self.owed()?;
        let before = list.len();
        list.retain(|o| o.message_id != body.message_id);
        if caps.is_empty() && list.len() == before {
            return Ok(());
        }
        if !caps.is_empty() {
            list.push(Owed { group: body.group.clone(), message_id: body.message_id, caps });
        }
        self.home.save(OWED, &list)
    }

    /// Forgets what the send with `message_id` owed (it left the outbox).
    pub(crate) fn forget_owed(&self, message_id: &[u8; 32]) -> Result<(), ClientError> {
        let mut list = self.owed()?;
        let before = list.len();
        list.retain(|o| &o.message_id != message_id);
        if list.len() != before {
            self.home.save(OWED, &list)?;
        }
        Ok(())
    }

    /// The members of group `gid` (client ids) that our commits still owe a
    /// copy to, and what.
    pub(crate) fn owed_members(&self, gid: &[u8]) -> Vec<(String, Owes)> {
        let names = self.member_caps(gid);
        let mut out: Vec<(String, Owes)> = Vec::new();
        for o in self.owed().unwrap_or_default().iter().filter(|o| o.group == gid) {
            for (token, welcome) in &o.caps {
                let Some(who) = names.get(token) else { continue };
                let owes = if *welcome { Owes::Welcome } else { Owes::Commit };
                if !out.iter().any(|(w, _)| w == who) {
                    out.push((who.clone(), owes));
                }
            }
        }
        out
    }

    /// Whether our commit `message_id` in group `gid` still owes a copy to
    /// someone in the group.
    pub(crate) fn still_owes(&self, gid: &[u8], message_id: &[u8; 32]) -> bool {
        let names = self.member_caps(gid);
        self.owed().unwrap_or_default().iter().any(|o| {
            &o.message_id == message_id && o.caps.iter().any(|(t, _)| names.contains_key(t))
        })
    }

    /// [`Client::owed_members`] of the group named `name`.
    pub fn owed_in(&self, name: &str) -> Result<Vec<(String, Owes)>, ClientError> {
        let gid = self.group_id(name)?;
        Ok(self.owed_members(&gid))
    }
}
