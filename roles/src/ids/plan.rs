//! What the IDS's logic hands its shell to carry out: a fan-out, with what
//! to keep if it leaves copies missing. Plain data with no crate import,
//! so the role contract can name it as an effect ([`crate::contract::Effect`]).

use std::sync::Arc;

use mlsd_transport::protocol::{RosterEntry, SealedRoster, WelcomeCopy};
use serde::{Deserialize, Serialize};

/// Everything a fan-out needs, decided by the group state machine.
pub struct FanoutPlan {
    /// The send's message id.
    pub message_id: [u8; 32],
    /// The MLS message bytes.
    pub message: Arc<Vec<u8>>,
    /// Recipients (the sender's own capability removed).
    pub recipients: Vec<RosterEntry>,
    /// The Welcome and where it goes.
    pub welcome: Option<(Arc<Vec<u8>>, Vec<WelcomeCopy>)>,
}

impl FanoutPlan {
    /// Copies the fan-out makes: one per recipient and per Welcome copy.
    pub fn copies(&self) -> u64 {
        let welcomes = self.welcome.as_ref().map_or(0, |(_, to)| to.len());
        (self.recipients.len() + welcomes) as u64
    }
}

/// What a retry of a kept send needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeptSend {
    /// The send's epoch.
    pub epoch: u64,
    /// SHA-256 of the accepted send's body: a retry must be identical.
    pub digest: [u8; 32],
    /// `A(epoch)`, to check the retry's MAC.
    pub auth_key: [u8; 32],
    /// The epoch's sealed roster (stored mode).
    pub roster: Option<SealedRoster>,
    /// Weeks since 1970 when it was kept.
    pub week: u32,
}

/// A fan-out the group actor starts for an accepted send: its copies, and
/// what the group keeps should it end with copies missing.
pub struct FanOut {
    /// For the fan-out actor.
    pub plan: FanoutPlan,
    /// What a retry past the accepted-epochs window needs
    /// ([`super::kept`]).
    pub keep: KeptSend,
    /// Whether this is a retry of a kept send (forgotten once complete).
    pub from_kept: bool,
}
