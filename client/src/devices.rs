//! An identity's devices, as one of its devices sees and manages them.
//!
//! A new device of an identity that has devices registers like any other
//! (`Client::register`), but the AS binds it only once a live device of the
//! identity approves it; until then `register` answers
//! [`ClientError::AwaitsApproval`] with the key's fingerprint, which the
//! approving device shows too, so a person can tell their own new device
//! from a stranger's request for the same name.

use mlsd_transport::protocol::r#as::{LABEL_APPROVE, LABEL_DEVICES, LABEL_REVOKE_DEVICE};
use mlsd_transport::protocol::{
    ApproveBody, AsRequest, AsResponse, DevicesBody, PendingDevice, RevokeDeviceBody, SignedBinding,
};
use mlsd_transport::{Request, Response};

use crate::client::{unexpected, Client};
use crate::connection::ClientError;
use crate::state::now_secs;

/// What a revocation did.
#[derive(Debug)]
pub enum Revoked {
    /// The device's binding is revoked.
    Device(SignedBinding),
    /// It had no binding yet: its pending registration is declined.
    Declined,
}

impl Client {
    /// This identity's devices (revoked ones marked) and pending
    /// registrations, as the AS tells one of its live devices.
    pub async fn devices(&self) -> Result<(Vec<SignedBinding>, Vec<PendingDevice>), ClientError> {
        let client = self.client_id().ok_or(ClientError::NotRegistered)?.to_string();
        let body = DevicesBody { client, timestamp: now_secs() };
        let signature = self.sign(LABEL_DEVICES, &body)?;
        match self.conn.request(Request::As(AsRequest::Devices { body, signature })).await? {
            Response::As(AsResponse::Devices { bindings, pending }) => Ok((bindings, pending)),
            other => Err(unexpected(other)),
        }
    }

    /// Approves the pending registration of `client`, a new device of this
    /// identity, whose key is `signature_key`; the AS binds it.
    pub async fn approve(
        &self,
        client: &str,
        signature_key: Vec<u8>,
    ) -> Result<SignedBinding, ClientError> {
        let approver = self.client_id().ok_or(ClientError::NotRegistered)?.to_string();
        let body = ApproveBody {
            approver,
            client: client.to_string(),
            signature_key,
            timestamp: now_secs(),
        };
        let signature = self.sign(LABEL_APPROVE, &body)?;
        match self.conn.request(Request::As(AsRequest::Approve { body, signature })).await? {
            Response::As(AsResponse::Binding(b)) => Ok(b),
            other => Err(unexpected(other)),
        }
    }

    /// Revokes `client`, another device of this identity (a lost one), or
    /// declines its pending registration.
    pub async fn revoke_device(&self, client: &str) -> Result<Revoked, ClientError> {
        let by = self.client_id().ok_or(ClientError::NotRegistered)?.to_string();
        let body = RevokeDeviceBody { by, client: client.to_string(), timestamp: now_secs() };
        let signature = self.sign(LABEL_REVOKE_DEVICE, &body)?;
        match self.conn.request(Request::As(AsRequest::RevokeDevice { body, signature })).await? {
            Response::As(AsResponse::Binding(b)) => Ok(Revoked::Device(b)),
            Response::As(AsResponse::Devices { .. }) => Ok(Revoked::Declined),
            other => Err(unexpected(other)),
        }
    }
}
