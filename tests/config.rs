//! `mlsd run` refuses every invalid config with an error naming the problem,
//! and exits non-zero without starting anything.

mod common;

use std::process::Command;

const HEAD: &str = "[cluster]\nname = \"t\"\ncerts_dir = \"certs\"\n";

fn node(name: &str, port: u16, roles: &str) -> String {
    format!("[[node]]\nname = \"{name}\"\nlisten = \"127.0.0.1:{port}\"\nroles = [{roles}]\ndata_dir = \"d/{name}\"\n")
}

fn refused(text: &str, expect: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.toml");
    std::fs::write(&path, text).unwrap();
    let out =
        Command::new(common::bin("mlsd")).args(["run", "--config"]).arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted: {text}");
    assert!(err.contains(expect), "expected {expect:?} in {err:?}");
    assert!(!dir.path().join("certs").exists(), "nothing is created for a refused config");
}

const ALL: &str = "\"as\", \"cs\", \"ids\", \"ods\", \"sds\"";

#[test]
fn unknown_role() {
    refused(
        &format!("{HEAD}{}", node("n1", 1, "\"as\", \"cs\", \"ids\", \"ods\", \"sds\", \"xds\"")),
        "unknown role \"xds\"",
    );
}

#[test]
fn duplicate_node_name() {
    refused(
        &format!("{HEAD}{}{}", node("n1", 1, ALL), node("n1", 2, ALL)),
        "duplicate node name \"n1\"",
    );
}

#[test]
fn duplicate_address() {
    refused(
        &format!("{HEAD}{}{}", node("n1", 1, ALL), node("n2", 1, ALL)),
        "duplicate node address 127.0.0.1:1",
    );
}

#[test]
fn role_no_node_hosts() {
    refused(
        &format!("{HEAD}{}", node("n1", 1, "\"as\", \"cs\", \"ids\", \"ods\"")),
        "no node hosts role sds",
    );
}

#[test]
fn unreadable_file() {
    let out = Command::new(common::bin("mlsd"))
        .args(["run", "--config", "/nonexistent/cluster.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("cannot read config /nonexistent/cluster.toml"));
}

#[test]
fn unknown_node_and_bad_syntax_and_no_nodes() {
    refused(&format!("{HEAD}{}", node("n1", 1, ALL)).replace("listen", "lisen"), "invalid config");
    refused(HEAD, "the config lists no node");
    refused(&format!("{HEAD}{}", node("n_1", 1, ALL)), "invalid node name \"n_1\"");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, format!("{HEAD}{}", node("n1", 1, ALL))).unwrap();
    let out = Command::new(common::bin("mlsd"))
        .args(["run", "--node", "n7", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no node named \"n7\""));
}

/// Every duration has an upper bound, and a value past it is refused with
/// its key and bound (abuse round two, item 5: `binding_lifetime_days =
/// 2^64-1` made bindings never expire, `mixing_window_ms = u64::MAX` was
/// accepted).
#[test]
fn durations_past_their_bound() {
    let n1 = node("n1", 4433, ALL);
    let max = u64::MAX;
    for (table, line, expect) in [
        (
            "[as]",
            format!("binding_lifetime_days = {max}"),
            "as.binding_lifetime_days: must be at most 3650",
        ),
        (
            "[cs]",
            "max_key_package_lifetime_days = 3651".into(),
            "cs.max_key_package_lifetime_days: must be at most 3650",
        ),
        (
            "[ids]",
            format!("mixing_window_ms = {max}"),
            "ids.mixing_window_ms: must be at most 10000",
        ),
        ("[ids]", "group_idle_secs = 86401".into(), "ids.group_idle_secs: must be at most 86400"),
        ("[ids]", "idle_group_days = 36501".into(), "ids.idle_group_days: must be at most 36500"),
        (
            "[sds]",
            "abandoned_upload_days = 3651".into(),
            "sds.abandoned_upload_days: must be at most 3650",
        ),
        (
            "[limits]",
            "call_timeout_ms = 600001".into(),
            "limits.call_timeout_ms: must be at most 600000",
        ),
        (
            "[limits]",
            format!("read_timeout_ms = {max}"),
            "limits.read_timeout_ms: must be at most 600000",
        ),
    ] {
        refused(&format!("{HEAD}{n1}{table}\n{line}\n"), expect);
    }
    let long = format!("{HEAD}election_timeout_ms = 60001\nheartbeat_ms = 1000\n{n1}");
    refused(&long, "cluster.election_timeout_ms: must be at most 60000");
}
