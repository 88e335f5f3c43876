//! The one place that knows the serialization format.
//!
//! bincode 2 (serde mode, variable-length integers). Its maintainers stopped
//! after 2.0, so every encode and decode in mlsd goes through these two
//! functions and a successor (postcard, wincode, …) replaces only this file.

use serde::{de::DeserializeOwned, Serialize};

use crate::limits::ABSOLUTE_MAX_FRAME;

/// Why bytes could not be turned into a value (or back).
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The bytes are not a valid encoding of the expected type: unknown enum
    /// variant, bad length, invalid UTF-8, or an allocation beyond the limit.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The value decoded but bytes were left over, which a well-formed peer
    /// never sends; refusing it keeps one encoding per value.
    #[error("{0} trailing bytes after message")]
    TrailingBytes(usize),
    /// Encoding failed; only possible for types serde cannot express.
    #[error("cannot encode message: {0}")]
    Encode(String),
}

const CONFIG: bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<{ ABSOLUTE_MAX_FRAME as usize }>,
> = bincode::config::standard().with_limit::<{ ABSOLUTE_MAX_FRAME as usize }>();

/// Serializes `value` into a fresh buffer.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, CONFIG).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Deserializes exactly one `T` from `bytes`; never panics on any input.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, CONFIG)
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::TrailingBytes(bytes.len() - used));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Ping, Request, Role};

    #[test]
    fn round_trip() {
        let req = Request::Ping(Ping { role: Role::Ods, key: b"mbx".to_vec() });
        let bytes = encode(&req).unwrap();
        assert_eq!(decode::<Request>(&bytes).unwrap(), req);
    }

    #[test]
    fn garbage_and_trailing_bytes_are_refused() {
        assert!(matches!(decode::<Request>(&[0xff, 0xff, 0xff]), Err(CodecError::Malformed(_))));
        let mut bytes = encode(&Request::Ping(Ping { role: Role::As, key: vec![] })).unwrap();
        bytes.push(0);
        assert!(matches!(decode::<Request>(&bytes), Err(CodecError::TrailingBytes(1))));
    }

    #[test]
    fn byte_fields_encode_as_a_plain_byte_vector_did() {
        // `serde_bytes` fields (envelopes, messages, blobs) keep the wire
        // format of `Vec<u8>`, so protocol version 1 peers still agree.
        #[derive(serde::Serialize)]
        struct Plain {
            a: Vec<u8>,
        }
        #[derive(serde::Serialize)]
        struct Bytes {
            #[serde(with = "serde_bytes")]
            a: Vec<u8>,
        }
        for len in [0usize, 1, 250, 251, 2048, 70_000] {
            let a: Vec<u8> = (0..len).map(|i| i as u8).collect();
            assert_eq!(encode(&Plain { a: a.clone() }).unwrap(), encode(&Bytes { a }).unwrap());
        }
    }

    #[test]
    fn huge_declared_length_does_not_allocate() {
        // variant 0 (Ping), role 0, then a Vec length of u64::MAX.
        let bytes = [0u8, 0, 0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(decode::<Request>(&bytes).is_err());
    }
}
