//! Raft's network: every shard's RPCs ride the node-to-node QUIC
//! connections (mutual TLS, the same listener and certificates as all node
//! traffic), and the RPCs of many shards to one peer share messages.
//!
//! Each peer has one queue ([`Links`]); a sender task takes whatever is
//! queued when it wakes (after letting the other shards' tasks run once)
//! and sends it as one `ReplicationRequest::Raft`. Since one timer triggers every
//! shard's heartbeats at once ([`super::Shards::heartbeats`]), an idle
//! cluster sends one message per peer per heartbeat, however many shards.

use mlsd_transport::protocol::{NodeRequest, NodeResponse, RaftCall, RaftRpc, ReplicationRequest};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mlsd_actors::replica::{batch_size, Member, NodeId, ShardConfig, ShardId};
use mlsd_transport::codec;
use mlsd_transport::Response;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::peers::Peers;

/// Why an RPC did not get an answer from the peer's Raft.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct LinkError(String);

type Answer = Result<Vec<u8>, String>;

/// Calls at most this big (heartbeats, votes, small appends) share messages.
const SMALL: usize = 2048;
type Queued = (RaftCall, oneshot::Sender<Answer>);

/// The per-peer queues of this node's Raft traffic.
pub struct Links {
    peers: Arc<Peers>,
    queues: Mutex<HashMap<String, mpsc::UnboundedSender<Queued>>>,
    /// Most bytes of RPC bodies in one message.
    budget: usize,
}

impl Links {
    /// Raft traffic over `peers`, at most `max_frame` bytes a message.
    pub fn new(peers: Arc<Peers>, max_frame: u32) -> Arc<Links> {
        Arc::new(Links {
            peers,
            queues: Mutex::new(HashMap::new()),
            budget: max_frame as usize / 2,
        })
    }

    /// The most bytes one RPC may take.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Sends `call` to `peer` with whatever else is queued for it; a call
    /// that carries entries or a snapshot chunk goes alone, so that a slow
    /// one (a follower's disk) never holds up the heartbeats of other shards
    /// (openraft gives each RPC one heartbeat interval).
    async fn call(self: &Arc<Self>, peer: &str, call: RaftCall) -> Answer {
        if call.body.len() > SMALL {
            let (tx, rx) = oneshot::channel();
            self.send(peer, vec![(call, tx)]).await;
            return rx.await.unwrap_or_else(|_| Err("raft link closed".into()));
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut q = self.queues.lock().unwrap_or_else(|p| p.into_inner());
            let sender = q.entry(peer.to_string()).or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(self.clone().run(peer.to_string(), rx));
                tx
            });
            if let Err(mpsc::error::SendError((call, tx))) = sender.send((call, tx)) {
                // The sender task ended (runtime shutting down): start anew.
                let (ntx, nrx) = mpsc::unbounded_channel();
                tokio::spawn(self.clone().run(peer.to_string(), nrx));
                let _ = ntx.send((call, tx));
                *sender = ntx;
            }
        }
        rx.await.unwrap_or_else(|_| Err("raft link closed".into()))
    }

    /// The sender task of one peer.
    async fn run(self: Arc<Self>, peer: String, mut rx: mpsc::UnboundedReceiver<Queued>) {
        while let Some(first) = rx.recv().await {
            // Let the other shards' RPCs of this instant join the message.
            tokio::task::yield_now().await;
            let mut bytes = first.0.body.len();
            let mut batch = vec![first];
            while bytes < self.budget {
                match rx.try_recv() {
                    Ok(next) => {
                        bytes += next.0.body.len();
                        batch.push(next);
                    }
                    Err(_) => break,
                }
            }
            // Sent apart, so a slow snapshot chunk does not hold heartbeats.
            let me = self.clone();
            let peer = peer.clone();
            tokio::spawn(async move { me.send(&peer, batch).await });
        }
    }

    async fn send(&self, peer: &str, batch: Vec<Queued>) {
        let (calls, replies): (Vec<RaftCall>, Vec<_>) = batch.into_iter().unzip();
        let n = calls.len();
        match self.peers.call(peer, NodeRequest::Replication(ReplicationRequest::Raft(calls))).await
        {
            Response::Node(NodeResponse::Raft(answers)) if answers.len() == n => {
                for (a, r) in answers.into_iter().zip(replies) {
                    let _ = r.send(Ok(a.into_vec()));
                }
            }
            other => {
                let why = format!("{other:?}");
                for r in replies {
                    let _ = r.send(Err(why.clone()));
                }
            }
        }
    }
}

/// Makes the RPC clients of one shard's Raft.
pub struct ShardNetwork {
    /// The shard.
    pub shard: ShardId,
    /// The node's links.
    pub links: Arc<Links>,
}

impl RaftNetworkFactory<ShardConfig> for ShardNetwork {
    type Network = ShardClient;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> ShardClient {
        ShardClient {
            shard: self.shard,
            links: self.links.clone(),
            target,
            peer: node.name.clone(),
        }
    }
}

/// One shard's RPC client to one peer.
pub struct ShardClient {
    shard: ShardId,
    links: Arc<Links>,
    target: NodeId,
    peer: String,
}

impl ShardClient {
    async fn rpc<
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    >(
        &self,
        rpc: RaftRpc,
        req: &Req,
    ) -> Result<Resp, RPCError<NodeId, Member, RaftError<NodeId, E>>> {
        let body = codec::encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let call = RaftCall { role: self.shard.role, shard: self.shard.index, rpc, body };
        let answer = self.links.call(&self.peer, call).await;
        let bytes = answer.map_err(|e| RPCError::Unreachable(Unreachable::new(&LinkError(e))))?;
        let r: Result<Result<Resp, RaftError<NodeId, E>>, String> =
            codec::decode(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        match r {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            // The peer does not replicate this shard (configs disagree), or
            // is rebuilding and takes nothing from this leader: as
            // unreachable, so that openraft backs off instead of resending
            // at once.
            Err(e) => Err(RPCError::Unreachable(Unreachable::new(&LinkError(e)))),
        }
    }
}

impl RaftNetwork<ShardConfig> for ShardClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<ShardConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        // An append that would not fit a message goes in halves.
        let size: usize = rpc
            .entries
            .iter()
            .map(|e| match &e.payload {
                openraft::EntryPayload::Normal(w) => batch_size(&w.batch),
                _ => 256,
            })
            .sum();
        if size > self.links.budget() && rpc.entries.len() > 1 {
            let hint = (rpc.entries.len() as u64 / 2).max(1);
            return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(hint)));
        }
        self.rpc(RaftRpc::Append, &rpc).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<ShardConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Member, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.rpc(RaftRpc::Snapshot, &rpc).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        self.rpc(RaftRpc::Vote, &rpc).await
    }
}
