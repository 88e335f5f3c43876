//! Chaos under load: clients in several groups send and commit while random
//! actors (group, fan-out, anonymizer, role actors) are killed through the
//! actor runtime and whole nodes are SIGKILLed and restarted. At the end every
//! member must have received every acknowledged message exactly once, and all
//! members must agree on each group's epoch and membership.
//!
//! The load: `MLSD_CHAOS_GROUPS` (2) groups of `MLSD_CHAOS_SENDERS` (3)
//! senders and a guest; sends, self-updates, and the guest removed and added
//! back by the group's creator. The chaos, one step every
//! `MLSD_CHAOS_INTERVAL_MS` (125) ms on average: group, fan-out, anonymizer,
//! IDS, ODS, AS and CS actors killed, and a node SIGKILL and restart every
//! `MLSD_CHAOS_NODE_EVERY` (8) steps. The short profile (12 rounds) runs in
//! CI; `MLSD_CHAOS_ROUNDS=N` runs longer (docs/reliability.md).

mod common;

use mlsd_transport::protocol::IdsError;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Cluster;
use mlsd_client::group::Event;
use mlsd_client::{Client, ClientError};
use mlsd_transport::protocol::{ChaosTarget, NodeRequest, RosterMode};
use mlsd_transport::{Request, Response, Role, WireError};
use rand::seq::IndexedRandom;
use rand::Rng;

/// A message a sender got acknowledged, with the epoch it was sent in.
type Acked = (String, u64);

/// Membership changes the group's creator makes during its load: the guest
/// is removed a third of the way through and added back at two thirds.
struct GuestPlan {
    guest: &'static str,
    remove_at: usize,
    add_at: usize,
}

/// A commit the load makes.
#[derive(Clone, Copy, Debug)]
enum Change {
    Update,
    Remove(&'static str),
    Add(&'static str),
}

/// Retries `change` until it lands, or until the client's view shows it has
/// (a commit whose answer was lost may have been accepted).
async fn commit_until(c: &mut Client, group: &str, me: &str, change: Change) {
    let has = |c: &Client, who: &str| {
        c.group_members(group).unwrap().iter().any(|m| m.starts_with(&format!("{who}/")))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = match change {
            Change::Update => c.self_update(group).await,
            Change::Remove(g) => c.remove_members(group, &[g]).await,
            Change::Add(g) => c.add_members(group, &[g]).await,
        };
        let Err(e) = r else { return };
        eprintln!("{me}: {change:?}: {e}");
        assert!(Instant::now() < deadline, "{me}: {change:?} never landed: {e}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = c.reconnect().await;
        let _ = c.flush_outbox().await;
        let landed = match change {
            Change::Update => false,
            Change::Remove(g) => !has(c, g),
            Change::Add(g) => has(c, g),
        };
        if landed {
            return;
        }
    }
}

/// The `Send` of `text`. Members learned while the AS was down are not
/// checked yet, and a send is refused until they are: check again (as mlsc
/// does before every send) until the AS answers.
async fn prepare(c: &mut Client, group: &str, text: &str) -> Request {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match c.prepare_text(group, text) {
            Ok(req) => return req,
            Err(e @ ClientError::UnverifiedMembers { .. }) => {
                assert!(Instant::now() < deadline, "{group}: members never verified: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                let _ = c.reconnect().await;
                let _ = c.check_members(group).await;
            }
            Err(e) => panic!("{group}: {e}"),
        }
    }
}

/// One member's load: `rounds` messages, a self-update every fourth round,
/// and for the creator the guest's removal and re-addition. Returns what it
/// got acknowledged, the events it received meanwhile and, for the creator,
/// the epoch in which the guest rejoined.
async fn member_load(
    mut c: Client,
    group: &'static str,
    me: String,
    rounds: usize,
    plan: Option<GuestPlan>,
) -> (Client, Vec<Acked>, Vec<Event>, Option<u64>) {
    let mut acked = Vec::new();
    let mut events = Vec::new();
    let mut rejoined = None;
    for r in 0..rounds {
        // As mlsc does before every command: a commit accepted while some
        // member's ODS was down waits in the outbox until every member has
        // its copy (without this, that member could never follow the group).
        let _ = c.flush_outbox().await;
        if r % 4 == 3 {
            commit_until(&mut c, group, &me, Change::Update).await;
        }
        if let Some(p) = plan.as_ref().filter(|p| p.remove_at == r) {
            commit_until(&mut c, group, &me, Change::Remove(p.guest)).await;
        }
        if let Some(p) = plan.as_ref().filter(|p| p.add_at == r) {
            commit_until(&mut c, group, &me, Change::Add(p.guest)).await;
            // The guest's Welcome is for the epoch this commit created.
            rejoined = Some(c.group_epoch(group).unwrap());
        }
        let text = format!("{me} #{r}");
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut epoch = c.group_epoch(group).unwrap();
        let mut req = prepare(&mut c, group, &text).await;
        loop {
            match c.send_request(req.clone()).await {
                Ok(Response::Sent { .. }) => break,
                // Refused as a whole (the group moved on): nothing was
                // delivered, so catching up and sending anew is no duplicate.
                Err(ClientError::Server(WireError::Ids(IdsError::StaleEpoch { .. }))) => {
                    events.extend(c.receive().await.unwrap_or_default());
                    epoch = c.group_epoch(group).unwrap();
                    req = prepare(&mut c, group, &text).await;
                }
                other => {
                    assert!(
                        Instant::now() < deadline,
                        "{me}: {text} never acknowledged: {other:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let _ = c.reconnect().await;
                }
            }
        }
        acked.push((text, epoch));
        if (r + 1) % 10 == 0 {
            eprintln!("{me}: {} of {rounds} rounds acknowledged", r + 1);
        }
        if r % 2 == 1 {
            if let Ok(ev) = c.receive().await {
                events.extend(ev);
            }
        }
    }
    (c, acked, events, rejoined)
}

/// The guest only receives, until told the load is over.
async fn guest_load(mut c: Client, stop: Arc<AtomicBool>) -> (Client, Vec<Event>) {
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

#[tokio::test(flavor = "multi_thread")]
async fn nothing_acknowledged_is_lost_or_duplicated_under_chaos() {
    common::init();
    let env = |k: &str, d: u32| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let rounds = env("MLSD_CHAOS_ROUNDS", 12) as usize;
    // A node SIGKILL and restart every N chaos steps (0: actor kills only).
    let node_every = env("MLSD_CHAOS_NODE_EVERY", 8);
    let n_groups = env("MLSD_CHAOS_GROUPS", 2).max(1);
    let n_senders = env("MLSD_CHAOS_SENDERS", 3).max(1);
    // Mean pause between chaos steps.
    let interval_ms = u64::from(env("MLSD_CHAOS_INTERVAL_MS", 125).max(2));
    let mut c = Cluster::with_extra(
        &[
            ("n1", &[Role::As, Role::Cs, Role::Ods]),
            ("n2", &[Role::Ids, Role::Ods, Role::Sds]),
            ("n3", &[Role::Ids, Role::Ods]),
        ],
        // Role actors are killed far more often than the default restart
        // intensity allows (which would stop the node, by design).
        "[limits]\ncall_timeout_ms = 2000\nconnect_timeout_ms = 1000\n[chaos]\nallow = true\n[supervision]\nmax_restarts = 100000\n",
    );
    c.start_all().await;

    // G groups of C senders and a guest who is removed and added back; every
    // client enters through n1, whose process stays up.
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let groups: Vec<(&'static str, Vec<&'static str>, &'static str)> = (1..=n_groups)
        .map(|g| {
            let senders = (1..=n_senders).map(|i| leak(format!("g{g}s{i}"))).collect();
            (leak(format!("G{g}")), senders, leak(format!("g{g}guest")))
        })
        .collect();
    let mut members: Vec<(&'static str, String, Client, Option<GuestPlan>)> = Vec::new();
    let mut guests = Vec::new();
    for (g, names, guest) in groups.iter().cloned() {
        let mut clients = Vec::new();
        for n in &names {
            clients.push(c.registered(&format!("{n}/phone"), "n1", 4).await);
        }
        let mut guest_client = c.registered(&format!("{guest}/phone"), "n1", 4).await;
        clients[0].create_group(g, RosterMode::Stored).await.unwrap();
        let mut invited: Vec<&str> = names[1..].to_vec();
        invited.push(guest);
        clients[0].add_members(g, &invited).await.unwrap();
        for cl in clients.iter_mut().skip(1) {
            cl.receive().await.unwrap();
        }
        guest_client.receive().await.unwrap();
        for (i, (n, cl)) in names.iter().zip(clients).enumerate() {
            let plan = (i == 0).then_some(GuestPlan {
                guest,
                remove_at: rounds / 3,
                add_at: 2 * rounds / 3,
            });
            members.push((g, format!("{n}/phone"), cl, plan));
        }
        guests.push((g, format!("{guest}/phone"), guest_client));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let guest_tasks: Vec<_> = guests
        .into_iter()
        .map(|(g, me, cl)| (g, me, tokio::spawn(guest_load(cl, stop.clone()))))
        .collect();
    let tasks: Vec<_> = members
        .into_iter()
        .map(|(g, me, cl, plan)| {
            (g, me.clone(), tokio::spawn(member_load(cl, g, me, rounds, plan)))
        })
        .collect();

    // Chaos while the load runs.
    let mut kills = HashMap::<String, u32>::new();
    let start = Instant::now();
    let mut step = 0u32;
    let limit = Duration::from_secs((rounds as u64 * 14).max(170));
    while tasks.iter().any(|(_, _, t)| !t.is_finished()) {
        assert!(start.elapsed() < limit, "load did not finish in {limit:?}");
        let pause = rand::rng().random_range(interval_ms / 2..=interval_ms * 3 / 2);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        step += 1;
        if node_every > 0 && step.is_multiple_of(node_every) {
            let node = *["n2", "n3"].choose(&mut rand::rng()).unwrap();
            c.kill(node);
            tokio::time::sleep(Duration::from_millis(300)).await;
            c.start(node).await;
            *kills.entry(format!("node {node}")).or_default() += 1;
            continue;
        }
        let (node, target) = *[
            ("n2", ChaosTarget::Group),
            ("n3", ChaosTarget::Group),
            ("n2", ChaosTarget::Fanout),
            ("n3", ChaosTarget::Fanout),
            ("n2", ChaosTarget::Anonymizer),
            ("n3", ChaosTarget::Anonymizer),
            ("n2", ChaosTarget::Role(Role::Ids)),
            ("n3", ChaosTarget::Role(Role::Ids)),
            ("n2", ChaosTarget::Role(Role::Ods)),
            ("n3", ChaosTarget::Role(Role::Ods)),
            ("n1", ChaosTarget::Role(Role::Ods)),
            ("n1", ChaosTarget::Role(Role::As)),
            ("n1", ChaosTarget::Role(Role::Cs)),
        ]
        .choose(&mut rand::rng())
        .unwrap();
        if let Response::Killed { count } =
            c.operator_call(node, NodeRequest::Chaos { target }).await
        {
            *kills.entry(format!("{target:?}")).or_default() += count;
        }
    }
    eprintln!("chaos: {} s of load, kills {kills:?}", start.elapsed().as_secs());

    let mut sent: HashMap<&str, Vec<Acked>> = HashMap::new();
    let mut joined: HashMap<String, u64> = HashMap::new();
    let mut finals = Vec::new();
    for (g, me, t) in tasks {
        let (cl, acked, events, rejoined) = t.await.unwrap();
        sent.entry(g).or_default().extend(acked);
        if let Some(e) = rejoined {
            let guest = guest_tasks.iter().find(|(gg, _, _)| *gg == g).unwrap().1.clone();
            joined.insert(guest, e);
        }
        finals.push((g, me, cl, events));
    }
    stop.store(true, Ordering::Relaxed);
    for (g, me, t) in guest_tasks {
        let (cl, events) = t.await.unwrap();
        finals.push((g, me, cl, events));
    }

    // Drain every mailbox, then count: a copy is expected by every member
    // other than its sender that is a member now and was one in the epoch it
    // was sent in (the guest: since it was added back).
    // First every commit still waiting in an outbox (the chaos has stopped,
    // so each gets through).
    for (_, me, cl, _) in finals.iter_mut() {
        let deadline = Instant::now() + Duration::from_secs(30);
        while cl.outbox_len().unwrap() > 0 {
            assert!(Instant::now() < deadline, "{me}: the outbox never emptied");
            let _ = cl.flush_outbox().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let (mut acknowledged, mut lost, mut duplicated) = (0, 0, 0);
    for (g, me, cl, events) in finals.iter_mut() {
        for _ in 0..3 {
            events.extend(cl.receive().await.unwrap());
        }
        let mut got: HashMap<String, u32> = HashMap::new();
        for e in events.iter() {
            if let Event::Message { text, .. } = e {
                *got.entry(text.clone()).or_default() += 1;
            }
        }
        let since = joined.get(me.as_str()).copied().unwrap_or(0);
        let expected: Vec<&String> = sent[g]
            .iter()
            .filter(|(t, e)| !t.starts_with(&format!("{me} #")) && *e >= since)
            .map(|(t, _)| t)
            .collect();
        let missing_texts: Vec<&&String> =
            expected.iter().filter(|t| !got.contains_key(t.as_str())).collect();
        let missing = missing_texts.len();
        for t in missing_texts.iter().take(5) {
            let epoch = sent[g].iter().find(|(x, _)| x == **t).map(|(_, e)| *e);
            eprintln!("chaos: {me} in {g} never received {t:?} (sent in epoch {epoch:?})");
        }
        let twice = got.values().filter(|n| **n > 1).count();
        eprintln!(
            "chaos: {me} in {g}: received {} messages, {} of {} expected, {missing} lost, {twice} duplicated",
            got.len(),
            expected.len() - missing,
            expected.len()
        );
        acknowledged += expected.len();
        lost += missing;
        duplicated += twice;
    }
    let total: usize = sent.values().map(Vec::len).sum();
    eprintln!(
        "chaos: {total} messages acknowledged, {acknowledged} copies expected, {lost} lost, {duplicated} duplicated"
    );
    assert_eq!(lost, 0);
    assert_eq!(duplicated, 0);
    for (g, _, guest) in groups.iter().cloned() {
        let views: Vec<(u64, Vec<String>)> = finals
            .iter()
            .filter(|(gg, _, _, _)| *gg == g)
            .map(|(_, _, cl, _)| {
                let mut m = cl.group_members(g).unwrap();
                m.sort();
                (cl.group_epoch(g).unwrap(), m)
            })
            .collect();
        assert!(views.windows(2).all(|w| w[0] == w[1]), "{g}: members disagree: {views:?}");
        assert!(
            views[0].1.contains(&format!("{guest}/phone")),
            "{g}: the guest was not added back"
        );
        eprintln!(
            "chaos: {g}: all {} members agree: epoch {}, members {:?}",
            views.len(),
            views[0].0,
            views[0].1
        );
    }
}
