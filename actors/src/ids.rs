//! IDS (message reception) orders each group's commits and anonymizes every copy in its fan-out.
//!
//! Group, fan-out and anonymizer actors arrive with the IDS/ODS issue; today it answers `Ping`.

use mlsd_transport::{Request, Response, Role, WireError};

use crate::role::{pong, RoleContext, RoleLogic};

/// The IDS state machine.
#[derive(Debug, Default)]
pub struct IdsLogic {}

impl RoleLogic for IdsLogic {
    fn role(&self) -> Role {
        Role::Ids
    }

    fn handle(&mut self, req: Request, _pre: Option<Response>, ctx: &RoleContext<'_>) -> Response {
        match req {
            Request::Ping { .. } => pong(Role::Ids, ctx),
            other => Response::Error(WireError::Internal(format!("IDS cannot serve {other:?}"))),
        }
    }
}
