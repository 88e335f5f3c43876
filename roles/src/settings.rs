//! Per-role settings the node reads from `cluster.toml` and the certs dir and
//! hands to every role actor it starts.

use std::sync::Arc;
use std::time::Duration;

/// How the AS admits new client ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// Anyone may register any free client id (development).
    Open,
    /// A new registration needs a one-time token from `mlsd admin enroll`.
    Token,
}

/// AS settings.
#[derive(Clone)]
pub struct AsSettings {
    /// The AS signing key (`as.key`); `None` on nodes without it, which then
    /// refuse AS requests. Zeroized on drop by ed25519-dalek.
    pub signing_key: Option<Arc<ed25519_dalek::SigningKey>>,
    /// Registration policy.
    pub registration: Registration,
    /// How long a binding is valid.
    pub binding_lifetime: Duration,
    /// Quota tickets each identity may take per day (decision D12).
    pub tickets: TicketAllowance,
}

/// Tickets one identity may take per day, per kind (`[tickets]`): its
/// cluster-wide quota of KeyPackage fetches, mailboxes, groups and blob
/// chunks, whichever node it talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TicketAllowance {
    /// `FetchKeyPackages` per day.
    pub fetch: u32,
    /// `OpenMailbox` per day.
    pub mailbox: u32,
    /// `CreateGroup` per day.
    pub group: u32,
    /// `PutBlob` chunks per day.
    pub blob: u32,
}

impl TicketAllowance {
    /// The daily allowance of `kind`.
    pub fn of(&self, kind: mlsd_transport::protocol::tickets::TicketKind) -> u32 {
        use mlsd_transport::protocol::tickets::TicketKind;
        match kind {
            TicketKind::Fetch => self.fetch,
            TicketKind::Mailbox => self.mailbox,
            TicketKind::Group => self.group,
            TicketKind::Blob => self.blob,
        }
    }
}

/// Default daily allowance: plenty for a person's devices (a few hundred
/// contacts added, a new device, a few hundred groups, 2 GiB of attachments
/// in 512 KiB chunks), little for an abuser.
pub const DEFAULT_TICKETS: TicketAllowance =
    TicketAllowance { fetch: 1000, mailbox: 64, group: 500, blob: 4096 };

/// CS settings.
#[derive(Debug, Clone)]
pub struct CsSettings {
    /// Most one-time KeyPackages stored per client.
    pub max_per_client: u32,
    /// Longest accepted KeyPackage lifetime (`not_after - not_before`).
    pub max_lifetime: Duration,
    /// Fetches of one identity's KeyPackages per minute, from anyone,
    /// counted at the identity's CS owner (`RateLimited` beyond).
    pub fetches_per_target_per_minute: u32,
}

/// Default fetches per target identity per minute.
pub const DEFAULT_FETCHES_PER_TARGET_PER_MINUTE: u32 = 60;

/// ODS settings.
#[derive(Debug, Clone)]
pub struct OdsSettings {
    /// Most unacknowledged envelopes per mailbox (`MailboxFull` beyond).
    pub max_queue: u32,
    /// Most envelopes one fetch returns.
    pub max_fetch: u32,
    /// Most bytes of envelopes one page (fetch, subscription backlog) holds,
    /// so that it fits the frame limits of both ends
    /// ([`mlsd_transport::protocol::ods::page_budget`]).
    pub page_bytes: usize,
    /// Most live delivery capabilities per mailbox (`TooManyCapabilities`
    /// beyond): one per KeyPackage waiting at the CS and per group joined.
    pub max_capabilities: u32,
}

/// Default [`OdsSettings::max_capabilities`].
pub const DEFAULT_MAX_CAPABILITIES: u32 = 4096;

/// Anonymizers alive at once per fan-out unless configured: twice the cores.
/// Sealing never waits on I/O, so more in flight buys no parallelism; it only
/// lengthens the run queue that the ODS writer (the one serial stage of a
/// fan-out) waits in on the same worker threads.
pub fn default_anonymizer_concurrency() -> usize {
    2 * std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// IDS settings.
#[derive(Debug, Clone)]
pub struct IdsSettings {
    /// Anonymizer actors alive at once per fan-out.
    pub anonymizer_concurrency: usize,
    /// Idle time after which a group actor stops.
    pub group_idle: Duration,
    /// Whether group, fan-out and anonymizer actors join process groups so
    /// chaos requests can find them. Only with `[chaos] allow`: a join takes
    /// a process-wide lock, once per recipient copy for anonymizers.
    pub chaos_hooks: bool,
    /// Copies per second one group may make (`RateLimited` beyond).
    pub group_copies_per_second: u32,
    /// Days without a send after which a group is collected.
    pub idle_group_days: u32,
}

/// Default copies per second per group.
pub const DEFAULT_GROUP_COPIES_PER_SECOND: u32 = 50_000;
/// Default fan-outs at once per node.
pub const DEFAULT_MAX_FANOUTS: usize = 1024;

/// Default [`IdsSettings::idle_group_days`]: a year.
pub const DEFAULT_IDLE_GROUP_DAYS: u32 = 365;

/// SDS settings.
#[derive(Debug, Clone)]
pub struct SdsSettings {
    /// Largest blob, bytes.
    pub max_blob: u64,
    /// Days after which an upload still unfinished is collected (its
    /// chunks deleted; a blob that never completed is forgotten).
    pub abandoned_upload_days: u32,
}

/// Default queue bound per mailbox.
pub const DEFAULT_MAX_QUEUE: u32 = 10_000;
/// Default fetch page.
pub const DEFAULT_MAX_FETCH: u32 = 256;

/// Everything role logic is configured with.
#[derive(Clone)]
pub struct RoleSettings {
    /// AS settings.
    pub r#as: AsSettings,
    /// CS settings.
    pub cs: CsSettings,
    /// ODS settings.
    pub ods: OdsSettings,
    /// IDS settings.
    pub ids: IdsSettings,
    /// SDS settings.
    pub sds: SdsSettings,
}

/// Default binding lifetime: one year.
pub const DEFAULT_BINDING_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// Default cap of stored one-time KeyPackages per client.
pub const DEFAULT_MAX_KEY_PACKAGES: u32 = 100;
/// Default longest KeyPackage lifetime: 90 days (openmls' own ceiling is
/// higher; a KeyPackage's init key should not live that long).
pub const DEFAULT_MAX_KP_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);

impl Default for RoleSettings {
    fn default() -> Self {
        RoleSettings {
            r#as: AsSettings {
                signing_key: None,
                registration: Registration::Open,
                binding_lifetime: DEFAULT_BINDING_LIFETIME,
                tickets: DEFAULT_TICKETS,
            },
            cs: CsSettings {
                max_per_client: DEFAULT_MAX_KEY_PACKAGES,
                max_lifetime: DEFAULT_MAX_KP_LIFETIME,
                fetches_per_target_per_minute: DEFAULT_FETCHES_PER_TARGET_PER_MINUTE,
            },
            ods: OdsSettings {
                max_queue: DEFAULT_MAX_QUEUE,
                max_fetch: DEFAULT_MAX_FETCH,
                max_capabilities: DEFAULT_MAX_CAPABILITIES,
                page_bytes: mlsd_transport::protocol::ods::page_budget(
                    mlsd_transport::limits::DEFAULT_MAX_FRAME,
                ),
            },
            ids: IdsSettings {
                anonymizer_concurrency: default_anonymizer_concurrency(),
                group_idle: Duration::from_secs(60),
                chaos_hooks: false,
                group_copies_per_second: DEFAULT_GROUP_COPIES_PER_SECOND,
                idle_group_days: DEFAULT_IDLE_GROUP_DAYS,
            },
            sds: SdsSettings { max_blob: 64 * 1024 * 1024, abandoned_upload_days: 7 },
        }
    }
}
