//! New devices of an identity that has devices: pending registrations, a
//! live device's approval, the device list, and revoking a sibling device.
//!
//! A registration for a device of a claimed identity (one with any binding
//! record, live, revoked or expired) binds nothing: it is kept as pending
//! for [`PENDING_LIFETIME_SECS`], at most [`MAX_PENDING`] per identity, and
//! answered `RegistrationPending`. A live device of the identity lists it
//! (`Devices`, signed) and approves it (`Approve`, signed over the new
//! device's client id and key), which binds it; the new device's next
//! `Register` with the same key then gets that binding.

use mlsd_transport::protocol::identity::{signing_bytes, split_client_id};
use mlsd_transport::protocol::r#as::{LABEL_APPROVE, LABEL_DEVICES, LABEL_REVOKE_DEVICE};
use mlsd_transport::protocol::{
    ApproveBody, AsError, AsResponse, AuthError, DevicesBody, PendingDevice, RegisterBody,
    RevokeDeviceBody,
};
use mlsd_transport::{Response, WireError};
use serde::{Deserialize, Serialize};

use super::{binding_key, get_record, is_live, AsLogic, Record, MAX_DEVICES, SPACE};
use crate::contract::{internal, Decision, RoleContext};
use crate::record::{self, Stored};
use crate::sig::{fresh, unix, verify};
use crate::storage::Batch;

/// Most pending registrations one identity may have at a time.
pub const MAX_PENDING: usize = 16;

/// How long a pending registration waits for approval.
pub const PENDING_LIFETIME_SECS: u64 = 7 * 24 * 3600;

/// A registration waiting for approval.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingRecord {
    /// The key the new device registered with.
    pub signature_key: Vec<u8>,
    /// Unix seconds.
    pub requested_at: u64,
}

impl Stored for PendingRecord {
    const KIND: &'static str = "AS pending registration";
    const VERSION: u8 = 1;
}

/// Storage key of `client`'s pending registration.
pub(super) fn pending_key(client: &str) -> Vec<u8> {
    format!("p/{client}").into_bytes()
}

/// Whether `identity` has any binding record, live or not: then its new
/// devices need a live device's approval (or an operator's token).
pub(super) fn claimed(identity: &str, ctx: &RoleContext<'_>) -> Result<bool, WireError> {
    let prefix = format!("b/{identity}/");
    Ok(!ctx.store.scan_prefix(SPACE, prefix.as_bytes(), 1).map_err(internal)?.is_empty())
}

/// Refuses a new client id when `identity` holds [`MAX_DEVICES`] already.
pub(super) fn room_for(identity: &str, ctx: &RoleContext<'_>) -> Result<(), WireError> {
    let prefix = format!("b/{identity}/");
    let held = ctx.store.scan_prefix(SPACE, prefix.as_bytes(), MAX_DEVICES).map_err(internal)?;
    if held.len() >= MAX_DEVICES {
        return Err(WireError::As(AsError::TooManyDevices { max: MAX_DEVICES as u32 }));
    }
    Ok(())
}

/// `identity`'s pending registrations that have not lapsed, and the keys of
/// those that have. Every write of a pending record also deletes the lapsed
/// ones and none is written while [`MAX_PENDING`] are live, so an identity
/// never holds more than [`MAX_PENDING`] records and this scan sees them all.
fn pending(
    identity: &str,
    ctx: &RoleContext<'_>,
) -> Result<(Vec<PendingDevice>, Vec<Vec<u8>>), WireError> {
    let prefix = format!("p/{identity}/");
    let now = unix(ctx.now);
    let (mut live, mut lapsed) = (Vec::new(), Vec::new());
    for (k, v) in ctx.store.scan_prefix(SPACE, prefix.as_bytes(), MAX_PENDING).map_err(internal)? {
        let Ok(r) = record::decode::<PendingRecord>(&v) else { continue };
        let Ok(client) = String::from_utf8(k[2..].to_vec()) else { continue };
        if r.requested_at.saturating_add(PENDING_LIFETIME_SECS) > now {
            live.push(PendingDevice {
                client,
                signature_key: r.signature_key,
                requested_at: r.requested_at,
            });
        } else {
            lapsed.push(k);
        }
    }
    Ok((live, lapsed))
}

/// Keeps `body` as a pending registration (its proof of possession was
/// checked) and answers `RegistrationPending`. The same key again changes
/// nothing; another key replaces the request for that client id.
pub(super) fn pend(body: RegisterBody, ctx: &RoleContext<'_>) -> Result<Decision, WireError> {
    let (identity, _) = split_client_id(&body.client)
        .ok_or_else(|| WireError::Auth(AuthError::InvalidClientId(body.client.clone())))?;
    let (waiting, lapsed) = pending(identity, ctx)?;
    if let Some(p) = waiting.iter().find(|p| p.client == body.client) {
        if p.signature_key == body.signature_key {
            return Ok(Decision::reply(Response::As(AsResponse::RegistrationPending {
                pending: p.clone(),
            })));
        }
    } else if waiting.len() >= MAX_PENDING {
        return Err(WireError::As(AsError::TooManyDevices { max: MAX_PENDING as u32 }));
    }
    let rec = PendingRecord { signature_key: body.signature_key, requested_at: unix(ctx.now) };
    let mut b = Batch::new();
    let key = pending_key(&body.client);
    for k in lapsed.into_iter().filter(|k| *k != key) {
        b.delete(SPACE, k);
    }
    b.put(SPACE, key, record::encode(&rec)?);
    let pending = PendingDevice {
        client: body.client,
        signature_key: rec.signature_key,
        requested_at: rec.requested_at,
    };
    tracing::info!("registration pending approval");
    Ok(Decision::write(Response::As(AsResponse::RegistrationPending { pending }), b))
}

/// The live record of `client`, whose key signed `tbs` with `signature`
/// (`what` names the request in errors): a device acting for its identity.
pub(super) fn signer(
    client: &str,
    tbs: &[u8],
    signature: &[u8],
    what: &str,
    ctx: &RoleContext<'_>,
) -> Result<Record, WireError> {
    let unknown = || WireError::Auth(AuthError::UnknownClient(client.to_string()));
    let r = get_record(ctx, &binding_key(client))?.ok_or_else(unknown)?;
    if !is_live(&r, ctx) {
        return Err(unknown());
    }
    verify(&r.binding.signature_key, tbs, signature, what)?;
    Ok(r)
}

/// Refuses unless `actor` and `client` are distinct, valid client ids of
/// one identity; returns that identity.
pub(super) fn siblings<'a>(actor: &'a str, client: &str) -> Result<&'a str, WireError> {
    let invalid = |c: &str| WireError::Auth(AuthError::InvalidClientId(c.to_string()));
    let (identity, _) = split_client_id(actor).ok_or_else(|| invalid(actor))?;
    let (other, _) = split_client_id(client).ok_or_else(|| invalid(client))?;
    if identity != other || actor == client {
        return Err(WireError::Auth(AuthError::NotAuthorized(
            "a device acts only on other devices of its own identity".into(),
        )));
    }
    Ok(identity)
}

impl AsLogic {
    /// `Approve`: a live device binds a new device of its identity.
    pub(super) fn approve(
        &self,
        body: ApproveBody,
        signature: Vec<u8>,
        ctx: &RoleContext<'_>,
    ) -> Result<Decision, WireError> {
        let identity = siblings(&body.approver, &body.client)?;
        fresh(body.timestamp, ctx.now)?;
        let tbs = signing_bytes(LABEL_APPROVE, &body);
        signer(&body.approver, &tbs, &signature, "approve", ctx)?;
        let existing = get_record(ctx, &binding_key(&body.client))?;
        match existing.as_ref().filter(|r| is_live(r, ctx)) {
            Some(r) if r.binding.signature_key == body.signature_key => {
                return Ok(Decision::reply(Response::As(AsResponse::Binding(self.sign(r)?))));
            }
            // A live device rotates its own key; nobody else does it for it.
            Some(_) => return Err(WireError::As(AsError::ClientTaken(body.client))),
            None if existing.is_none() => room_for(identity, ctx)?,
            None => {}
        }
        let mut batch = Batch::new();
        let record = self.bind(body.client, body.signature_key, ctx, &mut batch)?;
        Ok(Decision::write(Response::As(AsResponse::Binding(self.sign(&record)?)), batch))
    }

    /// `Devices`: the identity's bindings and pending registrations, for
    /// one of its live devices.
    pub(super) fn devices(
        &self,
        body: DevicesBody,
        signature: Vec<u8>,
        ctx: &RoleContext<'_>,
    ) -> Result<Decision, WireError> {
        let (identity, _) = split_client_id(&body.client)
            .ok_or_else(|| WireError::Auth(AuthError::InvalidClientId(body.client.clone())))?;
        fresh(body.timestamp, ctx.now)?;
        signer(&body.client, &signing_bytes(LABEL_DEVICES, &body), &signature, "devices", ctx)?;
        let prefix = format!("b/{identity}/");
        let mut bindings = Vec::new();
        for (_, v) in
            ctx.store.scan_prefix(SPACE, prefix.as_bytes(), MAX_DEVICES).map_err(internal)?
        {
            let Ok(r) = record::decode::<Record>(&v) else { continue };
            bindings.push(self.sign(&r)?);
        }
        let (pending, _) = pending(identity, ctx)?;
        Ok(Decision::reply(Response::As(AsResponse::Devices { bindings, pending })))
    }

    /// `RevokeDevice`: a live device revokes another device of its identity,
    /// or declines its pending registration (answered with the devices left).
    pub(super) fn revoke_device(
        &self,
        body: RevokeDeviceBody,
        signature: Vec<u8>,
        ctx: &RoleContext<'_>,
    ) -> Result<Decision, WireError> {
        let identity = siblings(&body.by, &body.client)?;
        fresh(body.timestamp, ctx.now)?;
        let tbs = signing_bytes(LABEL_REVOKE_DEVICE, &body);
        signer(&body.by, &tbs, &signature, "revoke device", ctx)?;
        if let Some(mut r) = get_record(ctx, &binding_key(&body.client))? {
            return self.mark_revoked(&mut r, ctx);
        }
        let (waiting, _) = pending(identity, ctx)?;
        if !waiting.iter().any(|p| p.client == body.client) {
            return Err(WireError::Auth(AuthError::UnknownClient(body.client)));
        }
        let mut b = Batch::new();
        b.delete(SPACE, pending_key(&body.client));
        let pending = waiting.into_iter().filter(|p| p.client != body.client).collect();
        Ok(Decision::write(Response::As(AsResponse::Devices { bindings: Vec::new(), pending }), b))
    }
}
