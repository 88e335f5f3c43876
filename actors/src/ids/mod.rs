//! IDS (message reception) orders each group's commits and anonymizes every
//! copy in its fan-out (steps 5 and 6 of the brief).
//!
//! Actor tree, under the node's IDS role actor:
//! ```text
//! IDS role actor ──(one per active group, spawned on demand)── group actor
//!     group actor ──(one per accepted message)── fan-out actor
//!         fan-out actor ──(one per recipient, bounded)── anonymizer actor
//! ```
//! The role actor ([`host`]) routes `CreateGroup` and `Send` to the group's
//! actor and drops a dead or idle one from its map; the next request respawns
//! it, and it reloads its state from storage.
//!
//! # Layout
//! - [`host`]: the IDS role actor, which hosts the group actors.
//! - [`group`]: the group state machine (epochs, MACs, one commit per epoch);
//!   [`group_actor`]: the actor that hosts one group's.
//! - [`fanout`]: the fan-out actor; [`tally`]: its bookkeeping (when copies
//!   leave for the ODS, what the sender is told), apart from the actors.
//! - [`anonymizer`]: the anonymizer actor, envelope sealing and its counters.
//! - [`kept`]: sends kept past the accepted-epochs window while copies are
//!   missing, so their retries complete.
//! - [`slots`]: fan-outs at once per node (copy budgets are `crate::budget`).

pub mod anonymizer;
pub mod fanout;
pub mod group;
pub mod group_actor;
#[cfg(test)]
mod group_core_tests;
pub mod host;
pub mod kept;
pub mod slots;
pub mod tally;

use mlsd_transport::protocol::ChaosTarget;

/// The process group (ractor `pg`) that `node`'s live actors of `kind` join,
/// so chaos tools can find and kill them through the actor runtime.
pub fn process_group(node: &str, kind: ChaosTarget) -> String {
    match kind {
        ChaosTarget::Role(r) => format!("{node}/{r}"),
        ChaosTarget::Group => format!("{node}/ids/groups"),
        ChaosTarget::Fanout => format!("{node}/ids/fanouts"),
        ChaosTarget::Anonymizer => format!("{node}/ids/anonymizers"),
    }
}
