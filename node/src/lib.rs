//! The mlsd node: reads `cluster.toml`, hosts its roles' actors under a
//! supervisor, serves clients and peers over QUIC and routes every request to
//! the node that owns its key. It does not link the client library: the
//! `mlsd` command's demo, benchmark and in-process clusters, which drive real
//! clients, live in the `mlsd` crate (`cli/`) on top of this one.
//!
//! # Layout
//! - [`config`]: `cluster.toml` parsing and validation.
//! - [`admin`]: operator requests (enrollment tokens) over the node protocol.
//! - [`certs`]: the cluster CA and node certificates on disk.
//! - [`limiter`]: per-address rate limits applied where requests enter.
//! - [`mixer`]: the IDS's per-ODS-node shuffled batches and mixing window.
//! - [`coalescer`]: the ODS's group commit of enqueue batches that wait at once.
//! - [`dispatch`]: frame-sized enqueue batches to each ODS owner, peer or local.
//! - [`local`]: calls to this node's own role actors.
//! - [`parcels`]: a fan-out's copies with the slots their outcomes go to,
//!   the one batch type from the router to the ODS commit.
//! - [`routing`]: the shard of a key and its voters, where a request goes
//!   first.
//! - [`shards`]: the replicated shards (openraft groups) this node holds.
//! - [`status`]: `mlsd cluster status`, every node's view put together.
//! - [`removal`]: `mlsd cluster remove`, a member drained or taken for dead.
//! - [`supervisor`]: the node supervisor that restarts role actors.
//! - [`peers`]: pooled node-to-node connections for forwarding.
//! - [`join`]: waiting on many calls at once from one task.
//! - [`server`]: the QUIC server, split by job: accepting and limits, client
//!   and node streams, subscriptions, node requests, delivery to owners.
//! - [`node`]: [`Node`], which ties the above together; used by the `mlsd` command and tests.
//! - [`logging`]: tracing set-up for the binary.
#![warn(missing_docs)]

pub mod admin;
pub mod certs;
pub mod coalescer;
pub mod config;
pub mod dispatch;
pub mod join;
pub mod limiter;
pub mod local;
pub mod logging;
pub mod mixer;
pub mod node;
pub mod parcels;
pub mod peers;
pub mod removal;
pub mod routing;
pub mod server;
pub mod shards;
pub mod status;
pub mod supervisor;

pub use config::{ClusterConfig, ConfigError};
pub use node::{Node, NodeError};

/// Chooses `ring` as the process-wide rustls provider. Our own configs name
/// ring explicitly, but a dependency that calls `ClientConfig::builder()`
/// would panic if two providers were compiled in; calling this first (as the
/// binaries and tests do) rules that out.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
