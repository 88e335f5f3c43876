//! The eight steps end to end under the nemesis, pair after pair: two new
//! people register through different nodes and publish KeyPackages (steps
//! 1-2); the first creates a group, whose data it stores in the SDS (step
//! 8), and adds the second (steps 3-5: the second's KeyPackage fetched and
//! checked against the AS, a commit with a Welcome); the second reads its
//! Welcome, and each sends the other a message, which the other reads
//! (steps 6-7). Each step waits out the faults with retries, and what it
//! came to goes into the history.
//!
//! A registration or publication that cannot be made within its patience
//! ends the pair (nothing was promised yet). From the group on, the
//! checker ([`GroupLedger`](super::groups::GroupLedger)) holds each step to
//! its promise: a group created and an add acknowledged within a minute,
//! the Welcome read within a minute of the add, and every acknowledged
//! message read by the other, once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mlsd_client::group::Event;
use mlsd_client::retry::transient;
use mlsd_client::{Client, ClientConfig};
use mlsd_transport::protocol::RosterMode;

use super::common::sending::{commit_until, Change};
use super::groups::{note_read, send};
use super::{ms, open, History, Outcome};

/// The group's name at its creator.
const GROUP: &str = "P";

/// How long a step of a pair may take through the faults.
const PATIENCE: Duration = Duration::from_secs(60);

/// Pair after pair until the clients stop; returns how many pairs went
/// through every step.
pub async fn pairs(h: Arc<History>, cfg: impl Fn(&str, &str) -> ClientConfig) -> u32 {
    let (mut n, mut whole) = (0u32, 0u32);
    while !h.stopped() {
        match pair(&h, &cfg, n).await {
            Ok(true) => whole += 1,
            Ok(false) => {}
            Err(what) => h.groups().anomalies.push(what),
        }
        n += 1;
        tokio::time::sleep(ms(100, 500)).await;
    }
    whole
}

/// Pair `n`'s steps: `Ok(true)` when all were made, `Ok(false)` when a
/// registration or publication could not be, `Err` when a promise broke.
async fn pair(
    h: &History,
    cfg: &impl Fn(&str, &str) -> ClientConfig,
    n: u32,
) -> Result<bool, String> {
    let (ida, idb) = (format!("nc{n}a"), format!("nc{n}b"));
    let (mea, meb) = (format!("{ida}/phone"), format!("{idb}/phone"));
    let mut a = open(&cfg(&ida, "n1")).await;
    let mut b = open(&cfg(&idb, "n3")).await;
    for (me, c) in [(&mea, &mut a), (&meb, &mut b)] {
        h.note(me, "invoke register and publish 2");
        match attempt!(c, c.register(me, None)) {
            Outcome::Ok(_) => {}
            Outcome::Fail(e) | Outcome::Unknown(e) => {
                h.note(me, format_args!("info register: {e}; pair {n} ends"));
                return Ok(false);
            }
        }
        match attempt!(c, c.publish(2)) {
            Outcome::Ok(_) => h.note(me, "ok register and publish"),
            Outcome::Fail(e) | Outcome::Unknown(e) => {
                h.note(me, format_args!("info publish: {e}; pair {n} ends"));
                return Ok(false);
            }
        }
    }
    create(h, &mut a, &mea).await?;
    add(h, &mut a, &mea, &idb).await?;
    let (joined, events) = join(h, &mut b, &meb).await?;
    note_read(h, &meb, &events);
    let (hello, hi) = (format!("{mea} hello"), format!("{meb} hello"));
    let mut events = Vec::new();
    let a_sent = send(h, &mut a, &mea, GROUP, &hello, vec![meb.clone()], &mut events).await;
    note_read(h, &mea, &events);
    let mut events = Vec::new();
    let b_sent = send(h, &mut b, &meb, &joined, &hi, vec![mea.clone()], &mut events).await;
    note_read(h, &meb, &events);
    // Each reads what the other got acknowledged (the ledger's end check
    // then finds it read, once).
    if a_sent {
        read_until(h, &meb, &mut b, &hello).await?;
    }
    if b_sent {
        read_until(h, &mea, &mut a, &hi).await?;
    }
    Ok(true)
}

/// `me` creates [`GROUP`]; tried again after a transient failure (a new
/// MLS group each time, unless the first one was kept at the client).
async fn create(h: &History, c: &mut Client, me: &str) -> Result<(), String> {
    h.note(me, "invoke create");
    let deadline = Instant::now() + PATIENCE;
    loop {
        match c.create_group(GROUP, RosterMode::Stored).await {
            Ok(()) => break,
            // Created, and a later part (its capability, its SDS data)
            // failed: the client owes the capability and goes on.
            Err(_) if c.group_names().iter().any(|g| g == GROUP) => break,
            Err(e) if transient(&e) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let _ = c.reconnect().await;
            }
            Err(e) => return Err(format!("{me}: cannot create a group: {e}")),
        }
    }
    h.note(me, "ok create");
    Ok(())
}

/// `me` adds identity `who` to [`GROUP`] ([`commit_until`]).
async fn add(h: &History, c: &mut Client, me: &str, who: &str) -> Result<(), String> {
    h.note(me, format_args!("invoke add {who}"));
    commit_until(c, GROUP, me, Change::Add(who)).await?;
    h.note(me, format_args!("ok add {who}: epoch {}", c.group_epoch(GROUP).unwrap_or(0)));
    h.groups().committed();
    Ok(())
}

/// `me` reads its mailbox until its Welcome is processed: the group's
/// local name, and what else it read.
async fn join(h: &History, c: &mut Client, me: &str) -> Result<(String, Vec<Event>), String> {
    let deadline = Instant::now() + PATIENCE;
    let mut events = Vec::new();
    loop {
        match c.receive().await {
            Ok(ev) => events.extend(ev),
            Err(_) => drop(c.reconnect().await),
        }
        let joined = events.iter().find_map(|e| match e {
            Event::Joined { group } => Some(group.clone()),
            _ => None,
        });
        if let Some(group) = joined {
            h.note(me, format_args!("ok joined {group}"));
            return Ok((group, events));
        }
        if Instant::now() > deadline {
            return Err(format!("{me} was added and never read its Welcome"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `me` reads its mailbox until it has read `text`, for at most
/// [`PATIENCE`].
async fn read_until(h: &History, me: &str, c: &mut Client, text: &str) -> Result<(), String> {
    let deadline = Instant::now() + PATIENCE;
    while !h.groups().has_read(me, text) {
        if Instant::now() > deadline {
            return Err(format!("{me} never read {text:?}, which was acknowledged"));
        }
        match c.receive().await {
            Ok(ev) => note_read(h, me, &ev),
            Err(_) => drop(c.reconnect().await),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
