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

/// [`positive`], capped at `max`.
pub(super) fn small(
    key: &'static str,
    v: Option<u32>,
    d: u64,
    max: u64,
) -> Result<u32, ConfigError> {
    positive(key, v.map(u64::from), d).map(|v| v.min(max) as u32)
}

/// A positive number of milliseconds, or `d` when absent.
pub(super) fn millis(
    key: &'static str,
    v: Option<u64>,
    d: Duration,
) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(d),
        v => positive(key, v, 0).map(Duration::from_millis),
    }
}
