//! The ODS over real processes: mailboxes without identities, idempotent
//! enqueue from the IDS side, fetch and ack signed with the mailbox key,
//! bounds, push notifications to a local UnifiedPush endpoint, durability.

mod common;

use mlsd_transport::protocol::tickets::TicketKind;
use mlsd_transport::protocol::{
    AuthError, DeliveryCap, EnqueueItem, EnqueueResult, NodeRequest, NodeResponse, OdsError,
    OdsRequest, OdsResponse,
};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::push::PushServer;
use common::{server_err, Cluster};
use mlsd_client::mailbox::{self, Counter, MailboxKeys};
use mlsd_client::Connection;
use mlsd_transport::protocol::ods::LABEL_FETCH;
use mlsd_transport::{Request, Response, Role, WireError};

fn split(extra: &str) -> Cluster {
    Cluster::with_extra(
        &[("n1", &[Role::As, Role::Cs]), ("n2", &[Role::Ids]), ("n3", &[Role::Ods, Role::Sds])],
        &format!("[limits]\ncall_timeout_ms = 1500\nconnect_timeout_ms = 1000\n{extra}"),
    )
}

fn item(cap: &DeliveryCap, n: u8) -> EnqueueItem {
    EnqueueItem { cap: cap.clone(), delivery_id: [n; 32], envelope: vec![n; 100 + n as usize] }
}

/// One capability of `keys`'s mailbox, issued at the ODS.
async fn issued(conn: &Connection, keys: &MailboxKeys) -> DeliveryCap {
    let cap = keys.new_cap().unwrap();
    mailbox::issue(conn, keys, &mut Counter::default(), std::slice::from_ref(&cap)).await.unwrap();
    cap
}

#[tokio::test(flavor = "multi_thread")]
async fn enqueue_fetch_ack_in_order_exactly_once() {
    let _watchdog = common::init();
    let mut c = split("");
    c.start_all().await;
    // The client enters at n1; the mailbox lives on n3.
    let conn = Connection::connect(c.addr("n1"), &c.ca()).await.unwrap();
    let keys = MailboxKeys::generate().unwrap();
    mailbox::open(&conn, &keys, None, c.ticket(TicketKind::Mailbox).await).await.unwrap();
    let cap = issued(&conn, &keys).await;
    // Opened again with the same keys (a lost answer): answered as the first
    // time. With another key: taken.
    mailbox::open(&conn, &keys, None, c.ticket(TicketKind::Mailbox).await).await.unwrap();
    let stranger = MailboxKeys::generate().unwrap();
    let auth_key = stranger.auth_public();
    let taken = Request::Ods(OdsRequest::OpenMailbox { mailbox: keys.id, auth_key, push: None });
    assert_eq!(
        server_err(conn.request_paid(taken, c.ticket(TicketKind::Mailbox).await).await),
        WireError::Ods(OdsError::MailboxTaken)
    );

    let unknown = common::unissued_cap();
    let batch = vec![item(&cap, 1), item(&unknown, 2), item(&cap, 3)];
    let r = c.node_call("n2", "n3", NodeRequest::Enqueue(batch.clone())).await;
    assert_eq!(
        r,
        Response::Node(NodeResponse::Enqueued(vec![
            EnqueueResult::Stored { seq: 1 },
            EnqueueResult::NoCapability,
            EnqueueResult::Stored { seq: 2 },
        ]))
    );
    // The IDS retries the same copies: stored once, same sequence numbers.
    let r = c.node_call("n2", "n3", NodeRequest::Enqueue(batch)).await;
    assert!(
        matches!(&r, Response::Node(NodeResponse::Enqueued(v)) if v[0] == EnqueueResult::Stored { seq: 1 } && v[2] == EnqueueResult::Stored { seq: 2 }),
        "{r:?}"
    );
    // A node that does not own the mailbox says so per item, naming its owner.
    let r = c.node_call("n2", "n1", NodeRequest::Enqueue(vec![item(&cap, 4)])).await;
    let owner = Some("n3".to_string());
    assert_eq!(
        r,
        Response::Node(NodeResponse::Enqueued(vec![EnqueueResult::NotLeader { leader: owner }]))
    );

    let mut counter = Counter::default();
    let got = mailbox::fetch(&conn, &keys, &mut counter, 0, 10).await.unwrap();
    assert_eq!(got.iter().map(|d| d.seq).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(got[0].envelope, vec![1; 101]);
    assert_eq!(got[1].envelope, vec![3; 103]);
    assert_eq!(mailbox::ack(&conn, &keys, &mut counter, 1).await.unwrap(), 1);
    let got = mailbox::fetch(&conn, &keys, &mut counter, 0, 10).await.unwrap();
    assert_eq!(
        got.iter().map(|d| d.seq).collect::<Vec<_>>(),
        vec![2],
        "acked envelopes are deleted"
    );
    assert_eq!(mailbox::ack(&conn, &keys, &mut counter, 99).await.unwrap(), 0);
    assert!(mailbox::fetch(&conn, &keys, &mut counter, 0, 10).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_key_replay_unknown_mailbox_and_bounds_are_refused() {
    let _watchdog = common::init();
    let mut c = split("[ods]\nmax_queue = 3\n");
    c.start_all().await;
    let conn = Connection::connect(c.addr("n3"), &c.ca()).await.unwrap();
    let keys = MailboxKeys::generate().unwrap();
    mailbox::open(&conn, &keys, None, c.ticket(TicketKind::Mailbox).await).await.unwrap();
    let cap = issued(&conn, &keys).await;
    c.node_call("n2", "n3", NodeRequest::Enqueue(vec![item(&cap, 1)])).await;

    // Signed with another mailbox's key.
    let other = MailboxKeys::generate().unwrap();
    let mut forged = other.auth(LABEL_FETCH, 1, &(0u64, 10u32));
    forged.mailbox = keys.id;
    let r =
        conn.request(Request::Ods(OdsRequest::Fetch { auth: forged, after: 0, limit: 10 })).await;
    assert!(matches!(server_err(r), WireError::Auth(AuthError::BadSignature(_))));
    // Unknown mailbox.
    let r = mailbox::fetch(&conn, &other, &mut Counter::default(), 0, 10).await;
    assert_eq!(server_err(r), WireError::Ods(OdsError::UnknownMailbox));
    // A request sent again verbatim is a retry, answered again; once a
    // newer request was served, it is a replay.
    let mut counter = Counter::default();
    let auth = keys.auth(LABEL_FETCH, counter.next_value(), &(0u64, 10u32));
    let req = Request::Ods(OdsRequest::Fetch { auth, after: 0, limit: 10 });
    let first = conn.request(req.clone()).await.unwrap();
    assert!(
        matches!(&first, Response::Ods(OdsResponse::Envelopes(v)) if v.len() == 1),
        "{first:?}"
    );
    assert_eq!(conn.request(req.clone()).await.unwrap(), first, "a retry gets the first answer");
    mailbox::fetch(&conn, &keys, &mut counter, 0, 10).await.unwrap();
    assert_eq!(server_err(conn.request(req).await), WireError::Auth(AuthError::Replayed));

    // Queue bound and envelope size bound, per item.
    let items = vec![
        item(&cap, 2),
        item(&cap, 3),
        item(&cap, 4),
        EnqueueItem { cap: cap.clone(), delivery_id: [5; 32], envelope: vec![0; 300 * 1024] },
    ];
    let r = c.node_call("n2", "n3", NodeRequest::Enqueue(items)).await;
    assert_eq!(
        r,
        Response::Node(NodeResponse::Enqueued(vec![
            EnqueueResult::Stored { seq: 2 },
            EnqueueResult::Stored { seq: 3 },
            EnqueueResult::MailboxFull,
            EnqueueResult::TooLarge,
        ]))
    );
    // A client cannot enqueue: the request type does not exist on its ALPN,
    // and the node protocol needs a node certificate (tests/hostile.rs).
    let got = mailbox::fetch(&conn, &keys, &mut counter, 0, 10).await.unwrap();
    assert_eq!(got.len(), 3);
}

/// The local push server is on loopback over plain HTTP, which the
/// operator has to allow.
const LOCAL_PUSH: &str = "[ods]\npush_allow_http = true\npush_allow_private = true\n";

#[tokio::test(flavor = "multi_thread")]
async fn push_notifies_once_per_new_envelope_and_the_url_is_never_stored_in_the_clear() {
    let _watchdog = common::init();
    let mut c = split(LOCAL_PUSH);
    c.start_all().await;
    let server = PushServer::http().await;
    let (url, hits) = (server.url.clone(), server.hits.clone());
    let conn = Connection::connect(c.addr("n1"), &c.ca()).await.unwrap();
    let keys = MailboxKeys::generate().unwrap();
    mailbox::open(&conn, &keys, Some(&url), c.ticket(TicketKind::Mailbox).await).await.unwrap();
    let cap = issued(&conn, &keys).await;

    // One envelope, one notification; the next envelope, once the first
    // notification went out, another.
    for n in 1..=2u8 {
        let r = c.node_call("n2", "n3", NodeRequest::Enqueue(vec![item(&cap, n)])).await;
        assert!(matches!(r, Response::Node(NodeResponse::Enqueued(_))));
        assert_eq!(server.wait_for(n as usize, 5).await, n as usize);
    }
    // A retried copy is not notified again; one through a revoked
    // capability is not stored, so not notified either.
    let other = issued(&conn, &keys).await;
    mailbox::revoke(&conn, &keys, &mut Counter::default(), &[other.token]).await.unwrap();
    let r =
        c.node_call("n2", "n3", NodeRequest::Enqueue(vec![item(&cap, 1), item(&other, 3)])).await;
    assert_eq!(
        r,
        Response::Node(NodeResponse::Enqueued(vec![
            EnqueueResult::Stored { seq: 1 },
            EnqueueResult::NoCapability
        ]))
    );
    // Positive evidence that the node got past those two: a fresh copy
    // afterwards is notified (pushes leave one queue in order).
    let r = c.node_call("n2", "n3", NodeRequest::Enqueue(vec![item(&cap, 4)])).await;
    assert_eq!(r, Response::Node(NodeResponse::Enqueued(vec![EnqueueResult::Stored { seq: 3 }])));
    assert_eq!(server.wait_for(3, 5).await, 3);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hits.load(Ordering::SeqCst), 3, "the retry or the refused copy was notified");

    // Attacker reads the ODS node's disk: no push URL, no push key, no
    // capability token.
    c.kill("n3");
    let data = c.dir.path().join("data/n3");
    let mut found = Vec::new();
    for entry in common::walk(&data) {
        let bytes = std::fs::read(&entry).unwrap();
        for needle in [
            url.as_bytes(),
            b"secret-push-token-of-bob".as_slice(),
            keys.push_key.as_slice(),
            cap.token.as_slice(),
        ] {
            if bytes.windows(needle.len()).any(|w| w == needle) {
                found.push(entry.display().to_string());
            }
        }
    }
    assert!(found.is_empty(), "push secrets on disk in {found:?}");
    // The mailbox data itself is there (the scan looked at the right files).
    let all: Vec<u8> = common::walk(&data).iter().flat_map(|p| std::fs::read(p).unwrap()).collect();
    assert!(all.windows(101).any(|w| w == [1u8; 101]), "envelope bytes found on disk");
}

#[tokio::test(flavor = "multi_thread")]
async fn enqueued_envelopes_survive_a_node_kill() {
    let _watchdog = common::init();
    let mut c = split("");
    c.start_all().await;
    let conn = Connection::connect(c.addr("n1"), &c.ca()).await.unwrap();
    let keys = MailboxKeys::generate().unwrap();
    mailbox::open(&conn, &keys, None, c.ticket(TicketKind::Mailbox).await).await.unwrap();
    let cap = issued(&conn, &keys).await;
    let items: Vec<_> = (1..=20).map(|n| item(&cap, n)).collect();
    let r = c.node_call("n2", "n3", NodeRequest::Enqueue(items)).await;
    assert!(matches!(&r, Response::Node(NodeResponse::Enqueued(v)) if v.len() == 20));
    c.kill("n3");
    c.start("n3").await;
    let mut counter = Counter::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let got = loop {
        match mailbox::fetch(&conn, &keys, &mut counter, 0, 100).await {
            Ok(v) => break v,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(got.len(), 20, "every acknowledged enqueue survived SIGKILL");
    assert_eq!(got.iter().map(|d| d.seq).collect::<Vec<_>>(), (1..=20).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscriber_gets_envelopes_live_and_no_push() {
    let _watchdog = common::init();
    let mut c = split(LOCAL_PUSH);
    c.start_all().await;
    let server = PushServer::http().await;
    let (url, hits) = (server.url.clone(), server.hits.clone());
    // Enters at n1; the mailbox lives on n3, so n1 pipes the stream.
    let conn = Connection::connect(c.addr("n1"), &c.ca()).await.unwrap();
    let keys = MailboxKeys::generate().unwrap();
    mailbox::open(&conn, &keys, Some(&url), c.ticket(TicketKind::Mailbox).await).await.unwrap();
    let cap = issued(&conn, &keys).await;
    c.node_call("n2", "n3", NodeRequest::Enqueue(vec![item(&cap, 1)])).await;

    let mut counter = Counter::default();
    let (mut sub, backlog) = mailbox::subscribe(&conn, &keys, &mut counter, 0).await.unwrap();
    assert_eq!(backlog.iter().map(|d| d.seq).collect::<Vec<_>>(), vec![1]);
    c.node_call("n2", "n3", NodeRequest::Enqueue(vec![item(&cap, 2)])).await;
    let live = tokio::time::timeout(Duration::from_secs(5), sub.next()).await.unwrap().unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!((live[0].seq, live[0].envelope.clone()), (2, vec![2; 102]));
    // The backlog's envelope was pushed before subscribing; wait for that
    // push so it cannot be taken for one of the live envelope.
    assert_eq!(server.wait_for(1, 5).await, 1);
    let pushed_while_live = hits.load(Ordering::SeqCst);

    // Once the subscriber is gone, the next envelope is pushed again. When
    // the node notices is not timed: envelopes go in one at a time until a
    // push comes (the ones before went to the closing subscription).
    sub.close();
    drop(conn);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut n = 3;
    while hits.load(Ordering::SeqCst) == pushed_while_live {
        assert!(
            tokio::time::Instant::now() < deadline,
            "push never resumed after the subscriber left"
        );
        c.node_call("n2", "n3", NodeRequest::Enqueue(vec![item(&cap, n)])).await;
        n += 1;
        server.wait_for(pushed_while_live + 1, 1).await;
    }
    assert_eq!(pushed_while_live, 1, "only the envelope stored before subscribing was pushed");
}

/// A subscriber that stops reading (issue "delivery defects", 5) is dropped
/// once a push to it has not gone out within `limits.read_timeout_ms`; its
/// mailbox then gets push notifications again. Before, the node's write
/// waited forever: the subscription stayed registered, so the device got
/// neither the envelopes nor a push, and the node held a task and its
/// buffers for as long as the connection lived.
#[tokio::test(flavor = "multi_thread")]
async fn a_subscriber_that_stops_reading_is_dropped_and_push_resumes() {
    let _watchdog = common::init();
    let mut c = split(&format!("read_timeout_ms = 1000\n{LOCAL_PUSH}"));
    c.start_all().await;
    let server = PushServer::http().await;
    let (url, hits) = (server.url.clone(), server.hits.clone());
    let conn = Connection::connect(c.addr("n3"), &c.ca()).await.unwrap();
    let keys = MailboxKeys::generate().unwrap();
    mailbox::open(&conn, &keys, Some(&url), c.ticket(TicketKind::Mailbox).await).await.unwrap();
    let cap = issued(&conn, &keys).await;
    let (sub, backlog) =
        mailbox::subscribe(&conn, &keys, &mut Counter::default(), 0).await.unwrap();
    assert!(backlog.is_empty());
    // 3 MB of live envelopes, more than the stream's receive window, which
    // this subscriber never reads; fewer batches than the node queues.
    for n in 1..=30u8 {
        let big = EnqueueItem { envelope: vec![n; 100_000], ..item(&cap, n) };
        c.node_call("n2", "n3", NodeRequest::Enqueue(vec![big])).await;
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "a live subscriber gets no push");
    // The node drops the subscriber once a write to it has waited
    // read_timeout_ms; when that happens is not timed here: small envelopes
    // go in one at a time until one is pushed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut n = 31;
    while hits.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stalled subscriber was never dropped: {}",
            c.log("n3")
        );
        c.node_call("n2", "n3", NodeRequest::Enqueue(vec![item(&cap, n)])).await;
        n += 1;
        server.wait_for(1, 1).await;
    }
    assert!(c.log("n3").contains("cannot write response"), "logged at warn");
    drop(sub);
}
