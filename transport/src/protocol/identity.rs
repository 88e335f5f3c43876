//! What the AS and CS share: client ids and signed client requests.
//!
//! A client signs the [`signing_bytes`] of a request body with its signature
//! key (Ed25519, the key of its MLS credential). Every body carries a
//! timestamp the server checks against a short window, and a label that is
//! part of the signed bytes, so a signature for one request type can never be
//! replayed as another.

use serde::Serialize;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::cs::LABEL_COUNT;
    use crate::protocol::r#as::{RevokeBody, LABEL_REVOKE};

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
