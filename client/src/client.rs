//! [`Client`]: one device's view of the cluster, with its state in a home
//! directory. Steps 1-4 of the brief: register at the AS, publish KeyPackages
//! at the CS, fetch and authenticate other clients' KeyPackages.

use mlsd_transport::protocol::tickets::TicketKind;
use mlsd_transport::protocol::{
    AsRequest, AsResponse, AuthError, CountBody, CsRequest, CsResponse, DeliveryCap,
    FetchedKeyPackage, OdsError, PendingDevice, PublishBody, RegisterBody, RevokeBody,
    SignedBinding,
};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use mlsd_transport::protocol::cs::{LABEL_COUNT, LABEL_PUBLISH};
use mlsd_transport::protocol::identity::{signing_bytes, split_client_id, valid_name};
use mlsd_transport::protocol::r#as::fingerprint;
use mlsd_transport::protocol::r#as::{LABEL_REGISTER, LABEL_REVOKE};
use mlsd_transport::{Request, Response, WireError};
use openmls::prelude::tls_codec::Serialize as _;
use openmls::prelude::{BasicCredential, CredentialWithKey, KeyPackage, Lifetime};
use openmls_basic_credential::SignatureKeyPair;
use openmls_traits::signatures::Signer;
use openmls_traits::OpenMlsProvider;
use zeroize::Zeroizing;

use std::collections::HashMap;

use crate::home::{Home, StoredIdentity};
use crate::leaf::{capabilities, mailbox_extension};
use crate::mailbox::{Counter, MailboxKeys};
use crate::provider::ClientProvider;
use crate::state::{now_secs, Checks, Event, GroupMeta};
use crate::verify::{authenticate_key_package, verify_binding, Rejection};
use crate::{ClientError, Connection, CIPHERSUITE};

/// Lifetime of the KeyPackages a client publishes: four weeks.
pub const KEY_PACKAGE_LIFETIME_SECS: u64 = 28 * 24 * 3600;

/// Home file of the capabilities this device issued, by serial.
const CAPS: &str = "caps";

/// Most capabilities noted in [`CAPS`] (the ODS's default maximum live per
/// mailbox); the oldest are forgotten first.
const MAX_NOTED_CAPS: usize = 4096;

/// Where a client finds the cluster and what it trusts.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Home directory (identity and MLS state).
    pub home: PathBuf,
    /// Any node.
    pub server: SocketAddr,
    /// Cluster CA certificate (PEM).
    pub ca: PathBuf,
    /// AS public key file (`as.pub`, hex Ed25519).
    pub as_key: PathBuf,
}

/// A KeyPackage fetched from the CS and authenticated against the AS.
#[derive(Debug)]
pub struct VerifiedKeyPackage {
    /// The client it belongs to.
    pub client: String,
    /// The KeyPackage, validated.
    pub key_package: KeyPackage,
    /// Whether it is the client's (reusable) last-resort KeyPackage.
    pub last_resort: bool,
}

/// One device of an identity.
pub struct Client {
    pub(crate) home: Home,
    pub(crate) conn: Connection,
    pub(crate) as_key: VerifyingKey,
    pub(crate) provider: ClientProvider,
    pub(crate) identity: Option<StoredIdentity>,
    pub(crate) mailbox: Option<MailboxKeys>,
    pub(crate) counter: Counter,
    pub(crate) groups: HashMap<Vec<u8>, GroupMeta>,
    /// Events received while catching up inside another operation (a commit
    /// retry); the next `receive` returns them first, so none is lost.
    pub(crate) pending_events: Vec<Event>,
    /// What the AS said of each group member ([`crate::members`]).
    pub(crate) checks: Checks,
    /// Whether sends to groups with unverified members go out anyway.
    pub(crate) allow_unverified: bool,
    cfg: ClientConfig,
}

/// Home file of the push endpoint a registration still to complete opens
/// its mailbox with.
const PUSH_URL: &str = "push_url";

/// Loads a hex Ed25519 public key (`as.pub`).
pub fn load_as_key(path: &Path) -> Result<VerifyingKey, ClientError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ClientError::Home(format!("cannot read AS key {}: {e}", path.display())))?;
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut bytes)
        .map_err(|_| ClientError::Home(format!("{} is not a hex Ed25519 key", path.display())))?;
    VerifyingKey::from_bytes(&bytes)
        .map_err(|_| ClientError::Home(format!("{} is not a valid Ed25519 key", path.display())))
}

impl Client {
    /// Opens the home (creating it if needed) and connects to the cluster.
    pub async fn open(cfg: &ClientConfig) -> Result<Client, ClientError> {
        let home = Home::open(&cfg.home)?;
        let as_key = load_as_key(&cfg.as_key)?;
        let identity = home.load_identity()?;
        let provider = ClientProvider::new(home.load_storage()?);
        let mailbox = home.load("mailbox")?;
        let groups: Vec<GroupMeta> = home.load("groups")?.unwrap_or_default();
        let groups = groups.into_iter().map(|g| (g.id.clone(), g)).collect();
        let checks = home.load(crate::state::MEMBERS_FILE)?.unwrap_or_default();
        let conn = Connection::connect(cfg.server, &cfg.ca).await?;
        Ok(Client {
            home,
            conn,
            as_key,
            provider,
            identity,
            mailbox,
            counter: Counter::default(),
            groups,
            pending_events: Vec::new(),
            checks,
            allow_unverified: false,
            cfg: cfg.clone(),
        })
    }

    /// Replaces the connection with a fresh one (after a node restart).
    pub async fn reconnect(&mut self) -> Result<(), ClientError> {
        self.conn = Connection::connect(self.cfg.server, &self.cfg.ca).await?;
        Ok(())
    }

    /// Keeps `url` as the UnifiedPush endpoint of the mailbox this device
    /// opens when its registration completes (now, or after a live device
    /// approved it, in a later run): the mailbox is opened with a ticket,
    /// which only a registered device gets.
    pub fn set_push_url(&self, url: &str) -> Result<(), ClientError> {
        crate::connection::check_push_url(url)?;
        self.home.save(PUSH_URL, &url.to_string())
    }

    /// Which ODS shard holds this device's mailbox (its [`ShardHint`]), once
    /// it has one: the nodes that keep its copies follow from it, which an
    /// operator tracing a delivery, or a failover test, needs to know.
    pub fn mailbox_shard(&self) -> Option<mlsd_transport::protocol::ShardHint> {
        self.mailbox.as_ref().map(|m| mlsd_transport::protocol::shard_of(&m.id))
    }

    /// Opens this device's mailbox at the ODS if it has none yet, with an
    /// optional UnifiedPush endpoint (an `https://` URL, or `http://` where
    /// the operator allows it; without one, the one [`Client::set_push_url`]
    /// kept, if any).
    pub async fn open_mailbox(&mut self, push_url: Option<&str>) -> Result<(), ClientError> {
        if self.mailbox.is_some() {
            return Ok(());
        }
        let kept: Option<String> = self.home.load(PUSH_URL)?;
        let push_url = push_url.or(kept.as_deref());
        let keys = MailboxKeys::generate()?;
        // Saved first: if the reply is lost we retry with the same id and keys.
        self.home.save("mailbox", &keys)?;
        let ticket = self.take_ticket(TicketKind::Mailbox).await?;
        match crate::mailbox::open(&self.conn, &keys, push_url, Some(ticket)).await {
            Ok(()) | Err(ClientError::Server(WireError::Ods(OdsError::MailboxTaken))) => {}
            Err(e) => return Err(e),
        }
        self.mailbox = Some(keys);
        Ok(())
    }

    /// The client id, once registered (or while its registration awaits
    /// approval).
    pub fn client_id(&self) -> Option<&str> {
        self.identity.as_ref().map(|i| i.client.as_str())
    }

    /// Whether this home holds a client id the AS has not bound yet: a
    /// registration awaiting a live device's approval.
    pub fn awaits_approval(&self) -> bool {
        self.identity.as_ref().is_some_and(|i| i.binding.is_none())
    }

    /// The connection, for requests this type does not wrap.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    pub(crate) fn signer(&self) -> Result<SignatureKeyPair, ClientError> {
        let id = self.identity.as_ref().ok_or(ClientError::NotRegistered)?;
        Ok(SignatureKeyPair::from_raw(
            CIPHERSUITE.signature_algorithm(),
            id.private_key.to_vec(),
            id.public_key.clone(),
        ))
    }

    pub(crate) fn sign(
        &self,
        label: &str,
        body: &impl serde::Serialize,
    ) -> Result<Vec<u8>, ClientError> {
        let bytes = signing_bytes(label, body);
        self.signer()?.sign(&bytes).map_err(|e| ClientError::Crypto(format!("{e:?}")))
    }

    /// Step 1: binds `client` (`identity/device`) to a fresh signature key at
    /// the AS, or re-registers this home's key. `token` is needed when the AS
    /// runs in token mode.
    pub async fn register(
        &mut self,
        client: &str,
        token: Option<String>,
    ) -> Result<SignedBinding, ClientError> {
        split_client_id(client)
            .ok_or_else(|| WireError::Auth(AuthError::InvalidClientId(client.to_string())))?;
        if let Some(id) = &self.identity {
            if id.client != client {
                return Err(ClientError::Home(format!(
                    "this home is already {}; use another --home",
                    id.client
                )));
            }
        } else {
            let mut seed = Zeroizing::new(vec![0u8; 32]);
            rand::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut seed)
                .map_err(|e| ClientError::Crypto(format!("no randomness: {e}")))?;
            let seed_arr: &[u8; 32] = seed.as_slice().try_into().expect("32 bytes");
            let public = ed25519_dalek::SigningKey::from_bytes(seed_arr).verifying_key();
            self.identity = Some(StoredIdentity {
                client: client.to_string(),
                private_key: seed,
                public_key: public.to_bytes().to_vec(),
                binding: None,
            });
        }
        let id = self.identity.as_ref().ok_or(ClientError::NotRegistered)?;
        let body = RegisterBody {
            client: client.to_string(),
            signature_key: id.public_key.clone(),
            timestamp: now_secs(),
            token,
        };
        let proof = self.sign(LABEL_REGISTER, &body)?;
        // Persist the key before asking: if the reply is lost, a retry proves
        // possession of the same key and gets the same binding.
        self.home.save_identity(id)?;
        let resp = self
            .conn
            .request(Request::As(AsRequest::Register { body, proof, rotation: None }))
            .await?;
        let b = match resp {
            Response::As(AsResponse::Binding(b)) => b,
            Response::As(AsResponse::RegistrationPending { pending }) => {
                return Err(awaits_approval(&pending))
            }
            other => return Err(unexpected(other)),
        };
        verify_binding(&self.as_key, &b, now_secs())?;
        let id = self.identity.as_mut().ok_or(ClientError::NotRegistered)?;
        id.binding = Some(b.clone());
        self.home.save_identity(id)?;
        self.open_mailbox(None).await?;
        Ok(b)
    }

    /// Renews this device's binding when it is in the second half of its
    /// life (the AS then binds the same key afresh, with a new serial and
    /// expiry); returns whether it did. `mlsc` calls it at every start.
    pub async fn renew_if_due(&mut self) -> Result<bool, ClientError> {
        let Some(id) = &self.identity else { return Ok(false) };
        let Some(b) = &id.binding else { return Ok(false) };
        let life = b.binding.expires_at.saturating_sub(b.binding.issued_at);
        if b.binding.expires_at.saturating_sub(now_secs()) >= life / 2 {
            return Ok(false);
        }
        let client = id.client.clone();
        self.register(&client, None).await?;
        Ok(true)
    }

    /// Revokes this client's binding at the AS.
    pub async fn revoke(&mut self) -> Result<SignedBinding, ClientError> {
        let client = self.client_id().ok_or(ClientError::NotRegistered)?.to_string();
        let body = RevokeBody { client, timestamp: now_secs() };
        let signature = self.sign(LABEL_REVOKE, &body)?;
        match self.conn.request(Request::As(AsRequest::Revoke { body, signature })).await? {
            Response::As(AsResponse::Binding(b)) => Ok(b),
            other => Err(unexpected(other)),
        }
    }

    /// A KeyPackage delivering through `cap` (issued at the ODS already).
    fn new_key_package(&self, last_resort: bool, cap: DeliveryCap) -> Result<Vec<u8>, ClientError> {
        let id = self.identity.as_ref().ok_or(ClientError::NotRegistered)?;
        let signer = self.signer()?;
        let cwk = CredentialWithKey {
            credential: BasicCredential::new(id.client.as_bytes().to_vec()).into(),
            signature_key: id.public_key.clone().into(),
        };
        let mref = self.mailbox.as_ref().ok_or(ClientError::NotRegistered)?.reference(cap);
        let mut builder = openmls::prelude::KeyPackage::builder()
            .key_package_lifetime(Lifetime::new(KEY_PACKAGE_LIFETIME_SECS))
            .leaf_node_capabilities(capabilities())
            .leaf_node_extensions(mailbox_extension(&mref)?);
        if last_resort {
            builder = builder.mark_as_last_resort();
        }
        let bundle = builder
            .build(CIPHERSUITE, &self.provider, &signer, cwk)
            .map_err(|e| ClientError::Crypto(e.to_string()))?;
        bundle
            .key_package()
            .tls_serialize_detached()
            .map_err(|e| ClientError::Crypto(e.to_string()))
    }

    /// Step 2: creates `count` one-time KeyPackages and a last-resort one,
    /// each with a delivery capability of its own (issued at the ODS first,
    /// so a KeyPackage the CS hands out can always deliver its Welcome),
    /// keeps their private keys in the home, uploads them signed with the
    /// bound key. Returns how many one-time KeyPackages the CS now holds.
    pub async fn publish(&mut self, count: u32) -> Result<u32, ClientError> {
        let mut caps = self.new_caps(count as usize + 1).await?;
        let last_cap = caps.pop().ok_or(ClientError::NotRegistered)?;
        let key_packages = caps
            .into_iter()
            .map(|c| self.new_key_package(false, c))
            .collect::<Result<Vec<_>, _>>()?;
        let last_resort = Some(self.new_key_package(true, last_cap)?);
        // Private keys first: a KeyPackage the CS hands out must be usable.
        self.home.save_storage(self.provider.storage())?;
        self.upload(key_packages, last_resort).await
    }

    /// `n` fresh capabilities of this device's mailbox, issued at the ODS
    /// and noted in the home by serial (see [`Client::capabilities`]).
    pub async fn new_caps(&mut self, n: usize) -> Result<Vec<DeliveryCap>, ClientError> {
        let keys = self.mailbox.as_ref().ok_or(ClientError::NotRegistered)?;
        let caps = (0..n).map(|_| keys.new_cap()).collect::<Result<Vec<_>, _>>()?;
        self.issue_caps(&caps).await?;
        Ok(caps)
    }

    /// Issues `caps` (made by `MailboxKeys::new_cap`) at the ODS and notes
    /// them by serial. Issuing one twice is harmless: it keeps its serial.
    pub(crate) async fn issue_caps(&mut self, caps: &[DeliveryCap]) -> Result<(), ClientError> {
        let keys = self.mailbox.as_ref().ok_or(ClientError::NotRegistered)?;
        let serials = crate::mailbox::issue(&self.conn, keys, &mut self.counter, caps).await?;
        let mut noted = self.capabilities()?;
        for (serial, cap) in serials.into_iter().zip(caps) {
            if !noted.iter().any(|(_, t)| *t == cap.token) {
                noted.push((serial, cap.token));
            }
        }
        let excess = noted.len().saturating_sub(MAX_NOTED_CAPS);
        noted.drain(..excess);
        self.home.save(CAPS, &noted)
    }

    /// The capabilities this device issued and has not revoked, as `(serial,
    /// token)`: what [`Delivered::via`](mlsd_transport::protocol::Delivered)
    /// names, so the one a spammer uses can be revoked by its serial.
    pub fn capabilities(&self) -> Result<Vec<(u64, [u8; 32])>, ClientError> {
        Ok(self.home.load(CAPS)?.unwrap_or_default())
    }

    /// Revokes capabilities of this device's mailbox (after leaving a group,
    /// or to stop a sender abusing one): copies through them are refused.
    pub async fn revoke_caps(&mut self, tokens: &[[u8; 32]]) -> Result<u32, ClientError> {
        let keys = self.mailbox.as_ref().ok_or(ClientError::NotRegistered)?;
        let revoked = crate::mailbox::revoke(&self.conn, keys, &mut self.counter, tokens).await?;
        let mut noted = self.capabilities()?;
        noted.retain(|(_, t)| !tokens.contains(t));
        self.home.save(CAPS, &noted)?;
        Ok(revoked)
    }

    /// Revokes the capabilities with these serials (as `Delivered::via` and
    /// `mlsc mailbox caps` show them); serial 0 is the mailbox's legacy
    /// capability, its id. Serials this device does not know are an error.
    pub async fn revoke_serials(&mut self, serials: &[u64]) -> Result<u32, ClientError> {
        let noted = self.capabilities()?;
        let mut tokens = Vec::with_capacity(serials.len());
        for s in serials {
            match (s, noted.iter().find(|(n, _)| n == s)) {
                (_, Some((_, t))) => tokens.push(*t),
                (0, None) => {
                    tokens.push(self.mailbox.as_ref().ok_or(ClientError::NotRegistered)?.id)
                }
                (s, None) => {
                    return Err(ClientError::Home(format!("no capability with serial {s}")))
                }
            }
        }
        self.revoke_caps(&tokens).await
    }

    /// Uploads already serialized KeyPackages, signed with the bound key.
    pub async fn upload(
        &self,
        key_packages: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
    ) -> Result<u32, ClientError> {
        let client = self.client_id().ok_or(ClientError::NotRegistered)?.to_string();
        let body = PublishBody { client, key_packages, last_resort, timestamp: now_secs() };
        let signature = self.sign(LABEL_PUBLISH, &body)?;
        match self
            .conn
            .request(Request::Cs(CsRequest::PublishKeyPackages { body, signature }))
            .await?
        {
            Response::Cs(CsResponse::Published { stored }) => Ok(stored),
            other => Err(unexpected(other)),
        }
    }

    /// How many one-time KeyPackages of this client the CS holds, and whether
    /// it holds a last-resort one.
    pub async fn count_key_packages(&self) -> Result<(u32, bool), ClientError> {
        let client = self.client_id().ok_or(ClientError::NotRegistered)?.to_string();
        let body = CountBody { client, timestamp: now_secs() };
        let signature = self.sign(LABEL_COUNT, &body)?;
        match self
            .conn
            .request(Request::Cs(CsRequest::CountKeyPackages { body, signature }))
            .await?
        {
            Response::Cs(CsResponse::KeyPackageCount { count, last_resort }) => {
                Ok((count, last_resort))
            }
            other => Err(unexpected(other)),
        }
    }

    /// The AS's bindings of `identity`, each with the outcome of checking it
    /// against the trusted AS key.
    pub async fn lookup(
        &self,
        identity: &str,
    ) -> Result<Vec<(SignedBinding, Result<(), Rejection>)>, ClientError> {
        let bindings = self.lookup_raw(identity).await?;
        let now = now_secs();
        Ok(bindings
            .into_iter()
            .map(|b| {
                let r = verify_binding(&self.as_key, &b, now);
                (b, r)
            })
            .collect())
    }

    pub(crate) async fn lookup_raw(
        &self,
        identity: &str,
    ) -> Result<Vec<SignedBinding>, ClientError> {
        if !valid_name(identity) {
            return Err(WireError::Auth(AuthError::InvalidClientId(identity.to_string())).into());
        }
        // An identity holds at most 64 client ids, so 4 pages of 16; a
        // server that keeps answering `next`, or moves backwards, is cut off.
        const MAX_PAGES: usize = 8;
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let req =
                AsRequest::LookupPage { identity: identity.to_string(), after: after.clone() };
            match self.conn.request(Request::As(req)).await? {
                Response::As(AsResponse::BindingPage { bindings, next }) => {
                    all.extend(bindings);
                    match next {
                        Some(n) if after.as_ref().is_none_or(|a| n > *a) => after = Some(n),
                        Some(n) => {
                            return Err(ClientError::Unexpected(format!(
                                "lookup cursor went back to {n:?}"
                            )))
                        }
                        None => return Ok(all),
                    }
                }
                other => return Err(unexpected(other)),
            }
        }
        Err(ClientError::Unexpected(format!(
            "lookup of {identity} has more than {MAX_PAGES} pages"
        )))
    }

    /// Steps 3 and 4: fetches one KeyPackage per device of `identity` from the
    /// CS and authenticates each against the AS. Returns the accepted ones and
    /// the reasons for the rejected ones.
    pub async fn fetch_key_packages(
        &self,
        identity: &str,
    ) -> Result<(Vec<VerifiedKeyPackage>, Vec<Rejection>), ClientError> {
        let req = Request::Cs(CsRequest::FetchKeyPackages { identity: identity.to_string() });
        let (answer, ticket) = self.paid(req.clone()).await?;
        let fetched = match answer {
            Response::Cs(CsResponse::KeyPackages(k)) => k,
            other => return Err(unexpected(other)),
        };
        let bindings = match self.lookup_raw(identity).await {
            Ok(b) => b,
            Err(e) => {
                // The KeyPackages are this fetch's, but cannot be checked
                // yet: asked again, the fetch pays with the same ticket and
                // the CS hands out the same ones, instead of taking more.
                if let (true, Some(t)) = (crate::retry::transient(&e), ticket) {
                    self.keep_unanswered(&req, t)?;
                }
                return Err(e);
            }
        };
        Ok(self.authenticate(&bindings, fetched))
    }

    /// Authenticates fetched KeyPackages against `bindings` (step 4).
    pub fn authenticate(
        &self,
        bindings: &[SignedBinding],
        fetched: Vec<FetchedKeyPackage>,
    ) -> (Vec<VerifiedKeyPackage>, Vec<Rejection>) {
        let now = now_secs();
        let mut ok = Vec::new();
        let mut rejected = Vec::new();
        for f in fetched {
            match authenticate_key_package(&self.as_key, bindings, &f, now) {
                Ok(kp) => ok.push(VerifiedKeyPackage {
                    client: f.client,
                    key_package: kp,
                    last_resort: f.last_resort,
                }),
                Err(r) => rejected.push(r),
            }
        }
        (ok, rejected)
    }
}

/// The error a pending registration is reported as.
fn awaits_approval(pending: &PendingDevice) -> ClientError {
    let identity = split_client_id(&pending.client).map_or("", |(i, _)| i).to_string();
    ClientError::AwaitsApproval {
        client: pending.client.clone(),
        identity,
        fingerprint: fingerprint(&pending.signature_key),
    }
}

pub(crate) fn unexpected(r: Response) -> ClientError {
    ClientError::Unexpected(format!("{r:?}"))
}
