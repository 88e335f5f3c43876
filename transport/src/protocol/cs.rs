//! CS protocol: the KeyPackage directory. Clients publish one-time
//! KeyPackages (and one last-resort KeyPackage), others fetch one per
//! client of an identity, each handed out once.

use serde::{Deserialize, Serialize};

use super::flat::Tags;

/// A request the CS serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CsRequest {
    /// Store KeyPackages (step 2); signed by the client's bound key.
    PublishKeyPackages {
        /// The upload.
        body: PublishBody,
        /// Signature by the bound key.
        signature: Vec<u8>,
    },
    /// One KeyPackage for every current client of `identity` (step 3),
    /// consumed as it is handed out.
    FetchKeyPackages {
        /// The identity whose clients are wanted.
        identity: String,
    },
    /// How many one-time KeyPackages a client has left; signed.
    CountKeyPackages {
        /// Who asks.
        body: CountBody,
        /// Signature by the bound key.
        signature: Vec<u8>,
    },
    /// A `FetchKeyPackages` paid with a quota ticket, as the entry node
    /// forwards it once the ticket is spent: `paid` (BLAKE3 of the ticket)
    /// names this fetch, so that the CS answers a repeat of it (the same
    /// frame sent again after a lost answer or a leader change) with the
    /// KeyPackages it handed out the first time and consumes no more. Only
    /// nodes send it; an entry node refuses it from a client.
    FetchPaid {
        /// The identity whose clients are wanted.
        identity: String,
        /// Which paid fetch this is.
        paid: [u8; 32],
    },
}

impl CsRequest {
    /// Flat wire index of each variant (protocol version 1).
    pub(crate) const TAGS: Tags = &[4, 5, 15, 23];

    /// The identity whose CS shard serves the request.
    pub fn shard_key(&self) -> &[u8] {
        use super::r#as::identity_of;
        match self {
            CsRequest::PublishKeyPackages { body, .. } => identity_of(&body.client),
            CsRequest::FetchKeyPackages { identity } | CsRequest::FetchPaid { identity, .. } => {
                identity.as_bytes()
            }
            CsRequest::CountKeyPackages { body, .. } => identity_of(&body.client),
        }
    }

    /// The signature that authorizes the request, if it needs one: a
    /// signed request takes effect at most once.
    pub fn signature(&self) -> Option<&[u8]> {
        match self {
            CsRequest::PublishKeyPackages { signature, .. }
            | CsRequest::CountKeyPackages { signature, .. } => Some(signature),
            CsRequest::FetchKeyPackages { .. } | CsRequest::FetchPaid { .. } => None,
        }
    }

    /// See [`super::Request::repeatable`]; a fetch consumes KeyPackages.
    pub fn repeatable(&self) -> bool {
        match self {
            CsRequest::CountKeyPackages { .. } | CsRequest::FetchPaid { .. } => true,
            CsRequest::PublishKeyPackages { .. } | CsRequest::FetchKeyPackages { .. } => false,
        }
    }
}

/// Why the CS refused an upload (besides the shared reasons of
/// [`super::AuthError`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CsError {
    /// A KeyPackage failed validation; nothing of the upload was stored.
    #[error("invalid KeyPackage #{index}: {reason}")]
    InvalidKeyPackage {
        /// Position in the upload (the last-resort one is last).
        index: u32,
        /// What is wrong with it.
        reason: String,
    },
    /// Storing the upload would exceed the per-client cap.
    #[error("too many KeyPackages: at most {max} per client")]
    TooManyKeyPackages {
        /// The cap.
        max: u32,
    },
}

impl CsError {
    /// Flat wire index of each variant in [`super::WireError`].
    pub(crate) const TAGS: Tags = &[15, 16];
}

/// Label of [`PublishBody`] signatures.
pub const LABEL_PUBLISH: &str = "mlsd/cs/publish/v1";
/// Label of [`CountBody`] signatures.
pub const LABEL_COUNT: &str = "mlsd/cs/count/v1";

/// Body of a KeyPackage upload, signed by the bound key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishBody {
    /// The uploading client.
    pub client: String,
    /// TLS-serialized MLS KeyPackages, each handed out once.
    pub key_packages: Vec<Vec<u8>>,
    /// A TLS-serialized last-resort KeyPackage, handed out when no other is
    /// left and kept; replaces the previous one.
    pub last_resort: Option<Vec<u8>>,
    /// Unix seconds.
    pub timestamp: u64,
}

/// Body of a KeyPackage count request, signed by the bound key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountBody {
    /// The asking client.
    pub client: String,
    /// Unix seconds.
    pub timestamp: u64,
}

/// One KeyPackage handed out by the CS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchedKeyPackage {
    /// The client it belongs to.
    pub client: String,
    /// TLS-serialized MLS KeyPackage.
    #[serde(with = "serde_bytes")]
    pub key_package: Vec<u8>,
    /// Whether this is the client's last-resort KeyPackage (kept, may be reused).
    pub last_resort: bool,
}
