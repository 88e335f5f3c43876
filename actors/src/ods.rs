//! The ODS host: the node's ODS role actor. Besides applying the ODS logic's
//! decisions, it holds what only the ODS has: the live subscriber of each
//! mailbox, to which every newly stored envelope goes at once; a mailbox
//! without one (or whose subscriber stopped reading) gets a content-free
//! push notification instead, when it registered an endpoint.

use mlsd_transport::protocol::{MailboxId, OdsRequest, OdsResponse};
use std::collections::HashMap;

use mlsd_transport::{Request, Response};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::role::{Hosted, RoleArgs, RoleMsg};
use crate::router::Sink;
use mlsd_roles::contract::Effect;

/// The ODS role actor.
pub struct OdsHost;

/// Its state: the logic, and live subscribers by mailbox (one per mailbox; a
/// new one replaces the old).
pub struct OdsState {
    hosted: Hosted,
    subscribers: HashMap<MailboxId, Sink>,
}

impl OdsState {
    /// Carries out effects of durable writes: a stored envelope goes to the
    /// mailbox's live subscriber, or else becomes a push notification.
    fn run(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Stored { mailbox, delivered, push } => {
                    let live = match self.subscribers.get(&mailbox) {
                        Some(sink) => match sink.try_send(vec![delivered]) {
                            Ok(()) => true,
                            // Gone or not keeping up: it resumes from its last
                            // ack on reconnect; meanwhile the device is offline.
                            Err(_) => {
                                self.subscribers.remove(&mailbox);
                                false
                            }
                        },
                        None => false,
                    };
                    if let (false, Some(url), Some(pusher)) =
                        (live, push, &self.hosted.args.services.push)
                    {
                        pusher.notify(url);
                    }
                }
                // Only the IDS's logic fans out; its host runs it.
                Effect::FanOut(_) => tracing::error!("the ODS logic asked for a fan-out"),
            }
        }
    }
}

impl Actor for OdsHost {
    type Msg = RoleMsg;
    type State = OdsState;
    type Arguments = RoleArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<RoleMsg>,
        args: RoleArgs,
    ) -> Result<OdsState, ActorProcessingErr> {
        Ok(OdsState { hosted: Hosted::new(args)?, subscribers: HashMap::new() })
    }

    async fn handle(
        &self,
        _myself: ActorRef<RoleMsg>,
        msg: RoleMsg,
        state: &mut OdsState,
    ) -> Result<(), ActorProcessingErr> {
        // A caller that timed out and went away is not our failure: sends to
        // `reply` ignore errors. The ODS needs no other role's answer, so a
        // request is decided at once.
        if let RoleMsg::Deposed = msg {
            // Dropping their sinks closes the streams; the clients
            // resubscribe at the new leader from their last ack.
            state.subscribers.clear();
            state.hosted.refresh();
            return Ok(());
        }
        let h = &mut state.hosted;
        let term = match h.ready().await {
            Ok(t) => t,
            Err(r) => {
                // Not the leader (any more): its live subscribers belong to
                // the new one; dropping their sinks closes them cleanly, and
                // they resubscribe from their last ack.
                state.subscribers.clear();
                reply_of(msg, r);
                return Ok(());
            }
        };
        let ctx = h.args.ctx();
        // A subscription is registered (when the backlog is served) before
        // the answer goes out, so nothing stored from now on is missed.
        let (d, reply, subscriber) = match msg {
            RoleMsg::Request { request, reply } | RoleMsg::Prepared { request, reply, .. } => {
                (h.logic.handle(request, None, &ctx), reply, None)
            }
            RoleMsg::Subscribe { request, sink, reply } => {
                let mailbox = match &request {
                    Request::Ods(OdsRequest::Subscribe { auth, .. }) => Some((auth.mailbox, sink)),
                    _ => None,
                };
                (h.logic.handle(request, None, &ctx), reply, mailbox)
            }
            RoleMsg::Enqueue { items, reply } => (h.logic.enqueue(items, &ctx), reply, None),
            RoleMsg::Admin { request, reply } => (h.logic.admin(request, &ctx), reply, None),
            RoleMsg::Deposed => return Ok(()),
        };
        let (response, effects) = h.apply(term, d).await;
        if let (Response::Ods(OdsResponse::Envelopes(_)), Some((m, sink))) = (&response, subscriber)
        {
            state.subscribers.insert(m, sink);
        }
        let _ = reply.send(response);
        state.run(effects);
        Ok(())
    }
}

/// Answers `msg` with `r` without deciding it.
fn reply_of(msg: RoleMsg, r: Response) {
    let reply = match msg {
        RoleMsg::Request { reply, .. }
        | RoleMsg::Prepared { reply, .. }
        | RoleMsg::Subscribe { reply, .. }
        | RoleMsg::Enqueue { reply, .. }
        | RoleMsg::Admin { reply, .. } => reply,
        RoleMsg::Deposed => return,
    };
    let _ = reply.send(r);
}

#[cfg(test)]
mod tests {
    use mlsd_transport::protocol::{ClusterError, OdsError};
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Arc;

    use mlsd_transport::protocol::{EnqueueItem, EnqueueResult};
    use mlsd_transport::{Role, WireError};

    use super::*;
    use crate::router::Router;
    use crate::storage::MemStore;
    use mlsd_roles::settings::RoleSettings;

    /// The ODS asks no other role anything; this router is never used.
    struct Nowhere;

    impl Router for Nowhere {
        fn route(&self, _req: Request) -> Pin<Box<dyn Future<Output = Response> + Send + '_>> {
            Box::pin(async {
                Response::Error(WireError::Cluster(ClusterError::Internal(
                    "no router in this test".into(),
                )))
            })
        }
        fn enqueue(
            &self,
            items: Vec<EnqueueItem>,
        ) -> Pin<Box<dyn Future<Output = Vec<EnqueueResult>> + Send + '_>> {
            Box::pin(async move { vec![EnqueueResult::UnknownMailbox; items.len()] })
        }
    }

    #[tokio::test]
    async fn a_failed_write_is_refused_applies_nothing_and_the_role_goes_on() {
        let store = Arc::new(MemStore::new());
        let args = RoleArgs {
            node: "t".into(),
            role: Role::Ods,
            store: Arc::new(crate::replica::Local(store.clone())),
            settings: Arc::new(RoleSettings::default()),
            services: Arc::new(crate::services::NodeServices::standalone()),
            router: Arc::new(Nowhere),
        };
        let (actor, handle) = Actor::spawn(None, OdsHost, args).await.unwrap();
        let auth_key =
            ed25519_dalek::SigningKey::from_bytes(&[1; 32]).verifying_key().to_bytes().to_vec();
        let open = Request::Ods(OdsRequest::OpenMailbox { mailbox: [5; 32], auth_key, push: None });
        async fn ask(actor: &ActorRef<RoleMsg>, request: Request) -> Response {
            ractor::call!(actor, |reply| RoleMsg::Request { request, reply }).unwrap()
        }
        store.fail_writes(true);
        let r = ask(&actor, open.clone()).await;
        assert!(
            matches!(r, Response::Error(WireError::Cluster(ClusterError::Internal(_)))),
            "{r:?}"
        );
        assert!(store.contents().is_empty(), "a failed batch applies nothing");
        store.fail_writes(false);
        // The same request now succeeds: nothing of the failed one remained.
        assert_eq!(ask(&actor, open.clone()).await, Response::Ods(OdsResponse::MailboxOpened));
        // Again, it is answered as the first time; with another key, taken.
        assert_eq!(ask(&actor, open).await, Response::Ods(OdsResponse::MailboxOpened));
        let other =
            ed25519_dalek::SigningKey::from_bytes(&[2; 32]).verifying_key().to_bytes().to_vec();
        let taken =
            Request::Ods(OdsRequest::OpenMailbox { mailbox: [5; 32], auth_key: other, push: None });
        assert_eq!(
            ask(&actor, taken).await,
            Response::Error(WireError::Ods(OdsError::MailboxTaken))
        );
        actor.stop(None);
        handle.await.unwrap();
    }

    /// Told that its node no longer leads the shard, the host closes its
    /// live subscriptions at once (their clients resubscribe at the new
    /// leader), without waiting for a request to find out.
    #[tokio::test]
    async fn a_deposed_host_closes_its_subscriptions_at_once() {
        use ed25519_dalek::Signer;
        use mlsd_transport::protocol::identity::signing_bytes;
        use mlsd_transport::protocol::ods::{MailboxAuth, LABEL_SUBSCRIBE};

        let args = RoleArgs {
            node: "t".into(),
            role: Role::Ods,
            store: Arc::new(crate::replica::Local(Arc::new(MemStore::new()))),
            settings: Arc::new(RoleSettings::default()),
            services: Arc::new(crate::services::NodeServices::standalone()),
            router: Arc::new(Nowhere),
        };
        let (actor, handle) = Actor::spawn(None, OdsHost, args).await.unwrap();
        let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let mailbox = [5; 32];
        let auth_key = key.verifying_key().to_bytes().to_vec();
        let open = Request::Ods(OdsRequest::OpenMailbox { mailbox, auth_key, push: None });
        let r = ractor::call!(actor, |reply| RoleMsg::Request { request: open, reply }).unwrap();
        assert_eq!(r, Response::Ods(OdsResponse::MailboxOpened));
        let counter =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
                * 1000;
        let signature = key
            .sign(&signing_bytes(LABEL_SUBSCRIBE, &(mailbox, counter, 0u64)))
            .to_bytes()
            .to_vec();
        let auth = MailboxAuth { mailbox, counter, signature };
        let request = Request::Ods(OdsRequest::Subscribe { auth, after: 0 });
        let (sink, mut live) = tokio::sync::mpsc::channel(4);
        let r = ractor::call!(actor, |reply| RoleMsg::Subscribe { request, sink, reply }).unwrap();
        assert!(matches!(r, Response::Ods(OdsResponse::Envelopes(_))), "{r:?}");
        actor.send_message(RoleMsg::Deposed).unwrap();
        let closed = tokio::time::timeout(std::time::Duration::from_secs(2), live.recv()).await;
        assert!(matches!(closed, Ok(None)), "the subscription stays open: {closed:?}");
        actor.stop(None);
        handle.await.unwrap();
    }
}
