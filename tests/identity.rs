//! Steps 1-4 across a three-node cluster whose AS and CS run on different
//! nodes: bindings, KeyPackage upload, fetch and client-side authentication,
//! refusals, concurrency, tampering and restarts.

mod common;

use mlsd_transport::protocol::tickets::TicketKind;
use mlsd_transport::protocol::{
    AsError, AsRequest, AsResponse, AuthError, ClusterError, CsError, CsRequest, CsResponse,
    PublishBody, RegisterBody,
};
use std::collections::HashSet;

use common::{server_err, Cluster};
use mlsd_client::verify::{authenticate_key_package, Rejection};
use mlsd_transport::protocol::cs::LABEL_PUBLISH;
use mlsd_transport::protocol::identity::signing_bytes;
use mlsd_transport::protocol::r#as::LABEL_REGISTER;
use mlsd_transport::{Request, Response, Role, WireError};
use openmls::prelude::tls_codec::Serialize as _;
use openmls::prelude::{BasicCredential, CredentialWithKey, KeyPackage, Lifetime};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use openmls_traits::signatures::Signer;

const SUITE: openmls::prelude::Ciphersuite = mlsd_client::CIPHERSUITE;

fn split() -> Cluster {
    Cluster::new(&[
        ("n1", &[Role::As]),
        ("n2", &[Role::Cs]),
        ("n3", &[Role::Ids, Role::Ods, Role::Sds]),
    ])
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// A KeyPackage naming `client`, signed with `signer`, valid for `lifetime`.
fn key_package(client: &str, signer: &SignatureKeyPair, lifetime: Lifetime) -> Vec<u8> {
    let provider = OpenMlsRustCrypto::default();
    let cwk = CredentialWithKey {
        credential: BasicCredential::new(client.as_bytes().to_vec()).into(),
        signature_key: signer.public().into(),
    };
    let bundle = KeyPackage::builder()
        .key_package_lifetime(lifetime)
        .build(SUITE, &provider, signer, cwk)
        .unwrap();
    bundle.key_package().tls_serialize_detached().unwrap()
}

/// The bound signature key pair stored in a client's home.
fn home_signer(c: &Cluster, home: &str) -> SignatureKeyPair {
    let h = mlsd_client::home::Home::open(&c.dir.path().join("homes").join(home)).unwrap();
    let id = h.load_identity().unwrap().unwrap();
    SignatureKeyPair::from_raw(SUITE.signature_algorithm(), id.private_key.to_vec(), id.public_key)
}

#[tokio::test(flavor = "multi_thread")]
async fn steps_1_to_4_bob_gets_one_verified_key_package_per_device() {
    let _watchdog = common::init();
    let mut c = split();
    c.start_all().await;
    let _alice = c.registered("alice/phone", "n1", 5).await;
    let bob = c.registered("bob/laptop", "n2", 5).await;
    let c1 = c.registered("charlie/phone", "n3", 5).await;
    let _c2 = c.approved("charlie/laptop", &c1, "n1", 5).await;
    drop(c1);

    let (alice_kps, rejected) = bob.fetch_key_packages("alice").await.unwrap();
    assert!(rejected.is_empty(), "{rejected:?}");
    assert_eq!(alice_kps.len(), 1);
    assert_eq!(alice_kps[0].client, "alice/phone");
    assert!(!alice_kps[0].last_resort);

    let (charlie_kps, rejected) = bob.fetch_key_packages("charlie").await.unwrap();
    assert!(rejected.is_empty(), "{rejected:?}");
    let devices: HashSet<_> = charlie_kps.iter().map(|k| k.client.as_str()).collect();
    assert_eq!(devices, HashSet::from(["charlie/phone", "charlie/laptop"]));

    // Each fetch consumed one KeyPackage of each device.
    let c1 = c.client("charlie/phone", "n2").await;
    assert_eq!(c1.count_key_packages().await.unwrap(), (4, true));

    // The CLI does the same from a fresh home, once registered (a fetch
    // pays with a ticket, which only a registered device gets).
    let dave = c.dir.path().join("homes/dave");
    let as_pub = c.dir.path().join("certs/as.pub");
    let home_args = ["--home", dave.to_str().unwrap(), "--as-key", as_pub.to_str().unwrap()];
    let out = c.mlsc("n3", &[&home_args[..], &["register", "dave/phone"]].concat());
    assert!(out.status.success(), "{out:?}");
    let out = c.mlsc(
        "n3",
        &[
            "--home",
            c.dir.path().join("homes/dave").to_str().unwrap(),
            "--as-key",
            c.dir.path().join("certs/as.pub").to_str().unwrap(),
            "fetch",
            "charlie",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("charlie/phone verified") && stdout.contains("charlie/laptop verified"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_registrations_and_uploads_are_refused_and_store_nothing() {
    let _watchdog = common::init();
    let mut c = split();
    c.start_all().await;
    let alice = c.registered("alice/phone", "n1", 2).await;
    let conn = alice.connection();
    let alice_key = home_signer(&c, "alice/phone");

    // Registration without proof of possession: signed by another key.
    let other = SignatureKeyPair::new(SUITE.signature_algorithm()).unwrap();
    let intruder = SignatureKeyPair::new(SUITE.signature_algorithm()).unwrap();
    let body = RegisterBody {
        client: "mallory/phone".into(),
        signature_key: other.public().to_vec(),
        timestamp: now(),
        token: None,
    };
    let proof = intruder.sign(&signing_bytes(LABEL_REGISTER, &body)).unwrap();
    let r = conn
        .request(Request::As(AsRequest::Register { body: body.clone(), proof, rotation: None }))
        .await;
    assert!(matches!(server_err(r), WireError::Auth(AuthError::BadSignature(_))));
    assert_eq!(alice.lookup("mallory").await.unwrap().len(), 0, "nothing stored");

    // Key rotation: a new key for a taken client id, also signed by the bound key.
    let carol = c.registered("carol/phone", "n2", 1).await;
    let carol_old = home_signer(&c, "carol/phone");
    let new_key = SignatureKeyPair::new(SUITE.signature_algorithm()).unwrap();
    let rbody = RegisterBody {
        client: "carol/phone".into(),
        signature_key: new_key.public().to_vec(),
        timestamp: now(),
        token: None,
    };
    let tbs = signing_bytes(LABEL_REGISTER, &rbody);
    let proof = new_key.sign(&tbs).unwrap();
    let rotation = Some(carol_old.sign(&tbs).unwrap());
    match conn
        .request(Request::As(AsRequest::Register { body: rbody, proof, rotation }))
        .await
        .unwrap()
    {
        Response::As(AsResponse::Binding(b)) => {
            assert_eq!(b.binding.signature_key, new_key.public())
        }
        other => panic!("{other:?}"),
    }
    let now_bound = carol.lookup("carol").await.unwrap();
    assert_eq!(now_bound.len(), 1);
    assert_eq!(now_bound[0].0.binding.signature_key, new_key.public(), "rotated");
    // KeyPackages signed by the old key are no longer handed out.
    match conn
        .request_paid(
            Request::Cs(CsRequest::FetchKeyPackages { identity: "carol".into() }),
            c.ticket(TicketKind::Fetch).await,
        )
        .await
        .unwrap()
    {
        Response::Cs(CsResponse::KeyPackages(k)) => assert!(k.is_empty(), "{k:?}"),
        other => panic!("{other:?}"),
    }

    // A stale timestamp (replay) is refused even with a good proof.
    let mut old = body.clone();
    old.timestamp -= 3600;
    let proof = other.sign(&signing_bytes(LABEL_REGISTER, &old)).unwrap();
    let r =
        conn.request(Request::As(AsRequest::Register { body: old, proof, rotation: None })).await;
    assert!(matches!(server_err(r), WireError::Auth(AuthError::StaleTimestamp { .. })));

    // A taken client id with a new key and no rotation signature.
    let body = RegisterBody {
        client: "alice/phone".into(),
        signature_key: other.public().to_vec(),
        timestamp: now(),
        token: None,
    };
    let proof = other.sign(&signing_bytes(LABEL_REGISTER, &body)).unwrap();
    let r = conn.request(Request::As(AsRequest::Register { body, proof, rotation: None })).await;
    assert_eq!(server_err(r), WireError::As(AsError::ClientTaken("alice/phone".into())));
    let bindings = alice.lookup("alice").await.unwrap();
    assert_eq!(bindings.len(), 1);
    assert_eq!(bindings[0].0.binding.signature_key, alice_key.public());

    let life = || Lifetime::new(7 * 24 * 3600);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("bound key", key_package("alice/phone", &other, life())),
        ("another client", key_package("bob/phone", &alice_key, life())),
        (
            "in the past",
            key_package("alice/phone", &alice_key, Lifetime::init(now() - 7200, now() - 3600)),
        ),
        ("decode", b"\x00\x01 not a key package".to_vec()),
    ];
    for (what, kp) in cases {
        let good = key_package("alice/phone", &alice_key, life());
        let r = alice.upload(vec![good, kp], None).await;
        match server_err(r) {
            WireError::Cs(CsError::InvalidKeyPackage { index: 1, reason })
                if reason.contains(what) => {}
            e => panic!("{what}: {e:?}"),
        }
        assert_eq!(alice.count_key_packages().await.unwrap(), (2, true), "{what}: nothing stored");
    }

    // An upload not signed by the bound key.
    let body = PublishBody {
        client: "alice/phone".into(),
        key_packages: vec![key_package("alice/phone", &alice_key, life())],
        last_resort: None,
        timestamp: now(),
    };
    let signature = other.sign(&signing_bytes(LABEL_PUBLISH, &body)).unwrap();
    let r = conn.request(Request::Cs(CsRequest::PublishKeyPackages { body, signature })).await;
    assert!(matches!(server_err(r), WireError::Auth(AuthError::BadSignature(_))));

    // A repeated upload (its answer lost, or retried by the entry node) gets
    // the first answer and stores nothing twice (a signed request acts once).
    let body = PublishBody {
        client: "alice/phone".into(),
        key_packages: vec![key_package("alice/phone", &alice_key, life())],
        last_resort: None,
        timestamp: now(),
    };
    let signature = alice_key.sign(&signing_bytes(LABEL_PUBLISH, &body)).unwrap();
    let req = Request::Cs(CsRequest::PublishKeyPackages { body, signature });
    assert_eq!(
        conn.request(req.clone()).await.unwrap(),
        Response::Cs(CsResponse::Published { stored: 3 })
    );
    assert_eq!(conn.request(req).await.unwrap(), Response::Cs(CsResponse::Published { stored: 3 }));
    assert_eq!(alice.count_key_packages().await.unwrap(), (3, true));
}

#[tokio::test(flavor = "multi_thread")]
async fn token_mode_needs_a_fresh_token_for_the_identity() {
    let _watchdog = common::init();
    let nodes: &[(&str, &[Role])] =
        &[("n1", &[Role::As]), ("n2", &[Role::Cs]), ("n3", &[Role::Ids, Role::Ods, Role::Sds])];
    let mut c = Cluster::with_extra(nodes, "[as]\nregistration = \"token\"\n");
    c.start_all().await;
    let enroll = |identity: &str| {
        let out = std::process::Command::new(common::bin("mlsd"))
            .args(["admin", "enroll", identity, "--config"])
            .arg(&c.config)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let token = enroll("alice");
    assert_eq!(token.len(), 64);

    let mut a = c.client("alice/phone", "n2").await;
    assert_eq!(server_err(a.register("alice/phone", None).await), WireError::As(AsError::BadToken));
    assert_eq!(
        server_err(a.register("alice/phone", Some("f".repeat(64))).await),
        WireError::As(AsError::BadToken)
    );
    // A token for another identity does not admit alice.
    let bob_token = enroll("bob");
    assert_eq!(
        server_err(a.register("alice/phone", Some(bob_token)).await),
        WireError::As(AsError::BadToken)
    );
    assert_eq!(a.lookup("alice").await.unwrap().len(), 0);

    a.register("alice/phone", Some(token.clone())).await.unwrap();
    // Re-registering the same key is idempotent; a second device cannot reuse the token.
    a.register("alice/phone", None).await.unwrap();
    let mut tablet = c.client("alice/tablet", "n1").await;
    assert_eq!(
        server_err(tablet.register("alice/tablet", Some(token)).await),
        WireError::As(AsError::BadToken)
    );
    assert_eq!(a.lookup("alice").await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_fetches_never_hand_out_a_key_package_twice() {
    let _watchdog = common::init();
    let mut c = split();
    c.start_all().await;
    let _charlie = c.registered("charlie/phone", "n1", 10).await;
    let mut conns = Vec::new();
    for i in 0..20 {
        let via = ["n1", "n2", "n3"][i % 3];
        conns.push(mlsd_client::Connection::connect(c.addr(via), &c.ca()).await.unwrap());
    }
    // All twenty in flight at once, from twenty connections through three
    // nodes, each paying with a ticket of its own.
    let tickets = c.tickets(TicketKind::Fetch, conns.len()).await;
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(conns.len()));
    let tasks: Vec<_> = conns
        .into_iter()
        .zip(tickets)
        .map(|(conn, ticket)| {
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                let fetch = CsRequest::FetchKeyPackages { identity: "charlie".into() };
                conn.request_paid(Request::Cs(fetch), Some(ticket)).await
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let mut one_time = HashSet::new();
    let mut last_resort = HashSet::new();
    for r in results {
        let Response::Cs(CsResponse::KeyPackages(kps)) = r.unwrap() else {
            panic!("not key packages")
        };
        assert_eq!(kps.len(), 1);
        let kp = kps.into_iter().next().unwrap();
        if kp.last_resort {
            last_resort.insert(kp.key_package);
        } else {
            assert!(one_time.insert(kp.key_package), "a KeyPackage was handed out twice");
        }
    }
    assert_eq!(one_time.len(), 10);
    assert_eq!(last_resort.len(), 1, "the same last-resort KeyPackage for the other ten");
}

#[tokio::test(flavor = "multi_thread")]
async fn fetches_are_rate_limited_per_requester() {
    let _watchdog = common::init();
    let nodes: &[(&str, &[Role])] =
        &[("n1", &[Role::As]), ("n2", &[Role::Cs]), ("n3", &[Role::Ids, Role::Ods, Role::Sds])];
    let mut c = Cluster::with_extra(nodes, "[cs]\nfetch_rate_per_minute = 5\n");
    c.start_all().await;
    let _bob = c.registered("bob/phone", "n1", 10).await;
    let conn = mlsd_client::Connection::connect(c.addr("n1"), &c.ca()).await.unwrap();
    for _ in 0..5 {
        conn.request_paid(
            Request::Cs(CsRequest::FetchKeyPackages { identity: "bob".into() }),
            c.ticket(TicketKind::Fetch).await,
        )
        .await
        .unwrap();
    }
    let r = conn
        .request_paid(
            Request::Cs(CsRequest::FetchKeyPackages { identity: "bob".into() }),
            c.ticket(TicketKind::Fetch).await,
        )
        .await;
    assert!(matches!(server_err(r), WireError::Cluster(ClusterError::RateLimited { .. })));
    // The refused fetch consumed nothing: 5 of 10 are left.
    let bob = c.client("bob/phone", "n2").await;
    assert_eq!(bob.count_key_packages().await.unwrap(), (5, true));
}

/// Fetches of one identity's KeyPackages share one budget at its CS owner,
/// whichever node they enter: N entry nodes no longer give N times it.
#[tokio::test(flavor = "multi_thread")]
async fn fetches_of_one_identity_share_one_budget_across_entry_nodes() {
    let _watchdog = common::init();
    let nodes: &[(&str, &[Role])] =
        &[("n1", &[Role::As]), ("n2", &[Role::Cs]), ("n3", &[Role::Ids, Role::Ods, Role::Sds])];
    let mut c = Cluster::with_extra(nodes, "[cs]\nfetch_rate_per_target_per_minute = 3\n");
    c.start_all().await;
    let _bob = c.registered("bob/phone", "n1", 10).await;
    let fetch = Request::Cs(CsRequest::FetchKeyPackages { identity: "bob".into() });
    let via_n1 = mlsd_client::Connection::connect(c.addr("n1"), &c.ca()).await.unwrap();
    let via_n3 = mlsd_client::Connection::connect(c.addr("n3"), &c.ca()).await.unwrap();
    via_n1.request_paid(fetch.clone(), c.ticket(TicketKind::Fetch).await).await.unwrap();
    via_n1.request_paid(fetch.clone(), c.ticket(TicketKind::Fetch).await).await.unwrap();
    via_n3.request_paid(fetch.clone(), c.ticket(TicketKind::Fetch).await).await.unwrap();
    for conn in [&via_n3, &via_n1] {
        let r = conn.request_paid(fetch.clone(), c.ticket(TicketKind::Fetch).await).await;
        assert!(matches!(server_err(r), WireError::Cluster(ClusterError::RateLimited { .. })));
    }
    // The refused fetches consumed nothing: 7 of 10 are left.
    let bob = c.client("bob/phone", "n2").await;
    assert_eq!(bob.count_key_packages().await.unwrap(), (7, true));
}

#[tokio::test(flavor = "multi_thread")]
async fn lookups_are_rate_limited_per_address() {
    let _watchdog = common::init();
    let nodes: &[(&str, &[Role])] =
        &[("n1", &[Role::As]), ("n2", &[Role::Cs, Role::Ids, Role::Ods, Role::Sds])];
    let mut c = Cluster::with_extra(nodes, "[as]\nlookup_rate_per_minute = 3\n");
    c.start_all().await;
    let bob = c.registered("bob/phone", "n2", 1).await;
    // Counted at the node the client speaks to, whichever owns the identity.
    for _ in 0..3 {
        assert_eq!(bob.lookup("bob").await.unwrap().len(), 1);
    }
    let r = bob.lookup("bob").await;
    assert!(matches!(server_err(r), WireError::Cluster(ClusterError::RateLimited { .. })));
    // Another node's budget is its own (the limit is per node, see operations.md).
    let other = c.client("carol/phone", "n1").await;
    assert_eq!(other.lookup("bob").await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn client_rejects_tampered_or_revoked_bindings() {
    let _watchdog = common::init();
    let mut c = split();
    c.start_all().await;
    let mut alice = c.registered("alice/phone", "n1", 3).await;
    let conn = &mlsd_client::Connection::connect(c.addr("n3"), &c.ca()).await.unwrap();
    let as_key = mlsd_client::client::load_as_key(&c.dir.path().join("certs/as.pub")).unwrap();
    let fetch = || async {
        match conn
            .request_paid(
                Request::Cs(CsRequest::FetchKeyPackages { identity: "alice".into() }),
                c.ticket(TicketKind::Fetch).await,
            )
            .await
            .unwrap()
        {
            Response::Cs(CsResponse::KeyPackages(k)) => k.into_iter().next().unwrap(),
            other => panic!("{other:?}"),
        }
    };
    let lookup = || async {
        match conn
            .request(Request::As(AsRequest::Lookup { identity: "alice".into() }))
            .await
            .unwrap()
        {
            Response::As(AsResponse::Bindings(b)) => b,
            other => panic!("{other:?}"),
        }
    };
    let kp = fetch().await;
    let bindings = lookup().await;
    assert!(authenticate_key_package(&as_key, &bindings, &kp, now()).is_ok(), "control");

    let mut bad_sig = bindings.clone();
    bad_sig[0].signature[10] ^= 1;
    assert_eq!(
        authenticate_key_package(&as_key, &bad_sig, &kp, now()).unwrap_err(),
        Rejection::BadAsSignature("alice/phone".into())
    );
    let mut other_key = bindings.clone();
    other_key[0].binding.signature_key = vec![7; 32];
    assert!(matches!(
        authenticate_key_package(&as_key, &other_key, &kp, now()),
        Err(Rejection::BadAsSignature(_))
    ));
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[9; 32]).verifying_key();
    assert!(matches!(
        authenticate_key_package(&stranger, &bindings, &kp, now()),
        Err(Rejection::BadAsSignature(_))
    ));
    assert!(matches!(
        authenticate_key_package(&as_key, &[], &kp, now()),
        Err(Rejection::NoBinding(_))
    ));

    alice.revoke().await.unwrap();
    let revoked = lookup().await;
    assert!(revoked[0].revoked_at.is_some());
    assert_eq!(
        authenticate_key_package(&as_key, &revoked, &kp, now()).unwrap_err(),
        Rejection::Revoked("alice/phone".into())
    );
    // Stripping the revocation breaks the AS signature.
    let mut stripped = revoked.clone();
    stripped[0].revoked_at = None;
    assert!(matches!(
        authenticate_key_package(&as_key, &stripped, &kp, now()),
        Err(Rejection::BadAsSignature(_))
    ));
    // And the CS stops handing out the revoked client's KeyPackages.
    match conn
        .request_paid(
            Request::Cs(CsRequest::FetchKeyPackages { identity: "alice".into() }),
            c.ticket(TicketKind::Fetch).await,
        )
        .await
        .unwrap()
    {
        Response::Cs(CsResponse::KeyPackages(k)) => assert!(k.is_empty(), "{k:?}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bindings_and_key_packages_survive_a_restart() {
    let _watchdog = common::init();
    let mut c = split();
    c.start_all().await;
    let alice = c.registered("alice/phone", "n1", 4).await;
    let before = alice.lookup("alice").await.unwrap();
    let bob = c.registered("bob/phone", "n2", 1).await;
    let (kps, _) = bob.fetch_key_packages("alice").await.unwrap();
    assert_eq!(kps.len(), 1);
    drop((alice, bob));

    c.restart_all().await;
    let alice = c.client("alice/phone", "n3").await;
    let after = alice.lookup("alice").await.unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].0.binding, before[0].0.binding);
    assert!(after[0].1.is_ok());
    assert_eq!(alice.count_key_packages().await.unwrap(), (3, true), "the fetched one stays gone");
}
