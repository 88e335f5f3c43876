//! What every mlsd client's leaf carries: its capabilities, and the mailbox
//! reference extension that tells the IDS where to deliver that member's
//! copies.

use mlsd_transport::codec;
use mlsd_transport::envelope::{
    LegacyMailboxRef, MailboxRef, GROUP_SETTINGS_EXTENSION, LEGACY_MAILBOX_REF_EXTENSION,
    MAILBOX_REF_EXTENSION,
};
use openmls::prelude::{
    Capabilities, Extension, ExtensionType, Extensions, KeyPackage, LeafNode, UnknownExtension,
};

use crate::{ClientError, CIPHERSUITE};

/// Leaf capabilities of every mlsd client: our ciphersuite, last-resort
/// KeyPackages and the mailbox reference extension. Public so that tools
/// (and tests playing a modified client) build leaves mlsd groups accept.
pub fn capabilities() -> Capabilities {
    Capabilities::new(
        None,
        Some(&[CIPHERSUITE]),
        Some(&[
            ExtensionType::LastResort,
            ExtensionType::Unknown(MAILBOX_REF_EXTENSION),
            ExtensionType::Unknown(LEGACY_MAILBOX_REF_EXTENSION),
            ExtensionType::Unknown(GROUP_SETTINGS_EXTENSION),
        ]),
        None,
        None,
    )
}

/// The leaf extension carrying `r`: where the IDS delivers that member's
/// copies. Public for the same reason as [`capabilities`].
pub fn mailbox_extension(r: &MailboxRef) -> Result<Extensions<LeafNode>, ClientError> {
    let bytes = codec::encode(r).map_err(|e| ClientError::Crypto(e.to_string()))?;
    Extensions::single(Extension::Unknown(MAILBOX_REF_EXTENSION, UnknownExtension(bytes)))
        .map_err(|e| ClientError::Crypto(e.to_string()))
}

/// The mailbox reference in a leaf node, if it has a valid one; a leaf
/// from before capabilities delivers through its mailbox's legacy
/// capability ([`LegacyMailboxRef::upgraded`]).
pub fn mailbox_ref_of(leaf: &LeafNode) -> Option<MailboxRef> {
    if let Some(ext) = leaf.extensions().unknown(MAILBOX_REF_EXTENSION) {
        return codec::decode(&ext.0).ok();
    }
    let ext = leaf.extensions().unknown(LEGACY_MAILBOX_REF_EXTENSION)?;
    codec::decode::<LegacyMailboxRef>(&ext.0).ok().map(|r| r.upgraded())
}

/// The mailbox reference in a KeyPackage's leaf, if it has a valid one.
pub(crate) fn mailbox_ref_of_kp(kp: &KeyPackage) -> Option<MailboxRef> {
    mailbox_ref_of(kp.leaf_node())
}
