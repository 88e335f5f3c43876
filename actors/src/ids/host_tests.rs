//! The IDS host with a group actor and a fan-out held half-way.

use std::sync::Arc;

use mlsd_roles::ids::fixtures::{send, Member, GID};
use mlsd_transport::protocol::ids::send_mac;
use mlsd_transport::protocol::{
    ClusterError, EnqueueItem, EnqueueResult, IdsRequest, IdsResponse, RosterMode,
};
use mlsd_transport::{Request, Response, Role, WireError};
use ractor::Actor;

use crate::role::{RoleArgs, RoleMsg};
use crate::Router;

/// A router whose enqueues say they arrived, wait for `gate`, then store
/// every copy: a fan-out held half-way.
struct Gated {
    arrived: Arc<tokio::sync::Notify>,
    gate: Arc<tokio::sync::Semaphore>,
}

impl Router for Gated {
    fn route(
        &self,
        _req: Request,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send + '_>> {
        Box::pin(async {
            Response::Error(WireError::Cluster(ClusterError::Internal("no routes here".into())))
        })
    }
    fn enqueue(
        &self,
        items: Vec<EnqueueItem>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<EnqueueResult>> + Send + '_>> {
        Box::pin(async move {
            self.arrived.notify_one();
            let _pass = self.gate.acquire().await;
            (1..=items.len() as u64).map(|seq| EnqueueResult::Stored { seq }).collect()
        })
    }
}

/// The node stops leading the group's shard while a fan-out is half-way:
/// the group actor refuses new requests at once (retryably), but the
/// running fan-out finishes and its sender is told every copy was stored.
/// (Stopped at once, the group actor took its fan-out down with it: some
/// copies out, the rest only on a retry, possibly many epochs later.)
#[tokio::test]
async fn a_fan_out_running_when_leadership_moves_finishes() {
    let arrived = Arc::new(tokio::sync::Notify::new());
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let router = Gated { arrived: arrived.clone(), gate: gate.clone() };
    let args = RoleArgs {
        node: "t".into(),
        role: Role::Ids,
        store: Arc::new(crate::replica::Local(Arc::new(mlsd_roles::storage::MemStore::new()))),
        settings: Arc::new(mlsd_roles::settings::RoleSettings::default()),
        services: Arc::new(crate::services::NodeServices::standalone()),
        router: Arc::new(router),
    };
    let (host, handle) = Actor::spawn(None, super::host::IdsHost, args).await.unwrap();
    async fn ask(host: &ractor::ActorRef<RoleMsg>, request: Request) -> Response {
        ractor::call!(host, |reply| RoleMsg::Request { request, reply }).unwrap()
    }
    let create = Request::Ids(IdsRequest::CreateGroup {
        group: GID.to_vec(),
        mode: RosterMode::Client,
        auth_key: [0; 32],
        roster: None,
    });
    assert_eq!(ask(&host, create).await, Response::Ids(IdsResponse::GroupCreated));
    let mut alice = Member::new();
    let body = send(alice.message(b"half-way"), 1, None);
    let mac = send_mac(&[0; 32], &body);
    let req = Request::Ids(IdsRequest::Send { body: Box::new(body), mac });
    let first = {
        let (host, req) = (host.clone(), req.clone());
        tokio::spawn(async move {
            ractor::call!(host, |reply| RoleMsg::Request { request: req, reply })
        })
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), arrived.notified())
        .await
        .expect("the fan-out reached the ODS");
    host.send_message(RoleMsg::Deposed).unwrap();
    // Once the group actor has retired, a request for the group is
    // refused retryably (sent again, it reaches the shard's new leader).
    let again = ask(&host, req).await;
    assert!(
        matches!(again, Response::Error(WireError::Cluster(ClusterError::NotLeader { .. }))),
        "{again:?}"
    );
    gate.add_permits(100);
    let first = tokio::time::timeout(std::time::Duration::from_secs(5), first)
        .await
        .expect("the first send is answered")
        .unwrap();
    assert_eq!(
        first.ok(),
        Some(Response::Ids(IdsResponse::Sent { copies: 2 })),
        "the fan-out finished"
    );
    host.stop(None);
    handle.await.unwrap();
}
