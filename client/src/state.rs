//! What a client keeps and reports, apart from the code that changes it: the
//! metadata of its groups, the verdicts of its member checks, and the events
//! `receive` returns. Every other module of the client builds on these; this
//! one imports none of them.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use mlsd_transport::protocol::RosterMode;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Home file of the verdicts.
pub(crate) const MEMBERS_FILE: &str = "members.v1";

/// Unix time in seconds (0 if the clock is before 1970).
pub(crate) fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// What the client keeps about a group besides the MLS state.
#[derive(Clone, Serialize, Deserialize)]
pub struct GroupMeta {
    /// Local name.
    pub name: String,
    /// MLS group id.
    pub id: Vec<u8>,
    /// Roster mode at the IDS.
    pub mode: RosterMode,
    /// `K(me, e)` for recent epochs, newest last.
    pub keys: Vec<(u64, Zeroizing<[u8; 32]>)>,
    /// Whether we are still a member.
    pub active: bool,
}

/// Something `receive` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// We were added to a group.
    Joined {
        /// Local name of the group.
        group: String,
    },
    /// An application message.
    Message {
        /// Local name of the group.
        group: String,
        /// Sender's client id.
        sender: String,
        /// The text.
        text: String,
    },
    /// A commit moved a group to a new epoch.
    Commit {
        /// Local name of the group.
        group: String,
        /// The new epoch.
        epoch: u64,
    },
    /// A member of a group is not vouched for by the AS (its client id has
    /// no live binding to its key): sends to the group are refused until it
    /// is removed.
    Unverified {
        /// Local name of the group.
        group: String,
        /// The client id it claims.
        member: String,
        /// Why it failed.
        reason: String,
    },
    /// We were removed from a group.
    Removed {
        /// Local name of the group.
        group: String,
    },
    /// A file was announced but could not be downloaded or failed its check.
    FileFailed {
        /// Local name of the group.
        group: String,
        /// Sender's client id.
        sender: String,
        /// The file's name.
        name: String,
        /// What went wrong.
        reason: String,
    },
    /// A file arrived, was downloaded, decrypted, checked and saved.
    File {
        /// Local name of the group.
        group: String,
        /// Sender's client id.
        sender: String,
        /// Where it was saved.
        path: std::path::PathBuf,
    },
}

/// One member's verdict: `None` when verified, else why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Verdict {
    pub(crate) client: String,
    pub(crate) key: Vec<u8>,
    pub(crate) refused: Option<String>,
}

/// Every group's verdicts, by group id.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Checks {
    pub(crate) groups: HashMap<Vec<u8>, Vec<Verdict>>,
}

impl Checks {
    pub(crate) fn verdict(&self, gid: &[u8], client: &str, key: &[u8]) -> Option<&Verdict> {
        self.groups.get(gid)?.iter().find(|v| v.client == client && v.key == key)
    }
}
