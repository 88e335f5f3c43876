//! Wire layer of mlsd: QUIC endpoints, TLS, framing and the protocol types that
//! clients and nodes exchange.
//!
//! Nothing here knows about roles' logic or storage; the node crate drives these
//! pieces, and the client crate uses the same ones so both sides agree on bytes.
//!
//! # Layout
//! - [`limits`]: every size and timeout default, in one place.
//! - [`codec`]: the only module that knows the serialization format (bincode 2),
//!   so a successor format replaces one file.
//! - [`frame`]: u32 length prefix + codec over any async stream, bounded and timed.
//! - [`protocol`]: request, response and error types, with the protocol
//!   version: one module per role (its requests, errors and bodies), the
//!   identity rules the AS and CS share, and the frames around them.
//! - [`tls`]: rustls configs (TLS 1.3, `ring`) for the client and node ALPNs,
//!   and the check that a peer certificate names a cluster node.
//! - [`envelope`]: padding and sealing of per-recipient envelopes.
//! - [`sealed`]: the one AEAD of every sealed format, and both halves of the
//!   formats one side seals and another opens (rosters, push endpoints, blobs).
//! - [`ticket`]: both halves of the anonymous quota tickets' PRF.
//! - [`push`]: what a push endpoint URL may be (parsing and the operator's
//!   policy, pure): clients check one before they seal it, the node's push
//!   client before each POST.
//! - [`endpoint`]: quinn endpoint construction and request/response calls.
#![warn(missing_docs)]

pub mod codec;
#[cfg(feature = "quic")]
pub mod endpoint;
pub mod envelope;
#[cfg(feature = "quic")]
pub mod frame;
pub mod limits;
pub mod protocol;
pub mod push;
pub mod sealed;
pub mod ticket;
#[cfg(feature = "quic")]
pub mod tls;

pub use codec::CodecError;
#[cfg(feature = "quic")]
pub use endpoint::{call, CallError};
#[cfg(feature = "quic")]
pub use frame::FrameError;
pub use protocol::{Request, Response, Role, WireError, PROTOCOL_VERSION};
