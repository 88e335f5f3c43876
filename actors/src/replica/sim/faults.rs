//! The faults a run injects while its clients write: crashes and restarts,
//! disk wipes, partitions, message loss and slow nodes, all drawn from the
//! run's seed.

use super::*;

/// Injects faults for [`FAULTY`]: crashes and restarts, disk wipes,
/// partitions, message loss, slow nodes.
pub(super) async fn inject(
    sim: &mut Sim,
    rng: &mut StdRng,
) -> Result<BTreeMap<&'static str, u32>, Violation> {
    let count = sim.nodes.len();
    let mut faults = BTreeMap::new();
    let start = Instant::now();
    while start.elapsed() < FAULTY {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(100..900))).await;
        let i = rng.gen_range(0..count);
        let name = sim.nodes[i].name.clone();
        let down = (0..count).filter(|k| !sim.is_up(*k)).count();
        let fault = match rng.gen_range(0..10) {
            // At most a minority down at once, so acknowledged writes have
            // a surviving copy.
            0..=2 if sim.is_up(i) && down < count / 2 => {
                sim.crash(i).await;
                "crash"
            }
            3 | 4 if !sim.is_up(i) => {
                // A disk is wiped whoever else is down or cut off, but not
                // while another wiped replica is still rebuilding: two lost
                // copies of three may hold the only copy of a committed
                // entry, which no rule can bring back.
                let alone = sim.nodes.iter().enumerate().all(|(k, n)| {
                    k == i
                        || sim.shards.iter().all(|s| {
                            !matches!(
                                crate::replica::recovery::load(n.store.as_ref(), *s),
                                Ok(Some(_))
                            )
                        })
                });
                if alone && rng.gen_ratio(1, 2) {
                    sim.wipe(i);
                    sim.trace.note(format_args!("wipe {name}"));
                    sim.start(i, false).await?;
                    "wipe"
                } else {
                    sim.start(i, false).await?;
                    "restart"
                }
            }
            5 | 6 => {
                let size = rng.gen_range(1..=count / 2);
                let mut minority = BTreeSet::new();
                while minority.len() < size {
                    minority.insert(sim.nodes[rng.gen_range(0..count)].id);
                }
                sim.net.partition(&minority);
                let names: Vec<&str> = sim
                    .nodes
                    .iter()
                    .filter(|n| minority.contains(&n.id))
                    .map(|n| n.name.as_str())
                    .collect();
                sim.trace.note(format_args!("partition {names:?} from the rest"));
                *faults.entry("partition").or_default() += 1;
                continue;
            }
            7 => {
                sim.net.heal();
                sim.trace.note("heal");
                *faults.entry("heal").or_default() += 1;
                continue;
            }
            8 => {
                let loss = [0.0, 0.05, 0.2][rng.gen_range(0..3)];
                sim.net.set_loss(loss);
                sim.trace.note(format_args!("loss {loss}"));
                *faults.entry("loss").or_default() += 1;
                continue;
            }
            9 => {
                // Slow, not dead: every message from or to the node takes
                // 150-195 ms, below the election timeout (200 ms) but above
                // half the call timeout, so its proposals time out and may
                // still commit afterwards.
                let floor = Duration::from_millis(rng.gen_range(150..195));
                sim.net.slow(sim.nodes[i].id, floor);
                sim.trace.note(format_args!("slow {name} {}ms", floor.as_millis()));
                *faults.entry("slow").or_default() += 1;
                continue;
            }
            _ => continue,
        };
        sim.trace.note(format_args!("{fault} {name}"));
        *faults.entry(fault).or_default() += 1;
    }
    Ok(faults)
}
