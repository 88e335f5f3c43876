//! One UnifiedPush notification: resolve the endpoint's host, keep only the
//! addresses the policy allows, connect to one of them (TLS with the web PKI
//! roots unless the policy allows `http://`), POST nothing, read the status.
//!
//! The address checked is the address dialed: the host is resolved once
//! here, so a name that resolves to a public address for the check and to a
//! private one for the connection (DNS rebinding) cannot slip past.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::target::{allowed, Policy, Refused, Target};

/// What one attempt came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The endpoint answered with this status.
    Status(u16),
    /// Not sent, and never will be (URL or policy).
    Refused(Refused),
    /// Could not reach the endpoint or read its answer; worth retrying.
    Failed(String),
}

impl Outcome {
    /// For logs: the status or the kind of failure, never the URL or a host
    /// name (an error message may quote either).
    pub fn summary(&self) -> String {
        match self {
            Outcome::Status(s) => format!("status {s}"),
            Outcome::Refused(r) => r.to_string(),
            Outcome::Failed(_) => "unreachable".into(),
        }
    }
}

/// Sends one notification to `target` under `policy`, trusting `tls`'s roots.
pub async fn post(target: &Target, policy: Policy, tls: &Arc<rustls::ClientConfig>) -> Outcome {
    let addrs: Vec<SocketAddr> =
        match tokio::net::lookup_host((target.host.as_str(), target.port)).await {
            Ok(a) => a.collect(),
            Err(e) => return Outcome::Failed(format!("cannot resolve the push host: {e}")),
        };
    // Each allowed address in turn (a name may have an IPv6 and an IPv4 one).
    let allowed_addrs: Vec<SocketAddr> =
        addrs.iter().copied().filter(|a| allowed(a.ip(), policy)).take(4).collect();
    if allowed_addrs.is_empty() {
        return if addrs.is_empty() {
            Outcome::Failed("the push host has no address".into())
        } else {
            Outcome::Refused(Refused::PrivateAddress)
        };
    }
    let mut tcp = None;
    let mut last = String::new();
    for addr in allowed_addrs {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = e.to_string(),
        }
    }
    let Some(tcp) = tcp else { return Outcome::Failed(format!("cannot connect: {last}")) };
    let result = if target.tls {
        let Ok(name) = ServerName::try_from(target.host.clone()) else {
            return Outcome::Refused(Refused::BadUrl);
        };
        match tokio_rustls::TlsConnector::from(tls.clone()).connect(name, tcp).await {
            Ok(s) => exchange(s, target).await,
            Err(e) => return Outcome::Failed(format!("TLS: {e}")),
        }
    } else {
        exchange(tcp, target).await
    };
    match result {
        Ok(status) => Outcome::Status(status),
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// Writes the request and reads the status code of the answer.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    target: &Target,
) -> std::io::Result<u16> {
    let req = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nTTL: 86400\r\nUrgency: normal\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        target.path, target.authority
    );
    s.write_all(req.as_bytes()).await?;
    s.flush().await?;
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        let r = s.read(&mut buf[n..]).await?;
        if r == 0 {
            break;
        }
        n += r;
    }
    let line = std::str::from_utf8(&buf[..n]).unwrap_or("");
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no HTTP status"))
}
