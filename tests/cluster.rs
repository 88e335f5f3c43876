//! Routing across real `mlsd` processes: roles split over three nodes, every
//! node accepts every request, the same key always reaches the same owner, and
//! a dead owner (the one replica of its shards here) gives `ShardUnavailable`
//! until it is back.

mod common;

use mlsd_transport::protocol::ClusterError;
use std::time::{Duration, Instant};

use common::Cluster;
use mlsd_client::{ClientError, Connection};
use mlsd_node::ClusterConfig;
use mlsd_transport::{Role, WireError};

fn split() -> Cluster {
    Cluster::new(&[
        ("n1", &[Role::As, Role::Cs]),
        ("n2", &[Role::Ids]),
        ("n3", &[Role::Ods, Role::Sds]),
    ])
}

#[tokio::test(flavor = "multi_thread")]
async fn mlsc_ping_reaches_the_owner_whichever_node_it_enters() {
    let _watchdog = common::init();
    let mut c = Cluster::new(&[
        ("n1", &[Role::As, Role::Cs, Role::Ods]),
        ("n2", &[Role::Ids, Role::Ods, Role::As]),
        ("n3", &[Role::Ods, Role::Sds]),
    ]);
    c.start_all().await;
    let cfg = ClusterConfig::load(&c.config).unwrap();
    let mut owners_seen = std::collections::HashSet::new();
    for role in Role::ALL {
        for key in ["alice", "bob", "group-7", "mbx-1", "mbx-2", "mbx-3"] {
            let mut answers = Vec::new();
            for via in ["n1", "n2", "n3"] {
                let out = c.mlsc(via, &["ping", "--role", role.name(), "--key", key]);
                let stdout = String::from_utf8_lossy(&out.stdout).to_string();
                assert!(out.status.success(), "ping {role} {key} via {via}: {out:?}");
                let node = stdout.split_whitespace().next().unwrap().to_string();
                assert!(stdout.trim_end().ends_with("ms"), "round-trip time printed: {stdout}");
                answers.push(node);
            }
            let node = &answers[0];
            assert!(answers.iter().all(|a| a == node), "{role} {key}: {answers:?}");
            let hosting = cfg.nodes.iter().find(|n| &n.name == node).unwrap();
            assert!(hosting.hosts(role), "{node} answered for {role} it does not host");
            if role == Role::Ods {
                owners_seen.insert(node.clone());
            }
        }
    }
    // Three nodes host the ODS: six keys should not all land on one of them.
    assert!(owners_seen.len() > 1, "ODS keys spread over owners: {owners_seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_owner_is_unavailable_within_the_timeout_and_comes_back() {
    let _watchdog = common::init();
    let mut c = split();
    c.start_all().await;
    let conn = Connection::connect(c.addr("n1"), &c.ca()).await.unwrap();
    let (node, _) = conn.ping(Role::Ids, b"g1").await.unwrap();
    assert_eq!(node, "n2");

    c.kill("n2");
    for _ in 0..2 {
        let t = Instant::now();
        let err = conn.ping(Role::Ids, b"g1").await.unwrap_err();
        // n2 holds the only replica of the IDS shards: they have no leader.
        assert!(
            matches!(&err, ClientError::Server(WireError::Cluster(ClusterError::ShardUnavailable { shard })) if shard.starts_with("ids/")),
            "{err:?}"
        );
        // No voter is reachable, so the node answers at once, and the client
        // asks again for `retry::SHARD` (8 s) before it gives up.
        assert!(t.elapsed() < Duration::from_secs(11), "took {:?}", t.elapsed());
    }
    // Roles on live nodes keep working meanwhile.
    assert_eq!(conn.ping(Role::Sds, b"blob").await.unwrap().0, "n3");

    c.start("n2").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match conn.ping(Role::Ids, b"g1").await {
            Ok((node, _)) => {
                assert_eq!(node, "n2");
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "n2 not back: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
