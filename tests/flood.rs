//! Nobody fills a mailbox without a delivery capability its owner handed
//! out (decision D10): a stranger's flood of 10,000 copies at a victim is
//! refused at the ODS before anything is stored, while the victim's real
//! groups keep delivering; the one capability a stranger can get (a
//! fetched KeyPackage's) stops working once the owner revokes it.

mod common;

use common::{mailbox_ref_in, settled, unissued_cap, Cluster};
use mlsd_transport::envelope::MailboxRef;
use mlsd_transport::protocol::{
    CsRequest, CsResponse, DeliveryCap, IdsResponse, RosterEntry, RosterMode, Undeliverable,
};
use mlsd_transport::{Request, Response, Role};

/// Copies in the flood.
const FLOOD: usize = 10_000;

/// The mailbox reference in the first KeyPackage of `identity` the CS hands
/// to `via`: what any stranger can get.
async fn fetched_reference(via: &mlsd_client::Client, identity: &str) -> MailboxRef {
    let req = Request::Cs(CsRequest::FetchKeyPackages { identity: identity.into() });
    let Ok(Response::Cs(CsResponse::KeyPackages(kps))) = via.paid_request(req).await else {
        panic!("no KeyPackage of {identity}")
    };
    mailbox_ref_in(&kps[0].key_package)
}

/// Only the ODS's keys and values: what a flood at a mailbox would change.
fn ods_contents(dir: &std::path::Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    settled(dir).into_iter().filter(|(k, _)| k.0 == "ods").map(|(k, v)| (k.1, v)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_from_a_stranger_stores_nothing_and_real_groups_keep_delivering() {
    let _watchdog = common::init();
    // A debug build fans 10,000 copies out in more than the default 5 s a
    // local call may take.
    let mut c = Cluster::with_extra(&[("n1", &Role::ALL)], "[limits]\ncall_timeout_ms = 120000\n");
    c.start_all().await;
    let mut alice = c.registered("alice/phone", "n1", 2).await;
    let mut bob = c.registered("bob/phone", "n1", 2).await;
    let mut mallory = c.registered("mallory/phone", "n1", 1).await;
    bob.create_group("G", RosterMode::Stored).await.unwrap();
    bob.add_members("G", &["alice"]).await.unwrap();
    alice.receive().await.unwrap();

    // Mallory fetches one of alice's KeyPackages, as anyone may, and so
    // holds a live capability of alice's mailbox: a copy through it is
    // stored (it would carry the Welcome).
    let from_kp = fetched_reference(&mallory, "alice").await.cap;
    mallory.create_group("M", RosterMode::Client).await.unwrap();
    let one = vec![RosterEntry { cap: from_kp.clone(), key: rand::random() }];
    let spam = common::to_roster(mallory.prepare_text("M", "spam").unwrap(), &one);
    assert_eq!(
        mallory.send_request(spam).await.unwrap(),
        Response::Ids(IdsResponse::Sent { copies: 1 })
    );
    // Alice sees which capability it came with and revokes that one; from
    // then on it is worth no more than a guessed one.
    let keys = alice.mailbox_keys().unwrap();
    let mut counter = mlsd_client::mailbox::Counter::default();
    let got = mlsd_client::mailbox::fetch(alice.connection(), keys, &mut counter, keys.acked, 10)
        .await
        .unwrap();
    let via = got.last().unwrap().via;
    assert!(alice.capabilities().unwrap().contains(&(via, from_kp.token)));
    assert_eq!(alice.revoke_serials(&[via]).await.unwrap(), 1);
    let mut roster = vec![RosterEntry { cap: from_kp.clone(), key: rand::random() }];
    while roster.len() < FLOOD {
        // Guessed tokens, routed to alice's shard.
        let cap = DeliveryCap { shard: from_kp.shard, ..unissued_cap() };
        roster.push(RosterEntry { cap, key: rand::random() });
    }

    let data = c.dir.path().join("data/n1");
    let before = ods_contents(&data);
    let flood = common::to_roster(mallory.prepare_text("M", "spam").unwrap(), &roster);
    let started = std::time::Instant::now();
    let answer = mallory.send_request(flood).await.unwrap();
    eprintln!("the flood's {FLOOD} copies were refused in {:?}", started.elapsed());
    match answer {
        Response::Ids(IdsResponse::PartlySent { copies, failed, undelivered }) => {
            assert_eq!((copies as usize, failed as usize), (FLOOD, FLOOD));
            assert!(undelivered.iter().all(|u| u.reason == Undeliverable::NoCapability));
        }
        other => panic!("expected every copy refused, got {other:?}"),
    }
    assert!(ods_contents(&data) == before, "the flood changed the ODS's storage");

    // Alice's real group still reaches her, and nothing else does.
    bob.send_text("G", "still here").await.unwrap();
    let events = alice.receive().await.unwrap();
    assert_eq!(common::texts(&events), vec!["still here".to_string()]);
}
