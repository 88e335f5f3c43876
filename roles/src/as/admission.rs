//! Approval codes: a live device lets one new device of its identity in
//! without the public pending queue, which strangers can fill (#39).
//!
//! The live device picks a short random code, shows it to its person and
//! sends the AS only its hash ([`admission_hash`], keyed by the new device's
//! client id) in a signed `Admit`. The new device's `Register` carrying the
//! code as its `token` is then bound at once, in open and token mode alike,
//! and the code is spent. A code binds nothing after
//! [`ADMISSION_LIFETIME_SECS`]; an identity has at most [`MAX_ADMISSIONS`]
//! outstanding.
//!
//! Storage: `c/IDENTITY/DEVICE` → [`AdmissionRecord`].

use mlsd_transport::protocol::identity::signing_bytes;
use mlsd_transport::protocol::r#as::{admission_hash, ADMISSION_LIFETIME_SECS, LABEL_ADMIT};
use mlsd_transport::protocol::{AdmitBody, AsError, AsResponse};
use mlsd_transport::{Response, WireError};
use serde::{Deserialize, Serialize};

use super::devices::{room_for, siblings, signer};
use super::{binding_key, get_record, is_live, AsLogic, SPACE};
use crate::contract::{internal, Decision, RoleContext};
use crate::record::{self, Stored};
use crate::sig::{fresh, unix};
use crate::storage::Batch;

/// Most approval codes one identity may have outstanding.
pub const MAX_ADMISSIONS: usize = 16;

/// An approval code waiting for its device.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdmissionRecord {
    /// [`admission_hash`] of the code.
    pub code_hash: [u8; 32],
    /// Unix seconds after which it binds nothing.
    pub expires_at: u64,
}

impl Stored for AdmissionRecord {
    const KIND: &'static str = "AS approval code";
    const VERSION: u8 = 1;
}

/// Storage key of `client`'s approval code.
fn admission_key(client: &str) -> Vec<u8> {
    format!("c/{client}").into_bytes()
}

/// The storage key of `client`'s approval code when `code` is that code
/// and it has not lapsed: the registration may bind, spending it.
pub(super) fn admitted(
    client: &str,
    code: &str,
    ctx: &RoleContext<'_>,
) -> Result<Option<Vec<u8>>, WireError> {
    let key = admission_key(client);
    let Some(v) = ctx.store.get(SPACE, &key).map_err(internal)? else { return Ok(None) };
    let Ok(r) = record::decode::<AdmissionRecord>(&v) else { return Ok(None) };
    let good = r.expires_at > unix(ctx.now) && r.code_hash == admission_hash(client, code);
    Ok(good.then_some(key))
}

impl AsLogic {
    /// `Admit`: a live device leaves an approval code for a new device of
    /// its identity. Another code for the same device replaces the first.
    pub(super) fn admit(
        &self,
        body: AdmitBody,
        signature: Vec<u8>,
        ctx: &RoleContext<'_>,
    ) -> Result<Decision, WireError> {
        let identity = siblings(&body.approver, &body.client)?;
        fresh(body.timestamp, ctx.now)?;
        signer(&body.approver, &signing_bytes(LABEL_ADMIT, &body), &signature, "admit", ctx)?;
        let existing = get_record(ctx, &binding_key(&body.client))?;
        if existing.as_ref().is_some_and(|r| is_live(r, ctx)) {
            return Err(WireError::As(AsError::ClientTaken(body.client)));
        }
        if existing.is_none() {
            room_for(identity, ctx)?;
        }
        // No code is written while MAX_ADMISSIONS are live, and each write
        // drops the lapsed ones, so this scan sees every record.
        let now = unix(ctx.now);
        let key = admission_key(&body.client);
        let prefix = format!("c/{identity}/");
        let mut batch = Batch::new();
        let mut live = 0;
        for (k, v) in
            ctx.store.scan_prefix(SPACE, prefix.as_bytes(), MAX_ADMISSIONS).map_err(internal)?
        {
            match record::decode::<AdmissionRecord>(&v) {
                Ok(r) if r.expires_at > now => live += usize::from(k != key),
                _ => batch.delete(SPACE, k),
            }
        }
        if live >= MAX_ADMISSIONS {
            return Err(WireError::As(AsError::TooManyDevices { max: MAX_ADMISSIONS as u32 }));
        }
        let expires_at = now.saturating_add(ADMISSION_LIFETIME_SECS);
        let rec = AdmissionRecord { code_hash: body.code_hash, expires_at };
        batch.put(SPACE, key, record::encode(&rec)?);
        tracing::info!("approval code left for a new device");
        let client = body.client;
        Ok(Decision::write(Response::As(AsResponse::Admitted { client, expires_at }), batch))
    }
}
