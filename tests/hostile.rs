//! Hostile input at the wire: malformed, oversized, truncated and mistyped
//! frames get their specific errors, and the node keeps serving on the same
//! and on new connections. Also: only nodes may speak `mlsd-node/1`.

mod common;

use mlsd_transport::protocol::{
    BadFrame, ClientFrame, ClusterError, NodeFrame, NodeRequest, Ping, ResponseFrame, ALPN_NODE,
    CLIENT_MAGIC,
};
use std::time::Duration;

use common::{frame, Cluster};
use mlsd_transport::frame::{read_message, write_message};
use mlsd_transport::{endpoint, tls, Request, Response, Role, WireError};

const T: Duration = Duration::from_secs(5);

async fn one_node() -> Cluster {
    let mut c = Cluster::new(&[("n1", &Role::ALL)]);
    // No `mlsd certs` first: `mlsd run` must create them itself.
    c.start("n1").await;
    assert!(c.log("n1").contains("created missing certificates"), "{}", c.log("n1"));
    c
}

async fn raw_connect(c: &Cluster, cfg: rustls::ClientConfig, name: &str) -> quinn::Connection {
    let q = endpoint::quinn_client_config(cfg).unwrap();
    let ep = endpoint::client_endpoint(c.addr("n1"), q).unwrap();
    endpoint::connect(&ep, c.addr("n1"), name, T).await.unwrap()
}

async fn client_conn(c: &Cluster) -> quinn::Connection {
    let ca = tls::load_certs(&c.ca()).unwrap();
    raw_connect(c, tls::client_config(&ca).unwrap(), tls::CLUSTER_SERVER_NAME).await
}

/// Sends raw bytes on a new stream, then the end of the stream; returns the response.
async fn send_raw(conn: &quinn::Connection, bytes: &[u8]) -> Response {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    send.finish().unwrap();
    let f: ResponseFrame = read_message(&mut recv, 1 << 20, T).await.unwrap();
    f.response
}

async fn ping(conn: &quinn::Connection) -> Response {
    let f = ClientFrame::new(Request::Ping(Ping { role: Role::Ods, key: b"k".to_vec() }));
    let r: ResponseFrame = endpoint::call(conn, &f, 1 << 20, T).await.unwrap();
    r.response
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_frames_get_errors_and_the_node_keeps_serving() {
    let _watchdog = common::init();
    let c = one_node().await;
    let conn = client_conn(&c).await;
    assert!(matches!(ping(&conn).await, Response::Pong(_)));

    let r = send_raw(&conn, &frame(b"\xff\xfe garbage \x00")).await;
    assert!(matches!(r, Response::Error(WireError::Frame(BadFrame::Malformed(_)))), "{r:?}");

    let r = send_raw(&conn, &u32::MAX.to_be_bytes()).await;
    assert!(
        matches!(r, Response::Error(WireError::Frame(BadFrame::TooLarge { len: u32::MAX, .. }))),
        "{r:?}"
    );

    let mut truncated = 100u32.to_be_bytes().to_vec();
    truncated.extend_from_slice(b"0123456789");
    let r = send_raw(&conn, &truncated).await;
    assert_eq!(r, Response::Error(WireError::Frame(BadFrame::Truncated)));

    // A well-formed frame of another protocol version.
    let mut f = ClientFrame::new(Request::Ping(Ping { role: Role::As, key: vec![] }));
    f.version = 99;
    let r = send_raw(&conn, &frame(&mlsd_transport::codec::encode(&f).unwrap())).await;
    assert!(
        matches!(
            r,
            Response::Error(WireError::Frame(BadFrame::UnsupportedVersion { got: 99, .. }))
        ),
        "{r:?}"
    );

    // A valid frame followed by trailing junk inside the length.
    let mut body = mlsd_transport::codec::encode(&ClientFrame::new(Request::Ping(Ping {
        role: Role::As,
        key: vec![],
    })))
    .unwrap();
    body.push(7);
    let r = send_raw(&conn, &frame(&body)).await;
    assert!(matches!(r, Response::Error(WireError::Frame(BadFrame::Malformed(_)))), "{r:?}");

    // The same connection and a new one still work.
    assert!(matches!(ping(&conn).await, Response::Pong(_)));
    let conn2 = client_conn(&c).await;
    assert!(matches!(ping(&conn2).await, Response::Pong(_)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_stream_times_out_without_hurting_others() {
    let _watchdog = common::init();
    let mut c = Cluster::with_extra(&[("n1", &Role::ALL)], "[limits]\nread_timeout_ms = 300\n");
    c.start("n1").await;
    let conn = client_conn(&c).await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&[0, 0]).await.unwrap(); // half a length prefix, stream left open
    let f: ResponseFrame = read_message(&mut recv, 1 << 20, T).await.unwrap();
    assert_eq!(f.response, Response::Error(WireError::Frame(BadFrame::Timeout)));
    assert!(matches!(ping(&conn).await, Response::Pong(_)));
}

#[tokio::test(flavor = "multi_thread")]
async fn only_cluster_nodes_may_speak_the_node_protocol() {
    let _watchdog = common::init();
    let c = one_node().await;
    let ca = tls::load_certs(&c.ca()).unwrap();
    let forward = NodeFrame::new(NodeRequest::Forward(Request::Ping(Ping {
        role: Role::Ids,
        key: b"g".to_vec(),
    })));
    let node_name = tls::node_dns_name("n1");

    // Control: a real node certificate of this cluster is served.
    let good = tls::NodeTls::load(&c.dir.path().join("certs"), "n1").unwrap();
    let conn = raw_connect(&c, tls::node_client_config(&good).unwrap(), &node_name).await;
    let r: ResponseFrame = endpoint::call(&conn, &forward, 1 << 20, T).await.unwrap();
    assert!(matches!(r.response, Response::Pong(_)), "{r:?}");

    // No certificate at all.
    let mut none = tls::client_config(&ca).unwrap();
    none.alpn_protocols = vec![ALPN_NODE.to_vec()];
    let conn = raw_connect(&c, none, &node_name).await;
    let r: Result<ResponseFrame, _> = endpoint::call(&conn, &forward, 1 << 20, T).await;
    assert!(r.is_err(), "a peer without a certificate was served: {r:?}");
    assert_eq!(
        closed_because(&conn).as_deref(),
        Some("node or operator certificate required"),
        "refused by the node, not by a timeout"
    );

    // A node certificate named after a cluster node, but from another CA.
    let other_ca = tls::generate_ca().unwrap();
    let impostor = tls::generate_node_cert("n1", &other_ca.key_pem).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("n1.pem"), &impostor.cert_pem).unwrap();
    std::fs::write(dir.path().join("n1.key"), &impostor.key_pem).unwrap();
    std::fs::copy(c.ca(), dir.path().join("ca.pem")).unwrap();
    let bad = tls::NodeTls::load(dir.path(), "n1").unwrap();
    let q = endpoint::quinn_client_config(tls::node_client_config(&bad).unwrap()).unwrap();
    let ep = endpoint::client_endpoint(c.addr("n1"), q).unwrap();
    // The TLS handshake completes on the client's side first; the node then
    // rejects the certificate and closes the connection saying why.
    let why = match endpoint::connect(&ep, c.addr("n1"), &node_name, T).await {
        Err(e) => e.to_string(),
        Ok(conn) => {
            let r = endpoint::call::<_, ResponseFrame>(&conn, &forward, 1 << 20, T).await;
            assert!(r.is_err(), "a certificate from another CA was served: {r:?}");
            closed_because(&conn).unwrap_or_else(|| format!("{r:?}"))
        }
    };
    assert!(why.contains("invalid peer certificate"), "refused for another reason: {why}");

    // A client connection cannot send node-to-node frames.
    let conn = client_conn(&c).await;
    let mut wrong =
        NodeFrame::new(NodeRequest::Forward(Request::Ping(Ping { role: Role::As, key: vec![] })));
    assert_ne!(wrong.magic, CLIENT_MAGIC);
    let mut buf = Vec::new();
    write_message(&mut buf, &wrong, 1 << 20).await.unwrap();
    let r = send_raw(&conn, &buf).await;
    assert!(matches!(r, Response::Error(WireError::Frame(BadFrame::Malformed(_)))), "{r:?}");
    // Even with the client magic, the bytes are read as a client request,
    // never a forward: these happen to read as a client's own ping of the
    // AS (a forward's tag and the ping's role line up), anything else would
    // be malformed; a forward would have been answered by the AS actor of
    // the node the frame names.
    wrong.magic = CLIENT_MAGIC;
    let mut buf = Vec::new();
    write_message(&mut buf, &wrong, 1 << 20).await.unwrap();
    let r = send_raw(&conn, &buf).await;
    assert!(
        matches!(r, Response::Error(WireError::Frame(BadFrame::Malformed(_))) | Response::Pong(_)),
        "{r:?}"
    );
}

/// Requests in the flood below: at 50 a second, all of them would need
/// 20 s to be served.
const FLOOD: usize = 1000;

#[tokio::test(flavor = "multi_thread")]
async fn a_flooding_client_is_refused_and_others_keep_sending() {
    let _watchdog = common::init();
    let mut c = Cluster::with_extra(&[("n1", &Role::ALL)], "[limits]\nrequests_per_second = 50\n");
    c.certs();
    c.start("n1").await;
    let (mut alice, mut bob) = c.alice_and_bob_in_g("n1", 2).await;

    let flooder = std::sync::Arc::new(client_conn(&c).await);
    let started = std::time::Instant::now();
    let flood: Vec<_> = (0..FLOOD)
        .map(|_| {
            let f = flooder.clone();
            tokio::spawn(async move {
                let frame = ClientFrame::new(Request::Ping(Ping { role: Role::Ods, key: vec![] }));
                endpoint::call::<_, ResponseFrame>(&f, &frame, 1 << 20, T).await.map(|r| r.response)
            })
        })
        .collect();
    // Meanwhile, on their own connections, the others' sends complete.
    for i in 0..5 {
        alice.send_text("G", &format!("during the flood {i}")).await.unwrap();
    }
    let (mut limited, mut served) = (0, 0);
    for t in flood {
        // Refused either with RateLimited or by the stream being stopped
        // before the whole request was written.
        match t.await.unwrap() {
            Ok(Response::Error(WireError::Cluster(ClusterError::RateLimited { .. }))) => {
                limited += 1
            }
            Ok(Response::Pong(_)) => served += 1,
            // A stream the node stopped before the request was whole is a
            // refusal too; anything else (a timeout, another error) is not.
            Err(e) if e.to_string().contains("stopped") => limited += 1,
            other => panic!("a flood request got neither a pong nor a refusal: {other:?}"),
        }
    }
    // What was served is bounded by the rate over the time the flood took
    // (plus one second of burst), however slowly this machine issued it.
    let took = started.elapsed().as_secs_f64();
    let bound = (50.0 * (took + 1.0)).ceil() as usize + 5;
    assert!(served <= bound, "{served} of {FLOOD} flood requests served in {took:.1} s");
    assert!(limited > 0 && limited + served == FLOOD, "{limited} refused, {served} served");
    let got = bob.receive().await.unwrap();
    assert_eq!(
        got.iter().filter(|e| matches!(e, mlsd_client::group::Event::Message { .. })).count(),
        5
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_per_address_are_capped() {
    let _watchdog = common::init();
    let mut c =
        Cluster::with_extra(&[("n1", &Role::ALL)], "[limits]\nmax_connections_per_address = 4\n");
    c.certs();
    c.start("n1").await;
    // Open connections until one is refused. The readiness probe's own
    // connection may still hold a slot for a moment, hence 3 or 4.
    let f = ClientFrame::new(Request::Ping(Ping { role: Role::Ods, key: vec![] }));
    let mut open = Vec::new();
    let mut refused = false;
    for _ in 0..6 {
        let conn = client_conn(&c).await;
        match endpoint::call::<_, ResponseFrame>(&conn, &f, 1 << 20, T).await {
            Ok(r) if matches!(r.response, Response::Pong(_)) => open.push(conn),
            other => {
                assert_eq!(
                    closed_because(&conn).as_deref(),
                    Some("too many connections from this address"),
                    "{other:?}"
                );
                refused = true;
                break;
            }
        }
    }
    assert!(refused, "no connection was refused");
    assert!((3..=4).contains(&open.len()), "{} connections were served", open.len());
    // Closing one frees a slot.
    open.pop().unwrap().close(0u32.into(), b"bye");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = client_conn(&c).await;
    assert!(matches!(ping(&again).await, Response::Pong(_)));
}

/// The reason a node gave when it closed `conn`, if it closed it.
fn closed_because(conn: &quinn::Connection) -> Option<String> {
    match conn.close_reason()? {
        quinn::ConnectionError::ApplicationClosed(a) => {
            Some(String::from_utf8_lossy(&a.reason).into_owned())
        }
        quinn::ConnectionError::ConnectionClosed(c) => {
            Some(String::from_utf8_lossy(&c.reason).into_owned())
        }
        _ => None,
    }
}
