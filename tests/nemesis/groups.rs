//! The group steps under the nemesis: three members of one group (stored
//! roster), each entering through its own node, send messages one after
//! another, now and then commit a self-update, and read their mailboxes,
//! while the faults go on. Every send goes into the history (`invoke`,
//! then `ok`, `info` for an outcome the client cannot learn any more, or
//! `fail`), and so does every message a member reads. The checker
//! ([`GroupLedger`]): no member reads a message twice or one nobody sent;
//! at the end every message acknowledged to its sender has been read by
//! each other member exactly once, a message of unknown outcome at most
//! once, and all members agree on the group's epoch and members.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use mlsd_client::group::Event;
use mlsd_client::Client;
use mlsd_transport::protocol::RosterMode;

use super::common::sending::{
    commit_until, empty_outbox, read_to_end, send_through_faults, Change, Sending,
};
use super::common::Cluster;
use super::{ms, History};

/// The group's name.
const GROUP: &str = "NG";

/// The members' identities, each with the node it enters through.
const MEMBERS: [(&str, &str); 3] = [("gm1", "n1"), ("gm2", "n2"), ("gm3", "n3")];

/// What the members of the nemesis's groups were told and read.
#[derive(Default)]
pub struct GroupLedger {
    /// Every message a member tried to send.
    invoked: BTreeSet<String>,
    /// Message → the members who must read it, for those acknowledged.
    acked: BTreeMap<String, Vec<String>>,
    /// Messages whose outcome their sender could not learn.
    unknown: BTreeSet<String>,
    /// Member → message → times read.
    read: BTreeMap<String, BTreeMap<String, u32>>,
    /// Commits acknowledged.
    commits: u32,
    /// What broke a rule as it happened.
    pub anomalies: Vec<String>,
}

impl GroupLedger {
    /// Notes a message about to be sent (for the first time).
    pub fn invoked(&mut self, text: &str) {
        self.invoked.insert(text.to_string());
    }

    /// Notes what sending `text` came to: acknowledged, it must be read by
    /// each of `readers`.
    pub fn sent(&mut self, text: &str, outcome: &Sending, readers: Vec<String>) {
        match outcome {
            Sending::Acked { .. } => drop(self.acked.insert(text.to_string(), readers)),
            Sending::Unknown => drop(self.unknown.insert(text.to_string())),
            Sending::GaveUp(why) => {
                self.anomalies.push(format!("{text:?} never acknowledged: {why}"))
            }
        }
    }

    /// Whether `me` has read `text`.
    pub fn has_read(&self, me: &str, text: &str) -> bool {
        self.read.get(me).is_some_and(|r| r.contains_key(text))
    }

    /// Notes an acknowledged commit.
    pub fn committed(&mut self) {
        self.commits += 1;
    }

    /// Notes what `me` read: each message once, and one somebody sent.
    pub fn read(&mut self, me: &str, events: &[Event]) {
        for e in events {
            let Event::Message { text, .. } = e else { continue };
            if !self.invoked.contains(text) {
                self.anomalies.push(format!("{me} read {text:?}, which nobody sent"));
            }
            let n = self.read.entry(me.to_string()).or_default().entry(text.clone()).or_default();
            *n += 1;
            if *n == 2 {
                self.anomalies.push(format!("{me} read {text:?} twice"));
            }
        }
    }

    /// The end check: every acknowledged message read by each member who
    /// must read it. Returns (messages acknowledged, of unknown outcome,
    /// commits).
    pub fn check(&self) -> Result<(usize, usize, u32), String> {
        if let Some(a) = self.anomalies.first() {
            return Err(a.clone());
        }
        for (text, readers) in &self.acked {
            for me in readers {
                if !self.has_read(me, text) {
                    return Err(format!("{me} never read {text:?}, which was acknowledged"));
                }
            }
        }
        Ok((self.acked.len(), self.unknown.len(), self.commits))
    }
}

/// The members, registered, in the group the first created and added the
/// others to (before the nemesis starts).
pub async fn join(c: &Cluster) -> Vec<(String, Client)> {
    let mut members = Vec::new();
    for (name, via) in MEMBERS {
        let me = format!("{name}/phone");
        members.push((me.clone(), c.registered(&me, via, 4).await));
    }
    let creator = &mut members[0].1;
    creator.create_group(GROUP, RosterMode::Stored).await.unwrap();
    let others: Vec<&str> = MEMBERS[1..].iter().map(|(n, _)| *n).collect();
    creator.add_members(GROUP, &others).await.unwrap();
    for (_, c) in members.iter_mut().skip(1) {
        c.receive().await.unwrap();
    }
    members
}

/// One member's load until the clients stop: a message each round, a
/// self-update every fifth, and a read of the mailbox.
pub async fn member(h: Arc<History>, me: String, mut c: Client) -> (String, Client) {
    let mut round = 0u32;
    while !h.stopped() {
        // As mlsc does before every command: a commit accepted while some
        // member's ODS was down waits in the outbox until it got through.
        let _ = c.flush_outbox().await;
        if round % 5 == 4 {
            h.note(&me, "invoke update");
            match commit_until(&mut c, GROUP, &me, Change::Update).await {
                Ok(()) => {
                    let epoch = c.group_epoch(GROUP).unwrap_or(0);
                    h.note(&me, format_args!("ok update: epoch {epoch}"));
                    h.groups().committed();
                }
                Err(e) => {
                    h.note(&me, format_args!("fail update: {e}"));
                    h.groups().anomalies.push(e);
                }
            }
        }
        let text = format!("{me} #{round}");
        let others = MEMBERS.iter().map(|(m, _)| format!("{m}/phone")).filter(|m| *m != me);
        let mut events = Vec::new();
        send(&h, &mut c, &me, GROUP, &text, others.collect(), &mut events).await;
        match c.receive().await {
            Ok(ev) => events.extend(ev),
            Err(_) => drop(c.reconnect().await),
        }
        note_read(&h, &me, &events);
        round += 1;
        tokio::time::sleep(ms(50, 300)).await;
    }
    (me, c)
}

/// Sends `text` to `group` through the faults ([`send_through_faults`]),
/// with the history and the ledger told: acknowledged, it must be read by
/// `readers`. What `me` reads meanwhile goes to `events`. True when
/// acknowledged.
pub async fn send(
    h: &History,
    c: &mut Client,
    me: &str,
    group: &str,
    text: &str,
    readers: Vec<String>,
    events: &mut Vec<Event>,
) -> bool {
    h.groups().invoked(text);
    h.note(me, format_args!("invoke send {text:?}"));
    let patience = Duration::from_secs(60);
    let outcome = send_through_faults(c, me, group, text, events, patience).await;
    match &outcome {
        Sending::Acked { epoch, failed, .. } => {
            h.note(me, format_args!("ok send {text:?} in epoch {epoch}, {failed} failed tries"))
        }
        Sending::Unknown => h.note(me, format_args!("info send {text:?}: outcome unknown")),
        Sending::GaveUp(why) => h.note(me, format_args!("fail send {text:?}: {why}")),
    }
    h.groups().sent(text, &outcome, readers);
    matches!(outcome, Sending::Acked { .. })
}

/// Records what `me` read, in the history and the ledger.
pub fn note_read(h: &History, me: &str, events: &[Event]) {
    let texts: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::Message { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    if !texts.is_empty() {
        h.note(me, format_args!("ok read {texts:?}"));
    }
    h.groups().read(me, events);
}

/// Once the faults are over: every commit still in an outbox goes out,
/// each member reads its mailbox to the end (both noted), and the
/// members must agree on the group. The ledger's check comes once every
/// group of the run has settled.
pub async fn settle(h: &History, members: &mut [(String, Client)]) -> Result<(), String> {
    for (me, c) in members.iter_mut() {
        empty_outbox(c, me).await?;
    }
    for (me, c) in members.iter_mut() {
        let events = read_to_end(c, me).await?;
        note_read(h, me, &events);
    }
    let views: Vec<(u64, Vec<String>)> = members
        .iter()
        .map(|(_, c)| {
            let mut m = c.group_members(GROUP).unwrap_or_default();
            m.sort();
            (c.group_epoch(GROUP).unwrap_or(0), m)
        })
        .collect();
    if views.windows(2).any(|w| w[0] != w[1]) {
        return Err(format!("the members disagree on the group: {views:?}"));
    }
    Ok(())
}
