//! Delivery capabilities at the ODS: issuing, revoking, and checking the one
//! a copy comes with (decision D10).
//!
//! A capability is a random 32-byte token its mailbox's owner chose. The ODS
//! keeps, per token, one record under `c/H_id(token)` holding
//! `{mailbox, serial, push key}` sealed under `H_key(token)` (both BLAKE3
//! key derivations of the token), and per mailbox a count of live ones under
//! `n/MAILBOX`. So:
//! - only someone holding the token reaches the mailbox through it, and a
//!   guessed or revoked token names nothing;
//! - the ODS's disk alone links no capability to a mailbox and holds no push
//!   key: both open only with a token, which comes with each copy and is not
//!   stored;
//! - a check costs one point read and one AEAD open of 88 bytes.
//!
//! Each record key seals exactly one record (tokens are random and never
//! re-sealed), so its nonce is fixed.

use mlsd_transport::protocol::{BadFrame, MailboxId, OdsError, ShardHint};
use mlsd_transport::WireError;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::SPACE;
use crate::contract::{internal, RoleContext};
use crate::record::{self, Stored};
use crate::storage::Batch;

/// Associated data of sealed capability records.
const RECORD_AAD: &[u8] = b"mlsd/ods/cap-record/v1";

/// What a capability names, sealed under its token.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct CapTarget {
    /// The mailbox it delivers to.
    pub mailbox: MailboxId,
    /// Its serial, reported with every copy it delivered.
    pub serial: u64,
    /// The key of the mailbox's sealed push endpoint.
    pub push_key: Option<[u8; 32]>,
}

/// A capability record as stored: [`CapTarget`] sealed under its token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SealedCap {
    /// `XChaCha20-Poly1305(H_key(token), fixed nonce, RECORD_AAD, CapTarget)`.
    pub ciphertext: Vec<u8>,
}

impl Stored for SealedCap {
    const KIND: &'static str = "ODS capability";
    const VERSION: u8 = 1;
}

/// Per mailbox: serials handed out and capabilities live.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CapCount {
    /// The next serial (the first is 1; 0 means "before capabilities").
    pub next_serial: u64,
    /// Capabilities issued and not revoked.
    pub live: u32,
}

impl Stored for CapCount {
    const KIND: &'static str = "ODS capability count";
    const VERSION: u8 = 1;
}

fn record_id(token: &[u8; 32]) -> Vec<u8> {
    let mut k = b"c/".to_vec();
    k.extend_from_slice(&blake3::derive_key("mlsd ods capability id v1", token));
    k
}

fn record_key(token: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    Zeroizing::new(blake3::derive_key("mlsd ods capability key v1", token))
}

fn count_key(m: &MailboxId) -> Vec<u8> {
    let mut k = b"n/".to_vec();
    k.extend_from_slice(m);
    k
}

/// The stored form of `target` under `token`.
fn sealed_record(token: &[u8; 32], target: &CapTarget) -> Result<Vec<u8>, WireError> {
    let plain = Zeroizing::new(mlsd_transport::codec::encode(target).map_err(internal)?);
    let ciphertext = mlsd_transport::sealed::seal(&record_key(token), &[0; 24], RECORD_AAD, &plain)
        .map_err(internal)?;
    record::encode(&SealedCap { ciphertext })
}

/// Adds to `batch` the legacy capability of the mailbox whose record is
/// stored under `mailbox_key` (`m/MAILBOX`), for a data dir from before
/// capabilities: its token is the mailbox id, which protocol version 1
/// published in every KeyPackage and roster, so old groups and KeyPackages
/// keep delivering until the owner revokes it (decision D10). Serial 0, no
/// push key (version 1 never gave the ODS one to keep). False if the key
/// does not name a mailbox.
pub fn grant_legacy(mailbox_key: &[u8], batch: &mut Batch) -> bool {
    let Some(mailbox) = mailbox_key.strip_prefix(b"m/").and_then(|m| <[u8; 32]>::try_from(m).ok())
    else {
        return false;
    };
    let target = CapTarget { mailbox, serial: 0, push_key: None };
    let (Ok(rec), Ok(count)) =
        (sealed_record(&mailbox, &target), record::encode(&CapCount { next_serial: 1, live: 1 }))
    else {
        return false;
    };
    batch.put(SPACE, record_id(&mailbox), rec);
    batch.put(SPACE, count_key(&mailbox), count);
    true
}

/// What `token` names, if it is a live capability (of any mailbox).
pub fn lookup(token: &[u8; 32], ctx: &RoleContext<'_>) -> Result<Option<CapTarget>, WireError> {
    let Some(v) = ctx.store.get(SPACE, &record_id(token)).map_err(internal)? else {
        return Ok(None);
    };
    let sealed: SealedCap = record::decode(&v)?;
    let plain =
        mlsd_transport::sealed::open(&record_key(token), &[0; 24], RECORD_AAD, &sealed.ciphertext)
            .map_err(|_| internal("a capability record does not open with its token"))?;
    mlsd_transport::codec::decode(&plain).map(Some).map_err(internal)
}

/// The live capability behind a copy's `token` for a mailbox of shard
/// `shard`: `None` when it was never issued, was revoked, or names a
/// mailbox of another shard (a forged hint).
pub fn check(
    shard: &ShardHint,
    token: &[u8; 32],
    ctx: &RoleContext<'_>,
) -> Result<Option<CapTarget>, WireError> {
    Ok(lookup(token, ctx)?.filter(|t| &mlsd_transport::protocol::shard_of(&t.mailbox) == shard))
}

/// Mailbox `mailbox`'s capability counters.
pub fn count(mailbox: &MailboxId, ctx: &RoleContext<'_>) -> Result<CapCount, WireError> {
    match ctx.store.get(SPACE, &count_key(mailbox)).map_err(internal)? {
        Some(v) => record::decode(&v),
        None => Ok(CapCount { next_serial: 1, live: 0 }),
    }
}

/// Adds to `batch` the issue of `tokens` for `mailbox` (at most `max` live
/// in all); returns each token's serial. A token this mailbox holds already
/// keeps its serial; another mailbox's is refused.
pub fn issue(
    mailbox: &MailboxId,
    tokens: &[[u8; 32]],
    push_key: Option<[u8; 32]>,
    max: u32,
    batch: &mut Batch,
    ctx: &RoleContext<'_>,
) -> Result<Vec<u64>, WireError> {
    let mut n = count(mailbox, ctx)?;
    let mut serials = Vec::with_capacity(tokens.len());
    for (i, token) in tokens.iter().enumerate() {
        if tokens[..i].contains(token) {
            return Err(WireError::Frame(BadFrame::Malformed("a token listed twice".into())));
        }
        match lookup(token, ctx)? {
            Some(t) if &t.mailbox == mailbox => {
                serials.push(t.serial);
                continue;
            }
            Some(_) => return Err(WireError::Ods(OdsError::TokenTaken)),
            None => {}
        }
        if n.live >= max {
            return Err(WireError::Ods(OdsError::TooManyCapabilities { live: n.live }));
        }
        let target = CapTarget { mailbox: *mailbox, serial: n.next_serial, push_key };
        batch.put(SPACE, record_id(token), sealed_record(token, &target)?);
        serials.push(n.next_serial);
        n.next_serial += 1;
        n.live += 1;
    }
    batch.put(SPACE, count_key(mailbox), record::encode(&n)?);
    Ok(serials)
}

/// Adds to `batch` the revocation of those of `tokens` that are live
/// capabilities of `mailbox`; returns how many were.
pub fn revoke(
    mailbox: &MailboxId,
    tokens: &[[u8; 32]],
    batch: &mut Batch,
    ctx: &RoleContext<'_>,
) -> Result<u32, WireError> {
    let mut n = count(mailbox, ctx)?;
    let mut revoked = 0;
    for (i, token) in tokens.iter().enumerate() {
        if tokens[..i].contains(token) {
            continue;
        }
        if lookup(token, ctx)?.is_some_and(|t| &t.mailbox == mailbox) {
            batch.delete(SPACE, record_id(token));
            revoked += 1;
        }
    }
    n.live = n.live.saturating_sub(revoked);
    batch.put(SPACE, count_key(mailbox), record::encode(&n)?);
    Ok(revoked)
}
