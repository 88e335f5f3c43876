//! The frame reader as a node runs it on every stream: length prefix checked
//! against the limit before any allocation, then the body decoded as a client
//! frame, a node frame or a response frame.
//! The body is `mlsd_fuzz::bodies::frame` (shared with the corpus replay test).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mlsd_fuzz::bodies::frame(data));
