//! The simulation's clients: where a request goes (the leader it was told
//! of, else a node at random), how it is retried, and the client tasks of
//! each run: committers, writers and a creator of groups for the IDS,
//! enqueuers and mailbox owners for the ODS, racing registrars, fetchers
//! of KeyPackages, a blob uploader and a reader for the accounts run, and
//! senders whose sends fan out to mailboxes for the delivery run.

use super::*;
use mlsd_transport::protocol::{
    AsResponse, CsResponse, IdsResponse, NodeResponse, OdsResponse, SdsResponse,
};
use role::Hosts;

/// A request of the simulation's clients, to the run's role.
#[derive(Debug, Clone)]
pub(super) enum Ask {
    Ids(Op),
    Ods(mailbox::MailOp),
    Accounts(accounts::AcctOp),
    /// A send to the delivery group.
    Post(delivery::Post),
}

impl Ask {
    /// The shard that serves the request.
    fn shard(&self) -> ShardId {
        match self {
            Ask::Ids(_) | Ask::Post(_) => IDS_SHARD,
            Ask::Ods(_) => ODS_SHARD,
            Ask::Accounts(op) => op.shard(),
        }
    }
}

impl From<Op> for Ask {
    fn from(op: Op) -> Self {
        Ask::Ids(op)
    }
}

impl From<accounts::AcctOp> for Ask {
    fn from(op: accounts::AcctOp) -> Self {
        Ask::Accounts(op)
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
    decide_within(op.into(), rng, w, None).await
}

/// Sends `op` until a replica decides it, the clients stop, or `patience`
/// runs out.
async fn decide_within(
    op: Ask,
    rng: &mut StdRng,
    w: &Clients,
    patience: Option<Duration>,
) -> Option<Reply> {
    let deadline = patience.map(|p| Instant::now() + p);
    let shard = op.shard();
    let (net, serials) = (&w.net, &w.serials);
    let ids: Vec<NodeId> = serials.keys().copied().collect();
    let mut hint = None;
    while !w.stopped() && deadline.is_none_or(|d| Instant::now() < d) {
        let node = pick(rng, &mut hint, &ids);
        let reply = match net.replica(node, shard) {
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
                    Ask::Post(p) => delivery::serve(&replica, node, &w.hosts, p, think, now).await,
                    Ask::Accounts(op) => {
                        match accounts::prerequisite(net, node, &w.hosts, op, now).await {
                            Ok(pre) => {
                                let (hosts, asked) = (&w.hosts, (op, pre));
                                accounts::serve(&replica, node, hosts, asked, think, now).await
                            }
                            Err(e) => Reply::Retry(e),
                        }
                    }
                }
            }
            None => Reply::Retry(crate::replica::CommitError::Unavailable {
                shard: shard.to_string(),
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
                ledger(w).refused.push(why.clone());
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
                let mut l = ledger(&w);
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
            ledger(&w).writes.insert(key);
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
            ledger(&w).created.insert(group);
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
    open_mailboxes(sim, shared).await?;
    let mut clients = Vec::new();
    for e in 0..WRITERS {
        clients.push(tokio::spawn(enqueuer(shared.clone(), 300 + e)));
    }
    for k in 0..mailbox::MAILBOXES {
        clients.push(tokio::spawn(owner(shared.clone(), k, false)));
    }
    Ok(clients)
}

/// Opens the run's mailboxes, each with its capability.
async fn open_mailboxes(sim: &Sim, shared: &Clients) -> Result<(), Violation> {
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
    Ok(())
}

/// The delivery run's clients, once the mailboxes are open and the group
/// exists: two senders, and each mailbox's owner.
pub(super) async fn delivery_clients(
    sim: &Sim,
    shared: &Clients,
) -> Result<Vec<tokio::task::JoinHandle<()>>, Violation> {
    open_mailboxes(sim, shared).await?;
    let group = delivery::DELIVERY_GROUP;
    let mut setup = StdRng::seed_from_u64(sim.seed ^ 0xDE11);
    match decide(Op::Create { group }, &mut setup, shared).await {
        Some(Reply::Done) => sim.trace.note(format_args!("g{group} created")),
        other => return Err(sim.violation(format!("g{group} not created: {other:?}"))),
    }
    let mut clients = Vec::new();
    for s in 0..WRITERS {
        clients.push(tokio::spawn(sender(shared.clone(), 600 + s)));
    }
    for k in 0..mailbox::MAILBOXES {
        clients.push(tokio::spawn(owner(shared.clone(), k, true)));
    }
    Ok(clients)
}

/// A member posting one message after another to the delivery group, each
/// sent again as it was until answered `Sent`: after a partial answer, and
/// after no answer (the accepting node crashed during the fan-out).
async fn sender(w: Clients, client: u64) {
    let mut rng = w.rng(client, 0x5E);
    let mut n = 0u64;
    while !w.stopped() {
        n += 1;
        let post = delivery::Post::new((client << 32) | n);
        ledger(&w).delivery.posting(&post);
        while !w.stopped() {
            match decide(Ask::Post(post.clone()), &mut rng, &w).await {
                Some(Reply::FanOut(accepted)) => match fan_out(&w, *accepted, &mut rng).await {
                    Some(Response::Ids(IdsResponse::Sent { copies }))
                        if copies == u32::from(mailbox::MAILBOXES) =>
                    {
                        w.trace.note(format_args!("{post:?} sent"));
                        ledger(&w).delivery.delivered.insert(post.key);
                        break;
                    }
                    Some(Response::Ids(IdsResponse::PartlySent { failed, .. })) => {
                        w.trace.note(format_args!("{post:?}: {failed} copies missing"));
                    }
                    Some(other) => {
                        let what = format!("{post:?} answered {other:?}");
                        ledger(&w).delivery.anomalies.push(what);
                        break;
                    }
                    None => w.trace.note(format_args!("{post:?}: no answer")),
                },
                _ => break,
            }
            tokio::time::sleep(Duration::from_millis(rng.gen_range(50..300))).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..60))).await;
    }
}

/// Carries out the fan-out of an accepted send as the node that accepted
/// it does: seals the copies, enqueues them at the ODS shard's leader
/// within the fan-out's patience, records the end with the group, and
/// answers. `None` when the node crashed meanwhile (its fan-out died and
/// recorded nothing).
async fn fan_out(w: &Clients, accepted: role::Accepted, rng: &mut StdRng) -> Option<Response> {
    let items = delivery::seal(&accepted);
    let op = Ask::Ods(mailbox::MailOp::Copies(items.clone()));
    let results = match decide_within(op, rng, w, Some(delivery::PATIENCE)).await {
        Some(Reply::Answer(Response::Node(NodeResponse::Enqueued(results)))) => Some(results),
        _ => None,
    };
    let (response, retryable) = delivery::answer(items, results);
    let alive =
        w.net.replica(accepted.node, IDS_SHARD).is_some_and(|r| Arc::ptr_eq(&r, &accepted.replica));
    if !alive {
        return None;
    }
    // The group actor serializes the end with the group's requests.
    let _serial = w.serials[&accepted.node].lock().await;
    delivery::ended(&accepted, !retryable, w.trace.now()).await;
    Some(response)
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
        if let Some(Reply::Answer(Response::Node(NodeResponse::Enqueued(results)))) =
            decide(mailbox::MailOp::Enqueue(copies.clone()), &mut rng, &w).await
        {
            w.trace.note(format_args!("client {client}: {copies:x?} enqueued: {results:?}"));
            ledger(&w).mail.enqueued(&copies, &results);
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..60))).await;
    }
}

/// Mailbox `k`'s owner: fetches after its last ack, checks what it got
/// (`sealed`: copies of the delivery group's messages), and acks it.
async fn owner(w: Clients, k: u8, sealed: bool) {
    use mailbox::MailOp;
    let mut rng = w.rng(u64::from(k), 0x0A);
    let (mut after, mut last) = (0u64, 0u64);
    while !w.stopped() {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(50..400))).await;
        last = mailbox::counter(w.trace.now(), last);
        let page = match decide(MailOp::Fetch(k, after, last), &mut rng, &w).await {
            Some(Reply::Answer(Response::Ods(OdsResponse::Envelopes(page)))) => page,
            _ => continue,
        };
        if sealed {
            ledger(&w).delivery.received(k, &page);
        } else {
            ledger(&w).mail.fetched(k, &page);
        }
        let Some(up_to) = page.last().map(|e| e.seq) else { continue };
        last = mailbox::counter(w.trace.now(), last);
        // Sent: from now on its copies up to there may be gone.
        {
            let mut l = ledger(&w);
            let acked = l.mail.acked.entry(k).or_default();
            *acked = (*acked).max(up_to);
        }
        if let Some(Reply::Answer(Response::Ods(OdsResponse::Acked { .. }))) =
            decide(MailOp::Ack(k, up_to, last), &mut rng, &w).await
        {
            w.trace.note(format_args!("mailbox {k}: acked up to {up_to}"));
            after = up_to;
        }
    }
}

/// The accounts run's clients: two parties racing for identities, two
/// fetchers of KeyPackages, a blob uploader and a blob reader.
pub(super) fn account_clients(shared: &Clients) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        tokio::spawn(registrars(shared.clone())),
        tokio::spawn(fetcher(shared.clone(), 400)),
        tokio::spawn(fetcher(shared.clone(), 401)),
        tokio::spawn(uploader(shared.clone(), 500)),
        tokio::spawn(reader(shared.clone(), 501)),
    ]
}

/// The ledger of `w`, locked.
fn ledger(w: &Clients) -> std::sync::MutexGuard<'_, Ledger> {
    w.ledger.lock().unwrap_or_else(|p| p.into_inner())
}

/// Identity after identity, two parties register a device of it at once;
/// the one bound publishes its KeyPackages.
async fn registrars(w: Clients) {
    use accounts::AcctOp;
    let mut rngs = [w.rng(0, 0xA5), w.rng(1, 0xA5)];
    let mut identity = 0u32;
    while !w.stopped() {
        let timestamp = accounts::unix(w.trace.now());
        let [r0, r1] = &mut rngs;
        let (a0, a1) = tokio::join!(
            decide(AcctOp::Register { identity, party: 0, timestamp }, r0, &w),
            decide(AcctOp::Register { identity, party: 1, timestamp }, r1, &w),
        );
        let mut winner = None;
        for (party, answer) in [(0u8, a0), (1, a1)] {
            let Some(Reply::Answer(r)) = answer else { continue };
            w.trace.note(format_args!("u{identity}/p{party}: {}", short(&r)));
            if ledger(&w).accounts.registered((identity, 0), party, &r) {
                winner = Some(party);
            }
        }
        if let Some(party) = winner {
            let timestamp = accounts::unix(w.trace.now());
            let op = AcctOp::Publish { identity, party, timestamp };
            if let Some(Reply::Answer(r)) = decide(op, &mut rngs[0], &w).await {
                w.trace.note(format_args!("u{identity}/p{party}: {}", short(&r)));
                let mut l = ledger(&w);
                let a = &mut l.accounts;
                match r {
                    Response::Cs(CsResponse::Published { stored })
                        if stored as usize == accounts::ONE_TIME =>
                    {
                        a.published.insert(identity, party);
                    }
                    other => a.anomalies.push(format!("u{identity}: published {other:?}")),
                }
            }
        }
        identity += 1;
        tokio::time::sleep(Duration::from_millis(rngs[1].gen_range(20..200))).await;
    }
}

/// An answer, short, for the trace.
fn short(r: &Response) -> String {
    match r {
        Response::As(AsResponse::Binding(b)) => format!("bound, serial {}", b.binding.serial),
        Response::As(AsResponse::RegistrationPending { .. }) => "pending".into(),
        Response::Cs(CsResponse::KeyPackages(k)) => format!("{} KeyPackages", k.len()),
        Response::Cs(CsResponse::Published { stored }) => format!("Published {stored}"),
        other => format!("{other:?}").chars().take(80).collect(),
    }
}

/// Fetches the KeyPackages of the two identities that published last (so
/// that the fetchers contend for them), each fetch paid with an id of its
/// own that its retries repeat.
async fn fetcher(w: Clients, client: u64) {
    let mut rng = w.rng(client, 0xF7);
    let mut paid = client << 32;
    while !w.stopped() {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(10..100))).await;
        let latest: Vec<u32> =
            ledger(&w).accounts.published.keys().rev().take(2).copied().collect();
        if latest.is_empty() {
            continue;
        }
        let identity = latest[rng.gen_range(0..latest.len())];
        paid += 1;
        ledger(&w).accounts.asked.insert(paid, identity);
        let op = accounts::AcctOp::Fetch { identity, paid };
        if let Some(Reply::Answer(Response::Cs(CsResponse::KeyPackages(kps)))) =
            decide(op, &mut rng, &w).await
        {
            w.trace.note(format_args!("fetch {paid:x} of u{identity}: {} KeyPackages", kps.len()));
            ledger(&w).accounts.fetched(paid, &kps);
        }
    }
}

/// Uploads blob after blob, chunk by chunk, each chunk sent again as it
/// was until answered.
async fn uploader(w: Clients, client: u64) {
    let mut rng = w.rng(client, 0xB1);
    let mut blob = client << 32;
    while !w.stopped() {
        blob += 1;
        let mut done = true;
        for chunk in 0..accounts::chunks(blob) {
            let op = accounts::AcctOp::Put { blob, chunk };
            match decide(op, &mut rng, &w).await {
                Some(Reply::Answer(Response::Sds(SdsResponse::BlobWritten { written })))
                    if written == (u64::from(chunk) + 1) * accounts::CHUNK as u64 => {}
                Some(Reply::Answer(other)) => {
                    let what = format!("blob {blob:x} chunk {chunk} answered {other:?}");
                    ledger(&w).accounts.anomalies.push(what);
                }
                _ => {
                    done = false;
                    break;
                }
            }
        }
        if done {
            w.trace.note(format_args!("blob {blob:x} uploaded"));
            ledger(&w).accounts.blobs.insert(blob);
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..100))).await;
    }
}

/// Reads acknowledged blobs back.
async fn reader(w: Clients, client: u64) {
    let mut rng = w.rng(client, 0xB2);
    while !w.stopped() {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(50..300))).await;
        let blobs: Vec<u64> = ledger(&w).accounts.blobs.iter().copied().collect();
        if blobs.is_empty() {
            continue;
        }
        let blob = blobs[rng.gen_range(0..blobs.len())];
        if let Some(Reply::Answer(r)) = decide(accounts::AcctOp::Get { blob }, &mut rng, &w).await {
            ledger(&w).accounts.read(blob, &r);
        }
    }
}
