//! Envelopes: one MLS message sealed for one recipient, padded to a size
//! bucket so its length says little about its content.
//!
//! Symmetric envelopes (application messages and commits) are
//! `nonce(24) || XChaCha20-Poly1305(K(r, e), nonce, aad = ENVELOPE_AAD, plaintext)`
//! with a fresh random nonce per copy, so no two copies of one message share
//! any bytes. `K(r, e)` is already the recipient's own (the exporter is
//! keyed by its capability token), so nothing that names the recipient goes
//! into the aad, and the IDS, which seals, needs no mailbox id. The
//! plaintext is `kind(1) || len(4, BE) || message || zeros`.
//! Welcomes are sealed with HPKE to the recipient's mailbox key using the
//! same plaintext layout ([`seal_welcome`] in the IDS, [`open_welcome`] in
//! the client); both end up exactly one bucket long.

use chacha20poly1305::aead::KeyInit;
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

/// Envelope sizes. Every envelope is exactly one of these long.
pub const BUCKETS: [usize; 8] = [512, 1024, 2048, 4096, 8192, 16384, 65536, 262144];

/// Bytes a symmetric envelope adds around its plaintext: nonce and tag.
pub const SYMMETRIC_OVERHEAD: usize = 24 + 16;

/// Bytes an HPKE (X25519) envelope adds: KEM output and tag.
pub const HPKE_OVERHEAD: usize = 32 + 16;

/// HPKE suite of Welcome envelopes (the KEM of the MLS ciphersuite).
pub const WELCOME_HPKE: openmls_traits::types::HpkeConfig = openmls_traits::types::HpkeConfig(
    openmls_traits::types::HpkeKemType::DhKem25519,
    openmls_traits::types::HpkeKdfType::HkdfSha256,
    openmls_traits::types::HpkeAeadType::AesGcm128,
);

/// HPKE `info` of Welcome envelopes.
pub const WELCOME_INFO: &[u8] = b"mlsd welcome v2";

/// Associated data of symmetric envelopes (and of Welcomes' HPKE).
pub const ENVELOPE_AAD: &[u8] = b"mlsd envelope v2";

/// Private-use MLS extension type of the mailbox reference in a leaf node.
pub const MAILBOX_REF_EXTENSION: u16 = 0xF0A3;

/// Extension type of [`LegacyMailboxRef`], in leaves and KeyPackages made
/// before delivery capabilities (protocol version 1).
pub const LEGACY_MAILBOX_REF_EXTENSION: u16 = 0xF0A1;

/// Private-use MLS group context extension holding [`GroupSettings`].
pub const GROUP_SETTINGS_EXTENSION: u16 = 0xF0A2;

/// Settings every member must know, carried in the group context (so they
/// reach new members in the Welcome and are agreed by all).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroupSettings {
    /// The creator's name for the group.
    pub name: String,
    /// How the IDS learns recipients: true = stored roster, false = client-supplied.
    pub stored_roster: bool,
}

/// Where to deliver to a member, published in its KeyPackage's leaf node
/// (extension [`MAILBOX_REF_EXTENSION`]) and so authenticated by its MLS
/// signature: a delivery capability, never the mailbox id or push key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MailboxRef {
    /// The capability this KeyPackage (and the group membership it makes)
    /// delivers with.
    pub cap: crate::protocol::DeliveryCap,
    /// X25519 public key that Welcomes are sealed to.
    pub hpke_public: Vec<u8>,
}

/// A mailbox reference as protocol version 1 published it: the mailbox id
/// in the clear. Still read, so groups and KeyPackages from before an
/// upgrade keep delivering: the ODS gave every mailbox that existed then a
/// legacy capability whose token is the mailbox id ([`LegacyMailboxRef::upgraded`]),
/// which its owner revokes to close it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LegacyMailboxRef {
    /// The member's mailbox id.
    pub mailbox: [u8; 32],
    /// X25519 public key that Welcomes are sealed to.
    pub hpke_public: Vec<u8>,
    /// Key under which the member's push endpoint is sealed (no longer used).
    pub push_key: Option<[u8; 32]>,
}

impl LegacyMailboxRef {
    /// The reference as delivery now goes: through the legacy capability.
    pub fn upgraded(&self) -> MailboxRef {
        MailboxRef {
            cap: crate::protocol::DeliveryCap::legacy(&self.mailbox),
            hpke_public: self.hpke_public.clone(),
        }
    }
}

/// HPKE `info` of Welcome envelopes of protocol version 1.
pub const LEGACY_WELCOME_INFO: &[u8] = b"mlsd welcome v1";

/// Plaintext header: kind and length.
const HEADER: usize = 5;

/// What an envelope carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An MLS protocol message (application, proposal or commit).
    Message = 0,
    /// An MLS Welcome.
    Welcome = 1,
}

/// Why sealing or opening failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    /// The message does not fit the largest bucket.
    #[error("message too large for an envelope")]
    TooLarge,
    /// Not an envelope for this key, or tampered with.
    #[error("envelope does not open with this key")]
    NoOpen,
    /// The recipient's HPKE public key is not a valid X25519 key.
    #[error("not a valid HPKE public key")]
    BadKey,
}

/// The padded plaintext for `msg` in the smallest bucket that fits it after
/// `overhead` bytes of encryption.
pub fn pad(kind: Kind, msg: &[u8], overhead: usize) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
    padded(&[], kind, msg, overhead).map(Zeroizing::new)
}

/// `prefix` followed by the padded plaintext of `msg` (`kind || len || msg
/// || zeros`), sized so that `overhead` bytes of encryption (the prefix
/// included) make it exactly one bucket; the one place that knows the layout
/// and the buckets. Allocated once with room for the whole bucket, so sealing
/// in place and appending the tag never copies the buffer.
fn padded(
    prefix: &[u8],
    kind: Kind,
    msg: &[u8],
    overhead: usize,
) -> Result<Vec<u8>, EnvelopeError> {
    let need = msg.len() + HEADER + overhead;
    let bucket = *BUCKETS.iter().find(|b| **b >= need).ok_or(EnvelopeError::TooLarge)?;
    let mut out = Vec::with_capacity(prefix.len() + bucket);
    out.extend_from_slice(prefix);
    out.push(kind as u8);
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(msg);
    out.resize(prefix.len() + bucket - overhead, 0);
    Ok(out)
}

/// Splits a padded plaintext into its kind and message.
pub fn unpad(p: &[u8]) -> Result<(Kind, &[u8]), EnvelopeError> {
    let kind = match p.first() {
        Some(0) => Kind::Message,
        Some(1) => Kind::Welcome,
        _ => return Err(EnvelopeError::NoOpen),
    };
    let len = p.get(1..5).ok_or(EnvelopeError::NoOpen)?;
    let len = u32::from_be_bytes(len.try_into().map_err(|_| EnvelopeError::NoOpen)?) as usize;
    let msg = p.get(HEADER..HEADER.saturating_add(len)).ok_or(EnvelopeError::NoOpen)?;
    Ok((kind, msg))
}

/// Seals `msg` for the holder of `key`. Written once into the envelope's own
/// buffer and encrypted in place: no padded plaintext copy is made, so none
/// is left behind to wipe.
pub fn seal(key: &[u8; 32], msg: &[u8], nonce: &[u8; 24]) -> Result<Vec<u8>, EnvelopeError> {
    use chacha20poly1305::aead::AeadInPlace;
    let mut out = padded(nonce, Kind::Message, msg, SYMMETRIC_OVERHEAD)?;
    let tag = XChaCha20Poly1305::new(key.into())
        .encrypt_in_place_detached(XNonce::from_slice(nonce), ENVELOPE_AAD, &mut out[24..])
        .map_err(|_| EnvelopeError::TooLarge)?;
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Seals a Welcome with HPKE to the recipient mailbox's public key
/// `hpke_key`: `kem_output(32) || ciphertext`.
pub fn seal_welcome(hpke_key: &[u8], welcome: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    use openmls_traits::crypto::OpenMlsCrypto;
    let plain = pad(Kind::Welcome, welcome, HPKE_OVERHEAD)?;
    let ct = openmls_rust_crypto::RustCrypto::default()
        .hpke_seal(WELCOME_HPKE, hpke_key, WELCOME_INFO, ENVELOPE_AAD, &plain)
        .map_err(|_| EnvelopeError::BadKey)?;
    let mut out = ct.kem_output.as_slice().to_vec();
    out.extend_from_slice(ct.ciphertext.as_slice());
    Ok(out)
}

/// Opens a Welcome envelope with the mailbox's HPKE private key; returns the
/// padded plaintext.
pub fn open_welcome(
    hpke_private: &[u8],
    envelope: &[u8],
) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
    hpke_open(hpke_private, WELCOME_INFO, ENVELOPE_AAD, envelope)
}

/// Opens a Welcome envelope of protocol version 1 (stored before an
/// upgrade): HPKE info v1, aad = the mailbox id.
pub fn open_legacy_welcome(
    hpke_private: &[u8],
    mailbox: &[u8; 32],
    envelope: &[u8],
) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
    hpke_open(hpke_private, LEGACY_WELCOME_INFO, mailbox, envelope)
}

/// `kem_output(32) || ciphertext` opened with `info` and `aad`.
fn hpke_open(
    hpke_private: &[u8],
    info: &[u8],
    aad: &[u8],
    envelope: &[u8],
) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
    use openmls_traits::crypto::OpenMlsCrypto;
    use openmls_traits::types::HpkeCiphertext;
    if envelope.len() < 32 {
        return Err(EnvelopeError::NoOpen);
    }
    let (kem, ct) = envelope.split_at(32);
    let input = HpkeCiphertext { kem_output: kem.to_vec().into(), ciphertext: ct.to_vec().into() };
    openmls_rust_crypto::RustCrypto::default()
        .hpke_open(WELCOME_HPKE, &input, hpke_private, info, aad)
        .map(Zeroizing::new)
        .map_err(|_| EnvelopeError::NoOpen)
}

/// Opens a symmetric envelope of protocol version 1 (stored before an
/// upgrade): aad = the recipient's mailbox id.
pub fn open_legacy(
    key: &[u8; 32],
    mailbox: &[u8; 32],
    envelope: &[u8],
) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
    open_with(key, mailbox, envelope)
}

/// Opens a symmetric envelope; returns the padded plaintext.
pub fn open(key: &[u8; 32], envelope: &[u8]) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
    open_with(key, ENVELOPE_AAD, envelope)
}

/// `nonce(24) || ciphertext` opened under `key` with `aad`.
fn open_with(
    key: &[u8; 32],
    aad: &[u8],
    envelope: &[u8],
) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
    if envelope.len() < SYMMETRIC_OVERHEAD {
        return Err(EnvelopeError::NoOpen);
    }
    let (nonce, ct) = envelope.split_at(24);
    crate::sealed::open(key, nonce, aad, ct).map_err(|_| EnvelopeError::NoOpen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_welcome_opens_only_with_its_mailbox_key() {
        use openmls_traits::crypto::OpenMlsCrypto;
        let kp = openmls_rust_crypto::RustCrypto::default()
            .derive_hpke_keypair(WELCOME_HPKE, &[7u8; 32])
            .unwrap();
        let other = openmls_rust_crypto::RustCrypto::default()
            .derive_hpke_keypair(WELCOME_HPKE, &[8u8; 32])
            .unwrap();
        let env = seal_welcome(&kp.public, b"a welcome").unwrap();
        assert!(BUCKETS.contains(&env.len()));
        let plain = open_welcome(&kp.private, &env).unwrap();
        assert_eq!(unpad(&plain).unwrap(), (Kind::Welcome, &b"a welcome"[..]));
        assert_eq!(open_welcome(&other.private, &env), Err(EnvelopeError::NoOpen));
        assert_eq!(open_welcome(&kp.private, &env[..20]), Err(EnvelopeError::NoOpen));
        assert_eq!(seal_welcome(b"short", b"x"), Err(EnvelopeError::BadKey));
    }

    #[test]
    fn an_envelope_of_protocol_1_opens_only_as_legacy_with_its_mailbox_id() {
        let (key, mailbox, nonce) = ([7u8; 32], [1u8; 32], [3u8; 24]);
        let plain = pad(Kind::Message, b"old", SYMMETRIC_OVERHEAD).unwrap();
        let mut env = nonce.to_vec();
        env.extend(crate::sealed::seal(&key, &nonce, &mailbox, &plain).unwrap());
        assert_eq!(open(&key, &env), Err(EnvelopeError::NoOpen));
        assert_eq!(open_legacy(&key, &[2; 32], &env), Err(EnvelopeError::NoOpen));
        let opened = open_legacy(&key, &mailbox, &env).unwrap();
        assert_eq!(unpad(&opened).unwrap(), (Kind::Message, &b"old"[..]));
        // And a current one does not open as legacy.
        let current = seal(&key, b"new", &nonce).unwrap();
        assert_eq!(open_legacy(&key, &mailbox, &current), Err(EnvelopeError::NoOpen));
    }

    #[test]
    fn seal_open_round_trip_and_bucket_sizes() {
        let key = [7u8; 32];
        for len in [0usize, 1, 400, 500, 1000, 60_000] {
            let msg = vec![0xab; len];
            let env = seal(&key, &msg, &[3; 24]).unwrap();
            assert!(BUCKETS.contains(&env.len()), "{len} -> {}", env.len());
            let plain = open(&key, &env).unwrap();
            assert_eq!(unpad(&plain).unwrap(), (Kind::Message, &msg[..]));
        }
        let mut env = seal(&key, b"hi", &[3; 24]).unwrap();
        assert_eq!(open(&[8; 32], &env), Err(EnvelopeError::NoOpen));
        env[30] ^= 1;
        assert_eq!(open(&key, &env), Err(EnvelopeError::NoOpen), "tampered");
        assert_eq!(seal(&key, &vec![0; 300_000], &[0; 24]), Err(EnvelopeError::TooLarge));
    }
}
