//! `[limits]`: sizes and timeouts of the wire and of calls between nodes.

use std::time::Duration;

use mlsd_transport::limits;
use serde::Deserialize;

use super::check::{millis, small, MAX_TIMEOUT};
use super::ConfigError;

/// Wire and routing limits, from the optional `[limits]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest request or response frame, bytes (`max_frame`).
    pub max_frame: u32,
    /// Time allowed for a request frame to arrive (`read_timeout_ms`).
    pub read_timeout: Duration,
    /// Time allowed for a forwarded call to another node (`call_timeout_ms`).
    pub call_timeout: Duration,
    /// Time allowed to dial another node (`connect_timeout_ms`).
    pub connect_timeout: Duration,
    /// Client connections one address may hold open (`max_connections_per_address`).
    pub max_connections_per_address: u32,
    /// Requests per second one client connection may send (`requests_per_second`);
    /// bursts up to the same number.
    pub requests_per_second: u32,
}

/// Default time for a forwarded call; also the bound on how long a client
/// waits for `Unavailable` when an owner is down.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);

impl Limits {
    /// The checked `[limits]` table.
    pub(super) fn parse(l: &RawLimits) -> Result<Limits, ConfigError> {
        let max_frame = l.max_frame.unwrap_or(limits::DEFAULT_MAX_FRAME);
        // One page of a mailbox must hold the largest envelope, or a mailbox
        // holding one could never be read; and one replicated entry must
        // hold it, or it could never be stored.
        let min_frame = mlsd_transport::protocol::ods::MIN_FRAME_FOR_ENVELOPES
            + mlsd_actors::replica::ENTRY_MARGIN as u32;
        if !(min_frame..=limits::ABSOLUTE_MAX_FRAME).contains(&max_frame) {
            return Err(ConfigError::BadSetting {
                key: "limits.max_frame",
                reason: format!(
                    "must be between {min_frame} (the largest envelope, its page and its entry) and {}",
                    limits::ABSOLUTE_MAX_FRAME
                ),
            });
        }
        Ok(Limits {
            max_frame,
            read_timeout: millis(
                "limits.read_timeout_ms",
                l.read_timeout_ms,
                limits::DEFAULT_READ_TIMEOUT,
                MAX_TIMEOUT,
            )?,
            call_timeout: millis(
                "limits.call_timeout_ms",
                l.call_timeout_ms,
                DEFAULT_CALL_TIMEOUT,
                MAX_TIMEOUT,
            )?,
            connect_timeout: millis(
                "limits.connect_timeout_ms",
                l.connect_timeout_ms,
                limits::DEFAULT_CONNECT_TIMEOUT,
                MAX_TIMEOUT,
            )?,
            max_connections_per_address: small(
                "limits.max_connections_per_address",
                l.max_connections_per_address,
                256,
                u32::MAX as u64,
            )?,
            requests_per_second: small(
                "limits.requests_per_second",
                l.requests_per_second,
                1000,
                u32::MAX as u64,
            )?,
        })
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    max_frame: Option<u32>,
    read_timeout_ms: Option<u64>,
    call_timeout_ms: Option<u64>,
    connect_timeout_ms: Option<u64>,
    max_connections_per_address: Option<u32>,
    requests_per_second: Option<u32>,
}
