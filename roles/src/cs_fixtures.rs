//! Real KeyPackages for the simulation of the CS
//! (`mlsd_actors::replica::sim`): the CS validates every KeyPackage with
//! openmls, so what it is given must be what openmls makes.
//!
//! Compiled into the library (it is small), as [`crate::ids::fixtures`] is.

use openmls::prelude::tls_codec::Serialize as _;
use openmls::prelude::{BasicCredential, CredentialWithKey, KeyPackage, Lifetime};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;

use crate::cs::CIPHERSUITE;

/// A fresh KeyPackage of `client`, signed with the Ed25519 key whose secret
/// is `secret`, valid from now (the wall clock: openmls checks a
/// KeyPackage's lifetime against it) for `lifetime_secs`. `None` if openmls
/// refuses to make it.
pub fn key_package(client: &str, secret: &[u8; 32], lifetime_secs: u64) -> Option<Vec<u8>> {
    let sk = ed25519_dalek::SigningKey::from_bytes(secret);
    let signer = SignatureKeyPair::from_raw(
        CIPHERSUITE.signature_algorithm(),
        sk.to_bytes().to_vec(),
        sk.verifying_key().to_bytes().to_vec(),
    );
    let cwk = CredentialWithKey {
        credential: BasicCredential::new(client.as_bytes().to_vec()).into(),
        signature_key: signer.public().into(),
    };
    let bundle = KeyPackage::builder()
        .key_package_lifetime(Lifetime::new(lifetime_secs))
        .build(CIPHERSUITE, &OpenMlsRustCrypto::default(), &signer, cwk)
        .ok()?;
    bundle.key_package().tls_serialize_detached().ok()
}
