//! Every request a client makes, sent a second time with the very same
//! frame (what a client or an entry node does after a lost answer or a
//! leader change), on three nodes with three replicas: the retry gets the
//! first answer again, or an equivalent success, and changes nothing, both
//! at once and after every shard's leader has changed.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::mem::discriminant;
use std::time::{Duration, Instant};

use common::leaders::all_led_without;
use mlsd_client::connection::{outcome, Repeated};
use mlsd_client::Connection;
use mlsd_transport::protocol::{
    AsRequest, AsResponse, CsRequest, IdsRequest, MailboxId, OdsRequest, OdsResponse, RosterMode,
    SdsRequest,
};
use mlsd_transport::{Request, Response};

/// The request's kind, as the matrix names it.
fn kind(r: &Request) -> String {
    let debug = format!("{r:?}");
    let end = debug.find([' ', '(', '{']).unwrap_or(debug.len());
    let outer = &debug[..end];
    let inner = debug[end..].trim_start_matches(['(', ' ']);
    let inner_end = inner.find([' ', '(', '{', ')']).unwrap_or(inner.len());
    format!("{outer}::{}", &inner[..inner_end])
}

/// Reads: a retry answers from the state then, which other requests may
/// have changed; it must be the same kind of success.
fn is_read(r: &Request) -> bool {
    matches!(
        r,
        Request::Ping(_)
            | Request::As(AsRequest::Lookup { .. } | AsRequest::LookupPage { .. })
            | Request::As(AsRequest::Devices { .. })
            | Request::Cs(CsRequest::CountKeyPackages { .. })
            | Request::Ods(OdsRequest::Fetch { .. } | OdsRequest::Subscribe { .. })
            | Request::Sds(SdsRequest::GetBlob { .. })
    )
}

/// The mailbox whose request counter a signed ODS request uses: only the
/// last such request of a mailbox is a retry; an older one is a replay.
fn counter_of(r: &Request) -> Option<MailboxId> {
    match r {
        Request::Ods(
            OdsRequest::Fetch { auth, .. }
            | OdsRequest::Subscribe { auth, .. }
            | OdsRequest::Ack { auth, .. }
            | OdsRequest::IssueCapabilities { auth, .. }
            | OdsRequest::RevokeCapabilities { auth, .. },
        ) => Some(auth.mailbox),
        _ => None,
    }
}

/// Why `again` is not what a retry of `req` first answered `first` may get.
fn not_equivalent(
    req: &Request,
    first: &Result<Response, String>,
    again: &Result<Response, String>,
) -> Option<String> {
    let (Ok(first), Ok(again)) = (first, again) else {
        return Some(format!("a call failed: {first:?} / {again:?}"));
    };
    let same = match (req, first, again) {
        (_, Response::Error(_), _) => first == again,
        (r, _, _) if is_read(r) => discriminant(first) == discriminant(again),
        // A pending device approved meanwhile: the retry completes it.
        (
            Request::As(AsRequest::Register { .. }),
            Response::As(AsResponse::RegistrationPending { .. }),
            Response::As(AsResponse::Binding(_)),
        ) => true,
        // Revoked once; the tokens are gone the second time.
        (
            Request::Ods(OdsRequest::RevokeCapabilities { .. }),
            Response::Ods(OdsResponse::CapabilitiesRevoked { .. }),
            Response::Ods(OdsResponse::CapabilitiesRevoked { revoked: 0 }),
        ) => true,
        _ => first == again,
    };
    let cut = |r: &Response| format!("{r:?}").chars().take(120).collect::<String>();
    (!same).then(|| format!("first {}, again {}", cut(first), cut(again)))
}

/// `r`'s kind and why `again` is not what a retry of it may get, if not.
fn mismatch(r: &Repeated, again: &Result<Response, String>) -> Option<String> {
    let why = not_equivalent(&r.frame.request, &r.first, again)?;
    Some(format!("{}: {why}", kind(&r.frame.request)).chars().take(300).collect())
}

/// Every logged repeat that did not get what a retry may get.
fn mismatches(repeated: &[Repeated]) -> Vec<String> {
    repeated.iter().filter_map(|r| mismatch(r, &r.again)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_request_sent_again_gets_its_first_answer_even_after_leader_changes() {
    let _watchdog = common::init();
    let mut c = common::three_replicated().await;
    let log = mlsd_client::connection::RepeatLog::default();

    // A day of a messenger's requests, every one sent twice.
    let mut alice = c.client("alice/phone", "n1").await;
    alice.connection().repeat_requests(log.clone());
    alice.register("alice/phone", None).await.unwrap();
    alice.publish(3).await.unwrap();
    let mut bob = c.client("bob/phone", "n2").await;
    bob.connection().repeat_requests(log.clone());
    bob.register("bob/phone", None).await.unwrap();
    bob.publish(3).await.unwrap();
    let mut laptop = c.client("alice/laptop", "n3").await;
    laptop.connection().repeat_requests(log.clone());
    assert!(laptop.register("alice/laptop", None).await.is_err(), "awaits approval");
    let (_, pending) = alice.devices().await.unwrap();
    let key = pending.into_iter().find(|p| p.client == "alice/laptop").unwrap().signature_key;
    alice.approve("alice/laptop", key).await.unwrap();
    laptop.register("alice/laptop", None).await.unwrap();
    assert_eq!(alice.lookup("bob").await.unwrap().len(), 1);
    alice.count_key_packages().await.unwrap();
    alice.create_group("G", RosterMode::Stored).await.unwrap();
    alice.add_members("G", &["bob"]).await.unwrap();
    bob.receive().await.unwrap();
    alice.send_text("G", "hello").await.unwrap();
    let file = c.dir.path().join("note.txt");
    std::fs::write(&file, b"an attachment").unwrap();
    alice.send_file("G", &file).await.unwrap();
    let events = bob.receive().await.unwrap();
    assert_eq!(common::texts(&events), ["hello"], "each message once: {events:?}");
    assert!(
        events.iter().any(|e| matches!(e, mlsd_client::group::Event::File { .. })),
        "{events:?}"
    );

    let repeated: Vec<Repeated> = log.lock().unwrap().clone();
    let kinds: BTreeSet<String> = repeated.iter().map(|r| kind(&r.frame.request)).collect();
    for k in [
        "As::Register",
        "As::LookupPage",
        "As::Approve",
        "As::Devices",
        "As::IssueTickets",
        "Cs::PublishKeyPackages",
        "Cs::FetchKeyPackages",
        "Cs::CountKeyPackages",
        "Ids::CreateGroup",
        "Ids::Send",
        "Ods::OpenMailbox",
        "Ods::Fetch",
        "Ods::Ack",
        "Ods::IssueCapabilities",
        "Sds::PutBlob",
        "Sds::GetBlob",
    ] {
        assert!(kinds.contains(k), "{k} was never sent: {kinds:?}");
    }
    let wrong = mismatches(&repeated);
    assert!(wrong.is_empty(), "retries answered otherwise:\n{}", wrong.join("\n"));

    // Every shard's leader changes: each node in turn is killed, the others
    // take over its shards, and it comes back.
    let t = Instant::now();
    for n in ["n1", "n2", "n3"] {
        c.kill(n);
        all_led_without(&c, n, Duration::from_secs(60)).await;
        c.start(n).await;
        c.wait_healthy(Duration::from_secs(60)).await;
    }
    eprintln!("every node killed in turn and back in {:?}", t.elapsed());
    // Then the same frames again, through a node none of them entered by
    // first (only the last request of each mailbox: an older counter is a
    // replay by design).
    let mut last_of: HashMap<MailboxId, usize> = HashMap::new();
    for (i, r) in repeated.iter().enumerate() {
        if let Some(m) = counter_of(&r.frame.request) {
            last_of.insert(m, i);
        }
    }
    let conn = Connection::connect(c.addr("n3"), &c.ca()).await.unwrap();
    let mut wrong = Vec::new();
    for (i, r) in repeated.iter().enumerate() {
        if counter_of(&r.frame.request).is_some_and(|m| last_of[&m] != i) {
            continue;
        }
        let again = outcome(&conn.send_frame(&r.frame).await);
        wrong.extend(mismatch(r, &again));
    }
    assert!(wrong.is_empty(), "after leader changes:\n{}", wrong.join("\n"));
    // The sends were recognized, not delivered again.
    let _ = bob.reconnect().await;
    let events = bob.receive().await.unwrap();
    assert!(common::texts(&events).is_empty(), "delivered twice: {events:?}");
    let sends = repeated
        .iter()
        .filter(|r| matches!(r.frame.request, Request::Ids(IdsRequest::Send { .. })));
    assert!(sends.count() >= 3, "a commit, a message and a file reference");

    // Revocations last (sent again after them, the requests above would
    // meet the state they changed, which is no retry), each sent twice.
    let _ = alice.reconnect().await;
    alice.connection().repeat_requests(log.clone());
    bob.connection().repeat_requests(log.clone());
    let from = log.lock().unwrap().len();
    alice.revoke_device("alice/laptop").await.unwrap();
    let token = bob.capabilities().unwrap()[0].1;
    bob.revoke_caps(&[token]).await.unwrap();
    let revocations: Vec<Repeated> = log.lock().unwrap()[from..].to_vec();
    let kinds: BTreeSet<String> = revocations.iter().map(|r| kind(&r.frame.request)).collect();
    assert!(
        kinds.contains("As::RevokeDevice") && kinds.contains("Ods::RevokeCapabilities"),
        "{kinds:?}"
    );
    let wrong = mismatches(&revocations);
    assert!(wrong.is_empty(), "revocations sent again:\n{}", wrong.join("\n"));
}
