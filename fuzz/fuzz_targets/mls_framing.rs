//! The MLS parsing the servers do on client input: the IDS reading a send's
//! framing (epoch, commit or not, group id) and a commit's Welcome, and the
//! CS validating an uploaded KeyPackage.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlsd_actors::cs::CsLogic;
use mlsd_actors::ids::group::{check_welcome, read_framing};
use mlsd_actors::settings::RoleSettings;

fuzz_target!(|data: &[u8]| {
    let _ = read_framing(data, b"group");
    let _ = check_welcome(data);
    let cs = CsLogic::new(RoleSettings::default().cs);
    let _ = cs.validate(data, "alice/phone", &[9; 32]);
});
