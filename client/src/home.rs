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

    /// Deletes a state file (`NAME.bin`) if present.
    pub fn remove(&self, name: &str) -> Result<(), ClientError> {
        let p = self.dir.join(format!("{name}.bin"));
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
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
