//! The cluster map: which nodes are members, what each hosts, and which
//! nodes replicate each shard. It is cluster state, not a function of each
//! host's cluster.toml: the file only seeds the first map
//! ([`ClusterMap::bootstrap`], the same placement every node computed from
//! the file before), so a node added to or dropped from a file later moves
//! no data and no ownership by itself. Replicas move one planned step at a
//! time ([`ClusterMap::plan`]), each a learner added, caught up and made a
//! voter before an old voter leaves.
//!
//! Everything here is pure: maps in, moves out.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use mlsd_actors::replica::ShardId;
use mlsd_roles::record::{self, Stored};
use mlsd_roles::{Batch, Space, View};
use mlsd_transport::Role;
use serde::{Deserialize, Serialize};

use super::placement;
use crate::config::ClusterConfig;

/// Most members a cluster map may list (bounds the map's size on the wire
/// and in a log entry).
pub const MAX_MEMBERS: usize = 256;

/// What the cluster knows of one member node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// Where its QUIC endpoint listens.
    pub listen: SocketAddr,
    /// The roles it hosts: replicas of a role's shards are placed only on
    /// members hosting it.
    pub roles: Vec<Role>,
    /// Being drained: its replicas move elsewhere, and no new one is
    /// placed on it.
    pub leaving: bool,
}

impl MemberRecord {
    /// Whether new replicas of `role` may be placed here.
    pub fn takes(&self, role: Role) -> bool {
        !self.leaving && self.roles.contains(&role)
    }
}

/// Most voters of the cluster's own group: the first members of the
/// bootstrap file; any other member follows it as a learner.
pub const MAX_CLUSTER_VOTERS: usize = 5;

/// The cluster's members and where each shard lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMap {
    /// Bumped by every change, so a node tells a newer map from an older.
    pub version: u64,
    /// Every member, by name.
    pub members: BTreeMap<String, MemberRecord>,
    /// Voters of the cluster's own group ([`ShardId::CLUSTER`]).
    pub cluster: Vec<String>,
    /// Shards per role: the keyspace's split, fixed for the cluster's life
    /// (a key's shard is its hash modulo this).
    pub per_role: u32,
    /// Each shard's voters, its preferred leader first.
    pub shards: BTreeMap<ShardId, Vec<String>>,
    /// Voters per shard wanted (`replicas`, or every host of a role when
    /// fewer host it).
    pub replicas: u32,
    /// Moves under way, by shard: the node a move adds holds a replica
    /// (a learner, then a voter) before the move is done.
    pub moving: BTreeMap<ShardId, Move>,
}

impl Stored for ClusterMap {
    const KIND: &'static str = "cluster map";
    const VERSION: u8 = 1;
}

/// Where the map is kept in the cluster group's keyspace.
const MAP_KEY: &[u8] = b"map";

/// One step of a rebalance: `add` joins `shard` (as a learner first, a
/// voter once caught up), then `remove` leaves it. A step with only `add`
/// restores a missing replica, one with only `remove` drops a surplus one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    /// The shard whose replicas change.
    pub shard: ShardId,
    /// The node that gains a replica.
    pub add: Option<String>,
    /// The node that loses one.
    pub remove: Option<String>,
}

impl std::fmt::Display for Move {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.shard)?;
        if let Some(a) = &self.add {
            write!(f, " +{a}")?;
        }
        if let Some(r) = &self.remove {
            write!(f, " -{r}")?;
        }
        Ok(())
    }
}

impl ClusterMap {
    /// The first map of a cluster: its members and the placement every
    /// node computed from cluster.toml before the map existed (so a running
    /// cluster keeps each shard where it is).
    pub fn bootstrap(config: &ClusterConfig) -> ClusterMap {
        let members = config
            .nodes
            .iter()
            .map(|n| {
                let record =
                    MemberRecord { listen: n.listen, roles: n.roles.clone(), leaving: false };
                (n.name.clone(), record)
            })
            .collect();
        let shards = placement::all(config)
            .map(|s| {
                (s, placement::voters(config, s).into_iter().map(|n| n.name.clone()).collect())
            })
            .collect();
        let cluster =
            config.nodes.iter().take(MAX_CLUSTER_VOTERS).map(|n| n.name.clone()).collect();
        ClusterMap {
            version: 1,
            members,
            cluster,
            per_role: config.replication.shards,
            shards,
            replicas: config.replication.replicas,
            moving: BTreeMap::new(),
        }
    }

    /// The map the cluster group has applied in `view` (its keyspace), if
    /// any; an unreadable one is an error, never taken for none.
    pub fn read(view: &dyn View) -> Result<Option<ClusterMap>, String> {
        match view.get(Space::Role(ShardId::CLUSTER.role), MAP_KEY) {
            Ok(None) => Ok(None),
            Ok(Some(v)) => record::decode(&v).map(Some).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The map a `ClusterMap` answer carries; none for any other answer,
    /// or one that does not decode.
    pub fn from_answer(resp: &mlsd_transport::Response) -> Option<ClusterMap> {
        use mlsd_transport::protocol::NodeResponse;
        match resp {
            mlsd_transport::Response::Node(NodeResponse::ClusterMap(Some(b))) => {
                record::decode(b).ok()
            }
            _ => None,
        }
    }

    /// The newest of `maps` (the highest version), if any.
    pub fn newest(maps: impl IntoIterator<Item = ClusterMap>) -> Option<ClusterMap> {
        maps.into_iter().max_by_key(|m| m.version)
    }

    /// The write that makes this the map.
    pub fn write(&self) -> Result<Batch, String> {
        let mut b = Batch::new();
        let v = record::encode(self).map_err(|e| e.to_string())?;
        b.put(Space::Role(ShardId::CLUSTER.role), MAP_KEY.to_vec(), v);
        Ok(b)
    }

    /// The shard of `key` for `role`.
    pub fn shard_of(&self, role: Role, key: &[u8]) -> ShardId {
        ShardId::of(role, key, self.per_role)
    }

    /// The voters of `shard`, preferred first (none for a shard the map
    /// does not know).
    pub fn voters(&self, shard: ShardId) -> &[String] {
        if shard.is_cluster() {
            return &self.cluster;
        }
        self.shards.get(&shard).map_or(&[], |v| v.as_slice())
    }

    /// Whether `node` holds a replica of the cluster group: every member
    /// does, as a voter or a learner.
    pub fn is_member(&self, node: &str) -> bool {
        self.members.contains_key(node)
    }

    /// The shards `node` replicates.
    pub fn replicated_by<'a>(&'a self, node: &'a str) -> impl Iterator<Item = ShardId> + 'a {
        self.shards.iter().filter(move |(_, v)| v.iter().any(|n| n == node)).map(|(s, _)| *s)
    }

    /// The shards a move under way adds `node` to.
    pub fn incoming<'a>(&'a self, node: &'a str) -> impl Iterator<Item = ShardId> + 'a {
        self.moving.values().filter(move |m| m.add.as_deref() == Some(node)).map(|m| m.shard)
    }

    /// Records that `m` is under way, when it is one of the next `max`
    /// moves the map plans (or already under way).
    pub fn begin(&mut self, m: &Move, max: usize) -> Result<(), String> {
        if self.moving.get(&m.shard) == Some(m) {
            return Ok(());
        }
        if !self.plan(max).contains(m) {
            return Err(format!("{m} is not a move the map plans now"));
        }
        self.moving.insert(m.shard, m.clone());
        self.version += 1;
        Ok(())
    }

    /// Records that `m`, under way, is done: the shard's voters are the new
    /// ones.
    pub fn finish(&mut self, m: &Move) -> Result<(), String> {
        if self.moving.get(&m.shard) != Some(m) {
            return Err(format!("{m} is not under way"));
        }
        self.moving.remove(&m.shard);
        self.apply(m);
        self.version += 1;
        Ok(())
    }

    /// Drops `m`, under way, without applying it: the node it adds was
    /// removed before it became a voter, so the shard's voters are still
    /// the old ones.
    pub fn abandon(&mut self, m: &Move) -> Result<(), String> {
        if self.moving.get(&m.shard) != Some(m) {
            return Err(format!("{m} is not under way"));
        }
        if m.add.as_ref().is_none_or(|a| self.is_member(a)) {
            return Err(format!("{m} adds a member: it is not given up"));
        }
        self.moving.remove(&m.shard);
        self.version += 1;
        Ok(())
    }

    /// How many replicas of each role `node` holds.
    pub fn load(&self, node: &str) -> BTreeMap<Role, usize> {
        let mut out = BTreeMap::new();
        for s in self.replicated_by(node) {
            *out.entry(s.role).or_default() += 1;
        }
        out
    }

    /// The map after `m` is done. A node that replaces another takes its
    /// place in the voters' order (which says who should lead).
    pub fn apply(&mut self, m: &Move) {
        let voters = self.shards.entry(m.shard).or_default();
        match (&m.add, &m.remove) {
            (Some(a), Some(r)) if !voters.contains(a) && voters.contains(r) => {
                for v in voters.iter_mut().filter(|v| *v == r) {
                    *v = a.clone();
                }
            }
            _ => {
                if let Some(r) = &m.remove {
                    voters.retain(|v| v != r);
                }
                if let Some(a) = &m.add {
                    if !voters.contains(a) {
                        voters.push(a.clone());
                    }
                }
            }
        }
    }

    /// The next moves towards the map's goal, at most `max` of them and at
    /// most one per shard: every shard has `replicas` voters (or every
    /// member taking its role, when fewer do), none on a member that is
    /// leaving or no longer hosts the role, and each member taking a role
    /// holds as many of its replicas as any other, give or take one. Empty
    /// when the map is there. Deterministic: every node plans the same
    /// moves from the same map.
    pub fn plan(&self, max: usize) -> Vec<Move> {
        let mut out = Vec::new();
        // Moves under way count as done, and against `max`.
        let mut map = self.clone();
        for m in self.moving.values() {
            map.apply(m);
        }
        let mut moved: BTreeSet<ShardId> = self.moving.keys().copied().collect();
        let max = max.saturating_sub(self.moving.len());
        for role in Role::ALL {
            while out.len() < max {
                let Some(m) = map.next_move(role, &moved) else { break };
                moved.insert(m.shard);
                map.apply(&m);
                out.push(m);
            }
        }
        out
    }

    /// One move for `role`'s shards not in `skip`, most urgent first: a
    /// replica on a member that may not hold it, then a missing one, then
    /// a surplus one, then one from the most loaded member to the least.
    fn next_move(&self, role: Role, skip: &BTreeSet<ShardId>) -> Option<Move> {
        let hosts: Vec<&String> =
            self.members.iter().filter(|(_, m)| m.takes(role)).map(|(n, _)| n).collect();
        if hosts.is_empty() {
            return None;
        }
        let want = (self.replicas as usize).min(hosts.len());
        let mut count: BTreeMap<&String, usize> = hosts.iter().map(|h| (*h, 0)).collect();
        for (s, voters) in &self.shards {
            if s.role == role {
                for v in voters {
                    if let Some(c) = count.get_mut(v) {
                        *c += 1;
                    }
                }
            }
        }
        // The least loaded host not already a voter of the shard.
        let least = |voters: &[String]| {
            hosts
                .iter()
                .filter(|h| !voters.contains(h))
                .min_by_key(|h| (count[*h], **h))
                .map(|h| (*h).clone())
        };
        let shards = || self.shards.iter().filter(|(s, _)| s.role == role && !skip.contains(s));
        for (s, voters) in shards() {
            if let Some(bad) = voters.iter().find(|v| !hosts.contains(v)) {
                // Never below a majority of what is there: the newcomer is
                // added before the replica that must go is removed.
                let add = if voters.len() <= want { least(voters) } else { None };
                return Some(Move { shard: *s, add, remove: Some(bad.clone()) });
            }
        }
        for (s, voters) in shards() {
            if voters.len() < want {
                return least(voters).map(|a| Move { shard: *s, add: Some(a), remove: None });
            }
        }
        for (s, voters) in shards() {
            if voters.len() > want {
                let most = voters.iter().max_by_key(|v| (count[v], (*v).clone()))?;
                return Some(Move { shard: *s, add: None, remove: Some(most.clone()) });
            }
        }
        let (most, &high) = count.iter().max_by_key(|(h, c)| (**c, std::cmp::Reverse(**h)))?;
        let (fewest, &low) = count.iter().min_by_key(|(h, c)| (**c, **h))?;
        if high <= low + 1 {
            return None;
        }
        let (s, _) = shards().find(|(_, v)| v.contains(most) && !v.contains(fewest))?;
        Some(Move { shard: *s, add: Some((*fewest).clone()), remove: Some((*most).clone()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::placement::test_config as config;

    const ALL: &str = "\"as\", \"cs\", \"ids\", \"ods\", \"sds\"";

    fn member(port: u16, roles: &[Role]) -> MemberRecord {
        MemberRecord {
            listen: format!("127.0.0.1:{port}").parse().unwrap(),
            roles: roles.to_vec(),
            leaving: false,
        }
    }

    /// Plans and applies moves `max` at a time until none is left; the
    /// number of moves made.
    fn settle(map: &mut ClusterMap, max: usize) -> usize {
        let mut made = 0;
        for _ in 0..1000 {
            let plan = map.plan(max);
            assert!(plan.len() <= max);
            let shards: BTreeSet<_> = plan.iter().map(|m| m.shard).collect();
            assert_eq!(shards.len(), plan.len(), "one move per shard at a time: {plan:?}");
            if plan.is_empty() {
                return made;
            }
            for m in &plan {
                let before = map.voters(m.shard).len();
                map.apply(m);
                let want = (map.replicas as usize).min(before.max(1));
                assert!(map.voters(m.shard).len() + 1 >= want, "a move never drops two: {m:?}");
            }
            made += plan.len();
        }
        panic!("the plan never settled: {map:?}");
    }

    /// Each role's replicas spread within one over the members taking it,
    /// every shard with its full count, none on a member that may not hold it.
    fn assert_settled(map: &ClusterMap) {
        for role in Role::ALL {
            let hosts: Vec<&String> =
                map.members.iter().filter(|(_, m)| m.takes(role)).map(|(n, _)| n).collect();
            let want = (map.replicas as usize).min(hosts.len());
            for (s, v) in map.shards.iter().filter(|(s, _)| s.role == role) {
                assert_eq!(v.len(), want, "{s}: {v:?}");
                assert!(v.iter().all(|n| hosts.contains(&n)), "{s}: {v:?}");
            }
            let loads: Vec<usize> =
                hosts.iter().map(|h| map.load(h).get(&role).copied().unwrap_or(0)).collect();
            let (lo, hi) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
            assert!(hi - lo <= 1, "{role}: {loads:?}");
        }
    }

    #[test]
    fn the_map_reads_back_as_written_and_an_unreadable_one_is_an_error() {
        use mlsd_actors::replica::{view::prefixed, ShardView};
        use mlsd_roles::{MemStore, Store};
        let store: std::sync::Arc<dyn Store> = std::sync::Arc::new(MemStore::new());
        let view = ShardView { store: store.clone(), shard: ShardId::CLUSTER };
        assert_eq!(ClusterMap::read(&view).unwrap(), None);
        let map = ClusterMap::bootstrap(&config(&[("n1", ALL), ("n2", ALL)], ""));
        store.write(prefixed(ShardId::CLUSTER, map.write().unwrap())).unwrap();
        assert_eq!(ClusterMap::read(&view).unwrap(), Some(map));
        let mut torn = Batch::new();
        torn.put(Space::Role(Role::As), MAP_KEY.to_vec(), vec![1, 0xff]);
        store.write(prefixed(ShardId::CLUSTER, torn)).unwrap();
        assert!(ClusterMap::read(&view).is_err());
    }

    #[test]
    fn a_move_under_way_counts_as_done_and_only_planned_moves_begin() {
        let c = config(&[("n1", ALL), ("n2", ALL), ("n3", ALL)], "shards = 4");
        let mut map = ClusterMap::bootstrap(&c);
        map.members.insert("n4".into(), member(4100, &Role::ALL));
        let plan = map.plan(2);
        assert_eq!(plan.len(), 2);
        let stray = Move { shard: plan[0].shard, add: Some("n9".into()), remove: None };
        assert!(map.begin(&stray, 2).is_err(), "not a planned move");
        assert!(map.finish(&plan[0]).is_err(), "not under way");
        let v = map.version;
        map.begin(&plan[0], 2).unwrap();
        map.begin(&plan[0], 2).unwrap();
        assert_eq!(map.version, v + 1, "beginning twice is once");
        assert_eq!(map.incoming("n4").collect::<Vec<_>>(), vec![plan[0].shard]);
        assert_eq!(map.plan(2), vec![plan[1].clone()], "the one under way is not planned again");
        assert_eq!(map.plan(1), vec![], "and counts against the most at once");
        let before = map.voters(plan[0].shard).to_vec();
        map.finish(&plan[0]).unwrap();
        let after = map.voters(plan[0].shard);
        let removed = plan[0].remove.as_ref().unwrap();
        let at = before.iter().position(|v| v == removed).unwrap();
        assert_eq!(after[at], "n4", "n4 takes the place of the voter it replaces: {after:?}");
        assert!(map.moving.is_empty() && map.incoming("n4").next().is_none());
    }

    #[test]
    fn the_first_map_is_the_placement_the_file_gave() {
        let c = config(&[("n1", ALL), ("n2", ALL), ("n3", "\"ods\"")], "shards = 8");
        let map = ClusterMap::bootstrap(&c);
        for s in placement::all(&c) {
            let file: Vec<String> =
                placement::voters(&c, s).into_iter().map(|n| n.name.clone()).collect();
            assert_eq!(map.voters(s), file.as_slice());
        }
        assert!(map.plan(4).is_empty(), "a bootstrapped map is already where it should be");
    }

    #[test]
    fn a_new_member_takes_an_even_share_in_few_moves() {
        let c = config(&[("n1", ALL), ("n2", ALL), ("n3", ALL)], "shards = 8");
        let mut map = ClusterMap::bootstrap(&c);
        map.members.insert("n4".into(), member(4100, &Role::ALL));
        let made = settle(&mut map, 2);
        assert_settled(&map);
        // 8 shards x 3 replicas over 4 nodes: n4 takes 6 of each role,
        // one move each, and nothing else moves.
        assert_eq!(made, 6 * Role::ALL.len());
        for role in Role::ALL {
            assert_eq!(map.load("n4")[&role], 6);
        }
    }

    #[test]
    fn a_leaving_member_is_emptied_and_its_replicas_restored_elsewhere() {
        let c = config(&[("n1", ALL), ("n2", ALL), ("n3", ALL), ("n4", ALL)], "shards = 8");
        let mut map = ClusterMap::bootstrap(&c);
        map.members.get_mut("n2").unwrap().leaving = true;
        let plan = map.plan(100);
        assert!(plan.iter().all(|m| m.remove.as_deref() == Some("n2") && m.add.is_some()));
        settle(&mut map, 3);
        assert_settled(&map);
        assert!(map.load("n2").is_empty());
        // Only three members left: every one of them holds every shard.
        for role in Role::ALL {
            assert_eq!(map.load("n1")[&role], 8);
        }
    }

    #[test]
    fn a_member_that_stops_hosting_a_role_hands_its_replicas_over() {
        let c = config(&[("n1", ALL), ("n2", ALL), ("n3", ALL), ("n4", ALL)], "shards = 4");
        let mut map = ClusterMap::bootstrap(&c);
        map.members.get_mut("n1").unwrap().roles.retain(|r| *r != Role::Sds);
        settle(&mut map, 1);
        assert_settled(&map);
        assert_eq!(map.load("n1").get(&Role::Sds), None);
        assert_eq!(map.load("n1")[&Role::As], 3);
    }

    #[test]
    fn a_dead_member_removed_is_replaced_from_the_survivors() {
        let c = config(&[("n1", ALL), ("n2", ALL), ("n3", ALL), ("n4", ALL)], "shards = 4");
        let mut map = ClusterMap::bootstrap(&c);
        map.members.remove("n3");
        let plan = map.plan(100);
        assert!(plan.iter().all(|m| m.remove.as_deref() == Some("n3")));
        settle(&mut map, 2);
        assert_settled(&map);
    }

    #[test]
    fn fewer_hosts_than_replicas_keep_every_host_and_more_replicas_grow_them() {
        let c = config(&[("n1", ALL), ("n2", ALL)], "shards = 2");
        let mut map = ClusterMap::bootstrap(&c);
        assert!(map.plan(10).is_empty(), "two of three replicas is all two nodes can hold");
        map.members.insert("n3".into(), member(4100, &[Role::Ods]));
        let plan = map.plan(10);
        assert_eq!(plan.len(), 2, "each ODS shard gains its third replica: {plan:?}");
        assert!(plan.iter().all(|m| m.add.as_deref() == Some("n3") && m.remove.is_none()));
        settle(&mut map, 10);
        assert_settled(&map);
    }

    #[test]
    fn a_move_to_a_node_removed_before_it_voted_is_given_up_and_planned_elsewhere() {
        let c = config(&[("n1", ALL), ("n2", ALL), ("n3", ALL)], "shards = 2");
        let mut map = ClusterMap::bootstrap(&c);
        map.members.insert("n4".into(), member(4100, &Role::ALL));
        let m = map.plan(1).remove(0);
        assert_eq!(m.add.as_deref(), Some("n4"));
        map.begin(&m, 1).unwrap();
        let voters = map.voters(m.shard).to_vec();
        assert!(map.abandon(&m).is_err(), "n4 is still a member: the move goes on");
        map.members.remove("n4");
        map.abandon(&m).unwrap();
        assert!(map.moving.is_empty());
        assert_eq!(map.voters(m.shard), voters, "the shard's voters are the old ones");
        assert!(map.abandon(&m).is_err(), "no longer under way");
        assert!(map.plan(10).is_empty(), "three nodes, three replicas: nothing left to move");
    }
}
