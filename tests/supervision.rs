//! Supervision: a killed role actor is restarted by the node supervisor and
//! the next request succeeds. The node runs in this process so the test can
//! reach its actors through the ractor registry, as a chaos tool does.

mod common;

use std::time::Duration;

use mlsd_actors::RoleMsg;
use mlsd_client::Connection;
use mlsd_node::{ClusterConfig, Node};
use mlsd_transport::Role;
use ractor::ActorRef;

#[tokio::test(flavor = "multi_thread")]
async fn killed_role_actor_is_restarted_and_serves_again() {
    let _watchdog = common::init();
    let dir = tempfile::tempdir().unwrap();
    let text = "[cluster]\nname = \"t\"\ncerts_dir = \"certs\"\n[[node]]\nname = \"sup1\"\nlisten = \"127.0.0.1:0\"\nroles = [\"as\", \"cs\", \"ids\", \"ods\", \"sds\"]\ndata_dir = \"data\"\n";
    let cfg = ClusterConfig::parse(text, dir.path()).unwrap();
    let node = Node::start(cfg, None).await.unwrap();
    let conn = Connection::connect(node.addr(), &dir.path().join("certs/ca.pem")).await.unwrap();
    assert_eq!(conn.ping(Role::Ids, b"g").await.unwrap().0, "sup1");

    // The host of the IDS shard that key "g" belongs to (the default four
    // shards per role).
    let index = mlsd_actors::replica::ShardId::of(Role::Ids, b"g", 4).index;
    let name = mlsd_actors::role::shard_actor_name("sup1", Role::Ids, index);
    for round in 0..3 {
        let before = ActorRef::<RoleMsg>::where_is(name.clone()).expect("ids actor");
        before.kill();
        // Once the killed actor is gone (a request already in its mailbox
        // when it dies is answered `Unavailable`: it may have had an effect),
        // the next request waits for the restarted actor rather than failing.
        let gone = tokio::time::Instant::now() + Duration::from_secs(5);
        while ActorRef::<RoleMsg>::where_is(name.clone())
            .is_some_and(|a| a.get_id() == before.get_id())
        {
            assert!(tokio::time::Instant::now() < gone, "round {round}: the killed actor stays");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (who, _) =
            conn.ping(Role::Ids, b"g").await.unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(who, "sup1");
        let after = ActorRef::<RoleMsg>::where_is(name.clone()).expect("restarted");
        assert_ne!(before.get_id(), after.get_id(), "a new actor serves");
    }
    // Other roles were untouched.
    assert_eq!(conn.ping(Role::Ods, b"m").await.unwrap().0, "sup1");
    tokio::time::timeout(Duration::from_secs(10), node.shutdown()).await.unwrap();
}
