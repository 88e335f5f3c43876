//! Role logic of mlsd: the five services as state machines, the ractor actors
//! that host them, and the node's storage.
//!
//! The state machines take a request, the current time and storage and return
//! a response; they know nothing of sockets or actors, so tests drive them
//! directly. The actors are thin shells that own one state machine each.
//!
//! # Layout
//! - [`storage`]: the [`Store`] trait (what the roles need) and its RocksDB
//!   implementation, one column family per role.
//! - [`record`]: the format version every stored record starts with, and the
//!   one way to read one back; [`layout`]: the data dir's layout version and
//!   the migration of older layouts.
//! - [`role`]: the generic role actor, its message type and the
//!   [`RoleLogic`] trait every service implements.
//! - [`push`]: UnifiedPush notifications (HTTP POST) for the ODS.
//! - [`settings`]: per-role settings from the cluster config.
//! - [`r#as`], [`cs`], [`ids`], [`ods`], [`sds`]: one module per service.
#![warn(missing_docs)]

pub mod r#as;
pub mod cs;
pub mod ids;
pub mod layout;
pub mod ods;
pub mod push;
pub mod record;
pub mod role;
pub mod sds;
pub mod settings;
mod sig;
pub mod storage;

pub use role::{logic_for, RoleActor, RoleArgs, RoleContext, RoleLogic, RoleMsg, Router};
pub use settings::RoleSettings;
#[cfg(feature = "rocksdb")]
pub use storage::RocksStore;
pub use storage::{Batch, Space, Store, StoreError};
