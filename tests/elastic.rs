//! The elastic cluster (issue: "Elastic cluster: nodes join and leave a
//! running cluster"), on real `mlsd` processes over QUIC: the cluster map
//! is cluster state, so a node's file changing moves no ownership.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::traffic::Traffic;
use common::{server_err, Cluster};
use mlsd_client::blob;
use mlsd_node::shards::map::ClusterMap;
use mlsd_roles::record;
use mlsd_transport::protocol::tickets::TicketKind;
use mlsd_transport::protocol::{
    AsError, AuthError, ClusterError, Join, NodeRequest, NodeResponse, ReplicationRequest,
};
use mlsd_transport::{Response, Role, WireError};

const USERS: usize = 10;
/// Identities of the join test, as the first test has them.
const SCALE_USERS: usize = 50;

fn user(i: usize) -> String {
    format!("user{i}")
}

/// Every one of the users is found with one valid binding through `via`,
/// and a stranger's registration of any of their client ids is refused.
async fn owned_through(c: &Cluster, via: &str) {
    owned_of(c, via, USERS).await
}

/// [`owned_through`] for the first `users` users.
async fn owned_of(c: &Cluster, via: &str, users: usize) {
    let looker = c.client("looker", via).await;
    for i in 0..users {
        let found = looker.lookup(&user(i)).await.unwrap();
        assert_eq!(found.len(), 1, "{} through {via}: {found:?}", user(i));
        assert!(found[0].1.is_ok(), "{} through {via}: {found:?}", user(i));
        let mut stranger = c.client(&format!("stranger-{via}-{i}"), via).await;
        let id = format!("{}/phone", user(i));
        assert!(
            matches!(
                server_err(stranger.register(&id, None).await),
                WireError::As(AsError::ClientTaken(_))
            ),
            "{id} through {via}"
        );
    }
}

/// The reproduction: two nodes, ten identities, one replica per
/// shard; the operator adds n3 to cluster.toml and restarts all three.
/// Before the map, n3 took the shards the new file gave it and served them
/// empty: 6 of 10 identities unknown, and a stranger could register them.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_added_to_the_file_and_everyone_restarted_takes_nothing_over() {
    let _watchdog = common::init();
    let mut c = Cluster::new(&[("n1", &Role::ALL), ("n2", &Role::ALL)]);
    c.start_all().await;
    c.wait_healthy(Duration::from_secs(30)).await;
    for i in 0..USERS {
        c.registered(&format!("{}/phone", user(i)), ["n1", "n2"][i % 2], 1).await;
    }
    owned_through(&c, "n1").await;

    c.add_to_file("n3", &Role::ALL);
    c.certs();
    c.restart_all().await;
    owned_through(&c, "n1").await;
    owned_through(&c, "n2").await;
}

/// Sends `join` to each node in turn, authenticated as `as_node`, until
/// one answers other than `NotLeader`: the cluster group leader's answer.
async fn join_at_leader(c: &Cluster, as_node: &str, join: Join) -> Response {
    for _ in 0..50 {
        for to in ["n1", "n2", "n3"] {
            let req = NodeRequest::Replication(ReplicationRequest::Join(join.clone()));
            match c.node_call(as_node, to, req).await {
                Response::Error(WireError::Cluster(
                    ClusterError::NotLeader { .. } | ClusterError::ShardUnavailable { .. },
                )) => continue,
                other => return other,
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no node led the cluster group");
}

/// Adding a node to a running cluster: only its own host starts it, from
/// a file with its own block and one member's to contact (`mlsd certs`
/// makes its certificate from the cluster CA); it asks a
/// member to join and becomes a member of the map every node holds; the
/// shards' leaders then move replicas to it, a few at a time, until each
/// node holds as many as any other. Nobody else is restarted. Meanwhile
/// (50 identities, groups of 3, 5 and 10 members sending in turn) every
/// lookup succeeds and every message sent is acknowledged; after, each
/// member read each message of its group exactly once, in order, and no
/// existing identity can be taken. A
/// node may join only under the name its certificate gives, and not at
/// another member's address.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_joins_a_running_cluster_and_takes_its_share_of_the_shards() {
    let _watchdog = common::init();
    let mut c = common::three_replicated().await;
    // 50 identities; the first 18 in groups of 3, 5 and 10 sending all along.
    let mut members = Vec::new();
    for i in 0..SCALE_USERS {
        let client =
            c.registered(&format!("{}/phone", user(i)), ["n1", "n2", "n3"][i % 3], 1).await;
        if i < 18 {
            members.push((user(i), client));
        }
    }
    let mut traffic = Traffic::new(&[3, 5, 10], members).await;
    c.add_to_file("n4", &Role::ALL);
    c.certs();

    let n4 = Join { node: "n4".into(), listen: c.addr("n4"), roles: Role::ALL.to_vec() };
    let as_n5 = Join { node: "n5".into(), ..n4.clone() };
    assert!(
        matches!(
            join_at_leader(&c, "n4", as_n5).await,
            Response::Error(WireError::Auth(AuthError::NotAuthorized(_)))
        ),
        "n4's certificate does not make it n5"
    );
    assert!(
        matches!(
            join_at_leader(&c, "operator", n4.clone()).await,
            Response::Error(WireError::Auth(AuthError::NotAuthorized(_)))
        ),
        "the operator's certificate is not a node's"
    );
    let at_n1 = Join { listen: c.addr("n1"), ..n4.clone() };
    assert!(
        matches!(
            join_at_leader(&c, "n4", at_n1).await,
            Response::Error(WireError::Cluster(ClusterError::MembershipRefused(_)))
        ),
        "n1's address is n1's"
    );
    let (_, before) = c.status();
    assert!(!before.contains("node n4"), "nothing refused changed the map:\n{before}");

    // Lookups through n1 all along, and the groups sending.
    let lookups = Lookups::start(&c, "n1", SCALE_USERS).await;
    // n4's host has a file of its own: its block and n1's to contact.
    let own = c.own_file("n4", &["n1"]);
    let text = std::fs::read_to_string(&own).unwrap();
    assert!(text.contains("name = \"n1\"") && !text.contains("name = \"n2\""), "{text}");
    c.start_from("n4", &own).await;
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        traffic.round().await;
        let (healthy, out) = c.status();
        if healthy && out.contains("node n4 ") {
            break out;
        }
        assert!(Instant::now() < deadline, "no even spread within 180 s:\n{out}\n{}", c.log("n4"));
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    lookups.all_found().await;
    // 4 shards x 3 replicas of each role over 4 nodes: 3 each.
    spread_as(&status, &["n1", "n2", "n3", "n4"], "replicas as=3 cs=3 ids=3 ods=3 sds=3");
    assert!(c.log("n4").contains("the cluster admitted this node"), "{}", c.log("n4"));

    assert!(traffic.sent() > 0);
    traffic.all_read_once().await;
    for via in ["n4", "n1", "n2", "n3"] {
        owned_of(&c, via, SCALE_USERS).await;
    }
}

/// Lookups of the first `users` identities through one node, one every
/// 100 ms (within the per-connection request rate), until stopped.
struct Lookups {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(usize, Vec<String>)>,
}

impl Lookups {
    async fn start(c: &Cluster, via: &str, users: usize) -> Lookups {
        let stop = Arc::new(AtomicBool::new(false));
        let looker = c.client(&format!("looker-{via}"), via).await;
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let (mut done, mut failed) = (0usize, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    let who = user(done % users);
                    match looker.lookup(&who).await {
                        Ok(found) if found.len() == 1 && found[0].1.is_ok() => {}
                        other => failed.push(format!("{who}: {other:?}")),
                    }
                    done += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                (done, failed)
            }
        });
        Lookups { stop, task }
    }

    /// Stops them; every one found its identity with one valid binding.
    async fn all_found(self) {
        self.stop.store(true, Ordering::Relaxed);
        let (looked, failed) = self.task.await.unwrap();
        assert!(failed.is_empty(), "{} of {looked} lookups failed: {failed:?}", failed.len());
        assert!(looked > 0);
    }
}

/// [`common::three_replicated`] with the users registered (spread over the
/// three nodes) and alice and bob, entering through n2, in group G.
async fn three_with_users() -> (Cluster, mlsd_client::Client, mlsd_client::Client) {
    let c = common::three_replicated().await;
    for i in 0..USERS {
        c.registered(&format!("{}/phone", user(i)), ["n1", "n2", "n3"][i % 3], 1).await;
    }
    let (alice, bob) = c.alice_and_bob_in_g("n2", 3).await;
    (c, alice, bob)
}

/// Reads `c`'s messages until `want` arrived (or 30 s passed).
async fn read_all(c: &mut mlsd_client::Client, want: &[String]) -> Vec<String> {
    let mut got = Vec::new();
    let read_by = Instant::now() + Duration::from_secs(30);
    while got.len() < want.len() && Instant::now() < read_by {
        match c.receive().await {
            Ok(events) => got.extend(common::texts(&events)),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    got
}

/// Sends messages through `alice` while `op` (an operator command) runs
/// on a thread of its own; the command's output and what was sent.
async fn sending_while(
    alice: &mut mlsd_client::Client,
    from: usize,
    op: impl FnOnce() -> std::process::Output + Send + 'static,
) -> (std::process::Output, Vec<String>) {
    let running = std::thread::spawn(op);
    let mut sent = Vec::new();
    while !running.is_finished() {
        let text = format!("message {}", from + sent.len());
        common::sent_within_patience(alice, "G", &text).await;
        sent.push(text);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    (running.join().unwrap(), sent)
}

/// Each listed node's status line holds `replicas` of every role.
fn spread_as(status: &str, nodes: &[&str], replicas: &str) {
    for n in nodes {
        let line = status.lines().find(|l| l.starts_with(&format!("node {n} "))).unwrap();
        assert!(line.contains(replicas), "{n}: {replicas}\n{status}");
    }
}

/// Taking nodes out: `mlsd cluster remove n1` drains a live node (its
/// replicas move to the others first, then it leaves the map and its
/// process exits by itself); `mlsd cluster remove n2 --dead`, after n2
/// was SIGKILLed for good, rebuilds its replicas on the survivors. Messages
/// are sent all along and read exactly once; every identity stays found
/// and cannot be taken.
#[tokio::test(flavor = "multi_thread")]
async fn a_drained_node_leaves_and_a_dead_one_is_replaced_from_the_survivors() {
    let _watchdog = common::init();
    let all: &[Role] = &Role::ALL;
    let mut c = Cluster::configured(
        &[("n1", all), ("n2", all), ("n3", all), ("n4", all)],
        common::REPLICATED,
        "[limits]\ncall_timeout_ms = 3000\nconnect_timeout_ms = 1000\n",
    );
    c.start_all().await;
    c.wait_healthy(Duration::from_secs(60)).await;
    for i in 0..USERS {
        c.registered(&format!("{}/phone", user(i)), ["n3", "n4"][i % 2], 1).await;
    }
    let (mut alice, mut bob) = c.alice_and_bob_in_g("n3", 3).await;

    let refused = c.remove("n9", &[]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("n9 is not a member"));

    // Lookups through n3 (which stays) during the drain and the removal.
    let lookups = Lookups::start(&c, "n3", USERS).await;
    let led_by_n1 = common::leaders::leaders(&c).values().filter(|l| *l == "n1").count();
    let log_before = c.log("n1").len();
    let config = c.config.clone();
    let (out, mut sent) = sending_while(&mut alice, 0, move || {
        std::process::Command::new(common::bin("mlsd"))
            .args(["cluster", "remove", "n1", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    })
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("n1 removed"));
    let exit = c.wait_exit("n1", Duration::from_secs(30)).await;
    assert!(exit.success(), "n1 exits by itself, cleanly: {exit:?}");
    // Each shard n1 led when its drain began was handed to a voter that
    // stays (by leader balancing, which passes over a leaving member, or by
    // the move itself), rather than left to wait out an election timeout.
    let drained_log = &c.log("n1")[log_before..];
    let handed =
        drained_log.matches("handing the shard over before moving its replica away").count()
            + drained_log.matches("handing the leadership over to its preferred voter").count()
            + drained_log.matches("handing the cluster group over").count();
    assert!(handed >= led_by_n1, "n1 led {led_by_n1} shards, handed {handed} over:\n{drained_log}");
    let status = c.wait_healthy(Duration::from_secs(60)).await;
    assert!(!status.contains("node n1 "), "{status}");
    // 4 shards x 3 replicas of each role over 3 nodes: 4 each.
    spread_as(&status, &["n2", "n3", "n4"], "replicas as=4 cs=4 ids=4 ods=4 sds=4");
    for via in ["n2", "n3", "n4"] {
        owned_through(&c, via).await;
    }

    c.kill("n2");
    let config = c.config.clone();
    let (out, more) = sending_while(&mut alice, sent.len(), move || {
        std::process::Command::new(common::bin("mlsd"))
            .args(["cluster", "remove", "n2", "--dead", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    })
    .await;
    sent.extend(more);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    lookups.all_found().await;
    let status = c.wait_healthy(Duration::from_secs(60)).await;
    assert!(!status.contains("node n2 "), "{status}");
    // Two nodes left: each holds every shard.
    spread_as(&status, &["n3", "n4"], "replicas as=4 cs=4 ids=4 ods=4 sds=4");
    for via in ["n3", "n4"] {
        owned_through(&c, via).await;
    }
    assert_eq!(read_all(&mut bob, &sent).await, sent, "every message, once, in order");
}

/// The cluster's map as `via` holds it (asked with the operator's
/// certificate).
async fn map_at(c: &Cluster, via: &str) -> Option<ClusterMap> {
    let req = NodeRequest::Replication(ReplicationRequest::ClusterMap);
    match c.operator_call(via, req).await {
        Response::Node(NodeResponse::ClusterMap(Some(b))) => record::decode(&b).ok(),
        _ => None,
    }
}

/// A move interrupted twice: the node receiving a shard is SIGKILLed while
/// the move is under way (catching up by snapshot), then, once it is back,
/// the node that leads a shard being moved (the one sending it). Each comes
/// back; the moves complete, every acknowledged message is read once and
/// every identity is still found and cannot be taken.
#[tokio::test(flavor = "multi_thread")]
async fn a_move_survives_the_death_of_the_node_receiving_and_of_the_node_sending() {
    let _watchdog = common::init();
    let (mut c, mut alice, mut bob) = three_with_users().await;
    let mut sent = Vec::new();
    for i in 0..30 {
        let text = format!("message {i}");
        common::sent_within_patience(&mut alice, "G", &text).await;
        sent.push(text);
    }
    c.add_to_file("n4", &Role::ALL);
    c.certs();
    c.start("n4").await;

    // The first move under way: kill the node it adds.
    let under_way = |m: &ClusterMap| m.moving.values().next().cloned();
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        if let Some(m) = map_at(&c, "n1").await.as_ref().and_then(under_way) {
            break m;
        }
        assert!(Instant::now() < deadline, "no move began:\n{}", c.log("n4"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(first.add.as_deref(), Some("n4"), "{first}");
    c.kill("n4");
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.start("n4").await;

    // The next move under way: kill the leader of its shard.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (shard, sender) = loop {
        let moving = map_at(&c, "n1").await.and_then(|m| under_way(&m));
        let leaders = common::leaders::leaders(&c);
        if let Some((m, l)) = moving.and_then(|m| {
            let l = leaders.get(&m.shard.to_string())?.clone();
            Some((m, l))
        }) {
            // Not n2 either: alice and bob enter through it.
            if l != "n4" && l != "n2" {
                break (m.shard, l);
            }
        }
        assert!(Instant::now() < deadline, "no second move began:\n{}", c.status().1);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("killing {sender}, which leads {shard} as it moves");
    c.kill(&sender);
    for i in 30..35 {
        let text = format!("message {i}");
        common::sent_within_patience(&mut alice, "G", &text).await;
        sent.push(text);
    }
    c.start(&sender).await;

    let status = c.wait_healthy(Duration::from_secs(180)).await;
    spread_as(&status, &["n1", "n2", "n3", "n4"], "replicas as=3 cs=3 ids=3 ods=3 sds=3");
    for i in 35..40 {
        let text = format!("message {i}");
        common::sent_within_patience(&mut alice, "G", &text).await;
        sent.push(text);
    }
    assert_eq!(read_all(&mut bob, &sent).await, sent, "every message, once, in order");
    for via in ["n4", "n1", "n2", "n3"] {
        owned_through(&c, via).await;
    }
}

/// A node that dies for good while a move to it is under way: the move
/// waits for it; `mlsd cluster remove n4 --dead` then gives the move up
/// (the shard keeps its voters, the learner is dropped) and the cluster is
/// whole again on the three nodes it had, nothing lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_move_to_a_node_that_dies_for_good_is_given_up_when_the_node_is_removed() {
    let _watchdog = common::init();
    let (mut c, mut alice, mut bob) = three_with_users().await;
    c.add_to_file("n4", &Role::ALL);
    c.certs();
    c.start("n4").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let map = map_at(&c, "n1").await;
        if map.is_some_and(|m| m.moving.values().any(|m| m.add.as_deref() == Some("n4"))) {
            break;
        }
        assert!(Instant::now() < deadline, "no move to n4 began:\n{}", c.log("n4"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.kill("n4");
    let config = c.config.clone();
    let (out, sent) = sending_while(&mut alice, 0, move || {
        std::process::Command::new(common::bin("mlsd"))
            .args(["cluster", "remove", "n4", "--dead", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    })
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status = c.wait_healthy(Duration::from_secs(60)).await;
    assert!(!status.contains("node n4 "), "{status}");
    spread_as(&status, &["n1", "n2", "n3"], "replicas as=4 cs=4 ids=4 ods=4 sds=4");
    let logs: String = ["n1", "n2", "n3"].iter().map(|n| c.log(n)).collect();
    assert!(logs.contains("replica move given up"), "the learner was dropped, not left behind");
    assert_eq!(read_all(&mut bob, &sent).await, sent, "every message, once, in order");
    for via in ["n1", "n2", "n3"] {
        owned_through(&c, via).await;
    }
}

/// A node that stops hosting a role (its `roles` line changed, then
/// restarted) hands that role's replicas over to the members that host
/// it; its other roles stay. Blobs stored before are all still read.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_that_drops_a_role_hands_that_roles_replicas_over() {
    let _watchdog = common::init();
    let mut c = Cluster::configured(
        &[("n1", &Role::ALL), ("n2", &Role::ALL), ("n3", &Role::ALL), ("n4", &Role::ALL)],
        common::REPLICATED,
        "",
    );
    c.start_all().await;
    c.wait_healthy(Duration::from_secs(60)).await;
    let conn = mlsd_client::Connection::connect(c.addr("n1"), &c.ca()).await.unwrap();
    let blobs: Vec<([u8; 32], Vec<u8>)> =
        (0..8u8).map(|i| ([i; 32], vec![i; 1000 + i as usize])).collect();
    let tickets = c.tickets(TicketKind::Blob, blobs.len()).await;
    for ((id, data), t) in blobs.iter().zip(tickets) {
        blob::put(&conn, *id, [9; 32], data, vec![t]).await.unwrap();
    }

    let without_sds: Vec<Role> = Role::ALL.into_iter().filter(|r| *r != Role::Sds).collect();
    c.set_roles("n4", &without_sds);
    c.kill("n4");
    c.start("n4").await;
    // Healthy once the cluster took n4's new roles and moved its SDS
    // replicas away (a status taken before n4 said so is healthy too).
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        let (healthy, out) = c.status();
        if healthy && out.contains("roles=as,cs,ids,ods ") {
            break out;
        }
        assert!(Instant::now() < deadline, "SDS not handed over:\n{out}\n{}", c.log("n4"));
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let n4 = status.lines().find(|l| l.starts_with("node n4 ")).unwrap();
    assert!(!n4.contains("sds="), "n4 holds no SDS replica:\n{status}");
    // 4 SDS shards x 3 replicas over n1..n3: 4 each; the rest 3 each.
    spread_as(&status, &["n1", "n2", "n3"], "sds=4");
    spread_as(&status, &["n1", "n2", "n3", "n4"], "as=3 cs=3 ids=3 ods=3");
    for via in ["n4", "n1"] {
        let conn = mlsd_client::Connection::connect(c.addr(via), &c.ca()).await.unwrap();
        for (id, data) in &blobs {
            assert_eq!(&blob::get(&conn, *id, 10_000).await.unwrap(), data, "through {via}");
        }
    }
}
