//! A local UnifiedPush endpoint for tests: counts the POSTs it gets for its
//! secret path and answers each with the next status of a script (201 once
//! the script is used up), over plain TCP or TLS with a certificate for
//! `localhost` from a CA of its own.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The secret part of every test endpoint URL; must never reach a disk.
pub const PUSH_TOKEN: &str = "secret-push-token-of-bob";

/// A running push server.
pub struct PushServer {
    /// Its endpoint URL (`http://127.0.0.1:P/UP?token=...` or
    /// `https://localhost:P/UP?token=...`).
    pub url: String,
    /// POSTs received for the endpoint.
    pub hits: Arc<AtomicUsize>,
    /// The CA that signed its certificate (PEM), for `[ods] push_ca`.
    pub ca_pem: Option<String>,
}

impl PushServer {
    /// Plain HTTP, answering 201.
    pub async fn http() -> PushServer {
        Self::start(false, Vec::new()).await
    }

    /// HTTPS with its own CA, answering `script` in order, then 201.
    pub async fn https(script: Vec<u16>) -> PushServer {
        Self::start(true, script).await
    }

    /// Plain HTTP answering `script` in order, then 201.
    pub async fn http_scripted(script: Vec<u16>) -> PushServer {
        Self::start(false, script).await
    }

    /// Plain HTTP answering 201 after holding each request `ms` (a slow
    /// distributor: a notification stays in flight that long).
    pub async fn http_slow(ms: u64) -> PushServer {
        Self::start_with(false, Vec::new(), ms).await
    }

    async fn start(tls: bool, script: Vec<u16>) -> PushServer {
        Self::start_with(tls, script, 0).await
    }

    async fn start_with(tls: bool, script: Vec<u16>, delay_ms: u64) -> PushServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let script = Arc::new(Mutex::new(script.into_iter()));
        let (url, acceptor, ca_pem) = if tls {
            let (acceptor, ca) = tls_acceptor();
            (format!("https://localhost:{port}/UP?token={PUSH_TOKEN}"), Some(acceptor), Some(ca))
        } else {
            (format!("http://127.0.0.1:{port}/UP?token={PUSH_TOKEN}"), None, None)
        };
        let h = hits.clone();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else { return };
                let (h, script, acceptor) = (h.clone(), script.clone(), acceptor.clone());
                tokio::spawn(async move {
                    match acceptor {
                        Some(a) => {
                            if let Ok(s) = a.accept(s).await {
                                answer(s, &h, &script, delay_ms).await;
                            }
                        }
                        None => answer(s, &h, &script, delay_ms).await,
                    }
                });
            }
        });
        PushServer { url, hits, ca_pem }
    }

    /// POSTs so far.
    pub fn count(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Waits up to `secs` for at least `n` POSTs; returns the count.
    pub async fn wait_for(&self, n: usize, secs: u64) -> usize {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
        while self.count() < n && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        self.count()
    }
}

async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    hits: &AtomicUsize,
    script: &Mutex<std::vec::IntoIter<u16>>,
    delay_ms: u64,
) {
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap_or(0);
    let start = format!("POST /UP?token={PUSH_TOKEN} HTTP/1.1\r\n");
    if buf[..n].starts_with(start.as_bytes()) {
        hits.fetch_add(1, Ordering::SeqCst);
    }
    tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
    let status = script.lock().unwrap().next().unwrap_or(201);
    let reply = format!("HTTP/1.1 {status} Whatever\r\nContent-Length: 0\r\n\r\n");
    let _ = s.write_all(reply.as_bytes()).await;
    let _ = s.shutdown().await;
}

/// A TLS acceptor for `localhost` and the PEM of the CA that signed it.
fn tls_acceptor() -> (tokio_rustls::TlsAcceptor, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert =
        CertificateParams::new(vec!["localhost".into()]).unwrap().signed_by(&key, &issuer).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    (tokio_rustls::TlsAcceptor::from(Arc::new(cfg)), ca.pem())
}
