//! The deterministic core of mlsd: what the five services decide, with no
//! I/O, no clock and no randomness of its own.
//!
//! Each role's logic is a state machine: it takes a request, a context (the
//! node's name, a read view of storage, the time, random bytes) and returns
//! a [`Decision`]: the reply, the writes to make durable first, and the I/O
//! to do after. The same inputs give the same decision, so unit tests drive
//! it on the in-memory store with a fixed clock and fixed random bytes, and
//! the shells (`mlsd_actors`: role hosts, group actors, the replicated store)
//! only carry decisions out. This crate depends on no async runtime, actor
//! system, socket library, Raft or RocksDB; `tests/layout.rs` checks that
//! with `cargo tree` on every `make test`.
//!
//! # Layout
//! - [`contract`]: what every role's logic implements ([`RoleLogic`],
//!   [`Decision`], [`Effect`]) and what it may use ([`RoleContext`]).
//! - [`storage`]: the [`View`] logic reads and the [`Store`] hosts write (one
//!   keyspace per role), and the in-memory [`MemStore`].
//! - [`record`]: the format version every stored record starts with, and the
//!   one way to read one back.
//! - `once`: signed AS and CS requests take effect at most once; `sig`:
//!   signature and timestamp checks; [`budget`]: rates that may go into
//!   debt (fan-out copies, KeyPackage fetches).
//! - [`settings`]: per-role settings from the cluster config (data only).
//! - [`push`]: where a push notification may go (URL parsing and the
//!   operator's policy, pure); the node's push client applies it before
//!   each POST, and the ODS bounds a sealed endpoint by [`push::MAX_URL`].
//! - [`r#as`], [`cs`], [`ids`], [`ods`], [`sds`]: one module per service;
//!   [`cs_fixtures`]: real KeyPackages for the simulation of the CS.
#![warn(missing_docs)]

pub mod r#as;
pub mod budget;
pub mod contract;
pub mod cs;
pub mod cs_fixtures;
pub mod ids;
pub mod ods;
mod once;
/// Push endpoints' rules, kept with the wire types so clients check a URL
/// by the same rules before sealing it.
pub use mlsd_transport::push;
pub mod record;
pub mod sds;
pub mod settings;
mod sig;
pub mod storage;

pub use contract::{Decision, Effect, RoleContext, RoleLogic};
pub use settings::RoleSettings;
pub use storage::{Batch, MemStore, Space, Store, StoreError, View};
