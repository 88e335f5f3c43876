//! Resident memory per idle mailbox and per idle group actor, each measured
//! in a fresh child process.

use super::*;
use mlsd_transport::protocol::{IdsRequest, IdsResponse, OdsRequest, OdsResponse};

/// Resident set size of this process, bytes (Linux `/proc/self/statm`).
pub(super) fn rss() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Resident bytes per idle mailbox: opens `n` mailboxes through the ODS's
/// own logic on a synced RocksDB and compares resident memory before and
/// after (RocksDB's memtable and caches included, as a node would hold them).
pub(super) fn bytes_per_idle_mailbox(n: usize) -> anyhow::Result<Option<f64>> {
    let dir = tempfile::tempdir()?;
    let store = RocksStore::open(dir.path(), false)?;
    let mut ods = OdsLogic::new(OdsSettings {
        max_queue: 10_000,
        max_fetch: 256,
        page_bytes: 1 << 20,
        max_capabilities: 4096,
    });
    let ctx = RoleContext {
        node: "bench",
        store: &store,
        now: SystemTime::now(),
        random: zeroize::Zeroizing::new([0; 32]),
    };
    let auth = ed25519_dalek::SigningKey::from_bytes(&rand32()).verifying_key().to_bytes().to_vec();
    let Some(before) = rss() else { return Ok(None) };
    for _ in 0..n {
        let req = Request::Ods(OdsRequest::OpenMailbox {
            mailbox: rand32(),
            auth_key: auth.clone(),
            push: None,
        });
        if !matches!(
            ods.handle(req, None, &ctx).apply(&store)?.0,
            Response::Ods(OdsResponse::MailboxOpened)
        ) {
            anyhow::bail!("opening a mailbox failed");
        }
    }
    let Some(after) = rss() else { return Ok(None) };
    Ok(Some(after.saturating_sub(before) as f64 / n as f64))
}

/// Resident bytes per idle group actor: creates `n` groups on a one-node
/// cluster in this process (each `CreateGroup` starts the group's actor, which
/// then idles until `group_idle_secs`) and compares resident memory before and
/// after, the groups' RocksDB records included. Also returns how many group
/// actors were alive at the end, so the figure is known to be about actors.
pub(super) async fn bytes_per_idle_group(n: usize) -> anyhow::Result<Option<(f64, usize)>> {
    let c = InprocCluster::start(
        "bench-groups",
        &[("g1", "\"as\", \"cs\", \"ids\", \"ods\", \"sds\"")],
        BENCH_CONFIG,
    )
    .await?;
    let conn = Connection::connect(c.nodes[0].addr(), &c.client_config("x", 0).ca).await?;
    let create = |group: Vec<u8>| {
        Request::Ids(IdsRequest::CreateGroup {
            group,
            mode: RosterMode::Client,
            auth_key: rand32(),
            roster: None,
        })
    };
    // Warm up the paths (allocator arenas, RocksDB memtable) before measuring.
    for _ in 0..200 {
        conn.request(create(rand32().to_vec())).await?;
    }
    let Some(before) = rss() else { return Ok(None) };
    for _ in 0..n {
        match conn.request(create(rand32().to_vec())).await? {
            Response::Ids(IdsResponse::GroupCreated) => {}
            other => anyhow::bail!("creating a group failed: {other:?}"),
        }
    }
    let Some(after) = rss() else { return Ok(None) };
    let alive = ractor::registry::registered().iter().filter(|n| n.contains("/ids/group/")).count();
    c.shutdown().await;
    Ok(Some((after.saturating_sub(before) as f64 / n as f64, alive)))
}

/// Runs one memory measurement in a child process (`mlsd bench-memory`), so
/// memory freed by other phases cannot be reused and hide the growth.
/// Returns bytes per item and how many were alive at the end.
pub(super) fn memory(what: &str, count: usize) -> anyhow::Result<Option<(f64, usize)>> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["bench-memory", what, &count.to_string()])
        .env("RUST_LOG", "warn")
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "bench-memory {what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    match (words.next(), words.next()) {
        (Some("none"), _) => Ok(None),
        (Some(b), Some(n)) => Ok(Some((b.parse()?, n.parse()?))),
        _ => anyhow::bail!("bench-memory {what}: unexpected output {text:?}"),
    }
}

/// The child side of [`memory`]: prints `<bytes per item> <alive>` or `none`.
pub async fn memory_child(what: &str, count: usize) -> anyhow::Result<()> {
    let figure = match what {
        "mailboxes" => bytes_per_idle_mailbox(count)?.map(|b| (b, count)),
        "groups" => bytes_per_idle_group(count).await?,
        other => anyhow::bail!("unknown memory figure {other}"),
    };
    match figure {
        Some((b, n)) => println!("{b} {n}"),
        None => println!("none"),
    }
    Ok(())
}
