//! Members a client never fetched itself (issue: "delivery defects", 4): a
//! member can add, in a commit the IDS cannot look into, a device that claims
//! any client id with a key the AS never bound. Every other member checks
//! each member it learns (by commit or by Welcome) against the AS, shows the
//! failures, and refuses to send to the group until they are removed.

mod common;

use common::{texts, Cluster};
use mlsd_client::group::{capabilities, mailbox_extension, Event};
use mlsd_client::members::MemberStatus;
use mlsd_client::{Client, ClientError, CIPHERSUITE};
use mlsd_transport::protocol::RosterMode;
use mlsd_transport::Role;
use openmls::prelude::{BasicCredential, CredentialWithKey, KeyPackage};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;

/// A KeyPackage claiming `client`, signed by a fresh key the AS never saw,
/// delivering to `via`'s mailbox: what a modified client can make.
async fn forged(client: &str, via: &mut Client) -> KeyPackage {
    let cap = via.new_caps(1).await.unwrap().pop().unwrap();
    let provider = OpenMlsRustCrypto::default();
    let signer = SignatureKeyPair::new(CIPHERSUITE.signature_algorithm()).unwrap();
    let cwk = CredentialWithKey {
        credential: BasicCredential::new(client.as_bytes().to_vec()).into(),
        signature_key: signer.public().into(),
    };
    let mailbox = via.mailbox_keys().unwrap().reference(cap);
    KeyPackage::builder()
        .leaf_node_capabilities(capabilities())
        .leaf_node_extensions(mailbox_extension(&mailbox).unwrap())
        .build(CIPHERSUITE, &provider, &signer, cwk)
        .unwrap()
        .key_package()
        .clone()
}

/// The members `events` report unverified in group `g`, with why.
fn unverified(events: &[Event], g: &str) -> Vec<(String, String)> {
    let mut out: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Unverified { group, member, reason } if group == g => {
                Some((member.clone(), reason.clone()))
            }
            _ => None,
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_the_as_never_bound_is_caught_by_every_other_member() {
    let _watchdog = common::init();
    let mut c = Cluster::new(&[("n1", &Role::ALL)]);
    c.start_all().await;
    let mut alice = c.registered("alice/phone", "n1", 3).await;
    let mut bob = c.registered("bob/phone", "n1", 3).await;
    let mut carol = c.registered("carol/phone", "n1", 3).await;
    let mut dave = c.registered("dave/phone", "n1", 3).await;
    let mut mallory = c.registered("mallory/phone", "n1", 3).await;
    alice.create_group("G", RosterMode::Stored).await.unwrap();
    alice.add_members("G", &["bob", "carol"]).await.unwrap();
    bob.receive().await.unwrap();
    carol.receive().await.unwrap();
    alice.send_text("G", "before").await.unwrap();

    // Bob, with a modified client, adds "alice/evil" (no binding at all) and
    // a second "mallory/phone" whose key is not mallory's bound one; both
    // deliver to mallory's mailbox. The IDS accepts the commit as any other.
    let evil = forged("alice/evil", &mut mallory).await;
    let twin = forged("mallory/phone", &mut mallory).await;
    bob.add_unverified_key_packages("G", vec![evil, twin]).await.unwrap();

    let expected = |events: &[Event]| {
        let found = unverified(events, "G");
        assert_eq!(found.len(), 2, "{events:?}");
        assert_eq!(found[0].0, "alice/evil");
        assert!(found[0].1.contains("no valid binding"), "{found:?}");
        assert_eq!(found[1].0, "mallory/phone");
        assert!(found[1].1.contains("not the one the AS bound"), "{found:?}");
    };
    // Members who process the commit...
    expected(&alice.receive().await.unwrap());
    expected(&carol.receive().await.unwrap());
    // ...and one who joins later by a Welcome, with the group as it is.
    bob.add_members("G", &["dave"]).await.unwrap();
    let dave_events = dave.receive().await.unwrap();
    expected(&dave_events);
    assert!(dave_events.iter().any(|e| matches!(e, Event::Joined { .. })));

    // They see who, and refuse to send to the group.
    let status = alice.member_status("G").unwrap();
    assert!(status.contains(&("bob/phone".into(), MemberStatus::Verified)), "{status:?}");
    assert!(status
        .iter()
        .any(|(m, s)| m == "alice/evil" && matches!(s, MemberStatus::Unverified(_))));
    match alice.send_text("G", "secret").await {
        Err(ClientError::UnverifiedMembers { group, members }) => {
            assert_eq!(group, "G");
            assert!(members.iter().any(|m| m.starts_with("alice/evil")), "{members:?}");
            assert!(members.iter().any(|m| m.starts_with("mallory/phone")), "{members:?}");
        }
        other => panic!("a send to a group with unverified members: {other:?}"),
    }
    // mlsc says so too, in words (carol's device, through the CLI).
    drop(carol);
    let home = c.dir.path().join("homes/carol/phone");
    let as_key = c.dir.path().join("certs/as.pub");
    let base = ["--home", home.to_str().unwrap(), "--as-key", as_key.to_str().unwrap()];
    let out = c.mlsc("n1", &[&base[..], &["send", "G", "secret"]].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("not sent: G has members the AS does not vouch for: alice/evil"), "{err}");
    let out = c.mlsc("n1", &[&base[..], &["group", "members", "G"]].concat());
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("alice/evil UNVERIFIED: no valid binding for alice/evil"), "{listed}");
    assert!(listed.lines().any(|l| l == "bob/phone"), "{listed}");

    // Removing them (a commit, which is allowed) makes the group sendable.
    alice.remove_members("G", &["alice/evil", "mallory"]).await.unwrap();
    assert!(alice
        .member_status("G")
        .unwrap()
        .iter()
        .all(|(_, s)| matches!(s, MemberStatus::Me | MemberStatus::Verified)));
    alice.send_text("G", "after removal").await.unwrap();
    assert_eq!(texts(&bob.receive().await.unwrap()), ["before", "after removal"]);
    assert_eq!(texts(&dave.receive().await.unwrap()), ["after removal"]);
}
