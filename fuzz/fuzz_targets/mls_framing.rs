//! The MLS parsing the servers do on client input: the IDS reading a send's
//! framing (epoch, commit or not, group id) and a commit's Welcome, and the
//! CS validating an uploaded KeyPackage.
//! The body is `mlsd_fuzz::bodies::mls_framing` (shared with the corpus replay test).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mlsd_fuzz::bodies::mls_framing(data));
