//! Crash durability: nodes are SIGKILLed in the middle of sustained sends and
//! restarted. Every message acknowledged to its sender is delivered exactly
//! once, in order; every KeyPackage handed out stays gone; every binding stays.

mod common;

use std::time::{Duration, Instant};

use common::Cluster;
use mlsd_client::group::Event;
use mlsd_transport::protocol::IdsResponse;
use mlsd_transport::{Response, Role};

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_messages_survive_sigkill_of_ids_and_ods() {
    let _watchdog = common::init();
    let mut c = Cluster::new(&[
        ("n1", &[Role::As, Role::Cs]),
        ("n2", &[Role::Ids]),
        ("n3", &[Role::Ods, Role::Sds]),
    ]);
    c.start_all().await;
    let (mut alice, mut bob) = c.alice_and_bob_in_g("n1", 3).await;

    let total = 30;
    let mut acked = Vec::new();
    let mut failures = 0;
    for i in 0..total {
        // Kill the ODS before message 8 and the IDS before message 18; the
        // first failed attempt brings the node back, as an operator would.
        let victim = match i {
            8 => Some("n3"),
            18 => Some("n2"),
            _ => None,
        };
        if let Some(v) = victim {
            c.kill(v);
        }
        let text = format!("message {i}");
        let req = alice.prepare_text("G", &text).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut restarted = victim.is_none();
        loop {
            // The same request (same message id) until it is acknowledged.
            match alice.send_request(req.clone()).await {
                Ok(Response::Ids(IdsResponse::Sent { .. })) => break,
                other => {
                    failures += 1;
                    assert!(Instant::now() < deadline, "message {i} never acknowledged: {other:?}");
                    if !restarted {
                        c.start(victim.unwrap()).await;
                        restarted = true;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        acked.push(text);
    }
    assert!(failures >= 2, "the outages were felt by the sender");

    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < total && Instant::now() < deadline {
        for e in bob.receive().await.unwrap() {
            if let Event::Message { text, .. } = e {
                got.push(text);
            }
        }
    }
    assert_eq!(got, acked, "every acknowledged message exactly once, in order");
}

#[tokio::test(flavor = "multi_thread")]
async fn handed_out_key_packages_stay_gone_and_bindings_stay_after_sigkill() {
    let _watchdog = common::init();
    let mut c =
        Cluster::new(&[("n1", &[Role::As, Role::Cs]), ("n2", &[Role::Ids, Role::Ods, Role::Sds])]);
    c.start_all().await;
    let carol = c.registered("carol/phone", "n2", 6).await;
    let dave = c.registered("dave/phone", "n2", 1).await;
    let mut taken = Vec::new();
    for _ in 0..4 {
        let (kps, _) = dave.fetch_key_packages("carol").await.unwrap();
        taken.push(
            kps[0].key_package.hash_ref(&openmls_rust_crypto::RustCrypto::default()).unwrap(),
        );
    }
    drop((carol, dave));
    c.kill("n1");
    c.start("n1").await;
    let carol = c.client("carol/phone", "n2").await;
    assert_eq!(carol.count_key_packages().await.unwrap(), (2, true));
    let dave = c.client("dave/phone", "n2").await;
    for _ in 0..2 {
        let (kps, _) = dave.fetch_key_packages("carol").await.unwrap();
        assert!(!kps[0].last_resort);
        let h = kps[0].key_package.hash_ref(&openmls_rust_crypto::RustCrypto::default()).unwrap();
        assert!(!taken.contains(&h), "a KeyPackage was handed out again after the crash");
    }
    let (kps, _) = dave.fetch_key_packages("carol").await.unwrap();
    assert!(kps[0].last_resort);
    let b = carol.lookup("carol").await.unwrap();
    assert_eq!(b.len(), 1);
    assert!(b[0].1.is_ok());
}
