//! The openmls provider of a client: RustCrypto for crypto and randomness, and
//! a memory storage that the home directory loads and saves.

use openmls_memory_storage::MemoryStorage;
use openmls_rust_crypto::RustCrypto;
use openmls_traits::OpenMlsProvider;

/// openmls provider whose storage persists in the client's home.
#[derive(Default)]
pub struct ClientProvider {
    crypto: RustCrypto,
    storage: MemoryStorage,
}

impl ClientProvider {
    /// A provider over previously saved storage.
    pub fn new(storage: MemoryStorage) -> Self {
        ClientProvider { crypto: RustCrypto::default(), storage }
    }
}

impl OpenMlsProvider for ClientProvider {
    type CryptoProvider = RustCrypto;
    type RandProvider = RustCrypto;
    type StorageProvider = MemoryStorage;

    fn storage(&self) -> &MemoryStorage {
        &self.storage
    }
    fn crypto(&self) -> &RustCrypto {
        &self.crypto
    }
    fn rand(&self) -> &RustCrypto {
        &self.crypto
    }
}
