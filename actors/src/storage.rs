//! Node storage: the RocksDB store behind the roles' storage traits
//! ([`mlsd_roles::storage`], re-exported here so hosts and the node name one
//! module for both).
//!
//! One RocksDB instance per node, one column family per role (plus `meta` for
//! the node itself and `raft` for the shards' logs), so a role's keys never
//! collide with another's and a role's data can be moved as a unit.

pub use mlsd_roles::storage::*;

mod rocks;
pub use rocks::{read_all, Contents, RocksStore};
