//! The elastic cluster (issue: "Elastic cluster: nodes join and leave a
//! running cluster"), on real `mlsd` processes over QUIC: the cluster map
//! is cluster state, so a node's file changing moves no ownership.

mod common;

use std::time::{Duration, Instant};

use common::{server_err, Cluster};
use mlsd_transport::protocol::{
    AsError, AuthError, ClusterError, Join, NodeRequest, ReplicationRequest,
};
use mlsd_transport::{Response, Role, WireError};

const USERS: usize = 10;

fn user(i: usize) -> String {
    format!("user{i}")
}

/// Every one of the users is found with one valid binding through `via`,
/// and a stranger's registration of any of their client ids is refused.
async fn owned_through(c: &Cluster, via: &str) {
    let looker = c.client("looker", via).await;
    for i in 0..USERS {
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

/// Adding a node to a running cluster: only its own host starts it
/// (`mlsd certs` makes its certificate from the cluster CA); it asks a
/// member to join, becomes a member of the map every node holds, and
/// serves every identity through the map. Nobody else is restarted. A
/// node may join only under the name its certificate gives, and not at
/// another member's address.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_joins_a_running_cluster_and_serves_by_the_cluster_s_map() {
    let _watchdog = common::init();
    let mut c = common::three_replicated().await;
    for i in 0..USERS {
        c.registered(&format!("{}/phone", user(i)), ["n1", "n2", "n3"][i % 3], 1).await;
    }
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

    c.start("n4").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, out) = c.status();
        if out.contains("node n4 ") {
            // A member now, holding no replica until shards move to it.
            assert!(out.contains("replicas none"), "{out}");
            break;
        }
        assert!(Instant::now() < deadline, "n4 never became a member:\n{out}\n{}", c.log("n4"));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    owned_through(&c, "n4").await;
    owned_through(&c, "n1").await;
    assert!(c.log("n4").contains("the cluster admitted this node"), "{}", c.log("n4"));
}
