//! The rules for a replica that restarts without its data (its disk was
//! wiped or replaced). Raft's safety rests on voters never forgetting their
//! log and vote: an empty replica that votes could elect a leader missing
//! an entry its lost copy had helped commit, and two empty replicas could
//! elect each other and serve an empty shard (a stranger could then
//! register an identity that exists). So a node that finds its storage
//! empty first records, per shard, that it is rebuilding (in the `raft`
//! column family, so a crash while catching up keeps the rule), campaigns
//! in no shard, and asks the shard's other voters what they hold
//! ([`verdict`]):
//! - every other voter answers and none holds anything of the shard: a new
//!   shard (a cluster forming); it is initialized;
//! - a majority of the voters other than itself answered, and some of them
//!   hold the shard: the replica catches up to the furthest of them before
//!   it votes freely or campaigns. When the holders are a majority
//!   themselves it grants no vote at all until then (they elect a leader
//!   among them); otherwise it votes only for a candidate whose last log
//!   position is at least that target (two replicas of three lost their
//!   disks: the third, once back, is the only one that can lead, and does);
//! - else it waits and asks again: it grants no vote and starts no
//!   election, and `mlsd cluster status` shows the shard without a leader.
//!   Two wiped replicas of three never count each other as that majority,
//!   so they cannot elect each other over an empty shard.
//!
//! Entries that only the lost copies held are lost with them: a majority of
//! disks lost at once is beyond what replication protects.
//!
//! Losing a majority of a shard's replicas for good is not recovered from
//! here: the shard stays unavailable until they return, or until the
//! operator's unsafe recovery ([`super::unsafe_recovery`]).

use std::collections::BTreeMap;
use std::sync::Mutex;

use mlsd_transport::codec;
use serde::{Deserialize, Serialize};

use super::ShardId;
use crate::storage::{Batch, Space, Store, StoreError};

/// A log position as Raft orders them: (term, index).
pub type Position = (u64, u64);

/// Where a replica rebuilding a shard stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rebuild {
    /// Not enough of the shard's voters answered: no vote, no election.
    Waiting,
    /// Voters holding a majority answered: no vote until this replica has
    /// applied up to the position. Entries are taken only from a leader of
    /// at least the term (the highest the voters reported).
    Strict(Position, u64),
    /// A majority answered, fewer holding the shard: votes only for a
    /// candidate at least at the position until this replica has applied
    /// up to it; entries only from a leader of at least the term.
    AtLeast(Position, u64),
}

/// What a rebuilding replica learned from its shard's other voters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No voter holds anything of the shard: it is new.
    NewShard,
    /// Catch up first, as [`Rebuild`] says.
    CatchUp(Rebuild),
    /// Ask again later.
    Wait,
}

/// The verdict for a shard of `voters` voters (this replica one of them)
/// given the answers of the others that could be asked: for each, the
/// position of its last log entry (not the last it applied: an entry this
/// replica's lost copy helped commit is in some answerer's log, but maybe
/// not applied there yet), or `None` when it holds nothing of the shard; and
/// the highest term any of them is in (a leader of an older term is
/// deposed, and a rebuilding replica must not help it commit).
pub fn verdict(voters: usize, answers: &[Option<Position>], term: u64) -> Verdict {
    let others = voters.saturating_sub(1);
    if answers.len() >= others && answers.iter().all(Option::is_none) {
        return Verdict::NewShard;
    }
    let holders: Vec<Position> = answers.iter().flatten().copied().collect();
    let Some(target) = holders.iter().max().copied() else { return Verdict::Wait };
    let majority = voters / 2 + 1;
    if holders.len() >= majority {
        Verdict::CatchUp(Rebuild::Strict(target, term))
    } else if answers.len() >= majority || holders.len() > voters - majority {
        Verdict::CatchUp(Rebuild::AtLeast(target, term))
    } else {
        Verdict::Wait
    }
}

fn marker_key(shard: ShardId) -> Vec<u8> {
    [&shard.raft_prefix()[..], b"r"].concat()
}

/// The rebuild state recorded for `shard` (`r` under its prefix in the
/// `raft` column family), if it is rebuilding.
pub fn load(store: &dyn Store, shard: ShardId) -> Result<Option<Rebuild>, StoreError> {
    match store.get(Space::Raft, &marker_key(shard))? {
        None => Ok(None),
        Some(v) => codec::decode(&v).map(Some).map_err(|e| StoreError::Db(e.to_string())),
    }
}

/// Records `states` durably, before anything else happens to the shards.
pub fn save(store: &dyn Store, states: &BTreeMap<ShardId, Rebuild>) -> Result<(), StoreError> {
    let mut b = Batch::new();
    for (shard, state) in states {
        let v = codec::encode(state).map_err(|e| StoreError::Db(e.to_string()))?;
        b.put(Space::Raft, marker_key(*shard), v);
    }
    store.write_synced(b)
}

/// Removes `shard`'s record: it is rebuilt.
pub fn clear(store: &dyn Store, shard: ShardId) -> Result<(), StoreError> {
    let mut b = Batch::new();
    b.delete(Space::Raft, marker_key(shard));
    store.write_synced(b)
}

/// The shards of this node that are rebuilding, and where each stands.
#[derive(Debug, Default)]
pub struct Recovery {
    states: Mutex<BTreeMap<ShardId, Rebuild>>,
}

impl Recovery {
    /// Shards rebuilding, in the given states.
    pub fn new(states: BTreeMap<ShardId, Rebuild>) -> Self {
        Recovery { states: Mutex::new(states) }
    }

    /// How many shards are still rebuilding.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether every shard votes (nothing to rebuild).
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Whether `shard` is still rebuilding.
    pub fn contains(&self, shard: ShardId) -> bool {
        self.lock().contains_key(&shard)
    }

    /// Every rebuilding shard and its state.
    pub fn states(&self) -> BTreeMap<ShardId, Rebuild> {
        self.lock().clone()
    }

    /// Records `shard`'s new state.
    pub fn set(&self, shard: ShardId, state: Rebuild) {
        self.lock().insert(shard, state);
    }

    /// `shard` is rebuilt (or new): it votes and campaigns as any replica.
    pub fn finish(&self, shard: ShardId) {
        if self.lock().remove(&shard).is_some() {
            tracing::info!(%shard, "replica rebuilt; it votes and campaigns again");
        }
    }

    /// Whether the replica of `shard`, having applied up to index
    /// `applied`, may vote for a candidate whose last log position is
    /// `candidate`.
    pub fn may_vote(&self, shard: ShardId, applied: u64, candidate: Option<Position>) -> bool {
        match self.lock().get(&shard) {
            None => true,
            Some(Rebuild::Waiting) => false,
            Some(Rebuild::Strict(t, _)) => applied >= t.1,
            Some(Rebuild::AtLeast(t, _)) => applied >= t.1 || candidate.is_some_and(|c| c >= *t),
        }
    }

    /// Whether the replica of `shard` may take entries (or a snapshot) from
    /// a leader of `term`. A replica that lost its data also lost the term
    /// it was in: a deposed leader that does not know it yet could count
    /// its acknowledgement towards a majority and commit entries the real
    /// leader overwrites. So it takes none while waiting, and then only
    /// from a leader at least in the term its peers reported.
    pub fn may_append(&self, shard: ShardId, term: u64) -> bool {
        match self.lock().get(&shard) {
            None => true,
            Some(Rebuild::Waiting) => false,
            Some(Rebuild::Strict(_, min) | Rebuild::AtLeast(_, min)) => term >= *min,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<ShardId, Rebuild>> {
        self.states.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlsd_transport::Role;

    #[test]
    fn the_verdict_needs_holders_in_every_majority() {
        use Rebuild::*;
        use Verdict::*;
        // A cluster forming: every other voter answered, none holds data.
        assert_eq!(verdict(3, &[None, None], 0), NewShard);
        assert_eq!(verdict(1, &[], 0), NewShard);
        // Two of three wiped, the third down: the two must not elect each
        // other (the hand-run reproduction of the replication issue).
        assert_eq!(verdict(3, &[None], 1), Wait);
        assert_eq!(verdict(3, &[], 0), Wait);
        // One of three wiped, both others up: catch up to the furthest.
        assert_eq!(verdict(3, &[Some((2, 40)), Some((3, 38))], 4), CatchUp(Strict((3, 38), 4)));
        // One wiped, one other down: wait for the third to answer.
        assert_eq!(verdict(3, &[Some((2, 40))], 2), Wait);
        // Two wiped, the third back: it alone holds the shard and may lead.
        assert_eq!(verdict(3, &[Some((2, 40)), None], 2), CatchUp(AtLeast((2, 40), 2)));
        // Two voters: the other one holds every committed entry.
        assert_eq!(verdict(2, &[Some((1, 9))], 1), CatchUp(AtLeast((1, 9), 1)));
        assert_eq!(verdict(5, &[Some((1, 9)), None], 1), Wait);
        assert_eq!(verdict(5, &[Some((1, 9)), Some((1, 9)), None], 1), CatchUp(AtLeast((1, 9), 1)));
        assert_eq!(
            verdict(5, &[Some((1, 9)), Some((1, 8)), Some((1, 7))], 3),
            CatchUp(Strict((1, 9), 3))
        );
    }

    #[test]
    fn a_rebuilding_replica_votes_only_as_its_state_allows() {
        let s = ShardId { role: Role::Ids, index: 1 };
        let other = ShardId { role: Role::Ids, index: 2 };
        let r = Recovery::new([(s, Rebuild::Waiting)].into());
        assert!(!r.may_vote(s, 0, Some((9, 99))), "waiting: no vote for anyone");
        assert!(r.may_vote(other, 0, None), "shards not rebuilding vote");
        assert!(!r.may_append(s, 9), "waiting: no entries from anyone");
        r.set(s, Rebuild::Strict((3, 40), 5));
        assert!(!r.may_append(s, 4), "not from a leader of an older term");
        assert!(r.may_append(s, 5) && r.may_append(s, 6));
        assert!(!r.may_vote(s, 39, Some((9, 99))), "strict: no vote before caught up");
        assert!(r.may_vote(s, 40, None), "caught up");
        r.set(s, Rebuild::AtLeast((3, 40), 5));
        assert!(!r.may_vote(s, 0, None), "not for a candidate with an empty log");
        assert!(!r.may_vote(s, 39, Some((3, 39))), "not for one missing an entry");
        assert!(!r.may_vote(s, 0, Some((2, 90))), "not for a long log of an older term");
        assert!(r.may_vote(s, 0, Some((3, 40))), "for one that holds the target");
        assert!(r.may_vote(s, 0, Some((4, 1))), "for one with an entry of a newer term");
        assert_eq!(r.len(), 1);
        r.finish(s);
        assert!(r.is_empty());
        assert!(r.may_vote(s, 0, None));
    }
}
