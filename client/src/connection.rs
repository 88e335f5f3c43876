//! A client's connection to a node: TLS 1.3 over QUIC, `mlsd-client/1`,
//! the node verified against the cluster CA.
//!
//! Any node will do: it routes each request to the node that owns it.

use mlsd_transport::protocol::tickets::Ticket;
use mlsd_transport::protocol::{ClientFrame, ClusterError, Ping, Pong, ResponseFrame};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use mlsd_transport::limits::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_FRAME};
use mlsd_transport::{endpoint, tls, Request, Response, Role, WireError};

/// How long a request may take end to end, forwarding included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The CA file or TLS configuration is unusable.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The node could not be reached or the connection broke.
    #[error("cannot reach {server}: {reason}")]
    Connect {
        /// The server address.
        server: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// The request got no usable response.
    #[error(transparent)]
    Call(#[from] endpoint::CallError),
    /// The node answered with an error. (Not a `source`: the message
    /// already says it, and `{:#}` would print it twice.)
    #[error("server refused: {0}")]
    Server(WireError),
    /// The node answered with a response of the wrong kind.
    #[error("unexpected response: {0}")]
    Unexpected(String),
    /// The home directory or a trusted key file is unusable.
    #[error("{0}")]
    Home(String),
    /// This home has no registered identity yet.
    #[error("not registered: run `mlsc register IDENTITY/DEVICE` first")]
    NotRegistered,
    /// The identity has devices already, so this new device's registration
    /// waits until one of them approves it (`mlsc device approve CLIENT`),
    /// or the device registers again with an approval code.
    #[error(
        "{client} awaits approval: on another device of {identity}, run `mlsc device approve {client}`, or `mlsc device admit {client}` and register again with --code (key fingerprint {fingerprint})"
    )]
    AwaitsApproval {
        /// This device's client id.
        client: String,
        /// Its identity.
        identity: String,
        /// Its key's fingerprint, for the approving device to compare.
        fingerprint: String,
    },
    /// Not sent: the group has members the AS does not vouch for (or that
    /// could not be checked yet); see [`crate::members`].
    #[error(
        "not sent: {group} has members the AS does not vouch for: {}; remove them (mlsc group remove {group} CLIENT_ID) to send to {group} again",
        members.join(", ")
    )]
    UnverifiedMembers {
        /// Local name of the group.
        group: String,
        /// Each such member's client id and why.
        members: Vec<String>,
    },
    /// A local cryptographic operation failed.
    #[error("crypto: {0}")]
    Crypto(String),
    /// The message was accepted but not every recipient got a copy (see
    /// [`IdsResponse::PartlySent`]); `send_reliably` retries and reports these.
    #[error("{failed} of {copies} copies not delivered")]
    Undelivered {
        /// Copies in all.
        copies: u32,
        /// Copies not stored.
        failed: u32,
        /// Who (by mailbox) and why.
        undelivered: Vec<mlsd_transport::protocol::Undelivered>,
    },
    /// A binding or KeyPackage did not authenticate.
    #[error(transparent)]
    Rejected(#[from] crate::verify::Rejection),
    /// A push endpoint that no node would notify: not an `https://` (or
    /// `http://`) URL of a host name or address, or longer than
    /// [`mlsd_transport::push::MAX_URL`]. Checked before it is sealed,
    /// since the ODS never reads it until a notification is due.
    #[error("push endpoint {0:?} is not an https:// (or http://) URL the ODS can notify")]
    BadPushUrl(String),
}

/// Checks `url` as the nodes will before notifying it (the operator may
/// still refuse `http://` or private addresses, which a client cannot know).
pub fn check_push_url(url: &str) -> Result<(), ClientError> {
    let policy = mlsd_transport::push::Policy { allow_http: true, allow_private: true };
    match mlsd_transport::push::parse(url, policy) {
        Ok(_) => Ok(()),
        Err(_) => Err(ClientError::BadPushUrl(url.chars().take(100).collect())),
    }
}

impl From<WireError> for ClientError {
    fn from(e: WireError) -> Self {
        ClientError::Server(e)
    }
}

/// An open connection to one node.
pub struct Connection {
    server: SocketAddr,
    _endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    timeout: Duration,
    /// Where [`Connection::repeat_requests`] logs, when it is on.
    repeats: std::sync::Mutex<Option<RepeatLog>>,
}

/// A request sent twice with the same frame, and both outcomes (a server's
/// refusal as `Ok(Response::Error(..))`, a failed call as `Err(reason)`).
#[derive(Debug, Clone)]
pub struct Repeated {
    /// The frame, as sent both times.
    pub frame: ClientFrame,
    /// What the first sending got.
    pub first: Result<Response, String>,
    /// What the second got.
    pub again: Result<Response, String>,
}

/// The log of [`Connection::repeat_requests`].
pub type RepeatLog = std::sync::Arc<std::sync::Mutex<Vec<Repeated>>>;

/// `r` as [`Repeated`] logs it: a server's refusal as `Ok(Response::Error(..))`,
/// a failed call as `Err(reason)`.
#[doc(hidden)]
pub fn outcome(r: &Result<Response, ClientError>) -> Result<Response, String> {
    match r {
        Ok(resp) => Ok(resp.clone()),
        Err(ClientError::Server(e)) => Ok(Response::Error(e.clone())),
        Err(e) => Err(e.to_string()),
    }
}

impl Connection {
    /// Connects to `server`, trusting the cluster CA in `ca_path`.
    pub async fn connect(server: SocketAddr, ca_path: &Path) -> Result<Self, ClientError> {
        let ca = tls::load_certs(ca_path)?;
        let cfg = endpoint::quinn_client_config(tls::client_config(&ca)?)?;
        let ep = endpoint::client_endpoint(server, cfg)
            .map_err(|e| ClientError::Connect { server, reason: e.to_string() })?;
        let conn =
            endpoint::connect(&ep, server, tls::CLUSTER_SERVER_NAME, DEFAULT_CONNECT_TIMEOUT)
                .await
                .map_err(|e| ClientError::Connect { server, reason: e.to_string() })?;
        Ok(Connection {
            server,
            _endpoint: ep,
            conn,
            timeout: DEFAULT_REQUEST_TIMEOUT,
            repeats: std::sync::Mutex::new(None),
        })
    }

    /// The QUIC connection, for streams that outlive one request.
    pub fn quic(&self) -> &quinn::Connection {
        &self.conn
    }

    /// The address this connection goes to.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// Sends one request and returns the node's response; an error response
    /// becomes [`ClientError::Server`].
    pub async fn request(&self, req: Request) -> Result<Response, ClientError> {
        self.request_paid(req, None).await
    }

    /// Test instrumentation: from now on every request on this connection
    /// is sent a second time with the very same frame as soon as the first
    /// has its answer (what a retry after a lost answer does), and both
    /// outcomes go to `log`; the caller gets the first. What a retry must
    /// get is the first answer again, or an equivalent success.
    #[doc(hidden)]
    pub fn repeat_requests(&self, log: RepeatLog) {
        *self.repeats.lock().unwrap_or_else(|p| p.into_inner()) = Some(log);
    }

    /// Sends one request that pays with `ticket` (decision D12; see
    /// [`mlsd_transport::protocol::tickets::TicketKind::for_request`]).
    pub async fn request_paid(
        &self,
        req: Request,
        ticket: Option<Ticket>,
    ) -> Result<Response, ClientError> {
        let frame = ClientFrame::with_ticket(req, ticket);
        let first = self.send_frame(&frame).await;
        let log = self.repeats.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(log) = log {
            let again = outcome(&self.send_frame(&frame).await);
            let r = Repeated { frame, first: outcome(&first), again };
            log.lock().unwrap_or_else(|p| p.into_inner()).push(r);
        }
        first
    }

    /// Sends `frame` (again) until it has an answer other than "no leader
    /// yet", or the patience runs out.
    pub async fn send_frame(&self, frame: &ClientFrame) -> Result<Response, ClientError> {
        // A shard without a leader (an election under way after a node
        // died) is asked again with the very same frame, for a short while:
        // the same request, so a retry of one that did take effect is
        // recognized as such.
        let patience = crate::retry::Patience::new(crate::retry::SHARD);
        loop {
            let resp: ResponseFrame =
                endpoint::call(&self.conn, frame, DEFAULT_MAX_FRAME, self.timeout).await?;
            match resp.response {
                Response::Error(WireError::Cluster(
                    ClusterError::ShardUnavailable { .. } | ClusterError::NotLeader { .. },
                )) if patience.left() => tokio::time::sleep(crate::retry::PAUSE).await,
                Response::Error(e) => return Err(ClientError::Server(e)),
                r => return Ok(r),
            }
        }
    }

    /// Pings the actor of `role` that owns `key`; returns the answering node's
    /// name and the round-trip time.
    pub async fn ping(&self, role: Role, key: &[u8]) -> Result<(String, Duration), ClientError> {
        let start = Instant::now();
        match self.request(Request::Ping(Ping { role, key: key.to_vec() })).await? {
            Response::Pong(Pong { node, .. }) => Ok((node, start.elapsed())),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }
}
