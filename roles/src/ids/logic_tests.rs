//! Unit tests of the IDS's logic as its shells run it ([`GroupLogic`],
//! [`idle_groups`]) on an in-memory store, with a fixed clock: the copy
//! budget, the fan-out as the decision's effect, what a fan-out's end
//! keeps, and the sweep.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mlsd_transport::protocol::ids::send_mac;
use mlsd_transport::protocol::{ClusterError, IdsRequest, IdsResponse, RosterMode};
use mlsd_transport::{Request, Response, WireError};

use super::fixtures::{send, Member, GID};
use super::logic::{forget_idle_entry, idle_groups, Collected, GroupLogic};
use super::plan::FanOut;
use crate::contract::{Decision, Effect, RoleContext, RoleLogic};
use crate::storage::{MemStore, Store};

/// Noon of `day` (days since 1970): a fixed clock.
fn noon(day: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(day * 24 * 3600 + 12 * 3600)
}

fn ctx(store: &MemStore, now: SystemTime) -> RoleContext<'_> {
    RoleContext { node: "t", store, now, random: zeroize::Zeroizing::new([7; 32]) }
}

fn create() -> Request {
    Request::Ids(IdsRequest::CreateGroup {
        group: GID.to_vec(),
        mode: RosterMode::Client,
        auth_key: [0; 32],
        roster: None,
    })
}

/// A send of a fresh application message under id `[id; 32]`.
fn message(member: &mut Member, id: u8) -> Request {
    let body = send(member.message(b"hello"), id, None);
    let mac = send_mac(&[0; 32], &body);
    Request::Ids(IdsRequest::Send { body: Box::new(body), mac })
}

/// Applies the decision's writes and returns its reply and fan-out.
fn applied(d: Decision, store: &MemStore) -> (Response, Option<FanOut>) {
    let (response, mut effects) = d.apply(store).unwrap();
    let fanout = match effects.pop() {
        Some(Effect::FanOut(f)) => Some(*f),
        Some(Effect::Stored { .. }) => panic!("the IDS stores no envelope"),
        None => None,
    };
    (response, fanout)
}

/// A group of `copies_per_second`, created on day 20,000.
fn created(copies_per_second: u32) -> (MemStore, GroupLogic) {
    let store = MemStore::new();
    let now = noon(20_000);
    let mut logic = GroupLogic::load(GID, copies_per_second, &ctx(&store, now)).unwrap();
    let (r, f) = applied(logic.handle(create(), None, &ctx(&store, now)), &store);
    assert_eq!(r, Response::Ids(IdsResponse::GroupCreated));
    assert!(f.is_none(), "a creation fans nothing out");
    (store, logic)
}

#[test]
fn an_accepted_send_is_a_fan_out_effect_written_first() {
    let (store, mut logic) = created(1000);
    let before = store.contents();
    let d = logic.handle(message(&mut Member::new(), 1), None, &ctx(&store, noon(20_000)));
    assert!(!d.writes.ops.is_empty(), "the accepted id is written before any copy leaves");
    let (r, f) = applied(d, &store);
    let f = f.expect("a fan-out");
    assert_eq!(f.plan.message_id, [1; 32]);
    assert_eq!(f.plan.copies(), 2, "the roster less the sender");
    assert_eq!(
        r,
        Response::Ids(IdsResponse::Sent { copies: 2 }),
        "what the fan-out answers when complete"
    );
    assert_ne!(store.contents(), before);
}

/// The group's copy budget: a send beyond it is refused with the time to
/// wait and changes nothing; the budget refills with the clock the context
/// gives, not the wall clock.
#[test]
fn a_send_beyond_the_copy_budget_waits_for_the_given_clock() {
    let (store, mut logic) = created(2);
    let mut alice = Member::new();
    let t0 = noon(20_000);
    let (r, _) = applied(logic.handle(message(&mut alice, 1), None, &ctx(&store, t0)), &store);
    assert_eq!(r, Response::Ids(IdsResponse::Sent { copies: 2 }));
    let before = store.contents();
    let d = logic.handle(message(&mut alice, 2), None, &ctx(&store, t0));
    assert!(
        matches!(
            d.response,
            Response::Error(WireError::Cluster(ClusterError::RateLimited { retry_after_ms }))
                if retry_after_ms > 0 && retry_after_ms <= 500
        ),
        "{:?}",
        d.response
    );
    assert!(d.writes.ops.is_empty() && d.effects.is_empty(), "a refused send changes nothing");
    assert_eq!(store.contents(), before);
    let later = t0 + Duration::from_secs(1);
    let (r, _) = applied(logic.handle(message(&mut alice, 2), None, &ctx(&store, later)), &store);
    assert_eq!(
        r,
        Response::Ids(IdsResponse::Sent { copies: 2 }),
        "a second later the budget has refilled"
    );
}

/// A fan-out that left copies missing is kept for its retry; a kept send's
/// complete retry forgets it.
#[test]
fn a_fan_out_with_missing_copies_is_kept_until_a_retry_completes() {
    let (store, mut logic) = created(1000);
    let req = message(&mut Member::new(), 1);
    let now = noon(20_000);
    let (_, f) = applied(logic.handle(req.clone(), None, &ctx(&store, now)), &store);
    let f = f.unwrap();
    let before = store.contents();
    let (w, room) =
        logic.fanout_ended(&f.plan.message_id, &f.keep, f.from_kept, true, &store).unwrap();
    assert!(room && w.ops.is_empty(), "a complete fan-out keeps nothing");
    let (w, room) =
        logic.fanout_ended(&f.plan.message_id, &f.keep, f.from_kept, false, &store).unwrap();
    assert!(room);
    store.write(w).unwrap();
    assert_ne!(store.contents(), before, "kept");
    // Within the accepted epochs its retry is served from the accepted id,
    // not the kept record, and leaves that in place.
    let (r, retry) = applied(logic.handle(req, None, &ctx(&store, now)), &store);
    assert_eq!(r, Response::Ids(IdsResponse::Sent { copies: 2 }));
    let retry = retry.unwrap();
    assert!(!retry.from_kept);
    let w = logic.fanout_ended(&retry.plan.message_id, &retry.keep, false, true, &store).unwrap();
    assert!(w.0.ops.is_empty());
    // Beyond them (the core serves it from the kept record, from_kept),
    // a complete retry forgets it.
    let forget =
        logic.fanout_ended(&retry.plan.message_id, &retry.keep, true, true, &store).unwrap();
    store.write(forget.0).unwrap();
    assert_eq!(store.contents(), before, "forgotten once a retry stored every copy");
}

/// Another group's request at this group's logic is a host defect: refused,
/// nothing written.
#[test]
fn another_groups_request_is_refused() {
    let (store, mut logic) = created(1000);
    let other = Request::Ids(IdsRequest::CreateGroup {
        group: b"another".to_vec(),
        mode: RosterMode::Client,
        auth_key: [0; 32],
        roster: None,
    });
    let d = logic.handle(other, None, &ctx(&store, noon(20_000)));
    assert!(
        matches!(d.response, Response::Error(WireError::Cluster(ClusterError::Internal(_)))),
        "{:?}",
        d.response
    );
    assert!(d.writes.ops.is_empty());
}

/// The sweep reads the day from the context: a group created on day 20,000
/// is not idle 10 days on with `idle_days` 30, and is 31 days on; collected,
/// nothing of it is left, and a stale index entry goes too.
#[test]
fn the_sweep_finds_a_group_idle_by_the_given_day_and_collects_it() {
    let empty = MemStore::new().contents();
    let (store, mut logic) = created(1000);
    assert!(idle_groups(&ctx(&store, noon(20_010)), 30, 8).unwrap().is_empty());
    let idle = idle_groups(&ctx(&store, noon(20_031)), 30, 8).unwrap();
    assert_eq!(idle.len(), 1);
    assert_eq!((idle[0].day, idle[0].group.as_slice(), idle[0].cutoff), (20_000, GID, 20_001));
    match logic.collect(idle[0].day, idle[0].cutoff, &store).unwrap() {
        Collected::Gone(w) => store.write(w).unwrap(),
        _ => panic!("an idle group is collected"),
    }
    assert_eq!(store.contents(), empty, "nothing of the group is left");
    // An entry whose group cannot be loaded is dropped by the one write.
    let (store, _logic) = created(1000);
    let idle = idle_groups(&ctx(&store, noon(20_031)), 30, 8).unwrap();
    let entry = idle.into_iter().next().unwrap().entry;
    store.write(forget_idle_entry(entry)).unwrap();
    assert!(idle_groups(&ctx(&store, noon(20_031)), 30, 8).unwrap().is_empty());
}
