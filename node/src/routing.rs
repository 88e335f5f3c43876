//! Where a key lives: the shard of the key ([`crate::shards::placement`])
//! and that shard's voters. Every node computes the same answer from the
//! same config, so a request can enter the cluster anywhere; which voter
//! leads is found at run time, by one [`LeaderSearch`] per shard and call,
//! whichever path the call takes (a request, enqueued copies or a
//! subscription).

use std::collections::HashSet;

use mlsd_actors::replica::ShardId;
use mlsd_transport::protocol::ClusterError;
use mlsd_transport::{Response, Role, WireError};

use crate::config::{ClusterConfig, NodeConfig};
use crate::shards::placement;

/// The best-placed voter of the shard of `key` for `role`: where a request
/// for it is sent first when no leader is known, and, in a cluster whose
/// shards have one replica, the one node that holds it. `None` when no node
/// hosts the role (which a validated config rules out).
pub fn owner<'a>(config: &'a ClusterConfig, role: Role, key: &[u8]) -> Option<&'a NodeConfig> {
    placement::voters(config, placement::shard_of(config, role, key)).into_iter().next()
}

/// Every voter of the shard of `key` for `role`, best placed first.
pub fn voters<'a>(config: &'a ClusterConfig, role: Role, key: &[u8]) -> Vec<&'a NodeConfig> {
    placement::voters(config, placement::shard_of(config, role, key))
}

/// How long to wait before asking again when a shard has no leader yet
/// (an election is under way).
pub const ELECTION_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// What routing needs of the node's shard map: where to try first, who may
/// lead, and the one place a leader learned from a refusal is remembered.
/// [`crate::shards::Shards`] is the real one.
pub trait LeaderHints {
    /// The leader of `shard` as this node knows it, else its best-placed voter.
    fn leader_hint(&self, shard: ShardId) -> String;
    /// Remembers that `leader` leads `shard`.
    fn note_leader(&self, shard: ShardId, leader: &str);
    /// The voters of `shard`, best placed first.
    fn voters(&self, shard: ShardId) -> Vec<String>;
}

/// What an attempt at a shard's presumed leader came to, when it did not
/// serve the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss<'a> {
    /// The node does not lead the shard; it names the leader it knows of.
    NotLeader(Option<&'a str>),
    /// The node could not be reached.
    Unreachable,
    /// The node knows of no leader: an election is under way.
    NoLeader,
}

impl<'a> Miss<'a> {
    /// The miss an answer stands for; `None` when the answer is final
    /// (served, or refused for a reason of the request's own).
    pub fn of(resp: &'a Response) -> Option<Miss<'a>> {
        match resp {
            Response::Error(WireError::Cluster(ClusterError::NotLeader { leader, .. })) => {
                Some(Miss::NotLeader(leader.as_deref()))
            }
            Response::Error(WireError::Cluster(ClusterError::Unavailable { .. })) => {
                Some(Miss::Unreachable)
            }
            Response::Error(WireError::Cluster(ClusterError::ShardUnavailable { .. })) => {
                Some(Miss::NoLeader)
            }
            _ => None,
        }
    }
}

/// Where a call goes after a miss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// To [`LeaderSearch::target`] at once: the miss named the leader.
    Now,
    /// To [`LeaderSearch::target`], the shard's next voter, after
    /// [`ELECTION_PAUSE`].
    AfterPause,
    /// Nowhere: every voter was unreachable during this call, so no leader
    /// can be reached before it ends.
    GiveUp,
}

/// The search for one shard's leader during one call, used alike by
/// requests, enqueued copies and subscriptions: a leader named in a refusal
/// is tried at once and remembered for later calls; a node that cannot be
/// reached or knows no leader makes way for the shard's next voter after a
/// pause. Deterministic: the caller makes the attempts and keeps the time.
#[derive(Debug, Clone)]
pub struct LeaderSearch {
    shard: ShardId,
    /// The shard's voters (less the avoided node), read at the first miss:
    /// most calls find the leader at once and never need them.
    voters: Option<Vec<String>>,
    target: String,
    rotation: usize,
    unreachable: HashSet<String>,
    avoid: Option<String>,
}

impl LeaderSearch {
    /// A search that starts at the leader `hints` know of.
    pub fn new(hints: &impl LeaderHints, shard: ShardId) -> Self {
        LeaderSearch::starting_at(shard, hints.leader_hint(shard))
    }

    /// A search that starts at `first`.
    pub fn starting_at(shard: ShardId, first: String) -> Self {
        LeaderSearch {
            shard,
            voters: None,
            target: first,
            rotation: 0,
            unreachable: HashSet::new(),
            avoid: None,
        }
    }

    /// The same search, never sent to `node`: a node that would have served
    /// the call itself if it led the shard, so a refusal naming it is stale.
    pub fn avoiding(mut self, node: &str) -> Self {
        self.avoid = Some(node.to_string());
        self
    }

    /// Where the next attempt goes.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Learns from a miss at [`Self::target`] and says where to go next.
    pub fn missed(&mut self, miss: Miss<'_>, hints: &impl LeaderHints) -> Next {
        match miss {
            Miss::NotLeader(Some(l)) if l != self.target && self.avoid.as_deref() != Some(l) => {
                hints.note_leader(self.shard, l);
                self.target = l.to_string();
                return Next::Now;
            }
            Miss::Unreachable => {
                self.unreachable.insert(self.target.clone());
            }
            Miss::NotLeader(_) | Miss::NoLeader => {}
        }
        let avoid = self.avoid.as_deref();
        let voters = self.voters.get_or_insert_with(|| {
            let mut v = hints.voters(self.shard);
            v.retain(|n| Some(n.as_str()) != avoid);
            v
        });
        if voters.iter().all(|v| self.unreachable.contains(v)) {
            return Next::GiveUp;
        }
        self.rotation += 1;
        self.target = voters[self.rotation % voters.len()].clone();
        Next::AfterPause
    }
}

/// Carries out `next` for a call that must end by `deadline`: false when it
/// gives up (told to, or no time is left for another attempt), true once it
/// may go on, after the pause `next` asks for.
pub async fn proceed(next: Next, deadline: tokio::time::Instant) -> bool {
    if next == Next::GiveUp || tokio::time::Instant::now() + ELECTION_PAUSE >= deadline {
        return false;
    }
    if next == Next::AfterPause {
        tokio::time::sleep(ELECTION_PAUSE).await;
    }
    true
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Hints of one shard with voters n1..n3, n1 presumed leader.
    #[derive(Default)]
    struct Map(Mutex<Option<String>>);

    impl LeaderHints for Map {
        fn leader_hint(&self, _: ShardId) -> String {
            self.0.lock().unwrap().clone().unwrap_or_else(|| "n1".into())
        }
        fn note_leader(&self, _: ShardId, leader: &str) {
            *self.0.lock().unwrap() = Some(leader.into());
        }
        fn voters(&self, _: ShardId) -> Vec<String> {
            vec!["n1".into(), "n2".into(), "n3".into()]
        }
    }

    fn shard() -> ShardId {
        ShardId { role: Role::Ods, index: 0 }
    }

    #[test]
    fn a_named_leader_is_tried_at_once_and_remembered_for_the_next_call() {
        let hints = Map::default();
        let mut s = LeaderSearch::new(&hints, shard());
        assert_eq!(s.target(), "n1");
        assert_eq!(s.missed(Miss::NotLeader(Some("n3")), &hints), Next::Now);
        assert_eq!(s.target(), "n3");
        assert_eq!(LeaderSearch::new(&hints, shard()).target(), "n3");
    }

    #[test]
    fn without_a_leader_the_voters_are_tried_in_turn_after_a_pause() {
        let hints = Map::default();
        let mut s = LeaderSearch::new(&hints, shard());
        assert_eq!(s.missed(Miss::NoLeader, &hints), Next::AfterPause);
        assert_eq!(s.target(), "n2");
        // A node naming itself is no news: on to the next voter.
        assert_eq!(s.missed(Miss::NotLeader(Some("n2")), &hints), Next::AfterPause);
        assert_eq!(s.target(), "n3");
        assert_eq!(s.missed(Miss::NotLeader(None), &hints), Next::AfterPause);
        assert_eq!(s.target(), "n1");
        assert_eq!(hints.leader_hint(shard()), "n1", "nothing was learned");
    }

    #[test]
    fn a_call_gives_up_once_every_voter_was_unreachable() {
        let hints = Map::default();
        let mut s = LeaderSearch::new(&hints, shard());
        // n1 answers without a leader: reachable, so the search goes on past n3.
        assert_eq!(s.missed(Miss::NoLeader, &hints), Next::AfterPause);
        assert_eq!(s.missed(Miss::Unreachable, &hints), Next::AfterPause);
        assert_eq!(s.missed(Miss::Unreachable, &hints), Next::AfterPause);
        assert_eq!(s.target(), "n1");
        assert_eq!(s.missed(Miss::Unreachable, &hints), Next::GiveUp);
    }

    #[test]
    fn an_avoided_node_is_never_a_target_even_when_named() {
        let hints = Map::default();
        let mut s = LeaderSearch::starting_at(shard(), "n2".into()).avoiding("n1");
        assert_eq!(s.missed(Miss::NotLeader(Some("n1")), &hints), Next::AfterPause);
        assert_eq!(s.target(), "n3");
        assert_eq!(s.missed(Miss::Unreachable, &hints), Next::AfterPause);
        assert_eq!(s.target(), "n2");
        assert_eq!(s.missed(Miss::Unreachable, &hints), Next::GiveUp);
    }
}
