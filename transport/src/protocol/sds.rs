//! SDS protocol: capability-addressed blobs. Anyone who knows a blob's id
//! may read it (its content is sealed by the clients); writing and deleting
//! need its write capability, whose hash the SDS stores.

use serde::{Deserialize, Serialize};

use super::flat::Tags;
use super::rules::{Admission, Rules};
use super::tickets::TicketKind;

/// A request the SDS serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SdsRequest {
    /// Write bytes `offset..offset+data.len()` of blob `id` (of `total`
    /// bytes). Chunks come in order; the blob appears (or replaces the old
    /// content) when the last byte is written. Creating a blob binds it to
    /// `SHA-256(cap)`; writing an existing one needs `cap`.
    PutBlob {
        /// Random 256-bit blob id chosen by the client.
        id: [u8; 32],
        /// Write capability.
        cap: [u8; 32],
        /// Position of this chunk.
        offset: u64,
        /// Size of the whole blob.
        total: u64,
        /// The chunk (at most `MAX_CHUNK`).
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Up to `max` bytes of blob `id` from `offset`; anyone who knows the id.
    GetBlob {
        /// The blob.
        id: [u8; 32],
        /// Where to start.
        offset: u64,
        /// At most this many bytes (capped at `MAX_CHUNK`).
        max: u32,
    },
    /// Delete blob `id`; needs its write capability.
    DeleteBlob {
        /// The blob.
        id: [u8; 32],
        /// Write capability.
        cap: [u8; 32],
    },
}

impl SdsRequest {
    /// Flat wire index of each variant (protocol version 1).
    pub(crate) const TAGS: Tags = &[12, 13, 14];

    /// The rules of each SDS request ([`Rules`]); the blob id picks the shard.
    pub fn rules(&self) -> Rules<'_> {
        match self {
            SdsRequest::PutBlob { id, data, .. } => {
                Rules::once(id).paid(TicketKind::Blob).admit(Admission::Upload(data.len() as u64))
            }
            SdsRequest::GetBlob { id, .. } => Rules::repeatable(id),
            SdsRequest::DeleteBlob { id, .. } => Rules::once(id),
        }
    }
}

/// What the SDS answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SdsResponse {
    /// Answer to `PutBlob`: bytes received so far (`total` when complete).
    BlobWritten {
        /// Bytes written of the current upload.
        written: u64,
    },
    /// Answer to `GetBlob`.
    Blob {
        /// Size of the whole blob.
        total: u64,
        /// The requested bytes.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Answer to `DeleteBlob`.
    BlobDeleted,
}

impl SdsResponse {
    /// Flat wire index of each variant in [`super::Response`].
    pub(crate) const TAGS: Tags = &[8, 9, 10];
}

/// Why the SDS refused a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum SdsError {
    /// No blob with this id.
    #[error("unknown blob")]
    UnknownBlob,
    /// The blob exists and the write capability does not match.
    #[error("wrong write capability")]
    WrongCapability,
    /// A blob or chunk over the size limit, or a chunk out of order.
    #[error("blob refused: {0}")]
    BadBlob(String),
}

impl SdsError {
    /// Flat wire index of each variant in [`super::WireError`].
    pub(crate) const TAGS: Tags = &[23, 24, 25];
}
