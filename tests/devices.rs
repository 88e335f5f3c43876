//! A new device of an identity joins only with the consent of a live device
//! of that identity, through `mlsc` as a person would use it:
//! - a stranger's `mlsc register alice/evil` waits for approval that never
//!   comes: lookups do not list it and `group add ... alice` does not add it
//!   (the reproduction of the abuse-resistance issue, which used to bind it);
//! - alice's laptop registers, her phone lists and approves it (pinning the
//!   key fingerprint the laptop printed), and the laptop's next command
//!   completes its registration;
//! - the laptop revokes the lost phone, and nobody can claim the revoked
//!   device id afresh;
//! - strangers' pending requests are bounded per address, and a live
//!   device's approval code admits a new device past them (and in token
//!   mode, which keeps no pending request at all).

mod common;

use common::{Cluster, Homes};
use mlsd_transport::Role;

/// The fingerprint in an "awaits approval" line.
fn fingerprint_in(line: &str) -> String {
    let (_, rest) = line.split_once("key fingerprint ").unwrap_or_else(|| panic!("{line}"));
    rest.trim_end_matches(')').to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_device_needs_a_live_devices_approval() {
    let _watchdog = common::init();
    let mut c = Cluster::new(&[("n1", &Role::ALL)]);
    c.start_all().await;
    let h = Homes { c: &c };
    h.ok("phone", &["register", "alice/phone", "--count", "2"]);
    h.ok("bob", &["register", "bob/phone", "--count", "2"]);

    // A stranger asks for a device of alice: exit 0, nothing bound.
    let evil = h.ok("evil", &["register", "alice/evil"]);
    assert_eq!(evil.len(), 1, "{evil:?}");
    assert!(evil[0].starts_with("alice/evil awaits approval"), "{evil:?}");
    let lookup = h.ok("bob", &["lookup", "alice"]);
    assert_eq!(lookup.len(), 1, "{lookup:?}");
    assert!(lookup[0].starts_with("alice/phone ") && lookup[0].ends_with(" verified"));
    h.ok("bob", &["group", "create", "g"]);
    h.ok("bob", &["group", "add", "g", "alice"]);
    assert_eq!(h.ok("bob", &["group", "members", "g"]), ["bob/phone", "alice/phone"]);
    // The stranger's home cannot act as alice's device either.
    let out = h.run("evil", &["device", "list"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("awaits approval"), "{out:?}");

    // Alice's laptop: pending, listed on her phone with the same fingerprint.
    let laptop = h.ok("laptop", &["register", "alice/laptop"]);
    let fp = fingerprint_in(&laptop[0]);
    let list = h.ok("phone", &["device", "list"]);
    let waiting = format!("alice/laptop awaits approval fingerprint {fp} ");
    assert!(list.iter().any(|l| l.starts_with(&waiting)), "{list:?}");
    assert!(list.iter().any(|l| l.starts_with("alice/evil awaits approval")), "{list:?}");
    assert!(list.iter().any(|l| l.starts_with("alice/phone live") && l.ends_with("(this device)")));

    // A wrong fingerprint approves nothing; the right one does.
    let out = h.run("phone", &["device", "approve", "alice/laptop", "--fingerprint", "0000"]);
    assert!(!out.status.success(), "{out:?}");
    assert_eq!(h.ok("bob", &["lookup", "alice"]).len(), 1);
    assert_eq!(
        h.ok("phone", &["device", "approve", "alice/laptop", "--fingerprint", &fp]),
        [format!("approved alice/laptop (key fingerprint {fp})")]
    );
    assert_eq!(
        h.ok("phone", &["device", "revoke", "alice/evil"]),
        ["declined the registration of alice/evil"]
    );

    // The laptop's next command completes its registration, then runs.
    let out = h.run("laptop", &["count"]);
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("alice/laptop is approved: registered, 10 KeyPackages published"),
        "{stderr}"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "10 one-time KeyPackages and a last-resort one"
    );
    let lookup = h.ok("bob", &["lookup", "alice"]);
    assert!(lookup.iter().all(|l| l.ends_with(" verified")) && lookup.len() == 2, "{lookup:?}");

    // The phone is lost: the laptop revokes it, and the id stays alice's.
    assert_eq!(h.ok("laptop", &["device", "revoke", "alice/phone"]), ["revoked alice/phone"]);
    let lookup = h.ok("bob", &["lookup", "alice"]);
    assert!(
        lookup.iter().any(|l| l.starts_with("alice/phone ") && l.contains("REJECTED")),
        "{lookup:?}"
    );
    let again = h.ok("evil2", &["register", "alice/phone"]);
    assert!(again[0].starts_with("alice/phone awaits approval"), "{again:?}");
    let lookup = h.ok("bob", &["lookup", "alice"]);
    assert_eq!(lookup.iter().filter(|l| l.ends_with(" verified")).count(), 1, "{lookup:?}");
}

/// A person who lost their only device: the operator revokes it
/// (`mlsd admin revoke`) and hands out a token, with which a new device of
/// the identity registers at once; nobody else could have claimed the id.
#[tokio::test(flavor = "multi_thread")]
async fn an_operator_revokes_a_lost_device_and_releases_the_identity() {
    let _watchdog = common::init();
    let mut c = Cluster::new(&[("n1", &Role::ALL)]);
    c.start_all().await;
    let h = Homes { c: &c };
    h.ok("phone", &["register", "alice/phone", "--count", "1"]);
    let admin = |args: &[&str]| {
        let out = std::process::Command::new(common::bin("mlsd"))
            .args(["admin"])
            .args(args)
            .arg("--config")
            .arg(&c.config)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    assert_eq!(admin(&["revoke", "alice/phone"]), "revoked alice/phone");
    let lookup = h.ok("other", &["lookup", "alice"]);
    assert!(lookup.len() == 1 && lookup[0].contains("REJECTED"), "{lookup:?}");
    // Without the operator, a new device of alice waits for an approval
    // nobody can give; with the operator's token it registers.
    let waiting = h.ok("stranger", &["register", "alice/phone"]);
    assert!(waiting[0].starts_with("alice/phone awaits approval"), "{waiting:?}");
    let token = admin(&["enroll", "alice"]);
    let out = h.ok("new", &["register", "alice/new", "--token", &token, "--count", "1"]);
    assert!(out[0].starts_with("registered alice/new "), "{out:?}");
    let lookup = h.ok("other", &["lookup", "alice"]);
    assert_eq!(lookup.iter().filter(|l| l.ends_with(" verified")).count(), 1, "{lookup:?}");
}

/// The code in `mlsc device admit`'s line.
fn code_in(line: &str) -> String {
    let (_, rest) = line.split_once(": ").unwrap_or_else(|| panic!("{line}"));
    rest.split_whitespace().next().unwrap().to_string()
}

/// The reproduction of the second abuse issue's first item: strangers'
/// registrations of alice's device names were stored as pending without
/// any bound per requester until her identity could take no new device.
/// Now one address leaves at most `[as] pending_rate_per_hour` pending
/// registrations (a refusal stores nothing), and alice's phone admits her
/// laptop by an approval code, which no pending queue stands in front of.
#[tokio::test(flavor = "multi_thread")]
async fn strangers_pending_requests_are_bounded_per_address_and_a_code_admits_past_them() {
    let _watchdog = common::init();
    let mut c = Cluster::with_extra(&[("n1", &Role::ALL)], "[as]\npending_rate_per_hour = 3\n");
    c.start_all().await;
    let h = Homes { c: &c };
    h.ok("phone", &["register", "alice/phone", "--count", "1"]);
    for n in 0..3 {
        let out = h.ok(&format!("s{n}"), &["register", &format!("alice/d{n}"), "--count", "0"]);
        assert!(out[0].starts_with(&format!("alice/d{n} awaits approval")), "{out:?}");
    }
    let out = h.run("s3", &["register", "alice/d3", "--count", "0"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("rate limited"), "{out:?}");
    let list = h.ok("phone", &["device", "list"]);
    assert_eq!(list.iter().filter(|l| l.contains(" awaits approval ")).count(), 3, "{list:?}");
    assert!(!list.iter().any(|l| l.starts_with("alice/d3 ")), "{list:?}");

    // Alice's laptop, from the same (loopback) address, gets in by a code.
    let admit = h.ok("phone", &["device", "admit", "alice/laptop"]);
    assert!(admit[0].starts_with("approval code for alice/laptop: "), "{admit:?}");
    let code = code_in(&admit[0]);
    assert_eq!(code.len(), 14, "{code}");
    let wrong = "0000-0000-0000";
    let out = h.run("laptop", &["register", "alice/laptop", "--code", wrong, "--count", "1"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("approval code"), "{out:?}");
    // Typed in lower case without dashes, as a person might.
    let typed = code.replace('-', "").to_lowercase();
    let out = h.ok("laptop", &["register", "alice/laptop", "--code", &typed, "--count", "1"]);
    assert!(out[0].starts_with("registered alice/laptop "), "{out:?}");
    let lookup = h.ok("phone", &["lookup", "alice"]);
    assert_eq!(lookup.iter().filter(|l| l.ends_with(" verified")).count(), 2, "{lookup:?}");
    // Spent: the code admits nobody else.
    let out = h.run("s4", &["register", "alice/laptop", "--code", &code, "--count", "0"]);
    assert!(!out.status.success(), "{out:?}");
}

/// In token mode a registration without a token stored a pending entry
/// for whoever asked; now it is refused and nothing is kept, and a live
/// device's code admits a new device without the operator.
#[tokio::test(flavor = "multi_thread")]
async fn token_mode_keeps_no_pending_request_and_takes_a_live_devices_code() {
    let _watchdog = common::init();
    let mut c = Cluster::with_extra(&[("n1", &Role::ALL)], "[as]\nregistration = \"token\"\n");
    c.start_all().await;
    let h = Homes { c: &c };
    let out = std::process::Command::new(common::bin("mlsd"))
        .args(["admin", "enroll", "alice", "--config"])
        .arg(&c.config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    h.ok("phone", &["register", "alice/phone", "--token", &token, "--count", "1"]);
    let out = h.run("evil", &["register", "alice/evil", "--count", "0"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("token"), "{out:?}");
    let list = h.ok("phone", &["device", "list"]);
    assert!(!list.iter().any(|l| l.contains("awaits approval")), "{list:?}");
    let code = code_in(&h.ok("phone", &["device", "admit", "alice/laptop"])[0]);
    let out = h.ok("laptop", &["register", "alice/laptop", "--code", &code, "--count", "1"]);
    assert!(out[0].starts_with("registered alice/laptop "), "{out:?}");
}
