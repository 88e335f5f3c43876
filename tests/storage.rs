//! The SDS: capability-addressed blobs in chunks, and group data (step 8).

mod common;

use common::Cluster;
use mlsd_client::{blob, ClientError, Connection};
use mlsd_transport::protocol::tickets::TicketKind;
use mlsd_transport::protocol::{RosterMode, SdsError, SdsRequest, SdsResponse};
use mlsd_transport::{Request, Response, Role, WireError};

fn split(extra: &str) -> Cluster {
    Cluster::with_extra(
        &[("n1", &[Role::As, Role::Cs]), ("n2", &[Role::Ids, Role::Ods]), ("n3", &[Role::Sds])],
        &format!("[limits]\ncall_timeout_ms = 3000\n{extra}"),
    )
}

fn server_err<T: std::fmt::Debug>(r: Result<T, ClientError>) -> WireError {
    match r {
        Err(ClientError::Server(e)) => e,
        other => panic!("expected a server error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn blobs_need_the_capability_to_change_and_only_the_id_to_read() {
    let _watchdog = common::init();
    let mut c = split("[sds]\nmax_blob_bytes = 4000000\n");
    c.start_all().await;
    let conn = Connection::connect(c.addr("n1"), &c.ca()).await.unwrap();
    let (id, cap, other_cap) = ([1u8; 32], [2u8; 32], [3u8; 32]);

    // Larger than one frame (1 MiB): goes in chunks both ways.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    blob::put(&conn, id, cap, &big, c.tickets(TicketKind::Blob, blob::chunks(big.len())).await)
        .await
        .unwrap();
    assert_eq!(blob::get(&conn, id, 10_000_000).await.unwrap(), big);

    // Overwriting or deleting needs the capability; a failed attempt changes nothing.
    assert_eq!(
        server_err(
            blob::put(&conn, id, other_cap, b"mine now", c.tickets(TicketKind::Blob, 1).await)
                .await
        ),
        WireError::Sds(SdsError::WrongCapability)
    );
    assert_eq!(
        server_err(blob::delete(&conn, id, other_cap).await),
        WireError::Sds(SdsError::WrongCapability)
    );
    assert_eq!(blob::get(&conn, id, 10_000_000).await.unwrap(), big);
    blob::put(&conn, id, cap, b"replaced", c.tickets(TicketKind::Blob, 1).await).await.unwrap();
    assert_eq!(blob::get(&conn, id, 100).await.unwrap(), b"replaced");
    blob::delete(&conn, id, cap).await.unwrap();
    assert_eq!(server_err(blob::get(&conn, id, 100).await), WireError::Sds(SdsError::UnknownBlob));

    // Over the size limit, announced or sent.
    let r = conn
        .request_paid(
            Request::Sds(SdsRequest::PutBlob {
                id: [4; 32],
                cap,
                offset: 0,
                total: 5_000_000,
                data: vec![0; 10],
            }),
            c.ticket(TicketKind::Blob).await,
        )
        .await;
    assert!(matches!(server_err(r), WireError::Sds(SdsError::BadBlob(_))));
    // A chunk out of order.
    let r = conn
        .request_paid(
            Request::Sds(SdsRequest::PutBlob {
                id: [5; 32],
                cap,
                offset: 0,
                total: 20,
                data: vec![0; 10],
            }),
            c.ticket(TicketKind::Blob).await,
        )
        .await;
    assert_eq!(r.unwrap(), Response::Sds(SdsResponse::BlobWritten { written: 10 }));
    let r = conn
        .request_paid(
            Request::Sds(SdsRequest::PutBlob {
                id: [5; 32],
                cap,
                offset: 15,
                total: 20,
                data: vec![0; 5],
            }),
            c.ticket(TicketKind::Blob).await,
        )
        .await;
    assert!(matches!(server_err(r), WireError::Sds(SdsError::BadBlob(_))));
    // An unfinished upload is not readable.
    assert_eq!(
        server_err(blob::get(&conn, [5; 32], 100).await),
        WireError::Sds(SdsError::UnknownBlob)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn new_members_read_group_data_and_removed_ones_cannot_derive_the_next() {
    let _watchdog = common::init();
    let mut c = split("");
    c.start_all().await;
    let mut alice = c.registered("alice/phone", "n1", 2).await;
    let mut bob = c.registered("bob/phone", "n2", 2).await;
    let mut charlie = c.registered("charlie/phone", "n3", 2).await;
    alice.create_group("Book club", RosterMode::Client).await.unwrap();
    alice.add_members("Book club", &["bob", "charlie"]).await.unwrap();
    bob.receive().await.unwrap();
    charlie.receive().await.unwrap();
    // The data the new members found is in the SDS, at the id of epoch 1.
    let id = bob.group_data_id("Book club").unwrap();
    assert_eq!(id, alice.group_data_id("Book club").unwrap());
    let sealed = blob::get(bob.connection(), id, 1 << 20).await.unwrap();
    assert!(!sealed.windows(9).any(|w| w == b"Book club"), "group data is encrypted");

    let before = charlie.group_data_id("Book club").unwrap();
    alice.remove_members("Book club", &["charlie"]).await.unwrap();
    bob.receive().await.unwrap();
    charlie.receive().await.unwrap();
    let next = bob.group_data_id("Book club").unwrap();
    assert_ne!(next, before);
    assert!(
        charlie.group_data_id("Book club").is_err(),
        "a removed member derives nothing of the next epoch"
    );
    assert!(blob::get(bob.connection(), next, 1 << 20).await.is_ok());
}
