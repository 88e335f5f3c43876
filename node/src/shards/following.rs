//! How this node follows the cluster map (decision D15): it reads the map
//! as its cluster replica applies it, routes by one a member told it of
//! until then, answers other nodes' questions about it, and opens the
//! replicas the map places here.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use mlsd_actors::replica::recovery::Rebuild;
use mlsd_actors::replica::ShardId;

use super::map::ClusterMap;
use super::{rebuild, steward, Shards};

impl Shards {
    /// Opens the replicas the settled cluster map places here that this
    /// node does not hold yet, and has the supervisor host them. On a node
    /// that started empty each is rebuilt first.
    pub(super) async fn reconcile(&self) {
        if !self.settled() {
            return;
        }
        // Once the supervisor runs, every replica opened is handed to it;
        // before, the node is still starting and hosts what it opened.
        let Some(supervisor) = ractor::registry::where_is(format!("{}/supervisor", self.me)) else {
            return;
        };
        let map = self.map();
        let held: Vec<ShardId> =
            self.local.read().unwrap_or_else(|p| p.into_inner()).keys().copied().collect();
        let mut wanted: Vec<ShardId> = map.replicated_by(&self.me).collect();
        wanted.extend(map.incoming(&self.me));
        if map.is_member(&self.me) {
            wanted.push(ShardId::CLUSTER);
        }
        for shard in held.iter().filter(|s| !wanted.contains(s)) {
            self.close(*shard, &supervisor).await;
        }
        for shard in wanted.into_iter().filter(|s| !held.contains(s)) {
            // A rebuild recorded before a restart goes on.
            match rebuild::load(self.store.as_ref(), shard) {
                Ok(Some(state)) => self.recovering.set(shard, state),
                Ok(None) if self.started_empty => {
                    let waiting = BTreeMap::from([(shard, Rebuild::Waiting)]);
                    if let Err(e) = rebuild::save(self.store.as_ref(), &waiting) {
                        tracing::warn!(%shard, error = %e, "cannot record a new replica's rebuild");
                        continue;
                    }
                    self.recovering.set(shard, Rebuild::Waiting);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(%shard, error = %e, "cannot read a replica's rebuild record");
                    continue;
                }
            }
            let r = match self.open(shard, map.voters(shard), false).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(%shard, error = %e, "cannot open a replica the map placed here");
                    continue;
                }
            };
            tracing::info!(%shard, "opened a replica the cluster map places here");
            self.local.write().unwrap_or_else(|p| p.into_inner()).insert(shard, r.clone());
            if !shard.is_cluster() {
                let store = r as Arc<dyn mlsd_actors::replica::ShardStore>;
                let _ =
                    ractor::ActorRef::<crate::supervisor::SupervisorMsg>::from(supervisor.clone())
                        .send_message(crate::supervisor::SupervisorMsg::Host(shard, store));
            }
        }
    }

    /// Closes this node's replica of `shard`, which the settled map no
    /// longer places here (a move that took it away is done: the group's
    /// membership without this node committed), stops its host and
    /// deletes its keys, log and rebuild record.
    async fn close(&self, shard: ShardId, supervisor: &ractor::ActorCell) {
        let Some(r) = self.local.write().unwrap_or_else(|p| p.into_inner()).remove(&shard) else {
            return;
        };
        let _ = ractor::ActorRef::<crate::supervisor::SupervisorMsg>::from(supervisor.clone())
            .send_message(crate::supervisor::SupervisorMsg::Unhost(shard));
        let _ = r.raft.shutdown().await;
        self.recovering.finish(shard);
        let mut b = mlsd_roles::Batch::new();
        b.delete_prefix(mlsd_roles::Space::Role(shard.role), shard.data_prefix().to_vec());
        b.delete_prefix(mlsd_roles::Space::Raft, shard.raft_prefix().to_vec());
        match self.store.write_synced(b) {
            Ok(()) => tracing::info!(%shard, "closed a replica the cluster map moved away"),
            Err(e) => tracing::warn!(%shard, error = %e, "cannot delete a replica moved away"),
        }
    }

    /// The cluster map as this node knows it.
    pub fn map(&self) -> Arc<ClusterMap> {
        self.map.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether this node's map is the cluster group's (not the file's
    /// first map, which it holds until the group's applies here).
    pub fn settled(&self) -> bool {
        self.settled.load(Ordering::Acquire)
    }

    /// Whether this node's unsettled map came from another node (rather
    /// than its file).
    pub(super) fn told(&self) -> bool {
        self.told.load(Ordering::Acquire)
    }

    /// Routes by `map`, a member's, until this node's own cluster replica
    /// has applied one: unless settled, the newest map wins over the
    /// file's and over older ones.
    pub(super) fn adopt(&self, map: ClusterMap) {
        if self.settled() {
            return;
        }
        let mut cur = self.map.write().unwrap_or_else(|p| p.into_inner());
        if self.told() && map.version <= cur.version {
            return;
        }
        tracing::info!(
            version = map.version,
            members = map.members.len(),
            "routing by the cluster's map"
        );
        self.peers.learn(map.members.iter().map(|(n, r)| (n.clone(), r.listen)));
        *cur = Arc::new(map);
        self.told.store(true, Ordering::Release);
    }

    /// The map in its stored form, as `ClusterMap` answers carry it:
    /// none until this node's cluster replica has applied one.
    pub fn map_record(&self) -> Option<Vec<u8>> {
        if !self.settled() {
            return None;
        }
        mlsd_roles::record::encode(self.map().as_ref()).ok()
    }

    /// Serves a shard leader's report of a move ([`steward::record_move`]).
    pub async fn record_move(
        &self,
        mv: &mlsd_transport::protocol::ShardMove,
    ) -> Result<Option<Vec<u8>>, mlsd_transport::WireError> {
        let map = steward::record_move(self, mv).await?;
        Ok(mlsd_roles::record::encode(&map).ok())
    }

    /// Serves the operator's `RemoveNode` ([`steward::remove`]).
    pub async fn remove_member(
        &self,
        node: &str,
        dead: bool,
    ) -> Result<Option<Vec<u8>>, mlsd_transport::WireError> {
        let map = steward::remove(self, node, dead).await?;
        Ok(mlsd_roles::record::encode(&map).ok())
    }

    /// Resolves once the cluster has removed this node (drained, or taken
    /// for dead): the node then stops.
    pub async fn removed(&self) {
        loop {
            let notified = self.removed.notified();
            if self.removed_flag.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    /// Serves a node's `Join` ([`steward::admit`]).
    pub async fn admit(
        &self,
        join: &mlsd_transport::protocol::Join,
    ) -> Result<Option<Vec<u8>>, mlsd_transport::WireError> {
        let map = steward::admit(self, join).await?;
        Ok(mlsd_roles::record::encode(&map).ok())
    }

    /// Reads the map again when the cluster replica here applied entries
    /// since it was last read.
    pub(super) fn refresh_map(&self) {
        let Some(r) = self.replica(ShardId::CLUSTER) else { return };
        let applied = r.raft.metrics().borrow().last_applied.map_or(0, |l| l.index);
        if self.map_applied.swap(applied, Ordering::AcqRel) == applied {
            return;
        }
        match ClusterMap::read(r.as_ref()) {
            Ok(Some(m)) => {
                let mut cur = self.map.write().unwrap_or_else(|p| p.into_inner());
                if !self.settled() || m.version != cur.version {
                    tracing::info!(version = m.version, members = m.members.len(), "cluster map");
                    if self.settled() && cur.is_member(&self.me) && !m.is_member(&self.me) {
                        tracing::warn!("this node was removed from the cluster; it stops");
                        self.removed_flag.store(true, Ordering::Release);
                        self.removed.notify_waiters();
                    }
                    self.peers.learn(m.members.iter().map(|(n, r)| (n.clone(), r.listen)));
                    *cur = Arc::new(m);
                    self.settled.store(true, Ordering::Release);
                }
            }
            Ok(None) => {}
            Err(why) => tracing::warn!(%why, "the cluster map cannot be read"),
        }
    }
}
