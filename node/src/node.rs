//! One running node: its endpoint, supervisor, role actors and server task.
//!
//! `mlsd run` and the in-process tests both start nodes through [`Node::start`],
//! so what the tests exercise is what operators run.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mlsd_actors::push::target::Policy;
use mlsd_actors::push::{PushSettings, Pusher};
use mlsd_actors::{NodeServices, RocksStore};
use mlsd_roles::settings::{
    AsSettings, CsSettings, IdsSettings, OdsSettings, Registration, SdsSettings,
};
use mlsd_roles::{RoleSettings, Store};
use mlsd_transport::{endpoint, tls};
use ractor::{Actor, ActorRef};
use sha2::Digest;

use crate::certs;
use crate::config::ClusterConfig;
use crate::config::NodeConfig;
use crate::peers::Peers;
use crate::server::{self, NodeRouter, ServerCtx};
use crate::shards::Shards;
use crate::supervisor::{NodeSupervisor, SupervisorArgs, SupervisorMsg};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The config does not describe this node.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Certificates could not be created.
    #[error(transparent)]
    Certs(#[from] certs::CertsError),
    /// Certificates could not be loaded or used.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The database could not be opened.
    #[error("cannot open storage: {0}")]
    Storage(#[from] mlsd_roles::StoreError),
    /// Storage is of a layout this binary cannot read or convert.
    #[error("cannot use storage: {0}")]
    Layout(#[from] mlsd_actors::layout::LayoutError),
    /// The UDP socket could not be bound.
    #[error("cannot listen on {addr}: {reason}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        reason: String,
    },
    /// The actor system could not start.
    #[error("cannot start actors: {0}")]
    Actors(String),
    /// Push notifications could not be set up (`[ods] push_ca`).
    #[error("cannot set up push: {0}")]
    Push(String),
}

/// Role settings for this node: the AS key is loaded only where the AS runs.
fn role_settings(config: &ClusterConfig, me: &NodeConfig) -> Result<RoleSettings, NodeError> {
    let signing_key = if me.hosts(mlsd_transport::Role::As) {
        Some(Arc::new(certs::load_as_key(&config.certs_dir)?))
    } else {
        None
    };
    Ok(RoleSettings {
        r#as: AsSettings {
            signing_key,
            registration: if config.r#as.token_required {
                Registration::Token
            } else {
                Registration::Open
            },
            binding_lifetime: config.r#as.binding_lifetime,
            tickets: config.tickets.allowance,
        },
        cs: CsSettings {
            max_per_client: config.cs.max_per_client,
            max_lifetime: config.cs.max_lifetime,
            fetches_per_target_per_minute: config.cs.fetches_per_target_per_minute,
        },
        ods: OdsSettings {
            max_queue: config.ods.max_queue,
            max_fetch: config.ods.max_fetch,
            max_capabilities: config.ods.max_capabilities,
            page_bytes: mlsd_transport::protocol::ods::page_budget(config.limits.max_frame),
        },
        sds: SdsSettings {
            max_blob: config.sds.max_blob,
            abandoned_upload_days: config.sds.abandoned_upload_days,
        },
        ids: IdsSettings {
            anonymizer_concurrency: config.ids.anonymizer_concurrency as usize,
            chaos_hooks: config.chaos.allow,
            group_idle: config.ids.group_idle,
            group_copies_per_second: config.ids.group_copies_per_second,
            idle_group_days: config.ids.idle_group_days,
        },
    })
}

/// Starts the node's push queue with the `[ods] push_*` settings.
fn start_push(config: &ClusterConfig) -> Result<Pusher, NodeError> {
    let extra_roots = match &config.ods.push_ca {
        Some(path) => tls::load_certs(path)?,
        None => Vec::new(),
    };
    let policy = Policy {
        allow_http: config.ods.push_allow_http,
        allow_private: config.ods.push_allow_private,
    };
    Pusher::start(PushSettings { policy, extra_roots }).map_err(|e| NodeError::Push(e.to_string()))
}

/// A running node.
pub struct Node {
    name: String,
    addr: SocketAddr,
    endpoint: quinn::Endpoint,
    supervisor: ActorRef<SupervisorMsg>,
    supervisor_done: tokio::task::JoinHandle<()>,
    server: tokio::task::JoinHandle<()>,
    shards: Arc<Shards>,
}

impl Node {
    /// Starts node `name` (the first node when `None`) of `config`: creates
    /// the certificates of a new cluster in an empty certs dir or checks that
    /// this node's are there ([`certs::prepare`]), opens storage, spawns the role actors under the
    /// supervisor and starts serving.
    pub async fn start(config: ClusterConfig, name: Option<&str>) -> Result<Node, NodeError> {
        let me = config.node(name)?.clone();
        let created = certs::prepare(&config, &me)?;
        if !created.is_empty() {
            tracing::info!(dir = %config.certs_dir.display(), files = created.len(), "created missing certificates");
        }
        std::fs::create_dir_all(&me.data_dir)
            .map_err(|e| NodeError::Storage(mlsd_roles::StoreError::Db(e.to_string())))?;
        let store: Arc<dyn Store> =
            Arc::new(RocksStore::open(&me.data_dir, config.storage.sync_wal)?);
        // Before any role serves: records of an older layout are converted
        // (or set aside one by one); a newer layout is refused.
        let one_shard = config.nodes.len() == 1 && config.replication.shards == 1;
        let up = mlsd_actors::layout::upgrade(store.as_ref(), one_shard)?;
        if up.converted + up.set_aside + up.moved > 0 {
            tracing::info!(
                from = up.from,
                to = mlsd_actors::layout::LAYOUT,
                converted = up.converted,
                set_aside = up.set_aside,
                moved = up.moved,
                "storage layout upgraded"
            );
        }
        let node_tls = tls::NodeTls::load(&config.certs_dir, &me.name)?;
        let server_cfg = endpoint::quinn_server_config(tls::server_config(&node_tls)?)?;
        // A peer is taken for dead after twice the election timeout without
        // a packet from it (at least a second, so a busy machine's pauses do
        // not cut connections).
        let node_idle = (config.replication.election_timeout * 2).max(Duration::from_secs(1));
        let client_cfg =
            endpoint::quinn_client_config_idle(tls::node_client_config(&node_tls)?, node_idle)?;
        // A reset key that survives restarts: a restarted node then answers
        // its peers' packets for the old connections with stateless resets,
        // so they reconnect at once instead of waiting for a timeout.
        let mut seed = sha2::Sha256::new();
        sha2::Digest::update(&mut seed, b"mlsd stateless reset v1");
        sha2::Digest::update(&mut seed, node_tls.key.secret_der());
        let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &seed.finalize());
        let bind = |e: std::io::Error| NodeError::Bind { addr: me.listen, reason: e.to_string() };
        let socket = std::net::UdpSocket::bind(me.listen).map_err(bind)?;
        let mut ep = quinn::Endpoint::new(
            quinn::EndpointConfig::new(Arc::new(reset_key)),
            Some(server_cfg),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(bind)?;
        ep.set_default_client_config(client_cfg);
        let addr = ep.local_addr().unwrap_or(me.listen);

        let settings = Arc::new(role_settings(&config, &me)?);
        let services = Arc::new(NodeServices {
            push: if me.hosts(mlsd_transport::Role::Ods) {
                Some(start_push(&config)?)
            } else {
                None
            },
            fanout_slots: mlsd_actors::ids::slots::FanoutSlots::new(
                config.ids.max_fanouts as usize,
            ),
        });
        let peers =
            config.nodes.iter().filter(|n| n.name != me.name).map(|n| (n.name.clone(), n.listen));
        let peers = Arc::new(Peers::new(ep.clone(), &me.name, peers, config.limits.clone()));
        let name = me.name.clone();
        let roles: Vec<_> = me.roles.iter().map(|r| r.name()).collect();
        let config = Arc::new(config);
        let shards = Shards::start(config.clone(), &me, store, peers.clone())
            .await
            .map_err(|e| NodeError::Actors(e.to_string()))?;
        let ctx = Arc::new(ServerCtx::new(config, me.clone(), peers, shards.clone()));
        // The cluster group has no role to host: the shards do its work.
        let hosted = shards
            .replicas()
            .into_iter()
            .filter(|r| !r.shard.is_cluster())
            .map(|r| (r.shard, r.clone() as Arc<dyn mlsd_actors::replica::ShardStore>))
            .collect();

        // Role actors reach other roles through the same routing as clients.
        let sup_args = SupervisorArgs {
            node: me.name.clone(),
            shards: hosted,
            settings,
            services,
            router: Arc::new(NodeRouter(ctx.clone())),
            max_restarts: ctx.config.supervision.max_restarts,
        };
        let (supervisor, supervisor_done) =
            Actor::spawn(Some(format!("{}/supervisor", me.name)), NodeSupervisor, sup_args)
                .await
                .map_err(|e| NodeError::Actors(e.to_string()))?;
        let server = tokio::spawn(server::serve(ep.clone(), ctx));
        tracing::info!(node = %name, %addr, ?roles, replicas = shards.replicas().len(), "node started");
        Ok(Node { name, addr, endpoint: ep, supervisor, supervisor_done, server, shards })
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The term of each shard this node replicates, as its replica knows it:
    /// a term that grew means an election (how `mlsd bench` counts them).
    pub fn shard_terms(&self) -> Vec<(String, u64)> {
        let lines = self.shards.status();
        lines.into_iter().map(|l| (format!("{}/{}", l.role, l.shard), l.term)).collect()
    }

    /// The address it actually listens on (differs from the config for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Resolves once the cluster has removed this node (`mlsd cluster
    /// remove`): the binary then shuts it down and exits.
    pub fn removed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let shards = self.shards.clone();
        async move { shards.removed().await }
    }

    /// Resolves when the supervisor has stopped on its own (restart intensity
    /// exceeded); the binary then exits with an error.
    pub async fn supervisor_stopped(&mut self) {
        let _ = (&mut self.supervisor_done).await;
    }

    /// Stops serving, stops every role actor and closes storage.
    pub async fn shutdown(self) {
        self.endpoint.close(0u32.into(), b"node shutting down");
        self.server.abort();
        let _ = ractor::call!(self.supervisor, SupervisorMsg::Shutdown);
        let _ = self.supervisor_done.await;
        self.shards.shutdown().await;
        self.endpoint.wait_idle().await;
        tracing::info!(node = %self.name, "node stopped");
    }
}
