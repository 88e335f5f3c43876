//! SDS (storage service) keeps capability-addressed, end-to-end encrypted blobs.
//!
//! Blobs arrive with the SDS issue; today it answers `Ping`.

use mlsd_transport::{Request, Response, Role, WireError};

use crate::role::{pong, RoleContext, RoleLogic};

/// The SDS state machine.
#[derive(Debug, Default)]
pub struct SdsLogic {}

impl RoleLogic for SdsLogic {
    fn role(&self) -> Role {
        Role::Sds
    }

    fn handle(&mut self, req: Request, _pre: Option<Response>, ctx: &RoleContext<'_>) -> Response {
        match req {
            Request::Ping { .. } => pong(Role::Sds, ctx),
            other => Response::Error(WireError::Internal(format!("SDS cannot serve {other:?}"))),
        }
    }
}
