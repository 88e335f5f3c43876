//! Unit tests of the IDS group core ([`GroupCore`]) on an in-memory store,
//! with real MLS messages: one commit per epoch, retries recognized, and
//! every refusal leaving storage as it was.

use mlsd_transport::protocol::{BadFrame, IdsError};
use openmls::prelude::tls_codec::Serialize as _;
use openmls::prelude::{
    BasicCredential, CredentialWithKey, GroupId, LeafNodeParameters, MlsGroup, MlsGroupCreateConfig,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use openmls_traits::OpenMlsProvider;

use mlsd_transport::protocol::ids::send_mac;
use mlsd_transport::protocol::{
    CommitExtras, DeliveryCap, Recipients, RosterEntry, RosterMode, SendBody,
};
use mlsd_transport::WireError;

use super::group::{parse_idle_key, Accepted, GroupCore, IDLE_INDEX};
use crate::cs::CIPHERSUITE;
use crate::storage::{Batch, MemStore, Store, View};

const GID: &[u8] = b"group-under-test";

/// One member's MLS state for group [`GID`], to make real messages with.
struct Member {
    provider: OpenMlsRustCrypto,
    signer: SignatureKeyPair,
    group: MlsGroup,
}

impl Member {
    fn new() -> Self {
        let provider = OpenMlsRustCrypto::default();
        let signer = SignatureKeyPair::new(CIPHERSUITE.signature_algorithm()).unwrap();
        let cwk = CredentialWithKey {
            credential: BasicCredential::new(b"alice/phone".to_vec()).into(),
            signature_key: signer.public().into(),
        };
        let config = MlsGroupCreateConfig::builder().ciphersuite(CIPHERSUITE).build();
        let group =
            MlsGroup::new_with_group_id(&provider, &signer, &config, GroupId::from_slice(GID), cwk)
                .unwrap();
        Member { provider, signer, group }
    }

    /// An application message of the current epoch.
    fn message(&mut self, text: &[u8]) -> Vec<u8> {
        let m = self.group.create_message(&self.provider, &self.signer, text).unwrap();
        m.tls_serialize_detached().unwrap()
    }

    /// A self-update commit of the current epoch (not merged: a commit
    /// another member might race).
    fn commit(&mut self) -> Vec<u8> {
        let b = self
            .group
            .self_update(&self.provider, &self.signer, LeafNodeParameters::default())
            .unwrap();
        let bytes = b.commit().tls_serialize_detached().unwrap();
        self.group.clear_pending_commit(self.provider.storage()).unwrap();
        bytes
    }
}

fn roster() -> Vec<RosterEntry> {
    (1..=3u8)
        .map(|i| RosterEntry { cap: DeliveryCap { shard: [i; 2], token: [i; 32] }, key: [i; 32] })
        .collect()
}

/// A client-mode send of `message` under id `[id; 32]`; a commit when
/// `next_auth` is given.
fn send(message: Vec<u8>, id: u8, next_auth: Option<[u8; 32]>) -> SendBody {
    SendBody {
        group: GID.to_vec(),
        message_id: [id; 32],
        message,
        recipients: Recipients::Roster(roster()),
        skip: Some(DeliveryCap { shard: [1; 2], token: [1; 32] }),
        commit: next_auth.map(|next_auth_key| CommitExtras {
            welcome: None,
            welcome_to: Vec::new(),
            next_auth_key,
            next_roster: None,
        }),
    }
}

/// The core's decision on `body` MACed with `auth`, its writes applied.
fn accept(
    core: &mut GroupCore,
    store: &MemStore,
    body: &SendBody,
    auth: [u8; 32],
) -> Result<Accepted, WireError> {
    let mut a =
        core.accept_send(body, &send_mac(&auth, body), store, std::time::SystemTime::now())?;
    store.write(std::mem::take(&mut a.writes)).unwrap();
    Ok(a)
}

/// A client-mode group at epoch 0 with auth key `[0; 32]`.
fn created() -> (MemStore, GroupCore) {
    let store = MemStore::new();
    let mut core = GroupCore::load(GID, &store).unwrap();
    let w = core.create(RosterMode::Client, [0; 32], None).unwrap();
    store.write(w).unwrap();
    (store, core)
}

#[test]
fn a_group_is_created_once_and_survives_a_reload() {
    let (store, mut core) = created();
    let before = store.contents();
    assert_eq!(
        core.create(RosterMode::Client, [7; 32], None).err(),
        Some(WireError::Ids(IdsError::GroupTaken))
    );
    // The creator's own request again, before and after a reload: answered
    // as created, with nothing written.
    assert_eq!(core.create(RosterMode::Client, [0; 32], None), Ok(Batch::new()));
    let mut fresh = GroupCore::load(GID, &store).unwrap();
    assert_eq!(fresh.create(RosterMode::Client, [0; 32], None), Ok(Batch::new()));
    assert_eq!(
        fresh.create(RosterMode::Stored, [0; 32], None).err(),
        Some(WireError::Ids(IdsError::GroupTaken)),
        "another mode is someone else's group"
    );
    assert_eq!(store.contents(), before);
    assert_eq!(fresh.epoch(), Some(0));
    assert_eq!(
        fresh.create(RosterMode::Client, [7; 32], None).err(),
        Some(WireError::Ids(IdsError::GroupTaken))
    );
    // A stored-mode group needs its sealed roster.
    let mut other = GroupCore::load(b"other", &store).unwrap();
    assert!(matches!(
        other.create(RosterMode::Stored, [0; 32], None),
        Err(WireError::Frame(BadFrame::Malformed(_)))
    ));
    assert_eq!(store.contents(), before);
}

#[test]
fn one_commit_per_epoch_and_the_loser_learns_the_epoch() {
    let (store, mut core) = created();
    let (mut alice, mut bob) = (Member::new(), Member::new());
    let won = send(alice.commit(), 1, Some([1; 32]));
    let a = accept(&mut core, &store, &won, [0; 32]).unwrap();
    assert_eq!(core.epoch(), Some(1));
    // Fanned out to everyone but the sender's own capability.
    assert_eq!(a.plan.recipients.len(), 2);
    let before = store.contents();
    let lost = send(bob.commit(), 2, Some([2; 32]));
    assert_eq!(
        accept(&mut core, &store, &lost, [0; 32]).err(),
        Some(WireError::Ids(IdsError::StaleEpoch { current: 1 }))
    );
    assert_eq!(store.contents(), before);
    // The winner's retry (its answer was lost) is recognized and fanned out
    // again, with no second epoch.
    let again = accept(&mut core, &store, &won, [0; 32]).unwrap();
    assert_eq!(again.plan.message_id, [1; 32]);
    assert_eq!(core.epoch(), Some(1));
    // And so after a restart of the group actor: it is all in storage.
    let mut reloaded = GroupCore::load(GID, &store).unwrap();
    assert!(accept(&mut reloaded, &store, &won, [0; 32]).is_ok());
    assert_eq!(reloaded.epoch(), Some(1));
    // The creator's retry of the creation, now that the group moved on,
    // still learns it was created; anyone else's key is refused.
    let before = store.contents();
    assert_eq!(reloaded.create(RosterMode::Client, [0; 32], None), Ok(Batch::new()));
    assert_eq!(
        reloaded.create(RosterMode::Client, [1; 32], None).err(),
        Some(WireError::Ids(IdsError::GroupTaken)),
        "epoch 1's key did not create the group"
    );
    assert_eq!(store.contents(), before);
}

#[test]
fn refused_sends_change_nothing() {
    let (store, mut core) = created();
    let mut alice = Member::new();
    let hello = send(alice.message(b"hello"), 1, None);
    let before = store.contents();
    // A MAC under a key that is not the epoch's.
    assert_eq!(
        accept(&mut core, &store, &hello, [9; 32]).err(),
        Some(WireError::Ids(IdsError::BadMac))
    );
    // Not an MLS message at all.
    let junk = send(b"not mls".to_vec(), 2, None);
    assert!(matches!(
        accept(&mut core, &store, &junk, [0; 32]),
        Err(WireError::Ids(IdsError::InvalidMessage(_)))
    ));
    // A commit without its extras, and extras without a commit.
    let bare = send(alice.commit(), 3, None);
    assert!(matches!(
        accept(&mut core, &store, &bare, [0; 32]),
        Err(WireError::Ids(IdsError::InvalidMessage(_)))
    ));
    let dressed = send(alice.message(b"x"), 4, Some([1; 32]));
    assert!(matches!(
        accept(&mut core, &store, &dressed, [0; 32]),
        Err(WireError::Ids(IdsError::InvalidMessage(_)))
    ));
    assert_eq!(store.contents(), before);
    assert_eq!(core.epoch(), Some(0));
    // The genuine send goes through; the same id with other content does not.
    accept(&mut core, &store, &hello, [0; 32]).unwrap();
    let after = store.contents();
    let reused = send(alice.message(b"other"), 1, None);
    assert!(accept(&mut core, &store, &reused, [0; 32]).is_err());
    assert_eq!(store.contents(), after);
}

#[test]
fn a_send_of_an_unknown_group_is_refused() {
    let store = MemStore::new();
    let mut core = GroupCore::load(GID, &store).unwrap();
    let body = send(Member::new().message(b"hi"), 1, None);
    assert_eq!(
        accept(&mut core, &store, &body, [0; 32]).err(),
        Some(WireError::Ids(IdsError::UnknownGroup))
    );
    assert!(store.contents().is_empty());
}

const IDS: crate::storage::Space = crate::storage::Space::Role(mlsd_transport::Role::Ids);

#[test]
fn activity_moves_a_group_in_the_idle_index_once_a_day() {
    let (store, mut core) = created();
    let mut w = crate::storage::Batch::new();
    core.touch(10, &mut w);
    store.write(w).unwrap();
    let mut w = crate::storage::Batch::new();
    core.touch(10, &mut w);
    assert!(w.ops.is_empty(), "one write a day at most");
    let mut w = crate::storage::Batch::new();
    core.touch(20, &mut w);
    store.write(w).unwrap();
    let index = store.scan_prefix(IDS, IDLE_INDEX, 10).unwrap();
    let entries: Vec<_> = index.iter().filter_map(|(k, _)| parse_idle_key(k)).collect();
    assert_eq!(entries, vec![(20, GID.to_vec())]);
    // A reloaded core knows the day: idle only from day 20's cutoff on.
    let mut fresh = GroupCore::load(GID, &store).unwrap();
    assert!(fresh.collect(19, &store).unwrap().is_none());
    assert!(fresh.collect(20, &store).unwrap().is_some());
}

#[test]
fn an_idle_group_is_collected_whole_and_a_group_sharing_its_prefix_is_left_alone() {
    let store = MemStore::new();
    // A group whose id starts with ours and a slash: its keys share our
    // key prefixes, so collecting by prefix would take them too.
    let other_id = [GID, b"/x"].concat();
    let mut other = GroupCore::load(&other_id, &store).unwrap();
    let mut w = other.create(RosterMode::Client, [0; 32], None).unwrap();
    other.touch(3, &mut w);
    let mut accepted = b"a/".to_vec();
    accepted.extend_from_slice(&other_id);
    accepted.push(b'/');
    accepted.extend_from_slice(&0u64.to_be_bytes());
    accepted.extend_from_slice(&[9; 32]);
    w.put(IDS, accepted, vec![1]);
    store.write(w).unwrap();
    let others_only = store.contents();

    let mut core = GroupCore::load(GID, &store).unwrap();
    let mut w = core.create(RosterMode::Client, [0; 32], None).unwrap();
    core.touch(10, &mut w);
    store.write(w).unwrap();
    let mut m = Member::new();
    accept(&mut core, &store, &send(m.message(b"hi"), 1, None), [0; 32]).unwrap();
    assert_ne!(store.contents(), others_only);

    assert!(core.collect(9, &store).unwrap().is_none(), "active after the cutoff");
    let writes = core.collect(10, &store).unwrap().expect("idle");
    store.write(writes).unwrap();
    assert_eq!(store.contents(), others_only, "exactly the group's records are gone");
    // Its id is free again; the other group is untouched.
    let mut again = GroupCore::load(GID, &store).unwrap();
    assert_eq!(again.epoch(), None);
    assert!(again.create(RosterMode::Client, [1; 32], None).is_ok());
    assert_eq!(GroupCore::load(&other_id, &store).unwrap().epoch(), Some(0));
}

/// A router whose enqueues say they arrived, wait for `gate`, then store
/// every copy: a fan-out held half-way.
struct Gated {
    arrived: std::sync::Arc<tokio::sync::Notify>,
    gate: std::sync::Arc<tokio::sync::Semaphore>,
}

impl crate::contract::Router for Gated {
    fn route(
        &self,
        _req: mlsd_transport::Request,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = mlsd_transport::Response> + Send + '_>>
    {
        Box::pin(async {
            mlsd_transport::Response::Error(WireError::Cluster(
                mlsd_transport::protocol::ClusterError::Internal("no routes here".into()),
            ))
        })
    }
    fn enqueue(
        &self,
        items: Vec<mlsd_transport::protocol::EnqueueItem>,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Vec<mlsd_transport::protocol::EnqueueResult>>
                + Send
                + '_,
        >,
    > {
        Box::pin(async move {
            self.arrived.notify_one();
            let _pass = self.gate.acquire().await;
            (1..=items.len() as u64)
                .map(|seq| mlsd_transport::protocol::EnqueueResult::Stored { seq })
                .collect()
        })
    }
}

/// The node stops leading the group's shard while a fan-out is half-way:
/// the group actor refuses new requests at once (retryably), but the
/// running fan-out finishes and its sender is told every copy was stored.
/// (Stopped at once, the group actor took its fan-out down with it: some
/// copies out, the rest only on a retry, possibly many epochs later.)
#[tokio::test]
async fn a_fan_out_running_when_leadership_moves_finishes() {
    use crate::role::{RoleArgs, RoleMsg};
    use mlsd_transport::protocol::{ClusterError, IdsRequest};
    use mlsd_transport::{Request, Response, Role};
    use ractor::Actor;
    use std::sync::Arc;

    let arrived = Arc::new(tokio::sync::Notify::new());
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let router = Gated { arrived: arrived.clone(), gate: gate.clone() };
    let args = RoleArgs {
        node: "t".into(),
        role: Role::Ids,
        store: Arc::new(crate::replica::Local(Arc::new(MemStore::new()))),
        settings: Arc::new(crate::settings::RoleSettings::default()),
        services: Arc::new(crate::services::NodeServices::standalone()),
        router: Arc::new(router),
    };
    let (host, handle) = Actor::spawn(None, super::host::IdsHost, args).await.unwrap();
    async fn ask(host: &ractor::ActorRef<RoleMsg>, request: Request) -> Response {
        ractor::call!(host, |reply| RoleMsg::Request { request, reply }).unwrap()
    }
    let create = Request::Ids(IdsRequest::CreateGroup {
        group: GID.to_vec(),
        mode: RosterMode::Client,
        auth_key: [0; 32],
        roster: None,
    });
    assert_eq!(ask(&host, create).await, Response::GroupCreated);
    let mut alice = Member::new();
    let body = send(alice.message(b"half-way"), 1, None);
    let mac = send_mac(&[0; 32], &body);
    let req = Request::Ids(IdsRequest::Send { body: Box::new(body), mac });
    let first = {
        let (host, req) = (host.clone(), req.clone());
        tokio::spawn(async move {
            ractor::call!(host, |reply| RoleMsg::Request { request: req, reply })
        })
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), arrived.notified())
        .await
        .expect("the fan-out reached the ODS");
    host.send_message(RoleMsg::Deposed).unwrap();
    // Once the group actor has retired, a request for the group is
    // refused retryably (sent again, it reaches the shard's new leader).
    let again = ask(&host, req).await;
    assert!(
        matches!(again, Response::Error(WireError::Cluster(ClusterError::NotLeader { .. }))),
        "{again:?}"
    );
    gate.add_permits(100);
    let first = tokio::time::timeout(std::time::Duration::from_secs(5), first)
        .await
        .expect("the first send is answered")
        .unwrap();
    assert_eq!(first.ok(), Some(Response::Sent { copies: 2 }), "the fan-out finished");
    host.stop(None);
    handle.await.unwrap();
}
