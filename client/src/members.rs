//! Member checks: every member credential this device learns (joining by a
//! Welcome, someone else's commit adding or updating a leaf, its own
//! commits) is checked against the AS, not only the KeyPackages it fetches.
//!
//! The IDS cannot look inside commits, so any member can add a leaf whose
//! credential claims "alice/phone" with a key the AS never bound. A member
//! passes when the AS holds a binding of its client id, signed by the trusted
//! AS key, live and not revoked, for the leaf's signature key. One that fails
//! is reported ([`crate::Event::Unverified`]) and, unless the caller allows
//! it ([`Client::allow_unverified`]), no application message is sent to the
//! group until it is removed; commits still go out, so it can be removed. A
//! member whose check could not be made (the AS unreachable) counts as
//! unverified until it is made.
//!
//! Kept in the home file `members.v1`: per group, each member's client id,
//! signature key and verdict, so a member is looked up once per key. A home
//! without the file (older homes) checks every member again.

use std::collections::HashMap;

use mlsd_transport::protocol::identity::split_client_id;
use openmls::prelude::{BasicCredential, MlsGroup};

use crate::state::{now_secs, Verdict};
use crate::verify::{bound, Rejection};
use crate::{Client, ClientError};

/// What this device knows of one member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberStatus {
    /// This device.
    Me,
    /// The AS vouches for its client id and key.
    Verified,
    /// The AS does not vouch for it: why.
    Unverified(String),
    /// Not checked yet (the AS could not be asked); treated as unverified.
    Unchecked,
}

/// `(client id, signature key)` of every member but this device.
fn others(group: &MlsGroup) -> Vec<(String, Vec<u8>)> {
    let me = group.own_leaf_index();
    group
        .members()
        .filter(|m| m.index != me)
        .map(|m| {
            let client = BasicCredential::try_from(m.credential.clone())
                .map(|c| String::from_utf8_lossy(c.identity()).into_owned())
                .unwrap_or_default();
            (client, m.signature_key.clone())
        })
        .collect()
}

impl Client {
    /// Lets this client send to groups with unverified members (default:
    /// refused). For tools that know what they do; mlsc's `send
    /// --allow-unverified`.
    pub fn allow_unverified(&mut self, allow: bool) {
        self.allow_unverified = allow;
    }

    /// Every member of group `name` (in leaf order) and what this device
    /// knows of it.
    pub fn member_status(&self, name: &str) -> Result<Vec<(String, MemberStatus)>, ClientError> {
        let meta = self.group_meta(name)?;
        let group = self.load_group(&meta.id)?;
        let me = group.own_leaf_index();
        let mut out = Vec::new();
        for m in group.members() {
            let client = BasicCredential::try_from(m.credential.clone())
                .map(|c| String::from_utf8_lossy(c.identity()).into_owned())
                .unwrap_or_default();
            if m.index == me {
                out.push((client, MemberStatus::Me));
                continue;
            }
            let status = match self.checks.verdict(&meta.id, &client, &m.signature_key) {
                Some(Verdict { refused: None, .. }) => MemberStatus::Verified,
                Some(Verdict { refused: Some(why), .. }) => MemberStatus::Unverified(why.clone()),
                None => MemberStatus::Unchecked,
            };
            out.push((client, status));
        }
        Ok(out)
    }

    /// Checks every member of group `name` not checked yet with its current
    /// key; returns the members that fail, with why.
    pub async fn check_members(
        &mut self,
        name: &str,
    ) -> Result<Vec<(String, String)>, ClientError> {
        let meta = self.group_meta(name)?;
        self.check_group(&meta.id).await
    }

    /// [`Client::check_members`] by group id; returns only the members found
    /// unverified by this call. Verdicts of members who left are dropped.
    pub(crate) async fn check_group(
        &mut self,
        gid: &[u8],
    ) -> Result<Vec<(String, String)>, ClientError> {
        let group = self.load_group(gid)?;
        let members = others(&group);
        let mut kept: Vec<Verdict> = self
            .checks
            .groups
            .get(gid)
            .map(|vs| {
                vs.iter()
                    .filter(|v| members.iter().any(|(c, k)| *c == v.client && *k == v.key))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let mut found = Vec::new();
        let mut bindings = HashMap::new();
        let mut failed = None;
        for (client, key) in members {
            if kept.iter().any(|v| v.client == client && v.key == key) {
                continue;
            }
            let refused = match split_client_id(&client) {
                None => Some(format!("{client:?} is not a client id")),
                Some((identity, _)) => {
                    if !bindings.contains_key(identity) {
                        match self.lookup_raw(identity).await {
                            Ok(b) => {
                                bindings.insert(identity.to_string(), b);
                            }
                            // Left unchecked (so still refused); checked again later.
                            Err(e) => {
                                failed = Some(e);
                                continue;
                            }
                        }
                    }
                    bound(&self.as_key, &bindings[identity], &client, &key, now_secs()).err().map(
                        |r| match r {
                            Rejection::KeyMismatch(c) => {
                                format!("its key is not the one the AS bound to {c}")
                            }
                            other => other.to_string(),
                        },
                    )
                }
            };
            if let Some(why) = &refused {
                found.push((client.clone(), why.clone()));
            }
            kept.push(Verdict { client, key, refused });
        }
        // Saved when a verdict came or went (a member left, or a new key
        // was checked), not on every send to a group already checked.
        let changed = self.checks.groups.get(gid) != Some(&kept);
        self.checks.groups.insert(gid.to_vec(), kept);
        if changed {
            self.home.save(crate::state::MEMBERS_FILE, &self.checks)?;
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(found),
        }
    }

    /// Refuses a send to `gid` while a member is unverified or unchecked
    /// (unless allowed), naming each one.
    pub(crate) fn refuse_unverified(&self, gid: &[u8], name: &str) -> Result<(), ClientError> {
        if self.allow_unverified {
            return Ok(());
        }
        let group = self.load_group(gid)?;
        let bad: Vec<String> = others(&group)
            .into_iter()
            .filter_map(|(client, key)| match self.checks.verdict(gid, &client, &key) {
                Some(Verdict { refused: None, .. }) => None,
                Some(Verdict { refused: Some(why), .. }) => Some(format!("{client} ({why})")),
                None => Some(format!("{client} (not checked with the AS yet)")),
            })
            .collect();
        if bad.is_empty() {
            Ok(())
        } else {
            Err(ClientError::UnverifiedMembers { group: name.to_string(), members: bad })
        }
    }

    /// Forgets the verdicts of a group this device no longer holds.
    pub(crate) fn forget_checks(&mut self, gid: &[u8]) {
        self.checks.groups.remove(gid);
    }
}
