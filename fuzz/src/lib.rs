//! The fuzz targets' bodies as a library, so the fuzz binaries and the main
//! workspace's corpus replay test (`tests/fuzz_corpus.rs`) run the same code.

pub mod bodies;
