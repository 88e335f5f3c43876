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
//! - [`group_actor`]: the actor that hosts one group's state machine
//!   (`mlsd_roles::ids::group`, with the kept sends and a fan-out's tally).
//! - [`fanout`]: the fan-out actor.
//! - [`anonymizer`]: the anonymizer actor, envelope sealing and its counters.
//! - [`slots`]: fan-outs at once per node (copy budgets are
//!   `mlsd_roles::budget`).

pub mod anonymizer;
pub mod fanout;
pub mod group_actor;
pub mod host;
#[cfg(test)]
mod host_tests;
pub mod slots;

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
