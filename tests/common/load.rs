//! The chaos harness's load (`tests/chaos.rs`): each member of a group
//! sends its rounds of messages through faults, updates itself, and the
//! creator removes and adds back the group's guest, who only receives.
//! What each acknowledged and when, for the harness's checks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlsd_client::group::Event;
use mlsd_client::Client;

use super::sending::{commit_until, send_through_faults, Change, Sending};

/// A message a sender got acknowledged, with the epoch it was sent in.
pub type Acked = (String, u64);

/// One acknowledged send as its client saw it: when its first try went out
/// (of the request that was acknowledged), when the acknowledgement came,
/// and how many tries failed in between.
pub struct SendTiming {
    pub text: String,
    pub first_try: Instant,
    pub acked: Instant,
    pub failed: u32,
}

/// Membership changes the group's creator makes during its load: the guest
/// is removed a third of the way through and added back at two thirds.
pub struct GuestPlan {
    pub guest: &'static str,
    pub remove_at: usize,
    pub add_at: usize,
}

/// One member's load: `rounds` messages, a self-update every fourth round,
/// and for the creator the guest's removal and re-addition. Returns what it
/// got acknowledged, the events it received meanwhile and, for the creator,
/// the epoch in which the guest rejoined.
pub async fn member_load(
    mut c: Client,
    group: &'static str,
    me: String,
    rounds: usize,
    plan: Option<GuestPlan>,
) -> (Client, Vec<Acked>, Vec<Event>, Option<u64>, Vec<SendTiming>, Vec<String>) {
    let mut acked = Vec::new();
    let mut timings = Vec::new();
    let mut unknown = Vec::new();
    let mut events = Vec::new();
    let mut rejoined = None;
    for r in 0..rounds {
        // As mlsc does before every command: a commit accepted while some
        // member's ODS was down waits in the outbox until every member has
        // its copy (without this, that member could never follow the group).
        let _ = c.flush_outbox().await;
        if r % 4 == 3 {
            commit_until(&mut c, group, &me, Change::Update)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        if let Some(p) = plan.as_ref().filter(|p| p.remove_at == r) {
            commit_until(&mut c, group, &me, Change::Remove(p.guest))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        if let Some(p) = plan.as_ref().filter(|p| p.add_at == r) {
            commit_until(&mut c, group, &me, Change::Add(p.guest))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            // The guest's Welcome is for the epoch this commit created.
            rejoined = Some(c.group_epoch(group).unwrap());
        }
        let text = format!("{me} #{r}");
        let patience = Duration::from_secs(60);
        match send_through_faults(&mut c, &me, group, &text, &mut events, patience).await {
            Sending::Acked { epoch, first_try, failed } => {
                timings.push(SendTiming {
                    text: text.clone(),
                    first_try,
                    acked: Instant::now(),
                    failed,
                });
                acked.push((text, epoch));
            }
            Sending::Unknown => unknown.push(text),
            Sending::GaveUp(why) => panic!("{me}: {text} never acknowledged: {why}"),
        }
        if (r + 1) % 10 == 0 {
            eprintln!("{me}: {} of {rounds} rounds acknowledged", r + 1);
        }
        if r % 2 == 1 {
            if let Ok(ev) = c.receive().await {
                events.extend(ev);
            }
        }
    }
    (c, acked, events, rejoined, timings, unknown)
}

/// The guest only receives, until told the load is over.
pub async fn guest_load(mut c: Client, stop: Arc<AtomicBool>) -> (Client, Vec<Event>) {
    let mut events = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if let Ok(ev) = c.receive().await {
            events.extend(ev);
        } else {
            let _ = c.reconnect().await;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    (c, events)
}
