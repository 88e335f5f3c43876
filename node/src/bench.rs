//! `mlsd bench`: how fast fan-out is, next to what this machine allows.
//!
//! Measures, in one run: the limits (envelope seals per second per core on
//! the anonymizers' code path, bytes per second over one node-to-node QUIC
//! connection, ODS enqueues per second through the ODS's own synced write
//! path); fan-out throughput on a one-node and a three-node cluster in this
//! process (real QUIC, real RocksDB); and the send-to-all-enqueued latency.
//! Figures depend on the build profile: see docs/performance.md.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use mlsd_actors::ids::anonymizer::seal_copy;
use mlsd_actors::ids::fanout::ENQUEUE_CHUNK;
use mlsd_actors::ods::OdsLogic;
use mlsd_actors::settings::OdsSettings;
use mlsd_actors::{RocksStore, RoleContext, RoleLogic};
use mlsd_client::{Client, Connection};
use mlsd_transport::protocol::{EnqueueItem, NodeRequest, Recipients, RosterEntry, RosterMode};
use mlsd_transport::{endpoint, tls, Request, Response};

use crate::inproc::InprocCluster;

/// Options of `mlsd bench`.
pub struct BenchOpts {
    /// Smaller counts; finishes in a few minutes on 2 cores.
    pub quick: bool,
    /// Where to write every figure as JSON.
    pub json: Option<PathBuf>,
}

/// The size of the benchmark's application message.
const MESSAGE: usize = 1024;

fn rand32() -> [u8; 32] {
    let mut b = [0u8; 32];
    rand::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut b).expect("OS randomness");
    b
}

/// Seals per second on one core, on the anonymizer's sealing code (its
/// nonce source included), and the envelope length.
fn seal_rate(n: usize) -> (f64, usize) {
    let key = rand32();
    let mb = rand32();
    let msg = vec![7u8; MESSAGE];
    let mut len = 0;
    let t = Instant::now();
    for _ in 0..n {
        len = seal_copy(&key, &mb, &msg).expect("fits a bucket").len();
    }
    (n as f64 / t.elapsed().as_secs_f64(), len)
}

/// ODS enqueues per second through `OdsLogic` on a fresh synced RocksDB:
/// `copies` copies to `mailboxes` mailboxes in turn, in batches of `batch`,
/// as a fan-out to that many members hands them over.
fn enqueue_rate(
    copies: usize,
    batch: usize,
    mailboxes: usize,
    envelope_len: usize,
) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let store = RocksStore::open(dir.path(), true)?;
    let mut ods = OdsLogic::new(OdsSettings { max_queue: u32::MAX, max_fetch: 256 });
    let ctx = RoleContext { node: "bench", store: &store, now: SystemTime::now() };
    let mailboxes: Vec<[u8; 32]> = (0..mailboxes.max(1)).map(|_| rand32()).collect();
    for m in &mailboxes {
        let auth =
            ed25519_dalek::SigningKey::from_bytes(&rand32()).verifying_key().to_bytes().to_vec();
        ods.handle(Request::OpenMailbox { mailbox: *m, auth_key: auth, push: None }, None, &ctx);
    }
    // Prepared up front (the fan-out's anonymizers make them), so only the
    // ODS's own work is timed.
    let items: Vec<EnqueueItem> = (0..copies)
        .map(|i| EnqueueItem {
            mailbox: mailboxes[i % mailboxes.len()],
            delivery_id: rand32(),
            envelope: vec![1; envelope_len],
            push_key: None,
        })
        .collect();
    let mut items = items.into_iter().peekable();
    let t = Instant::now();
    while items.peek().is_some() {
        let chunk: Vec<EnqueueItem> = items.by_ref().take(batch.max(1)).collect();
        match ods.admin(NodeRequest::Enqueue(chunk), &ctx) {
            Response::Enqueued(_) => {}
            other => anyhow::bail!("enqueue failed: {other:?}"),
        }
    }
    Ok(copies as f64 / t.elapsed().as_secs_f64())
}

/// The job of anonymizer number `i` of a measurement: a 1 KiB message and
/// key material as a roster would give it (its value does not matter here).
fn bench_job(
    i: usize,
    message: &std::sync::Arc<Vec<u8>>,
    chaos_hooks: bool,
) -> mlsd_actors::ids::anonymizer::Job {
    use mlsd_actors::ids::anonymizer::{Job, KeyGuard, Sealing};
    let b = (i % 251) as u8;
    Job {
        index: i,
        message_id: [b; 32],
        message: message.clone(),
        mailbox: [b ^ 0x5a; 32],
        push_key: None,
        sealing: Sealing::Envelope(KeyGuard(zeroize::Zeroizing::new([b ^ 0xa5; 32]))),
        group: chaos_hooks.then(|| "bench/ids/anonymizers".to_string()),
    }
}

/// Microseconds per anonymizer actor, spawn to stop, sealing one 1 KiB
/// message each, in `lanes` concurrent loops of spawn-and-wait (1: one after
/// another, which measures latency including the wake-ups between tasks; as
/// many as a fan-out keeps: throughput).
/// `chaos_hooks` adds the process-group join a chaos-enabled node makes.
/// Returns (wall µs per actor, CPU µs per actor, all threads).
async fn anonymizer_cost(
    n: usize,
    lanes: usize,
    chaos_hooks: bool,
) -> anyhow::Result<(f64, Option<f64>)> {
    use mlsd_actors::ids::anonymizer::Anonymizer;
    use ractor::Actor;
    let message = std::sync::Arc::new(vec![7u8; MESSAGE]);
    let cpu0 = cpu_seconds();
    let t = Instant::now();
    let mut tasks = Vec::new();
    for lane in 0..lanes {
        let message = message.clone();
        tasks.push(tokio::spawn(async move {
            for i in (lane..n).step_by(lanes) {
                let job = bench_job(i, &message, chaos_hooks);
                let (_, handle) = Actor::spawn(None, Anonymizer, job).await?;
                handle.await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let wall = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    let cpu = cpu0.zip(cpu_seconds()).map(|(a, b)| (b - a) * 1e6 / n as f64);
    Ok((wall, cpu))
}

/// The anonymizer figures, medians of paired rounds (this host drifts).
struct AnonFigures {
    /// Wall µs per actor, one after another, job included.
    wall_us: f64,
    /// CPU µs per job done without an actor.
    job_us: f64,
    /// CPU µs per bare seal.
    seal_cpu_us: f64,
    /// CPU µs per actor with the fan-out's concurrency, job included.
    cpu_us: Option<f64>,
    /// `cpu_us` less the job measured in the same round: spawn and stop.
    actor_cpu_us: Option<f64>,
    /// Lowest and highest `actor_cpu_us` of the rounds.
    actor_cpu_spread: (f64, f64),
}

/// Measures the anonymizer `rounds` times: `n` one after another, `5 n` with
/// `in_flight` at once, the same jobs without actors and the bare seal, each
/// round's actor cost taken against that round's job cost.
async fn anonymizer_rounds(
    n: usize,
    in_flight: usize,
    rounds: usize,
) -> anyhow::Result<AnonFigures> {
    let (mut wall, mut jobs, mut seals, mut cpus, mut actors) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds.max(1) {
        wall.push(anonymizer_cost(n, 1, false).await?.0);
        let (_, cpu) = anonymizer_cost(n * 5, in_flight, false).await?;
        let job = job_cost(n * 5);
        let c0 = cpu_seconds();
        let (rate, _) = seal_rate(n * 5);
        seals.push(
            c0.zip(cpu_seconds()).map_or(1e6 / rate, |(a, b)| (b - a) * 1e6 / (n * 5) as f64),
        );
        if let Some(c) = cpu {
            cpus.push(c);
            actors.push(c - job);
        }
        jobs.push(job);
    }
    let actor_cpu_us = (!actors.is_empty()).then(|| median(&mut actors));
    Ok(AnonFigures {
        wall_us: median(&mut wall),
        job_us: median(&mut jobs),
        seal_cpu_us: median(&mut seals),
        cpu_us: (!cpus.is_empty()).then(|| median(&mut cpus)),
        actor_cpu_us,
        actor_cpu_spread: (
            actors.first().copied().unwrap_or(0.0),
            actors.last().copied().unwrap_or(0.0),
        ),
    })
}

/// CPU microseconds per anonymizer job done without an actor: the job built,
/// its copy made (seal and delivery id) and everything dropped, exactly as
/// inside an anonymizer. What an actor costs beyond this is the actor's own.
fn job_cost(n: usize) -> f64 {
    let message = std::sync::Arc::new(vec![7u8; MESSAGE]);
    let cpu0 = cpu_seconds();
    let t = Instant::now();
    for i in 0..n {
        let job = bench_job(i, &message, false);
        std::hint::black_box(mlsd_actors::ids::anonymizer::make_copy(&job).ok());
    }
    cpu0.zip(cpu_seconds())
        .map(|(a, b)| (b - a) * 1e6 / n as f64)
        .unwrap_or(t.elapsed().as_secs_f64() * 1e6 / n as f64)
}

/// CPU time (user + system, all threads) this process has used, seconds,
/// to the nanosecond (`CLOCK_PROCESS_CPUTIME_ID`; `/proc/self/stat` counts
/// in 10 ms ticks, too coarse for a few thousand actors).
fn cpu_seconds() -> Option<f64> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    (rc == 0).then_some(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
}

/// Resident set size of this process, bytes (Linux `/proc/self/statm`).
fn rss() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Resident bytes per idle mailbox: opens `n` mailboxes through the ODS's
/// own logic on a synced RocksDB and compares resident memory before and
/// after (RocksDB's memtable and caches included, as a node would hold them).
fn bytes_per_idle_mailbox(n: usize) -> anyhow::Result<Option<f64>> {
    let dir = tempfile::tempdir()?;
    let store = RocksStore::open(dir.path(), false)?;
    let mut ods = OdsLogic::new(OdsSettings { max_queue: 10_000, max_fetch: 256 });
    let ctx = RoleContext { node: "bench", store: &store, now: SystemTime::now() };
    let auth = ed25519_dalek::SigningKey::from_bytes(&rand32()).verifying_key().to_bytes().to_vec();
    let Some(before) = rss() else { return Ok(None) };
    for _ in 0..n {
        let req = Request::OpenMailbox { mailbox: rand32(), auth_key: auth.clone(), push: None };
        if !matches!(ods.handle(req, None, &ctx), Response::MailboxOpened) {
            anyhow::bail!("opening a mailbox failed");
        }
    }
    let Some(after) = rss() else { return Ok(None) };
    Ok(Some(after.saturating_sub(before) as f64 / n as f64))
}

/// Resident bytes per idle group actor: creates `n` groups on a one-node
/// cluster in this process (each `CreateGroup` starts the group's actor, which
/// then idles until `group_idle_secs`) and compares resident memory before and
/// after, the groups' RocksDB records included. Also returns how many group
/// actors were alive at the end, so the figure is known to be about actors.
async fn bytes_per_idle_group(n: usize) -> anyhow::Result<Option<(f64, usize)>> {
    let c = InprocCluster::start(
        "bench-groups",
        &[("g1", "\"as\", \"cs\", \"ids\", \"ods\", \"sds\"")],
        BENCH_CONFIG,
    )
    .await?;
    let conn = Connection::connect(c.nodes[0].addr(), &c.client_config("x", 0).ca).await?;
    let create = |group: Vec<u8>| Request::CreateGroup {
        group,
        mode: RosterMode::Client,
        auth_key: rand32(),
        roster: None,
    };
    // Warm up the paths (allocator arenas, RocksDB memtable) before measuring.
    for _ in 0..200 {
        conn.request(create(rand32().to_vec())).await?;
    }
    let Some(before) = rss() else { return Ok(None) };
    for _ in 0..n {
        match conn.request(create(rand32().to_vec())).await? {
            Response::GroupCreated => {}
            other => anyhow::bail!("creating a group failed: {other:?}"),
        }
    }
    let Some(after) = rss() else { return Ok(None) };
    let alive = ractor::registry::registered().iter().filter(|n| n.contains("/ids/group/")).count();
    c.shutdown().await;
    Ok(Some((after.saturating_sub(before) as f64 / n as f64, alive)))
}

/// Runs one memory measurement in a child process (`mlsd bench-memory`), so
/// memory freed by other phases cannot be reused and hide the growth.
/// Returns bytes per item and how many were alive at the end.
fn memory(what: &str, count: usize) -> anyhow::Result<Option<(f64, usize)>> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["bench-memory", what, &count.to_string()])
        .env("RUST_LOG", "warn")
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "bench-memory {what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    match (words.next(), words.next()) {
        (Some("none"), _) => Ok(None),
        (Some(b), Some(n)) => Ok(Some((b.parse()?, n.parse()?))),
        _ => anyhow::bail!("bench-memory {what}: unexpected output {text:?}"),
    }
}

/// The child side of [`memory`]: prints `<bytes per item> <alive>` or `none`.
pub async fn memory_child(what: &str, count: usize) -> anyhow::Result<()> {
    let figure = match what {
        "mailboxes" => bytes_per_idle_mailbox(count)?.map(|b| (b, count)),
        "groups" => bytes_per_idle_group(count).await?,
        other => anyhow::bail!("unknown memory figure {other}"),
    };
    match figure {
        Some((b, n)) => println!("{b} {n}"),
        None => println!("none"),
    }
    Ok(())
}

/// Bytes per second over one mutual-TLS QUIC stream between two endpoints.
async fn quic_rate(total: usize) -> anyhow::Result<f64> {
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

/// Config for the benchmark's clusters: no rate limits in the way; every
/// other setting (anonymizer concurrency included) is the default.
const BENCH_CONFIG: &str = "[limits]\nrequests_per_second = 1000000\n[ods]\nopen_rate_per_minute = 100000000\nmax_queue = 1000000\n";

/// The two cluster shapes: every role on one node; IDS on one node and the
/// ODS on two others.
const SHAPES: [(usize, &[(&str, &str)]); 2] = [
    (1, &[("b1", "\"as\", \"cs\", \"ids\", \"ods\", \"sds\"")]),
    (3, &[("b1", "\"as\", \"cs\", \"ids\", \"sds\""), ("b2", "\"ods\""), ("b3", "\"ods\"")]),
];

/// A fresh cluster of the benchmark with a registered sender that created the
/// group `bench` (client-supplied rosters, so the bench picks the recipients).
struct BenchCluster {
    cluster: InprocCluster,
    sender: Client,
}

impl BenchCluster {
    async fn start(layout: &[(&str, &str)]) -> anyhow::Result<Self> {
        let cluster = InprocCluster::start("bench", layout, BENCH_CONFIG).await?;
        let mut sender = Client::open(&cluster.client_config("sender", 0)).await?;
        sender.register("bench/sender", None).await?;
        sender.create_group("bench", RosterMode::Client).await?;
        Ok(BenchCluster { cluster, sender })
    }
}

/// The median of `v` (sorted in place, so its ends are the extremes).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// A real `Send` of `text` from `sender`, addressed to the bench's own
/// client-mode roster (the MAC does not cover the recipients).
fn send_to_roster(
    sender: &mut Client,
    group: &str,
    text: &str,
    roster: &[RosterEntry],
) -> anyhow::Result<Request> {
    let Request::Send { mut body, mac } = sender.prepare_text(group, text)? else {
        anyhow::bail!("not a send");
    };
    body.recipients = Recipients::Roster(roster.to_vec());
    Ok(Request::Send { body, mac })
}

/// Sends `req` and checks that exactly `copies` copies were enqueued.
async fn send_expecting(sender: &Client, req: Request, copies: usize) -> anyhow::Result<()> {
    match sender.send_request(req).await? {
        Response::Sent { copies: n } if n as usize == copies => Ok(()),
        other => anyhow::bail!("send failed: {other:?}"),
    }
}

/// Sends of one fan-out measurement in flight at once (after the first,
/// which runs alone to time one message to everyone).
const SENDS_IN_FLIGHT: usize = 2;

/// Copies enqueued per second for `members` recipients over `messages`
/// sends, and the time of the first send (one message to everyone).
async fn fanout(
    c: &InprocCluster,
    sender: &mut Client,
    group: &str,
    members: usize,
    messages: usize,
) -> anyhow::Result<(f64, f64)> {
    let conn = Connection::connect(c.nodes[0].addr(), &c.client_config("x", 0).ca).await?;
    let mut roster = Vec::with_capacity(members);
    for _ in 0..members {
        let mailbox = rand32();
        let auth =
            ed25519_dalek::SigningKey::from_bytes(&rand32()).verifying_key().to_bytes().to_vec();
        conn.request(Request::OpenMailbox { mailbox, auth_key: auth, push: None }).await?;
        roster.push(RosterEntry { mailbox, key: rand32(), push_key: None });
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
    let mut lanes = lanes.into_iter();
    let (a, b) = tokio::join!(
        lane(lanes.next().unwrap_or_default()),
        lane(lanes.next().unwrap_or_default())
    );
    a?;
    b?;
    Ok(((members * messages) as f64 / t.elapsed().as_secs_f64(), first_ms))
}

/// Send-to-receive latencies (ms) in a 100-member group: `subscribed` of the
/// members hold live subscriptions over QUIC (one connection each) and the
/// sender offers `rate` messages per second for `messages` messages; each
/// latency runs from the start of a send to a subscriber holding the envelope.
async fn send_to_receive(
    c: &InprocCluster,
    sender: &mut Client,
    group: &str,
    messages: usize,
    rate: f64,
) -> anyhow::Result<Vec<f64>> {
    use mlsd_client::mailbox::{self, Counter, MailboxKeys};
    const MEMBERS: usize = 100;
    const SUBSCRIBED: usize = 4;
    let ca = c.client_config("x", 0).ca;
    let conn = Connection::connect(c.nodes[0].addr(), &ca).await?;
    let mut roster = Vec::with_capacity(MEMBERS);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    for i in 0..MEMBERS {
        let keys = MailboxKeys::generate()?;
        mailbox::open(&conn, &keys, None).await?;
        roster.push(RosterEntry { mailbox: keys.id, key: rand32(), push_key: None });
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

/// Runs the benchmark and prints a table (and JSON when asked).
pub async fn run(opts: BenchOpts) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let per_mailbox = memory("mailboxes", 100_000)?.map(|(b, _)| b).filter(|b| *b > 0.0);
    let (seal_per_core, env_len) = seal_rate(if opts.quick { 20_000 } else { 100_000 });
    // The 1,000-member fan-out and the enqueue stage it is compared with
    // handle the same number of copies from the same fresh start, several
    // times each (this host's fsync rate and CPU steal vary from run to run):
    // medians are compared, extremes printed.
    let volume = 20_000;
    let rounds = if opts.quick { 3 } else { 5 };
    let mut enqueues = Vec::new();
    for _ in 0..rounds {
        enqueues.push(enqueue_rate(volume, ENQUEUE_CHUNK, 1000, env_len)?);
    }
    let enqueue = median(&mut enqueues);
    let quic = quic_rate(if opts.quick { 64 << 20 } else { 256 << 20 }).await?;
    let other_limits = (seal_per_core * cores as f64).min(quic / env_len as f64);
    let ceiling = other_limits.min(enqueue);
    let anon_n = if opts.quick { 2_000 } else { 10_000 };
    let in_flight = mlsd_actors::settings::default_anonymizer_concurrency();
    let anon = anonymizer_rounds(anon_n, in_flight, rounds).await?;
    let (anon_us, job_us, seal_cpu_us) = (anon.wall_us, anon.job_us, anon.seal_cpu_us);
    let (anon_cpu_us, actor_cpu_us) = (anon.cpu_us, anon.actor_cpu_us);
    let (anon_chaos_us, _) = anonymizer_cost(anon_n, 1, true).await?;
    let seal_us = 1e6 / seal_per_core;
    println!("limits on this machine ({cores} cores), 1 KiB message -> {env_len}-byte envelopes:");
    println!("  seal                 {:>12.0} envelopes/s per core", seal_per_core);
    println!(
        "  ODS synced enqueue   {:>12.0} envelopes/s (median of {rounds}: {:.0}-{:.0}; {volume} copies to 1,000 mailboxes in batches of {ENQUEUE_CHUNK})",
        enqueue, enqueues[0], enqueues[rounds - 1]
    );
    println!(
        "  node-to-node QUIC    {:>12.0} bytes/s = {:.0} envelopes/s",
        quic,
        quic / env_len as f64
    );
    println!("  ceiling              {:>12.0} recipient copies/s", ceiling);
    println!(
        "  anonymizer actor     {anon_us:>12.1} µs spawn-to-stop incl. its job ({job_us:.1} µs for the job alone: seal + delivery id; {:.1} µs actor)",
        anon_us - job_us
    );
    if let (Some(cpu), Some(actor)) = (anon_cpu_us, actor_cpu_us) {
        let (lo, hi) = anon.actor_cpu_spread;
        println!(
            "  anonymizer, {in_flight} in flight {cpu:>9.1} µs CPU per actor incl. its job: {actor:.1} µs for spawn and stop ({lo:.1}-{hi:.1}), against {seal_cpu_us:.1} µs CPU per seal (medians of {rounds} paired rounds)"
        );
    }
    println!(
        "  with chaos hooks     {anon_chaos_us:>12.1} µs (process-group join; only with [chaos] allow)"
    );
    match per_mailbox {
        Some(b) => println!("memory: {b:.0} resident bytes per idle mailbox (100,000 open)"),
        None => println!("memory: resident size not available on this system"),
    }
    let groups = if opts.quick { 2_000 } else { 10_000 };
    let per_group = memory("groups", groups)?.filter(|(b, _)| *b > 0.0);
    if let Some((b, alive)) = per_group {
        println!("memory: {b:.0} resident bytes per idle group actor ({alive} alive)");
    }

    let sizes: &[usize] = if opts.quick { &[10, 100, 1000] } else { &[10, 100, 1000, 10_000] };
    let mut rows = Vec::new();
    let mut enqueue_1000_ms = None;
    let mut enqueue_latencies = Vec::new();
    let mut receive_latencies: Vec<(usize, f64, Vec<f64>)> = Vec::new();
    for &(n, layout) in &SHAPES {
        for &m in sizes {
            let messages = (volume / m).clamp(2, 200);
            // Each figure from a fresh cluster, as the enqueue stage starts
            // from a fresh database. The 1,000-member one `rounds` times, each
            // right after its own enqueue-stage run, so that a drift of the
            // host between the two cancels out in the ratio.
            let paired = m == 1000;
            let mut rates = Vec::new();
            let mut ratios = Vec::new();
            for _ in 0..if paired { rounds } else { 1 } {
                let limit = if paired {
                    other_limits.min(enqueue_rate(volume, ENQUEUE_CHUNK, 1000, env_len)?)
                } else {
                    ceiling
                };
                let mut b = BenchCluster::start(layout).await?;
                let (rate, first_ms) =
                    fanout(&b.cluster, &mut b.sender, "bench", m, messages).await?;
                if paired && n == 1 && enqueue_1000_ms.is_none() {
                    enqueue_1000_ms = Some(first_ms);
                }
                b.cluster.shutdown().await;
                rates.push(rate);
                ratios.push(rate / limit);
            }
            let rate = median(&mut rates);
            let ratio = median(&mut ratios);
            let spread = if paired {
                format!(
                    " (median of {} paired rounds: {:.2}-{:.2})",
                    ratios.len(),
                    ratios[0],
                    ratios[ratios.len() - 1]
                )
            } else {
                String::new()
            };
            println!(
                "  {n} node(s), {m:>6} members: {rate:>10.0} copies/s ({ratio:.2} of the ceiling){spread}"
            );
            rows.push((n, m, rate, ratio));
        }
        // Latency on its own cluster, at half the 100-member throughput.
        let mut b = BenchCluster::start(layout).await?;
        let sender = &mut b.sender;
        if n == 1 {
            for _ in 0..if opts.quick { 20 } else { 100 } {
                enqueue_latencies.push(fanout(&b.cluster, sender, "bench", 100, 1).await?.1);
            }
        }
        let rate100 = rows.iter().find(|r| r.0 == n && r.1 == 100).map_or(1000.0, |r| r.2);
        let offered = (rate100 / 100.0 / 2.0).clamp(1.0, 200.0);
        let count = if opts.quick { 100 } else { 500 };
        let lat = send_to_receive(&b.cluster, sender, "bench", count, offered).await?;
        receive_latencies.push((n, offered, lat));
        b.cluster.shutdown().await;
    }
    let (e50, e99) = percentiles(&mut enqueue_latencies);
    let mut latency = Vec::new();
    for (n, offered, lat) in &mut receive_latencies {
        let (p50, p99) = percentiles(lat);
        println!(
            "latency, send to a subscribed member receiving, 100 members, {n} node(s), {offered:.0} msg/s offered: p50 {p50:.1} ms, p99 {p99:.1} ms ({} samples)",
            lat.len()
        );
        latency.push((*n, *offered, p50, p99));
    }
    let (p50, p99) = latency.first().map(|l| (l.2, l.3)).unwrap_or((0.0, 0.0));
    let seal_1000_ms = 1000.0 / seal_per_core * 1e3;
    println!("latency, send to all 100 copies enqueued: p50 {e50:.1} ms, p99 {e99:.1} ms");
    println!("one message to 1000 members enqueued for all: {:.1} ms (1000 seals alone: {seal_1000_ms:.1} ms on one core)", enqueue_1000_ms.unwrap_or(0.0));

    if let Some(path) = opts.json {
        let rev = std::process::Command::new("git")
            .args(["rev-parse", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let fanout: Vec<String> = rows
            .iter()
            .map(|(n, m, r, ratio)| format!("{{\"nodes\": {n}, \"members\": {m}, \"copies_per_s\": {r:.1}, \"ratio\": {ratio:.3}}}"))
            .collect();
        let json = format!(
            "{{\n  \"machine\": {{\"cores\": {cores}, \"profile\": \"{}\"}},\n  \"git_revision\": \"{rev}\",\n  \"seal_per_core_per_s\": {seal_per_core:.1},\n  \"enqueue_per_s\": {enqueue:.1},\n  \"quic_bytes_per_s\": {quic:.1},\n  \"ceiling_copies_per_s\": {ceiling:.1},\n  \"fanout\": [{}],\n  \"latency_ms\": {{\"p50\": {p50:.2}, \"p99\": {p99:.2}}},\n  \"latency_by_shape\": [{}],\n  \"enqueue_latency_ms\": {{\"p50\": {e50:.2}, \"p99\": {e99:.2}}},\n  \"bytes_per_idle_group\": {},\n  \"seal_1000_ms\": {seal_1000_ms:.2},\n  \"anonymizer_us\": {anon_us:.2},\n  \"anonymizer_chaos_hooks_us\": {anon_chaos_us:.2},\n  \"anonymizer_cpu_us\": {},\n  \"anonymizer_actor_cpu_us\": {},\n  \"job_us\": {job_us:.2},\n  \"seal_cpu_us\": {seal_cpu_us:.2},\n  \"seal_us\": {seal_us:.2},\n  \"enqueue_1000_ms\": {:.2},\n  \"bytes_per_idle_mailbox\": {}\n}}\n",
            if cfg!(debug_assertions) { "debug" } else { "release" },
            fanout.join(", "),
            latency
                .iter()
                .map(|(n, o, p50, p99)| format!("{{\"nodes\": {n}, \"offered_msgs_per_s\": {o:.1}, \"p50\": {p50:.2}, \"p99\": {p99:.2}}}"))
                .collect::<Vec<_>>()
                .join(", "),
            per_group.map(|(b, _)| format!("{b:.1}")).unwrap_or_else(|| "null".into()),
            anon_cpu_us.map(|c| format!("{c:.2}")).unwrap_or_else(|| "null".into()),
            actor_cpu_us.map(|c| format!("{c:.2}")).unwrap_or_else(|| "null".into()),
            enqueue_1000_ms.unwrap_or(0.0),
            per_mailbox.map(|b| format!("{b:.1}")).unwrap_or_else(|| "null".into()),
        );
        std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;
        println!("figures written to {}", path.display());
    }
    Ok(())
}

/// The 50th and 99th percentiles of `v` (sorted in place); zeros when empty.
fn percentiles(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| v.get(((v.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0.0);
    (pct(0.5), pct(0.99))
}

/// One stage alone (`mlsd bench-stage`), so a profiler sees only it:
/// `enqueue-N` runs `count` copies through the ODS in synced batches of N;
/// `fanout` sends `count` messages to 1,000 members on a fresh one-node
/// cluster; `anonymizer-N` runs `count` anonymizers, N in flight.
pub async fn stage(what: &str, count: usize) -> anyhow::Result<()> {
    let env_len = seal_rate(1).1;
    if let Some(batch) = what.strip_prefix("enqueue-") {
        let rate = enqueue_rate(count, batch.parse()?, 1000, env_len)?;
        println!("{what}: {rate:.0} copies/s");
    } else if what == "fanout" || what == "fanout3" {
        let layout = if what == "fanout" { &SHAPES[0].1 } else { &SHAPES[1].1 };
        let mut b = BenchCluster::start(layout).await?;
        let (rate, _) = fanout(&b.cluster, &mut b.sender, "bench", 1000, count).await?;
        b.cluster.shutdown().await;
        println!("{what}: {rate:.0} copies/s");
    } else if let Some(lanes) = what.strip_prefix("anonymizer-") {
        let (wall, cpu) = anonymizer_cost(count, lanes.parse()?, false).await?;
        let cpu = cpu.map_or("n/a".into(), |c| format!("{c:.1} µs"));
        println!("{what}: {wall:.1} µs wall, {cpu} CPU per actor incl. sealing");
    } else {
        anyhow::bail!("unknown stage {what}");
    }
    Ok(())
}
