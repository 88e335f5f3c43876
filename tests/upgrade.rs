//! Upgrades: the current mlsd started on data dirs older mlsds wrote
//! (tests/fixtures/layout0-3.tar.gz: tests/fixtures/one_node.sh run with
//! old binaries of layouts 0, 1 and 2, tests/fixtures/layout3.sh with the
//! first of layout 3), and on
//! records it cannot read (issue: "delivery defects", 3: a record that fails
//! to decode must not crash-loop the role and stop the node).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::Cluster;
use mlsd_actors::RocksStore;
use mlsd_roles::{Batch, Space, Store};
use mlsd_transport::Role;

/// `tests/fixtures/<name>.tar.gz`, written with old binaries by the script
/// the module's header names.
fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/{name}.tar.gz"))
}

/// Runs `mlsc` through n1 with the home `homes/<who>` of the unpacked fixture.
fn mlsc(c: &Cluster, who: &str, args: &[&str]) -> Output {
    mlsc_via(c, "n1", who, args)
}

/// Runs `mlsc` through `via` with the home `homes/<who>` of the unpacked fixture.
fn mlsc_via(c: &Cluster, via: &str, who: &str, args: &[&str]) -> Output {
    let home = c.dir.path().join("homes").join(who);
    let as_key = c.dir.path().join("certs/as.pub");
    let mut full = vec!["--home", home.to_str().unwrap(), "--as-key", as_key.to_str().unwrap()];
    full.extend_from_slice(args);
    c.mlsc(via, &full)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Writes `value` under `key` in `space` of the (stopped) node's storage.
fn plant(c: &Cluster, space: Space, key: &[u8], value: &[u8]) {
    let store = RocksStore::open(&c.dir.path().join("data/n1"), true).unwrap();
    let mut b = Batch::new();
    b.put(space, key.to_vec(), value.to_vec());
    store.write(b).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_current_binary_serves_a_data_dir_of_the_older_layout() {
    let _watchdog = common::init();
    let mut c = Cluster::unpack(&fixture("layout0"), "n1", &Role::ALL);
    // A torn record among the old ones: carol's AS binding.
    plant(&c, Space::Role(Role::As), b"b/carol/phone", &[0xde, 0xad]);
    c.start("n1").await;
    let log = c.log("n1");
    assert!(
        log.contains("storage layout upgraded") && log.contains("set_aside=1"),
        "the node says what it converted: {log}"
    );

    // What waited for bob under the old layout arrives once, in order.
    let out = mlsc(&c, "bob", &["recv"]);
    assert!(out.status.success(), "bob recv: {}", text(&out.stderr));
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0], "g alice/phone: written by layout 0 (1)");
    assert_eq!(lines[1], "g alice/phone: written by layout 0 (2)");
    assert!(lines[2].contains("file saved"), "{lines:?}");
    let saved = std::fs::read(c.dir.path().join("homes/bob/files/attachment.bin")).unwrap();
    assert_eq!(saved, std::fs::read(c.dir.path().join("homes/attachment.bin")).unwrap());

    // Old groups, bindings and KeyPackages keep working both ways.
    let out = mlsc(&c, "bob", &["send", "g", "after the upgrade"]);
    assert!(out.status.success(), "bob send: {}", text(&out.stderr));
    let out = mlsc(&c, "alice", &["recv"]);
    assert_eq!(text(&out.stdout).trim(), "g bob/phone: after the upgrade", "{}", text(&out.stderr));
    let out = mlsc(&c, "alice", &["lookup", "bob"]);
    assert!(text(&out.stdout).contains("bob/phone"), "{}", text(&out.stdout));

    // The unreadable binding is refused by name, never taken for absent: a
    // stranger cannot register carol/phone afresh.
    let out = mlsc(&c, "stranger", &["register", "carol/phone"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("unreadable"), "{}", text(&out.stderr));
    let out = mlsc(&c, "alice", &["lookup", "carol"]);
    assert!(!text(&out.stdout).contains("carol/phone"), "{}", text(&out.stdout));

    // A record torn after the upgrade: group h's. Sends to h are refused;
    // more of them than the supervisor's restart budget (10 in 30 s) must
    // not stop the node, and g keeps working.
    let h = {
        let alice = c.client("alice", "n1").await;
        alice.group_id("h").unwrap()
    };
    c.kill("n1");
    // Upgraded data lives under its shard's prefix (shard 0 of 1).
    let mut key = [0u8, 0].to_vec();
    key.extend_from_slice(b"g/");
    key.extend_from_slice(&h);
    plant(&c, Space::Role(Role::Ids), &key, &[1, 0xff, 0xff]);
    let before = c.log("n1").len();
    c.start("n1").await;
    let since = |c: &Cluster| c.log("n1")[before..].to_string();
    assert!(!since(&c).contains("storage layout upgraded"), "converted once only");
    // (carol is in h, and her binding is the torn one: alice's mlsc refuses
    // h for that alone unless told to send anyway.)
    let out = mlsc(&c, "alice", &["send", "h", "to carol"]);
    assert!(text(&out.stderr).contains("carol/phone (no valid binding"), "{}", text(&out.stderr));
    for i in 0..12 {
        let text_i = format!("to a torn group {i}");
        let out = mlsc(&c, "alice", &["send", "h", &text_i, "--allow-unverified"]);
        assert!(
            text(&out.stderr).contains("unreadable"),
            "send {i} to h: {} {}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
    let out = mlsc(&c, "alice", &["send", "g", "g still works"]);
    assert!(out.status.success(), "alice send g: {}", text(&out.stderr));
    let out = mlsc(&c, "bob", &["recv"]);
    assert_eq!(text(&out.stdout).trim(), "g alice/phone: g still works", "{}", c.log("n1"));
    assert!(!since(&c).contains("died"), "no role actor died: {}", since(&c));

    // A data dir of a newer layout is refused before anything is served.
    c.kill("n1");
    plant(&c, Space::Meta, b"layout", &9u32.to_be_bytes());
    let out = Command::new(common::bin("mlsd"))
        .args(["run", "--node", "n1", "--config"])
        .arg(&c.config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("newer than this mlsd"), "{}", text(&out.stderr));
}

/// What every older fixture's script left behind is served as before:
/// the two messages and the file waiting for bob (read through `via[2]`)
/// and the message waiting for carol (`via[0]`), both groups both ways,
/// a KeyPackage published before, and bob/phone not takeable.
fn old_data_is_served(c: &Cluster, layout: u32, via: [&str; 3]) {
    let out = mlsc_via(c, via[2], "bob", &["recv"]);
    assert!(out.status.success(), "bob recv: {}", text(&out.stderr));
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0], format!("g alice/phone: written by layout {layout} (1)"));
    assert_eq!(lines[1], format!("g alice/phone: written by layout {layout} (2)"));
    assert!(lines[2].contains("file saved"), "{lines:?}");
    let saved = std::fs::read(c.dir.path().join("homes/bob/files/attachment.bin")).unwrap();
    assert_eq!(saved, std::fs::read(c.dir.path().join("homes/attachment.bin")).unwrap());
    let out = mlsc_via(c, via[0], "carol", &["recv"]);
    let expected = format!("h alice/phone: to carol under layout {layout}");
    assert_eq!(text(&out.stdout).trim(), expected, "{}", text(&out.stderr));

    let out = mlsc_via(c, via[1], "bob", &["send", "g", "after the upgrade"]);
    assert!(out.status.success(), "bob send: {}", text(&out.stderr));
    let out = mlsc_via(c, via[2], "alice", &["recv"]);
    assert_eq!(text(&out.stdout).trim(), "g bob/phone: after the upgrade", "{}", text(&out.stderr));
    let out = mlsc_via(c, via[1], "carol", &["send", "h", "carol after the upgrade"]);
    assert!(out.status.success(), "carol send: {}", text(&out.stderr));
    let out = mlsc_via(c, via[0], "alice", &["recv"]);
    assert_eq!(text(&out.stdout).trim(), "h carol/phone: carol after the upgrade");
    let out = mlsc_via(c, via[1], "alice", &["group", "create", "new"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = mlsc_via(c, via[2], "alice", &["group", "add", "new", "carol"]);
    assert!(out.status.success(), "a KeyPackage published before: {}", text(&out.stderr));

    let out = mlsc_via(c, via[2], "stranger", &["register", "bob/phone"]);
    assert!(!out.status.success(), "a stranger took bob/phone: {}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("client id bob/phone is bound to another key"),
        "{}",
        text(&out.stderr)
    );
}

/// alice's second device, registered under the old binary, still awaits
/// her approval.
fn the_pending_device_still_waits(c: &Cluster, via: &str) {
    let out = mlsc_via(c, via, "alice", &["device", "list"]);
    assert!(text(&out.stdout).contains("alice/laptop awaits approval"), "{}", text(&out.stdout));
}

/// A one-node data dir of an older layout from before sharding: started as
/// a sharded cluster it is refused before serving and (compared where the
/// test's reader can open it: layout 1 has no `raft` column family yet)
/// changes nothing; with one shard per role it is converted once and served.
async fn unsharded_fixture_is_upgraded(name: &str) -> Cluster {
    let comparable = name != "layout1";
    let mut c = Cluster::unpack(&fixture(name), "n1", &Role::ALL);
    let sharded = c.dir.path().join("sharded.toml");
    let config = std::fs::read_to_string(&c.config).unwrap();
    std::fs::write(&sharded, config.replace("shards = 1", "shards = 4")).unwrap();
    let data = c.dir.path().join("data/n1");
    let before = comparable.then(|| common::settled(&data));
    let out = Command::new(common::bin("mlsd"))
        .args(["run", "--node", "n1", "--config"])
        .arg(&sharded)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("written before sharding"), "{}", text(&out.stderr));
    if let Some(before) = before {
        assert!(common::settled(&data) == before, "the refused start changed the data dir");
    }

    c.start("n1").await;
    let log = c.log("n1");
    assert!(log.contains("storage layout upgraded"), "the node says it converted: {log}");
    c
}

/// The last layout before delivery capabilities (1: versioned records),
/// written by the last mlsd of it (tests/fixtures/one_node.sh): its
/// mailboxes get their legacy capability, its data moves under shard 0.
#[tokio::test(flavor = "multi_thread")]
async fn the_current_binary_serves_a_layout_1_data_dir() {
    let _watchdog = common::init();
    let c = unsharded_fixture_is_upgraded("layout1").await;
    old_data_is_served(&c, 1, ["n1"; 3]);
}

/// The last layout before replicated shards (2: delivery capabilities,
/// quota tickets, device consent), written by the last mlsd of it
/// (tests/fixtures/one_node.sh): its data moves under shard 0.
#[tokio::test(flavor = "multi_thread")]
async fn the_current_binary_serves_a_layout_2_data_dir() {
    let _watchdog = common::init();
    let c = unsharded_fixture_is_upgraded("layout2").await;
    old_data_is_served(&c, 2, ["n1"; 3]);
    the_pending_device_still_waits(&c, "n1");
}

/// Replicated shards as the first mlsd of layout 3 wrote them
/// (tests/fixtures/layout3.sh, commit 16a7043): three nodes, three replicas
/// of four shards per role, snapshots taken. The current binary starts on
/// all three, every shard elects a leader and catches up, nothing is
/// converted, and everything the old cluster held is served through other
/// nodes than wrote it.
#[tokio::test(flavor = "multi_thread")]
async fn the_current_binary_serves_a_replicated_cluster_of_the_first_layout_3() {
    let _watchdog = common::init();
    let all: &[Role] = &Role::ALL;
    let nodes = [("n1", all), ("n2", all), ("n3", all)];
    let mut c = Cluster::unpack_nodes(&fixture("layout3"), &nodes, "");
    c.start_all().await;
    c.wait_healthy(std::time::Duration::from_secs(60)).await;
    for (n, _) in nodes {
        assert!(!c.log(n).contains("storage layout upgraded"), "nothing to convert on {n}");
    }
    old_data_is_served(&c, 3, ["n1", "n2", "n3"]);
    the_pending_device_still_waits(&c, "n2");
}
