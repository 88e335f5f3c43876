//! AS (authentication service): binds client ids to signature keys and signs
//! the bindings (steps 1 and 4 of the brief).
//!
//! Storage (column family `as`):
//! - `b/IDENTITY/DEVICE` → [`Record`]: the binding and its revocation time.
//! - `t/SHA256(token)` → identity: unused enrollment tokens (token mode).
//! - `serial` → last serial issued by this shard.
//!
//! Bindings are signed when they are handed out, with the status they have
//! then, so a revocation is visible in every later lookup.

use ed25519_dalek::Signer;
use mlsd_transport::protocol::identity::{
    signing_bytes, split_client_id, valid_name, LABEL_REGISTER, LABEL_REVOKE,
};
use mlsd_transport::protocol::{Binding, NodeRequest, RegisterBody, RevokeBody, SignedBinding};
use mlsd_transport::{Request, Response, Role, WireError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::record::{self, Stored};
use crate::role::{pong, RoleContext, RoleLogic};
use crate::settings::{AsSettings, Registration};
use crate::sig::{fresh, unix, verify};
use crate::storage::{Batch, Space};

const SPACE: Space = Space::Role(Role::As);
/// Most devices returned for one identity; bounds a lookup's work and reply.
pub const MAX_DEVICES: usize = 64;

/// What the AS stores per client.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The binding.
    pub binding: Binding,
    /// Set when the client revoked it.
    pub revoked_at: Option<u64>,
}

impl Stored for Record {
    const KIND: &'static str = "AS binding";
    const VERSION: u8 = 1;
}

/// The AS state machine.
pub struct AsLogic {
    settings: AsSettings,
}

impl AsLogic {
    /// An AS with these settings.
    pub fn new(settings: AsSettings) -> Self {
        AsLogic { settings }
    }

    fn sign(&self, r: &Record) -> Result<SignedBinding, WireError> {
        let key = self
            .settings
            .signing_key
            .as_ref()
            .ok_or_else(|| WireError::Internal("this node has no AS key".into()))?;
        let sig = key.sign(&SignedBinding::tbs(&r.binding, r.revoked_at));
        Ok(SignedBinding {
            binding: r.binding.clone(),
            revoked_at: r.revoked_at,
            signature: sig.to_bytes().to_vec(),
        })
    }

    fn register(
        &self,
        body: RegisterBody,
        proof: Vec<u8>,
        rotation: Option<Vec<u8>>,
        ctx: &RoleContext<'_>,
    ) -> Result<Response, WireError> {
        let (identity, _) = split_client_id(&body.client)
            .ok_or_else(|| WireError::InvalidClientId(body.client.clone()))?;
        fresh(body.timestamp, ctx.now)?;
        let tbs = signing_bytes(LABEL_REGISTER, &body);
        verify(&body.signature_key, &tbs, &proof, "proof of possession")?;
        let key = binding_key(&body.client);
        let existing = get_record(ctx, &key)?;
        let mut batch = Batch::new();
        let live = existing
            .as_ref()
            .filter(|r| r.revoked_at.is_none() && r.binding.expires_at > unix(ctx.now));
        match live {
            // Same key again: idempotent, the caller may have lost our reply.
            Some(r) if r.binding.signature_key == body.signature_key => {
                return Ok(Response::Binding(self.sign(r)?));
            }
            Some(r) => {
                let rot = rotation.ok_or_else(|| WireError::ClientTaken(body.client.clone()))?;
                verify(&r.binding.signature_key, &tbs, &rot, "rotation")
                    .map_err(|_| WireError::ClientTaken(body.client.clone()))?;
            }
            None if self.settings.registration == Registration::Token => {
                let token = body.token.as_deref().ok_or(WireError::BadToken)?;
                let tkey = token_key(&Sha256::digest(token.as_bytes()));
                match ctx.store.get(SPACE, &tkey).map_err(internal)? {
                    Some(id) if id == identity.as_bytes() => batch.delete(SPACE, tkey),
                    _ => return Err(WireError::BadToken),
                }
            }
            None => {}
        }
        let serial = next_serial(ctx)?;
        let now = unix(ctx.now);
        let record = Record {
            binding: Binding {
                client: body.client,
                signature_key: body.signature_key,
                issued_at: now,
                expires_at: now.saturating_add(self.settings.binding_lifetime.as_secs()),
                serial,
            },
            revoked_at: None,
        };
        batch.put(SPACE, b"serial".to_vec(), serial.to_be_bytes().to_vec());
        batch.put(SPACE, key, record::encode(&record)?);
        ctx.store.write(batch).map_err(internal)?;
        tracing::info!(serial, "binding issued");
        Ok(Response::Binding(self.sign(&record)?))
    }

    fn revoke(
        &self,
        body: RevokeBody,
        signature: Vec<u8>,
        ctx: &RoleContext<'_>,
    ) -> Result<Response, WireError> {
        split_client_id(&body.client)
            .ok_or_else(|| WireError::InvalidClientId(body.client.clone()))?;
        fresh(body.timestamp, ctx.now)?;
        let key = binding_key(&body.client);
        let mut r =
            get_record(ctx, &key)?.ok_or_else(|| WireError::UnknownClient(body.client.clone()))?;
        verify(
            &r.binding.signature_key,
            &signing_bytes(LABEL_REVOKE, &body),
            &signature,
            "revoke",
        )?;
        if r.revoked_at.is_none() {
            r.revoked_at = Some(unix(ctx.now));
            let mut b = Batch::new();
            b.put(SPACE, key, record::encode(&r)?);
            ctx.store.write(b).map_err(internal)?;
        }
        Ok(Response::Binding(self.sign(&r)?))
    }

    fn lookup(&self, identity: &str, ctx: &RoleContext<'_>) -> Result<Response, WireError> {
        if !valid_name(identity) {
            return Err(WireError::InvalidClientId(identity.to_string()));
        }
        let prefix = format!("b/{identity}/");
        let now = unix(ctx.now);
        let mut out = Vec::new();
        for (_, v) in
            ctx.store.scan_prefix(SPACE, prefix.as_bytes(), MAX_DEVICES).map_err(internal)?
        {
            // An unreadable binding is left out (and logged); the others are
            // still shown. Registering its client id stays refused.
            let Ok(r) = record::decode::<Record>(&v) else { continue };
            if r.binding.expires_at > now {
                out.push(self.sign(&r)?);
            }
        }
        Ok(Response::Bindings(out))
    }
}

fn binding_key(client: &str) -> Vec<u8> {
    format!("b/{client}").into_bytes()
}

/// Storage key of an enrollment token's hash.
pub fn token_key(hash: &[u8]) -> Vec<u8> {
    let mut k = b"t/".to_vec();
    k.extend_from_slice(hash);
    k
}

fn get_record(ctx: &RoleContext<'_>, key: &[u8]) -> Result<Option<Record>, WireError> {
    match ctx.store.get(SPACE, key).map_err(internal)? {
        None => Ok(None),
        Some(v) => Ok(Some(record::decode(&v)?)),
    }
}

fn next_serial(ctx: &RoleContext<'_>) -> Result<u64, WireError> {
    let cur = ctx
        .store
        .get(SPACE, b"serial")
        .map_err(internal)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0);
    Ok(cur + 1)
}

pub(crate) fn internal(e: impl std::fmt::Display) -> WireError {
    WireError::Internal(e.to_string())
}

impl RoleLogic for AsLogic {
    fn role(&self) -> Role {
        Role::As
    }

    fn handle(&mut self, req: Request, _pre: Option<Response>, ctx: &RoleContext<'_>) -> Response {
        let r = match req {
            Request::Ping { .. } => Ok(pong(Role::As, ctx)),
            Request::Register { body, proof, rotation } => {
                self.register(body, proof, rotation, ctx)
            }
            Request::Revoke { body, signature } => self.revoke(body, signature, ctx),
            Request::Lookup { identity } => self.lookup(&identity, ctx),
            other => Err(WireError::Internal(format!("AS cannot serve {other:?}"))),
        };
        r.unwrap_or_else(Response::Error)
    }

    fn admin(&mut self, req: NodeRequest, ctx: &RoleContext<'_>) -> Response {
        match req {
            NodeRequest::Enroll { identity, token_hash } => {
                if !valid_name(&identity) || token_hash.len() != 32 {
                    return Response::Error(WireError::InvalidClientId(identity));
                }
                let mut b = Batch::new();
                b.put(SPACE, token_key(&token_hash), identity.into_bytes());
                match ctx.store.write(b) {
                    Ok(()) => Response::Enrolled,
                    Err(e) => Response::Error(internal(e)),
                }
            }
            _ => Response::Error(WireError::NotAuthorized("not an AS request".into())),
        }
    }
}
