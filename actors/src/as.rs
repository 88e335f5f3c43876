//! AS (authentication service) binds client identities to signature keys and signs the bindings.
//!
//! Registration, lookup and revocation arrive with the AS/CS issue; today it answers `Ping`.

use mlsd_transport::{Request, Response, Role};

use crate::role::{pong, RoleContext, RoleLogic};

/// The AS state machine.
#[derive(Debug, Default)]
pub struct AsLogic {}

impl RoleLogic for AsLogic {
    fn role(&self) -> Role {
        Role::As
    }

    fn handle(&mut self, req: Request, ctx: &RoleContext<'_>) -> Response {
        match req {
            Request::Ping { .. } => pong(Role::As, ctx),
        }
    }
}
