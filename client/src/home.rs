//! A client's home directory: its identity (client id, signature key pair,
//! binding) and its openmls storage (private KeyPackage keys, later groups).
//!
//! Both files hold secrets, so they are written with mode 0600, atomically
//! (write to a temporary file, fsync, rename) so a crash never leaves half a
//! state behind. Secret bytes in memory are zeroized on drop.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use mlsd_transport::codec;
use mlsd_transport::protocol::SignedBinding;
use openmls_memory_storage::MemoryStorage;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::ClientError;

/// The client's identity as stored in `identity.bin`.
#[derive(Serialize, Deserialize)]
pub struct StoredIdentity {
    /// `identity/device`.
    pub client: String,
    /// Ed25519 seed of the signature key. Zeroized on drop.
    pub private_key: Zeroizing<Vec<u8>>,
    /// Ed25519 public key.
    pub public_key: Vec<u8>,
    /// The AS binding received at registration.
    pub binding: Option<SignedBinding>,
}

/// Paths inside a home directory.
pub struct Home {
    dir: PathBuf,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> ClientError {
    ClientError::Home(format!("{}: {e}", path.display()))
}

impl Home {
    /// The home at `dir`, created (mode 0700) if missing.
    pub fn open(dir: &Path) -> Result<Self, ClientError> {
        use std::os::unix::fs::DirBuilderExt;
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| io_err(dir, e))?;
        }
        Ok(Home { dir: dir.to_path_buf() })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads a small state file (`NAME.bin`), if present.
    pub fn load<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Option<T>, ClientError> {
        let p = self.dir.join(format!("{name}.bin"));
        match std::fs::read(&p) {
            Ok(bytes) => {
                let bytes = Zeroizing::new(bytes);
                codec::decode(&bytes).map(Some).map_err(|e| io_err(&p, e))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&p, e)),
        }
    }

    /// Writes a small state file (`NAME.bin`, 0600).
    pub fn save<T: Serialize>(&self, name: &str, value: &T) -> Result<(), ClientError> {
        let p = self.dir.join(format!("{name}.bin"));
        let bytes = Zeroizing::new(codec::encode(value).map_err(|e| io_err(&p, e))?);
        write_private(&p, &bytes)
    }

    /// Reads `name`; if only the older file `old` of an earlier layout is
    /// there, converts it with `convert`, writes it as `name` and deletes
    /// `old`, once.
    pub fn load_converting<T, O>(
        &self,
        name: &str,
        old: &str,
        convert: impl FnOnce(O) -> T,
    ) -> Result<Option<T>, ClientError>
    where
        T: Serialize + serde::de::DeserializeOwned,
        O: serde::de::DeserializeOwned,
    {
        if let Some(v) = self.load(name)? {
            return Ok(Some(v));
        }
        let Some(older) = self.load::<O>(old)? else { return Ok(None) };
        let v = convert(older);
        self.save(name, &v)?;
        let p = self.dir.join(format!("{old}.bin"));
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(Some(v)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Some(v)),
            Err(e) => Err(io_err(&p, e)),
        }
    }

    fn storage_path(&self) -> PathBuf {
        self.dir.join("mls.bin")
    }

    /// Reads the identity, if this home has one.
    pub fn load_identity(&self) -> Result<Option<StoredIdentity>, ClientError> {
        self.load("identity")
    }

    /// Writes the identity.
    pub fn save_identity(&self, id: &StoredIdentity) -> Result<(), ClientError> {
        self.save("identity", id)
    }

    /// Reads the openmls storage (empty for a new home).
    pub fn load_storage(&self) -> Result<MemoryStorage, ClientError> {
        let p = self.storage_path();
        let storage = MemoryStorage::default();
        match std::fs::read(&p) {
            Ok(bytes) => {
                let bytes = Zeroizing::new(bytes);
                let values: HashMap<Vec<u8>, Vec<u8>> =
                    codec::decode(&bytes).map_err(|e| io_err(&p, e))?;
                *storage.values.write().map_err(|e| io_err(&p, e))? = values;
                Ok(storage)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(storage),
            Err(e) => Err(io_err(&p, e)),
        }
    }

    /// Writes the openmls storage.
    pub fn save_storage(&self, storage: &MemoryStorage) -> Result<(), ClientError> {
        let p = self.storage_path();
        let values = storage.values.read().map_err(|e| io_err(&p, e))?;
        let bytes = Zeroizing::new(codec::encode(&*values).map_err(|e| io_err(&p, e))?);
        write_private(&p, &bytes)
    }
}

/// Atomically replaces `path` with `bytes`, readable only by the owner.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), ClientError> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io_err(&tmp, e))?;
    f.write_all(bytes).map_err(|e| io_err(&tmp, e))?;
    f.sync_all().map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))?;
    // The rename is durable only once the directory is: state saved before
    // an ack must survive a crash, or the acked envelopes are lost.
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_err(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_of_the_older_layout_is_converted_once_and_then_gone() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::open(dir.path()).unwrap();
        home.save("old", &vec![1u32, 2]).unwrap();
        let wrap = |v: Vec<u32>| v.into_iter().map(|x| (x, x * 10)).collect::<Vec<_>>();
        let got: Option<Vec<(u32, u32)>> = home.load_converting("new", "old", wrap).unwrap();
        assert_eq!(got, Some(vec![(1, 10), (2, 20)]));
        assert!(!dir.path().join("old.bin").exists());
        // Later reads take the new file as it is.
        home.save("new", &vec![(3u32, 4u32)]).unwrap();
        let again: Option<Vec<(u32, u32)>> = home.load_converting("new", "old", wrap).unwrap();
        assert_eq!(again, Some(vec![(3, 4)]));
        let none: Option<Vec<(u32, u32)>> = home.load_converting("x", "y", wrap).unwrap();
        assert_eq!(none, None);
    }
}
