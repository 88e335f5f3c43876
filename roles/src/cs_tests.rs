//! Unit tests of the CS logic on an in-memory store, with real KeyPackages:
//! each one-time KeyPackage is handed out once, the last resort stays, and
//! every refusal leaves storage as it was.

use mlsd_transport::protocol::{
    AsResponse, Binding, ClusterError, CountBody, CsRequest, CsResponse, PublishBody, SignedBinding,
};
use std::time::SystemTime;

use openmls::prelude::tls_codec::Serialize as _;
use openmls::prelude::{BasicCredential, CredentialWithKey, KeyPackage, Lifetime};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use openmls_traits::signatures::Signer;

use mlsd_transport::protocol::cs::{LABEL_COUNT, LABEL_PUBLISH};
use mlsd_transport::protocol::identity::signing_bytes;
use mlsd_transport::{Request, Response, WireError};

use super::{CsLogic, CIPHERSUITE};
use crate::contract::{RoleContext, RoleLogic};
use crate::settings::RoleSettings;
use crate::sig::unix;
use crate::storage::MemStore;

/// A device: its signature key and the means to make KeyPackages with it.
struct Device {
    client: String,
    signer: SignatureKeyPair,
    provider: OpenMlsRustCrypto,
}

impl Device {
    fn new(client: &str, seed: u8) -> Self {
        let sk = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        let signer = SignatureKeyPair::from_raw(
            CIPHERSUITE.signature_algorithm(),
            sk.to_bytes().to_vec(),
            sk.verifying_key().to_bytes().to_vec(),
        );
        Device { client: client.into(), signer, provider: OpenMlsRustCrypto::default() }
    }

    fn key(&self) -> Vec<u8> {
        self.signer.public().to_vec()
    }

    /// A KeyPackage whose credential names `client`.
    fn key_package_as(&self, client: &str) -> Vec<u8> {
        let cwk = CredentialWithKey {
            credential: BasicCredential::new(client.as_bytes().to_vec()).into(),
            signature_key: self.signer.public().into(),
        };
        let bundle = KeyPackage::builder()
            .key_package_lifetime(Lifetime::new(7 * 24 * 3600))
            .build(CIPHERSUITE, &self.provider, &self.signer, cwk)
            .unwrap();
        bundle.key_package().tls_serialize_detached().unwrap()
    }

    fn key_package(&self) -> Vec<u8> {
        self.key_package_as(&self.client)
    }

    /// The AS's answer for this device's identity: its live binding.
    fn bindings(&self, revoked: bool) -> Response {
        let now = unix(SystemTime::now());
        let binding = Binding {
            client: self.client.clone(),
            signature_key: self.key(),
            issued_at: now,
            expires_at: now + 3600,
            serial: 1,
        };
        Response::As(AsResponse::Bindings(vec![SignedBinding {
            binding,
            revoked_at: revoked.then_some(now),
            signature: Vec::new(),
        }]))
    }

    fn publish(&self, kps: Vec<Vec<u8>>, last_resort: Option<Vec<u8>>) -> Request {
        self.publish_at(kps, last_resort, unix(SystemTime::now()))
    }

    /// An upload signed with `timestamp`: signed anew, not a replay.
    fn publish_at(
        &self,
        kps: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
        timestamp: u64,
    ) -> Request {
        let body =
            PublishBody { client: self.client.clone(), key_packages: kps, last_resort, timestamp };
        let signature = self.signer.sign(&signing_bytes(LABEL_PUBLISH, &body)).unwrap();
        Request::Cs(CsRequest::PublishKeyPackages { body, signature })
    }

    fn count(&self) -> Request {
        let body = CountBody { client: self.client.clone(), timestamp: unix(SystemTime::now()) };
        let signature = self.signer.sign(&signing_bytes(LABEL_COUNT, &body)).unwrap();
        Request::Cs(CsRequest::CountKeyPackages { body, signature })
    }
}

/// `req` decided with the AS's answer `pre`, its writes applied.
fn run(cs: &mut CsLogic, store: &MemStore, req: Request, pre: Response) -> Response {
    let ctx = RoleContext {
        node: "t",
        store,
        now: SystemTime::now(),
        random: zeroize::Zeroizing::new([0; 32]),
    };
    cs.handle(req, Some(pre), &ctx).applied(store)
}

fn fetch(cs: &mut CsLogic, store: &MemStore, d: &Device) -> Vec<(Vec<u8>, bool)> {
    let req = Request::Cs(CsRequest::FetchKeyPackages { identity: "alice".into() });
    match run(cs, store, req, d.bindings(false)) {
        Response::Cs(CsResponse::KeyPackages(k)) => {
            k.into_iter().map(|k| (k.key_package, k.last_resort)).collect()
        }
        other => panic!("{other:?}"),
    }
}

fn cs() -> CsLogic {
    CsLogic::new(RoleSettings::default().cs)
}

#[test]
fn each_key_package_is_handed_out_once_and_the_last_resort_stays() {
    let (store, mut cs) = (MemStore::new(), cs());
    let phone = Device::new("alice/phone", 1);
    let (kp1, kp2, lr) = (phone.key_package(), phone.key_package(), phone.key_package());
    let r = run(
        &mut cs,
        &store,
        phone.publish(vec![kp1.clone(), kp2.clone()], Some(lr.clone())),
        phone.bindings(false),
    );
    assert_eq!(r, Response::Cs(CsResponse::Published { stored: 2 }));
    let counted = |cs: &mut CsLogic| run(cs, &store, phone.count(), phone.bindings(false));
    assert_eq!(
        counted(&mut cs),
        Response::Cs(CsResponse::KeyPackageCount { count: 2, last_resort: true })
    );
    // Oldest first, each once; then the last resort, again and again.
    assert_eq!(fetch(&mut cs, &store, &phone), [(kp1, false)]);
    assert_eq!(fetch(&mut cs, &store, &phone), [(kp2, false)]);
    assert_eq!(fetch(&mut cs, &store, &phone), [(lr.clone(), true)]);
    assert_eq!(fetch(&mut cs, &store, &phone), [(lr, true)]);
    assert_eq!(
        counted(&mut cs),
        Response::Cs(CsResponse::KeyPackageCount { count: 0, last_resort: true })
    );
}

/// A paid fetch sent again (its answer lost, or the entry node retried it
/// at a new leader) gets the same KeyPackages and consumes no other; a
/// fetch paid with another ticket gets the next one.
#[test]
fn a_repeated_paid_fetch_hands_out_the_same_key_packages_and_consumes_none() {
    let (store, mut cs) = (MemStore::new(), cs());
    let phone = Device::new("alice/phone", 1);
    let (kp1, kp2, lr) = (phone.key_package(), phone.key_package(), phone.key_package());
    let publish = phone.publish(vec![kp1.clone(), kp2.clone()], Some(lr));
    run(&mut cs, &store, publish, phone.bindings(false));
    let paid =
        |n: u8| Request::Cs(CsRequest::FetchPaid { identity: "alice".into(), paid: [n; 32] });
    let keys = |r: Response| match r {
        Response::Cs(CsResponse::KeyPackages(k)) => {
            k.into_iter().map(|k| (k.key_package, k.last_resort)).collect::<Vec<_>>()
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(keys(run(&mut cs, &store, paid(1), phone.bindings(false))), [(kp1.clone(), false)]);
    for _ in 0..3 {
        let before = store.contents();
        assert_eq!(
            keys(run(&mut cs, &store, paid(1), phone.bindings(false))),
            [(kp1.clone(), false)]
        );
        assert_eq!(store.contents(), before, "a repeat changes nothing");
    }
    let counted = run(&mut cs, &store, phone.count(), phone.bindings(false));
    assert_eq!(counted, Response::Cs(CsResponse::KeyPackageCount { count: 1, last_resort: true }));
    assert_eq!(keys(run(&mut cs, &store, paid(2), phone.bindings(false))), [(kp2, false)]);
}

#[test]
fn a_key_package_published_twice_is_stored_once() {
    let (store, mut cs) = (MemStore::new(), cs());
    let phone = Device::new("alice/phone", 1);
    let kp = phone.key_package();
    let first = run(
        &mut cs,
        &store,
        phone.publish(vec![kp.clone(), kp.clone()], None),
        phone.bindings(false),
    );
    assert_eq!(first, Response::Cs(CsResponse::Published { stored: 1 }));
    let again = run(&mut cs, &store, phone.publish(vec![kp.clone()], None), phone.bindings(false));
    assert_eq!(again, Response::Cs(CsResponse::Published { stored: 1 }));
    assert_eq!(fetch(&mut cs, &store, &phone), [(kp.clone(), false)]);
    // Handed out, it cannot be published (and handed out) again either,
    // even in an upload signed anew.
    let later = phone.publish_at(vec![kp], None, unix(SystemTime::now()) + 1);
    let replay = run(&mut cs, &store, later, phone.bindings(false));
    assert_eq!(replay, Response::Cs(CsResponse::Published { stored: 0 }));
    assert!(fetch(&mut cs, &store, &phone).is_empty());
}

#[test]
fn refusals_change_nothing() {
    let (store, mut cs) = (MemStore::new(), cs());
    let phone = Device::new("alice/phone", 1);
    let thief = Device::new("alice/phone", 2);
    let valid = || phone.publish(vec![phone.key_package()], None);
    let too_many = cs.settings.max_per_client as usize + 1;
    let cases: Vec<(Request, Response, &str)> = vec![
        (valid(), Response::As(AsResponse::Bindings(Vec::new())), "no binding"),
        (valid(), phone.bindings(true), "a revoked binding"),
        (
            valid(),
            Response::Error(WireError::Cluster(ClusterError::Unavailable { node: "n1".into() })),
            "the AS unreachable",
        ),
        // Signed and made by a key the AS did not bind to alice/phone.
        (thief.publish(vec![thief.key_package()], None), phone.bindings(false), "another key"),
        (
            phone.publish(vec![phone.key_package_as("mallory/phone")], None),
            phone.bindings(false),
            "a KeyPackage for another client",
        ),
        (phone.publish(vec![b"junk".to_vec()], None), phone.bindings(false), "not a KeyPackage"),
        (
            phone.publish(vec![phone.key_package(); too_many], None),
            phone.bindings(false),
            "too many",
        ),
    ];
    for (req, pre, why) in cases {
        let r = run(&mut cs, &store, req, pre);
        assert!(matches!(r, Response::Error(_)), "{why}: {r:?}");
        assert!(store.contents().is_empty(), "{why} wrote something");
    }
    assert!(fetch(&mut cs, &store, &phone).is_empty());
}

#[test]
fn fetches_of_one_identity_are_budgeted_at_its_cs_owner() {
    let store = MemStore::new();
    let mut settings = RoleSettings::default().cs;
    settings.fetches_per_target_per_minute = 3;
    let mut cs = CsLogic::new(settings);
    let phone = Device::new("alice/phone", 1);
    let bob = Device::new("bob/phone", 2);
    let kps: Vec<_> = (0..5).map(|_| phone.key_package()).collect();
    let r = run(&mut cs, &store, phone.publish(kps, None), phone.bindings(false));
    assert_eq!(r, Response::Cs(CsResponse::Published { stored: 5 }));
    // Whoever asks, through whichever node: three a minute for alice.
    for _ in 0..3 {
        assert_eq!(fetch(&mut cs, &store, &phone).len(), 1);
    }
    let before = store.contents();
    let req = Request::Cs(CsRequest::FetchKeyPackages { identity: "alice".into() });
    let r = run(&mut cs, &store, req, phone.bindings(false));
    assert!(
        matches!(r, Response::Error(WireError::Cluster(ClusterError::RateLimited { .. }))),
        "{r:?}"
    );
    assert_eq!(store.contents(), before, "a refused fetch handed nothing out");
    // Another identity has its own budget.
    let req = Request::Cs(CsRequest::FetchKeyPackages { identity: "bob".into() });
    assert_eq!(
        run(&mut cs, &store, req, bob.bindings(false)),
        Response::Cs(CsResponse::KeyPackages(Vec::new()))
    );
    // 20 s later one more of alice's.
    let later = RoleContext {
        node: "t",
        store: &store,
        now: SystemTime::now() + std::time::Duration::from_secs(21),
        random: zeroize::Zeroizing::new([0; 32]),
    };
    let req = Request::Cs(CsRequest::FetchKeyPackages { identity: "alice".into() });
    match cs.handle(req, Some(phone.bindings(false)), &later).applied(&store) {
        Response::Cs(CsResponse::KeyPackages(k)) => assert_eq!(k.len(), 1),
        other => panic!("{other:?}"),
    }
}
