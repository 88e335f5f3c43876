//! Signature checks shared by the AS and CS: Ed25519 keys of clients.

use ed25519_dalek::{Signature, VerifyingKey};
use mlsd_transport::protocol::identity::TIMESTAMP_WINDOW_SECS;
use mlsd_transport::protocol::AuthError;
use mlsd_transport::WireError;
use std::time::{SystemTime, UNIX_EPOCH};

/// Parses a 32-byte Ed25519 public key.
pub(crate) fn verifying_key(bytes: &[u8]) -> Result<VerifyingKey, WireError> {
    let arr: [u8; 32] = bytes.try_into().map_err(|_| {
        WireError::Auth(AuthError::BadSignature("signature key must be 32 bytes (Ed25519)".into()))
    })?;
    VerifyingKey::from_bytes(&arr)
        .map_err(|_| WireError::Auth(AuthError::BadSignature("invalid Ed25519 public key".into())))
}

/// Verifies `sig` over `msg` with `key` (strict: no malleable signatures).
pub(crate) fn verify(key: &[u8], msg: &[u8], sig: &[u8], what: &str) -> Result<(), WireError> {
    let vk = verifying_key(key)?;
    let sig = Signature::from_slice(sig).map_err(|_| {
        WireError::Auth(AuthError::BadSignature(format!("{what}: malformed signature")))
    })?;
    vk.verify_strict(msg, &sig)
        .map_err(|_| WireError::Auth(AuthError::BadSignature(format!("{what}: does not verify"))))
}

/// Unix seconds of `now`.
pub(crate) fn unix(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Refuses a timestamp outside the window around `now`.
pub(crate) fn fresh(timestamp: u64, now: SystemTime) -> Result<(), WireError> {
    let server_time = unix(now);
    if timestamp.abs_diff(server_time) > TIMESTAMP_WINDOW_SECS {
        return Err(WireError::Auth(AuthError::StaleTimestamp { server_time }));
    }
    Ok(())
}
