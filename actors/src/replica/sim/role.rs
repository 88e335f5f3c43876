//! The simulation's role: the smallest logic that has what the IDS and ODS
//! need from a shard, served the way their hosts serve (one request at a
//! time per replica, decided only once [`ShardStore::ready`] confirmed a
//! complete state, the term passed with the write batch):
//! - a commit is accepted only for a group's current epoch, and moves the
//!   epoch on by one (the IDS's one commit per epoch);
//! - a write is a key that must stay once acknowledged (a mailbox copy).
//!
//! It reads and writes real storage keys in the IDS keyspace of the shard,
//! so the run's end checks read the replicas' storage itself.

use mlsd_transport::Role;

use super::super::view::{CommitError, ShardStore};
use super::super::RaftShard;
use crate::storage::{Batch, Space, View};

/// A request of the simulation's clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Commit `id` to `group` for `epoch`.
    Commit {
        /// The group.
        group: u8,
        /// The epoch the committer is in.
        epoch: u64,
        /// The commit's unique id (what a retry repeats).
        id: u64,
    },
    /// Store `key` for good.
    Write {
        /// The key (unique).
        key: u64,
    },
}

/// What a replica answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Done: the write or commit is committed and applied.
    Done,
    /// The group is at `epoch`, not at the commit's: refused.
    Stale {
        /// The group's current epoch.
        epoch: u64,
    },
    /// Not here, not now: ask again (elsewhere).
    Retry(CommitError),
}

const SPACE: Space = Space::Role(Role::Ids);

/// Key of a group's current epoch.
pub fn epoch_key(group: u8) -> Vec<u8> {
    vec![b'e', group]
}

/// Key of the commit accepted for `epoch` of `group`.
pub fn commit_key(group: u8, epoch: u64) -> Vec<u8> {
    [&[b'c', group][..], &epoch.to_be_bytes()].concat()
}

/// Key of the record that commit `id` was accepted (the IDS keeps the ids
/// of accepted commits so that a resent one is answered, not decided again).
pub fn accepted_key(id: u64) -> Vec<u8> {
    [&[b'a'][..], &id.to_be_bytes()].concat()
}

/// Key of a write.
pub fn write_key(key: u64) -> Vec<u8> {
    [&[b'w'][..], &key.to_be_bytes()].concat()
}

fn read_u64(replica: &RaftShard, key: &[u8]) -> Result<Option<u64>, CommitError> {
    let v = replica.get(SPACE, key)?;
    Ok(v.and_then(|v| v.try_into().ok().map(u64::from_be_bytes)))
}

/// Serves `op` at `replica`, as a role host does; the logic takes `think`
/// between reading the state and proposing its writes (a real role checks
/// signatures there), time in which leadership can move.
pub async fn serve(replica: &RaftShard, op: Op, think: std::time::Duration) -> Reply {
    match decide(replica, op, think).await {
        Ok(r) => r,
        Err(e) => Reply::Retry(e),
    }
}

async fn decide(
    replica: &RaftShard,
    op: Op,
    think: std::time::Duration,
) -> Result<Reply, CommitError> {
    let term = replica.ready().await?;
    let mut batch = Batch::new();
    match op {
        Op::Commit { group, epoch, id } => {
            // A retry of a commit that did go in (its answer was lost) is
            // recognized by its id, as the IDS recognizes a resent message.
            if read_u64(replica, &accepted_key(id))? == Some(epoch) {
                return Ok(Reply::Done);
            }
            let current = read_u64(replica, &epoch_key(group))?.unwrap_or(0);
            if epoch != current {
                return Ok(Reply::Stale { epoch: current });
            }
            // Written outright, as the IDS writes a group's state: a second
            // decision for one epoch would overwrite the first, not fail.
            batch.put(SPACE, epoch_key(group), (epoch + 1).to_be_bytes().to_vec());
            batch.put(SPACE, commit_key(group, epoch), id.to_be_bytes().to_vec());
            batch.put(SPACE, accepted_key(id), epoch.to_be_bytes().to_vec());
        }
        Op::Write { key } => batch.put(SPACE, write_key(key), key.to_be_bytes().to_vec()),
    }
    tokio::time::sleep(think).await;
    replica.commit(term, batch).await?;
    Ok(Reply::Done)
}
