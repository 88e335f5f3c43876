//! Writes the fuzz targets' seed corpus (fuzz/corpus/) from a real run:
//! frames of real requests, real envelopes, and the MLS messages the servers
//! parse (a private message, a commit, a Welcome, a KeyPackage). Ignored in
//! normal runs; `make fuzz-seeds` runs it (docs/reliability.md, "Fuzzing").

mod common;

use mlsd_transport::protocol::{
    AsRequest, ClientFrame, CsRequest, CsResponse, OdsResponse, Ping, ResponseFrame, RosterMode,
    SdsRequest,
};
use std::path::{Path, PathBuf};

use common::Cluster;
use mlsd_client::mailbox::{fetch, Counter};
use mlsd_transport::envelope::{open, unpad};
use mlsd_transport::{codec, Request, Response, Role};

fn put(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join(name), bytes).unwrap();
}

/// A request as the frame target reads it: length prefix and body.
fn framed(req: &Request) -> Vec<u8> {
    common::frame(&codec::encode(&ClientFrame::new(req.clone())).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "writes fuzz/corpus; run by `make fuzz-seeds`"]
async fn write_fuzz_seed_corpus() {
    let _watchdog = common::init();
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut c = Cluster::new(&[("n1", &Role::ALL)]);
    c.start_all().await;
    let mut alice = c.registered("alice/phone", "n1", 2).await;
    let mut bob = c.registered("bob/phone", "n1", 2).await;

    // A fetch pays with a quota ticket in its frame: that frame is a seed too.
    let fetch_bob = Request::Cs(CsRequest::FetchKeyPackages { identity: "bob".into() });
    let ticket =
        alice.take_ticket(mlsd_transport::protocol::tickets::TicketKind::Fetch).await.unwrap();
    let paid = ClientFrame::with_ticket(fetch_bob.clone(), Some(ticket.clone()));
    put(&out, "requests", "fetch-with-ticket", &codec::encode(&paid).unwrap());
    put(&out, "frame", "fetch-with-ticket", &common::frame(&codec::encode(&paid).unwrap()));
    let kp = match alice.connection().request_paid(fetch_bob, Some(ticket)).await {
        Ok(Response::Cs(CsResponse::KeyPackages(v))) => v[0].key_package.clone(),
        other => panic!("{other:?}"),
    };
    put(&out, "mls_framing", "keypackage", &kp);

    alice.create_group("G", RosterMode::Stored).await.unwrap();
    alice.add_members("G", &["bob"]).await.unwrap();
    // Bob's first envelope is the Welcome, sealed to his mailbox's HPKE key.
    let keys = bob.mailbox_keys().unwrap();
    let got = fetch(bob.connection(), keys, &mut Counter::default(), 0, 10).await.unwrap();
    let welcome_env = &got[0].envelope;
    let plain = keys.open_welcome(welcome_env).expect("the Welcome opens");
    put(&out, "mls_framing", "welcome", unpad(&plain).unwrap().1);
    put(&out, "envelope", "welcome-envelope", welcome_env);
    bob.receive().await.unwrap();

    // A commit and a private message, as they reach Alice's mailbox.
    bob.self_update("G").await.unwrap();
    let send = bob.prepare_text("G", "hello").unwrap();
    let resp = bob.send_request(send.clone()).await.unwrap();
    put(&out, "frame", "send", &framed(&send));
    put(&out, "requests", "send", &codec::encode(&ClientFrame::new(send)).unwrap());
    let keys = alice.mailbox_keys().unwrap();
    let got = fetch(alice.connection(), keys, &mut Counter::default(), 0, 10).await.unwrap();
    assert_eq!(got.len(), 2, "a commit and a message");
    let response = ResponseFrame::new(Response::Ods(OdsResponse::Envelopes(got.clone())));
    put(&out, "requests", "envelopes-response", &codec::encode(&response).unwrap());
    put(&out, "requests", "sent-response", &codec::encode(&ResponseFrame::new(resp)).unwrap());
    // The message is sealed under the next epoch's key: process the commit first.
    alice.receive().await.unwrap();
    let envelope_keys = alice.envelope_keys();
    for (name, d) in ["commit", "message"].iter().zip(&got) {
        put(&out, "envelope", &format!("{name}-envelope"), &d.envelope);
        let plain = envelope_keys
            .iter()
            .find_map(|k| open(k, &d.envelope).ok())
            .expect("one of Alice's epoch keys opens it");
        put(&out, "mls_framing", name, unpad(&plain).unwrap().1);
        put(&out, "envelope", &format!("{name}-padded"), &plain);
    }
    for (name, req) in [
        ("lookup", Request::As(AsRequest::Lookup { identity: "alice".into() })),
        ("ping", Request::Ping(Ping { role: Role::Ods, key: b"k".to_vec() })),
        ("getblob", Request::Sds(SdsRequest::GetBlob { id: [1; 32], offset: 0, max: 100 })),
    ] {
        put(&out, "frame", name, &framed(&req));
        put(&out, "requests", name, &codec::encode(&ClientFrame::new(req)).unwrap());
    }
}
