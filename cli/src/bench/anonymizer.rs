//! The anonymizer's cost: actors spawned to stop, against the same jobs
//! done without actors and the bare seal, with CPU time to the nanosecond.

use super::*;

/// The job of anonymizer number `i` of a measurement: a 1 KiB message and
/// key material as a roster would give it (its value does not matter here).
pub(super) fn bench_job(
    i: usize,
    message: &std::sync::Arc<Vec<u8>>,
    chaos_hooks: bool,
) -> mlsd_actors::ids::anonymizer::Job {
    use mlsd_actors::ids::anonymizer::{Job, KeyGuard, Sealing};
    let b = (i % 251) as u8;
    Job {
        index: i,
        message_id: [b; 32],
        message: message.clone(),
        cap: mlsd_transport::protocol::DeliveryCap { shard: [b; 2], token: [b ^ 0x5a; 32] },
        sealing: Sealing::Envelope(KeyGuard(zeroize::Zeroizing::new([b ^ 0xa5; 32]))),
        group: chaos_hooks.then(|| "bench/ids/anonymizers".to_string()),
    }
}

/// Microseconds per anonymizer actor, spawn to stop, sealing one 1 KiB
/// message each, in `lanes` concurrent loops of spawn-and-wait (1: one after
/// another, which measures latency including the wake-ups between tasks; as
/// many as a fan-out keeps: throughput).
/// `chaos_hooks` adds the process-group join a chaos-enabled node makes.
/// Returns (wall µs per actor, CPU µs per actor, all threads).
pub(super) async fn anonymizer_cost(
    n: usize,
    lanes: usize,
    chaos_hooks: bool,
) -> anyhow::Result<(f64, Option<f64>)> {
    in_lanes(n, lanes, Some(chaos_hooks)).await
}

/// `n` anonymizer jobs in `lanes` concurrent tasks: each spawning an actor
/// per job and waiting for it to stop (`actor` is `Some(chaos_hooks)`), or
/// doing the job inline. Returns (wall µs per job, CPU µs per job).
async fn in_lanes(
    n: usize,
    lanes: usize,
    actor: Option<bool>,
) -> anyhow::Result<(f64, Option<f64>)> {
    use mlsd_actors::ids::anonymizer::{make_copy, Anonymizer};
    use ractor::Actor;
    let message = std::sync::Arc::new(vec![7u8; MESSAGE]);
    let cpu0 = cpu_seconds();
    let t = Instant::now();
    let mut tasks = Vec::new();
    for lane in 0..lanes {
        let message = message.clone();
        tasks.push(tokio::spawn(async move {
            for i in (lane..n).step_by(lanes) {
                let job = bench_job(i, &message, actor.unwrap_or(false));
                if actor.is_some() {
                    let (_, handle) = Actor::spawn(None, Anonymizer, job).await?;
                    handle.await?;
                } else {
                    std::hint::black_box(make_copy(&job).ok());
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let wall = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    let cpu = cpu0.zip(cpu_seconds()).map(|(a, b)| (b - a) * 1e6 / n as f64);
    Ok((wall, cpu))
}

/// The anonymizer figures, medians of paired rounds (this host drifts).
pub(super) struct AnonFigures {
    /// Wall µs per actor, one after another, job included.
    pub(super) wall_us: f64,
    /// CPU µs per job done without an actor.
    pub(super) job_us: f64,
    /// CPU µs per bare seal.
    pub(super) seal_cpu_us: f64,
    /// CPU µs per actor with the fan-out's concurrency, job included.
    pub(super) cpu_us: Option<f64>,
    /// `cpu_us` less the job measured in the same round: spawn and stop.
    pub(super) actor_cpu_us: Option<f64>,
    /// Lowest and highest `actor_cpu_us` of the rounds.
    pub(super) actor_cpu_spread: (f64, f64),
}

/// Measures the anonymizer `rounds` times: `n` one after another, `5 n` with
/// `in_flight` at once, the same jobs without actors and the bare seal, each
/// round's actor cost taken against that round's job cost.
pub(super) async fn anonymizer_rounds(
    n: usize,
    in_flight: usize,
    rounds: usize,
) -> anyhow::Result<AnonFigures> {
    let (mut wall, mut jobs, mut seals, mut cpus, mut actors) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds.max(1) {
        wall.push(anonymizer_cost(n, 1, false).await?.0);
        let (_, cpu) = anonymizer_cost(n * 5, in_flight, false).await?;
        let job = job_cost(n * 5);
        let c0 = cpu_seconds();
        let (rate, _) = seal_rate(n * 5);
        seals.push(
            c0.zip(cpu_seconds()).map_or(1e6 / rate, |(a, b)| (b - a) * 1e6 / (n * 5) as f64),
        );
        if let Some(c) = cpu {
            cpus.push(c);
            actors.push(c - job);
        }
        jobs.push(job);
    }
    let actor_cpu_us = (!actors.is_empty()).then(|| median(&mut actors));
    Ok(AnonFigures {
        wall_us: median(&mut wall),
        job_us: median(&mut jobs),
        seal_cpu_us: median(&mut seals),
        cpu_us: (!cpus.is_empty()).then(|| median(&mut cpus)),
        actor_cpu_us,
        actor_cpu_spread: (
            actors.first().copied().unwrap_or(0.0),
            actors.last().copied().unwrap_or(0.0),
        ),
    })
}

/// CPU microseconds per anonymizer job done without an actor: the job built,
/// its copy made (seal and delivery id) and everything dropped, exactly as
/// inside an anonymizer. What an actor costs beyond this is the actor's own.
pub(super) fn job_cost(n: usize) -> f64 {
    let message = std::sync::Arc::new(vec![7u8; MESSAGE]);
    let cpu0 = cpu_seconds();
    let t = Instant::now();
    for i in 0..n {
        let job = bench_job(i, &message, false);
        std::hint::black_box(mlsd_actors::ids::anonymizer::make_copy(&job).ok());
    }
    cpu0.zip(cpu_seconds())
        .map(|(a, b)| (b - a) * 1e6 / n as f64)
        .unwrap_or(t.elapsed().as_secs_f64() * 1e6 / n as f64)
}

/// CPU microseconds per anonymizer job done without an actor in `lanes`
/// tasks on this runtime at once: the same threads kept as busy as the
/// actors keep them, so what an actor costs beyond this is its own and not
/// the job running slower beside another one.
pub(super) async fn job_cost_parallel(n: usize, lanes: usize) -> anyhow::Result<f64> {
    let (wall, cpu) = in_lanes(n, lanes, None).await?;
    Ok(cpu.unwrap_or(wall))
}

/// CPU time (user + system, all threads) this process has used, seconds,
/// to the nanosecond (`CLOCK_PROCESS_CPUTIME_ID`; `/proc/self/stat` counts
/// in 10 ms ticks, too coarse for a few thousand actors).
pub(super) fn cpu_seconds() -> Option<f64> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    (rc == 0).then_some(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
}
