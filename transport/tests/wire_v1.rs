//! The nested request, response and error enums keep the flat bytes.
//!
//! `OldRequest` and `OldWireError` are the flat enums as version 1 defined
//! them (before each role got its own enum), `OldResponse` the flat answer
//! enum as version 4 defined it, `OldNodeRequest` the flat node-to-node
//! request enum of version 4. Every variant must encode to the same bytes
//! as its nested counterpart and decode back into it, so peers and stored
//! client outboxes of either shape agree.

use mlsd_transport::codec::{decode, encode};
use mlsd_transport::protocol::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OldRequest {
    Ping {
        role: Role,
        key: Vec<u8>,
    },
    Register {
        body: RegisterBody,
        proof: Vec<u8>,
        rotation: Option<Vec<u8>>,
    },
    Revoke {
        body: RevokeBody,
        signature: Vec<u8>,
    },
    Lookup {
        identity: String,
    },
    PublishKeyPackages {
        body: PublishBody,
        signature: Vec<u8>,
    },
    FetchKeyPackages {
        identity: String,
    },
    OpenMailbox {
        mailbox: MailboxId,
        auth_key: Vec<u8>,
        push: Option<SealedPush>,
    },
    Fetch {
        auth: MailboxAuth,
        after: u64,
        limit: u32,
    },
    Subscribe {
        auth: MailboxAuth,
        after: u64,
    },
    Ack {
        auth: MailboxAuth,
        up_to: u64,
    },
    CreateGroup {
        group: Vec<u8>,
        mode: RosterMode,
        auth_key: [u8; 32],
        roster: Option<SealedRoster>,
    },
    Send {
        body: Box<SendBody>,
        mac: [u8; 32],
    },
    PutBlob {
        id: [u8; 32],
        cap: [u8; 32],
        offset: u64,
        total: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    GetBlob {
        id: [u8; 32],
        offset: u64,
        max: u32,
    },
    DeleteBlob {
        id: [u8; 32],
        cap: [u8; 32],
    },
    CountKeyPackages {
        body: CountBody,
        signature: Vec<u8>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OldWireError {
    Malformed(String),
    FrameTooLarge { len: u32, max: u32 },
    Truncated,
    Timeout,
    UnsupportedVersion { got: u16, supported: u16 },
    Unavailable { node: String },
    NotOwner { owner: String },
    NotAuthorized(String),
    Internal(String),
    InvalidClientId(String),
    BadSignature(String),
    StaleTimestamp { server_time: u64 },
    ClientTaken(String),
    UnknownClient(String),
    BadToken,
    InvalidKeyPackage { index: u32, reason: String },
    TooManyKeyPackages { max: u32 },
    StaleEpoch { current: u64 },
    UnknownGroup,
    GroupTaken,
    BadMac,
    InvalidMessage(String),
    Incomplete { failed: u32, total: u32 },
    UnknownBlob,
    WrongCapability,
    BadBlob(String),
    UnknownMailbox,
    MailboxTaken,
    Replayed,
    RateLimited { retry_after_ms: u64 },
    ResponseTooLarge { len: u32, max: u32 },
    Unreadable(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OldResponse {
    Pong {
        node: String,
        role: Role,
    },
    Error(WireError),
    Binding(SignedBinding),
    Bindings(Vec<SignedBinding>),
    Published {
        stored: u32,
    },
    KeyPackages(Vec<FetchedKeyPackage>),
    GroupCreated,
    Sent {
        copies: u32,
    },
    BlobWritten {
        written: u64,
    },
    Blob {
        total: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    BlobDeleted,
    MailboxOpened,
    Envelopes(Vec<Delivered>),
    Acked {
        remaining: u32,
    },
    Enqueued(Vec<EnqueueResult>),
    Killed {
        count: u32,
    },
    Enrolled,
    KeyPackageCount {
        count: u32,
        last_resort: bool,
    },
    PartlySent {
        copies: u32,
        failed: u32,
        undelivered: Vec<Undelivered>,
    },
    RegistrationPending {
        pending: PendingDevice,
    },
    Devices {
        bindings: Vec<SignedBinding>,
        pending: Vec<PendingDevice>,
    },
    BindingPage {
        bindings: Vec<SignedBinding>,
        next: Option<String>,
    },
    CapabilitiesIssued {
        serials: Vec<u64>,
    },
    CapabilitiesRevoked {
        revoked: u32,
    },
    TicketsIssued {
        evaluated: Vec<[u8; 32]>,
        proof: Vec<u8>,
        key: tickets::TicketKey,
    },
    Spent,
    Raft(Vec<serde_bytes::ByteBuf>),
    ShardStatus(Vec<ShardLine>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OldNodeRequest {
    Forward(Request),
    Enroll { identity: String, token_hash: Vec<u8> },
    Chaos { target: ChaosTarget },
    Enqueue(Vec<EnqueueItem>),
    Revoke { client: String },
    Spend { ticket: tickets::Ticket, bind: [u8; 32] },
    Raft(Vec<RaftCall>),
    ShardStatus,
}

/// Asserts that `old` and `new` are the same bytes and decode to `new`.
fn same<O: Serialize, N: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug>(
    old: O,
    new: N,
) {
    let bytes = encode(&old).unwrap();
    assert_eq!(bytes, encode(&new).unwrap(), "{new:?}");
    assert_eq!(decode::<N>(&bytes).unwrap(), new);
}

fn auth() -> MailboxAuth {
    MailboxAuth { mailbox: [3; 32], counter: 9, signature: vec![1, 2] }
}

fn send_body() -> SendBody {
    SendBody {
        group: b"g".to_vec(),
        message_id: [5; 32],
        message: vec![6; 10],
        recipients: Recipients::RosterKey([7; 32]),
        skip: Some(DeliveryCap { shard: [8; 2], token: [8; 32] }),
        commit: None,
    }
}

#[test]
fn every_request_keeps_its_version_1_bytes() {
    let reg = RegisterBody {
        client: "alice/phone".into(),
        signature_key: vec![1; 32],
        timestamp: 7,
        token: Some("t".into()),
    };
    let rev = RevokeBody { client: "alice/phone".into(), timestamp: 8 };
    let publish = PublishBody {
        client: "alice/phone".into(),
        key_packages: vec![vec![1, 2]],
        last_resort: None,
        timestamp: 9,
    };
    let count = CountBody { client: "alice/phone".into(), timestamp: 10 };
    let push = SealedPush { nonce: vec![0; 24], ciphertext: vec![1; 5] };
    let roster = SealedRoster { nonce: vec![0; 24], ciphertext: vec![2; 5] };
    same(
        OldRequest::Ping { role: Role::Sds, key: vec![1] },
        Request::Ping(Ping { role: Role::Sds, key: vec![1] }),
    );
    same(
        OldRequest::Register { body: reg.clone(), proof: vec![2], rotation: Some(vec![3]) },
        Request::As(AsRequest::Register { body: reg, proof: vec![2], rotation: Some(vec![3]) }),
    );
    same(
        OldRequest::Revoke { body: rev.clone(), signature: vec![4] },
        Request::As(AsRequest::Revoke { body: rev, signature: vec![4] }),
    );
    same(
        OldRequest::Lookup { identity: "alice".into() },
        Request::As(AsRequest::Lookup { identity: "alice".into() }),
    );
    same(
        OldRequest::PublishKeyPackages { body: publish.clone(), signature: vec![5] },
        Request::Cs(CsRequest::PublishKeyPackages { body: publish, signature: vec![5] }),
    );
    same(
        OldRequest::FetchKeyPackages { identity: "bob".into() },
        Request::Cs(CsRequest::FetchKeyPackages { identity: "bob".into() }),
    );
    same(
        OldRequest::CountKeyPackages { body: count.clone(), signature: vec![6] },
        Request::Cs(CsRequest::CountKeyPackages { body: count, signature: vec![6] }),
    );
    same(
        OldRequest::OpenMailbox { mailbox: [1; 32], auth_key: vec![2], push: Some(push.clone()) },
        Request::Ods(OdsRequest::OpenMailbox {
            mailbox: [1; 32],
            auth_key: vec![2],
            push: Some(push),
        }),
    );
    same(
        OldRequest::Fetch { auth: auth(), after: 3, limit: 4 },
        Request::Ods(OdsRequest::Fetch { auth: auth(), after: 3, limit: 4 }),
    );
    same(
        OldRequest::Subscribe { auth: auth(), after: 5 },
        Request::Ods(OdsRequest::Subscribe { auth: auth(), after: 5 }),
    );
    same(
        OldRequest::Ack { auth: auth(), up_to: 6 },
        Request::Ods(OdsRequest::Ack { auth: auth(), up_to: 6 }),
    );
    same(
        OldRequest::CreateGroup {
            group: b"g".to_vec(),
            mode: RosterMode::Stored,
            auth_key: [8; 32],
            roster: Some(roster.clone()),
        },
        Request::Ids(IdsRequest::CreateGroup {
            group: b"g".to_vec(),
            mode: RosterMode::Stored,
            auth_key: [8; 32],
            roster: Some(roster),
        }),
    );
    same(
        OldRequest::Send { body: Box::new(send_body()), mac: [9; 32] },
        Request::Ids(IdsRequest::Send { body: Box::new(send_body()), mac: [9; 32] }),
    );
    same(
        OldRequest::PutBlob { id: [1; 32], cap: [2; 32], offset: 3, total: 4, data: vec![5] },
        Request::Sds(SdsRequest::PutBlob {
            id: [1; 32],
            cap: [2; 32],
            offset: 3,
            total: 4,
            data: vec![5],
        }),
    );
    same(
        OldRequest::GetBlob { id: [1; 32], offset: 2, max: 3 },
        Request::Sds(SdsRequest::GetBlob { id: [1; 32], offset: 2, max: 3 }),
    );
    same(
        OldRequest::DeleteBlob { id: [1; 32], cap: [2; 32] },
        Request::Sds(SdsRequest::DeleteBlob { id: [1; 32], cap: [2; 32] }),
    );
}

#[test]
fn every_error_keeps_its_version_1_bytes() {
    let s = || "why".to_string();
    let pairs: Vec<(OldWireError, WireError)> = vec![
        (OldWireError::Malformed(s()), BadFrame::Malformed(s()).into()),
        (
            OldWireError::FrameTooLarge { len: 1, max: 2 },
            BadFrame::TooLarge { len: 1, max: 2 }.into(),
        ),
        (OldWireError::Truncated, BadFrame::Truncated.into()),
        (OldWireError::Timeout, BadFrame::Timeout.into()),
        (
            OldWireError::UnsupportedVersion { got: 2, supported: 1 },
            BadFrame::UnsupportedVersion { got: 2, supported: 1 }.into(),
        ),
        (OldWireError::Unavailable { node: s() }, ClusterError::Unavailable { node: s() }.into()),
        (OldWireError::NotOwner { owner: s() }, ClusterError::NotOwner { owner: s() }.into()),
        (OldWireError::NotAuthorized(s()), AuthError::NotAuthorized(s()).into()),
        (OldWireError::Internal(s()), ClusterError::Internal(s()).into()),
        (OldWireError::InvalidClientId(s()), AuthError::InvalidClientId(s()).into()),
        (OldWireError::BadSignature(s()), AuthError::BadSignature(s()).into()),
        (
            OldWireError::StaleTimestamp { server_time: 5 },
            AuthError::StaleTimestamp { server_time: 5 }.into(),
        ),
        (OldWireError::ClientTaken(s()), AsError::ClientTaken(s()).into()),
        (OldWireError::UnknownClient(s()), AuthError::UnknownClient(s()).into()),
        (OldWireError::BadToken, AsError::BadToken.into()),
        (
            OldWireError::InvalidKeyPackage { index: 1, reason: s() },
            CsError::InvalidKeyPackage { index: 1, reason: s() }.into(),
        ),
        (
            OldWireError::TooManyKeyPackages { max: 3 },
            CsError::TooManyKeyPackages { max: 3 }.into(),
        ),
        (OldWireError::StaleEpoch { current: 4 }, IdsError::StaleEpoch { current: 4 }.into()),
        (OldWireError::UnknownGroup, IdsError::UnknownGroup.into()),
        (OldWireError::GroupTaken, IdsError::GroupTaken.into()),
        (OldWireError::BadMac, IdsError::BadMac.into()),
        (OldWireError::InvalidMessage(s()), IdsError::InvalidMessage(s()).into()),
        (
            OldWireError::Incomplete { failed: 1, total: 2 },
            IdsError::Incomplete { failed: 1, total: 2 }.into(),
        ),
        (OldWireError::UnknownBlob, SdsError::UnknownBlob.into()),
        (OldWireError::WrongCapability, SdsError::WrongCapability.into()),
        (OldWireError::BadBlob(s()), SdsError::BadBlob(s()).into()),
        (OldWireError::UnknownMailbox, OdsError::UnknownMailbox.into()),
        (OldWireError::MailboxTaken, OdsError::MailboxTaken.into()),
        (OldWireError::Replayed, AuthError::Replayed.into()),
        (
            OldWireError::RateLimited { retry_after_ms: 6 },
            ClusterError::RateLimited { retry_after_ms: 6 }.into(),
        ),
        (
            OldWireError::ResponseTooLarge { len: 7, max: 8 },
            BadFrame::ResponseTooLarge { len: 7, max: 8 }.into(),
        ),
        (OldWireError::Unreadable(s()), ClusterError::Unreadable(s()).into()),
    ];
    assert_eq!(pairs.len(), 32, "version 1 has 32 error variants");
    for (old, new) in pairs {
        same(old, new);
    }
}

#[test]
fn an_unknown_variant_index_is_refused() {
    // Index 19 is not a request (yet), 33 not an error.
    assert!(decode::<Request>(&[19]).is_err());
    assert!(decode::<WireError>(&[33]).is_err());
}

#[test]
fn every_response_keeps_its_flat_bytes() {
    let binding = SignedBinding {
        binding: Binding {
            client: "alice/phone".into(),
            signature_key: vec![1; 32],
            issued_at: 2,
            expires_at: 3,
            serial: 4,
        },
        revoked_at: Some(5),
        signature: vec![6; 64],
    };
    let pending = PendingDevice {
        client: "alice/laptop".into(),
        signature_key: vec![7; 32],
        requested_at: 8,
    };
    let kp =
        FetchedKeyPackage { client: "bob/phone".into(), key_package: vec![9], last_resort: true };
    let delivered = Delivered { seq: 1, via: 2, envelope: vec![3; 4] };
    let undelivered = Undelivered {
        cap: DeliveryCap { shard: [1; 2], token: [2; 32] },
        reason: Undeliverable::MailboxFull,
    };
    let key = tickets::TicketKey { key: [4; 32], signature: vec![5; 64] };
    let line = ShardLine {
        role: Role::Ods,
        shard: 3,
        node: "n1".into(),
        voters: vec!["n1".into(), "n2".into()],
        leader: Some("n2".into()),
        term: 4,
        applied: 5,
        applied_term: 4,
        last_log: 6,
        last_log_term: Some(4),
        matched: vec![("n1".into(), Some(6)), ("n2".into(), None)],
        rebuilding: Some("waiting".into()),
    };
    let pairs: Vec<(OldResponse, Response)> = vec![
        (
            OldResponse::Pong { node: "n1".into(), role: Role::Ids },
            Response::Pong(Pong { node: "n1".into(), role: Role::Ids }),
        ),
        (
            OldResponse::Error(IdsError::StaleEpoch { current: 3 }.into()),
            Response::Error(IdsError::StaleEpoch { current: 3 }.into()),
        ),
        (OldResponse::Binding(binding.clone()), AsResponse::Binding(binding.clone()).into()),
        (
            OldResponse::Bindings(vec![binding.clone()]),
            AsResponse::Bindings(vec![binding.clone()]).into(),
        ),
        (OldResponse::Published { stored: 7 }, CsResponse::Published { stored: 7 }.into()),
        (OldResponse::KeyPackages(vec![kp.clone()]), CsResponse::KeyPackages(vec![kp]).into()),
        (OldResponse::GroupCreated, IdsResponse::GroupCreated.into()),
        (OldResponse::Sent { copies: 3 }, IdsResponse::Sent { copies: 3 }.into()),
        (OldResponse::BlobWritten { written: 9 }, SdsResponse::BlobWritten { written: 9 }.into()),
        (
            OldResponse::Blob { total: 10, data: vec![1, 2] },
            SdsResponse::Blob { total: 10, data: vec![1, 2] }.into(),
        ),
        (OldResponse::BlobDeleted, SdsResponse::BlobDeleted.into()),
        (OldResponse::MailboxOpened, OdsResponse::MailboxOpened.into()),
        (
            OldResponse::Envelopes(vec![delivered.clone()]),
            OdsResponse::Envelopes(vec![delivered]).into(),
        ),
        (OldResponse::Acked { remaining: 11 }, OdsResponse::Acked { remaining: 11 }.into()),
        (
            OldResponse::Enqueued(vec![EnqueueResult::Stored { seq: 12 }]),
            NodeResponse::Enqueued(vec![EnqueueResult::Stored { seq: 12 }]).into(),
        ),
        (OldResponse::Killed { count: 13 }, NodeResponse::Killed { count: 13 }.into()),
        (OldResponse::Enrolled, NodeResponse::Enrolled.into()),
        (
            OldResponse::KeyPackageCount { count: 14, last_resort: false },
            CsResponse::KeyPackageCount { count: 14, last_resort: false }.into(),
        ),
        (
            OldResponse::PartlySent {
                copies: 15,
                failed: 1,
                undelivered: vec![undelivered.clone()],
            },
            IdsResponse::PartlySent { copies: 15, failed: 1, undelivered: vec![undelivered] }
                .into(),
        ),
        (
            OldResponse::RegistrationPending { pending: pending.clone() },
            AsResponse::RegistrationPending { pending: pending.clone() }.into(),
        ),
        (
            OldResponse::Devices {
                bindings: vec![binding.clone()],
                pending: vec![pending.clone()],
            },
            AsResponse::Devices { bindings: vec![binding.clone()], pending: vec![pending] }.into(),
        ),
        (
            OldResponse::BindingPage { bindings: vec![binding.clone()], next: Some("x".into()) },
            AsResponse::BindingPage { bindings: vec![binding], next: Some("x".into()) }.into(),
        ),
        (
            OldResponse::CapabilitiesIssued { serials: vec![16, 17] },
            OdsResponse::CapabilitiesIssued { serials: vec![16, 17] }.into(),
        ),
        (
            OldResponse::CapabilitiesRevoked { revoked: 18 },
            OdsResponse::CapabilitiesRevoked { revoked: 18 }.into(),
        ),
        (
            OldResponse::TicketsIssued {
                evaluated: vec![[1; 32]],
                proof: vec![2; 64],
                key: key.clone(),
            },
            AsResponse::TicketsIssued { evaluated: vec![[1; 32]], proof: vec![2; 64], key }.into(),
        ),
        (OldResponse::Spent, NodeResponse::Spent.into()),
        (
            OldResponse::Raft(vec![serde_bytes::ByteBuf::from(vec![19])]),
            NodeResponse::Raft(vec![serde_bytes::ByteBuf::from(vec![19])]).into(),
        ),
        (
            OldResponse::ShardStatus(vec![line.clone()]),
            NodeResponse::ShardStatus(vec![line]).into(),
        ),
    ];
    assert_eq!(pairs.len(), 28, "version 4 has 28 responses");
    for (old, new) in pairs {
        same(old, new);
    }
    // Index 28 came later, with the cluster map (`NodeResponse::ClusterMap`).
    assert!(decode::<Response>(&[29]).is_err(), "index 29 is no response");
}

#[test]
fn every_node_request_keeps_its_flat_bytes() {
    let ticket = tickets::Ticket {
        kind: tickets::TicketKind::Group,
        day: 3,
        input: [4; 32],
        output: vec![5; 32],
    };
    let item = EnqueueItem {
        cap: DeliveryCap { shard: [1; 2], token: [2; 32] },
        delivery_id: [3; 32],
        envelope: vec![4; 5],
    };
    let call = RaftCall { role: Role::Cs, shard: 2, rpc: RaftRpc::Vote, body: vec![6] };
    let lookup = Request::As(AsRequest::Lookup { identity: "bob".into() });
    let pairs: Vec<(OldNodeRequest, NodeRequest)> = vec![
        (OldNodeRequest::Forward(lookup.clone()), NodeRequest::Forward(lookup)),
        (
            OldNodeRequest::Enroll { identity: "carol".into(), token_hash: vec![7; 32] },
            OperatorRequest::Enroll { identity: "carol".into(), token_hash: vec![7; 32] }.into(),
        ),
        (
            OldNodeRequest::Chaos { target: ChaosTarget::Role(Role::Ids) },
            OperatorRequest::Chaos { target: ChaosTarget::Role(Role::Ids) }.into(),
        ),
        (OldNodeRequest::Enqueue(vec![item.clone()]), NodeRequest::Enqueue(vec![item])),
        (
            OldNodeRequest::Revoke { client: "carol/phone".into() },
            OperatorRequest::Revoke { client: "carol/phone".into() }.into(),
        ),
        (
            OldNodeRequest::Spend { ticket: ticket.clone(), bind: [8; 32] },
            Spend { ticket, bind: [8; 32] }.into(),
        ),
        (OldNodeRequest::Raft(vec![call.clone()]), ReplicationRequest::Raft(vec![call]).into()),
        (OldNodeRequest::ShardStatus, ReplicationRequest::ShardStatus.into()),
    ];
    assert_eq!(pairs.len(), 8, "version 4 has 8 node requests");
    for (old, new) in pairs {
        same(old, new);
    }
    // Indexes 8 to 11 came later, with the cluster map (decision D15):
    // ClusterMap, Join, Move, RemoveNode; old ones keep their bytes.
    assert!(decode::<NodeRequest>(&[12]).is_err(), "index 12 is no node request");
}

/// A replica move's report as the first elastic-cluster nodes sent it,
/// with `done: bool` where [`MoveStep`] is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct OldShardMove {
    role: Role,
    shard: u16,
    add: Option<String>,
    remove: Option<String>,
    done: bool,
}

#[test]
fn a_move_report_keeps_the_bytes_of_done_as_a_flag() {
    for (done, step) in [(false, MoveStep::Begin), (true, MoveStep::Done)] {
        let old = OldShardMove {
            role: Role::Ods,
            shard: 3,
            add: Some("n4".into()),
            remove: Some("n1".into()),
            done,
        };
        let new = ShardMove {
            role: Role::Ods,
            shard: 3,
            add: Some("n4".into()),
            remove: Some("n1".into()),
            step,
        };
        assert_eq!(encode(&old).unwrap(), encode(&new).unwrap());
        assert_eq!(decode::<ShardMove>(&encode(&old).unwrap()).unwrap(), new);
    }
}
