//! Partial deliveries, as people meet them: one member's full mailbox or
//! unreachable ODS owner must not silence the sender in other groups, the
//! sender is told who was not served, and a send the IDS accepted completes
//! on retry however many commits came in between (issue: "one member's full,
//! unknown or unreachable mailbox blocks all of a sender's traffic").

mod common;

use mlsd_transport::protocol::{IdsError, IdsRequest, IdsResponse, RosterMode};
use std::time::Duration;

use common::Cluster;
use mlsd_client::group::Event;
use mlsd_client::outbox::Outcome;
use mlsd_client::Client;
use mlsd_transport::{Request, Role};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `mlsc` for `who` (home `homes/<who>/phone`, entering at n1).
fn mlsc(c: &Cluster, who: &str, args: &[&str]) -> std::process::Output {
    let home = c.dir.path().join(format!("homes/{who}/phone"));
    let as_key = c.dir.path().join("certs/as.pub");
    let mut full = vec!["--home", home.to_str().unwrap(), "--as-key", as_key.to_str().unwrap()];
    full.extend_from_slice(args);
    c.mlsc("n1", &full)
}

/// The reproduction: `[ods] max_queue = 20`, carol (in g) never reads. Once
/// her mailbox is full alice is told so for each further message to g, bob
/// still gets every one, and alice's message to h (with dave) goes through.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_mailbox_is_reported_and_blocks_nobody_else() {
    let _watchdog = common::init();
    let mut c = Cluster::with_extra(
        &[("n1", &Role::ALL)],
        "[limits]\ncall_timeout_ms = 1500\nconnect_timeout_ms = 1000\n[ods]\nmax_queue = 20\n",
    );
    c.start_all().await;
    {
        let mut alice = c.registered("alice/phone", "n1", 5).await;
        let mut bob = c.registered("bob/phone", "n1", 5).await;
        let _carol = c.registered("carol/phone", "n1", 5).await;
        let mut dave = c.registered("dave/phone", "n1", 5).await;
        alice.create_group("g", RosterMode::Stored).await.unwrap();
        alice.add_members("g", &["bob", "carol"]).await.unwrap();
        alice.create_group("h", RosterMode::Stored).await.unwrap();
        alice.add_members("h", &["dave"]).await.unwrap();
        bob.receive().await.unwrap();
        dave.receive().await.unwrap();
    }
    // Carol's mailbox holds her Welcome, then fills with g's messages; bob
    // reads along.
    let mut told = 0;
    let mut bob_read: Vec<String> = Vec::new();
    for i in 0..22 {
        if i % 5 == 4 {
            let out = mlsc(&c, "bob", &["recv"]);
            bob_read.extend(String::from_utf8_lossy(&out.stdout).lines().map(str::to_string));
        }
        let out = mlsc(&c, "alice", &["send", "g", &format!("g message {i}"), "--timeout", "20"]);
        assert!(out.status.success(), "send {i}: {}", stderr(&out));
        let err = stderr(&out);
        if i < 19 {
            assert!(err.is_empty(), "send {i} reached everyone: {err}");
        } else {
            assert!(
                err.contains("delivered to 1 of 2; carol/phone: mailbox full"),
                "send {i}: {err}"
            );
            told += 1;
        }
    }
    assert_eq!(told, 3);
    // Nothing of g is left waiting in front of h.
    let out = mlsc(&c, "alice", &["send", "h", "to dave", "--timeout", "10"]);
    assert!(out.status.success() && stderr(&out).is_empty(), "{}", stderr(&out));
    let out = mlsc(&c, "dave", &["recv"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "h alice/phone: to dave\n");
    let out = mlsc(&c, "bob", &["recv"]);
    bob_read.extend(String::from_utf8_lossy(&out.stdout).lines().map(str::to_string));
    let want: Vec<String> = (0..22).map(|i| format!("g alice/phone: g message {i}")).collect();
    assert_eq!(bob_read, want);
}

/// A registered client whose mailbox's ODS owner is `node` (ids are random,
/// so new devices are registered until one lands there).
async fn with_mailbox_on(c: &Cluster, identity: &str, node: &str) -> Client {
    // A new identity each time, so that groups get only the device wanted.
    for i in 0..40 {
        let client = c.registered(&format!("{identity}{i}/phone"), "n1", 3).await;
        let id = client.mailbox_keys().unwrap().id;
        let (owner, _) = client
            .connection()
            .ping(Role::Ods, &mlsd_transport::protocol::shard_of(&id))
            .await
            .unwrap();
        if owner == node {
            return client;
        }
    }
    panic!("no mailbox of {identity} landed on {node}");
}

/// Every role on n1, and a second ODS on n2 that tests stop to make one
/// recipient's mailbox owner unreachable.
fn with_a_second_ods() -> Cluster {
    // One replica per shard (the test clusters' default): half the ODS
    // shards are n1's alone, half n2's.
    Cluster::new(&[
        ("n1", &[Role::As, Role::Cs, Role::Ids, Role::Sds, Role::Ods]),
        ("n2", &[Role::Ods]),
    ])
}

fn sent_in(reports: &[mlsd_client::outbox::Report], req: &Request) -> Option<Outcome> {
    let id = mlsd_client::outbox::message_id(req);
    reports.iter().find(|r| Some(r.message_id) == id).map(|r| r.outcome.clone())
}

/// Carol's mailbox is on n2, dave's on n1. With n2 down, alice's send to g
/// waits in her outbox while her send to h is delivered at once; when n2 is
/// back the g send completes, carol's copy stored once. Meanwhile bob made
/// ten commits in g, more than the IDS's window of accepted epochs: the
/// retry still completes instead of being refused as stale.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_owner_delays_only_its_group_and_the_retry_completes_late() {
    let _watchdog = common::init();
    let mut c = with_a_second_ods();
    c.start_all().await;
    let mut alice = with_mailbox_on(&c, "alice", "n1").await;
    let mut bob = with_mailbox_on(&c, "bob", "n1").await;
    let mut carol = with_mailbox_on(&c, "carol", "n2").await;
    let mut dave = with_mailbox_on(&c, "dave", "n1").await;
    alice.create_group("g", RosterMode::Stored).await.unwrap();
    let who = |cl: &Client| cl.client_id().unwrap().split('/').next().unwrap().to_string();
    let (b, ca, d) = (who(&bob), who(&carol), who(&dave));
    alice.add_members("g", &[&b, &ca]).await.unwrap();
    alice.create_group("h", RosterMode::Stored).await.unwrap();
    alice.add_members("h", &[&d]).await.unwrap();
    bob.receive().await.unwrap();
    carol.receive().await.unwrap();
    dave.receive().await.unwrap();
    let carol_keys = carol.envelope_keys();

    c.kill("n2");
    let to_g = alice.prepare_text("g", "for g while n2 is down").unwrap();
    let g_message = match &to_g {
        Request::Ids(IdsRequest::Send { body, .. }) => body.message.clone(),
        _ => unreachable!(),
    };
    let reports = alice.send_reliably(to_g.clone(), Duration::from_secs(3)).await.unwrap();
    assert_eq!(sent_in(&reports, &to_g), None, "g's send waits: {reports:?}");
    let to_h = alice.prepare_text("h", "for h").unwrap();
    let reports = alice.send_reliably(to_h.clone(), Duration::from_secs(10)).await.unwrap();
    assert_eq!(sent_in(&reports, &to_h), Some(Outcome::Delivered { copies: 1 }));
    let got = dave.receive().await.unwrap();
    assert!(format!("{got:?}").contains("for h"), "{got:?}");
    assert_eq!(alice.outbox_len().unwrap(), 1);

    // Ten commits in g while carol's copies cannot be stored: each is
    // accepted (bob moves on) and waits in bob's outbox for carol.
    for _ in 0..10 {
        bob.self_update("g").await.unwrap();
    }

    c.start("n2").await;
    let mut reports = Vec::new();
    for _ in 0..40 {
        reports.extend(alice.flush_outbox().await.unwrap().reports);
        if alice.outbox_len().unwrap() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(sent_in(&reports, &to_g), Some(Outcome::Delivered { copies: 2 }), "{reports:?}");

    // Carol's mailbox holds alice's message once, sealed for her under the
    // key of the epoch it was sent in.
    let conn = mlsd_client::Connection::connect(c.addr("n1"), &c.ca()).await.unwrap();
    let mut counter = mlsd_client::mailbox::Counter::default();
    let keys = carol.mailbox_keys().unwrap();
    let queued =
        mlsd_client::mailbox::fetch(&conn, keys, &mut counter, keys.acked, 256).await.unwrap();
    let copies = queued
        .iter()
        .filter_map(|d| {
            carol_keys.iter().find_map(|k| mlsd_transport::envelope::open(k, &d.envelope).ok())
        })
        .filter(|plain| {
            mlsd_transport::envelope::unpad(&plain[..])
                .map(|(_, m)| m == &g_message[..])
                .unwrap_or(false)
        })
        .count();
    assert_eq!(copies, 1);
}

/// A member who reuses an accepted message id with another body (here: a
/// different message of the same epoch) is refused, so nothing skips the
/// one-commit-per-epoch check by posing as a retry.
#[tokio::test(flavor = "multi_thread")]
async fn a_retry_must_be_identical_to_the_accepted_send() {
    let _watchdog = common::init();
    let mut c = Cluster::new(&[("n1", &Role::ALL)]);
    c.start_all().await;
    let (mut alice, _bob) = c.alice_and_bob_in_g("n1", 3).await;
    let first = alice.prepare_text("G", "first").unwrap();
    let Request::Ids(IdsRequest::Send { body, .. }) = &first else { unreachable!() };
    let id = body.message_id;
    alice.send_request(first.clone()).await.unwrap();
    let other = alice.prepare_text_with_id("G", "something else", id).unwrap();
    let err = common::server_err(alice.send_request(other).await);
    assert!(format!("{err}").contains("a retry must be identical"), "{err}");
    // The real retry is still delivered again (and stored once).
    assert!(matches!(
        alice.send_request(first).await.unwrap(),
        mlsd_transport::Response::Ids(IdsResponse::Sent { copies: 1 })
    ));
}

/// A send whose only missing copies can never be stored (a mailbox the ODS
/// does not know) is not kept past the IDS's window of accepted epochs: no
/// retry could store more, so the IDS holds no auth key or digest for it.
/// Eight commits later its retry is refused as stale.
#[tokio::test(flavor = "multi_thread")]
async fn a_send_missing_only_unknown_mailboxes_is_not_kept() {
    use mlsd_transport::protocol::{Recipients, RosterEntry, Undeliverable};
    use mlsd_transport::{Response, WireError};
    let _watchdog = common::init();
    let mut c = Cluster::new(&[("n1", &Role::ALL)]);
    c.start_all().await;
    let mut alice = c.registered("alice/phone", "n1", 3).await;
    let _bob = c.registered("bob/phone", "n1", 3).await;
    alice.create_group("C", RosterMode::Client).await.unwrap();
    alice.add_members("C", &["bob"]).await.unwrap();
    let Request::Ids(IdsRequest::Send { mut body, mac }) =
        alice.prepare_text("C", "to bob and nobody").unwrap()
    else {
        unreachable!()
    };
    let Recipients::Roster(roster) = &mut body.recipients else { panic!("client mode") };
    roster.push(RosterEntry { cap: common::unissued_cap(), key: [1; 32] });
    let send = Request::Ids(IdsRequest::Send { body, mac });
    match alice.send_request(send.clone()).await.unwrap() {
        Response::Ids(IdsResponse::PartlySent { copies: 2, failed: 1, undelivered }) => {
            assert_eq!(undelivered.len(), 1);
            assert_eq!(undelivered[0].reason, Undeliverable::NoCapability);
        }
        other => panic!("expected PartlySent, got {other:?}"),
    }
    // Within the window a retry is still recognized (and answered the same).
    assert!(matches!(
        alice.send_request(send.clone()).await,
        Ok(Response::Ids(IdsResponse::PartlySent { .. }))
    ));
    for _ in 0..8 {
        alice.self_update("C").await.unwrap();
    }
    let err = common::server_err(alice.send_request(send).await);
    assert!(matches!(err, WireError::Ids(IdsError::StaleEpoch { .. })), "{err:?}");
}

/// Carol's mailbox is on n2. While n2 is down alice removes her (accepted;
/// carol's copy of the commit waits in alice's outbox), then adds her again
/// once n2 is back: carol's Welcome reaches her before the commit that
/// removed her. She keeps it until that commit arrives, then rejoins and
/// reads the group again. (Found by the chaos test: a guest re-added while
/// its removal was still in the creator's outbox never read the group again.)
#[tokio::test(flavor = "multi_thread")]
async fn a_welcome_that_overtakes_our_removal_is_kept_until_the_removal_lands() {
    let _watchdog = common::init();
    let mut c = with_a_second_ods();
    c.start_all().await;
    let mut alice = with_mailbox_on(&c, "alice", "n1").await;
    let mut carol = with_mailbox_on(&c, "carol", "n2").await;
    let ca = carol.client_id().unwrap().split('/').next().unwrap().to_string();
    alice.create_group("g", RosterMode::Stored).await.unwrap();
    alice.add_members("g", &[&ca]).await.unwrap();
    carol.receive().await.unwrap();

    c.kill("n2");
    alice.remove_members("g", &[&ca]).await.unwrap();
    assert_eq!(alice.outbox_len().unwrap(), 1, "carol's copy of her removal waits");
    c.start("n2").await;
    alice.add_members("g", &[&ca]).await.unwrap();
    let first = carol.receive().await.unwrap();
    assert!(!first.iter().any(|e| matches!(e, Event::Joined { .. })), "{first:?}");

    for _ in 0..40 {
        alice.flush_outbox().await.unwrap();
        if alice.outbox_len().unwrap() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let then = carol.receive().await.unwrap();
    assert!(then.iter().any(|e| matches!(e, Event::Removed { .. })), "{then:?}");
    assert!(then.iter().any(|e| matches!(e, Event::Joined { .. })), "{then:?}");
    alice.send_text("g", "welcome back").await.unwrap();
    let got = carol.receive().await.unwrap();
    assert!(format!("{got:?}").contains("welcome back"), "{got:?}");
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs `mlsc` for `who`; it must succeed.
fn mlsc_ok(c: &Cluster, who: &str, args: &[&str]) -> std::process::Output {
    let out = mlsc(c, who, args);
    assert!(out.status.success(), "{who} {args:?}: {}", stderr(&out));
    out
}

/// The reproduction of the second abuse issue's second item: mallory
/// fills bob's mailbox through a group they share, then alice adds bob to
/// a new group. The Welcome was refused, `group add` said nothing, and once
/// bob made room nothing sent it again: bob was listed as a member and
/// never joined. Now alice is told bob has not joined, her member list
/// says so, her sends go on, and her first command after bob makes room
/// delivers the Welcome.
#[tokio::test(flavor = "multi_thread")]
async fn a_welcome_refused_by_a_full_mailbox_stays_owed_until_it_is_stored() {
    let _watchdog = common::init();
    let mut c = Cluster::with_extra(
        &[("n1", &Role::ALL)],
        "[limits]\ncall_timeout_ms = 1500\nconnect_timeout_ms = 1000\n[ods]\nmax_queue = 5\n",
    );
    c.start_all().await;
    for who in ["alice", "bob", "mallory"] {
        mlsc_ok(&c, who, &["register", &format!("{who}/phone"), "--count", "3"]);
    }
    // Bob's mailbox: mallory's Welcome and four messages.
    mlsc_ok(&c, "mallory", &["group", "create", "gm"]);
    mlsc_ok(&c, "mallory", &["group", "add", "gm", "bob"]);
    for i in 0..4 {
        mlsc_ok(&c, "mallory", &["send", "gm", &format!("spam {i}"), "--timeout", "10"]);
    }

    mlsc_ok(&c, "alice", &["group", "create", "ga"]);
    let out = mlsc_ok(&c, "alice", &["group", "add", "ga", "bob"]);
    assert_eq!(stdout(&out), "added bob to ga (epoch 1)\n");
    assert!(
        stderr(&out).contains("bob/phone has not joined yet: its mailbox is full"),
        "{}",
        stderr(&out)
    );
    let out = mlsc_ok(&c, "alice", &["group", "members", "ga"]);
    assert_eq!(
        stdout(&out),
        "alice/phone\nbob/phone NOT JOINED: its Welcome waits for room in its mailbox\n"
    );
    // Alice's sends are not held behind the owed Welcome.
    let out = mlsc_ok(&c, "alice", &["send", "ga", "before room", "--timeout", "20"]);
    assert!(stderr(&out).contains("bob/phone: mailbox full"), "{}", stderr(&out));

    // Bob reads mallory's messages, which makes room.
    let out = mlsc_ok(&c, "bob", &["recv"]);
    assert!(stdout(&out).contains("gm mallory/phone: spam 3"), "{}", stdout(&out));
    // Alice's next command sends the Welcome again; now it is stored.
    mlsc_ok(&c, "alice", &["send", "ga", "after room", "--timeout", "20"]);
    let out = mlsc_ok(&c, "alice", &["group", "members", "ga"]);
    assert_eq!(stdout(&out), "alice/phone\nbob/phone\n");
    let out = mlsc_ok(&c, "bob", &["recv"]);
    assert!(stderr(&out).contains("joined ga"), "{}", stderr(&out));
    assert!(stdout(&out).contains("ga alice/phone: after room"), "{}", stdout(&out));
}
