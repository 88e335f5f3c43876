//! A black-box fault harness in the spirit of Jepsen, on real processes:
//! three `mlsd run` nodes (every role, three replicas of four shards per
//! role) serve clients running the account steps while a nemesis injects
//! faults, one or two at once: SIGKILL of the node leading the most shards,
//! an iptables partition of a node, a pause of the busiest leader (SIGSTOP,
//! then SIGCONT), a partition of one node while another is paused (no
//! majority for a while), and a data-dir wipe (alone, while the others are
//! whole). After each fault it waits until `mlsd cluster status` is healthy.
//!
//! The clients: two parties race to register a device of each new identity,
//! entering through different nodes; the one bound publishes KeyPackages;
//! two fetchers fetch the KeyPackages of the identities published last;
//! a writer uploads blobs and a reader reads them back; three members of a
//! group send messages, commit self-updates and read their mailboxes
//! ([`groups`]); pair after pair of newcomers go through all eight steps,
//! from registration to a message each way in a group one created and
//! added the other to ([`newcomers`]). Every operation
//! goes into a history (`invoke`, then `ok`, `fail`, or `info` when its
//! outcome is unknown), printed when a check fails. The checker is the
//! simulation's ([`AcctLedger`], `actors/src/replica/sim/accounts.rs`): no
//! identity bound to two parties, no serial given twice, no one-time
//! KeyPackage in two fetches, every read blob the data uploaded; then the
//! end state, read back through clients: each identity's bindings are the
//! winner's alone, each winner's one-time KeyPackages not handed out are
//! still there (at most one more gone per fetch of unknown outcome), every
//! acknowledged blob reads back intact; every message acknowledged to its
//! sender read by each other member exactly once, none read twice, and the
//! members agree on the group ([`groups::GroupLedger`]).
//!
//! `MLSD_NEMESIS_SECS` (30) seconds of faults is the short profile CI runs;
//! `MLSD_NEMESIS_SECS=600 cargo test --test nemesis -- --nocapture` is a
//! long one (docs/reliability.md).

mod common;
#[path = "nemesis/groups.rs"]
mod groups;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::leaders::busiest;
use common::Cluster;
use mlsd_actors::replica::sim::accounts::{blob_data, AcctLedger};
use mlsd_client::retry::transient;
use mlsd_client::{Client, ClientConfig, ClientError};
use mlsd_transport::protocol::{AsResponse, FetchedKeyPackage, SdsResponse};
use mlsd_transport::{Response, Role};
use openmls::prelude::tls_codec::Serialize as _;
use rand::Rng;

/// Limits no client of this test should meet: every client comes from
/// 127.0.0.1, and the fetchers fetch far more than a person would.
const EXTRA: &str = "[limits]\ncall_timeout_ms = 3000\nconnect_timeout_ms = 1000\n\
requests_per_second = 100000\n[ods]\nopen_rate_per_minute = 100000\n\
[cs]\nfetch_rate_per_minute = 100000\nfetch_rate_per_target_per_minute = 100000\n\
[as]\nlookup_rate_per_minute = 100000\npending_rate_per_hour = 100000\n[tickets]\nrequired = false\nfetch_per_day = 100000\n";

/// One-time KeyPackages a winner publishes.
const PUBLISHED: u32 = 4;

/// The history and what the checker keeps of it.
struct History {
    start: Instant,
    lines: Mutex<Vec<String>>,
    ledger: Mutex<AcctLedger>,
    /// Identity → its winning party and the key of the binding it got.
    winners: Mutex<BTreeMap<u32, (u8, Vec<u8>)>>,
    /// Identity → (winner's client config, most one-time KeyPackages it
    /// was told the CS holds).
    published: Mutex<BTreeMap<u32, (ClientConfig, u32)>>,
    /// Identity → fetches of unknown outcome.
    unknown_fetches: Mutex<BTreeMap<u32, usize>>,
    /// What the group's members were told and read.
    groups: Mutex<groups::GroupLedger>,
    stop: AtomicBool,
    /// The cluster's config, for where an identity's AS shard is.
    config: mlsd_node::config::ClusterConfig,
}

impl History {
    /// The index of `identity`'s AS shard: binding serials count per shard.
    fn as_shard(&self, identity: &str) -> u32 {
        let shard =
            mlsd_node::shards::placement::shard_of(&self.config, Role::As, identity.as_bytes());
        u32::from(shard.index)
    }

    fn note(&self, who: &str, what: impl std::fmt::Display) {
        let ms = self.start.elapsed().as_millis();
        self.lines.lock().unwrap().push(format!("{ms:>7} {who:>10} {what}"));
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, AcctLedger> {
        self.ledger.lock().unwrap()
    }

    fn groups(&self) -> std::sync::MutexGuard<'_, groups::GroupLedger> {
        self.groups.lock().unwrap()
    }

    fn dump(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// What an operation came to.
enum Outcome<T> {
    Ok(T),
    Fail(ClientError),
    Unknown(ClientError),
}

/// Runs `op` on `client` until it is answered (transient failures are
/// tried again, after a reconnect, for up to 30 s): `Ok`, a definite
/// `Fail`, or `Unknown` when every try failed in transit; with the number
/// of tries that failed in transit (each of unknown outcome: it may have
/// taken effect).
macro_rules! attempt_counted {
    ($client:expr, $op:expr) => {{
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut lost = 0u32;
        loop {
            match $op.await {
                Ok(v) => break (Outcome::Ok(v), lost),
                Err(e) if !transient(&e) => break (Outcome::Fail(e), lost),
                Err(e) if Instant::now() > deadline => break (Outcome::Unknown(e), lost),
                Err(_) => {
                    lost += 1;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    let _ = $client.reconnect().await;
                }
            }
        }
    }};
}

/// [`attempt_counted`] without the count.
macro_rules! attempt {
    ($client:expr, $op:expr) => {
        attempt_counted!($client, $op).0
    };
}

#[path = "nemesis/newcomers.rs"]
mod newcomers;

/// The client of `cfg`, once the node it enters through answers.
async fn open(cfg: &ClientConfig) -> Client {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match Client::open(cfg).await {
            Ok(c) => return c,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(e) => panic!("cannot open {}: {e}", cfg.home.display()),
        }
    }
}

/// Identity after identity, two parties race to register a device of it,
/// through different nodes; the one bound publishes its KeyPackages.
async fn racers(h: Arc<History>, cfg: impl Fn(&str, &str) -> ClientConfig) {
    let mut n = 0u32;
    while !h.stopped() {
        let configs = [cfg(&format!("race{n}a"), "n1"), cfg(&format!("race{n}b"), "n2")];
        let (mut a, mut b) = tokio::join!(open(&configs[0]), open(&configs[1]));
        let (ca, cb) = (format!("r{n}/a"), format!("r{n}/b"));
        h.note("racers", format_args!("invoke register {ca} and {cb}"));
        let (ra, rb) = tokio::join!(async { attempt!(a, a.register(&ca, None)) }, async {
            attempt!(b, b.register(&cb, None))
        });
        for (party, who, out) in [(0u8, &ca, ra), (1, &cb, rb)] {
            match out {
                Outcome::Ok(binding) => {
                    h.note(
                        "racers",
                        format_args!("ok {who} bound, serial {}", binding.binding.serial),
                    );
                    let key = binding.binding.signature_key.clone();
                    let shard = h.as_shard(&format!("r{n}"));
                    h.ledger().registered(
                        (n, shard),
                        party,
                        &Response::As(AsResponse::Binding(binding)),
                    );
                    h.winners.lock().unwrap().insert(n, (party, key));
                }
                Outcome::Fail(ClientError::AwaitsApproval { .. }) => {
                    h.note("racers", format_args!("ok {who} pending"));
                }
                Outcome::Fail(e) => {
                    h.note("racers", format_args!("fail {who}: {e}"));
                    h.ledger().anomalies.push(format!("{who}: registration refused: {e}"));
                }
                Outcome::Unknown(e) => h.note("racers", format_args!("info {who}: {e}")),
            }
        }
        let winner = h.winners.lock().unwrap().get(&n).map(|w| w.0);
        if let Some(party) = winner {
            let (c, config) =
                if party == 0 { (&mut a, &configs[0]) } else { (&mut b, &configs[1]) };
            h.note("racers", format_args!("invoke publish r{n}"));
            match attempt!(c, c.publish(PUBLISHED)) {
                Outcome::Ok(stored) => {
                    h.note("racers", format_args!("ok publish r{n}: {stored} stored"));
                    let mut p = h.published.lock().unwrap();
                    let e = p.entry(n).or_insert((config.clone(), 0));
                    e.1 = e.1.max(stored);
                }
                Outcome::Fail(e) => {
                    h.note("racers", format_args!("fail publish r{n}: {e}"));
                    h.ledger().anomalies.push(format!("r{n}: publish refused: {e}"));
                }
                Outcome::Unknown(e) => h.note("racers", format_args!("info publish r{n}: {e}")),
            }
        }
        n += 1;
        tokio::time::sleep(ms(50, 300)).await;
    }
}

/// Fetches the KeyPackages of the two identities published last.
async fn fetcher(h: Arc<History>, cfg: ClientConfig, name: String) {
    let mut c = open(&cfg).await;
    match attempt!(c, c.register(&format!("{name}/d"), None)) {
        Outcome::Ok(_) => {}
        _ => panic!("{name} cannot register"),
    }
    let mut paid = 0u64;
    while !h.stopped() {
        tokio::time::sleep(ms(20, 150)).await;
        let latest: Vec<u32> = h.published.lock().unwrap().keys().rev().take(2).copied().collect();
        let Some(&n) = latest.get(rand::rng().random_range(0..latest.len().max(1))) else {
            continue;
        };
        paid += 1;
        let id = (u64::from(name.as_bytes()[name.len() - 1]) << 32) | paid;
        h.note(&name, format_args!("invoke fetch r{n}"));
        // A try whose answer was lost is asked again with the same ticket
        // (`Client::paid_request`), and answered as the first time: only a
        // fetch that never got an answer may have taken a KeyPackage nobody
        // received.
        let (outcome, lost) = attempt_counted!(c, c.fetch_key_packages(&format!("r{n}")));
        if lost > 0 {
            h.note(&name, format_args!("info fetch r{n}: answered after {lost} lost tries"));
        }
        match outcome {
            Outcome::Ok((accepted, rejected)) => {
                let kps: Vec<FetchedKeyPackage> = accepted
                    .iter()
                    .map(|k| FetchedKeyPackage {
                        client: k.client.clone(),
                        key_package: k.key_package.tls_serialize_detached().unwrap(),
                        last_resort: k.last_resort,
                    })
                    .collect();
                let lr = kps.iter().filter(|k| k.last_resort).count();
                h.note(&name, format_args!("ok fetch r{n}: {} ({lr} last resort)", kps.len()));
                let mut l = h.ledger();
                l.fetched(id, &kps);
                if !rejected.is_empty() {
                    l.anomalies.push(format!("r{n}: KeyPackages rejected: {rejected:?}"));
                }
            }
            Outcome::Fail(e) => {
                h.note(&name, format_args!("fail fetch r{n}: {e}"));
                h.ledger().anomalies.push(format!("fetch of r{n} refused: {e}"));
            }
            Outcome::Unknown(e) => {
                h.note(&name, format_args!("info fetch r{n}: {e}"));
                *h.unknown_fetches.lock().unwrap().entry(n).or_default() += 1;
            }
        }
    }
}

/// Blob `blob`'s id and write capability.
fn blob_keys(blob: u64) -> ([u8; 32], [u8; 32]) {
    let mut id = [0x6E; 32];
    id[..8].copy_from_slice(&blob.to_be_bytes());
    let mut cap = id;
    cap[31] = 0xCA;
    (id, cap)
}

/// A random pause of `lo..hi` milliseconds.
fn ms(lo: u64, hi: u64) -> Duration {
    Duration::from_millis(rand::rng().random_range(lo..hi))
}

/// Uploads blob after blob; a failed upload starts again from its start.
async fn uploader(h: Arc<History>, cfg: ClientConfig) {
    let mut c = open(&cfg).await;
    let mut blob = 0u64;
    while !h.stopped() {
        blob += 1;
        let (id, cap) = blob_keys(blob);
        let data = blob_data(blob);
        h.note("uploader", format_args!("invoke put {blob}"));
        match attempt!(c, mlsd_client::blob::put(c.connection(), id, cap, &data, Vec::new())) {
            Outcome::Ok(()) => {
                h.note("uploader", format_args!("ok put {blob}"));
                h.ledger().blobs.insert(blob);
            }
            Outcome::Fail(e) => {
                h.note("uploader", format_args!("fail put {blob}: {e}"));
                h.ledger().anomalies.push(format!("blob {blob}: upload refused: {e}"));
            }
            Outcome::Unknown(e) => h.note("uploader", format_args!("info put {blob}: {e}")),
        }
        tokio::time::sleep(ms(20, 200)).await;
    }
}

/// Reads acknowledged blobs back.
async fn reader(h: Arc<History>, cfg: ClientConfig) {
    let mut c = open(&cfg).await;
    while !h.stopped() {
        tokio::time::sleep(ms(50, 300)).await;
        let blobs: Vec<u64> = h.ledger().blobs.iter().copied().collect();
        let Some(&blob) = blobs.get(rand::rng().random_range(0..blobs.len().max(1))) else {
            continue;
        };
        let id = blob_keys(blob).0;
        if let Outcome::Ok(data) = attempt!(c, mlsd_client::blob::get(c.connection(), id, 1 << 20))
        {
            h.note("reader", format_args!("ok get {blob}: {} bytes", data.len()));
            h.ledger()
                .read(blob, &Response::Sds(SdsResponse::Blob { total: data.len() as u64, data }));
        }
    }
}

/// One fault (or two at once), over by the time it returns; its name.
async fn fault(c: &mut Cluster, nth: u32) -> &'static str {
    let nodes = ["n1", "n2", "n3"];
    let any = || nodes[rand::rng().random_range(0..3)];
    let hold = || Duration::from_millis(rand::rng().random_range(1000..3000));
    let kind = match nth % 5 {
        0 => {
            let dead = busiest(c);
            c.kill(&dead);
            tokio::time::sleep(hold()).await;
            c.start(&dead).await;
            "leader kill"
        }
        1 => {
            let cut = c.isolate(any());
            tokio::time::sleep(hold()).await;
            drop(cut);
            "partition"
        }
        2 => {
            let paused = c.pause(&busiest(c));
            tokio::time::sleep(hold()).await;
            drop(paused);
            "pause"
        }
        3 => {
            // Two of three nodes out at once: no majority until one heals.
            let paused_node = busiest(c);
            let other = *nodes.iter().find(|n| **n != paused_node).unwrap();
            let (cut, paused) = (c.isolate(other), c.pause(&paused_node));
            tokio::time::sleep(hold()).await;
            drop(paused);
            tokio::time::sleep(hold()).await;
            drop(cut);
            "partition and pause"
        }
        _ => {
            let node = any();
            c.kill(node);
            std::fs::remove_dir_all(c.dir.path().join("data").join(node)).unwrap();
            c.start(node).await;
            "disk wipe"
        }
    };
    c.wait_healthy(Duration::from_secs(90)).await;
    kind
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_account_steps_keep_their_promises_under_a_nemesis() {
    let _w = common::init();
    let secs = std::env::var("MLSD_NEMESIS_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(30);
    let mut c = Cluster::configured(
        &[("n1", &Role::ALL), ("n2", &Role::ALL), ("n3", &Role::ALL)],
        common::REPLICATED,
        EXTRA,
    );
    c.start_all().await;
    c.wait_healthy(Duration::from_secs(60)).await;
    let h = Arc::new(History {
        start: Instant::now(),
        lines: Mutex::default(),
        ledger: Mutex::default(),
        winners: Mutex::default(),
        published: Mutex::default(),
        unknown_fetches: Mutex::default(),
        groups: Mutex::default(),
        stop: AtomicBool::new(false),
        config: mlsd_node::config::ClusterConfig::load(&c.dir.path().join("cluster.toml")).unwrap(),
    });
    let cfgs: Vec<ClientConfig> = ["f1", "f2", "up", "rd"]
        .iter()
        .zip(["n1", "n2", "n3", "n1"])
        .map(|(home, via)| c.client_config(home, via))
        .collect();
    // A client config for `home`, entering through `via`.
    let by_node: BTreeMap<&str, ClientConfig> =
        ["n1", "n2", "n3"].into_iter().map(|n| (n, c.client_config("x", n))).collect();
    let config_via = move |home: &str, via: &str| {
        let mut cfg = by_node[via].clone();
        cfg.home = cfg.home.with_file_name(home);
        cfg
    };
    let tasks = vec![
        tokio::spawn(racers(h.clone(), config_via.clone())),
        tokio::spawn(fetcher(h.clone(), cfgs[0].clone(), "fetcher1".into())),
        tokio::spawn(fetcher(h.clone(), cfgs[1].clone(), "fetcher2".into())),
        tokio::spawn(uploader(h.clone(), cfgs[2].clone())),
        tokio::spawn(reader(h.clone(), cfgs[3].clone())),
    ];
    let member_tasks: Vec<_> = groups::join(&c)
        .await
        .into_iter()
        .map(|(me, client)| tokio::spawn(groups::member(h.clone(), me, client)))
        .collect();
    let pairs = tokio::spawn(newcomers::pairs(h.clone(), config_via));
    // The nemesis.
    let start = Instant::now();
    let mut faults: BTreeMap<&str, u32> = BTreeMap::new();
    let mut nth = 0;
    while start.elapsed() < Duration::from_secs(secs) || nth < 5 {
        tokio::time::sleep(ms(500, 1500)).await;
        h.note("nemesis", format_args!("fault {nth}"));
        let kind = fault(&mut c, nth).await;
        h.note("nemesis", format_args!("{kind} healed"));
        *faults.entry(kind).or_default() += 1;
        nth += 1;
    }
    // Quiet for a while, then the clients stop.
    tokio::time::sleep(Duration::from_secs(3)).await;
    h.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let mut members: Vec<(String, Client)> = Vec::new();
    for t in member_tasks {
        members.push(t.await.unwrap());
    }
    c.wait_healthy(Duration::from_secs(60)).await;
    let fail = |what: String| -> ! { panic!("{what}\nhistory:\n{}", h.dump()) };
    if let Some(a) = h.ledger().anomalies.first() {
        fail(a.clone());
    }
    let pairs = pairs.await.unwrap();
    groups::settle(&h, &mut members).await.unwrap_or_else(|e| fail(e));
    let (sent, unknown_sends, commits) = h.groups().check().unwrap_or_else(|e| fail(e));
    // The end state, read back through a client.
    let mut reader = open(&c.client_config("checker", "n3")).await;
    let winners = h.winners.lock().unwrap().clone();
    for (n, (party, key)) in &winners {
        let bindings = match attempt!(reader, reader.lookup(&format!("r{n}"))) {
            Outcome::Ok(b) => b,
            _ => fail(format!("cannot look up r{n}")),
        };
        let clients: Vec<String> = bindings.iter().map(|(b, _)| b.binding.client.clone()).collect();
        let ours = format!("r{n}/{}", if *party == 0 { "a" } else { "b" });
        if clients != [ours.clone()] || bindings[0].0.binding.signature_key != *key {
            fail(format!("r{n} was bound to {ours}, holds {clients:?}"));
        }
    }
    let published = h.published.lock().unwrap().clone();
    let unknown = h.unknown_fetches.lock().unwrap().clone();
    for (n, (cfg, stored)) in &published {
        let mut owner = open(cfg).await;
        let (left, _) = match attempt!(owner, owner.count_key_packages()) {
            Outcome::Ok(c) => c,
            _ => fail(format!("cannot count r{n}'s KeyPackages")),
        };
        let client = owner.client_id().unwrap().to_string();
        let handed: BTreeSet<Vec<u8>> = h
            .ledger()
            .fetched
            .values()
            .flatten()
            .filter(|k| !k.last_resort && k.client == client)
            .map(|k| k.key_package.clone())
            .collect();
        let lost = unknown.get(n).copied().unwrap_or(0);
        let (left, handed) = (left as usize, handed.len());
        if left + handed > *stored as usize || left + handed + lost < *stored as usize {
            fail(format!(
                "{client}: {stored} published, {left} left, {handed} handed out, {lost} fetches of unknown outcome"
            ));
        }
    }
    let blobs: Vec<u64> = h.ledger().blobs.iter().copied().collect();
    for blob in &blobs {
        let id = blob_keys(*blob).0;
        match attempt!(reader, mlsd_client::blob::get(reader.connection(), id, 1 << 20)) {
            Outcome::Ok(data) if data == blob_data(*blob) => {}
            _ => fail(format!("acknowledged blob {blob} does not read back")),
        }
    }
    let fetches = h.ledger().fetched.len();
    eprintln!(
        "nemesis: {nth} faults {faults:?} in {:?}; {} identities raced, {} bound, {} published, {fetches} fetches answered ({} unknown), {} blobs; groups: {sent} messages acknowledged ({unknown_sends} of unknown outcome), {commits} commits, {pairs} newcomer pairs through all eight steps; 0 anomalies",
        start.elapsed(),
        // The racers' own lines (newcomers register too).
        h.lines.lock().unwrap().iter().filter(|l| l.contains("racers invoke register")).count(),
        winners.len(),
        published.len(),
        unknown.values().sum::<usize>(),
        blobs.len(),
    );
    assert!(winners.len() >= 3 && fetches >= 3 && blobs.len() >= 3, "too little got done");
    assert!(sent >= 3 && commits >= 1 && pairs >= 1, "too little got done in the groups");
}
