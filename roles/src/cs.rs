//! CS (credential service): the KeyPackage directory (steps 2 and 3).
//!
//! Every upload is checked against the uploader's current AS binding, which the
//! actor shell fetches through the router before the request reaches this
//! state machine ([`RoleLogic::prerequisite`]). KeyPackages are validated with
//! openmls and must name the uploading client with its bound key.
//!
//! Storage (column family `cs`):
//! - `k/CLIENT/SEQ` → [`KpRecord`]: one-time KeyPackages, oldest first.
//! - `l/CLIENT` → [`KpRecord`]: the last-resort KeyPackage.
//! - `n/CLIENT` → next SEQ.
//! - `u/WEEK/SHA256(signature)`: signed requests served (`crate::once`).
//! - `p/WEEK/PAID` → the answer: paid fetches served ([`CsRequest::FetchPaid`]),
//!   so that a repeat gets the same KeyPackages and consumes none; this
//!   week's and last week's are kept.
//! - `x/WEEK/SHA256(KeyPackage)` → not_after: every KeyPackage stored, in the
//!   bucket of the week it expires (weeks since 1970, 4 bytes BE), so a
//!   replayed upload cannot put a consumed KeyPackage back. Past weeks go in
//!   one range delete: their KeyPackages are expired, which openmls
//!   validation refuses anyway. (`h/SHA256` → not_after, the older form that
//!   was never deleted, is moved into the buckets or dropped if expired.)
//!
//! A fetch deletes what it hands out in the same write, before replying, and
//! the actor serves one request at a time: no KeyPackage is handed out twice.

use mlsd_transport::protocol::cs::{LABEL_COUNT, LABEL_PUBLISH};
use mlsd_transport::protocol::identity::{signing_bytes, split_client_id, valid_name};
use mlsd_transport::protocol::{
    AsRequest, AsResponse, AuthError, CountBody, CsError, CsRequest, CsResponse, FetchedKeyPackage,
    PublishBody, SignedBinding,
};
use mlsd_transport::{Request, Response, Role, WireError};
use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::{BasicCredential, Ciphersuite, KeyPackageIn, ProtocolVersion};
use openmls_rust_crypto::RustCrypto;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::budget::{seconds, Budgets};
use crate::contract::{internal, not_mine, pong, Decision, RoleContext, RoleLogic};
use crate::once::at_most_once;
use crate::record::{self, Stored};
use crate::settings::CsSettings;
use crate::sig::{fresh, unix, verify};
use crate::storage::{drop_weeks_before, week, week_prefix, Batch, Space};

const SPACE: Space = Space::Role(Role::Cs);
/// Key tag of the paid fetches served.
const PAID: &[u8] = b"p/";

/// The only ciphersuite clients of this deployment use.
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// A stored KeyPackage and what the CS needs to know about it without parsing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KpRecord {
    /// TLS-serialized KeyPackage.
    pub key_package: Vec<u8>,
    /// Its `not_after`, Unix seconds.
    pub not_after: u64,
    /// The signature key it was validated against.
    pub signature_key: Vec<u8>,
}

impl Stored for KpRecord {
    const KIND: &'static str = "CS KeyPackage";
    const VERSION: u8 = 1;
}

/// The CS state machine.
pub struct CsLogic {
    settings: CsSettings,
    crypto: RustCrypto,
    /// The week whose expired KeyPackage hashes this CS has deleted.
    swept: Option<u32>,
    /// Fetches left per target identity. Kept here, at the identity's CS
    /// owner, so every entry node draws on the same budget.
    fetch_budgets: Budgets<String>,
}

impl CsLogic {
    /// A CS with these settings.
    pub fn new(settings: CsSettings) -> Self {
        let fetch_budgets = Budgets::per_minute(settings.fetches_per_target_per_minute);
        CsLogic { settings, crypto: RustCrypto::default(), swept: None, fetch_budgets }
    }

    /// Takes one fetch of `identity`'s KeyPackages from its budget, or
    /// refuses `RateLimited` (before anything is handed out).
    fn take_fetch(&mut self, identity: &str, ctx: &RoleContext<'_>) -> Result<(), WireError> {
        self.fetch_budgets.spend(identity.to_string(), 1, seconds(ctx.now))
    }

    /// Checks one KeyPackage: openmls validation (signatures, lifetime,
    /// distinct keys, extensions), our ciphersuite, a bounded lifetime, and a
    /// credential naming `client` with `key`. Public so the KeyPackage parser
    /// can be fuzzed on its own (fuzz/).
    pub fn validate(&self, bytes: &[u8], client: &str, key: &[u8]) -> Result<KpRecord, String> {
        let kp_in =
            KeyPackageIn::tls_deserialize_exact(bytes).map_err(|e| format!("decode: {e}"))?;
        let kp = kp_in.validate(&self.crypto, ProtocolVersion::Mls10).map_err(|e| e.to_string())?;
        if kp.ciphersuite() != CIPHERSUITE {
            return Err(format!("unsupported ciphersuite {:?}", kp.ciphersuite()));
        }
        let life = kp.life_time();
        if life.not_after().saturating_sub(life.not_before()) > self.settings.max_lifetime.as_secs()
        {
            return Err("lifetime longer than this CS accepts".into());
        }
        let cred = BasicCredential::try_from(kp.leaf_node().credential().clone())
            .map_err(|_| "credential is not a basic credential".to_string())?;
        if cred.identity() != client.as_bytes() {
            return Err("credential names another client".into());
        }
        if kp.leaf_node().signature_key().as_slice() != key {
            return Err("signature key is not the client's bound key".into());
        }
        Ok(KpRecord {
            key_package: bytes.to_vec(),
            not_after: life.not_after(),
            signature_key: key.to_vec(),
        })
    }

    fn publish(
        &mut self,
        body: PublishBody,
        signature: Vec<u8>,
        bindings: &[SignedBinding],
        ctx: &RoleContext<'_>,
    ) -> Result<Decision, WireError> {
        let key = signed_by_bound_key(
            &body.client,
            body.timestamp,
            &signing_bytes(LABEL_PUBLISH, &body),
            &signature,
            bindings,
            ctx,
        )?;
        let max = self.settings.max_per_client;
        if body.key_packages.len() > max as usize {
            return Err(WireError::Cs(CsError::TooManyKeyPackages { max }));
        }
        let mut fresh_kps = Vec::new();
        for (i, kp) in body.key_packages.iter().enumerate() {
            let rec = self.validate(kp, &body.client, &key).map_err(|reason| {
                WireError::Cs(CsError::InvalidKeyPackage { index: i as u32, reason })
            })?;
            fresh_kps.push(rec);
        }
        let last_resort = match &body.last_resort {
            None => None,
            Some(kp) => Some(self.validate(kp, &body.client, &key).map_err(|reason| {
                WireError::Cs(CsError::InvalidKeyPackage {
                    index: body.key_packages.len() as u32,
                    reason,
                })
            })?),
        };
        let mut batch = Batch::new();
        let now = unix(ctx.now);
        let swept =
            if self.swept != Some(week(now)) { self.sweep(now, &mut batch, ctx)? } else { None };
        let stored = self.usable(&body.client, &key, ctx, &mut batch)?.len();
        let mut new = Vec::new();
        for rec in fresh_kps {
            let digest = Sha256::digest(&rec.key_package);
            let h = hash_key(rec.not_after, &digest);
            let dup = new.iter().any(|(hk, _): &(Vec<u8>, KpRecord)| hk == &h);
            // The older form too, until the sweep has moved it (in this very
            // batch, perhaps, which these reads do not see yet).
            if !dup
                && ctx.store.get(SPACE, &h).map_err(internal)?.is_none()
                && ctx.store.get(SPACE, &legacy_hash_key(&digest)).map_err(internal)?.is_none()
            {
                new.push((h, rec));
            }
        }
        if stored + new.len() > max as usize {
            return Err(WireError::Cs(CsError::TooManyKeyPackages { max }));
        }
        let mut seq = self.next_seq(&body.client, ctx)?;
        for (h, rec) in &new {
            batch.put(SPACE, h.clone(), rec.not_after.to_be_bytes().to_vec());
            batch.put(SPACE, kp_key(&body.client, seq), record::encode(rec)?);
            seq += 1;
        }
        batch.put(SPACE, seq_key(&body.client), seq.to_be_bytes().to_vec());
        if let Some(rec) = last_resort {
            batch.put(SPACE, lr_key(&body.client), record::encode(&rec)?);
        }
        // Recorded now: if the batch fails, the host starts this logic afresh.
        if swept.is_some() {
            self.swept = swept;
        }
        Ok(Decision::write(
            Response::Cs(CsResponse::Published { stored: (stored + new.len()) as u32 }),
            batch,
        ))
    }

    /// Adds to `batch` the deletion of KeyPackage hashes of weeks past, and
    /// moves up to [`LEGACY_BATCH`] hashes of the older form into their
    /// buckets (dropping expired ones). Returns the week to record as swept
    /// once the batch is written, or `None` while legacy hashes remain.
    fn sweep(
        &self,
        now: u64,
        batch: &mut Batch,
        ctx: &RoleContext<'_>,
    ) -> Result<Option<u32>, WireError> {
        let current = week(now);
        drop_weeks_before(ctx.store, SPACE, b"x/", current, batch).map_err(internal)?;
        let legacy = ctx.store.scan_prefix(SPACE, b"h/", LEGACY_BATCH).map_err(internal)?;
        for (k, v) in &legacy {
            let not_after = v.as_slice().try_into().map(u64::from_be_bytes).unwrap_or(0);
            if not_after > now {
                batch.put(SPACE, hash_key(not_after, &k[b"h/".len()..]), v.clone());
            }
            batch.delete(SPACE, k.clone());
        }
        Ok((legacy.len() < LEGACY_BATCH).then_some(current))
    }

    /// The client's usable one-time KeyPackages, oldest first (at most the
    /// per-client cap), with deletes of expired or stale-key ones added to `batch`.
    fn usable(
        &self,
        client: &str,
        key: &[u8],
        ctx: &RoleContext<'_>,
        batch: &mut Batch,
    ) -> Result<Vec<(Vec<u8>, KpRecord)>, WireError> {
        let now = unix(ctx.now);
        let prefix = format!("k/{client}/");
        // Cap plus slack: a client can never have more stored than the cap, so
        // this sees all of them.
        let limit = self.settings.max_per_client as usize * 2 + 8;
        let mut out = Vec::new();
        for (k, v) in ctx.store.scan_prefix(SPACE, prefix.as_bytes(), limit).map_err(internal)? {
            // An unreadable KeyPackage is skipped (and logged), not handed out.
            let Ok(rec) = record::decode::<KpRecord>(&v) else { continue };
            if rec.not_after <= now || rec.signature_key != key {
                batch.delete(SPACE, k);
            } else {
                out.push((k, rec));
            }
        }
        Ok(out)
    }

    fn last_resort(
        &self,
        client: &str,
        key: &[u8],
        ctx: &RoleContext<'_>,
    ) -> Result<Option<KpRecord>, WireError> {
        let Some(v) = ctx.store.get(SPACE, &lr_key(client)).map_err(internal)? else {
            return Ok(None);
        };
        let rec: KpRecord = record::decode(&v)?;
        Ok((rec.not_after > unix(ctx.now) && rec.signature_key == key).then_some(rec))
    }

    fn fetch(
        &mut self,
        identity: &str,
        bindings: &[SignedBinding],
        ctx: &RoleContext<'_>,
    ) -> Result<Decision, WireError> {
        if !valid_name(identity) {
            return Err(WireError::Auth(AuthError::InvalidClientId(identity.to_string())));
        }
        self.take_fetch(identity, ctx)?;
        let now = unix(ctx.now);
        let mut batch = Batch::new();
        let mut out = Vec::new();
        for b in bindings {
            let bd = &b.binding;
            let ours = split_client_id(&bd.client).is_some_and(|(id, _)| id == identity);
            if !ours || b.revoked_at.is_some() || bd.expires_at <= now {
                continue;
            }
            let usable = self.usable(&bd.client, &bd.signature_key, ctx, &mut batch)?;
            if let Some((k, rec)) = usable.into_iter().next() {
                batch.delete(SPACE, k);
                out.push(FetchedKeyPackage {
                    client: bd.client.clone(),
                    key_package: rec.key_package,
                    last_resort: false,
                });
            } else if let Some(rec) = self.last_resort(&bd.client, &bd.signature_key, ctx)? {
                out.push(FetchedKeyPackage {
                    client: bd.client.clone(),
                    key_package: rec.key_package,
                    last_resort: true,
                });
            }
        }
        Ok(Decision::write(Response::Cs(CsResponse::KeyPackages(out)), batch))
    }

    /// A paid fetch: the first time a fetch, whose answer is kept under
    /// `paid`; again (a retry of the same frame), that answer, with nothing
    /// consumed.
    fn fetch_paid(
        &mut self,
        identity: &str,
        paid: [u8; 32],
        bindings: &[SignedBinding],
        ctx: &RoleContext<'_>,
    ) -> Result<Decision, WireError> {
        let this_week = week(unix(ctx.now));
        let key = |w: u32| [&week_prefix(PAID, w)[..], &paid[..]].concat();
        for w in [this_week, this_week.saturating_sub(1)] {
            if let Some(first) = ctx.store.get(SPACE, &key(w)).map_err(internal)? {
                let r: Response = mlsd_transport::codec::decode(&first).map_err(internal)?;
                return Ok(Decision::reply(r));
            }
        }
        let mut d = self.fetch(identity, bindings, ctx)?;
        let first = mlsd_transport::codec::encode(&d.response).map_err(internal)?;
        d.writes.put(SPACE, key(this_week), first);
        drop_weeks_before(ctx.store, SPACE, PAID, this_week.saturating_sub(1), &mut d.writes)
            .map_err(internal)?;
        Ok(d)
    }

    fn count(
        &self,
        body: CountBody,
        signature: Vec<u8>,
        bindings: &[SignedBinding],
        ctx: &RoleContext<'_>,
    ) -> Result<Decision, WireError> {
        let key = signed_by_bound_key(
            &body.client,
            body.timestamp,
            &signing_bytes(LABEL_COUNT, &body),
            &signature,
            bindings,
            ctx,
        )?;
        let mut purge = Batch::new();
        let count = self.usable(&body.client, &key, ctx, &mut purge)?.len() as u32;
        let last_resort = self.last_resort(&body.client, &key, ctx)?.is_some();
        Ok(Decision::write(Response::Cs(CsResponse::KeyPackageCount { count, last_resort }), purge))
    }

    fn next_seq(&self, client: &str, ctx: &RoleContext<'_>) -> Result<u64, WireError> {
        Ok(ctx
            .store
            .get(SPACE, &seq_key(client))
            .map_err(internal)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0))
    }
}

/// Checks a client-signed CS request: a valid client id, a fresh timestamp
/// and a signature by the key of the client's live binding, which it returns.
fn signed_by_bound_key(
    client: &str,
    timestamp: u64,
    signed: &[u8],
    signature: &[u8],
    bindings: &[SignedBinding],
    ctx: &RoleContext<'_>,
) -> Result<Vec<u8>, WireError> {
    split_client_id(client)
        .ok_or_else(|| WireError::Auth(AuthError::InvalidClientId(client.to_string())))?;
    fresh(timestamp, ctx.now)?;
    let key = live_key(bindings, client, ctx)?;
    verify(&key, signed, signature, "request")?;
    Ok(key)
}

/// The signature key of `client`'s live binding among `bindings`.
fn live_key(
    bindings: &[SignedBinding],
    client: &str,
    ctx: &RoleContext<'_>,
) -> Result<Vec<u8>, WireError> {
    let now = unix(ctx.now);
    bindings
        .iter()
        .find(|b| {
            b.binding.client == client && b.revoked_at.is_none() && b.binding.expires_at > now
        })
        .map(|b| b.binding.signature_key.clone())
        .ok_or_else(|| WireError::Auth(AuthError::UnknownClient(client.to_string())))
}

fn kp_key(client: &str, seq: u64) -> Vec<u8> {
    let mut k = format!("k/{client}/").into_bytes();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn lr_key(client: &str) -> Vec<u8> {
    format!("l/{client}").into_bytes()
}

fn seq_key(client: &str) -> Vec<u8> {
    format!("n/{client}").into_bytes()
}

/// Legacy KeyPackage hashes moved into week buckets per publish.
const LEGACY_BATCH: usize = 10_000;

/// Where a KeyPackage hash `digest`, expiring at `not_after`, is remembered.
fn hash_key(not_after: u64, digest: &[u8]) -> Vec<u8> {
    let mut k = week_prefix(b"x/", week(not_after));
    k.extend_from_slice(digest);
    k
}

/// Where the older form remembered a KeyPackage hash `digest` (no expiry).
fn legacy_hash_key(digest: &[u8]) -> Vec<u8> {
    [b"h/".as_slice(), digest].concat()
}

impl RoleLogic for CsLogic {
    fn role(&self) -> Role {
        Role::Cs
    }

    fn prerequisite(&self, req: &Request) -> Option<Request> {
        let Request::Cs(req) = req else { return None };
        let identity = match req {
            CsRequest::PublishKeyPackages { body, .. } => split_client_id(&body.client)?.0,
            CsRequest::CountKeyPackages { body, .. } => split_client_id(&body.client)?.0,
            CsRequest::FetchKeyPackages { identity } | CsRequest::FetchPaid { identity, .. } => {
                identity
            }
        };
        Some(Request::As(AsRequest::Lookup { identity: identity.to_string() }))
    }

    fn handle(&mut self, req: Request, pre: Option<Response>, ctx: &RoleContext<'_>) -> Decision {
        let bindings = match pre {
            Some(Response::As(AsResponse::Bindings(b))) => b,
            Some(Response::Error(e)) => return Decision::reply(Response::Error(e)),
            _ => Vec::new(),
        };
        let req = match req {
            Request::Ping(_) => return Decision::reply(pong(Role::Cs, ctx)),
            Request::Cs(r) => r,
            other => return not_mine(Role::Cs, &other),
        };
        let signature = req.signature().map(<[u8]>::to_vec);
        let decision = match req {
            CsRequest::PublishKeyPackages { body, signature } => {
                self.publish(body, signature, &bindings, ctx)
            }
            CsRequest::FetchKeyPackages { identity } => self.fetch(&identity, &bindings, ctx),
            CsRequest::FetchPaid { identity, paid } => {
                return self.fetch_paid(&identity, paid, &bindings, ctx).into()
            }
            CsRequest::CountKeyPackages { body, signature } => {
                self.count(body, signature, &bindings, ctx)
            }
        }
        .into();
        at_most_once(SPACE, signature.as_deref(), decision, ctx)
    }
}

#[cfg(test)]
#[path = "cs_tests.rs"]
mod logic_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{MemStore, Store, View, WEEK_SECS};

    #[test]
    fn past_weeks_of_key_package_hashes_are_dropped_and_legacy_ones_moved() {
        let store = MemStore::new();
        let now = 2900 * WEEK_SECS + 3600;
        let ctx = RoleContext {
            node: "t",
            store: &store,
            now: std::time::UNIX_EPOCH + std::time::Duration::from_secs(now),
            random: zeroize::Zeroizing::new([0; 32]),
        };
        let d = |kp: &[u8]| Sha256::digest(kp).to_vec();
        let mut seed = Batch::new();
        // Hashes of KeyPackages that expired last week, expire this week, next week.
        let (old, this, next) = (
            hash_key(now - WEEK_SECS, &d(b"a")),
            hash_key(now, &d(b"b")),
            hash_key(now + WEEK_SECS, &d(b"c")),
        );
        for k in [&old, &this, &next] {
            seed.put(SPACE, k.clone(), 1u64.to_be_bytes().to_vec());
        }
        // The older form: one expired, one still valid.
        let legacy = |kp: &[u8]| legacy_hash_key(&d(kp));
        seed.put(SPACE, legacy(b"d"), (now - 10).to_be_bytes().to_vec());
        seed.put(SPACE, legacy(b"e"), (now + 2 * WEEK_SECS).to_be_bytes().to_vec());
        store.write(seed).unwrap();

        let cs = CsLogic::new(crate::settings::RoleSettings::default().cs);
        let mut batch = Batch::new();
        assert_eq!(cs.sweep(now, &mut batch, &ctx).unwrap(), Some(week(now)));
        store.write(batch).unwrap();
        let present = |k: &[u8]| store.get(SPACE, k).unwrap().is_some();
        assert!(!present(&old), "a past week is dropped");
        assert!(present(&this) && present(&next), "this week and later are kept");
        assert!(!present(&legacy(b"d")) && !present(&legacy(b"e")), "no older form left");
        let moved = hash_key(now + 2 * WEEK_SECS, &d(b"e"));
        assert_eq!(store.get(SPACE, &moved).unwrap().unwrap(), (now + 2 * WEEK_SECS).to_be_bytes());
        assert!(!present(&hash_key(now - 10, &d(b"d"))), "an expired legacy hash is not moved");
    }
}
