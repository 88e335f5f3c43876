//! AS protocol: binding a client id to a signature key, revoking it, and
//! looking up an identity's bindings.
//!
//! Requests are signed as [`super::identity`] describes; the AS answers with
//! bindings it signs itself ([`SignedBinding`]).

use serde::{Deserialize, Serialize};

use super::flat::Tags;
use super::identity::signing_bytes;
use super::rules::{Admission, Rules};
use super::tickets::{TicketBody, TicketKey};

/// A request the AS serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AsRequest {
    /// Bind a client id to a signature key (step 1). `proof` is the new
    /// key's signature over the body (proof of possession); `rotation`, the
    /// currently bound key's signature, is required to replace a live binding.
    Register {
        /// What is registered.
        body: RegisterBody,
        /// Signature by `body.signature_key`.
        proof: Vec<u8>,
        /// Signature by the currently bound key, for key rotation.
        rotation: Option<Vec<u8>>,
    },
    /// End a binding; signed by the bound key.
    Revoke {
        /// What is revoked.
        body: RevokeBody,
        /// Signature by the bound key.
        signature: Vec<u8>,
    },
    /// Every unexpired binding of an identity's clients (step 4), at most 64
    /// (an identity holds no more client ids); what the CS checks against and
    /// protocol version 1 clients send. Clients send [`AsRequest::LookupPage`].
    Lookup {
        /// The identity, e.g. `alice`.
        identity: String,
    },
    /// A live device consents to a new device of its identity: binds
    /// `body.client` to `body.signature_key` (the key of its pending
    /// registration). Signed by the approver's bound key.
    Approve {
        /// Who approves what.
        body: ApproveBody,
        /// Signature by the bound key of `body.approver`.
        signature: Vec<u8>,
    },
    /// An identity's devices and pending registrations, for its own live
    /// devices only (pending requests name devices nobody else should see).
    Devices {
        /// Who asks.
        body: DevicesBody,
        /// Signature by the bound key of `body.client`.
        signature: Vec<u8>,
    },
    /// A live device revokes another device of its identity (a lost phone).
    RevokeDevice {
        /// Who revokes which device.
        body: RevokeDeviceBody,
        /// Signature by the bound key of `body.by`.
        signature: Vec<u8>,
    },
    /// One page of an identity's unexpired bindings, in client id order,
    /// starting after client id `after` (step 4). At most [`LOOKUP_PAGE`]
    /// per answer ([`super::Response::BindingPage`]), so neither the answer
    /// nor the AS's work grows with what an identity holds.
    LookupPage {
        /// The identity, e.g. `alice`.
        identity: String,
        /// The `next` of the previous page; `None` for the first.
        after: Option<String>,
    },
    /// Blindly evaluate quota tickets for the asking device (decision D12),
    /// counted against its identity's daily allowance of `body.kind`.
    IssueTickets {
        /// What is asked.
        body: TicketBody,
        /// Signature by the bound key of `body.client`.
        signature: Vec<u8>,
    },
    /// A live device lets one new device of its identity in by an approval
    /// code it shows its person, without the public pending queue (which
    /// strangers can fill): the new device's `Register` carrying the code as
    /// its `token` is bound at once, for [`ADMISSION_LIFETIME_SECS`], once.
    Admit {
        /// Who admits which device with what code.
        body: AdmitBody,
        /// Signature by the bound key of `body.approver`.
        signature: Vec<u8>,
    },
}

/// Most bindings in one lookup answer.
pub const LOOKUP_PAGE: usize = 16;

impl AsRequest {
    /// Flat wire index of each variant (protocol version 1).
    pub(crate) const TAGS: Tags = &[1, 2, 3, 16, 17, 18, 19, 22, 24];

    /// The rules of each AS request ([`Rules`]); the identity picks the shard.
    pub fn rules(&self) -> Rules<'_> {
        match self {
            // With a token or an approval code it binds or is refused: it
            // never leaves a request pending.
            AsRequest::Register { body, .. } if body.token.is_some() => {
                Rules::once(identity_of(&body.client))
            }
            AsRequest::Register { body, .. } => {
                Rules::once(identity_of(&body.client)).admit(Admission::Register)
            }
            AsRequest::Revoke { body, .. } => Rules::once(identity_of(&body.client)),
            AsRequest::Lookup { identity } | AsRequest::LookupPage { identity, .. } => {
                Rules::repeatable(identity.as_bytes()).admit(Admission::Lookup)
            }
            AsRequest::Approve { body, .. } => Rules::once(identity_of(&body.client)),
            AsRequest::Devices { body, .. } => Rules::repeatable(identity_of(&body.client)),
            AsRequest::RevokeDevice { body, .. } => Rules::once(identity_of(&body.client)),
            AsRequest::IssueTickets { body, .. } => Rules::once(identity_of(&body.client)),
            AsRequest::Admit { body, .. } => Rules::once(identity_of(&body.client)),
        }
    }

    /// The signature that authorizes the request (for a registration, the
    /// new key's proof of possession), if it needs one: a signed request
    /// takes effect at most once.
    pub fn signature(&self) -> Option<&[u8]> {
        match self {
            AsRequest::Register { proof, .. } => Some(proof),
            AsRequest::Revoke { signature, .. }
            | AsRequest::Approve { signature, .. }
            | AsRequest::Devices { signature, .. }
            | AsRequest::RevokeDevice { signature, .. }
            | AsRequest::IssueTickets { signature, .. }
            | AsRequest::Admit { signature, .. } => Some(signature),
            AsRequest::Lookup { .. } | AsRequest::LookupPage { .. } => None,
        }
    }
}

/// The identity part of a client id (what precedes its first `/`), which
/// picks the AS and CS shard.
pub(crate) fn identity_of(client: &str) -> &[u8] {
    client.split('/').next().unwrap_or("").as_bytes()
}

/// What the AS answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AsResponse {
    /// The binding after `Register`, `Approve`, `Revoke` or `RevokeDevice`.
    Binding(SignedBinding),
    /// Answer to `Lookup`: every unexpired binding, revoked ones marked.
    Bindings(Vec<SignedBinding>),
    /// Answer to `Register` of a new device of an identity that has
    /// devices already: nothing is bound until a live device of the identity
    /// approves it (`Approve`), or an operator's token is presented.
    RegistrationPending {
        /// The pending request, as the approving device will see it.
        pending: PendingDevice,
    },
    /// Answer to `Devices`: every device of the identity (revoked ones
    /// marked) and every pending registration.
    Devices {
        /// The bindings, signed like `Lookup`'s.
        bindings: Vec<SignedBinding>,
        /// Registrations awaiting approval.
        pending: Vec<PendingDevice>,
    },
    /// Answer to `LookupPage`: up to `LOOKUP_PAGE` unexpired bindings in
    /// client id order, revoked ones marked.
    BindingPage {
        /// The bindings, signed like `Lookup`'s.
        bindings: Vec<SignedBinding>,
        /// Client id to ask `after` for the next page; `None` on the last.
        next: Option<String>,
    },
    /// Answer to `IssueTickets`: the evaluated elements in order, one proof
    /// over all of them, and the signed ticket key to check it against.
    TicketsIssued {
        /// One evaluated element per blinded input.
        evaluated: Vec<[u8; 32]>,
        /// The batch proof (64 bytes).
        proof: Vec<u8>,
        /// The AS's ticket key.
        key: TicketKey,
    },
    /// Answer to `Admit`: the code is good for `client` until `expires_at`.
    Admitted {
        /// The new device the code admits.
        client: String,
        /// Unix seconds after which the code binds nothing.
        expires_at: u64,
    },
}

impl AsResponse {
    /// Flat wire index of each variant in [`super::Response`].
    pub(crate) const TAGS: Tags = &[2, 3, 19, 20, 21, 24, 29];
}

/// Why the AS refused a request (besides the shared reasons of
/// [`super::AuthError`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AsError {
    /// The client id is bound to another key; a rotation must be signed by it.
    #[error("client id {0} is bound to another key")]
    ClientTaken(String),
    /// The AS requires a valid, unused enrollment token (or a live device's
    /// approval code) for this identity.
    #[error("enrollment token or approval code missing, wrong, expired or already used")]
    BadToken,
    /// The identity holds its maximum of devices and pending registrations
    /// (revoked devices count: their ids stay their owner's); a live device
    /// must approve or the operator release some first.
    #[error("identity has its maximum of {max} devices and pending registrations")]
    TooManyDevices {
        /// The cap.
        max: u32,
    },
}

impl AsError {
    /// Flat wire index of each variant in [`super::WireError`].
    pub(crate) const TAGS: Tags = &[12, 14, 32];
}

/// Label of [`RegisterBody`] signatures (proof of possession and rotation).
pub const LABEL_REGISTER: &str = "mlsd/as/register/v1";
/// Label of [`RevokeBody`] signatures.
pub const LABEL_REVOKE: &str = "mlsd/as/revoke/v1";
/// Label of [`ApproveBody`] signatures.
pub const LABEL_APPROVE: &str = "mlsd/as/approve/v1";
/// Label of [`AdmitBody`] signatures.
pub const LABEL_ADMIT: &str = "mlsd/as/admit/v1";
/// How long an approval code ([`AsRequest::Admit`]) binds its device: an
/// hour, long enough to walk to the new device and short enough that a code
/// seen over a shoulder soon binds nothing.
pub const ADMISSION_LIFETIME_SECS: u64 = 3600;
/// Label of [`DevicesBody`] signatures.
pub const LABEL_DEVICES: &str = "mlsd/as/devices/v1";
/// Label of [`RevokeDeviceBody`] signatures.
pub const LABEL_REVOKE_DEVICE: &str = "mlsd/as/revoke-device/v1";
/// Label of the AS's signature over a [`Binding`] and its status.
pub const LABEL_BINDING: &str = "mlsd/as/binding/v1";

/// What the AS vouches for: client `client` signs with `signature_key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// Client id, `identity/device`.
    pub client: String,
    /// Ed25519 public key (32 bytes), the key in the client's MLS credential.
    pub signature_key: Vec<u8>,
    /// Unix seconds.
    pub issued_at: u64,
    /// Unix seconds; the binding is void after this.
    pub expires_at: u64,
    /// Increases with every binding this AS shard issues, so a client can
    /// tell a newer binding of a device from an older one.
    pub serial: u64,
}

/// A binding, its status and the AS signature over both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedBinding {
    /// The binding.
    pub binding: Binding,
    /// When the client revoked it (Unix seconds), if it did.
    pub revoked_at: Option<u64>,
    /// Ed25519 signature by the AS key over
    /// `signing_bytes(LABEL_BINDING, &(binding, revoked_at))`.
    pub signature: Vec<u8>,
}

impl SignedBinding {
    /// The bytes the AS signs.
    pub fn tbs(binding: &Binding, revoked_at: Option<u64>) -> Vec<u8> {
        signing_bytes(LABEL_BINDING, &(binding, revoked_at))
    }
}

/// Body of a registration; see [`AsRequest::Register`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterBody {
    /// Client id to bind.
    pub client: String,
    /// Its Ed25519 public key.
    pub signature_key: Vec<u8>,
    /// Unix seconds, within [`super::identity::TIMESTAMP_WINDOW_SECS`] of the AS clock.
    pub timestamp: u64,
    /// Enrollment token, required when the AS runs in token mode.
    pub token: Option<String>,
}

/// Body of a revocation, signed by the bound key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeBody {
    /// Client id whose binding ends.
    pub client: String,
    /// Unix seconds.
    pub timestamp: u64,
}

/// A live device's consent to a new device of the same identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApproveBody {
    /// The approving device, `identity/device`, with a live binding.
    pub approver: String,
    /// The new device, of the same identity.
    pub client: String,
    /// The key the new device registered with (from its pending request).
    pub signature_key: Vec<u8>,
    /// Unix seconds.
    pub timestamp: u64,
}

/// A live device's approval code for a new device of the same identity.
/// The AS sees only the code's hash until the new device registers with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdmitBody {
    /// The admitting device, `identity/device`, with a live binding.
    pub approver: String,
    /// The new device, of the same identity.
    pub client: String,
    /// [`admission_hash`] of the code.
    pub code_hash: [u8; 32],
    /// Unix seconds.
    pub timestamp: u64,
}

/// The hash under which the AS keeps an approval code for `client`, and
/// checks the `token` of `client`'s registration against.
pub fn admission_hash(client: &str, code: &str) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("mlsd/as/admission-code/v1");
    h.update(client.as_bytes());
    h.update(&[0]);
    h.update(code.as_bytes());
    h.finalize().into()
}

/// A device's request for its identity's devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevicesBody {
    /// The asking device, with a live binding.
    pub client: String,
    /// Unix seconds.
    pub timestamp: u64,
}

/// A device's revocation of another device of the same identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeDeviceBody {
    /// The revoking device, with a live binding.
    pub by: String,
    /// The device whose binding ends.
    pub client: String,
    /// Unix seconds.
    pub timestamp: u64,
}

/// A registration of a new device that waits for a live device's approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingDevice {
    /// The new device's client id.
    pub client: String,
    /// The key it registered with; the approver compares its fingerprint.
    pub signature_key: Vec<u8>,
    /// Unix seconds.
    pub requested_at: u64,
}

/// A short, comparable form of a signature key, shown by `mlsc` on both the
/// new device and the approving one so a person can tell them apart from a
/// stranger's request: the first 8 bytes of the key's BLAKE3 hash, in hex
/// groups.
pub fn fingerprint(signature_key: &[u8]) -> String {
    let h = blake3::hash(signature_key);
    h.as_bytes()[..8]
        .chunks(2)
        .map(|c| format!("{:02x}{:02x}", c[0], c[1]))
        .collect::<Vec<_>>()
        .join("-")
}
