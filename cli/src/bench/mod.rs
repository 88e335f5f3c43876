//! `mlsd bench`: how fast fan-out is, next to what this machine allows.
//!
//! Measures, in one run: the limits (envelope seals per second per core on
//! the anonymizers' code path, bytes per second over one node-to-node QUIC
//! connection, ODS enqueues per second through the ODS's own synced write
//! path); fan-out throughput on a one-node and a three-node cluster in this
//! process (real QUIC, real RocksDB), with three replicas of every shard
//! against one; the send-to-all-enqueued latency; and the CPU an idle
//! three-node cluster burns.
//! Figures depend on the build profile: see docs/performance.md.
//!
//! # Layout
//! - `limits`: the three limit stages and the ceiling's inputs.
//! - `anonymizer`: anonymizer actor cost against its job and the seal.
//! - `memory`: resident bytes per idle mailbox and group actor.
//! - `cluster`: bench clusters, fan-out throughput and latency.
//! - `idle`: CPU per node of an idle three-node cluster.
//! - this file: the run, its table and JSON, and single stages.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use mlsd_actors::ids::anonymizer::seal_copy;
use mlsd_actors::ids::fanout::ENQUEUE_CHUNK;
use mlsd_actors::RocksStore;
use mlsd_client::{Client, Connection};
use mlsd_roles::ods::OdsLogic;
use mlsd_roles::settings::OdsSettings;
use mlsd_roles::{RoleContext, RoleLogic};
use mlsd_transport::protocol::{EnqueueItem, Recipients, RosterEntry, RosterMode};
use mlsd_transport::{endpoint, tls, Request, Response};

use crate::inproc::InprocCluster;

mod anonymizer;
mod cluster;
mod idle;
mod limits;
mod memory;
mod rebalance;

use anonymizer::*;
use cluster::*;
use idle::*;
use limits::*;
pub use memory::memory_child;
use memory::*;
use rebalance::*;

/// Options of `mlsd bench`.
pub struct BenchOpts {
    /// Smaller counts; finishes in a few minutes on 2 cores.
    pub quick: bool,
    /// Where to write every figure as JSON.
    pub json: Option<PathBuf>,
}

/// The size of the benchmark's application message.
const MESSAGE: usize = 1024;

/// Unix milliseconds: a fresh mailbox request counter.
fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn rand32() -> [u8; 32] {
    let mut b = [0u8; 32];
    rand::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut b).expect("OS randomness");
    b
}

/// The median of `v` (sorted in place, so its ends are the extremes).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Runs the benchmark and prints a table (and JSON when asked).
pub async fn run(opts: BenchOpts) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let per_mailbox = memory("mailboxes", 100_000)?.map(|(b, _)| b).filter(|b| *b > 0.0);
    let (seal_per_core, env_len) = seal_rate(if opts.quick { 20_000 } else { 100_000 });
    // The 1,000-member fan-out and the enqueue stage it is compared with
    // handle the same number of copies from the same fresh start, several
    // times each (this host's fsync rate and CPU steal vary from run to run):
    // medians are compared, extremes printed.
    let volume = 20_000;
    let rounds = if opts.quick { 3 } else { 5 };
    let mut enqueues = Vec::new();
    for _ in 0..rounds {
        enqueues.push(enqueue_rate(volume, ENQUEUE_CHUNK, 1000, env_len)?);
    }
    let enqueue = median(&mut enqueues);
    let quic = quic_rate(if opts.quick { 64 << 20 } else { 256 << 20 }).await?;
    let other_limits = (seal_per_core * cores as f64).min(quic / env_len as f64);
    let ceiling = other_limits.min(enqueue);
    let anon_n = if opts.quick { 2_000 } else { 10_000 };
    let in_flight = mlsd_roles::settings::default_anonymizer_concurrency();
    let anon = anonymizer_rounds(anon_n, in_flight, rounds).await?;
    let (anon_us, job_us, seal_cpu_us) = (anon.wall_us, anon.job_us, anon.seal_cpu_us);
    let (anon_cpu_us, actor_cpu_us) = (anon.cpu_us, anon.actor_cpu_us);
    let (anon_chaos_us, _) = anonymizer_cost(anon_n, 1, true).await?;
    let (ticket_issue, ticket_check) = ticket_rates(if opts.quick { 640 } else { 6400 })?;
    let seal_us = 1e6 / seal_per_core;
    let cpu = cpu_model();
    println!(
        "limits on this machine ({cores} cores, {cpu}), 1 KiB message -> {env_len}-byte envelopes:"
    );
    println!("  seal                 {:>12.0} envelopes/s per core", seal_per_core);
    println!(
        "  ODS synced enqueue   {:>12.0} envelopes/s (median of {rounds}: {:.0}-{:.0}; {volume} copies to 1,000 mailboxes in batches of {ENQUEUE_CHUNK})",
        enqueue, enqueues[0], enqueues[rounds - 1]
    );
    println!(
        "  node-to-node QUIC    {:>12.0} bytes/s = {:.0} envelopes/s",
        quic,
        quic / env_len as f64
    );
    println!("  ceiling              {:>12.0} recipient copies/s", ceiling);
    println!(
        "  anonymizer actor     {anon_us:>12.1} µs spawn-to-stop incl. its job ({job_us:.1} µs for the job alone: seal + delivery id; {:.1} µs actor)",
        anon_us - job_us
    );
    if let (Some(cpu), Some(actor)) = (anon_cpu_us, actor_cpu_us) {
        let (lo, hi) = anon.actor_cpu_spread;
        println!(
            "  anonymizer, {in_flight} in flight {cpu:>9.1} µs CPU per actor incl. its job: {actor:.1} µs for spawn and stop ({lo:.1}-{hi:.1}), against {seal_cpu_us:.1} µs CPU per seal (medians of {rounds} paired rounds)"
        );
    }
    println!(
        "  with chaos hooks     {anon_chaos_us:>12.1} µs (process-group join; only with [chaos] allow)"
    );
    println!(
        "  AS quota tickets     {ticket_issue:>12.0} issued/s per core (batches of 64, one proof), {ticket_check:.0} spends checked/s"
    );
    match per_mailbox {
        Some(b) => println!("memory: {b:.0} resident bytes per idle mailbox (100,000 open)"),
        None => println!("memory: resident size not available on this system"),
    }
    let groups = if opts.quick { 2_000 } else { 10_000 };
    let per_group = memory("groups", groups)?.filter(|(b, _)| *b > 0.0);
    if let Some((b, alive)) = per_group {
        println!("memory: {b:.0} resident bytes per idle group actor ({alive} alive)");
    }

    let sizes: &[usize] = if opts.quick { &[10, 100, 1000] } else { &[10, 100, 1000, 10_000] };
    let mut rows = Vec::new();
    let mut enqueue_1000_ms = None;
    let mut enqueue_latencies = Vec::new();
    let mut receive_latencies: Vec<(usize, f64, Vec<f64>)> = Vec::new();
    for (si, shape) in SHAPES.iter().enumerate() {
        let label = shape.label;
        for &m in sizes {
            let messages = (volume / m).clamp(2, 200);
            // Each figure from a fresh cluster, as the enqueue stage starts
            // from a fresh database. The 1,000-member one `rounds` times, each
            // right after its own enqueue-stage run, so that a drift of the
            // host between the two cancels out in the ratio.
            let paired = m == 1000;
            let mut rates = Vec::new();
            let mut ratios = Vec::new();
            // Elections while the fan-outs ran (a slow disk or a blocked
            // worker delaying heartbeats shows here).
            let mut elections = 0;
            for _ in 0..if paired { rounds } else { 1 } {
                let limit = if paired {
                    other_limits.min(enqueue_rate(volume, ENQUEUE_CHUNK, 1000, env_len)?)
                } else {
                    ceiling
                };
                let mut b = BenchCluster::start(shape).await?;
                let terms = b.cluster.shard_terms();
                let (rate, first_ms) =
                    fanout(&b.cluster, &mut b.sender, "bench", m, messages).await?;
                elections += b.cluster.elections_since(&terms);
                if paired && si == 0 && enqueue_1000_ms.is_none() {
                    enqueue_1000_ms = Some(first_ms);
                }
                b.cluster.shutdown().await;
                rates.push(rate);
                ratios.push(rate / limit);
            }
            let rate = median(&mut rates);
            let ratio = median(&mut ratios);
            let spread = if paired {
                format!(
                    " (median of {} paired rounds: {:.2}-{:.2})",
                    ratios.len(),
                    ratios[0],
                    ratios[ratios.len() - 1]
                )
            } else {
                String::new()
            };
            println!(
                "  {label:<24} {m:>6} members: {rate:>10.0} copies/s ({ratio:.2} of the ceiling){spread}; {elections} elections"
            );
            rows.push((si, m, rate, ratio));
        }
    }
    // A shape's throughput at `m` members.
    let at = |si: usize, m: usize| rows.iter().find(|r| r.0 == si && r.1 == m).map(|r| r.2);
    for (si, shape) in SHAPES.iter().enumerate() {
        // Latency on its own cluster, at half the 100-member throughput;
        // the two shapes of three nodes with every role (one and three
        // replicas) at the same offered load, the slower one's, so their
        // p99s compare.
        let rate100 = if si == ONE_REPLICA || si == THREE_REPLICAS {
            at(ONE_REPLICA, 100).into_iter().chain(at(THREE_REPLICAS, 100)).reduce(f64::min)
        } else {
            at(si, 100)
        }
        .unwrap_or(1000.0);
        let mut b = BenchCluster::start(shape).await?;
        let sender = &mut b.sender;
        if si == 0 {
            for _ in 0..if opts.quick { 20 } else { 100 } {
                enqueue_latencies.push(fanout(&b.cluster, sender, "bench", 100, 1).await?.1);
            }
        }
        let offered = (rate100 / 100.0 / 2.0).clamp(1.0, 200.0);
        let count = if opts.quick { 100 } else { 500 };
        let lat = send_to_receive(&b.cluster, sender, "bench", count, offered).await?;
        receive_latencies.push((si, offered, lat));
        b.cluster.shutdown().await;
    }
    let (e50, e99) = percentiles(&mut enqueue_latencies);
    let mut latency = Vec::new();
    for (si, offered, lat) in &mut receive_latencies {
        let (p50, p99) = percentiles(lat);
        println!(
            "latency, send to a subscribed member receiving, 100 members, {}, {offered:.0} msg/s offered: p50 {p50:.1} ms, p99 {p99:.1} ms ({} samples)",
            SHAPES[*si].label,
            lat.len()
        );
        latency.push((*si, *offered, p50, p99));
    }
    // What three replicas cost against one on the same three nodes: the
    // 1,000-member fan-out and the 100-member p99.
    let throughput_ratio =
        at(THREE_REPLICAS, 1000).zip(at(ONE_REPLICA, 1000)).map(|(r, s)| r / s).unwrap_or(0.0);
    let p99_ratio = latency
        .iter()
        .find(|l| l.0 == THREE_REPLICAS)
        .zip(latency.iter().find(|l| l.0 == ONE_REPLICA))
        .map(|(r, s)| r.3 / s.3.max(1e-9))
        .unwrap_or(0.0);
    println!(
        "replication, 3 nodes, 3 replicas against 1: 1,000-member fan-out at {throughput_ratio:.2}x the copies/s (target >= 0.4), 100-member p99 at {p99_ratio:.2}x (target <= 3)"
    );
    let idle_s = if opts.quick { 10 } else { 30 };
    let idle = idle_cpu(idle_s).await?;
    match &idle {
        Some((per_node, shards)) => println!(
            "idle 3-node cluster ({shards} shards, 3 replicas each): {} % of one core per node over {idle_s} s (target < 2 %)",
            percents(per_node)
        ),
        None => println!("idle 3-node cluster: CPU time not available on this system"),
    }
    let (rebalance_mb, rebalance_sends) = if opts.quick { (64, 1_500) } else { (512, 6_000) };
    let moved = rebalance(rebalance_mb, rebalance_sends).await?;
    println!("rebalance: {}", describe_rebalance(&moved));
    let (p50, p99) = latency.first().map(|l| (l.2, l.3)).unwrap_or((0.0, 0.0));
    let seal_1000_ms = 1000.0 / seal_per_core * 1e3;
    println!("latency, send to all 100 copies enqueued: p50 {e50:.1} ms, p99 {e99:.1} ms");
    println!("one message to 1000 members enqueued for all: {:.1} ms (1000 seals alone: {seal_1000_ms:.1} ms on one core)", enqueue_1000_ms.unwrap_or(0.0));

    if let Some(path) = opts.json {
        let rev = std::process::Command::new("git")
            .args(["rev-parse", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let fanout: Vec<String> = rows
            .iter()
            .map(|(si, m, r, ratio)| format!("{{\"shape\": \"{}\", \"nodes\": {}, \"members\": {m}, \"copies_per_s\": {r:.1}, \"ratio\": {ratio:.3}}}", SHAPES[*si].label, SHAPES[*si].layout.len()))
            .collect();
        let json = format!(
            "{{\n  \"machine\": {{\"cores\": {cores}, \"cpu\": \"{cpu}\", \"arch\": \"{}\", \"os\": \"{}\", \"profile\": \"{}\"}},\n  \"git_revision\": \"{rev}\",\n  \"seal_per_core_per_s\": {seal_per_core:.1},\n  \"enqueue_per_s\": {enqueue:.1},\n  \"quic_bytes_per_s\": {quic:.1},\n  \"ceiling_copies_per_s\": {ceiling:.1},\n  \"fanout\": [{}],\n  \"latency_ms\": {{\"p50\": {p50:.2}, \"p99\": {p99:.2}}},\n  \"latency_by_shape\": [{}],\n  \"enqueue_latency_ms\": {{\"p50\": {e50:.2}, \"p99\": {e99:.2}}},\n  \"bytes_per_idle_group\": {},\n  \"seal_1000_ms\": {seal_1000_ms:.2},\n  \"anonymizer_us\": {anon_us:.2},\n  \"anonymizer_chaos_hooks_us\": {anon_chaos_us:.2},\n  \"anonymizer_cpu_us\": {},\n  \"anonymizer_actor_cpu_us\": {},\n  \"job_us\": {job_us:.2},\n  \"seal_cpu_us\": {seal_cpu_us:.2},\n  \"seal_us\": {seal_us:.2},\n  \"enqueue_1000_ms\": {:.2},\n  \"bytes_per_idle_mailbox\": {},\n  \"replicated_throughput_ratio\": {throughput_ratio:.3},\n  \"replicated_p99_ratio\": {p99_ratio:.3},\n  \"idle_cpu_percent_per_node\": {},\n  \"rebalance\": {{\"loaded_bytes\": {}, \"received_bytes\": {}, \"shard_bytes\": {}, \"replicas\": {}, \"secs\": {:.2}, \"secs_per_gb\": {:.1}, \"copies_per_s_before\": {:.1}, \"copies_per_s_during\": {:.1}, \"during_secs\": {:.1}}}\n}}\n",
            std::env::consts::ARCH,
            std::env::consts::OS,
            if cfg!(debug_assertions) { "debug" } else { "release" },
            fanout.join(", "),
            latency
                .iter()
                .map(|(si, o, p50, p99)| format!("{{\"shape\": \"{}\", \"nodes\": {}, \"offered_msgs_per_s\": {o:.1}, \"p50\": {p50:.2}, \"p99\": {p99:.2}}}", SHAPES[*si].label, SHAPES[*si].layout.len()))
                .collect::<Vec<_>>()
                .join(", "),
            per_group.map(|(b, _)| format!("{b:.1}")).unwrap_or_else(|| "null".into()),
            anon_cpu_us.map(|c| format!("{c:.2}")).unwrap_or_else(|| "null".into()),
            actor_cpu_us.map(|c| format!("{c:.2}")).unwrap_or_else(|| "null".into()),
            enqueue_1000_ms.unwrap_or(0.0),
            per_mailbox.map(|b| format!("{b:.1}")).unwrap_or_else(|| "null".into()),
            idle.as_ref()
                .map(|(p, _)| format!("[{}]", p.iter().map(|x| format!("{x:.3}")).collect::<Vec<_>>().join(", ")))
                .unwrap_or_else(|| "null".into()),
            moved.loaded,
            moved.received,
            moved.shard_bytes,
            moved.replicas,
            moved.secs,
            moved.secs_per_gb(),
            moved.before,
            moved.during,
            moved.during_secs,
        );
        std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;
        println!("figures written to {}", path.display());
    }
    Ok(())
}

/// The CPU's model name (Linux `/proc/cpuinfo`), reduced to characters that
/// need no escaping in the JSON report; "unknown" elsewhere.
fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim())
        .unwrap_or("unknown");
    model
        .chars()
        .filter(|c| (c.is_ascii_graphic() || *c == ' ') && !matches!(c, '"' | '\\'))
        .collect()
}

/// The 50th and 99th percentiles of `v` (sorted in place); zeros when empty.
fn percentiles(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| v.get(((v.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0.0);
    (pct(0.5), pct(0.99))
}

/// One stage alone (`mlsd bench-stage`), so a profiler sees only it:
/// `enqueue-N` runs `count` copies through the ODS in synced batches of N;
/// `fanout` sends `count` messages to `members` members on a fresh one-node
/// cluster (`fanout3`: IDS | ODS ODS; `fanout3x1`, `fanout3x3`: every role on
/// three nodes, one or three replicas); `idle` measures an idle
/// three-node cluster's CPU per node over `count` seconds; `anonymizer-N` runs `count` anonymizers, N in flight;
/// `rebalance` loads `count` MiB of blobs and joins a fourth node
/// (`members`: prepared sends per lane).
pub async fn stage(what: &str, count: usize, members: usize) -> anyhow::Result<()> {
    let env_len = seal_rate(1).1;
    if let Some(batch) = what.strip_prefix("enqueue-") {
        let rate = enqueue_rate(count, batch.parse()?, 1000, env_len)?;
        println!("{what}: {rate:.0} copies/s");
    } else if let Some(si) =
        ["fanout", "fanout3", "fanout3x1", "fanout3x3"].iter().position(|w| *w == what)
    {
        let mut b = BenchCluster::start(&SHAPES[si]).await?;
        let (rate, _) = fanout(&b.cluster, &mut b.sender, "bench", members, count).await?;
        b.cluster.shutdown().await;
        println!("{what}, {members} members: {rate:.0} copies/s");
    } else if what == "rebalance" {
        // `count` megabytes of blobs; `members` prepared sends per lane.
        let r = rebalance(count, members).await?;
        println!("{what}: {}", describe_rebalance(&r));
    } else if what == "idle" {
        match idle_cpu(count as u64).await? {
            Some((per_node, shards)) => println!(
                "idle: {shards} shards, {} % of one core per node over {count} s",
                percents(&per_node)
            ),
            None => println!("idle: CPU time not available on this system"),
        }
    } else if let Some(lanes) = what.strip_prefix("anonymizer-") {
        let (wall, cpu) = anonymizer_cost(count, lanes.parse()?, false).await?;
        let job = job_cost(count);
        let par = job_cost_parallel(count, lanes.parse()?).await?;
        println!("job in {lanes} tasks: {par:.1} µs CPU");
        let cpu = cpu.map_or("n/a".into(), |c| format!("{c:.1} µs ({:.1} µs actor)", c - job));
        println!("{what}: {wall:.1} µs wall, {cpu} CPU per actor; job alone {job:.1} µs");
    } else {
        anyhow::bail!("unknown stage {what}");
    }
    Ok(())
}

/// One line for the rebalance stage's figures.
fn describe_rebalance(r: &Rebalance) -> String {
    format!(
        "{} MiB of blobs loaded; a fourth node joined and took {} replicas holding {} MiB of blobs ({:.0} MiB in its data dir) in {:.1} s ({:.0} s per GB); 10-member sends {:.0} copies/s before, {:.0} during ({:.2} of before, over {:.0} s)",
        r.loaded >> 20,
        r.replicas,
        r.shard_bytes >> 20,
        r.received as f64 / (1u64 << 20) as f64,
        r.secs,
        r.secs_per_gb(),
        r.before,
        r.during,
        r.during / r.before,
        r.during_secs
    )
}
