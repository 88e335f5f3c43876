//! Failover as a client sees it, on real `mlsd` processes with three
//! replicas per shard and the default call and connect timeouts: a fan-out
//! follows a mailbox's leader after a failover, from a node that holds no
//! replica of the mailbox's shard and knows its leader only from what other
//! nodes tell it, and so does a subscription entering there; and a request
//! through a survivor succeeds within the client's own retry once a node
//! died.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::leaders::{leaders, new_leader, spread};
use common::{sent_within_patience, Cluster};
use mlsd_client::Client;
use mlsd_node::config::ClusterConfig;
use mlsd_node::shards::placement;
use mlsd_transport::protocol::RosterMode;
use mlsd_transport::Role;

#[tokio::test(flavor = "multi_thread")]
async fn fan_outs_follow_the_mailbox_leader_after_failovers() {
    let _watchdog = common::init();
    let all = &Role::ALL[..];
    let mut c = Cluster::configured(
        &[("n1", all), ("n2", all), ("n3", all), ("n4", all), ("n5", all)],
        common::REPLICATED,
        "",
    );
    c.start_all().await;
    c.wait_healthy(Duration::from_secs(60)).await;
    // Leaders move to their preferred voters after a start; a handover
    // closes the subscriptions at the old leader (their clients resubscribe),
    // so the test lets them settle before it looks at leaders.
    spread(&c, &[]).await;
    let config = ClusterConfig::load(&c.config).unwrap();

    let alice = c.registered("alice/phone", "n1", 3).await;
    let mut members = Vec::new();
    for name in ["bob", "carol", "dave", "erin", "frank", "grace"] {
        members.push(c.registered(&format!("{name}/phone"), "n1", 2).await);
    }
    // A group whose fan-out runs on a node that holds no replica of a
    // member's mailbox shard: that node learns the shard's leader only
    // from the answers it gets.
    let lead = leaders(&c);
    let ods_shard =
        |m: &Client| placement::shard_of(&config, Role::Ods, &m.mailbox_shard().unwrap());
    let (group, fanout_node, member, shard) = (0..64)
        .find_map(|i| {
            let group = format!("G{i}");
            let ids = placement::shard_of(&config, Role::Ids, group.as_bytes()).to_string();
            let x = lead.get(&ids)?.clone();
            members
                .iter()
                .position(|m| placement::voters(&config, ods_shard(m)).iter().all(|v| v.name != x))
                .map(|m| (group, x, m, ods_shard(&members[m]).to_string()))
        })
        .expect("some group's fan-out node holds no replica of some member's mailbox");
    let name = ["bob", "carol", "dave", "erin", "frank", "grace"][member];
    eprintln!("group {group}: fan-out on {fanout_node}, {name}'s mailbox in {shard}");
    // The sender enters through the fan-out node, which holds no replica of
    // the shard and so is never killed below: a client knows one server, so
    // a dead entry node would fail its sends for reasons this test is not
    // about (CI saw exactly that when the second kill hit alice's n1).
    drop(alice);
    let mut alice = c.client("alice/phone", &fanout_node).await;
    alice.create_group(&group, RosterMode::Stored).await.unwrap();
    alice.add_members(&group, &[name]).await.unwrap();
    let m = &mut members[member];
    m.receive().await.unwrap();
    sent_within_patience(&mut alice, &group, "before").await;

    // The mailbox's leader dies; a send teaches the fan-out node the new
    // leader. The old one returns and gets its leadership back (it is the
    // shard's preferred voter): the fan-out node's idea of the leader now
    // names a node that is alive but does not lead the shard.
    let old = lead[&shard].clone();
    c.kill(&old);
    let next = new_leader(&c, &shard, &old).await;
    eprintln!("{shard}: {old} died, {next} leads");
    sent_within_patience(&mut alice, &group, "while a leader was down").await;
    c.start(&old).await;
    c.wait_healthy(Duration::from_secs(60)).await;
    spread(&c, &[]).await;
    assert_eq!(leaders(&c)[&shard], old, "the preferred voter leads again");
    let failed = sent_within_patience(&mut alice, &group, "after a leader returned").await;
    eprintln!("{failed} failed tries after {old} returned and took the lead back from {next}");

    // The leader dies for good: the fan-out node must find the next.
    c.kill(&old);
    let next = new_leader(&c, &shard, &old).await;
    eprintln!("{shard}: {old} died, {next} leads");
    let failed = sent_within_patience(&mut alice, &group, "after a leader died").await;
    eprintln!("{failed} failed tries after the leader died");
    spread(&c, &[&old]).await;

    // The member subscribes through the other node without a replica of its
    // shard, which has learned nothing about the shard's leader: the
    // subscription is piped to the leader, with the backlog, and then live.
    let holders = placement::voters(&config, ods_shard(&members[member]));
    let other = c
        .specs
        .iter()
        .map(|s| s.name)
        .find(|n| *n != fanout_node && holders.iter().all(|v| v.name != *n))
        .unwrap();
    let home = format!("{name}/phone");
    drop(members);
    let mut m = c.client(&home, other).await;
    let (mut sub, backlog) =
        m.subscribe().await.expect("subscribed through a node without a replica");
    assert_eq!(backlog, 4, "the four unread copies come first");
    sent_within_patience(&mut alice, &group, "live").await;
    let live = tokio::time::timeout(Duration::from_secs(10), sub.next()).await;
    assert_eq!(live.expect("a live copy within 10 s").unwrap().len(), 1);
    sub.close();

    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < 5 && Instant::now() < deadline {
        got.extend(common::texts(&m.receive().await.unwrap_or_default()));
    }
    assert_eq!(
        got,
        [
            "before",
            "while a leader was down",
            "after a leader returned",
            "after a leader died",
            "live"
        ]
    );
}

/// The node that leads the most shards.
fn busiest(c: &Cluster) -> String {
    let mut count: HashMap<String, usize> = HashMap::new();
    for l in leaders(c).into_values() {
        *count.entry(l).or_default() += 1;
    }
    count.into_iter().max_by_key(|(_, n)| *n).map(|(l, _)| l).expect("some shard has a leader")
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_through_a_survivor_succeed_within_the_clients_retry_after_a_node_dies() {
    let _watchdog = common::init();
    let all = &Role::ALL[..];
    // Default Raft timings and default limits: what an operator runs.
    let mut c = Cluster::configured(
        &[("n1", all), ("n2", all), ("n3", all)],
        "replicas = 3\nshards = 4\n",
        "",
    );
    c.start_all().await;
    c.wait_healthy(Duration::from_secs(60)).await;
    let mut names = Vec::new();
    for i in 0..8 {
        names.push(format!("user{i}"));
        c.registered(&format!("user{i}/phone"), "n1", 1).await;
    }
    let (mut alice, _) = c.alice_and_bob_in_g("n1", 1).await;

    for round in 0..2 {
        let dead = busiest(&c);
        let via = ["n1", "n2", "n3"].into_iter().find(|n| *n != dead).unwrap();
        let reader = c.client("alice/phone", via).await;
        let mut bob = c.client("bob/phone", via).await;
        alice.send_text("G", &format!("before {round}")).await.unwrap();
        c.kill(&dead);
        // Requests issued right after the death, each with the client's
        // own retry (8 s while a shard has no leader): every identity's
        // AS shard, and bob's mailbox.
        let start = Instant::now();
        for name in &names {
            let t = Instant::now();
            let found = reader.lookup(name).await;
            assert!(
                matches!(&found, Ok(b) if b.len() == 1),
                "round {round}: lookup of {name} through {via} after {dead} died: {found:?} \
                 after {:?}",
                t.elapsed()
            );
            eprintln!("round {round}: lookup of {name} took {:?}", t.elapsed());
        }
        let t = Instant::now();
        let got = bob.receive().await;
        let got = got.unwrap_or_else(|e| {
            panic!(
                "round {round}: receive through {via} after {dead} died: {e} after {:?}",
                t.elapsed()
            )
        });
        assert_eq!(common::texts(&got), [format!("before {round}")]);
        eprintln!(
            "round {round}: {dead} killed; lookups and a receive through {via} took {:?}",
            start.elapsed()
        );
        c.start(&dead).await;
        c.wait_healthy(Duration::from_secs(60)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn leaders_spread_over_the_nodes_and_move_back_to_a_returning_node() {
    let _watchdog = common::init();
    let all = &Role::ALL[..];
    let keys = format!("{}balance_leaders = true\n", common::REPLICATED);
    let mut c = Cluster::configured(&[("n1", all), ("n2", all), ("n3", all)], &keys, "");
    c.start_all().await;
    c.wait_healthy(Duration::from_secs(60)).await;
    spread(&c, &[]).await;
    let mut count: HashMap<String, usize> = HashMap::new();
    for l in leaders(&c).into_values() {
        *count.entry(l).or_default() += 1;
    }
    // 20 shards: placement puts each node first in 6 or 7 of them.
    assert!(
        ["n1", "n2", "n3"].iter().all(|n| count.get(*n).is_some_and(|k| *k >= 5)),
        "leaders per node: {count:?}"
    );

    let mut alice = c.registered("alice/phone", "n2", 2).await;
    let mut bob = c.registered("bob/phone", "n3", 2).await;
    alice.create_group("G", RosterMode::Stored).await.unwrap();
    alice.add_members("G", &["bob"]).await.unwrap();
    bob.receive().await.unwrap();
    sent_within_patience(&mut alice, "G", "one").await;

    // n1 dies: its shards go to their next voters in placement order.
    c.kill("n1");
    spread(&c, &["n1"]).await;
    sent_within_patience(&mut alice, "G", "two").await;
    // n1 returns, catches up and gets its shards back.
    c.start("n1").await;
    c.wait_healthy(Duration::from_secs(60)).await;
    spread(&c, &[]).await;
    sent_within_patience(&mut alice, "G", "three").await;

    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < 3 && Instant::now() < deadline {
        got.extend(common::texts(&bob.receive().await.unwrap_or_default()));
    }
    assert_eq!(got, ["one", "two", "three"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn subscribers_of_an_isolated_leader_are_closed_and_miss_nothing_at_the_new_one() {
    let _watchdog = common::init();
    let all = &Role::ALL[..];
    let mut c =
        Cluster::configured(&[("n1", all), ("n2", all), ("n3", all)], common::REPLICATED, "");
    c.start_all().await;
    c.wait_healthy(Duration::from_secs(60)).await;
    // No handover may close bob's subscription before the isolation does.
    spread(&c, &[]).await;
    let config = ClusterConfig::load(&c.config).unwrap();
    let alice = c.registered("alice/phone", "n1", 2).await;
    let bob = c.registered("bob/phone", "n1", 2).await;
    let shard = placement::shard_of(&config, Role::Ods, &bob.mailbox_shard().unwrap()).to_string();
    let leader = leaders(&c)[&shard].clone();
    let others: Vec<&str> = ["n1", "n2", "n3"].into_iter().filter(|n| *n != leader).collect();
    drop(bob);
    // Bob is connected to his mailbox's leader itself, alice to another node.
    let mut bob = c.client("bob/phone", &leader).await;
    let mut alice_elsewhere = c.client("alice/phone", others[0]).await;
    drop(alice);
    alice_elsewhere.create_group("G", RosterMode::Stored).await.unwrap();
    alice_elsewhere.add_members("G", &["bob"]).await.unwrap();
    bob.receive().await.unwrap();
    let (mut sub, backlog) = bob.subscribe().await.unwrap();
    assert_eq!(backlog, 0);
    sent_within_patience(&mut alice_elsewhere, "G", "one").await;
    let live = tokio::time::timeout(Duration::from_secs(10), sub.next()).await;
    assert_eq!(live.expect("a live copy").unwrap().len(), 1);

    // The leader is cut off from the other nodes (bob still reaches it): its
    // lease runs out and it closes bob's subscription, within two election
    // timeouts (the test's 800 ms, randomized up to 4/3 of it) and a margin.
    let cut = c.isolate(&leader);
    let t = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(10), sub.next()).await;
    let took = t.elapsed();
    assert!(matches!(ended, Ok(Err(_))), "the subscription went on: {ended:?}");
    assert!(took < Duration::from_millis(2 * 1067 + 500), "closed after {took:?}");
    eprintln!("the isolated leader {leader} closed bob's subscription after {took:?}");

    // The majority elects a new leader and takes a send; bob, entering
    // through a node of the majority, resubscribes from his last ack and
    // misses nothing.
    sent_within_patience(&mut alice_elsewhere, "G", "two").await;
    drop(bob);
    let mut bob = c.client("bob/phone", others[1]).await;
    let (sub, backlog) = bob.subscribe().await.expect("resubscribed at the new leader");
    assert_eq!(backlog, 2, "'one' (never acknowledged) and 'two'");
    sub.close();
    let got = common::texts(&bob.receive().await.unwrap());
    assert_eq!(got, ["one", "two"]);
    drop(cut);
    c.wait_healthy(Duration::from_secs(60)).await;
}
