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
use mlsd_transport::protocol::identity::{signing_bytes, split_client_id, valid_name};
use mlsd_transport::protocol::r#as::{LABEL_REGISTER, LABEL_REVOKE};
use mlsd_transport::protocol::{AsError, AsRequest, AuthError, ClusterError};
use mlsd_transport::protocol::{Binding, NodeRequest, RegisterBody, RevokeBody, SignedBinding};
use mlsd_transport::{Request, Response, Role, WireError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::contract::{not_mine, pong, Decision, RoleContext, RoleLogic};
use crate::record::{self, Stored};
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
        let key = binding_key(&body.client);
        let existing = get_record(ctx, &key)?;
        let mut batch = Batch::new();
        let live = existing
            .as_ref()
            .filter(|r| r.revoked_at.is_none() && r.binding.expires_at > unix(ctx.now));
        match live {
            // Same key again: idempotent, the caller may have lost our reply.
            Some(r) if r.binding.signature_key == body.signature_key => {
                return Ok(Decision::reply(Response::Binding(self.sign(r)?)));
            }
            Some(r) => {
                let rot = rotation
                    .ok_or_else(|| WireError::As(AsError::ClientTaken(body.client.clone())))?;
                verify(&r.binding.signature_key, &tbs, &rot, "rotation")
                    .map_err(|_| WireError::As(AsError::ClientTaken(body.client.clone())))?;
            }
            None if self.settings.registration == Registration::Token => {
                let token = body.token.as_deref().ok_or(WireError::As(AsError::BadToken))?;
                let tkey = token_key(&Sha256::digest(token.as_bytes()));
                match ctx.store.get(SPACE, &tkey).map_err(internal)? {
                    Some(id) if id == identity.as_bytes() => batch.delete(SPACE, tkey),
                    _ => return Err(WireError::As(AsError::BadToken)),
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
        let reply = Response::Binding(self.sign(&record)?);
        tracing::info!(serial, "binding issued");
        Ok(Decision::write(reply, batch))
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
        let key = binding_key(&body.client);
        let mut r = get_record(ctx, &key)?
            .ok_or_else(|| WireError::Auth(AuthError::UnknownClient(body.client.clone())))?;
        verify(
            &r.binding.signature_key,
            &signing_bytes(LABEL_REVOKE, &body),
            &signature,
            "revoke",
        )?;
        let mut b = Batch::new();
        if r.revoked_at.is_none() {
            r.revoked_at = Some(unix(ctx.now));
            b.put(SPACE, key, record::encode(&r)?);
        }
        Ok(Decision::write(Response::Binding(self.sign(&r)?), b))
    }

    fn lookup(&self, identity: &str, ctx: &RoleContext<'_>) -> Result<Decision, WireError> {
        if !valid_name(identity) {
            return Err(WireError::Auth(AuthError::InvalidClientId(identity.to_string())));
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
        Ok(Decision::reply(Response::Bindings(out)))
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
    WireError::Cluster(ClusterError::Internal(e.to_string()))
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
        match req {
            AsRequest::Register { body, proof, rotation } => {
                self.register(body, proof, rotation, ctx)
            }
            AsRequest::Revoke { body, signature } => self.revoke(body, signature, ctx),
            AsRequest::Lookup { identity } => self.lookup(&identity, ctx),
        }
        .into()
    }

    fn admin(&mut self, req: NodeRequest, _ctx: &RoleContext<'_>) -> Decision {
        match req {
            NodeRequest::Enroll { identity, token_hash } => {
                if !valid_name(&identity) || token_hash.len() != 32 {
                    return Decision::reply(Response::Error(WireError::Auth(
                        AuthError::InvalidClientId(identity),
                    )));
                }
                let mut b = Batch::new();
                b.put(SPACE, token_key(&token_hash), identity.into_bytes());
                Decision::write(Response::Enrolled, b)
            }
            _ => Decision::reply(Response::Error(WireError::Auth(AuthError::NotAuthorized(
                "not an AS request".into(),
            )))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::storage::MemStore;

    const NOW: u64 = 1_800_000_000;

    fn logic(registration: Registration) -> AsLogic {
        AsLogic::new(AsSettings {
            signing_key: Some(std::sync::Arc::new(SigningKey::from_bytes(&[9; 32]))),
            registration,
            binding_lifetime: Duration::from_secs(3600),
        })
    }

    fn at(store: &MemStore, secs: u64) -> RoleContext<'_> {
        RoleContext { node: "t", store, now: UNIX_EPOCH + Duration::from_secs(secs) }
    }

    /// `client`'s registration of `key`'s public half, with a rotation
    /// signature by `old` when given.
    fn register(
        client: &str,
        key: &SigningKey,
        old: Option<&SigningKey>,
        token: Option<&str>,
    ) -> Request {
        let body = RegisterBody {
            client: client.into(),
            signature_key: key.verifying_key().to_bytes().to_vec(),
            timestamp: NOW,
            token: token.map(String::from),
        };
        let tbs = signing_bytes(LABEL_REGISTER, &body);
        Request::As(AsRequest::Register {
            proof: key.sign(&tbs).to_bytes().to_vec(),
            rotation: old.map(|o| o.sign(&tbs).to_bytes().to_vec()),
            body,
        })
    }

    fn run(logic: &mut AsLogic, store: &MemStore, req: Request) -> Response {
        logic.handle(req, None, &at(store, NOW)).applied(store)
    }

    /// The signature key of the one binding `identity` has, as a lookup shows it.
    fn bound_keys(logic: &mut AsLogic, store: &MemStore, identity: &str) -> Vec<Vec<u8>> {
        match run(logic, store, Request::As(AsRequest::Lookup { identity: identity.into() })) {
            Response::Bindings(b) => b.into_iter().map(|b| b.binding.signature_key).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_client_id_is_first_come_and_moves_to_a_new_key_only_by_rotation() {
        let (store, mut as_) = (MemStore::new(), logic(Registration::Open));
        let (k1, k2) = (SigningKey::from_bytes(&[1; 32]), SigningKey::from_bytes(&[2; 32]));
        assert!(matches!(
            run(&mut as_, &store, register("alice/phone", &k1, None, None)),
            Response::Binding(_)
        ));
        // The same key again is idempotent (a lost reply) and writes nothing.
        let before = store.contents();
        assert!(matches!(
            run(&mut as_, &store, register("alice/phone", &k1, None, None)),
            Response::Binding(_)
        ));
        assert_eq!(store.contents(), before);
        // A stranger's key for the taken id is refused, and nothing changes.
        let r = run(&mut as_, &store, register("alice/phone", &k2, None, None));
        assert_eq!(r, Response::Error(WireError::As(AsError::ClientTaken("alice/phone".into()))));
        assert_eq!(store.contents(), before);
        // With the old key's signature, the id moves to the new key.
        assert!(matches!(
            run(&mut as_, &store, register("alice/phone", &k2, Some(&k1), None)),
            Response::Binding(_)
        ));
        assert_eq!(bound_keys(&mut as_, &store, "alice"), [k2.verifying_key().to_bytes().to_vec()]);
    }

    #[test]
    fn refusals_change_nothing() {
        let (store, mut as_) = (MemStore::new(), logic(Registration::Token));
        let k = SigningKey::from_bytes(&[1; 32]);
        let mut forged = register("bob/phone", &k, None, Some("t0k3n"));
        if let Request::As(AsRequest::Register { proof, .. }) = &mut forged {
            proof[0] ^= 1;
        }
        let stale = {
            let mut r = register("bob/phone", &k, None, Some("t0k3n"));
            if let Request::As(AsRequest::Register { body, .. }) = &mut r {
                body.timestamp = NOW - 3600;
            }
            r
        };
        for (req, why) in [
            (register("bob/phone", &k, None, None), "no token"),
            (register("bob/phone", &k, None, Some("wrong")), "unknown token"),
            (forged, "bad proof"),
            (stale, "stale timestamp"),
            (register("no-device", &k, None, Some("t0k3n")), "bad client id"),
        ] {
            let r = run(&mut as_, &store, req);
            assert!(matches!(r, Response::Error(_)), "{why}: {r:?}");
            assert!(store.contents().is_empty(), "{why} wrote something");
        }
    }

    #[test]
    fn an_enrollment_token_registers_one_identity_once() {
        let (store, mut as_) = (MemStore::new(), logic(Registration::Token));
        let hash = Sha256::digest(b"t0k3n").to_vec();
        let enroll = NodeRequest::Enroll { identity: "bob".into(), token_hash: hash };
        assert_eq!(as_.admin(enroll, &at(&store, NOW)).applied(&store), Response::Enrolled);
        let k = SigningKey::from_bytes(&[1; 32]);
        // For another identity the token is no good.
        let r = run(&mut as_, &store, register("carol/phone", &k, None, Some("t0k3n")));
        assert_eq!(r, Response::Error(WireError::As(AsError::BadToken)));
        assert!(matches!(
            run(&mut as_, &store, register("bob/phone", &k, None, Some("t0k3n"))),
            Response::Binding(_)
        ));
        // Used up: a second device needs a token of its own.
        let r = run(&mut as_, &store, register("bob/laptop", &k, None, Some("t0k3n")));
        assert_eq!(r, Response::Error(WireError::As(AsError::BadToken)));
    }

    #[test]
    fn a_revocation_shows_in_lookups_an_expired_binding_does_not_and_serials_grow() {
        let (store, mut as_) = (MemStore::new(), logic(Registration::Open));
        let (k1, k2) = (SigningKey::from_bytes(&[1; 32]), SigningKey::from_bytes(&[2; 32]));
        let serial = |r: Response| match r {
            Response::Binding(b) => b.binding.serial,
            other => panic!("{other:?}"),
        };
        let s1 = serial(run(&mut as_, &store, register("dave/a", &k1, None, None)));
        let s2 = serial(run(&mut as_, &store, register("dave/b", &k2, None, None)));
        assert!(s2 > s1);
        let body = RevokeBody { client: "dave/a".into(), timestamp: NOW };
        let signature = k1.sign(&signing_bytes(LABEL_REVOKE, &body)).to_bytes().to_vec();
        match run(&mut as_, &store, Request::As(AsRequest::Revoke { body, signature })) {
            Response::Binding(b) => assert!(b.revoked_at.is_some()),
            other => panic!("{other:?}"),
        }
        let looked_up = |as_: &mut AsLogic, secs| match as_
            .handle(
                Request::As(AsRequest::Lookup { identity: "dave".into() }),
                None,
                &at(&store, secs),
            )
            .applied(&store)
        {
            Response::Bindings(b) => b
                .into_iter()
                .map(|b| (b.binding.client, b.revoked_at.is_some()))
                .collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        // The revoked one is still shown, as revoked; after the lifetime, none.
        assert_eq!(
            looked_up(&mut as_, NOW),
            [("dave/a".to_string(), true), ("dave/b".to_string(), false)]
        );
        assert!(looked_up(&mut as_, NOW + 3600).is_empty());
    }
}
