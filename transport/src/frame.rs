//! Length-prefixed frames: a big-endian u32 length, then that many bytes of
//! [`codec`](crate::codec) output.
//!
//! The reader checks the announced length against the caller's limit before
//! allocating, and the whole frame must arrive within the caller's timeout, so a
//! slow or lying peer costs at most one bounded buffer for a bounded time.

use crate::protocol::BadFrame;
use std::time::Duration;

use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::codec::{self, CodecError};
use crate::protocol::WireError;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix exceeds the limit; the body was not read.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Announced length.
        len: u32,
        /// Reader's limit.
        max: u32,
    },
    /// The stream ended inside the prefix or the body.
    #[error("truncated frame")]
    Truncated,
    /// The frame did not arrive within the timeout.
    #[error("timed out reading frame")]
    Timeout,
    /// The bytes arrived but do not decode.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The stream failed (reset, connection lost).
    #[error("stream error: {0}")]
    Io(String),
}

impl From<FrameError> for WireError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::TooLarge { len, max } => WireError::Frame(BadFrame::TooLarge { len, max }),
            FrameError::Truncated => WireError::Frame(BadFrame::Truncated),
            FrameError::Timeout => WireError::Frame(BadFrame::Timeout),
            FrameError::Codec(c) => WireError::Frame(BadFrame::Malformed(c.to_string())),
            FrameError::Io(s) => WireError::Frame(BadFrame::Malformed(s)),
        }
    }
}

/// Reads one frame's bytes, enforcing `max` and `timeout`.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: u32,
    timeout: Duration,
) -> Result<Vec<u8>, FrameError> {
    tokio::time::timeout(timeout, async {
        let mut prefix = [0u8; 4];
        r.read_exact(&mut prefix).await.map_err(io_err)?;
        let len = u32::from_be_bytes(prefix);
        if len > max {
            return Err(FrameError::TooLarge { len, max });
        }
        let mut body = vec![0u8; len as usize];
        r.read_exact(&mut body).await.map_err(io_err)?;
        Ok(body)
    })
    .await
    .map_err(|_| FrameError::Timeout)?
}

/// Reads and decodes one frame into `T`.
pub async fn read_message<T: DeserializeOwned, R: AsyncRead + Unpin>(
    r: &mut R,
    max: u32,
    timeout: Duration,
) -> Result<T, FrameError> {
    let body = read_frame(r, max, timeout).await?;
    Ok(codec::decode(&body)?)
}

/// Writes `bytes` as one frame. Fails with `TooLarge` rather than send a frame
/// the peer would refuse anyway.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    bytes: &[u8],
    max: u32,
) -> Result<(), FrameError> {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    w.write_all(&len.to_be_bytes()).await.map_err(io_err)?;
    w.write_all(bytes).await.map_err(io_err)?;
    Ok(())
}

/// Encodes `value` and writes it as one frame.
pub async fn write_message<T: Serialize, W: AsyncWrite + Unpin>(
    w: &mut W,
    value: &T,
    max: u32,
) -> Result<(), FrameError> {
    let bytes = codec::encode(value)?;
    write_frame(w, &bytes, max).await
}

fn io_err(e: std::io::Error) -> FrameError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        FrameError::Truncated
    } else {
        FrameError::Io(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn frame_round_trip() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"hello", 16).await.unwrap();
        assert_eq!(read_frame(&mut &buf[..], 16, T).await.unwrap(), b"hello");
    }

    #[tokio::test]
    async fn oversized_prefix_is_refused_before_reading() {
        let bytes = u32::MAX.to_be_bytes();
        let err = read_frame(&mut &bytes[..], 1024, T).await.unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { len: u32::MAX, max: 1024 }));
    }

    #[tokio::test]
    async fn truncated_body_and_prefix() {
        let mut bytes = 10u32.to_be_bytes().to_vec();
        bytes.extend_from_slice(b"abc");
        assert!(matches!(read_frame(&mut &bytes[..], 64, T).await, Err(FrameError::Truncated)));
        assert!(matches!(read_frame(&mut &[0u8, 1][..], 64, T).await, Err(FrameError::Truncated)));
    }

    #[tokio::test]
    async fn silent_peer_times_out() {
        let (mut a, _b) = tokio::io::duplex(64);
        let err = read_frame(&mut a, 64, Duration::from_millis(50)).await.unwrap_err();
        assert!(matches!(err, FrameError::Timeout));
    }
}
