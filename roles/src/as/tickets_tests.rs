//! Unit tests of the AS's quota tickets: the allowance holds per identity
//! and day, a ticket is spent once (the same request may repeat), and
//! forged, foreign-kind, expired and replayed ones are refused with nothing
//! stored.

use mlsd_transport::protocol::tickets::LABEL_TICKETS;
use mlsd_transport::protocol::tickets::{day_of, Ticket, TicketBody, TicketKind, DAY_SECS};
use mlsd_transport::ticket::{blind, finalize};

use super::*;

/// The device `ivy/phone`, bound for a month.
fn ivy(store: &MemStore) -> (AsLogic, SigningKey) {
    let mut as_ = AsLogic::new(AsSettings {
        signing_key: Some(std::sync::Arc::new(SigningKey::from_bytes(&[9; 32]))),
        registration: Registration::Open,
        binding_lifetime: Duration::from_secs(30 * 24 * 3600),
        tickets: TICKETS,
    });
    let key = SigningKey::from_bytes(&[1; 32]);
    assert!(matches!(
        run(&mut as_, store, register("ivy/phone", &key, None, None)),
        Response::As(AsResponse::Binding(_))
    ));
    (as_, key)
}

/// `client`'s signed request for `n` tickets of `kind` for `day`, and the
/// blinds to finalize them with.
fn ask(
    client: &str,
    key: &SigningKey,
    kind: TicketKind,
    day: u32,
    n: usize,
) -> (Request, Vec<mlsd_transport::ticket::Pending>) {
    let (pending, blinded) = blind(n).unwrap();
    let body = TicketBody { client: client.into(), kind, day, blinded, timestamp: NOW };
    let signature = key.sign(&signing_bytes(LABEL_TICKETS, &body)).to_bytes().to_vec();
    (Request::As(AsRequest::IssueTickets { body, signature }), pending)
}

/// `n` tickets of `kind` for ivy, today.
fn tickets(
    as_: &mut AsLogic,
    store: &MemStore,
    key: &SigningKey,
    kind: TicketKind,
    n: usize,
) -> Vec<Ticket> {
    let today = day_of(NOW);
    let (req, pending) = ask("ivy/phone", key, kind, today, n);
    match run(as_, store, req) {
        Response::As(AsResponse::TicketsIssued { evaluated, proof, key: tk }) => {
            finalize(kind, today, &pending, &evaluated, &proof, &tk.key).unwrap()
        }
        other => panic!("{other:?}"),
    }
}

fn spend(as_: &mut AsLogic, store: &MemStore, t: &Ticket, bind: u8, secs: u64) -> Response {
    let req = NodeRequest::Spend(Spend { ticket: t.clone(), bind: [bind; 32] });
    as_.admin(req, &at(store, secs)).applied(store)
}

#[test]
fn an_identity_gets_its_daily_allowance_and_no_more() {
    let store = MemStore::new();
    let (mut as_, key) = ivy(&store);
    assert_eq!(tickets(&mut as_, &store, &key, TicketKind::Group, 2).len(), 2);
    // One more is the allowance (3); two more would pass it: refused whole.
    let before = store.contents();
    let (req, _) = ask("ivy/phone", &key, TicketKind::Group, day_of(NOW), 2);
    match run(&mut as_, &store, req) {
        Response::Error(WireError::Cluster(ClusterError::RateLimited { retry_after_ms })) => {
            assert_eq!(retry_after_ms, (DAY_SECS - NOW % DAY_SECS) * 1000, "until midnight UTC");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(store.contents(), before);
    assert_eq!(tickets(&mut as_, &store, &key, TicketKind::Group, 1).len(), 1);
    // Other kinds have allowances of their own.
    assert_eq!(tickets(&mut as_, &store, &key, TicketKind::Fetch, 5).len(), 5);
    // A second device of the same identity shares the allowance.
    let laptop = SigningKey::from_bytes(&[2; 32]);
    let (approve, _) = approve_req("ivy/laptop", &laptop, "ivy/phone", &key);
    run(&mut as_, &store, register("ivy/laptop", &laptop, None, None));
    run(&mut as_, &store, approve);
    let (req, _) = ask("ivy/laptop", &laptop, TicketKind::Group, day_of(NOW), 1);
    assert!(matches!(
        run(&mut as_, &store, req),
        Response::Error(WireError::Cluster(ClusterError::RateLimited { .. }))
    ));
    // The next day the allowance is back.
    let tomorrow = NOW + DAY_SECS;
    let (pending, blinded) = blind(3).unwrap();
    let body = TicketBody {
        client: "ivy/phone".into(),
        kind: TicketKind::Group,
        day: day_of(tomorrow),
        blinded,
        timestamp: tomorrow,
    };
    let signature = key.sign(&signing_bytes(LABEL_TICKETS, &body)).to_bytes().to_vec();
    let req = Request::As(AsRequest::IssueTickets { body, signature });
    assert!(matches!(
        as_.handle(req, None, &at(&store, tomorrow)).applied(&store),
        Response::As(AsResponse::TicketsIssued { evaluated, .. }) if evaluated.len() == pending.len()
    ));
}

/// `client`'s request that `approver` approves it.
fn approve_req(
    client: &str,
    key: &SigningKey,
    approver: &str,
    approver_key: &SigningKey,
) -> (Request, ()) {
    let body = ApproveBody {
        approver: approver.into(),
        client: client.into(),
        signature_key: key.verifying_key().to_bytes().to_vec(),
        timestamp: NOW,
    };
    let signature = approver_key.sign(&signing_bytes(LABEL_APPROVE, &body)).to_bytes().to_vec();
    (Request::As(AsRequest::Approve { body, signature }), ())
}

#[test]
fn strangers_forgers_and_replays_get_no_tickets() {
    let store = MemStore::new();
    let (mut as_, key) = ivy(&store);
    let before = store.contents();
    let stranger = SigningKey::from_bytes(&[7; 32]);
    let today = day_of(NOW);
    // Signed by a key that is not ivy's.
    let (req, _) = ask("ivy/phone", &stranger, TicketKind::Fetch, today, 1);
    assert!(matches!(
        run(&mut as_, &store, req),
        Response::Error(WireError::Auth(AuthError::BadSignature(_)))
    ));
    // A client id nobody holds.
    let (req, _) = ask("nobody/x", &stranger, TicketKind::Fetch, today, 1);
    assert!(matches!(
        run(&mut as_, &store, req),
        Response::Error(WireError::Auth(AuthError::UnknownClient(_)))
    ));
    // Another day than today, or too many at once.
    let (req, _) = ask("ivy/phone", &key, TicketKind::Fetch, today + 1, 1);
    assert!(matches!(
        run(&mut as_, &store, req),
        Response::Error(WireError::Auth(AuthError::BadTicket(_)))
    ));
    let (req, _) = ask("ivy/phone", &key, TicketKind::Fetch, today, 65);
    assert!(matches!(
        run(&mut as_, &store, req),
        Response::Error(WireError::Auth(AuthError::BadTicket(_)))
    ));
    assert_eq!(store.contents(), before);
    // The same signed request twice: served once; the repeat gets the same
    // tickets (no new ones) and takes nothing more of the allowance.
    let (req, _) = ask("ivy/phone", &key, TicketKind::Fetch, today, 1);
    let first = run(&mut as_, &store, req.clone());
    assert!(matches!(first, Response::As(AsResponse::TicketsIssued { .. })));
    let before = store.contents();
    assert_eq!(run(&mut as_, &store, req), first);
    assert_eq!(store.contents(), before);
}

#[test]
fn a_ticket_pays_for_one_request_once() {
    let store = MemStore::new();
    let (mut as_, key) = ivy(&store);
    let t = tickets(&mut as_, &store, &key, TicketKind::Mailbox, 2);
    assert_eq!(spend(&mut as_, &store, &t[0], 1, NOW), Response::Node(NodeResponse::Spent));
    // The same request again (its answer was lost): no second charge.
    let before = store.contents();
    assert_eq!(spend(&mut as_, &store, &t[0], 1, NOW), Response::Node(NodeResponse::Spent));
    assert_eq!(store.contents(), before);
    // Another request with the same ticket: refused, nothing stored.
    assert_eq!(
        spend(&mut as_, &store, &t[0], 2, NOW),
        Response::Error(WireError::Auth(AuthError::TicketSpent))
    );
    // Forged output, another kind, another AS key: refused.
    let mut forged = t[1].clone();
    forged.output[3] ^= 0x40;
    let mut other_kind = t[1].clone();
    other_kind.kind = TicketKind::Group;
    let foreign = {
        let other = SigningKey::from_bytes(&[5; 32]);
        let issuer =
            mlsd_transport::ticket::TicketIssuer::from_as_secret(&other.to_bytes()).unwrap();
        let (pending, blinded) = blind(1).unwrap();
        let (ev, proof) =
            issuer.issue(TicketKind::Mailbox, day_of(NOW), &blinded, &[4; 32]).unwrap();
        finalize(TicketKind::Mailbox, day_of(NOW), &pending, &ev, &proof, &issuer.public_key())
            .unwrap()
            .remove(0)
    };
    for bad in [&forged, &other_kind, &foreign] {
        assert!(matches!(
            spend(&mut as_, &store, bad, 3, NOW),
            Response::Error(WireError::Auth(AuthError::BadTicket(_)))
        ));
    }
    assert_eq!(store.contents(), before);
    // Good the next day too, not the one after.
    assert!(matches!(
        spend(&mut as_, &store, &t[1], 4, NOW + 2 * DAY_SECS),
        Response::Error(WireError::Auth(AuthError::BadTicket(_)))
    ));
    assert_eq!(
        spend(&mut as_, &store, &t[1], 4, NOW + DAY_SECS),
        Response::Node(NodeResponse::Spent)
    );
}

#[test]
fn a_device_clock_a_little_past_midnight_still_gets_and_spends_tickets() {
    let store = MemStore::new();
    let (mut as_, key) = ivy(&store);
    // The AS's clock 100 s before midnight UTC, the device's 100 s after.
    let midnight = (NOW / DAY_SECS + 1) * DAY_SECS;
    let (server, device) = (midnight - 100, midnight + 100);
    let (pending, blinded) = blind(1).unwrap();
    let body = TicketBody {
        client: "ivy/phone".into(),
        kind: TicketKind::Fetch,
        day: day_of(device),
        blinded,
        timestamp: device,
    };
    let signature = key.sign(&signing_bytes(LABEL_TICKETS, &body)).to_bytes().to_vec();
    let req = Request::As(AsRequest::IssueTickets { body, signature });
    let t = match as_.handle(req, None, &at(&store, server)).applied(&store) {
        Response::As(AsResponse::TicketsIssued { evaluated, proof, key }) => {
            finalize(TicketKind::Fetch, day_of(device), &pending, &evaluated, &proof, &key.key)
                .unwrap()
                .remove(0)
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(spend(&mut as_, &store, &t, 1, server + 50), Response::Node(NodeResponse::Spent));
    // Two days ahead is no clock skew: refused.
    let mut ahead = t.clone();
    ahead.day += 1;
    assert!(matches!(
        spend(&mut as_, &store, &ahead, 2, server),
        Response::Error(WireError::Auth(AuthError::BadTicket(m))) if m.contains("good until")
    ));
}

/// The issuance decision is a function of the request and the context: the
/// same request with the same `random` gets the same proof, byte for byte
/// (so a simulation replays it), and other random bytes another proof that
/// checks just as well.
#[test]
fn issuance_draws_its_randomness_from_the_context_only() {
    let store = MemStore::new();
    let (mut as_, key) = ivy(&store);
    let (req, pending) = ask("ivy/phone", &key, TicketKind::Fetch, day_of(NOW), 3);
    let mut with = |random: [u8; 32]| {
        let ctx = RoleContext { random: zeroize::Zeroizing::new(random), ..at(&store, NOW) };
        // Decided, not applied: each decision starts from the same state.
        as_.handle(req.clone(), None, &ctx).response
    };
    let (a, again, b) = (with([1; 32]), with([1; 32]), with([2; 32]));
    assert_eq!(a, again, "the same context decides the same");
    let proof = |r: &Response| match r {
        Response::As(AsResponse::TicketsIssued { evaluated, proof, key }) => {
            (evaluated.clone(), proof.clone(), key.key)
        }
        other => panic!("{other:?}"),
    };
    let ((ev_a, proof_a, k), (ev_b, proof_b, _)) = (proof(&a), proof(&b));
    assert_eq!(ev_a, ev_b, "the evaluations depend on the key and input alone");
    assert_ne!(proof_a, proof_b, "the proof's nonce comes from `random`");
    let today = day_of(NOW);
    for p in [&proof_a, &proof_b] {
        let t = finalize(TicketKind::Fetch, today, &pending, &ev_a, p, &k).unwrap();
        assert_eq!(t.len(), 3);
    }
}
