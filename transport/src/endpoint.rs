//! quinn endpoints and the one-request-per-stream call pattern.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use serde::{de::DeserializeOwned, Serialize};

use crate::frame::{self, FrameError};
use crate::limits::{DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_STREAMS};
use crate::tls::TlsError;

/// Why a request/response call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The connection could not be established or was lost.
    #[error("connection: {0}")]
    Connection(String),
    /// The request or response frame failed.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// No response within the call timeout.
    #[error("call timed out")]
    Timeout,
    /// The peer ended the TLS handshake: it does not accept this side's
    /// certificate (another CA's, or none where one is needed). Asking
    /// again changes nothing, so callers do not retry it.
    #[error(
        "the peer refused this connection's certificate ({0}); is it signed by the cluster's CA?"
    )]
    TlsRefused(String),
}

/// Why a connection failed, as a [`CallError`]: a TLS alert from the peer
/// (a QUIC crypto error, codes 0x100-0x1ff) is [`CallError::TlsRefused`].
fn connection_error(e: &quinn::ConnectionError) -> CallError {
    let crypto = |code: quinn::TransportErrorCode| (0x100..0x200).contains(&u64::from(code));
    match e {
        quinn::ConnectionError::ConnectionClosed(c) if crypto(c.error_code) => {
            CallError::TlsRefused(e.to_string())
        }
        quinn::ConnectionError::TransportError(t) if crypto(t.code) => {
            CallError::TlsRefused(e.to_string())
        }
        _ => CallError::Connection(e.to_string()),
    }
}

fn transport_config(idle: Duration) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(DEFAULT_MAX_STREAMS.into());
    t.max_concurrent_uni_streams(0u32.into());
    t.max_idle_timeout(Some(idle.try_into().expect("idle timeout fits QUIC's varint")));
    t.keep_alive_interval(Some(idle / 3));
    Arc::new(t)
}

/// Builds a quinn server config from a rustls one.
pub fn quinn_server_config(tls: rustls::ServerConfig) -> Result<quinn::ServerConfig, TlsError> {
    let quic = QuicServerConfig::try_from(tls).map_err(|e| TlsError::Config(e.to_string()))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(quic));
    cfg.transport_config(transport_config(DEFAULT_IDLE_TIMEOUT));
    Ok(cfg)
}

/// Builds a quinn client config from a rustls one.
pub fn quinn_client_config(tls: rustls::ClientConfig) -> Result<quinn::ClientConfig, TlsError> {
    let quic = QuicClientConfig::try_from(tls).map_err(|e| TlsError::Config(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(quic));
    cfg.transport_config(transport_config(DEFAULT_IDLE_TIMEOUT));
    Ok(cfg)
}

/// Like [`quinn_client_config`], with connections that end after `idle`
/// without a packet from the peer (keep-alives at a third of it): node-to-node
/// connections use a short one, so a call to a peer that died fails when the
/// cluster notices the death, not at the call timeout.
pub fn quinn_client_config_idle(
    tls: rustls::ClientConfig,
    idle: Duration,
) -> Result<quinn::ClientConfig, TlsError> {
    let mut cfg = quinn_client_config(tls)?;
    cfg.transport_config(transport_config(idle));
    Ok(cfg)
}

/// A client-only endpoint on an ephemeral port of the right address family.
pub fn client_endpoint(
    server: SocketAddr,
    cfg: quinn::ClientConfig,
) -> Result<quinn::Endpoint, std::io::Error> {
    let bind: SocketAddr = if server.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }
        .parse()
        .expect("static address parses");
    let mut ep = quinn::Endpoint::client(bind)?;
    ep.set_default_client_config(cfg);
    Ok(ep)
}

/// Dials `server` as `server_name`, failing after `timeout`.
pub async fn connect(
    ep: &quinn::Endpoint,
    server: SocketAddr,
    server_name: &str,
    timeout: Duration,
) -> Result<quinn::Connection, CallError> {
    let connecting =
        ep.connect(server, server_name).map_err(|e| CallError::Connection(e.to_string()))?;
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(connection_error(&e)),
        Err(_) => Err(CallError::Timeout),
    }
}

/// Sends `req` on a new bidirectional stream of `conn` and waits (at most
/// `timeout`) for one response frame of at most `max_frame` bytes.
pub async fn call<Q: Serialize, A: DeserializeOwned>(
    conn: &quinn::Connection,
    req: &Q,
    max_frame: u32,
    timeout: Duration,
) -> Result<A, CallError> {
    let fut = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| connection_error(&e))?;
        frame::write_message(&mut send, req, max_frame).await?;
        let _ = send.finish();
        Ok(frame::read_message(&mut recv, max_frame, timeout).await?)
    };
    let result = tokio::time::timeout(timeout, fut).await.map_err(|_| CallError::Timeout)?;
    // With TLS 1.3 the client's certificate is checked after this side
    // considers the handshake done, so a refusal shows as a lost stream.
    match (result, conn.close_reason()) {
        (Err(_), Some(reason)) if matches!(connection_error(&reason), CallError::TlsRefused(_)) => {
            Err(connection_error(&reason))
        }
        (result, _) => result,
    }
}
