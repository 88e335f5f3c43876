//! The fuzz targets' bodies, one function per target: the fuzz binaries
//! (`fuzz_targets/`) call them on libFuzzer's inputs, and the main
//! workspace's `tests/fuzz_corpus.rs` includes this file and replays the
//! seed corpus through them, so a seed that panics fails `make test` without
//! cargo-fuzz or a nightly toolchain.

use std::sync::OnceLock;
use std::time::Duration;

use mlsd_roles::cs::CsLogic;
use mlsd_roles::ids::group::{check_welcome, open_roster, read_framing};
use mlsd_roles::settings::RoleSettings;
use mlsd_transport::codec;
use mlsd_transport::envelope::{open, seal, unpad, GroupSettings, Kind, MailboxRef};
use mlsd_transport::frame::{read_frame, read_message, FrameError};
use mlsd_transport::protocol::{
    ClientFrame, NodeFrame, NodeRequest, ResponseFrame, RosterEntry, SealedRoster,
};
use serde::{de::DeserializeOwned, Serialize};

/// A small frame limit, so oversized prefixes are exercised too.
const MAX: u32 = 1 << 16;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a runtime")
    })
}

/// `frame`: the frame reader as a node runs it on every stream (length
/// prefix checked against the limit before any allocation), then the body
/// decoded as a client frame, a node frame or a response frame.
pub fn frame(data: &[u8]) {
    runtime().block_on(async {
        let t = Duration::from_secs(5);
        let raw = read_frame(&mut &data[..], MAX, t).await;
        if let Ok(body) = &raw {
            // The reader returns exactly the announced bytes.
            let announced = u32::from_be_bytes(data[..4].try_into().expect("a prefix was read"));
            assert_eq!(body.len() as u64, announced as u64);
        }
        if let Err(FrameError::TooLarge { len, max }) = raw {
            assert!(len > max);
        }
        let _ = read_message::<ClientFrame, _>(&mut &data[..], MAX, t).await;
        let _ = read_message::<NodeFrame, _>(&mut &data[..], MAX, t).await;
        let _ = read_message::<ResponseFrame, _>(&mut &data[..], MAX, t).await;
    });
}

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    data: &[u8],
) -> Option<T> {
    let v: T = codec::decode(data).ok()?;
    let again: T =
        codec::decode(&codec::encode(&v).expect("a decoded value encodes")).expect("re-decodes");
    assert_eq!(v, again);
    Some(v)
}

/// `requests`: every request and response type's decoding, plus the
/// structures nested in requests that are decoded separately. Whatever
/// decodes must route without panicking and survive a round trip unchanged.
pub fn requests(data: &[u8]) {
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
}

const KEY: [u8; 32] = [7; 32];

/// `envelope`: envelope opening as a recipient does it (trial decryption of
/// anything in its mailbox, then unpadding), and the IDS opening a stored
/// roster. Random bytes must be refused; sealed bytes must come back exactly.
pub fn envelope(data: &[u8]) {
    let _ = open(&KEY, data);
    let _ = unpad(data);
    if data.len() >= 24 {
        let sealed = SealedRoster { nonce: data[..24].to_vec(), ciphertext: data[24..].to_vec() };
        let _ = open_roster(&KEY, b"group", &sealed);
    }
    // Whatever fits is sealed, opened and unpadded back to the same bytes.
    if let Ok(env) = seal(&KEY, data, &[3; 24]) {
        let plain = open(&KEY, &env).expect("own envelope opens");
        assert_eq!(unpad(&plain).expect("own padding"), (Kind::Message, data));
        assert!(open(&[8; 32], &env).is_err());
    }
}

/// `mls_framing`: the MLS parsing the servers do on client input: the IDS
/// reading a send's framing and a commit's Welcome, and the CS validating
/// an uploaded KeyPackage.
pub fn mls_framing(data: &[u8]) {
    let _ = read_framing(data, b"group");
    let _ = check_welcome(data);
    let cs = CsLogic::new(RoleSettings::default().cs);
    let _ = cs.validate(data, "alice/phone", &[9; 32]);
}
