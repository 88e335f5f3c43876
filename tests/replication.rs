//! Replicated shards (issue: "Replicated shards on openraft"), on three real
//! `mlsd` processes over QUIC, every role on every node, three replicas per
//! shard: a node SIGKILLed under load, a node whose data dir is deleted,
//! two of three nodes down, and a node cut off by a partition. Nothing
//! acknowledged may be lost.

mod common;

use std::time::{Duration, Instant};

use common::leaders::{leaders, spread};
use common::Cluster;
use mlsd_client::Client;
use mlsd_node::config::ClusterConfig;
use mlsd_node::shards::placement;
use mlsd_transport::protocol::{ClusterError, IdsResponse, RosterMode};
use mlsd_transport::{Response, Role, WireError};

/// Sends `text` in G until the cluster acknowledges it, within the
/// client's patience ([`common::sent_within_patience`]); returns how many
/// tries failed.
async fn send_acked(sender: &mut Client, text: &str) -> u32 {
    common::sent_within_patience(sender, "G", text).await
}

/// Receives until `want` messages have arrived (or 30 s pass).
async fn receive_texts(c: &mut Client, want: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        match c.receive().await {
            Ok(events) => got.extend(common::texts(&events)),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    got
}

fn expected(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("message {i}")).collect()
}

/// Alice, Bob and Carol in G, entering through n2 and n3 (n1 is the one
/// that dies).
async fn group(c: &Cluster) -> (Client, Client, Client) {
    group_via(c, ["n2", "n3"]).await
}

/// Alice and Carol entering through `via[0]`, Bob through `via[1]`, in G.
async fn group_via(c: &Cluster, via: [&str; 2]) -> (Client, Client, Client) {
    let mut alice = c.registered("alice/phone", via[0], 3).await;
    let mut bob = c.registered("bob/phone", via[1], 3).await;
    let mut carol = c.registered("carol/phone", via[0], 3).await;
    alice.create_group("G", RosterMode::Stored).await.unwrap();
    alice.add_members("G", &["bob", "carol"]).await.unwrap();
    bob.receive().await.unwrap();
    carol.receive().await.unwrap();
    (alice, bob, carol)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sigkilled_node_loses_nothing_acknowledged_and_the_other_two_serve() {
    let _watchdog = common::init();
    let mut c = common::three_replicated().await;
    // The node that dies leads G's IDS shard, which every send needs, once
    // the leaders have settled; the clients enter through the other two.
    spread(&c, &[]).await;
    let config = ClusterConfig::load(&c.config).unwrap();
    let ids = placement::shard_of(&config, Role::Ids, b"G").to_string();
    let dead = leaders(&c)[&ids].clone();
    let via: Vec<&str> = ["n1", "n2", "n3"].into_iter().filter(|n| *n != dead).collect();
    let (mut alice, mut bob, mut carol) = group_via(&c, [via[0], via[1]]).await;
    let dave = c.registered("dave/phone", via[1], 4).await;
    let (kps, _) = alice.fetch_key_packages("dave").await.unwrap();
    assert_eq!(kps.len(), 1, "one KeyPackage of dave's one device");
    assert_eq!(dave.count_key_packages().await.unwrap().0, 3);

    for i in 0..10 {
        send_acked(&mut alice, &format!("message {i}")).await;
    }
    // G's IDS shard (and whatever else the node led) loses its leader
    // mid-run: the first send after the kill is acknowledged within the
    // client's patience, election included.
    assert_eq!(leaders(&c)[&ids], dead, "{ids} is still led by {dead} when it dies");
    c.kill(&dead);
    let t = Instant::now();
    let mut failed = 0;
    for i in 10..30 {
        failed += send_acked(&mut alice, &format!("message {i}")).await;
    }
    eprintln!(
        "20 sends after {dead} (leading {ids}) died took {:?}, {failed} failed tries",
        t.elapsed()
    );

    // Each acknowledged message exactly once, in order, at both members.
    assert_eq!(receive_texts(&mut bob, 30).await, expected(0..30));
    assert_eq!(receive_texts(&mut carol, 30).await, expected(0..30));
    // A commit after the kill: members agree on epochs and membership.
    alice.remove_members("G", &["carol"]).await.unwrap();
    bob.receive().await.unwrap();
    assert_eq!(alice.group_epoch("G").unwrap(), bob.group_epoch("G").unwrap());
    assert_eq!(alice.group_members("G").unwrap(), bob.group_members("G").unwrap());
    // The KeyPackage handed out before the kill stays consumed.
    assert_eq!(dave.count_key_packages().await.unwrap().0, 3);
    // New identities register through the survivors.
    c.registered("erin/phone", via[1], 2).await;

    c.start(&dead).await;
    c.wait_healthy(Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_restarted_empty_catches_up_and_holds_a_complete_copy() {
    let _watchdog = common::init();
    let mut c = common::three_replicated().await;
    let (mut alice, mut bob, mut carol) = group(&c).await;
    // Dave reads only at the very end, once n2 is stopped.
    let mut dave = c.registered("dave/phone", "n3", 3).await;
    alice.add_members("G", &["dave"]).await.unwrap();
    bob.receive().await.unwrap();
    carol.receive().await.unwrap();
    dave.receive().await.unwrap();
    // Enough writes that every shard of the IDS and ODS snapshots and
    // drops the start of its log.
    for i in 0..40 {
        send_acked(&mut alice, &format!("message {i}")).await;
    }
    assert_eq!(receive_texts(&mut bob, 40).await, expected(0..40));
    let carol_bindings = alice.lookup("carol").await.unwrap();
    let dave_bindings = alice.lookup("dave").await.unwrap();
    assert_eq!((carol_bindings.len(), dave_bindings.len()), (1, 1));

    c.kill("n1");
    std::fs::remove_dir_all(c.dir.path().join("data/n1")).unwrap();
    // What n1 logs from its empty restart on (the log file is appended to).
    let before = c.log("n1").len();
    c.start("n1").await;
    let status = c.wait_healthy(Duration::from_secs(60)).await;
    assert!(status.contains("healthy"), "{status}");
    // A complete copy, compared key by key: every node replicates every
    // shard here, so the roles' data on the rebuilt n1 equals n2's and n3's
    // (read beside the running nodes; the Raft log and state differ).
    let data = |n: &str| common::settled(&c.dir.path().join("data").join(n));
    let (n1, n2, n3) = (data("n1"), data("n2"), data("n3"));
    assert!(n1.len() > 100, "n1 holds {} keys", n1.len());
    for (name, other) in [("n2", &n2), ("n3", &n3)] {
        let missing: Vec<_> = other.keys().filter(|k| !n1.contains_key(*k)).take(5).collect();
        let differ: Vec<_> =
            n1.iter().filter(|(k, v)| other.get(*k) != Some(*v)).map(|(k, _)| k).take(5).collect();
        assert!(
            missing.is_empty() && differ.is_empty(),
            "n1 is no copy of {name}: lacks {missing:?}, differs at {differ:?}"
        );
    }
    let snap = |n: &str| {
        c.log(n)
            .lines()
            .filter(|l| {
                (l.contains("snapshot") || l.contains("purge"))
                    && !l.contains("startup")
                    && !l.contains("initial_state")
            })
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        c.log("n1")[before..].contains("snapshot installed"),
        "n1 caught up from a snapshot:\n{}\n--- n2:\n{}",
        snap("n1"),
        snap("n2")
    );

    // The other two stopped one at a time: with n1 and n2 (n3 stopped),
    // then n1 and n3 (n2 stopped), everything is there. Carol reads in the
    // first half and Dave in the second, so each half finds all 40 unread
    // copies, and both find the bindings.
    c.kill("n3");
    let reader = c.client("alice/phone", "n2").await;
    assert_eq!(reader.lookup("carol").await.unwrap(), carol_bindings, "on n1 and n2");
    assert_eq!(reader.lookup("dave").await.unwrap(), dave_bindings, "on n1 and n2");
    let _ = carol.reconnect().await;
    assert_eq!(receive_texts(&mut carol, 40).await, expected(0..40));

    c.start("n3").await;
    let status = c.wait_healthy(Duration::from_secs(60)).await;
    assert!(status.contains("healthy"), "{status}");
    c.kill("n2");
    let reader = c.client("bob/phone", "n1").await;
    assert_eq!(reader.lookup("carol").await.unwrap(), carol_bindings, "on n1 and n3");
    assert_eq!(reader.lookup("dave").await.unwrap(), dave_bindings, "on n1 and n3");
    let _ = dave.reconnect().await;
    assert_eq!(receive_texts(&mut dave, 40).await, expected(0..40));
}

#[tokio::test(flavor = "multi_thread")]
async fn with_two_of_three_down_writes_are_refused_retryably_and_resume() {
    let _watchdog = common::init();
    let mut c = common::three_replicated().await;
    let (mut alice, mut bob, _carol) = group(&c).await;
    send_acked(&mut alice, "message 0").await;
    c.kill("n1");
    c.kill("n3");
    // Alice enters through n2, which alone is no majority.
    let req = alice.prepare_text("G", "message 1").unwrap();
    let t = Instant::now();
    let r = alice.send_request(req.clone()).await;
    match r {
        Err(mlsd_client::ClientError::Server(WireError::Cluster(
            ClusterError::ShardUnavailable { .. },
        ))) => {}
        other => panic!("a write without a majority: {other:?}"),
    }
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "refused within the timeouts: {:?}",
        t.elapsed()
    );
    // One node back: a majority again, and the same request goes through.
    c.start("n3").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match alice.send_request(req.clone()).await {
            Ok(Response::Ids(IdsResponse::Sent { .. })) => break,
            other => {
                assert!(Instant::now() < deadline, "writes did not resume: {other:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let _ = bob.reconnect().await;
    assert_eq!(receive_texts(&mut bob, 2).await, expected(0..2));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partitioned_node_acknowledges_nothing_and_the_majority_carries_on() {
    let _watchdog = common::init();
    let c = common::three_replicated().await;
    let (mut alice, mut bob, mut carol) = group(&c).await;
    // Dave enters through n1, the node that gets cut off.
    let mut dave = c.registered("dave/phone", "n1", 3).await;
    alice.add_members("G", &["dave"]).await.unwrap();
    for m in [&mut bob, &mut carol, &mut dave] {
        m.receive().await.unwrap();
    }
    let epoch = alice.group_epoch("G").unwrap();
    send_acked(&mut alice, "message 0").await;

    let cut = c.isolate("n1");
    // The minority side: a send, a fetch and a commit through n1 are all
    // refused (retryably), since n1 can reach no majority of any shard, even
    // of the shards it led a moment ago.
    // Each is told `ShardUnavailable` (not a timeout, not any error) within
    // the call timeout and the client's own 8 s of retries.
    fn unavailable<T>(r: &Result<T, mlsd_client::ClientError>) -> bool {
        matches!(
            r,
            Err(mlsd_client::ClientError::Server(WireError::Cluster(
                ClusterError::ShardUnavailable { .. }
            )))
        )
    }
    let minority = dave.prepare_text("G", "from the minority").unwrap();
    let t = Instant::now();
    let r = dave.send_request(minority).await;
    assert!(unavailable(&r), "the minority's answer to a send: {r:?}");
    assert!(t.elapsed() < Duration::from_secs(15), "refused in {:?}", t.elapsed());
    let t = Instant::now();
    let r = dave.receive().await;
    assert!(unavailable(&r), "the minority's answer to a fetch: {r:?}");
    assert!(t.elapsed() < Duration::from_secs(15), "refused in {:?}", t.elapsed());
    // The majority side: sends and a commit for the current epoch go through.
    for i in 1..10 {
        send_acked(&mut alice, &format!("message {i}")).await;
    }
    assert_eq!(alice.self_update("G").await.unwrap(), epoch + 1);
    // Dave commits for that same epoch through n1 while the partition lasts
    // and for a while after it heals: his commit must not be accepted next
    // to Alice's. His client learns the epoch is taken, processes Alice's
    // commit and commits again, one epoch later.
    let healed = async {
        tokio::time::sleep(Duration::from_secs(6)).await;
        drop(cut);
        Instant::now()
    };
    let committed = async {
        let r = dave.self_update("G").await;
        (r, Instant::now())
    };
    let (healed_at, (r, committed_at)) = tokio::join!(healed, committed);
    assert_eq!(r.unwrap(), epoch + 2, "dave's commit lands after alice's, not beside it");
    assert!(committed_at > healed_at, "a commit was acknowledged through the minority");

    // Every acknowledged message arrives exactly once, and the refused one
    // never does; then everyone agrees on the epoch and the members.
    assert_eq!(receive_texts(&mut dave, 10).await, expected(0..10));
    send_acked(&mut dave, "message 10").await;
    assert_eq!(receive_texts(&mut bob, 11).await, expected(0..11));
    assert_eq!(receive_texts(&mut carol, 11).await, expected(0..11));
    assert_eq!(receive_texts(&mut alice, 1).await, expected(10..11));
    for m in [&alice, &bob, &carol] {
        assert_eq!(m.group_epoch("G").unwrap(), epoch + 2);
        assert_eq!(m.group_members("G").unwrap(), dave.group_members("G").unwrap());
    }
    c.wait_healthy(Duration::from_secs(60)).await;
}

/// The replication issue's reproduction: all three stopped, n1's and n2's
/// data dirs deleted, n1 and n2 started alone. Before, they elected each
/// other over empty shards, and a stranger registered `alice/phone` afresh.
/// Now they wait for a majority of replicas that hold data: nothing is
/// served, and the registration is refused retryably. When n3 returns,
/// every binding and every queued copy is there.
#[tokio::test(flavor = "multi_thread")]
async fn two_wiped_nodes_alone_serve_nothing_and_the_third_brings_everything_back() {
    let _watchdog = common::init();
    let mut c = common::three_replicated().await;
    let (mut alice, mut bob) = c.alice_and_bob_in_g("n3", 3).await;
    // Queued for bob, unread.
    for i in 0..5 {
        send_acked(&mut alice, &format!("message {i}")).await;
    }
    let bindings = alice.lookup("alice").await.unwrap();
    assert_eq!(bindings.len(), 1);

    for n in ["n1", "n2", "n3"] {
        c.kill(n);
    }
    for n in ["n1", "n2"] {
        std::fs::remove_dir_all(c.dir.path().join(format!("data/{n}"))).unwrap();
    }
    // What n1 logs from its empty restart on (the log file is appended to).
    let before = c.log("n1").len();
    c.start("n1").await;
    c.start("n2").await;
    let mut stranger = c.client("stranger", "n1").await;
    let t = Instant::now();
    match stranger.register("alice/phone", None).await {
        Err(mlsd_client::ClientError::Server(WireError::Cluster(
            ClusterError::ShardUnavailable { shard },
        ))) => assert!(shard.starts_with("as/"), "{shard}"),
        other => panic!("a registration on two empty replicas: {other:?}"),
    }
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "refused within the client's retry: {:?}",
        t.elapsed()
    );
    let (healthy, status) = c.status();
    assert!(!healthy, "two empty replicas must not form shards:\n{status}");
    let since = c.log("n1")[before..].to_string();
    assert!(since.contains("rebuilding replicas"), "{since}");
    // The status says why: the cluster map's group waits for its voters
    // on both, and a node that started empty opens no other replica before
    // it has the cluster's map.
    let waiting = "rebuilding: waiting for a majority of the other voters";
    for n in ["n1", "n2"] {
        let lines =
            status.lines().filter(|l| l.trim_start().starts_with(&format!("{n} {waiting}")));
        assert_eq!(lines.count(), 1, "{n}'s cluster group waits:\n{status}");
    }
    assert!(status.contains("no node has a cluster map yet"), "{status}");

    c.start("n3").await;
    let status = c.wait_healthy(Duration::from_secs(60)).await;
    assert!(status.contains("healthy"), "{status}");
    let reader = c.client("alice/phone", "n1").await;
    assert_eq!(reader.lookup("alice").await.unwrap(), bindings, "alice's binding as it was");
    assert_eq!(reader.lookup("bob").await.unwrap().len(), 1);
    let _ = bob.reconnect().await;
    assert_eq!(receive_texts(&mut bob, 5).await, expected(0..5));
}

/// `mlsd cluster recover` on node `n` of `c`, with `args`.
fn recover(c: &Cluster, n: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(common::bin("mlsd"))
        .args(["cluster", "recover", "--node", n, "--config"])
        .arg(&c.config)
        .args(args)
        .output()
        .unwrap()
}

/// Two of three nodes are gone for good, disks and all: every shard has lost
/// its majority and n1 alone can elect no leader. The operator's unsafe
/// recovery on the stopped n1 refuses without `--accept-data-loss` (and
/// changes nothing); with it, n1 becomes every shard's only voter, leads
/// them all, and serves everything it held: the bindings (no stranger takes
/// alice), bob's queued messages, and new sends.
#[tokio::test(flavor = "multi_thread")]
async fn unsafe_recovery_lets_the_surviving_replica_serve_alone() {
    let _watchdog = common::init();
    let mut c = common::three_replicated().await;
    let (mut alice, mut bob) = c.alice_and_bob_in_g("n1", 3).await;
    for i in 0..5 {
        send_acked(&mut alice, &format!("message {i}")).await;
    }
    let bindings = alice.lookup("alice").await.unwrap();
    // Every entry is on n1 before the others go (the leaders' commits need
    // only a majority, and n1 may have been the one behind).
    c.wait_healthy(Duration::from_secs(30)).await;
    for n in ["n2", "n3"] {
        c.kill(n);
        std::fs::remove_dir_all(c.dir.path().join(format!("data/{n}"))).unwrap();
    }
    c.kill("n1");
    let n1_dir = c.dir.path().join("data/n1");
    let before = mlsd_actors::storage::read_all(&n1_dir).unwrap();

    let out = recover(&c, "n1", &["--shard", "all"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("UNSAFE RECOVERY of 21 shard(s) on n1"), "{err}");
    assert!(err.contains("refused: nothing changed; pass --accept-data-loss"), "{err}");
    let out = recover(&c, "n1", &["--shard", "ods/9", "--accept-data-loss"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown shard \"ods/9\""));
    let out = recover(&c, "n1", &["--shard", "all", "--keep", "n1,n4", "--accept-data-loss"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("n4 is not a voter of shard"));
    assert!(mlsd_actors::storage::read_all(&n1_dir).unwrap() == before, "refusals changed n1");

    let out = recover(&c, "n1", &["--shard", "all", "--accept-data-loss"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let recovered: Vec<&str> = text.lines().filter(|l| l.starts_with("recovered ")).collect();
    // Every shard, and the cluster map's own group.
    assert_eq!(recovered.len(), 21, "{text}");
    assert!(recovered.iter().all(|l| l.contains(": voters n1 from term ")), "{text}");

    c.start("n1").await;
    let status = c.wait_healthy(Duration::from_secs(30)).await;
    let shards: Vec<&str> = status.lines().filter(|l| l.contains("voters=")).collect();
    assert_eq!(shards.len(), 21, "{status}");
    assert!(shards.iter().all(|l| l.contains("voters=n1 ") && l.contains("leader=n1")), "{status}");
    let dropped = status.lines().filter(|l| l.contains("dropped by an unsafe recovery:")).count();
    assert_eq!(dropped, 42, "n2 and n3 of every shard:\n{status}");
    assert!(
        status.contains("21 with voters dropped by an unsafe recovery; 0 moves pending; healthy"),
        "{status}"
    );

    let mut stranger = c.client("stranger", "n1").await;
    assert_eq!(
        common::server_err(stranger.register("alice/phone", None).await),
        WireError::As(mlsd_transport::protocol::AsError::ClientTaken("alice/phone".into()))
    );
    let reader = c.client("alice/phone", "n1").await;
    assert_eq!(reader.lookup("alice").await.unwrap(), bindings, "alice's binding as it was");
    let _ = bob.reconnect().await;
    let _ = alice.reconnect().await;
    assert_eq!(receive_texts(&mut bob, 5).await, expected(0..5));
    send_acked(&mut alice, "message 5").await;
    assert_eq!(receive_texts(&mut bob, 1).await, expected(5..6));
}
