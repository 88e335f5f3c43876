//! Quotas per requesting identity that hold cluster-wide (decision D12):
//! what a requester may fetch and create is its identity's daily allowance
//! of tickets, counted at the identity's AS owner, and each ticket is spent
//! once at the AS owner of the ticket, whichever node a request enters.

mod common;

use common::{server_err, settled, Cluster};
use mlsd_transport::protocol::tickets::TicketKind;
use mlsd_transport::protocol::{
    AuthError, ClusterError, CsRequest, CsResponse, IdsRequest, IdsResponse, RosterMode,
};
use mlsd_transport::{Request, Response, Role, WireError};

/// Two nodes with every role: each is the AS owner of some identities and
/// tickets, and an entry node for the rest.
fn two_nodes(extra: &str) -> Cluster {
    Cluster::with_extra(
        &[("n1", &Role::ALL), ("n2", &Role::ALL)],
        &format!("[limits]\ncall_timeout_ms = 1500\nconnect_timeout_ms = 1000\n{extra}"),
    )
}

fn rate_limited(e: WireError) -> bool {
    matches!(e, WireError::Cluster(ClusterError::RateLimited { retry_after_ms }) if retry_after_ms > 0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_requesters_fetch_budget_is_one_budget_across_entry_nodes() {
    let _watchdog = common::init();
    let mut c = two_nodes("[tickets]\nfetch_per_day = 3\n");
    c.start_all().await;
    let _bob = c.registered("bob/phone", "n1", 10).await;
    c.registered("mallory/phone", "n1", 1).await;
    // The same device through either node: 3 fetches in all, then no more.
    let via_n1 = c.client("mallory/phone", "n1").await;
    let via_n2 = c.client("mallory/phone", "n2").await;
    via_n1.fetch_key_packages("bob").await.unwrap();
    via_n2.fetch_key_packages("bob").await.unwrap();
    via_n1.fetch_key_packages("bob").await.unwrap();
    for client in [&via_n2, &via_n1] {
        assert!(rate_limited(server_err(client.fetch_key_packages("bob").await)));
    }
    // Refused before the CS: 7 of bob's 10 KeyPackages are left.
    let bob = c.client("bob/phone", "n2").await;
    assert_eq!(bob.count_key_packages().await.unwrap(), (7, true));
    // Another requester has a budget of its own.
    let carol = c.registered("carol/phone", "n2", 1).await;
    carol.fetch_key_packages("bob").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ticket_spent_through_one_node_is_spent_for_every_node() {
    let _watchdog = common::init();
    let mut c = two_nodes("");
    c.start_all().await;
    let alice = c.registered("alice/phone", "n1", 1).await;
    let ticket = alice.take_ticket(TicketKind::Group).await.unwrap();
    let create = |group: &[u8]| {
        Request::Ids(IdsRequest::CreateGroup {
            group: group.to_vec(),
            mode: RosterMode::Client,
            auth_key: [1; 32],
            roster: None,
        })
    };
    let n1 = mlsd_client::Connection::connect(c.addr("n1"), &c.ca()).await.unwrap();
    let n2 = mlsd_client::Connection::connect(c.addr("n2"), &c.ca()).await.unwrap();
    let first = n1.request_paid(create(b"first"), Some(ticket.clone())).await.unwrap();
    assert_eq!(first, Response::Ids(IdsResponse::GroupCreated));
    // The same request again through the other node (its answer was lost):
    // not charged twice, and answered as the first time.
    let again = n2.request_paid(create(b"first"), Some(ticket.clone())).await;
    assert_eq!(
        again.unwrap(),
        Response::Ids(IdsResponse::GroupCreated),
        "a retry is answered with the first answer"
    );
    // Another request with it, through either node: refused, nothing created.
    let before = (settled(&c.dir.path().join("data/n1")), settled(&c.dir.path().join("data/n2")));
    for conn in [&n2, &n1] {
        let r = conn.request_paid(create(b"second"), Some(ticket.clone())).await;
        assert_eq!(server_err(r), WireError::Auth(AuthError::TicketSpent));
    }
    let after = (settled(&c.dir.path().join("data/n1")), settled(&c.dir.path().join("data/n2")));
    assert!(before == after, "a refused ticket changed storage");
}

/// A paid KeyPackage fetch sent again with the same frame, through another
/// entry node (its answer lost, or retried at a new leader): the same
/// KeyPackage, and no second one consumed. A client cannot name a paid
/// fetch itself.
#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_paid_fetch_gets_the_same_key_package_and_consumes_no_other() {
    let _watchdog = common::init();
    let mut c = two_nodes("");
    c.start_all().await;
    let alice = c.registered("alice/phone", "n1", 1).await;
    let bob = c.registered("bob/phone", "n2", 3).await;
    let ticket = alice.take_ticket(TicketKind::Fetch).await.unwrap();
    let fetch = Request::Cs(CsRequest::FetchKeyPackages { identity: "bob".into() });
    let n1 = mlsd_client::Connection::connect(c.addr("n1"), &c.ca()).await.unwrap();
    let n2 = mlsd_client::Connection::connect(c.addr("n2"), &c.ca()).await.unwrap();
    let first = n1.request_paid(fetch.clone(), Some(ticket.clone())).await.unwrap();
    assert!(
        matches!(&first, Response::Cs(CsResponse::KeyPackages(k)) if k.len() == 1),
        "{first:?}"
    );
    let again = n2.request_paid(fetch, Some(ticket)).await.unwrap();
    assert_eq!(again, first, "a repeat gets the first answer");
    assert_eq!(bob.count_key_packages().await.unwrap(), (2, true), "one consumed, not two");
    let named = Request::Cs(CsRequest::FetchPaid { identity: "bob".into(), paid: [7; 32] });
    assert!(matches!(
        server_err(n1.request(named).await),
        WireError::Auth(AuthError::NotAuthorized(_))
    ));
    assert_eq!(bob.count_key_packages().await.unwrap(), (2, true));
}

#[tokio::test(flavor = "multi_thread")]
async fn groups_mailboxes_and_blob_chunks_are_bounded_per_identity() {
    let _watchdog = common::init();
    let extra = "[tickets]\ngroup_per_day = 2\nmailbox_per_day = 2\nblob_chunks_per_day = 6\n";
    let mut c = two_nodes(extra);
    c.start_all().await;
    // Registration opened one mailbox; each group's data is one blob chunk.
    let mut phone = c.registered("ivy/phone", "n1", 1).await;
    phone.create_group("A", RosterMode::Client).await.unwrap();
    phone.create_group("B", RosterMode::Client).await.unwrap();
    let data = (c.dir.path().join("data/n1"), c.dir.path().join("data/n2"));
    let before = (settled(&data.0), settled(&data.1));
    assert!(rate_limited(server_err(phone.create_group("C", RosterMode::Client).await)));
    assert!(before == (settled(&data.0), settled(&data.1)), "a refused creation changed storage");
    // A second device shares the identity's allowance: its mailbox is the
    // second of the day, a third device gets none.
    let laptop = c.approved("ivy/laptop", &phone, "n2", 1).await;
    let mut tablet = c.client("ivy/tablet", "n2").await;
    assert!(matches!(
        tablet.register("ivy/tablet", None).await,
        Err(mlsd_client::ClientError::AwaitsApproval { .. })
    ));
    let (_, pending) = phone.devices().await.unwrap();
    let p = pending.into_iter().find(|p| p.client == "ivy/tablet").unwrap();
    phone.approve("ivy/tablet", p.signature_key).await.unwrap();
    assert!(rate_limited(server_err(tablet.register("ivy/tablet", None).await)));
    // Blob chunks: 2 went into the groups' data; 4 more fit, the 5th not.
    let file = c.dir.path().join("big");
    std::fs::write(&file, vec![7u8; 4 * mlsd_transport::limits::MAX_CHUNK - 1000]).unwrap();
    phone.send_file("A", &file).await.unwrap();
    std::fs::write(&file, b"one more chunk").unwrap();
    assert!(rate_limited(server_err(laptop.take_ticket(TicketKind::Blob).await)));
    // Another identity is not affected.
    let mut other = c.registered("jo/phone", "n2", 1).await;
    other.create_group("J", RosterMode::Client).await.unwrap();
    let req = Request::Cs(CsRequest::FetchKeyPackages { identity: "ivy".into() });
    assert!(matches!(other.paid_request(req).await, Ok(Response::Cs(CsResponse::KeyPackages(_)))));
}

/// The wallet's count of tickets of `kind`.
fn tickets(client: &mlsd_client::Client, kind: TicketKind) -> usize {
    client.ticket_counts().unwrap().into_iter().find(|(k, _)| *k == kind).map_or(0, |(_, n)| n)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paid_request_that_never_arrived_costs_no_ticket() {
    let _watchdog = common::init();
    let mut c = Cluster::with_extra(
        &[("n1", &Role::ALL)],
        "[limits]\ncall_timeout_ms = 1500\nconnect_timeout_ms = 1000\n",
    );
    c.start_all().await;
    let mut alice = c.registered("alice/phone", "n1", 2).await;
    alice.create_group("A", RosterMode::Client).await.unwrap();
    alice.fetch_key_packages("alice").await.unwrap();
    let (groups, fetches) =
        (tickets(&alice, TicketKind::Group), tickets(&alice, TicketKind::Fetch));
    assert!(groups > 0 && fetches > 0, "the wallet holds a batch of each");
    // The node is down: the creation takes a ticket and keeps it for itself.
    c.kill("n1");
    assert!(alice.create_group("B", RosterMode::Client).await.is_err());
    assert_eq!(tickets(&alice, TicketKind::Group), groups - 1);
    c.start("n1").await;
    alice.reconnect().await.unwrap();
    // Given up for another creation, which pays with the kept ticket: the
    // first never reached the AS, so it is good.
    alice.create_group("C", RosterMode::Client).await.unwrap();
    assert_eq!(tickets(&alice, TicketKind::Group), groups - 1, "a second ticket was taken");
    // A kept ticket of another kind goes back to the wallet.
    c.kill("n1");
    assert!(alice.fetch_key_packages("alice").await.is_err());
    assert_eq!(tickets(&alice, TicketKind::Fetch), fetches - 1);
    c.start("n1").await;
    alice.reconnect().await.unwrap();
    alice.create_group("D", RosterMode::Client).await.unwrap();
    assert_eq!(tickets(&alice, TicketKind::Fetch), fetches, "the fetch ticket is back");
    assert_eq!(tickets(&alice, TicketKind::Group), groups - 2);
}
