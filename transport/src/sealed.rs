//! The one AEAD of mlsd's sealed formats, and both halves of each format
//! that one side seals and the other opens.
//!
//! XChaCha20-Poly1305 with a 24-byte random nonce (chosen by the sealer:
//! random nonces of that size never repeat in practice) and associated data
//! that binds the ciphertext to what it belongs to, so a sealed value moved
//! to another mailbox, group or blob does not open. Formats:
//! - a stored roster ([`SealedRoster`]): sealed by the committing client under
//!   `R(e)`, aad = group id, opened by the IDS during one fan-out;
//! - a push endpoint ([`SealedPush`]): sealed by the client under its push
//!   key, aad = mailbox id, opened by the ODS for one notification;
//! - a blob or attachment: `nonce || ciphertext`, aad = blob id
//!   ([`seal_prefixed`], [`open_prefixed`]), sealed and opened by clients;
//! - envelopes ([`crate::envelope`]) use the same AEAD, sealed in place.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::codec;
use crate::protocol::{RosterEntry, SealedPush, SealedRoster};

/// Nonce length.
pub const NONCE: usize = 24;

/// Why a value could not be sealed or opened. Deliberately without detail:
/// a wrong key, a wrong aad and a tampered ciphertext look alike.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// It does not open with this key and associated data (or is cut short).
    #[error("does not open")]
    NoOpen,
    /// The plaintext is beyond what the AEAD takes, or did not encode.
    #[error("cannot seal")]
    Seal,
    /// It opened, but the plaintext is not of the expected type.
    #[error("opened to malformed content")]
    Malformed,
}

/// `plain` sealed under `key` with `aad`: the ciphertext and tag only.
pub fn seal(
    key: &[u8; 32],
    nonce: &[u8; NONCE],
    aad: &[u8],
    plain: &[u8],
) -> Result<Vec<u8>, SealError> {
    XChaCha20Poly1305::new(key.into())
        .encrypt(XNonce::from_slice(nonce), Payload { msg: plain, aad })
        .map_err(|_| SealError::Seal)
}

/// Opens what [`seal`] made; `nonce` must be [`NONCE`] bytes.
pub fn open(
    key: &[u8; 32],
    nonce: &[u8],
    aad: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    if nonce.len() != NONCE {
        return Err(SealError::NoOpen);
    }
    XChaCha20Poly1305::new(key.into())
        .decrypt(XNonce::from_slice(nonce), Payload { msg: sealed, aad })
        .map(Zeroizing::new)
        .map_err(|_| SealError::NoOpen)
}

/// `nonce || seal(plain)`: a self-contained sealed value (blobs, attachments).
pub fn seal_prefixed(
    key: &[u8; 32],
    nonce: &[u8; NONCE],
    aad: &[u8],
    plain: &[u8],
) -> Result<Vec<u8>, SealError> {
    let mut out = nonce.to_vec();
    out.extend_from_slice(&seal(key, nonce, aad, plain)?);
    Ok(out)
}

/// Opens what [`seal_prefixed`] made.
pub fn open_prefixed(
    key: &[u8; 32],
    aad: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    if sealed.len() < NONCE {
        return Err(SealError::NoOpen);
    }
    let (nonce, ct) = sealed.split_at(NONCE);
    open(key, nonce, aad, ct)
}

/// A stored-mode roster sealed under `R(e)` for group `group`.
pub fn seal_roster(
    key: &[u8; 32],
    nonce: &[u8; NONCE],
    group: &[u8],
    roster: &[RosterEntry],
) -> Result<SealedRoster, SealError> {
    let plain = Zeroizing::new(codec::encode(&roster.to_vec()).map_err(|_| SealError::Seal)?);
    Ok(SealedRoster { nonce: nonce.to_vec(), ciphertext: seal(key, nonce, group, &plain)? })
}

/// Opens a roster [`seal_roster`] made, or one a client of protocol version
/// 1 sealed (members named by mailbox id), whose members then deliver
/// through their mailboxes' legacy capabilities.
pub fn open_roster(
    key: &[u8; 32],
    group: &[u8],
    sealed: &SealedRoster,
) -> Result<Vec<RosterEntry>, SealError> {
    let plain = open(key, &sealed.nonce, group, &sealed.ciphertext)?;
    if let Ok(roster) = codec::decode(&plain) {
        return Ok(roster);
    }
    let legacy: Vec<LegacyRosterEntry> = codec::decode(&plain).map_err(|_| SealError::Malformed)?;
    Ok(legacy
        .iter()
        .map(|e| RosterEntry { cap: crate::protocol::DeliveryCap::legacy(&e.mailbox), key: e.key })
        .collect())
}

/// A roster entry as protocol version 1 sealed it.
#[derive(serde::Deserialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
struct LegacyRosterEntry {
    mailbox: [u8; 32],
    key: [u8; 32],
    #[allow(dead_code)] // read only to decode the entry
    push_key: Option<[u8; 32]>,
}

/// A push endpoint URL sealed under the mailbox's push key.
pub fn seal_push(
    key: &[u8; 32],
    nonce: &[u8; NONCE],
    mailbox: &[u8; 32],
    url: &str,
) -> Result<SealedPush, SealError> {
    Ok(SealedPush { nonce: nonce.to_vec(), ciphertext: seal(key, nonce, mailbox, url.as_bytes())? })
}

/// Opens a push endpoint [`seal_push`] made.
pub fn open_push(
    key: &[u8; 32],
    mailbox: &[u8; 32],
    sealed: &SealedPush,
) -> Result<Zeroizing<String>, SealError> {
    let plain = open(key, &sealed.nonce, mailbox, &sealed.ciphertext)?;
    String::from_utf8(plain.to_vec()).map(Zeroizing::new).map_err(|_| SealError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_format_opens_only_with_its_key_and_binding() {
        let (k, other, n) = ([1u8; 32], [2u8; 32], [3u8; NONCE]);
        let blob = seal_prefixed(&k, &n, b"blob-id", b"data").unwrap();
        assert_eq!(&open_prefixed(&k, b"blob-id", &blob).unwrap()[..], b"data");
        assert_eq!(open_prefixed(&other, b"blob-id", &blob), Err(SealError::NoOpen));
        assert_eq!(open_prefixed(&k, b"other-id", &blob), Err(SealError::NoOpen));
        assert_eq!(open_prefixed(&k, b"blob-id", &blob[..10]), Err(SealError::NoOpen));

        let push = seal_push(&k, &n, &[9; 32], "http://push.example/up").unwrap();
        assert_eq!(&open_push(&k, &[9; 32], &push).unwrap()[..], "http://push.example/up");
        assert_eq!(open_push(&k, &[8; 32], &push), Err(SealError::NoOpen));
        let short = SealedPush { nonce: vec![0; 3], ..push };
        assert_eq!(open_push(&k, &[9; 32], &short), Err(SealError::NoOpen));

        let roster = vec![RosterEntry {
            cap: crate::protocol::DeliveryCap { shard: [5; 2], token: [5; 32] },
            key: [6; 32],
        }];
        let sealed = seal_roster(&k, &n, b"group", &roster).unwrap();
        assert_eq!(open_roster(&k, b"group", &sealed).unwrap(), roster);
        // A roster of protocol version 1 opens with legacy capabilities.
        let old = codec::encode(&vec![([5u8; 32], [6u8; 32], Some([7u8; 32]))]).unwrap();
        let old =
            SealedRoster { nonce: n.to_vec(), ciphertext: seal(&k, &n, b"group", &old).unwrap() };
        let upgraded = open_roster(&k, b"group", &old).unwrap();
        assert_eq!(upgraded[0].cap, crate::protocol::DeliveryCap::legacy(&[5; 32]));
        assert_eq!(upgraded[0].key, [6; 32]);
        assert_eq!(open_roster(&k, b"other", &sealed), Err(SealError::NoOpen));
    }

    #[test]
    fn the_bytes_are_those_of_a_plain_xchacha20_poly1305_seal() {
        // Wire and stored formats stay as they were before this module.
        let (k, n) = ([7u8; 32], [4u8; NONCE]);
        let direct = XChaCha20Poly1305::new((&k).into())
            .encrypt(XNonce::from_slice(&n), Payload { msg: b"url", aad: &[1; 32] })
            .unwrap();
        assert_eq!(seal_push(&k, &n, &[1; 32], "url").unwrap().ciphertext, direct);
    }
}
