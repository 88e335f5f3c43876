use super::*;

/// How many seeds `cargo test` runs (`MLSD_SIM_SEEDS` for more).
fn seeds() -> u64 {
    std::env::var("MLSD_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(200)
}

#[test]
fn the_shard_layer_keeps_its_invariants_under_seeded_faults() {
    let mut commits = 0;
    let mut faults: BTreeMap<&str, u32> = BTreeMap::new();
    for seed in 0..seeds() {
        let out = run(seed).unwrap_or_else(|v| {
            panic!("{v}\n{}", v.events[v.events.len().saturating_sub(60)..].join("\n"))
        });
        commits += out.commits;
        for (k, v) in out.faults {
            *faults.entry(k).or_default() += v;
        }
    }
    // The runs did exercise the faults and still made progress.
    for kind in ["crash", "wipe", "partition", "restart", "slow"] {
        assert!(faults.get(kind).copied().unwrap_or(0) > 0, "no {kind} in any run: {faults:?}");
    }
    assert!(commits > 0);
    eprintln!("{} seeds: {commits} commits accepted, faults {faults:?}", seeds());
}

/// A leader cut off from the others keeps openraft's leader state, but
/// within two election timeouts it no longer counts as leading: `ready`
/// answers `NotLeader` at once instead of deciding (before the lease it
/// answered from its cached term and decided on a lost leadership).
#[test]
fn a_cut_off_leader_stops_deciding_within_two_election_timeouts() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    super::super::runtime::seed_thread(7);
    rt.block_on(async {
        let root = tempfile::tempdir().unwrap();
        let nodes = fresh_nodes(&root, 3);
        let members = nodes.iter().map(|n| (n.id, Member { name: n.name.clone() })).collect();
        let mut sim = Sim {
            seed: 7,
            kind: Run::Ids,
            shards: vec![IDS_SHARD],
            root,
            config: raft_config(),
            members,
            nodes,
            net: SimNet::new(7),
            trace: Trace { start: Instant::now(), events: Arc::default() },
            ledger: Arc::default(),
        };
        for i in 0..3 {
            sim.start(i, true).await.unwrap();
        }
        let stop = Arc::new(AtomicBool::new(false));
        tokio::spawn(heartbeats(sim.net.clone(), stop.clone()));
        let leader = loop {
            if let Some(r) = sim.net.replicas().into_iter().find(|r| r.leading()) {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let term = leader.ready().await.unwrap();
        let id = leader.raft.metrics().borrow().id;
        sim.net.partition(&[id].into());
        // The election timeout is 200-400 ms here.
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(leader.is_leader(), "openraft still calls it leader");
        assert!(!leader.leading(), "but its lease ran out");
        let t = Instant::now();
        match leader.ready().await {
            Err(super::super::CommitError::NotLeader { .. }) => {}
            other => panic!("a cut-off leader of term {term} answered {other:?}"),
        }
        assert!(t.elapsed() < Duration::from_millis(10), "at once: {:?}", t.elapsed());
        // The other two elect a leader of a later term.
        let others: Vec<_> =
            sim.net.replicas().into_iter().filter(|r| !Arc::ptr_eq(r, &leader)).collect();
        let elected = Instant::now();
        while !others.iter().any(|r| r.leading() && r.raft.metrics().borrow().current_term > term) {
            assert!(elected.elapsed() < Duration::from_secs(5), "no new leader");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.store(true, Ordering::Relaxed);
        for r in sim.net.replicas() {
            let _ = r.raft.shutdown().await;
        }
    });
}

/// Seeds that break one commit per epoch without the fence a timed-out
/// proposal puts on its shard (`RaftShard::fence`): a commit timed out over
/// a slow node, the other committer's commit for the same epoch was decided
/// on state without it, both applied, and the first one's retry was
/// recognized as accepted. With the real IDS logic, 2 of the seeds 0-200
/// fail so without the fence (30 of 0-40 did with the earlier miniature
/// role); these stay as regression cases.
#[test]
fn seeds_that_take_one_epoch_twice_without_the_fence() {
    for seed in [30, 199] {
        if let Err(v) = run(seed) {
            panic!("{v}\n{}", v.events[v.events.len().saturating_sub(60)..].join("\n"));
        }
    }
}

/// Seeds whose ODS run, without the fence of a timed-out proposal, had the
/// next batch decided on state without the unknown one: both took the same
/// sequence number of a mailbox, the later write replaced the earlier, and
/// the earlier batch's retry was told its copy was stored there (`copies
/// ... both acknowledged`). 5 of the seeds 41-240 fail so without the
/// fence; these stay as regression cases.
#[test]
fn seeds_whose_ods_reused_a_sequence_number_without_the_fence() {
    for seed in [86, 184] {
        if let Err(v) = run(seed) {
            panic!("{v}\n{}", v.events[v.events.len().saturating_sub(60)..].join("\n"));
        }
    }
}

/// A node crashed while its proposal of a commit was in flight and
/// restarted leading the same term (openraft keeps a committed vote for
/// itself); the fence of its earlier run was gone with its memory, so
/// another commit for the same epoch was decided before the first one's
/// entry, still in its log, committed, and both were acknowledged. A fresh
/// replica now waits for a barrier before its first decision
/// (`RaftShard::since_start`).
#[test]
fn a_leader_restarted_in_its_term_decides_after_what_its_log_held() {
    if let Err(v) = run(224) {
        panic!("{v}\n{}", v.events[v.events.len().saturating_sub(60)..].join("\n"));
    }
}

/// `MLSD_SIM_SEED=S cargo test -p mlsd-actors replay -- --ignored
/// --nocapture` prints one run's events.
#[test]
#[ignore]
fn replay() {
    let seed = std::env::var("MLSD_SIM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    match run(seed) {
        Ok(o) => {
            eprintln!("{}\nok: {} commits, {} writes", o.events.join("\n"), o.commits, o.writes)
        }
        Err(v) => panic!("{}\n{v}", v.events.join("\n")),
    }
}

#[test]
fn a_seed_replays_exactly() {
    for seed in [2, 7, 12, 19] {
        let a = run(seed).unwrap();
        let b = run(seed).unwrap();
        assert_eq!(a.events, b.events, "seed {seed} ran differently twice");
        assert!(a.commits > 0 && a.writes > 0, "{a:?}");
    }
}

/// The accounts run does what its checks are about: two parties race for
/// each identity (one bound, the other waiting for approval), fetches hand
/// out KeyPackages, blobs are uploaded. Its checks fail when the AS binds
/// a second party's device of a claimed identity (seed 0: `u0 was bound to
/// p0, holds ["u0/p0", "u0/p1"]`) or the CS keeps a KeyPackage it handed
/// out (seed 0: `a KeyPackage of u0/p0 went to paid fetches ...`), both
/// checked by hand (docs/reliability.md).
#[test]
fn the_accounts_run_races_for_identities_and_hands_out_key_packages() {
    let out = run_kinds(3, &[Run::Accounts]).unwrap_or_else(|v| panic!("{v}"));
    for what in [": bound, serial", ": pending", ": Published", " 1 KeyPackages", " uploaded"] {
        assert!(out.events.iter().any(|e| e.contains(what)), "no {what:?} in {:#?}", out.events);
    }
    assert!(out.writes > 10, "{out:?}");
}
