//! Fan-out budgets (issue "abuse resistance"): one `Send` may ask for up to
//! 20,000 copies, each a synced ODS write, so copies are budgeted per group
//! (at the group's IDS owner) and per sending address (where it enters).
//! A send over budget is refused `RateLimited` with the time to wait, before
//! anything is stored; it goes through once the budget has refilled.
//! Before, nothing bounded how fast a client could make copies.

mod common;

use std::time::Duration;

use common::{server_err, settled, to_roster, Cluster};
use mlsd_transport::protocol::{ClusterError, IdsResponse, RosterEntry, RosterMode};
use mlsd_transport::{Response, Role, WireError};

/// 15 recipients whose mailboxes the ODS does not know: each copy is made
/// (sealed, handed to the ODS) and counted, none stored.
fn roster() -> Vec<RosterEntry> {
    (0..15).map(|_| RosterEntry { cap: common::unissued_cap(), key: rand::random() }).collect()
}

fn copies(r: &Response) -> u32 {
    match r {
        Response::Ids(IdsResponse::PartlySent { copies, .. })
        | Response::Ids(IdsResponse::Sent { copies }) => *copies,
        other => panic!("not sent: {other:?}"),
    }
}

fn retry_after(e: WireError) -> u64 {
    match e {
        WireError::Cluster(ClusterError::RateLimited { retry_after_ms }) => retry_after_ms,
        other => panic!("not rate limited: {other:?}"),
    }
}

// The budgets below are 1 copy a second against sends of 15 copies: one
// send leaves a debt of 14 copies (15 s until the next may start), so the refusal that follows cannot be flipped
// by a slow machine taking a second or two between requests (at 20 a second
// it was, when more than half a second passed).

#[tokio::test(flavor = "multi_thread")]
async fn a_group_over_its_copy_budget_is_refused_until_it_refills() {
    let _watchdog = common::init();
    let mut c = Cluster::with_extra(&[("n1", &Role::ALL)], "[ids]\ngroup_copies_per_second = 1\n");
    c.start_all().await;
    let mut s = c.registered("sender/phone", "n1", 1).await;
    s.create_group("G", RosterMode::Client).await.unwrap();
    let roster = roster();
    // A full budget admits the send and goes 14 copies into debt.
    let req = to_roster(s.prepare_text("G", "one").unwrap(), &roster);
    assert_eq!(copies(&s.connection().request(req).await.unwrap()), 15);
    let second = to_roster(s.prepare_text("G", "two").unwrap(), &roster);
    let data = c.dir.path().join("data/n1");
    let before = settled(&data);
    let wait = retry_after(server_err(s.connection().request(second.clone()).await));
    assert!((5_000..=15_000).contains(&wait), "{wait}");
    assert!(settled(&data) == before, "a refused send changed storage");
    // Another group has a budget of its own.
    s.create_group("H", RosterMode::Client).await.unwrap();
    let other = to_roster(s.prepare_text("H", "elsewhere").unwrap(), &roster);
    let other = s.connection().request(other).await;
    assert_eq!(copies(&other.unwrap()), 15);
    tokio::time::sleep(Duration::from_millis(wait)).await;
    assert_eq!(copies(&s.connection().request(second).await.unwrap()), 15);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sending_address_over_its_copy_budget_is_refused_in_every_group() {
    let _watchdog = common::init();
    let mut c = Cluster::with_extra(&[("n1", &Role::ALL)], "[ids]\nsender_copies_per_second = 1\n");
    c.start_all().await;
    let mut s = c.registered("sender/phone", "n1", 1).await;
    let roster = roster();
    s.create_group("A", RosterMode::Client).await.unwrap();
    let req = to_roster(s.prepare_text("A", "hi").unwrap(), &roster);
    assert_eq!(copies(&s.connection().request(req).await.unwrap()), 15);
    // A fresh group does not help: the budget is the sender's.
    s.create_group("C", RosterMode::Client).await.unwrap();
    let second = to_roster(s.prepare_text("C", "hi").unwrap(), &roster);
    let data = c.dir.path().join("data/n1");
    let before = settled(&data);
    let wait = retry_after(server_err(s.connection().request(second.clone()).await));
    assert!((5_000..=15_000).contains(&wait), "{wait}");
    assert!(settled(&data) == before, "a refused send changed storage");
    tokio::time::sleep(Duration::from_millis(wait)).await;
    assert_eq!(copies(&s.connection().request(second).await.unwrap()), 15);
}

/// Groups and blobs need no identity, so what one address may create is
/// bounded where it enters: groups per minute, blob bytes per minute.
#[tokio::test(flavor = "multi_thread")]
async fn group_creation_and_blob_bytes_are_bounded_per_address() {
    use mlsd_transport::protocol::SdsRequest;
    use mlsd_transport::Request;
    let _watchdog = common::init();
    let extra = "[ids]\ncreate_rate_per_minute = 2\n[sds]\nupload_bytes_per_minute = 100000\n";
    let mut c = Cluster::with_extra(&[("n1", &Role::ALL)], extra);
    c.start_all().await;
    let mut s = c.registered("sender/phone", "n1", 1).await;
    s.create_group("A", RosterMode::Client).await.unwrap();
    s.create_group("B", RosterMode::Client).await.unwrap();
    let data = c.dir.path().join("data/n1");
    let before = settled(&data);
    retry_after(server_err(s.create_group("C", RosterMode::Client).await));
    assert!(settled(&data) == before, "a refused group creation changed storage");

    // 60 KB goes in, the next 60 KB chunk too (the budget may go into
    // debt by one chunk), the third is refused.
    let put = |offset: u64| {
        Request::Sds(SdsRequest::PutBlob {
            id: [7; 32],
            cap: [8; 32],
            offset,
            total: 180_000,
            data: vec![1; 60_000],
        })
    };
    s.paid_request(put(0)).await.unwrap();
    s.paid_request(put(60_000)).await.unwrap();
    let before = settled(&data);
    retry_after(server_err(s.paid_request(put(120_000)).await));
    assert!(settled(&data) == before, "a refused upload changed storage");
}
