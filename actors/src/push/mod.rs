//! UnifiedPush notifications: an HTTP POST with no content to the endpoint URL
//! a mailbox registered, so an offline device knows to fetch.
//!
//! Every notification of a node goes through one bounded queue ([`Pusher`]),
//! worked by one task with at most [`CONCURRENCY`] requests in flight, so a
//! flood of envelopes costs a bounded amount of memory and connections, never
//! a task per envelope. A failed attempt (unreachable, timeout, 429, 5xx) is
//! tried again after 1, 4 and 16 s; a full queue drops the notification (the
//! envelope is safe in its mailbox either way, and the next one notifies).
//! An endpoint has at most one notification waiting or in flight, plus one
//! follow-up owed for envelopes stored while one was in flight: a burst at
//! one mailbox (or a slow endpoint) is two notifications and cannot fill the
//! queue or its requests in flight.
//! Endpoints are `https://`, verified against the web PKI roots, and must
//! resolve to public addresses; the operator may allow `http://` and private
//! addresses ([`target::Policy`]). The URL is a secret of the recipient: it
//! is zeroized when dropped and never logged.
//!
//! # Layout
//! - [`target`]: parsing endpoint URLs, and which schemes and addresses the
//!   policy allows (pure);
//! - [`http`]: one notification over TCP or TLS;
//! - this module: the queue, retries and backoff.

pub mod http;
pub use mlsd_roles::push as target;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use zeroize::Zeroizing;

use http::Outcome;
use target::Policy;

/// Time allowed for one attempt, name lookup to status line.
pub const NOTIFY_TIMEOUT: Duration = Duration::from_secs(5);
/// Notifications waiting (new or for a retry) per node; beyond, new ones are dropped.
pub const QUEUE: usize = 4096;
/// Requests in flight at once per node.
pub const CONCURRENCY: usize = 32;
/// Attempts per notification.
pub const MAX_ATTEMPTS: u32 = 4;
/// Wait before the first retry; each further one waits four times longer.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// What the ODS is configured with for push (`[ods] push_*`).
#[derive(Debug, Clone, Default)]
pub struct PushSettings {
    /// Which schemes and addresses notifications may go to.
    pub policy: Policy,
    /// Roots trusted besides the web PKI's (`push_ca`), e.g. a distributor
    /// with a private CA.
    pub extra_roots: Vec<CertificateDer<'static>>,
}

/// Why push could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// A root certificate or the TLS configuration was refused.
    #[error("push TLS configuration: {0}")]
    Tls(String),
}

/// The node's push queue; cloned into every ODS actor, so restarts of the
/// actor keep the queue and what waits in it.
#[derive(Clone)]
pub struct Pusher {
    tx: mpsc::Sender<Zeroizing<String>>,
}

impl Pusher {
    /// Starts the queue's task on the current tokio runtime.
    pub fn start(settings: PushSettings) -> Result<Pusher, PushError> {
        let tls = Arc::new(tls_config(&settings.extra_roots)?);
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(rx, settings.policy, tls));
        Ok(Pusher { tx })
    }

    /// Queues a notification to `url`; drops it (logged) when the queue is full.
    pub fn notify(&self, url: Zeroizing<String>) {
        if self.tx.try_send(url).is_err() {
            tracing::warn!("push queue full: notification dropped");
        }
    }
}

/// rustls for push servers: TLS 1.3, the web PKI roots and `extra`.
fn tls_config(extra: &[CertificateDer<'static>]) -> Result<rustls::ClientConfig, PushError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for c in extra {
        roots.add(c.clone()).map_err(|e| PushError::Tls(e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| PushError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// What to do after an attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Delivered.
    Done,
    /// Try again after this long.
    Retry(Duration),
    /// Give up (the reason is logged).
    GiveUp(&'static str),
}

/// The step after an attempt that came to `outcome`, `failures` attempts
/// having failed before it.
pub fn next_step(outcome: &Outcome, failures: u32) -> Step {
    let retry = || {
        if failures + 1 >= MAX_ATTEMPTS {
            Step::GiveUp("push endpoint unreachable after every attempt")
        } else {
            Step::Retry(FIRST_BACKOFF * 4u32.pow(failures))
        }
    };
    match outcome {
        Outcome::Status(s) if (200..300).contains(s) => Step::Done,
        Outcome::Status(408 | 429) => retry(),
        Outcome::Status(s) if *s >= 500 => retry(),
        // 404/410: the distributor forgot the endpoint; others: it refuses.
        Outcome::Status(_) => Step::GiveUp("push endpoint refused the notification"),
        Outcome::Refused(_) => Step::GiveUp("push endpoint not allowed"),
        Outcome::Failed(_) => retry(),
    }
}

struct Job {
    url: Zeroizing<String>,
    /// SHA-256 of the URL: jobs waiting for one endpoint are merged.
    key: [u8; 32],
    failures: u32,
}

fn url_key(url: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(url.as_bytes()).into()
}

/// One attempt at `job`, bounded by [`NOTIFY_TIMEOUT`].
async fn attempt(job: Job, policy: Policy, tls: Arc<rustls::ClientConfig>) -> (Job, Outcome) {
    let outcome = match target::parse(&job.url, policy) {
        Err(r) => Outcome::Refused(r),
        Ok(t) => match tokio::time::timeout(NOTIFY_TIMEOUT, http::post(&t, policy, &tls)).await {
            Ok(o) => o,
            Err(_) => Outcome::Failed("timed out".into()),
        },
    };
    (job, outcome)
}

/// The queue's task: takes new notifications while fewer than [`QUEUE`]
/// wait, keeps [`CONCURRENCY`] attempts in flight, and puts failed ones
/// back after their backoff. Ends when every [`Pusher`] is gone and nothing
/// waits.
async fn run(
    mut rx: mpsc::Receiver<Zeroizing<String>>,
    policy: Policy,
    tls: Arc<rustls::ClientConfig>,
) {
    let mut ready: VecDeque<Job> = VecDeque::new();
    let mut delayed: BTreeMap<(Instant, u64), Job> = BTreeMap::new();
    let mut inflight: JoinSet<(Job, Outcome)> = JoinSet::new();
    // What each endpoint with work has: at most one job waiting, or one in
    // flight and perhaps one follow-up owed.
    let mut endpoints: HashMap<[u8; 32], Endpoint> = HashMap::new();
    let mut flying: HashMap<tokio::task::Id, [u8; 32]> = HashMap::new();
    let mut seq = 0u64;
    let mut open = true;
    loop {
        while inflight.len() < CONCURRENCY {
            let Some(job) = ready.pop_front() else { break };
            endpoints.insert(job.key, Endpoint::Flying { follow_up: false });
            let key = job.key;
            let task = inflight.spawn(attempt(job, policy, tls.clone()));
            flying.insert(task.id(), key);
        }
        let waiting = ready.len() + delayed.len() + inflight.len();
        if !open && waiting == 0 {
            return;
        }
        let due = delayed.first_key_value().map(|((at, _), _)| *at);
        tokio::select! {
            m = rx.recv(), if open && waiting < QUEUE => match m {
                // A notification says only "fetch": one still waiting for
                // this endpoint covers this envelope too. One in flight does
                // not (it may reach the device before this envelope was
                // stored), so it owes one follow-up, however many arrive.
                Some(url) => {
                    let key = url_key(&url);
                    match endpoints.get_mut(&key) {
                        None => {
                            endpoints.insert(key, Endpoint::Waiting);
                            ready.push_back(Job { url, key, failures: 0 });
                        }
                        Some(Endpoint::Flying { follow_up }) => *follow_up = true,
                        Some(Endpoint::Waiting) => {}
                    }
                }
                None => open = false,
            },
            Some(done) = inflight.join_next_with_id(), if !inflight.is_empty() => {
                let id = match &done {
                    Ok((id, _)) => *id,
                    Err(e) => e.id(),
                };
                let Some(key) = flying.remove(&id) else { continue };
                let follow_up =
                    matches!(endpoints.remove(&key), Some(Endpoint::Flying { follow_up: true }));
                let Ok((_, (job, outcome))) = done else {
                    tracing::warn!("push attempt failed unexpectedly");
                    continue;
                };
                if follow_up {
                    // Newer envelopes are waiting to be announced: a fresh
                    // notification covers them, and this one's retry too.
                    endpoints.insert(key, Endpoint::Waiting);
                    ready.push_back(Job { failures: 0, ..job });
                    continue;
                }
                match next_step(&outcome, job.failures) {
                    Step::Done => tracing::debug!("push sent"),
                    Step::Retry(after) => {
                        tracing::debug!(outcome = %outcome.summary(), failures = job.failures + 1, "push failed; will retry");
                        endpoints.insert(key, Endpoint::Waiting);
                        seq += 1;
                        let job = Job { failures: job.failures + 1, ..job };
                        delayed.insert((Instant::now() + after, seq), job);
                    }
                    Step::GiveUp(why) => tracing::warn!(outcome = %outcome.summary(), "{why}"),
                }
            }
            _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                let now = Instant::now();
                while let Some(entry) = delayed.first_entry() {
                    if entry.key().0 > now {
                        break;
                    }
                    ready.push_back(entry.remove());
                }
            }
        }
    }
}

/// An endpoint's share of the queue.
enum Endpoint {
    /// One job waits (new, or for its retry).
    Waiting,
    /// One job is in flight; `follow_up` once an envelope arrived since.
    Flying {
        /// Send one more when it ends.
        follow_up: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_back_off_and_end() {
        let unreachable = Outcome::Failed("connection refused".into());
        assert_eq!(next_step(&unreachable, 0), Step::Retry(Duration::from_secs(1)));
        assert_eq!(next_step(&Outcome::Status(503), 1), Step::Retry(Duration::from_secs(4)));
        assert_eq!(next_step(&Outcome::Status(429), 2), Step::Retry(Duration::from_secs(16)));
        assert!(matches!(next_step(&unreachable, MAX_ATTEMPTS - 1), Step::GiveUp(_)));
        assert_eq!(next_step(&Outcome::Status(201), 2), Step::Done);
        for never in [
            Outcome::Status(404),
            Outcome::Status(410),
            Outcome::Refused(target::Refused::PlainHttp),
        ] {
            assert!(matches!(next_step(&never, 0), Step::GiveUp(_)), "{never:?}");
        }
    }
}
