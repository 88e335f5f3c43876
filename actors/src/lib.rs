//! Role logic of mlsd: the five services as state machines, the ractor actors
//! that host them, and the node's storage.
//!
//! The state machines take a request, the current time and a read view of
//! storage and return a decision: the reply, the writes to make durable
//! first, and the I/O to do after. They know nothing of sockets, actors or
//! disks, so tests drive them on an in-memory store. The actors are thin
//! hosts that own one state machine each and apply its writes.
//!
//! # Layout
//! - [`contract`]: what every role's logic implements ([`RoleLogic`],
//!   [`Decision`], [`Effect`]) and what it may use ([`RoleContext`],
//!   [`Router`]); it imports no role and no host.
//! - [`storage`]: the [`View`] logic reads and the [`Store`] hosts write
//!   (one column family per role), in RocksDB and in memory ([`MemStore`]).
//! - [`record`]: the format version every stored record starts with, and the
//!   one way to read one back; [`layout`]: the data dir's layout version and
//!   the migration of older layouts.
//! - [`role`]: what every role host shares (its message type, arguments,
//!   applying a decision) and the generic host of the AS, CS and SDS; the IDS
//!   and ODS hosts are `ids::host` and `ods::host`.
//! - `once`: signed AS and CS requests take effect at most once;
//!   [`budget`]: rates that may go into debt (fan-out copies, KeyPackage
//!   fetches).
//! - [`push`]: UnifiedPush notifications (HTTP POST) for the ODS.
//! - [`settings`]: per-role settings from the cluster config (data only).
//! - [`services`]: the live handles (push queue, fan-out slots) a node
//!   shares among its role hosts.
//! - [`r#as`], [`cs`], [`ids`], [`ods`], [`sds`]: one module per service.
#![warn(missing_docs)]

pub mod r#as;
pub mod budget;
pub mod contract;
pub mod cs;
pub mod ids;
pub mod layout;
pub mod ods;
mod once;
pub mod push;
pub mod record;
pub mod replica;
pub mod role;
pub mod sds;
pub mod services;
pub mod settings;
mod sig;
pub mod storage;

pub use contract::{Decision, Effect, RoleContext, RoleLogic, Router};
pub use role::{logic_for, RoleActor, RoleArgs, RoleMsg};
pub use services::NodeServices;
pub use settings::RoleSettings;
#[cfg(feature = "rocksdb")]
pub use storage::RocksStore;
pub use storage::{Batch, MemStore, Space, Store, StoreError, View};
