//! The client's mailbox at the ODS: where its envelopes wait.
//!
//! A mailbox is not linked to the client's identity: its id is random, and it
//! is authenticated by its own Ed25519 key, not the identity's signature key.
//! Its push endpoint is sealed under a push key the ODS never stores.

use ed25519_dalek::{Signer as _, SigningKey};
use mlsd_transport::protocol::identity::signing_bytes;
use mlsd_transport::protocol::ods::{LABEL_ACK, LABEL_FETCH};
use mlsd_transport::protocol::{AuthError, OdsRequest};
use mlsd_transport::protocol::{Delivered, MailboxAuth, MailboxId, SealedPush};
use mlsd_transport::{Request, Response};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{ClientError, Connection};

/// A mailbox's secrets, as stored in the home (`mailbox.bin`, 0600).
#[derive(Serialize, Deserialize)]
pub struct MailboxKeys {
    /// The mailbox id.
    pub id: MailboxId,
    /// Ed25519 seed of the auth key.
    pub auth_seed: Zeroizing<[u8; 32]>,
    /// Key sealing the push endpoint; published in the mailbox reference so
    /// senders' IDS can hand it to the ODS with each envelope.
    pub push_key: Zeroizing<[u8; 32]>,
    /// Highest sequence number acknowledged.
    pub acked: u64,
    /// X25519 private key Welcomes are sealed to.
    pub hpke_private: Zeroizing<Vec<u8>>,
    /// Its public key, published in the mailbox reference.
    pub hpke_public: Vec<u8>,
}

fn random32() -> Result<Zeroizing<[u8; 32]>, ClientError> {
    let mut b = Zeroizing::new([0u8; 32]);
    rand::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, b.as_mut())
        .map_err(|e| ClientError::Crypto(format!("no randomness: {e}")))?;
    Ok(b)
}

impl MailboxKeys {
    /// Fresh random id and keys.
    pub fn generate() -> Result<Self, ClientError> {
        use openmls_traits::crypto::OpenMlsCrypto;
        let ikm = random32()?;
        let kp = openmls_rust_crypto::RustCrypto::default()
            .derive_hpke_keypair(mlsd_transport::envelope::WELCOME_HPKE, ikm.as_ref())
            .map_err(|e| ClientError::Crypto(format!("{e:?}")))?;
        Ok(MailboxKeys {
            id: *random32()?,
            auth_seed: random32()?,
            push_key: random32()?,
            acked: 0,
            hpke_private: Zeroizing::new(kp.private.to_vec()),
            hpke_public: kp.public,
        })
    }

    /// The reference others deliver to, as published in KeyPackages.
    pub fn reference(&self) -> mlsd_transport::envelope::MailboxRef {
        mlsd_transport::envelope::MailboxRef {
            mailbox: self.id,
            hpke_public: self.hpke_public.clone(),
            push_key: Some(*self.push_key),
        }
    }

    /// Opens a Welcome envelope sealed to this mailbox's HPKE key.
    pub fn open_welcome(&self, envelope: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        mlsd_transport::envelope::open_welcome(&self.hpke_private, &self.id, envelope).ok()
    }

    fn signing_key(&self) -> SigningKey {
        SigningKey::from_bytes(&self.auth_seed)
    }

    /// The auth public key.
    pub fn auth_public(&self) -> Vec<u8> {
        self.signing_key().verifying_key().to_bytes().to_vec()
    }

    /// Seals a push endpoint URL for this mailbox.
    pub fn seal_push(&self, url: &str) -> Result<SealedPush, ClientError> {
        let nonce = random32()?;
        let nonce: [u8; 24] = std::array::from_fn(|i| nonce[i]);
        mlsd_transport::sealed::seal_push(&self.push_key, &nonce, &self.id, url)
            .map_err(|_| ClientError::Crypto("sealing the push endpoint".into()))
    }

    /// Signs a mailbox request.
    pub fn auth<T: Serialize>(&self, label: &str, counter: u64, op: &T) -> MailboxAuth {
        let msg = signing_bytes(label, &(self.id, counter, op));
        MailboxAuth {
            mailbox: self.id,
            counter,
            signature: self.signing_key().sign(&msg).to_bytes().to_vec(),
        }
    }
}

/// Request counters for mailbox auth: Unix milliseconds, strictly increasing
/// within this process.
#[derive(Default)]
pub struct Counter(u64);

impl Counter {
    /// The next counter value.
    pub fn next_value(&mut self) -> u64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.0 = now.max(self.0 + 1);
        self.0
    }
}

/// Opens the mailbox `keys` describes at the ODS.
pub async fn open(
    conn: &Connection,
    keys: &MailboxKeys,
    push_url: Option<&str>,
) -> Result<(), ClientError> {
    let push = push_url.map(|u| keys.seal_push(u)).transpose()?;
    match conn
        .request(Request::Ods(OdsRequest::OpenMailbox {
            mailbox: keys.id,
            auth_key: keys.auth_public(),
            push,
        }))
        .await?
    {
        Response::MailboxOpened => Ok(()),
        other => Err(ClientError::Unexpected(format!("{other:?}"))),
    }
}

/// Envelopes after `after`, at most `limit`.
pub async fn fetch(
    conn: &Connection,
    keys: &MailboxKeys,
    counter: &mut Counter,
    after: u64,
    limit: u32,
) -> Result<Vec<Delivered>, ClientError> {
    // A forwarded fetch may be delivered twice when a node retries it on a
    // fresh connection; the second copy is refused as a replay. Ask again
    // with a new counter: fetching is read-only.
    for _ in 0..3 {
        let auth = keys.auth(LABEL_FETCH, counter.next_value(), &(after, limit));
        match conn.request(Request::Ods(OdsRequest::Fetch { auth, after, limit })).await {
            Ok(Response::Envelopes(e)) => return Ok(e),
            Ok(other) => return Err(ClientError::Unexpected(format!("{other:?}"))),
            Err(ClientError::Server(mlsd_transport::WireError::Auth(AuthError::Replayed))) => {
                continue
            }
            Err(e) => return Err(e),
        }
    }
    Err(ClientError::Server(mlsd_transport::WireError::Auth(AuthError::Replayed)))
}

/// Acknowledges (deletes) envelopes up to `up_to`; returns how many remain.
pub async fn ack(
    conn: &Connection,
    keys: &MailboxKeys,
    counter: &mut Counter,
    up_to: u64,
) -> Result<u32, ClientError> {
    let auth = keys.auth(LABEL_ACK, counter.next_value(), &up_to);
    match conn.request(Request::Ods(OdsRequest::Ack { auth, up_to })).await? {
        Response::Acked { remaining } => Ok(remaining),
        other => Err(ClientError::Unexpected(format!("{other:?}"))),
    }
}

/// A live subscription: envelopes pushed by the ODS as they are stored.
pub struct Subscription {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
}

/// Subscribes to the mailbox from sequence number `after`: returns the
/// subscription and the backlog (at most one fetch page).
pub async fn subscribe(
    conn: &Connection,
    keys: &MailboxKeys,
    counter: &mut Counter,
    after: u64,
) -> Result<(Subscription, Vec<Delivered>), ClientError> {
    use mlsd_transport::protocol::ods::LABEL_SUBSCRIBE;
    use mlsd_transport::protocol::{ClientFrame, ResponseFrame};
    let auth = keys.auth(LABEL_SUBSCRIBE, counter.next_value(), &after);
    let (mut send, mut recv) = conn
        .quic()
        .open_bi()
        .await
        .map_err(|e| ClientError::Connect { server: conn.server(), reason: e.to_string() })?;
    let frame = ClientFrame::new(Request::Ods(OdsRequest::Subscribe { auth, after }));
    let max = mlsd_transport::limits::DEFAULT_MAX_FRAME;
    mlsd_transport::frame::write_message(&mut send, &frame, max)
        .await
        .map_err(mlsd_transport::CallError::from)?;
    let first: ResponseFrame = mlsd_transport::frame::read_message(
        &mut recv,
        max,
        crate::connection::DEFAULT_REQUEST_TIMEOUT,
    )
    .await
    .map_err(mlsd_transport::CallError::from)?;
    match first.response {
        Response::Envelopes(backlog) => Ok((Subscription { send, recv }, backlog)),
        Response::Error(e) => Err(ClientError::Server(e)),
        other => Err(ClientError::Unexpected(format!("{other:?}"))),
    }
}

impl Subscription {
    /// The next envelopes; waits as long as it takes. An error means the
    /// subscription ended: fetch, then subscribe again from the last ack.
    pub async fn next(&mut self) -> Result<Vec<Delivered>, ClientError> {
        use mlsd_transport::protocol::ResponseFrame;
        let f: ResponseFrame = mlsd_transport::frame::read_message(
            &mut self.recv,
            mlsd_transport::limits::DEFAULT_MAX_FRAME,
            std::time::Duration::from_secs(24 * 3600),
        )
        .await
        .map_err(mlsd_transport::CallError::from)?;
        match f.response {
            Response::Envelopes(e) => Ok(e),
            Response::Error(e) => Err(ClientError::Server(e)),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Ends the subscription; the ODS falls back to push notifications.
    pub fn close(mut self) {
        let _ = self.send.finish();
        let _ = self.recv.stop(0u32.into());
    }
}
