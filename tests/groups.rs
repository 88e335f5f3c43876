//! Steps 5-7 over a three-node cluster (AS/CS on n1, IDS on n2, ODS on n3):
//! groups, ordered commits, anonymized fan-out into mailboxes.

mod common;

use std::collections::HashMap;

use common::Cluster;
use mlsd_client::group::Event;
use mlsd_client::{Client, ClientError};
use mlsd_transport::protocol::RosterMode;
use mlsd_transport::{Role, WireError};

fn split() -> Cluster {
    Cluster::new(&[
        ("n1", &[Role::As, Role::Cs]),
        ("n2", &[Role::Ids]),
        ("n3", &[Role::Ods, Role::Sds]),
    ])
}

fn texts(events: &[Event]) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message { sender, text, .. } => Some((sender.clone(), text.clone())),
            _ => None,
        })
        .collect()
}

async fn abc(c: &Cluster, mode: RosterMode) -> (Client, Client, Client) {
    let mut alice = c.registered("alice/phone", "n1", 3).await;
    let mut bob = c.registered("bob/phone", "n2", 3).await;
    let mut charlie = c.registered("charlie/phone", "n3", 3).await;
    alice.create_group("ABC", mode).await.unwrap();
    assert_eq!(alice.add_members("ABC", &["bob", "charlie"]).await.unwrap(), 1);
    for m in [&mut bob, &mut charlie] {
        let ev = m.receive().await.unwrap();
        assert!(ev.contains(&Event::Joined { group: "ABC".into() }), "{ev:?}");
        assert_eq!(m.group_epoch("ABC").unwrap(), 1);
    }
    (alice, bob, charlie)
}

async fn run_flow(mode: RosterMode) {
    common::init();
    let mut c = split();
    c.start_all().await;
    let (mut alice, mut bob, mut charlie) = abc(&c, mode).await;
    let mut members = alice.group_members("ABC").unwrap();
    members.sort();
    assert_eq!(members, ["alice/phone", "bob/phone", "charlie/phone"]);

    assert_eq!(alice.send_text("ABC", "hi from alice").await.unwrap(), 2);
    bob.send_text("ABC", "hi from bob").await.unwrap();
    charlie.send_text("ABC", "hi from charlie").await.unwrap();
    let mut got: HashMap<&str, Vec<(String, String)>> = HashMap::new();
    for (who, cl) in [("alice", &mut alice), ("bob", &mut bob), ("charlie", &mut charlie)] {
        got.insert(who, texts(&cl.receive().await.unwrap()));
    }
    let m = |s: &str, t: &str| (s.to_string(), t.to_string());
    assert_eq!(
        got["alice"],
        vec![m("bob/phone", "hi from bob"), m("charlie/phone", "hi from charlie")]
    );
    assert_eq!(
        got["bob"],
        vec![m("alice/phone", "hi from alice"), m("charlie/phone", "hi from charlie")]
    );
    assert_eq!(
        got["charlie"],
        vec![m("alice/phone", "hi from alice"), m("bob/phone", "hi from bob")]
    );
    // Nothing twice.
    assert!(texts(&bob.receive().await.unwrap()).is_empty());

    // Charlie is removed: he learns it, then cannot send, and gets nothing new.
    assert_eq!(alice.remove_members("ABC", &["charlie"]).await.unwrap(), 2);
    let ev = charlie.receive().await.unwrap();
    assert!(ev.contains(&Event::Removed { group: "ABC".into() }), "{ev:?}");
    bob.receive().await.unwrap();
    assert_eq!(bob.group_epoch("ABC").unwrap(), 2);
    match charlie.send_text("ABC", "still here?").await {
        Err(ClientError::Server(WireError::BadMac)) | Err(ClientError::Crypto(_)) => {}
        other => panic!("removed member could send: {other:?}"),
    }
    bob.send_text("ABC", "after charlie").await.unwrap();
    assert_eq!(texts(&alice.receive().await.unwrap()), vec![m("bob/phone", "after charlie")]);
    assert!(texts(&charlie.receive().await.unwrap()).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn group_flow_stored_roster() {
    run_flow(RosterMode::Stored).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn group_flow_client_roster() {
    run_flow(RosterMode::Client).await;
}
