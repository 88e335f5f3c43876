//! The fuzz seed corpus (fuzz/corpus/<target>/) replayed through the fuzz
//! targets' own bodies (fuzz/src/bodies.rs, included here), so a change
//! that makes a seed panic fails `make test` without cargo-fuzz; and the
//! seeds checked to be frames of the protocol version this code speaks
//! (`make fuzz-seeds` writes them anew from a real run).

#[path = "../fuzz/src/bodies.rs"]
mod bodies;

use std::path::PathBuf;

use mlsd_transport::protocol::ClientFrame;
use mlsd_transport::{codec, PROTOCOL_VERSION};

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            (p.display().to_string(), std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

/// A fuzz target's body.
type Body = fn(&[u8]);

#[test]
fn every_seed_runs_clean_through_its_target() {
    let targets: [(&str, Body); 4] = [
        ("frame", bodies::frame),
        ("requests", bodies::requests),
        ("envelope", bodies::envelope),
        ("mls_framing", bodies::mls_framing),
    ];
    for (target, body) in targets {
        for (name, bytes) in seeds(target) {
            // A panic names the seed.
            eprintln!("{target}: {name}");
            body(&bytes);
        }
    }
}

#[test]
fn the_request_seeds_are_frames_of_this_protocol_version() {
    let mut checked = 0;
    for (name, bytes) in seeds("requests") {
        if let Ok(f) = codec::decode::<ClientFrame>(&bytes) {
            assert_eq!(f.version, PROTOCOL_VERSION, "{name} is for another protocol version");
            checked += 1;
        }
    }
    // `frame` seeds carry the length prefix before the same bytes.
    for (name, bytes) in seeds("frame") {
        let f: ClientFrame = codec::decode(&bytes[4..])
            .unwrap_or_else(|e| panic!("{name} is no client frame of this code: {e}"));
        assert_eq!(f.version, PROTOCOL_VERSION, "{name} is for another protocol version");
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} seeds are client frames");
}
