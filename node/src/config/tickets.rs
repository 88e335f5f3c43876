//! `[tickets]`: anonymous quota tickets (decision D12), each setting's
//! meaning and default beside the key that sets it.

use serde::Deserialize;

use super::check::positive;
use super::ConfigError;
use mlsd_roles::settings::{TicketAllowance, DEFAULT_TICKETS};

/// `[tickets]`: anonymous quota tickets (decision D12).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketsConfig {
    /// `required`: requests that create something costly (KeyPackage
    /// fetches, mailboxes, groups, blob chunks) must pay with a ticket;
    /// on by default. Off, a ticket is still spent when one comes.
    pub required: bool,
    /// `fetch_per_day`, `mailbox_per_day`, `group_per_day`,
    /// `blob_chunks_per_day`: what one identity may take per day.
    pub allowance: TicketAllowance,
}

impl TicketsConfig {
    /// The checked `[tickets]` table.
    pub(super) fn parse(t: &RawTickets) -> Result<TicketsConfig, ConfigError> {
        let d = DEFAULT_TICKETS;
        let per_day = |key: &'static str, v: Option<u32>, d: u32| {
            positive(key, v.map(u64::from), u64::from(d)).map(|v| v.min(u32::MAX as u64) as u32)
        };
        Ok(TicketsConfig {
            required: t.required.unwrap_or(true),
            allowance: TicketAllowance {
                fetch: per_day("tickets.fetch_per_day", t.fetch_per_day, d.fetch)?,
                mailbox: per_day("tickets.mailbox_per_day", t.mailbox_per_day, d.mailbox)?,
                group: per_day("tickets.group_per_day", t.group_per_day, d.group)?,
                blob: per_day("tickets.blob_chunks_per_day", t.blob_chunks_per_day, d.blob)?,
            },
        })
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTickets {
    required: Option<bool>,
    fetch_per_day: Option<u32>,
    mailbox_per_day: Option<u32>,
    group_per_day: Option<u32>,
    blob_chunks_per_day: Option<u32>,
}
