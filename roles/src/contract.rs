//! The contract every role's logic implements, apart from the hosts that run
//! it (`mlsd_actors::role` for the generic role actor, `mlsd_actors::ids` for
//! groups).
//!
//! Logic is a state machine: it takes a request, the current time and a
//! read-only [`View`] of storage, and returns a [`Decision`]: the reply, the
//! writes that must be durable before the reply is sent, and the I/O to do
//! afterwards. It never writes storage or does I/O itself, so the same inputs
//! give the same decision, tests drive it on a [`crate::storage::MemStore`],
//! and a host can ship the writes elsewhere (to a shard's replicas) before
//! replying. It names no role's logic: the one IDS type it carries, a
//! fan-out ([`crate::ids::plan`]), is plain data that imports nothing here.

use std::time::SystemTime;

use mlsd_transport::protocol::{
    AuthError, ClusterError, Delivered, EnqueueItem, MailboxId, NodeRequest, Pong,
};
use mlsd_transport::{Request, Response, Role, WireError};

use crate::storage::{Batch, Store, StoreError, View};

/// What a role's logic may use besides the request: who it is, a read view
/// of the node's storage, the current time and fresh random bytes (passed
/// in, so tests and the simulation fix them and a decision replays
/// exactly). Ids and keys come from clients, and the IDS's nonces are drawn
/// by its anonymizers; the AS's ticket proofs draw from `random`.
pub struct RoleContext<'a> {
    /// Name of the hosting node, reported in replies such as `Pong`.
    pub node: &'a str,
    /// The node's storage, for reading.
    pub store: &'a dyn View,
    /// Wall-clock time of this request.
    pub now: SystemTime,
    /// Random bytes for this request alone, drawn by the host from the
    /// operating system's generator. Secret (a ticket proof's nonce comes
    /// from them), so wiped when the context goes.
    pub random: zeroize::Zeroizing<[u8; 32]>,
}

/// What the logic decided for one request. The host applies `writes`
/// atomically, then sends `response`, then carries out `effects`; if the
/// writes fail, the client is told `Internal` instead, nothing of the batch
/// is applied, and the logic is rebuilt from storage (it may have decided as
/// if they had landed).
pub struct Decision {
    /// The reply.
    pub response: Response,
    /// Writes that must be durable before the reply acknowledges them.
    pub writes: Batch,
    /// I/O for the host to do after the writes.
    pub effects: Vec<Effect>,
}

impl Decision {
    /// A reply that changes nothing.
    pub fn reply(response: Response) -> Self {
        Decision { response, writes: Batch::new(), effects: Vec::new() }
    }

    /// A reply that needs `writes` durable first.
    pub fn write(response: Response, writes: Batch) -> Self {
        Decision { response, writes, effects: Vec::new() }
    }

    /// Makes the writes durable in `store` (all or nothing) and returns the
    /// reply and effects, which may go out only now.
    pub fn apply(self, store: &dyn Store) -> Result<(Response, Vec<Effect>), StoreError> {
        if !self.writes.ops.is_empty() {
            store.write(self.writes)?;
        }
        Ok((self.response, self.effects))
    }

    /// The reply once the writes are applied to `store`: what a role's unit
    /// tests check, as a client would see it.
    #[cfg(test)]
    pub fn applied(self, store: &dyn Store) -> Response {
        self.apply(store).expect("test store write").0
    }
}

impl From<Result<Decision, WireError>> for Decision {
    /// A refusal is a reply with no writes: bad input changes nothing.
    fn from(r: Result<Decision, WireError>) -> Self {
        r.unwrap_or_else(|e| Decision::reply(Response::Error(e)))
    }
}

/// A role's state machine. One instance per role actor; a restarted actor (or
/// one whose writes failed) gets a fresh instance that reloads what it needs
/// from storage.
pub trait RoleLogic: Send + Sync + 'static {
    /// Which role this is.
    fn role(&self) -> Role;

    /// A request whose response `handle` needs for `req` (routed to its owner
    /// like any client request), or `None`.
    fn prerequisite(&self, _req: &Request) -> Option<Request> {
        None
    }

    /// Decides one request, with the response to its prerequisite if it had
    /// one. Must not panic on any input: bad input is a `Response::Error`
    /// with no writes.
    fn handle(&mut self, req: Request, pre: Option<Response>, ctx: &RoleContext<'_>) -> Decision;

    /// Decides an operator request that came over the node protocol
    /// (`mlsd admin enroll`).
    fn admin(&mut self, _req: NodeRequest, _ctx: &RoleContext<'_>) -> Decision {
        Decision::reply(Response::Error(WireError::Auth(AuthError::NotAuthorized(
            "no admin requests for this role".into(),
        ))))
    }

    /// Stores envelopes the IDS fanned out (the ODS's hottest path, one
    /// group-committed batch per call); only the ODS takes them.
    fn enqueue(&mut self, _items: Vec<EnqueueItem>, _ctx: &RoleContext<'_>) -> Decision {
        Decision::reply(Response::Error(WireError::Auth(AuthError::NotAuthorized(
            "only the ODS stores envelopes".into(),
        ))))
    }
}

/// I/O a role's logic asks its host to do once its writes are durable.
pub enum Effect {
    /// An envelope was durably stored: push it to the mailbox's live
    /// subscriber if it has one, otherwise POST a content-free UnifiedPush
    /// notification to `push` (the recipient's endpoint URL, a secret:
    /// zeroized on drop, never logged).
    Stored {
        /// The mailbox.
        mailbox: MailboxId,
        /// The envelope and its sequence number.
        delivered: Delivered,
        /// The decrypted push endpoint, when the enqueue carried the push key.
        push: Option<zeroize::Zeroizing<String>>,
    },
    /// The IDS accepted a send (its writes durable): fan its copies out.
    /// The fan-out answers the sender with what the copies' enqueues came
    /// to, in place of the decision's `response`.
    FanOut(Box<crate::ids::plan::FanOut>),
}

/// Answers `Ping` for any role: the reply names the node and role that handled
/// it, which is what routing tests and `mlsc ping` check.
pub fn pong(role: Role, ctx: &RoleContext<'_>) -> Response {
    Response::Pong(Pong { node: ctx.node.to_string(), role })
}

/// A failure inside the node (storage, encoding) as the error a client gets:
/// the request had no effect. Every role's logic maps its storage errors
/// with this.
pub fn internal(e: impl std::fmt::Display) -> WireError {
    WireError::Cluster(ClusterError::Internal(e.to_string()))
}

/// The answer to a request routed to a role that does not serve it: a node
/// defect, refused without changing anything. Each role's `handle` takes its
/// own requests out of [`Request`] and sends the rest here, so its match on
/// them is exhaustive.
pub fn not_mine(role: Role, req: &Request) -> Decision {
    let why = format!("{role} cannot serve {req:?}");
    Decision::reply(Response::Error(ClusterError::Internal(why).into()))
}
