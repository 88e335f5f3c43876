//! `mlsc`: the command-line client of mlsd.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use mlsd_client::{Client, ClientConfig, Connection};
use mlsd_transport::Role;

/// mlsc: talk to an mlsd cluster.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Directory holding this device's identity and MLS state (default: ~/.mlsc).
    #[arg(long, global = true)]
    home: Option<PathBuf>,
    /// Any node of the cluster.
    #[arg(long, env = "MLSC_SERVER", default_value = "127.0.0.1:4433", global = true)]
    server: SocketAddr,
    /// The cluster CA certificate that the node must chain to.
    #[arg(long, default_value = "data/certs/ca.pem", global = true)]
    ca: PathBuf,
    /// The AS public key that bindings must be signed with.
    #[arg(long, default_value = "data/certs/as.pub", global = true)]
    as_key: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Ask the actor of ROLE that owns KEY to answer; prints the node that answered and the round-trip time.
    Ping {
        /// One of as, cs, ids, ods, sds.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Shard key (identity, group id, mailbox id or blob id); picks the owner node.
        #[arg(long, default_value = "")]
        key: String,
    },
    /// Steps 1-2: bind IDENTITY[/DEVICE] to a new signature key at the AS and publish KeyPackages.
    Register {
        /// `alice` or `alice/phone` (device defaults to "default"); lowercase letters, digits, . _ -
        client: String,
        /// Enrollment token from `mlsd admin enroll`, when the AS requires one.
        #[arg(long)]
        token: Option<String>,
        /// One-time KeyPackages to publish (plus one last-resort KeyPackage).
        #[arg(long, default_value_t = 10)]
        count: u32,
    },
    /// Step 2: publish more KeyPackages (plus a new last-resort one).
    Publish {
        /// One-time KeyPackages to publish.
        #[arg(long, default_value_t = 10)]
        count: u32,
    },
    /// Show how many one-time KeyPackages the CS holds for this device.
    Count,
    /// Step 4: show IDENTITY's bindings at the AS and whether each verifies.
    Lookup {
        /// The identity, e.g. bob.
        identity: String,
    },
    /// Steps 3-4: take one KeyPackage per device of IDENTITY from the CS and authenticate each.
    Fetch {
        /// The identity, e.g. bob.
        identity: String,
    },
    /// Revoke this device's binding at the AS.
    Revoke,
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::from_name(s).ok_or_else(|| format!("unknown role {s:?} (as, cs, ids, ods, sds)"))
}

fn main() {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mlsc: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(cli)) {
        eprintln!("mlsc: {e:#}");
        std::process::exit(1);
    }
}

fn config(cli: &Cli) -> anyhow::Result<ClientConfig> {
    let home = match &cli.home {
        Some(h) => h.clone(),
        None => PathBuf::from(
            std::env::var_os("HOME")
                .ok_or_else(|| anyhow::anyhow!("HOME is not set; pass --home"))?,
        )
        .join(".mlsc"),
    };
    Ok(ClientConfig { home, server: cli.server, ca: cli.ca.clone(), as_key: cli.as_key.clone() })
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.cmd {
        Cmd::Ping { role, key } => {
            let conn = Connection::connect(cli.server, &cli.ca).await?;
            let (node, rtt) = conn.ping(*role, key.as_bytes()).await?;
            println!("{node} {:.3} ms", rtt.as_secs_f64() * 1000.0);
        }
        Cmd::Register { client, token, count } => {
            let client =
                if client.contains('/') { client.clone() } else { format!("{client}/default") };
            let mut c = Client::open(&config(&cli)?).await?;
            let b = c.register(&client, token.clone()).await?;
            let stored = c.publish(*count).await?;
            println!(
                "registered {} (serial {}, key {}), {stored} KeyPackages published",
                b.binding.client,
                b.binding.serial,
                hex::encode(&b.binding.signature_key[..8])
            );
        }
        Cmd::Publish { count } => {
            let mut c = Client::open(&config(&cli)?).await?;
            let stored = c.publish(*count).await?;
            println!("{stored} KeyPackages stored");
        }
        Cmd::Count => {
            let c = Client::open(&config(&cli)?).await?;
            let (n, lr) = c.count_key_packages().await?;
            println!("{n} one-time KeyPackages{}", if lr { " and a last-resort one" } else { "" });
        }
        Cmd::Lookup { identity } => {
            let c = Client::open(&config(&cli)?).await?;
            let bindings = c.lookup(identity).await?;
            if bindings.is_empty() {
                anyhow::bail!("no bindings for {identity}");
            }
            for (b, check) in bindings {
                let status = match check {
                    Ok(()) => "verified".to_string(),
                    Err(r) => format!("REJECTED: {r}"),
                };
                println!(
                    "{} key {} serial {} expires {} {status}",
                    b.binding.client,
                    hex::encode(&b.binding.signature_key[..8]),
                    b.binding.serial,
                    b.binding.expires_at
                );
            }
        }
        Cmd::Fetch { identity } => {
            let c = Client::open(&config(&cli)?).await?;
            let (ok, rejected) = c.fetch_key_packages(identity).await?;
            for kp in &ok {
                println!(
                    "{} verified{}",
                    kp.client,
                    if kp.last_resort { " (last resort)" } else { "" }
                );
            }
            for r in &rejected {
                println!("REJECTED: {r}");
            }
            if ok.is_empty() {
                anyhow::bail!("no verified KeyPackage for {identity}");
            }
        }
        Cmd::Revoke => {
            let mut c = Client::open(&config(&cli)?).await?;
            let b = c.revoke().await?;
            println!("revoked {}", b.binding.client);
        }
    }
    Ok(())
}
