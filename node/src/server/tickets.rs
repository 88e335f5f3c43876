//! The entry node's half of the quota tickets (decision D12): a request
//! that creates something costly is served only after the ticket it pays
//! with is spent at the AS node that owns the ticket's input, so one
//! identity's daily allowance holds whichever nodes it talks to. The
//! ticket goes no further than that AS node: the role that serves the
//! request never sees it.

use mlsd_actors::RoleMsg;
use mlsd_transport::protocol::tickets::{bind, Ticket};
use mlsd_transport::protocol::{AuthError, ClusterError, NodeRequest, NodeResponse, Spend};
use mlsd_transport::{Request, Response, Role, WireError};

use super::delivery::at_leader;
use super::ServerCtx;

/// Spends `ticket` for `req` if `req` needs one: `Ok` when it needs none,
/// or when its ticket was spent for it (now or by an earlier copy of the
/// same request), the refusal otherwise.
pub(super) async fn pay(
    ctx: &ServerCtx,
    req: &Request,
    ticket: Option<Ticket>,
) -> Result<(), WireError> {
    let Some(kind) = req.rules().ticket else { return Ok(()) };
    let ticket = match ticket {
        Some(t) if t.kind == kind => t,
        None if !ctx.config.tickets.required => return Ok(()),
        _ => return Err(WireError::Auth(AuthError::TicketRequired { kind })),
    };
    let shard = ctx.shards.shard_of(Role::As, &ticket.input);
    let spend = NodeRequest::Spend(Spend { bind: bind(req), ticket });
    let resp = at_leader(
        ctx,
        shard,
        |reply| RoleMsg::Admin { request: spend.clone(), reply },
        || spend.clone(),
    )
    .await;
    match resp {
        Response::Node(NodeResponse::Spent) => Ok(()),
        Response::Error(e) => Err(e),
        other => Err(WireError::Cluster(ClusterError::Internal(format!(
            "unexpected answer to a ticket spend: {other:?}"
        )))),
    }
}
