//! Envelope opening as a recipient does it (trial decryption of anything in
//! its mailbox, then unpadding), and the IDS opening a stored roster. Random
//! bytes must be refused; sealed bytes must come back exactly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlsd_actors::ids::group::open_roster;
use mlsd_transport::envelope::{open, seal, unpad, Kind};
use mlsd_transport::protocol::SealedRoster;

const KEY: [u8; 32] = [7; 32];
const MAILBOX: [u8; 32] = [1; 32];

fuzz_target!(|data: &[u8]| {
    let _ = open(&KEY, &MAILBOX, data);
    let _ = unpad(data);
    if data.len() >= 24 {
        let sealed = SealedRoster { nonce: data[..24].to_vec(), ciphertext: data[24..].to_vec() };
        let _ = open_roster(&KEY, b"group", &sealed);
    }
    // Whatever fits is sealed, opened and unpadded back to the same bytes.
    if let Ok(env) = seal(&KEY, &MAILBOX, data, &[3; 24]) {
        let plain = open(&KEY, &MAILBOX, &env).expect("own envelope opens");
        assert_eq!(unpad(&plain).expect("own padding"), (Kind::Message, data));
        assert!(open(&[8; 32], &MAILBOX, &env).is_err());
    }
});
