//! `mlsc`'s command line: every command, subcommand and flag, and what
//! each is for (clap derives the parser and `--help` from these).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use mlsd_transport::Role;

/// One-time KeyPackages a registration publishes unless told otherwise.
pub(crate) const DEFAULT_KEY_PACKAGES: u32 = 10;

/// mlsc: talk to an mlsd cluster.
#[derive(Parser)]
#[command(version)]
pub(crate) struct Cli {
    /// Directory holding this device's identity and MLS state (default: ~/.mlsc).
    #[arg(long, global = true)]
    pub(crate) home: Option<PathBuf>,
    /// Any node of the cluster.
    #[arg(long, env = "MLSC_SERVER", default_value = "127.0.0.1:4433", global = true)]
    pub(crate) server: SocketAddr,
    /// The cluster CA certificate that the node must chain to.
    #[arg(long, default_value = "data/certs/ca.pem", global = true)]
    pub(crate) ca: PathBuf,
    /// The AS public key that bindings must be signed with.
    #[arg(long, default_value = "data/certs/as.pub", global = true)]
    pub(crate) as_key: PathBuf,
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Roster {
    /// The IDS keeps the roster, encrypted under a key each send carries.
    Stored,
    /// Every send carries the roster; the IDS keeps none.
    Client,
}

#[derive(Subcommand)]
pub(crate) enum DeviceCmd {
    /// Show this identity's devices and the registrations awaiting approval.
    List,
    /// Approve the pending registration of CLIENT, a new device of this identity.
    Approve {
        /// e.g. alice/laptop
        client: String,
        /// Approve only if the new device's key has this fingerprint (as its `mlsc register` printed).
        #[arg(long)]
        fingerprint: Option<String>,
    },
    /// Revoke CLIENT, another device of this identity (or decline its pending registration).
    Revoke {
        /// e.g. alice/phone
        client: String,
    },
    /// Admit CLIENT, a new device of this identity, by an approval code to
    /// type into it (`mlsc register CLIENT --code CODE`): good once, for an
    /// hour, past any pending requests strangers made for this identity.
    Admit {
        /// e.g. alice/laptop
        client: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum MailboxCmd {
    /// The delivery capabilities this device issued: serial and whether a group uses it.
    Caps,
    /// Revoke capabilities by serial (as `caps` lists them; 0 is the legacy one):
    /// copies through them are refused from now on.
    Revoke {
        /// Serials to revoke.
        #[arg(required = true)]
        serials: Vec<u64>,
    },
}

#[derive(Subcommand)]
pub(crate) enum GroupCmd {
    /// Create a group with you as its only member.
    Create {
        /// Local name of the group (members joining later read it from the SDS).
        name: String,
        /// Where the IDS gets the recipients from.
        #[arg(long, value_enum, default_value = "stored")]
        roster: Roster,
    },
    /// Add every device of each IDENTITY (KeyPackages fetched and verified) in one commit.
    Add {
        /// The group.
        name: String,
        /// Identities to add.
        #[arg(required = true)]
        identities: Vec<String>,
    },
    /// Remove every device of each IDENTITY in one commit.
    Remove {
        /// The group.
        name: String,
        /// Identities to remove.
        #[arg(required = true)]
        identities: Vec<String>,
    },
    /// List your groups.
    List,
    /// List a group's members.
    Members {
        /// The group.
        name: String,
    },
    /// Update your own leaf (fresh keys) in one commit.
    Update {
        /// The group.
        name: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
    /// Ask the actor of ROLE that owns KEY to answer; prints the node that answered and the round-trip time.
    Ping {
        /// One of as, cs, ids, ods, sds.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Shard key (identity, group id, a mailbox's shard hint: the first two bytes of its id, or blob id); picks the owner node.
        #[arg(long, default_value = "")]
        key: String,
    },
    /// Steps 1-2: bind IDENTITY[/DEVICE] to a new signature key at the AS, open a mailbox, publish KeyPackages.
    Register {
        /// `alice` or `alice/phone` (device defaults to "default"); lowercase letters, digits, . _ -
        client: String,
        /// Enrollment token from `mlsd admin enroll`, when the AS requires one.
        #[arg(long, conflicts_with = "code")]
        token: Option<String>,
        /// Approval code from `mlsc device admit` on a live device of this
        /// identity: binds this new device at once.
        #[arg(long)]
        code: Option<String>,
        /// One-time KeyPackages to publish (plus one last-resort KeyPackage).
        #[arg(long, default_value_t = DEFAULT_KEY_PACKAGES)]
        count: u32,
        /// UnifiedPush endpoint to notify when this device is offline: an
        /// https:// URL (http:// only where the operator allows it).
        /// Checked before anything is registered.
        #[arg(long)]
        push: Option<String>,
    },
    /// Step 2: publish more KeyPackages (plus a new last-resort one).
    Publish {
        /// One-time KeyPackages to publish.
        #[arg(long, default_value_t = 10)]
        count: u32,
    },
    /// Show how many one-time KeyPackages the CS holds for this device.
    Count,
    /// Step 4: show IDENTITY's bindings at the AS and whether each verifies.
    Lookup {
        /// The identity, e.g. bob.
        identity: String,
    },
    /// Steps 3-4: take one KeyPackage per device of IDENTITY from the CS and authenticate each.
    Fetch {
        /// The identity, e.g. bob.
        identity: String,
    },
    /// Revoke this device's binding at the AS.
    Revoke,
    /// The quota tickets this device holds, per kind (fetch, mailbox, group, blob).
    Tickets,
    /// This identity's devices: list them, approve a new one, revoke one.
    Device {
        #[command(subcommand)]
        cmd: DeviceCmd,
    },
    /// This device's mailbox: its delivery capabilities, and revoking one a spammer uses.
    Mailbox {
        #[command(subcommand)]
        cmd: MailboxCmd,
    },
    /// Groups: create, add, remove, list, members, update.
    Group {
        #[command(subcommand)]
        cmd: GroupCmd,
    },
    /// Steps 5-7: send TEXT to group NAME; retried (same message id) until acknowledged.
    Send {
        /// The group.
        name: String,
        /// The message.
        text: String,
        /// Give up after this many seconds (the message stays in the outbox).
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// Send even if the group has members the AS does not vouch for.
        #[arg(long)]
        allow_unverified: bool,
    },
    /// Encrypt PATH, upload it to the SDS and send its reference to group NAME.
    SendFile {
        /// The group.
        name: String,
        /// The file.
        path: PathBuf,
        /// Give up after this many seconds (the message stays in the outbox).
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// Send even if the group has members the AS does not vouch for.
        #[arg(long)]
        allow_unverified: bool,
    },
    /// Process everything waiting (Welcomes, commits, messages) and print the messages.
    Recv {
        /// If nothing is waiting, wait up to this many seconds for something.
        #[arg(long, default_value_t = 0)]
        wait: u64,
    },
    /// Like recv, live, until interrupted.
    Listen,
}

pub(crate) fn parse_role(s: &str) -> Result<Role, String> {
    Role::from_name(s).ok_or_else(|| format!("unknown role {s:?} (as, cs, ids, ods, sds)"))
}
