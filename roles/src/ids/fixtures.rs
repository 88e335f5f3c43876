//! Real MLS messages for the tests of the IDS's group core and of the hosts
//! that run it (`mlsd_actors::ids`): the group core reads a message's
//! framing, so its tests need messages openmls really made.
//!
//! Compiled into the library (it is small) so that the host tests of another
//! crate share it rather than keep a copy.

use openmls::prelude::tls_codec::Serialize as _;
use openmls::prelude::{
    BasicCredential, CredentialWithKey, GroupId, LeafNodeParameters, MlsGroup, MlsGroupCreateConfig,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use openmls_traits::OpenMlsProvider;

use mlsd_transport::protocol::{CommitExtras, DeliveryCap, Recipients, RosterEntry, SendBody};

use crate::cs::CIPHERSUITE;

/// The id of the group every fixture message belongs to.
pub const GID: &[u8] = b"group-under-test";

/// One member's MLS state for a group ([`GID`] unless made with
/// [`Member::of`]), to make real messages with.
pub struct Member {
    provider: OpenMlsRustCrypto,
    signer: SignatureKeyPair,
    group: MlsGroup,
}

impl Default for Member {
    fn default() -> Self {
        Self::new()
    }
}

impl Member {
    /// A fresh one-member group [`GID`].
    pub fn new() -> Self {
        Self::of(GID)
    }

    /// A fresh one-member group `gid`.
    pub fn of(gid: &[u8]) -> Self {
        let provider = OpenMlsRustCrypto::default();
        let signer = SignatureKeyPair::new(CIPHERSUITE.signature_algorithm()).unwrap();
        let cwk = CredentialWithKey {
            credential: BasicCredential::new(b"alice/phone".to_vec()).into(),
            signature_key: signer.public().into(),
        };
        let config = MlsGroupCreateConfig::builder().ciphersuite(CIPHERSUITE).build();
        let group =
            MlsGroup::new_with_group_id(&provider, &signer, &config, GroupId::from_slice(gid), cwk)
                .unwrap();
        Member { provider, signer, group }
    }

    /// An application message of the current epoch.
    pub fn message(&mut self, text: &[u8]) -> Vec<u8> {
        let m = self.group.create_message(&self.provider, &self.signer, text).unwrap();
        m.tls_serialize_detached().unwrap()
    }

    /// A self-update commit of the current epoch (not merged: a commit
    /// another member might race).
    pub fn commit(&mut self) -> Vec<u8> {
        let bytes = self.self_update();
        self.group.clear_pending_commit(self.provider.storage()).unwrap();
        bytes
    }

    /// A self-update commit of the current epoch, merged: the member moves
    /// to the next epoch (a chain of commits, one per epoch).
    pub fn advance(&mut self) -> Vec<u8> {
        let bytes = self.self_update();
        self.group.merge_pending_commit(&self.provider).unwrap();
        bytes
    }

    /// A self-update commit of the current epoch, left pending.
    fn self_update(&mut self) -> Vec<u8> {
        let b = self
            .group
            .self_update(&self.provider, &self.signer, LeafNodeParameters::default())
            .unwrap();
        b.commit().tls_serialize_detached().unwrap()
    }
}

/// A three-entry client roster.
pub fn roster() -> Vec<RosterEntry> {
    (1..=3u8)
        .map(|i| RosterEntry { cap: DeliveryCap { shard: [i; 2], token: [i; 32] }, key: [i; 32] })
        .collect()
}

/// A client-mode send of `message` under id `[id; 32]`; a commit when
/// `next_auth` is given.
pub fn send(message: Vec<u8>, id: u8, next_auth: Option<[u8; 32]>) -> SendBody {
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
