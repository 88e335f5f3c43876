//! The simulation's clients: where a request goes (the leader it was told
//! of, else a node at random), how it is retried, and the client tasks of
//! each run: committers, writers and a creator of groups for the IDS,
//! enqueuers and mailbox owners for the ODS.

use super::*;
use role::Hosts;

/// A request of the simulation's clients, to the run's role.
#[derive(Debug, Clone)]
pub(super) enum Ask {
    Ids(Op),
    Ods(mailbox::MailOp),
}

impl From<Op> for Ask {
    fn from(op: Op) -> Self {
        Ask::Ids(op)
    }
}

impl From<mailbox::MailOp> for Ask {
    fn from(op: mailbox::MailOp) -> Self {
        Ask::Ods(op)
    }
}

/// Where a client sends its next try: the leader it was told of, else a
/// node at random.
fn pick(rng: &mut StdRng, hint: &mut Option<NodeId>, ids: &[NodeId]) -> NodeId {
    hint.take().unwrap_or_else(|| ids[rng.gen_range(0..ids.len())])
}

/// What every client task shares: the network, the nodes' request
/// serialization, the ledger of acknowledgements, the trace and when to stop.
#[derive(Clone)]
pub(super) struct Clients {
    pub(super) seed: u64,
    pub(super) net: SimNet,
    pub(super) serials: BTreeMap<NodeId, Arc<tokio::sync::Mutex<()>>>,
    pub(super) ledger: Arc<Mutex<Ledger>>,
    pub(super) trace: Trace,
    pub(super) stop: Arc<AtomicBool>,
    /// The logic each node's role hosts hold.
    pub(super) hosts: Arc<Hosts>,
    /// The run's shard.
    pub(super) shard: ShardId,
}

impl Clients {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Client `client`'s own generator (`salt` by kind of client).
    fn rng(&self, client: u64, salt: u64) -> StdRng {
        StdRng::seed_from_u64(self.seed ^ (client << 40) ^ salt)
    }
}

/// Sends `op` until a replica decides it, or the clients stop.
pub(super) async fn decide(op: impl Into<Ask>, rng: &mut StdRng, w: &Clients) -> Option<Reply> {
    let op = op.into();
    let (net, serials) = (&w.net, &w.serials);
    let ids: Vec<NodeId> = serials.keys().copied().collect();
    let mut hint = None;
    while !w.stopped() {
        let node = pick(rng, &mut hint, &ids);
        let reply = match net.replica(node) {
            Some(replica) => {
                let _serial = serials[&node].lock().await;
                // Mostly quick; now and then as slow as an election.
                let think = if rng.gen_ratio(1, 8) {
                    Duration::from_millis(rng.gen_range(100..1_000))
                } else {
                    Duration::from_micros(rng.gen_range(0..20_000))
                };
                let now = w.trace.now();
                match &op {
                    Ask::Ids(op) => role::serve(&replica, node, &w.hosts, *op, think, now).await,
                    Ask::Ods(op) => mailbox::serve(&replica, node, &w.hosts, op, think, now).await,
                }
            }
            None => Reply::Retry(crate::replica::CommitError::Unavailable {
                shard: w.shard.to_string(),
                why: "down".into(),
            }),
        };
        match reply {
            Reply::Retry(crate::replica::CommitError::NotLeader { leader: Some(l), .. }) => {
                hint = Some(node_id(&l));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Reply::Retry(_) => {
                tokio::time::sleep(Duration::from_millis(rng.gen_range(30..150))).await
            }
            Reply::Refused(why) => {
                w.trace.note(format_args!("{op:?} refused: {why}"));
                w.ledger.lock().unwrap_or_else(|p| p.into_inner()).refused.push(why.clone());
                return Some(Reply::Refused(why));
            }
            done => return Some(done),
        }
    }
    None
}

/// A member of `group` committing, epoch after epoch, against another.
async fn committer(w: Clients, client: u64, group: u32) {
    let mut rng = w.rng(client, 0xC0);
    let mut epoch = 0;
    let mut n = 0u64;
    while !w.stopped() {
        n += 1;
        let id = (client << 32) | n;
        match decide(Op::Commit { group, epoch, id }, &mut rng, &w).await {
            Some(Reply::Done) => {
                w.trace.note(format_args!(
                    "client {client}: commit {id:x} accepted for g{group}@{epoch}"
                ));
                let mut l = w.ledger.lock().unwrap_or_else(|p| p.into_inner());
                l.commits.entry((group, epoch)).or_default().insert(id);
                epoch += 1;
            }
            Some(Reply::Stale { epoch: now }) => epoch = now,
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..80))).await;
    }
}

/// A client whose writes must all stay.
async fn writer(w: Clients, client: u64) {
    let mut rng = w.rng(client, 0x3C);
    let mut n = 0u64;
    while !w.stopped() {
        n += 1;
        let key = (client << 32) | n;
        if let Some(Reply::Done) = decide(Op::Write { key }, &mut rng, &w).await {
            w.trace.note(format_args!("client {client}: write {key:x} acknowledged"));
            w.ledger.lock().unwrap_or_else(|p| p.into_inner()).writes.insert(key);
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..60))).await;
    }
}

/// A client creating one new group after another: each creation, once
/// acknowledged, must stand.
async fn creator(w: Clients, client: u64) {
    let mut rng = w.rng(client, 0xC7);
    let mut group = CREATED_FROM;
    while !w.stopped() {
        if let Some(Reply::Done) = decide(Op::Create { group }, &mut rng, &w).await {
            w.trace.note(format_args!("client {client}: g{group} created"));
            w.ledger.lock().unwrap_or_else(|p| p.into_inner()).created.insert(group);
            group += 1;
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..200))).await;
    }
}

/// The IDS run's clients, once their groups exist.
pub(super) async fn group_clients(
    sim: &Sim,
    shared: &Clients,
) -> Result<Vec<tokio::task::JoinHandle<()>>, Violation> {
    let mut setup = StdRng::seed_from_u64(sim.seed ^ 0xC4EA7E);
    for group in (0..GROUPS).chain([WRITERS_GROUP]) {
        match decide(Op::Create { group }, &mut setup, shared).await {
            Some(Reply::Done) => sim.trace.note(format_args!("g{group} created")),
            other => return Err(sim.violation(format!("g{group} not created: {other:?}"))),
        }
    }
    let mut clients = Vec::new();
    for g in 0..GROUPS {
        for k in 0..2u64 {
            let client = u64::from(g) * 2 + k + 1;
            clients.push(tokio::spawn(committer(shared.clone(), client, g)));
        }
    }
    for w in 0..WRITERS {
        clients.push(tokio::spawn(writer(shared.clone(), 100 + w)));
    }
    clients.push(tokio::spawn(creator(shared.clone(), 200)));
    Ok(clients)
}

/// The ODS run's clients, once their mailboxes are open with a capability
/// each: two enqueue copies, and each mailbox's owner fetches and acks.
pub(super) async fn mailbox_clients(
    sim: &Sim,
    shared: &Clients,
) -> Result<Vec<tokio::task::JoinHandle<()>>, Violation> {
    use mailbox::MailOp;
    let mut setup = StdRng::seed_from_u64(sim.seed ^ 0x0DE5);
    for k in 0..mailbox::MAILBOXES {
        let now = sim.trace.now();
        for op in [MailOp::Open(k), MailOp::Issue(k, mailbox::counter(now, 0))] {
            if !matches!(decide(op.clone(), &mut setup, shared).await, Some(Reply::Answer(_))) {
                return Err(sim.violation(format!("mailbox {k}: {op:?} failed")));
            }
        }
    }
    sim.trace.note("mailboxes open");
    let mut clients = Vec::new();
    for e in 0..WRITERS {
        clients.push(tokio::spawn(enqueuer(shared.clone(), 300 + e)));
    }
    for k in 0..mailbox::MAILBOXES {
        clients.push(tokio::spawn(owner(shared.clone(), k)));
    }
    Ok(clients)
}

/// A fan-out's side: batches of one to three copies to random mailboxes,
/// each batch sent again as it was until answered.
async fn enqueuer(w: Clients, client: u64) {
    let mut rng = w.rng(client, 0xE9);
    let mut n = 0u64;
    while !w.stopped() {
        let copies: Vec<(u8, u64)> = (0..rng.gen_range(1..=3))
            .map(|_| {
                n += 1;
                (rng.gen_range(0..mailbox::MAILBOXES), (client << 32) | n)
            })
            .collect();
        if let Some(Reply::Answer(Response::Enqueued(results))) =
            decide(mailbox::MailOp::Enqueue(copies.clone()), &mut rng, &w).await
        {
            w.trace.note(format_args!("client {client}: {copies:x?} enqueued: {results:?}"));
            w.ledger.lock().unwrap_or_else(|p| p.into_inner()).mail.enqueued(&copies, &results);
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..60))).await;
    }
}

/// Mailbox `k`'s owner: fetches after its last ack, checks what it got,
/// and acks it.
async fn owner(w: Clients, k: u8) {
    use mailbox::MailOp;
    let mut rng = w.rng(u64::from(k), 0x0A);
    let (mut after, mut last) = (0u64, 0u64);
    while !w.stopped() {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(50..400))).await;
        last = mailbox::counter(w.trace.now(), last);
        let page = match decide(MailOp::Fetch(k, after, last), &mut rng, &w).await {
            Some(Reply::Answer(Response::Envelopes(page))) => page,
            _ => continue,
        };
        w.ledger.lock().unwrap_or_else(|p| p.into_inner()).mail.fetched(k, &page);
        let Some(up_to) = page.last().map(|e| e.seq) else { continue };
        last = mailbox::counter(w.trace.now(), last);
        // Sent: from now on its copies up to there may be gone.
        {
            let mut l = w.ledger.lock().unwrap_or_else(|p| p.into_inner());
            let acked = l.mail.acked.entry(k).or_default();
            *acked = (*acked).max(up_to);
        }
        if let Some(Reply::Answer(Response::Acked { .. })) =
            decide(MailOp::Ack(k, up_to, last), &mut rng, &w).await
        {
            w.trace.note(format_args!("mailbox {k}: acked up to {up_to}"));
            after = up_to;
        }
    }
}
