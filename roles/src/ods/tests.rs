use super::*;
use crate::storage::{MemStore, Store, View};

use mlsd_transport::protocol::{shard_of, DeliveryCap};

const MAILBOX: MailboxId = [5; 32];
/// The token of the one capability [`ods_with_mailbox`] issues.
const TOKEN: [u8; 32] = [6; 32];

fn signer() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[1; 32])
}

/// `MAILBOX`'s signature over `op` with counter `n` seconds after `ctx.now`'s epoch.
fn auth<T: Serialize>(label: &str, op: &T, ctx: &RoleContext<'_>, n: u64) -> MailboxAuth {
    use ed25519_dalek::Signer;
    let counter = crate::sig::unix(ctx.now) * 1000 + n;
    let msg = signing_bytes(label, &(MAILBOX, counter, op));
    MailboxAuth { mailbox: MAILBOX, counter, signature: signer().sign(&msg).to_bytes().to_vec() }
}

fn issue(ods: &mut OdsLogic, tokens: Vec<[u8; 32]>, n: u64, ctx: &RoleContext<'_>) -> Decision {
    let a = auth(LABEL_ISSUE, &(&tokens, &None::<[u8; 32]>), ctx, n);
    let req = Request::Ods(OdsRequest::IssueCapabilities { auth: a, tokens, push_key: None });
    ods.handle(req, None, ctx)
}

/// An ODS with mailbox `MAILBOX` open in `store` and capability `TOKEN` issued.
fn ods_with_mailbox(ctx: &RoleContext<'_>, store: &dyn Store) -> OdsLogic {
    let mut ods = OdsLogic::new(OdsSettings {
        max_queue: 100,
        max_fetch: 10,
        page_bytes: 1 << 20,
        max_capabilities: 3,
    });
    let auth_key = signer().verifying_key().to_bytes().to_vec();
    let open = Request::Ods(OdsRequest::OpenMailbox { mailbox: MAILBOX, auth_key, push: None });
    assert_eq!(
        ods.handle(open, None, ctx).applied(store),
        Response::Ods(OdsResponse::MailboxOpened)
    );
    let r = issue(&mut ods, vec![TOKEN], 1, ctx).applied(store);
    assert_eq!(r, Response::Ods(OdsResponse::CapabilitiesIssued { serials: vec![1] }));
    ods
}

fn cap(token: [u8; 32]) -> DeliveryCap {
    DeliveryCap { shard: shard_of(&MAILBOX), token }
}

/// A one-byte copy through `TOKEN` with delivery id `[d; 32]`.
fn item(d: u8) -> EnqueueItem {
    EnqueueItem { cap: cap(TOKEN), delivery_id: [d; 32], envelope: vec![d] }
}

/// Every key and value of the ODS's space.
fn dump(store: &dyn Store) -> Vec<(Vec<u8>, Vec<u8>)> {
    store.scan_prefix(SPACE, b"", 10_000).unwrap()
}

/// Every signed mailbox request sent twice with the same frame (a retry
/// after a lost answer): the second gets the first answer (a revocation
/// repeated revokes none, the tokens being gone) and writes nothing
/// new; a request older than the last one is a replay.
#[test]
fn every_mailbox_request_repeated_gets_its_answer_again_and_changes_nothing() {
    let store = MemStore::new();
    let ctx = RoleContext {
        node: "t",
        store: &store,
        now: std::time::SystemTime::now(),
        random: zeroize::Zeroizing::new([0; 32]),
    };
    let mut ods = ods_with_mailbox(&ctx, &store);
    let r = RoleLogic::enqueue(&mut ods, vec![item(1), item(2)], &ctx).applied(&store);
    assert_eq!(
        r,
        Response::Node(NodeResponse::Enqueued(vec![
            EnqueueResult::Stored { seq: 1 },
            EnqueueResult::Stored { seq: 2 }
        ]))
    );
    let tokens = vec![[7; 32], [8; 32]];
    let open = OdsRequest::OpenMailbox {
        mailbox: MAILBOX,
        auth_key: signer().verifying_key().to_bytes().to_vec(),
        push: None,
    };
    let requests = [
        (open, None),
        (
            OdsRequest::Fetch {
                auth: auth(LABEL_FETCH, &(0u64, 10u32), &ctx, 10),
                after: 0,
                limit: 10,
            },
            None,
        ),
        (OdsRequest::Subscribe { auth: auth(LABEL_SUBSCRIBE, &0u64, &ctx, 11), after: 0 }, None),
        (
            OdsRequest::IssueCapabilities {
                auth: auth(LABEL_ISSUE, &(&tokens, &None::<[u8; 32]>), &ctx, 12),
                tokens: tokens.clone(),
                push_key: None,
            },
            None,
        ),
        (
            OdsRequest::RevokeCapabilities {
                auth: auth(LABEL_REVOKE, &tokens, &ctx, 13),
                tokens: tokens.clone(),
            },
            Some(Response::Ods(OdsResponse::CapabilitiesRevoked { revoked: 0 })),
        ),
        (OdsRequest::Ack { auth: auth(LABEL_ACK, &1u64, &ctx, 14), up_to: 1 }, None),
    ];
    for (req, repeated) in requests {
        let name = format!("{req:?}").chars().take(30).collect::<String>();
        let first = ods.handle(Request::Ods(req.clone()), None, &ctx).applied(&store);
        assert!(!matches!(first, Response::Error(_)), "{name}: {first:?}");
        let after_first = dump(&store);
        let again = ods.handle(Request::Ods(req), None, &ctx).applied(&store);
        assert_eq!(again, repeated.unwrap_or(first), "{name}");
        assert_eq!(dump(&store), after_first, "{name}: the repeat wrote something new");
    }
    // The fetch of counter 10 is older than the ack's 14: a replay.
    let old = OdsRequest::Fetch {
        auth: auth(LABEL_FETCH, &(0u64, 10u32), &ctx, 10),
        after: 0,
        limit: 10,
    };
    let r = ods.handle(Request::Ods(old), None, &ctx).applied(&store);
    assert_eq!(r, Response::Error(WireError::Auth(AuthError::Replayed)));
}

#[test]
fn a_copy_without_a_live_capability_changes_nothing() {
    let store = MemStore::new();
    let ctx = RoleContext {
        node: "t",
        store: &store,
        now: std::time::SystemTime::now(),
        random: zeroize::Zeroizing::new([0; 32]),
    };
    let mut ods = ods_with_mailbox(&ctx, &store);
    let before = dump(&store);
    let forged = |token, shard| EnqueueItem {
        cap: DeliveryCap { shard, token },
        delivery_id: [1; 32],
        envelope: vec![1],
    };
    // A guessed token, and the real one with another shard's hint.
    let items = vec![forged([9; 32], shard_of(&MAILBOX)), forged(TOKEN, [0, 0])];
    let r = RoleLogic::enqueue(&mut ods, items, &ctx).applied(&store);
    assert_eq!(r, Response::Node(NodeResponse::Enqueued(vec![EnqueueResult::NoCapability; 2])));
    // The sweep of old delivery weeks is the only write, and it has nothing to drop.
    assert_eq!(dump(&store), before);

    // Revoked by the owner: refused from then on; the stored copy stays.
    let r = RoleLogic::enqueue(&mut ods, vec![item(1)], &ctx).applied(&store);
    assert_eq!(r, Response::Node(NodeResponse::Enqueued(vec![EnqueueResult::Stored { seq: 1 }])));
    let a = auth(LABEL_REVOKE, &vec![TOKEN, [9; 32]], &ctx, 2);
    let revoke = OdsRequest::RevokeCapabilities { auth: a, tokens: vec![TOKEN, [9; 32]] };
    let r = ods.handle(Request::Ods(revoke), None, &ctx).applied(&store);
    assert_eq!(r, Response::Ods(OdsResponse::CapabilitiesRevoked { revoked: 1 }));
    let before = dump(&store);
    let r = RoleLogic::enqueue(&mut ods, vec![item(2)], &ctx).applied(&store);
    assert_eq!(r, Response::Node(NodeResponse::Enqueued(vec![EnqueueResult::NoCapability])));
    assert_eq!(dump(&store), before);
    let page = ods.page(&MAILBOX, 0, 10, &ctx).unwrap();
    assert_eq!(page, vec![Delivered { seq: 1, via: 1, envelope: vec![1] }]);
}

#[test]
fn capabilities_are_bounded_per_mailbox_and_reissue_is_idempotent() {
    let store = MemStore::new();
    let ctx = RoleContext {
        node: "t",
        store: &store,
        now: std::time::SystemTime::now(),
        random: zeroize::Zeroizing::new([0; 32]),
    };
    let mut ods = ods_with_mailbox(&ctx, &store);
    // The same token again keeps its serial; new ones get the next ones.
    let r = issue(&mut ods, vec![TOKEN, [7; 32], [8; 32]], 2, &ctx).applied(&store);
    assert_eq!(r, Response::Ods(OdsResponse::CapabilitiesIssued { serials: vec![1, 2, 3] }));
    // A fourth would exceed max_capabilities = 3: refused, nothing written.
    let before = dump(&store);
    let r = issue(&mut ods, vec![[10; 32]], 3, &ctx).applied(&store);
    assert_eq!(r, Response::Error(WireError::Ods(OdsError::TooManyCapabilities { live: 3 })));
    assert_eq!(dump(&store), before);
    // No mailbox id or push key is stored in the clear next to a token.
    assert!(dump(&store)
        .iter()
        .all(|(k, v)| !k.starts_with(b"c/") || !v.windows(32).any(|w| w == MAILBOX)));
}

#[test]
fn a_copy_repeated_inside_one_batch_gets_its_first_sequence_number() {
    let store = MemStore::new();
    let ctx = RoleContext {
        node: "t",
        store: &store,
        now: std::time::SystemTime::now(),
        random: zeroize::Zeroizing::new([0; 32]),
    };
    let mut ods = ods_with_mailbox(&ctx, &store);
    let r = RoleLogic::enqueue(&mut ods, vec![item(1), item(2), item(1)], &ctx).applied(&store);
    assert_eq!(
        r,
        Response::Node(NodeResponse::Enqueued(vec![
            EnqueueResult::Stored { seq: 1 },
            EnqueueResult::Stored { seq: 2 },
            EnqueueResult::Stored { seq: 1 },
        ]))
    );
}

#[test]
fn delivery_records_last_into_the_next_week_and_are_then_dropped() {
    let store = MemStore::new();
    let day = std::time::Duration::from_secs(24 * 3600);
    let t0 = std::time::UNIX_EPOCH + day * (7 * 2900 + 1);
    let at = |t: std::time::SystemTime| RoleContext {
        node: "t",
        store: &store,
        now: t,
        random: zeroize::Zeroizing::new([0; 32]),
    };
    let mut ods = ods_with_mailbox(&at(t0), &store);
    // A record of the older, unbounded form is dropped with the first batch.
    let mut legacy = Batch::new();
    legacy.put(SPACE, b"d/legacy".to_vec(), 1u64.to_be_bytes().to_vec());
    store.write(legacy).unwrap();
    let enqueue =
        |ods: &mut OdsLogic, t| RoleLogic::enqueue(ods, vec![item(1)], &at(t)).applied(&store);
    let stored = |seq| Response::Node(NodeResponse::Enqueued(vec![EnqueueResult::Stored { seq }]));
    assert_eq!(enqueue(&mut ods, t0), stored(1));
    assert_eq!(store.get(SPACE, b"d/legacy").unwrap(), None);
    // A retry the same week or the next is recognized: nothing stored twice.
    assert_eq!(enqueue(&mut ods, t0 + day), stored(1));
    assert_eq!(enqueue(&mut ods, t0 + day * 7), stored(1));
    // Two weeks on, the record is gone (the week dropped as a whole), so
    // the ODS holds no delivery history beyond that; a retry this late
    // would be stored again.
    assert_eq!(enqueue(&mut ods, t0 + day * 14), stored(2));
    let week0 = week_of(t0);
    assert!(store.scan_prefix(SPACE, &week_prefix(week0), 10).unwrap().is_empty());
    assert_eq!(store.scan_prefix(SPACE, &week_prefix(week0 + 2), 10).unwrap().len(), 1);
}

#[test]
fn pages_are_cut_by_bytes_and_every_envelope_is_read_once_in_order() {
    let store = MemStore::new();
    let ctx = RoleContext {
        node: "t",
        store: &store,
        now: std::time::SystemTime::now(),
        random: zeroize::Zeroizing::new([0; 32]),
    };
    let mut ods = ods_with_mailbox(&ctx, &store);
    ods.settings.page_bytes = mlsd_transport::protocol::ods::page_budget(1 << 20);
    ods.settings.max_fetch = 256;
    let items: Vec<EnqueueItem> = (0..12u8)
        .map(|d| EnqueueItem {
            cap: cap(TOKEN),
            delivery_id: [d; 32],
            envelope: vec![d; MAX_ENVELOPE],
        })
        .collect();
    let r = RoleLogic::enqueue(&mut ods, items, &ctx).applied(&store);
    assert!(matches!(r, Response::Node(NodeResponse::Enqueued(_))));
    let (mut after, mut seen, mut pages) = (0, Vec::new(), 0);
    loop {
        let page = ods.page(&MAILBOX, after, 256, &ctx).unwrap();
        if page.is_empty() {
            break;
        }
        let bytes: usize = page.iter().map(mlsd_transport::protocol::ods::page_cost).sum();
        assert!(bytes <= ods.settings.page_bytes, "page of {bytes} bytes");
        after = page.last().unwrap().seq;
        seen.extend(page.into_iter().map(|d| (d.seq, d.envelope[0])));
        pages += 1;
    }
    assert_eq!(seen, (1..=12u64).map(|s| (s, s as u8 - 1)).collect::<Vec<_>>());
    assert_eq!(pages, 4, "three of the largest envelopes fit a 1 MiB page");
}
