//! The anonymizer actor: seals one message for one recipient, hands the
//! envelope to its fan-out actor, drops its key material and stops.
//!
//! One actor per recipient keeps each recipient's key in its own short-lived
//! state; the counters below let tests check that every anonymizer that
//! started also stopped and zeroized its secrets.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use mlsd_transport::envelope;
use mlsd_transport::protocol::{DeliveryCap, EnqueueItem};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Anonymizers started, ever, in this process.
pub static SPAWNED: AtomicU64 = AtomicU64::new(0);
/// Anonymizers stopped.
pub static STOPPED: AtomicU64 = AtomicU64::new(0);
/// Envelopes sealed.
pub static SEALED: AtomicU64 = AtomicU64::new(0);
/// Key holders dropped (and zeroized).
pub static ZEROIZED: AtomicU64 = AtomicU64::new(0);

/// A recipient's key, counted when dropped so tests can see it was zeroized.
pub struct KeyGuard(pub Zeroizing<[u8; 32]>);

impl Drop for KeyGuard {
    fn drop(&mut self) {
        // Zeroizing wipes the bytes right after this.
        ZEROIZED.fetch_add(1, Ordering::SeqCst);
    }
}

/// How to seal.
pub enum Sealing {
    /// Symmetric, under `K(r, e)`.
    Envelope(KeyGuard),
    /// HPKE to the mailbox key (Welcomes).
    Welcome(Vec<u8>),
}

/// One copy to make.
pub struct Job {
    /// Position in the fan-out.
    pub index: usize,
    /// The send's message id.
    pub message_id: [u8; 32],
    /// The bytes to seal.
    pub message: Arc<Vec<u8>>,
    /// The recipient's capability, passed through to the ODS.
    pub cap: DeliveryCap,
    /// Key material.
    pub sealing: Sealing,
    /// Process group to join while alive (chaos hooks on).
    pub group: Option<String>,
}

/// An anonymizer's state: its job, then its outcome. The fan-out reads the
/// outcome from the final state it receives when the anonymizer stops, so a
/// result can never be lost or counted twice.
pub enum AnonState {
    /// Not yet sealed.
    Job(Job),
    /// Sealed (or failed) copy number `index`; the key material is gone.
    Done {
        /// Which recipient.
        index: usize,
        /// The item for the ODS, or why sealing failed.
        result: Result<EnqueueItem, String>,
    },
}

/// `H(message id || capability token)`: the same copy always has the same
/// id, so the ODS stores a retried copy once, and copies of one message to
/// different recipients share nothing; Welcomes use their own domain.
pub fn delivery_id(message_id: &[u8; 32], cap: &DeliveryCap, welcome: bool) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(if welcome { b"mlsd welcome delivery" as &[u8] } else { b"mlsd delivery" });
    h.update(message_id);
    h.update(cap.token);
    h.finalize().into()
}

/// Fresh random bytes for nonces: the thread's CSPRNG (ChaCha, seeded and
/// periodically reseeded from the OS), not a system call per copy.
fn random<const N: usize>() -> [u8; N] {
    rand::random()
}

/// Seals a Welcome with HPKE to the new member's mailbox key `hpke_key`.
pub fn seal_welcome(hpke_key: &[u8], welcome: &[u8]) -> Result<Vec<u8>, String> {
    envelope::seal_welcome(hpke_key, welcome).map_err(|e| e.to_string())
}

/// Seals `message` under a recipient's key with a fresh nonce: what an
/// anonymizer does for a (non-Welcome) copy, public so the benchmark
/// measures exactly this path.
pub fn seal_copy(key: &[u8; 32], message: &[u8]) -> Result<Vec<u8>, envelope::EnvelopeError> {
    envelope::seal(key, message, &random::<24>())
}

/// An anonymizer's whole job without the actor: the sealed copy and its
/// delivery id. Public so the benchmark can tell the actor's own cost from
/// its job's.
pub fn make_copy(job: &Job) -> Result<EnqueueItem, String> {
    let (envelope, welcome) = match &job.sealing {
        Sealing::Envelope(k) => (seal_copy(&k.0, &job.message).map_err(|e| e.to_string())?, false),
        Sealing::Welcome(pk) => (seal_welcome(pk, &job.message)?, true),
    };
    SEALED.fetch_add(1, Ordering::SeqCst);
    Ok(EnqueueItem {
        cap: job.cap.clone(),
        delivery_id: delivery_id(&job.message_id, &job.cap, welcome),
        envelope,
    })
}

/// The anonymizer actor.
pub struct Anonymizer;

impl Actor for Anonymizer {
    type Msg = ();
    type State = AnonState;
    type Arguments = Job;

    async fn pre_start(&self, me: ActorRef<()>, job: Job) -> Result<AnonState, ActorProcessingErr> {
        SPAWNED.fetch_add(1, Ordering::SeqCst);
        if let Some(g) = &job.group {
            ractor::pg::join(g.clone(), vec![me.get_cell()]);
        }
        Ok(AnonState::Job(job))
    }

    async fn post_start(
        &self,
        me: ActorRef<()>,
        state: &mut AnonState,
    ) -> Result<(), ActorProcessingErr> {
        if let AnonState::Job(job) = state {
            let result = make_copy(job);
            let index = job.index;
            // Replacing the state drops the job and with it the key material.
            *state = AnonState::Done { index, result };
        }
        me.stop(None);
        Ok(())
    }

    async fn post_stop(
        &self,
        _me: ActorRef<()>,
        _state: &mut AnonState,
    ) -> Result<(), ActorProcessingErr> {
        STOPPED.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}
