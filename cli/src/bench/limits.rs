//! The machine's limits: seals per core on the anonymizer's path, ODS
//! synced enqueues, and bytes over one node-to-node QUIC stream.

use super::*;
use mlsd_transport::protocol::{NodeResponse, OdsRequest, OdsResponse};

/// Seals per second on one core, on the anonymizer's sealing code (its
/// nonce source included), and the envelope length.
pub(super) fn seal_rate(n: usize) -> (f64, usize) {
    let key = rand32();
    let msg = vec![7u8; MESSAGE];
    let mut len = 0;
    let t = Instant::now();
    for _ in 0..n {
        len = seal_copy(&key, &msg).expect("fits a bucket").len();
    }
    (n as f64 / t.elapsed().as_secs_f64(), len)
}

/// ODS enqueues per second through `OdsLogic` on a fresh synced RocksDB:
/// `copies` copies to `mailboxes` mailboxes in turn, in batches of `batch`,
/// as a fan-out to that many members hands them over.
pub(super) fn enqueue_rate(
    copies: usize,
    batch: usize,
    mailboxes: usize,
    envelope_len: usize,
) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let store = RocksStore::open(dir.path(), true)?;
    let mut ods = OdsLogic::new(OdsSettings {
        max_queue: u32::MAX,
        max_fetch: 256,
        page_bytes: 1 << 20,
        max_capabilities: 16,
    });
    let ctx = RoleContext {
        node: "bench",
        store: &store,
        now: SystemTime::now(),
        random: zeroize::Zeroizing::new([0; 32]),
    };
    let caps = (0..mailboxes.max(1))
        .map(|_| mailbox_with_cap(&mut ods, &ctx, &store))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Prepared up front (the fan-out's anonymizers make them), so only the
    // ODS's own work (the capability check included) is timed.
    let items: Vec<EnqueueItem> = (0..copies)
        .map(|i| EnqueueItem {
            cap: caps[i % caps.len()].clone(),
            delivery_id: rand32(),
            envelope: vec![1; envelope_len],
        })
        .collect();
    let mut items = items.into_iter().peekable();
    let t = Instant::now();
    while items.peek().is_some() {
        let chunk: Vec<EnqueueItem> = items.by_ref().take(batch.max(1)).collect();
        // Applied as the ODS host does: one synced batch per call.
        match ods.enqueue(chunk, &ctx).apply(&store)?.0 {
            Response::Node(NodeResponse::Enqueued(_)) => {}
            other => anyhow::bail!("enqueue failed: {other:?}"),
        }
    }
    Ok(copies as f64 / t.elapsed().as_secs_f64())
}

/// Opens a mailbox through `ods` and issues one capability for it.
pub(super) fn mailbox_with_cap(
    ods: &mut OdsLogic,
    ctx: &RoleContext<'_>,
    store: &RocksStore,
) -> anyhow::Result<mlsd_transport::protocol::DeliveryCap> {
    use mlsd_transport::protocol::ods::LABEL_ISSUE;
    let keys = mlsd_client::mailbox::MailboxKeys::generate()?;
    let open =
        OdsRequest::OpenMailbox { mailbox: keys.id, auth_key: keys.auth_public(), push: None };
    ods.handle(Request::Ods(open), None, ctx).apply(store)?;
    let cap = keys.new_cap()?;
    let tokens = vec![cap.token];
    let counter = crate::bench::now_millis();
    let auth = keys.auth(LABEL_ISSUE, counter, &(&tokens, &None::<[u8; 32]>));
    let issue = OdsRequest::IssueCapabilities { auth, tokens, push_key: None };
    match ods.handle(Request::Ods(issue), None, ctx).apply(store)?.0 {
        Response::Ods(OdsResponse::CapabilitiesIssued { .. }) => Ok(cap),
        other => anyhow::bail!("issuing a capability failed: {other:?}"),
    }
}

/// Quota tickets per second on one core (decision D12): the AS evaluating
/// blinded inputs in batches of 64 with one proof, and checking a spent
/// ticket (what each costly request adds at its AS node).
pub(super) fn ticket_rates(n: usize) -> anyhow::Result<(f64, f64)> {
    use mlsd_transport::protocol::tickets::TicketKind;
    use mlsd_transport::ticket::{blind, finalize, TicketIssuer};
    let issuer = TicketIssuer::from_as_secret(&rand32())?;
    let batches = n.div_ceil(64).max(1);
    let mut tickets = Vec::with_capacity(batches * 64);
    let mut issue_secs = 0.0;
    for _ in 0..batches {
        let (pending, blinded) = blind(64)?;
        let t = Instant::now();
        let (evaluated, proof) = issuer.issue(TicketKind::Fetch, 1, &blinded, &rand32())?;
        issue_secs += t.elapsed().as_secs_f64();
        tickets.extend(finalize(
            TicketKind::Fetch,
            1,
            &pending,
            &evaluated,
            &proof,
            &issuer.public_key(),
        )?);
    }
    let t = Instant::now();
    let good = tickets.iter().filter(|k| issuer.check(k)).count();
    let check = tickets.len() as f64 / t.elapsed().as_secs_f64();
    anyhow::ensure!(good == tickets.len(), "an issued ticket did not check");
    Ok((tickets.len() as f64 / issue_secs, check))
}

/// Bytes per second over one mutual-TLS QUIC stream between two endpoints.
pub(super) async fn quic_rate(total: usize) -> anyhow::Result<f64> {
    let ca = tls::generate_ca()?;
    let cert = tls::generate_node_cert("b1", &ca.key_pem)?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("ca.pem"), &ca.cert_pem)?;
    std::fs::write(dir.path().join("b1.pem"), &cert.cert_pem)?;
    std::fs::write(dir.path().join("b1.key"), &cert.key_pem)?;
    let node = tls::NodeTls::load(dir.path(), "b1")?;
    let server = quinn::Endpoint::server(
        endpoint::quinn_server_config(tls::server_config(&node)?)?,
        "127.0.0.1:0".parse()?,
    )?;
    let addr = server.local_addr()?;
    let reader = tokio::spawn(async move {
        let conn = server.accept().await.context("accept")?.await?;
        let (_, mut recv) = conn.accept_bi().await?;
        let data = recv.read_to_end(usize::MAX).await?;
        anyhow::Ok(data.len())
    });
    let client = endpoint::client_endpoint(
        addr,
        endpoint::quinn_client_config(tls::node_client_config(&node)?)?,
    )?;
    let conn =
        endpoint::connect(&client, addr, &tls::node_dns_name("b1"), Duration::from_secs(5)).await?;
    let (mut send, _recv) = conn.open_bi().await?;
    let chunk = vec![0u8; 64 * 1024];
    let t = Instant::now();
    let mut sent = 0;
    while sent < total {
        send.write_all(&chunk).await?;
        sent += chunk.len();
    }
    send.finish()?;
    let got = reader.await??;
    let rate = got as f64 / t.elapsed().as_secs_f64();
    conn.close(0u32.into(), b"done");
    Ok(rate)
}
