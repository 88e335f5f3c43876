//! CPU an idle cluster burns: three `mlsd run` processes (this binary),
//! every role on every node, the default shard count and replicas, and no
//! client. What is left is Raft's heartbeats (shared between two nodes
//! across all their shards) and the nodes' own timers. Each node is its own
//! process so its CPU time is its own (`/proc/PID/stat`).

use std::process::{Child, Command, Stdio};

use super::*;

/// The three processes; killed on drop.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// User plus system CPU seconds of process `pid` so far; `None` off Linux.
fn process_cpu_seconds(pid: u32, ticks_per_s: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is field 3, utime 14 and stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks_per_s)
}

/// Clock ticks per second of `/proc` times (`getconf CLK_TCK`, 100 when
/// that cannot be asked).
fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Per node, the share of one core (percent) it used over `seconds` once
/// every shard of the idle cluster had a leader and every voter was caught
/// up; and the number of shards. `None` when `/proc` is not there.
pub(super) async fn idle_cpu(seconds: u64) -> anyhow::Result<Option<(Vec<f64>, usize)>> {
    let names = ["i1", "i2", "i3"];
    let layout: Vec<(&str, &str)> = names.iter().map(|n| (*n, ALL)).collect();
    let (dir, config) = crate::inproc::prepare("idle", &layout, "")?;
    let path = dir.path().join("cluster.toml");
    let exe = std::env::current_exe()?;
    let mut procs = Procs(Vec::new());
    for n in names {
        let child = Command::new(&exe)
            .args(["run", "--node", n, "--config"])
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        procs.0.push(child);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let shards = loop {
        let report = mlsd_node::status::status(&config, None).await;
        if report.healthy() && !report.shards.is_empty() {
            break report.shards.len();
        }
        anyhow::ensure!(Instant::now() < deadline, "the idle cluster never became whole");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // Start-up work (RocksDB opening, first elections) is over before the
    // window opens.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tick = ticks_per_second();
    let cpu = |p: &Procs| -> Option<Vec<f64>> {
        p.0.iter().map(|c| process_cpu_seconds(c.id(), tick)).collect()
    };
    let Some(before) = cpu(&procs) else { return Ok(None) };
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let Some(after) = cpu(&procs) else { return Ok(None) };
    let wall = t.elapsed().as_secs_f64();
    Ok(Some((before.iter().zip(&after).map(|(b, a)| (a - b) / wall * 100.0).collect(), shards)))
}

/// Per-node percentages as printed: `1.00 / 1.10 / 0.70`.
pub(super) fn percents(per_node: &[f64]) -> String {
    per_node.iter().map(|p| format!("{p:.2}")).collect::<Vec<_>>().join(" / ")
}
