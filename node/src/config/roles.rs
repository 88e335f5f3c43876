//! The role tables `[as]`, `[cs]`, `[ods]`, `[ids]` and `[sds]`: each setting's
//! meaning and default beside the key that sets it, and each table's checks
//! in its own `parse`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::check::{bounded, days, positive, small};
use super::ConfigError;

/// `[as]`: registration policy and binding lifetime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsConfig {
    /// `registration = "open" | "token"`; open (development) by default.
    pub token_required: bool,
    /// `binding_lifetime_days`, default 365.
    pub binding_lifetime: Duration,
    /// `lookup_rate_per_minute`: lookup pages one client address may ask
    /// for per minute at each node (lookups are unsigned, so the address is
    /// what there is to count; they show which devices an identity has),
    /// default 240.
    pub lookup_rate_per_minute: u32,
    /// `pending_rate_per_hour`: registrations one client address may leave
    /// pending approval per hour at each node (each shows in the devices of
    /// an identity that is not the requester's; a person's own new device
    /// needs none with an approval code), default 4.
    pub pending_rate_per_hour: u32,
}

/// `[ods]`: mailbox limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OdsConfig {
    /// `max_queue`: unacknowledged envelopes per mailbox, default 10000.
    pub max_queue: u32,
    /// `max_fetch`: envelopes per fetch, default 256.
    pub max_fetch: u32,
    /// `max_capabilities`: live delivery capabilities per mailbox, default 4096.
    pub max_capabilities: u32,
    /// `open_rate_per_minute`: mailboxes one client address may open per minute, default 60.
    pub open_rate_per_minute: u32,
    /// `push_allow_http`: also send push notifications to `http://`
    /// endpoints (no TLS), default false.
    pub push_allow_http: bool,
    /// `push_allow_private`: also send them to loopback, private and
    /// link-local addresses, default false (a client names the URL; without
    /// this, it could make the node POST into the operator's network).
    pub push_allow_private: bool,
    /// `push_ca`: a PEM file of further roots trusted for push endpoints
    /// (besides the built-in web PKI roots), relative to the config file.
    pub push_ca: Option<PathBuf>,
}

/// `[ids]`: fan-out settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdsConfig {
    /// `anonymizer_concurrency`: anonymizer actors alive at once per fan-out,
    /// default twice the cores (sealing is CPU work: more in flight only
    /// queues them in front of the ODS writer on the same threads).
    pub anonymizer_concurrency: u32,
    /// `group_idle_secs`: a group actor stops after this long without requests, default 60.
    pub group_idle: Duration,
    /// `mixing_window_ms`: how long envelopes for one ODS node are held to be
    /// sent with other fan-outs' as one shuffled batch, default 0.
    pub mixing_window: Duration,
    /// `group_copies_per_second`: copies one group may make per second,
    /// counted at the group's IDS owner, default 50000.
    pub group_copies_per_second: u32,
    /// `sender_copies_per_second`: copies the sends of one client address
    /// may make per second, counted at each node where they enter, default 50000.
    pub sender_copies_per_second: u32,
    /// `max_fanouts`: fan-outs one node runs at once, default 1024.
    pub max_fanouts: u32,
    /// `create_rate_per_minute`: groups one client address may create per
    /// minute at each node, default 30.
    pub create_rate_per_minute: u32,
    /// `idle_group_days`: a group without a send for this many days is
    /// collected (its records deleted, its id free), default 365.
    pub idle_group_days: u32,
}

/// `[cs]`: KeyPackage limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsConfig {
    /// `max_key_packages_per_client`, default 100.
    pub max_per_client: u32,
    /// `max_key_package_lifetime_days`, default 90.
    pub max_lifetime: Duration,
    /// `fetch_rate_per_minute`: KeyPackage fetches one client address may make
    /// per minute (draining someone's KeyPackages is a known attack), default 120.
    pub fetch_rate_per_minute: u32,
    /// `fetch_rate_per_target_per_minute`: fetches of one identity's
    /// KeyPackages per minute from everyone, counted at its CS owner so
    /// every entry node shares the budget, default 60.
    pub fetches_per_target_per_minute: u32,
}

/// `[sds]`: blob limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdsConfig {
    /// `max_blob_bytes`: largest blob, default 64 MiB (capped at 4 GiB).
    pub max_blob: u64,
    /// `upload_bytes_per_minute`: blob bytes one client address may upload
    /// per minute at each node, default 256 MiB (capped at 4 GiB).
    pub upload_bytes_per_minute: u32,
    /// `abandoned_upload_days`: an upload unfinished this long is
    /// collected, default 7.
    pub abandoned_upload_days: u32,
}

impl SdsConfig {
    /// The checked `[sds]` table.
    pub(super) fn parse(raw: &RawSds) -> Result<SdsConfig, ConfigError> {
        Ok(SdsConfig {
            max_blob: positive("sds.max_blob_bytes", raw.max_blob_bytes, 64 << 20)?.min(1 << 32),
            upload_bytes_per_minute: positive(
                "sds.upload_bytes_per_minute",
                raw.upload_bytes_per_minute,
                256 << 20,
            )?
            .min(u32::MAX as u64) as u32,
            abandoned_upload_days: bounded(
                "sds.abandoned_upload_days",
                raw.abandoned_upload_days.map(u64::from),
                7,
                3650,
            )? as u32,
        })
    }
}

impl AsConfig {
    /// The checked `[as]` table.
    pub(super) fn parse(raw: &RawAs) -> Result<AsConfig, ConfigError> {
        let token_required = match raw.registration.as_deref() {
            None | Some("open") => false,
            Some("token") => true,
            Some(other) => {
                return Err(ConfigError::BadSetting {
                    key: "as.registration",
                    reason: format!("{other:?} is neither \"open\" nor \"token\""),
                })
            }
        };
        Ok(AsConfig {
            token_required,
            binding_lifetime: days(
                "as.binding_lifetime_days",
                raw.binding_lifetime_days,
                365,
                3650,
            )?,
            lookup_rate_per_minute: small(
                "as.lookup_rate_per_minute",
                raw.lookup_rate_per_minute,
                240,
                u32::MAX as u64,
            )?,
            pending_rate_per_hour: small(
                "as.pending_rate_per_hour",
                raw.pending_rate_per_hour,
                4,
                u32::MAX as u64,
            )?,
        })
    }
}

impl CsConfig {
    /// The checked `[cs]` table.
    pub(super) fn parse(raw: &RawCs) -> Result<CsConfig, ConfigError> {
        Ok(CsConfig {
            max_per_client: small(
                "cs.max_key_packages_per_client",
                raw.max_key_packages_per_client,
                100,
                10_000,
            )?,
            max_lifetime: days(
                "cs.max_key_package_lifetime_days",
                raw.max_key_package_lifetime_days,
                90,
                3650,
            )?,
            fetch_rate_per_minute: small(
                "cs.fetch_rate_per_minute",
                raw.fetch_rate_per_minute,
                120,
                u32::MAX as u64,
            )?,
            fetches_per_target_per_minute: small(
                "cs.fetch_rate_per_target_per_minute",
                raw.fetch_rate_per_target_per_minute,
                60,
                u32::MAX as u64,
            )?,
        })
    }
}

impl OdsConfig {
    /// The checked `[ods]` table.
    pub(super) fn parse(raw: &RawOds, base: &Path) -> Result<OdsConfig, ConfigError> {
        Ok(OdsConfig {
            max_queue: small("ods.max_queue", raw.max_queue, 10_000, 1_000_000)?,
            max_fetch: small("ods.max_fetch", raw.max_fetch, 256, 4096)?,
            max_capabilities: small(
                "ods.max_capabilities",
                raw.max_capabilities,
                mlsd_roles::settings::DEFAULT_MAX_CAPABILITIES as u64,
                1_000_000,
            )?,
            open_rate_per_minute: small(
                "ods.open_rate_per_minute",
                raw.open_rate_per_minute,
                60,
                u32::MAX as u64,
            )?,
            push_allow_http: raw.push_allow_http.unwrap_or(false),
            push_allow_private: raw.push_allow_private.unwrap_or(false),
            push_ca: raw.push_ca.as_ref().map(|p| base.join(p)),
        })
    }
}

impl IdsConfig {
    /// The checked `[ids]` table.
    pub(super) fn parse(raw: &RawIds) -> Result<IdsConfig, ConfigError> {
        Ok(IdsConfig {
            anonymizer_concurrency: small(
                "ids.anonymizer_concurrency",
                raw.anonymizer_concurrency,
                mlsd_roles::settings::default_anonymizer_concurrency() as u64,
                4096,
            )?,
            group_idle: Duration::from_secs(bounded(
                "ids.group_idle_secs",
                raw.group_idle_secs,
                60,
                86_400,
            )?),
            mixing_window: match raw.mixing_window_ms {
                // Zero (the default): no mixing.
                None | Some(0) => Duration::ZERO,
                v => Duration::from_millis(bounded("ids.mixing_window_ms", v, 0, 10_000)?),
            },
            group_copies_per_second: small(
                "ids.group_copies_per_second",
                raw.group_copies_per_second,
                50_000,
                u32::MAX as u64,
            )?,
            sender_copies_per_second: small(
                "ids.sender_copies_per_second",
                raw.sender_copies_per_second,
                50_000,
                u32::MAX as u64,
            )?,
            max_fanouts: small("ids.max_fanouts", raw.max_fanouts, 1024, 1 << 20)?,
            create_rate_per_minute: small(
                "ids.create_rate_per_minute",
                raw.create_rate_per_minute,
                30,
                u32::MAX as u64,
            )?,
            idle_group_days: bounded(
                "ids.idle_group_days",
                raw.idle_group_days.map(u64::from),
                mlsd_roles::settings::DEFAULT_IDLE_GROUP_DAYS as u64,
                36_500,
            )? as u32,
        })
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAs {
    registration: Option<String>,
    binding_lifetime_days: Option<u64>,
    lookup_rate_per_minute: Option<u32>,
    pending_rate_per_hour: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCs {
    max_key_packages_per_client: Option<u32>,
    max_key_package_lifetime_days: Option<u64>,
    fetch_rate_per_minute: Option<u32>,
    fetch_rate_per_target_per_minute: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOds {
    max_queue: Option<u32>,
    max_fetch: Option<u32>,
    max_capabilities: Option<u32>,
    open_rate_per_minute: Option<u32>,
    push_allow_http: Option<bool>,
    push_allow_private: Option<bool>,
    push_ca: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIds {
    anonymizer_concurrency: Option<u32>,
    group_idle_secs: Option<u64>,
    mixing_window_ms: Option<u64>,
    group_copies_per_second: Option<u32>,
    sender_copies_per_second: Option<u32>,
    max_fanouts: Option<u32>,
    create_rate_per_minute: Option<u32>,
    idle_group_days: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSds {
    max_blob_bytes: Option<u64>,
    upload_bytes_per_minute: Option<u64>,
    abandoned_upload_days: Option<u32>,
}
