//! Logging set-up: `RUST_LOG` filters (default [`DEFAULT_FILTER`]), text or
//! JSON lines on stderr.
//!
//! Nothing secret is ever passed to a log macro: no keys, rosters or push tokens.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Output format of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The filter without `RUST_LOG`: our `info` events, but not ractor's
/// per-actor `info` spans. Those are opened for every actor, one anonymizer
/// per recipient copy among them, and formatting them cost more than half a
/// seal per copy (docs/performance.md) while telling an operator nothing;
/// nor openraft's, a dozen lines per shard at every start and snapshot.
pub const DEFAULT_FILTER: &str = "info,ractor=warn,openraft=warn";

/// Installs the global subscriber; later calls are ignored.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
