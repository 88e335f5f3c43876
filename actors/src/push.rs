//! UnifiedPush notifications: an HTTP POST with no content to the endpoint URL
//! a mailbox registered, so an offline device knows to fetch.
//!
//! Only `http://` endpoints are supported in this version (a distributor on
//! the local network or behind a TLS-terminating proxy); `https://` needs
//! public web PKI roots, which the cluster does not ship yet. The URL is a
//! secret of the recipient and never appears in logs.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zeroize::Zeroizing;

/// Time allowed for one notification, connect to status line.
pub const NOTIFY_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest endpoint URL accepted.
pub const MAX_URL: usize = 2048;

/// Splits `http://host[:port]/path` into (host:port, host, path).
fn parse(url: &str) -> Option<(String, String, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty()
        || authority.contains('@')
        || !path.bytes().all(|b| b.is_ascii_graphic())
        || !authority.bytes().all(|b| b.is_ascii_graphic())
    {
        return None;
    }
    let addr = if authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Some((addr, authority.to_string(), path.to_string()))
}

/// Sends one notification; failures are counted in the log, not retried (the
/// envelope itself is safe in the mailbox either way).
pub async fn notify(url: Zeroizing<String>) {
    match tokio::time::timeout(NOTIFY_TIMEOUT, post(&url)).await {
        Ok(Ok(status)) if (200..300).contains(&status) => tracing::debug!(status, "push sent"),
        Ok(Ok(status)) => tracing::warn!(status, "push endpoint refused the notification"),
        Ok(Err(e)) => tracing::warn!(error = %e, "push notification failed"),
        Err(_) => tracing::warn!("push notification timed out"),
    }
}

async fn post(url: &str) -> std::io::Result<u16> {
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidInput, "unsupported push URL");
    if url.len() > MAX_URL {
        return Err(bad());
    }
    let (addr, host, path) = parse(url).ok_or_else(bad)?;
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nTTL: 86400\r\nUrgency: normal\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse("http://127.0.0.1:8080/up/abc").unwrap(),
            ("127.0.0.1:8080".into(), "127.0.0.1:8080".into(), "/up/abc".into())
        );
        assert_eq!(parse("http://push.example").unwrap().0, "push.example:80");
        for bad in ["https://x/y", "ftp://x", "http://", "http://u@h/x", "http://h/a b"] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }
}
