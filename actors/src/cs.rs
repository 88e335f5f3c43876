//! CS (credential service) is the KeyPackage directory: one-time KeyPackages handed out and consumed.
//!
//! Publishing and fetching KeyPackages arrive with the AS/CS issue; today it answers `Ping`.

use mlsd_transport::{Request, Response, Role};

use crate::role::{pong, RoleContext, RoleLogic};

/// The CS state machine.
#[derive(Debug, Default)]
pub struct CsLogic {}

impl RoleLogic for CsLogic {
    fn role(&self) -> Role {
        Role::Cs
    }

    fn handle(&mut self, req: Request, ctx: &RoleContext<'_>) -> Response {
        match req {
            Request::Ping { .. } => pong(Role::Cs, ctx),
        }
    }
}
