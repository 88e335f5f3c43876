//! Sending a group message or commit through faults as a careful client
//! does, for the tests that check nothing acknowledged is lost or
//! duplicated (chaos, nemesis): the same request is sent again verbatim
//! (same message id) until it is answered, a send the group moved past is
//! sent anew only when nothing of it can have been delivered, a send whose
//! outcome cannot be learnt any more is reported as such, and a commit is
//! tried until it lands.

use std::time::{Duration, Instant};

use mlsd_client::group::Event;
use mlsd_client::{Client, ClientError};
use mlsd_roles::ids::group::ACCEPTED_EPOCHS;
use mlsd_transport::protocol::{IdsError, IdsResponse};
use mlsd_transport::{Request, Response, WireError};

/// What sending one message came to.
pub enum Sending {
    /// Answered `Sent`: every copy stored.
    Acked {
        /// The epoch of the request that was acknowledged.
        epoch: u64,
        /// When that request's first try went out.
        first_try: Instant,
        /// Its tries that failed before, as the client saw them.
        failed: u32,
    },
    /// An earlier try's outcome is unknown (its answer never came) and the
    /// group moved so far past its epoch that the IDS no longer remembers
    /// what it accepted then (`ACCEPTED_EPOCHS`): it may have been
    /// delivered, so it is not sent anew (which could duplicate it); a
    /// checker requires it at most once.
    Unknown,
    /// Not acknowledged within the patience given: why.
    GaveUp(String),
}

/// The `Send` of `text`. Members learned while the AS was down are not
/// checked yet, and a send is refused until they are: check again (as mlsc
/// does before every send) until the AS answers or `deadline` passes.
pub async fn prepare(
    c: &mut Client,
    group: &str,
    text: &str,
    deadline: Instant,
) -> Result<Request, ClientError> {
    loop {
        match c.prepare_text(group, text) {
            Err(ClientError::UnverifiedMembers { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let _ = c.reconnect().await;
                let _ = c.check_members(group).await;
            }
            other => return other,
        }
    }
}

/// Sends `text` to `group` until it is acknowledged, for at most
/// `patience`; what `me` receives meanwhile (catching up after a refusal)
/// goes to `events`. Slow and refused tries are logged with `me`.
pub async fn send_through_faults(
    c: &mut Client,
    me: &str,
    group: &str,
    text: &str,
    events: &mut Vec<Event>,
    patience: Duration,
) -> Sending {
    let deadline = Instant::now() + patience;
    let mut epoch = c.group_epoch(group).unwrap_or(0);
    let mut req = match prepare(c, group, text, deadline).await {
        Ok(r) => r,
        Err(e) => return Sending::GaveUp(format!("cannot prepare: {e}")),
    };
    let mut failures: Vec<String> = Vec::new();
    let mut started = Instant::now();
    loop {
        match c.send_request(req.clone()).await {
            Ok(Response::Ids(IdsResponse::Sent { .. })) => {
                // A slow send: its copies may reach members many epochs late.
                if started.elapsed() > Duration::from_secs(5) {
                    eprintln!(
                        "{me}: {text:?} of epoch {epoch} acknowledged after {:?} and {failures:?}",
                        started.elapsed()
                    );
                }
                return Sending::Acked { epoch, first_try: started, failed: failures.len() as u32 };
            }
            Err(ClientError::Server(WireError::Ids(IdsError::StaleEpoch { current })))
                if !failures.is_empty() && current >= epoch + ACCEPTED_EPOCHS =>
            {
                eprintln!(
                    "{me}: {text:?} of epoch {epoch}: outcome unknown, refused StaleEpoch (now {current}) after {failures:?}; not sent anew"
                );
                return Sending::Unknown;
            }
            // Refused as a whole (the group moved on): nothing was
            // delivered, so catching up and sending anew is no duplicate.
            Err(ClientError::Server(WireError::Ids(IdsError::StaleEpoch { current }))) => {
                eprintln!(
                    "{me}: {text:?} of epoch {epoch} refused StaleEpoch (now {current}) after {failures:?}; sent anew"
                );
                events.extend(c.receive().await.unwrap_or_default());
                epoch = c.group_epoch(group).unwrap_or(epoch);
                req = match prepare(c, group, text, deadline).await {
                    Ok(r) => r,
                    Err(e) => return Sending::GaveUp(format!("cannot prepare: {e}")),
                };
                // A new request: its own tries are what a bound is about.
                (started, failures) = (Instant::now(), Vec::new());
            }
            other => {
                if Instant::now() >= deadline {
                    return Sending::GaveUp(format!("{other:?} after {failures:?}"));
                }
                failures.push(format!("{other:?}").chars().take(160).collect::<String>());
                tokio::time::sleep(Duration::from_millis(200)).await;
                let _ = c.reconnect().await;
            }
        }
    }
}

/// A commit the load makes: of whom, for an add or a removal (an identity).
#[derive(Clone, Copy, Debug)]
pub enum Change<'a> {
    /// A self-update.
    Update,
    /// Remove every device of the identity.
    Remove(&'a str),
    /// Add every device of the identity.
    Add(&'a str),
}

/// Retries `change` until it lands, or until the client's view shows it has
/// (a commit whose answer was lost may have been accepted); an error when
/// neither happened within a minute.
pub async fn commit_until(
    c: &mut Client,
    group: &str,
    me: &str,
    change: Change<'_>,
) -> Result<(), String> {
    let has = |c: &Client, who: &str| {
        c.group_members(group).unwrap_or_default().iter().any(|m| m.starts_with(&format!("{who}/")))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = match change {
            Change::Update => c.self_update(group).await,
            Change::Remove(g) => c.remove_members(group, &[g]).await,
            Change::Add(g) => c.add_members(group, &[g]).await,
        };
        let Err(e) = r else { return Ok(()) };
        eprintln!("{me}: {change:?}: {e}");
        if Instant::now() >= deadline {
            return Err(format!("{me}: {change:?} never landed: {e}"));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = c.reconnect().await;
        let _ = c.flush_outbox().await;
        let landed = match change {
            Change::Update => false,
            Change::Remove(g) => !has(c, g),
            Change::Add(g) => has(c, g),
        };
        if landed {
            return Ok(());
        }
    }
}

/// Once the faults are over: sends every commit still in `me`'s outbox,
/// for at most 30 s.
pub async fn empty_outbox(c: &mut Client, me: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.outbox_len().map_err(|e| format!("{me}: outbox: {e}"))? > 0 {
        if Instant::now() > deadline {
            return Err(format!("{me}: the outbox never emptied"));
        }
        let _ = c.flush_outbox().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Three successful reads of `me`'s mailbox, for at most 30 s, and what
/// they brought; a client whose entry node was just killed or wiped
/// reconnects first.
pub async fn read_to_end(c: &mut Client, me: &str) -> Result<Vec<Event>, String> {
    let (mut events, mut reads) = (Vec::new(), 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while reads < 3 {
        match c.receive().await {
            Ok(ev) => {
                events.extend(ev);
                reads += 1;
            }
            Err(e) if Instant::now() > deadline => return Err(format!("{me}: cannot read: {e}")),
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let _ = c.reconnect().await;
            }
        }
    }
    Ok(events)
}
