//! Every request and response type's decoding, plus the structures nested in
//! requests that are decoded separately (mailbox reference, group settings,
//! sealed roster, roster entries). Whatever decodes must route without
//! panicking and survive an encode/decode round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlsd_transport::codec;
use mlsd_transport::envelope::{GroupSettings, MailboxRef};
use mlsd_transport::protocol::{
    ClientFrame, NodeFrame, NodeRequest, ResponseFrame, RosterEntry, SealedRoster,
};
use serde::{de::DeserializeOwned, Serialize};

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    data: &[u8],
) -> Option<T> {
    let v: T = codec::decode(data).ok()?;
    let again: T =
        codec::decode(&codec::encode(&v).expect("a decoded value encodes")).expect("re-decodes");
    assert_eq!(v, again);
    Some(v)
}

fuzz_target!(|data: &[u8]| {
    if let Some(f) = round_trip::<ClientFrame>(data) {
        let _ = f.request.shard();
    }
    if let Some(f) = round_trip::<NodeFrame>(data) {
        if let NodeRequest::Forward(r) = &f.request {
            let _ = r.shard();
        }
    }
    let _ = round_trip::<ResponseFrame>(data);
    let _ = round_trip::<MailboxRef>(data);
    let _ = round_trip::<GroupSettings>(data);
    let _ = round_trip::<SealedRoster>(data);
    let _ = round_trip::<Vec<RosterEntry>>(data);
});
