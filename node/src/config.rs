//! `cluster.toml`: which nodes exist, where they listen, which roles each
//! hosts, and per-cluster settings.
//!
//! Parsing is strict: every problem is refused with an error that names it,
//! because a node running on a config its peers disagree with would route
//! requests to the wrong owner.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mlsd_transport::limits;
use mlsd_transport::Role;
use serde::Deserialize;

/// Why a config was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {reason}")]
    Unreadable {
        /// The path given.
        path: String,
        /// The OS error.
        reason: String,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("invalid config: {0}")]
    Syntax(String),
    /// A node lists a role that does not exist.
    #[error("node {node}: unknown role {role:?} (roles are as, cs, ids, ods, sds)")]
    UnknownRole {
        /// The node.
        node: String,
        /// The unknown role.
        role: String,
    },
    /// Two nodes share a name.
    #[error("duplicate node name {0:?}")]
    DuplicateNodeName(String),
    /// Two nodes share a listen address.
    #[error("duplicate node address {0}")]
    DuplicateAddress(SocketAddr),
    /// No node hosts this role, so its requests could never be served.
    #[error("no node hosts role {0}")]
    RoleNotHosted(Role),
    /// No `[[node]]` table.
    #[error("the config lists no node")]
    NoNodes,
    /// A node name that cannot appear in a certificate.
    #[error("invalid node name {0:?}: use 1-63 letters, digits or '-', and not ca, as or operator (their files share the certs dir)")]
    InvalidNodeName(String),
    /// `--node` names a node the config does not list.
    #[error("no node named {0:?} in the config")]
    UnknownNode(String),
    /// A setting is out of range.
    #[error("invalid setting {key}: {reason}")]
    BadSetting {
        /// The key.
        key: &'static str,
        /// Why.
        reason: String,
    },
}

/// One node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// Unique name; also the name in its certificate.
    pub name: String,
    /// UDP address of its QUIC endpoint.
    pub listen: SocketAddr,
    /// Roles it hosts.
    pub roles: Vec<Role>,
    /// Directory of its RocksDB, absolute.
    pub data_dir: PathBuf,
}

impl NodeConfig {
    /// Whether this node hosts `role`.
    pub fn hosts(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// Wire and routing limits, from the optional `[limits]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest request or response frame, bytes (`max_frame`).
    pub max_frame: u32,
    /// Time allowed for a request frame to arrive (`read_timeout_ms`).
    pub read_timeout: Duration,
    /// Time allowed for a forwarded call to another node (`call_timeout_ms`).
    pub call_timeout: Duration,
    /// Time allowed to dial another node (`connect_timeout_ms`).
    pub connect_timeout: Duration,
    /// Client connections one address may hold open (`max_connections_per_address`).
    pub max_connections_per_address: u32,
    /// Requests per second one client connection may send (`requests_per_second`);
    /// bursts up to the same number.
    pub requests_per_second: u32,
}

/// `[tickets]`: anonymous quota tickets (decision D12).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketsConfig {
    /// `required`: requests that create something costly (KeyPackage
    /// fetches, mailboxes, groups, blob chunks) must pay with a ticket;
    /// on by default. Off, a ticket is still spent when one comes.
    pub required: bool,
    /// `fetch_per_day`, `mailbox_per_day`, `group_per_day`,
    /// `blob_chunks_per_day`: what one identity may take per day.
    pub allowance: mlsd_actors::settings::TicketAllowance,
}

/// A whole cluster config, validated, with paths made absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Cluster name (for logs and operators).
    pub name: String,
    /// Directory of the CA and node certificates, absolute.
    pub certs_dir: PathBuf,
    /// The nodes, in file order.
    pub nodes: Vec<NodeConfig>,
    /// Wire and routing limits.
    pub limits: Limits,
    /// Whether writes that a reply acknowledges wait for the WAL to be synced.
    pub sync_wal: bool,
    /// AS settings (`[as]`).
    pub r#as: AsConfig,
    /// CS settings (`[cs]`).
    pub cs: CsConfig,
    /// ODS settings (`[ods]`).
    pub ods: OdsConfig,
    /// IDS settings (`[ids]`).
    pub ids: IdsConfig,
    /// `[sds] max_blob_bytes`: largest blob, default 64 MiB.
    pub sds_max_blob: u64,
    /// `[sds] upload_bytes_per_minute`: blob bytes one client address may
    /// upload per minute at each node, default 256 MiB (capped at 4 GiB).
    pub sds_upload_bytes_per_minute: u32,
    /// `[sds] abandoned_upload_days`: an upload unfinished this long is
    /// collected, default 7.
    pub sds_abandoned_upload_days: u32,
    /// `[tickets]`: the quota tickets (decision D12).
    pub tickets: TicketsConfig,
    /// `[chaos] allow`: accept chaos requests (kill actors) from the holder
    /// of the operator certificate. Off by default; only for chaos tests.
    pub chaos_allowed: bool,
    /// `[supervision] max_restarts`: restarts of one role actor tolerated
    /// within 30 s before the node stops, default 10.
    pub max_restarts: usize,
    /// Replication (`[cluster] replicas`, `shards`, `heartbeat_ms`,
    /// `election_timeout_ms`; decision D13).
    pub replication: Replication,
}

/// How each role's keyspace is sharded and replicated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replication {
    /// `replicas`: voters per shard, default 3 (every node hosting the role
    /// when fewer do).
    pub replicas: u32,
    /// `shards`: shards per role, a power of two, default 4.
    pub shards: u32,
    /// `heartbeat_ms`: how often a leader tells its followers it lives,
    /// default 250; all shards' heartbeats to a peer go in one message.
    pub heartbeat: Duration,
    /// `election_timeout_ms`: how long a follower waits for a heartbeat
    /// before it stands for election (randomized up to 4/3 of this, after
    /// openraft's leader lease of 4/3 of this), default 1500; at least
    /// three heartbeats.
    pub election_timeout: Duration,
    /// `snapshot_logs`: entries after which a shard's replica snapshots its
    /// state and drops the log before it, default 10000 (a replica that
    /// falls further behind catches up by snapshot).
    pub snapshot_logs: u64,
    /// `balance_leaders`: whether a leader hands its shard over to the
    /// shard's best-placed caught-up voter (`shards::balance`), so
    /// leadership (and one node's death) is spread over the nodes. Default
    /// true; off, leadership stays wherever elections put it.
    pub balance_leaders: bool,
}

impl Default for Replication {
    fn default() -> Self {
        Replication {
            replicas: 3,
            shards: 4,
            heartbeat: Duration::from_millis(250),
            election_timeout: Duration::from_millis(1500),
            snapshot_logs: 10_000,
            balance_leaders: true,
        }
    }
}

/// `[as]`: registration policy and binding lifetime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsConfig {
    /// `registration = "open" | "token"`; open (development) by default.
    pub token_required: bool,
    /// `binding_lifetime_days`, default 365.
    pub binding_lifetime: Duration,
    /// `lookup_rate_per_minute`: lookup pages one client address may ask
    /// for per minute at each node (lookups are unsigned, so the address is
    /// what there is to count; they show which devices an identity has),
    /// default 240.
    pub lookup_rate_per_minute: u32,
}

/// `[ods]`: mailbox limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OdsConfig {
    /// `max_queue`: unacknowledged envelopes per mailbox, default 10000.
    pub max_queue: u32,
    /// `max_fetch`: envelopes per fetch, default 256.
    pub max_fetch: u32,
    /// `max_capabilities`: live delivery capabilities per mailbox, default 4096.
    pub max_capabilities: u32,
    /// `open_rate_per_minute`: mailboxes one client address may open per minute, default 60.
    pub open_rate_per_minute: u32,
    /// `push_allow_http`: also send push notifications to `http://`
    /// endpoints (no TLS), default false.
    pub push_allow_http: bool,
    /// `push_allow_private`: also send them to loopback, private and
    /// link-local addresses, default false (a client names the URL; without
    /// this, it could make the node POST into the operator's network).
    pub push_allow_private: bool,
    /// `push_ca`: a PEM file of further roots trusted for push endpoints
    /// (besides the built-in web PKI roots), relative to the config file.
    pub push_ca: Option<PathBuf>,
}

/// `[ids]`: fan-out settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdsConfig {
    /// `anonymizer_concurrency`: anonymizer actors alive at once per fan-out,
    /// default twice the cores (sealing is CPU work: more in flight only
    /// queues them in front of the ODS writer on the same threads).
    pub anonymizer_concurrency: u32,
    /// `group_idle_secs`: a group actor stops after this long without requests, default 60.
    pub group_idle: Duration,
    /// `mixing_window_ms`: how long envelopes for one ODS node are held to be
    /// sent with other fan-outs' as one shuffled batch, default 0.
    pub mixing_window: Duration,
    /// `group_copies_per_second`: copies one group may make per second,
    /// counted at the group's IDS owner, default 50000.
    pub group_copies_per_second: u32,
    /// `sender_copies_per_second`: copies the sends of one client address
    /// may make per second, counted at each node where they enter, default 50000.
    pub sender_copies_per_second: u32,
    /// `max_fanouts`: fan-outs one node runs at once, default 1024.
    pub max_fanouts: u32,
    /// `create_rate_per_minute`: groups one client address may create per
    /// minute at each node, default 30.
    pub create_rate_per_minute: u32,
    /// `idle_group_days`: a group without a send for this many days is
    /// collected (its records deleted, its id free), default 365.
    pub idle_group_days: u32,
}

/// `[cs]`: KeyPackage limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsConfig {
    /// `max_key_packages_per_client`, default 100.
    pub max_per_client: u32,
    /// `max_key_package_lifetime_days`, default 90.
    pub max_lifetime: Duration,
    /// `fetch_rate_per_minute`: KeyPackage fetches one client address may make
    /// per minute (draining someone's KeyPackages is a known attack), default 120.
    pub fetch_rate_per_minute: u32,
    /// `fetch_rate_per_target_per_minute`: fetches of one identity's
    /// KeyPackages per minute from everyone, counted at its CS owner so
    /// every entry node shares the budget, default 60.
    pub fetches_per_target_per_minute: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    cluster: RawCluster,
    #[serde(default)]
    node: Vec<RawNode>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    storage: RawStorage,
    #[serde(default, rename = "as")]
    as_: RawAs,
    #[serde(default)]
    cs: RawCs,
    #[serde(default)]
    ods: RawOds,
    #[serde(default)]
    ids: RawIds,
    #[serde(default)]
    sds: RawSds,
    #[serde(default)]
    tickets: RawTickets,
    #[serde(default)]
    chaos: RawChaos,
    #[serde(default)]
    supervision: RawSupervision,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSupervision {
    max_restarts: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTickets {
    required: Option<bool>,
    fetch_per_day: Option<u32>,
    mailbox_per_day: Option<u32>,
    group_per_day: Option<u32>,
    blob_chunks_per_day: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawChaos {
    allow: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSds {
    max_blob_bytes: Option<u64>,
    upload_bytes_per_minute: Option<u64>,
    abandoned_upload_days: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawIds {
    anonymizer_concurrency: Option<u32>,
    group_idle_secs: Option<u64>,
    mixing_window_ms: Option<u64>,
    group_copies_per_second: Option<u32>,
    sender_copies_per_second: Option<u32>,
    max_fanouts: Option<u32>,
    create_rate_per_minute: Option<u32>,
    idle_group_days: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawOds {
    max_queue: Option<u32>,
    max_fetch: Option<u32>,
    max_capabilities: Option<u32>,
    open_rate_per_minute: Option<u32>,
    push_allow_http: Option<bool>,
    push_allow_private: Option<bool>,
    push_ca: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAs {
    registration: Option<String>,
    binding_lifetime_days: Option<u64>,
    lookup_rate_per_minute: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCs {
    max_key_packages_per_client: Option<u32>,
    max_key_package_lifetime_days: Option<u64>,
    fetch_rate_per_minute: Option<u32>,
    fetch_rate_per_target_per_minute: Option<u32>,
}

const DAY: u64 = 24 * 3600;

/// The `[cluster]` replication keys, checked.
fn replication(c: &RawCluster) -> Result<Replication, ConfigError> {
    let d = Replication::default();
    let bad = |key, reason: &str| ConfigError::BadSetting { key, reason: reason.into() };
    let replicas = c.replicas.unwrap_or(d.replicas);
    if !(1..=7).contains(&replicas) {
        return Err(bad("cluster.replicas", "must be between 1 and 7"));
    }
    let shards = c.shards.unwrap_or(d.shards);
    if !shards.is_power_of_two() || shards > mlsd_actors::replica::MAX_SHARDS {
        return Err(bad("cluster.shards", "must be a power of two, at most 4096"));
    }
    let heartbeat = c.heartbeat_ms.map_or(d.heartbeat, Duration::from_millis);
    let election_timeout = c.election_timeout_ms.map_or(d.election_timeout, Duration::from_millis);
    if heartbeat.is_zero() || election_timeout < heartbeat * 3 {
        return Err(bad(
            "cluster.election_timeout_ms",
            "must be at least three heartbeats (cluster.heartbeat_ms, positive)",
        ));
    }
    let snapshot_logs = c.snapshot_logs.unwrap_or(d.snapshot_logs);
    if snapshot_logs == 0 {
        return Err(bad("cluster.snapshot_logs", "must be positive"));
    }
    let balance_leaders = c.balance_leaders.unwrap_or(d.balance_leaders);
    Ok(Replication {
        replicas,
        shards,
        heartbeat,
        election_timeout,
        snapshot_logs,
        balance_leaders,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    name: String,
    certs_dir: PathBuf,
    replicas: Option<u32>,
    shards: Option<u32>,
    heartbeat_ms: Option<u64>,
    election_timeout_ms: Option<u64>,
    snapshot_logs: Option<u64>,
    balance_leaders: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: String,
    listen: SocketAddr,
    roles: Vec<String>,
    data_dir: PathBuf,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_frame: Option<u32>,
    read_timeout_ms: Option<u64>,
    call_timeout_ms: Option<u64>,
    connect_timeout_ms: Option<u64>,
    max_connections_per_address: Option<u32>,
    requests_per_second: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    sync_wal: Option<bool>,
}

/// Default time for a forwarded call; also the bound on how long a client
/// waits for `Unavailable` when an owner is down.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);

impl ClusterConfig {
    /// Reads and validates the config at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = if base.as_os_str().is_empty() { PathBuf::from(".") } else { base };
        let base = std::path::absolute(&base).unwrap_or(base);
        Self::parse(&text, &base)
    }

    /// Parses and validates config text; relative paths are taken relative to `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        if raw.node.is_empty() {
            return Err(ConfigError::NoNodes);
        }
        let mut names = HashSet::new();
        let mut addrs = HashSet::new();
        let mut nodes = Vec::new();
        for n in raw.node {
            if !valid_node_name(&n.name) {
                return Err(ConfigError::InvalidNodeName(n.name));
            }
            if !names.insert(n.name.clone()) {
                return Err(ConfigError::DuplicateNodeName(n.name));
            }
            if !addrs.insert(n.listen) {
                return Err(ConfigError::DuplicateAddress(n.listen));
            }
            let mut roles = Vec::new();
            for r in &n.roles {
                let role = Role::from_name(r).ok_or_else(|| ConfigError::UnknownRole {
                    node: n.name.clone(),
                    role: r.clone(),
                })?;
                if !roles.contains(&role) {
                    roles.push(role);
                }
            }
            nodes.push(NodeConfig {
                name: n.name,
                listen: n.listen,
                roles,
                data_dir: base.join(n.data_dir),
            });
        }
        for role in Role::ALL {
            if !nodes.iter().any(|n| n.hosts(role)) {
                return Err(ConfigError::RoleNotHosted(role));
            }
        }
        let replication = replication(&raw.cluster)?;
        let l = raw.limits;
        let max_frame = l.max_frame.unwrap_or(limits::DEFAULT_MAX_FRAME);
        // One page of a mailbox must hold the largest envelope, or a mailbox
        // holding one could never be read; and one replicated entry must
        // hold it, or it could never be stored.
        let min_frame = mlsd_transport::protocol::ods::MIN_FRAME_FOR_ENVELOPES
            + mlsd_actors::replica::ENTRY_MARGIN as u32;
        if !(min_frame..=limits::ABSOLUTE_MAX_FRAME).contains(&max_frame) {
            return Err(ConfigError::BadSetting {
                key: "limits.max_frame",
                reason: format!(
                    "must be between {min_frame} (the largest envelope, its page and its entry) and {}",
                    limits::ABSOLUTE_MAX_FRAME
                ),
            });
        }
        let ms = |key: &'static str, v: Option<u64>, d: Duration| match v {
            None => Ok(d),
            Some(0) => Err(ConfigError::BadSetting { key, reason: "must be positive".into() }),
            Some(v) => Ok(Duration::from_millis(v)),
        };
        let limits = Limits {
            max_frame,
            read_timeout: ms(
                "limits.read_timeout_ms",
                l.read_timeout_ms,
                limits::DEFAULT_READ_TIMEOUT,
            )?,
            call_timeout: ms("limits.call_timeout_ms", l.call_timeout_ms, DEFAULT_CALL_TIMEOUT)?,
            connect_timeout: ms(
                "limits.connect_timeout_ms",
                l.connect_timeout_ms,
                limits::DEFAULT_CONNECT_TIMEOUT,
            )?,
            max_connections_per_address: match l.max_connections_per_address {
                Some(0) => {
                    return Err(ConfigError::BadSetting {
                        key: "limits.max_connections_per_address",
                        reason: "must be positive".into(),
                    })
                }
                v => v.unwrap_or(256),
            },
            requests_per_second: match l.requests_per_second {
                Some(0) => {
                    return Err(ConfigError::BadSetting {
                        key: "limits.requests_per_second",
                        reason: "must be positive".into(),
                    })
                }
                v => v.unwrap_or(1000),
            },
        };
        let token_required = match raw.as_.registration.as_deref() {
            None | Some("open") => false,
            Some("token") => true,
            Some(other) => {
                return Err(ConfigError::BadSetting {
                    key: "as.registration",
                    reason: format!("{other:?} is neither \"open\" nor \"token\""),
                })
            }
        };
        let positive = |key: &'static str, v: Option<u64>, d: u64| match v {
            Some(0) => Err(ConfigError::BadSetting { key, reason: "must be positive".into() }),
            v => Ok(v.unwrap_or(d)),
        };
        let r#as = AsConfig {
            token_required,
            binding_lifetime: Duration::from_secs(
                positive("as.binding_lifetime_days", raw.as_.binding_lifetime_days, 365)? * DAY,
            ),
            lookup_rate_per_minute: positive(
                "as.lookup_rate_per_minute",
                raw.as_.lookup_rate_per_minute.map(u64::from),
                240,
            )?
            .min(u32::MAX as u64) as u32,
        };
        let cs = CsConfig {
            max_per_client: positive(
                "cs.max_key_packages_per_client",
                raw.cs.max_key_packages_per_client.map(u64::from),
                100,
            )?
            .min(10_000) as u32,
            max_lifetime: Duration::from_secs(
                positive(
                    "cs.max_key_package_lifetime_days",
                    raw.cs.max_key_package_lifetime_days,
                    90,
                )? * DAY,
            ),
            fetch_rate_per_minute: positive(
                "cs.fetch_rate_per_minute",
                raw.cs.fetch_rate_per_minute.map(u64::from),
                120,
            )?
            .min(u32::MAX as u64) as u32,
            fetches_per_target_per_minute: positive(
                "cs.fetch_rate_per_target_per_minute",
                raw.cs.fetch_rate_per_target_per_minute.map(u64::from),
                60,
            )?
            .min(u32::MAX as u64) as u32,
        };
        let small = |key: &'static str, v: Option<u32>, d: u64, max: u64| {
            positive(key, v.map(u64::from), d).map(|v| v.min(max) as u32)
        };
        let ods = OdsConfig {
            max_queue: small("ods.max_queue", raw.ods.max_queue, 10_000, 1_000_000)?,
            max_fetch: small("ods.max_fetch", raw.ods.max_fetch, 256, 4096)?,
            max_capabilities: small(
                "ods.max_capabilities",
                raw.ods.max_capabilities,
                mlsd_actors::settings::DEFAULT_MAX_CAPABILITIES as u64,
                1_000_000,
            )?,
            open_rate_per_minute: small(
                "ods.open_rate_per_minute",
                raw.ods.open_rate_per_minute,
                60,
                u32::MAX as u64,
            )?,
            push_allow_http: raw.ods.push_allow_http.unwrap_or(false),
            push_allow_private: raw.ods.push_allow_private.unwrap_or(false),
            push_ca: raw.ods.push_ca.map(|p| base.join(p)),
        };
        let ids = IdsConfig {
            anonymizer_concurrency: small(
                "ids.anonymizer_concurrency",
                raw.ids.anonymizer_concurrency,
                mlsd_actors::settings::default_anonymizer_concurrency() as u64,
                4096,
            )?,
            group_idle: Duration::from_secs(positive(
                "ids.group_idle_secs",
                raw.ids.group_idle_secs,
                60,
            )?),
            mixing_window: Duration::from_millis(raw.ids.mixing_window_ms.unwrap_or(0).min(10_000)),
            group_copies_per_second: small(
                "ids.group_copies_per_second",
                raw.ids.group_copies_per_second,
                50_000,
                u32::MAX as u64,
            )?,
            sender_copies_per_second: small(
                "ids.sender_copies_per_second",
                raw.ids.sender_copies_per_second,
                50_000,
                u32::MAX as u64,
            )?,
            max_fanouts: small("ids.max_fanouts", raw.ids.max_fanouts, 1024, 1 << 20)?,
            create_rate_per_minute: small(
                "ids.create_rate_per_minute",
                raw.ids.create_rate_per_minute,
                30,
                u32::MAX as u64,
            )?,
            idle_group_days: small(
                "ids.idle_group_days",
                raw.ids.idle_group_days,
                mlsd_actors::settings::DEFAULT_IDLE_GROUP_DAYS as u64,
                36_500,
            )?,
        };
        let sds_max_blob =
            positive("sds.max_blob_bytes", raw.sds.max_blob_bytes, 64 << 20)?.min(1 << 32);
        let sds_upload_bytes_per_minute =
            positive("sds.upload_bytes_per_minute", raw.sds.upload_bytes_per_minute, 256 << 20)?
                .min(u32::MAX as u64) as u32;
        let sds_abandoned_upload_days =
            small("sds.abandoned_upload_days", raw.sds.abandoned_upload_days, 7, 3650)?;
        let d = mlsd_actors::settings::DEFAULT_TICKETS;
        let per_day = |key: &'static str, v: Option<u32>, d: u32| {
            positive(key, v.map(u64::from), u64::from(d)).map(|v| v.min(u32::MAX as u64) as u32)
        };
        let t = &raw.tickets;
        let tickets = TicketsConfig {
            required: t.required.unwrap_or(true),
            allowance: mlsd_actors::settings::TicketAllowance {
                fetch: per_day("tickets.fetch_per_day", t.fetch_per_day, d.fetch)?,
                mailbox: per_day("tickets.mailbox_per_day", t.mailbox_per_day, d.mailbox)?,
                group: per_day("tickets.group_per_day", t.group_per_day, d.group)?,
                blob: per_day("tickets.blob_chunks_per_day", t.blob_chunks_per_day, d.blob)?,
            },
        };
        Ok(ClusterConfig {
            tickets,
            r#as,
            cs,
            ods,
            ids,
            sds_max_blob,
            sds_upload_bytes_per_minute,
            sds_abandoned_upload_days,
            chaos_allowed: raw.chaos.allow.unwrap_or(false),
            max_restarts: raw.supervision.max_restarts.unwrap_or(10).max(1) as usize,
            replication,
            name: raw.cluster.name,
            certs_dir: base.join(raw.cluster.certs_dir),
            nodes,
            limits,
            sync_wal: raw.storage.sync_wal.unwrap_or(true),
        })
    }

    /// The node called `name`, or the first node when `name` is `None`.
    pub fn node(&self, name: Option<&str>) -> Result<&NodeConfig, ConfigError> {
        match name {
            None => Ok(&self.nodes[0]),
            Some(n) => self
                .nodes
                .iter()
                .find(|c| c.name == n)
                .ok_or_else(|| ConfigError::UnknownNode(n.to_string())),
        }
    }
}

/// Names whose `NAME.pem`/`NAME.key` would be the CA's, the AS key's or the
/// operator's files in the certs dir.
const RESERVED_NODE_NAMES: [&str; 3] = ["ca", "as", "operator"];

fn valid_node_name(n: &str) -> bool {
    !n.is_empty()
        && !RESERVED_NODE_NAMES.contains(&n)
        && n.len() <= 63
        && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !n.starts_with('-')
        && !n.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, port: u16, roles: &str) -> String {
        format!(
            "[[node]]\nname = \"{name}\"\nlisten = \"127.0.0.1:{port}\"\nroles = [{roles}]\ndata_dir = \"d/{name}\"\n"
        )
    }
    const HEAD: &str = "[cluster]\nname = \"t\"\ncerts_dir = \"certs\"\n";
    const ALL: &str = "\"as\", \"cs\", \"ids\", \"ods\", \"sds\"";

    fn parse(s: &str) -> Result<ClusterConfig, ConfigError> {
        ClusterConfig::parse(s, Path::new("/etc/mlsd"))
    }

    #[test]
    fn valid_config_resolves_relative_paths_and_defaults() {
        let c = parse(&format!("{HEAD}{}", node("n1", 4433, ALL))).unwrap();
        assert_eq!(c.certs_dir, Path::new("/etc/mlsd/certs"));
        assert_eq!(c.nodes[0].data_dir, Path::new("/etc/mlsd/d/n1"));
        assert_eq!(c.limits.max_frame, limits::DEFAULT_MAX_FRAME);
        assert!(c.sync_wal);
        assert_eq!(c.node(None).unwrap().name, "n1");
        assert_eq!(c.node(Some("n9")), Err(ConfigError::UnknownNode("n9".into())));
    }

    #[test]
    fn node_names_that_would_share_files_with_the_pki_are_refused() {
        for bad in ["operator", "as", "ca", "-n", "a.b", ""] {
            let e = parse(&format!("{HEAD}{}", node(bad, 4433, ALL))).unwrap_err();
            assert_eq!(e, ConfigError::InvalidNodeName(bad.into()));
        }
        assert!(parse(&format!("{HEAD}{}", node("operator-2", 4433, ALL))).is_ok());
    }

    #[test]
    fn the_repository_default_config_is_valid() {
        let text = include_str!("../../cluster.toml");
        let c = parse(text).unwrap();
        assert_eq!(c.nodes.len(), 1);
        assert_eq!(c.nodes[0].name, "n1");
        assert_eq!(c.nodes[0].roles, Role::ALL.to_vec());
        assert_eq!(c.nodes[0].listen, "127.0.0.1:4433".parse().unwrap());
    }
}
