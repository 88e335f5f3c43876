//! `mlsd`: run a node of an mlsd cluster, or create its certificates.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mlsd::{bench, demo};
use mlsd_node::logging::{self, LogFormat};
use mlsd_node::{certs, ClusterConfig, Node};

/// mlsd: the server side of an MLS (RFC 9420) deployment.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Log line format.
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one node of the cluster until interrupted (creates missing certificates first).
    Run {
        /// Path of the cluster config.
        #[arg(long, default_value = "cluster.toml")]
        config: PathBuf,
        /// Which node of the config to run (default: the first).
        #[arg(long)]
        node: Option<String>,
    },
    /// Create the cluster CA, node certificates and AS key that are missing; never overwrites.
    Certs {
        /// Path of the cluster config.
        #[arg(long, default_value = "cluster.toml")]
        config: PathBuf,
    },
    /// Run the eight steps of the brief on a three-node cluster inside this process, printing each.
    Demo,
    /// Measure fan-out throughput and latency against this machine's limits (docs/performance.md).
    Bench {
        /// Smaller counts (groups up to 1,000 members); a few minutes on 2 cores.
        #[arg(long)]
        quick: bool,
        /// Also write every figure to this JSON file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// One memory figure of `mlsd bench`, measured in a fresh process so no
    /// memory freed by earlier phases hides what is measured (internal).
    #[command(hide = true)]
    BenchMemory {
        /// `mailboxes` or `groups`.
        what: String,
        /// How many to open.
        count: usize,
    },
    /// One stage of `mlsd bench` alone, for profiling it (internal).
    #[command(hide = true)]
    BenchStage {
        /// `enqueue-N`, `fanout`, `fanout3`, `fanout3x1`, `fanout3x3`,
        /// `anonymizer-N`, `idle` or `rebalance` (see `bench::stage`).
        what: String,
        /// Copies, messages, anonymizers, seconds or (rebalance) megabytes.
        count: usize,
        /// Group size of the `fanout` stages; prepared sends per lane of
        /// `rebalance`.
        #[arg(long, default_value_t = 1000)]
        members: usize,
    },
    /// Run the deterministic simulation of the shard layer with the real
    /// logic of the five roles over many seeds, or replay one
    /// (docs/reliability.md); exits non-zero on a violation.
    Sim {
        /// How many seeds to run, from `--from`.
        #[arg(long, default_value_t = 1000)]
        seeds: u64,
        /// The first seed.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Run this one seed only.
        #[arg(long)]
        seed: Option<u64>,
        /// Print every event of each run (also `--verbose`).
        #[arg(long, alias = "verbose")]
        trace: bool,
        /// Make only this run of each seed: `ids`, `ods`, `accounts` (the
        /// AS, CS and SDS) or `delivery` (a send's path from the IDS to the
        /// mailboxes); all four when absent.
        #[arg(long)]
        run: Option<String>,
    },
    /// Operator requests, authenticated with the operator certificate
    /// (operator.pem and operator.key in certs_dir; a node's certificate is
    /// refused).
    Admin {
        #[command(subcommand)]
        cmd: AdminCmd,
    },
    /// The replicated shards and members. `remove` takes the operator
    /// certificate; `status` reads only what the nodes tell each other, so
    /// a node's certificate may read it too.
    Cluster {
        #[command(subcommand)]
        cmd: ClusterCmd,
    },
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// One line per shard (voters, leader, applied index, behind-by) and a
    /// summary; exits 0 only when every shard has a leader and every voter is caught up.
    /// Read with the operator certificate, or a node's (nodes ask each
    /// other the same): it names no identity, group or mailbox.
    Status {
        /// Path of the cluster config.
        #[arg(long, default_value = "cluster.toml")]
        config: PathBuf,
        /// Directory with ca.pem, operator.pem and operator.key (default: the config's certs_dir).
        #[arg(long)]
        certs: Option<PathBuf>,
    },
    /// Take a member out of the cluster: drained first (its replicas move
    /// to the others, then it leaves and its process exits), or with
    /// `--dead` removed at once, its replicas rebuilt from the survivors.
    /// Waits until the cluster's map no longer lists it.
    Remove {
        /// The member to remove.
        node: String,
        /// Path of the cluster config.
        #[arg(long, default_value = "cluster.toml")]
        config: PathBuf,
        /// The node is gone for good: do not move its replicas from it.
        #[arg(long)]
        dead: bool,
        /// Directory with ca.pem, operator.pem and operator.key (default: the config's certs_dir).
        #[arg(long)]
        certs: Option<PathBuf>,
        /// Longest wait, in seconds, for the node to leave.
        #[arg(long, default_value_t = 3600)]
        wait_secs: u64,
    },
    /// Unsafe recovery, on a stopped node: make the surviving voters the only
    /// voters of shards that lost a majority of their voters for good. It
    /// can lose acknowledged writes, and the lost nodes must never start
    /// again with their old data (docs/operations.md).
    Recover {
        /// Path of the cluster config.
        #[arg(long, default_value = "cluster.toml")]
        config: PathBuf,
        /// The stopped node whose replicas survived.
        #[arg(long)]
        node: String,
        /// A shard to recover, ROLE/INDEX (e.g. ods/3), repeated; `cluster`
        /// for the cluster map's own group; or `all` for every shard the
        /// node replicates, the cluster group among them.
        #[arg(long = "shard", required = true)]
        shards: Vec<String>,
        /// The surviving voters, comma-separated (default: this node alone);
        /// run the command on each of them with the same list.
        #[arg(long, value_delimiter = ',')]
        keep: Vec<String>,
        /// Says that you know what this can lose; without it nothing is changed.
        #[arg(long)]
        accept_data_loss: bool,
    },
}

#[derive(Subcommand)]
enum AdminCmd {
    /// Print a one-time enrollment token for IDENTITY (needed to register when `[as] registration = "token"`).
    Enroll {
        /// The identity the token admits, e.g. alice.
        identity: String,
        /// Path of the cluster config.
        #[arg(long, default_value = "cluster.toml")]
        config: PathBuf,
        /// Directory with ca.pem, operator.pem and operator.key (default: the config's certs_dir).
        #[arg(long)]
        certs: Option<PathBuf>,
    },
    /// Revoke CLIENT's binding at the AS (a lost device whose owner has no other); the id stays the identity's.
    Revoke {
        /// The client id, e.g. alice/phone.
        client: String,
        /// Path of the cluster config.
        #[arg(long, default_value = "cluster.toml")]
        config: PathBuf,
        /// Directory with ca.pem, operator.pem and operator.key (default: the config's certs_dir).
        #[arg(long)]
        certs: Option<PathBuf>,
    },
}

/// `mlsd cluster recover`: checks the request, and changes the node's
/// replicas only with `accept_data_loss`.
fn recover(
    config: &std::path::Path,
    node: &str,
    shards: &[String],
    mut keep: Vec<String>,
    accept_data_loss: bool,
) -> anyhow::Result<()> {
    use mlsd_node::shards::unsafe_recovery;
    let cfg = ClusterConfig::load(config)?;
    cfg.node(Some(node))?;
    if keep.is_empty() {
        keep.push(node.to_string());
    }
    let shards = unsafe_recovery::shards(&cfg, node, shards)?;
    let names: Vec<String> = shards.iter().map(|s| s.to_string()).collect();
    eprintln!(
        "UNSAFE RECOVERY of {} shard(s) on {node} ({}): their voters become {} alone.\n\
         Every write the lost voters committed that {node} had not received is lost,\n\
         and the lost nodes must never start again with their old data (delete their data dirs).",
        shards.len(),
        names.join(" "),
        keep.join(",")
    );
    if !accept_data_loss {
        anyhow::bail!("refused: nothing changed; pass --accept-data-loss to go ahead");
    }
    let rt = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
    for r in rt.block_on(unsafe_recovery::recover(&cfg, node, &shards, &keep))? {
        println!(
            "recovered {}: voters {} from term {}; {node} held up to index {} of term {}, anything the lost voters committed after it is gone",
            r.shard,
            r.voters.join(","),
            r.term,
            r.last.0,
            r.last.1
        );
    }
    Ok(())
}

/// Runs the shard simulation for each seed of `seeds`; stops at the first
/// violation, with the events that led to it.
fn sim(seeds: std::ops::Range<u64>, trace: bool, only: Option<&str>) -> anyhow::Result<()> {
    use mlsd_actors::replica::sim;
    let kinds = match only {
        None => sim::Run::ALL.to_vec(),
        Some(name) => vec![sim::Run::named(name).ok_or_else(|| {
            anyhow::anyhow!("no run named {name:?}: ids, ods, accounts or delivery")
        })?],
    };
    let (mut runs, mut commits, mut writes) = (0u64, 0usize, 0usize);
    let start = std::time::Instant::now();
    for seed in seeds {
        match sim::run_kinds(seed, &kinds) {
            Ok(o) => {
                if trace {
                    println!("{}", o.events.join("\n"));
                }
                runs += 1;
                commits += o.commits;
                writes += o.writes;
            }
            Err(v) => {
                println!("{}", v.events.join("\n"));
                anyhow::bail!("{v}");
            }
        }
    }
    println!(
        "{runs} seeds held every invariant in {:.1?}: {commits} commits and {writes} messages acknowledged",
        start.elapsed()
    );
    Ok(())
}

/// mimalloc rather than glibc's allocator: every recipient copy spawns and
/// stops an anonymizer actor, whose task and channels are 128-byte aligned
/// allocations that glibc serves from its slow path (docs/decisions.md D5).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    mlsd_node::install_crypto_provider();
    if let Err(e) = run(cli.cmd) {
        eprintln!("mlsd: {e:#}");
        std::process::exit(1);
    }
}

fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Certs { config } => {
            let cfg = ClusterConfig::load(&config)?;
            let created = certs::ensure_certs(&cfg)?;
            if created.is_empty() {
                println!("all certificates exist in {}", cfg.certs_dir.display());
            }
            for f in created {
                println!("created {}", f.display());
            }
            Ok(())
        }
        Cmd::Admin { cmd: AdminCmd::Enroll { identity, config, certs } } => {
            let cfg = ClusterConfig::load(&config)?;
            let rt = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            let token = rt.block_on(mlsd_node::admin::enroll(&cfg, certs.as_deref(), &identity))?;
            println!("{token}");
            Ok(())
        }
        Cmd::Admin { cmd: AdminCmd::Revoke { client, config, certs } } => {
            let cfg = ClusterConfig::load(&config)?;
            let rt = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            let b = rt.block_on(mlsd_node::admin::revoke(&cfg, certs.as_deref(), &client))?;
            println!("revoked {}", b.binding.client);
            Ok(())
        }
        Cmd::Cluster { cmd: ClusterCmd::Status { config, certs } } => {
            let cfg = ClusterConfig::load(&config)?;
            let rt = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            let report = rt.block_on(mlsd_node::status::status(&cfg, certs.as_deref()));
            print!("{}", report.render());
            if !report.healthy() {
                anyhow::bail!("the cluster is not healthy");
            }
            Ok(())
        }
        Cmd::Cluster { cmd: ClusterCmd::Remove { node, config, dead, certs, wait_secs } } => {
            let cfg = ClusterConfig::load(&config)?;
            let rt = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            let within = std::time::Duration::from_secs(wait_secs);
            let progress = |p: &str| eprintln!("{p}");
            let map = rt.block_on(mlsd_node::removal::remove(
                &cfg,
                certs.as_deref(),
                &node,
                dead,
                within,
                progress,
            ))?;
            println!("{node} removed; the cluster has {} member(s)", map.members.len());
            Ok(())
        }
        Cmd::Cluster {
            cmd: ClusterCmd::Recover { config, node, shards, keep, accept_data_loss },
        } => recover(&config, &node, &shards, keep, accept_data_loss),
        Cmd::Bench { quick, json } => {
            let rt = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            rt.block_on(bench::run(bench::BenchOpts { quick, json }))
        }
        Cmd::BenchMemory { what, count } => {
            let rt = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            rt.block_on(bench::memory_child(&what, count))
        }
        Cmd::BenchStage { what, count, members } => {
            let rt = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            rt.block_on(bench::stage(&what, count, members))
        }
        Cmd::Sim { seeds, from, seed, trace, run } => {
            let range = match seed {
                Some(s) => s..s.saturating_add(1),
                None => from..from.saturating_add(seeds),
            };
            sim(range, trace, run.as_deref())
        }
        Cmd::Demo => {
            let rt = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            rt.block_on(demo::run())
        }
        Cmd::Run { config, node } => {
            let cfg = ClusterConfig::load(&config)?;
            let rt = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            rt.block_on(async move {
                let mut node = Node::start(cfg, node.as_deref()).await?;
                let removed = node.removed();
                let stopped_itself = tokio::select! {
                    _ = shutdown_signal() => false,
                    _ = removed => {
                        tracing::warn!("removed from the cluster: shutting down");
                        false
                    }
                    _ = node.supervisor_stopped() => true,
                };
                node.shutdown().await;
                if stopped_itself {
                    anyhow::bail!("a role actor failed repeatedly; node stopped");
                }
                Ok(())
            })
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
