//! Every request and response type's decoding, plus the structures nested in
//! requests that are decoded separately (mailbox reference, group settings,
//! sealed roster, roster entries). Whatever decodes must route without
//! panicking and survive an encode/decode round trip unchanged.
//! The body is `mlsd_fuzz::bodies::requests` (shared with the corpus replay test).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mlsd_fuzz::bodies::requests(data));
