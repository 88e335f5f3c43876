//! The shells of mlsd's roles: the ractor actors that host the role logic
//! of `mlsd_roles`, the node's storage on RocksDB, and the shards' Raft
//! replicas.
//!
//! The logic decides (`mlsd_roles`: request, context and a storage view in;
//! reply, writes and effects out); the actors here only carry its decisions
//! out: they ship the writes to the shard's replicas, reply once they are
//! durable, and then do the I/O (live delivery, push notifications,
//! fan-outs).
//!
//! # Layout
//! - [`role`]: what every role host shares (its message type, arguments,
//!   applying a decision) and the generic host of the AS, CS and SDS.
//! - [`ids`]: the IDS's actors (role actor, group actors, fan-outs,
//!   anonymizers); [`ods`]: the ODS host with its live subscribers.
//! - [`router`]: how hosts reach other roles and subscribers ([`Router`]).
//! - [`storage`]: the RocksDB store behind the roles' storage traits;
//!   [`layout`]: the data dir's layout version and the migration of older
//!   layouts.
//! - [`replica`]: shards as Raft groups (openraft) over the node's storage,
//!   and their simulation.
//! - [`push`]: UnifiedPush notifications (HTTP POST) for the ODS.
//! - [`services`]: the live handles (push queue, fan-out slots) a node
//!   shares among its role hosts.
#![warn(missing_docs)]

pub mod ids;
pub mod layout;
pub mod ods;
pub mod push;
pub mod replica;
pub mod role;
pub mod router;
pub mod services;
pub mod storage;

pub use role::{logic_for, RoleActor, RoleArgs, RoleMsg};
pub use router::{Router, Sink};
pub use services::NodeServices;
pub use storage::RocksStore;
