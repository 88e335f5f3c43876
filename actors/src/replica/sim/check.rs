//! What a run must show once healed: the replicas converge, and the end
//! checks (one commit per epoch, nothing acknowledged missing, the same data
//! on every replica).

use super::*;

/// Waits until every replica has applied the same last entry.
pub(super) async fn converge(sim: &Sim, healed: Instant) -> Result<(), Violation> {
    loop {
        let applied: Vec<(Option<u64>, Option<u64>)> = sim
            .net
            .replicas()
            .iter()
            .map(|r| {
                let m = r.raft.metrics().borrow().clone();
                (m.last_applied.map(|l| l.index), m.last_log_index)
            })
            .collect();
        let first = applied[0].0;
        if applied.iter().all(|a| a.0 == first && a.1 == first) {
            sim.trace.note(format_args!("converged at {first:?}"));
            return Ok(());
        }
        if healed.elapsed() > SETTLE * 2 {
            return Err(sim.violation(format!("replicas did not converge: {applied:?}")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The end checks; returns (commits, writes) acknowledged.
pub(super) fn check(sim: &Sim) -> Result<(usize, usize), Violation> {
    let space = Space::Role(Role::Ids).name().to_string();
    let data = |n: &Node| {
        n.store
            .contents()
            .into_iter()
            .filter(|((s, _), _)| *s == space)
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
    let l = sim.ledger.lock().unwrap_or_else(|p| p.into_inner());
    let prefix = SHARD.data_prefix();
    let get = |k: Vec<u8>| first.get(&[&prefix[..], &k].concat()).cloned();
    for ((g, e), ids) in &l.commits {
        if ids.len() > 1 {
            return Err(sim.violation(format!("two commits accepted for g{g}@{e}: {ids:x?}")));
        }
        let id = ids.iter().next().copied().unwrap_or_default();
        if get(role::commit_key(*g, *e)) != Some(id.to_be_bytes().to_vec()) {
            return Err(sim.violation(format!("accepted commit {id:x} for g{g}@{e} is lost")));
        }
    }
    for g in 0..GROUPS {
        let epoch = get(role::epoch_key(g))
            .and_then(|v| v.try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0);
        for e in 0..epoch {
            if get(role::commit_key(g, e)).is_none() {
                return Err(
                    sim.violation(format!("g{g} is at epoch {epoch} with no commit for {e}"))
                );
            }
        }
        if get(role::commit_key(g, epoch)).is_some() {
            return Err(sim.violation(format!("g{g} has a commit beyond its epoch {epoch}")));
        }
    }
    for w in &l.writes {
        if get(role::write_key(*w)).is_none() {
            return Err(sim.violation(format!("acknowledged write {w:x} is lost")));
        }
    }
    Ok((l.commits.len(), l.writes.len()))
}
