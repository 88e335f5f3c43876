//! Client library for mlsd, and the `mlsc` CLI built on it.
//!
//! # Layout
//! - [`connection`]: a QUIC connection to any node of the cluster, verified
//!   against the cluster CA, sending one request per stream.
//!
//! MLS state (openmls), registration, KeyPackages, groups and mailboxes build
//! on this connection in the following issues.
#![warn(missing_docs)]

pub mod connection;

pub use connection::{ClientError, Connection};
