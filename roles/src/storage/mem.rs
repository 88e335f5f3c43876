//! An in-memory [`Store`]: the same contract as the RocksDB one (atomic
//! batches, ordered prefix scans, range deletes), without a disk. Exists so
//! every role's logic can be unit-tested quickly and deterministically, and
//! so a test can make writes fail on purpose to see that a failed batch
//! changes nothing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::{Batch, Entries, Op, Space, Store, StoreError, View};

/// Keys of every keyspace: (column family name, key).
type Key = (&'static str, Vec<u8>);

/// A node's storage held in memory; gone when dropped.
#[derive(Default)]
pub struct MemStore {
    data: Mutex<BTreeMap<Key, Vec<u8>>>,
    failing: AtomicBool,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every later write fail (`true`) or succeed again (`false`), as a
    /// full or broken disk would; a failed write applies nothing.
    pub fn fail_writes(&self, fail: bool) {
        self.failing.store(fail, Ordering::SeqCst);
    }

    /// Every entry, by keyspace name and key: what a test compares to show
    /// that a refused request left storage unchanged.
    pub fn contents(&self) -> BTreeMap<(String, Vec<u8>), Vec<u8>> {
        let data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        data.iter().map(|((s, k), v)| ((s.to_string(), k.clone()), v.clone())).collect()
    }
}

impl View for MemStore {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        Ok(data.get(&(space.name(), key.to_vec())).cloned())
    }

    fn scan_from(
        &self,
        space: Space,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<Entries, StoreError> {
        let data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        let from = (space.name(), start.to_vec());
        Ok(data
            .range(from..)
            .take_while(|((s, k), _)| *s == space.name() && k.starts_with(prefix))
            .take(limit)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }
}

impl Store for MemStore {
    fn read_at_once(
        &self,
        read: &mut dyn FnMut(&dyn View) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let copy = MemStore {
            data: Mutex::new(self.data.lock().unwrap_or_else(|e| e.into_inner()).clone()),
            failing: AtomicBool::new(false),
        };
        read(&copy)
    }

    fn write(&self, batch: Batch) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Db("writes fail (MemStore::fail_writes)".into()));
        }
        let mut data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        for op in batch.ops {
            match op {
                Op::Put { space, key, value } => {
                    data.insert((space.name(), key), value);
                }
                Op::Delete { space, key } => {
                    data.remove(&(space.name(), key));
                }
                Op::DeleteRange { space, from, to } => {
                    let doomed: Vec<Key> = data
                        .range((space.name(), from)..(space.name(), to))
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in doomed {
                        data.remove(&k);
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlsd_transport::Role;

    const ODS: Space = Space::Role(Role::Ods);
    const AS: Space = Space::Role(Role::As);

    #[test]
    fn scans_stay_in_their_space_and_prefix_and_range_deletes_are_half_open() {
        let s = MemStore::new();
        let mut b = Batch::new();
        for k in [&b"k1"[..], b"k2", b"k3", b"x"] {
            b.put(ODS, k.to_vec(), k.to_vec());
        }
        b.put(AS, b"k1".to_vec(), b"other".to_vec());
        s.write(b).unwrap();
        let keys = |e: Entries| e.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(keys(s.scan_prefix(ODS, b"k", 10).unwrap()), [b"k1", b"k2", b"k3"]);
        assert_eq!(keys(s.scan_from(ODS, b"k", b"k2", 1).unwrap()), [b"k2"]);
        let mut r = Batch::new();
        r.delete_range(ODS, b"k1".to_vec(), b"k3".to_vec());
        s.write(r).unwrap();
        assert_eq!(keys(s.scan_prefix(ODS, b"", 10).unwrap()), [&b"k3"[..], b"x"]);
        assert_eq!(s.get(AS, b"k1").unwrap().unwrap(), b"other");
    }

    #[test]
    fn a_failed_write_applies_nothing() {
        let s = MemStore::new();
        s.fail_writes(true);
        let mut b = Batch::new();
        b.put(ODS, b"k".to_vec(), b"v".to_vec());
        assert!(s.write(b.clone()).is_err());
        assert!(s.contents().is_empty());
        s.fail_writes(false);
        s.write(b).unwrap();
        assert_eq!(s.contents().len(), 1);
    }
}
