//! Step 4 of the brief: authenticating other clients' KeyPackages.
//!
//! A KeyPackage is accepted only if the AS vouches for its key: a binding for
//! the client its credential names, signed by the AS key the client trusts,
//! not revoked, not expired, with the same signature key. These are pure
//! functions so they can be tested against tampered inputs.

use ed25519_dalek::{Signature, VerifyingKey};
use mlsd_transport::protocol::{FetchedKeyPackage, SignedBinding};
use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::{BasicCredential, KeyPackage, KeyPackageIn, ProtocolVersion};
use openmls_rust_crypto::RustCrypto;

use crate::CIPHERSUITE;

/// Why a binding or KeyPackage was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The AS signature does not verify with the trusted AS key.
    #[error("binding of {0} is not signed by the trusted AS key")]
    BadAsSignature(String),
    /// The binding was revoked by its client.
    #[error("binding of {0} is revoked")]
    Revoked(String),
    /// The binding has expired.
    #[error("binding of {0} has expired")]
    Expired(String),
    /// No valid binding exists for the client the KeyPackage names.
    #[error("no valid binding for {0}")]
    NoBinding(String),
    /// The KeyPackage itself is invalid (signature, lifetime, suite, credential).
    #[error("invalid KeyPackage of {client}: {reason}")]
    InvalidKeyPackage {
        /// The client it claims to belong to.
        client: String,
        /// What is wrong.
        reason: String,
    },
    /// The KeyPackage's signature key is not the bound key.
    #[error("KeyPackage of {0} is signed by a key the AS did not bind")]
    KeyMismatch(String),
}

/// Checks one binding against the trusted AS key at time `now` (Unix seconds).
pub fn verify_binding(as_key: &VerifyingKey, b: &SignedBinding, now: u64) -> Result<(), Rejection> {
    let client = b.binding.client.clone();
    let sig = Signature::from_slice(&b.signature)
        .map_err(|_| Rejection::BadAsSignature(client.clone()))?;
    as_key
        .verify_strict(&SignedBinding::tbs(&b.binding, b.revoked_at), &sig)
        .map_err(|_| Rejection::BadAsSignature(client.clone()))?;
    if b.revoked_at.is_some() {
        return Err(Rejection::Revoked(client));
    }
    if b.binding.expires_at <= now {
        return Err(Rejection::Expired(client));
    }
    Ok(())
}

/// Accepts `fetched` only if it is a valid KeyPackage of its client whose key
/// one of `bindings` (each checked here) binds.
pub fn authenticate_key_package(
    as_key: &VerifyingKey,
    bindings: &[SignedBinding],
    fetched: &FetchedKeyPackage,
    now: u64,
) -> Result<KeyPackage, Rejection> {
    let client = fetched.client.clone();
    let invalid = |reason: String| Rejection::InvalidKeyPackage { client: client.clone(), reason };
    let kp_in = KeyPackageIn::tls_deserialize_exact(&fetched.key_package)
        .map_err(|e| invalid(e.to_string()))?;
    let kp = kp_in
        .validate(&RustCrypto::default(), ProtocolVersion::Mls10)
        .map_err(|e| invalid(e.to_string()))?;
    if kp.ciphersuite() != CIPHERSUITE {
        return Err(invalid("unsupported ciphersuite".into()));
    }
    let cred = BasicCredential::try_from(kp.leaf_node().credential().clone())
        .map_err(|_| invalid("not a basic credential".into()))?;
    if cred.identity() != client.as_bytes() {
        return Err(invalid("credential names another client".into()));
    }
    bound(as_key, bindings, &client, kp.leaf_node().signature_key().as_slice(), now)?;
    Ok(kp)
}

/// Whether one of `bindings` (each checked here) is a live, AS-signed binding
/// of `client` to `key`: what a KeyPackage and a group member must both show.
pub fn bound(
    as_key: &VerifyingKey,
    bindings: &[SignedBinding],
    client: &str,
    key: &[u8],
    now: u64,
) -> Result<(), Rejection> {
    let mut last = Rejection::NoBinding(client.to_string());
    for b in bindings.iter().filter(|b| b.binding.client == client) {
        match verify_binding(as_key, b, now) {
            Err(r) => last = r,
            Ok(()) if b.binding.signature_key == key => return Ok(()),
            Ok(()) => last = Rejection::KeyMismatch(client.to_string()),
        }
    }
    Err(last)
}
