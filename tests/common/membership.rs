//! The cluster's membership changed under load, for the chaos harness's
//! long profile (the elastic-cluster issue): a node joins and takes its
//! share of the shards, a joined node is drained and exits, and a joined
//! node dies for good and is replaced from the survivors. Clients enter
//! through the first three nodes, which always stay.

use std::time::{Duration, Instant};

use mlsd_transport::Role;

use super::Cluster;

/// How long a join, a drain or a replacement may take to leave the cluster
/// healthy: every replica moved (two at a time) and caught up.
const REBALANCE: Duration = Duration::from_secs(180);

/// The membership changes made so far, and the node joined last (still a
/// member).
#[derive(Default)]
pub struct Membership {
    changes: u32,
    joined: Option<&'static str>,
    named: usize,
}

/// What a membership change was.
pub enum Change {
    /// A node joined (its name); clients are served all along.
    Join(&'static str),
    /// A joined node was drained and exited; clients are served all along.
    Drain(&'static str),
    /// A joined node was SIGKILLed and removed as dead: a fault.
    Dead(&'static str),
}

impl Change {
    /// The kind's name, for the chaos tally.
    pub fn kind(&self) -> &'static str {
        match self {
            Change::Join(_) => "join",
            Change::Drain(_) => "drain",
            Change::Dead(_) => "dead replacement",
        }
    }
}

impl Membership {
    /// The next change, over (the cluster healthy again) when it returns:
    /// a join when no joined node is a member, else the joined node's drain
    /// or, every other time, its death and removal.
    pub async fn next(&mut self, c: &mut Cluster) -> Change {
        self.changes += 1;
        let change = match self.joined.take() {
            None => {
                self.named += 1;
                let name: &'static str = Box::leak(format!("n{}", 3 + self.named).into_boxed_str());
                c.add_to_file(name, &Role::ALL);
                c.certs();
                c.start(name).await;
                self.joined = Some(name);
                Change::Join(name)
            }
            Some(name) if self.changes % 4 == 2 => {
                let out = operator(c, name, &[]).await;
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                let exit = c.wait_exit(name, Duration::from_secs(60)).await;
                assert!(exit.success(), "{name} exits by itself, cleanly: {exit:?}");
                Change::Drain(name)
            }
            Some(name) => {
                c.kill(name);
                let out = operator(c, name, &["--dead"]).await;
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                Change::Dead(name)
            }
        };
        let deadline = Instant::now() + REBALANCE;
        loop {
            let (healthy, out) = c.status();
            let member = out.contains(&format!("node {} ", self.joined.unwrap_or("-")));
            if healthy && (self.joined.is_none() || member) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} not done in {REBALANCE:?}:\n{out}",
                change.kind()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        change
    }
}

/// `mlsd cluster remove NODE ARGS`, run off the async workers (it waits
/// for the removal, minutes at worst).
async fn operator(c: &Cluster, node: &'static str, args: &[&'static str]) -> std::process::Output {
    let config = c.config.clone();
    let args = args.to_vec();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(super::bin("mlsd"))
            .args(["cluster", "remove", node, "--config"])
            .arg(&config)
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}
