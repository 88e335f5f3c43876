//! Named defaults for sizes and timeouts used on the wire.
//!
//! They are defaults, not hard-coded behaviour: the node reads overrides from
//! `cluster.toml`, and every reader takes the limit it enforces as an argument.

use std::time::Duration;

/// Default largest frame (after the length prefix) a peer may send: 1 MiB.
/// Used by the node for every request frame and by the client for responses.
pub const DEFAULT_MAX_FRAME: u32 = 1024 * 1024;

/// Ceiling on any configured frame size; bincode's own allocation limit is set
/// to it, so a length inside a frame can never ask for more memory than this.
pub const ABSOLUTE_MAX_FRAME: u32 = 16 * 1024 * 1024;

/// How long a reader waits for one whole frame before answering `Timeout`.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a dialing side waits for a QUIC + TLS handshake.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Idle timeout of a QUIC connection; keep-alives run at a third of it.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(15);

/// Concurrent bidirectional streams (requests) one connection may have open.
pub const DEFAULT_MAX_STREAMS: u32 = 256;

/// Largest chunk of a blob in one `PutBlob` or `GetBlob` (well under the frame size).
pub const MAX_CHUNK: usize = 512 * 1024;
