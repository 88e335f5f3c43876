//! How role hosts reach other roles and live subscribers: the shells' side
//! of the role contract ([`mlsd_roles::contract`]), which the logic never
//! sees (it names a prerequisite request; its host routes it).

use std::future::Future;
use std::pin::Pin;

use mlsd_transport::protocol::{Delivered, EnqueueItem, EnqueueResult};
use mlsd_transport::{Request, Response};

/// Where a live subscription's envelopes go.
pub type Sink = tokio::sync::mpsc::Sender<Vec<Delivered>>;

/// Routes a request to the node that owns it, as the node's server does for
/// clients. Implemented by the node crate; role actors use it for
/// prerequisites and the IDS for enqueueing, so they never know where other
/// roles run.
pub trait Router: Send + Sync + 'static {
    /// Serves `req` locally or at its owner.
    fn route(&self, req: Request) -> Pin<Box<dyn Future<Output = Response> + Send + '_>>;
    /// Hands envelopes to the ODS owners of their mailboxes, one shuffled
    /// batch per owner node; one result per item, in order.
    fn enqueue(
        &self,
        items: Vec<EnqueueItem>,
    ) -> Pin<Box<dyn Future<Output = Vec<EnqueueResult>> + Send + '_>>;
}
