//! `mlsc`: the command-line client of mlsd.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mlsd_client::Connection;
use mlsd_transport::Role;

/// mlsc: talk to an mlsd cluster.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Any node of the cluster.
    #[arg(long, env = "MLSC_SERVER", default_value = "127.0.0.1:4433", global = true)]
    server: SocketAddr,
    /// The cluster CA certificate that the node must chain to.
    #[arg(long, default_value = "data/certs/ca.pem", global = true)]
    ca: PathBuf,
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

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Ping { role, key } => {
            let conn = Connection::connect(cli.server, &cli.ca)
                .await
                .with_context(|| format!("ping {role}"))?;
            let (node, rtt) = conn.ping(role, key.as_bytes()).await?;
            println!("{node} {:.3} ms", rtt.as_secs_f64() * 1000.0);
            Ok(())
        }
    }
}
