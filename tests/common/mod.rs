//! Shared helpers of the multi-process tests: locating the built binaries,
//! writing cluster configs for free loopback ports, and running `mlsd` nodes
//! as real processes that are killed when the test ends.
#![allow(dead_code)]

pub mod leaders;
pub mod load;
pub mod membership;
pub mod push;
pub mod sending;
pub mod traffic;

use mlsd_transport::protocol::{IdsRequest, IdsResponse};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use mlsd_client::Connection;
use mlsd_transport::Role;

/// Path of a workspace binary, built next to this test executable by
/// `cargo build --workspace --bins --tests` (the README's test command does it).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile> dir");
    let p = dir.join(name);
    assert!(p.exists(), "{} not built: run `make test` (builds the binaries first)", p.display());
    p
}

/// A UDP port on 127.0.0.1 for a test node to listen on.
///
/// Ports come from below the kernel's ephemeral range (Linux: 32768 and up),
/// each at most once per test process, starting at an offset drawn from the
/// process id. Asking the kernel for port 0 and releasing it raced with
/// every client socket of the tests running beside it: the kernel could hand
/// the same port to a client's QUIC endpoint before the node bound it (CI
/// failed once with `cannot listen on 127.0.0.1:58700: Address already in
/// use`), and a node restarted on its port could find it taken the same way.
/// Ports here are handed out by nobody else; the bind check skips one that a
/// node of an earlier test process still holds.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 12_000;
    const SPAN: u32 = 20_000; // up to 31,999
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id() * 97) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free UDP port in {LOW}..{}", LOW + SPAN);
}

/// One node of a test cluster: name, roles, address.
pub struct Spec {
    pub name: &'static str,
    pub roles: Vec<Role>,
    pub addr: SocketAddr,
}

/// `[cluster]` keys of the replicated test clusters: three replicas of four
/// shards per role, with Raft timings a test can wait out; snapshots every
/// 20 entries, so a replica that starts empty catches up from one.
pub const REPLICATED: &str =
    "replicas = 3\nshards = 4\nheartbeat_ms = 200\nelection_timeout_ms = 800\nsnapshot_logs = 20\n";

/// Three nodes, every role on each, [`REPLICATED`] shards, a call timeout
/// of 3 s: started, and healthy (every shard led, every voter caught up).
pub async fn three_replicated() -> Cluster {
    let mut c = Cluster::configured(
        &[("n1", &Role::ALL), ("n2", &Role::ALL), ("n3", &Role::ALL)],
        REPLICATED,
        "[limits]\ncall_timeout_ms = 3000\nconnect_timeout_ms = 1000\n",
    );
    c.start_all().await;
    c.wait_healthy(Duration::from_secs(30)).await;
    c
}

/// A cluster config in a temp dir, and the node processes started from it.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub specs: Vec<Spec>,
    procs: Vec<(String, Child)>,
}

impl Cluster {
    /// Writes a config for `nodes` (name, roles) with fast test timeouts.
    pub fn new(nodes: &[(&'static str, &[Role])]) -> Cluster {
        Self::with_extra(nodes, "[limits]\ncall_timeout_ms = 1500\nconnect_timeout_ms = 1000\n")
    }

    /// Same, with `extra` TOML appended.
    /// Each shard has one replica here: these clusters test routing,
    /// roles and faults of a node as the only holder of its shards (the
    /// replication tests use [`Cluster::configured`] with three).
    pub fn with_extra(nodes: &[(&'static str, &[Role])], extra: &str) -> Cluster {
        Self::configured(nodes, "replicas = 1\n", extra)
    }

    /// Like [`Cluster::with_extra`], with `cluster_keys` (lines of the
    /// `[cluster]` table: replicas, shards, Raft timings) too.
    pub fn configured(
        nodes: &[(&'static str, &[Role])],
        cluster_keys: &str,
        extra: &str,
    ) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut text =
            format!("[cluster]\nname = \"test\"\ncerts_dir = \"certs\"\n{cluster_keys}\n");
        let mut specs = Vec::new();
        for (name, roles) in nodes {
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let roles_s: Vec<String> = roles.iter().map(|r| format!("\"{r}\"")).collect();
            text.push_str(&format!(
                "[[node]]\nname = \"{name}\"\nlisten = \"{addr}\"\nroles = [{}]\ndata_dir = \"data/{name}\"\n\n",
                roles_s.join(", ")
            ));
            specs.push(Spec { name, roles: roles.to_vec(), addr });
        }
        text.push_str(extra);
        let config = dir.path().join("cluster.toml");
        std::fs::write(&config, text).unwrap();
        Cluster { dir, config, specs, procs: Vec::new() }
    }

    /// A one-node cluster unpacked from `archive` (a `.tar.gz` holding
    /// `cluster.toml`, `certs/`, the node's data dir and mlsc homes, as
    /// tests/fixtures/one_node.sh writes), listening on a free port instead of
    /// the archive's.
    pub fn unpack(archive: &Path, name: &'static str, roles: &[Role]) -> Cluster {
        // Data from before sharding is served with one shard.
        Cluster::unpack_nodes(archive, &[(name, roles)], "shards = 1\n")
    }

    /// [`Cluster::unpack`] for an archive of several nodes: the `listen`
    /// lines are given free ports in the order of `nodes`, and
    /// `cluster_keys` are added to `[cluster]`.
    pub fn unpack_nodes(
        archive: &Path,
        nodes: &[(&'static str, &[Role])],
        cluster_keys: &str,
    ) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("tar").arg("xzf").arg(archive).arg("-C").arg(dir.path()).output();
        let out = out.expect("tar runs");
        assert!(out.status.success(), "tar: {}", String::from_utf8_lossy(&out.stderr));
        let config = dir.path().join("cluster.toml");
        let specs: Vec<Spec> = nodes
            .iter()
            .map(|(name, roles)| Spec {
                name,
                roles: roles.to_vec(),
                addr: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
            })
            .collect();
        let mut listens = specs.iter().map(|s| s.addr);
        let text: String = std::fs::read_to_string(&config)
            .unwrap()
            .lines()
            .map(|l| {
                if l.starts_with("listen") {
                    let addr = listens.next().expect("as many nodes as listen lines");
                    format!("listen = \"{addr}\"\n")
                } else if l.starts_with("[cluster]") {
                    format!("{l}\n{cluster_keys}")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        std::fs::write(&config, text).unwrap();
        Cluster { dir, config, specs, procs: Vec::new() }
    }

    /// Adds node `name` with `roles` to the cluster's file (a free port,
    /// its data dir beside the others'), as an operator adding a node does.
    pub fn add_to_file(&mut self, name: &'static str, roles: &[Role]) {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let roles_s: Vec<String> = roles.iter().map(|r| format!("\"{r}\"")).collect();
        let block = format!(
            "\n[[node]]\nname = \"{name}\"\nlisten = \"{addr}\"\nroles = [{}]\ndata_dir = \"data/{name}\"\n",
            roles_s.join(", ")
        );
        let text = std::fs::read_to_string(&self.config).unwrap();
        // Before `[limits]` and the other tables: `[[node]]` blocks end at
        // the next table.
        let at = text.find("\n[limits]").map_or(text.len(), |i| i + 1);
        let text = format!("{}{}\n{}", &text[..at], block.trim_start(), &text[at..]);
        std::fs::write(&self.config, text).unwrap();
        self.specs.push(Spec { name, roles: roles.to_vec(), addr });
    }

    /// Gives node `name` `roles` in the cluster's file (its `roles` line),
    /// as an operator changing what a node hosts does before restarting it.
    pub fn set_roles(&mut self, name: &str, roles: &[Role]) {
        let roles_s: Vec<String> = roles.iter().map(|r| format!("\"{r}\"")).collect();
        let text = std::fs::read_to_string(&self.config).unwrap();
        let mine = format!("name = \"{name}\"");
        let mut in_block = false;
        let text: String = text
            .lines()
            .map(|l| {
                if l.starts_with("name = ") {
                    in_block = l == mine;
                }
                if in_block && l.starts_with("roles = ") {
                    format!("roles = [{}]\n", roles_s.join(", "))
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        std::fs::write(&self.config, text).unwrap();
        self.specs.iter_mut().find(|s| s.name == name).unwrap().roles = roles.to_vec();
    }

    /// Creates the certificates once, before any node starts.
    pub fn certs(&self) {
        let out = Command::new(bin("mlsd"))
            .args(["certs", "--config"])
            .arg(&self.config)
            .output()
            .unwrap();
        assert!(out.status.success(), "mlsd certs: {}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("certs/ca.pem")
    }

    pub fn addr(&self, node: &str) -> SocketAddr {
        self.specs.iter().find(|s| s.name == node).unwrap().addr
    }

    /// A file of node `name`'s own, beside the cluster's: every table of
    /// the cluster's file, but of the `[[node]]` blocks only `name`'s and
    /// those of `contacts` (what a joining node's host needs).
    pub fn own_file(&self, name: &str, contacts: &[&str]) -> PathBuf {
        let text = std::fs::read_to_string(&self.config).unwrap();
        // The file as tables, each from its header line to the next.
        let mut tables: Vec<Vec<&str>> = vec![Vec::new()];
        for line in text.lines() {
            if line.starts_with('[') {
                tables.push(Vec::new());
            }
            tables.last_mut().unwrap().push(line);
        }
        let wanted = |t: &Vec<&str>| {
            t.first() != Some(&"[[node]]")
                || t.iter().any(|l| {
                    l.strip_prefix("name = \"")
                        .and_then(|l| l.strip_suffix('"'))
                        .is_some_and(|n| n == name || contacts.contains(&n))
                })
        };
        let out: String =
            tables.iter().filter(|t| wanted(t)).flatten().map(|l| format!("{l}\n")).collect();
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, out).unwrap();
        path
    }

    /// Starts node `name` as a process and waits until it answers.
    pub async fn start(&mut self, name: &str) {
        let config = self.config.clone();
        self.start_from(name, &config).await
    }

    /// Starts node `name` from the file at `config` and waits until it
    /// answers.
    pub async fn start_from(&mut self, name: &str, config: &Path) {
        // Appended to, so a node restarted (after a kill or a wipe) keeps
        // what it logged before in the same file.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{name}.log")))
            .unwrap();
        let child = Command::new(bin("mlsd"))
            .args(["run", "--node", name, "--config"])
            .arg(config)
            .env("RUST_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.procs.push((name.to_string(), child));
        let spec = self.specs.iter().find(|s| s.name == name).unwrap();
        let role = spec.roles[0];
        self.wait_ready(name, role).await;
    }

    /// Starts every node.
    pub async fn start_all(&mut self) {
        self.certs();
        let names: Vec<_> = self.specs.iter().map(|s| s.name).collect();
        for n in names {
            self.start(n).await;
        }
    }

    async fn wait_ready(&self, name: &str, _role: Role) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(c) = Connection::connect(self.addr(name), &self.ca()).await {
                // Any answer, even an error about another node, shows the node
                // serves. A new cluster's shards form only once all their
                // voters are up, so the first nodes of one wait no longer.
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), c.ping(Role::As, b"ready")).await;
                return;
            }
            assert!(Instant::now() < deadline, "node {name} did not start: {}", self.log(name));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `mlsd cluster status` once: its exit status and output.
    pub fn status(&self) -> (bool, String) {
        let out = Command::new(bin("mlsd"))
            .args(["cluster", "status", "--config"])
            .arg(&self.config)
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Waits until `mlsd cluster status` exits 0: every shard has a leader
    /// and every voter is caught up.
    pub async fn wait_healthy(&self, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let (ok, text) = self.status();
            if ok {
                return text;
            }
            if Instant::now() >= deadline {
                let logs: String = self
                    .specs
                    .iter()
                    .map(|s| {
                        let warn: Vec<String> = self
                            .log(s.name)
                            .lines()
                            .filter(|l| {
                                l.contains("panicked at")
                                    || l.contains("WARN")
                                    || l.contains("ERROR")
                            })
                            .filter(|l| !l.contains("failure sending"))
                            .map(|l| l.chars().take(400).collect())
                            .collect();
                        let panics: Vec<&String> =
                            warn.iter().filter(|l| l.contains("panicked at")).take(3).collect();
                        let tail = warn[warn.len().saturating_sub(8)..].join("\n");
                        let tail = format!("{panics:?}\n{tail}");
                        format!("--- {} (last warnings)\n{tail}\n", s.name)
                    })
                    .collect();
                panic!("the cluster did not become healthy:\n{text}\n{logs}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGKILLs node `name`.
    pub fn kill(&mut self, name: &str) {
        if let Some(i) = self.procs.iter().position(|(n, _)| n == name) {
            let (_, mut child) = self.procs.remove(i);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits, at most `within`, until node `name`'s process exits by
    /// itself; its exit status.
    pub async fn wait_exit(&mut self, name: &str, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            let i = self.procs.iter().position(|(n, _)| n == name).expect("started");
            if let Some(status) = self.procs[i].1.try_wait().unwrap() {
                self.procs.remove(i);
                return status;
            }
            assert!(Instant::now() < deadline, "{name} still runs:\n{}", self.log(name));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Runs `mlsd cluster remove NODE` (with `args`) against this
    /// cluster's file.
    pub fn remove(&self, node: &str, args: &[&str]) -> Output {
        Command::new(bin("mlsd"))
            .args(["cluster", "remove", node, "--config"])
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap()
    }

    /// The node's log so far (for assertion messages).
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Runs `mlsc` against node `via` with this cluster's CA.
    pub fn mlsc(&self, via: &str, args: &[&str]) -> Output {
        Command::new(bin("mlsc"))
            .arg("--server")
            .arg(self.addr(via).to_string())
            .arg("--ca")
            .arg(self.ca())
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, c) in &mut self.procs {
            let _ = c.kill();
            let _ = c.wait();
        }
        // `MLSD_KEEP_TEST_DIRS=1` keeps a failed test's cluster dir (config,
        // data dirs, node logs) for a post-mortem.
        if std::thread::panicking() && std::env::var_os("MLSD_KEEP_TEST_DIRS").is_some() {
            self.dir.disable_cleanup(true);
            eprintln!("kept the cluster dir {}", self.dir.path().display());
        }
    }
}

impl Cluster {
    /// Client settings for a home under this cluster's dir, entering via `via`.
    pub fn client_config(&self, home: &str, via: &str) -> mlsd_client::ClientConfig {
        mlsd_client::ClientConfig {
            home: self.dir.path().join("homes").join(home),
            server: self.addr(via),
            ca: self.ca(),
            as_key: self.dir.path().join("certs/as.pub"),
        }
    }

    /// A client with home `home`, connected via `via`.
    pub async fn client(&self, home: &str, via: &str) -> mlsd_client::Client {
        mlsd_client::Client::open(&self.client_config(home, via)).await.unwrap()
    }

    /// `n` quota tickets of `kind`, issued by the AS to a device of the
    /// identity `bank` (registered on first use): what a test's hand-made
    /// requests pay with.
    pub async fn tickets(
        &self,
        kind: mlsd_transport::protocol::tickets::TicketKind,
        n: usize,
    ) -> Vec<mlsd_transport::protocol::tickets::Ticket> {
        let mut c = self.client("ticket-bank", self.specs[0].name).await;
        if c.client_id().is_none() {
            c.register("bank/tickets", None).await.unwrap();
        }
        c.take_tickets(kind, n).await.unwrap()
    }

    /// One quota ticket of `kind` (see [`Cluster::tickets`]).
    pub async fn ticket(
        &self,
        kind: mlsd_transport::protocol::tickets::TicketKind,
    ) -> Option<mlsd_transport::protocol::tickets::Ticket> {
        self.tickets(kind, 1).await.pop()
    }

    /// A registered client with `count` KeyPackages published.
    pub async fn registered(&self, client_id: &str, via: &str, count: u32) -> mlsd_client::Client {
        let mut c = self.client(client_id, via).await;
        c.register(client_id, None).await.unwrap();
        assert_eq!(c.publish(count).await.unwrap(), count);
        c
    }

    /// A new device `client_id` of an identity that has devices: its
    /// registration waits, `approver` (a live device of the identity)
    /// approves it, and its second registration completes; then `count`
    /// KeyPackages are published.
    pub async fn approved(
        &self,
        client_id: &str,
        approver: &mlsd_client::Client,
        via: &str,
        count: u32,
    ) -> mlsd_client::Client {
        let mut c = self.client(client_id, via).await;
        match c.register(client_id, None).await {
            Err(mlsd_client::ClientError::AwaitsApproval { .. }) => {}
            other => panic!("{client_id} registered without approval: {other:?}"),
        }
        let (_, pending) = approver.devices().await.unwrap();
        let p = pending.into_iter().find(|p| p.client == client_id).expect("pending");
        approver.approve(client_id, p.signature_key).await.unwrap();
        c.register(client_id, None).await.unwrap();
        assert_eq!(c.publish(count).await.unwrap(), count);
        c
    }

    /// Alice and Bob, registered via `via` with `count` KeyPackages each, in
    /// group "G" (stored roster) that Alice created and Bob joined by
    /// processing his Welcome: where many group tests start.
    pub async fn alice_and_bob_in_g(
        &self,
        via: &str,
        count: u32,
    ) -> (mlsd_client::Client, mlsd_client::Client) {
        let mut alice = self.registered("alice/phone", via, count).await;
        let mut bob = self.registered("bob/phone", via, count).await;
        alice.create_group("G", mlsd_transport::protocol::RosterMode::Stored).await.unwrap();
        alice.add_members("G", &["bob"]).await.unwrap();
        bob.receive().await.unwrap();
        (alice, bob)
    }

    /// Starts every node again after `kill`.
    pub async fn restart_all(&mut self) {
        let names: Vec<_> = self.specs.iter().map(|s| s.name).collect();
        for n in &names {
            self.kill(n);
        }
        for n in names {
            self.start(n).await;
        }
    }
}

impl Cluster {
    /// Sends a node-protocol request to `to` with the operator certificate
    /// (as `mlsd admin` does; chaos requests need it).
    pub async fn operator_call(
        &self,
        to: &str,
        req: mlsd_transport::protocol::NodeRequest,
    ) -> mlsd_transport::Response {
        self.node_call("operator", to, req).await
    }

    /// Sends a node-protocol request to `to`, authenticated as node `as_node`
    /// (as the IDS does when it hands envelopes to the ODS); `"operator"`
    /// presents the operator certificate instead.
    pub async fn node_call(
        &self,
        as_node: &str,
        to: &str,
        req: mlsd_transport::protocol::NodeRequest,
    ) -> mlsd_transport::Response {
        use mlsd_transport::{endpoint, tls};
        let node_tls = tls::NodeTls::load(&self.dir.path().join("certs"), as_node).unwrap();
        let cfg =
            endpoint::quinn_client_config(tls::node_client_config(&node_tls).unwrap()).unwrap();
        let ep = endpoint::client_endpoint(self.addr(to), cfg).unwrap();
        let conn =
            endpoint::connect(&ep, self.addr(to), &tls::node_dns_name(to), Duration::from_secs(5))
                .await
                .unwrap();
        let frame = mlsd_transport::protocol::NodeFrame::new(req);
        let r: mlsd_transport::protocol::ResponseFrame =
            endpoint::call(&conn, &frame, 1 << 24, Duration::from_secs(10)).await.unwrap();
        r.response
    }
}

/// The texts of the messages among `events`, in order.
pub fn texts(events: &[mlsd_client::group::Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            mlsd_client::group::Event::Message { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

/// Waits until two reads of the node's storage agree (the node writes
/// nothing while idle; this only lets a last synced write settle).
pub fn settled(dir: &std::path::Path) -> mlsd_actors::storage::Contents {
    // What the roles hold: the Raft log and state (`raft`) record every
    // write as well, and are not compared.
    let roles = || {
        let mut c = mlsd_actors::storage::read_all(dir).unwrap();
        c.retain(|(space, _), _| space != "raft");
        c
    };
    let mut last = roles();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(100));
        let now = roles();
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("the node's storage did not settle");
}

/// Installs the process-wide rustls provider once.
pub fn init() -> Watchdog {
    mlsd_node::install_crypto_provider();
    Watchdog::start()
}

/// Fails the whole test binary, naming the test, when one test runs longer
/// than `MLSD_TEST_TIMEOUT_SECS` (default 600): a hung test fails fast
/// with its name instead of holding CI until its own timeout. Held by the
/// test (`let _watchdog = common::init();`); dropping it, at the test's
/// end or when it panics, calls the dog off.
pub struct Watchdog(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Watchdog {
    fn start() -> Self {
        use std::sync::atomic::Ordering;
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let name = std::thread::current().name().unwrap_or("a test").to_string();
        let limit = std::env::var("MLSD_TEST_TIMEOUT_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .map_or(Duration::from_secs(600), Duration::from_secs);
        let d = done.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let start = Instant::now();
            while start.elapsed() < limit {
                if d.load(Ordering::Acquire) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            // Straight to stderr: the test harness's capture would lose it.
            let _ = writeln!(
                std::io::stderr(),
                "test {name} ran longer than {} s: stopping the test binary",
                limit.as_secs()
            );
            std::process::exit(124);
        });
        Watchdog(done)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// Every file below `dir` (for tests that read a node's disk as an attacker would).
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The server's refusal in a client call's result; panics on anything else.
pub fn server_err<T: std::fmt::Debug>(
    r: Result<T, mlsd_client::ClientError>,
) -> mlsd_transport::WireError {
    match r {
        Err(mlsd_client::ClientError::Server(e)) => e,
        other => panic!("expected a server error, got {other:?}"),
    }
}

/// `body` with the wire's 4-byte big-endian length prefix, as a raw frame.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

/// `req` (a prepared `Send`) re-addressed to `roster`, a client-supplied
/// roster: the MAC does not cover the recipients, so tests pick them.
pub fn to_roster(
    req: mlsd_transport::Request,
    roster: &[mlsd_transport::protocol::RosterEntry],
) -> mlsd_transport::Request {
    let mlsd_transport::Request::Ids(IdsRequest::Send { mut body, mac }) = req else {
        panic!("not a send")
    };
    body.recipients = mlsd_transport::protocol::Recipients::Roster(roster.to_vec());
    mlsd_transport::Request::Ids(IdsRequest::Send { body, mac })
}

/// `mlsc` runs in homes under the cluster's dir, entering via n1.
pub struct Homes<'a> {
    /// The cluster.
    pub c: &'a Cluster,
}

impl Homes<'_> {
    /// Runs `mlsc` in `home` with `args`.
    pub fn run(&self, home: &str, args: &[&str]) -> Output {
        let home = self.c.dir.path().join("homes").join(home);
        let as_key = self.c.dir.path().join("certs/as.pub");
        let mut full = vec!["--home", home.to_str().unwrap(), "--as-key", as_key.to_str().unwrap()];
        full.extend_from_slice(args);
        self.c.mlsc("n1", &full)
    }

    /// Runs `mlsc` in `home`; it must succeed. Its stdout lines.
    pub fn ok(&self, home: &str, args: &[&str]) -> Vec<String> {
        let out = self.run(home, args);
        assert!(
            out.status.success(),
            "mlsc {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect()
    }
}

/// A new mailbox opened over `conn` (paying with `ticket`), with one
/// delivery capability issued: what a recipient of a hand-made roster needs.
pub async fn mailbox_with_cap(
    conn: &Connection,
    ticket: Option<mlsd_transport::protocol::tickets::Ticket>,
) -> (mlsd_client::mailbox::MailboxKeys, mlsd_transport::protocol::DeliveryCap) {
    use mlsd_client::mailbox::{self, Counter, MailboxKeys};
    let keys = MailboxKeys::generate().unwrap();
    mailbox::open(conn, &keys, None, ticket).await.unwrap();
    let cap = keys.new_cap().unwrap();
    mailbox::issue(conn, &keys, &mut Counter::default(), std::slice::from_ref(&cap)).await.unwrap();
    (keys, cap)
}

/// A capability nobody issued: random token and shard hint.
pub fn unissued_cap() -> mlsd_transport::protocol::DeliveryCap {
    mlsd_transport::protocol::DeliveryCap { shard: rand::random(), token: rand::random() }
}

/// The mailbox reference in a serialized KeyPackage (validated as MLS).
pub fn mailbox_ref_in(key_package: &[u8]) -> mlsd_transport::envelope::MailboxRef {
    use openmls::prelude::tls_codec::Deserialize as _;
    let kp = openmls::prelude::KeyPackageIn::tls_deserialize_exact(key_package)
        .unwrap()
        .validate(
            &openmls_rust_crypto::RustCrypto::default(),
            openmls::prelude::ProtocolVersion::Mls10,
        )
        .unwrap();
    mlsd_client::leaf::mailbox_ref_of(kp.leaf_node()).expect("a mailbox reference")
}

/// A node stopped with SIGSTOP, as a long garbage-collection pause or a
/// stalled virtual machine stops a process: it neither sends nor answers,
/// its sockets stay open and its timers run late. Dropping the guard sends
/// SIGCONT.
pub struct Paused {
    pid: u32,
}

impl Cluster {
    /// Stops node `name` (running) until the returned guard is dropped.
    pub fn pause(&self, name: &str) -> Paused {
        let pid = self
            .procs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c.id())
            .unwrap_or_else(|| panic!("{name} is not running"));
        let status = Command::new("kill").args(["-STOP", &pid.to_string()]).status();
        assert!(status.is_ok_and(|s| s.success()), "cannot SIGSTOP {name} ({pid})");
        Paused { pid }
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        // Not asserted: a panic while unwinding would abort.
        let _ = Command::new("kill").args(["-CONT", &self.pid.to_string()]).status();
    }
}

/// A node cut off from the other nodes of its cluster by iptables rules on
/// the loopback interface: every UDP datagram between its port and theirs
/// is dropped, both ways. Its clients still reach it (they use other
/// ports), which is what lets a test ask the minority side to acknowledge
/// something. Dropping the guard heals the partition. Needs root and
/// `iptables` (scripts/bootstrap.sh installs it).
pub struct Partition {
    rules: Vec<Vec<String>>,
}

impl Cluster {
    /// Cuts `node` off from every other node of the cluster until the
    /// returned guard is dropped.
    pub fn isolate(&self, node: &str) -> Partition {
        let mine = self.addr(node).port();
        let mut rules = Vec::new();
        for other in self.specs.iter().filter(|s| s.name != node) {
            let theirs = other.addr.port();
            for (from, to) in [(mine, theirs), (theirs, mine)] {
                let rule: Vec<String> =
                    format!("INPUT -i lo -p udp --sport {from} --dport {to} -j DROP")
                        .split(' ')
                        .map(str::to_string)
                        .collect();
                iptables("-I", &rule);
                rules.push(rule);
            }
        }
        Partition { rules }
    }
}

fn iptables(op: &str, rule: &[String]) {
    let out = Command::new("iptables").arg(op).args(rule).output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "iptables {op} {}: {} (the partition test needs root)",
            rule.join(" "),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("iptables not runnable ({e}): run scripts/bootstrap.sh"),
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        for rule in &self.rules {
            // Not `iptables()`: a panic while unwinding would abort, and a
            // rule left behind only drops traffic to ports nobody uses again.
            let _ = Command::new("iptables").arg("-D").args(rule).output();
        }
    }
}

/// Sends `text` in `group` as the client library retries (the same request,
/// so the same message id, `retry::PAUSE` apart) and requires every copy
/// stored (`Sent`) within the client's patience for a shard without a
/// leader (`retry::SHARD`, 8 s), whatever failed before. Returns how many
/// tries failed.
pub async fn sent_within_patience(
    sender: &mut mlsd_client::Client,
    group: &str,
    text: &str,
) -> u32 {
    let req = sender.prepare_text(group, text).unwrap();
    let start = Instant::now();
    let mut failed = 0;
    loop {
        match sender.send_request(req.clone()).await {
            Ok(mlsd_transport::Response::Ids(IdsResponse::Sent { .. })) => return failed,
            other => {
                failed += 1;
                assert!(
                    start.elapsed() < mlsd_client::retry::SHARD,
                    "{text:?} not delivered to every member within the client's patience \
                     ({failed} tries): {other:?}"
                );
                tokio::time::sleep(mlsd_client::retry::PAUSE).await;
            }
        }
    }
}
