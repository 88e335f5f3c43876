//! `mlsd admin`: operator requests sent to the cluster with the operator
//! certificate.
//!
//! The operator's tool speaks `mlsd-node/1` with `operator.pem` and
//! `operator.key` (made by `mlsd certs`), so only the holder of the operator
//! key can issue enrollment tokens or revoke devices; nodes refuse these
//! requests from a node certificate. It computes the owner of the request
//! itself and dials it directly.

use mlsd_transport::protocol::{
    AsResponse, ClusterError, NodeFrame, NodeRequest, NodeResponse, OperatorRequest, ResponseFrame,
    SignedBinding,
};
use std::path::Path;

use mlsd_transport::{endpoint, tls, Response, Role, WireError};
use sha2::{Digest, Sha256};

use crate::config::ClusterConfig;
use crate::routing;

/// Why an admin request failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Bad identity or config.
    #[error("{0}")]
    Invalid(String),
    /// Certificates could not be loaded.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The owner node could not be reached.
    #[error("cannot reach node {node}: {reason}")]
    Unreachable {
        /// The owner.
        node: String,
        /// Why.
        reason: String,
    },
    /// The node refused.
    #[error("node refused: {0}")]
    Refused(WireError),
    /// The node refused the operator certificate itself (another CA's):
    /// not retried, since asking again changes nothing.
    #[error("node {node} {reason}")]
    CertificateRefused {
        /// The node.
        node: String,
        /// What its TLS said.
        reason: String,
    },
}

/// Creates a one-time enrollment token for `identity`, stores its hash at the
/// AS that owns the identity and returns the token (shown once, never stored).
pub async fn enroll(
    config: &ClusterConfig,
    certs: Option<&Path>,
    identity: &str,
) -> Result<String, AdminError> {
    if !mlsd_transport::protocol::identity::valid_name(identity) {
        return Err(AdminError::Invalid(format!("invalid identity {identity:?}")));
    }
    let mut raw = [0u8; 32];
    rand::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut raw)
        .map_err(|e| AdminError::Invalid(format!("no randomness: {e}")))?;
    let token = hex::encode(raw);
    let token_hash = Sha256::digest(token.as_bytes()).to_vec();
    let request = NodeRequest::Operator(OperatorRequest::Enroll {
        identity: identity.to_string(),
        token_hash,
    });
    match call_as_owner(config, certs, identity, request).await? {
        Response::Node(NodeResponse::Enrolled) => Ok(token),
        other => Err(AdminError::Invalid(format!("unexpected response {other:?}"))),
    }
}

/// Revokes `client`'s binding at the AS that owns its identity (a device
/// whose owner has lost every other one, or an abusive one); its id stays
/// the identity's. Returns the revoked binding.
pub async fn revoke(
    config: &ClusterConfig,
    certs: Option<&Path>,
    client: &str,
) -> Result<SignedBinding, AdminError> {
    let (identity, _) = mlsd_transport::protocol::identity::split_client_id(client)
        .ok_or_else(|| AdminError::Invalid(format!("invalid client id {client:?}")))?;
    let request = NodeRequest::Operator(OperatorRequest::Revoke { client: client.to_string() });
    match call_as_owner(config, certs, identity, request).await? {
        Response::As(AsResponse::Binding(b)) => Ok(b),
        other => Err(AdminError::Invalid(format!("unexpected response {other:?}"))),
    }
}

/// Sends `request` to the leader of the AS shard of `identity`, following
/// `NotLeader` answers and trying the shard's other voters while it has no
/// leader, for up to ten call timeouts.
async fn call_as_owner(
    config: &ClusterConfig,
    certs: Option<&Path>,
    identity: &str,
    request: NodeRequest,
) -> Result<Response, AdminError> {
    let voters: Vec<String> = routing::voters(config, Role::As, identity.as_bytes())
        .iter()
        .map(|n| n.name.clone())
        .collect();
    let first = voters
        .first()
        .cloned()
        .ok_or_else(|| AdminError::Invalid("no node hosts the AS".into()))?;
    let deadline = std::time::Instant::now() + config.limits.call_timeout * 10;
    let (mut target, mut turn) = (first, 0usize);
    loop {
        let r = call_node(config, certs, &target, request.clone()).await;
        let next = match &r {
            Err(AdminError::Refused(WireError::Cluster(ClusterError::NotLeader {
                leader: Some(l),
                ..
            }))) if *l != target => Some(l.clone()),
            Err(AdminError::Refused(WireError::Cluster(
                ClusterError::NotLeader { .. } | ClusterError::ShardUnavailable { .. },
            )))
            | Err(AdminError::Unreachable { .. }) => None,
            _ => return r,
        };
        if std::time::Instant::now() >= deadline {
            return r;
        }
        target = match next {
            Some(l) => l,
            None => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                turn += 1;
                voters[turn % voters.len()].clone()
            }
        };
    }
}

/// Sends `request` to node `name`, authenticated with the operator
/// certificate in `certs` (the config's `certs_dir` by default); a refusal
/// is [`AdminError::Refused`].
pub async fn call_node(
    config: &ClusterConfig,
    certs: Option<&Path>,
    name: &str,
    request: NodeRequest,
) -> Result<Response, AdminError> {
    let node = config
        .nodes
        .iter()
        .find(|n| n.name == name)
        .ok_or_else(|| AdminError::Invalid(format!("no node {name} in the config")))?;
    call_at(config, certs, name, node.listen, request).await
}

/// [`call_node`] to node `name` listening at `listen` (a member the cluster
/// map lists, which the operator's file need not).
pub async fn call_at(
    config: &ClusterConfig,
    certs: Option<&Path>,
    name: &str,
    listen: std::net::SocketAddr,
    request: NodeRequest,
) -> Result<Response, AdminError> {
    let operator = tls::NodeTls::operator(certs.unwrap_or(&config.certs_dir))?;
    let cfg = endpoint::quinn_client_config(tls::node_client_config(&operator)?)?;
    let failed = |e: endpoint::CallError| match e {
        endpoint::CallError::TlsRefused(_) => {
            AdminError::CertificateRefused { node: name.to_string(), reason: e.to_string() }
        }
        e => AdminError::Unreachable { node: name.to_string(), reason: e.to_string() },
    };
    let ep = endpoint::client_endpoint(listen, cfg)
        .map_err(|e| AdminError::Unreachable { node: name.to_string(), reason: e.to_string() })?;
    let conn =
        endpoint::connect(&ep, listen, &tls::node_dns_name(name), config.limits.connect_timeout)
            .await
            .map_err(failed)?;
    let frame = NodeFrame::new(request);
    let resp: ResponseFrame =
        endpoint::call(&conn, &frame, config.limits.max_frame, config.limits.call_timeout)
            .await
            .map_err(failed)?;
    conn.close(0u32.into(), b"done");
    match resp.response {
        Response::Error(e) => Err(AdminError::Refused(e)),
        other => Ok(other),
    }
}
