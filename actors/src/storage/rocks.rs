//! The RocksDB implementation of [`Store`]: one database per node, one column
//! family per [`Space`], synced WAL writes when asked.

use std::collections::BTreeMap;
use std::path::Path;

use mlsd_transport::Role;
use rocksdb::{
    BlockBasedOptions, ColumnFamilyDescriptor, DBCompressionType, Options, WriteOptions, DB,
};

use super::{Batch, Entries, Op, Space, Store, StoreError, View};

/// The RocksDB store of one node.
pub struct RocksStore {
    db: DB,
    sync: bool,
}

fn db_err(e: rocksdb::Error) -> StoreError {
    StoreError::Db(e.into_string())
}

impl RocksStore {
    /// Opens (creating if needed) the database in `dir`. `sync` makes every
    /// write wait for the WAL to reach the disk.
    pub fn open(dir: &Path, sync: bool) -> Result<Self, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let cfs = Space::all().map(|s| ColumnFamilyDescriptor::new(s.name(), space_options(s)));
        let db = DB::open_cf_descriptors(&opts, dir, cfs).map_err(db_err)?;
        Ok(RocksStore { db, sync })
    }

    fn cf(&self, space: Space) -> Result<&rocksdb::ColumnFamily, StoreError> {
        self.db
            .cf_handle(space.name())
            .ok_or_else(|| StoreError::Db(format!("missing column family {}", space.name())))
    }
}

/// Per-keyspace tuning. Point lookups dominate every role (the ODS checks a
/// delivery id per copy, almost always absent), so keys are filtered by bloom
/// filters in the memtable and in table files: a miss then costs a few hash
/// probes instead of a skiplist or index search. The ODS and SDS store
/// ciphertext, which does not compress: compressing their table files would
/// only burn the CPU the fan-out needs.
fn space_options(space: Space) -> Options {
    let mut o = Options::default();
    let mut table = BlockBasedOptions::default();
    table.set_bloom_filter(10.0, false);
    o.set_block_based_table_factory(&table);
    o.set_memtable_whole_key_filtering(true);
    o.set_memtable_prefix_bloom_ratio(0.1);
    if matches!(space, Space::Role(Role::Ods | Role::Sds)) {
        o.set_compression_type(DBCompressionType::None);
    }
    o
}

/// Every entry of every keyspace: column family name and key, to value.
pub type Contents = BTreeMap<(String, Vec<u8>), Vec<u8>>;

/// Reads every key and value of the node database in `dir` through a
/// read-only open, which takes no lock and writes nothing, so it works beside
/// a running node. Exists so an operator can inspect a node's storage and the
/// authorization tests can show that a refused request left it unchanged.
pub fn read_all(dir: &Path) -> Result<Contents, StoreError> {
    let names: Vec<&str> = Space::all().map(Space::name).collect();
    let db = DB::open_cf_for_read_only(&Options::default(), dir, &names, false).map_err(db_err)?;
    let mut out = Contents::new();
    for name in names {
        let cf = db
            .cf_handle(name)
            .ok_or_else(|| StoreError::Db(format!("missing column family {name}")))?;
        for item in db.iterator_cf(cf, rocksdb::IteratorMode::Start) {
            let (k, v) = item.map_err(db_err)?;
            out.insert((name.to_string(), k.to_vec()), v.to_vec());
        }
    }
    Ok(out)
}

impl View for RocksStore {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.get_cf(self.cf(space)?, key).map_err(db_err)
    }

    fn scan_from(
        &self,
        space: Space,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<Entries, StoreError> {
        let mode = rocksdb::IteratorMode::From(start, rocksdb::Direction::Forward);
        prefixed_run(self.db.iterator_cf(self.cf(space)?, mode), prefix, limit)
    }
}

/// The first `limit` entries of `items` (an iterator from the scan's start)
/// whose keys start with `prefix`.
fn prefixed_run<I>(items: I, prefix: &[u8], limit: usize) -> Result<Entries, StoreError>
where
    I: Iterator<Item = Result<(Box<[u8]>, Box<[u8]>), rocksdb::Error>>,
{
    let mut out = Vec::new();
    for item in items {
        let (k, v) = item.map_err(db_err)?;
        if !k.starts_with(prefix) || out.len() >= limit {
            break;
        }
        out.push((k.to_vec(), v.to_vec()));
    }
    Ok(out)
}

/// A [`RocksStore`] as it was when the snapshot was taken.
struct AtOnce<'a> {
    store: &'a RocksStore,
    snap: rocksdb::SnapshotWithThreadMode<'a, DB>,
}

impl View for AtOnce<'_> {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.snap.get_cf(self.store.cf(space)?, key).map_err(db_err)
    }

    fn scan_from(
        &self,
        space: Space,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<Entries, StoreError> {
        let mode = rocksdb::IteratorMode::From(start, rocksdb::Direction::Forward);
        prefixed_run(self.snap.iterator_cf(self.store.cf(space)?, mode), prefix, limit)
    }
}

impl Store for RocksStore {
    fn read_at_once(
        &self,
        read: &mut dyn FnMut(&dyn View) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        read(&AtOnce { store: self, snap: self.db.snapshot() })
    }

    fn write(&self, batch: Batch) -> Result<(), StoreError> {
        self.write_with(batch, self.sync)
    }

    fn write_unsynced(&self, batch: Batch) -> Result<(), StoreError> {
        self.write_with(batch, false)
    }

    fn write_synced(&self, batch: Batch) -> Result<(), StoreError> {
        self.write_with(batch, true)
    }

    fn blocks(&self) -> bool {
        true
    }
}

impl RocksStore {
    fn write_with(&self, batch: Batch, sync: bool) -> Result<(), StoreError> {
        let mut wb = rocksdb::WriteBatch::default();
        for op in &batch.ops {
            match op {
                Op::Put { space, key, value } => wb.put_cf(self.cf(*space)?, key, value),
                Op::Delete { space, key } => wb.delete_cf(self.cf(*space)?, key),
                Op::DeleteRange { space, from, to } => {
                    wb.delete_range_cf(self.cf(*space)?, from, to)
                }
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.db.write_opt(wb, &wo).map_err(db_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlsd_transport::Role;

    #[test]
    fn batches_persist_across_reopen_and_spaces_are_separate() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = RocksStore::open(dir.path(), true).unwrap();
            let mut b = Batch::new();
            b.put(Space::Role(Role::Ods), b"k1".to_vec(), b"v1".to_vec());
            b.put(Space::Role(Role::Ods), b"k2".to_vec(), b"v2".to_vec());
            b.put(Space::Role(Role::As), b"k1".to_vec(), b"other".to_vec());
            b.put(Space::Role(Role::Ods), b"x".to_vec(), b"v3".to_vec());
            s.write(b).unwrap();
            let mut d = Batch::new();
            d.delete(Space::Role(Role::Ods), b"k2".to_vec());
            s.write(d).unwrap();
        }
        let s = RocksStore::open(dir.path(), true).unwrap();
        assert_eq!(s.get(Space::Role(Role::Ods), b"k1").unwrap().unwrap(), b"v1");
        assert_eq!(s.get(Space::Role(Role::As), b"k1").unwrap().unwrap(), b"other");
        assert_eq!(s.get(Space::Role(Role::Ods), b"k2").unwrap(), None);
        let scan = s.scan_prefix(Space::Role(Role::Ods), b"k", 10).unwrap();
        assert_eq!(scan, vec![(b"k1".to_vec(), b"v1".to_vec())]);
        // A range delete removes [from, to) and nothing else, in that space only.
        let mut r = Batch::new();
        r.delete_range(Space::Role(Role::Ods), b"k".to_vec(), b"x".to_vec());
        s.write(r).unwrap();
        assert_eq!(s.get(Space::Role(Role::Ods), b"k1").unwrap(), None);
        assert_eq!(s.get(Space::Role(Role::Ods), b"x").unwrap().unwrap(), b"v3");
        assert_eq!(s.get(Space::Role(Role::As), b"k1").unwrap().unwrap(), b"other");
    }

    #[test]
    fn read_all_sees_a_live_store_without_disturbing_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = RocksStore::open(dir.path(), true).unwrap();
        let mut b = Batch::new();
        b.put(Space::Role(Role::Ids), b"g".to_vec(), b"1".to_vec());
        s.write(b).unwrap();
        let seen = read_all(dir.path()).unwrap();
        assert_eq!(seen.get(&("ids".to_string(), b"g".to_vec())), Some(&b"1".to_vec()));
        assert_eq!(seen.len(), 1);
        // The live store keeps working after the read-only look.
        let mut b = Batch::new();
        b.put(Space::Role(Role::Ids), b"h".to_vec(), b"2".to_vec());
        s.write(b).unwrap();
        assert_eq!(read_all(dir.path()).unwrap().len(), 2);
    }

    #[test]
    fn a_prefix_ending_in_0xff_deletes_its_keys_and_no_others() {
        // Shard 255's data prefix is [0x00, 0xff]; shard 256's is [0x01, 0x00].
        let dir = tempfile::tempdir().unwrap();
        let s = RocksStore::open(dir.path(), true).unwrap();
        let sp = Space::Role(Role::Ods);
        let mut b = Batch::new();
        for k in [&[0x00, 0xfe, 1][..], &[0x00, 0xff], &[0x00, 0xff, 0xff, 7], &[0x01, 0x00, 1]] {
            b.put(sp, k.to_vec(), b"v".to_vec());
        }
        s.write(b).unwrap();
        let mut d = Batch::new();
        d.delete_prefix(sp, vec![0x00, 0xff]);
        s.write(d).unwrap();
        let left: Vec<Vec<u8>> =
            s.scan_prefix(sp, &[], 10).unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(left, vec![vec![0x00, 0xfe, 1], vec![0x01, 0x00, 1]]);
        // The raft prefix of shard 255 of the last role: [role, 0x00, 0xff].
        let mut d = Batch::new();
        d.delete_prefix(sp, vec![0xff, 0xff]);
        s.write(d).unwrap();
        assert_eq!(s.scan_prefix(sp, &[], 10).unwrap().len(), 2, "nothing under ff ff");
    }

    #[test]
    fn a_second_open_of_the_same_dir_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let _s = RocksStore::open(dir.path(), true).unwrap();
        assert!(RocksStore::open(dir.path(), true).is_err());
    }
}
