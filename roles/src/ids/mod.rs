//! The IDS's decisions: each group's epochs and MACs, one commit per epoch,
//! and the bookkeeping of a fan-out. The actors that run them (group actor,
//! fan-out, anonymizers) are `mlsd_actors::ids`.
//!
//! # Layout
//! - [`logic`]: the IDS's logic as its shells run it: one group's
//!   requests ([`logic::GroupLogic`], a [`crate::RoleLogic`]), what a
//!   fan-out's end keeps, and the sweep for idle groups.
//! - [`group`]: the group state machine (epochs, MACs, one commit per epoch,
//!   rosters, idle groups).
//! - [`plan`]: a fan-out as the logic hands it to the shell (an effect).
//! - [`kept`]: sends kept past the accepted-epochs window while copies are
//!   missing, so their retries complete.
//! - [`tally`]: a fan-out's bookkeeping (when copies leave for the ODS, what
//!   the sender is told).
//! - [`fixtures`]: real MLS messages for the tests of the group core and its
//!   hosts.

pub mod fixtures;
pub mod group;
#[cfg(test)]
mod group_core_tests;
pub mod kept;
pub mod logic;
#[cfg(test)]
mod logic_tests;
pub mod plan;
pub mod tally;
