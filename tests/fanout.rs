//! A fan-out larger than one enqueue chunk: every copy reaches its own
//! mailbox exactly once, sealed under that recipient's key; a roster naming
//! mailboxes the ODS does not know gets `PartlySent` naming exactly those
//! mailboxes while every other copy is still stored; a retried send stores nothing
//! twice. The copies leave the fan-out in several chunks of different sizes
//! (the first as soon as `ENQUEUE_FIRST` are sealed), so this checks that
//! the answer waits for all of them and counts each once. The same on three
//! nodes, where each chunk is split between two ODS owners over QUIC and the
//! answer must add up both owners' results.

mod common;

use common::to_roster;
use mlsd::inproc::InprocCluster;
use mlsd_actors::ids::fanout::{ENQUEUE_CHUNK, ENQUEUE_FIRST};
use mlsd_client::mailbox::{self, Counter};
use mlsd_client::{Client, ClientConfig, Connection};
use mlsd_transport::envelope;
use mlsd_transport::protocol::{IdsResponse, RosterEntry, RosterMode, Undeliverable};
use mlsd_transport::{Response, Role};

/// Recipients of the test send: several full chunks and a partial one.
const MEMBERS: usize = 2 * ENQUEUE_CHUNK + 3 * ENQUEUE_FIRST + 5;
/// Every this many recipients, one mailbox that was never opened.
const UNKNOWN_EVERY: usize = 37;

/// Limits a test with hundreds of mailbox openings from one address needs;
/// the recipients are bare mailboxes standing for devices, opened without
/// quota tickets (those are tested in authorization.rs).
/// One replica per shard: each ODS node is the only holder of its shards.
const LIMITS: &str = "replicas = 1\n[limits]\nrequests_per_second = 100000\n[ods]\nopen_rate_per_minute = 100000\n[tickets]\nrequired = false\n";

#[tokio::test(flavor = "multi_thread")]
async fn large_fan_outs_store_each_copy_once_and_count_failures_exactly() {
    let all = "\"as\", \"cs\", \"ids\", \"ods\", \"sds\"";
    // Node names are actor names, unique in this process: one set per test.
    large_fan_out(&[("s1", all)]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn large_fan_outs_to_two_ods_owners_store_each_copy_once() {
    let front = "\"as\", \"cs\", \"ids\", \"sds\"";
    large_fan_out(&[("f1", front), ("f2", "\"ods\""), ("f3", "\"ods\"")]).await;
}

/// The scenario of this file on `layout`, entering at its first node.
async fn large_fan_out(layout: &[(&str, &str)]) {
    let _watchdog = common::init();
    let cluster = InprocCluster::start("t", layout, LIMITS).await.unwrap();
    let cfg: ClientConfig = cluster.client_config("sender", 0);
    let mut sender = Client::open(&cfg).await.unwrap();
    sender.register("sender/phone", None).await.unwrap();
    sender.create_group("G", RosterMode::Client).await.unwrap();
    let conn = Connection::connect(cfg.server, &cfg.ca).await.unwrap();

    // Recipients with opened mailboxes and issued capabilities, and a few
    // capabilities the ODS never issued.
    let mut known = Vec::new();
    let mut roster = Vec::new();
    for i in 0..MEMBERS {
        let key: [u8; 32] = rand::random();
        if i % UNKNOWN_EVERY == UNKNOWN_EVERY - 1 {
            roster.push(RosterEntry { cap: common::unissued_cap(), key });
            continue;
        }
        let (keys, cap) = common::mailbox_with_cap(&conn, None).await;
        roster.push(RosterEntry { cap: cap.clone(), key });
        known.push((keys, cap, key));
    }
    let unknown = MEMBERS - known.len();
    assert!(unknown > 0 && known.len() > 2 * ENQUEUE_CHUNK);
    // Every node hosting the ODS owns some of the recipients, so each gets
    // its own share of the copies.
    for ods in cluster.config.nodes.iter().filter(|n| n.hosts(Role::Ods)) {
        let owns = |shard: &[u8; 2]| {
            mlsd_node::routing::owner(&cluster.config, Role::Ods, shard)
                .is_some_and(|o| o.name == ods.name)
        };
        assert!(known.iter().filter(|(_, c, _)| owns(&c.shard)).count() > ENQUEUE_CHUNK / 2);
    }

    let first = to_roster(sender.prepare_text("G", "to everyone").unwrap(), &roster);
    match sender.send_request(first).await {
        Ok(Response::Ids(IdsResponse::PartlySent { copies, failed, undelivered })) => {
            assert_eq!((failed as usize, copies as usize), (unknown, MEMBERS));
            // Exactly the unissued capabilities are named, each once, and why.
            let mut named: Vec<[u8; 32]> = undelivered
                .iter()
                .map(|u| {
                    assert_eq!(u.reason, Undeliverable::NoCapability);
                    u.cap.token
                })
                .collect();
            named.sort();
            named.dedup();
            assert_eq!(named.len(), unknown);
            assert!(named.iter().all(|t| !known.iter().any(|(_, c, _)| c.token == *t)));
        }
        other => panic!("expected PartlySent, got {other:?}"),
    }

    // The same text again to the known recipients only: complete, and a
    // retry of that send (its answer lost, say) stores nothing twice.
    let known_roster: Vec<RosterEntry> =
        roster.iter().filter(|e| known.iter().any(|(_, c, _)| *c == e.cap)).cloned().collect();
    let second = to_roster(sender.prepare_text("G", "to the known").unwrap(), &known_roster);
    for _ in 0..2 {
        match sender.send_request(second.clone()).await.unwrap() {
            Response::Ids(IdsResponse::Sent { copies }) => assert_eq!(copies as usize, known.len()),
            other => panic!("expected Sent, got {other:?}"),
        }
    }

    // Every known mailbox holds exactly two envelopes (one per message), both
    // opening with that recipient's key and no other's.
    for (i, (keys, _, key)) in known.iter().enumerate() {
        let got = mailbox::fetch(&conn, keys, &mut Counter::default(), 0, 10).await.unwrap();
        assert_eq!(got.len(), 2, "mailbox {i}");
        for d in &got {
            assert!(envelope::open(key, &d.envelope).is_ok(), "mailbox {i}");
            assert_eq!(d.via, 1, "came through its one capability");
            let (_, _, other_key) = &known[(i + 1) % known.len()];
            assert!(envelope::open(other_key, &d.envelope).is_err());
        }
    }
    cluster.shutdown().await;
}
