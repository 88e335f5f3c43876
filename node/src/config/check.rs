//! The checks every numeric setting goes through, each naming its key in
//! the error: positive where zero would disable a limit by accident, capped
//! where a huge value would exhaust memory, defaulted when absent.

use std::time::Duration;

use super::ConfigError;

/// Seconds in a day, for the `_days` settings.
pub(super) const DAY: u64 = 24 * 3600;

/// `v`, or `d` when absent; zero is refused.
pub(super) fn positive(key: &'static str, v: Option<u64>, d: u64) -> Result<u64, ConfigError> {
    match v {
        Some(0) => Err(ConfigError::BadSetting { key, reason: "must be positive".into() }),
        v => Ok(v.unwrap_or(d)),
    }
}

/// [`positive`], and at most `max`: a duration or count past it is a
/// mistake (`2^64-1` days would make bindings never expire), refused with
/// the bound named.
pub(super) fn bounded(
    key: &'static str,
    v: Option<u64>,
    d: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    match positive(key, v, d)? {
        v if v > max => {
            Err(ConfigError::BadSetting { key, reason: format!("must be at most {max}") })
        }
        v => Ok(v),
    }
}

/// `_days` settings: [`bounded`], as a duration.
pub(super) fn days(
    key: &'static str,
    v: Option<u64>,
    d: u64,
    max: u64,
) -> Result<Duration, ConfigError> {
    bounded(key, v, d, max).map(|v| Duration::from_secs(v * DAY))
}

/// [`positive`], capped at `max`.
pub(super) fn small(
    key: &'static str,
    v: Option<u32>,
    d: u64,
    max: u64,
) -> Result<u32, ConfigError> {
    positive(key, v.map(u64::from), d).map(|v| v.min(max) as u32)
}

/// A positive number of milliseconds, at most `max`, or `d` when absent.
pub(super) fn millis(
    key: &'static str,
    v: Option<u64>,
    d: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(d),
        v => bounded(key, v, 0, max.as_millis() as u64).map(Duration::from_millis),
    }
}

/// The longest any timeout may be set to (ten minutes): longer, a peer or
/// client that went away holds its resources for good.
pub(super) const MAX_TIMEOUT: Duration = Duration::from_secs(600);
