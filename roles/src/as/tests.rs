//! Unit tests of the AS logic on an in-memory store: registration, rotation,
//! tokens, revocation, and new devices of a claimed identity.

use std::time::{Duration, UNIX_EPOCH};

use ed25519_dalek::SigningKey;

use mlsd_transport::protocol::r#as::{LABEL_APPROVE, LABEL_DEVICES, LABEL_REVOKE_DEVICE};
use mlsd_transport::protocol::{ApproveBody, DevicesBody, RevokeDeviceBody};

use super::*;
use crate::storage::MemStore;

pub(super) const NOW: u64 = 1_800_000_000;

pub(super) fn logic(registration: Registration) -> AsLogic {
    AsLogic::new(AsSettings {
        signing_key: Some(std::sync::Arc::new(SigningKey::from_bytes(&[9; 32]))),
        registration,
        binding_lifetime: Duration::from_secs(3600),
        tickets: TICKETS,
    })
}

/// A small allowance, so the tests reach it.
const TICKETS: crate::settings::TicketAllowance =
    crate::settings::TicketAllowance { fetch: 5, mailbox: 2, group: 3, blob: 4 };

pub(super) fn at(store: &MemStore, secs: u64) -> RoleContext<'_> {
    RoleContext {
        node: "t",
        store,
        now: UNIX_EPOCH + Duration::from_secs(secs),
        random: zeroize::Zeroizing::new([0; 32]),
    }
}

/// `client`'s registration of `key`'s public half, with a rotation
/// signature by `old` when given.
pub(super) fn register(
    client: &str,
    key: &SigningKey,
    old: Option<&SigningKey>,
    token: Option<&str>,
) -> Request {
    let body = RegisterBody {
        client: client.into(),
        signature_key: key.verifying_key().to_bytes().to_vec(),
        timestamp: NOW,
        token: token.map(String::from),
    };
    let tbs = signing_bytes(LABEL_REGISTER, &body);
    Request::As(AsRequest::Register {
        proof: key.sign(&tbs).to_bytes().to_vec(),
        rotation: old.map(|o| o.sign(&tbs).to_bytes().to_vec()),
        body,
    })
}

pub(super) fn run(logic: &mut AsLogic, store: &MemStore, req: Request) -> Response {
    logic.handle(req, None, &at(store, NOW)).applied(store)
}

/// The signature key of the one binding `identity` has, as a lookup shows it.
fn bound_keys(logic: &mut AsLogic, store: &MemStore, identity: &str) -> Vec<Vec<u8>> {
    match run(logic, store, Request::As(AsRequest::Lookup { identity: identity.into() })) {
        Response::As(AsResponse::Bindings(b)) => {
            b.into_iter().map(|b| b.binding.signature_key).collect()
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_client_id_is_first_come_and_moves_to_a_new_key_only_by_rotation() {
    let (store, mut as_) = (MemStore::new(), logic(Registration::Open));
    let (k1, k2) = (SigningKey::from_bytes(&[1; 32]), SigningKey::from_bytes(&[2; 32]));
    assert!(matches!(
        run(&mut as_, &store, register("alice/phone", &k1, None, None)),
        Response::As(AsResponse::Binding(_))
    ));
    // The same key again is idempotent (a lost reply) and writes nothing.
    let before = store.contents();
    assert!(matches!(
        run(&mut as_, &store, register("alice/phone", &k1, None, None)),
        Response::As(AsResponse::Binding(_))
    ));
    assert_eq!(store.contents(), before);
    // A stranger's key for the taken id is refused, and nothing changes.
    let r = run(&mut as_, &store, register("alice/phone", &k2, None, None));
    assert_eq!(r, Response::Error(WireError::As(AsError::ClientTaken("alice/phone".into()))));
    assert_eq!(store.contents(), before);
    // With the old key's signature, the id moves to the new key.
    assert!(matches!(
        run(&mut as_, &store, register("alice/phone", &k2, Some(&k1), None)),
        Response::As(AsResponse::Binding(_))
    ));
    assert_eq!(bound_keys(&mut as_, &store, "alice"), [k2.verifying_key().to_bytes().to_vec()]);
}

#[test]
fn refusals_change_nothing() {
    let (store, mut as_) = (MemStore::new(), logic(Registration::Token));
    let k = SigningKey::from_bytes(&[1; 32]);
    let mut forged = register("bob/phone", &k, None, Some("t0k3n"));
    if let Request::As(AsRequest::Register { proof, .. }) = &mut forged {
        proof[0] ^= 1;
    }
    let stale = {
        let mut r = register("bob/phone", &k, None, Some("t0k3n"));
        if let Request::As(AsRequest::Register { body, .. }) = &mut r {
            body.timestamp = NOW - 3600;
        }
        r
    };
    for (req, why) in [
        (register("bob/phone", &k, None, None), "no token"),
        (register("bob/phone", &k, None, Some("wrong")), "unknown token"),
        (forged, "bad proof"),
        (stale, "stale timestamp"),
        (register("no-device", &k, None, Some("t0k3n")), "bad client id"),
    ] {
        let r = run(&mut as_, &store, req);
        assert!(matches!(r, Response::Error(_)), "{why}: {r:?}");
        assert!(store.contents().is_empty(), "{why} wrote something");
    }
}

#[test]
fn an_enrollment_token_registers_one_identity_once() {
    let (store, mut as_) = (MemStore::new(), logic(Registration::Token));
    let hash = Sha256::digest(b"t0k3n").to_vec();
    let enroll =
        NodeRequest::Operator(OperatorRequest::Enroll { identity: "bob".into(), token_hash: hash });
    assert_eq!(
        as_.admin(enroll, &at(&store, NOW)).applied(&store),
        Response::Node(NodeResponse::Enrolled)
    );
    let k = SigningKey::from_bytes(&[1; 32]);
    // For another identity the token is no good.
    let r = run(&mut as_, &store, register("carol/phone", &k, None, Some("t0k3n")));
    assert_eq!(r, Response::Error(WireError::As(AsError::BadToken)));
    assert!(matches!(
        run(&mut as_, &store, register("bob/phone", &k, None, Some("t0k3n"))),
        Response::As(AsResponse::Binding(_))
    ));
    // Used up: a second device needs a token of its own (or a live
    // device's approval).
    let r = run(&mut as_, &store, register("bob/laptop", &k, None, Some("t0k3n")));
    assert_eq!(r, Response::Error(WireError::As(AsError::BadToken)));
}

#[test]
fn a_revocation_shows_in_lookups_an_expired_binding_does_not_and_serials_grow() {
    let (store, mut as_) = (MemStore::new(), logic(Registration::Open));
    let (k1, k2) = (SigningKey::from_bytes(&[1; 32]), SigningKey::from_bytes(&[2; 32]));
    let serial = |r: Response| match r {
        Response::As(AsResponse::Binding(b)) => b.binding.serial,
        other => panic!("{other:?}"),
    };
    let s1 = serial(run(&mut as_, &store, register("dave/a", &k1, None, None)));
    // dave's second device is bound by his first one's approval.
    let s2 = serial(run(&mut as_, &store, approve("dave/a", &k1, "dave/b", &k2)));
    assert!(s2 > s1);
    let body = RevokeBody { client: "dave/a".into(), timestamp: NOW };
    let signature = k1.sign(&signing_bytes(LABEL_REVOKE, &body)).to_bytes().to_vec();
    match run(&mut as_, &store, Request::As(AsRequest::Revoke { body, signature })) {
        Response::As(AsResponse::Binding(b)) => assert!(b.revoked_at.is_some()),
        other => panic!("{other:?}"),
    }
    let looked_up = |as_: &mut AsLogic, secs| match as_
        .handle(Request::As(AsRequest::Lookup { identity: "dave".into() }), None, &at(&store, secs))
        .applied(&store)
    {
        Response::As(AsResponse::Bindings(b)) => {
            b.into_iter().map(|b| (b.binding.client, b.revoked_at.is_some())).collect::<Vec<_>>()
        }
        other => panic!("{other:?}"),
    };
    // The revoked one is still shown, as revoked; after the lifetime, none.
    assert_eq!(
        looked_up(&mut as_, NOW),
        [("dave/a".to_string(), true), ("dave/b".to_string(), false)]
    );
    assert!(looked_up(&mut as_, NOW + 3600).is_empty());
}

pub(super) fn pk(key: &SigningKey) -> Vec<u8> {
    key.verifying_key().to_bytes().to_vec()
}

fn approve(approver: &str, by: &SigningKey, client: &str, key: &SigningKey) -> Request {
    let body = ApproveBody {
        approver: approver.into(),
        client: client.into(),
        signature_key: pk(key),
        timestamp: NOW,
    };
    let signature = by.sign(&signing_bytes(LABEL_APPROVE, &body)).to_bytes().to_vec();
    Request::As(AsRequest::Approve { body, signature })
}

pub(super) fn devices(client: &str, key: &SigningKey) -> Request {
    let body = DevicesBody { client: client.into(), timestamp: NOW };
    let signature = key.sign(&signing_bytes(LABEL_DEVICES, &body)).to_bytes().to_vec();
    Request::As(AsRequest::Devices { body, signature })
}

fn revoke_device(by: &str, key: &SigningKey, client: &str) -> Request {
    let body = RevokeDeviceBody { by: by.into(), client: client.into(), timestamp: NOW };
    let signature = key.sign(&signing_bytes(LABEL_REVOKE_DEVICE, &body)).to_bytes().to_vec();
    Request::As(AsRequest::RevokeDevice { body, signature })
}

pub(super) fn clients(logic: &mut AsLogic, store: &MemStore, identity: &str) -> Vec<String> {
    match run(logic, store, Request::As(AsRequest::Lookup { identity: identity.into() })) {
        Response::As(AsResponse::Bindings(b)) => b.into_iter().map(|b| b.binding.client).collect(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_stranger_cannot_add_a_device_to_an_identity_that_has_one() {
    let (store, mut as_) = (MemStore::new(), logic(Registration::Open));
    let (phone, evil) = (SigningKey::from_bytes(&[1; 32]), SigningKey::from_bytes(&[6; 32]));
    assert!(matches!(
        run(&mut as_, &store, register("alice/phone", &phone, None, None)),
        Response::As(AsResponse::Binding(_))
    ));
    // The reproduction: open registration used to bind alice/evil at once.
    match run(&mut as_, &store, register("alice/evil", &evil, None, None)) {
        Response::As(AsResponse::RegistrationPending { pending }) => {
            assert_eq!((pending.client.as_str(), pending.signature_key), ("alice/evil", pk(&evil)))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(clients(&mut as_, &store, "alice"), ["alice/phone"]);
    // Asking again changes nothing; its own "approval" is refused.
    let before = store.contents();
    assert!(matches!(
        run(&mut as_, &store, register("alice/evil", &evil, None, None)),
        Response::As(AsResponse::RegistrationPending { .. })
    ));
    let r = run(&mut as_, &store, approve("alice/evil", &evil, "alice/evil", &evil));
    assert!(matches!(r, Response::Error(WireError::Auth(_))), "{r:?}");
    // Nor can another identity's device, or a forged signature, approve it.
    let bob = SigningKey::from_bytes(&[7; 32]);
    run(&mut as_, &store, register("bob/phone", &bob, None, None));
    let before_bob = store.contents();
    for (req, why) in [
        (approve("bob/phone", &bob, "alice/evil", &evil), "other identity"),
        (approve("alice/phone", &evil, "alice/evil", &evil), "forged approver signature"),
        (devices("alice/evil", &evil), "pending device lists devices"),
        (revoke_device("alice/evil", &evil, "alice/phone"), "pending device revokes"),
    ] {
        let r = run(&mut as_, &store, req);
        assert!(matches!(r, Response::Error(_)), "{why}: {r:?}");
        assert_eq!(store.contents(), before_bob, "{why} wrote something");
    }
    assert_ne!(before, before_bob);
    assert_eq!(clients(&mut as_, &store, "alice"), ["alice/phone"]);
}

#[test]
fn a_live_device_approves_lists_and_revokes_its_siblings() {
    let (store, mut as_) = (MemStore::new(), logic(Registration::Open));
    let (phone, laptop) = (SigningKey::from_bytes(&[1; 32]), SigningKey::from_bytes(&[2; 32]));
    run(&mut as_, &store, register("alice/phone", &phone, None, None));
    run(&mut as_, &store, register("alice/laptop", &laptop, None, None));
    match run(&mut as_, &store, devices("alice/phone", &phone)) {
        Response::As(AsResponse::Devices { bindings, pending }) => {
            assert_eq!(bindings.len(), 1);
            assert_eq!(pending.len(), 1);
            assert_eq!(pending[0].signature_key, pk(&laptop));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        run(&mut as_, &store, approve("alice/phone", &phone, "alice/laptop", &laptop)),
        Response::As(AsResponse::Binding(_))
    ));
    // The laptop's next registration gets the binding; nothing is pending.
    assert!(matches!(
        run(&mut as_, &store, register("alice/laptop", &laptop, None, None)),
        Response::As(AsResponse::Binding(_))
    ));
    assert_eq!(clients(&mut as_, &store, "alice"), ["alice/laptop", "alice/phone"]);
    match run(&mut as_, &store, devices("alice/laptop", &laptop)) {
        Response::As(AsResponse::Devices { pending, .. }) => assert!(pending.is_empty()),
        other => panic!("{other:?}"),
    }
    // The phone is lost: the laptop revokes it.
    match run(&mut as_, &store, revoke_device("alice/laptop", &laptop, "alice/phone")) {
        Response::As(AsResponse::Binding(b)) => assert!(b.revoked_at.is_some()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_revoked_device_id_stays_its_owners() {
    let (store, mut as_) = (MemStore::new(), logic(Registration::Open));
    let (phone, other) = (SigningKey::from_bytes(&[1; 32]), SigningKey::from_bytes(&[3; 32]));
    let registered = run(&mut as_, &store, register("carol/phone", &phone, None, None));
    let body = RevokeBody { client: "carol/phone".into(), timestamp: NOW };
    let signature = phone.sign(&signing_bytes(LABEL_REVOKE, &body)).to_bytes().to_vec();
    run(&mut as_, &store, Request::As(AsRequest::Revoke { body, signature }));
    // The very same registration again is a repeat: its first answer, and
    // nothing bound again.
    let before = store.contents();
    let r = run(&mut as_, &store, register("carol/phone", &phone, None, None));
    assert_eq!(r, registered);
    assert_eq!(store.contents(), before);
    // Signed anew, neither the old key nor a new one rebinds it, and no
    // other device id of carol binds by itself either.
    let later = |client: &str, key: &SigningKey| {
        let mut r = register(client, key, None, None);
        if let Request::As(AsRequest::Register { body, proof, .. }) = &mut r {
            body.timestamp = NOW + 1;
            *proof = key.sign(&signing_bytes(LABEL_REGISTER, body)).to_bytes().to_vec();
        }
        r
    };
    for (client, key) in [("carol/phone", &phone), ("carol/phone", &other), ("carol/tab", &other)] {
        assert!(
            matches!(
                run(&mut as_, &store, later(client, key)),
                Response::As(AsResponse::RegistrationPending { .. })
            ),
            "{client}"
        );
    }
    assert!(clients(&mut as_, &store, "carol").iter().all(|c| c == "carol/phone"));
    // An operator's token releases the identity to its holder.
    let hash = Sha256::digest(b"release").to_vec();
    let enroll = NodeRequest::Operator(OperatorRequest::Enroll {
        identity: "carol".into(),
        token_hash: hash,
    });
    as_.admin(enroll, &at(&store, NOW)).applied(&store);
    assert!(matches!(
        run(&mut as_, &store, register("carol/tab", &other, None, Some("release"))),
        Response::As(AsResponse::Binding(_))
    ));
}

#[test]
fn pending_registrations_are_bounded_per_identity() {
    let (store, mut as_) = (MemStore::new(), logic(Registration::Open));
    let phone = SigningKey::from_bytes(&[1; 32]);
    run(&mut as_, &store, register("erin/phone", &phone, None, None));
    for n in 0..devices::MAX_PENDING {
        let r = run(&mut as_, &store, register(&format!("erin/d{n}"), &phone, None, None));
        assert!(matches!(r, Response::As(AsResponse::RegistrationPending { .. })), "{r:?}");
    }
    let r = run(&mut as_, &store, register("erin/one-more", &phone, None, None));
    assert_eq!(
        r,
        Response::Error(WireError::As(AsError::TooManyDevices {
            max: devices::MAX_PENDING as u32
        }))
    );
    // Declining one makes room.
    assert!(matches!(
        run(&mut as_, &store, revoke_device("erin/phone", &phone, "erin/d0")),
        Response::As(AsResponse::Devices { .. })
    ));
    assert!(matches!(
        run(&mut as_, &store, register("erin/one-more", &phone, None, None)),
        Response::As(AsResponse::RegistrationPending { .. })
    ));
}

#[test]
fn a_signed_request_acts_at_most_once() {
    let (store, mut as_) = (MemStore::new(), logic(Registration::Open));
    let (phone, laptop) = (SigningKey::from_bytes(&[1; 32]), SigningKey::from_bytes(&[2; 32]));
    let first = register("fred/phone", &phone, None, None);
    run(&mut as_, &store, first.clone());
    // A repeat that changes nothing is answered as before (a lost reply).
    assert!(matches!(run(&mut as_, &store, first.clone()), Response::As(AsResponse::Binding(_))));
    let approval = approve("fred/phone", &phone, "fred/laptop", &laptop);
    let approved = run(&mut as_, &store, approval.clone());
    assert!(matches!(approved, Response::As(AsResponse::Binding(_))));
    // Sent again at once (its answer lost): the same answer, nothing new.
    let before = store.contents();
    assert_eq!(run(&mut as_, &store, approval.clone()), approved);
    assert_eq!(store.contents(), before);
    match run(&mut as_, &store, revoke_device("fred/phone", &phone, "fred/laptop")) {
        Response::As(AsResponse::Binding(b)) => assert!(b.revoked_at.is_some()),
        other => panic!("{other:?}"),
    }
    // Replayed within the timestamp window, the approval would bind the
    // revoked laptop again; it gets its first answer and changes nothing.
    let before = store.contents();
    let r = run(&mut as_, &store, approval);
    assert_eq!(r, approved);
    assert_eq!(store.contents(), before);
    // The same for the first registration replayed after the phone
    // revoked itself: it would leave a pending request behind.
    let body = RevokeBody { client: "fred/phone".into(), timestamp: NOW };
    let signature = phone.sign(&signing_bytes(LABEL_REVOKE, &body)).to_bytes().to_vec();
    run(&mut as_, &store, Request::As(AsRequest::Revoke { body, signature }));
    let before = store.contents();
    let r = run(&mut as_, &store, first);
    assert!(
        matches!(r, Response::As(AsResponse::Binding(ref b)) if b.revoked_at.is_none()),
        "{r:?}"
    );
    assert_eq!(store.contents(), before);
}

#[test]
fn a_binding_is_renewed_by_its_key_in_the_second_half_of_its_life() {
    let (store, mut as_) = (MemStore::new(), logic(Registration::Open));
    let k = SigningKey::from_bytes(&[1; 32]);
    let binding = |r: Response| match r {
        Response::As(AsResponse::Binding(b)) => b.binding,
        other => panic!("{other:?}"),
    };
    let first = binding(run(&mut as_, &store, register("gail/phone", &k, None, None)));
    // Early on, registering again returns the same binding and writes nothing.
    let register_at = |as_: &mut AsLogic, secs: u64| {
        let mut r = register("gail/phone", &k, None, None);
        if let Request::As(AsRequest::Register { body, proof, .. }) = &mut r {
            body.timestamp = secs;
            *proof = k.sign(&signing_bytes(LABEL_REGISTER, body)).to_bytes().to_vec();
        }
        as_.handle(r, None, &at(&store, secs)).applied(&store)
    };
    let before = store.contents();
    assert_eq!(binding(register_at(&mut as_, NOW + 600)), first);
    assert_eq!(store.contents(), before);
    // With less than half of its hour left, it is renewed.
    let renewed = binding(register_at(&mut as_, NOW + 2400));
    assert_eq!(renewed.signature_key, first.signature_key);
    assert!(renewed.serial > first.serial);
    assert_eq!(renewed.expires_at, NOW + 2400 + 3600);
    // A stranger's key still cannot take it over.
    let other = SigningKey::from_bytes(&[2; 32]);
    let mut r = register("gail/phone", &other, None, None);
    if let Request::As(AsRequest::Register { body, proof, .. }) = &mut r {
        body.timestamp = NOW + 2400;
        *proof = other.sign(&signing_bytes(LABEL_REGISTER, body)).to_bytes().to_vec();
    }
    let r = as_.handle(r, None, &at(&store, NOW + 2400)).applied(&store);
    assert_eq!(r, Response::Error(WireError::As(AsError::ClientTaken("gail/phone".into()))));
}

#[test]
fn an_operator_revokes_a_device_and_its_id_stays_the_identitys() {
    let (store, mut as_) = (MemStore::new(), logic(Registration::Open));
    let k = SigningKey::from_bytes(&[1; 32]);
    run(&mut as_, &store, register("hank/phone", &k, None, None));
    let revoke =
        |client: &str| NodeRequest::Operator(OperatorRequest::Revoke { client: client.into() });
    match as_.admin(revoke("hank/phone"), &at(&store, NOW)).applied(&store) {
        Response::As(AsResponse::Binding(b)) => assert!(b.revoked_at.is_some()),
        other => panic!("{other:?}"),
    }
    let before = store.contents();
    for (client, why) in [("hank/tablet", "unknown device"), ("hank", "no device part")] {
        let r = as_.admin(revoke(client), &at(&store, NOW)).applied(&store);
        assert!(matches!(r, Response::Error(WireError::Auth(_))), "{why}: {r:?}");
        assert_eq!(store.contents(), before, "{why}");
    }
}

#[test]
fn lapsed_pending_registrations_make_room_and_never_hide_live_ones() {
    // Bindings outlive the pending requests here, so the phone can list.
    let store = MemStore::new();
    let mut as_ = AsLogic::new(AsSettings {
        signing_key: Some(std::sync::Arc::new(SigningKey::from_bytes(&[9; 32]))),
        registration: Registration::Open,
        binding_lifetime: Duration::from_secs(30 * 24 * 3600),
        tickets: TICKETS,
    });
    let phone = SigningKey::from_bytes(&[1; 32]);
    run(&mut as_, &store, register("ivy/phone", &phone, None, None));
    for n in 0..devices::MAX_PENDING {
        run(&mut as_, &store, register(&format!("ivy/a{n}"), &phone, None, None));
    }
    // A week later they have lapsed: a new request is taken, the lapsed
    // records are gone with it, and the device list shows only the new one.
    let later = NOW + devices::PENDING_LIFETIME_SECS + 1;
    let mut r = register("ivy/z", &phone, None, None);
    if let Request::As(AsRequest::Register { body, proof, .. }) = &mut r {
        body.timestamp = later;
        *proof = phone.sign(&signing_bytes(LABEL_REGISTER, body)).to_bytes().to_vec();
    }
    let r = as_.handle(r, None, &at(&store, later)).applied(&store);
    assert!(matches!(r, Response::As(AsResponse::RegistrationPending { .. })), "{r:?}");
    let pending_keys = store.contents().keys().filter(|k| k.1.starts_with(b"p/")).count();
    assert_eq!(pending_keys, 1);
    let body = DevicesBody { client: "ivy/phone".into(), timestamp: later };
    let signature = phone.sign(&signing_bytes(LABEL_DEVICES, &body)).to_bytes().to_vec();
    let listed = as_
        .handle(Request::As(AsRequest::Devices { body, signature }), None, &at(&store, later))
        .applied(&store);
    match listed {
        Response::As(AsResponse::Devices { pending, .. }) => {
            assert_eq!(pending.iter().map(|p| p.client.as_str()).collect::<Vec<_>>(), ["ivy/z"])
        }
        other => panic!("{other:?}"),
    }
}

/// One lookup page of `identity` after `after`: (client ids, next).
fn page(
    logic: &mut AsLogic,
    store: &MemStore,
    identity: &str,
    after: Option<&str>,
) -> (Vec<String>, Option<String>) {
    let req = Request::As(AsRequest::LookupPage {
        identity: identity.into(),
        after: after.map(Into::into),
    });
    match run(logic, store, req) {
        Response::As(AsResponse::BindingPage { bindings, next }) => {
            (bindings.into_iter().map(|b| b.binding.client).collect(), next)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn lookups_are_paged_and_dead_records_never_hide_live_ones() {
    let (store, mut as_) = (MemStore::new(), logic(Registration::Open));
    // 40 expired or revoked records that sort before alice's 10 live ones.
    let mut batch = Batch::new();
    let record = |client: String, expired: bool, revoked: bool| Record {
        binding: Binding {
            client,
            signature_key: vec![7; 32],
            issued_at: NOW - 10,
            expires_at: if expired { NOW - 1 } else { NOW + 3600 },
            serial: 1,
        },
        revoked_at: revoked.then_some(NOW - 5),
    };
    for i in 0..40 {
        let r = record(format!("alice/a{i:02}"), i % 2 == 0, i % 2 == 1);
        batch.put(SPACE, binding_key(&r.binding.client), record::encode(&r).unwrap());
    }
    for i in 0..10 {
        let r = record(format!("alice/z{i:02}"), false, false);
        batch.put(SPACE, binding_key(&r.binding.client), record::encode(&r).unwrap());
    }
    crate::storage::Store::write(&store, batch).unwrap();

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let (clients, next) = page(&mut as_, &store, "alice", after.as_deref());
        assert!(clients.len() <= LOOKUP_PAGE, "{clients:?}");
        seen.extend(clients);
        pages += 1;
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    // 50 records: 4 pages; the expired ones are left out, the revoked ones
    // shown, and every live one reached.
    assert_eq!(pages, 4);
    let expected: Vec<String> = (0..40)
        .filter(|i| i % 2 == 1)
        .map(|i| format!("alice/a{i:02}"))
        .chain((0..10).map(|i| format!("alice/z{i:02}")))
        .collect();
    assert_eq!(seen, expected);
    // The whole list in one answer (what the CS checks fetches against).
    match run(&mut as_, &store, Request::As(AsRequest::Lookup { identity: "alice".into() })) {
        Response::As(AsResponse::Bindings(b)) => {
            assert_eq!(b.into_iter().map(|b| b.binding.client).collect::<Vec<_>>(), expected)
        }
        other => panic!("{other:?}"),
    }
    // A cursor of another identity, or not a client id, is refused.
    for bad in ["bob/x", "alice", "alice/"] {
        let req = Request::As(AsRequest::LookupPage {
            identity: "alice".into(),
            after: Some(bad.into()),
        });
        assert!(
            matches!(
                run(&mut as_, &store, req),
                Response::Error(WireError::Auth(AuthError::InvalidClientId(_)))
            ),
            "{bad}"
        );
    }
}

#[path = "tickets_tests.rs"]
mod tickets_tests;
