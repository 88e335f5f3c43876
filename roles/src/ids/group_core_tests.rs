//! Unit tests of the IDS group core ([`GroupCore`]) on an in-memory store,
//! with real MLS messages: one commit per epoch, retries recognized, and
//! every refusal leaving storage as it was.

use mlsd_transport::protocol::{BadFrame, IdsError, RosterMode, SendBody};

use mlsd_transport::protocol::ids::send_mac;
use mlsd_transport::WireError;

use super::group::{parse_idle_key, Accepted, GroupCore, IDLE_INDEX};
use crate::storage::{Batch, MemStore, Store, View};

use super::fixtures::{send, Member, GID};

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
    assert_eq!(a.fanout.plan.recipients.len(), 2);
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
    assert_eq!(again.fanout.plan.message_id, [1; 32]);
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
