//! Mailboxes whose backlog is far larger than one frame (a member offline for
//! a day): `recv` and `listen` read every envelope exactly once, in order,
//! over as many byte-bounded pages as needed, on one node and through a node
//! that forwards to the mailbox's ODS owner (issue: "a mailbox whose backlog
//! exceeds one frame can never be read again").

mod common;

use mlsd_transport::protocol::{ClusterError, OdsRequest};
use std::time::Duration;

use common::{texts, Cluster};
use mlsd_client::Client;
use mlsd_transport::Role;

/// The backlogs of the reproduction: count x message size. 40 KB and 60 KB
/// texts are sealed into 64 KiB envelopes, 4 KB ones into 8 KiB: each
/// backlog is well over the 1 MiB frame limit.
const BACKLOGS: [(usize, usize); 3] = [(30, 40_000), (300, 4_000), (20, 60_000)];

fn text(round: usize, i: usize, size: usize) -> String {
    let head = format!("{round}:{i}:");
    format!("{head}{}", "x".repeat(size - head.len()))
}

/// Two nodes: clients enter at n1, every mailbox lives on n2, so each page
/// crosses both legs (owner -> entry node -> client).
fn forwarding() -> Cluster {
    Cluster::new(&[("n1", &[Role::As, Role::Cs, Role::Ids, Role::Sds]), ("n2", &[Role::Ods])])
}

/// Alice sends each backlog to G while Bob does not read; Bob then reads it
/// all with one `receive`.
async fn every_backlog_is_received(alice: &mut Client, bob: &mut Client) {
    for (round, (n, size)) in BACKLOGS.into_iter().enumerate() {
        let sent: Vec<String> = (0..n).map(|i| text(round, i, size)).collect();
        for t in &sent {
            alice.send_text("G", t).await.unwrap();
        }
        let got = texts(&bob.receive().await.unwrap());
        assert_eq!(got.len(), n, "{n} x {size}: every message once");
        assert!(got == sent, "{n} x {size}: in order");
        assert!(texts(&bob.receive().await.unwrap()).is_empty(), "nothing twice");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn large_backlogs_are_read_in_pages_on_one_node() {
    let _watchdog = common::init();
    let mut c = Cluster::new(&[("n1", &Role::ALL)]);
    c.start_all().await;
    let (mut alice, mut bob) = c.alice_and_bob_in_g("n1", 5).await;
    every_backlog_is_received(&mut alice, &mut bob).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn large_backlogs_are_read_in_pages_through_a_forwarding_node() {
    let _watchdog = common::init();
    let mut c = forwarding();
    c.start_all().await;
    let (mut alice, mut bob) = c.alice_and_bob_in_g("n1", 5).await;
    every_backlog_is_received(&mut alice, &mut bob).await;
}

/// `listen` (subscribe, then fetch what the subscription announces) with a
/// backlog of 30 x 40 KB waiting, through a forwarding node; then the same
/// amount live while subscribed, and the `mlsc recv` of the reproduction.
#[tokio::test(flavor = "multi_thread")]
async fn listen_and_mlsc_recv_read_large_backlogs() {
    let _watchdog = common::init();
    let mut c = forwarding();
    c.start_all().await;
    let (mut alice, mut bob) = c.alice_and_bob_in_g("n1", 5).await;
    let (n, size) = BACKLOGS[0];
    let backlog: Vec<String> = (0..n).map(|i| text(0, i, size)).collect();
    for t in &backlog {
        alice.send_text("G", t).await.unwrap();
    }
    // The subscription's first frame holds a page of the backlog, not all of it.
    let (mut sub, first) = bob.subscribe().await.unwrap();
    assert!(first > 0 && first < n, "first page holds {first} of {n}");
    assert_eq!(texts(&bob.receive().await.unwrap()), backlog);

    // Live: each new envelope is pushed, and fetching after each push reads
    // it once.
    let live: Vec<String> = (0..n).map(|i| text(1, i, size)).collect();
    let sender = tokio::spawn(async move {
        for t in &live {
            alice.send_text("G", t).await.unwrap();
        }
        (alice, live)
    });
    let mut got = Vec::new();
    while got.len() < n {
        let pushed = tokio::time::timeout(Duration::from_secs(30), sub.next()).await;
        assert!(matches!(pushed, Ok(Ok(ref v)) if !v.is_empty()), "push: {pushed:?}");
        got.extend(texts(&bob.receive().await.unwrap()));
    }
    sub.close();
    let (mut alice, live) = sender.await.unwrap();
    assert_eq!(got, live);

    // The reproduction with the CLI: Bob offline while 30 x 40 KB arrive,
    // then `mlsc recv` prints every one of them once, in order.
    let again: Vec<String> = (0..n).map(|i| text(2, i, size)).collect();
    for t in &again {
        alice.send_text("G", t).await.unwrap();
    }
    drop(bob);
    let home = c.dir.path().join("homes/bob/phone");
    let as_key = c.dir.path().join("certs/as.pub");
    let out = c.mlsc(
        "n1",
        &["--home", home.to_str().unwrap(), "--as-key", as_key.to_str().unwrap(), "recv"],
    );
    assert!(out.status.success(), "mlsc recv: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let printed: Vec<&str> =
        stdout.lines().filter_map(|l| l.split_once(": ").map(|(_, t)| t)).collect();
    assert_eq!(printed, again.iter().map(String::as_str).collect::<Vec<_>>());
}

/// A `Subscribe` forwarded to a node that does not lead the mailbox's
/// shard is refused there, never forwarded a second time.
#[tokio::test(flavor = "multi_thread")]
async fn a_forwarded_subscription_is_not_forwarded_again() {
    use mlsd_transport::protocol::{MailboxAuth, NodeRequest};
    use mlsd_transport::{Request, Response, WireError};
    let _watchdog = common::init();
    let mut c = forwarding();
    c.start_all().await;
    let auth = MailboxAuth { mailbox: [9; 32], counter: 1, signature: vec![0; 64] };
    let req = NodeRequest::Forward(Request::Ods(OdsRequest::Subscribe { auth, after: 0 }));
    let r = c.node_call("n2", "n1", req).await;
    // n1 does not replicate the mailbox's ODS shard: it names the leader it
    // knows of (n2, the shard's one voter) instead of forwarding.
    assert!(
        matches!(
            &r,
            Response::Error(WireError::Cluster(ClusterError::NotLeader { leader: Some(l), .. }))
                if l == "n2"
        ),
        "{r:?}"
    );
}
