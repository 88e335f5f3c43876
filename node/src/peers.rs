//! The pool of node-to-node QUIC connections used to forward requests.
//!
//! One connection per peer, dialed on first use over the node's own endpoint
//! with its node certificate (mutual TLS, `mlsd-node/1`). Node connections
//! have a short idle timeout (twice the election timeout, keep-alives at a
//! third of it, see `node.rs`), so a peer that died is noticed on the
//! timescale Raft notices it, and calls waiting on it fail then instead of
//! at the call timeout.
//!
//! A failed dial, or a connection that timed out, marks the peer down:
//! calls fail at once with `Unavailable` instead of stacking up timeouts
//! (the caller tries another voter), and the peer is dialed again in the
//! background with an exponential backoff, so no request waits for a dial
//! to a dead peer and a restarted peer is picked up without restarting
//! anyone else.

use mlsd_transport::protocol::{BadFrame, ClusterError, NodeFrame, NodeRequest, ResponseFrame};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mlsd_transport::{endpoint, tls, Response, WireError, PROTOCOL_VERSION};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::config::Limits;

/// First backoff after a failure; doubled per consecutive failure.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest backoff, which bounds how long a restarted peer stays unused.
const BACKOFF_MAX: Duration = Duration::from_secs(2);

#[derive(Default)]
struct PeerState {
    conn: Option<quinn::Connection>,
    /// Consecutive failures; non-zero means the peer is down and is only
    /// dialed in the background.
    failures: u32,
    retry_at: Option<Instant>,
    /// A background dial is under way.
    dialing: bool,
}

struct Peer {
    addr: SocketAddr,
    state: Arc<Mutex<PeerState>>,
}

/// Connections to every other node of the cluster.
pub struct Peers {
    endpoint: quinn::Endpoint,
    /// This node's name: never a peer of its own.
    me: String,
    /// Every other member, by name; more are learned from the cluster map.
    peers: std::sync::RwLock<HashMap<String, Arc<Peer>>>,
    limits: Limits,
}

impl Peers {
    /// A pool dialing from `endpoint` (which must have the node client config
    /// as its default) to the given `(name, address)` peers.
    pub fn new(
        endpoint: quinn::Endpoint,
        me: &str,
        peers: impl IntoIterator<Item = (String, SocketAddr)>,
        limits: Limits,
    ) -> Self {
        let p = Peers { endpoint, me: me.to_string(), peers: Default::default(), limits };
        p.learn(peers);
        p
    }

    /// Learns where nodes listen (the cluster map's members): a new name
    /// is added, a changed address replaces the old one and its connection.
    pub fn learn(&self, nodes: impl IntoIterator<Item = (String, SocketAddr)>) {
        let mut peers = self.peers.write().unwrap_or_else(|p| p.into_inner());
        for (name, addr) in nodes {
            if name == self.me || peers.get(&name).is_some_and(|p| p.addr == addr) {
                continue;
            }
            let state = Arc::new(Mutex::new(PeerState::default()));
            peers.insert(name, Arc::new(Peer { addr, state }));
        }
    }

    fn peer(&self, node: &str) -> Option<Arc<Peer>> {
        self.peers.read().unwrap_or_else(|p| p.into_inner()).get(node).cloned()
    }

    /// Forwards `request` to `node` and returns its response, or `Unavailable`
    /// when the node cannot be reached or does not answer within the call timeout.
    pub async fn forward(&self, node: &str, request: mlsd_transport::Request) -> Response {
        self.call(node, NodeRequest::Forward(request)).await
    }

    /// Sends a node request to `node`; `Unavailable` when it cannot be reached.
    /// A call that fails on a pooled connection is tried once more on a fresh
    /// one, since the peer may have restarted since the connection was made;
    /// but only if the request never left (no stream could be opened) or
    /// running it twice changes nothing ([`NodeRequest::repeatable`]): a KeyPackage fetch,
    /// a mailbox opening or a blob chunk that the peer served before the
    /// connection broke must not run again.
    pub async fn call(&self, node: &str, request: NodeRequest) -> Response {
        let repeatable = request.repeatable();
        let unavailable = || {
            Response::Error(WireError::Cluster(ClusterError::Unavailable {
                node: node.to_string(),
            }))
        };
        let Some(peer) = self.peer(node) else {
            return Response::Error(WireError::Cluster(ClusterError::Internal(format!(
                "unknown peer {node}"
            ))));
        };
        let frame = NodeFrame::new(request);
        for attempt in 0..2 {
            let Some((conn, fresh)) = self.connection(node, &peer).await else {
                return unavailable();
            };
            let res: Result<ResponseFrame, _> =
                endpoint::call(&conn, &frame, self.limits.max_frame, self.limits.call_timeout)
                    .await;
            match res {
                Ok(f) if f.version == PROTOCOL_VERSION => {
                    peer.state.lock().await.failures = 0;
                    return f.response;
                }
                Ok(f) => {
                    return Response::Error(WireError::Frame(BadFrame::UnsupportedVersion {
                        got: f.version,
                        supported: PROTOCOL_VERSION,
                    }))
                }
                Err(e) => {
                    tracing::warn!(peer = node, error = %e, attempt, "forwarded call failed");
                    let unsent = matches!(
                        e,
                        endpoint::CallError::Connection(_) | endpoint::CallError::TlsRefused(_)
                    );
                    // The peer stopped answering (not a reset by a restarted
                    // peer): dialing it again now would only wait too.
                    let silent =
                        matches!(conn.close_reason(), Some(quinn::ConnectionError::TimedOut));
                    let mut st = peer.state.lock().await;
                    if st.conn.as_ref().map(|c| c.stable_id()) == Some(conn.stable_id()) {
                        st.conn = None;
                    }
                    if fresh || silent || attempt == 1 || !(unsent || repeatable) {
                        mark_failed(&mut st);
                        return unavailable();
                    }
                }
            }
        }
        unavailable()
    }

    /// A new bidirectional stream to `node` (for long-lived subscriptions that
    /// are piped rather than answered once).
    pub async fn open_stream(&self, node: &str) -> Option<(quinn::SendStream, quinn::RecvStream)> {
        let peer = self.peer(node)?;
        let (conn, _) = self.connection(node, &peer).await?;
        conn.open_bi().await.ok()
    }

    /// The pooled connection to `node`, or a new one; `true` when new. A
    /// peer that is down is not dialed here: the call fails at once and a
    /// background dial (one at a time, after the backoff) brings it back.
    async fn connection(&self, node: &str, peer: &Peer) -> Option<(quinn::Connection, bool)> {
        let mut st = peer.state.lock().await;
        if let Some(c) = &st.conn {
            if c.close_reason().is_none() {
                return Some((c.clone(), false));
            }
            if matches!(c.close_reason(), Some(quinn::ConnectionError::TimedOut)) {
                mark_failed(&mut st);
            }
            st.conn = None;
        }
        if st.failures > 0 {
            if !st.dialing && st.retry_at.is_none_or(|t| Instant::now() >= t) {
                st.dialing = true;
                let (ep, addr, state) = (self.endpoint.clone(), peer.addr, peer.state.clone());
                let (node, timeout) = (node.to_string(), self.limits.connect_timeout);
                tokio::spawn(async move {
                    let dialed = dial(&ep, addr, &node, timeout).await;
                    let mut st = state.lock().await;
                    st.dialing = false;
                    match dialed {
                        Some(c) => {
                            st.conn = Some(c);
                            st.failures = 0;
                            st.retry_at = None;
                        }
                        None => mark_failed(&mut st),
                    }
                });
            }
            return None;
        }
        match dial(&self.endpoint, peer.addr, node, self.limits.connect_timeout).await {
            Some(c) => {
                st.retry_at = None;
                st.conn = Some(c.clone());
                Some((c, true))
            }
            None => {
                mark_failed(&mut st);
                None
            }
        }
    }
}

/// Dials `node` at `addr`; `None` (logged) when it cannot be reached.
async fn dial(
    ep: &quinn::Endpoint,
    addr: SocketAddr,
    node: &str,
    timeout: Duration,
) -> Option<quinn::Connection> {
    let name = tls::node_dns_name(node);
    match endpoint::connect(ep, addr, &name, timeout).await {
        Ok(c) => {
            tracing::info!(peer = node, "connected to peer");
            Some(c)
        }
        Err(e) => {
            tracing::warn!(peer = node, error = %e, "cannot reach peer");
            None
        }
    }
}

fn mark_failed(st: &mut PeerState) {
    st.failures = st.failures.saturating_add(1);
    let backoff = BACKOFF_MIN.saturating_mul(1 << st.failures.min(8).saturating_sub(1));
    st.retry_at = Some(Instant::now() + backoff.min(BACKOFF_MAX));
}

#[cfg(test)]
mod tests {
    use mlsd_transport::protocol::{
        AsRequest, CsRequest, IdsRequest, MailboxAuth, OdsRequest, RosterMode, SdsRequest,
    };
    use mlsd_transport::Request;

    use super::*;

    #[test]
    fn only_reads_acks_and_enqueues_are_repeated_after_a_lost_answer() {
        let auth = MailboxAuth { mailbox: [1; 32], counter: 1, signature: Vec::new() };
        let consuming = [
            Request::Cs(CsRequest::FetchKeyPackages { identity: "bob".into() }),
            Request::Ods(OdsRequest::OpenMailbox {
                mailbox: [1; 32],
                auth_key: Vec::new(),
                push: None,
            }),
            Request::Sds(SdsRequest::PutBlob {
                id: [1; 32],
                cap: [2; 32],
                offset: 0,
                total: 1,
                data: vec![1],
            }),
            Request::Ids(IdsRequest::CreateGroup {
                group: vec![1],
                mode: RosterMode::Stored,
                auth_key: [0; 32],
                roster: None,
            }),
        ];
        for r in consuming {
            assert!(!NodeRequest::Forward(r.clone()).repeatable(), "{r:?}");
        }
        let reads = [
            Request::As(AsRequest::Lookup { identity: "bob".into() }),
            Request::Sds(SdsRequest::GetBlob { id: [1; 32], offset: 0, max: 1 }),
            Request::Ods(OdsRequest::Ack { auth: auth.clone(), up_to: 1 }),
            Request::Ods(OdsRequest::Fetch { auth, after: 0, limit: 1 }),
        ];
        for r in reads {
            assert!(NodeRequest::Forward(r.clone()).repeatable(), "{r:?}");
        }
        assert!(NodeRequest::Enqueue(Vec::new()).repeatable());
    }
}
