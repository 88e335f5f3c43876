//! Calls to this node's own role actors, by name through the actor registry:
//! the last stage of every request served here, and the writer behind the
//! ODS's coalescer.

use mlsd_transport::protocol::ClusterError;
use std::time::Duration;

use mlsd_actors::role::actor_name;
use mlsd_actors::RoleMsg;
use mlsd_transport::protocol::EnqueueItem;
use mlsd_transport::{Response, Role, WireError};
use ractor::ActorRef;

use crate::coalescer::OdsWriter;

/// How long a request waits for a role actor that is being restarted.
const ACTOR_WAIT: Duration = Duration::from_secs(2);

/// Hands a message to node `node`'s actor of `role` and waits up to
/// `timeout` for its answer. If the actor is being restarted by the
/// supervisor, waits briefly for its successor.
pub async fn call_role(
    node: &str,
    timeout: Duration,
    role: Role,
    msg: impl FnOnce(ractor::RpcReplyPort<Response>) -> RoleMsg,
) -> Response {
    let unavailable = || {
        Response::Error(WireError::Cluster(ClusterError::Unavailable { node: node.to_string() }))
    };
    let name = actor_name(node, role);
    let deadline = tokio::time::Instant::now() + ACTOR_WAIT;
    let actor = loop {
        if let Some(actor) = ActorRef::<RoleMsg>::where_is(name.clone()) {
            break actor;
        }
        if tokio::time::Instant::now() >= deadline {
            return unavailable();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let (tx, rx) = ractor::concurrency::oneshot();
    if actor.send_message(msg(tx.into())).is_err() {
        return unavailable();
    }
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(r)) => r,
        // The actor died while holding the request, or is stuck: the request
        // had no acknowledged effect and the caller may retry.
        Ok(Err(_)) | Err(_) => unavailable(),
    }
}

/// This node's ODS actor as the coalescer's writer: one `Enqueue` message per
/// merged batch.
pub struct LocalOds {
    /// This node's name (names its actors).
    pub node: String,
    /// How long the actor may take.
    pub timeout: Duration,
}

impl OdsWriter for LocalOds {
    async fn write(&self, items: Vec<EnqueueItem>) -> Response {
        call_role(&self.node, self.timeout, Role::Ods, |reply| RoleMsg::Enqueue { items, reply })
            .await
    }
}
