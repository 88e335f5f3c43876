//! ODS (message delivery) keeps durable per-recipient mailboxes of sealed envelopes.
//!
//! Mailboxes, fetch, ack and push arrive with the IDS/ODS issue; today it answers `Ping`.

use mlsd_transport::{Request, Response, Role, WireError};

use crate::role::{pong, RoleContext, RoleLogic};

/// The ODS state machine.
#[derive(Debug, Default)]
pub struct OdsLogic {}

impl RoleLogic for OdsLogic {
    fn role(&self) -> Role {
        Role::Ods
    }

    fn handle(&mut self, req: Request, _pre: Option<Response>, ctx: &RoleContext<'_>) -> Response {
        match req {
            Request::Ping { .. } => pong(Role::Ods, ctx),
            other => Response::Error(WireError::Internal(format!("ODS cannot serve {other:?}"))),
        }
    }
}
