//! What a run must show once healed: the replicas of each shard converge,
//! and the end checks (one commit per epoch, nothing acknowledged missing,
//! nothing refused, the same data on every replica), read from each role's
//! storage as its logic reads it.

use super::*;
use crate::replica::ShardView;
use mlsd_roles::ids::group::{accepted_ids, GroupCore, ACCEPTED_EPOCHS};

/// Waits until every replica of each shard has applied its shard's same
/// last entry.
pub(super) async fn converge(sim: &Sim, healed: Instant) -> Result<(), Violation> {
    for &shard in &sim.shards {
        loop {
            let applied: Vec<(Option<u64>, Option<u64>)> = sim
                .net
                .replicas_of(shard)
                .iter()
                .map(|r| {
                    let m = r.raft.metrics().borrow().clone();
                    (m.last_applied.map(|l| l.index), m.last_log_index)
                })
                .collect();
            let first = applied[0].0;
            if applied.iter().all(|a| a.0 == first && a.1 == first) {
                sim.trace.note(format_args!("{shard} converged at {first:?}"));
                break;
            }
            if healed.elapsed() > SETTLE * 2 {
                return Err(
                    sim.violation(format!("{shard}'s replicas did not converge: {applied:?}"))
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// The end checks; returns (commits, writes) acknowledged.
pub(super) fn check(sim: &Sim) -> Result<(usize, usize), Violation> {
    let spaces: BTreeSet<String> =
        sim.shards.iter().map(|s| Space::Role(s.role).name().to_string()).collect();
    let data = |n: &Node| {
        n.store
            .contents()
            .into_iter()
            .filter(|((s, _), _)| spaces.contains(s))
            .map(|((_, k), v)| (k, v))
            .collect::<BTreeMap<_, _>>()
    };
    let first = data(&sim.nodes[0]);
    for n in &sim.nodes[1..] {
        if data(n) != first {
            return Err(
                sim.violation(format!("{} and {} hold different data", sim.nodes[0].name, n.name))
            );
        }
    }
    let mut l = sim.ledger.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(why) = l.refused.first() {
        return Err(sim.violation(format!("a client request was refused: {why}")));
    }
    // What the roles hold, read as their logic reads it (a shard's view).
    let view = |shard| ShardView { store: sim.nodes[0].store.clone(), shard };
    match sim.kind {
        Run::Ods => check_mailboxes(sim, &l, &view(ODS_SHARD)),
        Run::Ids => check_groups(sim, &l, &view(IDS_SHARD)),
        Run::Delivery => check_delivery(sim, &mut l, &view(IDS_SHARD), &view(ODS_SHARD)),
        Run::Accounts => {
            use accounts::{AS_SHARD, CS_SHARD, SDS_SHARD};
            let (a, c, s) = (view(AS_SHARD), view(CS_SHARD), view(SDS_SHARD));
            let views = accounts::Views { auth: &a, cs: &c, sds: &s };
            match accounts::check(&mut l.accounts, views, sim.trace.now()) {
                Ok(n) => Ok((0, n)),
                Err(what) => Err(sim.violation(what)),
            }
        }
    }
}

/// The IDS run's end checks: one commit per epoch, and every acknowledged
/// message and creation stored.
fn check_groups(sim: &Sim, l: &Ledger, view: &ShardView) -> Result<(usize, usize), Violation> {
    for ((g, e), ids) in &l.commits {
        if ids.len() > 1 {
            return Err(sim.violation(format!("two commits accepted for g{g}@{e}: {ids:x?}")));
        }
    }
    for g in 0..GROUPS {
        let gid = role::group_id(g);
        let core = stored(sim, "a group", GroupCore::load(&gid, view))?;
        let Some(epoch) = core.epoch() else {
            return Err(sim.violation(format!("g{g} is gone")));
        };
        let acked = |e: u64| l.commits.get(&(g, e)).and_then(|ids| ids.iter().next().copied());
        if let Some(((_, last), _)) = l.commits.range((g, 0)..=(g, u64::MAX)).next_back() {
            if *last >= epoch {
                return Err(sim.violation(format!(
                    "g{g} is at epoch {epoch}, but a commit for epoch {last} was acknowledged"
                )));
            }
        }
        // The epochs the IDS still remembers: each holds the one commit
        // that moved the group on, and it is the acknowledged one if any.
        for e in epoch.saturating_sub(ACCEPTED_EPOCHS - 1)..epoch {
            let ids = stored(sim, "accepted ids", accepted_ids(&gid, e, view))?;
            if ids.len() != 1 {
                return Err(sim.violation(format!("g{g}@{e} holds {} commits", ids.len())));
            }
            if let Some(id) = acked(e) {
                if ids[0] != role::message_id(id) {
                    return Err(sim.violation(format!(
                        "g{g}@{e}: commit {id:x} was acknowledged, another is stored"
                    )));
                }
            }
        }
        if !stored(sim, "accepted ids", accepted_ids(&gid, epoch, view))?.is_empty() {
            return Err(sim.violation(format!("g{g} has a commit beyond its epoch {epoch}")));
        }
    }
    let writes =
        stored(sim, "accepted ids", accepted_ids(&role::group_id(WRITERS_GROUP), 0, view))?;
    let writes: BTreeSet<[u8; 32]> = writes.into_iter().collect();
    for w in &l.writes {
        if !writes.contains(&role::message_id(*w)) {
            return Err(sim.violation(format!("acknowledged message {w:x} is lost")));
        }
    }
    for g in &l.created {
        if stored(sim, "a group", GroupCore::load(&role::group_id(*g), view))?.epoch() != Some(0) {
            return Err(sim.violation(format!("the acknowledged creation of g{g} is lost")));
        }
    }
    Ok((l.commits.len(), l.writes.len()))
}

/// `r`, or a violation saying `what` could not be read.
fn stored<T>(
    sim: &Sim,
    what: &str,
    r: Result<T, mlsd_transport::WireError>,
) -> Result<T, Violation> {
    r.map_err(|e| sim.violation(format!("cannot read {what}: {e:?}")))
}

/// The ODS run's end checks: nothing the clients were told contradicts
/// another answer, and every copy acknowledged into a mailbox and not yet
/// acknowledged by its owner is there, read through the ODS's own fetch.
fn check_mailboxes(sim: &Sim, l: &Ledger, view: &ShardView) -> Result<(usize, usize), Violation> {
    if let Some(what) = l.mail.anomalies.first() {
        return Err(sim.violation(what.clone()));
    }
    let now = sim.trace.now();
    for k in 0..mailbox::MAILBOXES {
        let held: BTreeMap<u64, Vec<u8>> = mailbox::read_all(view, k, 0, now)
            .map_err(|e| sim.violation(format!("cannot read mailbox {k}: {e}")))?
            .into_iter()
            .map(|e| (e.seq, e.envelope))
            .collect();
        for (seq, d) in l.mail.owed(k) {
            if held.get(&seq) != Some(&mailbox::envelope(d)) {
                return Err(sim.violation(format!(
                    "mailbox {k} seq {seq}: acknowledged copy {d:x} is lost (holds {:x?})",
                    held.get(&seq)
                )));
            }
        }
    }
    Ok((0, l.mail.stored.len()))
}

/// The delivery run's end checks: each mailbox's remaining copies read
/// through the ODS's own fetch join what its owner read, and every send
/// answered `Sent` is among them, once, in every mailbox
/// ([`delivery::DeliveryLedger::check`]).
fn check_delivery(
    sim: &Sim,
    l: &mut Ledger,
    ids: &ShardView,
    ods: &ShardView,
) -> Result<(usize, usize), Violation> {
    let now = sim.trace.now();
    for k in 0..mailbox::MAILBOXES {
        let held = mailbox::read_all(ods, k, 0, now)
            .map_err(|e| sim.violation(format!("cannot read mailbox {k}: {e}")))?;
        l.delivery.received(k, &held);
    }
    let gid = role::group_id(delivery::DELIVERY_GROUP);
    let accepted = stored(sim, "accepted ids", accepted_ids(&gid, 0, ids))?;
    match l.delivery.check(&accepted.into_iter().collect()) {
        Ok(n) => Ok((0, n)),
        Err(what) => Err(sim.violation(what)),
    }
}
