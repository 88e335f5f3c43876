//! Where a push notification may go: parsing an endpoint URL and the
//! operator's policy on schemes and addresses. Pure functions, so every rule
//! is tested without a network.
//!
//! A push URL is named by a client, so it is untrusted input: without the
//! policy, the ODS would POST to any host a stranger names, including the
//! node's own loopback services and the operator's private network (SSRF).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Longest endpoint URL accepted.
pub const MAX_URL: usize = 2048;

/// The operator's push policy (`[ods] push_allow_http`, `push_allow_private`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Policy {
    /// Allow `http://` endpoints (no TLS), e.g. a distributor on the local
    /// network. Off by default: `https://` only.
    pub allow_http: bool,
    /// Allow loopback, private, link-local and other non-public addresses.
    /// Off by default; the tests' local push server needs it.
    pub allow_private: bool,
}

/// A parsed endpoint: what to connect to and what to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `https://` (true) or `http://`.
    pub tls: bool,
    /// Host name or IP literal (without brackets), for DNS, SNI and `Host`.
    pub host: String,
    /// Port, 443 or 80 unless given.
    pub port: u16,
    /// The `Host` header value (`host[:port]` as written in the URL).
    pub authority: String,
    /// Path and query, starting with `/`.
    pub path: String,
}

/// Why a notification is not sent at all (never retried).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not an `https://` (or allowed `http://`) URL we can parse.
    #[error("unsupported push URL")]
    BadUrl,
    /// `http://` while the policy wants TLS.
    #[error("push URL is http:// and push_allow_http is off")]
    PlainHttp,
    /// The host resolves only to addresses the policy forbids.
    #[error("push host resolves only to non-public addresses and push_allow_private is off")]
    PrivateAddress,
}

/// Parses `https://host[:port]/path` (or `http://...` when allowed).
pub fn parse(url: &str, policy: Policy) -> Result<Target, Refused> {
    if url.len() > MAX_URL {
        return Err(Refused::BadUrl);
    }
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(Refused::BadUrl);
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty()
        || authority.contains('@')
        || !path.bytes().all(|b| b.is_ascii_graphic())
        || !authority.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(Refused::BadUrl);
    }
    let default_port = if tls { 443 } else { 80 };
    let (host, port) = split_authority(authority, default_port).ok_or(Refused::BadUrl)?;
    if !tls && !policy.allow_http {
        return Err(Refused::PlainHttp);
    }
    Ok(Target { tls, host, port, authority: authority.to_string(), path: path.to_string() })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_authority(authority: &str, default_port: u16) -> Option<(String, u16)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        v6.parse::<Ipv6Addr>().ok()?;
        let port = match after {
            "" => default_port,
            p => p.strip_prefix(':')?.parse().ok()?,
        };
        return Some((v6.to_string(), port));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (authority, default_port),
    };
    let name_ok = !host.is_empty()
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    name_ok.then(|| (host.to_ascii_lowercase(), port))
}

/// Whether the policy lets a notification go to `ip`.
pub fn allowed(ip: IpAddr, policy: Policy) -> bool {
    policy.allow_private || is_public(ip)
}

/// Whether `ip` is a public unicast address: not loopback, private,
/// link-local, shared (CGNAT), unspecified, multicast, broadcast,
/// documentation, benchmarking or reserved, and for IPv6 also not unique
/// local, and judged by its IPv4 address when it embeds one.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            let unique_local = (s[0] & 0xfe00) == 0xfc00;
            let link_local = (s[0] & 0xffc0) == 0xfe80;
            let documentation = s[0] == 0x2001 && s[1] == 0x0db8;
            // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) carry an IPv4 address.
            let embedded = if s[0] == 0x0064 && s[1] == 0xff9b {
                Some(Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8))
            } else if s[0] == 0x2002 {
                Some(Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8))
            } else {
                None
            };
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || unique_local
                || link_local
                || documentation
                || embedded.is_some_and(|v4| !is_public_v4(v4)))
        }
    }
}

fn is_public_v4(v4: Ipv4Addr) -> bool {
    let o = v4.octets();
    let shared = o[0] == 100 && (o[1] & 0xc0) == 64; // 100.64.0.0/10
    let benchmarking = o[0] == 198 && (o[1] & 0xfe) == 18; // 198.18.0.0/15
    let reserved = o[0] >= 240 || o[0] == 0; // 240/4 and 0/8
    let protocol_assignments = o[0] == 192 && o[1] == 0 && o[2] == 0; // 192.0.0.0/24
    !(v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_broadcast()
        || v4.is_documentation()
        || v4.is_multicast()
        || v4.is_unspecified()
        || shared
        || benchmarking
        || reserved
        || protocol_assignments)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: Policy = Policy { allow_http: false, allow_private: false };
    const LOOSE: Policy = Policy { allow_http: true, allow_private: true };

    #[test]
    fn urls() {
        let t = parse("https://push.example/up/abc?x=1", STRICT).unwrap();
        assert_eq!(
            (t.tls, t.host.as_str(), t.port, t.path.as_str()),
            (true, "push.example", 443, "/up/abc?x=1")
        );
        let t = parse("http://127.0.0.1:8080/UP", LOOSE).unwrap();
        assert_eq!(
            (t.tls, t.host.as_str(), t.port, t.authority.as_str()),
            (false, "127.0.0.1", 8080, "127.0.0.1:8080")
        );
        let t = parse("https://[2001:db8::1]:8443", STRICT).unwrap();
        assert_eq!((t.host.as_str(), t.port, t.path.as_str()), ("2001:db8::1", 8443, "/"));
        assert_eq!(parse("http://push.example/x", STRICT), Err(Refused::PlainHttp));
        for bad in [
            "ftp://x",
            "https://",
            "https://u@h/x",
            "https://h/a b",
            "https://h:99999/",
            "https://h:/",
            "https://[::1/",
            "https://ho_st/",
        ] {
            assert_eq!(parse(bad, LOOSE), Err(Refused::BadUrl), "{bad}");
        }
        assert_eq!(
            parse(&format!("https://h/{}", "a".repeat(MAX_URL)), LOOSE),
            Err(Refused::BadUrl)
        );
    }

    #[test]
    fn only_public_addresses_unless_allowed() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "198.18.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2002:c0a8:101::1",
            "2001:db8::1",
        ] {
            let ip: IpAddr = private.parse().unwrap();
            assert!(!allowed(ip, STRICT), "{private}");
            assert!(allowed(ip, LOOSE), "{private}");
        }
        for public in ["1.1.1.1", "93.184.216.34", "2606:4700::1111", "::ffff:1.1.1.1"] {
            assert!(allowed(public.parse().unwrap(), STRICT), "{public}");
        }
    }
}
