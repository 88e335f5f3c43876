//! The benchmark's clusters and senders: fan-out throughput and
//! send-to-receive latency on real QUIC and RocksDB.

use super::*;
use mlsd_transport::protocol::{IdsRequest, IdsResponse};

/// Config for the benchmark's clusters: no rate limits in the way; every
/// other setting (anonymizer concurrency included) is the default.
///
/// Members are bare mailboxes opened without tickets (`[tickets] required =
/// false`): the benchmark measures delivery, not admission; the sender, a
/// real client, still pays for its group with a ticket.
pub(super) const BENCH_CONFIG: &str = "[tickets]\nrequired = false\n[limits]\nrequests_per_second = 1000000\n[ods]\nopen_rate_per_minute = 100000000\nmax_queue = 1000000\n[ids]\ngroup_copies_per_second = 100000000\nsender_copies_per_second = 100000000\ncreate_rate_per_minute = 100000000\n[cs]\nfetch_rate_per_target_per_minute = 100000000\nfetch_rate_per_minute = 100000000\n[sds]\nupload_bytes_per_minute = 4000000000\n";

/// A cluster shape the benchmark measures.
pub(super) struct Shape {
    /// How the tables name it.
    pub(super) label: &'static str,
    /// Node name and TOML role list, per node.
    pub(super) layout: &'static [(&'static str, &'static str)],
    /// Lines of the `[cluster]` table.
    pub(super) keys: &'static str,
}

/// Every role on one node (one replica of each shard); the IDS on one node
/// and the ODS on two others (each shard on the nodes hosting its role);
/// every role on three nodes with one replica of each shard, and the same
/// with three: what replication costs is the last against the one before.
/// Shapes whose shards have several voters run without leadership
/// handovers (`balance_leaders = false`): a fresh cluster hands shards over
/// one at a time for most of a minute, and each handover stops a shard's
/// writes for about 2 s, which a measurement must not include.
pub(super) const SHAPES: [Shape; 4] = [
    Shape { label: "1 node", layout: &[("b1", ALL)], keys: "" },
    Shape {
        label: "3 nodes, IDS | ODS ODS",
        layout: &[("b1", "\"as\", \"cs\", \"ids\", \"sds\""), ("b2", "\"ods\""), ("b3", "\"ods\"")],
        keys: "balance_leaders = false\n",
    },
    Shape {
        label: "3 nodes, 1 replica",
        layout: &[("b1", ALL), ("b2", ALL), ("b3", ALL)],
        keys: "replicas = 1\n",
    },
    Shape {
        label: "3 nodes, 3 replicas",
        layout: &[("b1", ALL), ("b2", ALL), ("b3", ALL)],
        keys: "replicas = 3\nbalance_leaders = false\n",
    },
];

/// Where in [`SHAPES`] the two every-role three-node shapes are, whose
/// figures the replication comparison divides.
pub(super) const ONE_REPLICA: usize = 2;
/// See [`ONE_REPLICA`].
pub(super) const THREE_REPLICAS: usize = 3;

/// Every role, as a TOML list.
pub(super) const ALL: &str = "\"as\", \"cs\", \"ids\", \"ods\", \"sds\"";

/// A fresh cluster of the benchmark with a registered sender that created the
/// group `bench` (client-supplied rosters, so the bench picks the recipients).
pub(super) struct BenchCluster {
    pub(super) cluster: InprocCluster,
    pub(super) sender: Client,
}

impl BenchCluster {
    /// Starts `shape` in this process and registers the sender.
    pub(super) async fn start(shape: &Shape) -> anyhow::Result<Self> {
        let extra = format!("{}{BENCH_CONFIG}", shape.keys);
        let cluster = InprocCluster::start("bench", shape.layout, &extra).await?;
        let mut sender = Client::open(&cluster.client_config("sender", 0)).await?;
        sender.register("bench/sender", None).await?;
        sender.create_group("bench", RosterMode::Client).await?;
        Ok(BenchCluster { cluster, sender })
    }
}

/// A real `Send` of `text` from `sender`, addressed to the bench's own
/// client-mode roster (the MAC does not cover the recipients).
pub(super) fn send_to_roster(
    sender: &mut Client,
    group: &str,
    text: &str,
    roster: &[RosterEntry],
) -> anyhow::Result<Request> {
    let Request::Ids(IdsRequest::Send { mut body, mac }) = sender.prepare_text(group, text)? else {
        anyhow::bail!("not a send");
    };
    body.recipients = Recipients::Roster(roster.to_vec());
    Ok(Request::Ids(IdsRequest::Send { body, mac }))
}

/// Sends `req` and checks that exactly `copies` copies were enqueued.
pub(super) async fn send_expecting(
    sender: &Client,
    req: Request,
    copies: usize,
) -> anyhow::Result<()> {
    match sender.send_request(req).await? {
        Response::Ids(IdsResponse::Sent { copies: n }) if n as usize == copies => Ok(()),
        other => anyhow::bail!("send failed: {other:?}"),
    }
}

/// Sends of one fan-out measurement in flight at once (after the first,
/// which runs alone to time one message to everyone).
pub(super) const SENDS_IN_FLIGHT: usize = 2;

/// Copies enqueued per second for `members` recipients over `messages`
/// sends, and the time of the first send (one message to everyone).
pub(super) async fn fanout(
    c: &InprocCluster,
    sender: &mut Client,
    group: &str,
    members: usize,
    messages: usize,
) -> anyhow::Result<(f64, f64)> {
    let conn = Connection::connect(c.nodes[0].addr(), &c.client_config("x", 0).ca).await?;
    let mut roster = Vec::with_capacity(members);
    for _ in 0..members {
        let cap = mailbox_with_cap(&conn).await?.1;
        roster.push(RosterEntry { cap, key: rand32() });
    }
    // The sender's own MLS encryption and its home's fsync are the client's
    // cost, not the fan-out's: every send is prepared before the clock starts.
    let text = "x".repeat(MESSAGE);
    let mut sends = Vec::with_capacity(messages);
    for _ in 0..messages {
        sends.push(send_to_roster(sender, group, &text, &roster)?);
    }
    let sender = &*sender;
    let mut sends = sends.into_iter();
    let t = Instant::now();
    if let Some(first) = sends.next() {
        send_expecting(sender, first, members).await?;
    }
    let first_ms = t.elapsed().as_secs_f64() * 1e3;
    // The rest [`SENDS_IN_FLIGHT`] at a time, as a server with more than one
    // active sender sees them: the next fan-out starts while the last one's
    // final chunk is written and its answer travels back.
    let mut lanes: Vec<Vec<Request>> = (0..SENDS_IN_FLIGHT).map(|_| Vec::new()).collect();
    for (i, send) in sends.enumerate() {
        lanes[i % SENDS_IN_FLIGHT].push(send);
    }
    let lane = |sends: Vec<Request>| async move {
        for send in sends {
            send_expecting(sender, send, members).await?;
        }
        anyhow::Ok(())
    };
    for done in mlsd_node::join::join_all(lanes.into_iter().map(lane).collect()).await {
        done?;
    }
    Ok(((members * messages) as f64 / t.elapsed().as_secs_f64(), first_ms))
}

/// A new mailbox opened over `conn`, with one capability issued.
pub(super) async fn mailbox_with_cap(
    conn: &Connection,
) -> anyhow::Result<(mlsd_client::mailbox::MailboxKeys, mlsd_transport::protocol::DeliveryCap)> {
    use mlsd_client::mailbox::{self, Counter, MailboxKeys};
    let keys = MailboxKeys::generate()?;
    mailbox::open(conn, &keys, None, None).await?;
    let cap = keys.new_cap()?;
    mailbox::issue(conn, &keys, &mut Counter::default(), std::slice::from_ref(&cap)).await?;
    Ok((keys, cap))
}

/// Send-to-receive latencies (ms) in a 100-member group: `subscribed` of the
/// members hold live subscriptions over QUIC (one connection each) and the
/// sender offers `rate` messages per second for `messages` messages; each
/// latency runs from the start of a send to a subscriber holding the envelope.
pub(super) async fn send_to_receive(
    c: &InprocCluster,
    sender: &mut Client,
    group: &str,
    messages: usize,
    rate: f64,
) -> anyhow::Result<Vec<f64>> {
    use mlsd_client::mailbox::{self, Counter};
    const MEMBERS: usize = 100;
    const SUBSCRIBED: usize = 4;
    let ca = c.client_config("x", 0).ca;
    let conn = Connection::connect(c.nodes[0].addr(), &ca).await?;
    let mut roster = Vec::with_capacity(MEMBERS);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    for i in 0..MEMBERS {
        let (keys, cap) = mailbox_with_cap(&conn).await?;
        roster.push(RosterEntry { cap, key: rand32() });
        if i < SUBSCRIBED {
            let own = Connection::connect(c.nodes[0].addr(), &ca).await?;
            let (mut sub, backlog) =
                mailbox::subscribe(&own, &keys, &mut Counter::default(), 0).await?;
            anyhow::ensure!(backlog.is_empty(), "a new mailbox has a backlog");
            let tx = tx.clone();
            tokio::spawn(async move {
                let _own = own;
                while let Ok(got) = sub.next().await {
                    for _ in got {
                        if tx.send((i, Instant::now())).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    }
    drop(tx);
    let text = "x".repeat(MESSAGE);
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut starts = Vec::with_capacity(messages);
    let t0 = Instant::now();
    for i in 0..messages {
        // Open loop: each send starts at its slot, late only if the previous one was.
        tokio::time::sleep_until((t0 + interval * i as u32).into()).await;
        let req = send_to_roster(sender, group, &text, &roster)?;
        starts.push(Instant::now());
        send_expecting(sender, req, MEMBERS).await?;
    }
    // Each subscriber gets the sends in order, so its k-th envelope is send k.
    let mut seen = [0usize; SUBSCRIBED];
    let mut out = Vec::with_capacity(messages * SUBSCRIBED);
    while out.len() < messages * SUBSCRIBED {
        let (i, at) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .context("a subscriber stopped receiving")?
            .context("subscriptions ended")?;
        let start = starts.get(seen[i]).context("more envelopes than sends")?;
        out.push(at.duration_since(*start).as_secs_f64() * 1e3);
        seen[i] += 1;
    }
    Ok(out)
}
