//! CS protocol: the KeyPackage directory. Clients publish one-time
//! KeyPackages (and one last-resort KeyPackage), others fetch one per
//! client of an identity, each handed out once.

use serde::{Deserialize, Serialize};

use super::flat::Tags;
use super::rules::{Admission, Rules};
use super::tickets::TicketKind;

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

    /// The rules of each CS request ([`Rules`]); the identity picks the
    /// shard. A fetch consumes KeyPackages, so only its paid form (named by
    /// its ticket) may be repeated.
    pub fn rules(&self) -> Rules<'_> {
        use super::r#as::identity_of;
        match self {
            CsRequest::PublishKeyPackages { body, .. } => Rules::once(identity_of(&body.client)),
            CsRequest::FetchKeyPackages { identity } => {
                Rules::once(identity.as_bytes()).paid(TicketKind::Fetch).admit(Admission::Fetch)
            }
            CsRequest::FetchPaid { identity, .. } => {
                Rules::repeatable(identity.as_bytes()).admit(Admission::NodesOnly)
            }
            CsRequest::CountKeyPackages { body, .. } => {
                Rules::repeatable(identity_of(&body.client))
            }
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
}

/// What the CS answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CsResponse {
    /// Answer to `PublishKeyPackages`.
    Published {
        /// One-time KeyPackages now stored for the client.
        stored: u32,
    },
    /// Answer to `FetchKeyPackages`: at most one per client of the identity.
    KeyPackages(Vec<FetchedKeyPackage>),
    /// Answer to `CountKeyPackages`.
    KeyPackageCount {
        /// One-time KeyPackages left.
        count: u32,
        /// Whether a last-resort KeyPackage is stored.
        last_resort: bool,
    },
}

impl CsResponse {
    /// Flat wire index of each variant in [`super::Response`].
    pub(crate) const TAGS: Tags = &[4, 5, 17];
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
