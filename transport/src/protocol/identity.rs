//! AS and CS message bodies: identity bindings, signed client requests and
//! KeyPackage transfer.
//!
//! A client signs the [`signing_bytes`] of a request body with its signature
//! key (Ed25519, the key of its MLS credential). Every body carries a
//! timestamp the server checks against a short window, and a label that is
//! part of the signed bytes, so a signature for one request type can never be
//! replayed as another.

use serde::{Deserialize, Serialize};

use crate::codec;

/// Longest identity or device name, bytes.
pub const MAX_NAME_LEN: usize = 64;

/// How far a signed request's timestamp may be from the server's clock.
pub const TIMESTAMP_WINDOW_SECS: u64 = 300;

/// Splits a client id `identity/device` into its parts, or `None` when it is
/// not of that form (each part 1–64 of `a-z 0-9 . _ -`, starting with a letter
/// or digit). Identities are lowercase so `Alice` and `alice` cannot coexist.
pub fn split_client_id(client: &str) -> Option<(&str, &str)> {
    let (identity, device) = client.split_once('/')?;
    (valid_name(identity) && valid_name(device)).then_some((identity, device))
}

/// Whether `name` is a valid identity or device name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_' || b == b'-'
        })
}

/// The bytes a signature covers: a request-type label and the body, encoded.
pub fn signing_bytes<T: Serialize>(label: &str, body: &T) -> Vec<u8> {
    // Encoding a plain struct of strings, bytes and integers cannot fail.
    codec::encode(&(label, body)).unwrap_or_default()
}

/// Label of [`RegisterBody`] signatures (proof of possession and rotation).
pub const LABEL_REGISTER: &str = "mlsd/as/register/v1";
/// Label of [`RevokeBody`] signatures.
pub const LABEL_REVOKE: &str = "mlsd/as/revoke/v1";
/// Label of the AS's signature over a [`Binding`] and its status.
pub const LABEL_BINDING: &str = "mlsd/as/binding/v1";
/// Label of [`PublishBody`] signatures.
pub const LABEL_PUBLISH: &str = "mlsd/cs/publish/v1";
/// Label of [`CountBody`] signatures.
pub const LABEL_COUNT: &str = "mlsd/cs/count/v1";

/// What the AS vouches for: client `client` signs with `signature_key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// Client id, `identity/device`.
    pub client: String,
    /// Ed25519 public key (32 bytes), the key in the client's MLS credential.
    pub signature_key: Vec<u8>,
    /// Unix seconds.
    pub issued_at: u64,
    /// Unix seconds; the binding is void after this.
    pub expires_at: u64,
    /// Increases with every binding this AS shard issues, so a client can
    /// tell a newer binding of a device from an older one.
    pub serial: u64,
}

/// A binding, its status and the AS signature over both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedBinding {
    /// The binding.
    pub binding: Binding,
    /// When the client revoked it (Unix seconds), if it did.
    pub revoked_at: Option<u64>,
    /// Ed25519 signature by the AS key over
    /// `signing_bytes(LABEL_BINDING, &(binding, revoked_at))`.
    pub signature: Vec<u8>,
}

impl SignedBinding {
    /// The bytes the AS signs.
    pub fn tbs(binding: &Binding, revoked_at: Option<u64>) -> Vec<u8> {
        signing_bytes(LABEL_BINDING, &(binding, revoked_at))
    }
}

/// Body of a registration; see [`crate::Request::Register`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterBody {
    /// Client id to bind.
    pub client: String,
    /// Its Ed25519 public key.
    pub signature_key: Vec<u8>,
    /// Unix seconds, within [`TIMESTAMP_WINDOW_SECS`] of the AS clock.
    pub timestamp: u64,
    /// Enrollment token, required when the AS runs in token mode.
    pub token: Option<String>,
}

/// Body of a revocation, signed by the bound key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeBody {
    /// Client id whose binding ends.
    pub client: String,
    /// Unix seconds.
    pub timestamp: u64,
}

/// Body of a KeyPackage upload, signed by the bound key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishBody {
    /// The uploading client.
    pub client: String,
    /// TLS-serialized MLS KeyPackages, each handed out once.
    pub key_packages: Vec<Vec<u8>>,
    /// A TLS-serialized last-resort KeyPackage, handed out when no other is
    /// left and kept; replaces the previous one.
    pub last_resort: Option<Vec<u8>>,
    /// Unix seconds.
    pub timestamp: u64,
}

/// Body of a KeyPackage count request, signed by the bound key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountBody {
    /// The asking client.
    pub client: String,
    /// Unix seconds.
    pub timestamp: u64,
}

/// One KeyPackage handed out by the CS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchedKeyPackage {
    /// The client it belongs to.
    pub client: String,
    /// TLS-serialized MLS KeyPackage.
    #[serde(with = "serde_bytes")]
    pub key_package: Vec<u8>,
    /// Whether this is the client's last-resort KeyPackage (kept, may be reused).
    pub last_resort: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids() {
        assert_eq!(split_client_id("alice/phone"), Some(("alice", "phone")));
        for bad in ["alice", "/phone", "alice/", "Alice/phone", "a/b/c", "al ice/x", "-a/b"] {
            assert_eq!(split_client_id(bad), None, "{bad}");
        }
        assert!(split_client_id(&format!("{}/x", "a".repeat(65))).is_none());
    }

    #[test]
    fn labels_separate_request_types() {
        let body = RevokeBody { client: "a/b".into(), timestamp: 1 };
        assert_ne!(signing_bytes(LABEL_REVOKE, &body), signing_bytes(LABEL_COUNT, &body));
    }
}
