//! The client's mailbox at the ODS: where its envelopes wait.
//!
//! A mailbox is not linked to the client's identity: its id is random, and it
//! is authenticated by its own Ed25519 key, not the identity's signature key.
//! Its push endpoint is sealed under a push key the ODS never stores in the
//! clear. Nobody learns its id: others deliver to it through capabilities
//! the client has the ODS issue ([`issue`]), one per KeyPackage and group,
//! and revokes ([`revoke`]) when it leaves a group or a sender abuses one.

use ed25519_dalek::{Signer as _, SigningKey};
use mlsd_transport::protocol::identity::signing_bytes;
use mlsd_transport::protocol::ods::{
    LABEL_ACK, LABEL_FETCH, LABEL_ISSUE, LABEL_REVOKE, MAX_CAPS_PER_REQUEST,
};
use mlsd_transport::protocol::tickets::Ticket;
use mlsd_transport::protocol::{
    shard_of, AuthError, Delivered, DeliveryCap, MailboxAuth, MailboxId, OdsRequest, OdsResponse,
    SealedPush,
};
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
    /// Key sealing the push endpoint; handed to the ODS sealed inside each
    /// capability it issues, so the ODS reads the endpoint only when a copy
    /// arrives.
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

    /// A fresh capability of this mailbox: a random token with the
    /// mailbox's shard hint. It delivers nothing until [`issue`]d.
    pub fn new_cap(&self) -> Result<DeliveryCap, ClientError> {
        Ok(DeliveryCap { shard: shard_of(&self.id), token: *random32()? })
    }

    /// The reference others deliver to through `cap`, as published in a
    /// KeyPackage or leaf.
    pub fn reference(&self, cap: DeliveryCap) -> mlsd_transport::envelope::MailboxRef {
        mlsd_transport::envelope::MailboxRef { cap, hpke_public: self.hpke_public.clone() }
    }

    /// Opens a Welcome envelope sealed to this mailbox's HPKE key.
    pub fn open_welcome(&self, envelope: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        use mlsd_transport::envelope::{open_legacy_welcome, open_welcome};
        open_welcome(&self.hpke_private, envelope)
            .or_else(|_| open_legacy_welcome(&self.hpke_private, &self.id, envelope))
            .ok()
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

/// Opens the mailbox `keys` describes at the ODS, paying with a mailbox
/// ticket.
pub async fn open(
    conn: &Connection,
    keys: &MailboxKeys,
    push_url: Option<&str>,
    ticket: Option<Ticket>,
) -> Result<(), ClientError> {
    if let Some(u) = push_url {
        crate::connection::check_push_url(u)?;
    }
    let push = push_url.map(|u| keys.seal_push(u)).transpose()?;
    let req = Request::Ods(OdsRequest::OpenMailbox {
        mailbox: keys.id,
        auth_key: keys.auth_public(),
        push,
    });
    match conn.request_paid(req, ticket).await? {
        Response::Ods(OdsResponse::MailboxOpened) => Ok(()),
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
            Ok(Response::Ods(OdsResponse::Envelopes(e))) => return Ok(e),
            Ok(other) => return Err(ClientError::Unexpected(format!("{other:?}"))),
            Err(ClientError::Server(mlsd_transport::WireError::Auth(AuthError::Replayed))) => {
                continue
            }
            Err(e) => return Err(e),
        }
    }
    Err(ClientError::Server(mlsd_transport::WireError::Auth(AuthError::Replayed)))
}

/// Sends a signed mailbox request built by `make` from a fresh counter,
/// again with a new counter when a forwarded copy was refused as a replay
/// (the requests sent this way change nothing when repeated).
async fn signed(
    conn: &Connection,
    counter: &mut Counter,
    make: impl Fn(u64) -> OdsRequest,
) -> Result<Response, ClientError> {
    for _ in 0..3 {
        match conn.request(Request::Ods(make(counter.next_value()))).await {
            Err(ClientError::Server(mlsd_transport::WireError::Auth(AuthError::Replayed))) => {
                continue
            }
            other => return other,
        }
    }
    Err(ClientError::Server(mlsd_transport::WireError::Auth(AuthError::Replayed)))
}

/// Has the ODS issue `caps` for this mailbox (in requests of at most
/// [`MAX_CAPS_PER_REQUEST`]); returns each one's serial. Issuing a token
/// twice is harmless: it keeps its serial.
pub async fn issue(
    conn: &Connection,
    keys: &MailboxKeys,
    counter: &mut Counter,
    caps: &[DeliveryCap],
) -> Result<Vec<u64>, ClientError> {
    let push_key = Some(*keys.push_key);
    let mut serials = Vec::with_capacity(caps.len());
    for chunk in caps.chunks(MAX_CAPS_PER_REQUEST) {
        let tokens: Vec<[u8; 32]> = chunk.iter().map(|c| c.token).collect();
        let r = signed(conn, counter, |n| OdsRequest::IssueCapabilities {
            auth: keys.auth(LABEL_ISSUE, n, &(&tokens, &push_key)),
            tokens: tokens.clone(),
            push_key,
        })
        .await?;
        match r {
            Response::Ods(OdsResponse::CapabilitiesIssued { serials: s })
                if s.len() == chunk.len() =>
            {
                serials.extend(s)
            }
            other => return Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }
    Ok(serials)
}

/// Revokes capabilities of this mailbox: copies through them are refused
/// from now on. Returns how many were live.
pub async fn revoke(
    conn: &Connection,
    keys: &MailboxKeys,
    counter: &mut Counter,
    tokens: &[[u8; 32]],
) -> Result<u32, ClientError> {
    let mut revoked = 0;
    for chunk in tokens.chunks(MAX_CAPS_PER_REQUEST) {
        let r = signed(conn, counter, |n| OdsRequest::RevokeCapabilities {
            auth: keys.auth(LABEL_REVOKE, n, &chunk.to_vec()),
            tokens: chunk.to_vec(),
        })
        .await?;
        match r {
            Response::Ods(OdsResponse::CapabilitiesRevoked { revoked: r }) => revoked += r,
            other => return Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }
    Ok(revoked)
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
        Response::Ods(OdsResponse::Acked { remaining }) => Ok(remaining),
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
        Response::Ods(OdsResponse::Envelopes(backlog)) => {
            Ok((Subscription { send, recv }, backlog))
        }
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
            Response::Ods(OdsResponse::Envelopes(e)) => Ok(e),
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
