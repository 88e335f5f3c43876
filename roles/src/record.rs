//! Stored records: every structured value a role keeps starts with the
//! version of its format, and is read back only through [`decode`].
//!
//! A record that cannot be read (a torn disk, a format this binary does not
//! know, or one the layout migration could not convert) is refused with
//! [`WireError::Cluster(ClusterError::Unreadable)`] for the one request that needs it, and left
//! untouched for the operator; the role keeps serving every other key. It is
//! never taken for absent: an unreadable AS binding must not let a stranger
//! register that client id afresh.
//!
//! Raw values (sealed envelopes, blob chunks, counters, digests) carry no tag
//! of their own: the key layout defines them, and the data dir's layout
//! version (`mlsd_actors::layout`) versions the key layout.

use mlsd_transport::codec;
use mlsd_transport::protocol::ClusterError;
use mlsd_transport::WireError;
use serde::{de::DeserializeOwned, Serialize};

/// First byte of a record the layout migration could not read: the original
/// bytes follow, kept for the operator, and every read refuses it.
pub const QUARANTINED: u8 = 0xff;

/// A structured value a role stores.
pub trait Stored: Serialize + DeserializeOwned {
    /// Names the record in errors and logs (never its key: keys hold client
    /// ids, group ids and mailbox ids).
    const KIND: &'static str;
    /// The format version this binary writes (1 ..= 254).
    const VERSION: u8;
    /// Reads a record written in an older format (`version < VERSION`). No
    /// record type has an older tagged format yet, so the default refuses.
    fn upgrade(version: u8, _body: &[u8]) -> Result<Self, String> {
        Err(format!("no conversion from format {version}"))
    }
}

/// The stored bytes of `value`: its format version, then its encoding.
pub fn encode<T: Stored>(value: &T) -> Result<Vec<u8>, WireError> {
    let body = codec::encode(value)
        .map_err(|e| WireError::Cluster(ClusterError::Internal(e.to_string())))?;
    let mut out = Vec::with_capacity(1 + body.len());
    out.push(T::VERSION);
    out.extend_from_slice(&body);
    Ok(out)
}

/// Reads a record of type `T`, converting an older format; anything else is
/// [`WireError::Cluster(ClusterError::Unreadable)`] (and a warning in the log).
pub fn decode<T: Stored>(bytes: &[u8]) -> Result<T, WireError> {
    let result = match bytes.split_first() {
        None => Err("empty value".to_string()),
        Some((&QUARANTINED, _)) => Err("set aside by the layout migration".to_string()),
        Some((&v, body)) if v == T::VERSION => codec::decode(body).map_err(|e| e.to_string()),
        Some((&v, body)) if v < T::VERSION => T::upgrade(v, body),
        Some((&v, _)) => Err(format!("format {v} is newer than this binary's {}", T::VERSION)),
    };
    result.map_err(|why| {
        tracing::warn!(kind = T::KIND, %why, "stored record unreadable; request refused");
        WireError::Cluster(ClusterError::Unreadable(format!("stored {} record: {why}", T::KIND)))
    })
}

/// Converts a value written before records were tagged (layout 0: the bare
/// encoding) into its tagged form, or `None` if it does not decode as `T`.
pub fn tag_legacy<T: Stored>(bytes: &[u8]) -> Option<Vec<u8>> {
    let value: T = codec::decode(bytes).ok()?;
    encode(&value).ok()
}

/// The bytes that set aside a value the migration could not read.
pub fn quarantine(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + bytes.len());
    out.push(QUARANTINED);
    out.extend_from_slice(bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct V2 {
        a: u64,
        b: String,
    }
    impl Stored for V2 {
        const KIND: &'static str = "test";
        const VERSION: u8 = 2;
        fn upgrade(version: u8, body: &[u8]) -> Result<Self, String> {
            match version {
                1 => Ok(V2 { a: codec::decode(body).map_err(|e| e.to_string())?, b: "new".into() }),
                v => Err(format!("no conversion from format {v}")),
            }
        }
    }

    fn unreadable<T: std::fmt::Debug>(r: Result<T, WireError>) -> String {
        match r {
            Err(WireError::Cluster(ClusterError::Unreadable(why))) => why,
            other => panic!("expected Unreadable, got {other:?}"),
        }
    }

    #[test]
    fn records_round_trip_and_older_formats_are_converted() {
        let v = V2 { a: 7, b: "x".into() };
        assert_eq!(decode::<V2>(&encode(&v).unwrap()).unwrap(), v);
        let mut old = vec![1];
        old.extend(codec::encode(&9u64).unwrap());
        assert_eq!(decode::<V2>(&old).unwrap(), V2 { a: 9, b: "new".into() });
    }

    #[test]
    fn torn_newer_and_set_aside_records_are_refused_by_name() {
        let mut torn = encode(&V2 { a: 7, b: "x".into() }).unwrap();
        torn.truncate(2);
        assert!(unreadable(decode::<V2>(&torn)).starts_with("stored test record"));
        assert!(unreadable(decode::<V2>(&[3, 0])).contains("newer"));
        assert!(unreadable(decode::<V2>(&[])).contains("empty"));
        assert!(unreadable(decode::<V2>(&quarantine(b"junk"))).contains("set aside"));
    }

    #[test]
    fn legacy_values_are_tagged_or_rejected() {
        let bare = codec::encode(&V2 { a: 1, b: "y".into() }).unwrap();
        let tagged = tag_legacy::<V2>(&bare).unwrap();
        assert_eq!(tagged[0], 2);
        assert_eq!(decode::<V2>(&tagged).unwrap(), V2 { a: 1, b: "y".into() });
        assert_eq!(tag_legacy::<V2>(&[0xff; 3]), None);
    }
}
