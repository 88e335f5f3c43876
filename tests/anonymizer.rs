//! Key state is dropped: every anonymizer that starts also stops, seals
//! exactly one copy and drops (zeroizes) its key holder; none is left alive
//! after a fan-out. The node runs in this process so the counters in
//! `mlsd_actors::ids::anonymizer` are visible; this file holds one test so no
//! other fan-out runs at the same time.

mod common;

use std::sync::atomic::Ordering::SeqCst;

use mlsd_actors::ids::anonymizer::{SEALED, SPAWNED, STOPPED, ZEROIZED};
use mlsd_client::{Client, ClientConfig};
use mlsd_node::{ClusterConfig, Node};
use mlsd_transport::protocol::RosterMode;

#[tokio::test(flavor = "multi_thread")]
async fn anonymizers_stop_and_zeroize_after_every_fan_out() {
    let _watchdog = common::init();
    let dir = tempfile::tempdir().unwrap();
    let text = "[cluster]\nname = \"t\"\ncerts_dir = \"certs\"\n[[node]]\nname = \"anon1\"\nlisten = \"127.0.0.1:0\"\nroles = [\"as\", \"cs\", \"ids\", \"ods\", \"sds\"]\ndata_dir = \"data\"\n[ids]\nanonymizer_concurrency = 3\n";
    let node = Node::start(ClusterConfig::parse(text, dir.path()).unwrap(), None).await.unwrap();
    let cfg = |home: &str| ClientConfig {
        home: dir.path().join(home),
        server: node.addr(),
        ca: dir.path().join("certs/ca.pem"),
        as_key: dir.path().join("certs/as.pub"),
    };
    let mut clients = Vec::new();
    for i in 0..8 {
        let mut c = Client::open(&cfg(&format!("h{i}"))).await.unwrap();
        c.register(&format!("u{i}/phone"), None).await.unwrap();
        c.publish(2).await.unwrap();
        clients.push(c);
    }
    let before =
        (SPAWNED.load(SeqCst), STOPPED.load(SeqCst), SEALED.load(SeqCst), ZEROIZED.load(SeqCst));
    let (first, rest) = clients.split_first_mut().unwrap();
    first.create_group("G", RosterMode::Stored).await.unwrap();
    let names: Vec<String> = (1..8).map(|i| format!("u{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    first.add_members("G", &refs).await.unwrap(); // commit to nobody else yet, 7 Welcomes
    for c in rest.iter_mut() {
        c.receive().await.unwrap();
    }
    first.send_text("G", "one").await.unwrap(); // 7 copies
    rest[0].send_text("G", "two").await.unwrap(); // 7 copies
    let spawned = SPAWNED.load(SeqCst) - before.0;
    let stopped = STOPPED.load(SeqCst) - before.1;
    let sealed = SEALED.load(SeqCst) - before.2;
    let zeroized = ZEROIZED.load(SeqCst) - before.3;
    // Commit: no other member in epoch 0; Welcomes: 7; two messages: 7 each.
    assert_eq!(sealed, 21);
    assert_eq!(spawned, sealed, "one anonymizer per copy");
    assert_eq!(stopped, spawned, "none left alive");
    assert_eq!(zeroized, 14, "every symmetric key holder dropped (Welcomes hold no secret key)");
    node.shutdown().await;
}
