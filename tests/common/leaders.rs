//! Which node leads which shard, as `mlsd cluster status` reports it, and
//! waits for leaderships to move: tests that kill a leader, or subscribe at
//! one, pick it from here and let balancing handovers settle first (a
//! handover closes the old leader's subscriptions by design).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::Cluster;

/// Every shard's leader (`role/index` to node), as `mlsd cluster status`
/// reports it; shards without one are left out.
pub fn leaders(c: &Cluster) -> HashMap<String, String> {
    leaders_in(&c.status().1)
}

/// Every shard's leader in a status report.
fn leaders_in(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let shard = words.next()?;
            let leader = words.find_map(|w| w.strip_prefix("leader="))?;
            (leader != "-").then(|| (shard.to_string(), leader.to_string()))
        })
        .collect()
}

/// Waits until `shard` has a leader other than `old`, and returns it.
pub async fn new_leader(c: &Cluster, shard: &str, old: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(l) = leaders(c).get(shard).filter(|l| *l != old) {
            return l.clone();
        }
        assert!(Instant::now() < deadline, "{shard} got no leader but {old}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether every shard is led by the first of its voters (placement order,
/// as `mlsd cluster status` lists them) that is not `down`; else the first
/// shard that is not.
fn led_by_first_live_voter(c: &Cluster, down: &[&str]) -> Result<(), String> {
    let (_, text) = c.status();
    let mut seen = 0;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(shard) = words.next() else { continue };
        let Some(voters) = words.next().and_then(|v| v.strip_prefix("voters=")) else { continue };
        seen += 1;
        let leader = words.next().and_then(|v| v.strip_prefix("leader="));
        let first = voters.split(',').find(|v| !down.contains(v));
        if leader != first {
            return Err(format!("{shard} (voters {voters}) is led by {leader:?}"));
        }
    }
    if seen == 0 {
        return Err(format!("no shard in the status report:\n{text}"));
    }
    Ok(())
}

/// Waits until every shard is led by its first live voter.
pub async fn spread(c: &Cluster, down: &[&str]) {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(60);
    loop {
        match led_by_first_live_voter(c, down) {
            Ok(()) => {
                eprintln!("leaders spread (down: {down:?}) after {:?}", start.elapsed());
                return;
            }
            Err(e) if Instant::now() >= deadline => {
                panic!("leaders not spread within 60 s (down: {down:?}): {e}\n{}", c.status().1)
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Waits until every shard in the status report has a leader other than
/// `dead` (a SIGKILLed node), at most `within`; returns how long it took,
/// up to the end of the status call that saw it (each call waits out its
/// connect timeout to the dead node).
pub async fn all_led_without(c: &Cluster, dead: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let (_, text) = c.status();
        let shards = text.lines().filter(|l| l.contains("voters=")).count();
        let led = leaders_in(&text).values().filter(|l| *l != dead).count();
        if shards > 0 && led == shards {
            return start.elapsed();
        }
        if start.elapsed() >= within {
            let logs: String = c
                .specs
                .iter()
                .filter(|s| s.name != dead)
                .map(|s| {
                    let log = c.log(s.name);
                    let tail: Vec<&str> = log.lines().rev().take(40).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    format!("--- {} (last lines)\n{}\n", s.name, tail.join("\n"))
                })
                .collect();
            panic!(
                "{led} of {shards} shards led by a live node {:?} after {dead} died:\n{text}\n{logs}",
                start.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The node that leads the most shards, from `mlsd cluster status` (n1
/// when none is known).
pub fn busiest(c: &Cluster) -> String {
    let mut led = HashMap::<String, u32>::new();
    for n in leaders(c).into_values() {
        *led.entry(n).or_default() += 1;
    }
    led.into_iter().max_by_key(|(_, k)| *k).map(|(n, _)| n).unwrap_or_else(|| "n1".into())
}
