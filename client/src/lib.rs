//! Client library for mlsd, and the `mlsc` CLI built on it.
//!
//! # Layout
//! - [`connection`]: a QUIC connection to any node of the cluster, verified
//!   against the cluster CA, sending one request per stream.
//! - [`client`]: [`Client`], one device with its state in a home directory:
//!   registration (AS), KeyPackages (CS).
//! - [`devices`]: an identity's devices: a new device's pending
//!   registration, and approving, listing and revoking devices.
//! - [`state`]: what a client keeps and reports (group metadata, member
//!   verdicts, events); it imports no other module of the client.
//! - [`leaf`]: what every client's leaf carries (capabilities, the mailbox
//!   reference extension).
//! - [`group`]: groups, split by job: creating, committing, sending, files,
//!   receiving (steps 5-8).
//! - [`blob`]: SDS blobs: chunked transfer, attachment and group-data encryption.
//! - [`verify`]: authenticating bindings and KeyPackages against the AS key.
//! - [`members`]: checking every member a group shows us against the AS, and
//!   refusing sends to groups with members it does not vouch for.
//! - [`mailbox`]: the client's ODS mailbox: keys, open, fetch, ack.
//! - [`outbox`]: unacknowledged sends, retried verbatim until acknowledged.
//! - [`retry`]: the one retry policy every retrying loop uses.
//! - [`shown`]: text from the network made safe to print and to name files
//!   with.
//! - [`tickets`]: the wallet of quota tickets that costly requests pay with.
//! - [`home`]: the home directory's files (identity, openmls storage), 0600.
//! - [`provider`]: the openmls provider whose storage the home persists.
#![warn(missing_docs)]

pub mod blob;
pub mod client;
pub mod connection;
pub mod devices;
pub mod group;
pub mod home;
pub mod leaf;
pub mod mailbox;
pub mod members;
pub mod outbox;
pub mod owed;
pub mod provider;
pub mod retry;
pub mod shown;
pub mod state;
pub mod tickets;
pub mod verify;

pub use client::{Client, ClientConfig, VerifiedKeyPackage};
pub use connection::{ClientError, Connection};

/// The one MLS ciphersuite of this deployment (X25519, AES-128-GCM, SHA-256, Ed25519).
pub const CIPHERSUITE: openmls::prelude::Ciphersuite =
    openmls::prelude::Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;
