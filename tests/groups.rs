//! Steps 5-7 over a three-node cluster (AS/CS on n1, IDS on n2, ODS on n3):
//! groups, ordered commits, anonymized fan-out into mailboxes.

mod common;

use mlsd_transport::protocol::{
    IdsError, IdsRequest, IdsResponse, NodeResponse, OperatorRequest, RosterMode,
};
use std::collections::HashMap;

use common::Cluster;
use mlsd_client::group::Event;
use mlsd_client::{Client, ClientError};
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
    let _watchdog = common::init();
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

    // A self-update moves everyone to the next epoch, and messages still flow.
    assert_eq!(bob.self_update("ABC").await.unwrap(), 2);
    for cl in [&mut alice, &mut charlie] {
        cl.receive().await.unwrap();
        assert_eq!(cl.group_epoch("ABC").unwrap(), 2);
    }

    // Charlie is removed: he learns it, then cannot send, and gets nothing new.
    assert_eq!(alice.remove_members("ABC", &["charlie"]).await.unwrap(), 3);
    let ev = charlie.receive().await.unwrap();
    assert!(ev.contains(&Event::Removed { group: "ABC".into() }), "{ev:?}");
    bob.receive().await.unwrap();
    assert_eq!(bob.group_epoch("ABC").unwrap(), 3);
    match charlie.send_text("ABC", "still here?").await {
        Err(ClientError::Server(WireError::Ids(IdsError::BadMac)))
        | Err(ClientError::Crypto(_)) => {}
        other => panic!("removed member could send: {other:?}"),
    }
    bob.send_text("ABC", "after charlie").await.unwrap();
    assert_eq!(texts(&alice.receive().await.unwrap()), vec![m("bob/phone", "after charlie")]);
    assert!(texts(&charlie.receive().await.unwrap()).is_empty());

    // Added back, Charlie rejoins the same group under its own name and reads
    // what is sent from then on.
    alice.add_members("ABC", &["charlie"]).await.unwrap();
    let ev = charlie.receive().await.unwrap();
    assert!(ev.contains(&Event::Joined { group: "ABC".into() }), "{ev:?}");
    assert_eq!(charlie.group_names(), ["ABC"]);
    bob.receive().await.unwrap();
    bob.send_text("ABC", "welcome back").await.unwrap();
    assert_eq!(texts(&charlie.receive().await.unwrap()), vec![m("bob/phone", "welcome back")]);
    charlie.send_text("ABC", "back again").await.unwrap();
    assert_eq!(
        texts(&alice.receive().await.unwrap()),
        vec![m("bob/phone", "welcome back"), m("charlie/phone", "back again")]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn group_flow_stored_roster() {
    run_flow(RosterMode::Stored).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn group_flow_client_roster() {
    run_flow(RosterMode::Client).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_commits_one_wins_the_other_lands_next() {
    let _watchdog = common::init();
    let mut c = split();
    c.start_all().await;
    let mut alice = c.registered("alice/phone", "n1", 3).await;
    let mut bob = c.registered("bob/phone", "n2", 3).await;
    let mut charlie = c.registered("charlie/phone", "n3", 3).await;
    let mut dave = c.registered("dave/phone", "n1", 3).await;
    alice.create_group("G", RosterMode::Stored).await.unwrap();
    alice.add_members("G", &["bob"]).await.unwrap();
    bob.receive().await.unwrap();
    assert_eq!(bob.group_epoch("G").unwrap(), 1);

    // Both commit in epoch 1 at once.
    let (a, b) =
        tokio::join!(alice.add_members("G", &["charlie"]), bob.add_members("G", &["dave"]));
    let (ea, eb) = (a.unwrap(), b.unwrap());
    let mut epochs = [ea, eb];
    epochs.sort();
    assert_eq!(epochs, [2, 3], "one commit per epoch: the loser's change lands next");

    for cl in [&mut alice, &mut bob, &mut charlie, &mut dave] {
        cl.receive().await.unwrap();
    }
    for cl in [&alice, &bob, &charlie, &dave] {
        assert_eq!(cl.group_epoch("G").unwrap(), 3);
        let mut m = cl.group_members("G").unwrap();
        m.sort();
        assert_eq!(m, ["alice/phone", "bob/phone", "charlie/phone", "dave/phone"]);
    }
    dave.send_text("G", "hello all").await.unwrap();
    for cl in [&mut alice, &mut bob, &mut charlie] {
        assert_eq!(
            texts(&cl.receive().await.unwrap()),
            vec![("dave/phone".to_string(), "hello all".to_string())]
        );
    }
}

fn windows16(b: &[u8]) -> std::collections::HashSet<&[u8]> {
    b.windows(16).collect()
}

fn disk_contains(dir: &std::path::Path, needle: &[u8]) -> bool {
    common::walk(dir)
        .iter()
        .any(|p| std::fs::read(p).unwrap().windows(needle.len()).any(|w| w == needle))
}

#[tokio::test(flavor = "multi_thread")]
async fn copies_are_unlinkable_and_the_disks_hold_no_metadata() {
    let _watchdog = common::init();
    let mut c = split();
    c.start_all().await;
    let mut alice = c.registered("alice/phone", "n1", 3).await;
    let mut members = Vec::new();
    let mut names = Vec::new();
    for i in 0..20 {
        let id = format!("m{i:02}");
        members.push(c.registered(&format!("{id}/phone"), ["n1", "n2", "n3"][i % 3], 1).await);
        names.push(id);
    }
    let mut outsider = c.registered("eve/phone", "n2", 1).await;
    outsider.create_group("other", RosterMode::Stored).await.unwrap();

    alice.create_group("big", RosterMode::Stored).await.unwrap();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    alice.add_members("big", &refs).await.unwrap();
    let group_id = alice.group_id("big").unwrap();
    let req = alice.prepare_text("big", "a secret only members read").unwrap();
    let mls_bytes = match &req {
        mlsd_transport::Request::Ids(IdsRequest::Send { body, .. }) => body.message.clone(),
        _ => unreachable!(),
    };
    assert_eq!(
        alice.send_request(req).await.unwrap(),
        mlsd_transport::Response::Ids(IdsResponse::Sent { copies: 20 })
    );

    // The copies of that one message, straight from each mailbox.
    let mut copies = Vec::new();
    for m in &members {
        let keys = m.mailbox_keys().unwrap();
        let conn = m.connection();
        let got =
            mlsd_client::mailbox::fetch(conn, keys, &mut Default::default(), 0, 10).await.unwrap();
        assert_eq!(got.len(), 2, "a Welcome and the message");
        for d in &got {
            assert!(
                mlsd_transport::envelope::BUCKETS.contains(&d.envelope.len()),
                "len {}",
                d.envelope.len()
            );
        }
        copies.push(got[1].envelope.clone());
    }
    for (i, copy) in copies.iter().enumerate() {
        let wi = windows16(copy);
        for (j, other) in copies.iter().enumerate().skip(i + 1) {
            assert!(
                other.windows(16).all(|w| !wi.contains(w)),
                "copies {i} and {j} share 16 bytes"
            );
        }
        assert!(!copy.windows(32).any(|w| w == &mls_bytes[..32]), "MLS bytes visible in a copy");
    }
    // A member of another group cannot open them.
    for k in outsider.envelope_keys() {
        for env in &copies {
            assert!(mlsd_transport::envelope::open(&k, env).is_err());
        }
    }
    // Every member reads the message exactly once.
    for m in members.iter_mut() {
        let ev = m.receive().await.unwrap();
        assert_eq!(
            texts(&ev),
            vec![("alice/phone".to_string(), "a secret only members read".to_string())]
        );
    }

    // Attacker reads the disks: the ODS node's holds no group id, MLS message
    // or identity; the IDS node's (stored roster) no mailbox id.
    for n in ["n2", "n3"] {
        c.kill(n);
    }
    let ods = c.dir.path().join("data/n3");
    assert!(!disk_contains(&ods, &group_id), "group id on the ODS disk");
    assert!(
        !disk_contains(&ods, &mls_bytes[mls_bytes.len() - 32..]),
        "MLS message bytes on the ODS disk"
    );
    for who in ["alice/phone", "m00/phone", "m07/phone"] {
        assert!(!disk_contains(&ods, who.as_bytes()), "{who} on the ODS disk");
    }
    let ids = c.dir.path().join("data/n2");
    assert!(disk_contains(&ids, &group_id), "control: the IDS does store the group");
    for m in &members {
        assert!(!disk_contains(&ids, &m.mailbox_keys().unwrap().id), "mailbox id on the IDS disk");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn retried_sends_deliver_each_copy_once() {
    let _watchdog = common::init();
    let mut c = split();
    c.start_all().await;
    let (mut alice, mut bob, mut charlie) = abc(&c, RosterMode::Client).await;
    let req = alice.prepare_text("ABC", "once").unwrap();
    // The sender lost the first acknowledgement and sends the same request again.
    for _ in 0..3 {
        assert_eq!(
            alice.send_request(req.clone()).await.unwrap(),
            mlsd_transport::Response::Ids(IdsResponse::Sent { copies: 2 })
        );
    }
    for cl in [&mut bob, &mut charlie] {
        assert_eq!(
            texts(&cl.receive().await.unwrap()),
            vec![("alice/phone".to_string(), "once".to_string())]
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_sends_are_refused_and_change_nothing() {
    let _watchdog = common::init();
    let mut c = split();
    c.start_all().await;
    let (mut alice, mut bob, _charlie) = abc(&c, RosterMode::Stored).await;
    let conn = &mlsd_client::Connection::connect(c.addr("n1"), &c.ca()).await.unwrap();
    let good = alice.prepare_text("ABC", "good").unwrap();
    let mlsd_transport::Request::Ids(IdsRequest::Send { body, mac }) = good.clone() else {
        unreachable!()
    };
    let err = |r: Result<mlsd_transport::Response, ClientError>| match r {
        Err(ClientError::Server(e)) => e,
        other => panic!("expected a refusal, got {other:?}"),
    };
    use mlsd_transport::Request;

    let mut bad_mac = mac;
    bad_mac[0] ^= 1;
    assert_eq!(
        err(conn
            .request(Request::Ids(IdsRequest::Send { body: body.clone(), mac: bad_mac }))
            .await),
        WireError::Ids(IdsError::BadMac)
    );

    let mut unknown = body.clone();
    unknown.group = vec![9; 16];
    assert_eq!(
        err(conn.request(Request::Ids(IdsRequest::Send { body: unknown, mac })).await),
        WireError::Ids(IdsError::UnknownGroup)
    );

    let mut garbage = body.clone();
    garbage.message = b"not an MLS message".to_vec();
    let mac_g = mlsd_transport::protocol::ids::send_mac(&[0; 32], &garbage);
    assert!(matches!(
        err(conn.request(Request::Ids(IdsRequest::Send { body: garbage, mac: mac_g })).await),
        WireError::Ids(IdsError::InvalidMessage(_))
    ));

    let mut huge = body.clone();
    huge.message = vec![0; 2 * 1024 * 1024];
    // The client library refuses a frame over the limit before sending it
    // (a node's own refusal of an oversized frame: tests/hostile.rs).
    let r = conn.request(Request::Ids(IdsRequest::Send { body: huge, mac })).await;
    assert!(
        matches!(
            &r,
            Err(ClientError::Call(mlsd_transport::CallError::Frame(
                mlsd_transport::frame::FrameError::TooLarge { len, max: 1_048_576 }
            ))) if *len > 2 * 1024 * 1024
        ),
        "{r:?}"
    );

    // A message of a past epoch: prepared now, sent after a commit moved the group on.
    alice.add_members("ABC", &["dave"]).await.unwrap_err(); // dave is not registered: nothing happens
    let stale = bob.prepare_text("ABC", "from epoch 1").unwrap();
    let dave = c.registered("dave/phone", "n1", 2).await;
    drop(dave);
    alice.add_members("ABC", &["dave"]).await.unwrap();
    match err(bob.send_request(stale).await) {
        WireError::Ids(IdsError::BadMac) | WireError::Ids(IdsError::StaleEpoch { .. }) => {}
        e => panic!("{e:?}"),
    }

    // The good request still works once, and bob got only it and the commit.
    let (good_after, _) = (bob.receive().await.unwrap(), ());
    assert!(good_after.iter().any(|e| matches!(e, Event::Commit { epoch: 2, .. })));
    // A message prepared in epoch 1 by alice before the commit is refused too.
    match err(alice.send_request(good).await) {
        WireError::Ids(IdsError::BadMac) | WireError::Ids(IdsError::StaleEpoch { .. }) => {}
        e => panic!("{e:?}"),
    }
    assert!(texts(&bob.receive().await.unwrap()).is_empty(), "nothing refused was delivered");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mixing_window_batches_fan_outs_and_delivers_everything() {
    let _watchdog = common::init();
    let mut c = Cluster::with_extra(
        &[("n1", &[Role::As, Role::Cs]), ("n2", &[Role::Ids]), ("n3", &[Role::Ods, Role::Sds])],
        "[ids]\nmixing_window_ms = 100\n",
    );
    c.start_all().await;
    let (mut alice, mut bob, mut charlie) = abc(&c, RosterMode::Stored).await;
    let r1 = alice.prepare_text("ABC", "one").unwrap();
    let r2 = bob.prepare_text("ABC", "two").unwrap();
    // Both fan-outs fall into one window and leave as one batch per ODS node.
    let (a, b) = tokio::join!(alice.send_request(r1), bob.send_request(r2));
    assert_eq!(a.unwrap(), mlsd_transport::Response::Ids(IdsResponse::Sent { copies: 2 }));
    assert_eq!(b.unwrap(), mlsd_transport::Response::Ids(IdsResponse::Sent { copies: 2 }));
    let got = texts(&charlie.receive().await.unwrap());
    assert_eq!(got.len(), 2, "{got:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fan_out_killed_mid_way_is_completed_by_the_retry_without_duplicates() {
    let _watchdog = common::init();
    // A mixing window holds the envelopes long enough to kill the fan-out
    // while its copies are on their way to the ODS.
    let mut c = Cluster::with_extra(
        &[("n1", &[Role::As, Role::Cs]), ("n2", &[Role::Ids]), ("n3", &[Role::Ods, Role::Sds])],
        "[ids]\nmixing_window_ms = 3000\n[chaos]\nallow = true\n",
    );
    c.start_all().await;
    let (mut alice, mut bob, mut charlie) = abc(&c, RosterMode::Stored).await;
    let req = alice.prepare_text("ABC", "exactly once").unwrap();
    let first = {
        let conn = mlsd_client::Connection::connect(c.addr("n1"), &c.ca()).await.unwrap();
        let r = req.clone();
        tokio::spawn(async move { conn.request(r).await })
    };
    // Kill the fan-out as soon as it runs (polled, not guessed with a
    // sleep): it then waits out the window with its copies in hand.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let kill = mlsd_transport::protocol::NodeRequest::Operator(OperatorRequest::Chaos {
            target: mlsd_transport::protocol::ChaosTarget::Fanout,
        });
        match c.operator_call("n2", kill).await {
            mlsd_transport::Response::Node(NodeResponse::Killed { count: 1 }) => break,
            mlsd_transport::Response::Node(NodeResponse::Killed { count: 0 })
                if !first.is_finished() => {}
            other => {
                panic!("no fan-out to kill ({other:?}, first call done: {})", first.is_finished())
            }
        }
        assert!(std::time::Instant::now() < deadline, "the fan-out never started");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The fan-out's death leaves the first call unanswered at the IDS; the
    // client library sends the very same request again while the shard
    // answers `ShardUnavailable`, so that call may already come back
    // acknowledged, by the same message id, never as a second message.
    let first = first.await.unwrap();
    assert!(
        matches!(
            first,
            Err(_) | Ok(mlsd_transport::Response::Ids(IdsResponse::Sent { copies: 2 }))
        ),
        "{first:?}"
    );
    // The sender retries the same request: all copies, none twice.
    assert_eq!(
        alice.send_request(req).await.unwrap(),
        mlsd_transport::Response::Ids(IdsResponse::Sent { copies: 2 })
    );
    for cl in [&mut bob, &mut charlie] {
        assert_eq!(
            texts(&cl.receive().await.unwrap()),
            vec![("alice/phone".to_string(), "exactly once".to_string())]
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fan_out_larger_than_one_frame_reaches_a_remote_ods() {
    let _watchdog = common::init();
    let mut c = Cluster::with_extra(
        &[("n1", &[Role::As, Role::Cs, Role::Ids, Role::Sds]), ("n2", &[Role::Ods])],
        // 600 bare mailboxes stand for devices: opened without tickets.
        "[ods]\nopen_rate_per_minute = 100000\n[tickets]\nrequired = false\n",
    );
    c.start_all().await;
    let mut alice = c.registered("alice/phone", "n1", 1).await;
    alice.create_group("big", RosterMode::Client).await.unwrap();
    // 600 copies of 2 KiB are more than one 1 MiB frame to the ODS node.
    let conn = mlsd_client::Connection::connect(c.addr("n1"), &c.ca()).await.unwrap();
    let mut roster = Vec::new();
    for _ in 0..600u32 {
        let (_, cap) = common::mailbox_with_cap(&conn, None).await;
        roster.push(mlsd_transport::protocol::RosterEntry { cap, key: [1; 32] });
    }
    let send = common::to_roster(alice.prepare_text("big", &"x".repeat(1500)).unwrap(), &roster);
    let r = alice.send_request(send).await.unwrap();
    assert_eq!(r, mlsd_transport::Response::Ids(IdsResponse::Sent { copies: 600 }));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_commit_whose_copies_could_not_be_enqueued_is_merged_and_sent_again() {
    let _watchdog = common::init();
    let mut c = split();
    c.start_all().await;
    let (mut alice, mut bob) = c.alice_and_bob_in_g("n1", 3).await;

    // The IDS accepts Alice's update while the ODS node is down: it answers
    // that bob's copy was not stored (`PartlySent`, owner unavailable). The
    // commit counts for its epoch, so she merges it at once, and keeps it in
    // her outbox until every member has a copy.
    c.kill("n3");
    assert_eq!(alice.self_update("G").await.unwrap(), 2);
    assert_eq!(alice.outbox_len().unwrap(), 1);

    // When the ODS is back the outbox sends it again (the IDS recognizes the
    // retry) and bob follows.
    c.start("n3").await;
    let mut tries = 0;
    while alice.outbox_len().unwrap() > 0 {
        tries += 1;
        assert!(tries < 40, "the commit never reached bob");
        let _ = alice.flush_outbox().await;
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    bob.receive().await.unwrap();
    assert_eq!(bob.group_epoch("G").unwrap(), 2);
    alice.send_text("G", "after the outage").await.unwrap();
    let m = |s: &str, t: &str| (s.to_string(), t.to_string());
    assert_eq!(texts(&bob.receive().await.unwrap()), vec![m("alice/phone", "after the outage")]);
}
