//! The `mlsd` command's parts that drive real clients: the demo, the
//! benchmark and the in-process clusters they run on. They are kept out of
//! the node library (`mlsd-node`), so the server does not link the client
//! library; the `mlsd` binary (src/main.rs) links both.
//!
//! # Layout
//! - [`bench`]: `mlsd bench`, throughput and latency against the machine's limits.
//! - [`demo`]: `mlsd demo`, the eight steps on an in-process cluster.
//! - [`inproc`]: an in-process cluster for the demo, the benchmark and tests.
#![warn(missing_docs)]

pub mod bench;
pub mod demo;
pub mod inproc;
