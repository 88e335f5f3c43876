//! Chaos under load: clients in several groups send and commit while random
//! actors (group, fan-out, anonymizer, role actors) are killed through the
//! actor runtime and whole nodes fail. At the end every member must have
//! received every acknowledged message exactly once, and all members must
//! agree on each group's epoch and membership.
//!
//! Two profiles ([`Profile`]): one replica per shard with n2 or n3
//! SIGKILLed and restarted every `MLSD_CHAOS_NODE_EVERY` (8) steps; and
//! three replicas per shard with, every `MLSD_CHAOS_NODE_EVERY` (6) steps,
//! in turn a kill of the node leading the most shards, a partition of one
//! node (iptables, 1-3 s), a disk wipe, and a pause of the node leading the
//! most shards (SIGSTOP, 1-3 s, then SIGCONT: it wakes up believing it
//! leads), each waited out until `mlsd cluster status` exits 0 again. In
//! runs longer than CI's (or with `MLSD_CHAOS_MEMBERSHIP=1`) every fifth
//! node fault of the replicated profile is a membership change instead, in
//! turn a node joining, that node drained, another joining, and that one
//! SIGKILLed and removed as dead ([`common::membership`]); sends during a
//! join or a drain get no allowance: they are acknowledged within the
//! client's patience like any outside a fault.
//!
//! Recovery is bounded by the client's patience (`retry::SHARD`, 8 s): a
//! dead leader's shards are led again within it, and outside the node
//! faults' windows every send is acknowledged within it.
//!
//! The load: `MLSD_CHAOS_GROUPS` (2) groups of `MLSD_CHAOS_SENDERS` (3)
//! senders and a guest; sends, self-updates, and the guest removed and added
//! back by the group's creator. The chaos, one step every
//! `MLSD_CHAOS_INTERVAL_MS` (125) ms on average: group, fan-out, anonymizer,
//! IDS, ODS, AS and CS actors killed, or a node fault. The short profile (12
//! rounds) runs in CI; `MLSD_CHAOS_ROUNDS=N` runs longer (docs/reliability.md).

mod common;

use mlsd_transport::protocol::{
    ChaosTarget, NodeRequest, NodeResponse, OperatorRequest, RosterMode,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::leaders::{all_led_without, busiest as busiest_leader};
use common::load::{guest_load, member_load, Acked, GuestPlan};
use common::membership::{Change as MemberChange, Membership};
use common::sending::{empty_outbox, read_to_end};
use common::Cluster;
use mlsd_client::group::Event;
use mlsd_client::Client;
use mlsd_transport::{Response, Role};
use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;

/// A node fault's window: from the moment it began until the cluster was
/// healthy again (every shard led and every replica caught up).
type FaultWindow = (Instant, Instant);

/// How much of `from..to` falls inside the fault windows.
fn time_in_faults(from: Instant, to: Instant, faults: &[FaultWindow]) -> Duration {
    faults
        .iter()
        .map(|(a, b)| {
            let (a, b) = ((*a).max(from), (*b).min(to));
            b.saturating_duration_since(a)
        })
        .sum()
}

/// The knobs of a run, from the environment (defaults: the CI profile).
struct Knobs {
    rounds: usize,
    /// A node fault every N chaos steps (0: actor kills only).
    node_every: u32,
    n_groups: u32,
    n_senders: u32,
    /// Mean pause between chaos steps.
    interval_ms: u64,
    /// Membership changes among the replicated profile's node faults: a
    /// join, a drain, a dead node's replacement (`MLSD_CHAOS_MEMBERSHIP`;
    /// on in runs longer than CI's).
    membership: bool,
}

impl Knobs {
    fn from_env(node_every: u32) -> Knobs {
        let env = |k: &str, d: u32| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
        Knobs {
            rounds: env("MLSD_CHAOS_ROUNDS", 12) as usize,
            node_every: env("MLSD_CHAOS_NODE_EVERY", node_every),
            n_groups: env("MLSD_CHAOS_GROUPS", 2).max(1),
            n_senders: env("MLSD_CHAOS_SENDERS", 3).max(1),
            interval_ms: u64::from(env("MLSD_CHAOS_INTERVAL_MS", 125).max(2)),
            membership: env("MLSD_CHAOS_MEMBERSHIP", u32::from(env("MLSD_CHAOS_ROUNDS", 12) > 12))
                > 0,
        }
    }
}

/// What is done to the cluster while the load runs.
#[derive(Clone, Copy, PartialEq)]
enum Profile {
    /// One replica per shard, roles spread over three nodes: actors killed,
    /// and n2 or n3 SIGKILLed and restarted; clients enter through n1.
    Actors,
    /// Three replicas of every shard, every role on every node: actors
    /// killed on any node, and in turn the node leading the most shards
    /// SIGKILLed, a node cut off by a partition, a node's disk wiped, and
    /// the node leading the most shards paused; clients enter through all
    /// three nodes.
    Replicated,
}

/// Settings every chaos cluster has: role actors are killed far more often
/// than the default restart intensity allows (which would stop the node,
/// by design).
const CHAOS: &str = "[chaos]\nallow = true\n[supervision]\nmax_restarts = 100000\n";

fn cluster(profile: Profile) -> Cluster {
    match profile {
        Profile::Actors => Cluster::with_extra(
            &[
                ("n1", &[Role::As, Role::Cs, Role::Ods]),
                ("n2", &[Role::Ids, Role::Ods, Role::Sds]),
                ("n3", &[Role::Ids, Role::Ods]),
            ],
            &format!("[limits]\ncall_timeout_ms = 2000\nconnect_timeout_ms = 1000\n{CHAOS}"),
        ),
        // Snapshots every 20 entries, so a wiped node catches up from one.
        Profile::Replicated => Cluster::configured(
            &[("n1", &Role::ALL), ("n2", &Role::ALL), ("n3", &Role::ALL)],
            &format!(
                "{}balance_leaders = {}\n",
                common::REPLICATED,
                !std::env::var("MLSD_CHAOS_BALANCE").is_ok_and(|v| v == "0")
            ),
            &format!("[limits]\ncall_timeout_ms = 3000\nconnect_timeout_ms = 1000\n{CHAOS}"),
        ),
    }
}

/// SIGKILLs `node` and starts it again on the same data dir.
async fn kill_and_restart(c: &mut Cluster, node: &str) {
    c.kill(node);
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.start(node).await;
}

/// The `nth` node-level fault of `profile`, over by the time it returns;
/// the kind's name for the tally, and whether it is a fault whose window
/// excuses slow sends (a join and a drain are not: clients are served all
/// along). With `membership`, every fifth is a membership change.
async fn node_fault(
    c: &mut Cluster,
    profile: Profile,
    nth: u32,
    membership: Option<&mut Membership>,
) -> (String, bool) {
    let any = || *["n1", "n2", "n3"].choose(&mut rand::rng()).unwrap();
    if let Some(m) = membership.filter(|_| nth % 5 == 4) {
        let change = m.next(c).await;
        return (change.kind().to_string(), matches!(change, MemberChange::Dead(_)));
    }
    match profile {
        Profile::Actors => {
            let node = *["n2", "n3"].choose(&mut rand::rng()).unwrap();
            kill_and_restart(c, node).await;
            (format!("node {node}"), true)
        }
        Profile::Replicated => {
            let kind = match nth % 4 {
                0 => {
                    // Every shard the dead node led has a new leader within
                    // the client's patience (`retry::SHARD`): a client whose
                    // request met the dead leader waits no longer.
                    let dead = busiest_leader(c);
                    c.kill(&dead);
                    let took = all_led_without(c, &dead, mlsd_client::retry::SHARD).await;
                    eprintln!("chaos: every shard led again {took:?} after {dead} died");
                    c.start(&dead).await;
                    "leader kill"
                }
                1 => {
                    let node = any();
                    let cut = c.isolate(node);
                    let ms = rand::rng().random_range(1000..3000);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    drop(cut);
                    "partition"
                }
                2 => {
                    // Only while every other replica is whole (the wait
                    // below): a wiped node relies on the others' copies.
                    let node = any();
                    c.kill(node);
                    std::fs::remove_dir_all(c.dir.path().join("data").join(node)).unwrap();
                    c.start(node).await;
                    "disk wipe"
                }
                _ => {
                    // Longer than an election timeout: the others elect new
                    // leaders, and the paused one wakes up with requests in
                    // flight and a leadership it has lost.
                    let node = busiest_leader(c);
                    let paused = c.pause(&node);
                    let ms = rand::rng().random_range(1000..3000);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    drop(paused);
                    "pause"
                }
            };
            // One node fault at a time, as three replicas tolerate. A wiped
            // node's rebuild takes as long as copying its data does.
            c.wait_healthy(Duration::from_secs(60)).await;
            (kind.to_string(), true)
        }
    }
}

/// The actors a chaos step may kill, and on which nodes.
fn actor_targets(profile: Profile) -> Vec<(&'static str, ChaosTarget)> {
    let everywhere = |t: ChaosTarget| [("n1", t), ("n2", t), ("n3", t)];
    match profile {
        Profile::Actors => vec![
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
        ],
        Profile::Replicated => [
            ChaosTarget::Group,
            ChaosTarget::Fanout,
            ChaosTarget::Anonymizer,
            ChaosTarget::Role(Role::Ids),
            ChaosTarget::Role(Role::Ods),
            ChaosTarget::Role(Role::As),
            ChaosTarget::Role(Role::Cs),
        ]
        .into_iter()
        .flat_map(everywhere)
        .collect(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_acknowledged_is_lost_or_duplicated_under_chaos() {
    run(Profile::Actors, Knobs::from_env(8)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_acknowledged_is_lost_with_leader_kills_disk_wipes_and_partitions() {
    run(Profile::Replicated, Knobs::from_env(6)).await;
}

async fn run(profile: Profile, k: Knobs) {
    let _watchdog = common::init();
    let Knobs { rounds, node_every, n_groups, n_senders, interval_ms, membership } = k;
    let mut membership = (membership && profile == Profile::Replicated).then(Membership::default);
    let mut c = cluster(profile);
    c.start_all().await;
    if profile == Profile::Replicated {
        c.wait_healthy(Duration::from_secs(30)).await;
    }

    // G groups of C senders and a guest who is removed and added back.
    // Clients enter through n1 (Actors: its process stays up) or through
    // every node in turn (Replicated).
    let entry = |i: usize| match profile {
        Profile::Actors => "n1",
        Profile::Replicated => ["n1", "n2", "n3"][i % 3],
    };
    let mut entered = 0usize;
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
            entered += 1;
            clients.push(c.registered(&format!("{n}/phone"), entry(entered), 4).await);
        }
        entered += 1;
        let mut guest_client = c.registered(&format!("{guest}/phone"), entry(entered), 4).await;
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
    let mut node_faults = 0u32;
    let mut faults: Vec<FaultWindow> = Vec::new();
    let mut actor_steps = 0usize;
    // Every kind of node fault of the replicated profile happens at least
    // once, even if the load is done before (a wipe after the sends then
    // tests that the copies not yet received survive it).
    let must = match (profile, node_every > 0, membership.is_some()) {
        (Profile::Replicated, true, false) => 4,
        // Every fifth fault a membership change: join, drain, join, dead.
        (Profile::Replicated, true, true) => 20,
        _ => 0,
    };
    // Targets in turn, in a shuffled order, so every kind is hit within one
    // round of them (a uniform draw could miss a kind in a short run).
    let mut targets = actor_targets(profile);
    targets.shuffle(&mut rand::rng());
    let roles_hit = |kills: &HashMap<String, u32>| {
        Role::ALL
            .iter()
            .filter(|r| **r != Role::Sds)
            .all(|r| kills.get(&format!("{:?}", ChaosTarget::Role(*r))).is_some_and(|k| *k > 0))
    };
    // Each membership change may take a whole rebalance.
    let rebalances = if membership.is_some() { 4 * 180 } else { 0 };
    let limit = Duration::from_secs((rounds as u64 * 14).max(170) + rebalances);
    while tasks.iter().any(|(_, _, t)| !t.is_finished()) || node_faults < must || !roles_hit(&kills)
    {
        assert!(start.elapsed() < limit, "load did not finish in {limit:?}");
        let pause = rand::rng().random_range(interval_ms / 2..=interval_ms * 3 / 2);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        step += 1;
        if node_every > 0 && step.is_multiple_of(node_every) {
            let began = Instant::now();
            let (kind, excused) =
                node_fault(&mut c, profile, node_faults, membership.as_mut()).await;
            eprintln!("chaos: {kind} over after {:?}", began.elapsed());
            if excused {
                faults.push((began, Instant::now()));
            }
            node_faults += 1;
            *kills.entry(kind).or_default() += 1;
            continue;
        }
        let (node, target) = targets[actor_steps % targets.len()];
        actor_steps += 1;
        if let Response::Node(NodeResponse::Killed { count }) =
            c.operator_call(node, NodeRequest::Operator(OperatorRequest::Chaos { target })).await
        {
            *kills.entry(format!("{target:?}")).or_default() += count;
        }
    }
    eprintln!("chaos: {} s of load, kills {kills:?}", start.elapsed().as_secs());
    let in_faults: Duration = faults.iter().map(|(a, b)| *b - *a).sum();
    eprintln!("chaos: node faults took {in_faults:?} of it");
    // The chaos it claims happened: every role's actor killed at least once
    // and, in the replicated profile, each kind of node fault.
    assert!(roles_hit(&kills), "a role's actor was never killed: {kills:?}");
    if must > 0 {
        for kind in ["leader kill", "partition", "disk wipe", "pause"] {
            assert!(kills.get(kind).is_some_and(|k| *k > 0), "no {kind}: {kills:?}");
        }
        if membership.is_some() {
            for kind in ["join", "drain", "dead replacement"] {
                assert!(kills.get(kind).is_some_and(|k| *k > 0), "no {kind}: {kills:?}");
            }
        }
    }

    let mut sent: HashMap<&str, Vec<Acked>> = HashMap::new();
    let mut joined: HashMap<String, u64> = HashMap::new();
    let mut finals = Vec::new();
    let mut slowest = Duration::ZERO;
    // Sends whose outcome the client could not learn (see member_load).
    let mut indeterminate = 0;
    let mut failed_tries = 0;
    for (g, me, t) in tasks {
        let (cl, acked, events, rejoined, timings, unknown) = t.await.unwrap();
        indeterminate += unknown.len();
        // Recovery within the client's patience: outside the node faults'
        // windows (each bounded in `node_fault`), every send is acknowledged
        // within the client library's own retry window.
        for s in &timings {
            let took = s.acked - s.first_try;
            let outside = took.saturating_sub(time_in_faults(s.first_try, s.acked, &faults));
            assert!(
                outside <= mlsd_client::retry::SHARD,
                "{me}: {:?} took {took:?} ({outside:?} outside node faults) and {} failed tries",
                s.text,
                s.failed
            );
            slowest = slowest.max(outside);
            failed_tries += s.failed;
        }
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
        empty_outbox(cl, me).await.unwrap_or_else(|e| panic!("{e}"));
    }
    let (mut acknowledged, mut lost, mut duplicated) = (0, 0, 0);
    for (g, me, cl, events) in finals.iter_mut() {
        events.extend(read_to_end(cl, me).await.unwrap_or_else(|e| panic!("{e}")));
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
        for (t, n) in got.iter().filter(|(_, n)| **n > 1).take(5) {
            eprintln!("chaos: {me} in {g} received {t:?} {n} times");
        }
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
        "chaos: the slowest send took {slowest:?} outside node faults; {failed_tries} failed tries in all"
    );
    eprintln!(
        "chaos: {total} messages acknowledged, {acknowledged} copies expected, {lost} lost, {duplicated} duplicated; {indeterminate} sends of unknown outcome (at most once each)"
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
