//! AS (authentication service): binds client ids to signature keys and signs
//! the bindings (steps 1 and 4 of the brief).
//!
//! Storage (column family `as`):
//! - `b/IDENTITY/DEVICE` → [`Record`]: the binding and its revocation time.
//!   Records stay after revocation and expiry: they are the identity's
//!   tombstones, so nobody else can claim a device id or the identity.
//! - `p/IDENTITY/DEVICE` → [`devices::PendingRecord`]: a new device's
//!   registration waiting for a live device's approval.
//! - `c/IDENTITY/DEVICE` → [`admission::AdmissionRecord`]: a live device's
//!   approval code for a new device ([`admission`]).
//! - `t/SHA256(token)` → identity: unused enrollment tokens.
//! - `serial` → last serial issued by this shard.
//! - `u/WEEK/SHA256(signature)`: signed requests served (`crate::once`).
//! - `q/…` and `k/…`: quota tickets issued and spent ([`tickets`]).
//!
//! Who may bind a client id: the holder of its live binding's key (the same
//! key again, or a rotation signed by it); for an identity nobody holds yet,
//! the first to ask (open registration) or the holder of an operator's token
//! (token mode); for a device of an identity that has devices (live or not),
//! a live device of that identity (`Approve`, or its approval code:
//! [`admission`]) or an operator's token. Until then the registration is
//! pending ([`devices`]), in open mode only: in token mode a registration
//! without a token or code is refused and nothing is kept.
//!
//! Bindings are signed when they are handed out, with the status they have
//! then, so a revocation is visible in every later lookup.

mod admission;
mod devices;
mod tickets;

use ed25519_dalek::Signer;
use mlsd_transport::protocol::identity::{signing_bytes, split_client_id, valid_name};
use mlsd_transport::protocol::r#as::{LABEL_REGISTER, LABEL_REVOKE, LOOKUP_PAGE};
use mlsd_transport::protocol::{
    AsError, AsRequest, AsResponse, AuthError, Binding, ClusterError, NodeRequest, NodeResponse,
    OperatorRequest, RegisterBody, RevokeBody, SignedBinding, Spend,
};
use mlsd_transport::{Request, Response, Role, WireError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::contract::{internal, not_mine, pong, Decision, RoleContext, RoleLogic};
use crate::once::at_most_once;
use crate::record::{self, Stored};
use crate::settings::{AsSettings, Registration};
use crate::sig::{fresh, unix, verify};
use crate::storage::{Batch, Space};

const SPACE: Space = Space::Role(Role::As);
/// Most client ids one identity may hold, bound or pending (revoked and
/// expired ones count); bounds a lookup's work and reply.
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
    tickets: Option<tickets::Tickets>,
}

impl AsLogic {
    /// An AS with these settings.
    pub fn new(settings: AsSettings) -> Self {
        let tickets = settings
            .signing_key
            .as_deref()
            .and_then(|k| tickets::Tickets::new(k, settings.tickets));
        AsLogic { settings, tickets }
    }

    /// The ticket key, on nodes with the AS key.
    fn tickets(&self) -> Result<&tickets::Tickets, WireError> {
        self.tickets.as_ref().ok_or_else(|| {
            WireError::Cluster(ClusterError::Internal("this node has no AS key".into()))
        })
    }

    fn sign(&self, r: &Record) -> Result<SignedBinding, WireError> {
        let key = self.settings.signing_key.as_ref().ok_or_else(|| {
            WireError::Cluster(ClusterError::Internal("this node has no AS key".into()))
        })?;
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
    ) -> Result<Decision, WireError> {
        let (identity, _) = split_client_id(&body.client)
            .ok_or_else(|| WireError::Auth(AuthError::InvalidClientId(body.client.clone())))?;
        fresh(body.timestamp, ctx.now)?;
        let tbs = signing_bytes(LABEL_REGISTER, &body);
        verify(&body.signature_key, &tbs, &proof, "proof of possession")?;
        let existing = get_record(ctx, &binding_key(&body.client))?;
        let mut batch = Batch::new();
        match existing.as_ref().filter(|r| is_live(r, ctx)) {
            // Same key again: idempotent, the caller may have lost our reply
            // (or a live device approved this registration meanwhile).
            Some(r)
                if r.binding.signature_key == body.signature_key && !due_for_renewal(r, ctx) =>
            {
                return Ok(Decision::reply(Response::As(AsResponse::Binding(self.sign(r)?))));
            }
            // Same key in the second half of the binding's life: renewed, a
            // fresh binding of the same key (new serial, new expiry).
            Some(r) if r.binding.signature_key == body.signature_key => {}
            Some(r) => {
                let rot = rotation
                    .ok_or_else(|| WireError::As(AsError::ClientTaken(body.client.clone())))?;
                verify(&r.binding.signature_key, &tbs, &rot, "rotation")
                    .map_err(|_| WireError::As(AsError::ClientTaken(body.client.clone())))?;
            }
            None => {
                let claimed = devices::claimed(identity, ctx)?;
                match body.token.as_deref() {
                    // An operator's token, or a live device's approval code,
                    // speaks for the identity in either mode.
                    Some(token) => {
                        batch.delete(SPACE, self.token_or_code(identity, &body.client, token, ctx)?)
                    }
                    // Token mode keeps nothing for a stranger: no pending
                    // entry without a token.
                    None if self.settings.registration == Registration::Token => {
                        return Err(WireError::As(AsError::BadToken))
                    }
                    None if claimed => return devices::pend(body, ctx),
                    None => {}
                }
                if existing.is_none() {
                    devices::room_for(identity, ctx)?;
                }
            }
        }
        let record = self.bind(body.client, body.signature_key, ctx, &mut batch)?;
        Ok(Decision::write(Response::As(AsResponse::Binding(self.sign(&record)?)), batch))
    }

    /// The storage key to delete when `token` is a live approval code for
    /// `client` or an unused operator's token for `identity`.
    fn token_or_code(
        &self,
        identity: &str,
        client: &str,
        token: &str,
        ctx: &RoleContext<'_>,
    ) -> Result<Vec<u8>, WireError> {
        match admission::admitted(client, token, ctx)? {
            Some(key) => Ok(key),
            None => self.token(identity, token, ctx),
        }
    }

    /// The storage key of `token`, when it is an unused token for `identity`.
    fn token(
        &self,
        identity: &str,
        token: &str,
        ctx: &RoleContext<'_>,
    ) -> Result<Vec<u8>, WireError> {
        let tkey = token_key(&Sha256::digest(token.as_bytes()));
        match ctx.store.get(SPACE, &tkey).map_err(internal)? {
            Some(id) if id == identity.as_bytes() => Ok(tkey),
            _ => Err(WireError::As(AsError::BadToken)),
        }
    }

    /// Adds to `batch` a fresh binding of `client` to `signature_key` (and
    /// drops its pending registration, if any).
    fn bind(
        &self,
        client: String,
        signature_key: Vec<u8>,
        ctx: &RoleContext<'_>,
        batch: &mut Batch,
    ) -> Result<Record, WireError> {
        let serial = next_serial(ctx)?;
        let now = unix(ctx.now);
        batch.delete(SPACE, devices::pending_key(&client));
        let key = binding_key(&client);
        let record = Record {
            binding: Binding {
                client,
                signature_key,
                issued_at: now,
                expires_at: now.saturating_add(self.settings.binding_lifetime.as_secs()),
                serial,
            },
            revoked_at: None,
        };
        batch.put(SPACE, b"serial".to_vec(), serial.to_be_bytes().to_vec());
        batch.put(SPACE, key, record::encode(&record)?);
        tracing::info!(serial, "binding decided");
        Ok(record)
    }

    fn revoke(
        &self,
        body: RevokeBody,
        signature: Vec<u8>,
        ctx: &RoleContext<'_>,
    ) -> Result<Decision, WireError> {
        split_client_id(&body.client)
            .ok_or_else(|| WireError::Auth(AuthError::InvalidClientId(body.client.clone())))?;
        fresh(body.timestamp, ctx.now)?;
        let mut r = get_record(ctx, &binding_key(&body.client))?
            .ok_or_else(|| WireError::Auth(AuthError::UnknownClient(body.client.clone())))?;
        verify(
            &r.binding.signature_key,
            &signing_bytes(LABEL_REVOKE, &body),
            &signature,
            "revoke",
        )?;
        self.mark_revoked(&mut r, ctx)
    }

    /// An operator's revocation of `client` (`mlsd admin revoke`).
    fn operator_revoke(&self, client: &str, ctx: &RoleContext<'_>) -> Result<Decision, WireError> {
        split_client_id(client)
            .ok_or_else(|| WireError::Auth(AuthError::InvalidClientId(client.to_string())))?;
        let mut r = get_record(ctx, &binding_key(client))?
            .ok_or_else(|| WireError::Auth(AuthError::UnknownClient(client.to_string())))?;
        tracing::info!("binding revoked by an operator");
        self.mark_revoked(&mut r, ctx)
    }

    /// Revokes `r` (once) and answers its re-signed binding.
    fn mark_revoked(&self, r: &mut Record, ctx: &RoleContext<'_>) -> Result<Decision, WireError> {
        let mut b = Batch::new();
        if r.revoked_at.is_none() {
            r.revoked_at = Some(unix(ctx.now));
            b.put(SPACE, binding_key(&r.binding.client), record::encode(&*r)?);
        }
        Ok(Decision::write(Response::As(AsResponse::Binding(self.sign(r)?)), b))
    }

    /// Every unexpired binding of `identity`: at most [`MAX_DEVICES`]
    /// records are read (an identity holds no more), so the answer is
    /// bounded. What the CS checks uploads and fetches against.
    fn lookup_all(
        &self,
        identity: &str,
        ctx: &RoleContext<'_>,
    ) -> Result<Vec<SignedBinding>, WireError> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        // MAX_DEVICES / LOOKUP_PAGE pages, and one to learn there is no more.
        for _ in 0..=MAX_DEVICES.div_ceil(LOOKUP_PAGE) {
            let (page, next) = self.lookup(identity, after.as_deref(), ctx)?;
            all.extend(page);
            match next {
                Some(n) => after = Some(n),
                None => return Ok(all),
            }
        }
        Ok(all)
    }

    /// One page of `identity`'s unexpired bindings after client id `after`:
    /// reads at most [`LOOKUP_PAGE`] + 1 records, whatever the identity
    /// holds, and says where the next page starts. Expired records are left
    /// out of the page but count towards its reads, so a page may hold fewer
    /// bindings (even none) and still have a `next`.
    fn lookup(
        &self,
        identity: &str,
        after: Option<&str>,
        ctx: &RoleContext<'_>,
    ) -> Result<(Vec<SignedBinding>, Option<String>), WireError> {
        if !valid_name(identity) {
            return Err(WireError::Auth(AuthError::InvalidClientId(identity.to_string())));
        }
        let prefix = format!("b/{identity}/");
        let start = match after {
            None => prefix.clone().into_bytes(),
            Some(a) if split_client_id(a).is_some_and(|(id, _)| id == identity) => {
                // The smallest key after `b/AFTER`.
                let mut k = binding_key(a);
                k.push(0);
                k
            }
            Some(a) => return Err(WireError::Auth(AuthError::InvalidClientId(a.to_string()))),
        };
        let now = unix(ctx.now);
        let mut read = ctx
            .store
            .scan_from(SPACE, prefix.as_bytes(), &start, LOOKUP_PAGE + 1)
            .map_err(internal)?;
        let next = if read.len() > LOOKUP_PAGE {
            read.truncate(LOOKUP_PAGE);
            read.last().map(|(k, _)| String::from_utf8_lossy(&k[2..]).into_owned())
        } else {
            None
        };
        let mut out = Vec::new();
        for (_, v) in read {
            // An unreadable binding is left out (and logged); the others are
            // still shown. Registering its client id stays refused.
            let Ok(r) = record::decode::<Record>(&v) else { continue };
            if r.binding.expires_at > now {
                out.push(self.sign(&r)?);
            }
        }
        Ok((out, next))
    }
}

/// Whether live binding `r` is in the second half of its life, when its key
/// may renew it by registering again.
fn due_for_renewal(r: &Record, ctx: &RoleContext<'_>) -> bool {
    let life = r.binding.expires_at.saturating_sub(r.binding.issued_at);
    r.binding.expires_at.saturating_sub(unix(ctx.now)) < life / 2
}

/// Whether `r` binds its client now: not revoked, not expired.
fn is_live(r: &Record, ctx: &RoleContext<'_>) -> bool {
    r.revoked_at.is_none() && r.binding.expires_at > unix(ctx.now)
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

impl RoleLogic for AsLogic {
    fn role(&self) -> Role {
        Role::As
    }

    fn handle(&mut self, req: Request, _pre: Option<Response>, ctx: &RoleContext<'_>) -> Decision {
        let req = match req {
            Request::Ping(_) => return Decision::reply(pong(Role::As, ctx)),
            Request::As(r) => r,
            other => return not_mine(Role::As, &other),
        };
        let signature = req.signature().map(<[u8]>::to_vec);
        let decision = match req {
            AsRequest::Register { body, proof, rotation } => {
                self.register(body, proof, rotation, ctx)
            }
            AsRequest::Revoke { body, signature } => self.revoke(body, signature, ctx),
            AsRequest::Lookup { identity } => self
                .lookup_all(&identity, ctx)
                .map(|bindings| Decision::reply(Response::As(AsResponse::Bindings(bindings)))),
            AsRequest::LookupPage { identity, after } => {
                self.lookup(&identity, after.as_deref(), ctx).map(|(bindings, next)| {
                    Decision::reply(Response::As(AsResponse::BindingPage { bindings, next }))
                })
            }
            AsRequest::Approve { body, signature } => self.approve(body, signature, ctx),
            AsRequest::Devices { body, signature } => self.devices(body, signature, ctx),
            AsRequest::RevokeDevice { body, signature } => self.revoke_device(body, signature, ctx),
            AsRequest::IssueTickets { body, signature } => {
                self.tickets().and_then(|t| t.issue(body, signature, ctx))
            }
            AsRequest::Admit { body, signature } => self.admit(body, signature, ctx),
        }
        .into();
        at_most_once(SPACE, signature.as_deref(), decision, ctx)
    }

    fn admin(&mut self, req: NodeRequest, ctx: &RoleContext<'_>) -> Decision {
        match req {
            NodeRequest::Operator(OperatorRequest::Enroll { identity, token_hash }) => {
                if !valid_name(&identity) || token_hash.len() != 32 {
                    return Decision::reply(Response::Error(WireError::Auth(
                        AuthError::InvalidClientId(identity),
                    )));
                }
                let mut b = Batch::new();
                b.put(SPACE, token_key(&token_hash), identity.into_bytes());
                Decision::write(Response::Node(NodeResponse::Enrolled), b)
            }
            NodeRequest::Operator(OperatorRequest::Revoke { client }) => {
                self.operator_revoke(&client, ctx).into()
            }
            NodeRequest::Spend(Spend { ticket, bind }) => {
                self.tickets().and_then(|t| t.spend(ticket, bind, ctx)).into()
            }
            _ => Decision::reply(Response::Error(WireError::Auth(AuthError::NotAuthorized(
                "not an AS request".into(),
            )))),
        }
    }
}

#[cfg(test)]
mod admission_tests;
#[cfg(test)]
mod tests;
