//! The authorization matrix: every request type, sent by someone not entitled
//! to it, is refused with its own specific error, and the node's storage is
//! byte-for-byte what it was before (every key and value of every keyspace,
//! read beside the running node). A final entitled request shows the
//! comparison does see changes.
//!
//! The one write a refused request may cause is the spending of the quota
//! ticket it paid with (decision D12: a refusal costs its ticket, so
//! probing is not free); the matrix counts those records apart and checks
//! there is exactly one per request that paid with a good ticket.

mod common;

use mlsd_transport::protocol::{
    AdmitBody, ApproveBody, AsError, AsRequest, AuthError, BadFrame, ChaosTarget, CountBody,
    CsError, CsRequest, CsResponse, DevicesBody, IdsError, IdsRequest, IdsResponse, NodeFrame,
    NodeRequest, OdsError, OdsRequest, OdsResponse, OperatorRequest, PublishBody, RegisterBody,
    ResponseFrame, RevokeBody, RevokeDeviceBody, RosterMode, SdsError, SdsRequest, Spend,
    ALPN_NODE,
};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{settled, Cluster};
use ed25519_dalek::{Signer, SigningKey};
use mlsd_actors::storage::Contents;
use mlsd_client::mailbox::MailboxKeys;
use mlsd_client::{Client, ClientError, Connection};
use mlsd_transport::frame::{read_message, write_message};
use mlsd_transport::protocol::cs::{LABEL_COUNT, LABEL_PUBLISH};
use mlsd_transport::protocol::identity::signing_bytes;
use mlsd_transport::protocol::ods::{
    MailboxAuth, LABEL_ACK, LABEL_FETCH, LABEL_ISSUE, LABEL_REVOKE as LABEL_REVOKE_CAPS,
    LABEL_SUBSCRIBE,
};
use mlsd_transport::protocol::r#as::{
    admission_hash, LABEL_ADMIT, LABEL_APPROVE, LABEL_DEVICES, LABEL_REGISTER, LABEL_REVOKE,
    LABEL_REVOKE_DEVICE,
};
use mlsd_transport::protocol::tickets::{Ticket, TicketBody, TicketKind, LABEL_TICKETS};
use mlsd_transport::{endpoint, tls, Request, Response, Role, WireError};

const T: Duration = Duration::from_secs(5);

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Mallory's own Ed25519 key: a valid key, just not the one that is bound.
fn mallory_key() -> SigningKey {
    SigningKey::from_bytes(&rand::random::<[u8; 32]>())
}

fn sign(key: &SigningKey, label: &str, body: &impl serde::Serialize) -> Vec<u8> {
    key.sign(&signing_bytes(label, body)).to_bytes().to_vec()
}

/// A mailbox request for `mailbox` signed with someone else's mailbox key.
fn forged_auth<T: serde::Serialize>(mailbox: [u8; 32], label: &str, op: &T) -> MailboxAuth {
    let mallory = MailboxKeys::generate().unwrap();
    let mut auth = mallory.auth(label, now_ms(), op);
    auth.mailbox = mailbox;
    auth
}

/// The error a request got (or a description of what came instead).
async fn refusal(conn: &Connection, req: Request) -> Result<WireError, String> {
    match conn.request(req).await {
        Err(ClientError::Server(e)) => Ok(e),
        Ok(Response::Error(e)) => Ok(e),
        other => Err(format!("not refused: {other:?}")),
    }
}

/// The error a request paying with `ticket` got.
async fn paid_refusal(
    conn: &Connection,
    req: Request,
    ticket: &Ticket,
) -> Result<WireError, String> {
    match conn.request_paid(req, Some(ticket.clone())).await {
        Err(ClientError::Server(e)) => Ok(e),
        other => Err(format!("not refused: {other:?}")),
    }
}

/// The error a client call got (or a description of what came instead).
fn server_refusal<T: std::fmt::Debug>(r: Result<T, ClientError>) -> Result<WireError, String> {
    match r {
        Err(ClientError::Server(e)) => Ok(e),
        other => Err(format!("not refused: {other:?}")),
    }
}

/// Sends a node frame on a client connection, as a client impersonating a node would.
async fn node_frame_on_client_conn(
    conn: &Connection,
    req: NodeRequest,
) -> Result<WireError, String> {
    let (mut send, mut recv) = conn.quic().open_bi().await.map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    write_message(&mut buf, &NodeFrame::new(req), 1 << 20).await.map_err(|e| e.to_string())?;
    send.write_all(&buf).await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    let f: ResponseFrame = read_message(&mut recv, 1 << 20, T).await.map_err(|e| e.to_string())?;
    match f.response {
        Response::Error(e) => Ok(e),
        other => Err(format!("not refused: {other:?}")),
    }
}

/// What changed between two reads, for the failure message.
fn diff(a: &Contents, b: &Contents) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => out.push(format!("removed {}/{}", k.0, hex::encode(&k.1))),
            Some(w) if w != v => out.push(format!("changed {}/{}", k.0, hex::encode(&k.1))),
            _ => {}
        }
    }
    for k in b.keys().filter(|k| !a.contains_key(*k)) {
        out.push(format!("added {}/{}", k.0, hex::encode(&k.1)));
    }
    out
}

struct World {
    alice: Client,
    bob: Client,
    mallory: Client,
    /// Bob's send prepared in epoch 1, before the group moved on.
    stale_send: Request,
    /// Carol's send after she was removed (she has not processed her removal).
    removed_send: Request,
    /// A fetch of Alice's that was served once already.
    served_fetch: Request,
    /// An ack of Alice's that was served once already.
    served_ack: Request,
    /// One of Bob's KeyPackages, fetched by Mallory.
    bobs_key_package: Vec<u8>,
    /// Good tickets of Mallory's, one per kind the rows pay with.
    tickets: Vec<Ticket>,
    /// A group ticket Mallory spent on a group of her own.
    spent: Ticket,
}

/// Alice, Bob and Carol in group G (stored roster), Carol removed; Mallory
/// registered with her own identity; requests to replay captured beforehand.
async fn world(c: &Cluster) -> World {
    let mut alice = c.registered("alice/phone", "n1", 2).await;
    let mut bob = c.registered("bob/phone", "n1", 2).await;
    let mut carol = c.registered("carol/phone", "n1", 2).await;
    let mallory = c.registered("mallory/phone", "n1", 1).await;
    alice.create_group("G", RosterMode::Stored).await.unwrap();
    alice.add_members("G", &["bob", "carol"]).await.unwrap();
    bob.receive().await.unwrap();
    carol.receive().await.unwrap();
    let stale_send = bob.prepare_text("G", "from epoch 1").unwrap();
    alice.remove_members("G", &["carol"]).await.unwrap();
    bob.receive().await.unwrap();
    let removed_send = carol.prepare_text("G", "after removal").unwrap();
    alice.send_text("G", "queued for bob").await.unwrap();

    let keys = alice.mailbox_keys().unwrap();
    let served_fetch = Request::Ods(OdsRequest::Fetch {
        auth: keys.auth(LABEL_FETCH, now_ms(), &(0u64, 10u32)),
        after: 0,
        limit: 10,
    });
    assert!(matches!(
        alice.connection().request(served_fetch.clone()).await,
        Ok(Response::Ods(OdsResponse::Envelopes(_)))
    ));
    let served_ack =
        Request::Ods(OdsRequest::Ack { auth: keys.auth(LABEL_ACK, now_ms() + 1, &0u64), up_to: 0 });
    assert!(matches!(
        alice.connection().request(served_ack.clone()).await,
        Ok(Response::Ods(OdsResponse::Acked { .. }))
    ));
    // A newer request served after both: sent again, they are replays, not
    // retries of the last request (which the ODS answers again).
    let newer = Request::Ods(OdsRequest::Fetch {
        auth: keys.auth(LABEL_FETCH, now_ms() + 2, &(0u64, 10u32)),
        after: 0,
        limit: 10,
    });
    assert!(matches!(
        alice.connection().request(newer).await,
        Ok(Response::Ods(OdsResponse::Envelopes(_)))
    ));

    let fetched = mallory
        .paid_request(Request::Cs(CsRequest::FetchKeyPackages { identity: "bob".into() }))
        .await;
    let bobs_key_package = match fetched {
        Ok(Response::Cs(CsResponse::KeyPackages(v))) if !v.is_empty() => v[0].key_package.clone(),
        other => panic!("fetch of bob's KeyPackage: {other:?}"),
    };
    let mut tickets = Vec::new();
    for kind in [TicketKind::Mailbox, TicketKind::Group, TicketKind::Blob] {
        tickets.push(mallory.take_ticket(kind).await.unwrap());
    }
    let spent = mallory.take_ticket(TicketKind::Group).await.unwrap();
    let own = Request::Ids(IdsRequest::CreateGroup {
        group: b"mallory's own".to_vec(),
        mode: RosterMode::Client,
        auth_key: rand::random(),
        roster: None,
    });
    let created = mallory.connection().request_paid(own, Some(spent.clone())).await;
    assert!(matches!(created, Ok(Response::Ids(IdsResponse::GroupCreated))), "{created:?}");
    World {
        tickets,
        spent,
        alice,
        bob,
        mallory,
        stale_send,
        removed_send,
        served_fetch,
        served_ack,
        bobs_key_package,
    }
}

type Row = (&'static str, Result<WireError, String>, fn(&WireError) -> bool);

#[tokio::test(flavor = "multi_thread")]
async fn every_unentitled_request_is_refused_and_changes_no_stored_byte() {
    let _watchdog = common::init();
    // One ODS shard, so that Mallory's mailbox and Bob's share it: a
    // capability token is unique within its shard, and a copy reaches only a
    // mailbox of the shard its capability names (`caps::check`), so claiming
    // a token in another shard reaches nothing of its first holder's.
    let mut c = Cluster::configured(
        &[("n1", &Role::ALL)],
        "shards = 1\n",
        "[limits]\ncall_timeout_ms = 1500\nconnect_timeout_ms = 1000\n",
    );
    c.start_all().await;
    let mut w = world(&c).await;
    let data = c.dir.path().join("data/n1");
    let before = settled(&data);
    assert!(before.keys().any(|k| k.0 == "ods") && before.keys().any(|k| k.0 == "ids"));

    let m = w.mallory.connection();
    let mk = mallory_key();
    let mk_pub = mk.verifying_key().to_bytes().to_vec();
    let alice_mailbox = w.alice.mailbox_keys().unwrap().id;
    let group = w.alice.group_id("G").unwrap();
    let blob = w.alice.group_data_id("G").unwrap();
    let mut rows: Vec<Row> = Vec::new();

    // AS
    let body = RegisterBody {
        client: "alice/phone".into(),
        signature_key: mk_pub.clone(),
        timestamp: now_secs(),
        token: None,
    };
    let req = Request::As(AsRequest::Register {
        proof: sign(&mk, LABEL_REGISTER, &body),
        body,
        rotation: None,
    });
    rows.push(("register: take over a bound client id", refusal(m, req).await, |e| {
        matches!(e, WireError::As(AsError::ClientTaken(_)))
    }));
    let body = RegisterBody {
        client: "mallory/laptop".into(),
        signature_key: mk_pub.clone(),
        timestamp: now_secs(),
        token: None,
    };
    let req = Request::As(AsRequest::Register {
        proof: sign(&mallory_key(), LABEL_REGISTER, &body),
        body,
        rotation: None,
    });
    rows.push(("register: proof by another key", refusal(m, req).await, |e| {
        matches!(e, WireError::Auth(AuthError::BadSignature(_)))
    }));
    let body = RegisterBody {
        client: "mallory/laptop".into(),
        signature_key: mk_pub.clone(),
        timestamp: now_secs() - 3600,
        token: None,
    };
    let req = Request::As(AsRequest::Register {
        proof: sign(&mk, LABEL_REGISTER, &body),
        body,
        rotation: None,
    });
    rows.push(("register: replayed an hour later", refusal(m, req).await, |e| {
        matches!(e, WireError::Auth(AuthError::StaleTimestamp { .. }))
    }));
    let body = RevokeBody { client: "alice/phone".into(), timestamp: now_secs() };
    let req = Request::As(AsRequest::Revoke { signature: sign(&mk, LABEL_REVOKE, &body), body });
    rows.push(("revoke: someone else's binding", refusal(m, req).await, |e| {
        matches!(e, WireError::Auth(AuthError::BadSignature(_)))
    }));
    let body = RevokeBody { client: "nobody/phone".into(), timestamp: now_secs() };
    let req = Request::As(AsRequest::Revoke { signature: sign(&mk, LABEL_REVOKE, &body), body });
    rows.push(("revoke: unknown client", refusal(m, req).await, |e| {
        matches!(e, WireError::Auth(AuthError::UnknownClient(_)))
    }));
    // New devices (a stranger's registration of alice/evil is kept as
    // pending, so it is not in this matrix: tests/devices.rs shows it binds
    // nothing). Nobody but a live device of alice approves, lists or revokes.
    rows.push((
        "approve: a stranger's device approves a device of alice",
        server_refusal(w.mallory.approve("alice/evil", mk_pub.clone()).await),
        |e| matches!(e, WireError::Auth(AuthError::NotAuthorized(_))),
    ));
    let body = ApproveBody {
        approver: "alice/phone".into(),
        client: "alice/evil".into(),
        signature_key: mk_pub.clone(),
        timestamp: now_secs(),
    };
    let req = Request::As(AsRequest::Approve { signature: sign(&mk, LABEL_APPROVE, &body), body });
    rows.push(("approve: forged as alice's phone", refusal(m, req).await, |e| {
        matches!(e, WireError::Auth(AuthError::BadSignature(_)))
    }));
    rows.push((
        "admit: a stranger's device leaves a code for a device of alice",
        server_refusal(w.mallory.admit("alice/evil").await.map(|_| ())),
        |e| matches!(e, WireError::Auth(AuthError::NotAuthorized(_))),
    ));
    let body = AdmitBody {
        approver: "alice/phone".into(),
        client: "alice/evil".into(),
        code_hash: admission_hash("alice/evil", "0000"),
        timestamp: now_secs(),
    };
    let req = Request::As(AsRequest::Admit { signature: sign(&mk, LABEL_ADMIT, &body), body });
    rows.push(("admit: forged as alice's phone", refusal(m, req).await, |e| {
        matches!(e, WireError::Auth(AuthError::BadSignature(_)))
    }));
    let body = DevicesBody { client: "alice/phone".into(), timestamp: now_secs() };
    let req = Request::As(AsRequest::Devices { signature: sign(&mk, LABEL_DEVICES, &body), body });
    rows.push(("devices: alice's list, forged as her phone", refusal(m, req).await, |e| {
        matches!(e, WireError::Auth(AuthError::BadSignature(_)))
    }));
    rows.push((
        "revoke device: alice's phone, by a stranger's device",
        server_refusal(w.mallory.revoke_device("alice/phone").await.map(|_| ())),
        |e| matches!(e, WireError::Auth(AuthError::NotAuthorized(_))),
    ));
    let body = RevokeDeviceBody {
        by: "alice/laptop".into(),
        client: "alice/phone".into(),
        timestamp: now_secs(),
    };
    let req = Request::As(AsRequest::RevokeDevice {
        signature: sign(&mk, LABEL_REVOKE_DEVICE, &body),
        body,
    });
    rows.push(("revoke device: by a device alice does not have", refusal(m, req).await, |e| {
        matches!(e, WireError::Auth(AuthError::UnknownClient(_)))
    }));

    let body = TicketBody {
        client: "alice/phone".into(),
        kind: TicketKind::Group,
        day: mlsd_transport::protocol::tickets::day_of(now_secs()),
        blinded: mlsd_transport::ticket::blind(4).unwrap().1,
        timestamp: now_secs(),
    };
    let req =
        Request::As(AsRequest::IssueTickets { signature: sign(&mk, LABEL_TICKETS, &body), body });
    rows.push((
        "issue tickets: on alice's allowance, signed by another key",
        refusal(m, req).await,
        |e| matches!(e, WireError::Auth(AuthError::BadSignature(_))),
    ));

    // CS
    let req = Request::Cs(CsRequest::FetchKeyPackages { identity: "bob".into() });
    rows.push(("fetch KeyPackages: without a ticket", refusal(m, req).await, |e| {
        matches!(e, WireError::Auth(AuthError::TicketRequired { kind: TicketKind::Fetch }))
    }));
    let body = PublishBody {
        client: "alice/phone".into(),
        key_packages: vec![w.bobs_key_package.clone()],
        last_resort: None,
        timestamp: now_secs(),
    };
    let req = Request::Cs(CsRequest::PublishKeyPackages {
        signature: sign(&mk, LABEL_PUBLISH, &body),
        body,
    });
    rows.push(("publish: as another client", refusal(m, req).await, |e| {
        matches!(e, WireError::Auth(AuthError::BadSignature(_)))
    }));
    let body = PublishBody {
        client: "nobody/phone".into(),
        key_packages: vec![w.bobs_key_package.clone()],
        last_resort: None,
        timestamp: now_secs(),
    };
    let req = Request::Cs(CsRequest::PublishKeyPackages {
        signature: sign(&mk, LABEL_PUBLISH, &body),
        body,
    });
    rows.push(("publish: unregistered client", refusal(m, req).await, |e| {
        matches!(e, WireError::Auth(AuthError::UnknownClient(_)))
    }));
    rows.push((
        "publish: someone else's KeyPackage under one's own signature",
        match w.mallory.upload(vec![w.bobs_key_package.clone()], None).await {
            Err(ClientError::Server(e)) => Ok(e),
            other => Err(format!("not refused: {other:?}")),
        },
        |e| matches!(e, WireError::Cs(CsError::InvalidKeyPackage { index: 0, .. })),
    ));
    let body = CountBody { client: "alice/phone".into(), timestamp: now_secs() };
    let req =
        Request::Cs(CsRequest::CountKeyPackages { signature: sign(&mk, LABEL_COUNT, &body), body });
    rows.push(("count: another client's KeyPackages", refusal(m, req).await, |e| {
        matches!(e, WireError::Auth(AuthError::BadSignature(_)))
    }));

    // ODS
    let req = Request::Ods(OdsRequest::Fetch {
        auth: forged_auth(alice_mailbox, LABEL_FETCH, &(0u64, 10u32)),
        after: 0,
        limit: 10,
    });
    rows.push(("fetch: wrong mailbox key", refusal(m, req).await, |e| {
        matches!(e, WireError::Auth(AuthError::BadSignature(_)))
    }));
    rows.push(("fetch: replayed signature", refusal(m, w.served_fetch.clone()).await, |e| {
        matches!(e, WireError::Auth(AuthError::Replayed))
    }));
    let req = Request::Ods(OdsRequest::Fetch {
        auth: forged_auth(rand::random(), LABEL_FETCH, &(0u64, 10u32)),
        after: 0,
        limit: 10,
    });
    rows.push(("fetch: unknown mailbox", refusal(m, req).await, |e| {
        matches!(e, WireError::Ods(OdsError::UnknownMailbox))
    }));
    let req = Request::Ods(OdsRequest::Ack {
        auth: forged_auth(alice_mailbox, LABEL_ACK, &u64::MAX),
        up_to: u64::MAX,
    });
    rows.push(("ack: wrong mailbox key", refusal(m, req).await, |e| {
        matches!(e, WireError::Auth(AuthError::BadSignature(_)))
    }));
    rows.push(("ack: replayed signature", refusal(m, w.served_ack.clone()).await, |e| {
        matches!(e, WireError::Auth(AuthError::Replayed))
    }));
    let req = Request::Ods(OdsRequest::Subscribe {
        auth: forged_auth(alice_mailbox, LABEL_SUBSCRIBE, &0u64),
        after: 0,
    });
    rows.push(("subscribe: wrong mailbox key", refusal(m, req).await, |e| {
        matches!(e, WireError::Auth(AuthError::BadSignature(_)))
    }));
    let req = Request::Ods(OdsRequest::OpenMailbox {
        mailbox: alice_mailbox,
        auth_key: mk_pub.clone(),
        push: None,
    });
    rows.push(("open mailbox: without a ticket", refusal(m, req.clone()).await, |e| {
        matches!(e, WireError::Auth(AuthError::TicketRequired { kind: TicketKind::Mailbox }))
    }));
    rows.push(("open mailbox: an existing id", paid_refusal(m, req, &w.tickets[0]).await, |e| {
        matches!(e, WireError::Ods(OdsError::MailboxTaken))
    }));
    let tokens = vec![rand::random::<[u8; 32]>()];
    let req = Request::Ods(OdsRequest::IssueCapabilities {
        auth: forged_auth(alice_mailbox, LABEL_ISSUE, &(&tokens, &None::<[u8; 32]>)),
        tokens,
        push_key: None,
    });
    rows.push(("issue capability: for alice's mailbox", refusal(m, req).await, |e| {
        matches!(e, WireError::Auth(AuthError::BadSignature(_)))
    }));
    // Bob's capability, as his fetched KeyPackage carries it, cannot be
    // claimed for Mallory's own mailbox (nor revoked by her: below).
    let bobs_token = common::mailbox_ref_in(&w.bobs_key_package).cap.token;
    let mallory_keys = w.mallory.mailbox_keys().unwrap();
    let tokens = vec![bobs_token];
    let req = Request::Ods(OdsRequest::IssueCapabilities {
        auth: mallory_keys.auth(LABEL_ISSUE, now_ms(), &(&tokens, &None::<[u8; 32]>)),
        tokens,
        push_key: None,
    });
    rows.push(("issue capability: another mailbox's token", refusal(m, req).await, |e| {
        matches!(e, WireError::Ods(OdsError::TokenTaken))
    }));
    let tokens = vec![bobs_token];
    let req = Request::Ods(OdsRequest::RevokeCapabilities {
        auth: forged_auth(w.bob.mailbox_keys().unwrap().id, LABEL_REVOKE_CAPS, &tokens),
        tokens,
    });
    rows.push(("revoke capability: bob's, with another key", refusal(m, req).await, |e| {
        matches!(e, WireError::Auth(AuthError::BadSignature(_)))
    }));

    // IDS
    let req = Request::Ids(IdsRequest::CreateGroup {
        group: group.clone(),
        mode: RosterMode::Client,
        auth_key: rand::random(),
        roster: None,
    });
    rows.push((
        "create group: paid with a blob ticket",
        paid_refusal(m, req.clone(), &w.tickets[2]).await,
        |e| matches!(e, WireError::Auth(AuthError::TicketRequired { kind: TicketKind::Group })),
    ));
    rows.push((
        "create group: a ticket spent on another group",
        paid_refusal(m, req.clone(), &w.spent).await,
        |e| matches!(e, WireError::Auth(AuthError::TicketSpent)),
    ));
    rows.push(("create group: an existing id", paid_refusal(m, req, &w.tickets[1]).await, |e| {
        matches!(e, WireError::Ids(IdsError::GroupTaken))
    }));
    rows.push(("send: stale epoch", refusal(m, w.stale_send.clone()).await, |e| {
        matches!(e, WireError::Ids(IdsError::StaleEpoch { current: 2 }))
    }));
    rows.push(("send: removed member", refusal(m, w.removed_send.clone()).await, |e| {
        matches!(e, WireError::Ids(IdsError::StaleEpoch { current: 2 }))
    }));
    let mut forged = w.bob.prepare_text("G", "mac by bob, flipped").unwrap();
    if let Request::Ids(IdsRequest::Send { mac, .. }) = &mut forged {
        mac[0] ^= 1;
    }
    rows.push(("send: not a holder of the epoch auth key", refusal(m, forged).await, |e| {
        matches!(e, WireError::Ids(IdsError::BadMac))
    }));
    let mut unknown = w.stale_send.clone();
    if let Request::Ids(IdsRequest::Send { body, .. }) = &mut unknown {
        body.group = b"no such group".to_vec();
    }
    rows.push(("send: unknown group", refusal(m, unknown).await, |e| {
        matches!(e, WireError::Ids(IdsError::UnknownGroup))
    }));

    // SDS
    let req = Request::Sds(SdsRequest::PutBlob {
        id: blob,
        cap: rand::random(),
        offset: 0,
        total: 4,
        data: b"evil".to_vec(),
    });
    let mut forged = w.tickets[2].clone();
    forged.output[0] ^= 1;
    rows.push(("put blob: forged ticket", paid_refusal(m, req.clone(), &forged).await, |e| {
        matches!(e, WireError::Auth(AuthError::BadTicket(_)))
    }));
    rows.push(("put blob: wrong capability", paid_refusal(m, req, &w.tickets[2]).await, |e| {
        matches!(e, WireError::Sds(SdsError::WrongCapability))
    }));
    let req = Request::Sds(SdsRequest::DeleteBlob { id: blob, cap: rand::random() });
    rows.push(("delete blob: wrong capability", refusal(m, req).await, |e| {
        matches!(e, WireError::Sds(SdsError::WrongCapability))
    }));

    // Node protocol
    rows.push((
        "enroll: from a client connection",
        node_frame_on_client_conn(m, enroll_mallory()).await,
        |e| matches!(e, WireError::Frame(BadFrame::Malformed(_))),
    ));
    rows.push((
        "operator revoke: from a client connection",
        node_frame_on_client_conn(m, revoke_alice()).await,
        |e| matches!(e, WireError::Frame(BadFrame::Malformed(_))),
    ));
    let spend = NodeRequest::Spend(Spend { ticket: w.tickets[2].clone(), bind: [0; 32] });
    rows.push((
        "spend ticket: from a client connection",
        node_frame_on_client_conn(m, spend.clone()).await,
        |e| matches!(e, WireError::Frame(BadFrame::Malformed(_))),
    ));
    let chaos =
        NodeRequest::Operator(OperatorRequest::Chaos { target: ChaosTarget::Role(Role::Ods) });
    rows.push((
        "chaos: from the operator when the cluster does not allow it",
        node_refusal(&c, "operator", chaos.clone()).await,
        |e| matches!(e, WireError::Auth(AuthError::NotAuthorized(m)) if m.contains("chaos")),
    ));
    // A node's key (say, on a host an attacker took) grants no operator power.
    let operator_only = [
        ("enroll: with a node certificate", enroll_mallory()),
        ("operator revoke: with a node certificate", revoke_alice()),
        ("chaos: with a node certificate", chaos),
        (
            "remove a node: with a node certificate",
            NodeRequest::Operator(OperatorRequest::RemoveNode { node: "n1".into(), dead: true }),
        ),
    ];
    for (name, req) in operator_only {
        rows.push((
            name,
            node_refusal(&c, "n1", req).await,
            |e| matches!(e, WireError::Auth(AuthError::NotAuthorized(m)) if m.contains("operator")),
        ));
    }
    // ... and the operator's key no node traffic.
    let node_only = [
        ("enqueue: with the operator certificate", NodeRequest::Enqueue(Vec::new())),
        ("spend ticket: with the operator certificate", spend),
        (
            "forwarded request: with the operator certificate",
            NodeRequest::Forward(Request::As(AsRequest::Lookup { identity: "alice".into() })),
        ),
    ];
    for (name, req) in node_only {
        rows.push((
            name,
            node_refusal(&c, "operator", req).await,
            |e| matches!(e, WireError::Auth(AuthError::NotAuthorized(m)) if m.contains("node")),
        ));
    }
    rows.push(("node protocol: no node certificate", no_certificate_enqueue(&c).await, |e| {
        matches!(e, WireError::Auth(AuthError::NotAuthorized(m)) if m == "node or operator certificate required")
    }));

    let mut wrong = Vec::new();
    for (name, got, expected) in &rows {
        match got {
            Ok(e) if expected(e) => {}
            other => wrong.push(format!("{name}: {other:?}")),
        }
    }
    assert!(wrong.is_empty(), "unexpected answers:\n{}", wrong.join("\n"));

    // Exactly the three requests that paid with a good ticket (and were
    // refused by the role) spent it; nothing else changed.
    let (after, spent) = without_spent_tickets(settled(&data));
    let (before, spent_before) = without_spent_tickets(before);
    assert_eq!(spent.len(), spent_before.len() + 3, "spent tickets");
    assert!(before == after, "refused requests changed storage: {:?}", diff(&before, &after));
    let after = settled(&data);

    // Control: an entitled request does change what the comparison reads.
    let mut bob = w.bob;
    bob.send_text("G", "entitled").await.unwrap();
    let changed = settled(&data);
    assert!(!diff(&after, &changed).is_empty(), "the storage comparison saw no change");
}

/// `contents` without the AS's spent-ticket records (`k/…`, after the
/// two-byte shard prefix), and those.
fn without_spent_tickets(contents: Contents) -> (Contents, Vec<Vec<u8>>) {
    let (spent, rest): (Contents, Contents) =
        contents.into_iter().partition(|(k, _)| k.0 == "as" && k.1.get(2) == Some(&b'k'));
    (rest, spent.into_keys().map(|k| k.1).collect())
}

fn enroll_mallory() -> NodeRequest {
    NodeRequest::Operator(OperatorRequest::Enroll {
        identity: "mallory".into(),
        token_hash: vec![0; 32],
    })
}

fn revoke_alice() -> NodeRequest {
    NodeRequest::Operator(OperatorRequest::Revoke { client: "alice/phone".into() })
}

/// `req` sent on a node connection with the certificate `cert` (a node's
/// name or `"operator"`); `Ok` is the refusal.
async fn node_refusal(c: &Cluster, cert: &str, req: NodeRequest) -> Result<WireError, String> {
    match c.node_call(cert, "n1", req).await {
        Response::Error(e) => Ok(e),
        other => Err(format!("not refused: {other:?}")),
    }
}

/// A node-protocol connection without a certificate: the node closes it
/// before serving its first request; `Ok` carries the close reason the node
/// gave (a timeout or a handshake failure is an `Err`, not a refusal).
async fn no_certificate_enqueue(c: &Cluster) -> Result<WireError, String> {
    let ca = tls::load_certs(&c.ca()).unwrap();
    let mut none = tls::client_config(&ca).unwrap();
    none.alpn_protocols = vec![ALPN_NODE.to_vec()];
    let q = endpoint::quinn_client_config(none).unwrap();
    let ep = endpoint::client_endpoint(c.addr("n1"), q).unwrap();
    // The handshake itself succeeds (the node asks for, but cannot demand, a
    // client certificate on the node ALPN); the node then closes the
    // connection with its reason, before serving anything.
    let conn = endpoint::connect(&ep, c.addr("n1"), &tls::node_dns_name("n1"), T)
        .await
        .map_err(|e| format!("the handshake failed instead: {e}"))?;
    let req = NodeFrame::new(NodeRequest::Enqueue(Vec::new()));
    match endpoint::call::<_, ResponseFrame>(&conn, &req, 1 << 20, T).await {
        Err(e) => match conn.close_reason() {
            Some(quinn::ConnectionError::ApplicationClosed(a)) => Ok(WireError::Auth(
                AuthError::NotAuthorized(String::from_utf8_lossy(&a.reason).into_owned()),
            )),
            other => Err(format!("the call failed ({e}) without the node closing: {other:?}")),
        },
        Ok(r) => Err(format!("served without a certificate: {r:?}")),
    }
}
