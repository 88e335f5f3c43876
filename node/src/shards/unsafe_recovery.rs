//! `mlsd cluster recover`: unsafe recovery on a stopped node of the shards
//! that lost a majority of their voters for good
//! ([`mlsd_actors::replica::unsafe_recovery`] says what it does and what it
//! can lose). This file checks the operator's request against cluster.toml
//! before anything is written: the shards must be replicated by the node,
//! the voters kept must be voters of each shard, and the node's store must
//! not be open (RocksDB's lock: the node must be stopped).

use std::sync::Arc;

use mlsd_actors::replica::log::ShardLog;
use mlsd_actors::replica::unsafe_recovery::{keep_only, Recovered, UnsafeRecoveryError};
use mlsd_actors::replica::{recovery, ShardId, ShardView};
use mlsd_actors::storage::RocksStore;
use mlsd_roles::Store;
use mlsd_transport::Role;

use super::map::ClusterMap;
use crate::config::ClusterConfig;

/// Why nothing was recovered.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// A shard name that is not `all` or `ROLE/INDEX` of this cluster.
    #[error("unknown shard {0:?}: expected all or ROLE/INDEX, e.g. ods/3, with INDEX below the cluster's shards")]
    UnknownShard(String),
    /// The node replicates no such shard.
    #[error("{node} does not replicate shard {shard}")]
    NotReplicated {
        /// The node.
        node: String,
        /// The shard.
        shard: ShardId,
    },
    /// A node to keep is not one of the shard's voters.
    #[error("{node} is not a voter of shard {shard} (its voters: {voters})")]
    NotAVoter {
        /// The node.
        node: String,
        /// The shard.
        shard: ShardId,
        /// The shard's voters.
        voters: String,
    },
    /// The node's store cannot be opened: it runs, or its data dir is gone.
    #[error("cannot open {node}'s store (stop the node first): {why}")]
    Store {
        /// The node.
        node: String,
        /// What failed.
        why: String,
    },
    /// One shard could not be recovered; the ones listed before it were.
    #[error("{error} (recovered before it: {done})")]
    Shard {
        /// What failed.
        error: UnsafeRecoveryError,
        /// The shards recovered before.
        done: String,
    },
}

/// The cluster map node `me` holds (its stopped store's), else the file's
/// first map when it holds none.
fn node_map(config: &ClusterConfig, me: &str) -> Result<ClusterMap, RecoverError> {
    let node = config
        .node(Some(me))
        .map_err(|e| RecoverError::Store { node: me.to_string(), why: e.to_string() })?;
    if !node.data_dir.is_dir() {
        return Ok(ClusterMap::bootstrap(config));
    }
    let store_err = |why: String| RecoverError::Store { node: me.to_string(), why };
    let store: Arc<dyn Store> =
        Arc::new(RocksStore::open(&node.data_dir, true).map_err(|e| store_err(e.to_string()))?);
    let view = ShardView { store, shard: ShardId::CLUSTER };
    Ok(ClusterMap::read(&view).map_err(store_err)?.unwrap_or_else(|| ClusterMap::bootstrap(config)))
}

/// The shards `names` stand for on node `me` (`all`: every shard it
/// replicates, the cluster group among them; `cluster`: that group).
pub fn shards(
    config: &ClusterConfig,
    me: &str,
    names: &[String],
) -> Result<Vec<ShardId>, RecoverError> {
    let map = node_map(config, me)?;
    let mut out = Vec::new();
    for name in names {
        if name == "all" {
            out.extend(map.replicated_by(me));
            if map.voters(ShardId::CLUSTER).iter().any(|v| v == me) {
                out.push(ShardId::CLUSTER);
            }
            continue;
        }
        if name == "cluster" {
            if !map.voters(ShardId::CLUSTER).iter().any(|v| v == me) {
                let shard = ShardId::CLUSTER;
                return Err(RecoverError::NotReplicated { node: me.to_string(), shard });
            }
            out.push(ShardId::CLUSTER);
            continue;
        }
        let unknown = || RecoverError::UnknownShard(name.clone());
        let (role, index) = name.split_once('/').ok_or_else(unknown)?;
        let role = Role::ALL.into_iter().find(|r| r.name() == role).ok_or_else(unknown)?;
        let index: u16 = index.parse().map_err(|_| unknown())?;
        if u32::from(index) >= map.per_role {
            return Err(unknown());
        }
        let shard = ShardId { role, index };
        if !map.voters(shard).iter().any(|n| n == me) {
            return Err(RecoverError::NotReplicated { node: me.to_string(), shard });
        }
        out.push(shard);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Makes `keep` the only voters of each of `shards` on the stopped node
/// `me`, after checking every shard first.
pub async fn recover(
    config: &ClusterConfig,
    me: &str,
    shards: &[ShardId],
    keep: &[String],
) -> Result<Vec<Recovered>, RecoverError> {
    let node = config
        .node(Some(me))
        .map_err(|e| RecoverError::Store { node: me.to_string(), why: e.to_string() })?;
    let map = node_map(config, me)?;
    for shard in shards {
        let voters: Vec<String> = map.voters(*shard).to_vec();
        if let Some(k) = keep.iter().find(|k| !voters.contains(k)) {
            return Err(RecoverError::NotAVoter {
                node: k.clone(),
                shard: *shard,
                voters: voters.join(","),
            });
        }
    }
    if !node.data_dir.is_dir() {
        let why = format!("{} is not a directory", node.data_dir.display());
        return Err(RecoverError::Store { node: me.to_string(), why });
    }
    let store: Arc<dyn Store> = Arc::new(
        RocksStore::open(&node.data_dir, true)
            .map_err(|e| RecoverError::Store { node: me.to_string(), why: e.to_string() })?,
    );
    let mut done = Vec::new();
    for shard in shards {
        let failed = |error| RecoverError::Shard {
            error,
            done: done
                .iter()
                .map(|r: &Recovered| r.shard.to_string())
                .collect::<Vec<_>>()
                .join(","),
        };
        let rebuilding = recovery::load(store.as_ref(), *shard).map_err(|e| {
            failed(UnsafeRecoveryError::Storage { shard: *shard, why: e.to_string() })
        })?;
        let log = ShardLog::new(store.clone(), *shard);
        let r = keep_only(log, *shard, me, keep, rebuilding).await.map_err(failed)?;
        tracing::warn!(shard = %r.shard, voters = ?r.voters, "unsafe recovery: the shard's voters were replaced");
        done.push(r);
    }
    Ok(done)
}
