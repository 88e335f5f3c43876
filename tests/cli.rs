//! The contract users and scripts rely on: `mlsd` and `mlsc` as processes.
//! Three homes run register, group create, add, send, recv and send-file
//! against a one-node cluster of the default shape; outputs are checked line
//! by line; the node is restarted and a further message still arrives.
//! Also: `mlsd demo` runs the eight steps.

mod common;

use std::process::Command;

use common::{Cluster, Homes};
use mlsd_transport::Role;

#[tokio::test(flavor = "multi_thread")]
async fn three_homes_talk_through_mlsc_and_survive_a_restart() {
    let _watchdog = common::init();
    let mut c = Cluster::new(&[("n1", &Role::ALL)]);
    c.start_all().await;
    let h = Homes { c: &c };
    for who in ["alice", "bob", "charlie"] {
        let out = h.ok(who, &["register", who, "--count", "3"]);
        assert_eq!(out.len(), 1);
        assert!(out[0].starts_with(&format!("registered {who}/default (serial ")), "{out:?}");
        assert!(out[0].ends_with(", 3 KeyPackages published"), "{out:?}");
    }
    assert_eq!(h.ok("alice", &["group", "create", "ABC"]), ["created ABC"]);
    assert_eq!(
        h.ok("alice", &["group", "add", "ABC", "bob", "charlie"]),
        ["added bob, charlie to ABC (epoch 1)"]
    );
    // Joining prints nothing on stdout (only messages go there).
    assert!(h.ok("bob", &["recv"]).is_empty());
    assert!(h.ok("charlie", &["recv"]).is_empty());
    assert_eq!(h.ok("bob", &["group", "list"]), ["ABC"]);
    assert_eq!(
        h.ok("charlie", &["group", "members", "ABC"]),
        ["alice/default", "bob/default", "charlie/default"]
    );

    assert!(h.ok("alice", &["send", "ABC", "hello from alice"]).is_empty());
    assert!(h.ok("bob", &["send", "ABC", "hi, bob here"]).is_empty());
    let file = c.dir.path().join("notes.txt");
    std::fs::write(&file, "the plan\n").unwrap();
    assert!(h.ok("charlie", &["send-file", "ABC", file.to_str().unwrap()]).is_empty());

    let alice_home = c.dir.path().join("homes/alice");
    assert_eq!(
        h.ok("alice", &["recv"]),
        [
            "ABC bob/default: hi, bob here".to_string(),
            format!(
                "ABC charlie/default: file saved to {}",
                alice_home.join("files/notes.txt").display()
            ),
        ]
    );
    assert_eq!(std::fs::read_to_string(alice_home.join("files/notes.txt")).unwrap(), "the plan\n");
    let bob = h.ok("bob", &["recv"]);
    assert_eq!(bob[0], "ABC alice/default: hello from alice");
    assert!(bob[1].starts_with("ABC charlie/default: file saved to "), "{bob:?}");
    assert_eq!(
        h.ok("charlie", &["recv"]),
        ["ABC alice/default: hello from alice", "ABC bob/default: hi, bob here"]
    );
    assert!(h.ok("charlie", &["recv"]).is_empty(), "nothing twice");

    // Restart the node: state, mailboxes and groups persist.
    c.kill("n1");
    c.start("n1").await;
    let h = Homes { c: &c };
    assert!(h.ok("bob", &["send", "ABC", "still here after the restart"]).is_empty());
    assert_eq!(
        h.ok("alice", &["recv", "--wait", "5"]),
        ["ABC bob/default: still here after the restart"]
    );

    // Alice's delivery capabilities: one per KeyPackage (3 and a last
    // resort) and one for the group she created; bob's KeyPackage that
    // alice took is now his capability in ABC. One revoked by serial is gone.
    let caps = h.ok("alice", &["mailbox", "caps"]);
    assert_eq!(caps.len(), 5, "{caps:?}");
    assert_eq!(caps.iter().filter(|l| l.ends_with(" group ABC")).count(), 1, "{caps:?}");
    let bob_caps = h.ok("bob", &["mailbox", "caps"]);
    assert_eq!(bob_caps.iter().filter(|l| l.ends_with(" group ABC")).count(), 1, "{bob_caps:?}");
    let unused = caps.iter().find(|l| l.contains("unused")).unwrap();
    let serial = unused.split(' ').next().unwrap();
    assert_eq!(h.ok("alice", &["mailbox", "revoke", serial]), ["revoked 1"]);
    assert_eq!(h.ok("alice", &["mailbox", "caps"]).len(), 4);
    let out = h.run("alice", &["mailbox", "revoke", "999999"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no capability with serial 999999"));

    // Errors are one line on stderr with a non-zero exit.
    let out = h.run("alice", &["send", "NOPE", "x"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no group named \"NOPE\""), "{err}");
}

/// A member cannot forge a line that seems to come from another member,
/// nor drive the recipient's terminal, nor name a file with what a
/// terminal acts on: what it sends prints as one escaped line, and its
/// file is saved under a clean name (abuse issue, item 3).
#[tokio::test(flavor = "multi_thread")]
async fn what_a_member_sends_prints_as_one_escaped_line_and_saves_under_a_clean_name() {
    let _watchdog = common::init();
    let mut c = Cluster::new(&[("n1", &Role::ALL)]);
    c.start_all().await;
    let h = Homes { c: &c };
    for who in ["mallory", "bob"] {
        h.ok(who, &["register", who, "--count", "2"]);
    }
    h.ok("mallory", &["group", "create", "G"]);
    h.ok("mallory", &["group", "add", "G", "bob"]);
    assert!(h.ok("bob", &["recv"]).is_empty());
    let forged = "hi\nG carol/default: FORGED line from carol\u{1b}[2K";
    assert!(h.ok("mallory", &["send", "G", forged]).is_empty());
    let file = c.dir.path().join("red\u{1b}[31m\nname.txt");
    std::fs::write(&file, "payload").unwrap();
    assert!(h.ok("mallory", &["send-file", "G", file.to_str().unwrap()]).is_empty());

    let out = h.run("bob", &["recv"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!out.stdout.contains(&0x1b), "a terminal escape reached bob's terminal");
    let saved = c.dir.path().join("homes/bob/files/red_[31m_name.txt");
    let lines: Vec<String> =
        String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect();
    assert_eq!(
        lines,
        [
            "G mallory/default: hi\\nG carol/default: FORGED line from carol\\u{1b}[2K".to_string(),
            format!("G mallory/default: file saved to {}", saved.display()),
        ]
    );
    assert_eq!(std::fs::read_to_string(&saved).unwrap(), "payload");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_send_waits_in_the_outbox_while_the_node_is_down() {
    let _watchdog = common::init();
    // The mixing window holds the send at the IDS for 2 s, so the node is
    // killed while the send is surely under way.
    let mut c = Cluster::with_extra(&[("n1", &Role::ALL)], "[ids]\nmixing_window_ms = 2000\n");
    c.start_all().await;
    let h = Homes { c: &c };
    for who in ["alice", "bob"] {
        h.ok(who, &["register", who, "--count", "2"]);
    }
    h.ok("alice", &["group", "create", "AB"]);
    h.ok("alice", &["group", "add", "AB", "bob"]);
    h.ok("bob", &["recv"]);
    // Prepared while the node runs, then the node goes away mid-way.
    let home = c.dir.path().join("homes/alice");
    let as_key = c.dir.path().join("certs/as.pub");
    let outbox = || std::fs::read(home.join("outbox.v3.bin")).ok();
    let before = outbox();
    let mut child = Command::new(common::bin("mlsc"))
        .args(["--server", &c.addr("n1").to_string(), "--ca"])
        .arg(c.ca())
        .args(["--home", home.to_str().unwrap(), "--as-key", as_key.to_str().unwrap()])
        .args(["send", "AB", "sent across an outage", "--timeout", "30"])
        .spawn()
        .unwrap();
    // Killed once mlsc has connected and put the send in its outbox (not
    // after a guessed delay: killed before it connected, it would fail to
    // start instead).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while outbox() == before {
        assert!(std::time::Instant::now() < deadline, "mlsc never queued the send");
        assert!(child.try_wait().unwrap().is_none(), "mlsc ended before queuing the send");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    c.kill("n1");
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    c.start("n1").await;
    let h = Homes { c: &c };
    let status = child.wait().unwrap();
    assert!(status.success(), "the send completed after the node came back");
    assert_eq!(h.ok("bob", &["recv", "--wait", "5"]), ["AB alice/default: sent across an outage"]);
}

#[test]
fn mlsd_demo_runs_the_eight_steps() {
    let out =
        Command::new(common::bin("mlsd")).arg("demo").env("RUST_LOG", "warn").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for step in ["Step 1.", "Step 2.", "Steps 3 and 4.", "Step 5.", "Step 6.", "Step 7.", "Step 8."]
    {
        assert!(stdout.contains(step), "missing {step} in\n{stdout}");
    }
    assert!(
        stdout.contains("charlie reads in ABC: bob/laptop: Hello Alice and Charlie!"),
        "{stdout}"
    );
    assert!(stdout.contains("it says: Meeting at noon."), "{stdout}");
}

#[test]
fn mlsd_sim_runs_seeds_and_replays_one_with_its_events() {
    let run = |args: &[&str]| {
        let out =
            Command::new(common::bin("mlsd")).args(args).env("RUST_LOG", "error").output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        stdout
    };
    let many = run(&["sim", "--seeds", "3", "--from", "500"]);
    assert!(many.contains("3 seeds held every invariant"), "{many}");
    let one = run(&["sim", "--seed", "501", "--trace"]);
    assert!(one.contains("1 seeds held every invariant"), "{one}");
    assert!(one.contains("healed") && one.contains("converged at"), "{one}");
    let events =
        |s: &str| s.lines().filter(|l| !l.contains("seeds held")).collect::<Vec<_>>().join("\n");
    let again = run(&["sim", "--seed", "501", "--trace"]);
    assert_eq!(events(&one), events(&again), "a replay prints the same events");
}

/// An operator certificate from another CA is refused at once, on both
/// sides, with a certificate error (abuse round two, item 5: `mlsd admin
/// enroll` waited 50 s, retrying, and failed with `connection lost`, and
/// the node logged nothing).
#[tokio::test(flavor = "multi_thread")]
async fn an_operator_certificate_from_another_ca_is_refused_at_once() {
    let _watchdog = common::init();
    let mut c = Cluster::new(&[("n1", &Role::ALL)]);
    c.start_all().await;
    // Another cluster's CA and operator certificate, beside this one's CA
    // (so this side trusts the node, and only the node can refuse).
    let other = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(&c.config).unwrap();
    std::fs::write(other.path().join("cluster.toml"), text).unwrap();
    let out = Command::new(common::bin("mlsd"))
        .args(["certs", "--config"])
        .arg(other.path().join("cluster.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mixed = other.path().join("mixed");
    std::fs::create_dir(&mixed).unwrap();
    std::fs::copy(c.ca(), mixed.join("ca.pem")).unwrap();
    // The test clusters' files say `certs_dir = "certs"`.
    let their_certs = other.path().join("certs");
    for f in ["operator.pem", "operator.key"] {
        std::fs::copy(their_certs.join(f), mixed.join(f)).unwrap();
    }

    let started = std::time::Instant::now();
    let out = Command::new(common::bin("mlsd"))
        .args(["admin", "enroll", "alice", "--config"])
        .arg(&c.config)
        .arg("--certs")
        .arg(&mixed)
        .output()
        .unwrap();
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(err.contains("refused this connection's certificate"), "{err}");
    assert!(took < std::time::Duration::from_secs(10), "took {took:?}: {err}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !c.log("n1").contains("refused a connection's certificate") {
        assert!(std::time::Instant::now() < deadline, "the node said nothing:\n{}", c.log("n1"));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
