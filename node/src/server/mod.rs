//! The node's QUIC server: accepts client and node connections and serves one
//! request per bidirectional stream.
//!
//! Client streams (`mlsd-client/1`) are routed: served by the local role actor
//! when this node owns the key, otherwise forwarded to the owner. Node streams
//! (`mlsd-node/1`) carry forwarded requests, which are only ever served
//! locally. Every failure to read or decode a frame is answered on that stream
//! and affects nothing else.
//!
//! # Layout
//! - this module: the shared context, accepting connections and the
//!   per-address and per-connection limits;
//! - [`streams`]: one request per stream, client and node;
//! - [`answer`]: the bounded writing of every answer;
//! - [`subscription`]: live mailbox subscriptions, served here or piped to
//!   the mailbox's owner;
//! - [`node_requests`]: what other nodes and operator tools ask (forwarded
//!   requests, enrollment, enqueue batches, chaos);
//! - [`tickets`]: spending the quota ticket a costly request pays with;
//! - [`delivery`]: routing a request to its owner, the role actors' router,
//!   and the first step of handing envelopes to the ODS owners.

mod answer;
mod delivery;
mod node_requests;
mod streams;
mod subscription;
mod tickets;

pub use delivery::NodeRouter;

use std::net::IpAddr;
use std::sync::Arc;

use mlsd_transport::protocol::{
    Admission, AsResponse, AuthError, IdsResponse, ALPN_CLIENT, ALPN_NODE,
};
use mlsd_transport::{tls, Request, Response, Role, WireError};
use rustls::pki_types::CertificateDer;

use crate::coalescer::Coalescer;
use crate::config::ClusterConfig;
use crate::config::NodeConfig;
use crate::dispatch::Dispatch;
use crate::limiter::{AddressBudgets, TokenBucket};
use crate::local::LocalOds;
use crate::mixer::Mixer;
use crate::peers::Peers;
use answer::reply;
use streams::{serve_client_stream, serve_node_stream};

/// QUIC application error code for a refused node connection.
const REFUSED: u32 = 0x10;

/// Who is at the other end of an `mlsd-node/1` connection, by its
/// certificate: what it may ask depends on it
/// ([`node_requests::serve_node_request`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NodePeer {
    /// A member node, by the name its certificate gives: forwards client
    /// requests and hands envelopes to ODS owners.
    Node(String),
    /// The operator (`operator.pem`): enrollment, revocation, chaos.
    Operator,
    /// A node whose certificate the cluster's CA signed but that is not a
    /// member (yet): it may ask for the cluster map and to join, with its
    /// certificate chain kept to check the name it joins under.
    Newcomer(Arc<Vec<CertificateDer<'static>>>),
}

impl NodePeer {
    /// What the peer is now: a newcomer that has joined since its
    /// connection was made counts as the member it is.
    pub(crate) fn now(self, ctx: &ServerCtx) -> NodePeer {
        match self {
            NodePeer::Newcomer(chain) => match member_name(&chain, ctx) {
                Some(name) => NodePeer::Node(name),
                None => NodePeer::Newcomer(chain),
            },
            other => other,
        }
    }
}

/// The member (of the cluster map, or of this node's file) that `chain`
/// names, if any.
fn member_name(chain: &[CertificateDer<'static>], ctx: &ServerCtx) -> Option<String> {
    let map = ctx.shards.map();
    let names = map
        .members
        .keys()
        .map(|n| n.as_str())
        .chain(ctx.config.nodes.iter().map(|n| n.name.as_str()));
    tls::peer_node_name(chain, names)
}

/// Everything a connection handler needs; shared by all of them.
pub struct ServerCtx {
    /// The cluster config.
    pub config: Arc<ClusterConfig>,
    /// This node.
    pub me: NodeConfig,
    /// Connections to the other nodes.
    pub peers: Arc<Peers>,
    /// This node's replicas, and what it knows of every shard.
    pub shards: Arc<crate::shards::Shards>,
    fetch_limiter: AddressBudgets,
    open_limiter: AddressBudgets,
    lookup_limiter: AddressBudgets,
    /// Registrations left pending, per address ([`Admission::Register`]).
    pending_limiter: AddressBudgets,
    senders: AddressBudgets,
    create_limiter: AddressBudgets,
    uploads: AddressBudgets,
    /// The first stage of the enqueue path (see [`delivery`]).
    mixer: Mixer<Dispatch>,
    /// Where batches for each ODS owner go, this node's ODS included.
    dispatch: Arc<Dispatch>,
    client_conns: std::sync::Mutex<std::collections::HashMap<IpAddr, u32>>,
}

/// Holds one of an address's client-connection slots; gives it back on drop.
struct ConnSlot<'a> {
    ctx: &'a ServerCtx,
    ip: IpAddr,
}

impl Drop for ConnSlot<'_> {
    fn drop(&mut self) {
        let mut m = self.ctx.client_conns.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

impl ServerCtx {
    /// Context for node `me` of `config`.
    pub fn new(
        config: Arc<ClusterConfig>,
        me: NodeConfig,
        peers: Arc<Peers>,
        shards: Arc<crate::shards::Shards>,
    ) -> Self {
        let fetch_limiter = AddressBudgets::per_minute(config.cs.fetch_rate_per_minute);
        let open_limiter = AddressBudgets::per_minute(config.ods.open_rate_per_minute);
        let lookup_limiter = AddressBudgets::per_minute(config.r#as.lookup_rate_per_minute);
        let pending_limiter = AddressBudgets::per_hour(config.r#as.pending_rate_per_hour);
        let senders = AddressBudgets::per_second(config.ids.sender_copies_per_second);
        let create_limiter = AddressBudgets::per_minute(config.ids.create_rate_per_minute);
        let uploads = AddressBudgets::per_minute(config.sds.upload_bytes_per_minute);
        // Each stage owns the next: mixer -> dispatch -> coalescer -> ODS actor.
        let ods_queue = me.hosts(Role::Ods).then(|| {
            // Half an entry: the rest is room for what the ODS writes
            // beside the copies (its weekly sweep).
            let max_bytes = mlsd_actors::replica::max_entry(config.limits.max_frame) / 2;
            let ods = LocalOds {
                node: me.name.clone(),
                timeout: config.limits.call_timeout,
                shards: config.replication.shards,
            };
            Coalescer::start(ods, max_bytes)
        });
        let dispatch = Arc::new(Dispatch {
            me: me.name.clone(),
            peers: peers.clone(),
            ods_queue,
            max_frame: config.limits.max_frame,
            call_timeout: config.limits.call_timeout,
        });
        let mixer = Mixer::new(config.ids.mixing_window, dispatch.clone());
        ServerCtx {
            config,
            me,
            peers,
            shards,
            fetch_limiter,
            open_limiter,
            lookup_limiter,
            pending_limiter,
            senders,
            create_limiter,
            uploads,
            mixer,
            dispatch,
            client_conns: Default::default(),
        }
    }

    /// Entry-node admission of a client request: the per-address limit its
    /// rules name ([`Admission`]) is drawn from here, where the address is
    /// known.
    pub(super) fn admit(&self, req: &Request, from: IpAddr) -> Result<(), WireError> {
        match req.rules().admission {
            Admission::Free => Ok(()),
            Admission::Fetch => self.fetch_limiter.take(from),
            Admission::Lookup => self.lookup_limiter.take(from),
            Admission::Register => self.pending_limiter.admit(from),
            Admission::OpenMailbox => self.open_limiter.take(from),
            Admission::CreateGroup => self.create_limiter.take(from),
            Admission::Send => self.senders.admit(from),
            Admission::Upload(bytes) => self.uploads.spend(from, bytes),
            Admission::NodesOnly => Err(WireError::Auth(AuthError::NotAuthorized(
                "only nodes name a paid fetch".into(),
            ))),
        }
    }

    /// Charges what an answered request cost `from`: the copies of a send,
    /// a registration left pending.
    pub(super) fn charge(&self, response: &Response, from: IpAddr) {
        if let Response::As(AsResponse::RegistrationPending { .. }) = response {
            self.pending_limiter.charge(from, 1);
        }
        if let Response::Ids(IdsResponse::Sent { copies })
        | Response::Ids(IdsResponse::PartlySent { copies, .. }) = response
        {
            self.senders.charge(from, u64::from(*copies));
        }
    }
}

/// Accepts connections until the endpoint is closed.
pub async fn serve(endpoint: quinn::Endpoint, ctx: Arc<ServerCtx>) {
    while let Some(incoming) = endpoint.accept().await {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            match incoming.await {
                Ok(conn) => serve_connection(conn, ctx).await,
                Err(e) => handshake_failed(&e),
            }
        });
    }
}

/// Logs a failed handshake: one whose certificate this node refused (a
/// client or operator certificate from another CA) at warn, at most once
/// every 10 s with the count since (a stranger's flood of them cannot flood
/// the log); any other at debug.
fn handshake_failed(e: &quinn::ConnectionError) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    static SINCE: AtomicU64 = AtomicU64::new(0);
    let refused = match e {
        quinn::ConnectionError::TransportError(t) => (0x100..0x200).contains(&u64::from(t.code)),
        _ => false,
    };
    if !refused {
        tracing::debug!(error = %e, "handshake failed");
        return;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let count = SINCE.fetch_add(1, Ordering::Relaxed) + 1;
    let last = LAST.load(Ordering::Relaxed);
    if now >= last + 10
        && LAST.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    {
        SINCE.store(0, Ordering::Relaxed);
        tracing::warn!(error = %e, refused = count, "refused a connection's certificate (not signed by this cluster's CA?)");
    }
}

fn alpn(conn: &quinn::Connection) -> Option<Vec<u8>> {
    conn.handshake_data()?.downcast::<quinn::crypto::rustls::HandshakeData>().ok()?.protocol
}

fn peer_chain(conn: &quinn::Connection) -> Vec<CertificateDer<'static>> {
    conn.peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .map(|b| *b)
        .unwrap_or_default()
}

async fn serve_connection(conn: quinn::Connection, ctx: Arc<ServerCtx>) {
    let remote = conn.remote_address();
    let mut _slot = None;
    let node_peer = match alpn(&conn).as_deref() {
        Some(p) if p == ALPN_CLIENT => {
            let ip = remote.ip();
            {
                let mut m = ctx.client_conns.lock().unwrap_or_else(|p| p.into_inner());
                let n = m.entry(ip).or_insert(0);
                if *n >= ctx.config.limits.max_connections_per_address {
                    drop(m);
                    tracing::warn!(%remote, "refused: too many connections from this address");
                    conn.close(REFUSED.into(), b"too many connections from this address");
                    return;
                }
                *n += 1;
            }
            _slot = Some(ConnSlot { ctx: &ctx, ip });
            None
        }
        Some(p) if p == ALPN_NODE => {
            let chain = peer_chain(&conn);
            match member_name(&chain, &ctx) {
                Some(peer) => {
                    tracing::debug!(%peer, %remote, "node connection");
                    Some(NodePeer::Node(peer))
                }
                None if tls::peer_is_operator(&chain) => {
                    tracing::info!(%remote, "operator connection");
                    Some(NodePeer::Operator)
                }
                // The handshake checked the chain against the cluster's CA,
                // which signs node and operator certificates only.
                None if !chain.is_empty() => {
                    tracing::info!(%remote, "connection of a node that is not a member");
                    Some(NodePeer::Newcomer(Arc::new(chain)))
                }
                None => {
                    tracing::warn!(%remote, "refused node connection without a node certificate");
                    conn.close(REFUSED.into(), b"node or operator certificate required");
                    return;
                }
            }
        }
        _ => {
            conn.close(REFUSED.into(), b"unknown ALPN");
            return;
        }
    };
    let bucket = Arc::new(TokenBucket::per_second(ctx.config.limits.requests_per_second));
    loop {
        let (send, recv) = match conn.accept_bi().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%remote, error = %e, "connection closed");
                return;
            }
        };
        let ctx = ctx.clone();
        if node_peer.is_none() {
            // A client flooding its connection gets refusals, not service;
            // other connections are unaffected.
            if let Err(e) = bucket.take() {
                tokio::spawn(async move {
                    reply(send, Response::Error(e), &ctx.config.limits).await;
                    drop(recv);
                });
                continue;
            }
        }
        let node_peer = node_peer.clone();
        tokio::spawn(async move {
            match node_peer {
                Some(peer) => serve_node_stream(send, recv, ctx, peer).await,
                None => serve_client_stream(send, recv, ctx, remote.ip()).await,
            }
        });
    }
}
