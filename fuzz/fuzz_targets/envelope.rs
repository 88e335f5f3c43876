//! Envelope opening as a recipient does it (trial decryption of anything in
//! its mailbox, then unpadding), and the IDS opening a stored roster. Random
//! bytes must be refused; sealed bytes must come back exactly.
//! The body is `mlsd_fuzz::bodies::envelope` (shared with the corpus replay test).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mlsd_fuzz::bodies::envelope(data));
