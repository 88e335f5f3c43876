//! The data dir's layout version, and the migration of older layouts, run
//! once when a node opens its storage and before any role serves.
//!
//! Layouts:
//! - 0: records stored as their bare encoding (every mlsd before this one).
//!   No `layout` key in the `meta` column family.
//! - 1: every structured record starts with its format version
//!   ([`crate::record`]).
//! - 2: each queued envelope (ODS `q/`) starts with the serial of the
//!   delivery capability it came with; envelopes queued before carry 0.
//!   Every mailbox opened before gets its legacy capability (its id as the
//!   token, [`mlsd_roles::ods::caps::grant_legacy`]), so groups and KeyPackages
//!   of protocol version 1 keep delivering.
//! - 3: every key of a role lives under its shard's two-byte prefix
//!   ([`crate::replica`]). An older data dir moves under shard 0: only a
//!   one-node cluster with one shard per role can take it (`upgrade` is
//!   told whether that is so), since the keys of shard 0 must be all of
//!   them, on every replica.
//!
//! The migration from 0 walks each structured record's key range in batches;
//! each batch also moves a cursor, in the same atomic write, so a node killed
//! mid-migration resumes where it stopped and never tags a record twice. A
//! value that does not decode as its layout-0 type is set aside
//! ([`record::quarantine`]) rather than dropped: requests that need it are
//! refused by name, the role serves the rest, and the operator still has the
//! bytes. A data dir of a newer layout is refused before anything is served.

use mlsd_transport::protocol::SealedRoster;
use mlsd_transport::Role;

use crate::storage::{Batch, Space, Store, StoreError};
use mlsd_roles::cs::KpRecord;
use mlsd_roles::ids::{group::GroupRecord, kept::KeptSend};
use mlsd_roles::ods::MailboxRecord;
use mlsd_roles::r#as::Record as BindingRecord;
use mlsd_roles::record::{quarantine, tag_legacy};
use mlsd_roles::sds::BlobRecord;

/// The layout this binary writes and reads.
pub const LAYOUT: u32 = 3;

const LAYOUT_KEY: &[u8] = b"layout";
const CURSOR_KEY: &[u8] = b"layout/cursor";
/// Records converted per atomic write.
const BATCH: usize = 256;

/// What a step does to each record of its key range.
#[derive(Clone, Copy)]
enum Change {
    /// Rewrites the value in place: its new form, or `None` when it does
    /// not decode (it is then set aside).
    Convert(fn(&[u8]) -> Option<Vec<u8>>),
    /// Leaves the record as it is and adds to the batch records derived
    /// from its key; false when the key is not what the range should hold
    /// (logged, nothing written).
    Derive(fn(&[u8], &mut Batch) -> bool),
}
use Change::{Convert, Derive};

/// Every conversion, in the order the migration walks them (the cursor
/// names a position in this list): the layout that introduced it (it runs
/// on data dirs of older layouts), the key range and how a value changes.
const STEPS: &[(u32, Role, &[u8], Change)] = &[
    (1, Role::As, b"b/", Convert(tag_legacy::<BindingRecord>)),
    (1, Role::Cs, b"k/", Convert(tag_legacy::<KpRecord>)),
    (1, Role::Cs, b"l/", Convert(tag_legacy::<KpRecord>)),
    (1, Role::Ids, b"g/", Convert(tag_legacy::<GroupRecord>)),
    (1, Role::Ids, b"r/", Convert(tag_legacy::<SealedRoster>)),
    (1, Role::Ids, b"k/", Convert(tag_legacy::<KeptSend>)),
    (1, Role::Ods, b"m/", Convert(tag_legacy::<MailboxRecord>)),
    (1, Role::Sds, b"b/", Convert(tag_legacy::<BlobRecord>)),
    (2, Role::Ods, b"q/", Convert(serial_unknown)),
    (2, Role::Ods, b"m/", Derive(mlsd_roles::ods::caps::grant_legacy)),
];

/// A queued envelope of layout 1 as layout 2 keeps it: capability serial 0.
fn serial_unknown(v: &[u8]) -> Option<Vec<u8>> {
    Some([&[0u8; 8][..], v].concat())
}

/// Why storage could not be brought to [`LAYOUT`].
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// A newer mlsd wrote this data dir; this one would misread it.
    #[error(
        "the data dir has layout {found}, newer than this mlsd's {LAYOUT}: run the newer mlsd"
    )]
    Newer {
        /// The layout found.
        found: u32,
    },
    /// Data written before sharding, on a cluster that shards it.
    #[error(
        "the data dir holds data of layout {found}, written before sharding: serve it from a \
         one-node cluster with `[cluster] shards = 1` (moving it into a sharded cluster is not \
         supported)"
    )]
    Unsharded {
        /// The layout found.
        found: u32,
    },
    /// The `layout` record itself is not a layout number.
    #[error("the data dir's layout record is unreadable")]
    Corrupt,
    /// Storage failed; nothing of the failed batch was applied.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What [`upgrade`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// The layout found (equal to [`LAYOUT`] when there was nothing to do).
    pub from: u32,
    /// Records converted.
    pub converted: u64,
    /// Records that did not decode and were set aside.
    pub set_aside: u64,
    /// Keys moved under shard 0's prefix (layout 3).
    pub moved: u64,
}

/// Keys moved under a shard prefix per atomic write (layout 3).
const MOVE_BATCH: usize = 512;

/// Whether any role keyspace holds a key (a data dir that is not new).
fn holds_data(store: &dyn Store) -> Result<bool, StoreError> {
    for role in Role::ALL {
        if !store.scan_from(Space::Role(role), &[], &[], 1)?.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Layout 3: every key of every role under shard 0's prefix, in batches.
/// Legacy keys all start with a letter, after every prefixed key, so each
/// batch takes the first keys at or after `[0, 1]` and the walk resumes by
/// itself after a kill.
fn move_under_shard_zero(store: &dyn Store, done: &mut Upgrade) -> Result<(), StoreError> {
    for role in Role::ALL {
        let space = Space::Role(role);
        loop {
            let rows = store.scan_from(space, &[], &[0, 1], MOVE_BATCH)?;
            if rows.is_empty() {
                break;
            }
            let mut b = Batch::new();
            for (k, v) in rows {
                b.put(space, [&[0u8, 0][..], &k].concat(), v);
                b.delete(space, k);
                done.moved += 1;
            }
            store.write(b)?;
        }
    }
    Ok(())
}

/// Brings `store` to [`LAYOUT`], converting records of an older layout.
/// `one_shard` says whether this node's cluster is one node with one shard
/// per role, the only one that may take data of a layout before 3.
pub fn upgrade(store: &dyn Store, one_shard: bool) -> Result<Upgrade, LayoutError> {
    let from = match store.get(Space::Meta, LAYOUT_KEY)? {
        None => 0,
        Some(v) => u32::from_be_bytes(v.try_into().map_err(|_| LayoutError::Corrupt)?),
    };
    let mut done = Upgrade { from, ..Upgrade::default() };
    if from > LAYOUT {
        return Err(LayoutError::Newer { found: from });
    }
    if from == LAYOUT {
        return Ok(done);
    }
    if from < 3 && !one_shard && holds_data(store)? {
        return Err(LayoutError::Unsharded { found: from });
    }
    let (mut step, mut after) = match store.get(Space::Meta, CURSOR_KEY)? {
        Some(v) if v.len() >= 4 => {
            (u32::from_be_bytes([v[0], v[1], v[2], v[3]]) as usize, Some(v[4..].to_vec()))
        }
        Some(_) => return Err(LayoutError::Corrupt),
        None => (0, None),
    };
    while let Some(&(since, role, prefix, change)) = STEPS.get(step) {
        if from >= since {
            (step, after) = (step + 1, None);
            continue;
        }
        let space = Space::Role(role);
        let start = match &after {
            // The first key after the last one converted.
            Some(last) => [last.as_slice(), &[0]].concat(),
            None => prefix.to_vec(),
        };
        let rows = store.scan_from(space, prefix, &start, BATCH)?;
        let mut b = Batch::new();
        for (k, v) in &rows {
            match change {
                Convert(convert) => match convert(v) {
                    Some(tagged) => {
                        done.converted += 1;
                        b.put(space, k.clone(), tagged);
                    }
                    None => {
                        done.set_aside += 1;
                        tracing::error!(%role, from, "a stored record does not decode; set aside");
                        b.put(space, k.clone(), quarantine(v));
                    }
                },
                Derive(derive) => {
                    if derive(k, &mut b) {
                        done.converted += 1;
                    } else {
                        tracing::error!(%role, from, "a stored key is not of its range's form");
                    }
                }
            }
        }
        match rows.last() {
            Some((k, _)) if rows.len() == BATCH => after = Some(k.clone()),
            _ => (step, after) = (step + 1, None),
        }
        let mut cursor = (step as u32).to_be_bytes().to_vec();
        cursor.extend_from_slice(after.as_deref().unwrap_or_default());
        b.put(Space::Meta, CURSOR_KEY.to_vec(), cursor);
        store.write(b)?;
    }
    if from < 3 {
        move_under_shard_zero(store, &mut done)?;
    }
    let mut b = Batch::new();
    b.put(Space::Meta, LAYOUT_KEY.to_vec(), LAYOUT.to_be_bytes().to_vec());
    b.delete(Space::Meta, CURSOR_KEY.to_vec());
    store.write(b)?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{RocksStore, View};
    use mlsd_roles::record;
    use mlsd_transport::codec;
    use mlsd_transport::protocol::ClusterError;

    fn binding(n: u64) -> BindingRecord {
        BindingRecord {
            binding: mlsd_transport::protocol::Binding {
                client: format!("u{n:04}/phone"),
                signature_key: vec![1; 32],
                issued_at: 1,
                expires_at: 2,
                serial: n,
            },
            revoked_at: None,
        }
    }

    const AS: Space = Space::Role(Role::As);

    /// `k` where layout 3 keeps it: under shard 0.
    fn z(k: impl AsRef<[u8]>) -> Vec<u8> {
        [&[0u8, 0][..], k.as_ref()].concat()
    }

    #[test]
    fn layout_0_records_are_tagged_in_batches_and_unreadable_ones_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksStore::open(dir.path(), false).unwrap();
        let mut b = Batch::new();
        // More than one batch, so the cursor moves within a key range.
        for n in 0..600 {
            b.put(AS, format!("b/u{n:04}/phone"), codec::encode(&binding(n)).unwrap());
        }
        b.put(AS, "b/u0300/torn", vec![9, 9, 9]);
        b.put(AS, "serial", 600u64.to_be_bytes().to_vec());
        store.write(b).unwrap();

        let up = upgrade(&store, true).unwrap();
        assert_eq!(up, Upgrade { from: 0, converted: 600, set_aside: 1, moved: 602 });
        let get = |k: &str| store.get(AS, &z(k)).unwrap().unwrap();
        let r: BindingRecord = record::decode(&get("b/u0599/phone")).unwrap();
        assert_eq!(r.binding.serial, 599);
        assert!(matches!(
            record::decode::<BindingRecord>(&get("b/u0300/torn")),
            Err(mlsd_transport::WireError::Cluster(ClusterError::Unreadable(_)))
        ));
        assert_eq!(get("b/u0300/torn")[1..], [9, 9, 9], "the bytes are kept");
        assert_eq!(get("serial"), 600u64.to_be_bytes(), "raw values are left alone");
        // Done once: a second open converts nothing (and tags nothing twice).
        assert_eq!(upgrade(&store, true).unwrap(), Upgrade { from: LAYOUT, ..Upgrade::default() });
        assert_eq!(
            record::decode::<BindingRecord>(&get("b/u0000/phone")).unwrap().binding.serial,
            0
        );
    }

    #[test]
    fn an_interrupted_migration_resumes_after_its_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksStore::open(dir.path(), false).unwrap();
        let mut b = Batch::new();
        for n in 0..300 {
            b.put(AS, format!("b/u{n:04}/phone"), codec::encode(&binding(n)).unwrap());
        }
        // As if a node died after its first batch: 256 tagged, cursor on the last.
        let first: Vec<_> = (0..BATCH as u64).collect();
        for &n in &first {
            b.put(AS, format!("b/u{n:04}/phone"), record::encode(&binding(n)).unwrap());
        }
        let mut cursor = 0u32.to_be_bytes().to_vec();
        cursor.extend_from_slice(format!("b/u{:04}/phone", BATCH - 1).as_bytes());
        b.put(Space::Meta, CURSOR_KEY.to_vec(), cursor);
        store.write(b).unwrap();

        let up = upgrade(&store, true).unwrap();
        assert_eq!((up.converted, up.set_aside), (300 - BATCH as u64, 0));
        for n in [0, 255, 256, 299] {
            let v = store.get(AS, &z(format!("b/u{n:04}/phone"))).unwrap().unwrap();
            assert_eq!(record::decode::<BindingRecord>(&v).unwrap().binding.serial, n);
        }
    }

    #[test]
    fn layout_1_queued_envelopes_get_serial_0_and_nothing_else_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(RocksStore::open(dir.path(), false).unwrap());
        let ods = Space::Role(Role::Ods);
        let tagged = record::encode(&binding(1)).unwrap();
        let mut b = Batch::new();
        b.put(Space::Meta, LAYOUT_KEY.to_vec(), 1u32.to_be_bytes().to_vec());
        b.put(AS, "b/u0001/phone", tagged.clone());
        b.put(ods, "q/mailbox/1", vec![7; 512]);
        let mut mailbox_key = b"m/".to_vec();
        mailbox_key.extend_from_slice(&[9; 32]);
        b.put(ods, mailbox_key, vec![1, 2, 3]);
        store.write(b).unwrap();
        let up = upgrade(store.as_ref(), true).unwrap();
        assert_eq!((up.from, up.converted, up.set_aside), (1, 2, 0));
        let q = store.get(ods, &z("q/mailbox/1")).unwrap().unwrap();
        assert_eq!((&q[..8], &q[8..]), (&[0u8; 8][..], &[7u8; 512][..]));
        assert_eq!(
            store.get(AS, &z("b/u0001/phone")).unwrap().unwrap(),
            tagged,
            "not tagged twice"
        );
        // The mailbox that existed delivers through its legacy capability,
        // its id as the token.
        let shard = crate::replica::ShardId { role: Role::Ods, index: 0 };
        let view = crate::replica::ShardView { store: store.clone(), shard };
        let ctx = mlsd_roles::contract::RoleContext {
            node: "t",
            store: &view,
            now: std::time::SystemTime::now(),
            random: zeroize::Zeroizing::new([0; 32]),
        };
        let target = mlsd_roles::ods::caps::check(&[9, 9], &[9; 32], &ctx).unwrap().unwrap();
        assert_eq!((target.mailbox, target.serial, target.push_key), ([9; 32], 0, None));
        assert_eq!(upgrade(store.as_ref(), true).unwrap().from, LAYOUT);
    }

    #[test]
    fn data_from_before_sharding_is_refused_by_a_sharded_cluster_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksStore::open(dir.path(), false).unwrap();
        let mut b = Batch::new();
        b.put(Space::Meta, LAYOUT_KEY.to_vec(), 2u32.to_be_bytes().to_vec());
        b.put(AS, "b/a/phone", vec![7, 1, 2]);
        store.write(b).unwrap();
        assert!(matches!(upgrade(&store, false), Err(LayoutError::Unsharded { found: 2 })));
        assert_eq!(store.get(AS, b"b/a/phone").unwrap().unwrap(), [7, 1, 2]);
        // A new data dir has nothing to move, whatever the cluster.
        let fresh = tempfile::tempdir().unwrap();
        let fresh = RocksStore::open(fresh.path(), false).unwrap();
        assert_eq!(upgrade(&fresh, false).unwrap().from, 0);
    }

    #[test]
    fn a_newer_layout_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksStore::open(dir.path(), false).unwrap();
        let mut b = Batch::new();
        b.put(Space::Meta, LAYOUT_KEY.to_vec(), 7u32.to_be_bytes().to_vec());
        b.put(AS, "b/a/phone", vec![7, 1, 2]);
        store.write(b).unwrap();
        assert!(matches!(upgrade(&store, true), Err(LayoutError::Newer { found: 7 })));
        assert_eq!(store.get(AS, b"b/a/phone").unwrap().unwrap(), [7, 1, 2]);
    }
}
