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

use super::group::{Accepted, GroupCore};
use crate::cs::CIPHERSUITE;
use crate::storage::{MemStore, Store};

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
    let mut fresh = GroupCore::load(GID, &store).unwrap();
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
