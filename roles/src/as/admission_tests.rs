//! Unit tests of approval codes: a live device's code admits its new
//! device past a pending queue strangers filled, once, for its client id
//! only, until it lapses; token mode keeps nothing for a stranger.

use ed25519_dalek::{Signer, SigningKey};
use mlsd_transport::protocol::identity::signing_bytes;
use mlsd_transport::protocol::r#as::{
    admission_hash, ADMISSION_LIFETIME_SECS, LABEL_ADMIT, LABEL_REGISTER,
};
use mlsd_transport::protocol::{
    AdmitBody, AsError, AsRequest, AsResponse, NodeRequest, OperatorRequest, RegisterBody,
};
use mlsd_transport::{Request, Response, WireError};
use sha2::{Digest, Sha256};

use super::admission::MAX_ADMISSIONS;
use super::devices::MAX_PENDING;
use super::tests::{at, clients, devices, logic, pk, register, run, NOW};
use crate::contract::RoleLogic;
use crate::settings::Registration;
use crate::storage::MemStore;

fn admit(approver: &str, by: &SigningKey, client: &str, code: &str) -> Request {
    let body = AdmitBody {
        approver: approver.into(),
        client: client.into(),
        code_hash: admission_hash(client, code),
        timestamp: NOW,
    };
    let signature = by.sign(&signing_bytes(LABEL_ADMIT, &body)).to_bytes().to_vec();
    Request::As(AsRequest::Admit { body, signature })
}

fn bad_token() -> Response {
    Response::Error(WireError::As(AsError::BadToken))
}

#[test]
fn a_code_admits_the_new_device_past_a_full_pending_queue_once_and_for_its_id_only() {
    let (store, mut as_) = (MemStore::new(), logic(Registration::Open));
    let (phone, laptop) = (SigningKey::from_bytes(&[1; 32]), SigningKey::from_bytes(&[2; 32]));
    let stranger = SigningKey::from_bytes(&[6; 32]);
    run(&mut as_, &store, register("alice/phone", &phone, None, None));
    // The reproduction: strangers fill the queue and alice's laptop is refused.
    for n in 0..MAX_PENDING {
        run(&mut as_, &store, register(&format!("alice/d{n}"), &stranger, None, None));
    }
    let full = Response::Error(WireError::As(AsError::TooManyDevices { max: MAX_PENDING as u32 }));
    assert_eq!(run(&mut as_, &store, register("alice/laptop", &laptop, None, None)), full);
    match run(&mut as_, &store, admit("alice/phone", &phone, "alice/laptop", "K7M2-PQ9X-4TZD")) {
        Response::As(AsResponse::Admitted { client, expires_at }) => {
            assert_eq!(
                (client.as_str(), expires_at),
                ("alice/laptop", NOW + ADMISSION_LIFETIME_SECS)
            )
        }
        other => panic!("{other:?}"),
    }
    // A wrong code, or the code for another id, binds nothing and writes nothing.
    let before = store.contents();
    for req in [
        register("alice/laptop", &laptop, None, Some("K7M2-PQ9X-4TZE")),
        register("alice/d0", &stranger, None, Some("K7M2-PQ9X-4TZD")),
        register("alice/tablet", &laptop, None, Some("K7M2-PQ9X-4TZD")),
    ] {
        assert_eq!(run(&mut as_, &store, req), bad_token());
        assert_eq!(store.contents(), before);
    }
    assert!(matches!(
        run(&mut as_, &store, register("alice/laptop", &laptop, None, Some("K7M2-PQ9X-4TZD"))),
        Response::As(AsResponse::Binding(_))
    ));
    assert_eq!(clients(&mut as_, &store, "alice"), ["alice/laptop", "alice/phone"]);
    // Spent: another key for the laptop's id with the same code is refused.
    let r =
        run(&mut as_, &store, register("alice/laptop", &stranger, None, Some("K7M2-PQ9X-4TZD")));
    assert_eq!(r, Response::Error(WireError::As(AsError::ClientTaken("alice/laptop".into()))));
}

#[test]
fn a_code_lapses_and_only_a_live_sibling_leaves_one() {
    let (store, mut as_) = (MemStore::new(), logic(Registration::Open));
    let (phone, laptop) = (SigningKey::from_bytes(&[1; 32]), SigningKey::from_bytes(&[2; 32]));
    let bob = SigningKey::from_bytes(&[7; 32]);
    run(&mut as_, &store, register("alice/phone", &phone, None, None));
    run(&mut as_, &store, register("bob/phone", &bob, None, None));
    let before = store.contents();
    for (req, why) in [
        (admit("bob/phone", &bob, "alice/laptop", "c"), "another identity's device"),
        (admit("alice/phone", &bob, "alice/laptop", "c"), "a forged signature"),
        (admit("alice/laptop", &laptop, "alice/laptop", "c"), "the new device itself"),
        (admit("alice/phone", &phone, "alice/phone", "c"), "a live device's own id"),
    ] {
        let r = run(&mut as_, &store, req);
        assert!(matches!(r, Response::Error(_)), "{why}: {r:?}");
        assert_eq!(store.contents(), before, "{why} wrote something");
    }
    run(&mut as_, &store, admit("alice/phone", &phone, "alice/laptop", "code"));
    // An hour and a second later the code binds nothing.
    let later = NOW + ADMISSION_LIFETIME_SECS + 1;
    let body = RegisterBody {
        client: "alice/laptop".into(),
        signature_key: pk(&laptop),
        timestamp: later,
        token: Some("code".into()),
    };
    let proof = laptop.sign(&signing_bytes(LABEL_REGISTER, &body)).to_bytes().to_vec();
    let req = Request::As(AsRequest::Register { body, proof, rotation: None });
    assert_eq!(as_.handle(req, None, &at(&store, later)).applied(&store), bad_token());
    // Codes outstanding are bounded per identity.
    for n in 1..MAX_ADMISSIONS {
        let r = run(&mut as_, &store, admit("alice/phone", &phone, &format!("alice/n{n}"), "c"));
        assert!(matches!(r, Response::As(AsResponse::Admitted { .. })), "{r:?}");
    }
    let r = run(&mut as_, &store, admit("alice/phone", &phone, "alice/one-more", "c"));
    let max = MAX_ADMISSIONS as u32;
    assert_eq!(r, Response::Error(WireError::As(AsError::TooManyDevices { max })));
}

#[test]
fn token_mode_keeps_nothing_for_a_stranger_and_takes_a_code() {
    let (store, mut as_) = (MemStore::new(), logic(Registration::Token));
    let (phone, laptop) = (SigningKey::from_bytes(&[1; 32]), SigningKey::from_bytes(&[2; 32]));
    let token_hash = Sha256::digest(b"enrol-alice").to_vec();
    let enroll = OperatorRequest::Enroll { identity: "alice".into(), token_hash };
    as_.admin(NodeRequest::Operator(enroll), &at(&store, NOW)).applied(&store);
    assert!(matches!(
        run(&mut as_, &store, register("alice/phone", &phone, None, Some("enrol-alice"))),
        Response::As(AsResponse::Binding(_))
    ));
    // The reproduction: a registration without a token left a pending entry.
    let before = store.contents();
    assert_eq!(run(&mut as_, &store, register("alice/evil", &laptop, None, None)), bad_token());
    assert_eq!(store.contents(), before);
    match run(&mut as_, &store, devices("alice/phone", &phone)) {
        Response::As(AsResponse::Devices { pending, .. }) => assert!(pending.is_empty()),
        other => panic!("{other:?}"),
    }
    run(&mut as_, &store, admit("alice/phone", &phone, "alice/laptop", "code"));
    assert!(matches!(
        run(&mut as_, &store, register("alice/laptop", &laptop, None, Some("code"))),
        Response::As(AsResponse::Binding(_))
    ));
}
